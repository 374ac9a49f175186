"""Rendering shared by the commands: problem reports and short summaries."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from offroll_audit.problems import Report


def stdout_console(quiet: bool = False) -> Console:
    return Console(highlight=False, quiet=quiet, soft_wrap=False)


def print_problem_lines(report: Report) -> None:
    """One plain line per problem, errors first (what a failing command shows)."""
    for problem in [*report.errors, *report.warnings]:
        print(problem.line(), file=sys.stderr)
    print(
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s); nothing was written.",
        file=sys.stderr,
    )


def print_warnings(report: Report, quiet: bool = False) -> None:
    """Warnings of a run that went ahead (to stderr so --json output stays clean)."""
    if quiet:
        return
    for problem in report.warnings:
        print(problem.line(), file=sys.stderr)


def print_notes(notes: list[str], quiet: bool = False) -> None:
    """The run's own warnings (statistics, letters, model fits), to stderr like the load's."""
    if quiet:
        return
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)


def report_table(report: Report) -> Table:
    table = Table(title="Problems found", show_lines=False, expand=False)
    for name in ("severity", "file", "row", "column", "problem", "what to do"):
        table.add_column(name, overflow="fold")
    for p in [*report.errors, *report.warnings]:
        style = "red" if p.severity == "error" else "yellow"
        table.add_row(
            f"[{style}]{p.severity}[/]",
            p.file,
            "" if p.row is None else str(p.row),
            p.column or "",
            p.message,
            p.hint,
        )
    return table
