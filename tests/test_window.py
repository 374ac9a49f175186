"""The audit window and the census chosen for it."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from offroll_audit.window import Window, census_day, pick_census

CENSUSES = ["2023-AUT", "2024-SPR", "2024-SUM", "2024-AUT", "2025-SPR", "2025-SUM"]


def reference_choice(censuses: list[str], window: Window) -> str | None:
    """The contract in plain Python: the latest census at or before the start, else the first
    one within the window."""
    before = [c for c in censuses if census_day(c) <= window.start]
    within = [c for c in censuses if window.start < census_day(c) <= window.end]
    if before:
        return max(before, key=census_day)
    return min(within, key=census_day) if within else None


def test_pick_census_follows_the_contract_for_every_pupil() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for pupil in range(300):
        for census in rng.choice(CENSUSES, rng.integers(1, 5), replace=False):
            rows.append({"pupil_id": f"P{pupil}", "urn": f"10000{pupil % 3}", "census": census})
    rows.append({"pupil_id": "Q", "urn": "100000", "census": None})  # no census: dropped
    pupils = pl.DataFrame(rows).with_row_index("line")
    for window in (
        Window(date(2024, 9, 2), date(2024, 12, 20), "autumn"),
        Window(date(2023, 1, 1), date(2023, 12, 31), "before most censuses"),
        Window(date(2025, 9, 1), date(2025, 12, 31), "after all of them"),
    ):
        chosen = pick_census(pupils, window)
        got = dict(zip(chosen["pupil_id"], chosen["census"], strict=True))
        assert chosen.height == len(got), "one row per pupil and school"
        assert chosen["line"].is_sorted()
        for pupil_id, group in pupils.filter(pl.col("pupil_id") != "Q").group_by("pupil_id"):
            expected = reference_choice(group["census"].to_list(), window)
            assert got.get(pupil_id[0]) == expected
        assert "Q" not in got


def test_term_indexes_agree_with_term_index_on_every_term() -> None:
    from offroll_audit.window import term_index, term_indexes

    terms = [f"{year}-{name}" for year in range(2019, 2027) for name in ("AUT", "SPR", "SUM")]
    got = term_indexes(pl.Series([*terms, None])).to_list()
    assert got == [*(term_index(t) for t in terms), None]
