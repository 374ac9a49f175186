"""Calibration and power of the school-level tests on generated LAs.

Usage:
    python benchmarks/bench_calibration.py calibration [--las 200] [--schools 40] [--pupils 15000]
    python benchmarks/bench_calibration.py power [--las 50] [--schools 100] [--pupils 45000]

calibration: LAs with nothing planted but lognormal between-school heterogeneity
(sd 0.25 on the odds). Reports the share of schools banded high_998 and high_95
for EHE and unexplained exits, with the negative binomial (default) and with
alpha forced to 0 (plain Poisson), to show what ignoring overdispersion costs.
Targets: high_998 <= 0.3%, high_95 <= 4% with the default method. Also the schools the
default profile's rules select per LA ("any", and by rule): all of them innocent.

power: LAs with the generator's planted patterns. Reports how often each
planted off-roller is high_998 for EHE (target >= 90% for a secondary whose
intake predicts about 15 exits and which loses three times that many), the
planted mover high_998 for unexplained exits, and how often the innocent
school (the LA's highest raw EHE count, explained by its intake) is selected
(target <= 5%).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path

from offroll_audit.audit import AuditOptions, run_audit
from offroll_audit.load import load_dataset
from offroll_audit.profile import load_profile
from offroll_audit.synthetic import generate_dataset

BANDS = ("high_998", "high_95")


def one_la(task: tuple[str, int, int, int]) -> dict:
    """Generate one LA, audit it with each method, return band counts and planted outcomes."""
    mode, seed, schools, pupils = task
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "la"
        truth = generate_dataset(
            data,
            seed=seed,
            schools=schools,
            pupils=pupils,
            letters=False,
            null=mode == "calibration",
            heterogeneity_sd=0.25,
        )
        dataset, _ = load_dataset(data)
    profile = load_profile("default")
    summary: dict = {"seed": seed}
    for method in ("nb", "poisson") if mode == "calibration" else ("nb",):
        result = run_audit(dataset, AuditOptions(profile=profile, method=method, letters=False))
        rows = {r["urn"]: r for r in result.schools.iter_rows(named=True)}
        for outcome in ("ehe", "unexplained"):
            bands = Counter(r[f"{outcome}_band"] for r in rows.values())
            testable = sum(n for band, n in bands.items() if band != "too_few")
            summary[f"{method}_{outcome}"] = {
                "schools": len(rows),
                "testable": testable,
                **{b: bands.get(b, 0) for b in BANDS},
            }
        summary[f"{method}_alpha"] = result.outcomes["ehe"].overdispersion.alpha
        summary[f"{method}_selected"] = Counter(
            code for r in rows.values() for code in ["any"] * r["audit"] + r["audit_reasons"]
        )
        if mode == "power":
            planted = truth["planted"]
            summary["offroll_ehe"] = [
                {
                    "expected_without_plant": p["expected_ehe_without_plant"],
                    "observed": rows[p["urn"]]["ehe_observed"],
                    "expected": rows[p["urn"]]["ehe_expected"],
                    "band": rows[p["urn"]]["ehe_band"],
                }
                for p in planted["offroll_ehe"]
            ]
            summary["offroll_moves"] = [
                rows[p["urn"]]["unexplained_band"] for p in planted["offroll_moves"]
            ]
            summary["innocent_selected"] = [
                bool(rows[p["urn"]]["audit"]) for p in planted["innocent_high"]
            ]
    return summary


def share(part: int, whole: int) -> str:
    return f"{part / whole:.3%}" if whole else "n/a"


def report_calibration(results: list[dict]) -> dict:
    out = {}
    for key in ("nb_ehe", "nb_unexplained", "poisson_ehe", "poisson_unexplained"):
        schools = sum(r[key]["schools"] for r in results)
        testable = sum(r[key]["testable"] for r in results)
        counts = {b: sum(r[key][b] for r in results) for b in BANDS}
        out[key] = {
            "schools": schools,
            "testable": testable,
            **{f"{b}_share_of_schools": share(counts[b], schools) for b in BANDS},
            **{f"{b}_share_of_testable": share(counts[b], testable) for b in BANDS},
        }
    alphas = [r["nb_alpha"] for r in results]
    out["alpha_mean"] = round(sum(alphas) / len(alphas), 4)
    # nothing is planted: every school selected by the default profile's rules is innocent
    selected: Counter = sum((Counter(r["nb_selected"]) for r in results), Counter())
    out["innocent_selected_per_la_by_rule"] = {
        code: round(n / len(results), 3) for code, n in sorted(selected.items())
    }
    return out


def report_power(results: list[dict]) -> dict:
    planted = [p for r in results for p in r["offroll_ehe"]]
    near_15 = [p for p in planted if 12 <= p["expected_without_plant"] <= 18]
    moves = [b for r in results for b in r["offroll_moves"]]
    innocent = [s for r in results for s in r["innocent_selected"]]
    return {
        "offroll_ehe_schools": len(planted),
        "offroll_ehe_high_998": share(sum(p["band"] == "high_998" for p in planted), len(planted)),
        "offroll_ehe_mean_intake_expected": round(
            sum(p["expected_without_plant"] for p in planted) / max(len(planted), 1), 2
        ),
        "offroll_ehe_mean_observed": round(
            sum(p["observed"] for p in planted) / max(len(planted), 1), 2
        ),
        "offroll_ehe_with_intake_E_12_to_18": len(near_15),
        "offroll_ehe_with_intake_E_12_to_18_high_998": share(
            sum(p["band"] == "high_998" for p in near_15), len(near_15)
        ),
        "offroll_moves_unexplained_high_998": share(
            sum(b == "high_998" for b in moves), len(moves)
        ),
        "innocent_selected": share(sum(innocent), len(innocent)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("calibration", "power"))
    parser.add_argument("--las", type=int, default=None)
    parser.add_argument("--schools", type=int, default=None)
    parser.add_argument("--pupils", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    defaults = {"calibration": (200, 40, 15_000), "power": (50, 100, 45_000)}[args.mode]
    las, schools, pupils = (
        given or default
        for given, default in zip((args.las, args.schools, args.pupils), defaults, strict=True)
    )
    tasks = [(args.mode, 1000 + k, schools, pupils) for k in range(las)]
    started = time.perf_counter()
    with multiprocessing.Pool(args.workers) as pool:
        results = pool.map(one_la, tasks, chunksize=1)
    summary = report_calibration(results) if args.mode == "calibration" else report_power(results)
    summary.update(
        mode=args.mode,
        las=las,
        schools_per_la=schools,
        pupils_per_la=pupils,
        seconds=round(time.perf_counter() - started, 1),
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
