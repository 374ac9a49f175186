"""Rendering shared by the commands: problem reports and short summaries."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from offroll_audit.problems import Report
from offroll_audit.progress import SILENT, Item, Progress


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


class RichProgress(Progress):
    """The long steps on the terminal: a spinner and the time taken for each, a bar and a
    count for those whose size is known (letters, packs). Drawn on stderr."""

    def __init__(self, console: Console):
        from rich import progress

        self.display = progress.Progress(
            progress.SpinnerColumn(finished_text="[green]done[/]"),
            progress.TextColumn("{task.description}"),
            progress.BarColumn(bar_width=24),
            progress.MofNCompleteColumn(),
            progress.TimeElapsedColumn(),
            console=console,
        )

    def track(self, items: Iterable[Item], description: str, total: int) -> Iterator[Item]:
        task = self.display.add_task(description, total=total)
        for item in items:
            yield item
            self.display.advance(task)

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self.display.add_task(description, total=None)
        try:
            yield
        finally:
            self.display.update(task, total=1, completed=1)


@contextmanager
def progress_display(quiet: bool = False) -> Iterator[Progress]:
    """A rich progress display while the block runs, if stderr is a terminal and the user did
    not ask for quiet (or JSON) output; else SILENT, so logs and pipes get no control codes."""
    if quiet or not sys.stderr.isatty():
        yield SILENT
        return
    shown = RichProgress(Console(stderr=True, highlight=False))
    with shown.display:
        yield shown
