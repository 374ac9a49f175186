"""Researcher mode: which pupils, and which schools, lose children to home education?

The audit asks whether one school's count is unusual. Researchers ask a different
question: other things equal, how much more likely is an exit for a pupil with an
EHC plan, or at an academy in a large trust? This module answers it with a
regression on one row per pupil per school, written as a patsy formula
(`ehe ~ C(sen_provision) + disadvantaged + type`), in three steps:

1. `build_design_frame`: pupils on roll in the window, the outcome (at least one
   in-window exit of that kind at that school), their school's phase, type and
   trust, and derived school-level predictors.
2. `fit_model`: a binomial-logit GLM (odds ratios) or a Poisson-log GLM with the
   pupil's exposure as offset (rate ratios), by maximum likelihood. Pupils in one
   school share its practices, so standard errors are cluster-robust by school
   (or trust) by default; `mixed=True` fits a random intercept instead.
3. `compare_models` and `term_sentences`: a likelihood-ratio test of nested models
   and one plain-English line per coefficient.

Speed without approximation: pupils are first aggregated into covariate patterns
within clusters (counts of pupils and of events). The binomial and Poisson
likelihoods, their scores per cluster and hence the cluster-robust sandwich are
sums over pupils that regroup exactly over such patterns, so 9 million pupils
fit in seconds with the same estimates and standard errors as the pupil-level
fit. The design matrix is built once per distinct combination of predictor
values, and Newton's method runs on those rows' totals. Formulas whose design
depends on the whole sample (patsy's stateful transforms such as `center(x)`),
or whose continuous predictors make patterns nearly unique, are fitted at pupil
level: the choice is automatic and reported.

The random-intercept model (`mixed=True`) is fitted by maximum likelihood, its
marginal likelihood integrated per cluster by adaptive Gauss-Hermite quadrature
(15 nodes, as lme4's glmer with nAGQ = 15), with model-based standard errors.
"""

from __future__ import annotations

import ast
import csv
import difflib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize, special, stats

from offroll_audit import codes, tool_block
from offroll_audit.problems import UsageError

FAMILIES = ("binomial", "poisson")
CLUSTERS = ("school", "trust", "none")
FIT_ON = ("auto", "patterns", "pupils")
Z95 = float(stats.norm.ppf(0.975))
QUADRATURE_NODES = 15
MAX_PARAMETERS = 2000
# Columns of the design frame that are bookkeeping, not predictors.
NOT_PREDICTORS = ("line", "pupil_id", "exposure")
# Column types no formula can use as a predictor: dates, times and nested values.
UNUSABLE_DTYPES = (pl.Date, pl.Datetime, pl.Duration, pl.Time, pl.List, pl.Struct, pl.Array)

OUTCOME_PHRASE = {
    "ehe": "leaving for home education",
    "unexplained": "an unexplained exit",
    "school": "moving to another mainstream school",
    "special": "moving to a special school",
    "ap": "moving to alternative provision",
    "independent": "moving to an independent school",
    "moved_away": "leaving because the family moved away",
    "emigrated": "leaving England",
    "cme": "going missing from education",
    "perm_exclusion": "permanent exclusion",
    "custody": "leaving for custody",
    "deceased": "death",
    "end_of_education": "leaving at the end of compulsory education",
    "dual_ended": "a dual registration ending",
    "other": "leaving for another reason",
}
OUTCOMES = tuple(OUTCOME_PHRASE)

# Names a formula may use besides columns: numpy and patsy's own helpers.
PATSY_NAMES = {
    "C",
    "I",
    "Q",
    "center",
    "standardize",
    "scale",
    "bs",
    "cr",
    "cc",
    "te",
    "Treatment",
    "Sum",
    "Poly",
    "Helmert",
    "Diff",
}
MATH_NAMES = {
    "np": np,
    "numpy": np,
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}
LITERAL_NAMES = {"True", "False", "None"}

NUMERIC_LABELS: dict[str, tuple[float, str]] = {
    # variable: (step the sentence talks about, what one step is)
    "attendance": (0.1, "Each 10 percentage points higher attendance"),
    "suspensions": (1.0, "Each additional suspension"),
    "trust_size": (1.0, "Each additional school in the trust"),
    "school_size": (100.0, "Each 100 more pupils on the school's roll"),
    "school_pct_disadvantaged": (
        10.0,
        "Each 10 percentage points more disadvantaged pupils at the school",
    ),
    "exposure": (0.1, "Each tenth of the window longer on roll"),
}


# =========================================================================== results


@dataclass(frozen=True)
class Term:
    """One coefficient: log-scale estimate and its ratio scale (odds or rate ratio)."""

    term: str
    estimate: float
    std_err: float
    odds_ratio: float
    ci_low: float
    ci_high: float
    p: float
    z: float


@dataclass(frozen=True)
class TermLabel:
    """What a design column means, so a sentence can say it in words."""

    kind: str  # intercept | level | numeric | other
    variable: str | None = None
    level: str | None = None
    reference: str | None = None


@dataclass
class ModelResult:
    formula: str
    outcome: str
    family: str
    cluster: str
    mixed: bool
    estimator: str
    std_err_method: str
    terms: list[Term]
    labels: list[TermLabel]
    cov: np.ndarray
    n_pupils: int
    n_events: int
    n_clusters: int
    n_schools: int
    n_rows_fitted: int
    fitted_on: str  # patterns | pupils
    n_dropped: int
    loglik: float
    aic: float
    deviance: float
    converged: bool
    iterations: int
    n_parameters: int  # columns fitted (+1 for the random-intercept SD), as the AIC counts them
    random_effect: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    not_estimable: dict[str, str] = field(default_factory=dict)
    n_separated: int = 0
    n_patterns: int = 0  # distinct predictor rows the design matrix has

    @property
    def link(self) -> str:
        return "logit" if self.family == "binomial" else "log"

    @property
    def ratio_name(self) -> str:
        return "odds ratio" if self.family == "binomial" else "rate ratio"

    @property
    def names(self) -> list[str]:
        return [t.term for t in self.terms]

    def to_dict(self) -> dict[str, Any]:
        """The --json payload: the contract's keys first, then the rest."""
        sentences = term_sentences(self)
        return _finite(
            {
                "formula": self.formula,
                "family": self.family,
                "n_pupils": self.n_pupils,
                "n_clusters": self.n_clusters,
                "terms": [
                    {**t.__dict__, "plain_english": s}
                    for t, s in zip(self.terms, sentences, strict=True)
                ],
                "outcome": self.outcome,
                "link": self.link,
                "ratio": self.ratio_name,
                "cluster": self.cluster,
                "mixed": self.mixed,
                "estimator": self.estimator,
                "std_err_method": self.std_err_method,
                "n_events": self.n_events,
                "n_schools": self.n_schools,
                "n_dropped_missing": self.n_dropped,
                "n_left_out_separation": self.n_separated,
                "not_estimable": self.not_estimable,
                "fitted_on": self.fitted_on,
                "n_rows_fitted": self.n_rows_fitted,
                "n_covariate_patterns": self.n_patterns,
                "fit": {
                    "log_likelihood": self.loglik,
                    "aic": self.aic,
                    "deviance": self.deviance,
                    "parameters": self.n_parameters,
                    "converged": self.converged,
                    "iterations": self.iterations,
                },
                "random_effect": self.random_effect,
                "sentences": sentences,
                "warnings": self.warnings,
            }
        )


