"""The national synthetic dataset the benchmarks share (generated once, then cached).

21,000 schools and 9 million pupils from `offroll_audit.synthetic` (no letters): every
benchmark that needs national scale reads the same files instead of generating its own copy.
"""

from __future__ import annotations

import time
from pathlib import Path

CACHE = Path("/tmp/offroll-bench-national")


def national_dataset(
    schools: int = 21_000, pupils: int = 9_000_000, seed: int = 1, cache: Path = CACHE
) -> Path:
    """The dataset folder for these arguments, generated on first use."""
    folder = cache / f"s{schools}-p{pupils}-seed{seed}"
    data, done = folder / "data", folder / "done"
    if not done.exists():
        from offroll_audit.synthetic import generate_dataset

        print(f"generating {pupils:,} pupils at {schools:,} schools in {data} ...", flush=True)
        started = time.perf_counter()
        generate_dataset(data, seed=seed, schools=schools, pupils=pupils, letters=False)
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
        done.write_text("ok\n")
    return data
