"""Termly monitoring: evidence that accumulates over a school's terms (methodology.md 2.6, 2.9).

One term alone says little about a school that expects five exits: ten is not beyond
chance. Summed over a year, or watched term after term, it is. This stage takes each
school's observed and expected counts per term (schools x terms arrays, from the same
expected-count and test stages that judge a single term) and adds:

- pooled tests over the last year (three terms) and the whole history: observed and
  expected summed, with the between-school variation (alpha) estimated from the pooled
  counts across schools, not from one term;
- a one-sided CUSUM per school watching for a rise to `rho` times the expected rate, with
  negative-binomial increments (so stable ordinary differences between schools do not
  pile up as fast as with Poisson increments) and a decision limit set by simulation so
  that an ordinary school signals at most `rate` times per school-year, its between-school
  variation included;
- persistence: consecutive terms at or beyond the 95% limit, and how many of the last six;
- a change test: has the school's own rate risen this year against its earlier terms? It
  conditions on the school's total, so its lasting level cancels: the one test that a stable
  ordinary difference between schools cannot trigger.

Counts here are family decisions where that is known (see `family_scaled`): five siblings
leaving on one day are one family's decision, not five independent events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from offroll_audit import significance as stats

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

BEYOND_95 = ("high_95", "high_998")
TERMS_PER_YEAR = 3


# --------------------------------------------------------------------------------- families


def family_scaled(
    observed: FloatArray, families: FloatArray, expected: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Counts of independent decisions: a school's pupils who left, divided by the design
    effect d = pupils / families (d >= 1), and its expected count divided by the same d.

    The ratio O/E is unchanged; the evidence shrinks to what the independent decisions
    carry. Five siblings leaving together (O = 5, one family, E = 1) are tested as one
    event against 0.2, which chance gives about one time in five.
    """
    o, f, e = np.broadcast_arrays(*(np.asarray(v, float) for v in (observed, families, expected)))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where((o > 0) & (f > 0), f / o, 1.0)
    return o * scale, e * scale


# ------------------------------------------------------------------------------ pooled tests


@dataclass
class Pooled:
    """A pooled test over some terms: per school summed counts, p-value and band."""

    observed: FloatArray
    expected: FloatArray
    p: FloatArray
    q: FloatArray  # Benjamini-Hochberg over the schools with expected exits
    band: NDArray[np.str_]
    overdispersion: stats.Overdispersion


def pooled_test(observed: FloatArray, expected: FloatArray, settings: Mapping[str, Any]) -> Pooled:
    """Sum each school's terms (last axis) and test the sums, alpha fitted on the sums.

    The per-term alpha describes one term's scatter; summed over terms, stable differences
    between schools add up while chance averages out, so alpha is re-estimated on the
    pooled counts (methodology: "overdispersion estimated from pooled counts").
    """
    o, e = np.nansum(observed, axis=-1), np.nansum(expected, axis=-1)
    fit = stats.fit_overdispersion(
        o,
        e,
        outlier_p=float(settings.get("outlier_p", 0.001)),
        min_alpha=float(settings.get("min_alpha", 0.0)),
        min_schools=int(settings.get("min_schools_for_alpha", 20)),
    )
    p = np.where(e > 0, stats.nb_p_upper(o, e, fit.alpha), np.nan)
    low = np.where(e > 0, stats.nb_p_lower(o, e, fit.alpha), np.nan)
    bands = stats.band(
        p,
        low,
        e,
        float(settings.get("min_expected", 1.0)),
        float(settings.get("p_high_998", 0.001)),
        float(settings.get("p_high_95", 0.025)),
    )
    return Pooled(o, e, p, stats.bh_qvalues(p), bands, fit)


