"""A synthetic local authority with known answers, for tests, demos and benchmarks.

`generate_dataset` writes a dataset folder in the data contract's format
(pupils.csv, exits.csv, schools.csv, letters) and truth.json: the EHE model
that generated the exits, every school's random effect and intake-predicted
EHE count, the patterns an audit should find (schools off-rolling into home
education or into other schools, a special school deleting LA-placed pupils
without the LA's consent, school-authored letters) and the one it must not
flag (a large, deprived school whose raw EHE count is the LA's highest but is
all explained by its intake).

Everything is drawn per pupil with numpy and assembled with polars, so a
national-size dataset (9 million pupils) takes well under three minutes.
Each stage draws from its own seeded stream: the same arguments give
byte-identical files, and switching letters on or off leaves pupils and exits
unchanged apart from the letter_id column.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, fields
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit, ndtr

from offroll_audit import codes
from offroll_audit.problems import UsageError
from offroll_audit.synthetic.hard_letters import (
    KNOWN_TEMPLATES_FOLDER,
    choose_schools,
    hide_family_ids,
)
from offroll_audit.synthetic.letters import write_letters
from offroll_audit.synthetic.phrasebook import phrases
from offroll_audit.window import census_day

# --------------------------------------------------------------------------- the school year

WINDOW_START = date(2024, 9, 2)
WINDOW_END = date(2025, 7, 18)
SPRING_CENSUS = census_day("2025-SPR")
BEFORE_CENSUS = SPRING_CENSUS - timedelta(days=1)
HOLIDAYS = (
    (date(2024, 10, 28), date(2024, 11, 1)),
    (date(2024, 12, 23), date(2025, 1, 3)),
    (date(2025, 2, 17), date(2025, 2, 21)),
    (date(2025, 4, 7), date(2025, 4, 21)),
    (date(2025, 5, 5), date(2025, 5, 5)),
    (date(2025, 5, 26), date(2025, 5, 30)),
)
# Planted off-rolling happens before the January census, when it matters for league tables.
PLANT_PERIODS = {
    "pre_census": (date(2024, 10, 1), BEFORE_CENSUS),
    "autumn": (date(2024, 9, 16), BEFORE_CENSUS),
    "trust": (date(2024, 10, 1), date(2025, 3, 31)),
}
OUTPUT_FILES = ("pupils.csv", "exits.csv", "schools.csv", "letters.csv", "truth.json")
PRIVATE_EXIT_COLUMNS = ("_kind", "_year_group")  # exits_frame's columns not written out

# --------------------------------------------------------------------------- codes as integers

PHASE_NAMES = ("primary", "secondary", "special", "ap")
PRIMARY, SECONDARY, SPECIAL, AP = range(4)
# Reception to Year 14; index = year number (no nursery pupils are drawn).
YEAR_LABELS = tuple(g for g in codes.YEAR_GROUPS if codes.YEAR_NUMBER[g] >= 0)
N_YEARS = len(YEAR_LABELS)
C, M, S = range(3)  # enrolment status: single, dual main, dual subsidiary
SEMH = codes.SEN_NEED.index("SEMH")
DEST = {name: i for i, name in enumerate(codes.DESTINATIONS)}
NO_PLANT, OFFROLL_EHE, OFFROLL_MOVES, SPECIAL_NO_CONSENT, TRUST_TEMPLATE = range(5)

# --------------------------------------------------------------------------- the EHE model

EHE_TARGET_RATE = 0.0075  # new EHE a year over pupils (domain-facts.md: about 0.75%)
YEAR_ODDS = np.array([0.25, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.9, 1.3, 1.8, 3.0, 3.2, 0.5, 0.4, 0.3])
SEN_ODDS = np.array([1.0, 1.5, 1.8])  # N, K, E
DISADVANTAGED_ODDS = 1.6
SOCIAL_ODDS = np.array([1.0, 2.0, 2.5, 1.5])  # none, CIN, CPP, CLA

# --------------------------------------------------------------------------- sizes and shapes

SCHOOLS_PER_LA = 150
SINGLE_LA_BELOW = 1000
SCHOOLS_PER_OFFROLLER = 40
SIZE_RANGE = {PRIMARY: (100, 650), SECONDARY: (600, 1800), SPECIAL: (60, 250), AP: (20, 100)}
MIN_SCHOOL_SIZE = 5
INNOCENT_MARGIN = 1.2  # innocent school's expected EHE over the LA's next highest (with plants)
INNOCENT_MAX_SHARE = 0.5  # of its LA's pupils
TRUST_TEMPLATE_MIN_EHE = 6  # enough EHE exits for several templated letters
TRUST_TEMPLATE_EXCESS = 1.5
MOVES_EXCESS = (
    6.0  # planted school's Y10-11 unexplained exits over normal: about 10% of its KS4 roll
)
ADDRESS_CHANGED_SHARE = 0.7  # mid-year moves to another school with a house move
SHARE_JOINERS = 0.03
SHARE_TEMPORARY_UPN = 0.003
FAMILY_RHO = 0.85  # latent correlation of siblings' traits and exits (Gaussian copula)

ETHNICITIES = (
    "WBRI",
    "WOTH",
    "WIRT",
    "AIND",
    "APKN",
    "ABAN",
    "BAFR",
    "BCRB",
    "MWBC",
    "MWAS",
    "MOTH",
    "CHNE",
    "AOTH",
    "OOTH",
    "REFU",
)
ETHNICITY_SHARES = np.array(
    [
        0.66,
        0.07,
        0.005,
        0.035,
        0.04,
        0.015,
        0.04,
        0.012,
        0.018,
        0.012,
        0.025,
        0.005,
        0.018,
        0.02,
        0.015,
    ]
)
ETHNICITY_MISSING = 0.012

# Primary SEN type shares, in codes.SEN_NEED order:
#                 SPLD  MLD   SLD   PMLD  SEMH  SLCN  HI    VI    MSI   PD    ASD   OTH   NSA
NEED_SHARES = {
    "K_primary": (0.10, 0.16, 0.005, 0.0, 0.16, 0.30, 0.015, 0.008, 0.002, 0.02, 0.08, 0.04, 0.11),
    "K_secondary": (0.17, 0.14, 0.005, 0.0, 0.28, 0.10, 0.02, 0.01, 0.002, 0.02, 0.10, 0.05, 0.10),
    "E_mainstream": (0.03, 0.07, 0.04, 0.01, 0.15, 0.20, 0.02, 0.01, 0.005, 0.04, 0.36, 0.065, 0.0),
    "E_special": (0.01, 0.12, 0.20, 0.07, 0.12, 0.08, 0.02, 0.01, 0.01, 0.04, 0.30, 0.02, 0.0),
    "ap": (0.04, 0.06, 0.0, 0.0, 0.70, 0.07, 0.0, 0.0, 0.0, 0.0, 0.08, 0.05, 0.0),
}

NATURAL_REASONS = {
    "SCHOOL_PLACE": 0.02,
    "PREFERENCE_NOT_MET": 0.02,
    "DISSATISFIED_SEND": 0.03,
    "DISSATISFIED_BULLYING": 0.03,
    "DISSATISFIED_GENERAL": 0.07,
    "HEALTH_PHYSICAL": 0.03,
    "HEALTH_MENTAL": 0.14,
    "LIFESTYLE": 0.09,
    "PHILOSOPHICAL": 0.14,
    "RELIGIOUS": 0.02,
    "PERM_EXCLUSION": 0.002,
    "RISK_OF_EXCLUSION": 0.01,
    "SCHOOL_PRESSURE": 0.008,
    "OTHER": 0.03,
    "NONE_GIVEN": 0.20,
    "UNKNOWN": 0.22,
}
OFFROLL_REASONS = {
    "SCHOOL_PRESSURE": 0.30,
    "RISK_OF_EXCLUSION": 0.25,
    "UNKNOWN": 0.25,
    "NONE_GIVEN": 0.10,
    "HEALTH_MENTAL": 0.06,
    "DISSATISFIED_SEND": 0.04,
}
TRUST_REASONS = {
    "SCHOOL_PRESSURE": 0.20,
    "UNKNOWN": 0.30,
    "NONE_GIVEN": 0.20,
    "DISSATISFIED_GENERAL": 0.10,
    "HEALTH_MENTAL": 0.10,
    "RISK_OF_EXCLUSION": 0.10,
}

GROUNDS = {
    "EHE": "9(1)(f)",
    "SCHOOL": "9(1)(a)",
    "SPECIAL": "9(1)(a)",
    "AP": "9(1)(a)",
    "INDEPENDENT": "9(1)(a)",
    "MOVED_AWAY": "9(1)(g)",
    "EMIGRATED": "9(1)(g)",
    "CME": "9(1)(i)",
    "PERM_EXCLUSION": "9(1)(o)",
    "CUSTODY": "9(1)(j)",
    "DECEASED": "9(1)(k)",
    "END_OF_EDUCATION": "9(1)(l)",
    "DUAL_ENDED": "9(1)(c)",
}
UNEXPLAINED = ("EHE", "CME", "AP", "INDEPENDENT", "OTHER")
# Destinations a family takes together: siblings' draws are correlated and share a date.
FAMILY_DESTINATIONS = ("EHE", "EMIGRATED", "MOVED_AWAY", "SCHOOL", "INDEPENDENT", "CME")
INDIVIDUAL_DESTINATIONS = (
    "SPECIAL",
    "AP",
    "PERM_EXCLUSION",
    "CUSTODY",
    "DECEASED",
    "END_OF_EDUCATION",
    "OTHER",
    "DUAL_ENDED",
)
MOVE_DESTINATIONS = ("SCHOOL", "SPECIAL", "AP")

UPN_ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ"
SPARE_ESTABLISHMENT = 6000  # UPN prefixes of closed schools, used when a serial range is full

STREAMS = (
    "schools",
    "families",
    "traits",
    "dual",
    "exits",
    "innocent",
    "plants",
    "details",
    "joiners",
    "ids",
    "letters",
)

# --------------------------------------------------------------------------- names

_NAMES = phrases("school_names")
NAME_WORDS = _NAMES["name_words"]
NAME_PREFIXES = _NAMES["name_prefixes"]
NAME_SUFFIXES = {
    (PRIMARY, False): (
        "Primary School",
        "Community Primary School",
        "Infant and Junior School",
        "Junior School",
        "Primary School",
        "C of E Primary School",
    ),
    (PRIMARY, True): ("Primary Academy", "Academy", "Primary School"),
    (SECONDARY, False): ("High School", "School", "Community College", "Secondary School"),
    (SECONDARY, True): ("Academy", "High School", "College", "School"),
    (SPECIAL, False): ("School", "Special School", "Specialist College"),
    (SPECIAL, True): ("Academy", "School", "Specialist Academy"),
    (AP, False): ("Pupil Referral Unit", "Learning Centre", "Education Centre"),
    (AP, True): ("Alternative Provision Academy", "Learning Centre", "Academy"),
}
TRUST_WORDS = _NAMES["trust_words"]
TRUST_REGIONS = _NAMES["trust_regions"]
TRUST_KINDS = _NAMES["trust_kinds"]
ACADEMY_SHARE = {PRIMARY: 0.42, SECONDARY: 0.80, SPECIAL: 0.45, AP: 0.5}
FREE_SHARE_OF_ACADEMIES = 0.08
MAT_SHARE_OF_ACADEMIES = 0.55
TRUST_SIZES = np.arange(2, 11)
TRUST_SIZE_WEIGHTS = np.array([0.30, 0.22, 0.15, 0.10, 0.08, 0.06, 0.04, 0.03, 0.02])


# =========================================================================== data holders


URN_BASE = 100_000  # URN of school index 0; with at most 100,000 schools every URN has 6 digits


@dataclass
class Schools:
    """One entry per school (index = URN - URN_BASE); strings for the few text columns."""

    la: np.ndarray  # LA index
    la_codes: np.ndarray  # 3-digit code per LA index
    phase: np.ndarray
    raw_size: np.ndarray
    size: np.ndarray  # single/main-registered pupils at the start of the window
    sixth_form: np.ndarray
    dis_mean: np.ndarray
    k_mult: np.ndarray
    e_mult: np.ndarray
    social_mult: np.ndarray
    effect: np.ndarray  # EHE odds multiplier exp(N(0, sd))
    estab: np.ndarray
    kind: list[str]
    trust: list[str | None]
    name: list[str]

    @property
    def count(self) -> int:
        return len(self.phase)

    @staticmethod
    def urn_text(index: int) -> str:
        return str(URN_BASE + int(index))

    @staticmethod
    def urn_texts(indices: np.ndarray) -> pl.Series:
        """`urn_text` of every index, as a column."""
        return pl.Series(URN_BASE + indices.astype(np.int64)).cast(pl.String)


@dataclass
class Plan:
    """The planted schools, as school indices (all empty for a null dataset)."""

    innocent: np.ndarray
    offroll_ehe: np.ndarray
    offroll_moves: np.ndarray
    special_no_consent: np.ndarray
    trust_pair: np.ndarray

    @classmethod
    def empty(cls) -> Plan:
        nothing = np.zeros(0, dtype=np.int64)
        return cls(nothing, nothing, nothing, nothing, nothing)

    def all(self) -> np.ndarray:
        return np.concatenate(
            [
                self.innocent,
                self.offroll_ehe,
                self.offroll_moves,
                self.special_no_consent,
                self.trust_pair,
            ]
        )


@dataclass
class Pupils:
    """One entry per roll row (pupil x school); `home` points at the pupil's first row."""

    school: np.ndarray
    year: np.ndarray
    family: np.ndarray
    dis: np.ndarray
    sen: np.ndarray  # 0 N, 1 K, 2 E
    social: np.ndarray  # 0 none, 1 CIN, 2 CPP, 3 CLA
    need: np.ndarray  # index into codes.SEN_NEED, -1 none
    fsm: np.ndarray
    sex: np.ndarray  # 0 F, 1 M
    ethnicity: np.ndarray  # index into ETHNICITIES, -1 missing
    attendance: np.ndarray  # nan = missing
    suspensions: np.ndarray
    status: np.ndarray  # C, M, S
    start: np.ndarray  # school-day index of on_roll_from; 0 = on roll before the window
    home: np.ndarray
    upn_school: np.ndarray  # school whose establishment number the UPN carries

    def __len__(self) -> int:
        return len(self.school)

    def take(self, rows: np.ndarray) -> Pupils:
        return Pupils(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def concat(self, other: Pupils) -> Pupils:
        return Pupils(
            **{
                f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                for f in fields(self)
            }
        )


# =========================================================================== public API


def generate_dataset(
    out: Path,
    *,
    seed: int = 1,
    schools: int = 40,
    pupils: int = 15000,
    letters: bool = True,
    null: bool = False,
    heterogeneity_sd: float = 0.25,
    offroll_factor: float = 3.0,
    ehe_rate_factor: float = 1.0,
    hard_letters: bool = False,
) -> dict:
    """Write a synthetic LA's dataset into `out` and return its truth (also truth.json).

    `pupils` is the number of pupils on roll at the start of the window; the
    roll also gains dual-registration rows at AP and rows at the schools that
    in-LA movers join. `null=True` plants nothing: only the between-school
    heterogeneity (`heterogeneity_sd` on the log-odds) remains. `ehe_rate_factor` scales
    the LA's EHE rate from the national ~0.75% a year (0.5-3 makes a quiet or a busy LA, as
    trusts in different areas see); at 1 the files are exactly those of earlier versions.
    `hard_letters` adds the harder letters of synthetic/hard_letters.py (scans, long
    additions, family ids left out, a UPN form, a public letter used at one school, and the
    published samples in known_templates/); without it the files are unchanged.
    """
    out = Path(out)
    check_arguments(seed, schools, pupils, heterogeneity_sd, offroll_factor)
    check_rate_factor(ehe_rate_factor)
    prepare_output_folder(out)
    arguments = {
        "seed": seed,
        "schools": schools,
        "pupils": pupils,
        "letters": letters,
        "null": null,
        "heterogeneity_sd": heterogeneity_sd,
        "offroll_factor": offroll_factor,
    }
    if ehe_rate_factor != 1.0:  # recorded only when used: default files stay byte-identical
        arguments["ehe_rate_factor"] = ehe_rate_factor
    if hard_letters:  # recorded only when used, likewise
        arguments["hard_letters"] = True
    rate = EHE_TARGET_RATE * ehe_rate_factor
    world = simulate(seed, schools, pupils, null, heterogeneity_sd, offroll_factor, rate)
    ids = pupil_ids(world.roll, world.table, stream(seed, "ids"))
    exit_frame = exits_frame(world, ids)
    pupil_frame = pupils_frame(world, ids)
    school_frame = schools_frame(world.table)
    letter_truth = None
    if letters:
        exit_frame, letter_truth = write_letter_files(
            out, exit_frame, school_frame, world.plan, stream(seed, "letters"), hard_letters
        )
    if hard_letters and letter_truth is not None:
        exit_frame, pupil_frame = hide_family_ids(exit_frame, pupil_frame, letter_truth)
    pupil_frame.write_csv(out / "pupils.csv")
    exit_frame.drop(PRIVATE_EXIT_COLUMNS).write_csv(out / "exits.csv")
    school_frame.write_csv(out / "schools.csv")
    truth = build_truth(arguments, world, exit_frame, pupil_frame, letter_truth)
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def check_arguments(
    seed: int, schools: int, pupils: int, heterogeneity_sd: float, factor: float
) -> None:
    """Refuse sizes the generator cannot make into a plausible LA."""
    if seed < 0:
        raise UsageError("--seed: give a whole number, zero or more")
    if schools < 10:
        raise UsageError("--schools: a synthetic LA needs at least 10 schools")
    if pupils < 100 * schools:
        raise UsageError("--pupils: give at least 100 pupils per school")
    if pupils > 2000 * schools:
        raise UsageError("--pupils: at most 2,000 pupils per school on average")
    if schools > 100_000:
        raise UsageError("--schools: at most 100,000 schools")
    if heterogeneity_sd < 0:
        raise UsageError("heterogeneity_sd must be zero or positive")
    if factor < 1:
        raise UsageError("offroll_factor must be at least 1")


def check_rate_factor(factor: float) -> None:
    """The LA's EHE rate as a multiple of the national one: a plausible range only."""
    if not 0.1 <= factor <= 5:
        raise UsageError("--ehe-rate-factor: give a multiple of the national rate from 0.1 to 5")


def prepare_output_folder(out: Path) -> None:
    """Create `out`; overwrite only an earlier synthetic dataset, never other data."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder")
    if out.exists() and any(out.iterdir()):
        if not (out / "truth.json").is_file():
            raise UsageError(
                f"{out} is not empty and holds no synthetic dataset (truth.json); "
                "choose an empty or new folder"
            )
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        for folder in ("letters", KNOWN_TEMPLATES_FOLDER):
            if (out / folder).is_dir():
                shutil.rmtree(out / folder)
    out.mkdir(parents=True, exist_ok=True)


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per stage, so one stage's draws never shift another's."""
    return np.random.default_rng([seed, STREAMS.index(name)])


def school_days() -> np.ndarray:
    """Weekdays of the window outside the holidays (datetime64[D])."""
    days = np.arange(np.datetime64(WINDOW_START), np.datetime64(WINDOW_END) + 1)
    closed = [np.arange(np.datetime64(a), np.datetime64(b) + 1) for a, b in HOLIDAYS]
    return days[np.is_busday(days) & ~np.isin(days, np.concatenate(closed))]


@dataclass
class World:
    """Everything drawn for one dataset, before it is written out."""

    table: Schools
    plan: Plan
    roll: Pupils  # single/main rows and dual subsidiary rows
    joined: Pupils  # rows at the schools in-LA movers joined
    days: np.ndarray
    eta: np.ndarray  # intake log-odds of EHE per roll row
    intercept: float
    dest: np.ndarray  # destination code per roll row, -1 stayed
    exits: Exits
    planted: dict
    redraws: int


def simulate(
    seed: int,
    schools: int,
    pupils: int,
    null: bool,
    sd: float,
    factor: float,
    rate: float = EHE_TARGET_RATE,
) -> World:
    """Draw schools, pupils, natural exits, then the planted patterns; `rate` is the LA's
    annual EHE rate."""
    days = school_days()
    table, plan = build_schools(schools, pupils, null, sd, factor, stream(seed, "schools"), rate)
    roll = draw_pupils(table, len(days), seed)
    eta, p_ehe, intercept = fit_ehe_model(roll, table, len(days), rate)
    draws = ExitDraws(roll, table, p_ehe, len(days), stream(seed, "exits"))
    dest = draws.natural()
    plant = np.zeros(len(roll), dtype=np.int8)
    planted = plant_patterns(roll, table, plan, dest, plant, draws, factor, stream(seed, "plants"))
    redraws = ensure_innocent_highest(plan, table, draws, dest, stream(seed, "innocent"))
    exits = build_exits(roll, table, dest, plant, days, stream(seed, "details"))
    joined = joined_rows(roll, exits, len(days), stream(seed, "joiners"))
    return World(table, plan, roll, joined, days, eta, intercept, dest, exits, planted, redraws)


# =========================================================================== schools


def build_schools(
    n: int,
    pupils: int,
    null: bool,
    sd: float,
    factor: float,
    rng: np.random.Generator,
    rate: float = EHE_TARGET_RATE,
) -> tuple[Schools, Plan]:
    """Phases, sizes, mixes, planted roles, types, trusts and names of every school."""
    la, la_codes = local_authorities(n, rng)
    phase = assign_phases(la, rng)
    raw_size = draw_raw_sizes(phase, rng)
    sixth_form = (phase == SECONDARY) & (rng.random(n) < 0.5)
    dis_mean, k_mult, e_mult, social_mult = draw_school_mix(phase, rng)
    effect = np.exp(rng.normal(0.0, sd, n)) if sd > 0 else np.ones(n)
    plan = Plan.empty() if null else choose_planted(la, phase, raw_size, rng)
    table = Schools(
        la=la,
        la_codes=la_codes,
        phase=phase,
        raw_size=raw_size,
        size=np.zeros(n, dtype=np.int64),
        sixth_form=sixth_form,
        dis_mean=dis_mean,
        k_mult=k_mult,
        e_mult=e_mult,
        social_mult=social_mult,
        effect=effect,
        estab=establishment_numbers(la, phase),
        kind=[],
        trust=[],
        name=[],
    )
    if not null:
        make_innocent(table, plan, factor, pupils, rate)
    table.size = scale_sizes(table.raw_size, pupils)
    table.kind, table.trust = types_and_trusts(la, phase, plan.trust_pair, rng)
    table.name = school_names(la, phase, table.kind, rng)
    return table, plan


def local_authorities(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One LA below 1,000 schools; otherwise LAs of about 150 schools, distinct 3-digit codes."""
    n_las = 1 if n < SINGLE_LA_BELOW else round(n / SCHOOLS_PER_LA)
    la = np.repeat(np.arange(n_las), np.diff(np.linspace(0, n, n_las + 1).round().astype(int)))
    codes_pool = np.arange(201, 1000)
    return la, np.sort(rng.choice(codes_pool, n_las, replace=False))


def phase_counts(n: int) -> np.ndarray:
    """~70% primary, ~20% secondary, ~5% special, ~5% AP (at least 3, 1 and 1)."""
    special = max(1, round(0.05 * n))
    ap = max(1, round(0.05 * n))
    secondary = max(3, round(0.20 * n))
    return np.array([n - special - ap - secondary, secondary, special, ap])


def assign_phases(la: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each LA gets its own phase mix, shuffled so URNs do not follow phase."""
    sizes = np.bincount(la)
    phase = np.concatenate([np.repeat(np.arange(4), phase_counts(k)) for k in sizes])
    order = np.lexsort((rng.random(len(la)), la))
    shuffled = np.empty_like(phase)
    shuffled[order] = phase
    return shuffled.astype(np.int8)


def draw_raw_sizes(phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unscaled roll sizes within each phase's range (skewed towards the small end)."""
    low = np.array([SIZE_RANGE[p][0] for p in range(4)])[phase]
    high = np.array([SIZE_RANGE[p][1] for p in range(4)])[phase]
    return low + (high - low) * rng.beta(1.7, 2.2, len(phase))


def draw_school_mix(phase: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """School means of disadvantage and multipliers of SEN and social-care rates."""
    n = len(phase)
    dis_mean = np.select(
        [phase == SPECIAL, phase == AP], [rng.beta(4, 5, n), rng.beta(6, 4, n)], rng.beta(2, 6.6, n)
    )
    dis_mean = np.clip(dis_mean, 0.03, 0.8)
    k_mult = np.exp(rng.normal(0, 0.25, n))
    e_mult = np.exp(rng.normal(0, 0.25, n))
    social_mult = np.exp(rng.normal(0, 0.3, n))
    return dis_mean, k_mult, e_mult, social_mult


def choose_planted(
    la: np.ndarray, phase: np.ndarray, raw: np.ndarray, rng: np.random.Generator
) -> Plan:
    """Per LA: the innocent giant, off-rollers among the larger secondaries, a mover, a special.

    The trust-template pair (two academies of one trust) is planted once, in the first LA.
    """
    innocent, offrollers, movers, specials = [], [], [], []
    for a in range(la.max() + 1):
        in_la = np.flatnonzero(la == a)
        secondaries = in_la[phase[in_la] == SECONDARY]
        secondaries = secondaries[np.argsort(-raw[secondaries], kind="stable")]
        innocent.append(secondaries[0])
        rest = secondaries[1:]
        k = min(max(1, round(len(in_la) / SCHOOLS_PER_OFFROLLER)), len(rest) - 1)
        larger = rest[: max(k, (len(rest) + 1) // 2)]
        chosen = rng.choice(larger, k, replace=False)
        offrollers.extend(chosen.tolist())
        movers.append(rng.choice(rest[~np.isin(rest, chosen)]))
        special = in_la[phase[in_la] == SPECIAL]
        specials.append(special[np.argmax(raw[special])])
    taken = np.array(innocent + offrollers + movers)
    first_la = np.flatnonzero((la == 0) & ~np.isin(np.arange(len(la)), taken))
    pool = first_la[phase[first_la] == SECONDARY]
    if len(pool) < 2:
        pool = first_la[phase[first_la] == PRIMARY]
    pair = np.sort(rng.choice(pool, 2, replace=False))
    as_array = lambda values: np.sort(np.array(values, dtype=np.int64))  # noqa: E731
    return Plan(
        as_array(innocent),
        as_array(offrollers),
        as_array(movers),
        as_array(specials),
        pair.astype(np.int64),
    )


def make_innocent(
    table: Schools, plan: Plan, factor: float, pupils: int, rate: float = EHE_TARGET_RATE
) -> None:
    """Make each LA's innocent school deprived, needy and big enough to top the raw EHE count.

    Planted schools get no random effect, so truth's excess is exact. The
    innocent school's size is solved for from approximate expected counts
    (odds implied by each school's intake, scaled to the 0.75% rate): it must
    expect INNOCENT_MARGIN times, plus two Poisson SDs, the EHE count of any
    other school in its LA, planted excess and floors included.
    """
    table.effect[plan.all()] = 1.0
    i = plan.innocent
    table.dis_mean[i], table.k_mult[i], table.e_mult[i], table.social_mult[i] = 0.7, 2.0, 2.5, 2.5
    table.sixth_form[i] = False
    index = school_odds_index(table)
    for _ in range(100):
        per_raw = rate * pupils / (table.raw_size * index).sum()  # EHE / unit odds
        busiest = np.zeros(len(table.la_codes))
        np.maximum.at(
            busiest, table.la, planted_load(table.raw_size * index * per_raw, plan, factor)
        )
        top = busiest[table.la[i]]
        needed = (INNOCENT_MARGIN * top + 2 * np.sqrt(top)) / (index[i] * per_raw)
        if np.all(needed <= table.raw_size[i] * 1.001):
            break
        table.raw_size[i] = np.maximum(table.raw_size[i], needed)
    la_total = np.bincount(table.la, weights=table.raw_size)[table.la[i]]
    if np.any(needed > table.raw_size[i] * 1.001) or np.any(
        table.raw_size[i] > INNOCENT_MAX_SHARE * la_total
    ):
        raise UsageError(
            "--pupils: too few pupils per school to plant an innocent school that "
            "tops its LA's EHE count; give more pupils or use null=True"
        )


def planted_load(expected: np.ndarray, plan: Plan, factor: float) -> np.ndarray:
    """Approximate EHE count of each school once the plants are added (innocent: 0)."""
    load = expected.copy()
    load[plan.offroll_ehe] *= factor
    load[plan.trust_pair] = np.maximum(
        TRUST_TEMPLATE_MIN_EHE, TRUST_TEMPLATE_EXCESS * expected[plan.trust_pair]
    )
    load[plan.special_no_consent] += 4
    load[plan.innocent] = 0.0
    return load


def school_odds_index(table: Schools) -> np.ndarray:
    """Each school's mean EHE odds multiplier implied by its year and case mix (for sizing)."""
    years = year_weights(table.phase, table.sixth_form) @ YEAR_ODDS
    mix = [
        casemix_odds(
            table.phase, np.full(table.count, d), table.k_mult, table.e_mult, table.social_mult
        )
        for d in (0.0, 1.0)
    ]
    d = table.dis_mean
    return years * ((1 - d) * mix[0] + d * DISADVANTAGED_ODDS * mix[1]) * table.effect


def casemix_odds(phase, dis, k_mult, e_mult, social_mult) -> np.ndarray:
    """Mean SEN x social-care odds multiplier given disadvantage (SEN, care independent)."""
    p_k, p_e = sen_probabilities(phase, dis, k_mult, e_mult)
    care = social_probabilities(phase, dis, social_mult)
    sen = 1 + p_k * (SEN_ODDS[1] - 1) + p_e * (SEN_ODDS[2] - 1)
    social = 1 + sum(p * (SOCIAL_ODDS[j + 1] - 1) for j, p in enumerate(care))
    return sen * social


def scale_sizes(raw: np.ndarray, total: int) -> np.ndarray:
    """Integer sizes proportional to `raw`, each at least MIN_SCHOOL_SIZE, summing to `total`."""
    spare = total - MIN_SCHOOL_SIZE * len(raw)
    exact = raw / raw.sum() * spare
    size = np.floor(exact).astype(np.int64)
    remainder = spare - size.sum()
    size[np.argsort(-(exact - size), kind="stable")[:remainder]] += 1
    return size + MIN_SCHOOL_SIZE


def establishment_numbers(la: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """4-digit DfE establishment numbers, unique within an LA (ranges by phase)."""
    base = np.array([2000, 4000, 7000, 1100])[phase]
    order = np.lexsort((np.arange(len(la)), phase, la))
    rank = np.empty(len(la), dtype=np.int64)
    rank[order] = position_in_run(changes(la[order] * 4 + phase[order]))
    return base + rank


def types_and_trusts(
    la: np.ndarray, phase: np.ndarray, pair: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], list[str | None]]:
    """Maintained, academy or free; about half of academies grouped into trusts of 2-10."""
    n = len(la)
    academy = rng.random(n) < np.array([ACADEMY_SHARE[p] for p in range(4)])[phase]
    academy[pair] = True
    free = academy & (rng.random(n) < FREE_SHARE_OF_ACADEMIES)
    free[pair] = False
    in_mat = academy & (rng.random(n) < MAT_SHARE_OF_ACADEMIES)
    in_mat[pair] = True
    kind = np.where(free, "free", np.where(academy, "academy", "maintained")).tolist()
    trust_of = np.full(n, -1)
    next_trust = 0
    for a in range(la.max() + 1):
        members = np.flatnonzero(in_mat & (la == a))
        members = members[rng.permutation(len(members))]
        members = np.concatenate([pair[np.isin(pair, members)], members[~np.isin(members, pair)]])
        next_trust = _group_into_trusts(members, trust_of, next_trust, rng)
    names = trust_names(next_trust, rng)
    trust = [names[t] if t >= 0 else None for t in trust_of.tolist()]
    return kind, trust


def _group_into_trusts(
    members: np.ndarray, trust_of: np.ndarray, first: int, rng: np.random.Generator
) -> int:
    """Cut an LA's MAT academies into consecutive trusts of 2-10; returns the next trust id."""
    t, start = first, 0
    while len(members) - start >= 2:
        size = int(rng.choice(TRUST_SIZES, p=TRUST_SIZE_WEIGHTS / TRUST_SIZE_WEIGHTS.sum()))
        size = min(size, len(members) - start)
        if len(members) - start - size == 1:
            size += 1
        trust_of[members[start : start + size]] = t
        start += size
        t += 1
    return t


def trust_names(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct plausible trust names ("Northern Star Academy Trust")."""
    combos = [f"{r}{w} {k}" for r in TRUST_REGIONS for w in TRUST_WORDS for k in TRUST_KINDS]
    order = rng.permutation(len(combos))
    return [
        combos[order[i % len(combos)]] + ("" if i < len(combos) else f" {i // len(combos) + 1}")
        for i in range(count)
    ]


def school_names(
    la: np.ndarray, phase: np.ndarray, kind: list[str], rng: np.random.Generator
) -> list[str]:
    """Names unique within an LA: a distinct place word per school plus a phase suffix."""
    plain = list(NAME_WORDS)
    prefixed = [f"{p} {w}" for p in NAME_PREFIXES for w in NAME_WORDS if not w.startswith("St ")]
    names = [""] * len(la)
    academy = np.array([k != "maintained" for k in kind])
    for a in range(la.max() + 1):
        members = np.flatnonzero(la == a)
        words = [plain[i] for i in rng.permutation(len(plain))]
        if len(members) > len(words):
            words += [prefixed[i] for i in rng.permutation(len(prefixed))]
        if len(members) > len(words):
            words += [f"{w} {j}" for j in range(2, len(members) // len(words) + 3) for w in words]
        picks = rng.random(len(members))
        for word, school, pick in zip(words, members.tolist(), picks.tolist(), strict=False):
            suffixes = NAME_SUFFIXES[(int(phase[school]), bool(academy[school]))]
            names[school] = f"{word} {suffixes[int(pick * len(suffixes))]}"
    return names


# =========================================================================== pupils


def year_weights(phase: np.ndarray, sixth_form: np.ndarray) -> np.ndarray:
    """Share of each school's roll in each year group R..14 (rows sum to 1)."""
    w = np.zeros((len(phase), N_YEARS))
    w[phase == PRIMARY, 0:7] = 1.0
    w[phase == SECONDARY, 7:12] = 1.0
    w[(phase == SECONDARY) & sixth_form, 12:14] = [0.65, 0.55]
    w[phase == SPECIAL, 1:12] = 1.0
    w[phase == SPECIAL, 12:15] = 0.6
    w[phase == AP, 7:12] = [0.4, 0.6, 0.9, 1.2, 1.2]
    return w / w.sum(axis=1, keepdims=True)


def draw_pupils(table: Schools, n_days: int, seed: int) -> Pupils:
    """Every roll row: year groups, families, characteristics, joiners and dual registrations."""
    rng = stream(seed, "families")
    school, year, rank = pupil_years(table, rng)
    family, upn_school = assign_families(table, school, year, rank, rng)
    roll = draw_traits(table, school, year, family, upn_school, stream(seed, "traits"))
    roll.start[:] = draw_joiners(len(roll), n_days, rng)
    return add_dual_registrations(roll, table, stream(seed, "dual"))


def pupil_years(table: Schools, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """School, year group and position within (school, year) of every pupil."""
    counts = rng.multinomial(table.size, year_weights(table.phase, table.sixth_form)).ravel()
    school = np.repeat(np.repeat(np.arange(table.count, dtype=np.int32), N_YEARS), counts)
    year = np.repeat(np.tile(np.arange(N_YEARS, dtype=np.int8), table.count), counts)
    starts = np.cumsum(counts) - counts
    rank = np.arange(counts.sum(), dtype=np.int64) - np.repeat(starts, counts)
    return school, year, rank


def feeder_primaries(table: Schools, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Pair each primary with a secondary of its LA; returns feeders grouped by secondary."""
    secondary_of = np.full(table.count, -1)
    for a in range(len(table.la_codes)):
        primaries = np.flatnonzero((table.la == a) & (table.phase == PRIMARY))
        secondaries = np.flatnonzero((table.la == a) & (table.phase == SECONDARY))
        primaries = primaries[rng.permutation(len(primaries))]
        secondary_of[primaries] = secondaries[np.arange(len(primaries)) % len(secondaries)]
    primaries = np.flatnonzero(secondary_of >= 0)
    feeders = primaries[np.argsort(secondary_of[primaries], kind="stable")]
    count = np.bincount(secondary_of[primaries], minlength=table.count)
    return feeders, np.cumsum(count) - count, count


def assign_families(
    table: Schools, school: np.ndarray, year: np.ndarray, rank: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sibling groups of 1-4 children in different years, at one school or a primary-secondary pair.

    Pupils are laid on chains: a primary's chain r holds its r-th pupil of each
    year, continued into Years 7-13 by pupils of its paired secondary. A chain
    is cut at random into families of at most four; about 40% of pupils are
    only children. Also returns the school whose establishment number each
    pupil's UPN carries (secondary pupils got theirs at primary school).
    """
    return chain_families(table, school, year, rank, feeder_primaries(table, rng), rng)


def chain_families(
    table: Schools,
    school: np.ndarray,
    year: np.ndarray,
    rank: np.ndarray,
    feeding: tuple[np.ndarray, ...],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """`assign_families` given the primaries `feeding` each secondary (feeder_primaries), so a
    generator that moves Year 6 pupils on to the paired secondary can reuse the pairing."""
    n = len(school)
    feeders, feeder_start, feeder_count = feeding
    phase = table.phase[school]
    chain_school, chain_rank = school.astype(np.int64), rank.copy()
    k = feeder_count[school]
    fed = (phase == SECONDARY) & (k > 0)
    chain_school[fed] = feeders[feeder_start[school[fed]] + rank[fed] % k[fed]]
    chain_rank[fed] = rank[fed] // k[fed]
    single = (phase >= SPECIAL) | (rng.random(n) < 0.4)
    chained = np.flatnonzero(~single)
    order = chained[np.lexsort((year[chained], chain_rank[chained], chain_school[chained]))]
    new_chain = changes(chain_school[order]) | changes(chain_rank[order])
    position = position_in_run(new_chain | (rng.random(len(order)) < 0.55))
    family = np.empty(n, dtype=np.int64)
    family[order] = np.cumsum(position % 4 == 0) - 1
    n_chained = int((position % 4 == 0).sum())
    singles = np.flatnonzero(single)
    family[singles] = n_chained + np.arange(len(singles))
    return family, chain_school


def correlated_uniform(family: np.ndarray, rng: np.random.Generator, rho: float) -> np.ndarray:
    """Uniform(0, 1) per pupil whose siblings' values are correlated (Gaussian copula)."""
    shared = rng.standard_normal(int(family.max()) + 1)[family]
    return ndtr(rho * shared + np.sqrt(1 - rho**2) * rng.standard_normal(len(family)))


def sen_probabilities(phase, dis, k_mult, e_mult) -> tuple[np.ndarray, np.ndarray]:
    """P(SEN support), P(EHC plan): ~13% and ~4% overall, more with disadvantage."""
    p_e = np.select(
        [phase == SPECIAL, phase == AP], [0.98, 0.10 * e_mult], e_mult * (0.017 + 0.025 * dis)
    )
    p_k = np.select([phase == SPECIAL, phase == AP], [0.02, 0.40], k_mult * (0.105 + 0.09 * dis))
    p_e = np.clip(p_e, 0, 0.98)
    return np.clip(p_k, 0, 1 - p_e), p_e


def social_probabilities(phase, dis, social_mult) -> tuple[np.ndarray, ...]:
    """P(CIN), P(CPP), P(CLA): ~3%, ~1%, ~0.7%; CLA only among disadvantaged pupils."""
    mult = social_mult * np.select([phase == SPECIAL, phase == AP], [1.8, 3.0], 1.0)
    p_cin = np.minimum(mult * (0.010 + 0.055 * dis), 0.3)
    p_cpp = np.minimum(mult * (0.0025 + 0.02 * dis), 0.15)
    p_cla = np.minimum(mult * 0.022 * dis, 0.15)
    return p_cin, p_cpp, p_cla


def draw_traits(
    table: Schools,
    school: np.ndarray,
    year: np.ndarray,
    family: np.ndarray,
    upn_school: np.ndarray,
    rng: np.random.Generator,
) -> Pupils:
    """Correlated characteristics: disadvantage drives SEN, social care, attendance, suspensions."""
    n = len(school)
    phase = table.phase[school]
    dis = correlated_uniform(family, rng, 0.8) < table.dis_mean[school]
    p_k, p_e = sen_probabilities(phase, dis, table.k_mult[school], table.e_mult[school])
    u = rng.random(n)
    sen = np.where(u < p_e, 2, np.where(u < p_e + p_k, 1, 0)).astype(np.int8)
    p_cin, p_cpp, p_cla = social_probabilities(phase, dis, table.social_mult[school])
    u = correlated_uniform(family, rng, 0.8)
    social = np.select([u < p_cla, u < p_cla + p_cpp, u < p_cla + p_cpp + p_cin], [3, 2, 1], 0)
    social = social.astype(np.int8)
    need = draw_needs(phase, year, sen, rng)
    fsm = dis & (rng.random(n) < 0.8)
    p_male = np.select([phase == SPECIAL, phase == AP], [0.7, 0.74], 0.5 + 0.16 * (sen > 0))
    sex = (rng.random(n) < p_male).astype(np.int8)
    eth = np.searchsorted(np.cumsum(ETHNICITY_SHARES / ETHNICITY_SHARES.sum()), rng.random(n))
    eth = np.where(rng.random(n) < ETHNICITY_MISSING, -1, np.minimum(eth, len(ETHNICITIES) - 1))
    attendance = draw_attendance(phase, year, dis, sen, social, rng)
    suspensions = draw_suspensions(phase, year, dis, sen, social, need, rng)
    return Pupils(
        school=school.astype(np.int32),
        year=year,
        family=family.astype(np.int32),
        dis=dis,
        sen=sen,
        social=social,
        need=need,
        fsm=fsm,
        sex=sex,
        ethnicity=eth.astype(np.int8),
        attendance=attendance,
        suspensions=suspensions,
        status=np.full(n, C, dtype=np.int8),
        start=np.zeros(n, dtype=np.int16),
        home=np.arange(n, dtype=np.int64),
        upn_school=upn_school.astype(np.int32),
    )


def draw_needs(
    phase: np.ndarray, year: np.ndarray, sen: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Primary SEN type for K/E pupils (SEMH more common in secondary; NSA only with K)."""
    need = np.full(len(sen), -1, dtype=np.int8)
    groups = {
        "K_primary": (sen == 1) & (year <= 6) & (phase != AP),
        "K_secondary": (sen == 1) & (year >= 7) & (phase != AP),
        "E_mainstream": (sen == 2) & (phase <= SECONDARY),
        "E_special": (sen == 2) & (phase == SPECIAL),
        "ap": (sen > 0) & (phase == AP),
    }
    u = rng.random(len(sen))
    for group, mask in groups.items():
        shares = np.array(NEED_SHARES[group])
        cdf = np.cumsum(shares / shares.sum())
        need[mask] = np.minimum(np.searchsorted(cdf, u[mask], side="right"), len(cdf) - 1)
    return need


def draw_attendance(phase, year, dis, sen, social, rng: np.random.Generator) -> np.ndarray:
    """Last term's attendance: beta around 0.93, lower for vulnerable pupils, a few below 0.5.

    Missing for Reception pupils, who had no term before.
    """
    n = len(phase)
    mean = (
        0.948
        - 0.025 * dis
        - 0.02 * (sen == 1)
        - 0.03 * (sen == 2)
        - 0.04 * (social > 0)
        - np.select([phase == AP, phase == SPECIAL], [0.2, 0.03], 0.0)
    )
    concentration = 30.0
    rate = rng.beta(mean * concentration, (1 - mean) * concentration)
    severe = rng.random(n) < 0.008 + 0.02 * dis + 0.03 * (social > 0) + 0.2 * (phase == AP)
    rate = np.where(severe, rng.beta(5, 4, n), rate)
    rate = np.round(rate, 3).astype(np.float64)
    return np.where(year == 0, np.nan, rate)


def draw_suspensions(phase, year, dis, sen, social, need, rng: np.random.Generator) -> np.ndarray:
    """Suspensions in the past 12 months: Poisson, mostly secondary, higher for SEMH/vulnerable."""
    base = np.array([0.01, 0.05, 0.06, 0.5])[phase] * np.where(year >= 7, 1.0, 0.5)
    lam = base * np.exp(0.9 * (need == SEMH) + 0.4 * (sen > 0) + 0.5 * dis + 0.6 * (social > 0))
    return rng.poisson(lam).astype(np.int16)


def draw_joiners(n: int, n_days: int, rng: np.random.Generator) -> np.ndarray:
    """School-day index at which the ~3% of pupils who arrive mid-year join (0 = before)."""
    joins = rng.random(n) < SHARE_JOINERS
    return np.where(joins, rng.integers(1, n_days - 10, n), 0).astype(np.int16)


def add_dual_registrations(roll: Pupils, table: Schools, rng: np.random.Generator) -> Pupils:
    """Half of each AP's roll: secondary pupils also on their home school's roll (M there, S here).

    Pupils are picked in each LA with weights favouring SEMH, suspensions and
    vulnerability; the S rows copy the home row.
    """
    ap_schools = np.flatnonzero(table.phase == AP)
    seats = table.size[ap_schools]
    candidates = np.flatnonzero(
        (table.phase[roll.school] == SECONDARY)
        & (roll.year >= 7)
        & (roll.year <= 11)
        & (roll.start == 0)
    )
    weight = (
        1.0
        + 3.0 * (roll.need[candidates] == SEMH)
        + roll.suspensions[candidates]
        + roll.dis[candidates]
        + (roll.social[candidates] > 0)
    )
    la_of = table.la[roll.school[candidates]]
    wanted = np.bincount(table.la[ap_schools], weights=seats, minlength=len(table.la_codes))
    chosen = weighted_top_k(la_of, weight, wanted.astype(np.int64), rng)
    home = candidates[chosen]
    home = home[np.lexsort((rng.random(len(home)), table.la[roll.school[home]]))]
    home_la = table.la[roll.school[home]]
    by_la = np.argsort(table.la[ap_schools], kind="stable")
    slot_school = np.repeat(ap_schools[by_la], seats[by_la])
    slot_start = np.cumsum(wanted) - wanted
    position = position_in_run(changes(home_la))
    dual = roll.take(home)
    dual.school = slot_school[slot_start[home_la].astype(np.int64) + position].astype(np.int32)
    dual.status[:] = S
    roll.status[home] = M
    return roll.concat(dual)


def weighted_top_k(
    group: np.ndarray, weight: np.ndarray, k: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Mask of k[g] rows drawn per group g without replacement, with probability ~ weight."""
    if len(group) == 0:
        return np.zeros(0, dtype=bool)
    key = np.log(rng.random(len(group))) / np.maximum(weight, 1e-9)
    order = np.lexsort((-key, group))
    g = group[order]
    chosen = np.zeros(len(group), dtype=bool)
    chosen[order] = position_in_run(changes(g)) < k[g]
    return chosen


def changes(sorted_keys: np.ndarray) -> np.ndarray:
    """True where a key differs from the one before: the starts of runs of equal keys."""
    return np.r_[True, sorted_keys[1:] != sorted_keys[:-1]][: len(sorted_keys)]


def position_in_run(starts: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... along each run of rows; a run begins where `starts` is true (and at row 0)."""
    index = np.arange(len(starts))
    return index - np.maximum.accumulate(np.where(starts, index, 0))


# =========================================================================== exits


def ehe_log_odds(roll: Pupils) -> np.ndarray:
    """Log-odds of an EHE exit from intake alone (no intercept, no school effect)."""
    return (
        np.log(YEAR_ODDS)[roll.year]
        + np.log(SEN_ODDS)[roll.sen]
        + np.log(DISADVANTAGED_ODDS) * roll.dis
        + np.log(SOCIAL_ODDS)[roll.social]
    )


def exposure(roll: Pupils, n_days: int) -> np.ndarray:
    """Share of the window a row is on roll (joiners part; dual subsidiary rows excluded)."""
    on_roll = (n_days - roll.start.astype(np.float64)) / n_days
    return np.where(roll.status == S, 0.0, on_roll)


def fit_ehe_model(
    roll: Pupils, table: Schools, n_days: int, rate: float = EHE_TARGET_RATE
) -> tuple[np.ndarray, np.ndarray, float]:
    """Intake log-odds, each row's EHE probability, and the intercept giving the LA's rate
    (0.75% a year unless `rate` says otherwise)."""
    eta = ehe_log_odds(roll)
    with_effect = eta + np.log(table.effect)[roll.school]
    weight = exposure(roll, n_days)
    intercept = calibrate_intercept(with_effect, weight, rate)
    p_ehe = np.where(roll.status == S, 0.0, expit(intercept + with_effect))
    return eta, p_ehe, intercept


def calibrate_intercept(eta: np.ndarray, weight: np.ndarray, target: float) -> float:
    """Newton's method for b with sum(w * expit(b + eta)) = target * sum(w)."""
    total = target * weight.sum()
    b = float(np.log(target / (1 - target)) - np.average(eta, weights=weight))
    for _ in range(50):
        p = expit(b + eta)
        gap = float((weight * p).sum() - total)
        step = gap / float((weight * p * (1 - p)).sum())
        b -= step
        if abs(step) < 1e-10:
            break
    return b


def destination_rates(
    roll: Pupils, table: Schools, p_ehe: np.ndarray, n_days: int
) -> dict[str, np.ndarray]:
    """Annual probability of each destination for each row (EHE from the model).

    About 7-8% of pupils leave a school in a year: mid-year moves ~3%, moves
    away ~1.5%, EHE 0.75%, the rest rare. Dual subsidiary rows can only end.
    """
    phase = table.phase[roll.school]
    year = roll.year.astype(np.int64)
    dis = roll.dis.astype(np.float64)
    sen_k, sen_e = roll.sen == 1, roll.sen == 2
    care, semh = roll.social > 0, roll.need == SEMH
    susp = roll.suspensions.astype(np.float64)
    secondary, primary, special, ap = (
        phase == SECONDARY,
        phase == PRIMARY,
        phase == SPECIAL,
        phase == AP,
    )
    school_move_year = np.select([year == 6, year == 11, year >= 12], [0.6, 0.35, 0.0], 1.0)
    rates = {
        "EHE": p_ehe,
        "EMIGRATED": np.full(len(year), 0.005),
        "MOVED_AWAY": 0.014 * (1 + 0.3 * dis) * np.where(year >= 11, 0.6, 1.0),
        "SCHOOL": np.select([special, ap], [0.3 * 0.032, 0.15], 0.032 * (1 + 0.4 * dis))
        * school_move_year,
        "INDEPENDENT": np.where(ap, 0.0, 0.003 * (1 - 0.7 * dis)),
        "CME": 0.002 * (1 + 1.5 * dis) * (1 + 2 * care) * np.where(ap, 3.0, 1.0),
        "SPECIAL": np.select([special, ap], [0.02, 0.02], 0.0008 + 0.004 * sen_k + 0.02 * sen_e),
        "AP": np.select(
            [secondary, primary, special], [0.0015 * (1 + susp) * (1 + semh), 0.0002, 0.003], 0.0
        )
        * (roll.status != M),
        "PERM_EXCLUSION": np.select(
            [secondary, primary, ap], [0.0007 * (1 + susp) * (1 + 1.5 * semh), 0.0001, 0.01], 0.0005
        ),
        "CUSTODY": np.where(year >= 9, 0.0001 * (1 + susp) * np.where(ap, 5.0, 1.0), 0.0),
        "DECEASED": np.full(len(year), 0.00004),
        "END_OF_EDUCATION": np.select([year == 12, year == 13, year == 14], [0.04, 0.03, 0.15], 0),
        "OTHER": np.full(len(year), 0.002),
    }
    share = exposure(roll, n_days)
    rates = {name: rate * share for name, rate in rates.items()}
    rates["DUAL_ENDED"] = np.where(roll.status == S, 0.35, 0.0)
    return rates


def pick_interval(u: np.ndarray, rates: list[np.ndarray], labels: list[int]) -> np.ndarray:
    """Destination whose slice of [0, 1) holds u; -1 when u is past them all."""
    dest = np.full(len(u), -1, dtype=np.int8)
    lower = np.zeros(len(u))
    for label, rate in zip(labels, rates, strict=True):
        upper = lower + rate
        dest[(u >= lower) & (u < upper)] = label
        lower = upper
    return dest


class ExitDraws:
    """Natural exits of every row, drawn so that each row's EHE chance is exactly the model's.

    Family destinations use a uniform correlated between siblings (they leave
    together); the others an independent one, conditional on no family exit.
    """

    def __init__(
        self, roll: Pupils, table: Schools, p_ehe: np.ndarray, n_days: int, rng: np.random.Generator
    ) -> None:
        self.roll, self.table, self.p_ehe, self.n_days, self.rng = roll, table, p_ehe, n_days, rng
        self.family_normal = rng.standard_normal(int(roll.family.max()) + 1)

    def natural(self) -> np.ndarray:
        return self.draw(np.arange(len(self.roll)), self.rng)

    def rates(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return destination_rates(self.roll.take(rows), self.table, self.p_ehe[rows], self.n_days)

    def draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Destination code of each of `rows` (-1: stays)."""
        return pick_destinations(self.rates(rows), self.family_normal[self.roll.family[rows]], rng)


def pick_destinations(
    rates: dict[str, np.ndarray], shared: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Destination code of each row from its rates (-1: stays); `shared` is the row's family's
    standard normal, so siblings tend to take a family destination together.

    Each row's chance of each destination is exactly its rate: family destinations use the
    correlated uniform, the others an independent one, conditional on no family exit.
    """
    own = rng.standard_normal(len(shared))
    u = ndtr(FAMILY_RHO * shared + np.sqrt(1 - FAMILY_RHO**2) * own)
    dest = pick_interval(
        u, [rates[d] for d in FAMILY_DESTINATIONS], [DEST[d] for d in FAMILY_DESTINATIONS]
    )
    stay = np.flatnonzero(dest < 0)
    left = 1.0 - sum(rates[d][stay] for d in FAMILY_DESTINATIONS)
    dest[stay] = pick_interval(
        rng.random(len(stay)),
        [rates[d][stay] / left for d in INDIVIDUAL_DESTINATIONS],
        [DEST[d] for d in INDIVIDUAL_DESTINATIONS],
    )
    return dest


def plant_patterns(
    roll: Pupils,
    table: Schools,
    plan: Plan,
    dest: np.ndarray,
    plant: np.ndarray,
    draws: ExitDraws,
    factor: float,
    rng: np.random.Generator,
) -> dict:
    """Add the planted exits to `dest`/`plant` in place; return what was planted, per school."""
    n_schools = table.count
    at_risk = draws.p_ehe * exposure(roll, draws.n_days)
    expected = np.bincount(roll.school, weights=at_risk, minlength=n_schools)
    natural = ehe_counts(roll, dest, n_schools)
    free = (dest < 0) & (roll.status == C) & (roll.start == 0)
    vulnerable = (roll.sen > 0) | roll.dis | (roll.social > 0)
    # 1. off-rolling into EHE: vulnerable Y9-11 pupils, until the school has lost `factor` x
    #    the intake prediction ("a school expecting 15 loses 45"), whatever its natural draw
    wanted = np.zeros(n_schools, dtype=np.int64)
    target = np.round(factor * expected[plan.offroll_ehe]).astype(np.int64)
    wanted[plan.offroll_ehe] = np.maximum(target - natural[plan.offroll_ehe], 0)
    rows = np.flatnonzero(
        free
        & np.isin(roll.school, plan.offroll_ehe)
        & vulnerable
        & (roll.year >= 9)
        & (roll.year <= 11)
    )
    weight = (
        1.0
        + (roll.sen[rows] > 0)
        + 0.5 * (roll.sen[rows] == 2)
        + roll.dis[rows]
        + (roll.social[rows] > 0)
        + (roll.need[rows] == SEMH)
        + (roll.suspensions[rows] > 0)
    ) * np.where(roll.year[rows] >= 10, 1.5, 1.0)
    _mark(rows, weight, wanted, roll, dest, plant, DEST["EHE"], OFFROLL_EHE, rng)
    # 2. off-rolling into other schools: Y10-11 moves without a house move
    unexplained = _expected_unexplained(roll, draws, plan.offroll_moves)
    wanted = np.zeros(n_schools, dtype=np.int64)
    wanted[plan.offroll_moves] = np.round((MOVES_EXCESS - 1) * unexplained).astype(np.int64)
    rows = np.flatnonzero(
        free & np.isin(roll.school, plan.offroll_moves) & (roll.year >= 10) & (roll.year <= 11)
    )
    weight = 1.0 + vulnerable[rows] + (roll.suspensions[rows] > 0)
    _mark(rows, weight, wanted, roll, dest, plant, DEST["SCHOOL"], OFFROLL_MOVES, rng)
    # 3. EHE deletions of LA-placed pupils at a special school without the LA's consent
    wanted = np.zeros(n_schools, dtype=np.int64)
    wanted[plan.special_no_consent] = rng.integers(2, 5, len(plan.special_no_consent))
    rows = np.flatnonzero(free & np.isin(roll.school, plan.special_no_consent))
    _mark(rows, np.ones(len(rows)), wanted, roll, dest, plant, DEST["EHE"], SPECIAL_NO_CONSENT, rng)
    # 4. the trust sharing a template: a modest excess, and enough letters to see it
    wanted = np.zeros(n_schools, dtype=np.int64)
    target = np.maximum(
        TRUST_TEMPLATE_MIN_EHE, np.round(TRUST_TEMPLATE_EXCESS * expected[plan.trust_pair])
    )
    wanted[plan.trust_pair] = np.maximum(0, target - natural[plan.trust_pair]).astype(np.int64)
    rows = np.flatnonzero(free & np.isin(roll.school, plan.trust_pair))
    weight = 1.0 + vulnerable[rows] + (roll.year[rows] >= 8)
    _mark(rows, weight, wanted, roll, dest, plant, DEST["EHE"], TRUST_TEMPLATE, rng)
    return {"expected_ehe": expected, "natural_ehe": natural, "unexplained_y10_11": unexplained}


def _mark(
    rows: np.ndarray,
    weight: np.ndarray,
    wanted: np.ndarray,
    roll: Pupils,
    dest: np.ndarray,
    plant: np.ndarray,
    destination: int,
    kind: int,
    rng: np.random.Generator,
) -> None:
    """Turn `wanted[school]` of each school's `rows` (drawn by weight) into planted exits."""
    chosen = rows[weighted_top_k(roll.school[rows].astype(np.int64), weight, wanted, rng)]
    dest[chosen] = destination
    plant[chosen] = kind


def _expected_unexplained(roll: Pupils, draws: ExitDraws, schools: np.ndarray) -> np.ndarray:
    """Expected Y10-11 unexplained exits at each of `schools` under the natural rates.

    Unexplained as the contract's defaults: EHE, CME, AP, independent, other,
    and moves to another school without a house move.
    """
    rows = np.flatnonzero(np.isin(roll.school, schools) & (roll.year >= 10) & (roll.year <= 11))
    rates = draws.rates(rows)
    per_row = sum(rates[d] for d in UNEXPLAINED) + (1 - ADDRESS_CHANGED_SHARE) * rates["SCHOOL"]
    totals = np.bincount(roll.school[rows], weights=per_row, minlength=draws.table.count)
    return totals[schools]


def ehe_counts(roll: Pupils, dest: np.ndarray, n_schools: int) -> np.ndarray:
    """EHE exits per school."""
    return np.bincount(roll.school[dest == DEST["EHE"]], minlength=n_schools)


def ensure_innocent_highest(
    plan: Plan,
    table: Schools,
    draws: ExitDraws,
    dest: np.ndarray,
    rng: np.random.Generator,
    max_tries: int = 1000,
) -> int:
    """Redraw an innocent school's exits until its raw EHE count tops its LA (returns redraws).

    Its size already makes it expect INNOCENT_MARGIN times anyone else's count
    (make_innocent), so this only trims chance; every other school's exits stay as drawn.
    """
    if len(plan.innocent) == 0:
        return 0
    roll = draws.roll
    rows_of = np.flatnonzero(np.isin(roll.school, plan.innocent))
    for attempt in range(max_tries):
        counts = ehe_counts(roll, dest, table.count)
        others = counts.copy()
        others[plan.innocent] = -1
        la_max = np.full(len(table.la_codes), -1)
        np.maximum.at(la_max, table.la, others)
        failing = plan.innocent[counts[plan.innocent] <= la_max[table.la[plan.innocent]]]
        if len(failing) == 0:
            return attempt
        rows = rows_of[np.isin(roll.school[rows_of], failing)]
        dest[rows] = draws.draw(rows, rng)
    raise RuntimeError("could not make the innocent school's EHE count the highest in its LA")


# =========================================================================== exit details


@dataclass
class Exits:
    """One entry per exit; `row` indexes the roll, `day` the school days."""

    row: np.ndarray
    dest: np.ndarray
    plant: np.ndarray
    day: np.ndarray
    destination_school: np.ndarray  # -1 none
    address_changed: np.ndarray  # -1 blank, 0 false, 1 true
    la_placed: np.ndarray
    la_consent: np.ndarray
    notified_delay: np.ndarray  # days; -1 blank
    reason: np.ndarray  # index into codes.REASONS; -1 blank
    returned_delay: np.ndarray  # days; -1 blank
    suspension_gap: np.ndarray  # days before exit; -1 blank
    ground: np.ndarray  # index into ground texts; -1 blank
    ground_style: np.ndarray  # 0 tidy, 1-4 messy spellings
    family_given: np.ndarray


def build_exits(
    roll: Pupils,
    table: Schools,
    dest: np.ndarray,
    plant: np.ndarray,
    days: np.ndarray,
    rng: np.random.Generator,
) -> Exits:
    """Dates, destination schools and every optional column of each exit."""
    rows = np.flatnonzero(dest >= 0)
    d, kind = dest[rows], plant[rows]
    day = exit_days(roll, rows, d, kind, days, rng)
    return exit_details(roll, table, rows, d, kind, day, rng)


def exit_details(
    roll: Pupils,
    table: Schools,
    rows: np.ndarray,
    d: np.ndarray,
    kind: np.ndarray,
    day: np.ndarray,
    rng: np.random.Generator,
) -> Exits:
    """Every optional column of the exits of `rows` (destinations `d`, planted `kind`), once
    their school-day indices `day` are drawn; shared with the multi-term generator."""
    special = table.phase[roll.school[rows]] == SPECIAL
    ehe = d == DEST["EHE"]
    school_move = d == DEST["SCHOOL"]
    address = np.select(
        [
            school_move & (kind == OFFROLL_MOVES),
            school_move,
            np.isin(d, [DEST["MOVED_AWAY"], DEST["EMIGRATED"]]),
        ],
        [0, rng.random(len(rows)) < ADDRESS_CHANGED_SHARE, 1],
        -1,
    )
    placed = np.where(
        special, np.where(kind == SPECIAL_NO_CONSENT, 1, rng.random(len(rows)) < 0.92), -1
    )
    consent = np.select(
        [
            kind == SPECIAL_NO_CONSENT,
            (placed == 1) & ehe,
            (placed == 1) & (rng.random(len(rows)) < 0.9),
        ],
        [np.where(rng.random(len(rows)) < 0.5, 0, -1), 1, 1],
        -1,
    )
    suspension_gap = suspension_gaps(roll, rows, kind, rng)
    return Exits(
        row=rows,
        dest=d,
        plant=kind,
        day=day,
        destination_school=destination_schools(roll, table, rows, d, kind, rng),
        address_changed=address.astype(np.int8),
        la_placed=placed.astype(np.int8),
        la_consent=consent.astype(np.int8),
        notified_delay=notification_delays(len(rows), rng),
        reason=ehe_reasons(d, kind, rng),
        returned_delay=return_delays(ehe, kind, rng),
        suspension_gap=suspension_gap,
        ground=ground_codes(d, rng),
        ground_style=np.where(rng.random(len(rows)) < 0.1, rng.integers(1, 5, len(rows)), 0),
        family_given=ehe | (rng.random(len(rows)) < 0.85),
    )


def day_profile(days: np.ndarray, name: str) -> np.ndarray:
    """Cumulative distribution of an exit's date over the school days, by kind of exit."""
    month = days.astype("datetime64[M]").astype(int) % 12 + 1
    if name in PLANT_PERIODS:
        first, last = (np.datetime64(d) for d in PLANT_PERIODS[name])
        weight = ((days >= first) & (days <= last)).astype(np.float64)
    elif name == "ehe":
        by_month = {
            9: 0.8,
            10: 1.2,
            11: 1.2,
            12: 1.1,
            1: 1.1,
            2: 1.0,
            3: 1.0,
            4: 0.9,
            5: 0.9,
            6: 0.8,
            7: 0.7,
        }
        weight = np.vectorize(by_month.get)(month).astype(np.float64)
    elif name == "late":
        weight = np.where(np.isin(month, [9, 10, 11, 12]), 0.5, np.where(month <= 3, 1.0, 1.5))
    else:
        weight = np.ones(len(days))
    cdf = np.cumsum(weight)
    return cdf / cdf[-1]


def exit_days(
    roll: Pupils,
    rows: np.ndarray,
    dest: np.ndarray,
    kind: np.ndarray,
    days: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """School-day index of each exit; siblings leaving together mostly share a date."""
    n = len(rows)
    u = rng.random(n)
    together = np.isin(dest, [DEST[d] for d in FAMILY_DESTINATIONS]) & (kind == NO_PLANT)
    together &= rng.random(n) < 0.85
    family_day = rng.random(int(roll.family.max()) + 1)
    u = np.where(together, family_day[roll.family[rows]], u)
    profile = np.select(
        [
            kind == OFFROLL_EHE,
            kind == OFFROLL_MOVES,
            kind == TRUST_TEMPLATE,
            dest == DEST["EHE"],
            dest == DEST["END_OF_EDUCATION"],
        ],
        [1, 2, 3, 4, 5],
        0,
    )
    names = ("uniform", "pre_census", "autumn", "trust", "ehe", "late")
    day = np.zeros(n, dtype=np.int64)
    for index, name in enumerate(names):
        mask = profile == index
        if mask.any():  # the planted periods are empty outside 2024-25, where none are drawn
            day[mask] = np.searchsorted(day_profile(days, name), u[mask], side="right")
    start = roll.start[rows].astype(np.int64)
    late_start = start > 0
    day[late_start] = start[late_start] + (u[late_start] * (len(days) - start[late_start]))
    return np.minimum(day, len(days) - 1)


def destination_schools(
    roll: Pupils,
    table: Schools,
    rows: np.ndarray,
    dest: np.ndarray,
    kind: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A school of the right phase in the same LA for moves to a school, special school or AP.

    About 6% of natural moves leave it unrecorded.
    """
    own = roll.school[rows].astype(np.int64)
    year = roll.year[rows]
    target = np.select(
        [dest == DEST["SPECIAL"], dest == DEST["AP"], year <= 6], [SPECIAL, AP, PRIMARY], SECONDARY
    )
    moving = np.isin(dest, [DEST[d] for d in MOVE_DESTINATIONS])
    key_of_school = table.la.astype(np.int64) * 4 + table.phase
    order = np.argsort(key_of_school, kind="stable")
    count = np.bincount(key_of_school, minlength=len(table.la_codes) * 4)
    first = np.cumsum(count) - count
    key = table.la[own].astype(np.int64) * 4 + target
    n_options = count[key]
    pick = (rng.random(len(rows)) * n_options).astype(np.int64)
    chosen = order[first[key] + np.minimum(pick, np.maximum(n_options - 1, 0))]
    clash = chosen == own
    shifted = order[first[key] + (pick + 1) % np.maximum(n_options, 1)]
    chosen = np.where(clash, shifted, chosen)
    usable = moving & (n_options > 0) & (chosen != own)
    usable &= (kind == OFFROLL_MOVES) | (rng.random(len(rows)) >= 0.06)
    return np.where(usable, chosen, -1)


def notification_delays(n: int, rng: np.random.Generator) -> np.ndarray:
    """Days from deletion to the LA's notification: mostly 0-3, some late, a few never."""
    delay = rng.choice([0, 1, 2, 3], n, p=[0.5, 0.25, 0.15, 0.10])
    late = rng.random(n) < 0.07
    delay = np.where(late, rng.integers(4, 31, n), delay)
    return np.where(rng.random(n) < 0.02, -1, delay)


def ehe_reasons(dest: np.ndarray, kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Parents' reasons for EHE exits, per domain-facts (planted exits: school pressure)."""
    reason = np.full(len(dest), -1, dtype=np.int64)
    for shares, mask in (
        (NATURAL_REASONS, (dest == DEST["EHE"]) & (kind == NO_PLANT)),
        (NATURAL_REASONS, kind == SPECIAL_NO_CONSENT),
        (OFFROLL_REASONS, kind == OFFROLL_EHE),
        (TRUST_REASONS, kind == TRUST_TEMPLATE),
    ):
        labels = np.array([codes.REASONS.index(r) for r in shares])
        p = np.array(list(shares.values()))
        reason[mask] = rng.choice(labels, int(mask.sum()), p=p / p.sum())
    return reason


def return_delays(ehe: np.ndarray, kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Days until ~10% of EHE pupils re-register at a school (blank if after the window)."""
    share = np.where(kind == OFFROLL_EHE, 0.18, 0.13)
    returns = ehe & (rng.random(len(ehe)) < share)
    return np.where(returns, rng.integers(14, 181, len(ehe)), -1)


def suspension_gaps(
    roll: Pupils, rows: np.ndarray, kind: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Days from the last suspension to the exit; many planted EHE exits follow one closely.

    A planted pupil given a fresh suspension has it added to pupils.csv too.
    """
    n = len(rows)
    fresh = (kind == OFFROLL_EHE) & (rng.random(n) < 0.45)
    roll.suspensions[rows[fresh]] = np.maximum(roll.suspensions[rows[fresh]], 1)
    suspended = roll.suspensions[rows] > 0
    gap = np.where(fresh, rng.integers(1, 11, n), rng.integers(3, 151, n))
    return np.where(suspended, gap, -1)


def ground_codes(dest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index into ground_texts(): the 2024 ground, a few old 2006 EHE codes, 3% blank."""
    texts = ground_texts()
    index = np.array([texts.index(GROUNDS[d]) if d in GROUNDS else -1 for d in codes.DESTINATIONS])
    ground = index[dest]
    u = rng.random(len(dest))
    ground = np.where((dest == DEST["EHE"]) & (u < 0.04), texts.index("8(1)(d)"), ground)
    ground = np.where((dest == DEST["CME"]) & (u < 0.3), texts.index("9(1)(h)"), ground)
    return np.where(rng.random(len(dest)) < 0.03, -1, ground)


def ground_texts() -> list[str]:
    return sorted({*GROUNDS.values(), "8(1)(d)", "9(1)(h)"})


# =========================================================================== rows of joiners


def joined_rows(roll: Pupils, exits: Exits, n_days: int, rng: np.random.Generator) -> Pupils:
    """Rows at the schools in-LA movers join, on roll from a few school days after leaving."""
    moved = (exits.destination_school >= 0) & (roll.status[exits.row] != S)
    start = exits.day + rng.integers(1, 9, len(exits.row))
    keep = moved & (start < n_days)
    rows = roll.take(exits.row[keep])
    rows.school = exits.destination_school[keep].astype(np.int32)
    rows.status[:] = C
    rows.start = start[keep].astype(np.int16)
    return rows


# =========================================================================== identifiers


def weighted_digits(value: np.ndarray, width: int, first_position: int) -> np.ndarray:
    """Sum of each digit of a zero-padded number times its UPN position."""
    total = np.zeros(len(value), dtype=np.int64)
    for i in range(width):
        digit = (value // 10 ** (width - 1 - i)) % 10
        total += digit * (first_position + i)
    return total


def pupil_ids(roll: Pupils, table: Schools, rng: np.random.Generator) -> pl.Series:
    """A valid, unique UPN per pupil (per base row; other rows reuse their home row's).

    Check letter, LA code, establishment number of the school that allocated
    it, two digits of the year allocated, a 3-digit serial (or, for ~0.3%
    temporary UPNs, two digits and a letter).
    """
    base = np.flatnonzero(roll.home == np.arange(len(roll.home)))
    n = len(base)
    school = roll.upn_school[base].astype(np.int64)
    year = roll.year[base].astype(np.int64)
    late = np.where(rng.random(n) < 0.15, rng.integers(1, 4, n), 0)
    yy = (24 - year + np.minimum(late, year)) % 100
    temporary = rng.random(n) < SHARE_TEMPORARY_UPN
    capacity = np.where(temporary, 100 * len(UPN_ALPHABET), 1000)
    frame = pl.DataFrame({"s": school, "yy": yy, "t": temporary})
    serial = frame.select(pl.int_range(pl.len()).over(["s", "yy", "t"])).to_series().to_numpy()
    chunk = serial // capacity
    serial = serial % capacity
    la = table.la[school]
    estab = table.estab[school].copy()
    estab[chunk > 0] = spare_establishments(la, school, yy, temporary, chunk)
    total = (
        weighted_digits(table.la_codes[la], 3, 2)
        + weighted_digits(estab, 4, 5)
        + weighted_digits(yy, 2, 9)
        + np.where(
            temporary,
            weighted_digits(serial // 23, 2, 11) + 13 * (serial % 23),
            weighted_digits(serial, 3, 11),
        )
    )
    letters = pl.Series(list(UPN_ALPHABET))
    digits = lambda v, w: pl.Series(v).cast(pl.String).str.zfill(w)  # noqa: E731
    tail = pl.select(
        pl.when(pl.Series(temporary))
        .then(pl.concat_str([digits(serial // 23, 2), letters.gather(serial % 23)]))
        .otherwise(digits(serial, 3))
    ).to_series()
    return pl.select(
        pl.concat_str(
            [
                letters.gather(total % 23),
                digits(table.la_codes[la], 3),
                digits(estab, 4),
                digits(yy, 2),
                tail,
            ]
        )
    ).to_series()


def spare_establishments(la, school, yy, temporary, chunk) -> np.ndarray:
    """Distinct unused establishment numbers for serial ranges that overflowed (closed schools)."""
    over = chunk > 0
    frame = pl.DataFrame(
        {"la": la[over], "s": school[over], "yy": yy[over], "t": temporary[over], "c": chunk[over]}
    )
    key = pl.struct(["s", "yy", "t", "c"]).rank("dense").over("la") - 1
    rank = frame.select(key).to_series().to_numpy()
    if len(rank) and rank.max() >= 1000:
        raise UsageError("--pupils: too many pupils per school to number with UPNs")
    return SPARE_ESTABLISHMENT + rank


# =========================================================================== frames


def enum_column(labels: tuple[str, ...] | list[str], index: np.ndarray) -> pl.Series:
    """Code labels from integer codes; negative codes become blanks."""
    values = pl.Series(list(labels)).gather(np.maximum(index, 0))
    return pl.select(pl.when(pl.Series(index) >= 0).then(values)).to_series()


def tri_state(values: np.ndarray) -> pl.Series:
    """-1 blank, 0 false, 1 true."""
    return pl.select(pl.when(pl.Series(values) >= 0).then(pl.Series(values) == 1)).to_series()


def date_column(
    days: np.ndarray, index: np.ndarray, offset: np.ndarray | None = None
) -> np.ndarray:
    """datetime64 dates of school-day indices (plus calendar-day offsets); -1 -> missing."""
    dates = days[np.maximum(index, 0)]
    if offset is not None:
        dates = dates + np.maximum(offset, 0).astype("timedelta64[D]")
        index = np.where(offset < 0, -1, index)
    return np.where(index >= 0, dates, np.datetime64("NaT"))


def family_ids(family: np.ndarray) -> pl.Series:
    return pl.select(
        pl.format("F{}", pl.Series(family + 1).cast(pl.String).str.zfill(8))
    ).to_series()


def exits_frame(world: World, ids: pl.Series) -> pl.DataFrame:
    """exits.csv in the contract's column order, sorted by school, date and pupil.

    PRIVATE_EXIT_COLUMNS follow, dropped before writing: `_kind` (the planted
    pattern, 0 none) for truth and `_year_group` for the letters.
    """
    return exit_table(world.exits, world.roll, world.days, ids, WINDOW_END)


def exit_table(
    exits: Exits, roll: Pupils, days: np.ndarray, ids: pl.Series, last_day: date
) -> pl.DataFrame:
    """`exits_frame` of any exits: `exits.row` indexes `roll`, `exits.day` the school `days`;
    a return to school after `last_day` is not yet known, so it is left blank."""
    rows = exits.row
    exit_date = date_column(days, exits.day)
    returned = date_column(days, exits.day, exits.returned_delay)
    returned = np.where(returned <= np.datetime64(last_day), returned, np.datetime64("NaT"))
    gap = np.maximum(exits.suspension_gap, 0).astype("timedelta64[D]")
    suspension = np.where(exits.suspension_gap >= 0, exit_date - gap, np.datetime64("NaT"))
    family = family_ids(roll.family[rows].astype(np.int64))
    destination_urn = Schools.urn_texts(exits.destination_school)
    frame = pl.DataFrame(
        {
            "pupil_id": ids.gather(roll.home[rows]),
            "urn": Schools.urn_texts(roll.school[rows]),
            "exit_date": exit_date,
            "destination": enum_column(codes.DESTINATIONS, exits.dest.astype(np.int64)),
            "ground": messy_grounds(enum_column(ground_texts(), exits.ground), exits.ground_style),
            "destination_urn": keep_where(exits.destination_school >= 0, destination_urn),
            "address_changed": tri_state(exits.address_changed),
            "la_placed": tri_state(exits.la_placed),
            "la_consent": tri_state(exits.la_consent),
            "la_notified_date": date_column(days, exits.day, exits.notified_delay),
            "reason": enum_column(codes.REASONS, exits.reason),
            "returned_date": returned,
            "last_suspension_date": suspension,
            "letter_id": pl.Series([None] * len(rows), dtype=pl.String),
            "family_id": keep_where(exits.family_given, family),
            "_kind": exits.plant,
            "_year_group": enum_column(YEAR_LABELS, roll.year[rows].astype(np.int64)),
        }
    )
    return frame.sort(["urn", "exit_date", "pupil_id"], maintain_order=True)


def messy_grounds(ground: pl.Series, style: np.ndarray) -> pl.Series:
    """Grounds as schools type them: `9 (1)(f)`, `9(1) (f)`, `9 (1) (f)`, `9(1)(F)`."""
    style_ = pl.Series(style)
    spaced = ground.str.replace(r"^(\d)\(", "$1 (")
    return pl.select(
        pl.when(style_ == 1)
        .then(spaced)
        .when(style_ == 2)
        .then(ground.str.replace(r"\)\(", ") ("))
        .when(style_ == 3)
        .then(spaced.str.replace(r"\)\(", ") ("))
        .when(style_ == 4)
        .then(ground.str.to_uppercase())
        .otherwise(ground)
    ).to_series()


def keep_where(mask: np.ndarray, values: pl.Series) -> pl.Series:
    """`values` where mask is true, blank elsewhere."""
    return pl.select(pl.when(pl.Series(mask)).then(values)).to_series()


def pupils_frame(world: World, ids: pl.Series) -> pl.DataFrame:
    """pupils.csv in the contract's column order, grouped by school.

    URNs all have 6 digits, so ordering by school index is ordering by URN text.
    """
    rows = world.roll.concat(world.joined)
    left = np.full(len(rows), -1, dtype=np.int64)
    left[world.exits.row] = world.exits.day
    by_school = np.argsort(rows.school, kind="stable")
    rows, left = rows.take(by_school), left[by_school]
    on_roll_from = date_column(world.days, np.where(rows.start > 0, rows.start, -1))
    return roll_table(rows, ids, on_roll_from, date_column(world.days, left))


def roll_table(
    rows: Pupils, ids: pl.Series, on_roll_from: np.ndarray, on_roll_to: np.ndarray
) -> pl.DataFrame:
    """pupils.csv's columns for `rows` (`home` indexes `ids`), with their on-roll dates."""
    return pl.DataFrame(
        {
            "pupil_id": ids.gather(rows.home),
            "urn": Schools.urn_texts(rows.school),
            "year_group": enum_column(YEAR_LABELS, rows.year.astype(np.int64)),
            "sen_provision": enum_column(codes.SEN_PROVISION, rows.sen.astype(np.int64)),
            "disadvantaged": rows.dis,
            "social_care": enum_column(codes.SOCIAL_CARE, rows.social.astype(np.int64)),
            "sen_need": enum_column(codes.SEN_NEED, rows.need.astype(np.int64)),
            "fsm": rows.fsm,
            "sex": enum_column(("F", "M"), rows.sex.astype(np.int64)),
            "ethnicity": enum_column(ETHNICITIES, rows.ethnicity.astype(np.int64)),
            "attendance": pl.Series(rows.attendance).fill_nan(None),
            "suspensions": rows.suspensions.astype(np.int64),
            "family_id": family_ids(rows.family.astype(np.int64)),
            "enrolment_status": enum_column(codes.ENROLMENT_STATUS, rows.status.astype(np.int64)),
            "on_roll_from": on_roll_from,
            "on_roll_to": on_roll_to,
        }
    )


def schools_frame(table: Schools) -> pl.DataFrame:
    """schools.csv: urn, name, la_code, phase, type, trust."""
    return pl.DataFrame(
        {
            "urn": Schools.urn_texts(np.arange(table.count)),
            "name": table.name,
            "la_code": pl.Series(table.la_codes[table.la]).cast(pl.String),
            "phase": enum_column(PHASE_NAMES, table.phase.astype(np.int64)),
            "type": table.kind,
            "trust": pl.Series(table.trust, dtype=pl.String),
        }
    )


# =========================================================================== letters


def write_letter_files(
    out: Path,
    exits: pl.DataFrame,
    schools: pl.DataFrame,
    plan: Plan,
    rng: np.random.Generator,
    hard_letters: bool = False,
) -> tuple[pl.DataFrame, dict]:
    """Parents' letters for the EHE exits (synthetic_letters), linked back by letter_id.

    EHE exits always carry their family_id, so the exits frame alone feeds the letters.
    With `hard_letters` the hard cases go to schools where nothing is planted.
    """
    ehe = exits.filter(pl.col("destination") == "EHE").select(
        "pupil_id", "urn", "family_id", "exit_date", year_group="_year_group"
    )
    template_urns = [Schools.urn_text(i) for i in plan.offroll_ehe]
    trust_urns = [Schools.urn_text(i) for i in plan.trust_pair]
    hard = None
    if hard_letters:  # its own stream: spawning does not move `rng`
        planted = [Schools.urn_text(i) for i in plan.all()]
        hard = choose_schools(ehe, schools, planted, rng.spawn(1)[0])
    manifest, exit_letters, truth = write_letters(
        out,
        ehe,
        schools.select("urn", "name", "trust", "phase"),
        rng,
        template_urns,
        trust_urns,
        hard=hard,
    )
    hard_truth = truth.pop("hard", None)
    manifest.write_csv(out / "letters.csv")
    links = exit_letters.select("pupil_id", "urn", pl.col("letter_id").alias("_letter"))
    exits = (
        exits.join(links, on=["pupil_id", "urn"], how="left", maintain_order="left")
        .with_columns(pl.col("_letter").alias("letter_id"))
        .drop("_letter")
    )
    return exits, {
        "template_schools": template_urns,
        "trust_template_schools": trust_urns,
        "letters": truth,
        **({"hard": hard_truth} if hard_truth else {}),
    }


# =========================================================================== truth


def build_truth(
    arguments: dict, world: World, exits: pl.DataFrame, pupils: pl.DataFrame, letters: dict | None
) -> dict:
    """Everything a test needs to check an audit against: model, effects, planted schools."""
    table, roll = world.table, world.roll
    observed = ehe_counts(roll, world.dest, table.count)
    intake_p = np.where(roll.status == S, 0.0, expit(world.intercept + world.eta))
    weight = intake_p * exposure(roll, len(world.days))
    intake = np.bincount(roll.school, weights=weight, minlength=table.count)
    by_destination = exits.group_by("destination").len().sort("destination")
    truth = {
        "generator": "offroll_audit.synthetic",
        "arguments": arguments,
        "window": {
            "from": WINDOW_START.isoformat(),
            "to": WINDOW_END.isoformat(),
            "spring_census": SPRING_CENSUS.isoformat(),
        },
        "counts": {
            "schools": table.count,
            "local_authorities": len(table.la_codes),
            "pupils": int((roll.home == np.arange(len(roll))).sum()),
            "pupil_rows": pupils.height,
            "exits": exits.height,
            "ehe_exits": int(observed.sum()),
            "exits_by_destination": {str(d): int(c) for d, c in by_destination.iter_rows()},
        },
        "la_codes": [f"{c:03d}" for c in table.la_codes.tolist()],
        "ehe_model": ehe_model_truth(
            world.intercept,
            arguments["heterogeneity_sd"],
            EHE_TARGET_RATE * arguments.get("ehe_rate_factor", 1.0),
        ),
        "school_effects": {
            table.urn_text(i): round(float(v), 6) for i, v in enumerate(table.effect)
        },
        "expected_ehe": {table.urn_text(i): round(float(v), 4) for i, v in enumerate(intake)},
        "observed_ehe": {table.urn_text(i): int(v) for i, v in enumerate(observed)},
        "planted": planted_truth(world, exits, observed, intake),
    }
    if letters is not None:
        truth["letters"] = letters
    return truth


def ehe_model_truth(intercept: float, sd: float, rate: float = EHE_TARGET_RATE) -> dict:
    """The logit model that generated the natural EHE exits, as odds ratios and coefficients."""
    odds = {
        "year_group": {y: float(o) for y, o in zip(YEAR_LABELS, YEAR_ODDS, strict=True)},
        "sen_provision": {"N": 1.0, "K": float(SEN_ODDS[1]), "E": float(SEN_ODDS[2])},
        "disadvantaged": DISADVANTAGED_ODDS,
        "social_care": dict(zip(codes.SOCIAL_CARE, SOCIAL_ODDS.tolist(), strict=True)),
    }
    logs = lambda ratios: {k: round(float(np.log(v)), 6) for k, v in ratios.items()}  # noqa: E731
    coefficients = {
        "year_group": logs(odds["year_group"]),
        "sen_provision": logs(odds["sen_provision"]),
        "disadvantaged": round(float(np.log(DISADVANTAGED_ODDS)), 6),
        "social_care": logs(odds["social_care"]),
    }
    return {
        "link": "logit",
        "intercept": intercept,
        "coefficients": coefficients,
        "odds_ratios": odds,
        "target_rate": rate,
        "school_effect": "odds multiplied by exp(N(0, heterogeneity_sd)); 1 at planted schools",
        "heterogeneity_sd": sd,
        "note": "logit p = intercept + coefficients (year group, SEN, disadvantaged, social "
        "care) + log school effect; the annual probability is scaled by the share of the "
        "window on roll for pupils joining mid-year",
    }


def planted_truth(
    world: World, exits: pl.DataFrame, observed: np.ndarray, intake: np.ndarray
) -> dict:
    """Per planted school: URN, what its intake predicts, what was added, what was observed."""
    table, plan, planted = world.table, world.plan, world.planted
    urn = table.urn_text

    def la_code(i: int) -> str:
        return f"{table.la_codes[table.la[i]]:03d}"

    kinds = exits.group_by("urn", "_kind").len()
    count = {(u, k): n for u, k, n in kinds.iter_rows()}
    plants = exits.filter(pl.col("_kind") != NO_PLANT).select("urn", "_kind", "pupil_id")

    def planted_ids(school: int, kind: int) -> list[str]:
        mine = plants.filter((pl.col("urn") == urn(school)) & (pl.col("_kind") == kind))
        return mine["pupil_id"].to_list()

    offroll = [
        {
            "urn": urn(i),
            "la_code": la_code(i),
            "pupils": int(table.size[i]),
            "expected_ehe_without_plant": round(float(planted["expected_ehe"][i]), 4),
            "natural_ehe": int(planted["natural_ehe"][i]),
            "planted_ehe": count.get((urn(i), OFFROLL_EHE), 0),
            "observed_ehe": int(observed[i]),
            "planted_pupil_ids": planted_ids(i, OFFROLL_EHE),
        }
        for i in plan.offroll_ehe.tolist()
    ]
    unexplained = observed_unexplained_y10_11(world)
    moves = [
        {
            "urn": urn(i),
            "la_code": la_code(i),
            "expected_unexplained_y10_11": round(float(expected), 4),
            "planted_moves": count.get((urn(i), OFFROLL_MOVES), 0),
            "observed_unexplained_y10_11": int(unexplained[i]),
            "expected_ehe": round(float(intake[i]), 4),
            "observed_ehe": int(observed[i]),
            "planted_pupil_ids": planted_ids(i, OFFROLL_MOVES),
        }
        for i, expected in zip(
            plan.offroll_moves.tolist(), planted["unexplained_y10_11"], strict=True
        )
    ]
    special = [
        {"urn": urn(i), "la_code": la_code(i), "pupil_ids": planted_ids(i, SPECIAL_NO_CONSENT)}
        for i in plan.special_no_consent.tolist()
    ]
    innocent = []
    for i in plan.innocent.tolist():
        others = (table.la == table.la[i]) & (np.arange(table.count) != i)
        innocent.append(
            {
                "urn": urn(i),
                "la_code": la_code(i),
                "pupils": int(table.size[i]),
                "expected_ehe": round(float(intake[i]), 4),
                "observed_ehe": int(observed[i]),
                "next_highest_ehe": int(observed[others].max()),
            }
        )
    pair = plan.trust_pair.tolist()
    trust = {
        "trust": table.trust[pair[0]] if pair else None,
        "urns": [urn(i) for i in pair],
        "expected_ehe": [round(float(planted["expected_ehe"][i]), 4) for i in pair],
        "planted_ehe": [count.get((urn(i), TRUST_TEMPLATE), 0) for i in pair],
        "planted_pupil_ids": [planted_ids(i, TRUST_TEMPLATE) for i in pair],
        "observed_ehe": [int(observed[i]) for i in pair],
    }
    return {
        "offroll_ehe": offroll,
        "offroll_moves": moves,
        "special_no_consent": special,
        "innocent_high": innocent,
        "trust_template": trust,
        "innocent_redraws": world.redraws,
    }


def observed_unexplained_y10_11(world: World) -> np.ndarray:
    """Y10-11 exits per school that the contract's default rules class as unexplained."""
    exits = world.exits
    year = world.roll.year[exits.row]
    move_without_house = (exits.dest == DEST["SCHOOL"]) & (exits.address_changed != 1)
    unexplained = np.isin(exits.dest, [DEST[d] for d in UNEXPLAINED]) | move_without_house
    mask = unexplained & (year >= 10) & (year <= 11)
    return np.bincount(world.roll.school[exits.row[mask]], minlength=world.table.count)
