"""The audit pipeline: load -> letters -> classify -> expected -> test -> select.

Letters run first: classify flags TEMPLATED_LETTER on the exits whose letter is in a
school-template cluster, so flags and RAG are worked out once.

`run_audit` is pure with respect to the file system (it reads letter files
only through the letters stage); writing outputs is the report stage's job.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from offroll_audit import expected as exp
from offroll_audit import monitoring, self_review
from offroll_audit import significance as stats
from offroll_audit.classify import FLAGS, classify_exits, flag_counts, vulnerable_pupil
from offroll_audit.profile import Profile, load_profile
from offroll_audit.progress import SILENT, Progress
from offroll_audit.schema import Dataset
from offroll_audit.select import select_schools
from offroll_audit.window import (
    YEAR_WINDOW_DAYS,
    Calendar,
    Window,
    choose_window,
    pick_census,
    pick_term_census,
    term_window,
)

if TYPE_CHECKING:  # the letters stage is imported only when letters are read
    from offroll_audit.letters import LetterResult

OUTCOMES = ("ehe", "unexplained", "y10_loss", "ehe_vulnerable")
OUTCOME_LABEL = {
    "ehe": "exits to elective home education",
    "unexplained": "unexplained exits",
    "y10_loss": "Year 10 pupils who left the school",
    "ehe_vulnerable": "exits to elective home education of vulnerable pupils in Years 9-11",
}
VULNERABLE_YEARS = ["9", "10", "11"]  # [statistics] vulnerable_years: before their GCSEs
NOT_A_LOSS = ["DUAL_ENDED", "DECEASED"]
TARGETING = ("sen_provision", "social_care", "disadvantaged", "year_group")
NOBODY_AT_RISK = {
    "ehe": "no pupil was on roll in the window",
    "unexplained": "no pupil was on roll in the window",
    "y10_loss": "no Year 10 pupil was on roll in the window",
    "ehe_vulnerable": "no vulnerable pupil in Years 9-11 was on roll in the window",
}
ONE_SCHOOL = (
    "only one school: a local baseline fitted on its own pupils expects exactly the exits it "
    "had, so its counts cannot stand out; review it with --baseline self (or compare it with "
    "a published baseline, --baseline england) instead"
)


@dataclass
class AuditOptions:
    """What to audit and how; the CLI's options. `profile` may be given by name or file.

    `baseline` None lets the audit choose (choose_baseline: self for one trust's data or too
    few schools for a local fit, else local); run_audit records the choice and why in
    `baseline_why`, and the LA rates of --la-rates per school in `anchors` (urn, la_code,
    annual_rate).
    """

    profile: Profile | str = "default"
    baseline: str | None = None  # local | self | england | a baseline file; None: choose
    term: str | None = None
    start: date | None = None
    end: date | None = None
    urns: list[str] = field(default_factory=list)
    trust: str | None = None
    method: str = "nb"  # nb | poisson | funnelplotr
    letters: bool = True
    known_templates: Path | None = None
    shape: str | None = None  # self-review: the relative risks' baseline (default england)
    la_rates: Path | None = None  # self-review: LA code and published annual EHE rate
    baseline_why: str | None = None  # set by run_audit when it chose the baseline
    anchors: pl.DataFrame | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.profile, str):
            self.profile = load_profile(self.profile)


@dataclass
class OutcomeResult:
    outcome: str
    schools: pl.DataFrame  # urn, observed, expected, pupils, cohort + test columns
    groups: pl.DataFrame  # urn, grouping, level, observed, expected, pupils
    overdispersion: stats.Overdispersion
    baseline: exp.Baseline
    funnelplotr: object | None = None


@dataclass
class AuditResult:
    window: Window
    options: AuditOptions
    schools: pl.DataFrame  # one row per reported school, flat columns
    exits: pl.DataFrame
    outcomes: dict[str, OutcomeResult]
    letters: object | None
    warnings: list[str] = field(default_factory=list)
    history: History | None = None  # termly data: every earlier complete term


@dataclass
class History:
    """An audit of termly data sees each school's earlier terms (termly monitoring).

    `terms` are the complete terms up to the audited one, oldest first; `timeline` holds per
    school per term the term's own statistics and what had accumulated by then (pooled
    tests, CUSUM, persistence: monitoring.py); `selected` says, per term, which schools the
    profile's rules would have selected then and why (for the "Since last term" view).
    """

    terms: list[str]
    timeline: monitoring.Timeline
    selected: pl.DataFrame  # urn, term, audit, audit_reasons

    def since_last_term(self) -> pl.DataFrame:
        """Per school: `status` newly / still / no_longer selected against the previous term
        (null when selected in neither), `started` the first term of its run of selection
        (the one that ended last term, for no_longer), and last term's reasons."""
        order = {term: i for i, term in enumerate(self.terms)}
        frame = self.selected.with_columns(
            pl.col("term").replace_strict(order, return_dtype=pl.Int64).alias("_at")
        ).sort("urn", "_at")
        # a run of selected terms starts where the previous term was not selected
        runs = frame.with_columns(
            (pl.col("audit") & ~pl.col("audit").shift(1, fill_value=False).over("urn"))
            .cum_sum()
            .over("urn")
            .alias("_run")
        ).with_columns(
            pl.col("term").first().over("urn", "_run").alias("_started"),
        )
        now, before = len(self.terms) - 1, len(self.terms) - 2
        current = runs.filter(pl.col("_at") == now).select("urn", "audit", "_started")
        previous = runs.filter(pl.col("_at") == before).select(
            "urn",
            pl.col("audit").alias("_before"),
            pl.col("_started").alias("_started_before"),
            pl.col("audit_reasons").alias("previous_reasons"),
        )
        joined = current.join(previous, on="urn", how="left").with_columns(
            pl.col("_before").fill_null(False)
        )
        return joined.select(
            "urn",
            pl.when(pl.col("audit") & pl.col("_before"))
            .then(pl.lit("still"))
            .when(pl.col("audit"))
            .then(pl.lit("newly"))
            .when(pl.col("_before"))
            .then(pl.lit("no_longer"))
            .alias("status"),
            pl.when(pl.col("audit"))
            .then(pl.col("_started"))
            .when(pl.col("_before"))
            .then(pl.col("_started_before"))
            .alias("started"),
            "previous_reasons",
        )


