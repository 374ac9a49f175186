"""Time the Excel outputs at national scale: overview.xlsx plus 300 audit packs.

A script, not a test: `python benchmarks/bench_workbooks.py [--results results.json]`.
Without --results it audits the benchmarks' shared national dataset (national.py:
21,000 schools, 9 million pupils, no letters) once with `offroll-audit audit
--no-workbooks` and keeps the output in --cache: about 700,000 exits. The national data
has no letters, so each of the packs gets --clusters synthetic letter
clusters (three long excerpts each) to measure full-size Letters sheets.

Budget: under 60 s for the overview and 300 packs, every pack under 2 MB.
Exit code 1 when a budget is missed. Loading the JSON is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from national import national_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import offroll_audit.workbooks as workbook

BUDGET_SECONDS = 60.0
PACK_LIMIT_BYTES = 2_000_000
EXCERPT = (
    "St Example's High School Orchard Close Tel: <num> office@example.sch.uk To the Headteacher "
    "and Governors <date> Re: EHE request for <name> <name>, Year <num> Pupil name: <name> "
    "UPN: <upn> Tutor group: <num> Dear Sir/Madam, I confirm that on <date> I met <name> to "
    "discuss <name> future at the school and that I have chosen to home educate. I understand "
    "that responsibility for <name> education now passes entirely to me as the parent. "
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="a results.json (default: build one)")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "offroll-bench-workbooks"
    )
    parser.add_argument("--packs", type=int, default=300, help="schools to write a pack for")
    parser.add_argument("--clusters", type=int, default=2, help="synthetic letter clusters a pack")
    parser.add_argument("--suppress", type=int, default=0)
    parser.add_argument(
        "--keep", type=Path, help="write the workbooks here (default: a temp folder)"
    )
    return parser.parse_args(argv)


def national_results(cache: Path) -> Path:
    """results.json of a national synthetic run, built once."""
    results = cache / "out" / "results.json"
    if results.exists():
        return results
    cache.mkdir(parents=True, exist_ok=True)
    data = national_dataset()
    run = [sys.executable, "-m", "offroll_audit"]
    print(f"auditing the national dataset into {cache} (once)", flush=True)
    subprocess.run(
        [*run, "audit", str(data), "--out", str(cache / "out"), "--no-workbooks", "--quiet"],
        check=True,
    )
    return results


def choose_packs(results: dict[str, Any], packs: int) -> None:
    """Exactly `packs` schools selected: the audit's own choice first, then the most unusual."""
    ranked = sorted(
        results["schools"],
        key=lambda s: (not s.get("audit"), (s.get("ehe") or {}).get("p") or 1.0, str(s["urn"])),
    )
    for rank, school in enumerate(ranked):
        school["audit"] = rank < packs
        if school["audit"] and not school.get("audit_reasons_text"):
            school["audit_reasons"] = ["BENCHMARK"]
            school["audit_reasons_text"] = ["chosen for the benchmark"]


def add_clusters(results: dict[str, Any], per_pack: int) -> None:
    """Letter clusters with long excerpts for every selected school (the data has no letters)."""
    selected = [s for s in results["schools"] if s.get("audit")]
    clusters = results.setdefault("letter_clusters", [])
    for school in selected:
        for k in range(per_pack):
            cluster_id = f"B{school['urn']}-{k}"
            excerpts = [
                {
                    "letter_id": f"{cluster_id}-{i}",
                    "segments": [
                        {"text": EXCERPT * 2, "shared": True},
                        {
                            "text": "My own words about my child and why we decided.",
                            "shared": False,
                        },
                        {"text": EXCERPT, "shared": True},
                    ],
                }
                for i in range(3)
            ]
            clusters.append(
                {
                    "cluster_id": cluster_id,
                    "urn": school["urn"],
                    "letters": [e["letter_id"] for e in excerpts],
                    "families": 12,
                    "schools": 1,
                    "similarity": 0.8,
                    "similarity_min": 0.6,
                    "verdict": "school_template",
                    "trusts": [school.get("trust") or "Trust"],
                    "school_families": {school["urn"]: 12},
                    "date_from": "2024-09-10",
                    "date_to": "2024-12-01",
                    "passages": [EXCERPT],
                    "excerpts": excerpts,
                    "signals": [
                        {
                            "code": "SCHOOL_VOICE",
                            "detail": "12 of 12 letters use the school's voice.",
                        },
                        {"code": "SAME_METADATA", "detail": "Document author 'X' is identical."},
                    ],
                }
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    source = args.results or national_results(args.cache)
    started = time.perf_counter()
    results = json.loads(source.read_text(encoding="utf-8"))
    print(f"loaded {source} in {time.perf_counter() - started:.1f} s (not timed below)")
    choose_packs(results, args.packs)
    add_clusters(results, args.clusters)
    print(
        f"schools {len(results['schools']):,}  exits {len(results['exits']):,}  "
        f"packs {sum(bool(s['audit']) for s in results['schools']):,}  "
        f"letter clusters {len(results['letter_clusters']):,}"
    )

    timings: dict[str, Any] = {"packs": []}
    write_overview, write_pack = workbook.write_overview, workbook.write_pack

    def timed_overview(*a: Any, **k: Any) -> None:
        began = time.perf_counter()
        write_overview(*a, **k)
        timings["overview"] = time.perf_counter() - began

    def timed_pack(*a: Any, **k: Any) -> None:
        began = time.perf_counter()
        write_pack(*a, **k)
        timings["packs"].append(time.perf_counter() - began)

    workbook.write_overview, workbook.write_pack = timed_overview, timed_pack
    out = args.keep or Path(tempfile.mkdtemp(prefix="offroll-bench-wb-"))
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        workbook.write_workbooks(results, out, suppress=args.suppress)
    finally:
        workbook.write_overview, workbook.write_pack = write_overview, write_pack
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    packs = sorted((out / "packs").glob("*.xlsx"))
    sizes = [p.stat().st_size for p in packs]
    overview_mb = (out / "overview.xlsx").stat().st_size / 1e6
    pack_seconds = sum(timings["packs"])
    print(f"overview   {timings['overview']:.1f} s  {overview_mb:.1f} MB")
    mean_ms = pack_seconds / max(len(packs), 1) * 1000
    max_ms = max(timings["packs"], default=0) * 1000
    print(
        f"packs      {pack_seconds:.1f} s for {len(packs)}  (mean {mean_ms:.0f} ms, max "
        f"{max_ms:.0f} ms)  size max {max(sizes, default=0) / 1e6:.2f} MB, "
        f"mean {sum(sizes) / max(len(sizes), 1) / 1e6:.2f} MB"
    )
    print(
        f"total      {wall:.1f} s wall, {cpu:.1f} s CPU  "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GB"
    )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    ok = wall < BUDGET_SECONDS and all(size < PACK_LIMIT_BYTES for size in sizes)
    print("within budget" if ok else f"OVER BUDGET (< {BUDGET_SECONDS:.0f} s, packs < 2 MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
