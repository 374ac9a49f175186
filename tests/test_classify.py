"""Exit classification, follow-up flags and RAG ratings (offroll_audit.classify).

Expected values come from the data contract (exits.csv: explained/unexplained
defaults) and thresholds/default.toml ([classification], [flags], [rag]); every
boundary is tested on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from offroll_audit import codes
from offroll_audit.classify import (
    FLAG_TEXT,
    FLAGS,
    add_rag,
    classify_exits,
    flag_counts,
    school_context,
    school_days_between,
)
from offroll_audit.profile import Profile, load_profile, merge
from offroll_audit.schema import empty_frame
from offroll_audit.window import Window, census_day, term_window

DEFAULT = load_profile("default")
AUTUMN = term_window("2024-AUT")
SCHOOL_YEAR = term_window("2024-25")
MID_TERM = date(2024, 11, 5)  # a Tuesday in the autumn term
SPRING_CENSUS = census_day("2025-SPR")  # Thursday 16 January 2025

EXPLAINED = {
    "PERM_EXCLUSION",
    "END_OF_EDUCATION",
    "MOVED_AWAY",
    "EMIGRATED",
    "SPECIAL",
    "CUSTODY",
    "DECEASED",
    "DUAL_ENDED",
}
UNEXPLAINED = {"EHE", "CME", "AP", "INDEPENDENT", "OTHER"}

# One school per phase; "none" is not in schools.csv. The roll fixes each school's
# final year group (the highest year on roll).
PRIMARY, SECONDARY, SIXTH_FORM, SPECIAL, AP, NO_PHASE = (
    "100001",
    "100002",
    "100003",
    "100004",
    "100005",
    "100006",
)
ROLL_YEARS = {
    PRIMARY: ["R", "1", "2", "3", "4", "5", "6"],
    SECONDARY: ["7", "8", "9", "10", "11"],
    SIXTH_FORM: ["7", "8", "9", "10", "11", "12", "13"],
    SPECIAL: ["R", *[str(y) for y in range(1, 15)]],
    AP: ["7", "8", "9", "10", "11"],
    NO_PHASE: ["7", "8", "9", "10", "11"],
}
SCHOOL_ROWS = [
    {"urn": PRIMARY, "name": "Elm Primary", "phase": "primary"},
    {"urn": SECONDARY, "name": "Oak Academy", "phase": "secondary"},
    {"urn": SIXTH_FORM, "name": "Ash School", "phase": "secondary"},
    {"urn": SPECIAL, "name": "Birch Special School", "phase": "special"},
    {"urn": AP, "name": "Hazel PRU", "phase": "ap"},
]
PHASE_URN = {
    "primary": PRIMARY,
    "secondary": SECONDARY,
    "special": SPECIAL,
    "ap": AP,
    "none": NO_PHASE,
}
NOT_FINAL_YEAR = {PRIMARY: "5", SECONDARY: "8", SPECIAL: "8", AP: "8", NO_PHASE: "8"}


def frame(table: str, rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Canonical rows: every contract column, with the loader's dtypes; missing = null."""
    schema = empty_frame(table).schema
    return pl.concat([empty_frame(table), pl.DataFrame(list(rows), schema=schema)])


def pupil(pupil_id: str, urn: str, **fields: Any) -> dict[str, Any]:
    """A pupil with no risk factors unless told otherwise."""
    row: dict[str, Any] = {
        "pupil_id": pupil_id,
        "urn": urn,
        "year_group": "8",
        "sen_provision": "N",
        "disadvantaged": False,
        "social_care": "none",
        "attendance": 0.97,
        "suspensions": 0,
    }
    row.update(fields)
    return row


def roll() -> list[dict[str, Any]]:
    """One filler pupil in each year group of each school."""
    return [
        pupil(f"F{urn}Y{year}", urn, year_group=year)
        for urn, years in ROLL_YEARS.items()
        for year in years
    ]


def run(
    exits: list[dict[str, Any]],
    pupils: Sequence[dict[str, Any]] = (),
    *,
    window: Window = AUTUMN,
    profile: Profile = DEFAULT,
    schools: Sequence[dict[str, Any]] = tuple(SCHOOL_ROWS),
    template_letters: Sequence[str] | None = None,
) -> pl.DataFrame:
    return classify_exits(
        frame("exits", exits),
        frame("pupils", [*roll(), *pupils]),
        frame("schools", schools),
        window,
        profile,
        template_letters,
    )


