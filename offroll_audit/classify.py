"""Classify every exit as explained or unexplained, flag the children an officer
must follow up, and RAG-rate each EHE and CME exit.

All rules come from the profile (`[classification]`, `[flags]`, `[rag]`) so an
LA can change them, and every flag carries one plain-English sentence that a
pack can print. Everything is vectorised over the exits frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from offroll_audit import codes
from offroll_audit.profile import Profile
from offroll_audit.window import Window, spring_census_on_or_after

DESTINATION_WHY = {
    "EHE": "left for elective home education: not explained by a family move",
    "SCHOOL": "moved to another mainstream school without a change of address",
    "SPECIAL": "moved to a special school",
    "AP": "moved to alternative provision without a permanent exclusion",
    "INDEPENDENT": "moved to an independent school (cannot be told apart from other routes)",
    "MOVED_AWAY": "the family moved out of reach of the school",
    "EMIGRATED": "the family left England",
    "CME": "whereabouts unknown after enquiries (child missing education)",
    "PERM_EXCLUSION": "permanently excluded: a formal, reviewable decision",
    "CUSTODY": "detained under a sentence",
    "DECEASED": "the pupil died",
    "END_OF_EDUCATION": "reached the end of compulsory education",
    "DUAL_ENDED": "a dual registration ended; the pupil stays on another roll",
    "OTHER": "left for another reason the return did not specify",
}

FLAG_TEXT = {
    "EHE_VULNERABLE": "left for home education with SEN, disadvantage or a social-care plan",
    "SPECIAL_NO_CONSENT": "LA-placed pupil deleted from a special school for home education "
    "with no LA consent recorded: a statutory breach",
    "KS4_PRE_CENSUS": "Year 10-11 pupil left in the months before the January census that decides "
    "whose results count",
    "AFTER_SUSPENSION": "left soon after a suspension",
    "LOW_ATTENDANCE": "attendance below the persistent-absence line before leaving",
    "LATE_NOTIFICATION": "the LA was told late, or not at all, of the deletion",
    "RETURNED_QUICKLY": "back on a school roll within weeks of going into home education",
    "SCHOOL_PRESSURE_REASON": "the parent's reason points at the school "
    "(pressure or risk of exclusion)",
    "CME_UNKNOWN": "whereabouts unknown: a welfare check is due",
    "TEMPLATED_LETTER": "the parent's letter matches a template that points to the school",
}
FLAGS = list(FLAG_TEXT)

PUPIL_FIELDS = [
    "year_group",
    "sen_provision",
    "disadvantaged",
    "social_care",
    "sen_need",
    "attendance",
    "suspensions",
    "on_roll_from",
    "on_roll_to",
]
KEYS = ["pupil_id", "urn"]
NO_CODES = pl.List(pl.String())


def attach_pupils(exits: pl.DataFrame, pupils: pl.DataFrame) -> pl.DataFrame:
    """Each exit with the characteristics of that pupil at that school (first roll row), and
    `pupil_line`: that row's line in the pupils file (null when the pupil is not on the roll).

    A national roll has millions of rows and only a few percent of pupils leave, so the
    roll is first cut to the pupils who have an exit (a test on a hash of the id, by the
    streaming engine, which uses every core), then
    joined on a hash of (pupil_id, urn). Hashes only make it fast: every match is checked
    against the real keys, and any doubt (a collision, or a pupil on the roll twice at
    one school) falls back to the exact join on the keys themselves.
    """
    exits = exits.drop(PUPIL_FIELDS, "pupil_line", strict=False)
    wanted = exits.get_column("pupil_id").hash(seed=0).unique().implode()
    fields = (
        pupils.lazy()
        .select(
            *KEYS,
            *PUPIL_FIELDS,
            pl.col("line").alias("pupil_line"),
            pl.col("family_id").alias("_pupil_family"),
        )
        .filter(pl.col("pupil_id").hash(seed=0).is_in(wanted))
        .collect(engine="streaming")
    )
    key = pl.struct(KEYS).hash(seed=0).alias("_key")
    right = fields.select(
        key, pl.col("pupil_id").alias("_pid"), pl.col("urn").alias("_urn"), pl.exclude(KEYS)
    )
    joined = exits.with_columns(key).join(right, on="_key", how="left", maintain_order="left")
    same = ((pl.col("_pid") == pl.col("pupil_id")) & (pl.col("_urn") == pl.col("urn"))).or_(
        pl.col("_pid").is_null()
    )
    if joined.height == exits.height and joined.select(same.all()).item():
        joined = joined.drop("_key", "_pid", "_urn")
    else:
        fields = fields.unique(KEYS, keep="first", maintain_order=True)
        joined = exits.join(fields, on=KEYS, how="left", maintain_order="left")
    return joined.with_columns(pl.coalesce("family_id", "_pupil_family").alias("family_id")).drop(
        "_pupil_family"
    )


def school_context(
    pupils: pl.DataFrame, schools: pl.DataFrame, urns: pl.Series | None = None
) -> pl.DataFrame:
    """Per school (each of `urns`; default every school on the roll): its final year group
    (the highest year on its roll), phase and trust (from schools.csv). Polars' streaming
    engine groups millions of roll rows by URN on every core (in memory it took twice as long)."""
    urns = (pupils.get_column("urn") if urns is None else urns).unique().to_frame("urn")
    final = (
        pupils.lazy()
        .group_by("urn")
        .agg(pl.col("year_group").to_physical().max().alias("_year"))
        .collect(engine="streaming")
    )
    final = urns.join(final, on="urn", how="left").select(
        "urn",
        pl.col("_year")
        .replace_strict(dict(enumerate(codes.YEAR_GROUPS)), return_dtype=pl.String)
        .alias("final_year"),
    )
    return final.join(schools.select("urn", "phase", "trust"), on="urn", how="left")


def classify_exits(
    exits: pl.DataFrame,
    pupils: pl.DataFrame,
    schools: pl.DataFrame,
    window: Window,
    profile: Profile,
    template_letters: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Every exit with explained, why, flags (list of codes), rag and rag_why.

    `template_letters`: ids of the letters the letters stage found in a school-template
    cluster; an exit whose letter_id is one of them is flagged TEMPLATED_LETTER (none
    when not given)."""
    rules = profile.classification
    context = school_context(pupils, schools, exits.get_column("urn"))
    frame = attach_pupils(exits, pupils).join(context, on="urn", how="left", maintain_order="left")
    frame = frame.with_columns(
        pl.col("exit_date").is_between(window.start, window.end).alias("in_window"),
        (pl.col("phase").cast(pl.String) == "special")
        .fill_null(False)
        .or_(pl.col("phase").is_null() & pl.col("la_placed").fill_null(False))
        .alias("special_school"),
    )
    frame = frame.with_columns(*_explained(rules))
    frame = frame.with_columns(_replace_codes(frame.get_column("why"), WHY_TEXT, pl.String()))
    frame = frame.with_columns(_flags(frame, profile, template_letters).alias("flags"))
    return add_rag(frame, profile)


