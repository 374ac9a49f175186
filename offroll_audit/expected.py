"""Expected exits per school by indirect standardisation (methodology.md section 1).

Pupils are aggregated to case-mix cells (school x SEN x disadvantage x social
care x year group) before any modelling: a national dataset of millions of
pupils becomes a few hundred thousand cells and the binomial GLM on cells
gives the same estimates as the pupil-level fit. E_j = sum_c n_jc p_c.
"""

from __future__ import annotations

import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from offroll_audit import codes
from offroll_audit.problems import UsageError
from offroll_audit.profile import THRESHOLDS
from offroll_audit.window import Window

DEFAULT_CASE_MIX = ["sen_provision", "disadvantaged", "social_care", "year_group"]
GROUPINGS = ["sen_provision", "disadvantaged", "social_care", "key_stage"]
INTERACTING = ["sen_provision", "disadvantaged", "social_care"]


@dataclass
class Baseline:
    """Reference rates per case-mix cell, and where they came from."""

    kind: str  # local | file
    source: str
    rates: pl.DataFrame  # case-mix columns + `rate` (probability of the outcome within the window)
    model: str = "main"
    excluded_urns: list[str] = field(default_factory=list)
    note: str = ""


# --------------------------------------------------------------------------- pupils at risk


def pupils_at_risk(pupils: pl.DataFrame, exits: pl.DataFrame, window: Window,
                   outcomes: dict[str, pl.Expr]) -> pl.DataFrame:  # fmt: skip
    """One row per pupil per school with exposure and a 0/1 column per outcome.

    `outcomes` maps an outcome name to a filter on the classified exits frame;
    a pupil counts once per school whatever number of exits (contract). One
    join for all outcomes: at national scale each join of 9M rows costs seconds.

    Exposure is the share of the window a pupil was at risk, from on_roll_from/
    on_roll_to. A pupil who left in the window counts from their start to the
    window's end (at risk until the exit ended it), so leaving does not shrink
    the denominator of the very rate it is part of. Without dates: whole.
    """
    hits = (
        exits.filter(pl.col("in_window"))
        .group_by("pupil_id", "urn")
        .agg([condition.any().cast(pl.Int64).alias(name) for name, condition in outcomes.items()])
        .with_columns(pl.lit(True).alias("_left"))
    )
    frame = pupils.join(hits, on=["pupil_id", "urn"], how="left")
    start = pl.max_horizontal(pl.col("on_roll_from").fill_null(window.start), pl.lit(window.start))
    stop = pl.when(pl.col("_left").fill_null(False)).then(pl.lit(window.end)).otherwise(
        pl.min_horizontal(pl.col("on_roll_to").fill_null(window.end), pl.lit(window.end))
    )
    days = ((stop - start).dt.total_days() + 1).clip(lower_bound=0)
    return (
        frame.with_columns(
            (days / window.days).clip(0, 1).alias("exposure"),
            *[pl.col(name).fill_null(0) for name in outcomes],
        )
        .drop("_left")
        .filter(pl.col("exposure") > 0)
    )


def pattern_key(schema: pl.Schema, case_mix: list[str]) -> pl.Expr:
    """One integer per case-mix pattern (mixed radix over the columns' codes, missing = an extra
    code). Grouping and joining on one integer is several times faster than on the columns."""
    key = pl.lit(0, dtype=pl.UInt64)
    for column in case_mix:
        dtype = schema[column]
        if isinstance(dtype, pl.Enum):
            size, code = len(dtype.categories), pl.col(column).to_physical()
        elif dtype == pl.Boolean:
            size, code = 2, pl.col(column)
        else:
            raise UsageError(f"case-mix column {column} must be a coded column (got {dtype})")
        key = key * (size + 1) + code.cast(pl.UInt64).fill_null(size)
    return key


def aggregate_cells(at_risk: pl.DataFrame, outcomes: list[str], case_mix: list[str]) -> pl.DataFrame:
    """Case-mix cells per school: trials (pupil exposure), pupils, `events_<outcome>` for each
    outcome, the pattern key, and key stage.

    Millions of pupils become about a million cells in one pass; key stage follows from year
    group, so it is added to the cells rather than computed per pupil.
    """
    keys = [*case_mix, *[c for c in ["year_group"] if c not in case_mix]]
    schema = at_risk.schema
    cell = pl.col("urn").cast(pl.UInt64) * 1_000_000_000 + pattern_key(schema, keys)
    cells = (
        at_risk.lazy()
        .group_by(cell.alias("_cell"))
        .agg(
            pl.col("urn").first(),
            *[pl.col(c).first() for c in keys],
            pl.col("exposure").sum().alias("trials"),
            pl.len().alias("pupils"),
            *[pl.col(o).sum().alias(f"events_{o}") for o in outcomes],
        )
        .drop("_cell")
        .with_columns(key_stage_expr())
        .collect()
    )
    if "year_group" not in case_mix:
        sums = [pl.col(c).sum() for c in ["trials", "pupils", *[f"events_{o}" for o in outcomes]]]
        cells = cells.group_by(["urn", *case_mix, "key_stage"]).agg(sums)
    return cells.with_columns(pattern_key(cells.schema, case_mix).alias("pattern")).sort(
        ["urn", *case_mix, "key_stage"]
    )


def key_stage_expr() -> pl.Expr:
    return pl.col("year_group").cast(pl.String).replace_strict(codes.KEY_STAGE).cast(codes.KeyStage).alias(
        "key_stage"
    )


# --------------------------------------------------------------------------- local baseline


