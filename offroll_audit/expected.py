"""Expected exits per school by indirect standardisation (methodology.md section 1).

Pupils are aggregated to case-mix cells (school x SEN x disadvantage x social
care x year group) before any modelling: a national dataset of millions of
pupils becomes a few hundred thousand cells and the binomial GLM on cells
gives the same estimates as the pupil-level fit. E_j = sum_c n_jc p_c.
"""

from __future__ import annotations

import functools
import threading
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.special import expit

from offroll_audit import codes
from offroll_audit.problems import UsageError
from offroll_audit.profile import THRESHOLDS
from offroll_audit.window import Window

DEFAULT_CASE_MIX = ["sen_provision", "disadvantaged", "social_care", "year_group"]
GROUPINGS = ["sen_provision", "disadvantaged", "social_care", "key_stage"]
INTERACTING = ["sen_provision", "disadvantaged", "social_care"]
# Outcomes are assessed in parallel threads, and warning filters are process-wide, so only one
# GLM fit at a time may silence statsmodels' separation warnings.
_QUIET_FIT = threading.Lock()


@dataclass
class Baseline:
    """Reference rates per case-mix cell, and where they came from."""

    kind: str  # local | file
    source: str
    rates: pl.DataFrame  # case-mix columns + `rate` (probability of the outcome within the window)
    model: str = "main"
    excluded_urns: list[str] = field(default_factory=list)  # left out of the pooled fit
    left_out_urns: list[str] = field(default_factory=list)  # judged against leave-one-out rates
    note: str = ""
    fit: RateFit | None = None  # how a local baseline's rates were fitted (the final fit)
    warnings: list[str] = field(default_factory=list)  # the refit's and leave-one-out's
    notes: list[str] = field(default_factory=list)
    self_review: Any = None  # kind "self": its level and reference (self_review.SelfReview)

    def all_warnings(self) -> list[str]:
        """What could not be done as asked, in plain English: the fit's, then the guards'."""
        return (self.fit.warnings if self.fit else []) + self.warnings

    def all_notes(self) -> list[str]:
        return (self.fit.notes if self.fit else []) + self.notes


# --------------------------------------------------------------------------- pupils at risk


def pupils_at_risk(
    pupils: pl.DataFrame, exits: pl.DataFrame, window: Window, outcomes: dict[str, pl.Expr]
) -> pl.DataFrame:
    """One row per pupil per school with exposure and a 0/1 column per outcome.

    `outcomes` maps an outcome name to a filter on the classified exits frame;
    a pupil counts once per school whatever number of exits (contract). One
    join for all outcomes: at national scale each join of 9M rows costs seconds.

    Exposure (see `exposure`): a pupil who left in the window counts from their start
    to the window's end (at risk until the exit ended it), so leaving does not shrink
    the denominator of the very rate it is part of.
    """
    hits = (
        exits.filter(pl.col("in_window"))
        .group_by("pupil_id", "urn")
        .agg([condition.any().cast(pl.Int64).alias(name) for name, condition in outcomes.items()])
        .with_columns(pl.lit(True).alias("_left"))
    )
    frame = pupils.join(hits, on=["pupil_id", "urn"], how="left")
    return (
        frame.with_columns(
            exposure(window, left=pl.col("_left").fill_null(False)),
            *[pl.col(name).fill_null(0) for name in outcomes],
        )
        .drop("_left")
        .filter(pl.col("exposure") > 0)
    )


def exposure(window: Window, left: pl.Expr | None = None) -> pl.Expr:
    """Share of the window a pupil was at risk, from on_roll_from/on_roll_to (whole without
    dates); a pupil who `left` in the window is at risk from their start to the window's end."""
    return (exposure_days(window, left) / window.days).alias("exposure")


def exposure_days(window: Window, left: pl.Expr | None = None) -> pl.Expr:
    """Whole days of the window a pupil was at risk (see `exposure`). Cells sum these integers
    and divide once: a parallel sum of fractions depends on the order the threads add them in,
    and the last digits of an expected count would differ from run to run."""
    start = pl.max_horizontal(pl.col("on_roll_from").fill_null(window.start), pl.lit(window.start))
    stayed = pl.min_horizontal(pl.col("on_roll_to").fill_null(window.end), pl.lit(window.end))
    stop = stayed if left is None else pl.when(left).then(pl.lit(window.end)).otherwise(stayed)
    days = ((stop - start).dt.total_days() + 1).clip(0, window.days)
    return days.cast(pl.Int64).alias("exposure_days")


def pattern_key(schema: pl.Schema, case_mix: list[str]) -> pl.Expr:
    """One integer per case-mix pattern (mixed radix over the columns' codes, missing = an extra
    code). Grouping and joining on one integer is several times faster than on the columns."""
    key = pl.lit(0, dtype=pl.UInt64)
    for column in case_mix:
        size, code = _coded(schema, column)
        key = key * (size + 1) + code.cast(pl.UInt64).fill_null(size)
    return key


