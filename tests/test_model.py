"""Researcher mode (offroll_audit/model.py and console/model.py): estimates, SEs, words, files.

Independent references: statsmodels' pupil-level GLM with cluster-robust
covariance, brute-force integration of the random-intercept likelihood, and
simulated data with a planted odds ratio.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import openpyxl
import polars as pl
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
import typer
from scipy.special import expit, logsumexp

from offroll_audit import codes
from offroll_audit import model as m
from offroll_audit.console.errors import run_guarded
from offroll_audit.console.model import command
from offroll_audit.problems import UsageError

MAIN = "ehe ~ C(sen_provision) + disadvantaged + C(social_care) + type + school_pct_disadvantaged"
PLANTED = "ehe ~ C(sen_provision) + disadvantaged + t0 + sen_t0 + rural + sex"


def simulate(
    seed: int,
    schools: int = 60,
    low: int = 80,
    high: int = 200,
    sigma: float = 0.5,
    base: float = -3.5,
) -> pl.DataFrame:
    """Pupils with a school random intercept and an odds ratio of 2 for SEN pupils in trust T0."""
    rng = np.random.default_rng(seed)
    trust = np.where(np.arange(schools) < schools // 4, 0, -1)
    trust[schools // 4 : schools // 2] = 1 + np.arange(schools // 2 - schools // 4) // 5
    rural = rng.random(schools) < 0.4
    school_dis = rng.beta(2, 6, schools)
    u = rng.normal(0.0, sigma, schools)
    size = rng.integers(low, high, schools)
    school = np.repeat(np.arange(schools), size)
    n = int(size.sum())
    sen = rng.choice(3, n, p=[0.75, 0.18, 0.07])
    dis = rng.random(n) < school_dis[school]
    social = rng.choice(4, n, p=[0.9, 0.06, 0.02, 0.02])
    male = rng.random(n) < 0.5
    t0 = trust[school] == 0
    sen_t0 = (sen > 0) & t0
    eta = base + np.array([0.0, 0.5, 0.8])[sen] + 0.5 * dis + 0.4 * (social > 0) + u[school]
    eta += math.log(2.0) * sen_t0
    trusts = np.array([f"Trust {t}" if t >= 0 else "" for t in trust])[school]
    academy = (trust >= 0) | (np.arange(schools) % 3 == 0)
    return pl.DataFrame(
        {
            "urn": (100000 + school).astype(str),
            "trust": pl.Series(trusts).replace("", None),
            "type": pl.Series(np.where(academy, "academy", "maintained")[school]).cast(
                codes.SchoolType
            ),
            "sen_provision": pl.Series(np.array(codes.SEN_PROVISION)[sen]).cast(codes.SenProvision),
            "disadvantaged": dis,
            "social_care": pl.Series(np.array(codes.SOCIAL_CARE)[social]).cast(codes.SocialCare),
            "sex": np.where(male, "M", "F"),
            "t0": t0,
            "sen_t0": sen_t0,
            "rural": rural[school],
            "school_pct_disadvantaged": school_dis[school] * 100,
            "attendance": np.clip(rng.normal(0.93, 0.05, n), 0, 1),
            "exposure": rng.uniform(0.3, 1.0, n),
            "ehe": (rng.random(n) < expit(eta)).astype(np.int64),
        }
    )


@pytest.fixture(scope="module")
def pupils() -> pl.DataFrame:
    return simulate(1)


def as_pandas(frame: pl.DataFrame):
    """statsmodels' view of the frame: categoricals keep the levels present, in code order."""
    data = frame.to_pandas()
    for name in data.columns:
        if str(data[name].dtype) == "category":
            data[name] = data[name].cat.remove_unused_categories()
    return data


def arrays(result: m.ModelResult) -> tuple[np.ndarray, np.ndarray]:
    return np.array([t.estimate for t in result.terms]), np.array([t.std_err for t in result.terms])


# --------------------------------------------------------------------------- estimates and SEs


