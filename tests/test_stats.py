"""The significance stage (offroll_audit/significance.py) against methodology.md sections 2-4.

Reference numbers come from methodology section 3 (FunnelPlotR's and
PHStatsMethods' own test suites, and the exact Poisson formulas); the rest are
brute-force or simulation checks of each step.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from offroll_audit import significance as stats


def assert_sig_figs(actual, reference, figures: int = 6) -> None:
    """Equal to `figures` significant figures: within half a unit of the last figure."""
    actual, reference = np.asarray(actual, dtype=float), np.asarray(reference, dtype=float)
    unit = 10.0 ** (np.floor(np.log10(np.abs(reference))) - (figures - 1))
    assert np.all(np.abs(actual - reference) <= 0.5 * unit), (actual, reference)


# --------------------------------------------------------------------------- methodology section 3

FPR_E = [15, 20, 30]
SHMI_O = [100, 150, 180, 80, 120, 225]
SHMI_E = [108, 112, 165, 95, 100, 220]


def test_funnelplotr_unadjusted_limits_reproduce_its_test_suite():
    low95, high95 = stats.funnelplotr_unadjusted_limits(FPR_E, 0.95)
    low998, high998 = stats.funnelplotr_unadjusted_limits(FPR_E, 0.998)
    assert_sig_figs(low95, [0.5596924, 0.6108260, 0.6746958])
    assert_sig_figs(high95, [1.649348, 1.544419, 1.427562])
    assert_sig_figs(low998, [0.3862650, 0.4479107, 0.5289724])
    assert_sig_figs(high998, [2.082907, 1.902094, 1.702771])


def test_funnelplotr_shmi_reproduces_phi_tau2_and_adjusted_limits():
    fit = stats.funnelplotr_shmi(SHMI_O, SHMI_E, level=0.95)
    assert_sig_figs(fit.phi, 2.948033)
    assert_sig_figs(fit.tau2, 0.0194775)
    assert_sig_figs(fit.lower, [0.717307, 0.718683, 0.731093, 0.712128, 0.714261, 0.738022])
    assert_sig_figs(fit.upper, [1.394104, 1.391433, 1.367816, 1.404242, 1.400048, 1.354973])
    assert not fit.outlier.any()


def test_garwood_interval_and_exact_poisson_p_reproduce_reference():
    observed, expected = [0, 1, 3, 7], [0.8, 1.5, 2.0, 3.2]
    low, high = stats.garwood_interval(observed, expected)
    assert low[0] == 0.0
    assert_sig_figs(low[1:], [0.01687854, 0.30933606, 0.87948845])
    assert_sig_figs(high, [4.61109932, 3.71442893, 4.38363653, 4.50708605])
    p = stats.poisson_p_upper(observed, expected)
    assert p[0] == 1.0
    assert_sig_figs(p[1:], [0.77686984, 0.32332358, 0.04461910])


def test_exact_poisson_count_limits_reproduce_phstatsmethods():
    lower_200, _ = stats.garwood_interval([200], [1.0], level=0.95)
    _, upper_500 = stats.garwood_interval([500], [1.0], level=0.998)
    assert_sig_figs(lower_200, [173.24088])
    assert_sig_figs(upper_500, [573.02760])


# ---------------------------------------------------------------------------------------- p-values


def brute_force_sf(observed: int, expected: float, alpha: float) -> float:
    """P(Y >= O) by summing the pmf below O."""
    below = np.arange(observed)
    if alpha == 0:
        return 1.0 - float(sps.poisson.pmf(below, expected).sum())
    return 1.0 - float(sps.nbinom.pmf(below, 1 / alpha, 1 / (1 + alpha * expected)).sum())


@pytest.mark.parametrize(
    ("observed", "expected", "alpha"), [(3, 1.2, 0.0), (9, 4.0, 0.3), (12, 6.5, 1.5)]
)
def test_p_upper_equals_summed_pmf(observed, expected, alpha):
    assert stats.nb_p_upper(observed, expected, alpha) == pytest.approx(
        brute_force_sf(observed, expected, alpha), rel=1e-10
    )


def test_nb_reduces_to_poisson_at_zero_and_tiny_alpha():
    observed, expected = np.arange(0, 40), np.full(40, 12.5)
    poisson = stats.poisson_p_upper(observed, expected)
    np.testing.assert_array_equal(stats.nb_p_upper(observed, expected, 0.0), poisson)
    np.testing.assert_allclose(stats.nb_p_upper(observed, expected, 1e-9), poisson, rtol=1e-12)
    np.testing.assert_allclose(stats.nb_p_upper(observed, expected, 2e-8), poisson, rtol=1e-5)
    np.testing.assert_array_equal(
        stats.nb_p_lower(observed, expected, 0.0), stats.poisson_p_lower(observed, expected)
    )


def test_zero_expected_is_handled_sensibly():
    np.testing.assert_array_equal(
        stats.poisson_p_upper([0, 1, 4], [0.0, 0.0, 0.0]), [1.0, 0.0, 0.0]
    )
    np.testing.assert_array_equal(stats.nb_p_upper([0, 2], [0.0, 0.0], 0.3), [1.0, 0.0])
    np.testing.assert_array_equal(stats.poisson_p_lower([0, 3], [0.0, 0.0]), [1.0, 1.0])
    low, high = stats.garwood_interval([0, 2], [0.0, 0.0])
    assert np.isnan(low).all() and np.isnan(high).all()
    assert np.isnan(stats.funnel_limits([0.0], 0.1)[0.999]).all()


def test_zero_observed_is_handled_everywhere():
    expected = np.array([0.4, 3.0, 25.0])
    zeros = np.zeros(3)
    np.testing.assert_array_equal(stats.poisson_p_upper(zeros, expected), 1.0)
    np.testing.assert_array_equal(stats.nb_p_upper(zeros, expected, 0.2), 1.0)
    np.testing.assert_allclose(stats.poisson_p_lower(zeros, expected), np.exp(-expected))
    np.testing.assert_allclose(stats.nb_p_lower(zeros, expected, 0.2), (1 + 0.2 * expected) ** -5.0)
    low, high = stats.garwood_interval(zeros, expected)
    np.testing.assert_array_equal(low, 0.0)
    np.testing.assert_allclose(high, -np.log(0.025) / expected)  # chi2(0.975, 2) / 2 = -ln(0.025)
    np.testing.assert_array_equal(stats.shrunken_ratio(zeros, expected, 0.0), 0.0)
    assert np.isfinite(stats.mid_p_z(zeros, expected, 0.2)).all()
    assert (stats.mid_p_z(zeros, expected, 0.2) < 0).all()


# ---------------------------------------------------------------------------------- overdispersion


def simulate_schools(alpha: float, n: int = 3000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    expected = rng.uniform(0.5, 30, n)
    means = expected * rng.gamma(1 / alpha, alpha, n) if alpha > 0 else expected
    return rng.poisson(means), expected


def test_alpha_ml_recovers_a_known_alpha():
    observed, expected = simulate_schools(0.2)
    alpha, (low, high) = stats.alpha_ml(observed, expected)
    assert alpha == pytest.approx(0.2, abs=0.05)
    assert low < 0.2 < high


def test_alpha_ml_without_overdispersion_is_near_zero_with_zero_lower_bound():
    observed, expected = simulate_schools(0.0)
    alpha, (low, high) = stats.alpha_ml(observed, expected)
    assert 0.0 <= alpha < 0.01
    assert low == 0.0
    assert 0.0 < high < 0.02


def test_alpha_ml_is_the_maximum_and_its_interval_is_the_profile_drop():
    observed, expected = simulate_schools(0.1, n=400, seed=3)
    alpha, (low, high) = stats.alpha_ml(observed, expected)
    loglik = stats.nb2_loglik(observed, expected)
    grid = np.concatenate(([0.0], np.geomspace(1e-5, 10, 2000)))
    assert loglik(alpha) >= max(loglik(a) for a in grid) - 1e-9
    drop = sps.chi2.ppf(0.95, 1) / 2
    for end in (low, high):
        assert end == 0.0 or loglik(end) == pytest.approx(loglik(alpha) - drop, abs=1e-6)


def test_nb2_loglik_matches_scipy_and_is_continuous_at_poisson():
    observed, expected = np.array([0, 3, 7, 1, 12]), np.array([0.4, 2.0, 3.5, 1.1, 6.0])
    loglik = stats.nb2_loglik(observed, expected)
    for alpha in (0.05, 0.7, 4.0):
        scipy_ll = sps.nbinom.logpmf(observed, 1 / alpha, 1 / (1 + alpha * expected)).sum()
        assert loglik(alpha) == pytest.approx(scipy_ll, rel=1e-10)
    poisson_ll = sps.poisson.logpmf(observed, expected).sum()
    assert loglik(0.0) == pytest.approx(poisson_ll, rel=1e-12)
    assert loglik(1e-10) == pytest.approx(poisson_ll, rel=1e-8)


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        ([0, 0, 0, 0], [1.0, 2.0, 0.5, 3.0]),  # all-zero counts
        ([4], [1.5]),  # a single school
        ([1, 0], [1e-12, 1e-12]),  # E tiny
        ([], []),
        ([2, 3], [0.0, 0.0]),  # no usable expected count
    ],
)
def test_alpha_ml_degenerate_data_gives_zero_with_open_interval(observed, expected):
    assert stats.alpha_ml(observed, expected) == (0.0, (0.0, math.inf))


def test_alpha_ml_rejects_fractional_counts():
    with pytest.raises(ValueError, match="whole numbers"):
        stats.alpha_ml([1.5, 2.0], [1.0, 2.0])


def test_alpha_moment_hand_example():
    # ((0-1)^2 - 0) + ((6-2)^2 - 6) + ((3-1)^2 - 3) = 1 + 10 + 1 = 12; sum E^2 = 6
    assert stats.alpha_moment([0, 6, 3], [1.0, 2.0, 1.0]) == pytest.approx(2.0)
    assert stats.alpha_moment([1, 2, 3], [1.0, 2.0, 3.0]) == 0.0  # underdispersed: floored at 0
    assert stats.alpha_moment([0, 0], [0.0, 0.0]) == 0.0


def test_alpha_moment_is_unbiased_enough_on_simulated_data():
    observed, expected = simulate_schools(0.2, seed=11)
    assert stats.alpha_moment(observed, expected) == pytest.approx(0.2, abs=0.05)


def test_fit_overdispersion_sets_outliers_aside():
    rng = np.random.default_rng(5)
    expected = rng.uniform(2, 20, 300)
    observed = rng.poisson(expected)
    observed[:3] = np.round(expected[:3] * 5 + 30)  # three blatant off-rollers
    with_outliers, _ = stats.alpha_ml(observed, expected)
    fit = stats.fit_overdispersion(observed, expected)
    assert fit.n_set_aside >= 3 and fit.n_schools == 300 - fit.n_set_aside
    assert with_outliers > 0.05
    assert fit.alpha < 0.02 and fit.method == "nb-ml"
    assert fit.warning is None


def test_fit_overdispersion_floor_force_and_fallback():
    observed, expected = simulate_schools(0.0, n=500)
    floored = stats.fit_overdispersion(observed, expected, min_alpha=0.1)
    assert floored.alpha == 0.1 and floored.method == "nb-ml+floor"
    forced = stats.fit_overdispersion(observed, expected, force_poisson=True)
    assert forced.alpha == 0.0 and forced.method == "poisson"
    # one huge count among zeros: the likelihood rises without bound, the moment estimate takes over
    spiky_o, spiky_e = [0] * 2000 + [40], [0.02] * 2001
    fallback = stats.fit_overdispersion(spiky_o, spiky_e, outlier_p=0.0)
    assert fallback.method == "moment"
    assert fallback.alpha == pytest.approx(stats.alpha_moment(spiky_o, spiky_e))


def test_fit_overdispersion_warns_on_few_schools_or_small_counts():
    few = stats.fit_overdispersion([3, 5, 2, 8, 4, 6, 1, 7, 5, 3], [4.0] * 10)
    assert few.warning is not None and "only 10 schools" in few.warning
    small = stats.fit_overdispersion([0, 1, 0, 0, 2] * 6, [0.3] * 30)
    assert small.warning is not None and "small counts" in small.warning
    assert "only" not in small.warning
    empty = stats.fit_overdispersion([], [])
    assert empty.alpha == 0.0 and empty.n_schools == 0 and empty.warning is not None


# ------------------------------------------------------------------------ bands, q-values, ranking


def test_band_boundaries_are_strict_and_symmetric():
    p_upper = [0.0009999, 0.001, 0.0249, 0.025, 0.5, 0.9, 0.99, 0.0001, 0.0001, 0.0001]
    p_lower = [0.99, 0.99, 0.99, 0.99, 0.5, 0.0009999, 0.0249, 0.9, 0.9, 0.9]
    expected = [5, 5, 5, 5, 5, 5, 5, 1.0, 0.999, 0.0]
    got = stats.band(p_upper, p_lower, expected)
    want = [
        "high_998",
        "high_95",
        "high_95",
        "expected",
        "expected",
        "low_998",
        "low_95",
        "high_998",
        "too_few",
        "too_few",
    ]
    assert got.tolist() == want
    assert stats.band([0.0], [1.0], [0.0], min_expected=0.0).tolist() == ["too_few"]
    assert set(got) <= set(stats.BANDS)


def test_band_thresholds_come_from_the_profile():
    got = stats.band([0.004, 0.04], [0.99, 0.99], [5, 5], high_998=0.005, high_95=0.05)
    assert got.tolist() == ["high_998", "high_95"]


def test_bh_qvalues_hand_example():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): p m / rank = 0.02, 0.02, 0.04, 0.04
    q = stats.bh_qvalues([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])
    # monotone step: 0.8 * 2 / 1 = 1.6 is brought down to 0.9
    np.testing.assert_allclose(stats.bh_qvalues([0.9, 0.8]), [0.9, 0.9])
    assert np.isnan(stats.bh_qvalues([np.nan])).all()


def test_bh_qvalues_match_statsmodels():
    p = np.random.default_rng(2).beta(0.4, 1.5, 500)
    np.testing.assert_allclose(
        stats.bh_qvalues(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12
    )


def test_shrunken_ratio():
    assert stats.shrunken_ratio([3], [1.0], [0.5]) == pytest.approx(5 / 3)
    np.testing.assert_allclose(stats.shrunken_ratio([3, 0], [1.5, 2.0], 0.0), [2.0, 0.0])
    big, small = stats.shrunken_ratio([30, 3], [10.0, 1.0], 0.2)
    assert big > small  # the same raw ratio counts for more on more evidence
    assert np.isnan(stats.shrunken_ratio([1], [0.0], 0.0)).all()


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.8])
@pytest.mark.parametrize("threshold", [0.025, 0.001, 1e-9])
def test_count_to_flag_is_the_first_count_below_the_threshold(alpha, threshold):
    expected = np.concatenate(([0.0, 1e-6], np.geomspace(0.01, 400, 60)))
    count = stats.count_to_flag(expected, alpha, threshold)
    assert np.all(count == np.round(count)) and np.all(count >= 1)
    assert np.all(stats.nb_p_upper(count, expected, alpha) < threshold)
    assert np.all(stats.nb_p_upper(count - 1, expected, alpha) >= threshold)


def test_count_to_flag_example_from_methodology():
    # alpha about 0.05, E = 25: counts roughly double the expectation are needed
    assert stats.count_to_flag(25.0, 0.05, 0.001) == 54
    assert stats.count_to_flag(25.0, 0.0, 0.001) == 43


# ----------------------------------------------------------------------------------- funnel limits


def brute_force_limit(expected: float, alpha: float, p: float) -> float:
    """Spiegelhalter's interpolated limit from a pmf table scanned by hand."""
    k = np.arange(0, int(expected * 20 + 200))
    if alpha == 0:
        cdf = np.cumsum(sps.poisson.pmf(k, expected))
    else:
        cdf = np.cumsum(sps.nbinom.pmf(k, 1 / alpha, 1 / (1 + alpha * expected)))
    r = int(np.argmax(cdf >= p))
    below = cdf[r - 1] if r > 0 else 0.0
    w = (cdf[r] - p) / (cdf[r] - below)
    return max((r - w) / expected, 0.0)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("p", [0.001, 0.025, 0.975, 0.999])
