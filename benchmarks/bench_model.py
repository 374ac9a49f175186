"""Evaluate and time `offroll-audit model` (offroll_audit/model.py) on simulated pupils.

Usage:
  python benchmarks/bench_model.py --coverage [--seeds 100] [--mixed-seeds 100]
  python benchmarks/bench_model.py --scale [--pupils 9000000] [--schools 20000]

--coverage: pupil-level data simulated directly with numpy (300 schools, about
90,000 pupils per seed) from a logit model with a normal school random
intercept (SD 0.5), so pupils in a school are correlated and naive standard
errors are too small. Planted: odds ratio 2.0 for SEN pupils in one trust's 30
academies (`sen_t0`); null: a school-level attribute (`rural`), a pupil-level
one (`sex`) and the trust's own main effect (`t0`). Reports how often the 95%
CI covers the truth for the default fit (binomial GLM, cluster-robust by
school), for the same fit with naive model-based SEs (to show clustering
matters) and for --mixed (random intercept; its target is the conditional odds
ratio, exactly the planted one). Targets: >= 90% for the planted and null terms.

--scale: a 9-million-pupil frame (20,000 schools) built in memory, then
`fit_model` timed on six predictors (wall and CPU time: on a shared machine the
wall time includes waiting for a core). Target: under 20 s; peak RSS reported
(getrusage, so run in a fresh process).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from offroll_audit import codes
from offroll_audit.model import fit_model

PLANTED_OR = 2.0
COVERAGE_FORMULA = (
    "ehe ~ C(sen_provision) + disadvantaged + C(social_care) + t0 + sen_t0 + rural + sex"
)
TRUTH = {"sen_t0[T.True]": PLANTED_OR, "t0[T.True]": 1.0, "rural[T.True]": 1.0, "sex[T.M]": 1.0}
SCALE_FORMULA = (
    "ehe ~ C(sen_provision) + disadvantaged + C(social_care) + C(year_group) + type "
    "+ school_pct_disadvantaged"
)


# --------------------------------------------------------------------------- coverage


def simulate_la(seed: int, schools: int = 300, sigma: float = 0.5) -> pl.DataFrame:
    """One LA's pupils: 30 academies of trust T0, 10 other trusts of 8, the rest standalone."""
    rng = np.random.default_rng(seed)
    trust = np.full(schools, -1)
    trust[:30] = 0
    trust[30:110] = 1 + np.arange(80) // 8
    academy = (trust >= 0) | (rng.random(schools) < 0.3)
    rural = rng.random(schools) < 0.4
    school_dis = rng.beta(2, 6, schools)
    u = rng.normal(0.0, sigma, schools)
    size = rng.integers(100, 500, schools)
    school = np.repeat(np.arange(schools), size)
    n = int(size.sum())
    sen = rng.choice(3, n, p=[0.83, 0.13, 0.04])
    dis = rng.random(n) < school_dis[school]
    social = rng.choice(4, n, p=[0.95, 0.03, 0.01, 0.01])
    male = rng.random(n) < 0.5
    t0 = trust[school] == 0
    sen_t0 = (sen > 0) & t0
    eta = (
        -4.2
        + np.array([0.0, 0.6, 0.9])[sen]
        + 0.5 * dis
        + np.array([0.0, 0.7, 0.9, -0.3])[social]
        + u[school]
        + math.log(PLANTED_OR) * sen_t0
    )
    ehe = rng.random(n) < expit(eta)
    trust_names = np.array([f"Trust {t}" if t >= 0 else "" for t in trust])[school]
    return pl.DataFrame(
        {
            "urn": (100000 + school).astype(str),
            "trust": pl.Series(trust_names).replace("", None),
            "type": pl.Series(np.where(academy, "academy", "maintained")[school]).cast(
                codes.SchoolType
            ),
            "sen_provision": pl.Series(np.array(codes.SEN_PROVISION)[sen]).cast(codes.SenProvision),
            "disadvantaged": dis,
            "social_care": pl.Series(np.array(codes.SOCIAL_CARE)[social]).cast(codes.SocialCare),
            "sex": np.where(male, "M", "F"),
            "t0": t0,
            "sen_t0": sen_t0,
            "rural": rural[school],
            "ehe": ehe.astype(np.int64),
        }
    )


def covers(result, term: str, truth: float) -> bool:
    row = next(t for t in result.terms if t.term == term)
    return bool(row.ci_low <= truth <= row.ci_high)


def coverage(seeds: int, mixed_seeds: int) -> dict:
    """Share of seeds whose 95% CI covers the truth, per fitting method and term."""
    methods = {
        "glm_cluster_school": {"cluster": "school", "mixed": False, "seeds": seeds},
        "glm_naive": {"cluster": "none", "mixed": False, "seeds": seeds},
        "mixed_school": {"cluster": "school", "mixed": True, "seeds": mixed_seeds},
    }
    hits = {m: dict.fromkeys(TRUTH, 0) for m in methods}
    estimates: dict[str, list[float]] = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    pupils = []
    for seed in range(max(seeds, mixed_seeds)):
        frame = simulate_la(seed)
        pupils.append(frame.height)
        for name, spec in methods.items():
            if seed >= spec["seeds"]:
                continue
            started = time.perf_counter()
            result = fit_model(
                frame, COVERAGE_FORMULA, cluster=spec["cluster"], mixed=spec["mixed"]
            )
            seconds[name] += time.perf_counter() - started
            for term, truth in TRUTH.items():
                hits[name][term] += covers(result, term, truth)
            estimates[name].append(
                next(t.odds_ratio for t in result.terms if t.term == "sen_t0[T.True]")
            )
    report = {"pupils_per_seed_mean": float(np.mean(pupils)), "formula": COVERAGE_FORMULA}
    for name, spec in methods.items():
        n = spec["seeds"]
        if n == 0:
            continue
        report[name] = {
            "seeds": n,
            "coverage_pct": {term: 100.0 * hits[name][term] / n for term in TRUTH},
            "planted_or_median_estimate": float(np.median(estimates[name])),
            "mean_fit_seconds": seconds[name] / n,
        }
    return report


