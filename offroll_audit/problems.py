"""Typed problems found in a user's data, collected into one report.

A report is a value, not an exception: `validate` renders it, every other
command stops on its errors. Problems name the file, the row as the user sees
it in a spreadsheet (header = 1) and the column, and say what to do, so an
officer can fix their export without reading code. They never quote a whole
record: at most the offending cell.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

ERROR = "error"
WARNING = "warning"
MAX_ROWS_PER_PROBLEM = 20  # beyond this a column's problem is summarised, not listed row by row


@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning
    file: str
    row: int | None
    column: str | None
    message: str
    hint: str = ""

    def line(self) -> str:
        """One line for a terminal or log: `file:row [column] message (hint)`."""
        where = self.file
        if self.row is not None:
            where += f":{self.row}"
        if self.column:
            where += f" [{self.column}]"
        text = f"{self.severity}: {where}: {self.message}"
        return f"{text}. {self.hint}" if self.hint else text


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)

    def add(
        self,
        severity: str,
        file: str,
        row: int | None,
        column: str | None,
        message: str,
        hint: str = "",
    ) -> None:
        self.problems.append(Problem(severity, file, row, column, message, hint))

    def error(
        self, file: str, row: int | None, column: str | None, message: str, hint: str = ""
    ) -> None:
        self.add(ERROR, file, row, column, message, hint)

    def warn(
        self, file: str, row: int | None, column: str | None, message: str, hint: str = ""
    ) -> None:
        self.add(WARNING, file, row, column, message, hint)

    def rows(
        self,
        severity: str,
        file: str,
        column: str,
        rows: list[int],
        total: int,
        message: str,
        hint: str = "",
    ) -> None:
        """Report one problem on many rows: the first rows one line each, then a count."""
        self.listed(
            severity,
            file,
            column,
            ((row, message) for row in rows),
            total,
            hint,
            lambda more: f"{message}: {more:,} more rows like this",
        )

    def listed(
        self,
        severity: str,
        file: str,
        column: str | None,
        items: Iterable[tuple[int | None, str]],
        total: int,
        hint: str = "",
        more: Callable[[int], str] = lambda n: f"{n:,} more rows with this problem",
    ) -> None:
        """One problem found `total` times: the first MAX_ROWS_PER_PROBLEM of `items` (row,
        message) one line each, then one line saying how many more."""
        for row, message in itertools.islice(items, MAX_ROWS_PER_PROBLEM):
            self.add(severity, file, row, column, message, hint)
        if total > MAX_ROWS_PER_PROBLEM:
            self.add(severity, file, None, column, more(total - MAX_ROWS_PER_PROBLEM))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: Report) -> None:
        self.problems.extend(other.problems)

    def to_dict(self) -> dict:
        return {
            "valid": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [asdict(p) for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class DataError(Exception):
    """The data cannot be used as it is; carries the full report for rendering."""

    def __init__(self, report: Report):
        super().__init__(f"{len(report.errors)} problem(s) in the data")
        self.report = report


class UsageError(Exception):
    """A command-line option or argument the user must change (exit 2)."""
