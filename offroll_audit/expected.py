"""Expected exits per school by indirect standardisation (methodology.md section 1).

Pupils are aggregated to case-mix cells (school x SEN x disadvantage x social
care x year group) before any modelling: a national dataset of millions of
pupils becomes a few hundred thousand cells and the binomial GLM on cells
gives the same estimates as the pupil-level fit. E_j = sum_c n_jc p_c.
"""

from __future__ import annotations

import threading
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

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
    start = pl.max_horizontal(pl.col("on_roll_from").fill_null(window.start), pl.lit(window.start))
    stayed = pl.min_horizontal(pl.col("on_roll_to").fill_null(window.end), pl.lit(window.end))
    stop = stayed if left is None else pl.when(left).then(pl.lit(window.end)).otherwise(stayed)
    days = ((stop - start).dt.total_days() + 1).clip(lower_bound=0)
    return (days / window.days).clip(0, 1).alias("exposure")


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
        .select(cell, exposure(window))
        .group_by("cell")
        .agg(
            pl.len().alias("roll"),
            (pl.col("exposure") > 0).sum().alias("pupils"),
            pl.col("exposure").sum().alias("trials"),
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
            exposure(window).alias("_stayed"),
            exposure(window, left=pl.lit(True)).alias("_left"),
            *events,
        )
        .group_by("cell")
        .agg(
            (pl.col("_left") - pl.col("_stayed")).sum().alias("_trials"),
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
            (pl.col("trials") + pl.col("_trials").fill_null(0.0)).alias("trials"),
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
    cells: pl.DataFrame, case_mix: list[str], model: str
) -> tuple[np.ndarray, list[str]]:
    """Intercept + treatment-coded dummies (reference = first level present)."""
    columns: list[np.ndarray] = [np.ones(cells.height)]
    names = ["intercept"]
    dummies: dict[str, list[tuple[str, np.ndarray]]] = {}
    for factor in case_mix:
        values = cells.get_column(factor).cast(pl.String).to_numpy()
        levels = sorted(set(values.tolist()), key=_level_order(factor))
        dummies[factor] = [(f"{factor}={lvl}", (values == lvl).astype(float)) for lvl in levels[1:]]
        for name, column in dummies[factor]:
            names.append(name)
            columns.append(column)
    if model == "interactions":
        pairs = [
            (a, b)
            for i, a in enumerate(INTERACTING)
            for b in INTERACTING[i + 1 :]
            if a in case_mix and b in case_mix
        ]
        for a, b in pairs:
            for name_a, col_a in dummies[a]:
                for name_b, col_b in dummies[b]:
                    product = col_a * col_b
                    if product.any():
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

    def expected(self, rates: pl.DataFrame, case_mix: list[str]) -> np.ndarray:
        """Each school's expected count under `rates` (case-mix columns + rate; a pattern
        without a rate counts 0, as in expected_by_cell)."""
        lookup = rates.select(pattern_key(rates.schema, case_mix).alias("pattern"), "rate")
        aligned = self.patterns.select("pattern").join(
            lookup, on="pattern", how="left", maintain_order="left"
        )
        rate = aligned.get_column("rate").fill_null(0.0).to_numpy()
        weights = self.trials * rate[self.pattern]
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
    """Rates from pattern totals (case-mix columns, trials, events; CellLayout.pattern_totals).

    The GLM is fitted with proportions and trials as variance weights, which is the pupil-level
    likelihood regrouped. Patterns seen only at excluded schools (no trials left) still get a
    predicted rate (a missing rate would make their expected count 0 and the school look worse);
    a level seen only there takes the reference level's rate. "saturated" uses each pattern's
    pooled rate (the overall rate where only excluded schools have the pattern).
    """
    trials = patterns.get_column("trials").to_numpy()
    events = patterns.get_column("events").to_numpy().astype(float)
    if model == "saturated" or events.sum() == 0:
        overall = events.sum() / trials.sum() if trials.sum() > 0 else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(trials > 0, events / trials, overall)
        return patterns.select(case_mix).with_columns(pl.Series("rate", rate))
    if model not in ("main", "interactions"):
        raise UsageError(f"case_mix_model {model!r}: use main, interactions or saturated")
    families, GLM = import_glm()
    exog, _names = design_matrix(patterns, case_mix, model)
    seen = trials > 0
    estimable = (exog[seen] != 0).any(axis=0)  # a dummy with no fitted pupils stays at 0
    with _QUIET_FIT, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation (a level with no events) is handled below
        fit = GLM(
            events[seen] / trials[seen],
            exog[seen][:, estimable],
            family=families.Binomial(),
            var_weights=trials[seen],
        ).fit(method="newton", maxiter=100, tol=1e-12)
    rate = np.clip(fit.predict(exog[:, estimable]), 0.0, 1.0)
    return patterns.select(case_mix).with_columns(pl.Series("rate", rate))


def import_glm():
    """statsmodels' binomial family and GLM. Importing statsmodels (and pandas with it) takes
    most of a second, so the audit starts it early in a thread (audit.warm_up)."""
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    return families, GLM