def test_funnel_limits_agree_with_brute_force(alpha, p):
    expected = np.array([0.05, 0.7, 2.3, 9.1, 40.0, 150.0])
    got = stats.funnel_limits(expected, alpha, (p,))[p]
    want = [brute_force_limit(e, alpha, p) for e in expected]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize(("p", "r"), [(0.025, 6), (0.975, 14), (0.999, 25), (0.001, 3)])
def test_funnel_limit_is_r_over_e_where_the_quantile_is_exact(alpha, p, r):
    """At the E where F_E(r) = p exactly, w = 0 and the limit is r / E (no interpolation)."""

    def gap(e: float) -> float:
        if alpha == 0:
            return sps.poisson.cdf(r, e) - p
        return sps.nbinom.cdf(r, 1 / alpha, 1 / (1 + alpha * e)) - p

    e_exact = optimize.brentq(gap, 1e-6, 200.0, xtol=1e-14, rtol=1e-15)
    assert stats.funnel_limits([e_exact], alpha, (p,))[p][0] == pytest.approx(r / e_exact, rel=1e-8)


def test_nb_funnel_limits_are_wider_than_poisson():
    expected = np.geomspace(0.5, 500, 40)
    poisson = stats.funnel_limits(expected, 0.0)
    negbin = stats.funnel_limits(expected, 0.1)
    assert np.all(negbin[0.999] > poisson[0.999]) and np.all(negbin[0.975] > poisson[0.975])
    assert np.all(negbin[0.001] <= poisson[0.001]) and np.all(negbin[0.025] <= poisson[0.025])
    assert np.all(negbin[0.001] >= 0)
    assert np.all(poisson[0.001] <= poisson[0.025]) and np.all(poisson[0.975] <= poisson[0.999])