def change_test(
    observed: FloatArray, expected: FloatArray, alpha: float, width: int = TERMS_PER_YEAR
) -> tuple[FloatArray, FloatArray]:
    """Has the school's own rate risen? For each term, the last `width` terms judged against
    what the school's earlier terms predict for it.

    Between schools, rates differ for reasons no case mix sees (alpha, the between-school
    variation: a lasting school effect theta ~ Gamma(mean 1, variance alpha)). Given the
    school's earlier terms, theta ~ Gamma(1/alpha + O_before, 1/alpha + E_before), so its
    recent count is negative binomial with that shape and mean E_recent x the posterior mean
    of theta: the posterior predictive check. A school's lasting difference is learnt from
    its own past (more so, the more exits it had), so a stable ordinary difference cannot
    look like a rise; with alpha = 0 it is the plain Poisson test against the others.
    Returns the one-sided p-value and the recent ratio over the predicted one (NaN without
    earlier terms).
    """
    from scipy import stats as sps

    recent_o, recent_e = _rolling_sum(observed, width), _rolling_sum(expected, width)
    before_o = np.cumsum(observed, axis=-1) - recent_o
    before_e = np.cumsum(expected, axis=-1) - recent_e
    usable = (before_e > 0) & (recent_e > 0)
    prior = 1.0 / max(alpha, stats.POISSON_ALPHA)
    shape, rate = prior + before_o, prior + before_e
    level = shape / rate  # the school's own rate, from its earlier terms
    mean = np.where(usable, recent_e * level, 1.0)
    if alpha <= stats.POISSON_ALPHA:
        p = sps.poisson.sf(recent_o - 1, mean)
    else:
        p = sps.nbinom.sf(recent_o - 1, shape, rate / (rate + np.where(usable, recent_e, 1.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(usable, recent_o / mean, np.nan)
    return np.where(usable, p, np.nan), ratio


# ------------------------------------------------------------------------------------- CUSUM


def nb_cusum_steps(
    observed: FloatArray, expected: FloatArray, rho: float, alpha: float
) -> FloatArray:
    """Log-likelihood ratio of a term's count under NB(rho E, alpha) against NB(E, alpha).

    With alpha = 0 this is the Poisson step O ln(rho) - (rho - 1) E (methodology 2.9). With
    alpha > 0 a large count weighs less (it is more often chance for a school that is just
    different), so ordinary differences between schools do not pile up as fast.
    """
    o, e = np.broadcast_arrays(np.asarray(observed, float), np.asarray(expected, float))
    if alpha <= stats.POISSON_ALPHA:
        return o * np.log(rho) - (rho - 1.0) * e
    k = 1.0 / alpha
    return o * np.log(rho * (e + k) / (rho * e + k)) - k * np.log((rho * e + k) / (e + k))


def cusum_with_reset(steps: FloatArray, limit: FloatArray | float) -> tuple[FloatArray, BoolArray]:
    """S_t = max(0, S_{t-1} + step_t), terms along the last axis; a signal when S_t passes
    `limit`, after which S restarts at 0 (the school has been looked at; an excess that goes
    on signals again, one that stopped does not linger). Returns S and the signals."""
    steps = np.asarray(steps, dtype=float)
    h = np.broadcast_to(np.asarray(limit, dtype=float), steps.shape[:-1])
    sums = np.empty_like(steps)
    signals = np.zeros(steps.shape, dtype=bool)
    running = np.zeros(steps.shape[:-1])
    for t in range(steps.shape[-1]):
        running = np.maximum(0.0, running + steps[..., t])
        fired = running > h
        signals[..., t] = fired
        sums[..., t] = running
        running = np.where(fired, 0.0, running)
    return sums, signals


@dataclass(frozen=True)
class CusumDesign:
    """Decision limits by a school's mean expected count per term, set by simulation.

    In control, a school's counts are Poisson(theta x E_t) with a school effect theta drawn
    once (lognormal, mean 1, variance alpha: school_effects) and kept for every term: an
    ordinary school that is just different. The limit at each grid point is the smallest
    with at most `rate` signals per school-year over `terms` terms.
    """

    rho: float
    alpha: float
    rate: float  # design: signals per school-year of an ordinary school
    terms: int
    grid: FloatArray  # mean expected count per term
    limits: FloatArray
    achieved: FloatArray  # simulated signals per school-year at each grid point's limit

    def limit_for(self, mean_expected: FloatArray) -> FloatArray:
        """Each school's limit, interpolated on log(mean expected) (clamped to the grid)."""
        m = np.clip(np.asarray(mean_expected, dtype=float), self.grid[0], self.grid[-1])
        return np.interp(np.log(m), np.log(self.grid), self.limits)

    def rate_for(self, mean_expected: FloatArray) -> FloatArray:
        m = np.clip(np.asarray(mean_expected, dtype=float), self.grid[0], self.grid[-1])
        return np.interp(np.log(m), np.log(self.grid), self.achieved)


def design_cusum(
    terms: int,
    rho: float = 2.0,
    alpha: float = 0.0,
    rate: float = 0.01,
    term_shape: FloatArray | None = None,
    grid: FloatArray | None = None,
    simulations: int = 4000,
    seed: int = 20241,
) -> CusumDesign:
    """Simulate ordinary schools at each grid volume and find each one's limit.

    `term_shape` (mean 1) spreads a school's expected count over its terms as the data do
    (summer terms are quieter). The same draws serve every candidate limit, so the signal
    rate falls monotonically as the limit rises and a bisection finds it.
    """
    grid = np.geomspace(0.02, 200.0, 25) if grid is None else np.asarray(grid, dtype=float)
    shape = np.ones(terms) if term_shape is None else np.asarray(term_shape, dtype=float)
    shape = shape / shape.mean()
    rng = np.random.default_rng(seed)
    years = simulations * terms / TERMS_PER_YEAR
    steps = []
    for mean in grid:
        theta = school_effects(rng, alpha, simulations)
        expected = mean * shape[None, :]
        counts = rng.poisson(theta * expected)
        steps.append(nb_cusum_steps(counts, np.broadcast_to(expected, counts.shape), rho, alpha))
    limits, achieved = _limits_for_rate(np.stack(steps), rate, years)
    return CusumDesign(rho, alpha, rate, terms, grid, limits, achieved)


def school_effects(rng: np.random.Generator, alpha: float, count: int) -> FloatArray:
    """Lasting school effects of ordinary schools: lognormal with mean 1 and variance alpha.
    A lognormal has a heavier upper tail than the gamma the negative binomial assumes; real
    differences between schools (and the synthetic LAs') look more like it, and a limit set
    on the lighter tail signalled half as often again as designed."""
    if alpha <= stats.POISSON_ALPHA:
        return np.ones((count, 1))
    sigma2 = math.log1p(alpha)
    return rng.lognormal(-sigma2 / 2, math.sqrt(sigma2), size=(count, 1))


def _limits_for_rate(steps: FloatArray, rate: float, years: float) -> tuple[FloatArray, FloatArray]:
    """Per grid volume (the first axis of `steps`: volume x simulated school x term), the
    smallest limit whose signal rate is at most `rate` (signals per school-year), and the
    rate it gives: one bisection for every volume at once."""

    def signal_rates(h: FloatArray) -> FloatArray:
        return cusum_with_reset(steps, h[:, None])[1].sum(axis=(1, 2)) / years

    low = np.zeros(steps.shape[0])
    high = np.maximum(np.maximum(steps, 0).sum(axis=-1).max(axis=-1), 1.0)
    at_zero = signal_rates(low) <= rate
    for _ in range(40):
        middle = 0.5 * (low + high)
        within = signal_rates(middle) <= rate
        high, low = np.where(within, middle, high), np.where(within, low, middle)
    limits = np.where(at_zero, 0.0, high)
    return limits, signal_rates(limits)


# --------------------------------------------------------------------------------- persistence


def beyond_95(bands: NDArray[np.str_]) -> BoolArray:
    return np.isin(bands, BEYOND_95)


def trailing_run(hits: BoolArray) -> NDArray[np.int64]:
    """How many consecutive terms (last axis) up to and including each one are hits."""
    hits = np.asarray(hits, dtype=bool)
    run = np.zeros(hits.shape, dtype=np.int64)
    current = np.zeros(hits.shape[:-1], dtype=np.int64)
    for t in range(hits.shape[-1]):
        current = np.where(hits[..., t], current + 1, 0)
        run[..., t] = current
    return run


def trailing_count(hits: BoolArray, width: int) -> NDArray[np.int64]:
    """Hits among the last `width` terms up to and including each one."""
    hits = np.asarray(hits, dtype=np.int64)
    totals = np.cumsum(hits, axis=-1)
    shifted = np.concatenate(
        [np.zeros((*hits.shape[:-1], width), dtype=np.int64), totals], axis=-1
    )[..., : hits.shape[-1]]
    return totals - shifted


# ------------------------------------------------------------------------------- the timeline

OUTCOMES = ("ehe", "unexplained", "ehe_vulnerable")
TERMS_SHOWN = 6  # "above the 95% limit in 4 of the last 6 terms"
FALLBACK = {"decisions": "observed", "expected_decisions": "expected"}
LIMITS = ("limit95_high", "limit998_high")  # funnel limits of the ratio, for the history chart


@dataclass
class Timeline:
    """Every school's terms, oldest first, and what accumulates over them, per outcome.

    Built from one school frame per term (the single-term audit of that term: observed,
    expected, band, and the family-scaled counts the tests used). `frame` is long: one row
    per school per term with the term's own statistics and the accumulated ones as they
    stood at that term; `at(term)` gives the wide columns the selection rules read.
    """

    terms: list[str]
    frame: Any  # pl.DataFrame, (urn, term) rows
    designs: dict[str, CusumDesign]
    pooled_alpha: dict[str, dict[str, float]]  # outcome -> scope -> alpha at the last term

    def at(self, term: str) -> Any:
        import polars as pl

        return self.frame.filter(pl.col("term") == term).drop("term", "term_index")


def build_timeline(
    per_term: list[Any],
    terms: list[str],
    settings: Mapping[str, Any],
    outcomes: tuple[str, ...] = OUTCOMES,
) -> Timeline:
    """Stack the terms' school frames and add pooled tests, CUSUMs and persistence.

    `per_term[i]` is the school frame of `terms[i]` (columns urn, {o}_observed, {o}_expected,
    {o}_band, {o}_decisions, {o}_expected_decisions for each outcome o). A school missing
    from a term (opened later, closed) counts 0 observed and 0 expected there.
    """
    import polars as pl

    urns = pl.concat([f.select("urn") for f in per_term]).get_column("urn").unique().sort()
    order = urns.to_numpy().astype(str)
    # each term's schools as rows of the (school x term) grids, found once for every outcome
    term_rows = [
        np.searchsorted(order, f.get_column("urn").to_numpy().astype(str)) for f in per_term
    ]
    urns = urns.to_list()
    n, t = len(urns), len(terms)
    columns: dict[str, Any] = {
        "urn": np.repeat(np.array(urns, dtype=object), t),
        "term": np.tile(np.array(terms, dtype=object), n),
    }
    designs, alphas = {}, {}
    rho = float(settings.get("cusum_rho", 2.0))
    rate = float(settings.get("cusum_false_signals_per_school_year", 0.01))
    for outcome in outcomes:
        grids = {
            name: np.zeros((n, t))
            for name in ("observed", "expected", "decisions", "expected_decisions")
        }
        limits = {name: np.full((n, t), np.nan) for name in LIMITS}
        bands = np.full((n, t), "too_few", dtype=object)
        present = np.zeros((n, t), dtype=bool)
        for j, frame in enumerate(per_term):
            if f"{outcome}_observed" not in frame.columns:
                continue
            rows = term_rows[j]
            present[rows, j] = True
            for name, grid in grids.items():
                column = f"{outcome}_{name}"
                if column not in frame.columns:  # families not counted: pupils are the decisions
                    column = f"{outcome}_{FALLBACK[name]}"
                values = frame.get_column(column).cast(pl.Float64).fill_null(0.0)
                grid[rows, j] = values.to_numpy()
            bands[rows, j] = frame.get_column(f"{outcome}_band").fill_null("too_few").to_numpy()
            for name, grid in limits.items():
                if f"{outcome}_{name}" in frame.columns:
                    values = frame.get_column(f"{outcome}_{name}").cast(pl.Float64)
                    grid[rows, j] = values.fill_null(np.nan).to_numpy()
        o, e = grids["decisions"], grids["expected_decisions"]
        year = _rolling_pooled(o, e, TERMS_PER_YEAR, settings)
        whole = _rolling_pooled(o, e, t, settings)
        alphas[outcome] = {
            "year": year[-1].overdispersion.alpha,
            "history": whole[-1].overdispersion.alpha,
        }
        shape = e.mean(axis=0) if e.mean() > 0 else np.ones(t)
        design = design_cusum(
            terms=t,
            rho=rho,
            alpha=alphas[outcome]["history"],
            rate=rate,
            term_shape=np.where(
                shape > 0, shape, shape[shape > 0].min() if (shape > 0).any() else 1.0
            ),
        )
        designs[outcome] = design
        mean_e = np.where(
            present.any(axis=1), e.sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0
        )
        limit = design.limit_for(np.maximum(mean_e, design.grid[0]))
        steps = nb_cusum_steps(o, e, rho, design.alpha)
        sums, signals = cusum_with_reset(steps, limit)
        hits = beyond_95(bands.astype(str))
        change_p, change_ratio = change_test(o, e, alphas[outcome]["history"])
        last_signal = _last_true_index(signals)
        prefix = f"{outcome}_"
        columns.update(
            {
                prefix + "observed": grids["observed"].ravel(),
                prefix + "expected": grids["expected"].ravel(),
                prefix + "band": bands.ravel(),
                prefix + "decisions": o.ravel(),
                **{prefix + name: grid.ravel() for name, grid in limits.items()},
                prefix + "on_roll": present.ravel(),
                prefix + "change_p": change_p.ravel(),
                prefix + "change_ratio": change_ratio.ravel(),
                prefix + "cusum": sums.ravel(),
                prefix + "cusum_limit": np.repeat(limit, t),
                prefix + "cusum_signal": signals.ravel(),
                prefix + "cusum_terms_since_signal": _since(last_signal).ravel(),
                prefix + "terms_95_run": trailing_run(hits).ravel(),
                prefix + "terms_95_of_3": trailing_count(hits, 3).ravel(),
                prefix + f"terms_95_of_{TERMS_SHOWN}": trailing_count(hits, TERMS_SHOWN).ravel(),
                prefix + "terms_of_6": trailing_count(present, TERMS_SHOWN).ravel(),
            }
        )
        for scope, pooled, width in (("year", year, TERMS_PER_YEAR), ("history", whole, t)):
            # reported in pupils; tested (p, band) in family decisions
            columns[prefix + f"{scope}_observed"] = (
                _rolling_sum(grids["observed"], width).round().astype(np.int64).ravel()
            )
            columns[prefix + f"{scope}_expected"] = _rolling_sum(grids["expected"], width).ravel()
            columns[prefix + f"{scope}_p"] = np.stack([p.p for p in pooled], 1).ravel()
            columns[prefix + f"{scope}_q"] = np.stack([p.q for p in pooled], 1).ravel()
            columns[prefix + f"{scope}_band"] = np.stack([p.band for p in pooled], 1).ravel()
    frame = pl.DataFrame(
        {k: (v.tolist() if v.dtype == object else v) for k, v in columns.items()}
    ).with_columns(
        pl.col("term").replace_strict({term: i for i, term in enumerate(terms)}).alias("term_index")
    )
    return Timeline(list(terms), frame, designs, alphas)


def _rolling_pooled(
    o: FloatArray, e: FloatArray, width: int, settings: Mapping[str, Any]
) -> list[Pooled]:
    """The pooled test over the `width` terms up to each term, for every term."""
    return [
        pooled_test(
            o[:, max(0, j - width + 1) : j + 1], e[:, max(0, j - width + 1) : j + 1], settings
        )
        for j in range(o.shape[1])
    ]


def _rolling_sum(values: FloatArray, width: int) -> FloatArray:
    """Sum over the `width` terms up to each term (fewer at the start)."""
    totals = np.cumsum(values, axis=-1)
    shifted = np.concatenate([np.zeros((values.shape[0], width)), totals], axis=-1)
    return totals - shifted[:, : values.shape[1]]


def _last_true_index(flags: BoolArray) -> NDArray[np.int64]:
    """For each term, the index of the latest term up to it that is True (-1: none)."""
    positions = np.where(flags, np.arange(flags.shape[-1]), -1)
    return np.maximum.accumulate(positions, axis=-1)


def _since(last: NDArray[np.int64]) -> FloatArray:
    """Terms since the latest signal (0 = this term), NaN when there was none."""
    now = np.arange(last.shape[-1])
    return np.where(last >= 0, now - last, np.nan)