@pytest.mark.parametrize("family", ["binomial", "poisson"])
@pytest.mark.parametrize("cluster", ["school", "trust", "none"])
def test_patterns_and_pupils_agree_to_1e6(pupils, family, cluster):
    """Aggregating into covariate patterns within clusters changes nothing: estimates, SEs, LL."""
    patterns = m.fit_model(pupils, MAIN, family, cluster, fit_on="patterns")
    each = m.fit_model(pupils, MAIN, family, cluster, fit_on="pupils")
    assert patterns.n_rows_fitted < each.n_rows_fitted / 10
    assert each.n_rows_fitted == pupils.height == patterns.n_pupils
    (b1, s1), (b2, s2) = arrays(patterns), arrays(each)
    assert np.max(np.abs(b1 - b2)) < 1e-6
    assert np.max(np.abs(s1 - s2)) < 1e-6
    assert patterns.loglik == pytest.approx(each.loglik, abs=1e-6)
    assert patterns.deviance == pytest.approx(each.deviance, abs=1e-6)
    assert patterns.n_clusters == each.n_clusters


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_cluster_robust_fit_matches_statsmodels(pupils, family):
    """statsmodels' pupil-level GLM with cov_type="cluster" is the reference."""
    result = m.fit_model(pupils, MAIN, family)
    data = as_pandas(pupils)
    groups = data["urn"].astype("category").cat.codes
    if family == "binomial":
        reference = smf.glm(MAIN, data, family=sm.families.Binomial())
    else:
        reference = smf.glm(
            MAIN, data, family=sm.families.Poisson(), offset=np.log(data["exposure"])
        )
    fitted = reference.fit(cov_type="cluster", cov_kwds={"groups": groups})
    beta, se = arrays(result)
    assert list(fitted.params.index) == result.names
    np.testing.assert_allclose(beta, fitted.params.values, rtol=0, atol=1e-8)
    np.testing.assert_allclose(se, fitted.bse.values, rtol=1e-7)
    assert result.loglik == pytest.approx(fitted.llf, rel=1e-10)
    assert result.deviance == pytest.approx(fitted.deviance, rel=1e-9)
    assert result.aic == pytest.approx(fitted.aic, rel=1e-9)
    ci = np.exp(fitted.conf_int().values)
    np.testing.assert_allclose([t.ci_low for t in result.terms], ci[:, 0], rtol=1e-6)
    np.testing.assert_allclose(
        [t.p for t in result.terms], fitted.pvalues.values, rtol=1e-5, atol=1e-12
    )


def test_trust_clusters_put_schools_without_a_trust_on_their_own(pupils):
    result = m.fit_model(pupils, MAIN, cluster="trust")
    trusts = pupils.select(pl.coalesce("trust", pl.lit("s") + pl.col("urn"))).n_unique()
    assert result.n_clusters == trusts < pupils.get_column("urn").n_unique()


def test_continuous_predictor_or_stateful_transform_fits_pupil_level(pupils):
    """Patterns would be nearly unique (attendance) or the design needs the whole sample."""
    assert m.fit_model(pupils, "ehe ~ attendance").fitted_on == "pupils"
    assert m.fit_model(pupils, "ehe ~ center(school_pct_disadvantaged)").fitted_on == "pupils"
    assert m.fit_model(pupils, "ehe ~ school_pct_disadvantaged").fitted_on.startswith("covariate")


def test_planted_odds_ratio_is_covered_over_seeds():
    """Fast version of benchmarks/bench_model.py --coverage: 12 small LAs."""
    hits = {"sen_t0[T.True]": 0, "rural[T.True]": 0, "sex[T.M]": 0}
    truth = {"sen_t0[T.True]": 2.0, "rural[T.True]": 1.0, "sex[T.M]": 1.0}
    estimates = []
    for seed in range(12):
        result = m.fit_model(simulate(100 + seed, schools=80), PLANTED)
        terms = {t.term: t for t in result.terms}
        for name in hits:
            hits[name] += terms[name].ci_low <= truth[name] <= terms[name].ci_high
        estimates.append(terms["sen_t0[T.True]"].estimate)
    assert all(count >= 10 for count in hits.values()), hits
    assert abs(np.mean(estimates) - math.log(2.0)) < 0.15


