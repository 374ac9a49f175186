"""The significance test stage: is a school's count of exits unusually high? (methodology.md
sections 2-4).

Pipeline: load -> expected -> **test** (this module) -> classify -> letters -> select -> report.

Counts are small (a primary school may expect 0.3 exits a term), so every
judgement uses an exact count distribution: Poisson, or negative binomial
(NB2: mean E, variance E + alpha E^2) once overdispersion is estimated. Each
statistical step is one small vectorised function over numpy arrays with one
element per school; `test_schools` strings them together for the pipeline.

A `funnelplotr` method reproduces the R package FunnelPlotR (SHMI
log-z-score method) so users can compare with it; its known weaknesses
(methodology section 4) are the reason it is not the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

FloatArray = NDArray[np.float64]

# Below this alpha the negative binomial is the Poisson to within scipy's own
# accuracy (nbinom.sf loses digits when n = 1/alpha passes about 1e8).
POISSON_ALPHA = 1e-8
# Search range for the maximum-likelihood alpha; a likelihood still rising at
# ALPHA_MAX means the data cannot pin alpha down.
ALPHA_GRID = np.geomspace(1e-6, 1e3, 91)
ALPHA_MAX = float(ALPHA_GRID[-1])
# Log-likelihood drop at the ends of a 95% profile-likelihood interval.
PROFILE_DROP_95 = float(stats.chi2.ppf(0.95, 1)) / 2.0
SMALL_TOTAL_EXPECTED = 50.0  # below this, alpha rests on small counts (warned)
CUSUM_DRAWS_PER_CHUNK = 2_000_000  # bounds memory of the CUSUM null simulation

BANDS = ("high_998", "high_95", "expected", "low_95", "low_998", "too_few")
METHODS = ("nb", "poisson", "funnelplotr")


# ----------------------------------------------------------------------------- count distributions


def _floats(*values: ArrayLike) -> list[FloatArray]:
    """Broadcast inputs to float arrays of one shape."""
    return list(np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values)))


def _by_family(method: str, k: FloatArray, expected: FloatArray, alpha: FloatArray) -> FloatArray:
    """scipy's `method` (cdf, sf or ppf) of NB(E, alpha), or of Poisson(E) where alpha is below
    POISSON_ALPHA, each computed only where it applies (scipy's discrete functions are the
    slowest step of a national run)."""
    k, expected, alpha = _floats(k, expected, alpha)
    is_nb = alpha >= POISSON_ALPHA
    out = np.empty(k.shape)
    if is_nb.any():
        a, e = alpha[is_nb], expected[is_nb]
        out[is_nb] = getattr(stats.nbinom, method)(k[is_nb], 1.0 / a, 1.0 / (1.0 + a * e))
    if not is_nb.all():
        out[~is_nb] = getattr(stats.poisson, method)(k[~is_nb], expected[~is_nb])
    return out


def _count_cdf(k: FloatArray, expected: FloatArray, alpha: FloatArray) -> FloatArray:
    """P(Y <= k) under NB(E, alpha), Poisson(E) where alpha is below POISSON_ALPHA."""
    return _by_family("cdf", k, expected, alpha)


def _count_sf(k: FloatArray, expected: FloatArray, alpha: FloatArray) -> FloatArray:
    """P(Y > k), computed directly (not 1 - cdf) so tiny tail areas keep their digits."""
    return _by_family("sf", k, expected, alpha)


def _count_ppf(
    q: FloatArray, expected: FloatArray, alpha: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Smallest integer r with P(Y <= r) >= q, with P(Y <= r) and P(Y <= r - 1) (the funnel
    limits interpolate between them)."""
    shape = q.shape
    q, expected, alpha = q.ravel(), expected.ravel(), alpha.ravel()
    guess = _quantile_guess(q, expected, alpha)
    r = _smallest_count(lambda k, i: _count_cdf(k, expected[i], alpha[i]) >= q[i], guess, 0.0)
    at_r, below_r = _count_cdf(r, expected, alpha), _count_cdf(r - 1, expected, alpha)
    return r.reshape(shape), at_r.reshape(shape), below_r.reshape(shape)


