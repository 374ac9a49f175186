"""Benchmark the letters stage: 100,000 synthetic letters through `detect_templates`.

Usage: python benchmarks/bench_letters.py [--letters 100000] [--schools 3000] [--seed 7]
                                          [--cache /tmp/offroll-bench-letters]

The letters are written once by the synthetic generator (txt, md, docx and pdf,
school templates at 5% of schools, public sample letters, siblings, free-form
letters), read back with `read_letter_texts` and cached as parquet; the timed
run then happens in a fresh process so its peak RSS is the stage's own.
Targets on a 2-core machine: under 120 s and under 3 GB. The machine may be shared, so the
CPU seconds the run used are reported too (less sensitive to other load than wall time).
`--module` times another implementation with the same interface (e.g. a saved copy of an
earlier offroll_audit/letters.py on PYTHONPATH), for before/after figures on one cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

LETTERS_PER_EXIT = 0.845  # measured: the generator writes about this many letters per EHE exit
P_SIBLING = 0.12


def synthetic_la(
    rng: np.random.Generator, schools: int, exits: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Schools (a fifth of them in trusts of 5) and EHE exits with some sibling families."""
    urns = [str(100001 + i) for i in range(schools)]
    in_trust = np.arange(schools) < schools // 5
    trusts = [f"Trust {i // 5}" if t else None for i, t in enumerate(in_trust)]
    school_frame = pl.DataFrame(
        {"urn": urns, "name": [f"School {u}" for u in urns], "trust": trusts, "phase": "secondary"}
    )
    urn = np.array(urns)[rng.integers(0, schools, exits)]
    family = np.arange(exits)
    siblings = np.flatnonzero(rng.random(exits) < P_SIBLING)
    family[siblings] = np.maximum(siblings - 1, 0)
    start = dt.date(2024, 9, 2)
    exit_frame = pl.DataFrame(
        {
            "pupil_id": [f"P{i:07d}" for i in range(exits)],
            "urn": urn,
            "family_id": [f"F{f:07d}" for f in family],
            "exit_date": [start + dt.timedelta(days=int(d)) for d in rng.integers(0, 280, exits)],
            "year_group": rng.choice(["7", "8", "9", "10", "11"], exits).tolist(),
        }
    )
    return school_frame, exit_frame


def generate(cache: Path, letters: int, schools: int, seed: int) -> None:
    """Write the letters with the synthetic generator, extract them, cache texts as parquet."""
    from offroll_audit.letters import read_letter_texts
    from offroll_audit.synthetic.letters import write_letters

    rng = np.random.default_rng(seed)
    school_frame, exits = synthetic_la(rng, schools, round(letters / LETTERS_PER_EXIT))
    template_schools = school_frame.filter(pl.col("trust").is_null()).sample(
        fraction=0.05, seed=seed
    )["urn"]
    trust_schools = school_frame.filter(pl.col("trust") == "Trust 0")["urn"].head(2)
    started = time.perf_counter()
    manifest, _, truth = write_letters(
        cache, exits, school_frame, rng, template_schools.to_list(), trust_schools.to_list()
    )
    written = time.perf_counter() - started
    root = cache / "letters"
    started = time.perf_counter()
    texts = read_letter_texts(manifest.with_columns(path=pl.lit(f"{root}/") + pl.col("file")), root)
    extracted = time.perf_counter() - started
    texts.write_parquet(cache / "texts.parquet")
    school_frame.write_parquet(cache / "schools.parquet")
    (cache / "truth.json").write_text(json.dumps(truth))
    print(
        f"generated {manifest.height:,} letter files in {written:.0f} s; "
        f"extracted in {extracted:.0f} s ({manifest.height / extracted:,.0f} letters/s)"
    )


def detect(cache: Path, module: str) -> None:
    """The timed run (in its own process): prints one JSON line."""
    import importlib

    detect_templates = importlib.import_module(module).detect_templates
    letters = pl.read_parquet(cache / "texts.parquet")
    schools = pl.read_parquet(cache / "schools.parquet")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = detect_templates(letters, schools)
    seconds = time.perf_counter() - started
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    truth = json.loads((cache / "truth.json").read_text())
    kinds = pl.DataFrame({"letter_id": list(truth), "kind": [t["kind"] for t in truth.values()]})
    scored = (
        result.letters.join(kinds, on="letter_id")
        .group_by("kind")
        .agg(letters=pl.len(), school_template=(pl.col("verdict") == "school_template").sum())
    )
    print(
        json.dumps(
            {
                "letters": letters.height,
                "words_mean": float(result.letters["words"].mean()),
                "module": module,
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu_seconds, 1),
                "peak_rss_mb": round(peak / 1024),
                "rss_before_mb": round(before / 1024),
                "clusters": len(result.clusters),
                "verdicts": dict(
                    result.letters["verdict"].cast(pl.String).value_counts().iter_rows()
                ),
                "school_template_share_by_kind": {
                    k: round(s / n, 4) for k, n, s in scored.sort("kind").iter_rows()
                },
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=100_000)
    parser.add_argument("--schools", type=int, default=3_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/offroll-bench-letters"))
    parser.add_argument("--module", default="offroll_audit.letters")
    parser.add_argument("--detect-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache / f"{args.letters}-{args.schools}-{args.seed}"
    if args.detect_only:
        detect(cache, args.module)
        return
    if not (cache / "texts.parquet").exists():
        generate(cache, args.letters, args.schools, args.seed)
    command = [
        sys.executable,
        __file__,
        "--detect-only",
        "--letters",
        str(args.letters),
        "--schools",
        str(args.schools),
        "--seed",
        str(args.seed),
        "--cache",
        str(args.cache),
        "--module",
        args.module,
    ]
    report = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(json.dumps(report, indent=2))
    ok = report["seconds"] < 120 and report["peak_rss_mb"] < 3 * 1024
    print("targets (< 120 s, < 3 GB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