def _explained(rules: dict) -> list[pl.Expr]:
    """`explained` and `why`. The sentence is picked by a small integer key (a destination's
    index, or one of the special cases below) and looked up once, not built per row."""
    destination = pl.col("destination").cast(codes.Destination)
    final_year_exit = (
        (pl.col("year_group").cast(pl.String) == pl.col("final_year"))
        & pl.col("exit_date").dt.month().is_in(rules.get("final_year_months", [6, 7, 8]))
    ).fill_null(False)
    school = destination == "SCHOOL"
    address = pl.col("address_changed").fill_null(False)
    school_move_ok = pl.lit(rules.get("school_move_explained_if_address_changed", True))
    explained = (
        pl.when(final_year_exit)
        .then(True)
        .when(school)
        .then(address & school_move_ok)
        .otherwise(destination.cast(pl.String).is_in(rules.get("explained", [])))
    )
    why_key = (
        pl.when(final_year_exit)
        .then(WHY_FINAL_YEAR)
        .when(school & address & school_move_ok)
        .then(WHY_MOVED_HOUSE)
        .when(school & address)
        .then(WHY_MOVE_NOT_COUNTED)
        .otherwise(destination.to_physical().cast(pl.Int32))
    )
    return [explained.alias("explained"), why_key.alias("why")]