def _quantile_guess(q: FloatArray, expected: FloatArray, alpha: FloatArray) -> FloatArray:
    """The q-quantile of NB(E, alpha) by the Cornish-Fisher expansion (normal quantile with a
    skewness term and continuity correction): usually exact, and within a step or two of it
    even at E = 0.3. It only seeds an exact search; scipy's own quantile is ten times slower
    than its cdf, and was the slowest step of a national run."""
    variance = expected * (1.0 + alpha * expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(variance > 0, (1.0 + 2.0 * alpha * expected) / np.sqrt(variance), 0.0)
    z = special.ndtri(q)
    approx = expected + np.sqrt(variance) * (z + (z * z - 1.0) * skew / 6.0) - 0.5
    return np.maximum(np.ceil(np.nan_to_num(approx, nan=0.0, posinf=0.0, neginf=0.0)), 0.0)


def _smallest_count(
    holds: Callable[[FloatArray, NDArray[np.intp]], NDArray[np.bool_]],
    guess: FloatArray,
    lowest: float,
    steps: int = 8,
) -> FloatArray:
    """The smallest whole k >= lowest where `holds(k, index)` (true from some k upwards), for
    every element, walking one step at a time from `guess` (a close guess) and re-evaluating
    only the elements not yet settled. Any still unsettled after `steps` (a poor guess) are
    found by bisection, so the answer is exact whatever the guess."""
    k = np.maximum(guess, lowest)
    everyone = np.arange(k.size)
    at, below = holds(k, everyone), (k <= lowest) | ~holds(k - 1.0, everyone)
    todo = np.flatnonzero(~(at & below))
    for _ in range(steps):
        if todo.size == 0:
            return k
        k[todo] += np.where(at[todo], -1.0, 1.0)
        at[todo] = holds(k[todo], todo)
        below[todo] = (k[todo] <= lowest) | ~holds(k[todo] - 1.0, todo)
        todo = todo[~(at[todo] & below[todo])]
    if todo.size:
        k[todo] = _bisect_smallest(holds, todo, lowest)
    return k


def _bisect_smallest(
    holds: Callable[[FloatArray, NDArray[np.intp]], NDArray[np.bool_]],
    index: NDArray[np.intp],
    lowest: float,
) -> FloatArray:
    """_smallest_count without a guess: double an upper bound until it holds, then bisect."""
    low = np.full(index.size, lowest - 1.0)  # does not hold (or is below the range)
    high = np.full(index.size, max(lowest, 1.0))
    while not (grown := holds(high, index)).all():
        low = np.where(grown, low, high)
        high = np.where(grown, high, 2.0 * high + 1.0)
    while (gap := high - low > 1.0).any():
        middle = np.floor((low + high) / 2.0)
        ok = holds(middle, index)
        high = np.where(gap & ok, middle, high)
        low = np.where(gap & ~ok, middle, low)
    return high


def _p_upper(observed: FloatArray, expected: FloatArray, alpha: FloatArray) -> FloatArray:
    """P(Y >= O); 1 at O = 0; with E = 0 the distribution sits at 0, so p = 0 for O > 0."""
    p = np.where(observed <= 0, 1.0, _count_sf(observed - 1, expected, alpha))
    return np.where(np.isnan(expected) | (expected < 0), np.nan, p)


def _p_lower(observed: FloatArray, expected: FloatArray, alpha: FloatArray) -> FloatArray:
    """P(Y <= O); 1 whenever E = 0."""
    p = _count_cdf(observed, expected, alpha)
    return np.where(np.isnan(expected) | (expected < 0), np.nan, p)


def poisson_p_upper(observed: ArrayLike, expected: ArrayLike) -> FloatArray:
    """Step 2.1: exact one-sided p = P(X >= O), X ~ Poisson(E).

    1.0 at O = 0; at E = 0, 1 when O = 0 and 0 otherwise; NaN for E negative or NaN.
    """
    o, e = _floats(observed, expected)
    return _p_upper(o, e, np.zeros_like(e))


def poisson_p_lower(observed: ArrayLike, expected: ArrayLike) -> FloatArray:
    """Step 2.1 (lower tail): P(X <= O), X ~ Poisson(E)."""
    o, e = _floats(observed, expected)
    return _p_lower(o, e, np.zeros_like(e))


def nb_p_upper(observed: ArrayLike, expected: ArrayLike, alpha: ArrayLike) -> FloatArray:
    """Step 2.3: overdispersed p = P(Y >= O), Y ~ NB(mean E, variance E + alpha E^2).

    scipy's nbinom with n = 1/alpha, p = 1/(1 + alpha E); Poisson when alpha < 1e-8.
    """
    o, e, a = _floats(observed, expected, alpha)
    return _p_upper(o, e, a)


def nb_p_lower(observed: ArrayLike, expected: ArrayLike, alpha: ArrayLike) -> FloatArray:
    """Step 2.3 (lower tail): P(Y <= O) under NB(E, alpha)."""
    o, e, a = _floats(observed, expected, alpha)
    return _p_lower(o, e, a)


def garwood_interval(
    observed: ArrayLike, expected: ArrayLike, level: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Step 2.1: exact (Garwood) interval of the ratio O/E.

    [chi2.ppf(a/2, 2O) / 2E, chi2.ppf(1 - a/2, 2O + 2) / 2E] with a = 1 - level;
    the lower end is 0 at O = 0, both ends are NaN where E <= 0.
    """
    o, e = _floats(observed, expected)
    tail = (1.0 - level) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        low_count = np.where(o > 0, stats.chi2.ppf(tail, 2.0 * np.maximum(o, 1.0)) / 2.0, 0.0)
        high_count = stats.chi2.ppf(1.0 - tail, 2.0 * o + 2.0) / 2.0
        usable = e > 0
        low = np.where(usable, low_count / np.where(usable, e, 1.0), np.nan)
        high = np.where(usable, high_count / np.where(usable, e, 1.0), np.nan)
    return low, high


# ---------------------------------------------------------------------------------- overdispersion


@dataclass(frozen=True)
class Overdispersion:
    """Step 2.2: the negative binomial alpha the schools are judged with, and how sure it is."""

    alpha: float
    alpha_ci95: tuple[float, float]
    method: str  # nb-ml | moment | poisson, "+floor" when the profile's minimum applied
    moment_alpha: float
    n_schools: int  # schools the estimate rests on
    n_set_aside: int  # schools left out as outliers (Poisson p below outlier_p)
    warning: str | None


def alpha_moment(observed: ArrayLike, expected: ArrayLike) -> float:
    """Step 2.2 check/fallback: max(0, sum((O - E)^2 - O) / sum(E^2)) over finite pairs."""
    o, e = _floats(observed, expected)
    keep = np.isfinite(o) & np.isfinite(e)
    o, e = o[keep], e[keep]
    denominator = float(np.sum(e**2))
    if denominator <= 0:
        return 0.0
    return max(0.0, float(np.sum((o - e) ** 2 - o)) / denominator)


def nb2_loglik(observed: ArrayLike, expected: ArrayLike) -> Callable[[float], float]:
    """The NB2 log-likelihood of alpha with each school's mean fixed at E (the null).

    Written so that it is exact and smooth down to alpha = 0 (the Poisson
    log-likelihood): log Gamma(y + 1/a) - log Gamma(1/a) - y log(1/a) is the sum
    of log1p(k a) for k < y, taken from one cumulative table per alpha.
    Needs whole-number counts and E > 0.
    """
    y, mu = _floats(observed, expected)
    y, mu = y.ravel(), mu.ravel()
    counts = y.astype(np.int64)
    steps = np.arange(int(counts.max(initial=0)), dtype=float)
    poisson_part = float(np.sum(y * np.log(mu) - special.gammaln(y + 1.0)))
    total_mu = float(np.sum(mu))

    def loglik(alpha: float) -> float:
        if alpha <= 0:
            return poisson_part - total_mu
        table = np.concatenate(([0.0], np.cumsum(np.log1p(alpha * steps))))
        log_scale = np.log1p(alpha * mu)
        gamma_part = table[counts].sum() - np.sum(y * log_scale) - np.sum(log_scale) / alpha
        return poisson_part + float(gamma_part)

    return loglik


def _ml_usable(observed: ArrayLike, expected: ArrayLike) -> tuple[FloatArray, FloatArray]:
    o, e = _floats(observed, expected)
    keep = np.isfinite(o) & np.isfinite(e) & (e > 0)
    o, e = o[keep].ravel(), e[keep].ravel()
    if np.any(o < 0) or np.any(o != np.round(o)):
        raise ValueError("observed counts must be whole numbers >= 0")
    return o, e


def _maximise_over_alpha(loglik: Callable[[float], float]) -> float:
    """Grid on log alpha, then Brent around the best point; 0 when Poisson does as well.

    Returns inf when the likelihood is still rising at ALPHA_MAX.
    """
    values = np.array([loglik(a) for a in ALPHA_GRID])
    best = int(np.argmax(values))
    if best == len(ALPHA_GRID) - 1:
        return math.inf
    low = ALPHA_GRID[best - 1] if best > 0 else ALPHA_GRID[0] / 1e3
    found = optimize.minimize_scalar(
        lambda t: -loglik(math.exp(t)),
        bounds=(math.log(low), math.log(ALPHA_GRID[best + 1])),
        method="bounded",
        options={"xatol": 1e-9},
    )
    alpha = math.exp(found.x)
    if loglik(0.0) >= max(loglik(alpha), values[best]):
        return 0.0
    return alpha if loglik(alpha) >= values[best] else float(ALPHA_GRID[best])


def _profile_interval(loglik: Callable[[float], float], alpha: float) -> tuple[float, float]:
    """95% profile-likelihood interval (chi-square, 1 df); lower end 0 if the boundary is inside."""
    target = loglik(alpha) - PROFILE_DROP_95

    def gap(a: float) -> float:
        return loglik(a) - target

    low = 0.0 if gap(0.0) >= 0 else optimize.brentq(gap, 0.0, alpha, xtol=1e-12)
    high = max(2.0 * alpha, 1e-4)
    while gap(high) >= 0:
        if high > ALPHA_MAX:
            return low, math.inf
        high *= 4.0
    return low, optimize.brentq(gap, alpha, high, xtol=1e-12, rtol=1e-10)


def alpha_ml(observed: ArrayLike, expected: ArrayLike) -> tuple[float, tuple[float, float]]:
    """Step 2.2: maximum-likelihood alpha of NB2 with each mean fixed at E, and its 95% CI.

    The null hypothesis is that every school has its baseline rate, so this is
    an intercept-only NB2 with offset log E and the intercept held at 0. The
    maximum is over alpha >= 0, the boundary alpha = 0 (Poisson) included; the
    interval is by profile likelihood. Schools with E <= 0 carry no
    information and are ignored. When the data cannot inform alpha (fewer than
    two schools, no exit at all, total E below 1e-8) the answer is alpha 0 with
    interval (0, inf). alpha is inf when the likelihood still rises at 1000
    (pathological data; `fit_overdispersion` then falls back to the moment estimate).
    """
    o, e = _ml_usable(observed, expected)
    if o.size < 2 or o.sum() == 0 or e.sum() < 1e-8:
        return 0.0, (0.0, math.inf)
    loglik = nb2_loglik(o, e)
    alpha = _maximise_over_alpha(loglik)
    if not math.isfinite(alpha):
        return math.inf, (math.nan, math.inf)
    return alpha, _profile_interval(loglik, alpha)


def _alpha_warning(
    n_schools: int, total_expected: float, ci: tuple[float, float], min_schools: int
) -> str | None:
    """A plain-English caution for the pack when alpha is poorly determined."""
    reasons = []
    if n_schools < min_schools:
        reasons.append(f"only {n_schools} schools (fewer than {min_schools})")
    if total_expected < SMALL_TOTAL_EXPECTED:
        reasons.append(f"small counts (about {total_expected:.1f} exits expected in all)")
    if not reasons:
        return None
    low, high = ci
    spread = f"0 to {high:.3g}" if low == 0 else f"{low:.3g} to {high:.3g}"
    if math.isnan(low) or math.isinf(high):
        spread = "too wide to state"
    return (
        "The allowance for differences between schools (overdispersion) rests on "
        f"{' and '.join(reasons)}, so it is poorly determined (95% interval {spread}); "
        "treat bands near a limit with caution."
    )


def _too_few_for_alpha(n_schools: int, min_alpha: float) -> str:
    """The caution when alpha cannot be estimated at all (fewer than two schools to test)."""
    which = "No school had" if n_schools == 0 else "Only one school had"
    made = (
        f"the profile's minimum of {min_alpha:g} was used"
        if min_alpha > 0
        else "none was made (Poisson limits)"
    )
    return (
        f"{which} exits of this kind expected, so no allowance for differences between schools "
        f"(overdispersion) could be estimated; {made}."
    )


def fit_overdispersion(
    observed: ArrayLike,
    expected: ArrayLike,
    outlier_p: float = 0.001,
    min_alpha: float = 0.0,
    min_schools: int = 20,
    force_poisson: bool = False,
) -> Overdispersion:
    """Step 2.2: alpha for the whole set of schools, robust to the schools under suspicion.

    Schools with Poisson p_upper < outlier_p are set aside so that outliers do
    not inflate alpha; ML is fitted on the rest, the moment estimate is kept as
    a check and used when ML fails. `min_alpha` (the profile's floor) is then
    applied. `force_poisson` (method "poisson") fixes alpha at 0. With fewer than two schools
    to fit on there is nothing to estimate alpha from: Poisson (or the floor), with a caution.
    """
    o, e = _floats(observed, expected)
    usable = np.isfinite(o) & np.isfinite(e) & (e > 0)
    outlier = usable & (poisson_p_upper(o, e) < outlier_p)
    kept = usable & ~outlier
    o_fit, e_fit = o[kept], e[kept]
    moment = alpha_moment(o_fit, e_fit)
    n_fit, n_out = int(kept.sum()), int(outlier.sum())
    if force_poisson:
        return Overdispersion(0.0, (0.0, 0.0), "poisson", moment, n_fit, n_out, None)
    if n_fit < 2:  # nothing to compare schools with: alpha_ml's "0, interval (0, inf)" case
        alpha, ci, method = 0.0, (0.0, math.inf), "poisson"
        warning = _too_few_for_alpha(n_fit, min_alpha)
    else:
        alpha, ci = alpha_ml(o_fit, e_fit)
        method = "nb-ml"
        if not math.isfinite(alpha):
            alpha, ci, method = moment, (math.nan, math.inf), "moment"
        warning = _alpha_warning(n_fit, float(e_fit.sum()), ci, min_schools)
    if alpha < min_alpha:
        alpha, method = float(min_alpha), method + "+floor"
    interval = (float(ci[0]), float(ci[1]))
    return Overdispersion(float(alpha), interval, method, moment, n_fit, n_out, warning)


# ------------------------------------------------------------------------ bands, q-values, ranking


def band(
    p_upper: ArrayLike,
    p_lower: ArrayLike,
    expected: ArrayLike,
    min_expected: float = 1.0,
    high_998: float = 0.001,
    high_95: float = 0.025,
) -> NDArray[np.str_]:
    """Step 2.4: each school's band; `too_few` below min_expected (or E <= 0, or unknown)."""
    up, low, e = _floats(p_upper, p_lower, expected)
    too_few = ~(e >= min_expected) | ~(e > 0)
    conditions = [too_few, up < high_998, up < high_95, low < high_998, low < high_95]
    choices = ["too_few", "high_998", "high_95", "low_998", "low_95"]
    return np.select(conditions, choices, default="expected")


def bh_qvalues(p: ArrayLike) -> FloatArray:
    """Step 2.5: Benjamini-Hochberg q-values; NaN stays NaN and is left out of the count m."""
    values = np.asarray(p, dtype=float)
    q = np.full(values.shape, np.nan)
    valid = ~np.isnan(values)
    tested = values[valid]
    m = tested.size
    if m == 0:
        return q
    order = np.argsort(tested, kind="stable")
    scaled = tested[order] * m / np.arange(1, m + 1)
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(monotone, 1.0)
    q[valid] = adjusted
    return q


def shrunken_ratio(observed: ArrayLike, expected: ArrayLike, alpha: ArrayLike) -> FloatArray:
    """Step 2.7: (O + 1/alpha) / (E + 1/alpha), the gamma-posterior mean ratio, for ranking.

    At alpha = 0 the ratio is returned unshrunk (O/E) as the brief specifies;
    note that the formula itself tends to 1 as alpha -> 0.
    """
    o, e, a = _floats(observed, expected, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = 1.0 / np.where(a > 0, a, 1.0)
        shrunk = (o + prior) / (e + prior)
        raw = np.where(e > 0, o / np.where(e > 0, e, 1.0), np.nan)
    return np.where(a > 0, shrunk, raw)


def count_to_flag(expected: ArrayLike, alpha: ArrayLike, p_threshold: float) -> FloatArray:
    """Step 2.5: the smallest count O with P(Y >= O) < p_threshold: the count that would flag.

    Searched with the p-value itself (the survival function, so tiny thresholds keep
    their digits) from a Cornish-Fisher guess. Float array of whole numbers; NaN where
    E is negative or unknown; 1 where E = 0.
    """
    e, a = _floats(expected, alpha)
    shape, e, a = e.shape, e.ravel(), a.ravel()
    valid = np.isfinite(e) & (e >= 0)
    safe_e = np.where(valid, e, 0.0)
    guess = _quantile_guess(np.full(e.shape, 1.0 - p_threshold), safe_e, a) + 1.0
    count = _smallest_count(
        lambda k, i: _p_upper(k, safe_e[i], a[i]) < p_threshold, guess, lowest=1.0
    )
    return np.where(valid, count, np.nan).reshape(shape)


# ------------------------------------------------------------------------------ funnel plot limits


def funnel_limits(
    expected: ArrayLike,
    alpha: ArrayLike = 0.0,
    probs: tuple[float, ...] = (0.001, 0.025, 0.975, 0.999),
) -> dict[float, FloatArray]:
    """Step 2.8: funnel limits of O/E at each E from NB (or Poisson) quantiles.

    Spiegelhalter's interpolation makes the step function of the discrete
    quantile smooth: y_p(E) = (r_p - w) / E, r_p the p-quantile,
    w = (F(r_p) - p) / (F(r_p) - F(r_p - 1)). Limits are clipped at 0; NaN at E <= 0.
    """
    e, a = _floats(expected, alpha)
    usable = np.isfinite(e) & (e > 0)
    safe_e = np.where(usable, e, 1.0)
    limits = {}
    for p in probs:
        q = np.full(e.shape, float(p))
        r, at_r, below_r = _count_ppf(q, safe_e, a)
        w = (at_r - p) / (at_r - below_r)
        limits[p] = np.where(usable, np.maximum((r - w) / safe_e, 0.0), np.nan)
    return limits


# ----------------------------------------------------------------------- FunnelPlotR compatibility


def funnelplotr_unadjusted_limits(
    expected: ArrayLike, level: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Compatibility: FunnelPlotR's unadjusted Poisson limits of O/E at each E.

    chi2.ppf(a, 2E) / 2E and chi2.ppf(1 - a, 2(E + 1)) / 2E with a = (1 - level) / 2
    (the exact interval with E standing in for O: miscalibrated below E of
    about 10, methodology section 4). NaN where E <= 0.
    """
    (e,) = _floats(expected)
    a = (1.0 - level) / 2.0
    usable = np.isfinite(e) & (e > 0)
    safe = np.where(usable, e, 1.0)
    low = stats.chi2.ppf(a, 2.0 * safe) / (2.0 * safe)
    high = stats.chi2.ppf(1.0 - a, 2.0 * (safe + 1.0)) / (2.0 * safe)
    return np.where(usable, low, np.nan), np.where(usable, high, np.nan)


@dataclass(frozen=True)
class FunnelPlotRFit:
    """What FunnelPlotR's SHMI method reports, per school where an array."""

    phi: float  # dispersion ratio of the kept z-scores
    tau2: float  # between-school variance on the log scale (DerSimonian-Laird style)
    z: FloatArray  # unadjusted z = sqrt(E) ln(O/E); -inf at O = 0, NaN at E <= 0
    lower: FloatArray  # limits of O/E at `level`
    upper: FloatArray
    outlier: NDArray[np.bool_]  # O/E outside [lower, upper]


def _shmi_truncation(z: FloatArray, trim: float) -> NDArray[np.bool_]:
    """FunnelPlotR's SHMI truncation: True for the z-scores phi is computed from.

    Ranks (ties averaged) fall into 1/trim groups, sp = floor(rank k / (n + 1));
    the first and last groups are set aside. Non-finite z (O = 0, or E <= 0)
    never enter phi: FunnelPlotR would give phi = inf there (its issue #17).
    """
    finite_e = ~np.isnan(z)
    kept = np.isfinite(z)
    if trim <= 0 or not finite_e.any():
        return kept
    groups = 1.0 / trim
    ranks = np.zeros(z.shape)
    ranks[finite_e] = stats.rankdata(z[finite_e], method="average")
    group = np.floor(ranks * groups / (finite_e.sum() + 1))
    return kept & (group > 0) & (group < groups - 1)


def _between_variance(n: int, phi: float, weights: FloatArray) -> float:
    """FunnelPlotR's tau^2 = max(0, (n phi - (n - 1)) / (sum w - sum w^2 / sum w)), w = E.

    w = 1/s^2 with s = 1/sqrt(E), the standard error of ln(O/E).
    """
    if n == 0 or not math.isfinite(phi) or n * phi < n - 1:
        return 0.0
    spread = float(weights.sum() - np.sum(weights**2) / weights.sum())
    if spread <= 0:
        return 0.0
    return max(0.0, (n * phi - (n - 1)) / spread)


def funnelplotr_shmi(
    observed: ArrayLike, expected: ArrayLike, level: float = 0.95, trim: float = 0.1
) -> FunnelPlotRFit:
    """Compatibility: FunnelPlotR's SHMI overdispersion method, reproduced number for number.

    E is rounded to 2 dp; z = sqrt(E) ln(O/E); the top and bottom trim (by
    FunnelPlotR's rank groups) are set aside; phi = mean z^2 of the rest; tau^2
    as `_between_variance`; limits exp(+-z_p sqrt(1/E + tau^2)). Like
    FunnelPlotR, when tau^2 is 0 the unadjusted Poisson limits are used instead.

    O = 0 (FunnelPlotR's open issue #17): z is -inf, the school takes the lowest
    rank, and it is left out of phi and tau^2 even where the truncation would
    keep it (FunnelPlotR's phi would be infinite); its ratio 0 is compared with
    the limits as any other.
    """
    o, e = _floats(observed, expected)
    e = np.round(e, 2)
    usable = np.isfinite(e) & (e > 0)
    safe = np.where(usable, e, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(usable, np.sqrt(safe) * np.log(o / safe), np.nan)
    kept = _shmi_truncation(z, trim)
    n = int(kept.sum())
    phi = float(np.mean(z[kept] ** 2)) if n else math.nan
    tau2 = _between_variance(n, phi, e[kept])
    lower, upper = _funnelplotr_limits(e, tau2, level)
    ratio = np.where(usable, o / safe, np.nan)
    outlier = usable & ((ratio < lower) | (ratio > upper))
    return FunnelPlotRFit(phi, tau2, z, lower, upper, outlier)


def _funnelplotr_limits(
    rounded_e: FloatArray, tau2: float, level: float
) -> tuple[FloatArray, FloatArray]:
    """Adjusted SHMI limits when tau^2 > 0, else the unadjusted ones (as FunnelPlotR does)."""
    if tau2 <= 0:
        return funnelplotr_unadjusted_limits(rounded_e, level)
    usable = np.isfinite(rounded_e) & (rounded_e > 0)
    spread = np.sqrt(1.0 / np.where(usable, rounded_e, 1.0) + tau2)
    half_width = np.where(usable, stats.norm.isf((1.0 - level) / 2.0) * spread, np.nan)
    with np.errstate(over="ignore"):  # a huge tau^2 (a few schools): limits 0 and infinity
        return np.exp(-half_width), np.exp(half_width)


def funnelplotr_p_values(
    observed: ArrayLike, expected: ArrayLike, tau2: float
) -> tuple[FloatArray, FloatArray]:
    """One-sided p-values that agree with FunnelPlotR's limits: p < a exactly when O/E is outside.

    With tau^2 > 0: the normal tail of ln(O/E) / sqrt(1/E + tau^2); with
    tau^2 = 0: the chi-square tails behind the unadjusted limits. E rounded to 2 dp.
    """
    o, e = _floats(observed, expected)
    e = np.round(e, 2)
    usable = np.isfinite(e) & (e > 0)
    safe = np.where(usable, e, 1.0)
    if tau2 > 0:
        with np.errstate(divide="ignore"):
            z = np.log(o / safe) / np.sqrt(1.0 / safe + tau2)
        upper, lower = stats.norm.sf(z), stats.norm.cdf(z)
    else:
        upper = stats.chi2.sf(2.0 * o, 2.0 * (safe + 1.0))
        lower = stats.chi2.cdf(2.0 * o, 2.0 * safe)
    return np.where(usable, upper, np.nan), np.where(usable, lower, np.nan)


# ------------------------------------------------------------------------------- termly monitoring


def poisson_cusum(
    observed_by_term: ArrayLike, expected_by_term: ArrayLike, rho: float = 2.0
) -> FloatArray:
    """Step 2.9: Poisson CUSUM S_t = max(0, S_{t-1} + O_t ln(rho) - (rho - 1) E_t), S_0 = 0.

    Terms run along the last axis (schools x terms, or one school's terms).
    rho > 1 watches for a rise to rho times the expected rate.
    """
    if rho <= 0 or rho == 1:
        raise ValueError("rho must be positive and not 1")
    o, e = _floats(observed_by_term, expected_by_term)
    steps = o * math.log(rho) - (rho - 1.0) * e
    sums = np.empty_like(steps)
    running = np.zeros(steps.shape[:-1])
    for t in range(steps.shape[-1]):
        running = np.maximum(0.0, running + steps[..., t])
        sums[..., t] = running
    return sums


def cusum_threshold(
    expected_by_term: ArrayLike,
    rho: float = 2.0,
    false_alarm: float = 0.05,
    n_sim: int = 2000,
    seed: int = 0,
) -> float:
    """Step 2.9: the CUSUM threshold h, by simulation under the null (O_t ~ Poisson(E_t)).

    Each of n_sim replicates draws every school's whole series; h is the
    smallest simulated maximum with at most `false_alarm` of school-series
    going above it (an alarm is S_t > h at any t).
    """
    e = np.atleast_2d(np.asarray(expected_by_term, dtype=float))
    if not np.all(np.isfinite(e) & (e >= 0)):
        raise ValueError("expected counts must be finite and >= 0")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CUSUM_DRAWS_PER_CHUNK // max(e.size, 1))
    maxima = []
    for start in range(0, n_sim, per_chunk):
        draws = rng.poisson(e, size=(min(per_chunk, n_sim - start), *e.shape))
        maxima.append(poisson_cusum(draws, e, rho).max(axis=-1).ravel())
    return float(np.quantile(np.concatenate(maxima), 1.0 - false_alarm, method="inverted_cdf"))


# --------------------------------------------------------------------------------------- the stage


def mid_p_z(observed: ArrayLike, expected: ArrayLike, alpha: ArrayLike) -> FloatArray:
    """A signed z-score for display: the normal quantile of the mid-p, P(Y > O) + P(Y = O)/2.

    Finite at O = 0 (unlike a log z-score), positive when O is high.
    """
    o, e, a = _floats(observed, expected, alpha)
    mid = 0.5 * (_p_upper(o, e, a) + _p_upper(o + 1.0, e, a))
    return np.where(e > 0, stats.norm.isf(mid), np.nan)


def test_schools(
    totals: pl.DataFrame,
    settings: Mapping[str, Any],
    method: str = "nb",
    given: Overdispersion | None = None,
) -> tuple[pl.DataFrame, Overdispersion]:
    """The test stage for one outcome: add every school's statistics to its totals row.

    `totals` has urn, observed, expected (more columns pass through);
    `settings` is the profile's [statistics] table; `method` is nb (default),
    poisson (alpha fixed at 0) or funnelplotr (bands from FunnelPlotR's SHMI
    limits; alpha still estimated for ranking). `given` is an alpha fitted elsewhere, used
    instead of fitting one here: a self-review fits it among the schools that set its level,
    against that common level, because each school's leave-one-out expectation already
    carries the level's noise (its expected_variance) and a fit here would count it twice.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    o = totals.get_column("observed").cast(pl.Float64).to_numpy()
    e = totals.get_column("expected").cast(pl.Float64).to_numpy()
    p998, p95 = float(settings.get("p_high_998", 0.001)), float(settings.get("p_high_95", 0.025))
    if given is not None and method != "poisson":
        fit = given
    else:
        fit = fit_overdispersion(
            o,
            e,
            outlier_p=float(settings.get("outlier_p", 0.001)),
            min_alpha=float(settings.get("min_alpha", 0.0)),
            min_schools=int(settings.get("min_schools_for_alpha", 20)),
            force_poisson=method == "poisson",
        )
    alpha: FloatArray | float = fit.alpha
    if "expected_variance" in totals.columns:
        # E estimated without the school has its own sampling variance v; Var(O - E) = E +
        # alpha E^2 + v, i.e. a school-specific alpha + v / E^2 (a gamma-mixture approximation)
        v = totals.get_column("expected_variance").fill_null(0.0).to_numpy()
        alpha = fit.alpha + np.where(e > 0, v / np.where(e > 0, e, 1.0) ** 2, 0.0)
    columns = _exact_columns(o, e, alpha, p998, p95)
    if method == "funnelplotr":
        columns.update(_funnelplotr_columns(o, e, p998, p95))
    min_expected = float(settings.get("min_expected", 1.0))
    columns["band"] = band(columns["p"], columns["p_lower"], e, min_expected, p998, p95)
    columns["q"] = bh_qvalues(np.where(e > 0, columns["p"], np.nan))
    frame = totals.with_columns(_as_series(name, values) for name, values in columns.items())
    return frame, fit


test_schools.__test__ = False  # a pipeline stage, not a pytest test


def _exact_columns(
    o: FloatArray, e: FloatArray, alpha: FloatArray | float, p998: float, p95: float
) -> dict[str, FloatArray]:
    """The default statistics: exact NB (or Poisson) p-values, limits and counts to flag."""
    low, high = garwood_interval(o, e, 0.95)
    limits = funnel_limits(e, alpha, (p998, p95, 1.0 - p95, 1.0 - p998))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(e > 0, o / np.where(e > 0, e, 1.0), np.nan)
    return {
        "ratio": ratio,
        "ci95_low": low,
        "ci95_high": high,
        "p": nb_p_upper(o, e, alpha),
        "p_lower": nb_p_lower(o, e, alpha),
        "p_poisson": poisson_p_upper(o, e),
        "z": mid_p_z(o, e, alpha),
        "shrunken_ratio": shrunken_ratio(o, e, alpha),
        "count_to_flag_95": count_to_flag(e, alpha, p95),
        "count_to_flag_998": count_to_flag(e, alpha, p998),
        "limit95_low": limits[p95],
        "limit95_high": limits[1.0 - p95],
        "limit998_low": limits[p998],
        "limit998_high": limits[1.0 - p998],
    }


def _funnelplotr_columns(
    o: FloatArray, e: FloatArray, p998: float, p95: float
) -> dict[str, FloatArray]:
    """FunnelPlotR's view of the same schools: its z, p-values, limits and counts to flag."""
    fit95 = funnelplotr_shmi(o, e, level=1.0 - 2.0 * p95)
    fit998 = funnelplotr_shmi(o, e, level=1.0 - 2.0 * p998)
    p_upper, p_lower = funnelplotr_p_values(o, e, fit95.tau2)
    rounded = np.round(e, 2)
    return {
        "p": p_upper,
        "p_lower": p_lower,
        "z": fit95.z,
        "count_to_flag_95": np.floor(rounded * fit95.upper) + 1.0,
        "count_to_flag_998": np.floor(rounded * fit998.upper) + 1.0,
        "limit95_low": fit95.lower,
        "limit95_high": fit95.upper,
        "limit998_low": fit998.lower,
        "limit998_high": fit998.upper,
    }


NO_SCHOOL_THAT_LARGE = 1e9  # a count to flag beyond this: no count would flag


def _as_series(name: str, values: NDArray[Any]) -> pl.Series:
    """numpy -> polars; NaN becomes null, counts to flag become integers (null where no count
    would flag: FunnelPlotR's limits are infinite when its tau^2 overflows on a few schools,
    and astronomically large, beyond any integer, when it nearly does)."""
    if values.dtype.kind in "US":
        return pl.Series(name, values.astype(str), dtype=pl.String)
    if name.startswith("count_to_flag"):
        values = np.where(np.isfinite(values) & (values < NO_SCHOOL_THAT_LARGE), values, np.nan)
        return pl.Series(name, values.astype(float)).fill_nan(None).cast(pl.Int64)
    return pl.Series(name, values.astype(float)).fill_nan(None)