# --------------------------------------------------------------------------- FunnelPlotR behaviour


def test_funnelplotr_truncation_sets_aside_the_extreme_tenths():
    rng = np.random.default_rng(4)
    expected = rng.uniform(20, 200, 50)
    observed = rng.poisson(expected * rng.gamma(20, 1 / 20, 50))
    fit = stats.funnelplotr_shmi(observed, expected)
    z = np.sqrt(np.round(expected, 2)) * np.log(observed / np.round(expected, 2))
    ranks = sps.rankdata(z)
    middle = (np.floor(ranks * 10 / 51) > 0) & (np.floor(ranks * 10 / 51) < 9)
    assert middle.sum() == 50 - 5 - 5
    assert fit.phi == pytest.approx(np.mean(z[middle] ** 2))


def test_funnelplotr_zero_count_does_not_crash():
    observed = [0, 150, 180, 80, 120, 225]
    fit = stats.funnelplotr_shmi(observed, SHMI_E)
    assert fit.z[0] == -np.inf
    assert math.isfinite(fit.phi) and fit.tau2 >= 0
    assert fit.outlier[0]  # a ratio of 0 lies below any lower limit


def test_funnelplotr_without_overdispersion_uses_unadjusted_limits():
    expected = np.array([50.0, 60.0, 70.0, 80.0, 90.0])
    fit = stats.funnelplotr_shmi(np.round(expected), expected)
    assert fit.tau2 == 0.0
    low, high = stats.funnelplotr_unadjusted_limits(expected, 0.95)
    np.testing.assert_array_equal(fit.lower, low)
    np.testing.assert_array_equal(fit.upper, high)


