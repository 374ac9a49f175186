"""Case-mix cells: the fast roll-cell path must give the pupil-level numbers exactly."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest
from conftest import REPOSITORY, base_tables
from polars.testing import assert_frame_equal

from offroll_audit import expected as exp
from offroll_audit.audit import OUTCOMES, outcome_filters
from offroll_audit.classify import classify_exits
from offroll_audit.load import load_dataset
from offroll_audit.profile import load_profile
from offroll_audit.window import Window, choose_window, pick_census, pick_term_census

EXAMPLE = REPOSITORY / "fixtures" / "example-la"


def both_ways(dataset, case_mix: list[str], window: Window | None = None):
    """(cells from pupils_at_risk summed per cell, cells from roll_cells) for one case mix."""
    profile = load_profile("default")
    window = window or choose_window(dataset.exits, None, None, None)
    pupils = pick_census(dataset.pupils, window)
    exits = classify_exits(dataset.exits, pupils, dataset.schools, window, profile)
    at_risk = exp.pupils_at_risk(pupils, exits, window, outcome_filters())
    events = [pl.col(o).sum().alias(f"events_{o}") for o in OUTCOMES]
    keys = ["urn", *case_mix]
    reference = at_risk.group_by(keys).agg(
        pl.col("exposure").sum().alias("trials"), pl.len().alias("pupils"), *events
    )
    roll = exp.roll_cells(pupils, exits, window, outcome_filters(), case_mix)
    cells = exp.aggregate_cells(roll, case_mix)
    if "year_group" not in case_mix:  # key stage splits the cells further; sum it away
        cells = cells.group_by(keys).agg(pl.exclude(keys, "key_stage", "pattern").sum())
    return reference.sort(keys), cells.select(reference.columns).sort(keys), roll, pupils


@pytest.mark.parametrize(
    "case_mix",
    [exp.DEFAULT_CASE_MIX, ["sen_provision", "disadvantaged"], ["social_care", "year_group"]],
)
def test_roll_cells_equal_the_pupil_level_sums_on_the_example_la(case_mix) -> None:
    dataset, _ = load_dataset(EXAMPLE)
    reference, cells, roll, pupils = both_ways(dataset, case_mix)
    assert reference.height > 100
    assert_frame_equal(reference, cells, check_dtypes=False, rel_tol=1e-12)
    assert roll["roll"].sum() == pupils.height


def test_roll_cells_handle_partial_exposure_repeat_exits_and_pupils_off_roll(make_dataset):
    """Leavers count to the window's end; a pupil who left twice counts once; an exit of a
    pupil not on this census, and a pupil who left before the window, add no events."""
    tables = base_tables()
    pupils, exits = tables["pupils"], tables["exits"]
    width = len(pupils[0])

    def pupil(pid, urn, year, start, stop):
        row = [""] * width
        values = {"pupil_id": pid, "urn": urn, "year_group": year, "sen_provision": "K"}
        values |= {"disadvantaged": "true", "social_care": "none"}
        values |= {"on_roll_from": start, "on_roll_to": stop}
        for column, value in values.items():
            row[pupils[0].index(column)] = value
        return row

    pupils += [
        pupil("P0010", "100001", "10", "2024-10-01", "2024-11-20"),  # joined late, left
        pupil("P0011", "100001", "10", "2024-09-01", "2024-09-03"),  # left before the window
        pupil("P0012", "100002", "9", "2024-12-01", ""),  # joined late, stayed
        pupil("P0013", "100001", "10", "2024-09-01", "2024-10-20"),  # left, no exit recorded
    ]
    exit_row = ["", "", "", "EHE", "9(1)(f)", "", "false", "HEALTH_MENTAL", "", ""]
    for pid, urn, day, where in [
        ("P0010", "100001", "2024-10-20", "EHE"),
        ("P0010", "100001", "2024-11-20", "SCHOOL"),  # the same pupil again: counts once
        ("P0011", "100001", "2024-09-03", "EHE"),  # before the window
    ]:
        exits.append([pid, urn, day, where, *exit_row[4:]])
    dataset, _ = load_dataset(make_dataset(tables))
    window = Window(date(2024, 9, 10), date(2025, 3, 31), "test")
    reference, cells, roll, pupils_frame = both_ways(dataset, exp.DEFAULT_CASE_MIX, window)
    assert_frame_equal(reference, cells, check_dtypes=False, rel_tol=1e-12)
    late = cells.filter((pl.col("urn") == "100001") & (pl.col("year_group") == "10"))
    late = late.filter(pl.col("sen_provision") == "K")
    # P0010 at risk 2024-10-01..2025-03-31 (to the end: they left); P0013 until 2024-10-20
    expected_days = (date(2025, 3, 31) - date(2024, 10, 1)).days + 1
    expected_days += (date(2024, 10, 20) - date(2024, 9, 10)).days + 1
    assert late["trials"].item() == pytest.approx(expected_days / window.days)
    assert late["events_ehe"].item() == 1
    assert late["pupils"].item() == 2
    assert roll["roll"].sum() == pupils_frame.height


def test_group_breakdown_equals_a_plain_group_by_on_the_labels() -> None:
    """The integer-key breakdown labels every level as the data does ("CIN", "true", "KS4")."""
    dataset, _ = load_dataset(EXAMPLE)
    _, _, roll, _ = both_ways(dataset, exp.DEFAULT_CASE_MIX)
    model_cells = exp.aggregate_cells(roll, exp.DEFAULT_CASE_MIX).rename({"events_ehe": "events"})
    rates = exp.fit_local_rates(model_cells, exp.DEFAULT_CASE_MIX)
    with_expected = exp.expected_by_cell(model_cells, rates, exp.DEFAULT_CASE_MIX)
    got = exp.group_breakdown(with_expected)
    reference = pl.concat(
        with_expected.group_by("urn", pl.col(grouping).cast(pl.String).alias("level")).agg(
            pl.lit(grouping).alias("grouping"),
            pl.col("events").sum().alias("observed"),
            pl.col("expected").sum(),
            pl.col("pupils").sum(),
        )
        for grouping in exp.GROUPINGS
    ).select(got.columns)
    keys = ["urn", "grouping", "level"]
    assert_frame_equal(got.sort(keys), reference.sort(keys), rel_tol=1e-12)
    assert set(got.filter(pl.col("grouping") == "social_care")["level"]) <= {
        "none",
        "CIN",
        "CPP",
        "CLA",
    }
    assert got.get_column("urn").is_sorted()


def test_leave_one_out_also_leaves_out_the_refits_outliers() -> None:
    """A school judged 'leave one out' is judged against rates fitted without itself AND
    without the schools the robust refit set aside: in the example LA's first school year,
    when its stopped excess was still going, a secondary above its expectation is like that
    school, whose exits would otherwise inflate its yardstick. Its expected count must
    equal a clean fit without both."""
    from offroll_audit.audit import AuditOptions, run_audit

    truth = json.loads((EXAMPLE / "truth.json").read_text())
    (stopped,) = truth["planted"]["stopped_excess"]
    assert stopped["terms"] == ["2022-AUT", "2023-SPR", "2023-SUM"], "the school year 2022-23"
    dataset, _ = load_dataset(EXAMPLE)
    result = run_audit(dataset, AuditOptions(letters=False, term="2022-23"))
    ehe = result.outcomes["ehe"]
    outliers, judged = ehe.baseline.excluded_urns, ehe.baseline.left_out_urns
    assert outliers == [stopped["urn"]] and judged
    window = result.window
    pupils = pick_term_census(dataset.pupils, dataset.exits, window)
    exits = classify_exits(dataset.exits, pupils, dataset.schools, window, load_profile())
    case_mix = exp.DEFAULT_CASE_MIX
    roll = exp.roll_cells(pupils, exits, window, outcome_filters(), case_mix)
    cells = exp.aggregate_cells(roll, case_mix).rename({"events_ehe": "events"})
    layout = exp.CellLayout.of(cells, case_mix)
    for urn in judged:
        clean = exp.fit_rates(layout.pattern_totals([*outliers, urn], case_mix), case_mix, "main")
        own = cells.filter(pl.col("urn") == urn)
        expected_clean = exp.expected_by_cell(own, clean.rates, case_mix)["expected"].sum()
        reported = result.schools.filter(pl.col("urn") == urn)["ehe_expected"].item()
        assert reported == pytest.approx(expected_clean, rel=1e-6)
        # and the yardstick that kept the outliers in was higher (their exits inflate the rates)
        dirty = exp.leave_one_out(layout, case_mix, "main", [urn])
        dirty_expected = (
            own.join(dirty.rates, on=["urn", "pattern"])
            .select(pl.col("trials") * pl.col("rate"))
            .sum()
        ).item()
        assert dirty_expected > expected_clean * 1.005