# --------------------------------------------------------------------------- random intercept


def brute_force_loglik(y, x, groups, beta, sigma, nodes: int = 120) -> float:
    """Sum over clusters of log of the integral over u ~ N(0, sigma^2), non-adaptive quadrature."""
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    log_w = np.log(w / math.sqrt(2 * math.pi))
    eta = x @ beta
    total = 0.0
    for g in np.unique(groups):
        rows = groups == g
        e = eta[rows][:, None] + sigma * t[None, :]
        ll = (y[rows][:, None] * e - np.logaddexp(0.0, e)).sum(0)
        total += logsumexp(ll + log_w)
    return float(total)


def test_mixed_model_maximises_the_integrated_likelihood():
    frame = simulate(7, schools=25, low=40, high=120, sigma=0.8, base=-2.5)
    result = m.fit_model(frame, "ehe ~ disadvantaged + rural", mixed=True)
    beta = np.array([t.estimate for t in result.terms])
    sigma = result.random_effect["sd"]
    y = frame.get_column("ehe").to_numpy().astype(float)
    x = np.column_stack(
        [np.ones(frame.height), frame["disadvantaged"].to_numpy(), frame["rural"].to_numpy()]
    ).astype(float)
    groups = frame.get_column("urn").to_numpy()
    at_max = brute_force_loglik(y, x, groups, beta, sigma)
    assert result.loglik == pytest.approx(at_max, abs=1e-6)
    for j in range(3):  # every direction goes down from the estimate
        for step in (-0.02, 0.02):
            moved = beta.copy()
            moved[j] += step
            assert brute_force_loglik(y, x, groups, moved, sigma) < at_max
    for factor in (0.9, 1.1):
        assert brute_force_loglik(y, x, groups, beta, sigma * factor) < at_max
    # Its SEs are model-based and larger than the naive GLM's for the school-level term.
    naive = m.fit_model(frame, "ehe ~ disadvantaged + rural", cluster="none")
    assert result.terms[2].std_err > naive.terms[2].std_err
    assert 0.3 < sigma < 1.6
    assert result.estimator.startswith("random-intercept binomial GLMM")
    assert "Gauss-Hermite" in result.estimator


def test_mixed_model_same_on_patterns_and_pupils(pupils):
    formula = "ehe ~ C(sen_provision) + disadvantaged + rural"
    a = m.fit_model(pupils, formula, mixed=True, fit_on="patterns")
    b = m.fit_model(pupils, formula, mixed=True, fit_on="pupils")
    (b1, s1), (b2, s2) = arrays(a), arrays(b)
    assert np.max(np.abs(b1 - b2)) < 1e-5 and np.max(np.abs(s1 - s2)) < 1e-5
    assert a.random_effect["sd"] == pytest.approx(b.random_effect["sd"], abs=1e-5)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)


# --------------------------------------------------------------------------- comparison


def test_compare_finds_the_nested_model_either_way(pupils):
    small, large = "ehe ~ C(sen_provision)", "ehe ~ C(sen_provision) + disadvantaged + rural"
    one, two, test = m.compare_models(pupils, large, small)
    assert not test.nested_is_first and test.nested == small and test.df == 2
    assert test.chi2 == pytest.approx(2 * (one.loglik - two.loglik))
    data = as_pandas(pupils)
    full = smf.glm(large, data, family=sm.families.Binomial()).fit()
    reduced = smf.glm(small, data, family=sm.families.Binomial()).fit()
    assert test.chi2 == pytest.approx(2 * (full.llf - reduced.llf), rel=1e-9)
    assert test.wald_chi2 is not None and 0 <= test.wald_p <= 1
    _, _, flipped = m.compare_models(pupils, small, large)
    assert flipped.nested_is_first and flipped.chi2 == pytest.approx(test.chi2)
    assert "nested in" in flipped.sentence() and "chi-square" in flipped.sentence()
    with pytest.raises(UsageError, match="not nested"):
        m.compare_models(pupils, "ehe ~ rural", "ehe ~ sex")


# --------------------------------------------------------------------------- words and problems


