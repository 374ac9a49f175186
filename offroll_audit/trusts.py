"""The trust roll-up: a trust's schools together, against a reference level and their own.

For a trust (`--trust NAME` on an LA's data, or every school of data that hold one trust's
schools only) it gives, for exits to home education and unexplained exits:

- the trust line, overall and by phase: observed, expected at the *reference* level (the
  LA's own rates on LA data; its published rate with --la-rates; else the national level),
  the ratio and its exact 95% interval. This is the check a self-review needs: judged
  against its own level, a trust whose every school off-rolls looks normal;
- the trust's own level against that reference (the robust self-review estimate:
  self_review.estimate_level), and each school ranked twice: against the level of the
  trust's other schools, and against the reference.

It reads the audit's tested frames and returns plain dicts for results.json (`trusts`);
the overview's Trust sheet (workbooks/trust.py) is a view of them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from offroll_audit import self_review
from offroll_audit import significance as stats

if TYPE_CHECKING:
    from offroll_audit.audit import AuditResult, OutcomeResult

OUTCOMES = ("ehe", "unexplained")
REFERENCE_TEXT = {
    "la": "the LA's own rates (the local baseline, fitted on all its schools)",
    "anchored": "the published rate of the schools' LA (--la-rates)",
    "national": "the national level",
    "file": "the baseline file",
}
RANKED = ("expected", "ratio", "p", "band", "shrunken_ratio")


def trust_name(result: AuditResult) -> str | None:
    """The trust to roll up: --trust NAME as the data spell it, or the one trust every
    reported school belongs to; None when neither applies."""
    trusts = result.schools.get_column("trust")
    if result.options.trust:
        wanted = result.options.trust.lower()
        found = [t for t in trusts.drop_nulls().unique().sort().to_list() if t.lower() == wanted]
        return found[0] if found else None
    if result.schools.height and not trusts.null_count() and trusts.n_unique() == 1:
        return trusts[0]
    return None


def trusts_block(result: AuditResult) -> list[dict[str, Any]]:
    """results.json `trusts`: the roll-up of the trust found by trust_name (or nothing)."""
    name = trust_name(result)
    if name is None:
        return []
    members = result.schools.filter(pl.col("trust") == name)
    block: dict[str, Any] = {
        "trust": name,
        "schools": members.height,
        "pupils": int(members.get_column("pupils").sum()),
    }
    ranking: dict[str, dict[str, Any]] = {
        urn: {"urn": urn, "name": school, "phase": _text(phase), "audit": bool(audit)}
        for urn, school, phase, audit in members.select("urn", "name", "phase", "audit").rows()
    }
    for outcome in OUTCOMES:
        if outcome in result.outcomes:
            block[outcome] = outcome_rollup(result, result.outcomes[outcome], members, ranking)
    block["reference"] = next(
        (block[o]["reference"] for o in OUTCOMES if o in block), {"kind": None, "text": ""}
    )
    order = sorted(ranking.values(), key=lambda s: _rank_key(s, "ehe"))
    block["ranking"] = order
    block["cannot_tell"] = self_review.CANNOT_TELL
    block["summary"] = summary_sentence(block)
    return [block]


def outcome_rollup(
    result: AuditResult,
    outcome: OutcomeResult,
    members: pl.DataFrame,
    ranking: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One outcome's trust lines, own level and per-school comparisons (into `ranking`)."""
    tested = outcome.schools
    kind, text, reference = reference_of(result, outcome)
    urns = members.get_column("urn")
    mine = tested.filter(pl.col("urn").is_in(urns.implode())).join(
        reference.rename({"expected": "_reference"}), on="urn", how="left"
    )
    review = outcome.baseline.self_review
    # a self-review with a level of its own (not anchored) judged the schools against it
    levelled = review is not None and review.level.how != "anchored"
    if levelled and review and set(urns.to_list()) >= set(tested["urn"].to_list()):
        level, own = review.level, mine  # the trust is the data: its level is the audit's
    else:
        level, own = own_level(result, mine, outcome)
    against, alpha = mine, outcome.overdispersion  # the audit's, unless it was levelled
    if levelled and review is not None:
        given = review.level.overdispersion
        against, alpha = reference_tests(result, tested, reference, given)
        against = against.filter(pl.col("urn").is_in(urns.implode()))
    _add_ranks(ranking, outcome.outcome, "own", own)
    _add_ranks(ranking, outcome.outcome, "reference", against)
    for urn, observed in mine.select("urn", "observed").rows():
        ranking[urn].setdefault(outcome.outcome, {})["observed"] = int(observed)
    lines = trust_lines(mine.join(members.select("urn", "phase", "pupils"), on="urn"))
    return {
        "reference": {"kind": kind, "text": text},
        "reference_alpha": _number(0.0 if result.options.method == "poisson" else alpha.alpha),
        "all": lines.pop("all"),
        "by_phase": lines,
        "own_level": level.as_dict(),
        "own_level_note": (
            "the level of the trust's own schools against the reference, estimated robustly "
            "(schools beyond chance set aside)"
            if level.how == "estimated"  # too_few here, national where it is the audit's
            else "too few schools or exits in the trust to estimate its own level: it leans on "
            "the reference"
        ),
    }


def reference_of(result: AuditResult, outcome: OutcomeResult) -> tuple[str, str, pl.DataFrame]:
    """The reference yardstick: its kind, words, and each school's expected count at it."""
    baseline = outcome.baseline
    if baseline.self_review is not None:
        review = baseline.self_review
        words = REFERENCE_TEXT[review.reference_kind]
        if review.reference_kind == "national":
            words += f" ({review.shape})"
        return review.reference_kind, words, review.reference
    expected = outcome.schools.select("urn", "expected")
    if baseline.kind == "local":
        return "la", REFERENCE_TEXT["la"], expected
    return "file", f"{REFERENCE_TEXT['file']} ({baseline.source})", expected


