"""Select schools for audit by the profile's rules, each with the reason in words.

A rule is one of three kinds (see thresholds/default.toml):
- count rules: a band of one outcome (ehe, unexplained, y10_loss), optionally
  with a minimum count, and the Ofsted-style floors (min_exits, min_share);
- letter rules: a school-authored template used by several families;
- flag rules: at least N exits with a flag (e.g. a statutory breach).
"""

from __future__ import annotations

import polars as pl

from offroll_audit.profile import Profile


def rule_holds(columns: list[str], rule: dict, floors: dict) -> pl.Expr | None:
    """Boolean expression over the per-school frame for one rule; None when the frame lacks a
    column the rule reads (e.g. y10_loss without any Year 10 pupils): the rule never holds."""
    if "outcome" in rule:
        outcome = rule["outcome"]
        needed = [f"{outcome}_observed", f"{outcome}_band", f"{outcome}_cohort"]
        observed = pl.col(f"{outcome}_observed")
        minimum = max(int(rule.get("min_observed", 0)), int(floors.get("min_exits", 0)))
        share = observed / pl.col(f"{outcome}_cohort").cast(pl.Float64)
        holds = (
            pl.col(f"{outcome}_band").is_in(rule.get("bands", ["high_998"]))
            & (observed >= minimum)
            & (share.fill_nan(0.0) >= float(floors.get("min_share", 0.0)))
        )
    elif "letters_min_families" in rule:
        needed = ["template_families"]
        holds = pl.col("template_families") >= int(rule["letters_min_families"])
    elif "flag" in rule:
        needed = [f"flag_{rule['flag']}"]
        holds = pl.col(needed[0]) >= int(rule.get("min_count", 1))
    else:
        raise ValueError(f"rule {rule.get('code')}: needs outcome, letters_min_families or flag")
    return holds.fill_null(False) if set(needed) <= set(columns) else None


def select_schools(schools: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """Add `audit` and `audit_reasons` (rule codes, in profile order) to the school frame."""
    select = profile.select
    floors = {"min_exits": select.get("min_exits", 0), "min_share": select.get("min_share", 0.0)}
    reasons = []
    for rule in select.get("rules", []):
        holds = rule_holds(schools.columns, rule, floors)
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