def test_sentences_say_the_ratio_against_the_reference(pupils):
    result = m.fit_model(pupils, MAIN)
    lines = dict(zip(result.names, m.term_sentences(result), strict=True))
    ehc = lines["C(sen_provision)[T.E]"]
    assert re.fullmatch(
        r"Pupils with an EHC plan: odds of leaving for home education [\d.]+ times those of pupils "
        r"without SEN \(95% CI [\d.]+ to [\d.]+\), p (< 0\.001|= [\d.]+)",
        ehc,
    ), ehc
    assert lines["disadvantaged[T.True]"].startswith("Disadvantaged pupils: odds of")
    assert "Each 10 percentage points more disadvantaged" in lines["school_pct_disadvantaged"]
    rates = m.fit_model(pupils, MAIN, family="poisson")
    assert "rate of leaving for home education" in m.term_sentences(rates)[1]


def test_group_without_events_is_not_estimable_and_left_out(pupils):
    frame = pupils.with_columns(
        pl.when(pl.col("social_care") == "CPP").then(0).otherwise(pl.col("ehe")).alias("ehe")
    )
    result = m.fit_model(frame, "ehe ~ C(social_care) + disadvantaged")
    assert list(result.not_estimable) == ["C(social_care)[T.CPP]"]
    kept = frame.filter(pl.col("social_care") != "CPP")
    reference = m.fit_model(kept, "ehe ~ C(social_care) + disadvantaged")
    by_name = {t.term: t for t in reference.terms}
    for t in result.terms:
        if t.term in result.not_estimable:
            assert math.isnan(t.estimate)
        else:
            assert t.estimate == pytest.approx(by_name[t.term].estimate, abs=1e-9)
    assert result.loglik == pytest.approx(reference.loglik)
    assert any("no pupil in this group had the outcome" in s for s in m.term_sentences(result))


@pytest.mark.parametrize("mixed", [False, True])
def test_parameters_count_only_fitted_columns_as_the_aic_does(pupils, mixed):
    frame = pupils.with_columns(
        pl.when(pl.col("social_care") == "CPP").then(0).otherwise(pl.col("ehe")).alias("ehe")
    )
    result = m.fit_model(frame, "ehe ~ C(social_care) + disadvantaged", mixed=mixed)
    assert list(result.not_estimable) == ["C(social_care)[T.CPP]"]
    assert result.n_parameters == len(result.terms) - 1 + (1 if mixed else 0)
    assert result.aic == pytest.approx(2 * result.n_parameters - 2 * result.loglik)
    fit = result.to_dict()["fit"]
    assert fit["parameters"] == result.n_parameters
    assert fit["aic"] == pytest.approx(2 * fit["parameters"] - 2 * fit["log_likelihood"])


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("ehe ~ C(sen_provison)", r"unknown column 'sen_provison' \(did you mean 'sen_provision'"),
        ("ehe ~ C(sen_provision", "malformed"),
        ("ehe ~ rural + + ", "malformed"),
        ("ehe C(sen_provision)", "one `~`"),
        ("ehe ~ rural + __import__('os')", "unknown column '__import__'"),
        ("ehe ~ np.__dict__", "not allowed"),
        ("nonsense ~ rural", "outcome 'nonsense' is not known"),
        ("ehe ~ t0 + I(1 - t0)", "collinear"),
    ],
)
def test_bad_formulas_name_the_problem_and_the_columns(pupils, formula, message):
    with pytest.raises(UsageError, match=message) as caught:
        m.fit_model(pupils, formula)
    if "column" in message or "malformed" in message:
        assert "Available columns: urn, trust, type, sen_provision" in str(caught.value)
        assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from offroll_audit.synthetic import generate_dataset

    folder = tmp_path_factory.mktemp("model") / "la"
    generate_dataset(folder, seed=5, schools=12, pupils=3000, letters=False)
    return folder


def run(argv: list[str]) -> int:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("model")(command)
    app.callback()(lambda: None)
    return run_guarded(app, ["model", *argv], {})