@dataclass
class WindowAudit:
    """One window's classified exits, case-mix roll, outcome tests and school frame."""

    window: Window
    exits: pl.DataFrame
    roll: pl.DataFrame
    outcomes: dict[str, OutcomeResult]
    schools: pl.DataFrame
    warnings: list[str]


def outcome_filters(profile: Profile | None = None) -> dict[str, pl.Expr]:
    """Which classified exits count for each outcome (a pupil counts once per school)."""
    ehe = pl.col("destination") == "EHE"
    return {
        "ehe": ehe,
        "unexplained": ~pl.col("explained"),
        "y10_loss": ~pl.col("destination").cast(pl.String).is_in(NOT_A_LOSS),
        "ehe_vulnerable": ehe & targeted_pupil(profile),
    }


def targeted_pupil(profile: Profile | None = None) -> pl.Expr:
    """The pupils off-rolling is said to target: vulnerable ([flags]: SEN support or an EHC
    plan, known to social care, disadvantaged) and in the years before their GCSEs
    ([statistics] vulnerable_years, 9 to 11). Their exits to home education are tested on
    their own (ehe_vulnerable): an excess among them is diluted in the whole school's count
    by everyone else's ordinary exits."""
    profile = profile or load_profile()
    years = [str(y) for y in profile.statistics.get("vulnerable_years", VULNERABLE_YEARS)]
    return vulnerable_pupil(profile.flags) & pl.col("year_group").cast(pl.String).is_in(years)