def pattern_columns(patterns: pl.Series, schema: pl.Schema, case_mix: list[str]) -> pl.DataFrame:
    """The inverse of pattern_key: each distinct pattern with its case-mix columns."""
    frame = patterns.unique().sort().to_frame("pattern")
    radix, columns = 1, []
    for column in reversed(case_mix):
        size, _ = _coded(schema, column)
        dtype = schema[column]
        values = dict(enumerate(_labels(dtype)))
        code = (pl.col("pattern") // radix) % (size + 1)
        columns.append(code.replace_strict(values, default=None, return_dtype=dtype).alias(column))
        radix *= size + 1
    return frame.with_columns(columns[::-1])


def _labels(dtype: pl.DataType) -> list:
    """The values of a coded column's codes 0, 1, ...: an Enum's categories, or False, True."""
    return list(dtype.categories) if isinstance(dtype, pl.Enum) else [False, True]


def _coded(schema: pl.Schema, column: str) -> tuple[int, pl.Expr]:
    """How many codes a case-mix column has, and its code (0-based) as an expression."""
    dtype = schema[column]
    if isinstance(dtype, pl.Enum):
        return len(dtype.categories), pl.col(column).to_physical()
    if dtype == pl.Boolean:
        return 2, pl.col(column)
    raise UsageError(f"case-mix column {column} must be a coded column (got {dtype})")


CELL_SHIFT = 1 << 40  # roll cell key = URN (6 digits) x 2^40 + pattern


def roll_cells(
    pupils: pl.DataFrame,
    exits: pl.DataFrame,
    window: Window,
    outcomes: dict[str, pl.Expr],
    case_mix: list[str],
) -> pl.DataFrame:
    """Every school x pattern of `case_mix` + year group on the roll: `roll` (census pupils),
    `pupils` (at risk in the window), `trials` (their exposure), `events_<outcome>`, in the
    order of `cell` (URN x 2^40 + pattern).

    The same numbers as summing pupils_at_risk over the cells (test), without joining
    millions of pupils to their exits: the roll is aggregated on its own as if nobody had
    left, then the few pupils who left in the window are corrected from the exits side,
    where classification has already attached their roll row (`pupil_line`). Cells are
    keyed by one integer and decoded afterwards, because grouping 9M rows by text is slow.
    """
    keys = [*case_mix, *[c for c in ["year_group"] if c not in case_mix]]
    cell = (pl.col("urn").cast(pl.UInt64) * CELL_SHIFT + pattern_key(pupils.schema, keys)).alias(
        "cell"
    )
    stayed = (
        pupils.lazy()
        .select(cell, exposure_days(window))
        .group_by("cell")
        .agg(
            pl.len().alias("roll"),
            (pl.col("exposure_days") > 0).sum().alias("pupils"),
            pl.col("exposure_days").sum().alias("days"),
        )
    )
    events = [f"events_{name}" for name in outcomes]
    leavers = exits.filter(pl.col("in_window") & pl.col("pupil_line").is_not_null()).select(
        "pupil_line",  # the roll row: one pupil at one school
        "urn",
        "on_roll_from",
        "on_roll_to",
        *keys,
        *[rule.alias(e) for e, rule in zip(events, outcomes.values(), strict=True)],
    )
    if leavers.get_column("pupil_line").n_unique() < leavers.height:
        # A pupil who left twice counts once. Rare, and this group-by is most of the stage's
        # time nationally, so it runs only when some pupil did.
        leavers = leavers.group_by("pupil_line").agg(
            pl.exclude("pupil_line", *events).first(), pl.col(events).any()
        )
    corrections = (
        leavers.lazy()
        .select(
            cell,
            exposure_days(window).alias("_stayed"),
            exposure_days(window, left=pl.lit(True)).alias("_left"),
            *events,
        )
        .group_by("cell")
        .agg(
            (pl.col("_left") - pl.col("_stayed")).sum().alias("_days"),
            ((pl.col("_left") > 0).cast(pl.Int64) - (pl.col("_stayed") > 0).cast(pl.Int64))
            .sum()
            .alias("_pupils"),
            *[(pl.col(e) & (pl.col("_left") > 0)).sum().alias(e) for e in events],
        )
    )
    cells = (
        stayed.join(corrections, on="cell", how="left")
        .select(
            "cell",
            (pl.col("cell") // CELL_SHIFT).cast(pl.String).str.zfill(6).alias("urn"),
            (pl.col("cell") % CELL_SHIFT).alias("_pattern"),
            "roll",
            (pl.col("pupils") + pl.col("_pupils").fill_null(0)).alias("pupils"),
            ((pl.col("days") + pl.col("_days").fill_null(0)) / window.days).alias("trials"),
            *[pl.col(e).fill_null(0).cast(pl.Int64) for e in events],
        )
        .sort("cell")
        .collect(engine="streaming")  # on every core; in memory it took twice as long
    )
    decoded = pattern_columns(cells.get_column("_pattern"), pupils.schema, keys)
    decoded = decoded.rename({"pattern": "_pattern"}).with_columns(key_stage_expr())
    return cells.join(decoded, on="_pattern", how="left", maintain_order="left").drop("_pattern")


def aggregate_cells(cells: pl.DataFrame, case_mix: list[str]) -> pl.DataFrame:
    """The cells a model sees: roll cells with pupils at risk, regrouped over `case_mix` and key
    stage (when year group is not in the case mix), with their pattern key."""
    cells = cells.filter(pl.col("pupils") > 0).drop("roll")
    if "year_group" in case_mix:  # roll cells are these cells already, in URN-pattern order
        return cells.with_columns(
            pl.col("urn").set_sorted(),  # zero-padded, so text order is cell order
            (pl.col("cell") % CELL_SHIFT).alias("pattern"),
        ).drop("cell")
    counts = [c for c in cells.columns if c in ("trials", "pupils") or c.startswith("events_")]
    cells = cells.group_by(["urn", *case_mix, "key_stage"]).agg(pl.col(counts).sum())
    return cells.with_columns(pattern_key(cells.schema, case_mix).alias("pattern")).sort(
        ["urn", *case_mix, "key_stage"]
    )


def key_stage_expr() -> pl.Expr:
    return (
        pl.col("year_group")
        .cast(pl.String)
        .replace_strict(codes.KEY_STAGE)
        .cast(codes.KeyStage)
        .alias("key_stage")
    )


# --------------------------------------------------------------------------- local baseline


def design_matrix(
    cells: pl.DataFrame, case_mix: list[str], model: str, fitted: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Intercept + treatment-coded dummies (reference = first level present in the `fitted`
    rows, all rows by default; a level absent from them has no column: it takes the reference's
    effect)."""
    rows = np.ones(cells.height, dtype=bool) if fitted is None else fitted
    columns: list[np.ndarray] = [np.ones(cells.height)]
    names = ["intercept"]
    dummies: dict[str, list[tuple[str, np.ndarray]]] = {}
    for factor in case_mix:
        values = cells.get_column(factor).cast(pl.String).to_numpy()
        levels = sorted(set(values[rows].tolist()), key=_level_order(factor))
        dummies[factor] = [(f"{factor}={lvl}", (values == lvl).astype(float)) for lvl in levels[1:]]
        for name, column in dummies[factor]:
            names.append(name)
            columns.append(column)
    if model == "interactions":
        for a, b in _interacting_pairs(case_mix):
            for name_a, col_a in dummies[a]:
                for name_b, col_b in dummies[b]:
                    product = col_a * col_b
                    if product[rows].any():
                        names.append(f"{name_a}:{name_b}")
                        columns.append(product)
    return np.column_stack(columns), names


def _level_order(factor: str):
    orders = {
        "sen_provision": codes.SEN_PROVISION,
        "social_care": codes.SOCIAL_CARE,
        "year_group": codes.YEAR_GROUPS,
        "disadvantaged": ["false", "true"],
    }
    order = orders.get(factor)
    return (lambda v: order.index(v) if v in order else len(order)) if order else (lambda v: v)


@dataclass(frozen=True)
class CellLayout:
    """One outcome's cells as arrays: each cell's school and pattern as an index. A school's
    expected count under any rates is then one gather and one bincount, and a fit's pattern
    totals without some schools one bincount; the robust refit needs both several times, and
    a join and group-by over a national frame of 900,000 cells cost 30-40 ms each time."""

    urns: pl.Series  # the schools, in URN order
    patterns: pl.DataFrame  # pattern key and case-mix columns, in key order
    school: np.ndarray  # per cell: index into urns
    pattern: np.ndarray  # per cell: index into patterns
    trials: np.ndarray
    events: np.ndarray

    @classmethod
    def of(cls, cells: pl.DataFrame, case_mix: list[str]) -> CellLayout:
        index = cells.select(
            (pl.col("urn").rank("dense") - 1).alias("school"),
            (pl.col("pattern").rank("dense") - 1).alias("pattern"),
        )
        patterns = cells.group_by("pattern").agg(pl.col(case_mix).first()).sort("pattern")
        return cls(
            urns=cells.get_column("urn").unique().sort(),
            patterns=patterns,
            school=index.get_column("school").to_numpy(),
            pattern=index.get_column("pattern").to_numpy(),
            trials=cells.get_column("trials").cast(pl.Float64).to_numpy(),
            events=cells.get_column("events").cast(pl.Float64).to_numpy(),
        )

    def observed(self) -> np.ndarray:
        return np.bincount(self.school, weights=self.events, minlength=self.urns.len())

    def pattern_rates(self, rates: pl.DataFrame, case_mix: list[str]) -> np.ndarray:
        """`rates` (case-mix columns + rate) per pattern, in key order (a pattern without a
        rate: 0, as in expected_by_cell)."""
        lookup = rates.select(pattern_key(rates.schema, case_mix).alias("pattern"), "rate")
        aligned = self.patterns.select("pattern").join(
            lookup, on="pattern", how="left", maintain_order="left"
        )
        return aligned.get_column("rate").fill_null(0.0).to_numpy()

    def cell_expected(self, rates: pl.DataFrame, case_mix: list[str]) -> np.ndarray:
        """Each cell's expected count under `rates` (trials x its pattern's rate)."""
        return self.trials * self.pattern_rates(rates, case_mix)[self.pattern]

    def expected(self, rates: pl.DataFrame, case_mix: list[str]) -> np.ndarray:
        """Each school's expected count under `rates`."""
        weights = self.cell_expected(rates, case_mix)
        return np.bincount(self.school, weights=weights, minlength=self.urns.len())

    def pattern_sums(self, cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Trials and events per pattern (in key order) over all cells, or the `cells` mask."""
        weight = 1.0 if cells is None else cells
        size = self.patterns.height
        return (
            np.bincount(self.pattern, self.trials * weight, size),
            np.bincount(self.pattern, self.events * weight, size),
        )

    def pattern_totals(self, exclude: list[str], case_mix: list[str]) -> pl.DataFrame:
        """Case-mix columns, trials and events of every pattern over the schools not in
        `exclude` (a pattern only they have keeps its row, with zeros)."""
        trials, events = self.pattern_sums((~self.urns.is_in(exclude)).to_numpy()[self.school])
        return (
            self.patterns.with_columns(pl.Series("trials", trials), pl.Series("events", events))
            .drop("pattern")
            .sort(case_mix)
        )


def fit_local_rates(
    cells: pl.DataFrame, case_mix: list[str], model: str = "main", exclude: list[str] | None = None
) -> pl.DataFrame:
    """Pooled rate for every case-mix pattern in `cells`, from a binomial-logit GLM fitted on the
    aggregated cells of the schools not in `exclude` (see fit_pattern_rates)."""
    totals = CellLayout.of(cells, case_mix).pattern_totals(exclude or [], case_mix)
    return fit_pattern_rates(totals, case_mix, model)


def fit_pattern_rates(patterns: pl.DataFrame, case_mix: list[str], model: str) -> pl.DataFrame:
    """Rates from pattern totals (case-mix columns, trials, events; CellLayout.pattern_totals);
    see fit_rates, which also says how they were obtained."""
    return fit_rates(patterns, case_mix, model).rates


# --------------------------------------------------------------------------- degrading gracefully

FACTOR_TEXT = {
    "sen_provision": "SEN provision",
    "disadvantaged": "disadvantage",
    "social_care": "social care",
    "year_group": "year group",
    "key_stage": "key stage",
}
MAX_NAMED = 10  # schools named in one sentence before "and N more"
SCORE_TOLERANCE = 1e-7  # a fit whose score equations hold to this has reached its maximum
ALMOST_ONE = 1 - 1e-6  # a fitted rate this close to 1 is a fit heading to infinity
NO_EVENTS = "there were none in the window, so every expected count is 0 and no school was tested"
OVERALL_RATE = (
    "the rates could not be fitted by case mix (too few pupils and exits for the model), "
    "so one overall rate was used for every pupil"
)


@dataclass(frozen=True)
class Terms:
    """The case-mix model a fit ended up with: its factors, main effects or pairwise
    interactions, and levels pooled with another level (recoded before the design is built)."""

    factors: tuple[str, ...]
    model: str = "main"  # main | interactions
    pooled: tuple[tuple[str, str, str], ...] = ()  # (factor, level, the level it was pooled with)

    def recode(self, patterns: pl.DataFrame) -> pl.DataFrame:
        """`patterns` with each pooled level replaced by the level it was pooled with."""
        if not self.pooled:
            return patterns
        merged: dict[str, dict[str, str]] = {}
        for factor, level, into in self.pooled:
            merged.setdefault(factor, {})[level] = into
        for mapping in merged.values():  # a level pooled into one pooled later: follow the chain
            for level, into in mapping.items():
                while into in mapping:
                    into = mapping[into]
                mapping[level] = into
        return patterns.with_columns(
            pl.col(f).cast(pl.String).replace(mapping).alias(f) for f, mapping in merged.items()
        )

    def design(self, patterns: pl.DataFrame, fitted: np.ndarray | None = None):
        """design_matrix of the recoded patterns (levels and references from `fitted`)."""
        return design_matrix(self.recode(patterns), list(self.factors), self.model, fitted)

    def describe(self) -> str:
        if not self.factors:
            return "one overall rate (no case-mix terms)"
        effects = "main effects" if self.model == "main" else "main effects and interactions"
        return f"{effects} of {_and(FACTOR_TEXT.get(f, f) for f in self.factors)}"


@dataclass
class RateFit:
    """Rates per case-mix pattern, with what was done to get them where the data were too thin
    for the model asked for (`warnings`) and facts of the fit worth stating (`notes`)."""

    rates: pl.DataFrame  # case-mix columns + rate
    terms: Terms | None  # the GLM's terms; None when no GLM was fitted (saturated, no events)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fit_rates(patterns: pl.DataFrame, case_mix: list[str], model: str) -> RateFit:
    """Rates from pattern totals, degrading gracefully when the data cannot support the model.

    The GLM is fitted with proportions and trials as variance weights, which is the pupil-level
    likelihood regrouped. Patterns seen only at excluded schools (no trials left) still get a
    predicted rate (a missing rate would make their expected count 0 and the school look worse);
    a level seen only there takes the reference level's rate. "saturated" uses each pattern's
    pooled rate (the overall rate where only excluded schools have the pattern).

    Small data: a level nobody in it left gets rate 0 (the limit its maximum-likelihood
    estimate heads to); a level everyone in it left is pooled with another level; effects the
    data cannot tell apart are dropped (see _glm_fit). When the model still cannot be fitted,
    interactions are dropped, then factors (most levels first), then one overall rate is used.
    """
    trials = patterns.get_column("trials").to_numpy().astype(float)
    events = patterns.get_column("events").to_numpy().astype(float)
    if model == "saturated" or events.sum() == 0:
        return _saturated(patterns, case_mix, trials, events)
    if model not in ("main", "interactions"):
        raise UsageError(f"case_mix_model {model!r}: use main, interactions or saturated")
    for factors, form, reduction in _reductions(patterns, case_mix, model, trials > 0):
        fit = _glm_fit(patterns, case_mix, factors, form, trials, events, reduction is None)
        if fit is not None:
            fit.warnings[:0] = [reduction] if reduction else []
            return fit
    return _overall(patterns, case_mix, trials, events)


def _saturated(
    patterns: pl.DataFrame, case_mix: list[str], trials: np.ndarray, events: np.ndarray
) -> RateFit:
    """Each pattern's own pooled rate (the overall rate where it has no trials left)."""
    overall = events.sum() / trials.sum() if trials.sum() > 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(trials > 0, events / trials, overall)
    frame = patterns.select(case_mix).with_columns(pl.Series("rate", rate))
    return RateFit(frame, None, warnings=[NO_EVENTS] if events.sum() == 0 else [])


def _overall(
    patterns: pl.DataFrame, case_mix: list[str], trials: np.ndarray, events: np.ndarray
) -> RateFit:
    """The last resort: one rate for every pupil (still sums to the observed count)."""
    rate = np.full(patterns.height, min(events.sum() / trials.sum(), 1.0))
    frame = patterns.select(case_mix).with_columns(pl.Series("rate", rate))
    return RateFit(frame, Terms(()), warnings=[OVERALL_RATE])


def _reductions(
    patterns: pl.DataFrame, case_mix: list[str], model: str, seen: np.ndarray
) -> Iterator[tuple[list[str], str, str | None]]:
    """The models to try in turn (factors, main or interactions, what was given up): the one
    asked for, then without interactions, then without factors, the one with most levels (the
    most terms) first. Factors with one level add no terms and are never dropped."""
    yield list(case_mix), model, None
    if model == "interactions":
        yield (
            list(case_mix),
            "main",
            "the interactions could not be fitted, so main effects alone were used",
        )
    levels = {f: patterns.filter(seen).get_column(f).n_unique() for f in case_mix}
    factors, dropped = list(case_mix), []
    while (varying := [f for f in factors if levels[f] > 1]) and len(varying) > 1:
        worst = max(reversed(varying), key=levels.__getitem__)  # ties: the last in the case mix
        factors.remove(worst)
        dropped.append(FACTOR_TEXT.get(worst, worst))
        yield (
            list(factors),
            "main",
            f"the rates could not be fitted with {_and(dropped)} in the case mix, so "
            f"{'it was' if len(dropped) == 1 else 'they were'} left out",
        )


def _glm_fit(
    patterns: pl.DataFrame,
    case_mix: list[str],
    factors: list[str],
    form: str,
    trials: np.ndarray,
    events: np.ndarray,
    plain_first: bool = False,
) -> RateFit | None:
    """One binomial-logit fit of `factors`, or None when it does not converge.

    Events may exceed trials in a cell (pupils who joined late and left count for part of the
    window): the fit solves the same score equations (quasi-likelihood), so expected counts
    still add up to the observed. Levels everyone or nobody left are settled first (see
    _settle_levels); then design columns that are combinations of earlier ones on the fitted
    cells are dropped, since the data cannot tell their effects apart. With `plain_first`,
    when nothing needs pooling, the plain fit on every cell is tried first (_plain_fit).
    """
    seen = trials > 0
    terms, limit, warnings, notes = _settle_levels(patterns, factors, form, seen, trials, events)
    if plain_first and not terms.pooled:
        plain = _plain_fit(patterns, factors, form, trials, events)
        if plain is not None:
            return RateFit(_with_rate(patterns, case_mix, plain), terms, warnings, notes)
    fitted = seen & ~limit
    exog, names = terms.design(patterns, fitted)
    keep = independent_columns(exog[fitted])
    notes += _inseparable_text(exog[fitted], names, keep)  # the fitted rates are the same
    glm = _converged_glm(exog[fitted][:, keep], events[fitted], trials[fitted])
    if glm is None:
        return None
    rate = np.where(limit, 0.0, np.clip(glm.predict(exog[:, keep]), 0.0, 1.0))
    return RateFit(_with_rate(patterns, case_mix, rate), terms, warnings, notes)


def _with_rate(patterns: pl.DataFrame, case_mix: list[str], rate: np.ndarray) -> pl.DataFrame:
    return patterns.select(case_mix).with_columns(pl.Series("rate", rate))


def _plain_fit(
    patterns: pl.DataFrame, factors: list[str], form: str, trials: np.ndarray, events: np.ndarray
) -> np.ndarray | None:
    """The fit on every cell with pupils at risk, levels without events included; its rates,
    or None unless its score equations hold (it reached the maximum, or its limit where a level
    has no events: those coefficients head to minus infinity and their cells' rates to 0, about
    1e-10 when the iterations stop), no rate heads to 1 and, where some cells have no pupils at
    risk (they are predicted), its design has full rank.

    On ordinary data this is the fit, and the rates are exactly those of the plain GLM; the
    settled route of _glm_fit gives the same rates to about 1e-10, and is the one that copes
    with collinear designs and with levels everyone left.
    """
    exog, _ = design_matrix(patterns, factors, form)
    seen = trials > 0
    estimable = (exog[seen] != 0).any(axis=0)  # a dummy with no fitted pupils stays at 0
    design = exog[seen][:, estimable]
    if not seen.all() and not independent_columns(design).all():
        return None  # cells without pupils at risk would take arbitrary rates
    glm = _glm(design, events[seen], trials[seen])
    if glm is None:
        return None
    fitted = glm.predict(design)
    score = design.T @ (events[seen] - trials[seen] * fitted)
    if not np.abs(score).max() < SCORE_TOLERANCE or fitted.max() >= ALMOST_ONE:
        return None  # short of the maximum, or heading to a rate of 1 (see _settle_levels)
    return np.clip(glm.predict(exog[:, estimable]), 0.0, 1.0)


def _settle_levels(
    patterns: pl.DataFrame,
    factors: list[str],
    form: str,
    seen: np.ndarray,
    trials: np.ndarray,
    y: np.ndarray,
) -> tuple[Terms, np.ndarray, list[str], list[str]]:
    """The terms to fit and the cells whose rate is 0, with a sentence for what was done.

    A level everyone at risk in left (a handful of pupils) is pooled with the factor's first
    other level, so that its effect is not estimated from them alone (it would be a rate of 1).
    Cells in a level, or a combination of levels, with pupils at risk but no events get rate
    0: the limit of the maximum-likelihood fit, whose coefficient for them heads to minus
    infinity while the others do not depend on them; they are left out of the fit. Each step
    can expose the other (a level's last events may sit in another's pooled cells, or its only
    event-free cells in an empty level), so they repeat until neither finds anything.
    """
    pooled: list[tuple[str, str, str, float]] = []
    empty: dict[str, list[str]] = {}
    limit = np.zeros(patterns.height, dtype=bool)
    while True:
        terms = Terms(tuple(factors), form, tuple((f, lvl, to) for f, lvl, to, _ in pooled))
        frame, fitted = terms.recode(patterns), seen & ~limit
        full = _full_levels(frame, factors, fitted, trials, y)
        if full:
            pooled += full
            continue
        rows, found = _cells_without_events(frame, factors, form, fitted, y)
        if not rows.any():
            break
        limit |= rows
        for group, levels in found.items():
            empty.setdefault(group, []).extend(levels)
    notes = []
    if empty:
        groups = [_pupils_text(group, levels) for group, levels in empty.items()]
        notes.append(
            "none of these pupils left this way in the data the rates were fitted on, so their "
            f"expected rate is 0: {'; '.join(groups)}"
        )
    return terms, limit, _pooled_text(pooled), notes


def _pooled_text(pooled: list[tuple[str, str, str, float]]) -> list[str]:
    """The warning for the levels pooled because everyone at risk in them left: one sentence,
    however many."""
    if not pooled:
        return []
    if len(pooled) == 1:
        factor, level, into, at_risk = pooled[0]
        return [
            f"too few pupils to estimate the effect of {FACTOR_TEXT.get(factor, factor)} "
            f"{level} ({_everyone(at_risk)} left), so it was pooled with '{into}'"
        ]
    each = [
        f"{FACTOR_TEXT.get(factor, factor)} {level} ({_everyone(at_risk)} left; pooled with "
        f"'{into}')"
        for factor, level, into, at_risk in pooled
    ]
    return [f"too few pupils to estimate the effects of {_and(each)}"]


def _full_levels(
    frame: pl.DataFrame, factors: list[str], fitted: np.ndarray, trials: np.ndarray, y: np.ndarray
) -> list[tuple[str, str, str, float]]:
    """(factor, level, the level to pool it with, pupils at risk) for each level everyone at
    risk in left, among the fitted cells; a factor whose every level is so is left alone."""
    found = []
    for factor in factors:
        sums = _level_sums(_factor_values(frame, factor), fitted, trials, y, factor)
        full = [(level, n) for level, n, e in sums if e >= n * (1 - 1e-12)]
        others = [level for level, n, e in sums if e < n * (1 - 1e-12)]
        if others:
            found += [(factor, level, others[0], n) for level, n in full]
    return found


def _cells_without_events(
    frame: pl.DataFrame, factors: list[str], form: str, fitted: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Cells in a level (any factor's, its reference too) with fitted cells but no events among
    them, and those levels by factor; with interactions, once no level is empty, also the cells
    in an empty combination of two interacting factors' levels (the pair's table is saturated,
    so that combination alone heads to minus infinity), under a column-like name."""
    rows = np.zeros(frame.height, dtype=bool)
    found: dict[str, list[str]] = {}
    for factor in factors:
        values = _factor_values(frame, factor)
        for level, _, events in _level_sums(values, fitted, y, y, factor):  # events only
            if events == 0:
                rows |= values == level
                found.setdefault(factor, []).append(level)
    if rows.any() or form == "main":
        return rows, found
    for a, b in _interacting_pairs(factors):  # with interactions each pair's table is saturated
        pair = np.char.add(np.char.add(_factor_values(frame, a), "\x1f"), _factor_values(frame, b))
        for combination in np.unique(pair[fitted]):
            inside = pair == combination
            if y[inside & fitted].sum() == 0:
                rows |= inside
                level_a, level_b = combination.split("\x1f")
                found.setdefault(f"{a}={level_a}:{b}={level_b}", [])
    return rows, found


def _interacting_pairs(factors: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The pairs of factors an interactions model crosses (as design_matrix does)."""
    return [
        (a, b)
        for i, a in enumerate(INTERACTING)
        for b in INTERACTING[i + 1 :]
        if a in factors and b in factors
    ]


def _converged_glm(exog: np.ndarray, y: np.ndarray, trials: np.ndarray):
    """_glm's fit when its Newton iterations settled on rates below 1, else None (separation the
    level checks missed: a combination of levels that nobody, or everybody, left; or a cell of
    pupils who joined late and left, with more exits than pupils at risk and nothing else to
    share a rate with)."""
    fit = _glm(exog, y, trials)
    if fit is None or not fit.mle_retvals.get("converged", False):
        return None
    return fit if fit.predict(exog).max() < ALMOST_ONE else None


def _glm(exog: np.ndarray, y: np.ndarray, trials: np.ndarray):
    """statsmodels' binomial GLM on proportions with trials as variance weights (Newton), or
    None when the iterations fail (a singular Hessian) or end in non-finite coefficients."""
    families, GLM = import_glm()
    with _QUIET_FIT, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation and convergence are judged by the caller
        try:
            fit = GLM(y / trials, exog, family=families.Binomial(), var_weights=trials).fit(
                method="newton", maxiter=100, tol=1e-12
            )
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            return None
    return fit if np.isfinite(fit.params).all() else None


def independent_columns(exog: np.ndarray, tolerance: float = 1e-8) -> np.ndarray:
    """Which columns to keep, taking them in order and keeping each that is not a linear
    combination of those kept before it (Gram-Schmidt, twice for accuracy). So the intercept
    and main effects come before interactions, and earlier factors before later ones."""
    keep = np.zeros(exog.shape[1], dtype=bool)
    basis = np.zeros((0, exog.shape[0]))
    for j, column in enumerate(exog.T):
        residual = column.astype(float)
        for _ in range(2):
            residual = residual - basis.T @ (basis @ residual)
        size = np.linalg.norm(residual)
        if size > tolerance * max(1.0, float(np.linalg.norm(column))):
            keep[j] = True
            basis = np.vstack([basis, residual / size])
    return keep


def _factor_values(frame: pl.DataFrame, factor: str) -> np.ndarray:
    return frame.get_column(factor).cast(pl.String).to_numpy()


def _level_sums(
    values: np.ndarray, rows: np.ndarray, trials: np.ndarray, events: np.ndarray, factor: str
) -> list[tuple[str, float, float]]:
    """(level, trials, events) of each level present in `rows`, in the factor's order."""
    present = sorted(set(values[rows].tolist()), key=_level_order(factor))
    return [
        (
            level,
            float(trials[rows & (values == level)].sum()),
            float(events[rows & (values == level)].sum()),
        )
        for level in present
    ]


def _inseparable_text(exog: np.ndarray, names: list[str], keep: np.ndarray) -> list[str]:
    """A sentence for each dropped design column: which kept effects it could not be told
    apart from (the columns it is a combination of on the fitted cells)."""
    texts = []
    for j in np.flatnonzero(~keep):
        combination, *_ = np.linalg.lstsq(exog[:, keep], exog[:, j], rcond=None)
        kept_names = [n for n, k in zip(names, keep, strict=True) if k]
        partners = [
            _term_text(n)
            for n, c in zip(kept_names, combination, strict=True)
            if abs(c) > 1e-8 and n != "intercept"
        ]
        what = _term_text(names[j])
        if partners:
            texts.append(
                f"the effect of {what} could not be told apart from that of {_and(partners)} "
                "(too few combinations of pupils to separate them), so one effect was fitted "
                "for them"
            )
        else:
            texts.append(f"the effect of {what} could not be estimated, so it was left out")
    return texts


def _term_text(name: str) -> str:
    """A design column's name in words: 'social_care=CLA' -> 'social care CLA',
    'sen_provision=K:disadvantaged=true' -> 'SEN provision K & disadvantaged'."""
    parts = []
    for part in name.split(":"):
        factor, _, level = part.partition("=")
        if factor == "disadvantaged":
            parts.append("disadvantaged" if level == "true" else "not disadvantaged")
        else:
            parts.append(f"{FACTOR_TEXT.get(factor, factor)} {level}")
    return " & ".join(parts)


def _pupils_text(factor: str, levels: list[str]) -> str:
    """'pupils in year group 5 or 14', 'pupils with social care CLA', 'disadvantaged pupils';
    for a combination (a column-like name, no levels): 'non-disadvantaged pupils with social
    care CIN', 'pupils with SEN provision K & social care CIN'."""
    if not levels:
        parts = [part.partition("=") for part in factor.split(":")]
        adjective = "".join(
            ("disadvantaged " if v == "true" else "non-disadvantaged ")
            for f, _, v in parts
            if f == "disadvantaged"
        )
        rest = " & ".join(_term_text(f"{f}={v}") for f, _, v in parts if f != "disadvantaged")
        return f"{adjective}pupils" + (f" with {rest}" if rest else "")
    if factor == "disadvantaged":
        return _or(
            "disadvantaged pupils" if v == "true" else "non-disadvantaged pupils" for v in levels
        )
    preposition = "in" if factor in ("year_group", "key_stage") else "with"
    return f"pupils {preposition} {FACTOR_TEXT.get(factor, factor)} {_or(levels)}"


def _everyone(at_risk: float) -> str:
    """'all 2 at risk', 'the only pupil at risk', or, when part-window pupils make the number
    at risk fractional, 'every pupil at risk'."""
    if abs(at_risk - round(at_risk)) >= 1e-9:
        return "every pupil at risk"
    return "the only pupil at risk" if round(at_risk) == 1 else f"all {at_risk:.0f} at risk"


def _and(items, word: str = "and") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def _or(items) -> str:
    return _and(items, "or")


def named_schools(urns: list[str]) -> str:
    """'school 100001', 'schools 100001 and 100002', '... and 5 more'."""
    shown = urns[:MAX_NAMED]
    text = (
        _and(shown)
        if len(urns) <= MAX_NAMED
        else f"{', '.join(shown)} and {len(urns) - MAX_NAMED} more"
    )
    return f"{'school' if len(urns) == 1 else 'schools'} {text}"


def import_glm():
    """statsmodels' binomial family and GLM. Importing statsmodels (and pandas with it) takes
    most of a second, so the audit starts it early in a thread (audit.warm_up)."""
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    return families, GLM


# --------------------------------------------------------------------------- leave one out


@dataclass
class LeaveOneOut:
    """Rates fitted without each school, for its own patterns, and what could not be done."""

    rates: pl.DataFrame  # urn, pattern, rate
    variance: pl.DataFrame  # urn, expected_variance
    judged: list[str]  # the schools judged against their leave-one-out rates
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def leave_one_out_rates(
    layout: CellLayout, case_mix: list[str], model: str, urns: list[str], iterations: int = 5
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(urn, pattern, rate) and (urn, expected_variance) of leave_one_out with the full model."""
    found = leave_one_out(layout, case_mix, model, urns, None, iterations)
    return found.rates, found.variance


def leave_one_out(
    layout: CellLayout,
    case_mix: list[str],
    model: str,
    urns: list[str],
    terms: Terms | None = None,
    iterations: int = 5,
    excluded: list[str] | None = None,
) -> LeaveOneOut:
    """For each given school, the rates of its own case-mix patterns fitted without its pupils
    and without the `excluded` schools (the robust refit's outliers: a school like an
    off-roller must not be judged against rates the off-roller inflated).

    A school that loses many vulnerable pupils raises the pooled rates for exactly those
    pupils and so its own expected count (in a 40-school LA, by half). Refitting for every
    school would cost a GLM each; instead each fit starts from the pooled coefficients and
    takes Newton steps on the pattern totals minus the school's own cells, for all the
    schools at once (a few hundred patterns, so this is matrix algebra, not a loop over pupils).
    Returns (urn, pattern, rate) and (urn, expected_variance): the sampling variance of the
    school's expected count under those rates. Fitted without the school, E no longer leans
    towards its count, so its own uncertainty must enter the test (see significance.test_schools).

    `terms` is the model the pooled fit ended up with (all of `case_mix` by default). A school
    with every such exit in the data has nothing to be compared with and is left out (judged
    against the pooled rates); effects that only the school's own pupils inform are dropped
    from its fit (its pupils there take another level's rate); see _drop_own_only_effects.
    """
    empty = pl.DataFrame(schema={"urn": pl.String, "pattern": pl.UInt64, "rate": pl.Float64})
    no_variance = pl.DataFrame(schema={"urn": pl.String, "expected_variance": pl.Float64})
    kept = ~layout.urns.is_in(excluded or []).to_numpy()  # per school
    chosen = layout.urns.is_in(urns).to_numpy() & kept
    all_trials, all_events = layout.pattern_sums(kept[layout.school].astype(float))
    own_events = np.bincount(layout.school, weights=layout.events, minlength=layout.urns.len())
    alone = chosen & (own_events >= all_events.sum()) & (all_events.sum() > 0)  # nobody else had
    warnings = []
    if alone.any():
        warnings.append(
            f"{named_schools(layout.urns.filter(alone).to_list())} had every such exit in the "
            "data, so there was nothing to compare them with once their own pupils were left "
            "out; they were judged against the rates from all schools (which include their own "
            "exits)"
        )
    chosen &= ~alone
    if not chosen.any():
        return LeaveOneOut(empty, no_variance, [], warnings)
    own = chosen[layout.school]  # per cell
    s, p = (np.cumsum(chosen) - 1)[layout.school[own]], layout.pattern[own]
    schools = layout.urns.filter(chosen)
    shape = (schools.len(), layout.patterns.height)
    n, y = np.zeros(shape), np.zeros(shape)
    np.add.at(n, (s, p), layout.trials[own])
    np.add.at(y, (s, p), layout.events[own])
    trials, events = all_trials[None, :] - n, all_events[None, :] - y
    notes: list[str] = []
    if model == "saturated" or all_events.sum() == 0:
        rates, variance, more = _saturated_left_out(trials, events, n, schools)
        warnings += more
    else:
        terms = terms or Terms(tuple(case_mix), model)
        exog, names = terms.design(layout.patterns)
        recoded = terms.recode(layout.patterns)
        free = _drop_own_only_effects(exog, trials, n)
        if free is not None:
            warnings += _own_only_text(recoded, terms.factors, names, free, trials, n, schools)
        rates, variance = _logit_newton_batch(exog, trials, events, iterations, n, free)
        notes += _left_out_limit_text(recoded, terms.factors, trials, events, y, schools)
    frame = pl.DataFrame(
        {
            "urn": schools.gather(s),
            "pattern": layout.patterns.get_column("pattern").gather(p),
            "rate": np.clip(rates[s, p], 0.0, 1.0),
        }
    )
    judged = schools.to_list()
    return LeaveOneOut(
        frame,
        pl.DataFrame({"urn": schools, "expected_variance": variance}),
        judged,
        warnings,
        notes,
    )


def _saturated_left_out(
    trials: np.ndarray, events: np.ndarray, own: np.ndarray, schools: pl.Series
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each pattern's rate without the school, and the variance of the school's E; a pattern
    only the school has takes the overall rate without it (as fit_rates does)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        overall = events.sum(axis=1, keepdims=True) / trials.sum(axis=1, keepdims=True)
        overall = np.nan_to_num(np.clip(overall, 0.0, 1.0))
        rates = np.clip(np.where(trials > 0, events / trials, overall), 0.0, 1.0)
        spread = np.where(trials > 0, rates * (1 - rates) / trials, 0.0)
    variance = (own**2 * spread).sum(axis=1)
    unique = ((own > 0) & (trials <= 0)).any(axis=1)
    warnings = []
    if unique.any():
        warnings.append(
            f"{named_schools(schools.filter(unique).to_list())} had pupils of a case-mix cell no "
            "other school had; judged without their own pupils, those pupils took the overall "
            "rate of the other schools"
        )
    return rates, variance, warnings


def _drop_own_only_effects(
    exog: np.ndarray, trials: np.ndarray, own: np.ndarray
) -> np.ndarray | None:
    """Per school, the design columns its fit without it can estimate (None: all, for all).

    A column only the school's own cells inform (a level no other school has, or a
    combination that only its pupils separate) cannot be estimated without it: left in, it
    stays at the pooled value, which leans on the school's own exits, with a variance that
    only the tiny ridge bounds. Held at 0, the school's pupils there take the reference level's
    rate. Only a school with a pattern nobody else has can lose rank, so the check runs for
    those alone; columns the pooled design already cannot separate stay free (the ridge keeps
    them harmless, as it always has).
    """
    suspects = np.flatnonzero(((own > 0) & (trials <= 0)).any(axis=1))
    if suspects.size == 0:
        return None
    pooled = independent_columns(exog)
    free = np.ones((trials.shape[0], exog.shape[1]), dtype=bool)
    for school in suspects:  # rare: schools with a pattern nobody else has
        free[school, pooled] = independent_columns(exog[trials[school] > 0][:, pooled])
    return None if free.all() else free


def _own_only_text(
    frame: pl.DataFrame,
    factors: tuple[str, ...],
    names: list[str],
    free: np.ndarray,
    trials: np.ndarray,
    own: np.ndarray,
    schools: pl.Series,
) -> list[str]:
    """A sentence for each school whose fit without it dropped columns: which of its pupils
    no other school had, and whose rate they took instead."""
    texts = []
    for school in np.flatnonzero(~free.all(axis=1)):
        dropped = {names[j] for j in np.flatnonzero(~free[school])}
        parts = []
        for factor in factors:
            values = _factor_values(frame, factor)
            levels = sorted(set(values.tolist()), key=_level_order(factor))
            left = {lvl: trials[school][values == lvl].sum() for lvl in levels}
            mine = {lvl: own[school][values == lvl].sum() for lvl in levels}
            unique = [lvl for lvl in levels if mine[lvl] > 0 and left[lvl] <= 0]
            if not unique:
                continue
            stand_in = [levels[0]] + [lvl for lvl in levels[1:] if f"{factor}={lvl}" in dropped]
            target = next((lvl for lvl in stand_in if left[lvl] > 0), None)
            took = (
                f"took the rate of {_pupils_text(factor, [target])}"
                if target is not None
                else "took another level's rate"
            )
            parts.append(
                f"no other school had {_pupils_text(factor, unique)}, "
                f"so judged without its own pupils they {took}"
            )
        if not parts:
            effects = _and(_term_text(d) for d in sorted(dropped))
            parts.append(
                f"without its own pupils the effect of {effects} could not be told apart from "
                "the others, so it was left out of its comparison"
            )
        texts.append(f"school {schools[int(school)]}: {'; '.join(parts)}")
    return texts


def _left_out_limit_text(
    frame: pl.DataFrame,
    factors: tuple[str, ...],
    trials: np.ndarray,
    events: np.ndarray,
    own_events: np.ndarray,
    schools: pl.Series,
) -> list[str]:
    """Schools whose own exits were the only ones in a level other schools also have: judged
    without them, that level's rate heads towards 0 (nobody else there left), which makes
    those exits count almost wholly against the school. Said, not changed."""
    found: dict[int, list[str]] = {}
    for factor in factors:
        values = _factor_values(frame, factor)
        levels = sorted(set(values.tolist()), key=_level_order(factor))
        member = np.stack([values == lvl for lvl in levels], axis=1).astype(float)
        hits = (trials @ member > 0) & (events @ member <= 0) & (own_events @ member > 0)
        for school, level in zip(*np.nonzero(hits), strict=True):
            found.setdefault(int(school), []).append(_pupils_text(factor, [levels[level]]))
    return [
        f"school {schools[school]}: its own exits were the only ones among {_or(levels)}, so "
        "judged against the other schools their expected rate is close to 0"
        for school, levels in sorted(found.items())
    ]


def _logit_newton_batch(
    exog: np.ndarray,
    trials: np.ndarray,
    events: np.ndarray,
    iterations: int,
    own: np.ndarray,
    free: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Binomial-logit fits of one design to many (trials, events) rows at once: the fitted
    rates, and the delta-method variance of sum(own x rate) for each row (a school's E).

    Each row starts from the fit to all rows pooled (which it barely differs from), so a few
    Newton steps converge. A tiny ridge keeps the Hessian invertible when a level has no events
    left (separation); its coefficient then heads towards minus infinity, the right answer:
    nobody else had such an exit. `free` (rows x columns) marks the columns each row's fit may
    use; the others are held at 0 (see _drop_own_only_effects).
    """
    k = exog.shape[1]
    pairs = (exog[:, :, None] * exog[:, None, :]).reshape(exog.shape[0], k * k)
    ridge = 1e-8 * np.eye(k)
    both = None if free is None else free[:, :, None] & free[:, None, :]

    def information(beta: np.ndarray, n: np.ndarray, held: bool) -> tuple[np.ndarray, np.ndarray]:
        mu = expit(beta @ exog.T)
        hessian = ((n * mu * (1 - mu)) @ pairs).reshape(-1, k, k) + ridge
        if held and both is not None:  # a held column: its row and column of the identity
            hessian = np.where(both, hessian, np.eye(k))
        return mu, hessian

    def newton(beta: np.ndarray, n: np.ndarray, y: np.ndarray, steps: int, held: bool):
        for _ in range(steps):
            mu, hessian = information(beta, n, held)
            gradient = (y - n * mu) @ exog
            if held and free is not None:
                gradient = gradient * free
            step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
            beta = beta + step
            if np.abs(step).max() < 1e-10:  # converged (quadratically, from a close start)
                break
        return beta

    pooled_n, pooled_y = trials.sum(axis=0, keepdims=True), events.sum(axis=0, keepdims=True)
    pooled = newton(np.zeros((1, k)), pooled_n / len(trials), pooled_y / len(trials), 30, False)
    start = np.repeat(pooled, len(trials), axis=0)
    if free is not None:
        start = start * free
    beta = newton(start, trials, events, iterations, True)
    mu, hessian = information(beta, trials, True)
    slope = (own * mu * (1 - mu)) @ exog  # dE/dbeta for each school
    if free is not None:
        slope = slope * free
    variance = np.einsum("ck,ck->c", slope, np.linalg.solve(hessian, slope[..., None])[..., 0])
    return mu, variance


# --------------------------------------------------------------------------- file baselines


def baseline_path(name_or_file: str, option: str = "--baseline") -> Path:
    """A shipped baseline by name, or a baseline .toml file (for --baseline and --shape)."""
    candidate = Path(name_or_file)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    named = THRESHOLDS / "baselines" / f"{name_or_file}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in (THRESHOLDS / "baselines").glob("*.toml")))
    kinds = "local, self, a baseline name" if option == "--baseline" else "a baseline name"
    raise UsageError(f"{option} {name_or_file!r}: use {kinds} ({known}) or a .toml file")


def read_baseline(path: Path) -> dict[str, Any]:
    """A baseline file's settings, read once per version of the file (an audit asks for them
    per term and outcome; the same dict each time, not to be changed); a bad file is a usage
    error, not a crash."""
    try:
        return _parsed_baseline(path, path.stat().st_mtime_ns)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"baseline {path}: not a readable baseline file ({error})") from None


@functools.lru_cache(maxsize=16)
def _parsed_baseline(path: Path, mtime_ns: int) -> dict[str, Any]:
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    if not isinstance(spec["outcomes"], dict):
        raise TypeError("[outcomes] is not a table")
    return spec


RATES_OF = {"ehe_vulnerable": "ehe"}  # a subgroup's exits take its whole outcome's rates


def baseline_outcome(path: Path, outcome: str) -> dict[str, Any]:
    """What a baseline file gives for one outcome (annual_rate, relative_risk)."""
    outcome_spec = read_baseline(path)["outcomes"].get(RATES_OF.get(outcome, outcome))
    if outcome_spec is None:
        raise UsageError(f"baseline {path.name} has no rates for {outcome}")
    return outcome_spec


def baseline_outcomes(path: Path) -> set[str]:
    """Outcomes a baseline file gives rates for (a subgroup's where its outcome's are)."""
    given = set(read_baseline(path)["outcomes"])
    return given | {sub for sub, whole in RATES_OF.items() if whole in given}


def baseline_annual_rate(path: Path, outcome: str) -> float:
    """The annual rate a baseline file states for an outcome (what its relative risks keep for
    a population with the national mix); a self-review anchors to an LA's rate against it."""
    return float(baseline_outcome(path, outcome)["annual_rate"])


def file_rates(
    path: Path, outcome: str, cells: pl.DataFrame, case_mix: list[str], window: Window
) -> tuple[pl.DataFrame, str]:
    """Rates per case-mix pattern from a published-figures baseline file.

    rate = annual_rate x product of relative risks x window days / 365, with the
    relative risks scaled so the file's reference population keeps its stated
    annual rate. Factors the file does not cover count as 1 (no adjustment).
    """
    spec, outcome_spec = read_baseline(path), baseline_outcome(path, outcome)
    patterns = cells.group_by(case_mix).agg(pl.col("trials").sum()).sort(case_mix)
    relative = pl.lit(1.0)
    for factor in case_mix:
        risks = {
            str(k).lower(): float(v)
            for k, v in outcome_spec.get("relative_risk", {}).get(factor, {}).items()
        }
        if risks:
            level = pl.col(factor).cast(pl.String).str.to_lowercase()
            relative = relative * level.replace_strict(risks, default=1.0, return_dtype=pl.Float64)
    annual = float(outcome_spec["annual_rate"])
    rates = patterns.with_columns((annual * relative * window.days / 365).clip(0, 1).alias("rate"))
    source = f"{spec.get('title', path.stem)} ({spec.get('date', 'undated')})"
    return rates.select(*case_mix, "rate"), source


# --------------------------------------------------------------------------- expected counts


def expected_by_cell(
    cells: pl.DataFrame,
    rates: pl.DataFrame,
    case_mix: list[str],
    own_rates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Each school-cell with its expected count trials x rate; `own_rates` (urn, pattern, rate:
    a school's leave-one-out rates) take precedence over the pooled ones."""
    lookup = rates.select(pattern_key(rates.schema, case_mix).alias("pattern"), "rate")
    joined = cells.join(lookup, on="pattern", how="left", maintain_order="left")
    if own_rates is not None and own_rates.height:
        joined = (
            joined.join(
                own_rates.rename({"rate": "_own"}),
                on=["urn", "pattern"],
                how="left",
                maintain_order="left",
            )
            .with_columns(pl.coalesce("_own", "rate").alias("rate"))
            .drop("_own")
        )
    return joined.with_columns((pl.col("trials") * pl.col("rate").fill_null(0.0)).alias("expected"))


def school_totals(cells_expected: pl.DataFrame) -> pl.DataFrame:
    """Observed, expected and pupils per school."""
    return (
        cells_expected.group_by("urn")
        .agg(
            pl.col("events").sum().alias("observed"),
            pl.col("expected").sum().alias("expected"),
            pl.col("pupils").sum().alias("pupils"),
            pl.col("trials").sum().alias("pupil_years"),
        )
        .sort("urn")
    )


def group_breakdown(cells_expected: pl.DataFrame, groupings: list[str] = GROUPINGS) -> pl.DataFrame:
    """Long frame: urn, grouping, level, observed, expected, pupils (where an excess lies), in
    URN order, then the order of `groupings` and of each one's codes.

    Each grouping is summed on one integer (URN x 256 + grouping x 16 + the level's code, each
    grouping having fewer than 16 levels) and labelled afterwards: grouping a national frame by
    text four times would take a third of a second.
    """
    schema = cells_expected.schema
    frame = cells_expected.lazy().with_columns(pl.col("urn").cast(pl.UInt64).alias("_urn"))
    parts = []
    for index, grouping in enumerate(groupings):
        _, code = _coded(schema, grouping)
        labels = [
            str(label).lower() if isinstance(label, bool) else label
            for label in _labels(schema[grouping])
        ]
        key = pl.col("_urn") * 256 + index * 16 + code.cast(pl.UInt64)
        parts.append(
            frame.group_by(key.alias("_key"))
            .agg(
                pl.col("events").sum().alias("observed"),
                pl.col("expected").sum(),
                pl.col("pupils").sum(),
            )
            .with_columns(
                pl.lit(grouping).alias("grouping"),
                (pl.col("_key") % 16).replace_strict(dict(enumerate(labels))).alias("level"),
            )
        )
    long = pl.concat(parts).sort("_key")
    return long.select(
        (pl.col("_key") // 256).cast(pl.String).str.zfill(6).alias("urn"),
        "grouping",
        "level",
        "observed",
        "expected",
        "pupils",
    ).collect()
