"""A synthetic LA followed over several terms: the test bed for termly monitoring.

`generate_history` writes the same folder as `generate_dataset` (pupils.csv, exits.csv,
schools.csv, optionally letters, truth.json) for a span of terms, by default the nine from
2022-AUT to 2025-SUM. pupils.csv has one row per pupil per school per termly census (the
`census` column), with the characteristics of that term; exits.csv covers the whole span.

Pupils persist. Each September year groups advance; pupils in a school's final year leave at
the end of July without an exit row (a normal transition, as in the one-year generator), most
Year 6 pupils move on to their primary's paired secondary with the same UPN and family, and
Reception, Year 7, sixth-form, special-school and AP intakes arrive. Between Septembers pupils
join mid-year, in-LA movers re-register at their new school and some home-educated children
return to school. Disadvantage, SEN and social care are mostly stable, with small yearly
changes. A census row lists everyone on that school's roll at any time in the term, so every
exit has its pupil's row for the term it happened in; on_roll_from and on_roll_to are the
registration's dates (1 September for intakes, 31 August for end-of-year leavers, the exit
date for an exit), the same on each of its rows, so exposure to any window can be computed.
A pupil never rejoins a school they left within the span.

Exits are drawn term by term from one hazard per pupil: the one-year generator's case-mix
model and destinations, times a persistent school effect (the same in every term: stable
ordinary differences between schools), times the planted multipliers. Planted unless null,
one of each per LA: a secondary at twice its intake's EHE hazard in every term, a recent
five-fold excess among vulnerable Year 9-11 pupils, an excess that stopped two years before
the latest term, and four or five siblings leaving one primary for home education on one day.
truth.json records every school's effect and, per term, what its intake predicts, what the
generator expected and what was observed.

Everything is vectorised over pupils; loops run over terms, batches of arrivals and LAs.
Each term draws from its own seeded stream, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from numpy.random import Generator
from scipy.special import expit

from offroll_audit import codes
from offroll_audit.problems import UsageError
from offroll_audit.synthetic.dataset import (
    AP,
    DEST,
    EHE_TARGET_RATE,
    N_YEARS,
    NO_PLANT,
    OFFROLL_EHE,
    PHASE_NAMES,
    PRIMARY,
    PRIVATE_EXIT_COLUMNS,
    SECONDARY,
    SPECIAL,
    C,
    Exits,
    M,
    Plan,
    Pupils,
    S,
    Schools,
    add_dual_registrations,
    build_schools,
    calibrate_intercept,
    chain_families,
    changes,
    check_arguments,
    day_profile,
    destination_rates,
    destination_schools,
    draw_attendance,
    draw_needs,
    draw_suspensions,
    draw_traits,
    ehe_log_odds,
    ehe_model_truth,
    exit_days,
    exit_details,
    exit_table,
    family_ids,
    feeder_primaries,
    pick_destinations,
    position_in_run,
    prepare_output_folder,
    pupil_ids,
    pupil_years,
    roll_table,
    scale_sizes,
    school_odds_index,
    schools_frame,
    social_probabilities,
    write_letter_files,
    year_weights,
)
from offroll_audit.window import census_day, easter_sunday, term_window

LAST_TERM = "2025-SUM"
MAX_TERMS = 15
SEASONS = ("AUT", "SPR", "SUM")
UPN_YEAR = 2024  # school year whose Reception pupils get UPNs ending in 24 (pupil_ids)

# --------------------------------------------------------------------------- planted patterns

STEADY_MULTIPLIER = 2.0
STEADY_PER_TERM = 5.0  # the steady school's intake-predicted EHE exits per term
RECENT_MULTIPLIER = 5.0
RECENT_TERMS = 3  # the latest school year
STOPPED_MULTIPLIER = 3.0
STOPPED_GAP = 6  # the stopped excess affects terms at least this many before the latest
SIBLINGS = (4, 5)
PLANT_MAX_SHARE = 0.25  # of its LA's pupils: a steady school any bigger is no longer plausible
MAX_TERM_HAZARD = 0.5  # cap on a pupil's EHE chance in one term (only extreme cases reach it)
PATTERNS = ("steady_excess", "recent_excess", "stopped_excess", "sibling_family")

# --------------------------------------------------------------------------- the roll over time

SIXTH_FORM_STAY = 0.6  # Year 11 pupils staying on into their school's sixth form
YEAR_13_STAY = 0.87  # Year 12 students going on to Year 13 (the others leave at the year's end)
# Pupils joining from outside the LA in a year: about as many as leave its schools for
# outside it (moves away, emigration, EHE, independent schools, CME), so rolls stay level.
JOINERS = 0.037
CAPACITY = 1.1  # times its first size: a school this full admits no more in-year arrivals
MAX_CHILDREN = 4  # a new Reception pupil joins a family with fewer children on roll
TRANSFER_SHARE = 0.8  # of a secondary's Year 7 intake that comes from its paired primaries
TRANSFER_MAX = 0.85  # at most this share of a primary's Year 6 moves on to the paired secondary
RECEPTION_SIBLINGS = 0.4  # new Reception pupils with an older sibling at the same primary
COHORT_SD = 0.05  # year-to-year variation of an intake (log scale)
DIS_REDRAW = 0.03  # pupils whose family's circumstances are redrawn each September
SOCIAL_REDRAW = 0.2  # pupils whose social-care status is redrawn each September
# Yearly SEN transitions at mainstream schools, rows from N, K, E (EHC plans slowly rise).
SEN_CHANGES = np.array(
    [
        [0.979, 0.020, 0.001],
        [0.120, 0.860, 0.020],
        [0.003, 0.020, 0.977],
    ]
)
PROFILE_OF = {"EHE": "ehe", "END_OF_EDUCATION": "late"}  # day_profile per destination
REMEMBERED = 4  # schools remembered per pupil (more exits in a span are vanishingly rare)
CSV_CHUNK = 2_000_000  # pupils.csv rows formatted at a time, so a national roll fits in memory

STREAMS = ("schools", "plants", "pupils", "traits", "dual", "terms", "ids", "letters", "example")


def stream(seed: int, name: str, *more: int) -> Generator:
    """An independent generator per stage (and per term), distinct from generate_dataset's."""
    return np.random.default_rng([seed, 100 + STREAMS.index(name), *more])


# =========================================================================== public API