WHY_FINAL_YEAR, WHY_MOVED_HOUSE, WHY_MOVE_NOT_COUNTED = -1, -2, -3
WHY_TEXT = {
    **{i: DESTINATION_WHY[code] for i, code in enumerate(codes.DESTINATIONS)},
    WHY_FINAL_YEAR: "normal transition: left at the end of the school's final year group",
    WHY_MOVED_HOUSE: "moved to another school after the family moved house",
    WHY_MOVE_NOT_COUNTED: "moved to another mainstream school; this profile does not count a "
    "house move as explaining it",
}


def school_days_between(start: pl.Series, end: pl.Series) -> np.ndarray:
    """School days (Monday to Friday) after `start` up to and including `end`; NaN where
    either date is missing, negative when `end` is before `start`.

    A deletion on a Friday notified the next Friday is 5 school days late; weekends
    never count, whichever day of the week either date falls on. Vectorised with
    numpy's busday_count, which counts [a, b): shifting both ends by a day gives (start, end].
    """
    valid = (start.is_not_null() & end.is_not_null()).to_numpy()
    result = np.full(len(start), np.nan)
    if valid.any():
        one_day = np.timedelta64(1, "D")
        s = start.filter(valid).to_numpy().astype("datetime64[D]") + one_day
        e = end.filter(valid).to_numpy().astype("datetime64[D]") + one_day
        result[valid] = np.busday_count(s, e)
    return result


def _bitmask(conditions: list[pl.Expr]) -> pl.Expr:
    """One integer per row with bit i set where conditions[i] holds (null = false).

    Rows then share a handful of distinct masks, so turning masks into lists or
    sentences is a lookup over those few values, not work per row.
    """
    if not conditions:
        return pl.lit(0, dtype=pl.Int64)
    return pl.sum_horizontal(
        [cond.fill_null(False).cast(pl.Int64) * (1 << i) for i, cond in enumerate(conditions)]
    )


def _replace_codes(keys: pl.Series, lookup: dict[int, Any], dtype: pl.DataType) -> pl.Series:
    """Each integer key replaced by its value in `lookup` (which holds every key that occurs)."""
    if keys.is_empty():
        return pl.Series(keys.name, [], dtype=dtype)
    return keys.replace_strict(lookup, return_dtype=dtype)


def _mask_lookup(masks: pl.Series, labels: list[str]) -> dict[int, list[str]]:
    """The labels whose bits are set, for each mask that occurs."""
    return {
        mask: [label for i, label in enumerate(labels) if mask >> i & 1]
        for mask in masks.unique().to_list()
    }


def vulnerable_pupil(flags: dict[str, Any]) -> pl.Expr:
    """A pupil the profile counts as vulnerable ([flags]: SEN provision, social care, and
    disadvantage if vulnerable_if_disadvantaged), on a frame with those columns."""
    return (
        pl.col("sen_provision").cast(pl.String).is_in(flags.get("vulnerable_sen", ["K", "E"]))
        | pl.col("social_care")
        .cast(pl.String)
        .is_in(flags.get("vulnerable_social_care", ["CIN", "CPP", "CLA"]))
        | (pl.col("disadvantaged") & pl.lit(flags.get("vulnerable_if_disadvantaged", True)))
    ).fill_null(False)


