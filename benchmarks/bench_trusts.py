"""Self-review of trusts: each trust's own data, audited with --baseline self, against the LA.

Usage:
    python benchmarks/bench_trusts.py [--las 50] [--schools 120] [--pupils 45000] [--workers 2]
        [--seed 1000]

50 synthetic LAs (the one-year generator) whose EHE rate runs evenly from 0.5 to 3 times the
national estimate (`ehe_rate_factor`). Each LA is audited LA-wide (local baseline), then every
trust's schools are cut out (pupils, exits, schools of its own schools only, as a trust's data
lead would export them) and audited on their own with `--baseline self` in four ways: the
shape (relative risks) from the synthetic nation or from england.toml, each with the level
estimated from the trust's schools (falling back to national when they are too few) or with
exits to home education anchored to the LA's published rate (--la-rates, the LA's own EHE
exits per pupil a year). Letters are off everywhere, so selection is by the counts and the
statutory flag.

The synthetic nation's shape is fitted once on a large null synthetic dataset (main-effects
logit on the pooled cells) and written as a baseline file: the generator's relative risks
(year group, SEN, disadvantage, social care) are not England's estimates, and a self-review
can only be as good as its shape.

Reported, per variant: planted off-rollers (offroll_ehe) that fall in a trust, and the share
selected in the trust slice against the share the LA-wide audit selects (the same schools,
and every off-roller); innocent schools (nothing planted, the large deprived school
included) selected per trust slice; how often the LA's large deprived innocent school falls
in a trust slice and how often it is selected there; how the level was set.
Targets (issue 14): the same share as the LA-wide audit, <= 0.1 innocent per slice, and the
large deprived innocent never.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from offroll_audit import audit as pipeline
from offroll_audit import expected as exp
from offroll_audit.audit import AuditOptions, run_audit
from offroll_audit.classify import classify_exits
from offroll_audit.load import load_dataset
from offroll_audit.synthetic import generate_dataset
from offroll_audit.window import Calendar, choose_window, pick_census

TABLES = ("pupils", "exits", "schools")
SHAPES = ("synthetic", "england")
LEVELS = ("estimated", "anchored")
VARIANTS = [f"{shape}_{level}" for shape in SHAPES for level in LEVELS]


def nation_shape(folder: Path, seed: int = 99, schools: int = 400, pupils: int = 200_000) -> Path:
    """A baseline file whose relative risks are the synthetic nation's (fitted on a null
    dataset), scaled so that the nation's pupils keep its annual rate, as england.toml is."""
    target = folder / "synthetic-nation.toml"
    if target.exists():
        return target
    data = folder / "nation"
    generate_dataset(data, seed=seed, schools=schools, pupils=pupils, letters=False, null=True)
    dataset, _ = load_dataset(data)
    options = AuditOptions(letters=False, baseline="local")
    calendar = Calendar.of(dataset.pupils, dataset.exits)
    window = choose_window(dataset.exits, None, None, None, calendar)
    roll_pupils = pick_census(dataset.pupils, window)
    exits = classify_exits(
        dataset.exits, roll_pupils, dataset.schools, window, options.profile, None
    )
    mix = exp.DEFAULT_CASE_MIX
    roll = exp.roll_cells(roll_pupils, exits, window, pipeline.outcome_filters(), mix)
    families, glm = exp.import_glm()
    lines = ['title = "Synthetic nation (fitted on a null synthetic dataset)"', 'date = "bench"']
    for outcome, (cells, case_mix) in pipeline.outcome_cells(roll, mix).items():
        if outcome == "y10_loss":
            continue
        totals = exp.CellLayout.of(cells, case_mix).pattern_totals([], case_mix)
        design, names = exp.design_matrix(totals, case_mix, "main")
        trials, events = totals["trials"].to_numpy(), totals["events"].to_numpy()
        keep = trials > 0
        response = np.column_stack([events[keep], trials[keep] - events[keep]])
        beta = glm(response, design[keep], family=families.Binomial()).fit().params
        risks: dict[str, dict[str, float]] = {"year_group": {"R": 1.0}}
        for name, coefficient in zip(names[1:], beta[1:], strict=True):
            factor, level = name.split("=")
            risks.setdefault(factor, {})[level] = max(math.exp(coefficient), 0.05)
        relative = np.ones(totals.height)
        for factor, levels in risks.items():
            lowered = {k.lower(): v for k, v in levels.items()}
            values = totals[factor].cast(pl.String).str.to_lowercase().to_list()
            relative *= np.array([lowered.get(v, 1.0) for v in values])
        mean = float((trials * relative).sum() / trials.sum())
        risks["year_group"] = {k: v / mean for k, v in risks["year_group"].items()}
        annual = float(1 / (1 + math.exp(-beta[0]))) * mean * 365 / window.days
        lines.append(f"\n[outcomes.{outcome}]\nannual_rate = {annual:.6g}")
        for factor, levels in risks.items():
            lines.append(f"\n[outcomes.{outcome}.relative_risk.{factor}]")
            lines += [f'"{level}" = {value:.5f}' for level, value in levels.items()]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def cut_trust(source: Path, target: Path, urns: list[str]) -> None:
    """A trust's own export: its schools' rows of pupils, exits and schools."""
    target.mkdir(parents=True)
    for table in TABLES:
        frame = pl.read_csv(source / f"{table}.csv", infer_schema_length=0)
        frame.filter(pl.col("urn").is_in(urns)).write_csv(target / f"{table}.csv")