def generate_history(
    out: Path | str,
    *,
    seed: int = 1,
    schools: int = 100,
    pupils: int = 50_000,
    terms: int = 9,
    last_term: str = LAST_TERM,
    letters: bool = False,
    null: bool = False,
    heterogeneity_sd: float = 0.25,
    ehe_rate_factor: float = 1.0,
) -> dict:
    """Write a synthetic LA followed over `terms` terms ending at `last_term` into `out`;
    return its truth (also truth.json).

    `pupils` is the number on roll at the first census (dual subsidiary rows at AP come on
    top). `ehe_rate_factor` scales the EHE rate from the national ~0.75% a year (0.5-3 makes
    a quiet or a busy LA). `null=True` plants nothing: only the persistent school effects
    (`heterogeneity_sd` on the log-odds) remain.
    """
    out = Path(out)
    labels = check_history_arguments(
        seed, schools, pupils, terms, last_term, heterogeneity_sd, ehe_rate_factor
    )
    prepare_output_folder(out)
    arguments = {
        "seed": seed,
        "schools": schools,
        "pupils": pupils,
        "terms": terms,
        "last_term": labels[-1],
        "letters": letters,
        "null": null,
        "heterogeneity_sd": heterogeneity_sd,
        "ehe_rate_factor": ehe_rate_factor,
    }
    calendar = Calendar.of(labels)
    table, plan = history_schools(
        schools, pupils, null, heterogeneity_sd, ehe_rate_factor, terms, seed
    )
    history = History(table, plan, calendar, seed, EHE_TARGET_RATE * ehe_rate_factor)
    history.run()
    ids = pupil_ids(history.people_for_ids(), table, stream(seed, "ids"))
    exit_frame = history.exits_frame(ids)
    school_frame = schools_frame(table)
    letter_truth = None
    if letters:
        exit_frame, letter_truth = write_letter_files(
            out, exit_frame, school_frame, Plan.empty(), stream(seed, "letters")
        )
    history.write_pupils(out / "pupils.csv", ids)
    exit_frame.drop(PRIVATE_EXIT_COLUMNS).write_csv(out / "exits.csv")
    school_frame.write_csv(out / "schools.csv")
    truth = history.truth(arguments, exit_frame, ids)
    if letter_truth is not None:
        letter_truth["note"] = "parents' own letters only: no school template is planted"
        truth["letters"] = letter_truth
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def check_history_arguments(
    seed: int,
    schools: int,
    pupils: int,
    terms: int,
    last_term: str,
    heterogeneity_sd: float,
    factor: float,
) -> list[str]:
    """Refuse what the generator cannot honour; return the terms' labels, oldest first."""
    check_arguments(seed, schools, pupils, heterogeneity_sd, 1.0)
    if not 1 <= terms <= MAX_TERMS:
        raise UsageError(f"--terms: give 1 to {MAX_TERMS} terms")
    if not 0.1 <= factor <= 5:
        raise UsageError("--ehe-rate-factor: give a multiple of the national rate from 0.1 to 5")
    return term_labels(terms, last_term)


def term_labels(terms: int, last_term: str = LAST_TERM) -> list[str]:
    """The `terms` termly censuses ending at `last_term`, oldest first: 2024-AUT, 2025-SPR, ..."""
    match = re.fullmatch(r"(\d{4})-(AUT|SPR|SUM)", last_term.strip().upper())
    if not match:
        raise UsageError(f"--last-term {last_term!r}: write a term like 2025-SUM or 2024-AUT")
    season = SEASONS.index(match[2])
    school_year = int(match[1]) - (season > 0)
    last = school_year * 3 + season
    labels = []
    for index in range(last - terms + 1, last + 1):
        year, season = divmod(index, 3)
        labels.append(f"{year + (season > 0)}-{SEASONS[season]}")
    return labels


# =========================================================================== the calendar


def school_days_of_year(year: int) -> np.ndarray:
    """School days (datetime64[D]) of the school year starting in September `year`.

    One generic English calendar, so any span of terms has school days to date exits on: the
    first Monday of September to the last Friday before 23 July, closed for the week of the
    last Monday of October, 21 December to 3 January, the week from the Monday on or after
    12 February, the fortnight before Easter Sunday to Easter Monday, the early May bank
    holiday and the week of the last Monday of May. For 2024-25 these are exactly the
    one-year generator's school days.
    """

    def monday_from(day: date) -> date:
        return day + timedelta(days=(7 - day.weekday()) % 7)

    start = monday_from(date(year, 9, 1))
    end = date(year + 1, 7, 22)
    end -= timedelta(days=(end.weekday() - 4) % 7)
    october, february = monday_from(date(year, 10, 25)), monday_from(date(year + 1, 2, 12))
    early_may, late_may = monday_from(date(year + 1, 5, 1)), monday_from(date(year + 1, 5, 25))
    easter = easter_sunday(year + 1)
    week = timedelta(days=4)
    closed = [
        (october, october + week),
        (date(year, 12, 21), date(year + 1, 1, 3)),
        (february, february + week),
        (easter - timedelta(days=13), easter + timedelta(days=1)),
        (early_may, early_may),
        (late_may, late_may + week),
    ]
    days = np.arange(np.datetime64(start), np.datetime64(end) + 1)
    shut = np.concatenate([np.arange(np.datetime64(a), np.datetime64(b) + 1) for a, b in closed])
    return days[np.is_busday(days) & ~np.isin(days, shut)]


@dataclass
class Calendar:
    """The terms: labels, their school days, and each term's share of a school year's exits."""

    labels: list[str]
    days: np.ndarray  # every school day of the school years the terms fall in (datetime64[D])
    first: np.ndarray  # index into days of each term's first school day
    stop: np.ndarray  # one past each term's last school day
    school_year: np.ndarray  # September year of each term
    season: np.ndarray  # 0 autumn, 1 spring, 2 summer
    shares: dict[str, np.ndarray]  # day_profile name -> share of its school year in each term
    end: date  # last calendar day of the last term

    @classmethod
    def of(cls, labels: list[str]) -> Calendar:
        windows = [term_window(label) for label in labels]
        season = np.array([SEASONS.index(label[-3:]) for label in labels])
        school_year = np.array(
            [w.start.year - (s > 0) for w, s in zip(windows, season, strict=True)]
        )
        years = range(int(school_year.min()), int(school_year.max()) + 1)
        by_year = {y: school_days_of_year(y) for y in years}
        days = np.concatenate(list(by_year.values()))
        first = np.searchsorted(days, np.array([w.start for w in windows], "datetime64[D]"))
        stop = np.searchsorted(days, np.array([w.end for w in windows], "datetime64[D]"), "right")
        offset = dict(zip(years, np.cumsum([0, *map(len, by_year.values())]), strict=False))
        shares = {}
        for name in ("ehe", "late", "uniform"):
            share = np.zeros(len(labels))
            for t, y in enumerate(school_year.tolist()):
                cdf = np.r_[0.0, day_profile(by_year[y], name)]
                share[t] = cdf[stop[t] - offset[y]] - cdf[first[t] - offset[y]]
            shares[name] = share
        return cls(labels, days, first, stop, school_year, season, shares, windows[-1].end)

    def share(self, destination: str, term: int) -> float:
        """Share of a school year's exits to `destination` that fall in `term`."""
        return float(self.shares[PROFILE_OF.get(destination, "uniform")][term])

    def term_days(self, term: int) -> np.ndarray:
        return self.days[self.first[term] : self.stop[term]]


# =========================================================================== schools and plants


@dataclass
class HistoryPlan:
    """The planted schools (indices, at most one per LA each); all empty for a null history."""

    steady: np.ndarray
    recent: np.ndarray
    stopped: np.ndarray
    sibling: np.ndarray

    @classmethod
    def empty(cls) -> HistoryPlan:
        nothing = np.zeros(0, dtype=np.int64)
        return cls(nothing, nothing, nothing, nothing)

    def all(self) -> np.ndarray:
        return np.concatenate([self.steady, self.recent, self.stopped, self.sibling])


def history_schools(
    n: int, pupils: int, null: bool, sd: float, factor: float, terms: int, seed: int
) -> tuple[Schools, HistoryPlan]:
    """The one-year generator's schools (no one-year plants), then this generator's plants.

    Planted schools get no random effect, so their excess over the intake is exactly the
    multiplier; the steady school is resized so its intake predicts about 5 EHE a term.
    """
    table, _ = build_schools(n, pupils, True, sd, 1.0, stream(seed, "schools"))
    if null:
        return table, HistoryPlan.empty()
    plan = choose_history_plan(table, terms, stream(seed, "plants"))
    table.effect[plan.all()] = 1.0
    size_steady(table, plan.steady, pupils, factor)
    table.size = scale_sizes(table.raw_size, pupils)
    return table, plan


