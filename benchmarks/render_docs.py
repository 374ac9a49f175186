"""Render the README's workbook pictures from an audit output folder.

    python benchmarks/render_docs.py OUT_FOLDER [--docs docs] [--dpi 90]

OUT_FOLDER is what `offroll-audit audit` or `offroll-audit demo` wrote (with
workbooks). Writes docs/overview-summary.png, docs/overview-funnel.png,
docs/pack-cover.png and docs/pack-letters.png. Needs LibreOffice (`soffice`
or `libreoffice`) and poppler's `pdftoppm`; Pillow crops the pictures.

Each workbook is converted with LibreOffice's "one page per sheet" PDF
export, so page N is sheet N whatever its size; the pack shown is the
selected school with the most letter clusters (the richest Letters sheet).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from openpyxl import load_workbook
from PIL import Image, ImageChops

ONE_PAGE_PER_SHEET = 'pdf:calc_pdf_Export:{"SinglePageSheets":{"type":"boolean","value":"true"}}'
FUNNEL_ROWS = 40  # the funnel picture: the chart and the first rows of its data


def office() -> str:
    for name in ("soffice", "libreoffice"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("LibreOffice is needed (apt-get install -y libreoffice-calc)")


def to_pdf(workbook: Path, folder: Path) -> Path:
    """One PDF page per sheet, in sheet order."""
    profile = folder / "lo-profile"  # a private profile: no clash with a running LibreOffice
    subprocess.run(
        [
            office(),
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--convert-to",
            ONE_PAGE_PER_SHEET,
            "--outdir",
            str(folder),
            str(workbook),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return folder / f"{workbook.stem}.pdf"


def render_page(
    pdf: Path, page: int, target: Path, dpi: int, keep_points: float | None = None
) -> None:
    """Page `page` of the PDF as a PNG, trimmed of empty margins (and cut at keep_points)."""
    stem = target.with_suffix("")
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            str(dpi),
            "-f",
            str(page),
            "-l",
            str(page),
            "-singlefile",
            str(pdf),
            str(stem),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    image = Image.open(target).convert("RGB")
    if keep_points is not None:
        image = image.crop((0, 0, image.width, min(image.height, int(keep_points * dpi / 72))))
    background = Image.new("RGB", image.size, (255, 255, 255))
    box = ImageChops.difference(image, background).getbbox()
    if box:
        pad = 8
        image = image.crop(
            (
                max(0, box[0] - pad),
                max(0, box[1] - pad),
                min(image.width, box[2] + pad),
                min(image.height, box[3] + pad),
            )
        )
    image.save(target, optimize=True)


def richest_pack(out: Path) -> Path:
    """The pack with the most school-template letter clusters touching it (ties: lowest URN)."""
    packs = sorted((out / "packs").glob("*.xlsx"))
    if not packs:
        sys.exit(f"{out / 'packs'} holds no pack: was the audit run with workbooks?")
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return packs[0]
    touching: dict[str, tuple[int, int]] = {}
    for cluster in results.get("letter_clusters", []):
        school_template = cluster.get("verdict") == "school_template"
        for urn in set(map(str, cluster.get("school_families") or {})) | {str(cluster.get("urn"))}:
            templates, clusters = touching.get(urn, (0, 0))
            touching[urn] = (templates + school_template, clusters + 1)
    # most school-template clusters, then most clusters; the first (lowest URN) on ties
    return max(packs, key=lambda p: touching.get(p.stem, (0, 0)))


def rows_height(workbook: Path, sheet: str, rows: int) -> float:
    """Points from the top of the page to the end of row `rows` (plus the top margin)."""
    ws = load_workbook(workbook)[sheet]
    default = ws.sheet_format.defaultRowHeight or 15
    height = sum((ws.row_dimensions[r].height or default) for r in range(1, rows + 1))
    return height + (ws.page_margins.top or 0.5) * 72


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="an audit output folder (with workbooks)")
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--dpi", type=int, default=90)
    args = parser.parse_args()
    overview = args.out / "overview.xlsx"
    if not overview.exists():
        sys.exit(f"{overview} not found: run the audit with workbooks first")
    pack = richest_pack(args.out)
    args.docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        overview_pdf, pack_pdf = to_pdf(overview, folder), to_pdf(pack, folder)
        sheets = load_workbook(overview, read_only=True).sheetnames
        pack_sheets = load_workbook(pack, read_only=True).sheetnames
        render_page(
            overview_pdf, sheets.index("Summary") + 1, args.docs / "overview-summary.png", args.dpi
        )
        render_page(
            overview_pdf,
            sheets.index("Funnel") + 1,
            args.docs / "overview-funnel.png",
            args.dpi,
            rows_height(overview, "Funnel", FUNNEL_ROWS),
        )
        render_page(
            pack_pdf, pack_sheets.index("Cover") + 1, args.docs / "pack-cover.png", args.dpi
        )
        render_page(
            pack_pdf, pack_sheets.index("Letters") + 1, args.docs / "pack-letters.png", args.dpi
        )
    for name in ("overview-summary", "overview-funnel", "pack-cover", "pack-letters"):
        print(args.docs / f"{name}.png")
    print(f"(pack: {pack.name})")


if __name__ == "__main__":
    main()