def published_rate(truth: dict) -> float:
    """The LA's EHE exits per pupil a year (what it would publish), per 365 days."""
    window = truth["window"]
    days = (np.datetime64(window["to"]) - np.datetime64(window["from"])).astype(int) + 1
    return truth["counts"]["ehe_exits"] / truth["counts"]["pupils"] * 365 / days


def one_la(task: tuple[int, float, int, int, str, list[str]]) -> dict:
    """Generate one LA, audit it LA-wide, then every trust slice in each variant."""
    seed, factor, schools, pupils, shape_file, variants = task
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "la"
        truth = generate_dataset(
            root, seed=seed, schools=schools, pupils=pupils, letters=False, ehe_rate_factor=factor
        )
        dataset, _ = load_dataset(root)
        whole = run_audit(dataset, AuditOptions(letters=False, baseline="local"))
        la_selected = dict(zip(whole.schools["urn"], whole.schools["audit"], strict=True))
        planted = truth["planted"]
        offrollers = {p["urn"] for p in planted["offroll_ehe"]}
        innocent_high = planted["innocent_high"][0]["urn"]
        not_innocent = offrollers | {
            p["urn"] for key in ("offroll_moves", "special_no_consent") for p in planted[key]
        }
        not_innocent |= set(planted["trust_template"]["urns"])
        rates = Path(folder) / "la-rates.csv"
        rates.write_text(
            f"la_code,annual_rate\n{truth['la_codes'][0]},{published_rate(truth):.6f}\n"
        )
        trusts = (
            pl.read_csv(root / "schools.csv", infer_schema_length=0)
            .filter(pl.col("trust").is_not_null())
            .group_by("trust")
            .agg(pl.col("urn").sort())
            .sort("trust")
        )
        slices = []
        for index, (trust, urns) in enumerate(trusts.rows()):
            part = Path(folder) / f"trust{index}"
            cut_trust(root, part, urns)
            own, _ = load_dataset(part)
            entry: dict = {
                "trust": trust,
                "schools": len(urns),
                "offrollers": [u for u in urns if u in offrollers],
                "innocent_high": innocent_high in urns,
            }
            for shape, level in (v.split("_") for v in variants):
                options = AuditOptions(
                    letters=False,
                    baseline="self",
                    shape=shape_file if shape == "synthetic" else "england",
                    la_rates=rates if level == "anchored" else None,
                )
                result = run_audit(own, options)
                chosen = dict(zip(result.schools["urn"], result.schools["audit"], strict=True))
                hows = {o: r.baseline.self_review.level.how for o, r in result.outcomes.items()}
                entry[f"{shape}_{level}"] = {
                    "offrollers_selected": [chosen[u] for u in entry["offrollers"]],
                    "innocent_selected": [u for u in urns if chosen[u] and u not in not_innocent],
                    "innocent_high_selected": bool(chosen.get(innocent_high, False)),
                    "level": hows,
                }
            shutil.rmtree(part)
            slices.append(entry)
    return {
        "seed": seed,
        "factor": factor,
        "la_offrollers_selected": {u: bool(la_selected[u]) for u in offrollers},
        "la_innocent_selected": sum(
            bool(s) for u, s in la_selected.items() if u not in not_innocent
        ),
        "slices": slices,
    }


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} = {part / whole:.1%}" if whole else "0/0"