def one_exit(
    exit_fields: dict[str, Any] | None = None,
    pupil_fields: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Classify a single exit of pupil P1 (by default an EHE from Year 8 of a secondary
    on a Tuesday in November, the LA notified the same day) and return its row."""
    row: dict[str, Any] = {
        "pupil_id": "P1",
        "urn": SECONDARY,
        "exit_date": MID_TERM,
        "destination": "EHE",
        "la_notified_date": MID_TERM,
    }
    row.update(exit_fields or {})
    out = run([row], [pupil("P1", row["urn"], **(pupil_fields or {}))], **options)
    assert out.height == 1
    return out.row(0, named=True)


def profile_with(**sections: dict[str, Any]) -> Profile:
    return Profile("test", "test", merge(DEFAULT.settings, sections))


def assert_plain_sentence(text: str | None) -> None:
    assert text and text.strip() == text
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9 ,;:'()\-.]+", text), text
    assert not re.search(r"[A-Z]{2,}_[A-Z]", text), "codes are not plain English"
    assert len(text.split()) >= 3


# --- explained / unexplained: every destination x address_changed x phase ------------------

ADDRESS = {"true": True, "false": False, "blank": None}
COMBINATIONS = [
    (destination, address, phase)
    for destination in codes.DESTINATIONS
    for address in ADDRESS
    for phase in PHASE_URN
]


def expected_explained(destination: str, address: str) -> bool:
    if destination == "SCHOOL":
        return address == "true"
    return destination in EXPLAINED


def test_contract_lists_every_destination() -> None:
    assert EXPLAINED | UNEXPLAINED | {"SCHOOL"} == set(codes.DESTINATIONS)
    assert set(DEFAULT.classification["explained"]) == EXPLAINED
    assert set(DEFAULT.classification["unexplained"]) == UNEXPLAINED


@pytest.fixture(scope="module")
def combinations() -> dict[tuple[str, str, str], dict[str, Any]]:
    """All combinations classified together, each a pupil outside the final year, mid-term."""
    exits, pupils = [], []
    for i, (destination, address, phase) in enumerate(COMBINATIONS):
        urn = PHASE_URN[phase]
        pupils.append(pupil(f"C{i}", urn, year_group=NOT_FINAL_YEAR[urn]))
        exits.append(
            {
                "pupil_id": f"C{i}",
                "urn": urn,
                "exit_date": MID_TERM,
                "destination": destination,
                "address_changed": ADDRESS[address],
                "la_notified_date": MID_TERM,
            }
        )
    out = run(exits, pupils)
    assert out.height == len(COMBINATIONS)
    return {combo: out.row(i, named=True) for i, combo in enumerate(COMBINATIONS)}


@pytest.mark.parametrize(("destination", "address", "phase"), COMBINATIONS)
def test_classification_of_each_combination(
    combinations: dict[tuple[str, str, str], dict[str, Any]],
    destination: str,
    address: str,
    phase: str,
) -> None:
    row = combinations[(destination, address, phase)]
    assert row["destination"] == destination
    assert row["explained"] is expected_explained(destination, address)
    assert row["special_school"] is (phase == "special")
    assert row["in_window"] is True
    assert_plain_sentence(row["why"])
    if destination == "SCHOOL":
        moved_house = "moved house" in row["why"]
        assert moved_house is (address == "true")
    rated = destination in {"EHE", "CME"}
    assert (row["rag"] is not None) is rated
    assert isinstance(row["flags"], list)


def test_phase_blank_in_schools_csv_is_like_no_schools_csv() -> None:
    schools = [*SCHOOL_ROWS, {"urn": NO_PHASE, "name": "Unknown phase", "phase": None}]
    for placed in (False, True):
        row = one_exit({"urn": NO_PHASE, "la_placed": placed}, schools=schools)
        assert row["special_school"] is placed
        assert row["explained"] is False


def test_school_move_rule_comes_from_profile() -> None:
    strict = profile_with(classification={"school_move_explained_if_address_changed": False})
    row = one_exit({"destination": "SCHOOL", "address_changed": True}, profile=strict)
    assert row["explained"] is False
    assert "without a change of address" not in row["why"]
    assert_plain_sentence(row["why"])
    moved = profile_with(classification={"explained": [*sorted(EXPLAINED), "INDEPENDENT"]})
    assert one_exit({"destination": "INDEPENDENT"}, profile=moved)["explained"] is True


def test_every_exit_returned_in_order_with_unknown_pupils() -> None:
    exits = [
        {
            "pupil_id": f"X{i}",
            "urn": SECONDARY,
            "exit_date": MID_TERM + timedelta(days=i),
            "destination": destination,
        }
        for i, destination in enumerate(codes.DESTINATIONS)
    ]
    out = run(exits)  # none of these pupils is on the roll
    assert out.get_column("pupil_id").to_list() == [e["pupil_id"] for e in exits]
    assert out.get_column("explained").null_count() == 0
    assert out.get_column("why").null_count() == 0
    assert set(FLAGS) >= {code for flags in out.get_column("flags") for code in flags}


# --- the final-year transition rule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("urn", "year", "exit_date", "destination", "explained"),
    [
        (PRIMARY, "6", date(2025, 7, 18), "EHE", True),  # Year 6 leaving a primary in July
        (PRIMARY, "6", date(2025, 7, 18), "SCHOOL", True),
        (PRIMARY, "6", date(2025, 6, 30), "OTHER", True),
        (PRIMARY, "6", date(2025, 8, 31), "CME", True),
        (PRIMARY, "6", date(2024, 11, 5), "EHE", False),  # ... in November is not
        (PRIMARY, "6", date(2025, 5, 23), "SCHOOL", False),
        (PRIMARY, "6", date(2024, 9, 2), "SCHOOL", False),
        (PRIMARY, "5", date(2025, 7, 18), "SCHOOL", False),  # not the final year
        (SECONDARY, "11", date(2025, 7, 18), "SCHOOL", True),  # 11 is this school's final year
        (SECONDARY, "11", date(2025, 7, 18), "INDEPENDENT", True),
        (SECONDARY, "11", date(2025, 3, 12), "SCHOOL", False),
        (SECONDARY, "10", date(2025, 7, 18), "SCHOOL", False),
        (SIXTH_FORM, "11", date(2025, 7, 18), "SCHOOL", False),  # this school goes on to 13
        (SIXTH_FORM, "13", date(2025, 7, 18), "OTHER", True),
        (SPECIAL, "14", date(2025, 7, 18), "AP", True),
        (AP, "11", date(2025, 7, 18), "OTHER", True),
        (NO_PHASE, "11", date(2025, 7, 18), "EHE", True),
    ],
)
def test_final_year_transition(
    urn: str, year: str, exit_date: date, destination: str, explained: bool
) -> None:
    row = one_exit(
        {
            "urn": urn,
            "exit_date": exit_date,
            "destination": destination,
            "la_notified_date": exit_date,
        },
        {"year_group": year},
        window=SCHOOL_YEAR,
    )
    assert row["explained"] is explained
    assert_plain_sentence(row["why"])
    assert ("final year" in row["why"]) is explained


def test_final_year_months_come_from_profile() -> None:
    july_only = profile_with(classification={"final_year_months": [7]})
    june = {"urn": PRIMARY, "exit_date": date(2025, 6, 30), "destination": "SCHOOL"}
    july = {**june, "exit_date": date(2025, 7, 1)}
    year6 = {"year_group": "6"}
    assert one_exit(june, year6, window=SCHOOL_YEAR)["explained"] is True
    assert one_exit(june, year6, window=SCHOOL_YEAR, profile=july_only)["explained"] is False
    assert one_exit(july, year6, window=SCHOOL_YEAR, profile=july_only)["explained"] is True


# --- flags: each one triggered, and not triggered just past its boundary ----------------------

FLAG_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], bool]] = [
    # (flag, case, exit fields, pupil fields, expected)
    ("EHE_VULNERABLE", "SEN support", {}, {"sen_provision": "K"}, True),
    ("EHE_VULNERABLE", "EHC plan", {}, {"sen_provision": "E"}, True),
    ("EHE_VULNERABLE", "child in need", {}, {"social_care": "CIN"}, True),
    ("EHE_VULNERABLE", "protection plan", {}, {"social_care": "CPP"}, True),
    ("EHE_VULNERABLE", "looked after", {}, {"social_care": "CLA"}, True),
    ("EHE_VULNERABLE", "disadvantaged", {}, {"disadvantaged": True}, True),
    ("EHE_VULNERABLE", "no vulnerability", {}, {}, False),
    ("EHE_VULNERABLE", "not EHE", {"destination": "CME"}, {"sen_provision": "E"}, False),
    ("SPECIAL_NO_CONSENT", "consent blank", {"urn": SPECIAL, "la_placed": True}, {}, True),
    (
        "SPECIAL_NO_CONSENT",
        "consent refused",
        {"urn": SPECIAL, "la_placed": True, "la_consent": False},
        {},
        True,
    ),
    (
        "SPECIAL_NO_CONSENT",
        "special by la_placed, phase unknown",
        {"urn": NO_PHASE, "la_placed": True},
        {},
        True,
    ),
    (
        "SPECIAL_NO_CONSENT",
        "LA consented",
        {"urn": SPECIAL, "la_placed": True, "la_consent": True},
        {},
        False,
    ),
    ("SPECIAL_NO_CONSENT", "not LA-placed", {"urn": SPECIAL, "la_placed": False}, {}, False),
    (
        "SPECIAL_NO_CONSENT",
        "mainstream EHC plan, LA-placed",
        {"urn": SECONDARY, "la_placed": True},
        {"sen_provision": "E"},
        False,
    ),
    (
        "SPECIAL_NO_CONSENT",
        "not EHE",
        {"urn": SPECIAL, "la_placed": True, "destination": "SCHOOL"},
        {},
        False,
    ),
    ("KS4_PRE_CENSUS", "Year 10 in November", {}, {"year_group": "10"}, True),
    ("KS4_PRE_CENSUS", "Year 11 in November", {}, {"year_group": "11"}, True),
    (
        "KS4_PRE_CENSUS",
        "Year 11 exactly 120 days before",
        {"exit_date": SPRING_CENSUS - timedelta(days=120)},
        {"year_group": "11"},
        True,
    ),
    (
        "KS4_PRE_CENSUS",
        "Year 11 121 days before",
        {"exit_date": SPRING_CENSUS - timedelta(days=121)},
        {"year_group": "11"},
        False,
    ),
    (
        "KS4_PRE_CENSUS",
        "Year 11 the day after the census",
        {"exit_date": SPRING_CENSUS + timedelta(days=1)},
        {"year_group": "11"},
        False,
    ),
    ("KS4_PRE_CENSUS", "Year 9 is not KS4", {}, {"year_group": "9"}, False),
    ("KS4_PRE_CENSUS", "Year 12 is not KS4", {"urn": SIXTH_FORM}, {"year_group": "12"}, False),
    (
        "KS4_PRE_CENSUS",
        "explained exit",
        {"destination": "MOVED_AWAY"},
        {"year_group": "11"},
        False,
    ),
    (
        "AFTER_SUSPENSION",
        "30 days after",
        {"last_suspension_date": MID_TERM - timedelta(days=30)},
        {},
        True,
    ),
    ("AFTER_SUSPENSION", "same day", {"last_suspension_date": MID_TERM}, {}, True),
    (
        "AFTER_SUSPENSION",
        "31 days after",
        {"last_suspension_date": MID_TERM - timedelta(days=31)},
        {},
        False,
    ),
    (
        "AFTER_SUSPENSION",
        "suspension after the exit",
        {"last_suspension_date": MID_TERM + timedelta(days=1)},
        {},
        False,
    ),
    (
        "AFTER_SUSPENSION",
        "explained exit",
        {"destination": "PERM_EXCLUSION", "last_suspension_date": MID_TERM},
        {},
        False,
    ),
    ("LOW_ATTENDANCE", "persistent absence", {}, {"attendance": 0.89}, True),
    ("LOW_ATTENDANCE", "severe absence", {}, {"attendance": 0.4}, True),
    ("LOW_ATTENDANCE", "exactly 0.9", {}, {"attendance": 0.9}, False),
    ("LOW_ATTENDANCE", "attendance unknown", {}, {"attendance": None}, False),
    ("LOW_ATTENDANCE", "explained exit", {"destination": "EMIGRATED"}, {"attendance": 0.3}, False),
    # MID_TERM is a Tuesday: 5 school days later is the next Tuesday.
    ("LATE_NOTIFICATION", "6 school days", {"la_notified_date": date(2024, 11, 13)}, {}, True),
    (
        "LATE_NOTIFICATION",
        "exactly 5 school days",
        {"la_notified_date": date(2024, 11, 12)},
        {},
        False,
    ),
    (
        "LATE_NOTIFICATION",
        "Friday to next Monday is 6 school days",
        {"exit_date": date(2024, 11, 8), "la_notified_date": date(2024, 11, 18)},
        {},
        True,
    ),
    (
        "LATE_NOTIFICATION",
        "Friday to next Friday is 5 school days, weekend skipped",
        {"exit_date": date(2024, 11, 8), "la_notified_date": date(2024, 11, 15)},
        {},
        False,
    ),
    (
        "LATE_NOTIFICATION",
        "Friday to the Sunday after next: still 5 school days",
        {"exit_date": date(2024, 11, 8), "la_notified_date": date(2024, 11, 17)},
        {},
        False,
    ),
    (
        "LATE_NOTIFICATION",
        "Saturday deletion, notified the Monday week: 6 school days",
        {"exit_date": date(2024, 11, 9), "la_notified_date": date(2024, 11, 18)},
        {},
        True,
    ),
    (
        "LATE_NOTIFICATION",
        "Saturday deletion, notified the Friday: 5 school days",
        {"exit_date": date(2024, 11, 9), "la_notified_date": date(2024, 11, 15)},
        {},
        False,
    ),
    (
        "LATE_NOTIFICATION",
        "notified before the deletion",
        {"la_notified_date": MID_TERM - timedelta(days=3)},
        {},
        False,
    ),
    (
        "LATE_NOTIFICATION",
        "explained exit",
        {"destination": "DECEASED", "la_notified_date": date(2024, 12, 13)},
        {},
        False,
    ),
    (
        "RETURNED_QUICKLY",
        "back in 2 weeks",
        {"returned_date": MID_TERM + timedelta(weeks=2)},
        {},
        True,
    ),
    (
        "RETURNED_QUICKLY",
        "exactly 12 weeks",
        {"returned_date": MID_TERM + timedelta(weeks=12)},
        {},
        True,
    ),
    (
        "RETURNED_QUICKLY",
        "12 weeks and a day",
        {"returned_date": MID_TERM + timedelta(weeks=12, days=1)},
        {},
        False,
    ),
    ("RETURNED_QUICKLY", "not back", {}, {}, False),
    (
        "RETURNED_QUICKLY",
        "not EHE",
        {"destination": "CME", "returned_date": MID_TERM + timedelta(weeks=1)},
        {},
        False,
    ),
    ("SCHOOL_PRESSURE_REASON", "school pressure", {"reason": "SCHOOL_PRESSURE"}, {}, True),
    ("SCHOOL_PRESSURE_REASON", "risk of exclusion", {"reason": "RISK_OF_EXCLUSION"}, {}, True),
    ("SCHOOL_PRESSURE_REASON", "dissatisfied", {"reason": "DISSATISFIED_GENERAL"}, {}, False),
    ("SCHOOL_PRESSURE_REASON", "no reason", {}, {}, False),
    (
        "SCHOOL_PRESSURE_REASON",
        "not EHE",
        {"destination": "OTHER", "reason": "SCHOOL_PRESSURE"},
        {},
        False,
    ),
    ("CME_UNKNOWN", "missing education", {"destination": "CME"}, {}, True),
    ("CME_UNKNOWN", "EHE is not CME", {}, {}, False),
    ("CME_UNKNOWN", "moved away", {"destination": "MOVED_AWAY"}, {}, False),
]


@pytest.mark.parametrize(
    ("flag", "exit_fields", "pupil_fields", "expected"),
    [case[:1] + case[2:] for case in FLAG_CASES],
    ids=[f"{flag}-{case}" for flag, case, *_ in FLAG_CASES],
)
def test_flag_trigger_and_boundary(
    flag: str, exit_fields: dict[str, Any], pupil_fields: dict[str, Any], expected: bool
) -> None:
    row = one_exit(exit_fields, pupil_fields)
    assert (flag in row["flags"]) is expected, row["flags"]


def test_every_flag_has_a_trigger_and_a_boundary_case() -> None:
    rules = set(FLAGS) - {"TEMPLATED_LETTER"}  # from the letters stage's template ids (below)
    assert {f for f, *_, expected in FLAG_CASES if expected} == rules
    assert {f for f, *_, expected in FLAG_CASES if not expected} == rules


def test_flag_text_is_plain_english() -> None:
    assert list(FLAG_TEXT) == FLAGS
    for text in FLAG_TEXT.values():
        assert_plain_sentence(text)


def test_late_notification_when_never_notified() -> None:
    exits = [
        {"pupil_id": "P1", "urn": SECONDARY, "exit_date": MID_TERM, "destination": "EHE"},
        {
            "pupil_id": "P2",
            "urn": SECONDARY,
            "exit_date": MID_TERM,
            "destination": "EHE",
            "la_notified_date": MID_TERM,
        },
    ]
    out = run(exits, [pupil("P1", SECONDARY), pupil("P2", SECONDARY)])
    flagged = ["LATE_NOTIFICATION" in flags for flags in out.get_column("flags")]
    assert flagged == [True, False]


def test_no_late_notification_when_the_column_was_not_collected() -> None:
    # No exit carries la_notified_date at all: the LA did not supply it, so blank is
    # "unknown", not "never notified" (otherwise every unexplained exit would be flagged).
    assert "LATE_NOTIFICATION" not in one_exit({"la_notified_date": None})["flags"]


@pytest.mark.parametrize(
    ("setting", "exit_fields", "pupil_fields", "flag"),
    [
        (
            {"after_suspension_days": 10},
            {"last_suspension_date": MID_TERM - timedelta(days=11)},
            {},
            "AFTER_SUSPENSION",
        ),
        (
            {"returned_within_weeks": 4},
            {"returned_date": MID_TERM + timedelta(weeks=4, days=1)},
            {},
            "RETURNED_QUICKLY",
        ),
        (
            {"late_notification_school_days": 10},
            {"la_notified_date": date(2024, 11, 19)},
            {},
            "LATE_NOTIFICATION",
        ),
        ({"persistent_absence_below": 0.8}, {}, {"attendance": 0.85}, "LOW_ATTENDANCE"),
        ({"pre_census_days": 30}, {}, {"year_group": "11"}, "KS4_PRE_CENSUS"),
        ({"pre_census_years": ["11"]}, {}, {"year_group": "10"}, "KS4_PRE_CENSUS"),
        ({"vulnerable_if_disadvantaged": False}, {}, {"disadvantaged": True}, "EHE_VULNERABLE"),
        ({"vulnerable_sen": ["E"]}, {}, {"sen_provision": "K"}, "EHE_VULNERABLE"),
        (
            {"pressure_reasons": ["SCHOOL_PRESSURE"]},
            {"reason": "RISK_OF_EXCLUSION"},
            {},
            "SCHOOL_PRESSURE_REASON",
        ),
    ],
)
def test_flag_thresholds_come_from_profile(
    setting: dict[str, Any], exit_fields: dict[str, Any], pupil_fields: dict[str, Any], flag: str
) -> None:
    assert flag in one_exit(exit_fields, pupil_fields)["flags"]
    assert (
        flag
        not in one_exit(exit_fields, pupil_fields, profile=profile_with(flags=setting))["flags"]
    )


def test_school_days_between_skips_weekends_and_keeps_nulls() -> None:
    start = pl.Series(
        [date(2024, 11, 8), date(2024, 11, 8), date(2024, 11, 5), None, date(2024, 11, 5)]
    )
    end = pl.Series(
        [date(2024, 11, 11), date(2024, 11, 10), date(2024, 11, 5), date(2024, 11, 5), None]
    )
    days = school_days_between(start, end)
    assert days[:3].tolist() == [1.0, 0.0, 0.0]  # Fri->Mon is one school day; Fri->Sun none
    assert np.isnan(days[3:]).all()
    empty = pl.Series([], dtype=pl.Date)
    assert school_days_between(empty, empty).shape == (0,)


# --- RAG ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pupil_fields", "exit_fields", "score", "rag"),
    [
        ({}, {}, 0, "green"),
        ({"sen_provision": "K"}, {}, 1, "green"),
        ({"sen_provision": "E"}, {}, 2, "amber"),
        ({"social_care": "CIN"}, {}, 3, "amber"),
        ({"social_care": "CPP"}, {}, 4, "red"),
        ({"social_care": "CLA"}, {}, 4, "red"),
        ({"disadvantaged": True}, {}, 1, "green"),
        ({"disadvantaged": True, "sen_provision": "K"}, {}, 2, "amber"),
        ({"attendance": 0.49}, {}, 2, "amber"),  # severe
        ({"attendance": 0.5}, {}, 1, "green"),  # persistent, not severe
        ({"attendance": 0.9}, {}, 0, "green"),
        ({"suspensions": 2}, {}, 2, "amber"),
        ({"suspensions": 1}, {}, 0, "green"),
        ({}, {"reason": "SCHOOL_PRESSURE"}, 2, "amber"),
        ({}, {"last_suspension_date": MID_TERM - timedelta(days=3)}, 1, "green"),
        ({"sen_provision": "E", "attendance": 0.3}, {}, 4, "red"),
        ({"social_care": "CIN", "sen_provision": "E", "disadvantaged": True}, {}, 6, "red"),
        ({}, {"destination": "CME"}, 4, "red"),
    ],
)
def test_rag_score_from_profile_points(
    pupil_fields: dict[str, Any], exit_fields: dict[str, Any], score: int, rag: str
) -> None:
    row = one_exit(exit_fields, pupil_fields)
    assert row["rag_score"] == score
    assert row["rag"] == rag
    assert isinstance(row["rag_why"], str)
    assert (row["rag_why"] == "") is (score == 0)


def test_rag_why_names_the_reasons() -> None:
    row = one_exit({}, {"sen_provision": "E", "social_care": "CIN", "attendance": 0.3})
    for reason in ("has an EHC plan", "a child in need", "severely absent"):
        assert reason in row["rag_why"]
    assert "persistently absent" not in row["rag_why"]
    cme = one_exit({"destination": "CME"}, {"disadvantaged": True})
    assert "whereabouts unknown" in cme["rag_why"] and "disadvantaged" in cme["rag_why"]


def test_special_no_consent_is_always_red() -> None:
    row = one_exit({"urn": SPECIAL, "la_placed": True})
    assert "SPECIAL_NO_CONSENT" in row["flags"]
    assert row["rag_score"] == 0
    assert row["rag"] == "red"
    assert row["rag_why"] == "statutory breach"
    with_reasons = one_exit({"urn": SPECIAL, "la_placed": True}, {"sen_provision": "E"})
    assert with_reasons["rag"] == "red"
    assert with_reasons["rag_why"] == "statutory breach; has an EHC plan"
    lenient = profile_with(rag={"red_from": 100, "amber_from": 100})
    assert one_exit({"urn": SPECIAL, "la_placed": True}, profile=lenient)["rag"] == "red"
    consented = one_exit({"urn": SPECIAL, "la_placed": True, "la_consent": True})
    assert consented["rag"] == "green"


def test_previous_ehe_scores() -> None:
    exits = [
        {
            "pupil_id": "P1",
            "urn": PRIMARY,
            "exit_date": date(2024, 9, 10),
            "destination": "EHE",
            "la_notified_date": date(2024, 9, 10),
        },
        {
            "pupil_id": "P1",
            "urn": SECONDARY,
            "exit_date": MID_TERM,
            "destination": "EHE",
            "la_notified_date": MID_TERM,
        },
    ]
    out = run(exits, [pupil("P1", PRIMARY, year_group="4"), pupil("P1", SECONDARY)])
    assert out.get_column("rag_score").to_list() == [0, 2]
    assert out.get_column("rag").to_list() == ["green", "amber"]
    assert "home educated before" in out.get_column("rag_why")[1]


def test_rag_points_and_cut_offs_come_from_profile() -> None:
    heavy = profile_with(rag={"points": {"sen_support": 5}})
    row = one_exit({}, {"sen_provision": "K"}, profile=heavy)
    assert (row["rag_score"], row["rag"]) == (5, "red")
    off = profile_with(rag={"points": {"disadvantaged": 0}})
    row = one_exit({}, {"disadvantaged": True}, profile=off)
    assert (row["rag_score"], row["rag"], row["rag_why"]) == (0, "green", "")
    cut = profile_with(rag={"red_from": 2, "amber_from": 1})
    assert one_exit({}, {"sen_provision": "E"}, profile=cut)["rag"] == "red"
    assert one_exit({}, {"sen_provision": "K"}, profile=cut)["rag"] == "amber"


@pytest.mark.parametrize("destination", sorted(set(codes.DESTINATIONS) - {"EHE", "CME"}))
def test_only_ehe_and_cme_are_rated(destination: str) -> None:
    row = one_exit({"destination": destination}, {"social_care": "CPP", "sen_provision": "E"})
    assert row["rag"] is None
    assert row["rag_score"] is None
    assert row["rag_why"] is None


# --- flag_counts ---------------------------------------------------------------------------


def test_flag_counts_counts_in_window_exits_only() -> None:
    def ehe(pid: str, urn: str, day: date, **more: Any) -> dict[str, Any]:
        return {
            "pupil_id": pid,
            "urn": urn,
            "exit_date": day,
            "destination": "EHE",
            "la_notified_date": day,
            **more,
        }

    exits = [
        ehe("A1", SECONDARY, MID_TERM),
        ehe("A2", SECONDARY, AUTUMN.start),  # first day of the window
        ehe("A3", SECONDARY, AUTUMN.end),  # last day
        ehe("A4", SECONDARY, AUTUMN.start - timedelta(days=1)),  # before the window
        ehe("A5", SECONDARY, AUTUMN.end + timedelta(days=1)),  # after it
        ehe("B1", PRIMARY, MID_TERM, reason="SCHOOL_PRESSURE"),
        {
            "pupil_id": "B2",
            "urn": PRIMARY,
            "exit_date": MID_TERM,
            "destination": "CME",
            "la_notified_date": MID_TERM,
        },
    ]
    pupils = [pupil(e["pupil_id"], e["urn"], sen_provision="K") for e in exits]
    out = run(exits, pupils)
    assert out.get_column("in_window").to_list() == [True, True, True, False, False, True, True]
    assert all("EHE_VULNERABLE" in out.get_column("flags")[i] for i in range(6))
    counts = flag_counts(out).sort("urn")
    assert counts.columns == ["urn", *FLAGS]
    by_urn = {row["urn"]: row for row in counts.iter_rows(named=True)}
    assert set(by_urn) == {PRIMARY, SECONDARY}
    assert by_urn[SECONDARY]["EHE_VULNERABLE"] == 3
    assert by_urn[PRIMARY]["EHE_VULNERABLE"] == 1
    assert by_urn[PRIMARY]["SCHOOL_PRESSURE_REASON"] == 1
    assert by_urn[PRIMARY]["CME_UNKNOWN"] == 1
    assert by_urn[SECONDARY]["CME_UNKNOWN"] == 0
    assert sum(by_urn[SECONDARY][f] for f in FLAGS) == 3


def test_empty_exits() -> None:
    out = run([])
    assert out.height == 0
    assert {
        "explained",
        "why",
        "in_window",
        "special_school",
        "flags",
        "rag",
        "rag_score",
        "rag_why",
    } <= set(out.columns)
    assert flag_counts(out).height == 0


# --- joining exits to the roll ---------------------------------------------------------------


def test_pupil_on_roll_twice_at_one_school_takes_the_first_row() -> None:
    pupils = [pupil("P1", SECONDARY, sen_provision="E"), pupil("P1", SECONDARY)]
    exits = [{"pupil_id": "P1", "urn": SECONDARY, "exit_date": MID_TERM, "destination": "EHE"}]
    out = run(exits, pupils)
    assert out.height == 1
    assert out.get_column("sen_provision").to_list() == ["E"]


def dual_registered() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pupils on two rolls with different characteristics, leaving one or both."""
    pupils, exits = [], []
    pairs = [(SECONDARY, AP, "9"), (PRIMARY, SPECIAL, "5"), (NO_PHASE, SECONDARY, "9")]
    for i, (urn, other, year) in enumerate(pairs):
        pupils += [
            pupil(f"D{i}", urn, sen_provision="K", year_group=year),
            pupil(f"D{i}", other, social_care="CLA", year_group=year),
        ]
        exits += [
            {
                "pupil_id": f"D{i}",
                "urn": urn,
                "exit_date": MID_TERM,
                "destination": "EHE",
                "family_id": f"H{i}",
            },
            {
                "pupil_id": f"D{i}",
                "urn": other,
                "exit_date": MID_TERM,
                "destination": "DUAL_ENDED",
                "la_placed": True,
            },
            {"pupil_id": f"D{i}", "urn": "199999", "exit_date": MID_TERM, "destination": "CME"},
        ]
    return exits, pupils


def test_hash_collisions_fall_back_to_exact_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    """The roll join and the final-year grouping use 64-bit hashes for speed. Make every
    hash with seed 0 collide: the answers must not change."""
    exits, pupils = dual_registered()
    expected = run(exits, pupils)
    assert expected.get_column("sen_provision").to_list()[:3] == ["K", "N", None]
    real_expr_hash, real_series_hash = pl.Expr.hash, pl.Series.hash

    def expr_hash(self: pl.Expr, seed: int = 0, *args: Any, **kwargs: Any) -> pl.Expr:
        if seed == 0:
            return pl.lit(0, dtype=pl.UInt64)
        return real_expr_hash(self, seed, *args, **kwargs)

    def series_hash(self: pl.Series, seed: int = 0, *args: Any, **kwargs: Any) -> pl.Series:
        if seed == 0:
            return pl.Series(self.name, [0] * len(self), dtype=pl.UInt64)
        return real_series_hash(self, seed, *args, **kwargs)

    monkeypatch.setattr(pl.Expr, "hash", expr_hash)
    monkeypatch.setattr(pl.Series, "hash", series_hash)
    assert_frame_equal(run(exits, pupils), expected)


def test_attaches_the_pupil_at_the_school_they_left() -> None:
    exits, pupils = dual_registered()
    out = run(exits, pupils)
    assert out.height == len(exits)
    first = out.row(0, named=True)
    assert (first["sen_provision"], first["social_care"], first["family_id"]) == ("K", "none", "H0")
    second = out.row(1, named=True)
    assert (second["sen_provision"], second["social_care"]) == ("N", "CLA")
    unknown = out.row(2, named=True)  # a school with no roll: no characteristics, no final year
    assert unknown["year_group"] is None and unknown["final_year"] is None
    assert unknown["explained"] is False and "CME_UNKNOWN" in unknown["flags"]
    assert out.get_column("final_year").to_list()[3:6] == ["6", "14", None]


def test_school_context_describes_every_school_on_the_roll() -> None:
    context = school_context(frame("pupils", roll()), frame("schools", SCHOOL_ROWS)).sort("urn")
    assert context.get_column("urn").to_list() == sorted(ROLL_YEARS)
    assert context.get_column("final_year").to_list() == [
        y[-1] for _, y in sorted(ROLL_YEARS.items())
    ]
    assert context.get_column("phase").cast(pl.String).to_list() == [
        "primary",
        "secondary",
        "secondary",
        "special",
        "ap",
        None,
    ]


def test_add_rag_again_replaces_the_rating() -> None:
    """A flag added after classification (here TEMPLATED_LETTER) is rated by add_rag again."""
    out = run(
        [{"pupil_id": "P1", "urn": SECONDARY, "exit_date": MID_TERM, "destination": "EHE"}],
        [pupil("P1", SECONDARY, sen_provision="K")],
    )
    assert out.get_column("rag_score").to_list() == [1]
    flagged = out.with_columns(pl.col("flags").list.concat(pl.lit(["TEMPLATED_LETTER"])))
    again = add_rag(flagged, DEFAULT)
    assert again.columns == out.columns
    row = again.row(0, named=True)
    assert (row["rag_score"], row["rag"]) == (2, "amber")
    assert row["rag_why"] == "on SEN support, letter matches a school template"


def test_template_letters_flag_their_exits_last_and_are_rated_once() -> None:
    """An exit whose letter the letters stage put in a school-template cluster gets
    TEMPLATED_LETTER after its other flags, and its RAG counts it: the same as adding the
    flag afterwards and rating again. Without template ids no exit has the flag."""
    exits = [
        {
            "pupil_id": "P1",
            "urn": SECONDARY,
            "exit_date": MID_TERM,
            "destination": "EHE",
            "reason": "SCHOOL_PRESSURE",
            "letter_id": "L1",
        },
        {
            "pupil_id": "P2",
            "urn": SECONDARY,
            "exit_date": MID_TERM,
            "destination": "EHE",
            "letter_id": "L2",
        },
        {"pupil_id": "P3", "urn": SECONDARY, "exit_date": MID_TERM, "destination": "SCHOOL"},
    ]
    pupils = [pupil("P1", SECONDARY, sen_provision="K"), pupil("P2", SECONDARY)]
    plain = run(exits, pupils)
    assert not plain.get_column("flags").list.contains("TEMPLATED_LETTER").any()
    assert_frame_equal(run(exits, pupils, template_letters=[]), plain)
    flagged = run(exits, pupils, template_letters=["L1", "L9"])
    assert flagged.columns == plain.columns
    before, after = plain.get_column("flags").to_list(), flagged.get_column("flags").to_list()
    assert before[0] and after == [[*before[0], "TEMPLATED_LETTER"], before[1], before[2]]
    row = flagged.row(0, named=True)
    assert row["rag_score"] == plain.row(0, named=True)["rag_score"] + 1
    assert row["rag_why"].endswith("letter matches a school template")
    hit = pl.col("letter_id") == "L1"
    rated_again = add_rag(
        plain.with_columns(
            pl.when(hit)
            .then(pl.col("flags").list.concat(pl.lit(["TEMPLATED_LETTER"])))
            .otherwise(pl.col("flags"))
        ),
        DEFAULT,
    )
    assert_frame_equal(flagged, rated_again)


def test_spring_census_after_an_exit_in_a_year_with_no_later_exits() -> None:
    """The census after a November exit is next January's, even when no exit falls in that year
    (classify once built census days only for the years its exits fell in)."""
    from offroll_audit.window import spring_census_on_or_after

    dates = pl.Series([date(2021, 11, 1), date(2023, 3, 1), None])
    got = spring_census_on_or_after(dates).to_list()
    assert got == [date(2022, 1, 20), date(2024, 1, 18), None]