@pytest.mark.parametrize("observed", [SHMI_O, [100, 190, 180, 80, 120, 160]])
def test_funnelplotr_p_values_agree_with_its_limits(observed):
    for level in (0.95, 0.998):
        fit = stats.funnelplotr_shmi(observed, SHMI_E, level=level)
        upper, lower = stats.funnelplotr_p_values(observed, SHMI_E, fit.tau2)
        a = (1 - level) / 2
        np.testing.assert_array_equal((upper < a) | (lower < a), fit.outlier)


# ------------------------------------------------------------------------------------------- CUSUM


def test_poisson_cusum_hand_computed():
    ln2 = math.log(2)
    s = stats.poisson_cusum([0, 3, 4, 0], [1.0, 1.0, 1.0, 1.0], rho=2.0)
    np.testing.assert_allclose(s, [0.0, 3 * ln2 - 1, 7 * ln2 - 2, 7 * ln2 - 3])
    many = stats.poisson_cusum([[0, 3, 4, 0], [5, 0, 0, 0]], np.ones((2, 4)))
    np.testing.assert_allclose(many[0], s)
    np.testing.assert_allclose(many[1], [5 * ln2 - 1, 5 * ln2 - 2, 5 * ln2 - 3, 0.0])
    with pytest.raises(ValueError):
        stats.poisson_cusum([1], [1.0], rho=1.0)