def report(results: list[dict], variants: list[str]) -> dict:
    """The acceptance figures, per variant."""
    slices = [s for r in results for s in r["slices"]]
    # schools are keyed by (LA seed, URN): every synthetic LA numbers its schools from 100000
    la_of = {(r["seed"], u): v for r in results for u, v in r["la_offrollers_selected"].items()}
    in_trusts = [(r["seed"], u) for r in results for s in r["slices"] for u in s["offrollers"]]
    out: dict = {
        "las": len(results),
        "ehe_rate_factors": [min(r["factor"] for r in results), max(r["factor"] for r in results)],
        "trust_slices": len(slices),
        "slices_holding_an_offroller": sum(bool(s["offrollers"]) for s in slices),
        "offrollers_in_all_las": len(la_of),
        "offrollers_in_a_trust": len(in_trusts),
        "la_wide_selected_all_offrollers": share(sum(la_of.values()), len(la_of)),
        "la_wide_selected_offrollers_in_trusts": share(
            sum(la_of[u] for u in in_trusts), len(in_trusts)
        ),
        "la_wide_innocent_selected_per_la": round(
            sum(r["la_innocent_selected"] for r in results) / len(results), 3
        ),
        "slices_holding_the_large_deprived_innocent": sum(s["innocent_high"] for s in slices),
    }
    for key in variants:
        picked = [x for s in slices for x in s[key]["offrollers_selected"]]
        innocent = sum(len(s[key]["innocent_selected"]) for s in slices)
        hows: dict[str, int] = {}
        for s in slices:
            how = s[key]["level"].get("ehe", "untested")
            hows[how] = hows.get(how, 0) + 1
        by_how = {}
        for how in hows:
            chosen = [s for s in slices if s[key]["level"].get("ehe") == how]
            by_how[how] = round(
                sum(len(s[key]["innocent_selected"]) for s in chosen) / max(len(chosen), 1), 3
            )
        out[key] = {
            "offrollers_selected_in_slice": share(sum(picked), len(picked)),
            "innocent_selected_per_slice": round(innocent / max(len(slices), 1), 3),
            "innocent_selected_per_slice_by_ehe_level": by_how,
            "large_deprived_innocent_selected": sum(
                s[key]["innocent_high_selected"] for s in slices
            ),
            "ehe_level": hows,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--las", type=int, default=50)
    parser.add_argument("--schools", type=int, default=120)
    parser.add_argument("--pupils", type=int, default=45_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=1000, help="The first LA's seed (the rest follow it)."
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-trusts")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=VARIANTS,
        choices=VARIANTS,
        help="Which self-reviews to run (default all four).",
    )
    parser.add_argument("--json", type=Path, default=None, help="Write every slice's result here.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shape = nation_shape(args.work)
    factors = np.linspace(0.5, 3.0, args.las) if args.las > 1 else np.array([1.0])
    tasks = [
        (args.seed + i, round(float(f), 4), args.schools, args.pupils, str(shape), args.variants)
        for i, f in enumerate(factors)
    ]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(one_la, tasks)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    summary = report(results, args.variants)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
