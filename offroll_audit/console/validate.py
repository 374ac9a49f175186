"""`offroll-audit validate DATA`: check a dataset and report every problem."""

from __future__ import annotations

from pathlib import Path

import typer

from offroll_audit.console.options import ENCODING, JSON_OUTPUT


def command(
    data: Path = typer.Argument(
        ..., help="The dataset folder (pupils, exits, optional schools and letters)."
    ),
    encoding: str | None = ENCODING,
    json_output: bool = JSON_OUTPUT,
) -> int:
    """Check a dataset against the data contract and list every problem (exit 2 if any error).

    Letter files are read too: each one the audit would leave out (unreadable, empty, no
    text layer, unsupported type) is a warning, worded as the audit words it.
    """
    from offroll_audit.console.render import report_table, stdout_console
    from offroll_audit.load import load_dataset
    from offroll_audit.problems import DataError

    try:
        dataset, report = load_dataset(data, encoding=encoding, check_letter_files=True)
        summary = (
            f"{dataset.pupils.height:,} pupil rows, {dataset.exits.height:,} exits, "
            f"{dataset.schools.height:,} schools, {dataset.letters.height:,} letters"
        )
    except DataError as bad:
        report, summary = bad.report, None
    console = stdout_console()
    if json_output:
        typer.echo(report.to_json())
    else:
        if report.problems:
            console.print(report_table(report))
        verdict = "valid" if report.ok else "not valid"
        console.print(
            f"{data}: {verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)"
        )
        if summary:
            console.print(summary)
    return 0 if report.ok else 2
