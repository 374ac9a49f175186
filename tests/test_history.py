"""Termly monitoring end to end: an audit of termly data sees every earlier complete term,
selects over time, and says what changed since last term (issue: termly monitoring)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from offroll_audit import AuditOptions, load_dataset, run_audit
from offroll_audit.cli import app
from offroll_audit.console.errors import run_guarded
from offroll_audit.problems import DataError, UsageError
from offroll_audit.synthetic import generate_history
from offroll_audit.window import term_window, terms_of_days


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """A planted LA over 9 terms (steady, recent and stopped excesses, a sibling family)."""
    folder = tmp_path_factory.mktemp("history") / "la"
    truth = generate_history(folder, seed=12, letters=False)  # its recent excess is plain
    return folder, truth


@pytest.fixture(scope="module")
def audited(planted):
    folder, truth = planted
    dataset, _ = load_dataset(folder)
    return dataset, truth, run_audit(dataset, AuditOptions(letters=False))


def urn_of(truth: dict, pattern: str) -> str:
    return next(p["urn"] for p in truth["planted"] if p["pattern"] == pattern)


def test_the_latest_complete_term_is_audited_with_every_earlier_term(audited) -> None:
    _, truth, result = audited
    assert result.window.term == "2025-SUM"
    assert "latest complete term" in result.window.source
    assert result.history.terms == truth["terms"]


def test_each_terms_counts_are_that_terms_exits_and_its_own_census(audited) -> None:
    """Observed per school per term equals the EHE exits dated in the term (pupils counted once
    per school); the term's roll is that term's census."""
    dataset, truth, result = audited
    exits = dataset.exits.filter(pl.col("destination") == "EHE").with_columns(
        terms_of_days(dataset.exits.filter(pl.col("destination") == "EHE")["exit_date"])
    )
    counted = exits.group_by("urn", "term").agg(pl.col("pupil_id").n_unique().alias("n"))
    timeline = result.history.timeline.frame.select("urn", "term", "ehe_observed")
    joined = timeline.join(counted, on=["urn", "term"], how="left").with_columns(
        pl.col("n").fill_null(0)
    )
    assert (joined["ehe_observed"] == joined["n"]).all()
    for term, observed in zip(truth["terms"], truth["observed_ehe"]["100000"], strict=False):
        row = timeline.filter((pl.col("urn") == "100000") & (pl.col("term") == term))
        assert row["ehe_observed"].item() == observed


def test_planted_patterns_over_time(audited) -> None:
    """The steady and the recent excess are watched (pooled and change evidence), the stopped
    excess is not selected now, the sibling family alone does not select its school."""
    _, truth, result = audited
    schools = result.schools
    row = {u: r for u, r in zip(schools["urn"], schools.iter_rows(named=True), strict=True)}
    recent, stopped = urn_of(truth, "recent_excess"), urn_of(truth, "stopped_excess")
    steady, siblings = urn_of(truth, "steady_excess"), urn_of(truth, "sibling_family")
    assert row[recent]["audit"]
    assert row[recent]["ehe_change_ratio"] > 1.5
    assert row[steady]["ehe_history_observed"] > 1.6 * row[steady]["ehe_history_expected"]
    assert not row[stopped]["audit"]
    assert row[stopped]["ehe_history_observed"] > row[stopped]["ehe_history_expected"]
    sib = row[siblings]
    assert sib["ehe_decisions"] < sib["ehe_observed"]  # the family counted once
    assert not any(r.startswith("EHE") for r in sib["audit_reasons"])


def test_since_last_term_agrees_with_the_selection_at_each_term(audited) -> None:
    _, _, result = audited
    history = result.history
    since = history.since_last_term()
    before = history.selected.filter(pl.col("term") == history.terms[-2])
    now = history.selected.filter(pl.col("term") == history.terms[-1])
    was = dict(zip(before["urn"], before["audit"], strict=True))
    for urn, audit in zip(now["urn"], now["audit"], strict=True):
        status = since.filter(pl.col("urn") == urn)["status"].item()
        expected = {(True, True): "still", (True, False): "newly", (False, True): "no_longer"}
        assert status == expected.get((audit, was.get(urn, False)))
    current = dict(zip(result.schools["urn"], result.schools["audit"], strict=True))
    assert current == dict(zip(now["urn"], now["audit"], strict=True))


def test_the_cli_writes_history_charts_and_the_since_last_term_sheet(planted, tmp_path) -> None:
    import openpyxl

    folder, truth = planted
    out = tmp_path / "out"
    assert run_guarded(app, ["audit", str(folder), "--out", str(out), "--quiet"], {}) == 0
    results = json.loads((out / "results.json").read_text())
    monitoring = results["monitoring"]
    assert monitoring["terms"] == truth["terms"] and monitoring["audited_term"] == "2025-SUM"
    selected = [s for s in results["schools"] if s["audit"]]
    assert selected
    school = selected[0]
    assert [h["term"] for h in school["history"]] == truth["terms"]
    assert "of the last 6 term" in school["monitoring"]["ehe"]["summary"]
    overview = openpyxl.load_workbook(out / "overview.xlsx")
    assert "Since last term" in overview.sheetnames
    pack = openpyxl.load_workbook(out / "packs" / f"{school['urn']}.xlsx")
    sheet = pack["History"]
    charted = [o for o in ("ehe", "unexplained", "ehe_vulnerable") if school["history"][-1].get(o)]
    assert len(sheet._charts) == len(charted) >= 2  # one native line chart per outcome
    terms = [c.value for c in sheet["A"] if c.value in truth["terms"]]
    assert terms == truth["terms"] * len(charted)  # a table under each chart
    schools_csv = pl.read_csv(out / "schools.csv")
    assert {"ehe_year_band", "ehe_cusum", "since_last_term", "selected_since"} <= set(
        schools_csv.columns
    )


def test_a_term_or_a_school_year_can_be_chosen(planted) -> None:
    folder, truth = planted
    dataset, _ = load_dataset(folder)
    earlier = run_audit(dataset, AuditOptions(letters=False, term="2024-SPR"))
    assert earlier.history.terms == truth["terms"][:5]
    year = run_audit(dataset, AuditOptions(letters=False, term="2023-24"))
    assert year.window == term_window("2023-24")
    assert year.history.terms == truth["terms"][:6]
    with pytest.raises(UsageError, match="terms in the data: 2022-AUT, 2023-SPR"):
        run_audit(dataset, AuditOptions(letters=False, term="2021-AUT"))


@pytest.fixture()
def small_termly(tmp_path) -> Path:
    folder = tmp_path / "la"
    generate_history(folder, seed=3, schools=30, pupils=8000, terms=6, null=True)
    return folder


def test_exits_in_a_term_without_a_census_are_an_error(small_termly) -> None:
    pupils = pl.read_csv(small_termly / "pupils.csv", infer_schema=False)
    pupils.filter(pl.col("census") != "2024-SPR").write_csv(small_termly / "pupils.csv")
    with pytest.raises(DataError) as error:
        load_dataset(small_termly)
    lines = [p.line() for p in error.value.report.errors]
    assert any("exits.csv" in line and "exit_date" in line and "2024-SPR" in line for line in lines)


def test_a_pupil_on_two_rolls_in_one_census_without_dual_registration(small_termly) -> None:
    pupils = pl.read_csv(small_termly / "pupils.csv", infer_schema=False)
    first = pupils.filter(pl.col("on_roll_to").is_null() & pl.col("on_roll_from").is_null())
    twin = first.head(1).with_columns(pl.lit("199999").alias("urn"))
    pl.concat([pupils, twin]).write_csv(small_termly / "pupils.csv")
    with pytest.raises(DataError) as error:
        load_dataset(small_termly)
    (problem,) = [p for p in error.value.report.errors if p.column == "urn"]
    assert problem.file == "pupils.csv" and problem.row == pupils.height + 2
    assert "dual" in problem.message
    # marked as a dual registration it is valid (the URN unknown to schools.csv: a warning)
    twin = twin.with_columns(pl.lit("S").alias("enrolment_status"))
    pl.concat([pupils, twin]).write_csv(small_termly / "pupils.csv")
    _, report = load_dataset(small_termly)
    assert [p.column for p in report.warnings] == ["urn"]


def test_a_bad_term_is_exit_2_and_lists_the_terms(small_termly, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["audit", str(small_termly), "--out", str(out), "--term", "2019-AUT", "--quiet"]
    assert run_guarded(app, args, {}) == 2
    assert "terms in the data" in capsys.readouterr().err
    assert not out.exists()
    shutil.rmtree(small_termly / "letters", ignore_errors=True)