def _flags(
    frame: pl.DataFrame, profile: Profile, template_letters: Iterable[str] | None = None
) -> pl.Series:
    f = profile.flags
    dest = pl.col("destination").cast(pl.String)
    ehe, unexplained = dest == "EHE", ~pl.col("explained")
    vulnerable = vulnerable_pupil(f)
    census = spring_census_on_or_after(frame.get_column("exit_date"))
    days_to_census = (pl.lit(census) - pl.col("exit_date")).dt.total_days()
    notified = school_days_between(
        frame.get_column("exit_date"), frame.get_column("la_notified_date")
    )
    # LATE_NOTIFICATION: more than N school days after the deletion, or never. When no
    # exit at all carries a notification date the LA did not supply the column, and a
    # blank means "unknown", not "never".
    notification_recorded = frame.get_column("la_notified_date").is_not_null().any()
    late = (pl.lit(notified) > f.get("late_notification_school_days", 5)) | pl.col(
        "la_notified_date"
    ).is_null()
    if not notification_recorded:
        late = pl.lit(False)
    # Below the persistent-absence line (0.9), which also covers severe absence (0.5).
    low_attendance = max(f.get("persistent_absence_below", 0.9), f.get("severe_absence_below", 0.5))
    since_suspension = (pl.col("exit_date") - pl.col("last_suspension_date")).dt.total_days()
    days_back = (pl.col("returned_date") - pl.col("exit_date")).dt.total_days()
    templated = (
        pl.lit(False)
        if template_letters is None
        else pl.col("letter_id").is_in(pl.Series(list(template_letters), dtype=pl.String).implode())
    )
    conditions = {
        "EHE_VULNERABLE": ehe & vulnerable,
        "SPECIAL_NO_CONSENT": ehe
        & pl.col("special_school")
        & pl.col("la_placed").fill_null(False)
        & ~pl.col("la_consent").fill_null(False),
        "KS4_PRE_CENSUS": unexplained
        & pl.col("year_group").cast(pl.String).is_in(f.get("pre_census_years", ["10", "11"]))
        & days_to_census.is_between(0, f.get("pre_census_days", 120)),
        "AFTER_SUSPENSION": unexplained
        & since_suspension.is_between(0, f.get("after_suspension_days", 30)),
        "LOW_ATTENDANCE": unexplained & (pl.col("attendance") < low_attendance),
        "LATE_NOTIFICATION": unexplained & late,
        "RETURNED_QUICKLY": ehe & days_back.is_between(0, 7 * f.get("returned_within_weeks", 12)),
        "SCHOOL_PRESSURE_REASON": ehe
        & pl.col("reason")
        .cast(pl.String)
        .is_in(f.get("pressure_reasons", ["RISK_OF_EXCLUSION", "SCHOOL_PRESSURE"])),
        "CME_UNKNOWN": dest == "CME",
        "TEMPLATED_LETTER": templated,
    }
    masks = frame.select(_bitmask(list(conditions.values())).alias("flags")).to_series()
    lookup = _mask_lookup(masks, list(conditions))
    return _replace_codes(masks, lookup, NO_CODES)


def _rag_factors(flags: dict[str, Any]) -> dict[str, tuple[pl.Expr, str]]:
    """Each risk factor the profile can give points to: its test and its plain words."""
    severe = flags.get("severe_absence_below", 0.5)
    persistent = flags.get("persistent_absence_below", 0.9)
    social_care = pl.col("social_care").cast(pl.String)
    sen = pl.col("sen_provision").cast(pl.String)
    has_flag = pl.col("flags").list.contains
    return {
        "social_care_cpp_or_cla": (
            social_care.is_in(["CPP", "CLA"]),
            "on a child protection plan or looked after",
        ),
        "social_care_cin": (social_care == "CIN", "a child in need"),
        "ehc_plan": (sen == "E", "has an EHC plan"),
        "sen_support": (sen == "K", "on SEN support"),
        "severe_absence": (pl.col("attendance") < severe, "severely absent"),
        "persistent_absence": (
            pl.col("attendance").is_between(severe, persistent, closed="left"),
            "persistently absent",
        ),
        "repeated_suspensions": (pl.col("suspensions") >= 2, "suspended two or more times"),
        "disadvantaged": (pl.col("disadvantaged"), "disadvantaged"),
        "previous_ehe": (pl.col("_first_ehe") < pl.col("exit_date"), "home educated before"),
        "school_pressure_reason": (
            has_flag("SCHOOL_PRESSURE_REASON"),
            "reason points at the school",
        ),
        "after_suspension": (has_flag("AFTER_SUSPENSION"), "left soon after a suspension"),
        "cme_unknown": (pl.col("destination").cast(pl.String) == "CME", "whereabouts unknown"),
        "templated_letter": (has_flag("TEMPLATED_LETTER"), "letter matches a school template"),
    }


