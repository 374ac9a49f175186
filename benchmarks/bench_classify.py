"""Benchmark `classify_exits`: classify, flag and RAG-rate 700,000 exits against a national roll.

Usage: python benchmarks/bench_classify.py [--exits 700000] [--roll 9300000] [--schools 21000]
                                           [--repeat 5] [--budget 2.0] [--check]
       python benchmarks/bench_classify.py --synthetic [--cache /tmp/offroll-bench-classify]

By default the frames are built in memory with numpy: a national roll (21,000
schools, 9.3 million pupil rows, primary/secondary/special/AP year ranges) and
700,000 exits of pupils on it, with destinations, LA notification dates,
suspensions, returns, reasons and LA placements in realistic shares. With
`--synthetic` they come from the synthetic generator's national dataset
instead (generated, loaded and cached as parquet on the first run, a few
minutes; reused afterwards).

Only `classify_exits` is timed, after one warm-up run: the best and median of
`--repeat` runs, wall and CPU seconds. The budget is 2 s on a 2-core machine;
a busy machine (load average above the core count) slows every figure, so the
script says when it was busy. `--check` exits 1 when the best run is over budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from offroll_audit import codes
from offroll_audit.classify import FLAGS, classify_exits
from offroll_audit.profile import load_profile
from offroll_audit.schema import empty_frame
from offroll_audit.window import Window, term_window

WINDOW_START, WINDOW_END = date(2024, 9, 2), date(2025, 7, 18)
PHASES = ("primary", "secondary", "special", "ap")
PHASE_SHARE = (0.80, 0.16, 0.03, 0.01)
PHASE_YEARS = {  # physical index range of codes.YEAR_GROUPS (N1=0, N2=1, R=2, 1=3 ... 14=16)
    "primary": (2, 8),  # R..6
    "secondary": (9, 15),  # 7..13 (some schools stop at 11, below)
    "special": (2, 16),  # R..14
    "ap": (9, 13),  # 7..11
}
DESTINATION_SHARE = {  # close to the synthetic generator's national run
    "SCHOOL": 0.416,
    "MOVED_AWAY": 0.189,
    "EHE": 0.122,
    "EMIGRATED": 0.066,
    "CME": 0.043,
    "INDEPENDENT": 0.032,
    "DUAL_ENDED": 0.031,
    "SPECIAL": 0.031,
    "OTHER": 0.026,
    "END_OF_EDUCATION": 0.022,
    "AP": 0.013,
    "PERM_EXCLUSION": 0.007,
    "CUSTODY": 0.001,
    "DECEASED": 0.001,
}


def canonical(table: str, data: dict[str, object]) -> pl.DataFrame:
    """A frame with every canonical column of `table` in its dtype; absent ones null."""
    schema = empty_frame(table).schema
    frame = pl.DataFrame(data)
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


def ids(prefix: str, numbers: np.ndarray, width: int) -> pl.Series:
    """`prefix` and each number zero-padded to `width` digits."""
    text = pl.Series(numbers).cast(pl.String).str.zfill(width)
    return pl.select(pl.concat_str(pl.lit(prefix), text)).to_series()


def labels(values: list[str], index: np.ndarray) -> pl.Series:
    """values[index] as a polars column (numpy string arrays convert slowly)."""
    return pl.Series(index).replace_strict(dict(enumerate(values)), return_dtype=pl.String)


def draw(rng: np.random.Generator, shares: dict[str, float], n: int) -> pl.Series:
    """n codes drawn with the given shares."""
    return labels(list(shares), rng.choice(len(shares), n, p=list(shares.values())))


def when(mask: np.ndarray, values: object) -> pl.Series:
    """`values` where `mask` holds, null elsewhere."""
    return pl.select(pl.when(pl.Series(mask)).then(pl.Series(values))).to_series()


def later(rng: np.random.Generator, base: np.ndarray, low: int, high: int) -> np.ndarray:
    """base + U[low, high] days."""
    return base + rng.integers(low, high + 1, len(base)).astype("timedelta64[D]")


def numpy_frames(
    seed: int, schools: int, roll: int, exits: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Roll, exits and schools built directly with numpy and polars (seconds)."""
    rng = np.random.default_rng(seed)
    urns = ids("", np.arange(100001, 100001 + schools), 6)
    phase = rng.choice(len(PHASES), schools, p=PHASE_SHARE)
    low = np.array([PHASE_YEARS[p][0] for p in PHASES])[phase]
    high = np.array([PHASE_YEARS[p][1] for p in PHASES])[phase]
    high[(np.array(PHASES)[phase] == "secondary") & (rng.random(schools) < 0.4)] = 13  # no 6th form
    school = rng.integers(0, schools, roll)
    year = low[school] + (rng.random(roll) * (high[school] - low[school] + 1)).astype(np.int64)
    pupils = canonical(
        "pupils",
        {
            "pupil_id": ids("A", np.arange(roll), 12),
            "urn": urns.gather(school),
            "year_group": labels(codes.YEAR_GROUPS, year),
            "sen_provision": draw(rng, {"N": 0.83, "K": 0.13, "E": 0.04}, roll),
            "disadvantaged": rng.random(roll) < 0.25,
            "social_care": draw(rng, {"none": 0.95, "CIN": 0.03, "CPP": 0.01, "CLA": 0.01}, roll),
            "attendance": np.clip(rng.beta(18, 1.3, roll), 0, 1),
            "suspensions": rng.poisson(0.1, roll),
            "family_id": ids("F", np.arange(roll) // 2, 9),
        },
    )
    leaver = rng.choice(roll, exits, replace=False)
    destination = draw(rng, DESTINATION_SHARE, exits)
    days = np.busday_count(WINDOW_START, WINDOW_END)
    exit_date = np.busday_offset(WINDOW_START, rng.integers(0, days, exits), roll="forward")
    ehe = (destination == "EHE").to_numpy()
    school_move = (destination == "SCHOOL").to_numpy()
    special = np.array(PHASES)[phase[school[leaver]]] == "special"
    exit_frame = canonical(
        "exits",
        {
            "pupil_id": pupils.get_column("pupil_id").gather(leaver),
            "urn": pupils.get_column("urn").gather(leaver),
            "exit_date": exit_date,
            "destination": destination,
            "address_changed": when(school_move, rng.random(exits) < 0.7),
            "la_placed": when(special, rng.random(exits) < 0.9),
            "la_consent": when(special & ehe & (rng.random(exits) < 0.7), rng.random(exits) < 0.85),
            "la_notified_date": when(rng.random(exits) < 0.95, later(rng, exit_date, 0, 12)),
            "reason": when(ehe, labels(codes.REASONS, rng.integers(0, len(codes.REASONS), exits))),
            "returned_date": when(ehe & (rng.random(exits) < 0.15), later(rng, exit_date, 1, 200)),
            "last_suspension_date": when(rng.random(exits) < 0.12, later(rng, exit_date, -120, 0)),
        },
    )
    schools_frame = canonical(
        "schools",
        {
            "urn": urns,
            "name": pl.select(pl.concat_str(pl.lit("School "), urns)).to_series(),
            "phase": labels(list(PHASES), phase),
        },
    )
    return pupils, exit_frame, schools_frame


def synthetic_frames(cache: Path, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The generator's national dataset (9M pupils, ~670k exits), loaded once and cached."""
    files = {t: cache / f"{t}.parquet" for t in ("pupils", "exits", "schools")}
    if not all(f.exists() for f in files.values()):
        from national import national_dataset

        from offroll_audit.load import load_dataset
        from offroll_audit.window import choose_window, pick_census

        dataset, _ = load_dataset(national_dataset(seed=seed))
        window = choose_window(dataset.exits, None, None, None)
        pick_census(dataset.pupils, window).write_parquet(files["pupils"])
        dataset.exits.write_parquet(files["exits"])
        dataset.schools.write_parquet(files["schools"])
    return tuple(pl.read_parquet(files[t]) for t in ("pupils", "exits", "schools"))  # type: ignore[return-value]


def time_classify(
    pupils: pl.DataFrame, exits: pl.DataFrame, schools: pl.DataFrame, window: Window, repeat: int
) -> tuple[list[float], list[float], pl.DataFrame]:
    profile = load_profile("default")
    result = classify_exits(exits, pupils, schools, window, profile)  # warm-up
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = classify_exits(exits, pupils, schools, window, profile)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, result


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=700_000)
    parser.add_argument("--roll", type=int, default=9_300_000, help="pupil rows on roll")
    parser.add_argument("--schools", type=int, default=21_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds")
    parser.add_argument("--check", action="store_true", help="exit 1 when over budget")
    parser.add_argument("--synthetic", action="store_true", help="use the generator's dataset")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/offroll-bench-classify"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    started = time.perf_counter()
    if args.synthetic:
        args.cache.mkdir(parents=True, exist_ok=True)
        pupils, exits, schools = synthetic_frames(args.cache, args.seed)
        window = Window(WINDOW_START, WINDOW_END, "synthetic school year")
    else:
        pupils, exits, schools = numpy_frames(args.seed, args.schools, args.roll, args.exits)
        window = term_window("2024-25")
    print(
        f"built in {time.perf_counter() - started:.1f} s: {exits.height:,} exits, "
        f"{pupils.height:,} pupil rows, {schools.height:,} schools"
    )
    walls, cpus, result = time_classify(pupils, exits, schools, window, args.repeat)
    flagged = result.select(
        [pl.col("flags").list.contains(code).sum().alias(code) for code in FLAGS]
    ).row(0, named=True)
    print("flags: " + ", ".join(f"{code} {n:,}" for code, n in flagged.items() if n))
    print(
        "rag:   "
        + ", ".join(
            f"{row['rag']} {row['len']:,}"
            for row in result.group_by("rag").len().sort("rag").iter_rows(named=True)
            if row["rag"]
        )
    )
    best = min(walls)
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    print(
        f"classify_exits on {exits.height:,} exits: best {best:.2f} s, median "
        f"{statistics.median(walls):.2f} s wall (CPU {min(cpus):.2f} s) over {args.repeat} runs; "
        f"budget {args.budget:.1f} s: {'within' if best <= args.budget else 'OVER'}"
    )
    if load > cores:
        print(f"note: the machine was busy (load average {load:.1f} on {cores} cores)")
    return 1 if args.check and best > args.budget else 0


if __name__ == "__main__":
    sys.exit(main())
