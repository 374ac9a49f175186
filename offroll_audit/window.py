"""The audit window: terms, school years, census days, and who is on roll in it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from offroll_audit.problems import UsageError


@dataclass(frozen=True)
class Window:
    start: date
    end: date
    source: str  # how it was chosen, for the manifest and the Method sheet
    term: str | None = None  # the term it is, when it is one (2024-AUT)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def as_dict(self) -> dict[str, str]:
        """The window as outputs record it."""
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "source": self.source}


def easter_sunday(year: int) -> date:
    """Gregorian Easter (anonymous algorithm): the spring term ends at Easter."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def term_window(term: str) -> Window:
    """`2024-AUT`, `2025-SPR`, `2025-SUM`, or a school year `2024-25` / `2024/25`.

    Terms follow the English school year: autumn 1 Sep - 31 Dec, spring
    1 Jan - Easter Sunday, summer Easter Monday - 31 Aug. LAs whose term dates
    differ pass --from/--to instead.
    """
    text = term.strip().upper()
    if match := re.fullmatch(r"(\d{4})-(AUT|SPR|SUM)", text):
        year, name = int(match[1]), match[2]
        easter = easter_sunday(year)
        start, end = {
            "AUT": (date(year, 9, 1), date(year, 12, 31)),
            "SPR": (date(year, 1, 1), easter),
            "SUM": (easter + timedelta(days=1), date(year, 8, 31)),
        }[name]
        return Window(start, end, f"term {year}-{name}", f"{year}-{name}")
    if match := re.fullmatch(r"(\d{4})[-/](\d{2})", text):
        year = int(match[1])
        if (year + 1) % 100 != int(match[2]):
            raise UsageError(f"--term {term}: a school year is written like 2024-25")
        return Window(date(year, 9, 1), date(year + 1, 8, 31), f"school year {year}-{match[2]}")
    raise UsageError(
        f"--term {term!r} is not a term: use e.g. 2024-AUT, 2025-SPR, 2025-SUM or 2024-25"
    )


def choose_window(
    exits: pl.DataFrame,
    term: str | None,
    start: date | None,
    end: date | None,
    calendar: Calendar | None = None,
) -> Window:
    """The window from --term, --from/--to, or, for termly data, the latest complete term;
    otherwise the span of the exits. On termly data a --term must be one the data hold."""
    if term and (start or end):
        raise UsageError("give either --term or --from/--to, not both")
    termly = calendar is not None and calendar.termly
    if term:
        window = term_window(term)
        if (
            termly
            and window.source.startswith("term ")
            and term.upper() not in calendar.census_terms
        ):
            raise UsageError(
                f"--term {term}: the data have no census for it; terms in the data: "
                + ", ".join(calendar.census_terms)
            )
        return window
    if termly and not (start or end):
        complete = calendar.complete_terms()
        if not complete:
            raise UsageError(
                "no term in the data is complete yet (exits do not reach its last weeks); "
                "give --term or --from/--to"
            )
        latest = complete[-1]
        chosen = term_window(latest)
        return Window(chosen.start, chosen.end, f"term {latest}, the latest complete term", latest)
    if start and end:
        if end < start:
            raise UsageError("--to is before --from")
        return Window(start, end, "given --from/--to")
    dates = exits.get_column("exit_date").drop_nulls()
    if dates.is_empty():
        raise UsageError(
            "there are no exits, so the window must be given: --term 2024-AUT or --from/--to"
        )
    return Window(start or dates.min(), end or dates.max(), "span of exits")  # type: ignore[arg-type]


def census_day(census: str) -> date:
    """Census days: autumn first Thursday of October, spring third Thursday of
    January, summer third Thursday of May."""
    year_text, term = census.upper().split("-")
    year = int(year_text)
    month, nth = {"AUT": (10, 1), "SPR": (1, 3), "SUM": (5, 3)}[term]
    first = date(year, month, 1)
    first_thursday = first + timedelta(days=(3 - first.weekday()) % 7)
    return first_thursday + timedelta(weeks=nth - 1)


