"""The Excel outputs: OUT/overview.xlsx and OUT/packs/URN.xlsx for each school selected for audit.

Both are views of results.json (so they can never disagree with it), written
with openpyxl. See overview.py and pack.py for the sheets,
and style.py for why every cell from input is inert text and why
the same results always give byte-identical files.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

from offroll_audit.progress import SILENT, Progress
from offroll_audit.workbooks.overview import document_time, write_overview
from offroll_audit.workbooks.pack import PackContext, write_pack

SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


def pack_name(urn: Any) -> str:
    """A file name from a URN; anything but letters, digits, - and _ becomes _ (no path tricks)."""
    name = SAFE_NAME.sub("_", str(urn))[:64]
    return f"{name or '_'}.xlsx"


def write_workbooks(
    results: dict[str, Any], out_dir: Path, *, suppress: int = 0, progress: Progress = SILENT
) -> None:
    """Write out_dir/overview.xlsx and out_dir/packs/<URN>.xlsx for every school with audit true.

    `suppress` N > 1 shows counts from 1 to N-1 as `<N` on the sheets meant to
    be shared (the overview's Summary and Schools, each pack's Cover and
    Breakdown); pupil-level sheets say they are not for sharing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a national results document is millions of objects; the collector would walk them
    # all again and again while openpyxl allocates (a third of the time): set them aside
    gc.freeze()
    try:
        when = document_time(results)
        with progress.step("Writing overview.xlsx"):
            write_overview(results, out_dir / "overview.xlsx", suppress, when)
        selected = [s for s in results.get("schools", []) if s.get("audit")]
        packs = out_dir / "packs"
        packs.mkdir(exist_ok=True)
        if not selected:
            return
        context = PackContext.build(results, suppress, when)
        for school in progress.track(selected, "Writing audit packs", len(selected)):
            write_pack(school, context, packs / pack_name(school.get("urn")))
    finally:
        gc.unfreeze()
