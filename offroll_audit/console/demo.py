"""`offroll-audit demo [OUT]`: the whole audit on the bundled example LA."""

from __future__ import annotations

from pathlib import Path

import typer

from offroll_audit.console.options import QUIET


def command(
    out: Path = typer.Argument(Path("offroll-demo"), help="Folder for the demo's outputs."),
    quiet: bool = QUIET,
) -> int:
    """Run the full audit on the synthetic example LA shipped with the tool (no real pupils)."""
    from offroll_audit.audit import AuditOptions
    from offroll_audit.console.audit import audit_and_write
    from offroll_audit.shipped import example_la_folder

    data = example_la_folder()
    if not quiet:
        typer.echo(f"Auditing the synthetic example LA in {data} (every pupil in it is made up).")
    audit_and_write(data, out, AuditOptions(profile="default"), quiet=quiet)
    if not quiet:
        typer.echo(
            f"Open {out / 'overview.xlsx'} first; the planted answers are in {data / 'truth.json'}."
        )
    return 0
