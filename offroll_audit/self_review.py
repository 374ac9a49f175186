"""The self-review baseline: a trust's (or a school's) own data, judged against a yardstick whose
shape comes from outside and whose level is estimated from its own schools.

A trust has only its own pupils. Fitting the case-mix model on them (`local`) gives a model
with nearly as many parameters as schools, which absorbs a moderate off-roller's excess;
judging them against the national level (`england`) selects every ordinary school of an LA
whose families home-educate more than the national average. The answer is to take how SEN,
disadvantage, social care and year group change the risk (the *shape*: relative risks from
a baseline file) from outside, and estimate only one number from the data: the *level*, how
much more or less often this area's pupils leave than the file's national rate.

The level is estimated robustly: schools whose counts are beyond chance under the level are
set aside and the level refitted, until that stops changing (as the local refit does), so
one or two off-rolling schools cannot raise it; each school is judged against the level of
the *other* schools, and the level's own uncertainty (few schools, wide limits) enters its
test as a variance of its expected count. The national level is the level's prior, worth a
few exits (an area's level may lie far from it): with plenty of exits the data decide, with
too few the level leans on the national one, and the audit says so. A handful of schools
cannot estimate how much schools differ (alpha) either: the profile's self_alpha stands in.
With `--la-rates` the level of exits to home education is instead anchored to the published
rate of each school's LA.

What it cannot tell: a trust whose every school off-rolls looks normal against its own level.
Only the anchored or national comparison (the trust roll-up, trusts.py) shows that.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from offroll_audit import codes
from offroll_audit import expected as exp
from offroll_audit import significance as stats
from offroll_audit.problems import ERROR, DataError, Report, UsageError

if TYPE_CHECKING:
    from offroll_audit.schema import Dataset
    from offroll_audit.window import Window

FloatArray = NDArray[np.float64]

DEFAULT_SHAPE = "england"
# Profile [statistics] keys and their defaults (thresholds/default.toml explains each).
MIN_SCHOOLS_LOCAL = 20  # fewer schools on roll: the automatic choice is self, not local
OUTLIER_P = 0.01  # Poisson p below which a school is set aside from the level
MIN_SCHOOLS = 3  # schools (kept) needed to estimate a level
MIN_EXITS = 10.0  # exits (at the schools kept) needed to estimate a level
SELF_ALPHA = 0.05  # between-school allowance when a self-review's schools cannot estimate it
NATIONAL_CV = 0.5  # how far an area's level may lie from the national one (the level's prior)
MAX_LA_RATE = 0.2  # an annual EHE rate above this is a typing slip (a percentage, say)
OWN_RISK_SD = 0.5  # self_own_risk_sd: prior sd of a log relative risk the shape lacks
SHAPE_SD = 0.25  # self_shape_sd: a file relative risk's log sd where the file states none
STAGE_SD = 0.5  # self_stage_sd: how far the shape's secondary/primary ratio may be out (log)
FEW_OWN_EXITS = 30  # an estimated relative risk resting on fewer exits is said to be weak
MAX_NEWTON = 50
MAX_LEVELS_SAID = 4  # levels named in a sentence (year group has 17)
# what an estimated factor's risks are stated against: its usual level, else the commonest
USUAL_LEVEL = {"sen_provision": "N", "social_care": "none", "disadvantaged": "false"}
LA_CODE = re.compile(r"^\d{3}$")
RATE_COLUMNS = ("la_code", "annual_rate")
CANNOT_TELL = (
    "A self-review judges each school against the level of the reviewer's other schools, so "
    "a trust whose every school off-rolls looks normal against its own level. The check for "
    "that is the comparison with its LA's published rate (--la-rates) or the national level: "
    "the trust's own level against it is on the Trust sheet and in results.json (trusts)."
)


@dataclass
class Level:
    """How this data's rate compares with the shape file's national rate (1 = the same)."""

    value: float
    ci95: tuple[float, float]
    how: str  # estimated | anchored | national
    schools: int  # schools the estimate rests on
    exits: float  # exits it rests on
    set_aside: list[str] = field(default_factory=list)  # schools beyond chance, left out
    alpha: float = 0.0  # between-school variation among the schools kept
    note: str = ""
    warning: str | None = None
    overdispersion: stats.Overdispersion | None = None  # estimated: alpha, for the tests
    prior_exits: float = 0.0  # what the reference level was worth as the level's prior
    usable: int = 0  # schools with pupils at risk
    usable_exits: float = 0.0  # and their exits
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # by stage, when both

    def as_dict(self) -> dict[str, Any]:
        """results.json's view (baseline.level.<outcome>, trusts[].<outcome>.own_level)."""
        return {
            "how": self.how,
            "value": _finite(self.value),
            "ci95": [_finite(self.ci95[0]), _finite(self.ci95[1])],
            "schools": self.schools,
            "exits": _finite(self.exits),
            "set_aside": self.set_aside,
            "alpha": _finite(self.alpha),
            "prior_exits": _finite(self.prior_exits),
            "note": self.note,
            "warning": self.warning,
            "stages": {
                name: {
                    "value": _finite(stage["value"]),
                    "ci95": [_finite(stage["ci95"][0]), _finite(stage["ci95"][1])],
                    "exits": _finite(stage["exits"]),
                }
                for name, stage in self.stages.items()
            },
        }


