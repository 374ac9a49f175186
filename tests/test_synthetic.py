"""The synthetic LA generator: contract-shaped files, valid ids, and the answers it promises."""

from __future__ import annotations

import json
import math
import re
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from offroll_audit import codes
from offroll_audit.problems import UsageError
from offroll_audit.synthetic.dataset import (
    HOLIDAYS,
    WINDOW_END,
    WINDOW_START,
    generate_dataset,
    pupil_ids,
)

SMALL = {"schools": 30, "pupils": 8000}
CHECK_ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ"
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"

PUPIL_COLUMNS = [
    "pupil_id",
    "urn",
    "year_group",
    "sen_provision",
    "disadvantaged",
    "social_care",
    "sen_need",
    "fsm",
    "sex",
    "ethnicity",
    "attendance",
    "suspensions",
    "family_id",
    "enrolment_status",
    "on_roll_from",
    "on_roll_to",
]
EXIT_COLUMNS = [
    "pupil_id",
    "urn",
    "exit_date",
    "destination",
    "ground",
    "destination_urn",
    "address_changed",
    "la_placed",
    "la_consent",
    "la_notified_date",
    "reason",
    "returned_date",
    "last_suspension_date",
    "letter_id",
    "family_id",
]
SCHOOL_COLUMNS = ["urn", "name", "la_code", "phase", "type", "trust"]


def upn_check_letter(upn: str) -> str:
    """domain-facts.md: characters 2..13 times their position, a final letter by its index."""
    total = 0
    for position in range(2, 14):
        char = upn[position - 1]
        value = int(char) if char.isdigit() else CHECK_ALPHABET.index(char)
        total += value * position
    return CHECK_ALPHABET[total % 23]


def read(folder: Path, table: str) -> pl.DataFrame:
    """A table as the raw text a user would see (blank cells are null)."""
    return pl.read_csv(folder / f"{table}.csv", infer_schema_length=0)


def as_dates(column: str) -> pl.Expr:
    return pl.col(column).str.to_date("%Y-%m-%d")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("small") / "data"
    return out, generate_dataset(out, seed=7, letters=False, **SMALL)