def warm_up() -> None:
    """Start importing statsmodels (most of a second, with pandas) in a thread, so that it
    overlaps with loading or classification instead of delaying the first fit."""
    threading.Thread(target=_import_quietly, name="import-statsmodels", daemon=True).start()


def _import_quietly() -> None:
    with contextlib.suppress(Exception):  # the first fit imports again and reports any failure
        exp.import_glm()


def run_audit(dataset: Dataset, options: AuditOptions, progress: Progress = SILENT) -> AuditResult:
    """The whole audit of a loaded dataset (see the module's docstring); writes nothing.

    On termly data (a census each term) the audited term is judged with its history: every
    earlier complete term is audited the same way, and what accumulates over them (pooled
    tests, CUSUM, persistence) joins the school frame before the selection rules run.
    """
    warm_up()  # a no-op once statsmodels is imported
    options = resolve_baseline(dataset, options)
    profile = options.profile
    calendar = Calendar.of(dataset.pupils, dataset.exits)
    window = choose_window(dataset.exits, options.term, options.start, options.end, calendar)
    letters = None
    if options.letters and dataset.has_letters:
        from offroll_audit.letters import run_letters

        letters = run_letters(dataset, options.known_templates, progress=progress)
    termly = calendar.termly and window.source != "given --from/--to"
    current = assess_window(dataset, window, options, letters, termly)
    schools, history = current.schools, None
    terms = calendar.terms_through(window) if termly else []
    if len(terms) > 1:
        with progress.step(f"History: {len(terms)} terms"):
            history = assess_history(dataset, terms, current, options, letters)
        at_now = history.timeline.at(terms[-1])
        schools = schools.join(
            at_now.select("urn", *_timeline_columns(at_now)), on="urn", how="left"
        ).join(
            history.since_last_term().select(
                "urn",
                pl.col("status").alias("since_last_term"),
                pl.col("started").alias("selected_since"),
            ),
            on="urn",
            how="left",
        )
    year_is_window = history is None and window.days >= YEAR_WINDOW_DAYS
    schools = select_schools(schools, profile, year_is_window)
    schools = restrict(schools, options)
    return AuditResult(
        window,
        options,
        schools,
        current.exits,
        current.outcomes,
        letters,
        current.warnings,
        history,
    )


def resolve_baseline(dataset: Dataset, options: AuditOptions) -> AuditOptions:
    """The options with the baseline decided (and why, when the audit chose it) and the LA
    rates of --la-rates checked against every school's LA (DataError, exit 2, when not)."""
    if options.baseline is not None and options.baseline_why is not None:
        return options  # resolved already
    wants_self = options.shape is not None or options.la_rates is not None
    kind, why = self_review.choose_baseline(
        dataset, options.baseline, wants_self, options.profile.statistics
    )
    shape = (options.shape or self_review.DEFAULT_SHAPE) if kind == "self" else options.shape
    if kind == "self":
        exp.baseline_path(shape, "--shape")  # a UsageError now, before any work
    anchors = self_review.school_rates(dataset, options.la_rates) if options.la_rates else None
    return replace(options, baseline=kind, baseline_why=why, shape=shape, anchors=anchors)


def covered_outcomes(options: AuditOptions) -> set[str]:
    """The outcomes the (resolved) baseline gives rates for (local: all; self: its shape
    file's)."""
    if options.baseline == "local":
        return set(OUTCOMES)
    if options.baseline == "self":
        return exp.baseline_outcomes(exp.baseline_path(options.shape, "--shape"))
    return exp.baseline_outcomes(exp.baseline_path(options.baseline))


