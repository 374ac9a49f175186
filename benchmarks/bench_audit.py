"""National-scale audit: time each stage after loading, and the whole `audit` command.

Usage: python benchmarks/bench_audit.py [--data DIR] [--schools 21000] [--pupils 9000000]

Uses the benchmarks' shared national dataset (national.py, no letters), then in fresh
processes (so peak RSS is the run's own):
  1. the statistics after loading: run_audit without letters (window + census, classify,
     case-mix cells, expected counts and tests for every outcome with the robust refit,
     selection), timed cold; then each stage again, warm, for the breakdown;
  2. `offroll-audit audit DATA --out OUT --no-letters --no-workbooks`, end to end.
Targets on a 2-core machine: statistics after loading < 5 s; the whole command < 30 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from national import national_dataset


def stages(data: Path) -> None:
    """Run in a child process: print one JSON line of stage timings.

    The target figure is run_audit (without letters) on a loaded dataset, timed as the command
    runs it (first call in the process; statsmodels imported during loading, as the command
    does); the stages are then timed again one by one, warm, to show where the time goes.
    """
    from offroll_audit import audit as pipeline
    from offroll_audit import expected as exp
    from offroll_audit.audit import AuditOptions, run_audit
    from offroll_audit.classify import classify_exits
    from offroll_audit.load import load_dataset
    from offroll_audit.profile import load_profile
    from offroll_audit.select import select_schools
    from offroll_audit.window import choose_window, pick_census

    pipeline.warm_up()  # as the audit command does: statsmodels imports while the data loads
    started = time.perf_counter()
    dataset, _ = load_dataset(data)
    load = time.perf_counter() - started
    options = AuditOptions(profile=load_profile("default"), letters=False)
    mark = time.perf_counter()
    result = run_audit(dataset, options)
    options = result.options  # the baseline resolved, as the stages below need it
    statistics = time.perf_counter() - mark

    profile = options.profile
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    window = choose_window(dataset.exits, None, None, None)
    pupils = pick_census(dataset.pupils, window)
    exits = classify_exits(dataset.exits, pupils, dataset.schools, window, profile)
    timings["classify"] = time.perf_counter() - mark
    mark = time.perf_counter()
    filters = pipeline.outcome_filters(profile)
    roll = exp.roll_cells(pupils, exits, window, filters, exp.DEFAULT_CASE_MIX)
    cells = pipeline.outcome_cells(roll, exp.DEFAULT_CASE_MIX, profile)
    timings["case_mix_cells"] = time.perf_counter() - mark
    mark = time.perf_counter()
    outcomes = pipeline.assess_outcomes(cells, window, options)
    timings["expected_and_tests"] = time.perf_counter() - mark
    mark = time.perf_counter()
    schools = pipeline.school_table(dataset, roll, exits, outcomes, None)
    schools = select_schools(schools, profile)
    timings["school_table_and_select"] = time.perf_counter() - mark
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        json.dumps(
            {
                "pupil_rows": dataset.pupils.height,
                "exits": dataset.exits.height,
                "schools": dataset.schools.height,
                "selected": int(result.schools["audit"].sum()),
                "alpha_ehe": round(result.outcomes["ehe"].overdispersion.alpha, 4),
                "load_seconds": round(load, 2),
                "statistics_after_loading_seconds": round(statistics, 2),
                "warm_stage_seconds": {k: round(v, 2) for k, v in timings.items()},
                "peak_rss_gb": round(peak, 2),
            }
        )
    )


def whole_command(data: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        command = [
            sys.executable,
            "-m",
            "offroll_audit",
            "audit",
            str(data),
            "--out",
            str(out),
            "--no-letters",
            "--no-workbooks",
            "--quiet",
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    return {"audit_command_seconds": round(seconds, 1), "audit_command_peak_rss_gb": round(peak, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="an existing dataset folder")
    parser.add_argument("--schools", type=int, default=21_000)
    parser.add_argument("--pupils", type=int, default=9_000_000)
    parser.add_argument("--stages-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages_only:
        stages(args.stages_only)
        return
    data = args.data or national_dataset(args.schools, args.pupils)
    run = subprocess.run(
        [sys.executable, __file__, "--stages-only", str(data)],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    report.update(whole_command(data))
    print(json.dumps(report, indent=2))
    ok = report["statistics_after_loading_seconds"] < 5 and report["audit_command_seconds"] < 30
    print("targets (statistics < 5 s, audit < 30 s):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