def design_matrix(cells: pl.DataFrame, case_mix: list[str], model: str) -> tuple[np.ndarray, list[str]]:
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
        pairs = [(a, b) for i, a in enumerate(INTERACTING) for b in INTERACTING[i + 1 :]
                 if a in case_mix and b in case_mix]  # fmt: skip
        for a, b in pairs:
            for name_a, col_a in dummies[a]:
                for name_b, col_b in dummies[b]:
                    product = col_a * col_b
                    if product.any():
                        names.append(f"{name_a}:{name_b}")
                        columns.append(product)
    return np.column_stack(columns), names


def _level_order(factor: str):
    orders = {"sen_provision": codes.SEN_PROVISION, "social_care": codes.SOCIAL_CARE,
              "year_group": codes.YEAR_GROUPS, "disadvantaged": ["false", "true"]}  # fmt: skip
    order = orders.get(factor)
    return (lambda v: order.index(v) if v in order else len(order)) if order else (lambda v: v)


def fit_local_rates(cells: pl.DataFrame, case_mix: list[str], model: str = "main") -> pl.DataFrame:
    """Pooled rate per case-mix pattern from a binomial-logit GLM on aggregated cells.

    The GLM is fitted with proportions and trials as variance weights, which is
    the pupil-level likelihood regrouped; "saturated" skips the model and uses
    each pattern's pooled rate.
    """
    patterns = cells.group_by(case_mix).agg(pl.col("trials").sum(), pl.col("events").sum()).sort(case_mix)
    if model == "saturated" or patterns.get_column("events").sum() == 0:
        rate = (pl.col("events") / pl.col("trials")).fill_nan(0.0)
        return patterns.with_columns(rate.alias("rate")).select(*case_mix, "rate")
    if model not in ("main", "interactions"):
        raise UsageError(f"case_mix_model {model!r}: use main, interactions or saturated")
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    exog, _names = design_matrix(patterns, case_mix, model)
    trials = patterns.get_column("trials").to_numpy()
    proportion = patterns.get_column("events").to_numpy() / trials
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation (a level with no events) is handled below
        fit = GLM(proportion, exog, family=families.Binomial(), var_weights=trials).fit(
            method="newton", maxiter=100, tol=1e-12
        )
    rate = np.clip(fit.predict(exog), 0.0, 1.0)
    return patterns.select(case_mix).with_columns(pl.Series("rate", rate))


# --------------------------------------------------------------------------- file baselines


def baseline_path(name_or_file: str) -> Path:
    candidate = Path(name_or_file)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    named = THRESHOLDS / "baselines" / f"{name_or_file}.toml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in (THRESHOLDS / "baselines").glob("*.toml")))
    raise UsageError(f"--baseline {name_or_file!r}: use local, a baseline name ({known}) or a .toml file")


def baseline_outcomes(path: Path) -> set[str]:
    """Outcomes a baseline file gives rates for; a bad file is a usage error, not a crash."""
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
        return set(spec["outcomes"])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"baseline {path}: not a readable baseline file ({error})") from None


def file_rates(path: Path, outcome: str, cells: pl.DataFrame, case_mix: list[str],
               window: Window) -> tuple[pl.DataFrame, str]:  # fmt: skip
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
        risks = {str(k).lower(): float(v) for k, v in outcome_spec.get("relative_risk", {}).get(factor, {}).items()}
        if risks:
            level = pl.col(factor).cast(pl.String).str.to_lowercase()
            relative = relative * level.replace_strict(risks, default=1.0, return_dtype=pl.Float64)
    annual = float(outcome_spec["annual_rate"])
    rates = patterns.with_columns((annual * relative * window.days / 365).clip(0, 1).alias("rate"))
    source = f"{spec.get('title', path.stem)} ({spec.get('date', 'undated')})"
    return rates.select(*case_mix, "rate"), source


# --------------------------------------------------------------------------- expected counts


def expected_by_cell(cells: pl.DataFrame, rates: pl.DataFrame, case_mix: list[str]) -> pl.DataFrame:
    """Each school-cell with its expected count trials x rate."""
    lookup = rates.select(pattern_key(rates.schema, case_mix).alias("pattern"), "rate")
    joined = cells.join(lookup, on="pattern", how="left", maintain_order="left")
    return joined.with_columns((pl.col("trials") * pl.col("rate").fill_null(0.0)).alias("expected"))


def school_totals(cells_expected: pl.DataFrame) -> pl.DataFrame:
    """Observed, expected and pupils per school."""
    return cells_expected.group_by("urn").agg(
        pl.col("events").sum().alias("observed"),
        pl.col("expected").sum().alias("expected"),
        pl.col("pupils").sum().alias("pupils"),
        pl.col("trials").sum().alias("pupil_years"),
    ).sort("urn")


def group_breakdown(cells_expected: pl.DataFrame, groupings: list[str] = GROUPINGS) -> pl.DataFrame:
    """Long frame: urn, grouping, level, observed, expected, pupils (where an excess lies)."""
    parts = []
    for grouping in groupings:
        part = cells_expected.group_by("urn", grouping).agg(
            pl.col("events").sum().alias("observed"),
            pl.col("expected").sum().alias("expected"),
            pl.col("pupils").sum().alias("pupils"),
        )
        parts.append(
            part.select(
                "urn",
                pl.lit(grouping).alias("grouping"),
                pl.col(grouping).cast(pl.String).str.to_lowercase().alias("level")
                if grouping == "disadvantaged" else pl.col(grouping).cast(pl.String).alias("level"),
                "observed", "expected", "pupils",
            )  # fmt: skip
        )
    return pl.concat(parts).sort("urn", "grouping", "level")