def choose_history_plan(table: Schools, terms: int, rng: Generator) -> HistoryPlan:
    """Per LA: a mid-sized secondary for the steady excess, one of the larger remaining
    secondaries for the recent one, another for the stopped one (only when the span reaches
    back far enough) and one of the larger primaries for the sibling family."""
    steady, recent, stopped, sibling = [], [], [], []
    raw = table.raw_size
    for a in range(len(table.la_codes)):
        in_la = np.flatnonzero(table.la == a)
        secondaries = in_la[table.phase[in_la] == SECONDARY]
        secondaries = secondaries[np.argsort(-raw[secondaries], kind="stable")]
        steady.append(secondaries[len(secondaries) // 2])
        rest = secondaries[secondaries != steady[-1]]
        recent.append(rng.choice(rest[: max(1, (len(rest) + 1) // 2)]))
        if terms > STOPPED_GAP:
            stopped.append(rng.choice(rest[rest != recent[-1]]))
        primaries = in_la[table.phase[in_la] == PRIMARY]
        primaries = primaries[np.argsort(-raw[primaries], kind="stable")]
        sibling.append(rng.choice(primaries[: max(1, (len(primaries) + 1) // 2)]))
    as_array = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    return HistoryPlan(as_array(steady), as_array(recent), as_array(stopped), as_array(sibling))


def size_steady(table: Schools, steady: np.ndarray, pupils: int, factor: float) -> None:
    """Resize each steady school so its intake predicts about STEADY_PER_TERM EHE exits a term.

    Expected counts are approximated as make_innocent does (odds implied by each school's
    intake, scaled to the LA's rate); resizing one school changes the scale, so iterate.
    """
    if len(steady) == 0:
        return
    index = school_odds_index(table)
    wanted = 3 * STEADY_PER_TERM  # a school year of three terms
    for _ in range(100):
        per_raw = EHE_TARGET_RATE * factor * pupils / (table.raw_size * index).sum()
        needed = wanted / (index[steady] * per_raw)
        done = np.allclose(needed, table.raw_size[steady], rtol=1e-4)
        table.raw_size[steady] = needed
        if done:
            break
    la_total = np.bincount(table.la, weights=table.raw_size)[table.la[steady]]
    if not done or np.any(table.raw_size[steady] > PLANT_MAX_SHARE * la_total):
        raise UsageError(
            "--pupils: too few pupils per school for a secondary expecting 5 EHE exits a "
            "term; give more pupils, a larger --ehe-rate-factor, or use --null"
        )


def year_ranges(table: Schools) -> tuple[np.ndarray, np.ndarray]:
    """First and last year group of each school (Reception = 0)."""
    taught = year_weights(table.phase, table.sixth_form) > 0
    return taught.argmax(axis=1), N_YEARS - 1 - taught[:, ::-1].argmax(axis=1)


# =========================================================================== the simulation


@dataclass
class Roll:
    """Open registrations: spell id, pupil (person), school, status, and the school day of
    joining in the current term (-1: on roll at its start)."""

    spell: np.ndarray
    person: np.ndarray
    school: np.ndarray
    status: np.ndarray
    join: np.ndarray

    def __len__(self) -> int:
        return len(self.spell)

    def take(self, rows: np.ndarray) -> Roll:
        return Roll(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

    def concat(self, other: Roll) -> Roll:
        return Roll(
            **{
                f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                for f in dataclasses.fields(self)
            }
        )


@dataclass
class Forced:
    """Exits decided before a term's draws (a sibling family, the example LA's one-year plants):
    pupil, school, destination code, planted kind and global school-day index, sorted by pupil.
    They happen in the term's first batch, where every pupil on roll at its start is."""

    persons: np.ndarray
    school: np.ndarray
    dest: np.ndarray
    kind: np.ndarray
    day: np.ndarray

    @classmethod
    def of(
        cls,
        persons: np.ndarray,
        school: np.ndarray,
        dest: np.ndarray,
        kind: np.ndarray,
        day: np.ndarray,
    ) -> Forced:
        order = np.argsort(persons, kind="stable")
        columns = (persons, school, dest, kind, day)
        return cls(*(np.asarray(c, dtype=np.int64)[order] for c in columns))

    @classmethod
    def merge(cls, parts: list[Forced | None]) -> Forced | None:
        """One set of the parts' exits (None when there are none)."""
        present = [p for p in parts if p is not None and len(p.persons)]
        if not present:
            return None
        columns = [
            np.concatenate([getattr(p, f.name) for p in present]) for f in dataclasses.fields(cls)
        ]
        return cls.of(*columns)

    def match(self, rows: Roll) -> tuple[np.ndarray, np.ndarray]:
        """Which rows are forced, and each row's index into the forced arrays."""
        at = np.searchsorted(self.persons, rows.person).clip(0, len(self.persons) - 1)
        return (self.persons[at] == rows.person) & (self.school[at] == rows.school), at


SNAPSHOT = ("spell", "person", "school", "status", "year", "dis", "sen", "social", "need")
SNAPSHOT_TRAITS = ("fsm", "attendance", "suspensions")


class History:
    """The LA's pupils followed term by term, and the counts truth.json reports.

    `people` holds one entry per pupil ever on a roll (their current characteristics; `home`
    is their index), spells one entry per registration (pupil x school, with its dates).
    """

    def __init__(
        self, table: Schools, plan: HistoryPlan, calendar: Calendar, seed: int, rate: float
    ) -> None:
        self.table, self.plan, self.cal, self.seed = table, plan, calendar, seed
        self.lowest, self.highest = year_ranges(table)
        self.weights = year_weights(table.phase, table.sixth_form)
        roll, self.secondary_of = first_roll(table, seed)
        n = int((roll.home == np.arange(len(roll))).sum())
        self.people = roll.take(np.arange(n))
        self.people.status[:] = C
        self.cohort = calendar.school_year[0] - self.people.year.astype(np.int64)
        self.families = int(self.people.family.max()) + 1
        spells = np.arange(len(roll), dtype=np.int64)
        self.open = Roll(spells, roll.home, roll.school, roll.status, np.full(len(roll), -1))
        self.spell_from = np.full(len(roll), np.datetime64("NaT"), dtype="datetime64[D]")
        self.spell_to = self.spell_from.copy()
        main = roll.status != S
        eta = ehe_log_odds(roll) + np.log(table.effect)[roll.school]
        self.intercept = calibrate_intercept(eta[main], np.ones(int(main.sum())), rate)
        self.rate = rate
        self.pending = Roll(*(np.zeros(0, dtype=np.int64) for _ in range(5)))  # join = day
        shape = (table.count, len(calendar.labels))
        self.expected, self.mean, self.targeted = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.observed = np.zeros(shape, dtype=np.int64)
        self.pupil_years = np.zeros(len(calendar.labels))
        self.census: list[list[dict[str, np.ndarray]]] = []
        self.exits: list[dict[str, np.ndarray]] = []
        self.siblings: list[dict] = []
        self.waiting = np.zeros(0, dtype=np.int64)  # pupils kept on roll for a forced exit later
        self.first_census = n
        self.left = np.full((n, REMEMBERED), -1, dtype=np.int32)  # schools a pupil has left
        self.term = 0

    # ----------------------------------------------------------------------- the term loop

    def run(self) -> None:
        for term in range(len(self.cal.labels)):
            self.run_term(term)

    def run_term(self, term: int) -> None:
        """September changes, new dual registrations, joiners, then exits in batches: pupils
        who move within the LA mid-term join their new school in a further batch."""
        rng = stream(self.seed, "terms", term)
        self.term = term
        self.open.join[:] = -1
        if term > 0 and self.cal.season[term] == 0:
            self.september(term, rng)
        self.refresh_status()
        if term > 0:
            self.fill_dual_registrations(term, rng)
        forced = self.forced_exits(term, rng)
        batch = self.open.concat(self.joiners(term, rng))
        self.open = self.open.take(np.zeros(0, dtype=np.int64))
        self.census.append([])
        due = self.due_arrivals(term)
        while True:
            # the school must teach the pupil's year, and a pupil never rejoins a school they
            # left (so appears once per census per school, and not after leaving it)
            year = self.people.year[due.person]
            fits = (year >= self.lowest[due.school]) & (year <= self.highest[due.school])
            fits &= ~(self.left[due.person] == due.school[:, None]).any(axis=1)
            fits[fits] = self.has_room(due.take(np.flatnonzero(fits)), batch)
            batch = batch.concat(self.start_spells(due.take(np.flatnonzero(fits)), term))
            if len(batch) == 0:
                break
            due = self.draw_batch(term, batch, forced, rng)
            forced, batch = None, self.open.take(np.zeros(0, dtype=np.int64))

    def forced_exits(self, term: int, rng: Generator) -> Forced | None:
        """Exits decided before the term's draws: the sibling family, in the latest term."""
        return self.choose_siblings(term, rng) if term == len(self.cal.labels) - 1 else None

    def has_room(self, due: Roll, batch: Roll) -> np.ndarray:
        """Which arrivals a school can still admit, earliest first: one already at CAPACITY
        times its size refuses in-year admissions (the pupil goes to a school outside the
        LA), so rolls fed by moves, like special schools', do not grow without end."""
        n = self.table.count
        main = lambda rows: rows.school[rows.status != S]  # noqa: E731
        taken = np.bincount(main(self.open), minlength=n) + np.bincount(main(batch), minlength=n)
        room = np.floor(CAPACITY * self.table.size) - taken
        order = np.lexsort((due.join, due.school))
        admitted = np.zeros(len(due), dtype=bool)
        admitted[order] = position_in_run(changes(due.school[order])) < room[due.school[order]]
        return admitted

    def draw_batch(self, term: int, rows: Roll, forced: Forced | None, rng: Generator) -> Roll:
        """Draw this term's exits of `rows`, record their census rows, keep the stayers open;
        returns the arrivals due later in this term."""
        cal, table = self.cal, self.table
        first, stop = int(cal.first[term]), int(cal.stop[term])
        view = self.view(rows, first)
        main = rows.status != S
        frac = np.where(rows.join >= 0, (stop - rows.join) / (stop - first), 1.0)
        eta = ehe_log_odds(view)
        p_intake = np.where(main, expit(self.intercept + eta), 0.0)
        effect = np.log(table.effect)[rows.school]
        p_effect = np.where(main, expit(self.intercept + eta + effect), 0.0)
        whole_year = dataclasses.replace(view, start=np.zeros(len(rows), dtype=np.int16))
        annual = destination_rates(whole_year, table, p_effect, 1)
        rates = {d: rate * cal.share(d, term) * frac for d, rate in annual.items()}
        multiplier = self.multipliers(view, rows, term)
        rates["EHE"] = np.minimum(rates["EHE"] * multiplier, MAX_TERM_HAZARD)
        # siblings' exits are correlated through a family normal drawn afresh for each batch:
        # reused, it would send a pupil who just moved school (a low draw) on to EHE
        shared = rng.standard_normal(self.families)
        dest = pick_destinations(rates, shared[view.family], rng)
        chosen, at = np.zeros(len(rows), dtype=bool), np.zeros(len(rows), dtype=np.int64)
        if forced:
            chosen, at = forced.match(rows)
            dest[chosen] = forced.dest[at[chosen]]
        # a pupil whose forced exit comes in a later term stays on roll until then
        waiting = np.isin(rows.person, self.waiting) & ~chosen
        dest[waiting] = -1
        # a dual registration ends with the pupil's main registration
        left_main = np.zeros(len(self.people), dtype=bool)
        left_main[rows.person[(rows.status == M) & (dest >= 0)]] = True
        closing = (rows.status == S) & (dest < 0) & left_main[rows.person]
        dest[closing] = DEST["DUAL_ENDED"]
        exits = np.flatnonzero(dest >= 0)
        d = dest[exits]
        kind = planted_kind(multiplier[exits], d, chosen[exits], rng)
        day = first + exit_days(view, exits, d, np.zeros_like(kind), cal.term_days(term), rng)
        if forced:
            decided = np.flatnonzero(chosen[exits])
            kind[decided] = forced.kind[at[exits[decided]]]
            day[decided] = forced.day[at[exits[decided]]]
            self.waiting = np.setdiff1d(self.waiting, rows.person[chosen])
        day = self.share_main_days(rows, exits, day, closing)
        details = exit_details(view, table, exits, d, kind, day, rng)
        self.people.suspensions[view.home[exits]] = view.suspensions[exits]
        arrivals = self.arrivals(view, rows, details, rng)
        settled = np.where(chosen, dest == DEST["EHE"], np.where(waiting, 0.0, np.nan))
        self.account(term, rows, view, p_intake, rates["EHE"], frac, exits, d, settled)
        self.census[-1].append(self.snapshot(rows, view))
        self.record_exits(rows, view, details)
        self.spell_to[rows.spell[exits]] = cal.days[day]
        stayed = np.ones(len(rows), dtype=bool)
        stayed[exits] = False
        self.remember_leaving(rows, exits)
        self.open = self.open.concat(rows.take(np.flatnonzero(stayed)))
        due = arrivals.join < stop
        self.pending = self.pending.concat(arrivals.take(np.flatnonzero(~due)))
        return arrivals.take(np.flatnonzero(due))

    def remember_leaving(self, rows: Roll, exits: np.ndarray) -> None:
        """Note the schools pupils left: none takes them back within the span, so a pupil who
        leaves never reappears in that school's later censuses (main registrations first,
        then dual ones, so one pupil is never shifted twice at once)."""
        for dual in (False, True):
            mine = exits[(rows.status[exits] == S) == dual]
            person = rows.person[mine]
            self.left[person, 1:] = self.left[person, :-1]
            self.left[person, 0] = rows.school[mine]

    def view(self, rows: Roll, first: int) -> Pupils:
        """The rows as the one-year generator's Pupils: each pupil's current characteristics,
        the registration's school and status, `start` = school day of joining in the term."""
        view = self.people.take(rows.person)
        view.school = rows.school.astype(np.int32)
        view.status = rows.status.astype(np.int8)
        view.start = np.where(rows.join >= 0, rows.join - first, 0).astype(np.int16)
        return view

    def multipliers(self, view: Pupils, rows: Roll, term: int) -> np.ndarray:
        """Each row's planted multiplier of its EHE hazard in `term` (1 almost everywhere)."""
        last = len(self.cal.labels) - 1
        per_school = np.ones(self.table.count)
        per_school[self.plan.steady] = STEADY_MULTIPLIER
        if term <= last - STOPPED_GAP:
            per_school[self.plan.stopped] = STOPPED_MULTIPLIER
        multiplier = per_school[rows.school]
        if term > last - RECENT_TERMS and len(self.plan.recent):
            at_recent = np.zeros(self.table.count, dtype=bool)
            at_recent[self.plan.recent] = True
            hit = at_recent[rows.school] & targeted(view)
            multiplier[hit] = RECENT_MULTIPLIER
        return multiplier

    def share_main_days(
        self, rows: Roll, exits: np.ndarray, day: np.ndarray, closing: np.ndarray
    ) -> np.ndarray:
        """A dual registration closed with the main one ends on the same day."""
        closed = np.flatnonzero(closing[exits])
        if len(closed) == 0:
            return day
        main = np.flatnonzero(rows.status[exits] == M)
        order = np.argsort(rows.person[exits[main]], kind="stable")
        persons = rows.person[exits[main]][order]
        where = np.searchsorted(persons, rows.person[exits[closed]])
        day[closed] = day[main[order[where]]]
        return day

    def account(
        self,
        term: int,
        rows: Roll,
        view: Pupils,
        p_intake: np.ndarray,
        hazard: np.ndarray,
        frac: np.ndarray,
        exits: np.ndarray,
        d: np.ndarray,
        settled: np.ndarray,
    ) -> None:
        """Add the batch to truth's per-school, per-term counts; `settled` is a row's EHE
        exit when it was decided beforehand (1 forced EHE, 0 forced elsewhere or waiting),
        NaN where the hazard applies."""
        n, share = self.table.count, self.cal.share("EHE", term)
        weight = p_intake * share * frac
        self.expected[:, term] += np.bincount(rows.school, weights=weight, minlength=n)
        mine = targeted(view) & (rows.status != S)
        self.targeted[:, term] += np.bincount(rows.school[mine], weights=weight[mine], minlength=n)
        self.mean[:, term] += np.bincount(
            rows.school, weights=np.where(np.isnan(settled), hazard, settled), minlength=n
        )
        self.observed[:, term] += np.bincount(rows.school[exits[d == DEST["EHE"]]], minlength=n)
        main = rows.status != S
        self.pupil_years[term] += float(frac[main].sum()) * self.cal.share("OTHER", term)

    def snapshot(self, rows: Roll, view: Pupils) -> dict[str, np.ndarray]:
        """The census rows of the batch: registration and characteristics this term."""
        values = {"spell": rows.spell, "person": rows.person}
        values |= {name: getattr(view, name) for name in SNAPSHOT[2:] + SNAPSHOT_TRAITS}
        return values

    def record_exits(self, rows: Roll, view: Pupils, details: Exits) -> None:
        """Keep the batch's exits with their pupil, school and year group (`day` is global)."""
        record = {f.name: getattr(details, f.name) for f in dataclasses.fields(details)}
        at = details.row
        record |= {"person": rows.person[at], "school": rows.school[at], "year": view.year[at]}
        self.exits.append(record)

    # ----------------------------------------------------------------------- arrivals

    def arrivals(self, view: Pupils, rows: Roll, details: Exits, rng: Generator) -> Roll:
        """In-LA movers re-register a few school days after leaving; some home-educated
        children return to a school of the LA on their returned_date."""
        exits, day = details.row, details.day
        moved = (details.destination_school >= 0) & (rows.status[exits] != S)
        move_day = day + rng.integers(1, 9, len(exits))
        back = np.flatnonzero(details.returned_delay >= 0)
        school = destination_schools(
            view,
            self.table,
            exits[back],
            np.full(len(back), DEST["SCHOOL"], dtype=np.int8),
            np.zeros(len(back), dtype=np.int8),
            rng,
        )
        days = self.cal.days
        returned = days[day[back]] + details.returned_delay[back].astype("timedelta64[D]")
        back_day = np.searchsorted(days, returned)
        known = (school >= 0) & (back_day < len(days))
        # re-registration on the next school day: the returned_date is that day
        details.returned_delay[back[known]] = (
            days[back_day[known]] - days[day[back[known]]]
        ).astype(np.int64)
        person = np.concatenate([rows.person[exits[moved]], rows.person[exits[back[known]]]])
        return Roll(
            spell=np.full(len(person), -1, dtype=np.int64),
            person=person,
            school=np.concatenate([details.destination_school[moved], school[known]]),
            status=np.full(len(person), C, dtype=np.int8),
            join=np.concatenate([move_day[moved], back_day[known]]),
        )

    def due_arrivals(self, term: int) -> Roll:
        """Arrivals due this term; later ones wait."""
        due = self.pending.join < self.cal.stop[term]
        arriving = self.pending.take(np.flatnonzero(due))
        self.pending = self.pending.take(np.flatnonzero(~due))
        return arriving

    def start_spells(self, rows: Roll, term: int) -> Roll:
        """Give arriving rows spell ids, on roll from their joining day."""
        first = int(self.cal.first[term])
        join = np.maximum(rows.join, first)
        dates = self.cal.days[np.minimum(join, len(self.cal.days) - 1)]
        spells = self.new_spells(dates)
        return Roll(spells, rows.person, rows.school, rows.status, np.where(join > first, join, -1))

    def new_spells(self, dates: np.ndarray) -> np.ndarray:
        """Ids of new registrations on roll from `dates` (NaT: before the span)."""
        first = len(self.spell_from)
        self.spell_from = np.concatenate([self.spell_from, dates.astype("datetime64[D]")])
        self.spell_to = np.concatenate([self.spell_to, np.full(len(dates), np.datetime64("NaT"))])
        return np.arange(first, len(self.spell_from), dtype=np.int64)

    # ----------------------------------------------------------------------- new pupils

    def joiners(self, term: int, rng: Generator) -> Roll:
        """Pupils arriving from outside the LA mid-term (JOINERS of the roll a year)."""
        first, stop = int(self.cal.first[term]), int(self.cal.stop[term])
        lam = JOINERS * self.table.size * self.cal.share("OTHER", term)
        count = rng.poisson(lam)
        school = np.repeat(np.arange(self.table.count), count)
        cumulative = np.cumsum(self.weights, axis=1)[school]
        year = (rng.random(len(school))[:, None] > cumulative).sum(axis=1)
        year = np.clip(year, self.lowest[school], self.highest[school])
        persons = self.new_people(school, year, None, rng)
        join = first + rng.integers(1, max(2, stop - first - 5), len(persons))
        spells = self.new_spells(self.cal.days[join])
        status = np.full(len(persons), C, dtype=np.int8)
        return Roll(spells, persons, school.astype(np.int32), status, join)

    def new_people(
        self, school: np.ndarray, year: np.ndarray, family: np.ndarray | None, rng: Generator
    ) -> np.ndarray:
        """Draw new pupils' characteristics at `school` (singletons unless `family` given)."""
        n = len(school)
        if family is None:
            family = np.full(n, -1)
        family = np.where(family >= 0, family, self.families + np.arange(n))
        self.families = max(self.families, int(family.max(initial=-1)) + 1)
        people = draw_traits(self.table, school, year.astype(np.int8), family, school, rng)
        first = len(self.people)
        people.home = np.arange(first, first + n, dtype=np.int64)
        self.people = self.people.concat(people)
        self.left = np.concatenate([self.left, np.full((n, REMEMBERED), -1, np.int32)])
        school_year = int(self.cal.school_year[self.term])
        self.cohort = np.concatenate([self.cohort, school_year - year.astype(np.int64)])
        return people.home

    # ----------------------------------------------------------------------- September

    def september(self, term: int, rng: Generator) -> None:
        """Advance year groups; final years leave (no exit row), Year 6 moves on, intakes
        arrive, characteristics change a little, attendance and suspensions are redrawn."""
        year_now = int(self.cal.school_year[term])
        rows, table = self.open, self.table
        old = self.people.year[rows.person].astype(np.int64)
        new = old + 1
        phase = table.phase[rows.school]
        stays = (new >= self.lowest[rows.school]) & (new <= self.highest[rows.school])
        stay = np.select([old == 11, old == 12], [SIXTH_FORM_STAY, YEAR_13_STAY], 1.0)
        stays &= (phase != SECONDARY) | (rng.random(len(rows)) < stay)
        moving = self.year_six_movers(rows, phase, old, rng)
        self.spell_to[rows.spell[~stays]] = np.datetime64(date(year_now, 8, 31))
        active = np.concatenate([rows.person[stays], rows.person[moving], self.pending.person])
        self.people.year[active] = (year_now - self.cohort[active]).astype(np.int8)
        movers = rows.take(moving)
        movers.school = self.secondary_of[movers.school].astype(movers.school.dtype)
        movers.status[:] = C
        movers.spell = self.new_spells(np.full(len(movers), np.datetime64(date(year_now, 9, 1))))
        self.open = rows.take(np.flatnonzero(stays)).concat(movers)
        self.update_traits(rng)
        self.open = self.open.concat(self.intakes(year_now, rng))

    def year_six_movers(
        self, rows: Roll, phase: np.ndarray, old: np.ndarray, rng: Generator
    ) -> np.ndarray:
        """Year 6 leavers moving on to their primary's paired secondary: about 80% of its
        Year 7 intake, at most 85% of the Year 6 of its primaries."""
        leaving = (phase == PRIMARY) & (old == 6) & (self.secondary_of[rows.school] >= 0)
        secondary = self.secondary_of[rows.school[leaving]]
        supply = np.bincount(secondary, minlength=self.table.count)
        wanted = TRANSFER_SHARE * self.table.size * self.weights[:, 7]
        share = np.minimum(TRANSFER_MAX, wanted / np.maximum(supply, 1))
        moving = np.zeros(len(rows), dtype=bool)
        moving[np.flatnonzero(leaving)] = rng.random(len(secondary)) < share[secondary]
        return moving

    def intakes(self, year_now: int, rng: Generator) -> Roll:
        """September's new pupils: Reception, Year 7 beyond the movers, sixth form, and every
        year at special schools and AP, up to each school's size (+-5% from year to year)."""
        table, rows = self.table, self.open
        main = rows.status != S
        year = self.people.year[rows.person[main]].astype(np.int64)
        cell = rows.school[main].astype(np.int64) * N_YEARS + year
        current = np.bincount(cell, minlength=table.count * N_YEARS).reshape(-1, N_YEARS)
        noise = np.exp(rng.normal(0.0, COHORT_SD, (table.count, N_YEARS)))
        target = np.round(table.size[:, None] * self.weights * noise)
        entry = np.zeros((table.count, N_YEARS), dtype=bool)
        entry[table.phase == PRIMARY, 0] = True
        entry[table.phase == SECONDARY, 7] = True
        entry[(table.phase == SECONDARY) & table.sixth_form, 12] = True
        entry[table.phase >= SPECIAL] = self.weights[table.phase >= SPECIAL] > 0
        count = np.where(entry, np.maximum(target - current, 0), 0).astype(np.int64).ravel()
        school = np.repeat(np.repeat(np.arange(table.count), N_YEARS), count)
        years = np.repeat(np.tile(np.arange(N_YEARS), table.count), count)
        family, donor = self.reception_siblings(school, years, rng)
        persons = self.new_people(school, years, family, rng)
        has = donor >= 0
        people = self.people
        dis = people.dis[persons]
        dis[has] = people.dis[donor[has]]  # one household
        dis |= people.social[persons] == 3  # looked-after children are disadvantaged
        changed = dis != people.dis[persons]
        fsm = np.where(changed, dis & (rng.random(len(persons)) < 0.8), people.fsm[persons])
        people.dis[persons], people.fsm[persons] = dis, fsm & dis
        spells = self.new_spells(np.full(len(persons), np.datetime64(date(year_now, 9, 1))))
        status = np.full(len(persons), C, dtype=np.int8)
        return Roll(spells, persons, school.astype(np.int32), status, np.full(len(persons), -1))

    def reception_siblings(
        self, school: np.ndarray, years: np.ndarray, rng: Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """For ~40% of new Reception pupils, an older sibling at the same primary: the family
        they join and that sibling (-1: none). Families with MAX_CHILDREN on roll take none."""
        rows = self.open
        year = self.people.year[rows.person]
        family = self.people.family[rows.person]
        children = np.bincount(family[rows.status != S], minlength=self.families)[family]
        donors = np.flatnonzero(
            (self.table.phase[rows.school] == PRIMARY)
            & (year >= 1)
            & (rows.status == C)
            & (children < MAX_CHILDREN)
        )
        donors = donors[np.argsort(rows.school[donors], kind="stable")]
        count = np.bincount(rows.school[donors], minlength=self.table.count)
        start = np.cumsum(count) - count
        wants = (years == 0) & (rng.random(len(school)) < RECEPTION_SIBLINGS) & (count[school] > 0)
        pick = (rng.random(len(school)) * np.maximum(count[school], 1)).astype(np.int64)
        donor = np.full(len(school), -1, dtype=np.int64)
        donor[wants] = rows.person[donors[start[school[wants]] + pick[wants]]]
        family = np.where(donor >= 0, self.people.family[np.maximum(donor, 0)], -1)
        return family, donor

    def update_traits(self, rng: Generator) -> None:
        """A school year's small changes: a few families' disadvantage, SEN moves mostly
        between none and support (EHC plans slowly rise), social care churns; attendance and
        suspensions are redrawn for the year."""
        rows = self.open.take(np.flatnonzero(self.open.status != S))
        person, school = rows.person, rows.school
        people, table = self.people, self.table
        n = len(person)
        phase = table.phase[school]
        year = people.year[person]
        dis = people.dis[person]
        redraw = rng.random(n) < DIS_REDRAW
        new_dis = np.where(redraw, rng.random(n) < table.dis_mean[school], dis)
        fsm = np.where(new_dis != dis, new_dis & (rng.random(n) < 0.8), people.fsm[person])
        sen = people.sen[person]
        cdf = np.cumsum(SEN_CHANGES, axis=1)[sen]
        moved = (rng.random(n)[:, None] > cdf[:, :2]).sum(axis=1).astype(np.int8)
        new_sen = np.where(phase <= SECONDARY, moved, sen)
        need = people.need[person]
        needs = draw_needs(phase, year, new_sen, rng)
        nsa = codes.SEN_NEED.index("NSA")
        renew = (new_sen > 0) & ((sen == 0) | ((new_sen == 2) & (need == nsa)))
        need = np.where(new_sen == 0, -1, np.where(renew, needs, need)).astype(np.int8)
        social = people.social[person]
        p_cin, p_cpp, p_cla = social_probabilities(phase, new_dis, table.social_mult[school])
        u = rng.random(n)
        drawn = np.select([u < p_cla, u < p_cla + p_cpp, u < p_cla + p_cpp + p_cin], [3, 2, 1], 0)
        social = np.where(rng.random(n) < SOCIAL_REDRAW, drawn, social).astype(np.int8)
        new_dis = new_dis | (social == 3)  # looked-after children are disadvantaged
        people.dis[person], people.fsm[person] = new_dis, fsm & new_dis
        people.sen[person], people.need[person], people.social[person] = new_sen, need, social
        people.attendance[person] = draw_attendance(phase, year, new_dis, new_sen, social, rng)
        people.suspensions[person] = draw_suspensions(
            phase, year, new_dis, new_sen, social, need, rng
        )

    # ----------------------------------------------------------------------- registrations

    def refresh_status(self) -> None:
        """A main registration whose dual (AP) registration has ended is single again."""
        dual = np.zeros(len(self.people), dtype=bool)
        dual[self.open.person[self.open.status == S]] = True
        self.open.status[(self.open.status == M) & ~dual[self.open.person]] = C

    def fill_dual_registrations(self, term: int, rng: Generator) -> None:
        """Refill each AP's dual-registration places from its LA's secondaries, as at the
        start (add_dual_registrations), from the first school day of the term."""
        table, rows = self.table, self.open
        ap = table.phase == AP
        taken = np.bincount(rows.school[rows.status == S], minlength=table.count)
        places = np.where(ap, np.maximum(table.size - taken, 0), 0)
        if places.sum() == 0:
            return
        left = self.left[rows.person]
        was_placed = ((left >= 0) & (table.phase[np.maximum(left, 0)] == AP)).any(axis=1)
        # no AP takes a pupil back, nor one kept on roll for a forced exit
        waiting = np.isin(rows.person, self.waiting)
        candidates = np.flatnonzero((rows.status == C) & ~was_placed & ~waiting)
        view = self.view(rows.take(candidates), int(self.cal.first[term]))
        placed = add_dual_registrations(view, dataclasses.replace(table, size=places), rng)
        chosen = candidates[placed.status[: len(candidates)] == M]
        rows.status[chosen] = M
        dual = placed.take(np.arange(len(candidates), len(placed)))
        start = np.full(len(dual), self.cal.days[self.cal.first[term]])
        spells = self.new_spells(start)
        status = np.full(len(dual), S, dtype=np.int8)
        joined = Roll(spells, dual.home, dual.school, status, np.full(len(dual), -1))
        self.open = rows.concat(joined)

    # ----------------------------------------------------------------------- the sibling family

    def choose_siblings(self, term: int, rng: Generator) -> Forced | None:
        """At each sibling primary, 4-5 pupils in different year groups become one family
        (for their whole history) that leaves for home education on one day this term.

        Returns the forced exits for the first batch: the pupils, their school, their day.
        Pupils with the same disadvantage and no social care are preferred, so the household
        is consistent. With several LAs every family is forced; `school` then matches each.
        """
        if len(self.plan.sibling) == 0:
            return None
        rows, people = self.open, self.people
        days = self.cal.term_days(term)
        persons, schools, day = [], [], []
        for school in self.plan.sibling.tolist():
            here = np.flatnonzero((rows.school == school) & (rows.status == C))
            here = here[rng.permutation(len(here))]
            wanted = int(rng.integers(SIBLINGS[0], SIBLINGS[1] + 1))
            quiet = here[(~people.dis[rows.person[here]]) & (people.social[rows.person[here]] == 0)]
            pool = quiet if len(np.unique(people.year[rows.person[quiet]])) >= wanted else here
            _, first_of_year = np.unique(people.year[rows.person[pool]], return_index=True)
            chosen = rows.person[pool[np.sort(first_of_year)[:wanted]]]
            family = self.families
            self.families += 1
            people.family[chosen] = family
            when = int(self.cal.first[term]) + int(
                np.searchsorted(day_profile(days, "ehe"), rng.random(), side="right")
            )
            when = min(when, int(self.cal.stop[term]) - 1)
            persons.append(chosen)
            schools.append(np.full(len(chosen), school))
            day.append(np.full(len(chosen), when))
            self.siblings.append({"school": school, "persons": chosen, "day": when, "term": term})
        persons_ = np.concatenate(persons)
        dest = np.full(len(persons_), DEST["EHE"])
        return Forced.of(
            persons_, np.concatenate(schools), dest, np.zeros_like(dest), np.concatenate(day)
        )

    # ----------------------------------------------------------------------- output

    def people_for_ids(self) -> Pupils:
        """People with `year` = their year group in 2024-25, as pupil_ids dates UPNs."""
        year = np.clip(UPN_YEAR - self.cohort, -20, 40).astype(np.int8)
        return dataclasses.replace(self.people, year=year)

    def exit_rows(self) -> tuple[Exits, Pupils]:
        """Every exit drawn (`row` = its position, `day` global) and its pupil as a roll row
        at the school left, in the year group they left from."""
        columns = {
            name: np.concatenate([record[name] for record in self.exits]) for name in self.exits[0]
        }
        exits = Exits(**{f.name: columns[f.name] for f in dataclasses.fields(Exits)})
        exits.row = np.arange(len(columns["person"]))
        roll = self.people.take(columns["person"])
        roll.school, roll.year = columns["school"].astype(np.int32), columns["year"]
        return exits, roll

    def exits_frame(self, ids: pl.Series) -> pl.DataFrame:
        """exits.csv (with the private columns), sorted by school, date and pupil."""
        exits, roll = self.exit_rows()
        return exit_table(exits, roll, self.cal.days, ids, self.cal.end)

    def write_pupils(self, path: Path, ids: pl.Series) -> None:
        """pupils.csv, census by census and school by school, formatted a chunk at a time."""
        header = True
        with path.open("wb") as handle:
            for term, batches in enumerate(self.census):
                snap = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
                order = np.lexsort((snap["spell"], snap["school"]))
                for start in range(0, len(order), CSV_CHUNK):
                    rows = order[start : start + CSV_CHUNK]
                    frame = self.census_rows(snap, rows, ids, self.cal.labels[term])
                    frame.write_csv(handle, include_header=header)
                    header = False

    def census_rows(
        self, snap: dict[str, np.ndarray], rows: np.ndarray, ids: pl.Series, label: str
    ) -> pl.DataFrame:
        """One census's rows in pupils.csv's columns (census after urn)."""
        person, spell = snap["person"][rows], snap["spell"][rows]
        pupils = self.people.take(person)
        for name in SNAPSHOT[2:] + SNAPSHOT_TRAITS:
            setattr(pupils, name, snap[name][rows])
        frame = roll_table(pupils, ids, self.spell_from[spell], self.spell_to[spell])
        return frame.insert_column(2, pl.repeat(label, len(rows), eager=True).alias("census"))

    def truth(self, arguments: dict, exits: pl.DataFrame, ids: pl.Series) -> dict:
        """What tests and the monitoring feature check against (see generate_history)."""
        table, cal = self.table, self.cal
        urns = [table.urn_text(i) for i in range(table.count)]
        rows = {
            label: sum(len(b["spell"]) for b in batches)
            for label, batches in zip(cal.labels, self.census, strict=True)
        }
        by_destination = exits.group_by("destination").len().sort("destination")
        ehe = int(self.observed.sum())
        model = ehe_model_truth(self.intercept, arguments["heterogeneity_sd"])
        model |= {
            "target_rate": self.rate,
            "national_rate": EHE_TARGET_RATE,
            "ehe_rate_factor": arguments.get("ehe_rate_factor", 1.0),
            "term_shares": dict(
                zip(cal.labels, np.round(cal.shares["ehe"], 6).tolist(), strict=True)
            ),
            "school_effect": "odds multiplied by exp(N(0, heterogeneity_sd)), the same in "
            "every term; 1 at planted schools",
            "note": "a pupil's EHE chance in a term = expit(intercept + coefficients + log "
            "school effect) x the term's share of a school year's EHE exits x the share of "
            "the term on roll (joiners) x any planted multiplier",
        }
        per_term = lambda values, digits: {  # noqa: E731
            urn: [round(float(v), digits) for v in row]
            for urn, row in zip(urns, values, strict=True)
        }
        return {
            "generator": "offroll_audit.synthetic.history",
            "arguments": arguments,
            "terms": cal.labels,
            "census_days": {label: census_day(label).isoformat() for label in cal.labels},
            "term_windows": {
                label: {
                    "from": term_window(label).start.isoformat(),
                    "to": term_window(label).end.isoformat(),
                    "school_days": int(cal.stop[t] - cal.first[t]),
                }
                for t, label in enumerate(cal.labels)
            },
            "counts": {
                "schools": table.count,
                "local_authorities": len(table.la_codes),
                "pupils": len(self.people),
                "pupils_first_census": self.first_census,
                "pupil_rows": sum(rows.values()),
                "pupil_rows_by_census": rows,
                "pupil_years": round(float(self.pupil_years.sum()), 3),
                "exits": exits.height,
                "ehe_exits": ehe,
                "ehe_rate": round(ehe / float(self.pupil_years.sum()), 6),
                "exits_by_destination": {str(d): int(c) for d, c in by_destination.iter_rows()},
            },
            "la_codes": [f"{c:03d}" for c in table.la_codes.tolist()],
            "ehe_model": model,
            "per_term": {
                "expected_ehe": "intake-predicted EHE exits: the model without the school "
                "effect or plants, over the pupils at risk that term",
                "mean_ehe": "the generator's own expectation: with the school effect and "
                "planted multipliers (a forced sibling exit counts 1)",
                "observed_ehe": "EHE exits drawn",
                "pupil_years": "years on roll at risk (main registrations)",
            },
            "school_effects": {
                u: round(float(v), 6) for u, v in zip(urns, table.effect, strict=True)
            },
            "expected_ehe": per_term(self.expected, 4),
            "mean_ehe": per_term(self.mean, 4),
            "observed_ehe": {u: row.tolist() for u, row in zip(urns, self.observed, strict=True)},
            "pupil_years": [round(float(v), 3) for v in self.pupil_years],
            "planted": self.planted_truth(ids),
            "not_planted": self.not_planted(),
        }

    def planted_truth(self, ids: pl.Series) -> list[dict]:
        """One entry per planted school: pattern, terms affected, multiplier, and per term
        what its intake predicts and what was observed."""
        cal, plan = self.cal, self.plan
        last = len(cal.labels) - 1
        terms = {
            "steady_excess": list(range(last + 1)),
            "recent_excess": list(range(max(0, last - RECENT_TERMS + 1), last + 1)),
            "stopped_excess": list(range(0, last - STOPPED_GAP + 1)),
        }
        applies = {
            "steady_excess": "every pupil",
            "recent_excess": "Years 9-11 with SEN support or an EHC plan, disadvantaged, or "
            "known to social care",
            "stopped_excess": "every pupil",
        }
        multiplier = {
            "steady_excess": STEADY_MULTIPLIER,
            "recent_excess": RECENT_MULTIPLIER,
            "stopped_excess": STOPPED_MULTIPLIER,
        }
        by_term = lambda values: dict(zip(cal.labels, np.round(values, 4).tolist(), strict=True))  # noqa: E731
        entries = []
        for pattern, schools in zip(
            PATTERNS[:3], (plan.steady, plan.recent, plan.stopped), strict=True
        ):
            affected = terms[pattern]
            for i in schools.tolist():
                entry = self.school_entry(pattern, i)
                entry |= {
                    "multiplier": multiplier[pattern],
                    "applies_to": applies[pattern],
                    "terms": [cal.labels[t] for t in affected],
                    "expected_ehe": by_term(self.expected[i]),
                    "mean_ehe": by_term(self.mean[i]),
                    "observed_ehe": dict(zip(cal.labels, self.observed[i].tolist(), strict=True)),
                    "expected_ehe_in_terms": round(float(self.expected[i, affected].sum()), 4),
                    "observed_ehe_in_terms": int(self.observed[i, affected].sum()),
                }
                if pattern == "recent_excess":
                    entry["expected_ehe_targeted"] = by_term(self.targeted[i])
                entries.append(entry)
        for family in self.siblings:
            i, term = family["school"], family["term"]
            entry = self.school_entry("sibling_family", i)
            entry |= {
                "multiplier": None,
                "applies_to": "one family: every sibling leaves for home education on one day",
                "terms": [cal.labels[term]],
                "expected_ehe": by_term(self.expected[i]),
                "mean_ehe": by_term(self.mean[i]),
                "observed_ehe": dict(zip(cal.labels, self.observed[i].tolist(), strict=True)),
                "family_id": family_ids(self.people.family[family["persons"][:1]]).item(),
                "siblings": len(family["persons"]),
                "pupil_ids": ids.gather(family["persons"]).to_list(),
                "exit_date": str(cal.days[family["day"]]),
            }
            entries.append(entry)
        return entries

    def not_planted(self) -> dict[str, str]:
        """Patterns left out, and why (a null history plants nothing)."""
        if len(self.plan.all()) == 0:
            return {pattern: "null: nothing is planted" for pattern in PATTERNS}
        if len(self.plan.stopped) == 0:
            return {
                "stopped_excess": f"needs at least {STOPPED_GAP + 1} terms: it affects only "
                f"terms {STOPPED_GAP} or more before the latest"
            }
        return {}

    def school_entry(self, pattern: str, i: int) -> dict:
        table = self.table
        return {
            "pattern": pattern,
            "urn": table.urn_text(i),
            "la_code": f"{table.la_codes[table.la[i]]:03d}",
            "phase": PHASE_NAMES[table.phase[i]],
            "pupils": int(table.size[i]),
        }


def planted_kind(
    multiplier: np.ndarray, d: np.ndarray, sibling: np.ndarray, rng: Generator
) -> np.ndarray:
    """OFFROLL_EHE for the EHE exits a planted excess accounts for ((m - 1) / m of them), so
    their reasons, suspensions and returns to school look like off-rolling; else NO_PLANT."""
    excess = (d == DEST["EHE"]) & ~sibling
    excess &= rng.random(len(d)) < (multiplier - 1) / multiplier
    return np.where(excess, OFFROLL_EHE, NO_PLANT).astype(np.int8)


def targeted(view: Pupils) -> np.ndarray:
    """Vulnerable Year 9-11 pupils: SEN support or EHC plan, disadvantaged, or social care."""
    vulnerable = (view.sen > 0) | view.dis | (view.social > 0)
    return vulnerable & (view.year >= 9) & (view.year <= 11)


def first_roll(table: Schools, seed: int) -> tuple[Pupils, np.ndarray]:
    """The first census's roll, drawn as the one-year generator draws it (year groups,
    families, characteristics, dual registrations at AP), and each primary's paired
    secondary (-1 for other schools), which its Year 6 pupils move on to."""
    rng = stream(seed, "pupils")
    school, year, rank = pupil_years(table, rng)
    feeding = feeder_primaries(table, rng)
    family, upn_school = chain_families(table, school, year, rank, feeding, rng)
    roll = draw_traits(table, school, year, family, upn_school, stream(seed, "traits"))
    roll = add_dual_registrations(roll, table, stream(seed, "dual"))
    feeders, _, count = feeding
    secondary_of = np.full(table.count, -1, dtype=np.int64)
    secondary_of[feeders] = np.repeat(np.arange(table.count), count)
    return roll, secondary_of