def spring_census_on_or_after(dates: pl.Series) -> pl.Series:
    """The spring (January) census day on or after each date (null stays null)."""
    years = dates.dt.year().drop_nulls().unique().to_list()
    days = {y: census_day(f"{y}-SPR") for y in {*years, *(y + 1 for y in years)}}
    this_year = dates.dt.year().replace_strict(days, default=None, return_dtype=pl.Date)
    next_year = (dates.dt.year() + 1).replace_strict(days, default=None, return_dtype=pl.Date)
    return pl.select(pl.when(dates <= this_year).then(this_year).otherwise(next_year)).to_series()


def pick_census(pupils: pl.DataFrame, window: Window) -> pl.DataFrame:
    """One row per pupil per school: the latest census at or before the window's
    start, else the first census within it (data contract, pupils.csv)."""
    if pupils.get_column("census").is_null().all():
        return pupils
    days = {c: census_day(c) for c in pupils.get_column("census").drop_nulls().unique().to_list()}
    day = pl.col("census").replace_strict(days, default=None, return_dtype=pl.Date)
    keys = ["pupil_id", "urn"]
    chosen = pl.coalesce(
        day.filter(day <= window.start).max().over(keys),
        day.filter(day <= window.end).min().over(keys),
    )
    return pupils.filter(day == chosen)


# --------------------------------------------------------------------------- terms over years

TERM_NAMES = ("AUT", "SPR", "SUM")
TERM_SHAPE = re.compile(r"\d{4}-(AUT|SPR|SUM)")
TERMS_PER_YEAR = 3
# A single window at least this long is a school year (September to July is about 320 days):
# the profile's rules over the last year read its counts (select._outcome_rule).
YEAR_WINDOW_DAYS = 300


def term_index(term: str) -> int:
    """Terms in order: 3 x the school year's first calendar year + 0 (AUT), 1 (SPR), 2 (SUM).
    2024-AUT and 2025-SPR are both in school year 2024-25."""
    year_text, name = term.upper().split("-")
    position = TERM_NAMES.index(name)
    return 3 * (int(year_text) - (0 if position == 0 else 1)) + position


def term_indexes(terms: pl.Series) -> pl.Series:
    """term_index of each term in a column of well-formed terms (null stays null), in one
    vectorised pass rather than a Python call per exit."""
    position = terms.str.slice(5).replace_strict(
        {name: i for i, name in enumerate(TERM_NAMES)}, default=None, return_dtype=pl.Int64
    )
    school_year = terms.str.slice(0, 4).cast(pl.Int64) - (position > 0).cast(pl.Int64)
    return (3 * school_year + position).alias("term_index")


def term_of_day(day: date) -> str:
    """The term a date falls in (term_window's calendar)."""
    if day.month >= 9:
        return f"{day.year}-AUT"
    return f"{day.year}-{'SPR' if day <= easter_sunday(day.year) else 'SUM'}"


def school_year_of(term: str) -> str:
    start = term_index(term) // 3
    return f"{start}-{(start + 1) % 100:02d}"


# The data reach a term's end when they hold exits in its last weeks of teaching: the calendar
# window runs to 31 Dec, Easter Sunday or 31 Aug, and teaching stops a week or more before.
COMPLETE_WITHIN_DAYS = {"AUT": 35, "SPR": 35, "SUM": 63}