# --------------------------------------------------------------------------- scale


def enum_series(indices: np.ndarray, dtype: pl.Enum) -> pl.Series:
    """Codes 0..k-1 to an Enum column without making millions of Python strings."""
    mapping = dict(enumerate(dtype.categories.to_list()))
    return pl.Series(indices).replace_strict(mapping, return_dtype=dtype)


def national_frame(pupils: int, schools: int, seed: int = 1) -> pl.DataFrame:
    """9 million pupils in 20,000 primary and secondary schools, built in memory."""
    rng = np.random.default_rng(seed)
    secondary = rng.random(schools) < 0.2
    weight = np.where(secondary, 4.0, 1.0) * rng.uniform(0.5, 1.5, schools)
    size = np.maximum(np.round(weight / weight.sum() * pupils).astype(np.int64), 20)
    size[-1] += pupils - size.sum()
    school = np.repeat(np.arange(schools, dtype=np.int32), size)
    n = len(school)
    trust = np.where(rng.random(schools) < 0.4, rng.integers(0, schools // 10, schools), -1)
    school_type = np.where(
        trust >= 0, 0, np.where(rng.random(schools) < 0.1, 2, 1)
    )  # acad/maint/free
    school_dis = rng.beta(2, 6, schools)
    u = rng.normal(0.0, 0.5, schools)
    sen = rng.choice(3, n, p=[0.83, 0.13, 0.04]).astype(np.int8)
    dis = rng.random(n) < school_dis[school]
    social = rng.choice(4, n, p=[0.95, 0.03, 0.01, 0.01]).astype(np.int8)
    year_index = np.where(
        secondary[school], 10 + rng.integers(0, 5, n), 2 + rng.integers(0, 7, n)
    )  # Y7-11 or R-6 (index into codes.YEAR_GROUPS)
    eta = -5.0 + np.array([0.0, 0.6, 0.9])[sen] + 0.5 * dis + u[school]
    eta += np.array([0.0, 0.7, 0.9, -0.3])[social] + 0.05 * (year_index - 2)
    ehe = (rng.random(n) < expit(eta)).astype(np.int8)
    del eta
    pct = pl.Series(school_dis * 100)
    frame = pl.DataFrame(
        {
            "urn": pl.Series(school + 100000).cast(pl.String),
            "_school": school,
            "sen_provision": enum_series(sen, codes.SenProvision),
            "disadvantaged": dis,
            "social_care": enum_series(social, codes.SocialCare),
            "year_group": enum_series(year_index, codes.YearGroup),
            "ehe": ehe,
        }
    )
    schools_frame = pl.DataFrame(
        {
            "_school": np.arange(schools, dtype=np.int32),
            "type": enum_series(school_type, codes.SchoolType),
            "trust": pl.Series([f"Trust {t}" if t >= 0 else None for t in trust], dtype=pl.String),
            "school_pct_disadvantaged": pct,
        }
    )
    return frame.join(schools_frame, on="_school", how="left").drop("_school")


def scale(pupils: int, schools: int) -> dict:
    started = time.perf_counter()
    frame = national_frame(pupils, schools)
    built = time.perf_counter() - started
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu = time.perf_counter(), time.process_time()
    result = fit_model(frame, SCALE_FORMULA)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "pupils": result.n_pupils,
        "clusters": result.n_clusters,
        "rows_fitted": result.n_rows_fitted,
        "fitted_on": result.fitted_on,
        "parameters": len(result.terms),
        "formula": SCALE_FORMULA,
        "frame_build_seconds": round(built, 2),
        "fit_seconds": round(seconds, 2),
        "fit_cpu_seconds": round(cpu, 2),
        "peak_rss_mb_before_fit": round(rss_before),
        "peak_rss_mb": round(peak),
        "target_seconds": 20,
        "ok": seconds < 20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage", action="store_true", help="CI coverage over seeds")
    parser.add_argument("--scale", action="store_true", help="time a 9M-pupil fit")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--mixed-seeds", type=int, default=100)
    parser.add_argument("--pupils", type=int, default=9_000_000)
    parser.add_argument("--schools", type=int, default=20_000)
    args = parser.parse_args(argv)
    if not (args.coverage or args.scale):
        parser.error("give --coverage and/or --scale")
    results = {}
    if args.coverage:
        results["coverage"] = coverage(args.seeds, args.mixed_seeds)
    if args.scale:
        results["scale"] = scale(args.pupils, args.schools)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