def test_build_design_frame_has_one_row_per_pupil_and_the_school_context(dataset):
    from offroll_audit.load import load_dataset
    from offroll_audit.window import choose_window

    data, _ = load_dataset(dataset)
    window = choose_window(data.exits, None, None, None)
    frame = m.build_design_frame(data, ["ehe", "CME"], window)
    assert frame.select("pupil_id", "urn").is_unique().all()
    ehe_pairs = data.exits.filter(pl.col("destination") == "EHE").select("pupil_id", "urn").unique()
    assert frame.get_column("ehe").sum() == ehe_pairs.height
    assert frame.get_column("cme").sum() > 0
    schools = data.schools.filter(pl.col("trust").is_not_null())
    sizes = dict(schools.group_by("trust").len().iter_rows())
    for row in frame.filter(pl.col("in_trust")).unique("urn").iter_rows(named=True):
        assert row["trust_size"] == sizes[row["trust"]]
    roll = data.pupils.group_by("urn").agg(pl.len(), pl.col("disadvantaged").mean() * 100)
    for urn, size, pct in roll.iter_rows():
        row = frame.filter(pl.col("urn") == urn).row(0, named=True)
        assert row["school_size"] == size and row["school_pct_disadvantaged"] == pytest.approx(pct)


@pytest.mark.parametrize(
    ("formula", "words"),
    [
        ("ehe ~ C(sen_provison) + disadvantaged", "unknown column 'sen_provison'"),
        ("ehe ~ C(sen_provision + disadvantaged", "is malformed"),
    ],
)
def test_command_exits_2_naming_the_problem_and_columns(dataset, capsys, formula, words):
    assert run([str(dataset), "--formula", formula]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert "Available columns:" in err[0] and "sen_provision" in err[0] and "trust_size" in err[0]


def test_command_json_out_and_manifest(dataset, tmp_path, capsys):
    out = tmp_path / "model.xlsx"
    formula = "ehe ~ C(sen_provision) + disadvantaged + in_trust"
    code = run(
        [
            str(dataset),
            "-f",
            formula,
            "--json",
            "--out",
            str(out),
            "--compare",
            "ehe ~ disadvantaged",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert {"formula", "family", "n_pupils", "n_clusters", "terms"} <= set(payload)
    assert payload["formula"] == formula and payload["family"] == "binomial"
    for term in payload["terms"]:
        assert {"term", "estimate", "std_err", "odds_ratio", "ci_low", "ci_high", "p"} <= set(term)
        assert term["ci_low"] <= term["odds_ratio"] <= term["ci_high"]
        assert term["odds_ratio"] == pytest.approx(math.exp(term["estimate"]))
    assert payload["compare"]["df"] == 3 and payload["compare"]["nested"] == "ehe ~ disadvantaged"
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == ["Coefficients", "Model", "Comparison"]
    manifest = json.loads((tmp_path / "model.xlsx.manifest.json").read_text())
    pupils_hash = hashlib.sha256((dataset / "pupils.csv").read_bytes()).hexdigest()
    assert manifest["inputs"]["pupils"]["sha256"] == pupils_hash
    assert manifest["formula"] == formula and manifest["tool"]["version"]
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_written_text_cells_are_inert(pupils, tmp_path):
    result = m.fit_model(pupils, "ehe ~ rural")
    result.formula = '=HYPERLINK("http://x","y")'
    result.warnings.append("@SUM(A1)")
    m.write_table(tmp_path / "t.xlsx", result)
    m.write_table(tmp_path / "t.csv", result)
    sheet = openpyxl.load_workbook(tmp_path / "t.xlsx")["Model"]
    cells = [c for row in sheet.iter_rows() for c in row if isinstance(c.value, str)]
    assert any(c.value.startswith("=HYPERLINK") for c in cells)
    assert all(c.data_type == "s" for c in cells)
    with (tmp_path / "t.csv").open(newline="") as handle:
        texts = [v for row in csv.reader(handle) for v in row]
    assert '\'=HYPERLINK("http://x","y")' in texts and "'@SUM(A1)" in texts
    assert not any(v.startswith(("=", "@", "+")) for v in texts)
    with pytest.raises(UsageError, match=r"\.xlsx or \.csv"):
        m.write_table(tmp_path / "t.txt", result)