def test_cusum_threshold_gives_the_target_false_alarm_rate():
    rng = np.random.default_rng(8)
    expected = rng.uniform(0.1, 3.0, (100, 6))
    h = stats.cusum_threshold(expected, false_alarm=0.05, n_sim=2000, seed=0)
    fresh = np.random.default_rng(99).poisson(expected, (2000, 100, 6))
    alarmed = (stats.poisson_cusum(fresh, expected).max(axis=-1) > h).mean()
    assert alarmed == pytest.approx(0.05, abs=0.006)
    assert stats.cusum_threshold(expected, false_alarm=0.01, n_sim=500) > h


# --------------------------------------------------------------------------------------- the stage


def test_test_schools_adds_consistent_columns():
    rng = np.random.default_rng(6)
    expected = np.concatenate((rng.uniform(0.2, 15, 80), [0.0]))
    observed = rng.poisson(expected)
    observed[0], expected[0] = 40, 8.0
    totals = pl.DataFrame(
        {"urn": [f"{i:06d}" for i in range(81)], "observed": observed, "expected": expected}
    )
    frame, fit = stats.test_schools(totals, {"min_alpha": 0.0}, "nb")
    assert frame.height == 81 and fit.method.startswith("nb-ml")
    first = frame.row(0, named=True)
    assert first["band"] == "high_998" and first["observed"] >= first["count_to_flag_998"]
    assert first["limit998_high"] < first["ratio"]
    last = frame.row(80, named=True)
    assert last["band"] == "too_few" and last["q"] is None and last["ratio"] is None
    flagged = frame.filter(pl.col("band").is_in(["high_95", "high_998"]))
    assert (flagged["observed"] >= flagged["count_to_flag_95"]).all()
    assert frame["count_to_flag_95"].dtype == pl.Int64


