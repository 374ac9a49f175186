"""Termly monitoring: error rates of the selection rules over time, and the CUSUM's in-control
false-signal rate, on synthetic LAs followed over several terms (`fixtures --terms`).

    python benchmarks/bench_monitoring.py null --las 100      # innocent selections per LA
    python benchmarks/bench_monitoring.py planted --las 100   # power on the planted patterns
    python benchmarks/bench_monitoring.py null --las 100 --seed 2000   # fresh seeds
    python benchmarks/bench_monitoring.py speed               # 50,000 pupils, 9 terms
    python benchmarks/bench_monitoring.py bound               # what any count test can reach

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


def null_tail(k: int, expected: float, sd: float) -> float:
    """P(O >= k) for an ordinary school expecting `expected` whose lasting difference from
    the others is lognormal with log sd `sd` (mean 1), by Gauss-Hermite quadrature."""
    import numpy as np
    from scipy import stats

    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    level = np.exp(sd * nodes - sd**2 / 2)
    return float((weights / weights.sum() * stats.poisson.sf(k - 1, expected * level)).sum())


def oracle_threshold(expected: float, sd: float, budget: float) -> int:
    """The most powerful test of one school's count is a threshold on it (the likelihood
    ratio rises with the count): the smallest count k that an ordinary school expecting
    exactly `expected` reaches with probability at most `budget`."""
    k = int(expected)
    while null_tail(k, expected, sd) > budget:
        k += 1
    return k


def planted_counts(seed: int) -> dict[str, tuple[float, float]]:
    """One planted LA's (observed, expected) exits to home education: the steady school over
    all terms, the recent school over the latest year, and the recent school's vulnerable
    Year 9-11 pupils over the latest year (the pupils its excess targets). Expected counts
    are each term's census pupils times the term's rate per case-mix cell among the LA's
    schools with nothing planted: exact up to the noise of those rates, no model involved."""
    from offroll_audit.synthetic import generate_history
    from offroll_audit.window import term_index, terms_of_days

    cell = ["sen_provision", "disadvantaged", "social_care", "year_group"]
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "la"
        truth = generate_history(data, seed=seed, null=False, letters=False)
        pupils = pl.read_csv(data / "pupils.csv", infer_schema_length=0)
        exits = pl.read_csv(data / "exits.csv", infer_schema_length=0)
    planted = {p["pattern"]: p["urn"] for p in truth["planted"]}
    pupils = pupils.filter(pl.col("enrolment_status") != "S").with_columns(
        targeted=(
            (pl.col("sen_provision") != "N")
            | (pl.col("disadvantaged") == "true")
            | (pl.col("social_care") != "none")
        )
        & pl.col("year_group").is_in(["9", "10", "11"])
    )
    exits = exits.filter(pl.col("destination") == "EHE")
    exits = exits.with_columns(census=terms_of_days(exits["exit_date"].str.to_date()))
    left = pupils.join(exits.select("pupil_id", "urn", "census"), on=["pupil_id", "urn", "census"])
    innocent = ~pl.col("urn").is_in(list(planted.values()))
    at_risk = pupils.filter(innocent).group_by("census", *cell).len("pupils")
    events = left.filter(innocent).group_by("census", *cell).len("exits")
    rates = at_risk.join(events, on=["census", *cell], how="left").select(
        "census", *cell, (pl.col("exits").fill_null(0) / pl.col("pupils")).alias("rate")
    )
    terms = sorted(pupils["census"].unique().to_list(), key=term_index)
    latest = pl.col("census").is_in(terms[-3:])

    def counts(urn: str, rows: pl.Expr) -> tuple[float, float]:
        mine = pupils.filter((pl.col("urn") == urn) & rows)
        expected = mine.join(rates, on=["census", *cell], how="left")["rate"].fill_null(0).sum()
        observed = left.filter((pl.col("urn") == urn) & rows).height
        return float(observed), float(expected)

    recent = planted["recent_excess"]
    return {
        "steady x2, all nine terms": counts(planted["steady_excess"], pl.lit(True)),
        "recent, whole school, latest year": counts(recent, latest),
        "recent, vulnerable Y9-11 only, latest year": counts(recent, latest & pl.col("targeted")),
    }


def bound(args: argparse.Namespace) -> None:
    """What the best possible rule on a school's counts could select of the planted patterns
    at a given budget of innocent selections per school: an upper bound for any real rule.

    The oracle knows each school's expected count exactly (no fitting error) and, for the
    recent excess, the school's own lasting level (1: planted schools have no other
    difference), so it needs no earlier terms: more than any real test knows. The steady
    school is compared with ordinary schools that differ lastingly (lognormal, sd
    --heterogeneity-sd), as the LAs' ordinary schools do. About 100 schools per LA and at
    most 0.1 innocent selections per LA leave a budget of 0.001 per school if any school
    could be selected, 0.0033 if only the ~30 secondaries could; 0.01 is ten times the
    target. Counts are measured on --las planted LAs from --seed (planted_counts).
    """
    rows = [planted_counts(args.seed + i) for i in range(args.las)]
    print(f"{args.las} planted LAs from seed {args.seed}")
    print(f"{'pattern':44} {'O mean':>7} {'E mean':>7} {'0.001':>7} {'0.0033':>7} {'0.01':>7}")
    for name in rows[0]:
        pairs = [row[name] for row in rows]
        sd = args.heterogeneity_sd if name.startswith("steady") else 0.0
        shares = []
        for budget in (0.001, 0.0033, 0.01):
            hits = [o >= oracle_threshold(e, sd, budget) for o, e in pairs]
            shares.append(f"{sum(hits) / len(hits):7.0%}")
        o_mean = sum(o for o, _ in pairs) / len(pairs)
        e_mean = sum(e for _, e in pairs) / len(pairs)
        print(f"{name:44} {o_mean:7.1f} {e_mean:7.1f} {' '.join(shares)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["null", "planted", "speed", "bound"])
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
    elif args.what == "bound":
        bound(args)
    else:
        run(args, null=args.what == "null")


if __name__ == "__main__":
    sys.exit(main())