@dataclass
class Comparison:
    """Likelihood-ratio test of a model against the one nested in it."""

    larger: str
    nested: str
    nested_is_first: bool
    chi2: float
    df: int
    p: float
    wald_chi2: float | None = (
        None  # cluster-robust Wald test of the extra terms, when they are terms
    )
    wald_p: float | None = None
    note: str = ""

    def sentence(self) -> str:
        nested, larger = ("first", "second") if self.nested_is_first else ("second", "first")
        text = (
            f"The {nested} model ({self.nested}) is nested in the {larger} ({self.larger}): "
            f"likelihood-ratio chi-square = {self.chi2:.3f} on {self.df} df, {_p_text(self.p)}"
        )
        if self.wald_chi2 is not None and self.wald_p is not None:
            text += (
                f"; robust Wald chi-square of the extra terms = {self.wald_chi2:.3f} on "
                f"{self.df} df, {_p_text(self.wald_p)}"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return _finite({**self.__dict__, "text": self.sentence()})


# =========================================================================== design frame


def outcome_column(lhs: str) -> str:
    """Canonical outcome name: `ehe`, `unexplained` or a destination code, any case."""
    name = lhs.strip().lower()
    if name in OUTCOMES:
        return name
    raise UsageError(
        f"outcome {lhs.strip()!r} is not known: use ehe, unexplained or a destination code "
        f"({', '.join(codes.DESTINATIONS)})"
    )


def split_formula(formula: str) -> tuple[str, str]:
    """`outcome ~ predictors` -> (outcome, predictors); the outcome must be one name."""
    if formula.count("~") != 1:
        raise UsageError(
            f"formula {formula!r} must have one `~`: outcome ~ predictors, "
            "e.g. ehe ~ C(sen_provision) + disadvantaged"
        )
    lhs, rhs = (part.strip() for part in formula.split("~"))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", lhs):
        raise UsageError(f"formula {formula!r}: the outcome before `~` must be one name, e.g. ehe")
    return lhs, rhs or "1"


def outcome_filter(outcome: str) -> pl.Expr:
    """Which classified exits count for an outcome (`ehe` is the destination code EHE)."""
    if outcome == "unexplained":
        return ~pl.col("explained")
    return pl.col("destination").cast(pl.String) == outcome.upper()


def build_design_frame(
    dataset, outcomes: str | Sequence[str], window, profile=None
) -> pl.DataFrame:
    """One row per pupil per school on roll in the window, with 0/1 outcomes and school context.

    Pupils come from the census chosen for the window and are at risk only if on
    roll for part of it; the outcome is 1 when the pupil had at least one
    in-window exit of that kind at that school (counted once, as in the audit).
    """
    from offroll_audit.classify import classify_exits
    from offroll_audit.expected import pupils_at_risk
    from offroll_audit.profile import load_profile
    from offroll_audit.window import pick_census

    wanted = [outcomes] if isinstance(outcomes, str) else list(outcomes)
    wanted = list(dict.fromkeys(outcome_column(o) for o in wanted))
    profile = profile or load_profile("default")
    pupils = pick_census(dataset.pupils, window)
    exits = classify_exits(dataset.exits, pupils, dataset.schools, window, profile)
    frame = pupils_at_risk(pupils, exits, window, {o: outcome_filter(o) for o in wanted})
    return add_school_context(frame, pupils, dataset.schools)


def add_school_context(
    frame: pl.DataFrame, roll: pl.DataFrame, schools: pl.DataFrame
) -> pl.DataFrame:
    """Join phase, type, trust and the derived school-level predictors onto pupils."""
    from offroll_audit.expected import key_stage_expr

    school_cols = ["name", "la_code", "phase", "type", "trust"]
    info = schools.select("urn", *school_cols).unique("urn", keep="first")
    sizes = (
        info.filter(pl.col("trust").is_not_null())
        .group_by("trust")
        .agg(pl.col("urn").n_unique().alias("trust_size"))
    )
    per_school = roll.group_by("urn").agg(
        pl.len().alias("school_size"),
        (pl.col("disadvantaged").cast(pl.Float64).mean() * 100).alias("school_pct_disadvantaged"),
    )
    context = (
        per_school.join(info, on="urn", how="left")
        .join(sizes, on="trust", how="left")
        .with_columns(
            pl.col("trust_size").fill_null(0).cast(pl.Int64),
            pl.col("trust").is_not_null().alias("in_trust"),
        )
    )
    clash = [c for c in context.columns if c != "urn" and c in frame.columns]
    frame = frame.drop(clash)  # pupils' own extra columns never shadow the school's
    frame = frame.join(context, on="urn", how="left", maintain_order="left")
    if "key_stage" not in frame.columns:
        frame = frame.with_columns(key_stage_expr())
    return frame


def predictor_columns(frame: pl.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Columns a formula may use (for error messages): not bookkeeping, dates or the outcome."""
    skip = {*NOT_PREDICTORS, *exclude}
    return [
        name
        for name, dtype in frame.schema.items()
        if name not in skip and not name.startswith("_") and not _unusable(dtype)
    ]


def _unusable(dtype: pl.DataType) -> bool:
    """Is a column of this type unusable as a predictor (a date, a time or a nested value)?"""
    return isinstance(dtype, UNUSABLE_DTYPES) or dtype in UNUSABLE_DTYPES


# =========================================================================== formulas


@dataclass(frozen=True)
class Formula:
    text: str
    outcome: str
    rhs: str
    desc: Any  # patsy.ModelDesc
    variables: tuple[str, ...]
    stateful: bool


def parse_formula(text: str, frame: pl.DataFrame) -> Formula:
    """Check a formula against the frame's columns before any work is done.

    Every name a term uses must be a column or a numpy/patsy helper, so a typo
    is reported with the list of columns instead of a Python NameError, and a
    formula cannot reach anything else in Python.
    """
    import patsy

    lhs, rhs = split_formula(text)
    columns = frame.columns
    outcome = _resolve_outcome(lhs, columns, text)
    available = predictor_columns(frame, [outcome])
    try:
        desc = patsy.ModelDesc.from_formula(rhs)
    except patsy.PatsyError as bad:
        raise UsageError(
            f"formula {text!r} is malformed: {_first_line(bad)}. {_columns_hint(available)}"
        ) from None
    if desc.lhs_termlist:
        raise UsageError(f"formula {text!r} is malformed: one `~` only. {_columns_hint(available)}")
    variables: list[str] = []
    stateful = False
    env = patsy.EvalEnvironment([MATH_NAMES])
    for term in desc.rhs_termlist:
        for factor in term.factors:
            for name in _names_in(factor.code, text, available):
                if name in columns and not name.startswith("_"):
                    if name not in variables:
                        variables.append(name)
                elif (
                    name not in PATSY_NAMES and name not in MATH_NAMES and name not in LITERAL_NAMES
                ):
                    close = difflib.get_close_matches(name, available, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise UsageError(
                        f"formula {text!r}: unknown column {name!r}{hint}. "
                        f"{_columns_hint(available)}"
                    )
            stateful = stateful or factor.memorize_passes_needed({}, env) > 0
    if outcome in variables:
        raise UsageError(f"formula {text!r}: the outcome {outcome!r} cannot also be a predictor")
    return Formula(text, outcome, rhs, desc, tuple(variables), stateful)


def _resolve_outcome(lhs: str, columns: Sequence[str], text: str) -> str:
    if lhs in columns:
        return lhs
    lowered = {c.lower(): c for c in columns}
    if lhs.lower() in lowered:
        return lowered[lhs.lower()]
    outcome = outcome_column(lhs)  # raises for a name that is no outcome at all
    if outcome not in columns:
        raise UsageError(f"formula {text!r}: no outcome column {outcome!r} in the data")
    return outcome


def _names_in(code: str, text: str, available: Sequence[str]) -> list[str]:
    """Names a term's Python code reads (Q("x") counts as x); refuses private attributes."""
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError as bad:
        raise UsageError(
            f"formula {text!r} is malformed: {code!r}: {bad.msg}. {_columns_hint(available)}"
        ) from None
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise UsageError(f"formula {text!r}: {code!r} is not allowed in a formula")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Q"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value))
    return names


def _columns_hint(available: Sequence[str]) -> str:
    return f"Available columns: {', '.join(available)}"


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


# =========================================================================== data to fit


@dataclass
class _Rows:
    """What the likelihood needs, in two tables.

    `frame`: one row per covariate pattern within a cluster (or per pupil), with
    `_g` (cluster), `_u` (its predictor values' row in `combos`), `_n` pupils,
    `_y` events, `_e` exposure and `_c` (the Poisson log-likelihood constant that
    aggregation leaves out). `combos`: each distinct combination of predictor
    values once; the design matrix is built on these rows only.
    """

    frame: pl.DataFrame
    combos: pl.DataFrame
    n_pupils: int
    n_events: int
    n_schools: int
    n_dropped: int
    pupil_level: bool
    levels: dict[str, list | None]
    warnings: list[str]
    available: list[str]

    def column(self, name: str) -> np.ndarray:
        return self.frame.get_column(name).to_numpy()


def _prepare(
    frame: pl.DataFrame, formulas: Sequence[Formula], family: str, cluster: str, fit_on: str
) -> _Rows:
    """Drop incomplete rows, code the clusters and aggregate pupils into patterns."""
    outcome = formulas[0].outcome
    variables = list(dict.fromkeys(v for f in formulas for v in f.variables))
    notes: list[str] = []
    if "urn" not in frame.columns:
        raise UsageError("the data need a `urn` column: the school each pupil is on roll at")
    if cluster == "trust":
        if "trust" not in frame.columns:
            raise UsageError("--cluster trust needs a `trust` column (schools.csv)")
        key = pl.coalesce(pl.col("trust"), pl.lit("school ") + pl.col("urn").cast(pl.String))
        if frame.get_column("trust").null_count() == frame.height:
            notes.append("no school has a trust, so each school is its own cluster")
    else:
        key = pl.col("urn").cast(pl.String)
    exposure = pl.col("exposure").cast(pl.Float64) if "exposure" in frame.columns else pl.lit(1.0)
    data = frame.select(
        *variables,
        pl.col(outcome).cast(pl.Float64).alias("_y"),
        key.alias("_cluster"),
        pl.col("urn").alias("_urn"),
        exposure.alias("_e"),
    )
    for v in variables:
        dtype = data.schema[v]
        if _unusable(dtype):
            raise UsageError(f"column {v!r} ({dtype}) cannot be a predictor")
    before = data.height
    data = data.drop_nulls()
    floats = [v for v in variables if data.schema[v].is_float()]
    if floats:
        data = data.filter(pl.all_horizontal(pl.col(v).is_finite() for v in floats))
    dropped = before - data.height
    if data.height == 0:
        raise UsageError(
            f"no pupil has values for every column the formula uses "
            f"({', '.join(variables) or outcome}); is schools.csv missing?"
        )
    if dropped:
        notes.append(
            f"{dropped:,} pupil row(s) with a missing value in "
            f"{', '.join([outcome, *variables])} were left out"
        )
    y = data.get_column("_y")
    if not y.is_in([0.0, 1.0]).all():
        raise UsageError(f"the outcome {outcome!r} must be 0/1 (pupil had such an exit or not)")
    if family == "poisson" and (data.get_column("_e") <= 0).any():
        raise UsageError("exposure must be positive for a Poisson model")
    n_pupils, n_events = data.height, int(y.sum())
    if n_events in (0, n_pupils):
        which = "no pupil" if n_events == 0 else "every pupil"
        raise UsageError(f"{which} has the outcome {outcome!r} in the window: nothing to model")
    n_schools = data.get_column("_urn").n_unique()
    # Integer cluster codes make the grouping below cheap (strings hash once here).
    data = data.with_columns(pl.col("_cluster").cast(pl.Categorical).to_physical())
    stateful = any(f.stateful for f in formulas)
    pupil_level = fit_on == "pupils" or (
        fit_on == "auto" and (stateful or _nearly_unique(data, floats))
    )
    if pupil_level:
        # Each row is a pupil: the row log-likelihood is already the pupil's.
        rows = data.select(
            *variables, "_cluster", pl.lit(1.0).alias("_n"), "_y", "_e", pl.lit(0.0).alias("_c")
        )
    else:
        rows = data.group_by(["_cluster", *variables], maintain_order=True).agg(
            pl.len().cast(pl.Float64).alias("_n"),
            pl.col("_y").sum(),
            pl.col("_e").sum(),
            (pl.col("_y") * pl.col("_e").log()).sum().alias("_c"),
        )
        # The Poisson log-likelihood of pupils differs from the patterns' by this constant.
        rows = rows.with_columns((pl.col("_c") - pl.col("_y") * pl.col("_e").log()).alias("_c"))
    rows = rows.with_columns((pl.col("_cluster").rank("dense").cast(pl.Int64) - 1).alias("_g"))
    levels = {v: _levels(rows.get_column(v)) for v in variables}
    if pupil_level or not variables:
        combos = rows.select(variables) if variables else pl.DataFrame({"_one": [1]})
        index = pl.int_range(pl.len()) if variables else pl.lit(0)
        rows = rows.with_columns(index.cast(pl.Int64).alias("_u"))
    else:
        combos = rows.select(variables).unique(maintain_order=True)
        rows = rows.join(
            combos.with_row_index("_u").with_columns(pl.col("_u").cast(pl.Int64)),
            on=variables,
            how="left",
            maintain_order="left",
        )
    return _Rows(
        rows.select("_g", "_u", "_n", "_y", "_e", "_c"),
        combos,
        n_pupils,
        n_events,
        n_schools,
        dropped,
        pupil_level,
        levels,
        notes,
        predictor_columns(frame, [outcome]),
    )


def _nearly_unique(data: pl.DataFrame, floats: Sequence[str]) -> bool:
    """Aggregating pays only when patterns repeat; a continuous pupil-level predictor stops that."""
    return any(data.get_column(v).n_unique() > 0.2 * data.height for v in floats)


def _levels(series: pl.Series) -> list | None:
    """Levels present, in a meaningful order (None for a numeric column)."""
    dtype = series.dtype
    if dtype == pl.Boolean:
        present = set(series.unique().to_list())
        return [v for v in (False, True) if v in present]
    if isinstance(dtype, pl.Enum):
        present = set(series.cast(pl.String).unique().to_list())
        return [c for c in dtype.categories.to_list() if c in present]
    if dtype.is_numeric():
        return None
    return sorted(series.cast(pl.String).unique().to_list())


def _patsy_data(rows: pl.DataFrame, variables: Sequence[str], levels: dict[str, list | None]):
    """Columns as patsy wants them: categoricals with fixed levels, numbers as float.

    A pandas DataFrame, so patsy knows the number of rows even for `~ 1`.
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for v in variables:
        series, order = rows.get_column(v), levels[v]
        if order is None:
            data[v] = series.cast(pl.Float64).to_numpy()
        elif series.dtype == pl.Boolean:  # as patsy and statsmodels see it: I(1 - x) works
            data[v] = series.to_numpy()
        else:
            data[v] = pd.Categorical.from_codes(_codes(series, order), categories=order)
    return pd.DataFrame(data, index=pd.RangeIndex(rows.height), copy=False)


def _codes(series: pl.Series, order: list) -> np.ndarray:
    """Integer codes of each value's position in `order` (Enums by their physical codes)."""
    if isinstance(series.dtype, pl.Enum):
        categories = series.dtype.categories.to_list()
        lookup = np.array([order.index(c) if c in order else -1 for c in categories], np.int64)
        return lookup[series.to_physical().to_numpy()]
    return series.cast(pl.String).cast(pl.Enum(order)).to_physical().to_numpy().astype(np.int64)


def _fast_c(data, contrast=None, levels=None):
    """patsy's C(), except that a plain C(x) of a pandas Categorical stays one.

    patsy maps boxed categoricals to integer codes one Python object at a time;
    unboxed, it reads the Categorical's codes directly (same columns and names).
    """
    import pandas as pd
    import patsy

    if contrast is None and levels is None:
        if isinstance(data, pd.Series) and isinstance(data.dtype, pd.CategoricalDtype):
            return data
        if isinstance(data, pd.Categorical):
            return data
    return patsy.builtins.C(data, contrast, levels)


def _design(rows: _Rows, formula: Formula) -> tuple[np.ndarray, list[str], list[TermLabel]]:
    """The design matrix on the distinct predictor rows, and what each column means."""
    import patsy

    env = patsy.EvalEnvironment([{**MATH_NAMES, "C": _fast_c}])
    no_na = patsy.NAAction(on_NA="raise", NA_types=[])  # missing values were dropped already
    variables = formula.variables
    available = rows.available
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chunks = _chunks(rows.combos, variables, rows.levels)
            info = patsy.incr_dbuilder(
                formula.desc, lambda: chunks(), eval_env=env, NA_action=no_na
            )
            if len(info.column_names) > MAX_PARAMETERS:
                raise UsageError(
                    f"formula {formula.text!r} has {len(info.column_names):,} "
                    f"parameters; at most {MAX_PARAMETERS:,} (for a school effect use "
                    "--mixed)"
                )
            parts = [
                np.asarray(patsy.build_design_matrices([info], chunk, NA_action=no_na)[0])
                for chunk in chunks()
            ]
    except patsy.PatsyError as bad:
        raise UsageError(
            f"formula {formula.text!r}: {_first_line(bad)}. {_columns_hint(available)}"
        ) from None
    x = np.ascontiguousarray(
        np.concatenate(parts) if len(parts) > 1 else parts[0], dtype=np.float64
    )
    if x.ndim != 2 or x.shape[1] == 0:
        raise UsageError(
            f"formula {formula.text!r} has no terms to estimate (add 1 for an intercept)"
        )
    if not np.isfinite(x).all():
        bad_cols = [
            n for n, ok in zip(info.column_names, np.isfinite(x).all(0), strict=True) if not ok
        ]
        raise UsageError(
            f"formula {formula.text!r}: {', '.join(bad_cols)} is infinite or missing "
            "for some pupils (e.g. the log of 0)"
        )
    return x, list(info.column_names), _labels(info, variables)


def _chunks(frame: pl.DataFrame, variables: Sequence[str], levels: dict, size: int = 2_000_000):
    """Re-iterable chunks of patsy data (patsy makes one pass per stateful transform)."""

    def make() -> Iterator[Any]:
        for start in range(0, max(frame.height, 1), size):
            yield _patsy_data(frame.slice(start, size), variables, levels)

    return make


def _labels(info, variables: Sequence[str]) -> list[TermLabel]:
    """Read patsy's design info into plain meanings: level vs reference, or a numeric slope.

    Only a column that is plainly one variable (`x`, `C(x)`, `C(x, Treatment(...))`,
    `Q("x")`) gets words; anything computed (`I(x > 20)`, interactions) stays a term name.
    """
    labels: list[TermLabel] = []
    for term, cols in info.term_slices.items():
        names = info.column_names[cols]
        if not term.factors:
            labels.extend(TermLabel("intercept") for _ in names)
            continue
        variable = _plain_variable(term.factors[0].code) if len(term.factors) == 1 else None
        if variable not in variables:
            labels.extend(TermLabel("other") for _ in names)
            continue
        factor_info = info.factor_infos[term.factors[0]]
        if factor_info.type == "categorical":
            shown = [m[1] if (m := re.search(r"\[T\.(.*)\]$", n)) else None for n in names]
            categories = [str(c) for c in factor_info.categories]
            missing = [c for c in categories if c not in shown]
            reference = missing[0] if len(missing) == 1 else None
            labels.extend(
                TermLabel("level", variable, lvl, reference)
                if lvl is not None
                else TermLabel("other")
                for lvl in shown
            )
        elif len(names) == 1:
            labels.append(TermLabel("numeric", variable))
        else:
            labels.extend(TermLabel("other") for _ in names)
    return labels


def _plain_variable(code: str) -> str | None:
    """`x`, `Q("x")`, `C(x)` or `C(x, ...)` -> "x"; None for anything computed."""
    try:
        node = ast.parse(code, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        if node.func.id == "C":
            node = node.args[0]
        elif node.func.id == "Q" and isinstance(node.args[0], ast.Constant):
            return str(node.args[0].value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Q":
        first = node.args[0] if node.args else None
        return str(first.value) if isinstance(first, ast.Constant) else None
    return node.id if isinstance(node, ast.Name) else None


# =========================================================================== likelihoods


def _mean(family: str, eta: np.ndarray, n: np.ndarray, log_e: np.ndarray) -> np.ndarray:
    """Expected events per row: n * expit(eta) (binomial) or exposure * exp(eta) (Poisson)."""
    if family == "binomial":
        return n * special.expit(eta)
    return np.exp(np.minimum(eta + log_e, 700.0))


def _weight(family: str, eta: np.ndarray, n: np.ndarray, log_e: np.ndarray) -> np.ndarray:
    """Fisher weight per row (the negative second derivative in eta)."""
    if family == "binomial":
        p = special.expit(eta)
        return n * p * (1.0 - p)
    return np.exp(np.minimum(eta + log_e, 700.0))


def _rows_loglik(
    family: str, eta: np.ndarray, y: np.ndarray, n: np.ndarray, log_e: np.ndarray
) -> np.ndarray:
    """Pupil-level log-likelihood per row, without the pattern's constant."""
    if family == "binomial":
        return y * eta - n * np.logaddexp(0.0, eta)
    return y * (eta + log_e) - np.exp(np.minimum(eta + log_e, 700.0))


@dataclass
class _Core:
    beta: np.ndarray
    cov: np.ndarray
    loglik: float
    converged: bool
    iterations: int
    extra: dict[str, Any] = field(default_factory=dict)


def _glm(
    x: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    log_e: np.ndarray,
    family: str,
    names: Sequence[str],
) -> _Core:
    """Maximum likelihood by Newton-Raphson (= IRLS for these canonical links).

    On many rows, a first fit on an evenly spaced sample of them starts Newton
    close to the answer, so the full data need three or four iterations, not eight.
    """
    rate = max(y.sum(), 0.5) / (n.sum() if family == "binomial" else np.exp(log_e).sum())
    beta = np.zeros(x.shape[1])
    intercept = np.flatnonzero(_column_kinds(x)[1])
    if len(intercept):
        beta[intercept[0]] = (
            special.logit(min(rate, 0.5)) if family == "binomial" else math.log(rate)
        )
    if len(y) > WARM_START_ROWS:
        every = len(y) // (WARM_START_ROWS // 2)
        try:
            sample = _newton(x[::every], y[::every], n[::every], log_e[::every], family, beta, 1e-6)
            if sample.converged and np.all(np.abs(sample.beta) < 15):
                beta = sample.beta
        except np.linalg.LinAlgError:
            pass  # a level missing from the sample: start from the overall rate instead
    return _newton(x, y, n, log_e, family, beta, 1e-9, names=names)


WARM_START_ROWS = 200_000


def _newton(
    x: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    log_e: np.ndarray,
    family: str,
    beta: np.ndarray,
    tol: float,
    max_iter: int = 100,
    names: Sequence[str] | None = None,
) -> _Core:
    """Newton steps with step-halving until the largest step is below tol (relative).

    The covariance is the inverse information at the last step's start, which
    differs from the information at the estimate by the size of that step.
    """
    eta = x @ beta
    loglik = float(_rows_loglik(family, eta, y, n, log_e).sum())
    converged, iterations = False, 0
    info = np.eye(x.shape[1])
    for _ in range(max_iter):
        iterations += 1
        score = x.T @ (y - _mean(family, eta, n, log_e))
        info = _crossprod(x, _weight(family, eta, n, log_e))
        if names is not None and iterations == 1:
            _check_rank(info, names)  # collinear terms: say which, before solving
        step = np.linalg.solve(info, score)
        for _ in range(30):
            new_eta = x @ (beta + step)
            new_loglik = float(_rows_loglik(family, new_eta, y, n, log_e).sum())
            if new_loglik >= loglik - 1e-9 * abs(loglik):
                break
            step /= 2
        beta, eta, change, loglik = beta + step, new_eta, new_loglik - loglik, new_loglik
        if np.max(np.abs(step)) < tol * (1 + np.max(np.abs(beta))) or (
            abs(change) < 1e-13 * abs(loglik) and np.max(np.abs(step)) < 1e-7
        ):
            converged = True
            break
    return _Core(beta, _inverse(info), loglik, converged, iterations)


def _crossprod(x: np.ndarray, w: np.ndarray | None = None, chunk: int = 65536) -> np.ndarray:
    """X' diag(w) X, summed over blocks of rows with einsum rather than BLAS.

    On a busy machine OpenBLAS's threads contend and one such product on a
    million rows took 4 s instead of 0.1 s; einsum runs on one core and takes
    a steady fraction of a second.
    """
    out = np.zeros((x.shape[1], x.shape[1]))
    root = np.sqrt(w) if w is not None else None
    for start in range(0, x.shape[0], chunk):
        z = x[start : start + chunk]
        if root is not None:
            z = z * root[start : start + chunk, None]
        out += np.einsum("ij,ik->jk", z, z)
    return out


def _check_rank(info: np.ndarray, names: Sequence[str]) -> None:
    """Collinear predictors make the model unidentified: say which column to drop."""
    from scipy.linalg import qr

    scale = np.sqrt(np.clip(np.diag(info), 1e-300, None))
    normalised = info / np.outer(scale, scale)
    _, r, pivots = qr(normalised, pivoting=True)
    diag = np.abs(np.diag(r))
    dependent = [names[pivots[i]] for i in range(len(diag)) if diag[i] < 1e-10 * diag[0]]
    if np.any(np.diag(info) <= 0) or dependent:
        empty = [names[i] for i in np.flatnonzero(np.diag(info) <= 0)]
        culprits = ", ".join(dict.fromkeys([*empty, *dependent]))
        raise UsageError(
            f"the predictors are collinear or a column is empty: {culprits} "
            "cannot be estimated separately; drop a term"
        )


def _inverse(matrix: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(matrix)


def _cluster_cov(
    x: np.ndarray,
    index: np.ndarray,
    resid: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    bread: np.ndarray,
    n_pupils: int,
    used_groups: int,
) -> np.ndarray:
    """CR1 sandwich: scores summed within clusters; exact on patterns within clusters.

    Row r has predictors x[index[r]]; a cluster's score is sum_r x[index[r]] * resid[r],
    i.e. (clusters x combos matrix of summed residuals) @ x. Correction
    G/(G-1) * (N-1)/(N-K) with N pupils, as Stata and statsmodels do.
    """
    from scipy import sparse

    k = x.shape[1]
    summed = sparse.csr_matrix((resid, (groups, index)), shape=(n_groups, x.shape[0]))
    meat = _crossprod(np.asarray(summed @ x))
    g = used_groups
    correction = g / max(g - 1, 1) * (n_pupils - 1) / max(n_pupils - k, 1)
    return correction * bread @ meat @ bread


# --------------------------------------------------------------------------- random intercept


def _glmm(
    x: np.ndarray,
    index: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    log_e: np.ndarray,
    groups: np.ndarray,
    n_groups: int,
    family: str,
    start: np.ndarray,
    n_pupils: int,
    nodes: int = QUADRATURE_NODES,
) -> _Core:
    """Random-intercept GLMM by maximum likelihood, adaptive Gauss-Hermite quadrature.

    Each cluster's integral over its intercept u ~ N(0, sigma^2) is taken with
    `nodes` points centred at the mode of its integrand and scaled by its
    curvature (as lme4's glmer with nAGQ > 1). The gradient uses Fisher's
    identity (posterior-weighted complete-data scores), the optimiser is
    L-BFGS-B on (beta, log sigma), and standard errors come from a numerical
    Hessian of the marginal log-likelihood. Row r has predictors x[index[r]].
    """
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    log_w = np.log(w) + t**2 / 2
    k = x.shape[1]
    modes = np.zeros(n_groups)
    scale_f = 1.0 / max(n_pupils, 1)

    def modes_and_scales(eta0: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        u = modes.copy()
        prec = 1.0 / sigma**2
        for _ in range(100):
            eta = eta0 + u[groups]
            g1 = np.bincount(groups, y - _mean(family, eta, n, log_e), n_groups) - u * prec
            g2 = np.bincount(groups, _weight(family, eta, n, log_e), n_groups) + prec
            step = np.clip(g1 / g2, -2.0, 2.0)
            u += step
            if np.max(np.abs(step)) < 1e-10:
                break
        eta = eta0 + u[groups]
        curvature = np.bincount(groups, _weight(family, eta, n, log_e), n_groups) + prec
        modes[:] = u
        return u, 1.0 / np.sqrt(curvature)

    def evaluate(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        beta, log_sigma = theta[:k], theta[k]
        sigma = math.exp(log_sigma)
        eta0 = (x @ beta)[index]
        u_hat, s = modes_and_scales(eta0, sigma)
        a = np.empty((n_groups, nodes))
        for q in range(nodes):
            u = u_hat + s * t[q]
            ll = np.bincount(groups, _rows_loglik(family, eta0 + u[groups], y, n, log_e), n_groups)
            a[:, q] = (
                ll
                + log_w[q]
                + np.log(s)
                - 0.5 * (u / sigma) ** 2
                - log_sigma
                - 0.5 * math.log(2 * math.pi)
            )
        per_group = special.logsumexp(a, axis=1)
        post = np.exp(a - per_group[:, None])
        resid = np.zeros(len(y))
        grad_sigma = 0.0
        for q in range(nodes):
            u = u_hat + s * t[q]
            resid += post[groups, q] * (y - _mean(family, eta0 + u[groups], n, log_e))
            grad_sigma += float(np.sum(post[:, q] * ((u / sigma) ** 2 - 1.0)))
        grad = np.concatenate([x.T @ np.bincount(index, resid, x.shape[0]), [grad_sigma]])
        return float(per_group.sum()), grad, per_group

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad, _ = evaluate(theta)
        return -value * scale_f, -grad * scale_f

    theta0 = np.concatenate([start, [math.log(0.5)]])
    bounds = [(None, None)] * k + [(math.log(1e-4), math.log(20.0))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = optimize.minimize(
            objective,
            theta0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
        )
    theta = found.x
    hessian = _numeric_hessian(lambda th: evaluate(th)[1], theta)
    # Polish with Newton steps on the exact gradient: L-BFGS stops on a relative criterion.
    for _ in range(5):
        grad = evaluate(theta)[1]
        try:
            step = np.linalg.solve(-hessian, grad)
        except np.linalg.LinAlgError:
            break
        if theta[k] + step[k] < bounds[k][0]:
            step[k] = bounds[k][0] - theta[k]
        theta = theta + step
        if np.max(np.abs(step)) < 1e-9:
            break
        hessian = _numeric_hessian(lambda th: evaluate(th)[1], theta)
    loglik, grad, _ = evaluate(theta)
    at_boundary = theta[k] <= bounds[k][0] + 1e-6
    info = -hessian
    cov_full = _inverse(info) if not at_boundary else np.full_like(info, np.nan)
    cov_beta = cov_full[:k, :k] if not at_boundary else _inverse(info[:k, :k])
    converged = bool(np.max(np.abs(grad)) * scale_f < 1e-5)
    extra = {
        "sigma": math.exp(theta[k]),
        "log_sigma_se": math.sqrt(max(cov_full[k, k], 0.0)) if not at_boundary else float("nan"),
        "at_boundary": at_boundary,
        "nodes": nodes,
    }
    return _Core(theta[:k], cov_beta, loglik, converged, int(found.nit), extra)


def _numeric_hessian(gradient, theta: np.ndarray) -> np.ndarray:
    """Central differences of an analytic gradient, symmetrised."""
    size = len(theta)
    hessian = np.empty((size, size))
    for j in range(size):
        h = 1e-5 * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        hessian[:, j] = (gradient(up) - gradient(down)) / (2 * h)
    return (hessian + hessian.T) / 2


# =========================================================================== fitting


def fit_model(
    frame: pl.DataFrame,
    formula: str,
    family: str = "binomial",
    cluster: str = "school",
    mixed: bool = False,
    *,
    fit_on: str = "auto",
) -> ModelResult:
    """Fit `formula` to a design frame (one row per pupil per school).

    family: binomial (logit link, odds ratios) or poisson (log link with
    log(exposure) offset, rate ratios). cluster: school, trust (schools
    without a trust are their own cluster) or none. mixed: random intercept for
    the cluster unit instead of a robust sandwich. fit_on: auto, patterns or
    pupils (the estimates are the same; auto picks the faster).
    """
    check_options(family, cluster, mixed, fit_on)
    parsed = parse_formula(formula, frame)
    rows = _prepare(frame, [parsed], family, cluster, fit_on)
    return _fit(rows, parsed, family, cluster, mixed)


def check_options(family: str, cluster: str, mixed: bool, fit_on: str) -> None:
    if family not in FAMILIES:
        raise UsageError(
            f"--family {family!r}: use binomial (odds ratios) or poisson (rate ratios)"
        )
    if cluster not in CLUSTERS:
        raise UsageError(f"--cluster {cluster!r}: use school, trust or none")
    if mixed and cluster == "none":
        raise UsageError("--mixed needs a cluster for its random intercept: school or trust")
    if fit_on not in FIT_ON:
        raise UsageError(f"fit_on {fit_on!r}: use auto, patterns or pupils")


def _fit(
    rows: _Rows,
    formula: Formula,
    family: str,
    cluster: str,
    mixed: bool,
    design: tuple[np.ndarray, list[str], list[TermLabel]] | None = None,
) -> ModelResult:
    x_all, names, labels = design or _design(rows, formula)
    y, n, e = rows.column("_y"), rows.column("_n"), rows.column("_e")
    groups, index, constants = rows.column("_g"), rows.column("_u"), rows.column("_c")
    # The GLM needs only totals per distinct predictor row; the sandwich needs clusters.
    size = x_all.shape[0]
    y_u, n_u = np.bincount(index, y, size), np.bincount(index, n, size)
    keep_u, gone = _separation(x_all, y_u, n_u, family)
    cols = [j for j in range(x_all.shape[1]) if j not in gone]
    if not cols:
        raise UsageError(f"formula {formula.text!r}: no term can be estimated")
    x = x_all if len(cols) == x_all.shape[1] else x_all[:, cols]
    if not keep_u.all():
        keep = keep_u[index]
        y, n, e, groups, constants = y[keep], n[keep], e[keep], groups[keep], constants[keep]
        index = (np.cumsum(keep_u) - 1)[index[keep]]
        x, y_u, n_u = x[keep_u], y_u[keep_u], n_u[keep_u]
    log_e = np.log(e) if family == "poisson" else np.zeros(len(y))
    log_e_u = (
        np.log(np.bincount(index, e, x.shape[0])) if family == "poisson" else np.zeros(len(y_u))
    )
    constant = float(constants.sum()) if family == "poisson" else 0.0
    n_pupils, n_events = round(float(n.sum())), round(float(y.sum()))
    n_codes = int(groups.max()) + 1
    n_groups = len(np.unique(groups)) if cluster != "none" else n_pupils
    notes = list(rows.warnings)
    if gone:
        left_out = rows.n_pupils - n_pupils
        notes.append(
            f"{', '.join(names[j] for j in gone)}: {' or '.join(sorted(set(gone.values())))}, so "
            f"no ratio can be estimated; {left_out:,} pupil(s) in such groups were left out of the "
            "fit (they add nothing to the likelihood at its maximum)"
        )
    kept_names = [names[j] for j in cols]
    with np.errstate(over="ignore", under="ignore"):
        glm = _glm(x, y_u, n_u, log_e_u, family, kept_names)
        eta = (x @ glm.beta)[index]
        glm.loglik = float(_rows_loglik(family, eta, y, n, log_e).sum())
    link = "logit" if family == "binomial" else "log"
    if mixed:
        core = _glmm(x, index, y, n, log_e, groups, n_codes, family, glm.beta, n_pupils)
        cov = core.cov
        sigma = core.extra["sigma"]
        half = Z95 * core.extra["log_sigma_se"]
        random_effect = {
            "group": cluster,
            "sd": sigma,
            "variance": sigma**2,
            "sd_ci_low": sigma * math.exp(-half) if math.isfinite(half) else None,
            "sd_ci_high": sigma * math.exp(half) if math.isfinite(half) else None,
            "icc": sigma**2 / (sigma**2 + math.pi**2 / 3) if family == "binomial" else None,
            "quadrature_nodes": core.extra["nodes"],
            "at_boundary": bool(core.extra["at_boundary"]),
        }
        estimator = (
            f"random-intercept {family} GLMM ({link} link), normal intercept per {cluster}; "
            "maximum likelihood with the marginal likelihood by adaptive Gauss-Hermite "
            f"quadrature ({core.extra['nodes']} nodes per cluster), L-BFGS-B then Newton"
        )
        se_method = "model-based: inverse of the numerical Hessian of the marginal log-likelihood"
        if core.extra["at_boundary"]:
            notes.append(
                "the random-intercept SD is at its lower bound: the clusters barely differ"
            )
    else:
        core, random_effect = glm, None
        if cluster == "none":
            cov = glm.cov
            se_method = "model-based (pupils treated as independent)"
        else:
            resid = y - _mean(family, eta, n, log_e)
            cov = _cluster_cov(x, index, resid, groups, n_codes, glm.cov, n_pupils, n_groups)
            unit = (
                "school" if cluster == "school" else "trust (a school outside a trust on its own)"
            )
            se_method = f"cluster-robust sandwich by {unit}, CR1 correction G/(G-1)*(N-1)/(N-K)"
        offset = ", log exposure offset" if family == "poisson" else ""
        estimator = f"{family} GLM ({link} link{offset}), maximum likelihood by Newton-Raphson/IRLS"
        if cluster != "none" and n_groups < 30:
            notes.append(
                f"only {n_groups} clusters: cluster-robust standard errors are unreliable with "
                "fewer than about 30"
            )
    parameters = x.shape[1] + (1 if mixed else 0)  # columns actually fitted, not dropped ones
    loglik = core.loglik + constant
    deviance = -2 * loglik - (2 * n_events if family == "poisson" else 0.0)
    if not core.converged:
        notes.append("the fit did not fully converge; treat the estimates with caution")
    beta_all = np.full(len(names), np.nan)
    beta_all[cols] = core.beta
    cov_all = np.full((len(names), len(names)), np.nan)
    cov_all[np.ix_(cols, cols)] = cov
    terms = _terms(names, beta_all, cov_all)
    huge = [t.term for t in terms if t.term != "Intercept" and abs(t.estimate) > 10]
    if huge:
        notes.append(
            f"possible separation (no or all events in a group): {', '.join(huge)}; "
            "their estimates are not meaningful"
        )
    return ModelResult(
        formula=formula.text,
        outcome=formula.outcome,
        family=family,
        cluster=cluster,
        mixed=mixed,
        estimator=estimator,
        std_err_method=se_method,
        terms=terms,
        labels=labels,
        cov=cov_all,
        n_pupils=n_pupils,
        n_events=n_events,
        n_clusters=n_groups,
        n_schools=rows.n_schools,
        n_rows_fitted=len(y),
        n_patterns=x.shape[0],
        fitted_on="pupils" if rows.pupil_level else "covariate patterns within clusters",
        n_dropped=rows.n_dropped,
        loglik=loglik,
        aic=-2 * loglik + 2 * parameters,
        deviance=deviance,
        converged=core.converged,
        iterations=core.iterations,
        n_parameters=parameters,
        random_effect=random_effect,
        warnings=notes,
        not_estimable={names[j]: why for j, why in gone.items()},
        n_separated=rows.n_pupils - n_pupils,
    )


def _separation(
    x: np.ndarray, y: np.ndarray, n: np.ndarray, family: str
) -> tuple[np.ndarray, dict[int, str]]:
    """Indicator columns whose pupils all or never had the outcome: their MLE is infinite.

    As Stata does, such a column is dropped with its pupils: at the maximum they
    contribute nothing to the likelihood, so the other estimates and the
    log-likelihood are those of the limit. Repeated until no such column is left.
    """
    keep = np.ones(len(y), dtype=bool)
    gone: dict[int, str] = {}
    indicator, constant = _column_kinds(x)
    candidates = [j for j in range(x.shape[1]) if indicator[j] and not constant[j]]
    changed = True
    while changed:
        changed = False
        events, trials = x.T @ np.where(keep, y, 0.0), x.T @ np.where(keep, n, 0.0)
        for j in candidates:
            if j in gone:
                continue
            if trials[j] == 0:
                gone[j] = "no pupil left in this group"
                continue
            if events[j] == 0:
                gone[j] = "no pupil in this group had the outcome"
            elif family == "binomial" and events[j] == trials[j]:
                gone[j] = "every pupil in this group had the outcome"
            else:
                continue
            keep &= x[:, j] != 1.0
            changed = True
            break  # totals change once pupils are left out: recount before the next column
    return keep, gone


def _column_kinds(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Which columns hold only 0/1 (indicators) and which only 1 (an intercept), by row blocks."""
    indicator = np.ones(x.shape[1], dtype=bool)
    constant = np.ones(x.shape[1], dtype=bool)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk]
        ones = block == 1.0
        indicator &= (ones | (block == 0.0)).all(0)
        constant &= ones.all(0)
    return indicator, constant


def _terms(names: Sequence[str], beta: np.ndarray, cov: np.ndarray) -> list[Term]:
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    terms = []
    for name, b, s in zip(names, beta, se, strict=True):
        z = b / s if s > 0 else float("nan")
        p = float(2 * stats.norm.sf(abs(z))) if s > 0 else float("nan")
        terms.append(
            Term(
                name, float(b), float(s), _exp(b), _exp(b - Z95 * s), _exp(b + Z95 * s), p, float(z)
            )
        )
    return terms


def _exp(value: float) -> float:
    if math.isnan(value):
        return float("nan")
    return math.exp(value) if value < 709 else float("inf")


# =========================================================================== comparison


def check_same_outcome(outcomes: Sequence[str]) -> None:
    """Models compared on the same pupils must explain the same outcome."""
    if len(set(outcomes)) > 1:
        raise UsageError(f"--compare: both models need the same outcome ({' vs '.join(outcomes)})")


def compare_models(
    frame: pl.DataFrame,
    formula: str,
    other: str,
    family: str = "binomial",
    cluster: str = "school",
    mixed: bool = False,
    *,
    fit_on: str = "auto",
) -> tuple[ModelResult, ModelResult, Comparison]:
    """Fit two formulas on the same pupils and test the nested one with a likelihood ratio.

    Both models use the pupils complete for every column either uses, otherwise
    the likelihoods are not comparable. Which model is nested is found from the
    design matrices (the smaller's columns in the span of the larger's), so
    `C(x)` vs a recoding of x is judged by what is fitted, not by how it is written.
    """
    check_options(family, cluster, mixed, fit_on)
    first, second = parse_formula(formula, frame), parse_formula(other, frame)
    check_same_outcome([first.outcome, second.outcome])
    rows = _prepare(frame, [first, second], family, cluster, fit_on)
    design1, design2 = _design(rows, first), _design(rows, second)
    x1, x2 = design1[0], design2[0]
    nested_is_first = x1.shape[1] < x2.shape[1]
    big, small_x = (x2, x1) if nested_is_first else (x1, x2)
    if x1.shape[1] == x2.shape[1] or not _spans(big, small_x):
        raise UsageError(
            f"--compare: the models are not nested ({formula!r} and {other!r}): one "
            "model's terms must all be in the other, which adds at least one"
        )
    one = _fit(rows, first, family, cluster, mixed, design1)
    two = _fit(rows, second, family, cluster, mixed, design2)
    small, large = (one, two) if nested_is_first else (two, one)
    df = large.n_parameters - small.n_parameters  # fitted columns: dropped terms add none
    chi2 = max(0.0, 2 * (large.loglik - small.loglik))
    comparison = Comparison(
        large.formula, small.formula, nested_is_first, chi2, df, float(stats.chi2.sf(chi2, df))
    )
    extra = [i for i, name in enumerate(large.names) if name not in small.names]
    subset = all(name in large.names for name in small.names)
    if not mixed and cluster != "none" and subset and len(extra) == df:
        b = np.array([large.terms[i].estimate for i in extra])
        v = large.cov[np.ix_(extra, extra)]
        try:
            wald = float(b @ np.linalg.solve(v, b))
            comparison.wald_chi2, comparison.wald_p = wald, float(stats.chi2.sf(wald, df))
        except np.linalg.LinAlgError:
            pass
    comparison.note = (
        "the likelihood-ratio test treats pupils as independent given the "
        "predictors; with clustered data prefer the robust Wald test where given"
    )
    if mixed:
        comparison.note = "both models have the random intercept; the test is on the fixed effects"
    return one, two, comparison


def _spans(big: np.ndarray, small: np.ndarray) -> bool:
    """Is every column of `small` a linear combination of `big`'s columns (on these rows)?"""
    scale = np.maximum(np.abs(big).max(0), 1e-300)
    both = np.hstack([big / scale, small])
    gram = _crossprod(both)
    k = big.shape[1]
    coef = np.linalg.lstsq(gram[:k, :k], gram[:k, k:], rcond=None)[0]
    resid = small - (big / scale) @ coef
    return bool(np.all(np.abs(resid).max(0) <= 1e-7 * np.maximum(np.abs(small).max(0), 1.0)))


# =========================================================================== words


def term_sentences(result: ModelResult) -> list[str]:
    """One plain-English line per coefficient, on the ratio scale with its 95% CI and p."""
    measure = "odds" if result.family == "binomial" else "rate"
    phrase = OUTCOME_PHRASE.get(result.outcome, f"{result.outcome} = 1")
    references = [
        _level_words(label.variable, label.reference)
        for label in dict.fromkeys(
            lab for lab in result.labels if lab.kind == "level" and lab.reference is not None
        )
        if label.variable is not None
    ]
    references = list(dict.fromkeys(references))
    numeric = any(lab.kind == "numeric" for lab in result.labels)
    lines = []
    for term, label in zip(result.terms, result.labels, strict=True):
        ci = f"(95% CI {_num(term.ci_low)} to {_num(term.ci_high)}), {_p_text(term.p)}"
        if label.kind == "intercept":
            parts = references + (["numeric predictors at 0"] if numeric else [])
            who = f" ({'; '.join(parts)})" if parts else ""
            per = "" if result.family == "binomial" else " per pupil over the window"
            text = f"Reference group{who}: {measure} of {phrase} {_num(term.odds_ratio)}{per} {ci}"
        elif label.kind == "level" and label.variable is not None:
            who = _level_words(label.variable, label.level)
            versus = (
                _level_words(label.variable, label.reference)
                if label.reference
                else "the reference group"
            )
            verb = "those" if measure == "odds" else "that"
            text = (
                f"{who[0].upper()}{who[1:]}: {measure} of {phrase} {_num(term.odds_ratio)} times "
                f"{verb} of {versus} {ci}"
            )
        elif label.kind == "numeric" and label.variable is not None:
            step, words = NUMERIC_LABELS.get(
                label.variable, (1.0, f"Each one-unit increase in {label.variable}")
            )
            ratio = _exp(term.estimate * step)
            low, high = (
                _exp((term.estimate - Z95 * term.std_err) * step),
                _exp((term.estimate + Z95 * term.std_err) * step),
            )
            text = (
                f"{words}: {measure} of {phrase} multiplied by {_num(ratio)} "
                f"(95% CI {_num(low)} to {_num(high)}), {_p_text(term.p)}"
            )
        else:
            text = f"{term.term}: {result.ratio_name} {_num(term.odds_ratio)} {ci}"
        if term.term in result.not_estimable:
            head = text.split(":")[0]
            text = (
                f"{head}: {result.not_estimable[term.term]}, so no {result.ratio_name} can be "
                "estimated (these pupils were left out of the fit)"
            )
        lines.append(text)
    return lines


def _level_words(variable: str | None, level: str | None) -> str:
    if variable is None or level is None:
        return "the reference group"
    known = codes.LEVEL_LABELS.get(variable, {})
    if level in known:
        return known[level]
    if variable in ("type", "phase"):
        return f"pupils at {level} schools"
    if variable == "key_stage":
        return f"pupils in {level}"
    if variable == "trust":
        return f"pupils at schools of {level}"
    if level in ("True", "False"):
        return f"pupils for whom {variable} is {level.lower()}"
    return f"pupils with {variable} {level}"


def _num(value: float) -> str:
    """Ratios as a reader says them: 2.1, 0.45, 12, 1,234."""
    if not math.isfinite(value):
        return "infinite" if value > 0 else "not available"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value == 0:
        return "0"
    return f"{value:.2g}"


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "p not available"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


# =========================================================================== files


def write_table(
    path: Path,
    result: ModelResult,
    comparison: Comparison | None = None,
    other: ModelResult | None = None,
) -> None:
    """Write the results to .xlsx (sheets) or .csv (one long table), atomically."""
    check_out_path(path)
    rows = _coefficient_rows(result) + (_coefficient_rows(other, "second model") if other else [])
    fit = _fit_rows(result) + (_fit_rows(other, "second model") if other else [])
    compared = _comparison_rows(comparison) if comparison else []
    if path.suffix.lower() == ".csv":
        _atomic_write(path, lambda temp: _write_csv(temp, rows, fit, compared))
    else:
        _atomic_write(path, lambda temp: _write_xlsx(temp, rows, fit, compared, result))


def check_out_path(path: Path) -> None:
    """--out must name a .xlsx or .csv file in a folder that exists."""
    if path.suffix.lower() not in (".xlsx", ".csv"):
        raise UsageError(f"--out {path}: give a .xlsx or .csv file name")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: the folder {path.parent} does not exist")


def _atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """`writer` fills a temporary file next to `path`, which then replaces `path` in one step.

    A reader never sees a half-written file; on any failure the temporary file is removed.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(Path(name))
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)


COEFFICIENT_HEADER = [
    "model",
    "term",
    "estimate",
    "std_err",
    "ratio",
    "ci_low",
    "ci_high",
    "p",
    "plain_english",
]


def _coefficient_rows(result: ModelResult, model: str = "model") -> list[list]:
    return [
        [model, t.term, t.estimate, t.std_err, t.odds_ratio, t.ci_low, t.ci_high, t.p, s]
        for t, s in zip(result.terms, term_sentences(result), strict=True)
    ]


def _fit_rows(result: ModelResult, model: str = "model") -> list[list]:
    rows: list[list] = [
        ["formula", result.formula],
        ["outcome", result.outcome],
        ["family", result.family],
        ["link", result.link],
        ["ratio", result.ratio_name],
        ["estimator", result.estimator],
        ["standard errors", result.std_err_method],
        ["cluster", result.cluster],
        ["pupils", result.n_pupils],
        ["pupils with the outcome", result.n_events],
        ["clusters", result.n_clusters],
        ["schools", result.n_schools],
        ["rows left out (missing values)", result.n_dropped],
        ["fitted on", result.fitted_on],
        ["rows fitted", result.n_rows_fitted],
        ["log-likelihood", result.loglik],
        ["AIC", result.aic],
        ["deviance", result.deviance],
        ["converged", str(result.converged)],
    ]
    if result.random_effect:
        re_ = result.random_effect
        rows += [
            ["random intercept SD", re_["sd"]],
            ["random intercept SD 95% CI low", re_["sd_ci_low"]],
            ["random intercept SD 95% CI high", re_["sd_ci_high"]],
        ]
        if re_.get("icc") is not None:
            rows.append(["intraclass correlation (latent scale)", re_["icc"]])
    rows += [["warning", w] for w in result.warnings]
    return [[model, *row] for row in rows]


def _comparison_rows(comparison: Comparison) -> list[list]:
    rows: list[list] = [
        ["larger model", comparison.larger],
        ["nested model", comparison.nested],
        ["likelihood-ratio chi-square", comparison.chi2],
        ["df", comparison.df],
        ["p", comparison.p],
    ]
    if comparison.wald_chi2 is not None:
        rows += [
            ["robust Wald chi-square", comparison.wald_chi2],
            ["robust Wald p", comparison.wald_p],
        ]
    rows += [["result", comparison.sentence()], ["note", comparison.note]]
    return rows


def _inert_csv(value: Any) -> Any:
    """Spreadsheet programs run cells starting with = + - @ as formulas; quote such text (the
    starts the workbooks treat as risky)."""
    from offroll_audit.workbooks.style import RISKY_START

    if isinstance(value, str) and value.startswith(RISKY_START):
        return "'" + value
    if isinstance(value, float) and not math.isfinite(value):
        return "" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _write_csv(path: Path, rows: list[list], fit: list[list], compared: list[list]) -> None:
    header = ["section", *COEFFICIENT_HEADER]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_inert_csv(v) for v in ["coefficient", *row]])
        for section, model, key, value in [
            *(("fit", model, key, value) for model, key, value in fit),
            *(("comparison", "", key, value) for key, value in compared),
        ]:
            text = isinstance(value, str)
            number, note = ("", value) if text else (value, "")
            cells = [section, model, key, number, "", "", "", "", "", note]
            writer.writerow([_inert_csv(v) for v in cells])


def _write_xlsx(
    path: Path, rows: list[list], fit: list[list], compared: list[list], result: ModelResult
) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = "Coefficients"
    ratio = result.ratio_name
    _sheet_rows(
        sheet,
        [
            [
                "model",
                "term",
                "estimate (log scale)",
                "std error",
                ratio,
                "95% CI low",
                "95% CI high",
                "p",
                "in plain English",
            ],
            *rows,
        ],
    )
    model_sheet = book.create_sheet("Model")
    _sheet_rows(model_sheet, [["model", "statistic", "value"], *fit])
    if compared:
        _sheet_rows(book.create_sheet("Comparison"), [["statistic", "value"], *compared])
    for ws in book.worksheets:
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for column in ws.columns:
            width = max(len(str(c.value or "")) for c in column)
            ws.column_dimensions[column[0].column_letter].width = min(max(width + 2, 10), 90)
    book.save(path)


def _sheet_rows(sheet, rows: list[list]) -> None:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            if isinstance(value, float) and not math.isfinite(value):
                value = None if math.isnan(value) else ("inf" if value > 0 else "-inf")
            if isinstance(value, str):
                cell = sheet.cell(r, c, ILLEGAL_CHARACTERS_RE.sub("", value))
                cell.data_type = "s"  # text stays text: never a formula
            else:
                sheet.cell(r, c, value)


def manifest(
    inputs: dict[str, Path], result: ModelResult, options: dict[str, Any], out: Path | None = None
) -> dict[str, Any]:
    """What a reader needs to reproduce a table: inputs' hashes, formula, options, tool version."""
    from offroll_audit.report import sha256_file

    return _finite(
        {
            "tool": tool_block(command="model"),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "formula": result.formula,
            "family": result.family,
            "cluster": result.cluster,
            "mixed": result.mixed,
            "estimator": result.estimator,
            "std_err_method": result.std_err_method,
            **options,
            "n_pupils": result.n_pupils,
            "n_clusters": result.n_clusters,
            "inputs": {
                table: {"file": p.name, "sha256": sha256_file(p)}
                for table, p in sorted(inputs.items())
            },
            "output": {"file": out.name, "sha256": sha256_file(out)}
            if out and out.exists()
            else None,
        }
    )


def write_manifest(out: Path, payload: dict[str, Any]) -> Path:
    """`<out>.manifest.json` next to the table."""
    target = out.with_name(out.name + ".manifest.json")
    text = json.dumps(payload, indent=2) + "\n"
    _atomic_write(target, lambda temp: temp.write_text(text, encoding="utf-8"))
    return target


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: write null instead."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
