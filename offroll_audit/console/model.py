"""`offroll-audit model DATA --formula F`: a researcher's regression on pupil-level data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from offroll_audit.console.options import DATE_FROM, DATE_TO, ENCODING, JSON_OUTPUT, QUIET, TERM

FORMULA_HELP = (
    "outcome ~ predictors, as statsmodels/patsy write it, e.g. "
    '"ehe ~ C(sen_provision) + disadvantaged + C(social_care) + C(year_group) + type". '
    "Outcome: ehe, unexplained or a destination code (pupil had at least one in-window exit of "
    "that kind at that school). Predictors: any pupils.csv or schools.csv column, plus "
    "trust_size, school_size, school_pct_disadvantaged, in_trust and key_stage."
)
MIXED_HELP = (
    "Random intercept per school (per trust with --cluster trust) instead of cluster-robust "
    "standard errors: maximum likelihood, marginal likelihood by adaptive Gauss-Hermite "
    "quadrature (15 nodes per cluster, as lme4's glmer nAGQ), model-based standard errors."
)


DATA = typer.Argument(..., help="The dataset folder (pupils, exits, optional schools).")
FORMULA = typer.Option(..., "--formula", "-f", help=FORMULA_HELP)
FAMILY = typer.Option(
    "binomial",
    "--family",
    help="binomial: logit link, odds ratios (default); poisson: log link with the pupil's "
    "time on roll as offset, rate ratios.",
)
CLUSTER = typer.Option(
    "school",
    "--cluster",
    help="Cluster-robust standard errors by school (default), by trust (a school outside a "
    "trust is its own cluster), or none (pupils treated as independent).",
)
MIXED = typer.Option(False, "--mixed", help=MIXED_HELP)
COMPARE = typer.Option(
    None,
    "--compare",
    help="A second formula: fit both on the same pupils and test the nested one "
    "(likelihood ratio; also a cluster-robust Wald test of the extra terms).",
)
OUT = typer.Option(
    None,
    "--out",
    help="Write the results to a .xlsx or .csv file, with OUT.manifest.json next to it "
    "(input hashes, formula, tool version).",
)
PROFILE = typer.Option(
    "default", "--profile", help="Thresholds profile: which exits count as explained."
)


def command(
    data: Path = DATA,
    formula: str = FORMULA,
    family: str = FAMILY,
    cluster: str = CLUSTER,
    mixed: bool = MIXED,
    compare: str | None = COMPARE,
    out: Path | None = OUT,
    term: str | None = TERM,
    start: datetime | None = DATE_FROM,
    end: datetime | None = DATE_TO,
    profile: str = PROFILE,
    encoding: str | None = ENCODING,
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
) -> int:
    """Regression of pupils' exits on their own and their schools' characteristics (research).

    Binomial GLM (logit) with cluster-robust standard errors by school by default;
    --mixed fits a school random intercept by adaptive Gauss-Hermite maximum likelihood.
    """
    import json

    from offroll_audit import model
    from offroll_audit.console.render import print_notes, print_warnings, stdout_console
    from offroll_audit.load import load_dataset
    from offroll_audit.profile import load_profile
    from offroll_audit.window import choose_window

    model.check_options(family, cluster, mixed, "auto")
    if out is not None:
        model.check_out_path(out)
    formulas = [formula] if compare is None else [formula, compare]
    outcomes = [model.outcome_column(model.split_formula(f)[0]) for f in formulas]
    model.check_same_outcome(outcomes)
    rules = load_profile(profile)
    dataset, report = load_dataset(data, encoding=encoding)
    print_warnings(report, quiet)
    window = choose_window(
        dataset.exits, term, start.date() if start else None, end.date() if end else None
    )
    frame = model.build_design_frame(dataset, outcomes[0], window, rules)
    other = comparison = None
    if compare is None:
        result = model.fit_model(frame, formula, family, cluster, mixed)
    else:
        result, other, comparison = model.compare_models(
            frame, formula, compare, family, cluster, mixed
        )
    print_notes([note for fitted in (result, other) if fitted for note in fitted.warnings], quiet)
    window_info = window.as_dict()
    if json_output:
        payload = {**result.to_dict(), "window": window_info, "profile": rules.name}
        if comparison is not None and other is not None:
            payload["compare"] = {**comparison.to_dict(), "model": other.to_dict()}
        typer.echo(json.dumps(payload, indent=2))
    elif not quiet:
        console = stdout_console()
        render(console, result, window_info)
        if comparison is not None and other is not None:
            render(console, other, window_info, title="Second model")
            console.print(comparison.sentence(), markup=False)
            console.print(f"Note: {comparison.note}.", markup=False, style="dim")
    if out is not None:
        model.write_table(out, result, comparison, other)
        options = {
            "outcome": result.outcome,
            "compare": compare,
            "window": window.as_dict(),
            "profile": rules.name,
            "data": str(data),
        }
        manifest = model.manifest(dataset.files, result, options, out)
        written = model.write_manifest(out, manifest)
        if not quiet and not json_output:
            stdout_console().print(f"Wrote {out} and {written.name}", markup=False)
    return 0


def render(console, result, window: dict, title: str = "Model") -> None:
    """The coefficient table, fit statistics and one plain-English line per term."""
    from rich.table import Table

    from offroll_audit.model import term_sentences

    ratio = "OR" if result.family == "binomial" else "RR"
    table = Table(title=f"{title}: {result.formula}", title_justify="left", expand=False)
    for name, justify in (
        ("term", "left"),
        ("estimate", "right"),
        ("std err", "right"),
        (ratio, "right"),
        ("95% CI", "right"),
        ("p", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name == "term")
    for t in result.terms:
        if t.term in result.not_estimable:
            table.add_row(t.term, "-", "-", "-", "not estimable", "-")
            continue
        table.add_row(
            t.term,
            f"{t.estimate:.4f}",
            f"{t.std_err:.4f}",
            _g(t.odds_ratio),
            f"{_g(t.ci_low)} to {_g(t.ci_high)}",
            _p(t.p),
        )
    console.print(table)
    lines = [
        f"{result.estimator}.",
        f"Standard errors: {result.std_err_method}.",
        f"Window {window['from']} to {window['to']} ({window['source']}). "
        f"Pupils: {result.n_pupils:,} ({result.n_events:,} with the outcome); clusters: "
        f"{result.n_clusters:,}; schools: {result.n_schools:,}; fitted on "
        f"{result.n_rows_fitted:,} {result.fitted_on}.",
        f"Log-likelihood {result.loglik:.3f}; AIC {result.aic:.3f}; "
        f"deviance {result.deviance:.3f}.",
    ]
    if result.random_effect:
        re_ = result.random_effect
        ci = (
            f" (95% CI {_g(re_['sd_ci_low'])} to {_g(re_['sd_ci_high'])})"
            if re_.get("sd_ci_low") is not None
            else ""
        )
        icc = f"; intraclass correlation {re_['icc']:.3f}" if re_.get("icc") is not None else ""
        lines.append(
            f"Random intercept per {re_['group']}: SD {_g(re_['sd'])}{ci} on the "
            f"{result.link} scale{icc}."
        )
    for line in lines:
        console.print(line, markup=False)
    console.print("In plain English:", style="bold")
    for sentence in term_sentences(result):
        console.print(f"- {sentence}", markup=False)


def _g(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.3e}"


def _p(p: float) -> str:
    if p != p:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
