"""The `offroll-audit` command line: parse options, call the library, render.

Heavy libraries (polars, scipy, statsmodels, openpyxl) are imported inside
the commands so that `--help` stays fast. Every command goes through `main`,
which turns the library's errors into friendly messages and exit codes:
0 ran, 2 bad input or usage, 1 an unexpected internal error.
"""

from __future__ import annotations

import sys

import typer

from offroll_audit import __version__
from offroll_audit.console import audit, demo, fixtures, letters, model, profiles, validate

app = typer.Typer(
    name="offroll-audit",
    help="Find schools whose exits to elective home education their pupils' needs do not explain. "
    "A flag is a question to ask a school, not proof of off-rolling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks with locals would print pupil records
    rich_markup_mode="rich",
)

STATE = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"offroll-audit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Show the full traceback of an internal error (also accepted after the command).",
    ),
) -> None:
    """Find schools whose exits to home education their intake does not explain."""
    STATE["debug"] = STATE["debug"] or debug  # run_guarded takes --debug from anywhere


app.command("demo")(demo.command)
app.command("validate")(validate.command)
app.command("audit")(audit.command)
app.command("letters")(letters.command)
app.command("model")(model.command)
app.command("fixtures")(fixtures.command)
app.command("profiles")(profiles.command)


def main(argv: list[str] | None = None) -> None:
    """Run the app; map library errors to exit codes without tracebacks."""
    from offroll_audit.console.errors import run_guarded

    sys.exit(run_guarded(app, argv, STATE))


if __name__ == "__main__":
    main()