def own_level(
    result: AuditResult, mine: pl.DataFrame, outcome: OutcomeResult
) -> tuple[self_review.Level, pl.DataFrame]:
    """The trust's own robust level against the reference, and its schools tested against
    the level of the trust's other schools (`how` too_few: it leans on the reference)."""
    settings = result.options.profile.statistics
    o = mine.get_column("observed").cast(pl.Float64).to_numpy()
    s = mine.get_column("_reference").fill_null(0.0).to_numpy()
    urns = mine.get_column("urn").to_list()
    level, per_school = self_review.estimate_level(o, s, urns, settings, fallback="too_few")
    level.note = self_review.estimated_note(level, "the reference")
    totals = mine.select(
        "urn",
        "observed",
        pl.Series("expected", per_school.expected(s)),
        pl.Series("expected_variance", per_school.expected_variance(s)),
    )
    tested, _ = _test(result, totals, mine, level.overdispersion)
    return level, tested


def reference_tests(
    result: AuditResult,
    tested: pl.DataFrame,
    reference: pl.DataFrame,
    given: stats.Overdispersion | None,
) -> tuple[pl.DataFrame, stats.Overdispersion]:
    """Every school tested against the reference level with the self-review's alpha (the
    between-school variation around the common level, which a uniform difference of the
    whole area from the reference must not be mistaken for)."""
    totals = tested.select("urn", "observed").join(reference, on="urn", how="left")
    return _test(result, totals, tested, given)


def _test(
    result: AuditResult,
    totals: pl.DataFrame,
    tested: pl.DataFrame,
    given: stats.Overdispersion | None,
) -> tuple[pl.DataFrame, stats.Overdispersion]:
    """The audit's tests (family decisions counted as it counted them) on other totals."""
    from offroll_audit.audit import test_totals

    decisions = tested.select("urn", "decisions") if "decisions" in tested.columns else None
    totals = totals.with_columns(pl.col("expected").fill_null(0.0))
    return test_totals(totals, result.options, decisions, given)


def trust_lines(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """The trust line overall ("all") and per phase: schools, pupils, observed, expected at
    the reference, ratio and exact (Garwood) 95% interval."""
    grouped = (
        frame.with_columns(pl.col("phase").cast(pl.String).fill_null("unknown"))
        .group_by("phase")
        .agg(
            pl.len().cast(pl.Int64).alias("schools"),
            pl.col("pupils").sum().cast(pl.Int64),
            pl.col("observed").sum().cast(pl.Int64),
            pl.col("_reference").sum().cast(pl.Float64).alias("expected"),
        )
        .sort("phase")
    )
    total = grouped.select(pl.lit("all").alias("phase"), pl.exclude("phase").sum()).select(
        grouped.columns
    )
    both = pl.concat([total, grouped])
    o = both.get_column("observed").cast(pl.Float64).to_numpy()
    e = both.get_column("expected").cast(pl.Float64).to_numpy()
    low, high = stats.garwood_interval(o, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(e > 0, o / np.where(e > 0, e, 1.0), np.nan)
    lines = {}
    for i, (phase, schools, pupils, observed, expected) in enumerate(both.rows()):
        lines[phase] = {
            "schools": int(schools),
            "pupils": int(pupils),
            "observed": int(observed),
            "expected": _number(expected),
            "ratio": _number(ratio[i]),
            "ci95": [_number(low[i]), _number(high[i])],
        }
    return lines


def _add_ranks(
    ranking: dict[str, dict[str, Any]], outcome: str, against: str, tested: pl.DataFrame
) -> None:
    """Each school's statistics against one yardstick, and its rank among the trust's schools
    (1 = the most unusual: smallest p, then the highest ratio)."""
    if tested.is_empty():
        return
    ordered = tested.sort(
        pl.col("p").fill_null(2.0),
        pl.col("ratio").fill_null(0.0),
        "urn",
        descending=[False, True, False],
    )
    for rank, row in enumerate(ordered.select("urn", *RANKED).iter_rows(named=True), start=1):
        entry = {k: _number(row[k]) if k != "band" else row[k] for k in RANKED}
        entry["rank"] = rank
        ranking[row["urn"]].setdefault(outcome, {})[against] = entry


def _rank_key(school: dict[str, Any], outcome: str) -> tuple:
    block = school.get(outcome) or {}
    own = (block.get("own") or {}).get("rank")
    reference = (block.get("reference") or {}).get("rank")
    return (own is None, own or 0, reference or 0, school["urn"])


def summary_sentence(block: dict[str, Any]) -> str:
    """The trust against the reference in one sentence (the pack and the Trust sheet)."""
    parts = []
    for outcome, words in (("ehe", "exits to home education"), ("unexplained", "unexplained")):
        line = (block.get(outcome) or {}).get("all")
        if not line or line["expected"] in (None, 0):
            continue
        low, high = line["ci95"]
        where = ""
        if low is not None and low > 1:
            where = ", above the reference beyond chance"
        elif high is not None and high < 1:
            where = ", below the reference beyond chance"
        parts.append(
            f"{words}: {line['observed']} against {line['expected']:.1f} expected, "
            f"{line['ratio']:.2f} times (95% interval {low:.2f} to {high:.2f}){where}"
        )
    reference = (block.get("reference") or {}).get("text", "the reference")
    if not parts:
        return f"{block['trust']}: no exits expected at {reference}."
    return f"{block['trust']} against {reference}: " + "; ".join(parts) + "."


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
