"""`offroll-audit profiles`: the shipped profiles and baselines, and a copy to edit."""

from __future__ import annotations

from pathlib import Path

import typer

from offroll_audit.console.options import JSON_OUTPUT


def command(
    copy: str | None = typer.Option(
        None, "--copy", help="Copy this profile or baseline out for editing (e.g. strict)."
    ),
    to: Path = typer.Option(
        Path("."), "--to", help="File or folder for the copy (default: the current folder)."
    ),
    json_output: bool = JSON_OUTPUT,
) -> int:
    """List the thresholds profiles and baselines that ship with the tool, or copy one out."""
    import json

    from rich.table import Table

    from offroll_audit.console.render import stdout_console
    from offroll_audit.profile import copy_shipped, shipped_files

    console = stdout_console()
    if copy is not None:
        item, target = copy_shipped(copy, to)
        console.print(
            f"Copied the {item.kind} {item.name} to {target}. Edit it, then run: "
            f"offroll-audit audit DATA --out OUT --{item.kind} {target}",
            soft_wrap=True,
        )
        return 0
    shipped = shipped_files()
    if json_output:
        rows = [{**vars(item), "path": str(item.path)} for item in shipped]
        typer.echo(json.dumps(rows, indent=2))
        return 0
    table = Table(title="Shipped profiles (--profile) and baselines (--baseline)")
    for name in ("kind", "name", "description", "file"):
        table.add_column(name, overflow="fold")
    for item in shipped:
        table.add_row(item.kind, item.name, item.description, item.path.name)
    console.print(table)
    for folder in sorted({str(item.path.parent) for item in shipped}):
        console.print(f"Files in {folder}", soft_wrap=True)
    console.print("Copy one to edit: offroll-audit profiles --copy strict --to my-profile.toml")
    return 0
