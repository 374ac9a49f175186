"""Classify every exit as explained or unexplained, flag the children an officer
must follow up, and RAG-rate each EHE and CME exit.

All rules come from the profile (`[classification]`, `[flags]`, `[rag]`) so an
LA can change them, and every flag carries one plain-English sentence that a
pack can print. Everything is vectorised over the exits frame.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from offroll_audit import codes
from offroll_audit.profile import Profile
from offroll_audit.window import Window, census_day

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
    "SCHOOL_PRESSURE_REASON": "the parent's reason points at the school (pressure or risk of exclusion)",
    "CME_UNKNOWN": "whereabouts unknown: a welfare check is due",
    "TEMPLATED_LETTER": "the parent's letter matches a template that points to the school",
}
FLAGS = list(FLAG_TEXT)

PUPIL_FIELDS = [
    "year_group", "sen_provision", "disadvantaged", "social_care", "sen_need",
    "attendance", "suspensions",
]  # fmt: skip


def attach_pupils(exits: pl.DataFrame, pupils: pl.DataFrame) -> pl.DataFrame:
    """Each exit with the characteristics of that pupil at that school."""
    fields = pupils.select("pupil_id", "urn", *PUPIL_FIELDS, pl.col("family_id").alias("_pupil_family"))
    joined = exits.join(fields.unique(["pupil_id", "urn"], keep="first"), on=["pupil_id", "urn"], how="left", maintain_order="left")
    return joined.with_columns(
        pl.coalesce("family_id", "_pupil_family").alias("family_id")
    ).drop("_pupil_family")


def school_context(pupils: pl.DataFrame, schools: pl.DataFrame) -> pl.DataFrame:
    """Per school: its final year group (from its roll) and phase (from schools.csv)."""
    final = pupils.group_by("urn").agg(
        pl.col("year_group").to_physical().max().alias("_final_year_index")
    )
    final = final.with_columns(
        pl.col("_final_year_index").replace_strict(dict(enumerate(codes.YEAR_GROUPS)), return_dtype=pl.String)
        .alias("final_year")
    ).drop("_final_year_index")
    return final.join(schools.select("urn", "phase", "trust"), on="urn", how="left")


def classify_exits(exits: pl.DataFrame, pupils: pl.DataFrame, schools: pl.DataFrame,
                   window: Window, profile: Profile) -> pl.DataFrame:  # fmt: skip
    """Every exit with explained, why, flags (list of codes), rag and rag_why."""
    rules = profile.classification
    frame = attach_pupils(exits, pupils).join(school_context(pupils, schools), on="urn", how="left", maintain_order="left")
    frame = frame.with_columns(
        pl.col("exit_date").is_between(window.start, window.end).alias("in_window"),
        (pl.col("phase").cast(pl.String) == "special").fill_null(False)
        .or_(pl.col("phase").is_null() & pl.col("la_placed").fill_null(False)).alias("special_school"),
    )
    frame = frame.with_columns(*_explained(frame, rules))
    frame = frame.with_columns(_flags(frame, profile).alias("flags"))
    frame = add_rag(frame, profile)
    return frame


def _explained(frame: pl.DataFrame, rules: dict) -> list[pl.Expr]:
    destination = pl.col("destination").cast(pl.String)
    final_year_exit = (
        (pl.col("year_group").cast(pl.String) == pl.col("final_year"))
        & pl.col("exit_date").dt.month().is_in(rules.get("final_year_months", [6, 7, 8]))
    ).fill_null(False)
    address = pl.col("address_changed").fill_null(False)
    school_move_ok = rules.get("school_move_explained_if_address_changed", True)
    explained = (
        pl.when(final_year_exit).then(True)
        .when(destination == "SCHOOL").then(address & pl.lit(school_move_ok))
        .otherwise(destination.is_in(rules.get("explained", [])))
    )  # fmt: skip
    why = (
        pl.when(final_year_exit)
        .then(pl.lit("normal transition: left at the end of the school's final year group"))
        .when((destination == "SCHOOL") & address & pl.lit(school_move_ok))
        .then(pl.lit("moved to another school after the family moved house"))
        .otherwise(destination.replace_strict(DESTINATION_WHY, default="other"))
    )
    return [explained.alias("explained"), why.alias("why")]


def january_census_after(exit_dates: pl.Series) -> pl.Series:
    """The spring (January) census day on or after each date."""
    years = sorted(set(exit_dates.dt.year().drop_nulls().to_list()))
    days = {y: census_day(f"{y}-SPR") for y in [*years, (years[-1] + 1 if years else 2000)]}
    same_year = exit_dates.dt.year().replace_strict(days, default=None, return_dtype=pl.Date)
    next_year = (exit_dates.dt.year() + 1).replace_strict(days, default=None, return_dtype=pl.Date)
    return pl.select(pl.when(exit_dates <= same_year).then(same_year).otherwise(next_year)).to_series()


def school_days_between(start: pl.Series, end: pl.Series) -> np.ndarray:
    """Weekdays from start to end (numpy busday_count); null where either is missing."""
    valid = (start.is_not_null() & end.is_not_null()).to_numpy()
    result = np.full(len(start), np.nan)
    if valid.any():
        s = start.filter(valid).to_numpy().astype("datetime64[D]")
        e = end.filter(valid).to_numpy().astype("datetime64[D]")
        result[valid] = np.busday_count(s, e)
    return result


def _flags(frame: pl.DataFrame, profile: Profile) -> pl.Series:
    f = profile.flags
    dest = pl.col("destination").cast(pl.String)
    ehe, unexplained = dest == "EHE", ~pl.col("explained")
    vulnerable = (
        pl.col("sen_provision").cast(pl.String).is_in(f.get("vulnerable_sen", ["K", "E"]))
        | pl.col("social_care").cast(pl.String).is_in(f.get("vulnerable_social_care", ["CIN", "CPP", "CLA"]))
        | (pl.col("disadvantaged") & pl.lit(f.get("vulnerable_if_disadvantaged", True)))
    ).fill_null(False)
    census = january_census_after(frame.get_column("exit_date"))
    days_to_census = (pl.lit(census) - pl.col("exit_date")).dt.total_days()
    notified = school_days_between(frame.get_column("exit_date"), frame.get_column("la_notified_date"))
    notification_recorded = frame.get_column("la_notified_date").is_not_null().any()
    late = pl.lit(notified) > f.get("late_notification_school_days", 5)
    late = (late.fill_null(True) | pl.col("la_notified_date").is_null()) if notification_recorded else pl.lit(False)
    since_suspension = (pl.col("exit_date") - pl.col("last_suspension_date")).dt.total_days()
    weeks_back = (pl.col("returned_date") - pl.col("exit_date")).dt.total_days() / 7
    conditions = {
        "EHE_VULNERABLE": ehe & vulnerable,
        "SPECIAL_NO_CONSENT": ehe & pl.col("special_school") & pl.col("la_placed").fill_null(False)
        & ~pl.col("la_consent").fill_null(False),
        "KS4_PRE_CENSUS": unexplained
        & pl.col("year_group").cast(pl.String).is_in(f.get("pre_census_years", ["10", "11"]))
        & days_to_census.is_between(0, f.get("pre_census_days", 120)),
        "AFTER_SUSPENSION": unexplained & since_suspension.is_between(0, f.get("after_suspension_days", 30)),
        "LOW_ATTENDANCE": unexplained & (pl.col("attendance") < f.get("persistent_absence_below", 0.9)),
        "LATE_NOTIFICATION": unexplained & late,
        "RETURNED_QUICKLY": ehe & weeks_back.is_between(0, f.get("returned_within_weeks", 12)),
        "SCHOOL_PRESSURE_REASON": ehe & pl.col("reason").cast(pl.String).is_in(
            f.get("pressure_reasons", ["RISK_OF_EXCLUSION", "SCHOOL_PRESSURE"])
        ),
        "CME_UNKNOWN": dest == "CME",
    }
    flags = pl.concat_list(
        [pl.when(cond.fill_null(False)).then(pl.lit([code])).otherwise(pl.lit([], dtype=pl.List(pl.String)))
         for code, cond in conditions.items()]
    )  # fmt: skip
    return frame.select(flags.alias("flags")).to_series()


def add_rag(frame: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Red/amber/green for EHE and CME exits from the profile's risk points, with reasons."""
    rag = profile.rag
    points = rag.get("points", {})
    f = profile.flags
    frame = _with_first_ehe(frame)
    previous_ehe = pl.col("_first_ehe") < pl.col("exit_date")
    factors = {
        "social_care_cpp_or_cla": (pl.col("social_care").cast(pl.String).is_in(["CPP", "CLA"]),
                                   "on a child protection plan or looked after"),
        "social_care_cin": (pl.col("social_care").cast(pl.String) == "CIN", "a child in need"),
        "ehc_plan": (pl.col("sen_provision").cast(pl.String) == "E", "has an EHC plan"),
        "sen_support": (pl.col("sen_provision").cast(pl.String) == "K", "on SEN support"),
        "severe_absence": (pl.col("attendance") < f.get("severe_absence_below", 0.5), "severely absent"),
        "persistent_absence": (pl.col("attendance").is_between(f.get("severe_absence_below", 0.5),
                               f.get("persistent_absence_below", 0.9), closed="left"), "persistently absent"),
        "repeated_suspensions": (pl.col("suspensions") >= 2, "suspended two or more times"),
        "disadvantaged": (pl.col("disadvantaged"), "disadvantaged"),
        "previous_ehe": (previous_ehe, "home educated before"),
        "school_pressure_reason": (pl.col("flags").list.contains("SCHOOL_PRESSURE_REASON"),
                                   "reason points at the school"),
        "after_suspension": (pl.col("flags").list.contains("AFTER_SUSPENSION"), "left soon after a suspension"),
        "cme_unknown": (pl.col("destination").cast(pl.String) == "CME", "whereabouts unknown"),
        "templated_letter": (pl.col("flags").list.contains("TEMPLATED_LETTER"), "letter matches a school template"),
    }  # fmt: skip
    used = {k: v for k, v in factors.items() if points.get(k, 0)}
    score = pl.sum_horizontal([pl.when(cond.fill_null(False)).then(points[k]).otherwise(0)
                               for k, (cond, _) in used.items()])  # fmt: skip
    reasons = pl.concat_list([pl.when(cond.fill_null(False)).then(pl.lit([text]))
                              .otherwise(pl.lit([], dtype=pl.List(pl.String)))
                              for cond, text in used.values()]).list.join(", ")  # fmt: skip
    rated = pl.col("destination").cast(pl.String).is_in(["EHE", "CME"])
    always_red = pl.col("flags").list.contains("SPECIAL_NO_CONSENT")
    level = (
        pl.when(~rated).then(None)
        .when(always_red | (pl.col("rag_score") >= rag.get("red_from", 4))).then(pl.lit("red"))
        .when(pl.col("rag_score") >= rag.get("amber_from", 2)).then(pl.lit("amber"))
        .otherwise(pl.lit("green"))
    )  # fmt: skip
    frame = frame.with_columns(
        pl.when(rated).then(score).alias("rag_score"),
        pl.when(rated).then(reasons).alias("rag_why"),
    )
    frame = frame.with_columns(level.alias("rag"))
    return frame.with_columns(
        pl.when(always_red).then(pl.concat_str(pl.lit("statutory breach; "), pl.col("rag_why")))
        .otherwise(pl.col("rag_why")).alias("rag_why")
    ).drop("_first_ehe")


def _with_first_ehe(frame: pl.DataFrame) -> pl.DataFrame:
    """Add each pupil's first EHE exit date anywhere in the data (for "home educated before")."""
    first = frame.filter(pl.col("destination") == "EHE").group_by("pupil_id").agg(
        pl.col("exit_date").min().alias("_first_ehe")
    )
    return frame.join(first, on="pupil_id", how="left", maintain_order="left")


def flag_counts(exits: pl.DataFrame) -> pl.DataFrame:
    """Per school, how many in-window exits carry each flag."""
    counted = exits.filter(pl.col("in_window"))
    return counted.group_by("urn").agg(
        [pl.col("flags").list.contains(code).sum().alias(code) for code in FLAGS]
    )