@dataclass
class SchoolLevels:
    """Per school (in the order given): the level of each stage it is judged against (the
    other schools'; one column per stage of the shape expectations) and the covariance of
    their logarithms."""

    level: FloatArray  # (schools, stages)
    covariance: FloatArray  # (schools, stages, stages)

    def expected(self, shape_expected: FloatArray) -> FloatArray:
        """Each school's expected count: its shape expectation in each stage times that
        stage's level."""
        return (self.level * by_stage(shape_expected)).sum(axis=1)

    def expected_variance(self, shape_expected: FloatArray) -> FloatArray:
        """The variance of that expected count from the levels' uncertainty (delta method)."""
        m = self.level * by_stage(shape_expected)
        return np.einsum("np,npq,nq->n", m, self.covariance, m)

    def prior_share(self, shape_expected: FloatArray, prior: FloatArray) -> FloatArray:
        """How much each school's level rests on the prior rather than on the other schools:
        its expected count's variance over what the prior alone would give (1: no other
        school's exits inform it)."""
        m = self.level * by_stage(shape_expected)
        alone = np.einsum("np,pq,nq->n", m, prior, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(alone > 0, self.expected_variance(shape_expected) / alone, 1.0)


@dataclass
class SelfReview:
    """What a self-review baseline did for one outcome: the level, and each school's expected
    count at the reference level (anchored where --la-rates gave one, else national), which
    the trust roll-up compares the schools with."""

    level: Level
    reference: pl.DataFrame  # urn, expected (at the reference level)
    reference_kind: str  # anchored | national
    shape: str  # the shape file's title and date
    own_risks: list[OwnRisk] = field(default_factory=list)  # factors the shape file lacks
    shape_sd: dict[str, float] = field(default_factory=dict)  # file_sds: factors it gives


# --------------------------------------------------------------------------- the level


def prior_exits(settings: dict[str, Any]) -> float:
    """What the reference level is worth, in exits, as the level's prior: 1 / cv^2, where cv
    (self_national_cv) says how far an area's level may lie from the national one (0.5: a
    prior worth 4 exits)."""
    cv = float(settings.get("self_national_cv", NATIONAL_CV))
    return 1.0 / max(cv, 1e-6) ** 2


def estimate_level(
    observed: FloatArray,
    shape_expected: FloatArray,
    urns: list[str],
    settings: dict[str, Any] | None = None,
    fallback: str = "national",
    max_passes: int = 10,
) -> tuple[Level, SchoolLevels]:
    """The robust level, and every school's leave-one-out level with its variance.

    `shape_expected` is each school's expected count at the reference level (the shape
    file's national level; on an LA's data, for a trust's own level, the LA's): one column,
    or one per stage (primary and secondary years, stage_split) with `observed` split the
    same way. The level is credibility-weighted: the exits of the schools it rests on
    against a prior at the reference level worth prior_exits (4 exits by default; see
    _stage_posterior). With plenty of exits the data decide; with few or none it leans on
    the reference, and its uncertainty (few schools, wide limits) enters every school's test
    instead of being ignored. Between-school variation (alpha, fitted on the schools kept
    against their common level) lowers what their exits are worth. With stages, each
    stage has its own level, tied to the other's by the shape file's ratio between them
    with sd self_stage_sd (see stage_prior): a trust's secondaries are judged against its
    other secondaries where it has them, and a lone secondary among primaries against the
    primaries' level times a ratio the file only estimates, with that uncertainty in its
    test.

    A school is set aside when its count is beyond chance (p < self_outlier_p) against the
    level of the other schools kept, allowing for that level's uncertainty (robust_kept):
    judged against the level it helped to raise, two off-rollers in a trust of eight would
    each hide behind the other. This repeats until the set stops changing; at most half the
    schools are ever set aside (if most are beyond chance, the level is what it is, and
    only the anchored or national comparison can show that). With fewer than
    self_min_schools schools or self_min_exits exits kept, `how` is `fallback` (the level
    leans on the reference) and `warning` says so.
    """
    settings = settings or {}
    o, s = by_stage(observed), by_stage(shape_expected)
    prior = stage_prior(settings, s.shape[1])
    outlier_p = float(settings.get("self_outlier_p", OUTLIER_P))
    kept = robust_kept(o, s, prior, outlier_p, max_passes)
    totals = o[kept].sum(axis=0), s[kept].sum(axis=0), (s[kept] ** 2).sum(axis=0)
    first, _ = _stage_posterior(*totals, 0.0, prior)
    fit = stats.fit_overdispersion(
        o[kept].sum(axis=1),
        (first * s[kept]).sum(axis=1),
        outlier_p=0.0,  # the schools beyond chance are already set aside
        min_alpha=float(settings.get("min_alpha", 0.0)),
        min_schools=int(settings.get("min_schools_for_alpha", 20)),
    )
    usable = s.sum(axis=1) > 0
    fit = _settled_alpha(replace(fit, n_set_aside=int((usable & ~kept).sum())), settings)
    alpha = fit.alpha if math.isfinite(fit.alpha) else 0.0
    stage_levels, covariance = _stage_posterior(*totals, alpha, prior)
    value, ci95 = _combined(stage_levels, covariance, totals[1])
    total_o = float(totals[0].sum())
    enough = kept.sum() >= int(settings.get("self_min_schools", MIN_SCHOOLS)) and total_o >= float(
        settings.get("self_min_exits", MIN_EXITS)
    )
    level = Level(
        value=value,
        ci95=ci95,
        how="estimated" if enough else fallback,
        schools=int(kept.sum()),
        exits=total_o,
        set_aside=[u for u, k, ok in zip(urns, kept, usable, strict=True) if ok and not k],
        alpha=float(alpha),
        overdispersion=fit,
        prior_exits=prior_exits(settings),
        usable=int(usable.sum()),
        usable_exits=float(o[usable].sum()),
        stages=_stage_summary(stage_levels, covariance, s[usable].sum(axis=0), o[kept]),
    )
    return level, _leave_one_out(o, s, kept, alpha, prior)


STAGES = ("primary years", "secondary years")  # stage_split's columns
FIRST_SECONDARY_YEAR = 7


def by_stage(values: FloatArray) -> FloatArray:
    """Per-school values as (schools, stages): a plain vector is one stage."""
    values = np.asarray(values, dtype=float)
    return values[:, None] if values.ndim == 1 else values


def stage_count(case_mix: list[str], settings: dict[str, Any]) -> int:
    """Two stages (primary and secondary years) with year group in the case mix, unless
    self_stage_sd is 0 (the file's ratio between the phases taken as known): then one."""
    known = float(settings.get("self_stage_sd", STAGE_SD)) <= 0
    return 2 if "year_group" in case_mix and not known else 1


def pattern_stages(
    layout: exp.CellLayout, case_mix: list[str], settings: dict[str, Any]
) -> NDArray[np.int64]:
    """Each pattern's stage: 0 primary years (up to Year 6, with nursery and Reception), 1
    secondary years (Year 7 on); all 0 (one stage) when the case mix has no year group or
    self_stage_sd is 0 (the file's ratio between the phases taken as known)."""
    if stage_count(case_mix, settings) == 1:
        return np.zeros(layout.patterns.height, dtype=np.int64)
    years = layout.patterns.get_column("year_group").cast(pl.String)
    number = years.replace_strict(codes.YEAR_NUMBER, default=0, return_dtype=pl.Int64)
    return (number >= FIRST_SECONDARY_YEAR).cast(pl.Int64).to_numpy()


def stage_split(
    layout: exp.CellLayout, rates: pl.DataFrame, case_mix: list[str], settings: dict[str, Any]
) -> tuple[FloatArray, FloatArray]:
    """Each school's observed exits and shape expectation per stage (pattern_stages), as
    (schools, stages) arrays.

    A shape file's ratio between primary and secondary years is its least certain part
    (england.toml's comes from the year groups of children already home-educated, not of
    new registrations), and a trust's pupils cannot check it within a school, since few
    schools have both: so each stage gets its own level (estimate_level)."""
    n = layout.urns.len()
    shape = layout.cell_expected(rates, case_mix)
    stages = stage_count(case_mix, settings)
    index = layout.school * stages + pattern_stages(layout, case_mix, settings)[layout.pattern]
    return (
        np.bincount(index, layout.events, stages * n).reshape(n, stages),
        np.bincount(index, shape, stages * n).reshape(n, stages),
    )


def stage_prior(settings: dict[str, Any], stages: int) -> FloatArray:
    """The prior covariance of the stages' log levels: each lies about the reference level
    with variance self_national_cv^2 (an area's level), and the two differ by the shape
    file's ratio between them give or take self_stage_sd (on the log scale): their shared
    part is the area's level, each stage's own part half the ratio's variance."""
    cv = float(settings.get("self_national_cv", NATIONAL_CV))
    area = max(cv, 1e-6) ** 2
    if stages == 1:
        return np.array([[area]])
    ratio = float(settings.get("self_stage_sd", STAGE_SD)) ** 2  # above 0: stage_count
    return np.full((stages, stages), area) + np.eye(stages) * ratio / 2


def _settled_alpha(fit: stats.Overdispersion, settings: dict[str, Any]) -> stats.Overdispersion:
    """The fitted alpha where the schools determine it; else the profile's self_alpha.

    A trust's handful of schools cannot tell how much schools differ for reasons the case
    mix does not see: the maximum-likelihood alpha of seven schools with three exits ran
    from 0 to 25 (95% interval), and its point estimate (1.6) made every test powerless.
    Where the fit is poorly determined (fewer than min_schools_for_alpha schools, or under
    50 exits expected), self_alpha (about what LA-wide audits find) is used and said, or
    the lower end of the fit's 95% interval where even that is higher (the schools then
    differ more than self_alpha allows, whatever the point estimate).
    """
    if fit.warning is None:
        return fit
    low, high = fit.alpha_ci95
    alpha = max(
        float(settings.get("self_alpha", SELF_ALPHA)),
        float(settings.get("min_alpha", 0.0)),
        low if math.isfinite(low) else 0.0,
    )
    interval = "too wide to state" if not math.isfinite(high) else f"{low:.3g} to {high:.3g}"
    used = (
        f"the lower end of that interval ({alpha:.3g}) was used"
        if alpha > float(settings.get("self_alpha", SELF_ALPHA))
        else f"the profile's self_alpha ({alpha:g}, about what LA-wide audits find) was used"
    )
    warning = (
        f"the allowance for differences between schools (alpha) cannot be estimated from "
        f"{fit.n_schools} school(s) (95% interval {interval}), so {used}; treat bands near a "
        "limit with caution"
    )
    return replace(fit, alpha=alpha, method="self_alpha", warning=warning)


def robust_kept(
    o: FloatArray,
    s: FloatArray,
    prior: FloatArray,
    outlier_p: float = OUTLIER_P,
    max_passes: int = 10,
) -> NDArray[np.bool_]:
    """The schools the level rests on: those with a shape expectation whose counts are not
    beyond chance against the level of the other schools kept (see estimate_level); `o` and
    `s` per school and stage, `prior` stage_prior's.

    "Beyond chance" allows for the uncertainty of the other schools' level (its log
    variance, as a negative binomial's alpha: the count's predictive spread), not only the
    Poisson noise of the school's own count. A plain Poisson test against a level resting on
    a few exits set aside schools that were merely above a poorly known level (two
    secondaries of a trust of four, against two primaries' two exits), and the level then
    rested on what was left. Differences between schools (alpha) are not allowed for here:
    with them, two moderate off-rollers in a trust of ten each stayed within chance against
    the level the other raised, and both hid. What this costs: where two high schools are
    half a trust and the rest have few exits, the data cannot say whether the two off-roll
    or the shape is wrong for them; they are now kept (bench_trusts.py, england shape:
    fewer innocent schools selected, a few such pairs of off-rollers missed), and the
    anchored or national comparison is the check."""
    o, s = by_stage(o), by_stage(s)
    usable = s.sum(axis=1) > 0
    kept = usable.copy()
    total = o.sum(axis=1)
    for _ in range(max_passes):
        others = _leave_one_out(o, s, kept, 0.0, prior)
        expected = others.expected(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            spread = np.where(expected > 0, others.expected_variance(s) / expected**2, 0.0)
        p = stats.nb_p_upper(total, expected, spread)
        beyond = usable & (p < outlier_p)
        if beyond.sum() > usable.sum() / 2 or np.array_equal(usable & ~beyond, kept):
            break
        kept = usable & ~beyond
    return kept


def fixed_levels(levels: FloatArray, stages: int = 1) -> SchoolLevels:
    """Levels that are given, not estimated (anchored): the same in every stage, no
    sampling variance."""
    levels = np.asarray(levels, dtype=float)
    return SchoolLevels(
        np.repeat(levels[:, None], stages, axis=1), np.zeros((len(levels), stages, stages))
    )


def _stage_posterior(
    total: Any, expected: Any, squares: Any, alpha: float, prior: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The stages' levels (posterior medians) and the covariance of their logarithms, from
    `total` exits against `expected` in each stage (`squares`: the sum of the schools'
    squared expectations; all three (..., stages)) and stage_prior's `prior` at the reference
    level (log 0).

    Combined on the log scale, where a ratio's error is symmetric: the data of a stage say
    log(O / S) with variance d / O (O at least 1/2), d = 1 + alpha x level x sum(S^2) / sum(S)
    the design effect of between-school variation; a stage without expectation says
    nothing. (A gamma prior, conjugate on the level itself, pulled a trust whose data said 3
    times the national level down to 2.5; on the log scale the same prior leaves 2.7.) With
    one stage this is weight x log(O / S) / (weight + 1 / cv^2). Rows are independent, so
    every school's leave-one-out level is one call."""
    total, expected, squares = (np.asarray(a, dtype=float) for a in (total, expected, squares))
    with np.errstate(divide="ignore", invalid="ignore"):
        has = expected > 0
        safe = np.where(has, expected, 1.0)
        exits = np.maximum(total, 0.5)  # no exit: as if half of one
        raw = exits / safe
        effect = 1.0 + alpha * raw * np.where(has, squares / safe, 0.0)
        weight = np.where(has, exits / effect, 0.0)
        said = np.where(has, np.log(raw), 0.0)
    precision = np.linalg.inv(prior) + weight[..., None] * np.eye(prior.shape[0])
    covariance = np.linalg.inv(precision)
    log_level = np.einsum("...pq,...q->...p", covariance, weight * said)
    return np.exp(log_level), covariance


def _combined(
    levels: FloatArray, covariance: FloatArray, expected: FloatArray
) -> tuple[float, tuple[float, float]]:
    """The data's level over its stages (weighted by their shape expectations), and its 95%
    interval (delta method on the log scale)."""
    weights = levels * expected
    if weights.sum() <= 0:
        weights = np.ones_like(levels)
    value = float(weights.sum() / expected.sum()) if expected.sum() > 0 else float(levels.mean())
    share = weights / weights.sum()
    spread = 1.96 * math.sqrt(max(float(share @ covariance @ share), 0.0))
    return value, (value * math.exp(-spread), value * math.exp(spread))


def _stage_summary(
    levels: FloatArray, covariance: FloatArray, expected: FloatArray, observed: FloatArray
) -> dict[str, dict[str, Any]]:
    """Each stage's level where the data have both stages (else {}): the level, its 95%
    interval and the exits of the schools kept in it."""
    if len(levels) < 2 or (expected <= 0).any():
        return {}
    out = {}
    for i, name in enumerate(STAGES):
        spread = 1.96 * math.sqrt(max(float(covariance[i, i]), 0.0))
        out[name] = {
            "value": float(levels[i]),
            "ci95": (float(levels[i] * math.exp(-spread)), float(levels[i] * math.exp(spread))),
            "exits": float(observed[:, i].sum()),
        }
    return out


def _leave_one_out(
    o: FloatArray, s: FloatArray, kept: NDArray[np.bool_], alpha: float, prior: FloatArray
) -> SchoolLevels:
    """Each school's stage levels from the kept schools other than itself (a school not kept
    is judged against all the kept ones), and their covariance."""
    own = np.where(kept, 1.0, 0.0)[:, None]
    total_o = o[kept].sum(axis=0) - own * o
    total_s = np.clip(s[kept].sum(axis=0) - own * s, 0.0, None)
    total_s2 = np.clip((s[kept] ** 2).sum(axis=0) - own * s**2, 0.0, None)
    level, covariance = _stage_posterior(total_o, total_s, total_s2, alpha, prior)
    return SchoolLevels(level, covariance)


def _finite(value: float) -> float | None:
    return round(float(value), 6) if value is not None and math.isfinite(value) else None


# ------------------------------------------------------- factors the shape file does not give


@dataclass
class OwnRisk:
    """A case-mix factor the shape file gives no relative risk for, estimated from the
    reviewer's own pupils by comparing pupils within each school: each level's risk against
    the factor's usual level (`reference`: no SEN, no social care, not disadvantaged; for year
    group the one with most pupils at risk), with a 95% interval."""

    factor: str
    reference: str
    risks: dict[str, tuple[float, float, float]]  # level -> (relative risk, low, high)
    exits: float  # the exits the comparison rests on
    schools: int  # at the schools it rests on

    def sentence(self) -> str:
        """'disadvantaged pupils left 1.6 times as often as pupils who are not disadvantaged
        at the same school (95% interval 1.2 to 2.1)', the largest departures first."""
        labels = {k.lower(): v for k, v in codes.LEVEL_LABELS.get(self.factor, {}).items()}
        factor = exp.FACTOR_TEXT.get(self.factor, self.factor)

        def name(level: str) -> str:
            return labels.get(level.lower(), f"pupils of {factor} {level}")

        shown = sorted(
            (item for item in self.risks.items() if item[0] != self.reference),
            key=lambda item: -abs(math.log(item[1][0])),
        )[:MAX_LEVELS_SAID]
        parts = [
            f"{name(level)} {_times(rr)} times as often (95% interval {_times(low)} to "
            f"{_times(high)})"
            for level, (rr, low, high) in shown
        ]
        more = len(self.risks) - 1 - len(shown)
        tail = f", and {more} more level(s) in results.json" if more > 0 else ""
        return (
            f"{factor}: against {name(self.reference)} at the same school, {'; '.join(parts)}{tail}"
        )

    @property
    def weak(self) -> bool:
        return self.exits < FEW_OWN_EXITS

    def weak_warning(self, shape: str) -> str:
        """The Cover's warning when the estimate rests on too few exits to adjust much."""
        factor = exp.FACTOR_TEXT.get(self.factor, self.factor)
        return (
            f"the shape file ({shape}) gives no relative risk for {factor}, and these schools' "
            f"{self.exits:.0f} exits are too few to estimate it well, so it stays close to no "
            f"adjustment: a school with more of the pupils who leave more often may look high"
        )

    def as_dict(self) -> dict[str, Any]:
        """results.json's view (baseline.own_risks.<outcome>[])."""
        return {
            "factor": self.factor,
            "sentence": self.sentence(),
            "reference": self.reference,
            "relative_risk": {
                level: {"value": _finite(rr), "ci95": [_finite(low), _finite(high)]}
                for level, (rr, low, high) in self.risks.items()
            },
            "exits": _finite(self.exits),
            "schools": self.schools,
        }


def estimated_shape(
    layout: exp.CellLayout,
    rates: pl.DataFrame,
    case_mix: list[str],
    factors: list[str],
    settings: dict[str, Any],
) -> tuple[pl.DataFrame, list[OwnRisk], ShapeDoubt]:
    """The shape file's rates completed with the factors it does not give, estimated from the
    data (own_risk_rates): first from every school, then without the schools beyond chance
    against the others' level under the completed shape (robust_kept, as the level is
    estimated), until that set stops changing (at most three passes)."""
    if not factors:
        return rates, [], ShapeDoubt([], np.zeros((0, 0)))
    prior_sd = float(settings.get("self_own_risk_sd", OWN_RISK_SD))
    outlier_p = float(settings.get("self_outlier_p", OUTLIER_P))
    kept = np.ones(layout.urns.len(), dtype=bool)
    for _ in range(3):
        shaped, risks, doubt = own_risk_rates(layout, rates, case_mix, factors, kept, prior_sd)
        observed, expected = stage_split(layout, shaped, case_mix, settings)
        prior = stage_prior(settings, expected.shape[1])
        now = robust_kept(observed, expected, prior, outlier_p)
        if np.array_equal(now, kept):
            break
        kept = now
    return shaped, risks, doubt


def _times(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def missing_factors(path: Path, outcome: str, case_mix: list[str]) -> list[str]:
    """The case-mix factors the shape file gives no relative risk for (counted as 1 there)."""
    risks = exp.baseline_outcome(path, outcome).get("relative_risk", {})
    return [f for f in case_mix if f not in risks]


def own_risk_rates(
    layout: exp.CellLayout,
    rates: pl.DataFrame,
    case_mix: list[str],
    factors: list[str],
    kept: NDArray[np.bool_],
    prior_sd: float = OWN_RISK_SD,
) -> tuple[pl.DataFrame, list[OwnRisk], ShapeDoubt]:
    """The shape's rates with the relative risks of `factors` (which the shape file does not
    give) estimated from the data, and what was estimated.

    A conditional Poisson fit: with each school's exits taken as given, how they fall among
    its pupils of each level of the factor, against the shape's expectation for those pupils.
    Comparing pupils within a school means a school's overall excess (an off-roller's, or an
    area's level) cannot enter the estimate; `kept` leaves out the schools beyond chance,
    whose excess may lie among particular pupils. Each log relative risk has a normal prior
    at 0 (no difference, the shape file's assumption) with sd `prior_sd`, so a factor resting
    on a few exits stays near no adjustment. The risks are scaled so that the schools' total
    expected count is the shape's: the level, estimated next, keeps its meaning. The
    estimates' covariance is returned with them (ShapeDoubt): how sure they are enters every
    school's test (composition_variance).
    """
    base = layout.pattern_rates(rates, case_mix)
    shape = layout.trials * base[layout.pattern]
    levels = [
        (factor, level)
        for factor in factors
        for level in layout.patterns.get_column(factor).cast(pl.String).unique().sort().to_list()
    ]
    design = np.column_stack(
        [
            (layout.patterns.get_column(factor).cast(pl.String) == level).to_numpy()
            for factor, level in levels
        ]
    ).astype(float)
    use = kept[layout.school] & (shape > 0)
    x, s, o = design[layout.pattern[use]], shape[use], layout.events[use]
    school = np.unique(layout.school[use], return_inverse=True)[1]
    n_schools = int(school.max()) + 1 if len(school) else 0
    n = np.bincount(school, o, n_schools)
    beta, information = np.zeros(len(levels)), np.eye(len(levels)) / prior_sd**2
    for _ in range(MAX_NEWTON):
        w = s * np.exp(x @ beta)
        pi = w / np.bincount(school, w, n_schools)[school]
        fitted = n[school] * pi
        gradient = x.T @ (o - fitted) - beta / prior_sd**2
        mean_x = np.column_stack(
            [np.bincount(school, pi * x[:, k], n_schools) for k in range(len(levels))]
        )
        information = (
            (x * fitted[:, None]).T @ x
            - (mean_x * n[:, None]).T @ mean_x
            + np.eye(len(levels)) / prior_sd**2
        )
        step = np.linalg.solve(information, gradient)
        beta += step
        if np.abs(step).max() < 1e-9:
            break
    covariance = np.linalg.inv(information)
    multiplier = np.exp(design @ beta)
    scale = (shape * multiplier[layout.pattern]).sum() / max(shape.sum(), 1e-300)
    multiplier = multiplier / scale if scale > 0 else multiplier
    adjusted = layout.patterns.drop("pattern").with_columns(
        pl.Series("_rate", np.clip(base * multiplier, 0.0, 1.0))
    )
    shaped = rates.drop("rate").join(adjusted, on=case_mix, how="left").rename({"_rate": "rate"})
    shaped = shaped.with_columns(pl.col("rate").fill_null(0.0))
    at_risk = np.bincount(layout.pattern, shape, design.shape[0]) @ design  # per level
    risks, contrasts = [], []
    for factor in factors:
        mine = [i for i, (f, _) in enumerate(levels) if f == factor]
        name = reference_level(factor, {levels[i][1]: at_risk[i] for i in mine})
        ref = next(i for i in mine if levels[i][1] == name)
        contrasts += [(i, ref) for i in mine if i != ref]
        table = {}
        for i in mine:
            spread = 1.96 * math.sqrt(
                max(covariance[i, i] + covariance[ref, ref] - 2 * covariance[i, ref], 0.0)
            )
            value = beta[i] - beta[ref]
            table[levels[i][1]] = (
                math.exp(value),
                math.exp(value - spread),
                math.exp(value + spread),
            )
        risks.append(OwnRisk(factor, levels[ref][1], table, float(o.sum()), n_schools))
    against = np.zeros((len(contrasts), len(levels)))  # each level against its reference
    for row, (i, ref) in enumerate(contrasts):
        against[row, i], against[row, ref] = 1.0, -1.0
    doubt = ShapeDoubt(
        [levels[i] for i, _ in contrasts],
        against @ covariance @ against.T,
        against @ against.T * prior_sd**2,
    )
    return shaped, risks, doubt


# ------------------------------------------------------------- how sure the shape is


@dataclass
class ShapeDoubt:
    """Relative risks a school's expected count rests on that are not known exactly: one
    (factor, level) per column, and the covariance of their logarithms."""

    columns: list[tuple[str, str]]
    covariance: FloatArray
    # against the national mix the rates are scaled to, where an estimate's normalisation to
    # the data's own total means nothing: for an estimated factor its prior, not its posterior
    national: FloatArray | None = None

    def join(self, other: ShapeDoubt) -> ShapeDoubt:
        """Both, as independent blocks."""

        def blocks(a: FloatArray, b: FloatArray) -> FloatArray:
            out = np.zeros((len(a) + len(b), len(a) + len(b)))
            out[: len(a), : len(a)], out[len(a) :, len(a) :] = a, b
            return out

        return ShapeDoubt(
            self.columns + other.columns,
            blocks(self.covariance, other.covariance),
            blocks(self.against_nation(), other.against_nation()),
        )

    def against_nation(self) -> FloatArray:
        return self.covariance if self.national is None else self.national


def _is_level(layout: exp.CellLayout, factor: str, level: str) -> FloatArray:
    """Per cell: 1 where its pattern has `level` of `factor`, else 0."""
    return (
        (layout.patterns.get_column(factor).cast(pl.String) == level)
        .to_numpy()[layout.pattern]
        .astype(float)
    )


def reference_level(factor: str, weights: dict[str, float]) -> str:
    """The level a factor's relative risks are stated against: its usual one (no SEN
    provision, no social care, not disadvantaged) where present, else the one with the most
    weight (pupils, or pupils at risk)."""
    usual = USUAL_LEVEL.get(factor)
    return usual if usual in weights else max(weights, key=weights.__getitem__)


def file_sds(
    path: Path, outcome: str, case_mix: list[str], estimated: list[str], settings: dict[str, Any]
) -> dict[str, float]:
    """How sure the shape file is of each factor it gives: the log sd of its relative risks,
    from the file's `relative_risk_sd` (england.toml: its assumptions, such as social care,
    less sure than its published shares), else the profile's self_shape_sd. Year group is
    left to the stages (stage_split): within a phase schools have the same years, and
    between phases the stages' own levels allow for it."""
    stated = exp.baseline_outcome(path, outcome).get("relative_risk_sd", {})
    default = float(settings.get("self_shape_sd", SHAPE_SD))
    sds = {}
    for factor in case_mix:
        if factor == "year_group" or factor in estimated:
            continue
        value = stated.get(factor, default) if isinstance(stated, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise UsageError(
                f"baseline {path}: [outcomes.{outcome}.relative_risk_sd] {factor} must be a "
                "number 0 or more (the log sd of the factor's relative risks)"
            )
        sds[factor] = float(value)
    return sds


def file_doubt(layout: exp.CellLayout, sds: dict[str, float]) -> ShapeDoubt:
    """file_sds as a ShapeDoubt: each level's log relative risk against the factor's
    reference_level independently give or take the factor's sd."""
    columns, variances = [], []
    for factor, sd in sds.items():
        levels = layout.patterns.get_column(factor).cast(pl.String)
        pupils = {
            level: float(layout.trials[_is_level(layout, factor, level) > 0].sum())
            for level in levels.unique().sort()
        }
        ref = reference_level(factor, pupils)
        columns += [(factor, level) for level in pupils if level != ref]
        variances += [sd**2] * (len(pupils) - 1)
    return ShapeDoubt(columns, np.diag(variances) if variances else np.zeros((0, 0)))


def composition_variance(
    layout: exp.CellLayout,
    rates: pl.DataFrame,
    case_mix: list[str],
    doubt: ShapeDoubt,
    kept: NDArray[np.bool_],
    prior_share: FloatArray | None = None,
) -> FloatArray:
    """Each school's log variance of its expected count from the shape's doubt: against the
    other schools its level rests on, (g - g_others)' V (g - g_others), g the school's shares
    of its shape expectation among the pupils of each uncertain level, g_others those of the
    other schools kept, V the doubt's covariance; where its level rests on the prior instead
    (prior_share, SchoolLevels.prior_share), g' V g, how unsure its pupils' risks are against
    the national mix the file's rates are scaled to; in between, the two weighted so.

    A relative risk out by the same for every school is absorbed by the level, so a school
    like the others gains nothing, and the trust's one deprived school (three quarters of
    its pupils disadvantaged against a sixth elsewhere, with the file silent on
    disadvantage) gains wider limits, since the others' few exits barely show how much more
    often disadvantaged pupils leave. A school with no others to compare (the only one with
    pupils in Years 9-11, for their own exits) is judged against the national level, and
    its pupils' risks against the nation's are as unsure as the file says. Year group is
    left out, estimated or not: the stages allow for the ratio between the phases, and
    within a phase schools have the same years."""
    n = layout.urns.len()
    keep = [i for i, (f, _) in enumerate(doubt.columns) if f != "year_group"]
    if not keep:
        return np.zeros(n)
    covariance = doubt.covariance[np.ix_(keep, keep)]
    national = doubt.against_nation()[np.ix_(keep, keep)]
    shape = layout.cell_expected(rates, case_mix)
    total = np.bincount(layout.school, shape, n)
    amounts = np.column_stack(
        [np.bincount(layout.school, shape * _is_level(layout, *doubt.columns[i]), n) for i in keep]
    )
    kept = kept & (total > 0)
    own = kept.astype(float)
    others_total = total[kept].sum() - own * total
    others = amounts[kept].sum(axis=0) - own[:, None] * amounts
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(total[:, None] > 0, amounts / total[:, None], 0.0)
        reference = np.where(others_total[:, None] > 0, others / others_total[:, None], shares)
    relative = np.einsum("nk,kl,nl->n", shares - reference, covariance, shares - reference)
    absolute = np.einsum("nk,kl,nl->n", shares, national, shares)
    weight = np.zeros(n) if prior_share is None else np.clip(prior_share, 0.0, 1.0)
    weight = np.where(others_total > 0, weight, 1.0)
    return np.where(total > 0, (1 - weight) * relative + weight * absolute, 0.0)


# --------------------------------------------------------------------------- the baseline


def self_baseline(
    layout: exp.CellLayout,
    cells: pl.DataFrame,
    outcome: str,
    case_mix: list[str],
    window: Window,
    shape: str | None,
    anchors: pl.DataFrame | None,
    settings: dict[str, Any],
) -> tuple[exp.Baseline, tuple[pl.DataFrame, pl.DataFrame]]:
    """The self-review baseline of one outcome, and each school's own rates (shape x the level
    it is judged against) with the variance of its expected count, for the tests.

    Exits to home education are anchored to each school's LA rate when `anchors` (urn,
    annual_rate) are given; otherwise, and for the other outcomes, the level is estimated
    from the schools, leaning on the national one when they are too few (estimate_level).
    """
    path = exp.baseline_path(shape or DEFAULT_SHAPE)
    rates, source = exp.file_rates(path, outcome, cells, case_mix, window)
    missing = missing_factors(path, outcome, case_mix)
    rates, own_risks, estimated = estimated_shape(layout, rates, case_mix, missing, settings)
    sds = file_sds(path, outcome, case_mix, missing, settings)
    doubt = file_doubt(layout, sds).join(estimated)
    o_stages, s_stages = stage_split(layout, rates, case_mix, settings)
    o, s = o_stages.sum(axis=1), s_stages.sum(axis=1)
    urns = layout.urns.to_list()
    if anchors is not None and exp.RATES_OF.get(outcome, outcome) == "ehe":
        level, per_school = _anchored(anchors, layout.urns, s_stages, o, path, settings)
        reference, reference_kind = per_school.level[:, 0], "anchored"
    else:
        level, per_school = estimate_level(o_stages, s_stages, urns, settings)
        reference, reference_kind = np.ones(len(urns)), "national"
        level.note = estimated_note(level)
        if level.how != "estimated":
            level.warning = too_few_warning(level, settings, outcome)
    baseline = exp.Baseline(
        "self",
        f"self-review: how pupils' characteristics change the risk from {source}; "
        + LEVEL_SOURCE[level.how],
        rates.with_columns(pl.col("rate") * level.value),
        "published relative risks",
    )
    baseline.excluded_urns = level.set_aside
    baseline.note = ROBUST_NOTE[level.how] + (" (set aside from it)" if level.set_aside else "")
    if level.warning:
        baseline.warnings.append(level.warning)
    baseline.warnings += [r.weak_warning(path.stem) for r in own_risks if r.weak]
    if level.how != "anchored":
        baseline.left_out_urns = [u for u, e in zip(urns, s, strict=True) if e > 0]
    baseline.self_review = SelfReview(
        level,
        pl.DataFrame({"urn": layout.urns, "expected": s * reference}),
        reference_kind,
        source,
        own_risks,
        sds,
    )
    kept = ~layout.urns.is_in(level.set_aside).to_numpy()
    prior = stage_prior(settings, s_stages.shape[1])
    share = per_school.prior_share(s_stages, prior) if level.how != "anchored" else None
    spread = composition_variance(layout, rates, case_mix, doubt, kept, share)
    own, variance = _own_rates(cells, layout, rates, case_mix, per_school, s_stages, settings)
    expected = per_school.expected(s_stages)
    return baseline, (
        own,
        variance.with_columns(pl.col("expected_variance") + expected**2 * spread),
    )


ROBUST_NOTE = {
    "estimated": "self-review: each school judged against the level of the other schools, "
    "estimated without the schools beyond chance against the others",
    "anchored": "self-review: the level anchored to the LA's published rate, so no school's "
    "exits raise it",
    "national": "self-review: too few schools or exits, so the level leans on the national "
    "one; each school judged against the level of the other schools",
}
LEVEL_SOURCE = {
    "estimated": "the level estimated from the schools in the data",
    "anchored": "the level of exits to home education anchored to each school's LA rate "
    "(--la-rates)",
    "national": "the level leaning on the national one (too few schools or exits to estimate "
    "it from the data)",
}


def _own_rates(
    cells: pl.DataFrame,
    layout: exp.CellLayout,
    rates: pl.DataFrame,
    case_mix: list[str],
    per_school: SchoolLevels,
    shape_expected: FloatArray,
    settings: dict[str, Any],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(urn, pattern, rate) for every cell (the layout's rows are the cells'): the shape's
    rate times the level of the school's stage (stage_split) the cell is in; and (urn,
    expected_variance): the variance of the school's expected count from those levels'
    uncertainty (what test_schools adds to alpha as v / E^2)."""
    stage = pattern_stages(layout, case_mix, settings)[layout.pattern]
    rate = layout.pattern_rates(rates, case_mix)[layout.pattern]
    own = cells.select("urn", "pattern").with_columns(
        pl.Series("rate", np.clip(rate * per_school.level[layout.school, stage], 0.0, 1.0))
    )
    variance = pl.DataFrame(
        {"urn": layout.urns, "expected_variance": per_school.expected_variance(shape_expected)}
    )
    return own, variance


def _anchored(
    anchors: pl.DataFrame,
    urns: pl.Series,
    shape_expected: FloatArray,
    observed: FloatArray,
    path: Path,
    settings: dict[str, Any],
) -> tuple[Level, SchoolLevels]:
    """Each school's level = its LA's published annual rate over the shape file's (exits to
    home education: the only outcome with a published rate). alpha is fitted against the
    anchored expectations, the clear outliers set aside, and settled as estimate_level's."""
    national = exp.baseline_annual_rate(path, "ehe")
    aligned = urns.to_frame("urn").join(anchors, on="urn", how="left", maintain_order="left")
    rate = aligned.get_column("annual_rate").fill_null(national).to_numpy().astype(float)
    levels = rate / national if national > 0 else np.ones(len(rate))
    shape_expected = by_stage(shape_expected)
    stages = shape_expected.shape[1]
    shape_expected = shape_expected.sum(axis=1)
    weights = shape_expected.sum()
    value = float((levels * shape_expected).sum() / weights) if weights > 0 else 1.0
    codes = aligned.get_column("la_code").drop_nulls().unique().sort().to_list()
    published = ", ".join(
        f"LA {code} {r:.2%}"
        for code, r in aligned.select("la_code", "annual_rate").unique().sort("la_code").rows()
        if code is not None
    )
    fit = stats.fit_overdispersion(
        observed,
        levels * shape_expected,
        outlier_p=float(settings.get("outlier_p", 0.001)),
        min_alpha=float(settings.get("min_alpha", 0.0)),
        min_schools=int(settings.get("min_schools_for_alpha", 20)),
    )
    level = Level(
        value=value,
        ci95=(value, value),
        how="anchored",
        schools=len(urns),
        exits=float(observed.sum()),
        overdispersion=_settled_alpha(fit, settings),
        note=(
            f"the level of exits to home education is the published rate of the schools' "
            f"LA{'s' if len(codes) > 1 else ''} ({published} a year, from --la-rates) over the "
            f"shape file's national {national:.2%}: {value:.2f} times the national level"
        ),
    )
    return level, fixed_levels(levels, stages)


def too_few_warning(level: Level, settings: dict[str, Any], outcome: str) -> str:
    """What a level that leans on the national one means, for the run's warnings and the
    pack's Cover."""
    counted = f"{level.usable} school(s) with {level.usable_exits:g} exits"
    if level.set_aside:
        counted += (
            f" ({level.schools} with {level.exits:g} once those beyond chance were set aside)"
        )
    advice = (
        "; give your LA's published rate with --la-rates to judge exits to home education "
        "against your area's level instead"
        if outcome == "ehe"
        else "; no published rate exists to anchor these exits to"
    )
    low, high = level.ci95
    return (
        f"too few to estimate this data's own level: {counted}, where at least "
        f"{int(settings.get('self_min_schools', MIN_SCHOOLS))} schools and "
        f"{float(settings.get('self_min_exits', MIN_EXITS)):g} exits are needed. The level "
        f"leans on the national one (a prior worth {level.prior_exits:g} exits, "
        f"self_national_cv): {level.value:.2f} times it, 95% interval {low:.2f} to {high:.2f}, "
        "and that uncertainty widens every school's limits, so only a count far beyond what "
        f"any area's level would explain stands out{advice}"
    )


def estimated_note(level: Level, reference: str = "the national rate") -> str:
    """The level in one sentence, for the Method sheet and results.json."""
    low, high = level.ci95
    text = (
        f"the level rests on {level.schools} school(s) with {level.exits:g} exits and a prior "
        f"at {reference} worth {level.prior_exits:g} exits: {level.value:.2f} times "
        f"{reference} (95% interval {low:.2f} to {high:.2f}); each school is judged against "
        "the level of the other schools, with that level's uncertainty in its test"
    )
    if level.stages:
        said = ", ".join(
            f"{name} {stage['value']:.2f} ({stage['ci95'][0]:.2f} to {stage['ci95'][1]:.2f}, "
            f"{stage['exits']:g} exits)"
            for name, stage in level.stages.items()
        )
        text += (
            f"; by stage, since the shape's ratio between primary and secondary years is only "
            f"an estimate: {said}, each school judged against its own stage's level"
        )
    if level.set_aside:
        were = "was" if len(level.set_aside) == 1 else "were"
        text += (
            f"; {exp.named_schools(level.set_aside)} beyond chance against the others {were} set "
            "aside, so their exits do not raise the level"
        )
    return text


# --------------------------------------------------------------------------- the choice


def choose_baseline(
    dataset: Dataset, given: str | None, wants_self: bool, settings: dict[str, Any]
) -> tuple[str, str | None]:
    """The baseline to use and, when it was chosen for the user, why.

    An explicit --baseline wins. Without one: self when the data hold only one trust's
    schools (a trust reviewing itself) or fewer schools than the profile's min_schools_local
    (a local case-mix fit on so few schools absorbs an off-roller's excess); local otherwise.
    """
    if given is not None:
        if wants_self and given != "self":
            raise UsageError("--shape and --la-rates are for --baseline self")
        return given, None
    if wants_self:  # --shape and --la-rates ask for a self-review as plainly as --baseline self
        return "self", None
    urns = dataset.pupils.get_column("urn").unique()
    trust = single_trust(dataset, urns)
    if trust is not None:
        return "self", (
            f"the data hold only the schools of one trust ({trust}): each school is judged "
            "against the level of the trust's other schools"
        )
    minimum = int(settings.get("min_schools_local", MIN_SCHOOLS_LOCAL))
    if urns.len() < minimum:
        return "self", (
            f"the data hold {urns.len()} school(s), fewer than the {minimum} a local case-mix "
            "fit needs (min_schools_local in the profile): each school is judged against the "
            "level of the other schools"
        )
    return "local", (
        f"the data hold {urns.len()} schools, not all of one trust (at least the {minimum} a "
        "local case-mix fit needs, min_schools_local)"
    )


def single_trust(dataset: Dataset, urns: pl.Series) -> str | None:
    """The trust every school on roll belongs to, if there is exactly one (else None)."""
    if not dataset.has_schools:
        return None
    on_roll = dataset.schools.filter(pl.col("urn").is_in(urns.implode()))
    trusts = on_roll.get_column("trust")
    if on_roll.height < urns.len() or trusts.null_count() or trusts.n_unique() != 1:
        return None
    return trusts[0]


# --------------------------------------------------------------------------- LA rates


def school_rates(dataset: Dataset, path: Path) -> pl.DataFrame:
    """urn, la_code and annual_rate of every school on roll, from the --la-rates table and
    schools.csv's la_code; DataError (file, row, column) when the table is bad or does not
    cover every school's LA."""
    rates = read_la_rates(path)
    report = Report()
    schools_file = dataset.files["schools"].name if "schools" in dataset.files else "schools.csv"
    urns = dataset.pupils.get_column("urn").unique().sort()
    known = dataset.schools.select("urn", "la_code", "line").filter(
        pl.col("urn").is_in(urns.implode())
    )
    missing = urns.filter(~urns.is_in(known.get_column("urn").implode())).to_list()
    report.listed(
        ERROR,
        schools_file,
        "urn",
        (
            (None, f"school {u} (in pupils.csv) is not in {schools_file}, so its LA is unknown")
            for u in missing
        ),
        len(missing),
        "add the school with its la_code, so its LA's rate can be found",
    )
    blank = known.filter(pl.col("la_code").is_null() | (pl.col("la_code").str.strip_chars() == ""))
    report.listed(
        ERROR,
        schools_file,
        "la_code",
        (
            (line, f"school {u} has no la_code, so its LA's rate cannot be found")
            for u, line in blank.select("urn", "line").rows()
        ),
        blank.height,
        "give each school's 3-digit DfE LA code (--la-rates needs it)",
    )
    coded = known.filter(~pl.col("urn").is_in(blank.get_column("urn").implode())).with_columns(
        pl.col("la_code").str.strip_chars()
    )
    uncovered = (
        coded.join(rates, on="la_code", how="anti")
        .group_by("la_code")
        .agg(pl.col("urn").sort(), pl.col("line").min())
        .sort("la_code")
    )
    report.listed(
        ERROR,
        str(path),
        "la_code",
        (
            (
                None,
                f"no rate for LA {code} ({exp.named_schools(schools)}, {schools_file} row {line})",
            )
            for code, schools, line in uncovered.rows()
        ),
        uncovered.height,
        "add a row for every LA your schools are in (thresholds/baselines/la-rates-template.csv)",
    )
    if not report.ok:
        raise DataError(report)
    return coded.join(rates.drop("line"), on="la_code", how="left").select(
        "urn", "la_code", "annual_rate"
    )


def read_la_rates(path: Path) -> pl.DataFrame:
    """la_code, annual_rate (a fraction a year) and line (the spreadsheet row) of an LA-rates
    table; DataError naming file, row and column for anything that cannot be used. Blank
    lines and lines starting with # (the template's notes) are skipped."""
    report = Report()
    name = str(path)
    rows = _csv_rows(path, report)
    if rows is None:
        raise DataError(report)
    kept = [
        (line, row)
        for line, row in enumerate(rows, start=1)
        if any(cell.strip() for cell in row) and not row[0].lstrip().startswith("#")
    ]
    header_line, header = kept[0] if kept else (1, [])
    names = [cell.strip().lower().replace(" ", "_") for cell in header]
    for column in RATE_COLUMNS:
        if column not in names:
            report.error(
                name,
                header_line,
                column,
                f"no {column} column",
                "the header needs la_code and annual_rate (thresholds/baselines/"
                "la-rates-template.csv)",
            )
    if not report.ok:
        raise DataError(report)
    at = [names.index(column) for column in RATE_COLUMNS]
    codes, values, lines, seen = [], [], [], {}
    for line, row in kept[1:]:
        cells = [row[i].strip() if i < len(row) else "" for i in at]
        code, rate = _check_rate_row(name, line, cells, seen, report)
        codes.append(code)
        values.append(rate)
        lines.append(line)
    if not codes and report.ok:
        report.error(name, None, None, "no LA rates in the table", "add a row for each LA")
    if not report.ok:
        raise DataError(report)
    return pl.DataFrame(
        {"la_code": codes, "annual_rate": values, "line": lines},
        schema={"la_code": pl.String, "annual_rate": pl.Float64, "line": pl.Int64},
    )


def _check_rate_row(
    name: str, line: int, cells: list[str], seen: dict[str, int], report: Report
) -> tuple[str, float]:
    """One row's la_code and annual_rate, with a problem reported for each bad cell."""
    code, text = cells
    if not LA_CODE.match(code):
        report.error(
            name,
            line,
            "la_code",
            f"{code!r} is not a 3-digit DfE LA code" if code else "no la_code",
            "use the code schools.csv uses, e.g. 852 for Southampton (not the 9-character "
            "ONS code)",
        )
    elif code in seen:
        report.error(name, line, "la_code", f"LA {code} is already on row {seen[code]}")
    else:
        seen[code] = line
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate):
        report.error(
            name,
            line,
            "annual_rate",
            f"{text!r} is not a number" if text else "no annual_rate",
            "give new EHE registrations a year as a fraction of pupils, e.g. 0.0075",
        )
    elif not 0 <= rate <= MAX_LA_RATE:
        report.error(
            name,
            line,
            "annual_rate",
            f"{text} is outside 0 to {MAX_LA_RATE:g}",
            "give the rate as a fraction, not a percentage: 1.4% a year is 0.014",
        )
    return code, rate


def _csv_rows(path: Path, report: Report) -> list[list[str]] | None:
    """The table's rows as text (UTF-8, or cp1252 as Excel on Windows saves it)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        report.error(str(path), None, None, f"cannot read it ({error.strerror})")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    try:
        return list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        report.error(str(path), None, None, f"not a readable CSV file ({error})")
        return None