def add_rag(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Red/amber/green for EHE and CME exits from the profile's risk points, with reasons.

    rag_score is the sum of the points of the factors present; red from `red_from`,
    amber from `amber_from`, else green. SPECIAL_NO_CONSENT is always red (a statutory
    breach). Exits to anywhere else have null rag, rag_score and rag_why.

    Only EHE and CME exits are rated. Their factors become one bitmask per exit; the
    score, level and sentence of each distinct mask are worked out once.
    """
    rag = profile.rag
    points = rag.get("points", {})
    red_from, amber_from = rag.get("red_from", 4), rag.get("amber_from", 2)
    used = [
        (points[key], cond, text)
        for key, (cond, text) in _rag_factors(profile.flags).items()
        if points.get(key, 0)
    ]
    breach = pl.col("flags").list.contains("SPECIAL_NO_CONSENT")
    rated = pl.col("destination").cast(pl.String).is_in(["EHE", "CME"]).fill_null(False)
    frame = frame.drop("rag_score", "rag_why", "rag", strict=False).with_row_index("_row")
    subset = _with_first_ehe(frame.filter(rated))
    masks = subset.select(_bitmask([*(cond for _, cond, _ in used), breach])).to_series()
    ratings: dict[int, tuple[float, str, str]] = {}  # mask -> score, sentence, level
    for mask in masks.unique().to_list():
        present = [i for i in range(len(used)) if mask >> i & 1]
        score = sum(used[i][0] for i in present)
        is_breach = bool(mask >> len(used) & 1)
        level = (
            "red" if is_breach or score >= red_from else "amber" if score >= amber_from else "green"
        )
        sentence = _rag_sentence([used[i][2] for i in present], breach=is_breach)
        ratings[mask] = (score, sentence, level)
    integral = all(isinstance(p, int) for p, _, _ in used)
    dtypes = {
        "rag_score": pl.Int32() if integral else pl.Float64(),
        "rag_why": pl.String(),
        "rag": pl.String(),
    }
    rated_columns = pl.DataFrame(
        [subset.get_column("_row")]
        + [
            _replace_codes(masks, {m: r[i] for m, r in ratings.items()}, dtype).alias(name)
            for i, (name, dtype) in enumerate(dtypes.items())
        ]
    )
    return frame.join(rated_columns, on="_row", how="left", maintain_order="left").drop("_row")


def _rag_sentence(reasons: list[str], *, breach: bool) -> str:
    text = ", ".join(reasons)
    if not breach:
        return text
    return f"statutory breach; {text}" if text else "statutory breach"


def _with_first_ehe(frame: pl.DataFrame) -> pl.DataFrame:
    """Add each pupil's first EHE exit date anywhere in the data (for "home educated before")."""
    first = (
        frame.filter(pl.col("destination") == "EHE")
        .group_by("pupil_id")
        .agg(pl.col("exit_date").min().alias("_first_ehe"))
    )
    return frame.join(first, on="pupil_id", how="left", maintain_order="left")


def flag_counts(exits: pl.DataFrame) -> pl.DataFrame:
    """Per school, how many in-window exits carry each flag."""
    counted = exits.filter(pl.col("in_window"))
    return counted.group_by("urn").agg(
        [pl.col("flags").list.contains(code).sum().alias(code) for code in FLAGS]
    )