def assess_window(
    dataset: Dataset, window: Window, options: AuditOptions, letters, termly: bool = False
) -> WindowAudit:
    """Classify, expected counts and tests for one window, and the flat school frame (before
    selection). On termly data a term's roll is its own census (pick_term_census)."""
    profile = options.profile
    if termly:
        pupils = pick_term_census(dataset.pupils, dataset.exits, window)
    else:
        pupils = pick_census(dataset.pupils, window)
    templated = letters.school_template_ids() if letters is not None else None
    exits = classify_exits(dataset.exits, pupils, dataset.schools, window, profile, templated)
    case_mix = list(profile.statistics.get("case_mix", exp.DEFAULT_CASE_MIX))
    roll = exp.roll_cells(pupils, exits, window, outcome_filters(profile), case_mix)
    warnings: list[str] = []
    covered = covered_outcomes(options)
    tested = {}
    for outcome, cells_and_mix in outcome_cells(roll, case_mix, profile).items():
        if outcome in covered:
            tested[outcome] = cells_and_mix
        else:
            warnings.append(
                f"{OUTCOME_LABEL[outcome]}: the baseline {options.baseline} has no "
                "rates for them, so they were not tested"
            )
    decisions = (
        decisions_by_school(exits, profile)
        if profile.statistics.get("count_families", True)
        else None
    )
    outcomes = assess_outcomes(tested, window, options, decisions)
    warnings += [
        f"{OUTCOME_LABEL[outcome]}: {NOBODY_AT_RISK[outcome]}, so they were not tested"
        for outcome in OUTCOMES
        if outcome in covered and outcome not in outcomes
    ]
    if options.baseline == "local" and roll.get_column("urn").n_unique() == 1:
        warnings.append(ONE_SCHOOL)
    for outcome, result in outcomes.items():
        label = OUTCOME_LABEL[outcome]
        warnings += [f"{label}: {text}" for text in result.baseline.all_warnings()]
        judged = result.schools.get_column("expected").sum() > 0  # else no school was tested
        if result.overdispersion.warning and judged:
            warnings.append(f"{label}: {result.overdispersion.warning}")
    evidence = letters_dated_within(letters, dataset, window) if termly and letters else letters
    schools = school_table(dataset, roll, exits, outcomes, evidence)
    return WindowAudit(window, exits, roll, outcomes, schools, warnings)


def assess_history(
    dataset: Dataset, terms: list[str], current: WindowAudit, options: AuditOptions, letters
) -> History:
    """Audit each term as the current window was (reusing it when it is one of the terms),
    build the timeline, and select at each term with what had accumulated by then."""
    audits = [
        current
        if current.window.term == term
        else assess_window(dataset, term_window(term), options, letters, True)
        for term in terms
    ]
    frames = [audit.schools for audit in audits]
    timeline = monitoring.build_timeline(frames, terms, options.profile.statistics)
    selected = []
    for term, frame in zip(terms, frames, strict=True):
        at = timeline.at(term)
        joined = frame.join(at.select("urn", *_timeline_columns(at)), on="urn", how="left")
        chosen = select_schools(joined, options.profile).select("urn", "audit", "audit_reasons")
        selected.append(chosen.with_columns(pl.lit(term).alias("term")))
    return History(terms, timeline, pl.concat(selected))


def _timeline_columns(at: pl.DataFrame) -> list[str]:
    """The accumulated columns of a timeline row (the term's own ones are in the frame)."""
    own = {
        f"{o}_{c}"
        for o in monitoring.OUTCOMES
        for c in ("observed", "expected", "band", "decisions", *monitoring.LIMITS)
    }
    internal = {f"{o}_{c}" for o in monitoring.OUTCOMES for c in ("on_roll", "cusum_signal")}
    return [c for c in at.columns if c != "urn" and c not in own | internal]


def decisions_by_school(exits: pl.DataFrame, profile: Profile | None = None) -> pl.DataFrame:
    """Per school, for each outcome, the independent decisions behind its count: distinct
    families (family_id where known, else the pupil) among the exits that count. Five
    siblings leaving together are one family's decision (monitoring.family_scaled)."""
    counted = exits.filter(pl.col("in_window") & pl.col("pupil_line").is_not_null())
    who = (
        pl.when(pl.col("family_id").is_not_null())
        .then(pl.lit("f:") + pl.col("family_id"))
        .otherwise(pl.lit("p:") + pl.col("pupil_id"))
    )
    return counted.group_by("urn").agg(
        who.filter(condition).n_unique().alias(outcome)
        for outcome, condition in outcome_filters(profile).items()
    )


