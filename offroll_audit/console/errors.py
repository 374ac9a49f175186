"""Turn every way a command can fail into a clear message and an exit code."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path

import typer

from offroll_audit.problems import DataError, UsageError

try:  # recent typer vendors its own copy of click (and does not install click itself)
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click, then a dependency of typer
    from click import ClickException

EXIT_SIGNALS = (typer.Exit,)
ABORTS = (typer.Abort,)
CLICK_ERRORS = (ClickException,)


EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


def run_guarded(app: typer.Typer, argv: list[str] | None, state: dict) -> int:
    """Run the Typer app; bad input exits 2 with one line per problem, bugs exit 1."""
    from offroll_audit.console.render import print_problem_lines

    args, debug = take_debug(sys.argv[1:] if argv is None else list(argv))
    state["debug"] = state.get("debug", False) or debug
    try:
        result = app(args=args, standalone_mode=False, prog_name="offroll-audit")
        return result if isinstance(result, int) else EXIT_OK
    except EXIT_SIGNALS as stop:
        return stop.exit_code
    except ABORTS:
        typer.echo("Aborted.", err=True)
        return EXIT_INTERNAL
    except CLICK_ERRORS as problem:
        problem.show()
        return EXIT_BAD_INPUT
    except DataError as bad:
        print_problem_lines(bad.report)
        return EXIT_BAD_INPUT
    except UsageError as bad:
        typer.echo(f"error: {bad}", err=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        typer.echo("Interrupted; nothing was written.", err=True)
        return EXIT_INTERNAL
    except Exception as bug:  # the last line of defence: never show a traceback by default
        if state.get("debug"):
            traceback.print_exc()
        log = _write_log(bug)
        typer.echo(
            f"internal error: {type(bug).__name__}. Nothing was written. Details: {log} "
            "(run with --debug to see them here; please report it)",
            err=True,
        )
        return EXIT_INTERNAL


def take_debug(args: list[str]) -> tuple[list[str], bool]:
    """Take `--debug` out of the command line wherever it stands (before `--`): an error
    message tells users to add it, and they add it at the end, after the command's options."""
    end = args.index("--") if "--" in args else len(args)
    kept = [arg for at, arg in enumerate(args) if not (arg == "--debug" and at < end)]
    return kept, len(kept) < len(args)


def _write_log(bug: BaseException) -> Path:
    """Save the traceback privately (it may quote a cell) and say where it is."""
    fd, name = tempfile.mkstemp(prefix="offroll-audit-error-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        log.write("".join(traceback.format_exception(bug)))
    return Path(name)
