"""The multi-term synthetic LA: persistent pupils, termly censuses, and the planted patterns
over time that termly monitoring must find (or, for the sibling family, count once)."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from offroll_audit import codes
from offroll_audit.cli import app
from offroll_audit.console.errors import run_guarded
from offroll_audit.load import load_dataset
from offroll_audit.problems import UsageError
from offroll_audit.synthetic import generate_history
from offroll_audit.synthetic.dataset import EHE_TARGET_RATE, school_days
from offroll_audit.synthetic.example import generate_example
from offroll_audit.synthetic.history import school_days_of_year, term_labels
from offroll_audit.window import term_window

SMALL = {"schools": 30, "pupils": 10_000}
EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "example-la"
FILES = ("pupils.csv", "exits.csv", "schools.csv", "truth.json")


def read(folder: Path, table: str) -> pl.DataFrame:
    """A table as the raw text a user would see (blank cells are null)."""
    return pl.read_csv(folder / f"{table}.csv", infer_schema_length=0)


def share(frame: pl.DataFrame, column: str, value: str) -> float:
    return float((frame[column] == value).mean())


def with_terms(pupils: pl.DataFrame, terms: list[str]) -> pl.DataFrame:
    """Census index, year number and the September year of each census row."""
    index = {term: i for i, term in enumerate(terms)}
    school_year = {term: term_window(term).start.year - (term[5:] != "AUT") for term in terms}
    return pupils.with_columns(
        t=pl.col("census").replace_strict(index, return_dtype=pl.Int64),
        year=pl.col("year_group").replace_strict(codes.YEAR_NUMBER, return_dtype=pl.Int64),
        school_year=pl.col("census").replace_strict(school_year, return_dtype=pl.Int64),
    )


def exit_terms(exits: pl.DataFrame, terms: list[str]) -> pl.DataFrame:
    """Each exit with its date and the census (term) it falls in."""
    bounds = [(term, term_window(term).start, term_window(term).end) for term in terms]
    census = pl.lit(None, pl.String)
    for term, start, end in reversed(bounds):
        census = (
            pl.when(pl.col("exit_date").is_between(start, end)).then(pl.lit(term)).otherwise(census)
        )
    return exits.with_columns(pl.col("exit_date").str.to_date()).with_columns(census=census)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("history") / "data"
    return out, generate_history(out, seed=5, terms=9, **SMALL)


@pytest.fixture(scope="module")
def null(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("null") / "data"
    return out, generate_history(out, seed=5, terms=6, null=True, **SMALL)


# --------------------------------------------------------------------------- the contract


def test_history_is_a_valid_dataset_with_one_census_per_term(history):
    folder, truth = history
    dataset, report = load_dataset(folder)
    assert not [p for p in report.problems if p.severity == "error"]
    assert truth["terms"] == term_labels(9)
    assert truth["terms"][:4] == ["2022-AUT", "2023-SPR", "2023-SUM", "2023-AUT"]
    assert truth["terms"][-1] == "2025-SUM"
    pupils = read(folder, "pupils")
    assert pupils.columns[:3] == ["pupil_id", "urn", "census"]
    assert pupils["census"].unique().sort().to_list() == sorted(truth["terms"])
    assert pupils.select("pupil_id", "urn", "census").is_unique().all()
    assert truth["counts"]["pupil_rows_by_census"] == dict(
        pupils.group_by("census").len().iter_rows()
    )
    assert dataset.pupils.height == pupils.height


def test_same_seed_gives_identical_files_and_another_seed_differs(history, tmp_path):
    folder, _ = history
    again = tmp_path / "again"
    generate_history(again, seed=5, terms=9, **SMALL)
    for name in FILES:
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name
    other = tmp_path / "other"
    generate_history(other, seed=6, terms=9, **SMALL)
    assert (other / "exits.csv").read_bytes() != (folder / "exits.csv").read_bytes()


def test_rolls_stay_level_and_characteristics_look_like_an_la(history):
    folder, truth = history
    rows = truth["counts"]["pupil_rows_by_census"]
    assert max(rows.values()) / min(rows.values()) < 1.06
    pupils = read(folder, "pupils").filter(pl.col("enrolment_status") != "S")
    for census in (truth["terms"][0], truth["terms"][-1]):
        roll = pupils.filter(pl.col("census") == census)
        assert 0.15 < share(roll, "disadvantaged", "true") < 0.45
        assert 0.09 < share(roll, "sen_provision", "K") < 0.22
        assert 0.02 < share(roll, "sen_provision", "E") < 0.08
        assert 0.01 < share(roll, "social_care", "CIN") < 0.07
    assert pupils.filter(
        (pl.col("fsm") == "true") & (pl.col("disadvantaged") == "false")
    ).is_empty()
    cla = pupils.filter(pl.col("social_care") == "CLA")
    assert (cla["disadvantaged"] == "true").all()


def test_characteristics_are_mostly_stable_but_change_a_little(history):
    folder, truth = history
    pupils = read(folder, "pupils").filter(pl.col("enrolment_status") != "S")
    first, last = truth["terms"][0], truth["terms"][-1]
    both = pupils.filter(pl.col("census") == first).join(
        pupils.filter(pl.col("census") == last), on=["pupil_id", "urn"], suffix="_later"
    )
    assert both.height > 0.3 * pupils.filter(pl.col("census") == first).height
    for column, most in (("disadvantaged", 0.1), ("sen_provision", 0.25), ("social_care", 0.1)):
        changed = (both[column] != both[f"{column}_later"]).mean()
        assert 0 < changed < most, column
    autumn = pupils.filter(pl.col("census") == "2024-AUT")
    spring = pupils.filter(pl.col("census") == "2025-SPR")
    within = autumn.join(spring, on=["pupil_id", "urn"], suffix="_later")
    assert (within["sen_provision"] == within["sen_provision_later"]).all(), "yearly changes"


# --------------------------------------------------------------------------- persistence


def test_pupils_advance_a_year_group_each_september(history):
    folder, truth = history
    pupils = with_terms(read(folder, "pupils"), truth["terms"])
    cohort = pupils.group_by("pupil_id").agg((pl.col("school_year") - pl.col("year")).n_unique())
    assert (cohort["school_year"] == 1).all(), "year group minus school year is fixed"
    years = pupils.group_by("pupil_id").agg(pl.col("year").n_unique())
    assert (years["year"] >= 3).sum() > 1000, "many pupils are followed for three school years"
    fixed = pupils.group_by("pupil_id").agg(pl.col("family_id", "sex", "ethnicity").n_unique())
    assert (fixed.drop("pupil_id").max_horizontal() == 1).all()


def test_year_6_moves_on_to_year_7_and_final_years_leave_without_an_exit(history):
    folder, _ = history
    pupils = read(folder, "pupils")
    phase = dict(read(folder, "schools").select("urn", "phase").iter_rows())
    primaries = [urn for urn, kind in phase.items() if kind == "primary"]
    leavers = pupils.filter(
        (pl.col("census") == "2023-SUM")
        & (pl.col("year_group") == "6")
        & pl.col("urn").is_in(primaries)
    )
    year_7 = pupils.filter((pl.col("census") == "2023-AUT") & (pl.col("year_group") == "7"))
    moved_on = leavers.join(year_7, on="pupil_id", suffix="_new").filter(
        pl.col("on_roll_from_new") == "2023-09-01"
    )
    assert moved_on.height > 0.6 * leavers.height
    assert {phase[u] for u in moved_on["urn_new"]} == {"secondary"}
    assert (moved_on["family_id"] == moved_on["family_id_new"]).all()
    exits = read(folder, "exits")
    at_primary = leavers.join(exits, on=["pupil_id", "urn"], how="anti")
    assert (at_primary["on_roll_to"] == "2023-08-31").all()
    assert (
        pupils.filter(pl.col("census") == "2023-AUT")
        .join(at_primary, on=["pupil_id", "urn"], how="semi")
        .is_empty()
    )
    intake = pupils.filter((pl.col("census") == "2024-AUT") & (pl.col("year_group") == "R"))
    assert (intake["on_roll_from"] == "2024-09-01").mean() > 0.9, "the September intake"
    assert intake["on_roll_from"].null_count() == 0


def test_exits_are_on_their_term_census_and_pupils_vanish_after_leaving(history):
    folder, truth = history
    exits = exit_terms(read(folder, "exits"), truth["terms"])
    assert exits["census"].null_count() == 0
    assert exits.select("pupil_id", "urn").is_unique().all()
    days = np.concatenate([school_days_of_year(y) for y in (2022, 2023, 2024)])
    assert exits["exit_date"].is_in(pl.Series(days).cast(pl.Date).implode()).all()
    pupils = with_terms(read(folder, "pupils"), truth["terms"])
    rows = exits.join(pupils, on=["pupil_id", "urn", "census"])
    assert rows.height == exits.height, "every exit has its pupil's row in that census"
    assert (rows["on_roll_to"].str.to_date() == rows["exit_date"]).all()
    joined = rows.filter(pl.col("on_roll_from").is_not_null())
    assert (joined["on_roll_from"].str.to_date() <= joined["exit_date"]).all()
    index = {term: i for i, term in enumerate(truth["terms"])}
    left = exits.select("pupil_id", "urn", left=pl.col("census").replace_strict(index))
    later = pupils.join(left, on=["pupil_id", "urn"]).filter(pl.col("t") > pl.col("left"))
    assert later.is_empty()
    moved = exits.filter(pl.col("destination_urn").is_not_null())
    arrived = moved.join(
        pupils, left_on=["pupil_id", "destination_urn"], right_on=["pupil_id", "urn"], how="semi"
    )
    assert arrived.height > 0.9 * moved.height, "in-LA movers re-register at their new school"


def test_dual_registrations_pair_main_and_ap_rows_in_each_census(history):
    folder, _ = history
    pupils = read(folder, "pupils")
    main = pupils.filter(pl.col("enrolment_status") == "M").select("pupil_id", "census")
    subsidiary = pupils.filter(pl.col("enrolment_status") == "S").select("pupil_id", "census")
    assert main.height > 0
    assert main.join(subsidiary, on=["pupil_id", "census"], how="anti").is_empty()
    assert subsidiary.join(main, on=["pupil_id", "census"], how="anti").is_empty()


# --------------------------------------------------------------------------- calibration


def test_truth_counts_match_the_files(history):
    folder, truth = history
    ehe = exit_terms(read(folder, "exits"), truth["terms"]).filter(pl.col("destination") == "EHE")
    counted = dict(
        ehe.group_by("urn", "census")
        .len()
        .select(pl.concat_str("urn", "census", separator="|"), "len")
        .iter_rows()
    )
    from_truth = {
        f"{urn}|{term}": n
        for urn, row in truth["observed_ehe"].items()
        for term, n in zip(truth["terms"], row, strict=True)
        if n
    }
    assert counted == from_truth
    assert truth["counts"]["ehe_exits"] == ehe.height
    assert set(truth["school_effects"]) == set(read(folder, "schools")["urn"])


def test_overall_ehe_rate_follows_the_target_times_the_factor(tmp_path):
    """Null LAs over a few seeds: the rate per pupil-year is within 10% of the target."""
    for factor in (1.0, 2.5):
        observed = mean = years = 0.0
        for seed in range(3):
            truth = generate_history(
                tmp_path / f"{factor}-{seed}",
                seed=seed,
                terms=6,
                null=True,
                ehe_rate_factor=factor,
                **SMALL,
            )
            observed += truth["counts"]["ehe_exits"]
            mean += sum(map(sum, truth["mean_ehe"].values()))
            years += truth["counts"]["pupil_years"]
        target = EHE_TARGET_RATE * factor
        assert truth["ehe_model"]["target_rate"] == pytest.approx(target)
        assert observed / years == pytest.approx(target, rel=0.1)
        assert mean / years == pytest.approx(target, rel=0.05)
        assert abs(observed - mean) < 4 * math.sqrt(mean), "exits follow the generator's means"


def test_school_effects_persist_and_intake_predictions_track_the_means(null):
    _, truth = null
    effects = np.array(list(truth["school_effects"].values()))
    assert (effects != 1.0).all()
    expected = np.array(list(truth["expected_ehe"].values()))
    mean = np.array(list(truth["mean_ehe"].values()))
    ratio = mean.sum(axis=1) / np.maximum(expected.sum(axis=1), 1e-9)
    busy = expected.sum(axis=1) > 1
    # the same effect in every term: the ratio of mean to intake prediction is the school's
    assert np.corrcoef(np.log(ratio[busy]), np.log(effects[busy]))[0, 1] > 0.99


# --------------------------------------------------------------------------- planted patterns


def planted(truth: dict, pattern: str) -> dict:
    (entry,) = [e for e in truth["planted"] if e["pattern"] == pattern]
    return entry


def test_steady_school_loses_twice_its_intake_prediction_every_term(history):
    folder, truth = history
    steady = planted(truth, "steady_excess")
    phase = dict(read(folder, "schools").select("urn", "phase").iter_rows())
    assert phase[steady["urn"]] == "secondary" and steady["multiplier"] == 2.0
    assert steady["terms"] == truth["terms"]
    per_term = np.array(list(steady["expected_ehe"].values()))
    assert 3.5 < per_term.mean() < 6.5, "sized for about 5 expected EHE exits a term"
    ratio = steady["observed_ehe_in_terms"] / steady["expected_ehe_in_terms"]
    assert 1.5 < ratio < 2.6
    assert truth["school_effects"][steady["urn"]] == 1.0


def test_recent_excess_is_in_the_latest_school_year_among_vulnerable_pupils(history):
    folder, truth = history
    recent = planted(truth, "recent_excess")
    assert recent["terms"] == truth["terms"][-3:] and recent["multiplier"] == 5.0
    before = [t for t in truth["terms"] if t not in recent["terms"]]
    observed, expected = recent["observed_ehe"], recent["expected_ehe"]
    ratio_before = sum(observed[t] for t in before) / sum(expected[t] for t in before)
    targeted = sum(recent["expected_ehe_targeted"][t] for t in recent["terms"])
    excess = sum(observed[t] - expected[t] for t in recent["terms"])
    assert excess > 2 * targeted, "about 4 x the targeted pupils' prediction on top"
    assert ratio_before < 1.7
    exits = exit_terms(read(folder, "exits"), truth["terms"])
    latest = exits.filter(
        (pl.col("urn") == recent["urn"])
        & (pl.col("destination") == "EHE")
        & pl.col("census").is_in(recent["terms"])
    ).join(read(folder, "pupils"), on=["pupil_id", "urn", "census"])
    vulnerable = latest["year_group"].is_in(["9", "10", "11"]) & (
        (latest["sen_provision"] != "N")
        | (latest["disadvantaged"] == "true")
        | (latest["social_care"] != "none")
    )
    assert vulnerable.mean() > 0.6


def test_stopped_excess_is_only_in_its_planted_terms(history):
    _, truth = history
    stopped = planted(truth, "stopped_excess")
    assert stopped["terms"] == truth["terms"][:3] and stopped["multiplier"] == 3.0
    after = [t for t in truth["terms"] if t not in stopped["terms"]]
    during = stopped["observed_ehe_in_terms"] / stopped["expected_ehe_in_terms"]
    since = sum(stopped["observed_ehe"][t] for t in after) / sum(
        stopped["expected_ehe"][t] for t in after
    )
    assert during > 2.0
    assert since < 1.7


def test_sibling_family_leaves_one_primary_together(history):
    folder, truth = history
    family = planted(truth, "sibling_family")
    assert family["terms"] == truth["terms"][-1:] and family["siblings"] in (4, 5)
    phase = dict(read(folder, "schools").select("urn", "phase").iter_rows())
    assert phase[family["urn"]] == "primary"
    exits = read(folder, "exits").filter(pl.col("pupil_id").is_in(family["pupil_ids"]))
    assert exits.height == family["siblings"]
    assert set(exits["destination"]) == {"EHE"}
    assert set(exits["urn"]) == {family["urn"]}
    assert set(exits["exit_date"]) == {family["exit_date"]}
    assert set(exits["family_id"]) == {family["family_id"]}
    rows = read(folder, "pupils").filter(pl.col("pupil_id").is_in(family["pupil_ids"]))
    assert set(rows["family_id"]) == {family["family_id"]}, "one household in every census"
    last = rows.filter(pl.col("census") == truth["terms"][-1])
    assert last["year_group"].n_unique() == family["siblings"]
    others = [e["urn"] for e in truth["planted"] if e["pattern"] != "sibling_family"]
    assert family["urn"] not in others
    assert truth["school_effects"][family["urn"]] == 1.0


def test_null_history_plants_nothing(null):
    folder, truth = null
    assert truth["planted"] == []
    assert set(truth["not_planted"]) == {
        "steady_excess",
        "recent_excess",
        "stopped_excess",
        "sibling_family",
    }
    reasons = read(folder, "exits").filter(pl.col("destination") == "EHE")["reason"]
    assert (reasons == "SCHOOL_PRESSURE").mean() < 0.1


def test_a_short_history_cannot_hold_a_stopped_excess(tmp_path):
    truth = generate_history(tmp_path / "short", seed=2, terms=3, last_term="2024-SUM", **SMALL)
    assert truth["terms"] == ["2023-AUT", "2024-SPR", "2024-SUM"]
    patterns = {e["pattern"] for e in truth["planted"]}
    assert patterns == {"steady_excess", "recent_excess", "sibling_family"}
    assert "stopped_excess" in truth["not_planted"]


def test_letters_cover_ehe_exits_and_leave_the_population_alone(tmp_path):
    tiny = {"seed": 3, "terms": 3, "schools": 20, "pupils": 6000}
    truth = generate_history(tmp_path / "with", letters=True, **tiny)
    generate_history(tmp_path / "without", **tiny)
    with_letters, without = tmp_path / "with", tmp_path / "without"
    manifest, exits = read(with_letters, "letters"), read(with_letters, "exits")
    linked = exits.filter(pl.col("letter_id").is_not_null())
    assert linked.height > 0.6 * (exits["destination"] == "EHE").sum()
    assert (linked["destination"] == "EHE").all()
    assert linked["letter_id"].is_in(manifest["letter_id"].implode()).all()
    assert all((with_letters / "letters" / f).is_file() for f in manifest["file"])
    assert truth["letters"]["template_schools"] == []
    assert (with_letters / "pupils.csv").read_bytes() == (without / "pupils.csv").read_bytes()
    assert exits.drop("letter_id").equals(read(without, "exits").drop("letter_id"))


# --------------------------------------------------------------------------- the calendar, the API


def test_the_generic_school_calendar_reproduces_2024_25():
    assert np.array_equal(school_days_of_year(2024), school_days())
    assert term_labels(1) == ["2025-SUM"]
    assert term_labels(4, "2025-SPR") == ["2024-SPR", "2024-SUM", "2024-AUT", "2025-SPR"]


def test_rejects_arguments_it_cannot_honour(tmp_path):
    for bad in ({"terms": 0}, {"terms": 16}, {"last_term": "2025-WIN"}, {"ehe_rate_factor": 0}):
        with pytest.raises(UsageError):
            generate_history(tmp_path / "x", **SMALL, **bad)


def test_fixtures_command_writes_a_history(tmp_path):
    out = tmp_path / "cli"
    args = ["fixtures", str(out), "--terms", "3", "--schools", "20", "--pupils", "6000"]
    assert run_guarded(app, [*args, "--no-letters", "--ehe-rate-factor", "2", "-q"], {}) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["arguments"]["terms"] == 3 and truth["arguments"]["ehe_rate_factor"] == 2.0
    assert read(out, "pupils")["census"].n_unique() == 3
    assert run_guarded(app, ["fixtures", str(tmp_path / "y"), "--last-term", "2025-SUM"], {}) == 2


# --------------------------------------------------------------------------- the example LA


@pytest.fixture(scope="module")
def example() -> tuple[Path, dict, pl.DataFrame]:
    """The shipped example LA, its truth and its exits with the term each falls in."""
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    return EXAMPLE, truth, exit_terms(read(EXAMPLE, "exits"), truth["terms"])


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_example_la_is_written_again_by_the_command_in_its_truth(example, tmp_path):
    folder, truth, _ = example
    command = truth["arguments"]["command"].split()
    assert command[:3] == ["offroll-audit", "fixtures", "OUT"] and "--example" in command
    out = tmp_path / "again"
    assert run_guarded(app, [command[1], str(out), *command[3:], "-q"], {}) == 0
    assert tree_hashes(out) == tree_hashes(folder), "byte for byte the shipped example"


def test_the_example_la_is_termly_with_the_one_year_plants_in_its_latest_year(example):
    folder, truth, exits = example
    dataset, report = load_dataset(folder)
    assert not [p for p in report.problems if p.severity == "error"]
    assert truth["terms"] == term_labels(9) and dataset.pupils["census"].n_unique() == 9
    latest, planted = truth["window"]["terms"], truth["planted"]
    assert latest == truth["terms"][-3:] and truth["window"]["school_year"] == "2024-25"
    census_day = date.fromisoformat(truth["window"]["spring_census"])

    def planted_exits(urn: str, pupil_ids: list[str]) -> pl.DataFrame:
        mine = exits.filter((pl.col("urn") == urn) & pl.col("pupil_id").is_in(pupil_ids))
        assert mine.height == len(pupil_ids) and mine["census"].is_in(latest).all()
        return mine

    off = planted["offroll_ehe"][0]
    mine = planted_exits(off["urn"], off["planted_pupil_ids"])
    assert set(mine["destination"]) == {"EHE"} and (mine["exit_date"] < census_day).all()
    expected, observed = off["expected_ehe_by_term"], off["observed_ehe_by_term"]
    before = [t for t in truth["terms"] if t not in latest]
    assert sum(observed[t] for t in latest) > 2.5 * sum(expected[t] for t in latest)
    assert sum(observed[t] for t in before) < 1.5 * sum(expected[t] for t in before)
    moves = planted["offroll_moves"][0]
    mine = planted_exits(moves["urn"], moves["planted_pupil_ids"])
    assert set(mine["destination"]) == {"SCHOOL"} and set(mine["address_changed"]) == {"false"}
    special = planted["special_no_consent"][0]
    mine = planted_exits(special["urn"], special["pupil_ids"])
    assert set(mine["destination"]) == {"EHE"} and set(mine["la_placed"]) == {"true"}
    assert "true" not in set(mine["la_consent"].drop_nulls())
    assert (mine["census"] == latest[-1]).any(), "a breach the latest term's audit sees"
    trust = planted["trust_template"]
    schools = read(folder, "schools")
    assert set(schools.filter(pl.col("urn").is_in(trust["urns"]))["trust"]) == {trust["trust"]}
    innocent = planted["innocent_high"][0]
    ehe = exits.filter((pl.col("destination") == "EHE") & pl.col("census").is_in(latest))
    counts = ehe.group_by("urn").len().sort("len", "urn", descending=True)
    assert counts.row(0) == (innocent["urn"], innocent["observed_ehe"])
    assert counts["len"][1] == innocent["next_highest_ehe"] < innocent["observed_ehe"]
    for urn in truth["selection"]["selected"] + truth["selection"]["not_selected"]:
        assert truth["school_effects"][urn] == 1.0, "no random effect at a planted school"


def test_the_example_las_letters_are_of_its_latest_school_year(example):
    folder, truth, exits = example
    letters = truth["letters"]
    planted = truth["planted"]
    assert letters["template_schools"] == [planted["offroll_ehe"][0]["urn"]]
    assert letters["trust_template_schools"] == planted["trust_template"]["urns"]
    linked = exits.filter(pl.col("letter_id").is_not_null())
    assert linked["census"].is_in(truth["window"]["terms"]).all()
    manifest = read(folder, "letters")
    assert set(linked["letter_id"]) <= set(manifest["letter_id"])
    assert all((folder / "letters" / f).is_file() for f in manifest["file"])
    templated = {}
    for entry in letters["letters"].values():
        if entry["kind"] == "school_template":
            templated.setdefault(entry["urn"], set()).add(entry["family_id"])
    assert set(templated) == {*letters["template_schools"], *letters["trust_template_schools"]}
    assert all(len(families) >= 2 for families in templated.values())


def test_the_example_las_history_holds_a_stopped_excess_and_a_sibling_family(example):
    _, truth, exits = example
    (stopped,) = truth["planted"]["stopped_excess"]
    assert stopped["terms"] == truth["terms"][:3] and stopped["multiplier"] == 3.0
    assert stopped["observed_ehe_in_terms"] > 2 * stopped["expected_ehe_in_terms"]
    after = [t for t in truth["terms"] if t not in stopped["terms"]]
    assert sum(stopped["observed_ehe"][t] for t in after) < 1.5 * sum(
        stopped["expected_ehe"][t] for t in after
    )
    (family,) = truth["planted"]["sibling_family"]
    assert family["terms"] == truth["terms"][-1:] and family["siblings"] in (4, 5)
    together = exits.filter(
        pl.col("pupil_id").is_in(family["pupil_ids"]) & (pl.col("urn") == family["urn"])
    )
    assert together.height == family["siblings"]
    assert set(together["exit_date"].cast(pl.String)) == {family["exit_date"]}
    one_year = {*truth["selection"]["selected"], truth["planted"]["innocent_high"][0]["urn"]}
    assert not {stopped["urn"], family["urn"]} & one_year
    assert {stopped["urn"], family["urn"]} <= set(truth["selection"]["not_selected"])


def test_a_short_example_has_no_stopped_excess(tmp_path):
    truth = generate_example(tmp_path / "short", seed=3, terms=3, letters=False)
    assert truth["terms"] == ["2024-AUT", "2025-SPR", "2025-SUM"]
    assert truth["planted"]["stopped_excess"] == [] and "stopped_excess" in truth["not_planted"]
    assert truth["planted"]["offroll_ehe"][0]["planted_ehe"] > 0
    assert "--terms 3 --no-letters" in truth["arguments"]["command"]


def test_the_example_refuses_what_it_cannot_plant(tmp_path):
    for extra in (["--null"], ["--ehe-rate-factor", "2"], ["--last-term", "2024-SUM"]):
        args = ["fixtures", str(tmp_path / "x"), "--example", *extra, "-q"]
        assert run_guarded(app, args, {}) == 2
    assert run_guarded(app, ["fixtures", str(tmp_path / "x"), "--example", "--terms", "2"], {}) == 2
    assert not (tmp_path / "x").exists()