def outcome_cells(
    roll: pl.DataFrame, case_mix: list[str], profile: Profile | None = None
) -> dict[str, tuple[pl.DataFrame, list[str]]]:
    """Case-mix cells for each outcome, from the roll cells: all pupils for EHE and unexplained
    exits, Year 10 pupils (without year group in the case mix) for Year 10 loss, the targeted
    pupils (targeted_pupil) for their exits to home education, where the case mix holds what
    defines them."""
    populations = {
        ("ehe", "unexplained"): (roll, case_mix),
        ("y10_loss",): (
            roll.filter(pl.col("year_group") == "10"),
            [c for c in case_mix if c != "year_group"],
        ),
    }
    if set(TARGETING) <= set(roll.columns):
        populations[("ehe_vulnerable",)] = (roll.filter(targeted_pupil(profile)), case_mix)
    cells_by_outcome = {}
    for names, (population, mix) in populations.items():
        cells = exp.aggregate_cells(population, mix)
        if cells.is_empty():
            continue
        for name in names:
            events = cells.rename({f"events_{name}": "events"})
            events = events.drop([c for c in events.columns if c.startswith("events_")])
            cells_by_outcome[name] = (events, mix)
    return cells_by_outcome


def assess_outcomes(
    cells: dict[str, tuple[pl.DataFrame, list[str]]],
    window: Window,
    options: AuditOptions,
    decisions: pl.DataFrame | None = None,
) -> dict[str, OutcomeResult]:
    """assess_outcome for each outcome, in parallel threads: the work is numpy, scipy and polars
    calls that release the GIL, and on two cores this saves about a second at national scale."""
    with ThreadPoolExecutor(max_workers=max(len(cells), 1)) as pool:
        futures = {
            outcome: pool.submit(
                assess_outcome, frame, outcome, mix, window, options, _decisions(decisions, outcome)
            )
            for outcome, (frame, mix) in cells.items()
        }
        return {outcome: future.result() for outcome, future in futures.items()}


def _decisions(decisions: pl.DataFrame | None, outcome: str) -> pl.DataFrame | None:
    if decisions is None:
        return None
    return decisions.select("urn", pl.col(outcome).alias("decisions"))


def assess_outcome(
    cells: pl.DataFrame,
    outcome: str,
    case_mix: list[str],
    window: Window,
    options: AuditOptions,
    decisions: pl.DataFrame | None = None,
) -> OutcomeResult:
    """Expected counts, then the tests; a local baseline is first refitted without the clear
    outliers so that they do not inflate their own yardstick (see refit_without_outliers)."""
    settings = options.profile.statistics
    model = settings.get("case_mix_model", "main")
    layout = exp.CellLayout.of(cells, case_mix)
    own_rates = None
    kind = options.baseline  # resolved by run_audit (resolve_baseline)
    if kind == "local":
        first = exp.fit_rates(layout.pattern_totals([], case_mix), case_mix, model)
        baseline = exp.Baseline(
            "local", "fitted on this dataset, all schools pooled", first.rates, model, fit=first
        )
        if settings.get("robust_baseline", "refit") == "refit":
            own_rates = guard_baseline(layout, baseline, first.terms, case_mix, model, settings)
    elif kind == "self":
        baseline, own_rates = self_review.self_baseline(
            layout, cells, outcome, case_mix, window, options.shape, options.anchors, settings
        )
    else:
        path = exp.baseline_path(kind)
        rates, source = exp.file_rates(path, outcome, cells, case_mix, window)
        baseline = exp.Baseline("file", source, rates, "published relative risks")
    given = baseline.self_review.level.overdispersion if baseline.self_review else None
    tested, groups, alpha = _expected_and_tests(
        cells, baseline, case_mix, options, own_rates, decisions, given
    )
    fpr = None
    if options.method == "funnelplotr":
        fpr = stats.funnelplotr_shmi(tested["observed"].to_numpy(), tested["expected"].to_numpy())
    return OutcomeResult(outcome, tested, groups, alpha, baseline, fpr)


