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


def exposure(pupils: pl.DataFrame, window: Window, leavers: pl.DataFrame) -> pl.Series:
    """Share of the window each pupil was at risk, from on_roll_from/on_roll_to.

    A pupil whose exit falls in the window counts from their start to the
    window's end (they were at risk until the exit ended it), so leaving does
    not shrink the denominator of the very rate it is part of. Without dates a
    pupil counts whole.
    """
    frame = pupils.select("pupil_id", "urn", "on_roll_from", "on_roll_to").join(
        leavers.select("pupil_id", "urn").unique().with_columns(pl.lit(True).alias("_left")),
        on=["pupil_id", "urn"], how="left", maintain_order="left",
    )  # fmt: skip
    start = pl.max_horizontal(pl.col("on_roll_from").fill_null(window.start), pl.lit(window.start))
    stop = pl.when(pl.col("_left").fill_null(False)).then(pl.lit(window.end)).otherwise(
        pl.min_horizontal(pl.col("on_roll_to").fill_null(window.end), pl.lit(window.end))
    )
    days = ((stop - start).dt.total_days() + 1).clip(lower_bound=0)
    return frame.select((days / window.days).clip(0, 1).alias("exposure")).to_series()


def pupils_at_risk(pupils: pl.DataFrame, exits: pl.DataFrame, window: Window,
                   outcomes: dict[str, pl.Expr]) -> pl.DataFrame:  # fmt: skip
    """One row per pupil per school with exposure and a 0/1 column per outcome.

    `outcomes` maps an outcome name to a filter on the classified exits frame;
    a pupil counts once per school whatever number of exits (contract).
    """
    in_window = exits.filter(pl.col("in_window"))
    frame = pupils.with_columns(exposure(pupils, window, in_window))
    for name, condition in outcomes.items():
        hit = in_window.filter(condition).select("pupil_id", "urn").unique().with_columns(pl.lit(1).alias(name))
        frame = frame.join(hit, on=["pupil_id", "urn"], how="left", maintain_order="left").with_columns(
            pl.col(name).fill_null(0).cast(pl.Int64)
        )
    return frame.filter(pl.col("exposure") > 0)


def aggregate_cells(at_risk: pl.DataFrame, outcome: str, case_mix: list[str]) -> pl.DataFrame:
    """Case-mix cells per school: trials (pupil exposure), pupils and events."""
    return (
        at_risk.with_columns(key_stage_expr())
        .group_by(["urn", *case_mix, *[g for g in ["key_stage"] if g not in case_mix]])
        .agg(
            pl.col("exposure").sum().alias("trials"),
            pl.len().alias("pupils"),
            pl.col(outcome).sum().alias("events"),
        )
        .sort(["urn", *case_mix])
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
    import statsmodels.api as sm

    exog, _names = design_matrix(patterns, case_mix, model)
    trials = patterns.get_column("trials").to_numpy()
    proportion = patterns.get_column("events").to_numpy() / trials
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation (a level with no events) is handled below
        fit = sm.GLM(proportion, exog, family=sm.families.Binomial(), var_weights=trials).fit(
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
    joined = cells.join(rates, on=case_mix, how="left", maintain_order="left")
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
