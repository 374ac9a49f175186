"""Select schools for audit by the profile's rules, each with the reason in words.

A rule is one of three kinds (see thresholds/default.toml):
- count rules: a band of one outcome (ehe, unexplained, y10_loss) over this term, the last
  year or the whole history, optionally with a minimum count, a recent CUSUM signal or
  persistence over terms, and the Ofsted-style floors (min_exits, min_share);
- letter rules: a school-authored template used by several families;
- flag rules: at least N exits with a flag (e.g. a statutory breach).
"""

from __future__ import annotations

import polars as pl

from offroll_audit.problems import UsageError
from offroll_audit.profile import Profile


def rule_holds(
    columns: list[str], rule: dict, floors: dict, year_is_window: bool = False
) -> pl.Expr | None:
    """Boolean expression over the per-school frame for one rule; None when the frame lacks a
    column the rule reads (e.g. y10_loss without any Year 10 pupils, or a rule over terms on a
    single-window audit): the rule never holds. `year_is_window`: the audit is one window as
    long as a school year, whose counts are the year's (see _outcome_rule)."""
    unknown = sorted(set(rule) - RULE_KEYS)
    if unknown:  # a misspelt condition would silently weaken the rule
        raise UsageError(
            f"profile rule {rule.get('code')}: unknown setting {', '.join(unknown)} "
            f"(known: {', '.join(sorted(RULE_KEYS))})"
        )
    if "outcome" in rule:
        needed, holds = _outcome_rule(rule, floors, year_is_window)
    elif "letters_min_families" in rule:
        # Evidence-weighted: fewer families suffice on a form carrying what only the school
        # holds (UPN, tutor group, letterhead, document author or company).
        needed = ["template_families"]
        holds = pl.col("template_families") >= int(rule["letters_min_families"])
        strong = "template_families_school_only"
        if "letters_min_families_school_only" in rule and strong in columns:
            holds |= pl.col(strong) >= int(rule["letters_min_families_school_only"])
    elif "flag" in rule:
        needed = [f"flag_{rule['flag']}"]
        holds = pl.col(needed[0]) >= int(rule.get("min_count", 1))
    else:
        raise ValueError(f"rule {rule.get('code')}: needs outcome, letters_min_families or flag")
    return holds.fill_null(False) if set(needed) <= set(columns) else None


SCOPES = ("term", "year", "history")
RULE_KEYS = {
    "code",
    "explain",
    "outcome",
    "scope",
    "bands",
    "min_observed",
    "max_q",
    "max_change_p",
    "cusum_signal_within_terms",
    "min_terms_beyond_95",
    "of_last_terms",
    "letters_min_families",
    "letters_min_families_school_only",
    "flag",
    "min_count",
}


def _outcome_rule(
    rule: dict, floors: dict, year_is_window: bool = False
) -> tuple[list[str], pl.Expr]:
    """An outcome's counts judged over a scope (this term, the last year, the whole history),
    optionally also needing a CUSUM signal and persistence; every condition given must hold.

    Floors (min_exits, min_share) apply to the scope's observed count: a year's rule needs
    the exits of the year, not of the last term alone. On a single window as long as a
    school year (`year_is_window`) the window's counts are the year's: a rule over the year
    reads them (the targeted pupils' test, EHE_VULNERABLE_YEAR, would otherwise never hold
    on a one-year export), while its conditions over terms (change, CUSUM, persistence)
    still need a history and never hold.
    """
    outcome, scope = rule["outcome"], rule.get("scope", "term")
    if scope not in SCOPES:
        raise ValueError(f"rule {rule.get('code')}: scope must be one of {', '.join(SCOPES)}")
    window = scope == "term" or (scope == "year" and year_is_window)
    at = f"{outcome}_" if window else f"{outcome}_{scope}_"
    observed = pl.col(f"{at}observed")
    minimum = max(int(rule.get("min_observed", 0)), int(floors.get("min_exits", 0)))
    share = observed / pl.col(f"{outcome}_cohort").cast(pl.Float64)
    needed = [f"{at}observed", f"{outcome}_cohort"]
    holds = (observed >= minimum) & (share.fill_nan(0.0) >= float(floors.get("min_share", 0.0)))
    if "bands" in rule:
        needed.append(f"{at}band")
        holds &= pl.col(f"{at}band").is_in(rule["bands"])
    if "max_q" in rule:  # a false-discovery guard: many schools are tested at once
        needed.append(f"{at}q")
        holds &= pl.col(f"{at}q") < float(rule["max_q"])
    if "max_change_p" in rule:  # the school's own rate rose against its earlier terms
        needed.append(f"{outcome}_change_p")
        holds &= pl.col(f"{outcome}_change_p") < float(rule["max_change_p"])
    if "cusum_signal_within_terms" in rule:
        needed.append(f"{outcome}_cusum_terms_since_signal")
        since = pl.col(f"{outcome}_cusum_terms_since_signal")
        holds &= since < int(rule["cusum_signal_within_terms"])
    if "min_terms_beyond_95" in rule:
        width = int(rule.get("of_last_terms", 3))
        if width not in (3, 6):
            raise ValueError(f"rule {rule.get('code')}: of_last_terms must be 3 or 6")
        needed.append(f"{outcome}_terms_95_of_{width}")
        holds &= pl.col(f"{outcome}_terms_95_of_{width}") >= int(rule["min_terms_beyond_95"])
    return needed, holds


def select_schools(
    schools: pl.DataFrame, profile: Profile, year_is_window: bool = False
) -> pl.DataFrame:
    """Add `audit` and `audit_reasons` (rule codes, in profile order) to the school frame;
    `year_is_window`: a single window as long as a school year (_outcome_rule)."""
    select = profile.select
    floors = {"min_exits": select.get("min_exits", 0), "min_share": select.get("min_share", 0.0)}
    reasons = []
    for rule in select.get("rules", []):
        holds = rule_holds(schools.columns, rule, floors, year_is_window)
        if holds is not None:
            reasons.append(
                pl.when(holds)
                .then(pl.lit([rule["code"]]))
                .otherwise(pl.lit([], pl.List(pl.String)))
            )
    reason_list = pl.concat_list(reasons) if reasons else pl.lit([], pl.List(pl.String))
    frame = schools.with_columns(reason_list.alias("audit_reasons"))
    return frame.with_columns((pl.col("audit_reasons").list.len() > 0).alias("audit"))


def rule_text(profile: Profile) -> dict[str, str]:
    """Rule code -> the plain-English sentence the profile gives it."""
    return {r["code"]: r.get("explain", r["code"]) for r in profile.select.get("rules", [])}