def guard_baseline(
    layout: exp.CellLayout,
    baseline: exp.Baseline,
    terms: exp.Terms | None,
    case_mix: list[str],
    model: str,
    settings: dict,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The robust refit, then leave-one-out rates (and their variance) for the schools above
    their expected count; notes what was done on the baseline."""
    excluded, p, stuck = refit_without_outliers(layout, baseline, case_mix, model, settings)
    baseline.excluded_urns = excluded
    baseline.note = refit_note(excluded, stuck)
    suspects = leave_one_out_candidates(p, baseline.excluded_urns)
    left_out = exp.leave_one_out(layout, case_mix, model, suspects, terms, excluded=excluded)
    baseline.left_out_urns = left_out.judged
    baseline.warnings += left_out.warnings
    baseline.notes += left_out.notes
    if left_out.judged:
        baseline.note += (
            f"; {len(left_out.judged)} school(s) above their expected count were each "
            "judged against rates fitted without their own pupils (leave one out)"
        )
    return left_out.rates, left_out.variance


def refit_note(excluded: list[str], stuck: list[str]) -> str:
    """What the robust refit did, for the Method sheet."""
    if excluded:
        return (
            f"refitted without {len(excluded)} school(s) whose counts were beyond the Poisson "
            "99.9% limit in a first pass, so their exits do not raise the rates they and every "
            "similar school are judged against"
        )
    if stuck:
        return (
            "not refitted: the schools beyond the Poisson 99.9% limit in a first pass had every "
            "such exit, so there was nothing to refit on without them"
        )
    return "no school was beyond the Poisson 99.9% limit in a first pass, so no refit was needed"


def refit_without_outliers(
    layout: exp.CellLayout,
    baseline: exp.Baseline,
    case_mix: list[str],
    model: str,
    settings: dict,
) -> tuple[list[str], pl.DataFrame, list[str]]:
    """Refit the local rates without clear outliers until that set stops growing (at most 3
    passes); returns the schools left out, every school's Poisson p under the final rates, and
    the schools beyond the limit that could not be left out.

    A clear outlier's count is beyond chance even without overdispersion (Poisson p below
    the profile's outlier_p); the same rule sets schools aside when alpha is estimated. The
    Poisson p, not the band, matters: an off-roller inflates the baseline and alpha its own
    band depends on, and so can hide below high_998 in a first pass. When the schools left
    would have no such exit at all, there is nothing to refit on: the rates stay as they were
    (and a warning says so).
    """
    threshold = float(settings.get("outlier_p", 0.001))
    excluded: list[str] = []
    stuck: list[str] = []
    p = poisson_p_by_school(layout, baseline, case_mix)
    for _ in range(3):
        found = sorted(set(excluded) | set(p.filter(pl.col("p") < threshold)["urn"]))
        if found == excluded:
            break
        totals = layout.pattern_totals(found, case_mix)
        if totals.get_column("events").sum() <= 0:
            stuck = [urn for urn in found if urn not in excluded]
            baseline.warnings.append(_no_refit_text(excluded, found))
            break
        excluded = found
        baseline.fit = exp.fit_rates(totals, case_mix, model)
        baseline.rates = baseline.fit.rates
        p = poisson_p_by_school(layout, baseline, case_mix)
    return excluded, p, stuck


def _no_refit_text(excluded: list[str], found: list[str]) -> str:
    """Why the robust refit stopped: the schools beyond the limit had every such exit."""
    kept = (
        "the first-pass rates"
        if not excluded
        else f"the rates without {exp.named_schools(excluded)}"
    )
    were = "was" if len(found) == 1 else "were"
    return (
        f"{exp.named_schools(found)} {were} beyond the Poisson 99.9% limit, but no other school "
        f"had such an exit, so the rates could not be refitted without them; {kept} were used"
    )


def poisson_p_by_school(
    layout: exp.CellLayout, baseline: exp.Baseline, case_mix: list[str]
) -> pl.DataFrame:
    """urn and the exact Poisson p of its count under the baseline's pooled rates."""
    p = stats.poisson_p_upper(layout.observed(), layout.expected(baseline.rates, case_mix))
    return pl.DataFrame({"urn": layout.urns, "p": p})


def leave_one_out_candidates(
    p: pl.DataFrame, excluded: list[str], p_below: float = 0.05, limit: int = 3000
) -> list[str]:
    """Schools whose count is above their pooled expectation (Poisson p < 0.05 in `p`): the ones
    whose own exits could have raised their yardstick enough to matter. Capped (smallest p
    first) so national runs stay fast; schools already left out of the fit need no second look."""
    suspects = p.filter((pl.col("p") < p_below) & ~pl.col("urn").is_in(excluded))
    return suspects.sort("p", "urn").head(limit).get_column("urn").sort().to_list()


def _expected_and_tests(
    cells: pl.DataFrame,
    baseline: exp.Baseline,
    case_mix: list[str],
    options: AuditOptions,
    own_rates: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    decisions: pl.DataFrame | None = None,
    given: stats.Overdispersion | None = None,
):
    """Expected counts (leave-one-out where given, with their variance) and the tests; with
    `decisions` (urn, families), the tests count family decisions (see family_scaled);
    `given` is an alpha fitted elsewhere (a self-review's, see test_schools)."""
    rates, variance = own_rates if own_rates is not None else (None, None)
    with_expected = exp.expected_by_cell(cells, baseline.rates, case_mix, rates)
    totals = exp.school_totals(with_expected)
    if variance is not None:
        totals = totals.join(variance, on="urn", how="left")
    tested, alpha = test_totals(totals, options, decisions, given)
    return tested, exp.group_breakdown(with_expected), alpha


def test_totals(
    totals: pl.DataFrame,
    options: AuditOptions,
    decisions: pl.DataFrame | None = None,
    given: stats.Overdispersion | None = None,
) -> tuple[pl.DataFrame, stats.Overdispersion]:
    """test_schools on per-school totals (urn, observed, expected, [expected_variance]), with
    family decisions counted where given; observed and expected stay the pupils' counts, the
    tested ones are `decisions` and `expected_decisions`. The trust roll-up reuses it."""
    settings, method = options.profile.statistics, options.method
    if decisions is None:
        return stats.test_schools(totals, settings, method, given)
    scaled = family_scaled(totals, decisions)
    tested, alpha = stats.test_schools(scaled, settings, method, given)
    tested = tested.with_columns(
        pl.col("observed").alias("decisions"),
        pl.col("expected").alias("expected_decisions"),
        pl.col("_pupils").alias("observed"),
        pl.col("_expected").alias("expected"),
    ).drop("_pupils", "_expected")
    return tested, alpha


test_totals.__test__ = False  # a pipeline step, not a pytest test


def family_scaled(totals: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """The totals as the tests see them: observed = the school's family decisions, expected
    (and its variance) divided by the same design effect (monitoring.family_scaled); the
    pupils' counts ride along as _pupils and _expected."""
    frame = totals.join(decisions, on="urn", how="left")
    observed = frame.get_column("observed").cast(pl.Float64).to_numpy()
    families = frame.get_column("decisions").fill_null(frame.get_column("observed"))
    families = families.cast(pl.Float64).clip(upper_bound=frame.get_column("observed")).to_numpy()
    o, e = monitoring.family_scaled(
        observed, families, frame.get_column("expected").cast(pl.Float64).to_numpy()
    )
    scale = e / frame.get_column("expected").cast(pl.Float64).to_numpy().clip(min=1e-300)
    scaled = frame.with_columns(
        pl.col("observed").alias("_pupils"),
        pl.col("expected").alias("_expected"),
        pl.Series("observed", o.round().astype("int64")),
        pl.Series("expected", e),
    ).drop("decisions")
    if "expected_variance" in scaled.columns:
        scaled = scaled.with_columns(pl.col("expected_variance") * pl.Series(scale**2))
    return scaled


LETTERS_LOOK_BACK_DAYS = 365


def letters_dated_within(letters: LetterResult, dataset: Dataset, window: Window) -> LetterResult:
    """On termly data, a term's letter evidence: the letters dated in the year up to the end of
    the window (received_date, else the first exit the letter is linked to; undated letters
    always count). A template handed out two years ago shows in the history, but does not
    select the school now, as a count excess that ended does not."""
    from offroll_audit.letters import letters_per_school

    linked = (
        dataset.exits.filter(pl.col("letter_id").is_not_null())
        .group_by("letter_id")
        .agg(pl.col("exit_date").min().alias("_exit"))
    )
    day = pl.coalesce(pl.col("received_date"), pl.col("_exit"))
    start = window.end - timedelta(days=LETTERS_LOOK_BACK_DAYS)
    manifest = (
        dataset.letters.join(linked, on="letter_id", how="left")
        .filter(day.is_null() | day.is_between(start, window.end))
        .drop("_exit")
    )
    ids = manifest.get_column("letter_id").implode()
    kept = replace(letters, letters=letters.letters.filter(pl.col("letter_id").is_in(ids)))
    return replace(kept, per_school=letters_per_school(kept, manifest))


def school_table(
    dataset: Dataset,
    roll: pl.DataFrame,
    exits: pl.DataFrame,
    outcomes: dict[str, OutcomeResult],
    letters,
) -> pl.DataFrame:
    """One flat row per school on roll: identity, each outcome's statistics, flags, letters."""
    roll = roll.group_by("urn").agg(
        pl.col("roll").sum().alias("pupils"),
        pl.col("roll").filter(pl.col("year_group") == "10").sum().alias("y10_pupils"),
    )
    frame = roll.join(
        dataset.schools.select("urn", "name", "phase", "type", "trust", "la_code"),
        on="urn",
        how="left",
    )
    for outcome, result in outcomes.items():
        columns = result.schools.drop("pupils", "pupil_years", strict=False)
        columns = columns.rename({c: f"{outcome}_{c}" for c in columns.columns if c != "urn"})
        frame = frame.join(columns, on="urn", how="left")
        cohort = pl.col("y10_pupils") if outcome == "y10_loss" else pl.col("pupils")
        frame = frame.with_columns(cohort.alias(f"{outcome}_cohort"))
    counts = flag_counts(exits).rename({code: f"flag_{code}" for code in FLAGS})
    frame = frame.join(counts, on="urn", how="left").with_columns(
        [pl.col(f"flag_{code}").fill_null(0) for code in FLAGS]
    )
    if letters is not None:
        frame = frame.join(letters.per_school, on="urn", how="left").with_columns(
            [pl.col(c).fill_null(0) for c in letters.per_school.columns if c != "urn"]
        )
    else:
        frame = frame.with_columns(pl.lit(0).alias("template_families"))
    return frame.sort("urn")


def restrict(schools: pl.DataFrame, options: AuditOptions) -> pl.DataFrame:
    """--urn / --trust restrict what is reported, never the baseline."""
    if options.urns:
        schools = schools.filter(pl.col("urn").is_in(options.urns))
    if options.trust:
        schools = schools.filter(pl.col("trust").str.to_lowercase() == options.trust.lower())
    return schools