@dataclass(frozen=True)
class Calendar:
    """The terms a dataset covers: those with a census in pupils.csv, in order, and the last
    day its exits reach. Termly data (a census in at least two terms of one school year)
    can be audited term by term with each earlier term as history."""

    census_terms: tuple[str, ...]
    data_end: date | None

    @classmethod
    def of(cls, pupils: pl.DataFrame, exits: pl.DataFrame) -> Calendar:
        censuses = pupils.get_column("census").drop_nulls().unique().to_list()
        valid = {c.upper() for c in censuses if TERM_SHAPE.fullmatch(c.strip().upper())}
        terms = tuple(sorted(valid, key=term_index))  # others are the loader's errors
        dates = exits.get_column("exit_date").drop_nulls()
        return cls(terms, dates.max() if not dates.is_empty() else None)  # type: ignore[arg-type]

    @property
    def termly(self) -> bool:
        years = [school_year_of(t) for t in self.census_terms]
        return len(years) != len(set(years))

    def is_complete(self, term: str) -> bool:
        """A later census exists, or the exits reach the term's last weeks."""
        if any(term_index(t) > term_index(term) for t in self.census_terms):
            return True
        name = term.split("-")[1]
        last = term_window(term).end - timedelta(days=COMPLETE_WITHIN_DAYS[name])
        return self.data_end is not None and self.data_end >= last

    def complete_terms(self) -> list[str]:
        return [t for t in self.census_terms if self.is_complete(t)]

    def terms_through(self, window: Window) -> list[str]:
        """The terms a termly audit of `window` sees, oldest first: every complete census term
        that ends before the window, and the census terms within it (the audited term itself,
        or a school year's terms)."""
        before = [t for t in self.complete_terms() if term_window(t).end < window.start]
        within = [
            t
            for t in self.census_terms
            if window.start <= term_window(t).start and term_window(t).end <= window.end
        ]
        return before + within


def pick_term_census(pupils: pl.DataFrame, exits: pl.DataFrame, window: Window) -> pl.DataFrame:
    """The roll of a window of termly data, one row per pupil per school: the first census in
    the window (a term's own census; a school year's autumn census); and for a pupil with an
    exit in the window but no row in that census (they left before census day, or joined
    after it), their latest census row at or before the exit, else their first one. So every
    exit has its pupil, with the characteristics of the census nearest before it."""
    keys = ["pupil_id", "urn"]
    days = {c: census_day(c) for c in pupils.get_column("census").drop_nulls().unique().to_list()}
    within = [c for c, day in days.items() if window.start <= day <= window.end]
    if not within:
        return pick_census(pupils, window)
    main = min(within, key=days.__getitem__)
    own = pupils.filter(pl.col("census") == main)
    missing = (
        exits.filter(pl.col("exit_date").is_between(window.start, window.end))
        .group_by(keys)
        .agg(pl.col("exit_date").min().alias("_left"))
        .join(own.select(keys), on=keys, how="anti")
    )
    if missing.is_empty():
        return own
    day = pl.col("census").replace_strict(days, default=None, return_dtype=pl.Date)
    candidates = pupils.join(missing, on=keys, how="inner").with_columns(day.alias("_day"))
    chosen = pl.coalesce(
        pl.col("_day").filter(pl.col("_day") <= pl.col("_left")).max().over(keys),
        pl.col("_day").min().over(keys),
    )
    extra = candidates.filter(pl.col("_day") == chosen).drop("_day", "_left")
    extra = extra.unique(keys, keep="first", maintain_order=True)
    return (
        pl.concat([own, extra]).sort("line") if "line" in own.columns else pl.concat([own, extra])
    )


def terms_of_days(dates: pl.Series) -> pl.Series:
    """term_of_day for a date column: the term each date falls in (null stays null)."""
    years = dates.dt.year().drop_nulls().unique().to_list()
    easter = {y: easter_sunday(y) for y in years}
    year = dates.dt.year()
    in_spring = dates <= year.replace_strict(easter, default=None, return_dtype=pl.Date)
    name = pl.select(
        pl.when(dates.dt.month() >= 9)
        .then(pl.lit("AUT"))
        .when(in_spring)
        .then(pl.lit("SPR"))
        .otherwise(pl.lit("SUM"))
    ).to_series()
    return (year.cast(pl.String) + "-" + name).alias("term")
