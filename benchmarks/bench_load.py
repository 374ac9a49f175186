"""Benchmark the loader at national scale: `load_dataset` on 9 million pupils.

Usage: python benchmarks/bench_load.py [--pupils 9000000] [--schools 21000] [--runs 1]

The dataset (pupils.csv, exits.csv, schools.csv; no letters) is the benchmarks'
shared national dataset (national.py); each timed run then loads it in a fresh
process so the peak RSS reported is the loader's own. Targets on a 2-core
machine: under 15 s and under 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from national import national_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

TARGET_SECONDS = 15.0
TARGET_GB = 6.0


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schools", type=int, default=21_000)
    parser.add_argument("--pupils", type=int, default=9_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="timed loads (each in a new process)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(data: Path) -> int:
    """One timed load in this (fresh) process; prints a JSON line for the parent."""
    started = time.perf_counter()
    from offroll_audit.load import load_dataset

    dataset, report = load_dataset(data)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_gb = usage.ru_maxrss / 1024**2  # Linux: KiB
    result = {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_gb": peak_gb,
        "pupil_rows": dataset.pupils.height,
        "exits": dataset.exits.height,
        "schools": dataset.schools.height,
        "warnings": len(report.warnings),
    }
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.child:
        return child(args.child)
    data = national_dataset(args.schools, args.pupils, args.seed)
    sizes = {p.name: p.stat().st_size / 1024**2 for p in sorted(data.iterdir()) if p.is_file()}
    print("input: " + ", ".join(f"{name} {mb:,.0f} MB" for name, mb in sizes.items()))
    print(
        f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} CPUs (a busy machine inflates wall time)"
    )
    worst = {"seconds": 0.0, "peak_gb": 0.0}
    for run in range(1, args.runs + 1):
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(data)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(done.stdout + done.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"run {run}: {result['pupil_rows']:,} pupil rows, {result['exits']:,} exits, "
            f"{result['schools']:,} schools, {result['warnings']} warnings; "
            f"wall time {result['seconds']:.1f} s (CPU {result['cpu_seconds']:.1f} s), "
            f"peak RSS {result['peak_gb']:.2f} GB"
        )
        worst = {k: max(worst[k], result[k]) for k in worst}
    ok = worst["seconds"] < TARGET_SECONDS and worst["peak_gb"] < TARGET_GB
    verdict = "within" if ok else "MISSES"
    print(
        f"{verdict} target (< {TARGET_SECONDS:.0f} s, < {TARGET_GB:.0f} GB): "
        f"worst {worst['seconds']:.1f} s, {worst['peak_gb']:.2f} GB"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