def leave_one_out_rates(
    layout: CellLayout, case_mix: list[str], model: str, urns: list[str], iterations: int = 5
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """For each given school, the rates of its own case-mix patterns fitted without its pupils.

    A school that loses many vulnerable pupils raises the pooled rates for exactly those
    pupils and so its own expected count (in a 40-school LA, by half). Refitting for every
    school would cost a GLM each; instead each fit starts from the pooled coefficients and
    takes Newton steps on the pattern totals minus the school's own cells, for all the
    schools at once (a few hundred patterns, so this is matrix algebra, not a loop over pupils).
    Returns (urn, pattern, rate) and (urn, expected_variance): the sampling variance of the
    school's expected count under those rates. Fitted without the school, E no longer leans
    towards its count, so its own uncertainty must enter the test (see significance.test_schools).
    """
    empty = pl.DataFrame(schema={"urn": pl.String, "pattern": pl.UInt64, "rate": pl.Float64})
    no_variance = pl.DataFrame(schema={"urn": pl.String, "expected_variance": pl.Float64})
    chosen = layout.urns.is_in(urns).to_numpy()  # per school
    if not chosen.any():
        return empty, no_variance
    own = chosen[layout.school]  # per cell
    s, p = (np.cumsum(chosen) - 1)[layout.school[own]], layout.pattern[own]
    schools = layout.urns.filter(chosen)
    shape = (schools.len(), layout.patterns.height)
    n, y = np.zeros(shape), np.zeros(shape)
    np.add.at(n, (s, p), layout.trials[own])
    np.add.at(y, (s, p), layout.events[own])
    all_trials, all_events = layout.pattern_sums()
    trials, events = all_trials[None, :] - n, all_events[None, :] - y
    if model == "saturated" or events.sum() == 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            rates = np.where(trials > 0, events / trials, 0.0)
            variance = (n**2 * np.where(trials > 0, rates * (1 - rates) / trials, 0.0)).sum(axis=1)
    else:
        exog, _ = design_matrix(layout.patterns, case_mix, model)
        rates, variance = _logit_newton_batch(exog, trials, events, iterations, n)
    frame = pl.DataFrame(
        {
            "urn": schools.gather(s),
            "pattern": layout.patterns.get_column("pattern").gather(p),
            "rate": np.clip(rates[s, p], 0.0, 1.0),
        }
    )
    return frame, pl.DataFrame({"urn": schools, "expected_variance": variance})


def _logit_newton_batch(
    exog: np.ndarray, trials: np.ndarray, events: np.ndarray, iterations: int, own: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Binomial-logit fits of one design to many (trials, events) rows at once: the fitted
    rates, and the delta-method variance of sum(own x rate) for each row (a school's E).

    Each row starts from the fit to all rows pooled (which it barely differs from), so a few
    Newton steps converge. A tiny ridge keeps the Hessian invertible when a level has no events
    left (separation); its coefficient then heads towards minus infinity, the right answer:
    nobody else had such an exit.
    """
    k = exog.shape[1]
    pairs = (exog[:, :, None] * exog[:, None, :]).reshape(exog.shape[0], k * k)
    ridge = 1e-8 * np.eye(k)

    def information(beta: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = expit(beta @ exog.T)
        return mu, ((n * mu * (1 - mu)) @ pairs).reshape(-1, k, k) + ridge

    def newton(beta: np.ndarray, n: np.ndarray, y: np.ndarray, steps: int) -> np.ndarray:
        for _ in range(steps):
            mu, hessian = information(beta, n)
            gradient = (y - n * mu) @ exog
            step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
            beta = beta + step
            if np.abs(step).max() < 1e-10:  # converged (quadratically, from a close start)
                break
        return beta

    pooled_n, pooled_y = trials.sum(axis=0, keepdims=True), events.sum(axis=0, keepdims=True)
    pooled = newton(np.zeros((1, k)), pooled_n / len(trials), pooled_y / len(trials), 30)
    beta = newton(np.repeat(pooled, len(trials), axis=0), trials, events, iterations)
    mu, hessian = information(beta, trials)
    slope = (own * mu * (1 - mu)) @ exog  # dE/dbeta for each school
    variance = np.einsum("ck,ck->c", slope, np.linalg.solve(hessian, slope[..., None])[..., 0])
    return mu, variance


# --------------------------------------------------------------------------- file baselines


def baseline_path(name_or_file: str) -> Path:
    candidate = Path(name_or_file)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    named = THRESHOLDS / "baselines" / f"{name_or_file}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in (THRESHOLDS / "baselines").glob("*.toml")))
    raise UsageError(
        f"--baseline {name_or_file!r}: use local, a baseline name ({known}) or a .toml file"
    )


def baseline_outcomes(path: Path) -> set[str]:
    """Outcomes a baseline file gives rates for; a bad file is a usage error, not a crash."""
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
        return set(spec["outcomes"])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"baseline {path}: not a readable baseline file ({error})") from None


def file_rates(
    path: Path, outcome: str, cells: pl.DataFrame, case_mix: list[str], window: Window
) -> tuple[pl.DataFrame, str]:
    """Rates per case-mix pattern from a published-figures baseline file.

    rate = annual_rate x product of relative risks x window days / 365, with the
    relative risks scaled so the file's reference population keeps its stated
    annual rate. Factors the file does not cover count as 1 (no adjustment).
    """
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    outcome_spec = spec.get("outcomes", {}).get(outcome)
    if outcome_spec is None:
        raise UsageError(f"baseline {path.name} has no rates for {outcome}")
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