def test_test_schools_methods():
    totals = pl.DataFrame(
        {"urn": list("abcdef"), "observed": SHMI_O, "expected": [float(e) for e in SHMI_E]}
    )
    poisson, fit = stats.test_schools(totals, {}, "poisson")
    assert fit.alpha == 0.0 and fit.method == "poisson"
    assert poisson["p"].to_list() == pytest.approx(poisson["p_poisson"].to_list())
    compat, _ = stats.test_schools(totals, {}, "funnelplotr")
    assert compat["band"].to_list() == ["expected"] * 6  # FunnelPlotR finds no school outside
    assert_sig_figs(
        compat["limit95_low"].to_numpy(),
        [0.717307, 0.718683, 0.731093, 0.712128, 0.714261, 0.738022],
    )
    with pytest.raises(ValueError, match="method"):
        stats.test_schools(totals, {}, "zscore")


# -------------------------------------------------------------------------------------- properties

expected_values = st.floats(min_value=0.01, max_value=200, allow_nan=False)
alphas = st.one_of(st.just(0.0), st.floats(min_value=1e-4, max_value=5))


@settings(max_examples=150, deadline=None)
@given(expected=expected_values, alpha=alphas, top=st.integers(min_value=1, max_value=400))
def test_p_values_are_probabilities_and_monotone(expected, alpha, top):
    observed = np.arange(0, top + 1)
    upper = stats.nb_p_upper(observed, expected, alpha)
    lower = stats.nb_p_lower(observed, expected, alpha)
    for p in (upper, lower):
        assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(upper) <= 0) and np.all(np.diff(lower) >= 0)
    assert np.all(upper + lower >= 1 - 1e-12)  # the tails overlap at O itself