@pytest.fixture(scope="module")
def null(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("null") / "data"
    return out, generate_dataset(out, seed=7, letters=False, null=True, **SMALL)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_another_seed_differs(small, tmp_path):
    folder, _ = small
    again = tmp_path / "again"
    generate_dataset(again, seed=7, letters=False, **SMALL)
    for name in ("pupils.csv", "exits.csv", "schools.csv", "truth.json"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name
    other = tmp_path / "other"
    generate_dataset(other, seed=8, letters=False, **SMALL)
    assert (other / "pupils.csv").read_bytes() != (folder / "pupils.csv").read_bytes()
    assert (other / "exits.csv").read_bytes() != (folder / "exits.csv").read_bytes()


# --------------------------------------------------------------------------- the contract


def test_columns_and_codes_follow_the_contract(small):
    folder, _ = small
    pupils, exits, schools = read(folder, "pupils"), read(folder, "exits"), read(folder, "schools")
    assert pupils.columns == PUPIL_COLUMNS
    assert exits.columns == EXIT_COLUMNS
    assert schools.columns == SCHOOL_COLUMNS
    allowed = [
        (pupils, "year_group", codes.YEAR_GROUPS),
        (pupils, "sen_provision", codes.SEN_PROVISION),
        (pupils, "social_care", codes.SOCIAL_CARE),
        (pupils, "sen_need", codes.SEN_NEED),
        (pupils, "enrolment_status", codes.ENROLMENT_STATUS),
        (pupils, "sex", ["F", "M"]),
        (exits, "destination", codes.DESTINATIONS),
        (exits, "reason", codes.REASONS),
        (schools, "phase", codes.PHASES),
        (schools, "type", codes.SCHOOL_TYPES),
    ]
    for frame, column, values in allowed:
        assert set(frame[column].drop_nulls().to_list()) <= set(values), column
    assert set(pupils["social_care"].to_list()) >= {"none", "CIN", "CPP", "CLA"}
    assert set(exits["destination"].to_list()) >= {"EHE", "SCHOOL", "MOVED_AWAY", "DUAL_ENDED"}
    for frame, column in [
        (pupils, "disadvantaged"),
        (pupils, "fsm"),
        (exits, "la_placed"),
        (exits, "address_changed"),
        (exits, "la_consent"),
    ]:
        assert set(frame[column].drop_nulls().to_list()) <= {"true", "false"}, column
    for frame, column in [
        (pupils, "on_roll_from"),
        (pupils, "on_roll_to"),
        (exits, "exit_date"),
        (exits, "la_notified_date"),
        (exits, "returned_date"),
        (exits, "last_suspension_date"),
    ]:
        assert frame[column].drop_nulls().str.contains(ISO_DATE).all(), column
    for frame in (pupils, exits, schools):
        assert frame["urn"].str.contains(r"^\d{6}$").all()
    assert exits["destination_urn"].drop_nulls().is_in(schools["urn"].implode()).all()
    assert schools["urn"].is_unique().all()
    assert schools["la_code"].str.contains(r"^\d{3}$").all()
    assert schools["name"].is_unique().all()
    for column in (
        "pupil_id",
        "urn",
        "year_group",
        "sen_provision",
        "disadvantaged",
        "social_care",
    ):
        assert pupils[column].null_count() == 0, column
    for column in ("pupil_id", "urn", "exit_date", "destination"):
        assert exits[column].null_count() == 0, column


def test_grounds_match_destinations_ignoring_spaces_and_case(small):
    folder, _ = small
    exits = read(folder, "exits").with_columns(
        tidy=pl.col("ground").str.replace_all(" ", "").str.to_lowercase()
    )
    decided = exits.filter(pl.col("tidy").is_in(list(codes.GROUND_DESTINATION)))
    derived = decided["tidy"].replace_strict(codes.GROUND_DESTINATION)
    assert (derived == decided["destination"]).all()
    ehe_grounds = set(exits.filter(pl.col("destination") == "EHE")["tidy"].drop_nulls())
    assert ehe_grounds <= {"9(1)(f)", "8(1)(d)"}
    messy = exits.filter(
        pl.col("ground") != pl.col("ground").str.replace_all(" ", "").str.to_lowercase()
    )
    assert 0.03 < messy.height / exits["ground"].drop_nulls().len() < 0.2


def test_every_upn_is_valid_and_belongs_to_one_pupil(small):
    assert upn_check_letter("B801200005001") == "B"
    folder, _ = small
    pupils = read(folder, "pupils")
    ids = pupils["pupil_id"].unique().to_list()
    assert all(re.fullmatch(r"[A-Z](\d{12}|\d{11}[A-Z])", upn) for upn in ids)
    assert all(upn_check_letter(upn) == upn[0] for upn in ids)
    assert any(not upn[-1].isdigit() for upn in ids), "a few temporary UPNs"
    # one pupil per UPN: every row with that UPN describes the same child
    per_id = pupils.group_by("pupil_id").agg(
        pl.col("year_group", "family_id", "sex", "sen_provision").n_unique()
    )
    assert (per_id.drop("pupil_id").max_horizontal() == 1).all()


def test_upn_serials_beyond_999_move_to_spare_establishment_numbers():
    """A cohort too big for 3-digit serials borrows unused (closed-school) numbers."""
    n = 2600
    roll = SimpleNamespace(
        home=np.arange(n), upn_school=np.zeros(n, dtype=np.int64), year=np.full(n, 7)
    )
    table = SimpleNamespace(la=np.array([0]), estab=np.array([2001]), la_codes=np.array([801]))
    ids = pupil_ids(roll, table, np.random.default_rng(0)).to_list()
    assert len(set(ids)) == n
    assert all(upn_check_letter(upn) == upn[0] for upn in ids)
    assert {upn[1:4] for upn in ids} == {"801"}
    establishments = {upn[4:8] for upn in ids}
    assert "2001" in establishments and len(establishments) >= 3
    assert all(e == "2001" or e.startswith("6") for e in establishments)


def test_exits_are_on_that_schools_roll_once(small):
    folder, _ = small
    pupils, exits = read(folder, "pupils"), read(folder, "exits")
    assert exits.join(pupils, on=["pupil_id", "urn"], how="anti").height == 0
    assert exits.select("pupil_id", "urn").is_unique().all()
    assert pupils.select("pupil_id", "urn").is_unique().all()


def test_exit_dates_are_school_days_in_the_window_and_match_the_roll(small):
    folder, _ = small
    exits = read(folder, "exits").with_columns(as_dates("exit_date"))
    days = exits["exit_date"]
    assert days.min() >= WINDOW_START and days.max() <= WINDOW_END
    assert (days.dt.weekday() <= 5).all()
    assert (days.dt.month() != 8).all()
    for first, last in HOLIDAYS:
        assert not days.is_between(first, last).any()
    pupils = read(folder, "pupils").with_columns(as_dates("on_roll_from"), as_dates("on_roll_to"))
    joined = exits.join(pupils, on=["pupil_id", "urn"])
    assert (joined["on_roll_to"] == joined["exit_date"]).all()
    late_starters = joined.filter(pl.col("on_roll_from").is_not_null())
    assert (late_starters["exit_date"] >= late_starters["on_roll_from"]).all()
    assert pupils["on_roll_to"].drop_nulls().len() == exits.height
    later = exits.with_columns(as_dates("la_notified_date"), as_dates("returned_date"))
    assert (
        later["la_notified_date"].drop_nulls()
        >= later.filter(pl.col("la_notified_date").is_not_null())["exit_date"]
    ).all()
    returned = later.filter(pl.col("returned_date").is_not_null())
    assert (returned["returned_date"] > returned["exit_date"]).all()
    assert set(returned["destination"]) == {"EHE"}


def test_dual_registrations_pair_a_main_row_with_an_ap_row(small):
    folder, _ = small
    pupils, schools = read(folder, "pupils"), read(folder, "schools")
    phase = dict(schools.select("urn", "phase").iter_rows())
    main = pupils.filter(pl.col("enrolment_status") == "M")
    subsidiary = pupils.filter(pl.col("enrolment_status") == "S")
    assert main.height > 0
    assert sorted(main["pupil_id"]) == sorted(subsidiary["pupil_id"])
    assert {phase[u] for u in subsidiary["urn"]} == {"ap"}
    ended = read(folder, "exits").filter(pl.col("destination") == "DUAL_ENDED")
    assert ended.join(subsidiary, on=["pupil_id", "urn"], how="anti").height == 0


def test_population_rates_are_realistic(small):
    folder, truth = small
    pupils = read(folder, "pupils").filter(pl.col("enrolment_status") != "S")
    exits = read(folder, "exits")
    share = lambda column, value: (pupils[column] == value).mean()  # noqa: E731
    assert 0.15 < share("disadvantaged", "true") < 0.45
    assert 0.09 < share("sen_provision", "K") < 0.22
    assert 0.02 < share("sen_provision", "E") < 0.08
    assert 0.01 < share("social_care", "CIN") < 0.07
    assert 0.04 < exits.height / pupils.height < 0.12
    fsm_not_disadvantaged = pupils.filter(
        (pl.col("fsm") == "true") & (pl.col("disadvantaged") == "false")
    )
    assert fsm_not_disadvantaged.height == 0
    cla = pupils.filter(pl.col("social_care") == "CLA")
    assert (cla["disadvantaged"] == "true").all()
    nsa = pupils.filter(pl.col("sen_need") == "NSA")
    assert (nsa["sen_provision"] == "K").all()
    assert truth["counts"]["pupils"] == SMALL["pupils"]


# --------------------------------------------------------------------------- planted answers


def test_planted_urns_exist_with_the_right_phase(small):
    folder, truth = small
    schools = read(folder, "schools")
    phase = dict(schools.select("urn", "phase").iter_rows())
    trust = dict(schools.select("urn", "trust").iter_rows())
    kind = dict(schools.select("urn", "type").iter_rows())
    planted = truth["planted"]
    assert [phase[s["urn"]] for s in planted["offroll_ehe"]] == ["secondary"]
    assert [phase[s["urn"]] for s in planted["offroll_moves"]] == ["secondary"]
    assert [phase[s["urn"]] for s in planted["special_no_consent"]] == ["special"]
    assert [phase[s["urn"]] for s in planted["innocent_high"]] == ["secondary"]
    pair = planted["trust_template"]["urns"]
    assert len(set(pair)) == 2
    assert trust[pair[0]] == trust[pair[1]] == planted["trust_template"]["trust"] is not None
    assert {kind[u] for u in pair} == {"academy"}
    roles = [
        s["urn"]
        for key in ("offroll_ehe", "offroll_moves", "special_no_consent", "innocent_high")
        for s in planted[key]
    ] + pair
    assert len(roles) == len(set(roles))


def test_truth_counts_match_the_files(small):
    folder, truth = small
    exits = read(folder, "exits")
    ehe = dict(exits.filter(pl.col("destination") == "EHE").group_by("urn").len().iter_rows())
    assert {u: n for u, n in truth["observed_ehe"].items() if n} == ehe
    assert truth["counts"]["exits"] == exits.height
    assert set(truth["school_effects"]) == set(read(folder, "schools")["urn"])


def test_offroller_ehe_is_well_above_its_intake_prediction(small):
    folder, truth = small
    exits = read(folder, "exits")
    for school in truth["planted"]["offroll_ehe"]:
        expected = school["expected_ehe_without_plant"]
        assert expected == pytest.approx(truth["expected_ehe"][school["urn"]], abs=1e-3)
        assert school["planted_ehe"] == max(round(3 * expected) - school["natural_ehe"], 0)
        assert school["observed_ehe"] == school["natural_ehe"] + school["planted_ehe"]
        assert school["observed_ehe"] >= round(3 * expected)
        planted = exits.filter((pl.col("urn") == school["urn"]) & (pl.col("destination") == "EHE"))
        assert planted.height == school["observed_ehe"]
        extra = planted.filter(pl.col("pupil_id").is_in(school["planted_pupil_ids"]))
        assert extra.height == school["planted_ehe"]
        pressured = extra["reason"].is_in(["SCHOOL_PRESSURE", "RISK_OF_EXCLUSION", "UNKNOWN"])
        assert pressured.mean() > 0.3  # 80% in expectation; natural EHE exits ~25%
        dates = extra.with_columns(as_dates("exit_date"))["exit_date"]
        assert dates.is_between(date(2024, 10, 1), date(2025, 1, 15)).all(), "before the census"
        pupils = read(folder, "pupils").join(extra, on=["pupil_id", "urn"], how="semi")
        assert pupils["year_group"].is_in(["9", "10", "11"]).all()
        vulnerable = (
            (pl.col("sen_provision") != "N")
            | (pl.col("disadvantaged") == "true")
            | (pl.col("social_care") != "none")
        )
        assert pupils.select(vulnerable.all()).item()


def test_offroll_mover_moves_y10_11_pupils_without_a_house_move(small):
    folder, truth = small
    pupils, exits = read(folder, "pupils"), read(folder, "exits")
    phase = dict(read(folder, "schools").select("urn", "phase").iter_rows())
    (school,) = truth["planted"]["offroll_moves"]
    moves = exits.filter(
        (pl.col("urn") == school["urn"])
        & (pl.col("destination") == "SCHOOL")
        & (pl.col("address_changed") == "false")
    ).join(pupils, on=["pupil_id", "urn"])
    assert moves.filter(pl.col("year_group").is_in(["10", "11"])).height >= school["planted_moves"]
    assert school["observed_unexplained_y10_11"] >= 3 * school["expected_unexplained_y10_11"]
    assert {phase[u] for u in moves["destination_urn"].drop_nulls()} == {"secondary"}
    # the mover's EHE is ordinary
    assert school["observed_ehe"] < 2 * school["expected_ehe"] + 5
    # and its pupils turn up on their new school's roll
    arrived = moves.select("pupil_id", urn="destination_urn").drop_nulls()
    assert arrived.join(pupils, on=["pupil_id", "urn"], how="anti").height == 0


def test_special_school_deletes_placed_pupils_without_consent(small):
    folder, truth = small
    exits = read(folder, "exits")
    (school,) = truth["planted"]["special_no_consent"]
    assert 2 <= len(school["pupil_ids"]) <= 4
    planted = exits.filter(
        pl.col("pupil_id").is_in(school["pupil_ids"]) & (pl.col("urn") == school["urn"])
    )
    assert planted.height == len(school["pupil_ids"])
    assert (planted["destination"] == "EHE").all()
    assert (planted["la_placed"] == "true").all()
    assert not (planted["la_consent"] == "true").any()
    special = set(read(folder, "schools").filter(pl.col("phase") == "special")["urn"])
    others = exits.filter(
        pl.col("urn").is_in(special)
        & (pl.col("destination") == "EHE")
        & (pl.col("la_placed") == "true")
        & ~pl.col("pupil_id").is_in(school["pupil_ids"])
    )
    assert (others["la_consent"] == "true").all()


def test_innocent_school_has_the_highest_raw_ehe_count_without_excess(small):
    folder, truth = small
    counts = read(folder, "exits").filter(pl.col("destination") == "EHE").group_by("urn").len()
    top = counts.sort("len", descending=True)
    (innocent,) = truth["planted"]["innocent_high"]
    assert top["urn"][0] == innocent["urn"]
    assert top["len"][0] > top["len"][1]
    assert truth["school_effects"][innocent["urn"]] == 1.0
    expected = innocent["expected_ehe"]
    assert abs(innocent["observed_ehe"] - expected) < 4 * math.sqrt(expected) + 2
    pupils = read(folder, "pupils")
    mine = pupils.filter(pl.col("urn") == innocent["urn"])
    assert (mine["disadvantaged"] == "true").mean() > (pupils["disadvantaged"] == "true").mean()
    assert mine.height > pupils.group_by("urn").len()["len"].median() * 2


def test_null_dataset_plants_nothing(null):
    folder, truth = null
    planted = truth["planted"]
    for key in ("offroll_ehe", "offroll_moves", "special_no_consent", "innocent_high"):
        assert planted[key] == [], key
    assert planted["trust_template"]["urns"] == []
    effects = np.array(list(truth["school_effects"].values()))
    assert (effects != 1.0).all(), "every school keeps its random effect"
    exits = read(folder, "exits")
    reasons = exits.filter(pl.col("destination") == "EHE")["reason"]
    assert (reasons == "SCHOOL_PRESSURE").mean() < 0.1
    special = set(read(folder, "schools").filter(pl.col("phase") == "special")["urn"])
    placed_ehe = exits.filter(
        pl.col("urn").is_in(special)
        & (pl.col("destination") == "EHE")
        & (pl.col("la_placed") == "true")
    )
    assert (placed_ehe["la_consent"] == "true").all()


def test_ehe_model_in_truth_is_the_one_that_generated_the_exits(tmp_path):
    """Fit the generating logit model on a larger null LA without heterogeneity."""
    out = tmp_path / "model"
    truth = generate_dataset(
        out, seed=3, schools=250, pupils=200_000, letters=False, null=True, heterogeneity_sd=0.0
    )
    pupils = read(out, "pupils").filter(
        (pl.col("enrolment_status") != "S") & pl.col("on_roll_from").is_null()
    )
    ehe = read(out, "exits").filter(pl.col("destination") == "EHE").select("pupil_id", "urn")
    frame = pupils.join(ehe.with_columns(ehe=pl.lit(1)), on=["pupil_id", "urn"], how="left")
    cells = frame.group_by("year_group", "sen_provision", "disadvantaged", "social_care").agg(
        events=pl.col("ehe").sum(), trials=pl.len()
    )
    design = cells.select(
        *[
            (pl.col("year_group") == y).cast(pl.Float64).alias(f"y{y}")
            for y in codes.YEAR_GROUPS[3:]
        ],
        *[(pl.col("sen_provision") == s).cast(pl.Float64).alias(s) for s in ("K", "E")],
        (pl.col("disadvantaged") == "true").cast(pl.Float64).alias("dis"),
        *[(pl.col("social_care") == c).cast(pl.Float64).alias(c) for c in ("CIN", "CPP", "CLA")],
    )
    present = [c for c in design.columns if design[c].sum() > 0]
    x = sm.add_constant(design.select(present).to_numpy())
    y = np.column_stack(
        [cells["events"].to_numpy(), (cells["trials"] - cells["events"]).to_numpy()]
    )
    fit = sm.GLM(y, x, family=sm.families.Binomial()).fit()
    estimate = dict(zip(["const", *present], fit.params, strict=True))
    error = dict(zip(["const", *present], fit.bse, strict=True))
    odds = truth["ehe_model"]["odds_ratios"]
    expectations = {
        "dis": odds["disadvantaged"],
        "K": odds["sen_provision"]["K"],
        "E": odds["sen_provision"]["E"],
        "CIN": odds["social_care"]["CIN"],
        "y10": odds["year_group"]["10"] / odds["year_group"]["R"],
    }
    for name, ratio in expectations.items():
        assert abs(estimate[name] - math.log(ratio)) < 4 * error[name], name
    rate = truth["counts"]["ehe_exits"] / truth["counts"]["pupils"]
    assert rate == pytest.approx(truth["ehe_model"]["target_rate"], rel=0.15)


# --------------------------------------------------------------------------- the output folder


def test_refuses_a_non_empty_folder_without_truth(tmp_path):
    (tmp_path / "mine.xlsx").write_bytes(b"user data")
    with pytest.raises(UsageError, match="not empty"):
        generate_dataset(tmp_path, letters=False, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.xlsx"]


def test_overwrites_an_earlier_synthetic_dataset(tmp_path):
    out = tmp_path / "data"
    generate_dataset(out, seed=1, letters=False, **SMALL)
    (out / "letters").mkdir()
    (out / "letters.csv").write_text("letter_id,file,urn\n")
    truth = generate_dataset(out, seed=2, letters=False, **SMALL)
    assert not (out / "letters").exists() and not (out / "letters.csv").exists()
    assert (
        json.loads((out / "truth.json").read_text())["arguments"]["seed"]
        == truth["arguments"]["seed"]
        == 2
    )


def test_rejects_arguments_it_cannot_honour(tmp_path):
    with pytest.raises(UsageError):
        generate_dataset(tmp_path / "a", schools=5, pupils=1000, letters=False)
    with pytest.raises(UsageError):
        generate_dataset(tmp_path / "b", schools=30, pupils=100, letters=False)
    with pytest.raises(UsageError):
        generate_dataset(tmp_path / "c", letters=False, offroll_factor=0.5, **SMALL)


# --------------------------------------------------------------------------- letters


def test_letters_link_to_ehe_exits_and_are_deterministic(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    truth = generate_dataset(first, seed=5, **SMALL)
    generate_dataset(second, seed=5, **SMALL)
    manifest, exits = read(first, "letters"), read(first, "exits")
    assert manifest["letter_id"].is_unique().all()
    assert all((first / "letters" / f).is_file() for f in manifest["file"])
    linked = exits.filter(pl.col("letter_id").is_not_null())
    assert (linked["destination"] == "EHE").all()
    assert linked["letter_id"].is_in(manifest["letter_id"].implode()).all()
    assert linked.height > 0.6 * (exits["destination"] == "EHE").sum()
    template_letters = {
        k for k, v in truth["letters"]["letters"].items() if v["kind"] == "school_template"
    }
    template_urns = {truth["letters"]["letters"][k]["urn"] for k in template_letters}
    offrollers = {s["urn"] for s in truth["planted"]["offroll_ehe"]}
    assert offrollers <= template_urns
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for path in files:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path
    # letters do not change the population
    without = tmp_path / "without"
    generate_dataset(without, seed=5, letters=False, **SMALL)
    assert (without / "pupils.csv").read_bytes() == (first / "pupils.csv").read_bytes()
    assert read(without, "exits").drop("letter_id").equals(exits.drop("letter_id"))
