"""`offroll-audit letters DATA --out OUT`: the templated-letter scan on its own."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from offroll_audit.console.options import ENCODING, JSON_OUTPUT, KNOWN_TEMPLATES, QUIET


def command(
    data: Path = typer.Argument(..., help="The dataset folder (with letters.csv and letters/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for letters.csv and clusters.json."),
    known_templates: Path | None = KNOWN_TEMPLATES,
    encoding: str | None = ENCODING,
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
) -> int:
    """Find letters written from a school's template among parents' deregistration letters."""
    from rich.table import Table

    from offroll_audit.console.render import print_notes, print_warnings, stdout_console
    from offroll_audit.letters import run_letters
    from offroll_audit.load import load_dataset
    from offroll_audit.problems import UsageError
    from offroll_audit.report import check_out_folder, write_letter_outputs

    check_out_folder(out, data)
    dataset, report = load_dataset(data, encoding=encoding)
    if not dataset.has_letters:
        raise UsageError(f"{data}: no letters.csv, so there are no letters to scan")
    print_warnings(report, quiet or json_output)
    result = run_letters(dataset, known_templates=known_templates)
    print_notes(result.warnings, quiet or json_output)
    clusters = write_letter_outputs(result, dataset, out)
    if json_output:
        typer.echo(json.dumps(clusters, indent=1, ensure_ascii=False))
        return 0
    console = stdout_console(quiet)
    table = Table(
        title=f"{len(result.clusters)} letter clusters among {dataset.letters.height} letters"
    )
    for name in ("Cluster", "Verdict", "School", "Families", "Schools", "Similarity", "Dates"):
        table.add_column(name)
    for c in result.clusters:
        table.add_row(
            c["cluster_id"],
            c["verdict"],
            c["urn"],
            str(c["families"]),
            str(c["schools"]),
            f"{c['similarity']:.2f}",
            f"{c['date_from'] or ''} to {c['date_to'] or ''}",
        )
    console.print(table)
    console.print(f"Outputs in {out}: letters.csv, clusters.json, manifest.json")
    return 0