@settings(max_examples=150, deadline=None)
@given(expected=expected_values, alpha=st.floats(min_value=1e-3, max_value=5))
def test_nb_upper_tail_is_heavier_beyond_the_crossing(expected, alpha):
    """NB and Poisson upper tails cross once near E; past E + sqrt(E) + 2 NB is always heavier.

    (Just above E the NB tail can be lighter: at E = 0.5, P(Y >= 1) is smaller
    under NB because NB puts more mass at 0.)
    """
    observed = np.arange(0, int(expected * 3 + 60))
    negbin = stats.nb_p_upper(observed, expected, alpha)
    poisson = stats.poisson_p_upper(observed, expected)
    far = observed >= expected + math.sqrt(expected) + 2
    assert np.all(negbin[far] >= poisson[far] * (1 - 1e-9))
    sign = np.sign(np.where(np.abs(negbin - poisson) < 1e-12, 0, negbin - poisson))
    changes = np.diff(sign[sign != 0])
    assert np.all(changes >= 0)  # at most one crossing, from lighter to heavier


def test_nb_tail_can_be_lighter_just_above_e():
    assert stats.nb_p_upper(1, 0.5, 1.0) < stats.poisson_p_upper(1, 0.5)


def test_quantile_search_equals_scipy_whatever_the_guess() -> None:
    """The Cornish-Fisher guess only seeds the search: from a guess of 0 (bisection) or one far
    too high, the answer is still scipy's quantile, checked on its own cdf."""
    rng = np.random.default_rng(3)
    e = np.concatenate([rng.gamma(0.7, 2, 400), rng.uniform(50, 5000, 100)])
    a = np.where(rng.random(e.size) < 0.3, 0.0, rng.gamma(0.5, 0.3, e.size))
    q = np.full(e.size, 0.999)
    nb = a >= stats.POISSON_ALPHA
    reference = np.where(
        nb,
        sps.nbinom.ppf(q, 1 / np.where(nb, a, 1), 1 / (1 + a * e)),
        sps.poisson.ppf(q, e),
    )

    def holds(k, i):
        return stats._count_cdf(k, e[i], a[i]) >= q[i]

    for guess in (np.zeros(e.size), 3 * reference + 50, stats._quantile_guess(q, e, a)):
        found = stats._smallest_count(holds, guess.copy(), 0.0)
        below = stats._count_cdf(found - 1, e, a)
        assert (stats._count_cdf(found, e, a) >= q).all() and ((found == 0) | (below < q)).all()
        np.testing.assert_array_equal(found, reference)


def test_count_to_flag_is_the_smallest_count_whose_p_is_below_the_threshold() -> None:
    rng = np.random.default_rng(4)
    e = np.concatenate([rng.gamma(0.5, 2, 500), rng.uniform(0, 300, 100), [0.0]])
    a = np.where(rng.random(e.size) < 0.3, 0.0, rng.gamma(0.5, 0.3, e.size))
    for threshold in (0.001, 0.025):
        count = stats.count_to_flag(e, a, threshold)
        assert (stats.nb_p_upper(count, e, a) < threshold).all()
        above = stats.nb_p_upper(count - 1, e, a)
        assert ((count == 1) | (above >= threshold)).all()
