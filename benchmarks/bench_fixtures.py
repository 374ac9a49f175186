"""Time the synthetic-dataset generator at national scale and report its peak memory.

A script, not a test: `python benchmarks/bench_fixtures.py` (defaults: 21,000
schools, 9 million pupils, no letters). The budget is under 3 minutes and
under 8 GB peak on a 2-core machine. Peak RSS comes from getrusage, so run
it in a fresh process.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from offroll_audit.synthetic import generate_dataset


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=21_000)
    parser.add_argument("--pupils", type=int, default=9_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--letters", action="store_true", help="also write parents' letters")
    parser.add_argument("--out", type=Path, help="keep the dataset here (default: a temp folder)")
    return parser.parse_args(argv)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024**2


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="offroll-bench-")) / "data"
    started = time.perf_counter()
    truth = generate_dataset(
        out, seed=args.seed, schools=args.schools, pupils=args.pupils, letters=args.letters
    )
    seconds = time.perf_counter() - started
    counts = truth["counts"]
    print(
        f"schools {counts['schools']:,}  pupils {counts['pupils']:,}  "
        f"roll rows {counts['pupil_rows']:,}  exits {counts['exits']:,}  "
        f"EHE {counts['ehe_exits']:,}"
    )
    print(
        f"wall time {seconds:.1f} s  peak RSS {peak_rss_gb():.2f} GB  "
        f"output {folder_size_mb(out):,.0f} MB"
    )
    if args.out is None:
        shutil.rmtree(out.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
