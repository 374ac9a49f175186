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
        return Window(start, end, f"term {year}-{name}")
    if match := re.fullmatch(r"(\d{4})[-/](\d{2})", text):
        year = int(match[1])
        if (year + 1) % 100 != int(match[2]):
            raise UsageError(f"--term {term}: a school year is written like 2024-25")
        return Window(date(year, 9, 1), date(year + 1, 8, 31), f"school year {year}-{match[2]}")
    raise UsageError(
        f"--term {term!r} is not a term: use e.g. 2024-AUT, 2025-SPR, 2025-SUM or 2024-25"
    )


def choose_window(
    exits: pl.DataFrame, term: str | None, start: date | None, end: date | None
) -> Window:
    """The window from --term, --from/--to, or the span of the exits."""
    if term and (start or end):
        raise UsageError("give either --term or --from/--to, not both")
    if term:
        return term_window(term)
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
