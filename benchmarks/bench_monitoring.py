"""Termly monitoring: error rates of the selection rules over time, and the CUSUM's in-control
false-signal rate, on synthetic LAs followed over several terms (`fixtures --terms`).

    python benchmarks/bench_monitoring.py null --las 100      # innocent selections per LA
    python benchmarks/bench_monitoring.py planted --las 100   # power on the planted patterns
    python benchmarks/bench_monitoring.py null --las 100 --seed 2000   # fresh seeds
    python benchmarks/bench_monitoring.py speed               # 50,000 pupils, 9 terms

Each LA: about 100 schools and 50,000 pupils over 9 termly censuses (2022-AUT to 2025-SUM),
audited at the latest term with the default profile. `null` LAs hold only persistent
ordinary differences between schools; `planted` LAs hold a steady x2 excess, an excess from
the latest year, one that stopped two years before and a primary family of siblings leaving
together. Selections by count rules (rules on an outcome's counts) are what is reported:
letters and statutory flags are not drawn in these LAs. The latest-term school frames are
kept in --keep (parquet) so other rules can be evaluated without re-running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl

COUNT_RULE_KEYS = ("outcome",)


def one_la(job: tuple[int, bool, str, str | None, float]) -> dict:
    """Generate one LA, audit its latest term, and summarise what the rules selected."""
    from offroll_audit import AuditOptions, load_dataset, run_audit
    from offroll_audit.synthetic import generate_history

    seed, null, profile, keep, sd = job
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "la"
        truth = generate_history(data, seed=seed, null=null, letters=False, heterogeneity_sd=sd)
        dataset, _ = load_dataset(data)
        result = run_audit(dataset, AuditOptions(profile=profile, letters=False))
    count_rules = {r["code"] for r in result.options.profile.select["rules"] if "outcome" in r}
    schools = result.schools.with_columns(
        pl.col("audit_reasons")
        .list.eval(pl.element().filter(pl.element().is_in(list(count_rules))))
        .alias("count_reasons")
    )
    planted = {p["urn"]: p["pattern"] for p in truth["planted"]}
    if keep:
        stem = Path(keep) / f"{'null' if null else 'planted'}-{seed}"
        schools.with_columns(pl.lit(seed).alias("seed")).write_parquet(f"{stem}.parquet")
        Path(f"{stem}.json").write_text(json.dumps(planted))
    selected = schools.filter(pl.col("count_reasons").list.len() > 0)
    timeline = result.history.timeline
    signals, school_years, designed = {}, {}, {}
    for outcome, design in timeline.designs.items():
        frame = timeline.frame.filter(pl.col(f"{outcome}_on_roll"))
        # ordinary schools only: the planted ones are not in control
        frame = frame.filter(~pl.col("urn").is_in(list(planted)))
        signals[outcome] = int(frame.get_column(f"{outcome}_cusum_signal").sum())
        school_years[outcome] = frame.height / 3
        per_school = frame.group_by("urn").agg(pl.col(f"{outcome}_expected").mean())
        rates = design.rate_for(per_school.get_column(f"{outcome}_expected").to_numpy())
        designed[outcome] = float(rates.mean())
    return {
        "seed": seed,
        "schools": schools.height,
        "innocent_selected": sorted(set(selected["urn"]) - set(planted)),
        "innocent_reasons": [
            r
            for u, rs in zip(selected["urn"], selected["count_reasons"], strict=True)
            if u not in planted
            for r in rs
        ],
        "planted_selected": {
            pattern: urn in set(selected["urn"]) for urn, pattern in planted.items()
        },
        "signals": signals,
        "school_years": school_years,
        "designed_rate": designed,
    }


def run(args: argparse.Namespace, null: bool) -> None:
    jobs = [
        (args.seed + i, null, args.profile, args.keep, args.heterogeneity_sd)
        for i in range(args.las)
    ]
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_la, jobs))
    elapsed = time.perf_counter() - started
    innocent = [len(r["innocent_selected"]) for r in rows]
    print(f"{len(rows)} {'null' if null else 'planted'} LAs in {elapsed:.0f} s")
    print(
        f"innocent schools selected by count rules at the latest term: "
        f"{statistics.mean(innocent):.3f} per LA (total {sum(innocent)}; "
        f"LAs with any: {sum(1 for n in innocent if n)})"
    )
    reasons: dict[str, int] = {}
    for r in rows:
        for reason in r["innocent_reasons"]:
            reasons[reason] = reasons.get(reason, 0) + 1
    print(f"  by rule: {json.dumps(reasons, sort_keys=True)}")
    for outcome in ("ehe", "unexplained"):
        signals = sum(r["signals"][outcome] for r in rows)
        years = sum(r["school_years"][outcome] for r in rows)
        designed = statistics.mean(r["designed_rate"][outcome] for r in rows)
        print(
            f"CUSUM {outcome}: {signals} signals in {years:.0f} ordinary school-years = "
            f"{signals / years:.4f} per school-year (design {designed:.4f}; "
            f"ratio {signals / years / designed:.2f})"
        )
    if not null:
        patterns = sorted({p for r in rows for p in r["planted_selected"]})
        for pattern in patterns:
            hits = [
                r["planted_selected"][pattern] for r in rows if pattern in r["planted_selected"]
            ]
            print(f"{pattern}: selected in {sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.1%}")


def speed(args: argparse.Namespace) -> None:
    """An LA of 50,000 pupils with 9 termly censuses: load and audit (no letters)."""
    from offroll_audit import AuditOptions, load_dataset, run_audit
    from offroll_audit.synthetic import generate_history

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "la"
        generate_history(data, seed=args.seed, letters=False)
        for _ in range(3):
            started = time.perf_counter()
            dataset, _ = load_dataset(data)
            loaded = time.perf_counter()
            run_audit(dataset, AuditOptions(profile=args.profile, letters=False))
            done = time.perf_counter()
            print(
                f"{dataset.pupils.height:,} pupil rows: load {loaded - started:.2f} s, "
                f"audit {done - loaded:.2f} s, total {done - started:.2f} s"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["null", "planted", "speed"])
    parser.add_argument("--las", type=int, default=100)
    parser.add_argument(
        "--seed",
        "--seed-start",
        type=int,
        default=1000,
        help="First seed: the LAs are seeds seed, seed + 1, ... (tuning used 1000-1099; "
        "validate on others, e.g. 2000).",
    )
    parser.add_argument("--profile", default="default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--heterogeneity-sd",
        type=float,
        default=0.25,
        help="Between-school sd of EHE log-odds (persistent school effects).",
    )
    parser.add_argument("--keep", default=None, help="Folder for the latest-term frames.")
    args = parser.parse_args(argv)
    if args.what == "speed":
        speed(args)
    else:
        run(args, null=args.what == "null")


if __name__ == "__main__":
    sys.exit(main())
