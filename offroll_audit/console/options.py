"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

ENCODING = typer.Option(
    None, "--encoding", help="Text encoding of CSV files, e.g. cp1252 (default: detect)."
)
JSON_OUTPUT = typer.Option(False, "--json", help="Print machine-readable JSON to stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="Print only errors.")
