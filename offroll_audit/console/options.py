"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

ENCODING = typer.Option(
    None, "--encoding", help="Text encoding of CSV files, e.g. cp1252 (default: detect)."
)
JSON_OUTPUT = typer.Option(False, "--json", help="Print machine-readable JSON to stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="Print only errors.")
KNOWN_TEMPLATES = typer.Option(
    None,
    "--known-templates",
    exists=True,
    file_okay=False,
    help="Folder of public sample letters: matches are shared_public_template, never the school's.",
)

# The audit window, shared by `audit` and `model` (a day in ISO or UK day-first form).
DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y"]
TERM = typer.Option(
    None,
    "--term",
    help="Window as a term: 2024-AUT, 2025-SPR, 2025-SUM, or a school year 2024-25.",
)
DATE_FROM = typer.Option(
    None, "--from", formats=DATE_FORMATS, help="First day of the window (2024-09-01)."
)
DATE_TO = typer.Option(
    None, "--to", formats=DATE_FORMATS, help="Last day of the window (2024-12-20)."
)
