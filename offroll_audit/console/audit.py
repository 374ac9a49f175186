"""`offroll-audit audit DATA --out OUT`: the termly audit."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from offroll_audit.console.options import (
    DATE_FROM,
    DATE_TO,
    ENCODING,
    JSON_OUTPUT,
    KNOWN_TEMPLATES,
    QUIET,
    TERM,
)

METHODS = ("nb", "poisson", "funnelplotr")


def command(
    data: Path = typer.Argument(
        ..., help="The dataset folder (pupils, exits, optional schools and letters)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for the outputs (new, empty, or an earlier run's)."
    ),
    profile: str = typer.Option(
        "default", "--profile", help="Thresholds profile: default, strict, ofsted, or a .toml file."
    ),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="Where expected rates come from: local (fitted on this data), self (a trust's "
        "or school's own data: relative risks from --shape, the level from its own schools), "
        "england, or a baseline .toml file. Default: self when the data hold one trust's "
        "schools or fewer than the profile's min_schools_local (20), else local.",
    ),
    shape: str | None = typer.Option(
        None,
        "--shape",
        help="With --baseline self: the baseline whose relative risks (how SEN, disadvantage, "
        "social care and year group change the risk) are used (default england, or a .toml).",
    ),
    la_rates: Path | None = typer.Option(
        None,
        "--la-rates",
        exists=True,
        dir_okay=False,
        help="With --baseline self: a CSV of la_code,annual_rate (your LA's published EHE "
        "rate; template in thresholds/baselines/la-rates-template.csv); exits to home "
        "education are judged against it instead of a level estimated from your schools.",
    ),
    term: str | None = TERM,
    date_from: datetime | None = DATE_FROM,
    date_to: datetime | None = DATE_TO,
    urn: list[str] = typer.Option(
        [],
        "--urn",
        help="Report only this school (repeatable); expected rates still use every school.",
    ),
    trust: str | None = typer.Option(None, "--trust", help="Report only this trust's schools."),
    method: str = typer.Option(
        "nb",
        "--method",
        help="nb (negative binomial, default), poisson, or funnelplotr (NHS SHMI-style limits).",
    ),
    letters: bool = typer.Option(
        True, "--letters/--no-letters", help="Scan parents' letters for templates."
    ),
    known_templates: Path | None = KNOWN_TEMPLATES,
    workbooks: bool = typer.Option(
        True,
        "--workbooks/--no-workbooks",
        help="Write overview.xlsx and the packs (off: JSON and CSV only).",
    ),
    pseudonymise: bool = typer.Option(
        False,
        "--pseudonymise",
        help="Replace pupil ids by a keyed hash (key in OFFROLL_AUDIT_KEY "
        "or --key-file; never written anywhere).",
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="File holding the pseudonymisation key."
    ),
    suppress: int = typer.Option(
        0, "--suppress", min=0, help="Show counts below N as <N in the shareable outputs."
    ),
    encoding: str | None = ENCODING,
    json_output: bool = JSON_OUTPUT,
    quiet: bool = QUIET,
) -> int:
    """Compare each school's exits with what its pupils predict; flag, select and write packs."""
    from offroll_audit.audit import AuditOptions
    from offroll_audit.problems import UsageError

    if method not in METHODS:
        raise UsageError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if key_file is not None and not pseudonymise:
        raise UsageError("--key-file is only used with --pseudonymise")
    options = AuditOptions(
        profile=profile,
        baseline=baseline,
        term=term,
        start=date_from.date() if date_from else None,
        end=date_to.date() if date_to else None,
        urns=list(urn),
        trust=trust,
        method=method,
        letters=letters,
        known_templates=known_templates,
        shape=shape,
        la_rates=la_rates,
    )
    audit_and_write(
        data,
        out,
        options,
        encoding=encoding,
        workbooks=workbooks,
        pseudonymise=pseudonymise,
        key_file=key_file,
        suppress=suppress,
        quiet=quiet or json_output,
    )
    if json_output:  # the document just written, not encoded a second time
        typer.echo((out / "results.json").read_text(encoding="utf-8"), nl=False)
    return 0


def audit_and_write(
    data: Path,
    out: Path,
    options,
    *,
    encoding: str | None = None,
    workbooks: bool = True,
    pseudonymise: bool = False,
    key_file: Path | None = None,
    suppress: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """Load, audit, write OUT, print the summary; shared by `audit` and `demo`."""
    from offroll_audit.audit import run_audit, warm_up
    from offroll_audit.console.render import (
        print_notes,
        print_warnings,
        progress_display,
        stdout_console,
    )
    from offroll_audit.load import load_dataset
    from offroll_audit.report import OutputOptions, check_out_folder, read_key, write_outputs

    check_out_folder(out, data)  # before the work, so a wrong --out fails fast
    key = read_key(key_file) if pseudonymise else None
    warm_up()  # the statistics' imports load while the data does
    with progress_display(quiet) as progress:
        with progress.step("Loading the dataset"):
            dataset, report = load_dataset(data, encoding=encoding)
        with progress.step("Auditing: exits, expected counts, tests, selection"):
            result = run_audit(dataset, options, progress)
        output_options = OutputOptions(key, suppress, workbooks)
        results = write_outputs(result, dataset, out, output_options, report, progress)
    print_warnings(report, quiet)
    print_notes(result.warnings + (result.letters.warnings if result.letters else []), quiet)
    render_summary(results, out, stdout_console(quiet))
    return results


def render_summary(results: dict[str, Any], out: Path, console) -> None:
    """The terminal view: the window, the selected schools and why, where the files are."""
    if console.quiet:
        return
    schools = results["schools"]
    selected = [s for s in schools if s["audit"]]
    window = results["window"]
    console.print(
        f"Audit window {window['from']} to {window['to']} ({window['source']}); "
        f"profile {results['profile']}; baseline {results['baseline']['kind']}"
    )
    for line in baseline_lines(results):
        console.print(line)
    shown = 40  # a national run selects hundreds: the table shows the first, the files hold all
    if selected:
        console.print(summary_table(selected[:shown], f"{len(selected)} of {len(schools)} "))
        if len(selected) > shown:
            console.print(f"... and {len(selected) - shown} more: see schools.csv")
    else:
        console.print("No school met a selection rule.")
    packs = " and packs/" if (out / "packs").is_dir() else ""
    console.print(
        f"Outputs in {out}: results.json, schools.csv, exits.csv{packs}"
        f"{', overview.xlsx' if (out / 'overview.xlsx').exists() else ''}"
    )


def baseline_lines(results: dict[str, Any]) -> list[str]:
    """Say when the baseline was chosen for the user, and the trust roll-up's line, so a
    trust lead sees what the numbers rest on without opening a file (cautions, such as a
    self-review's level falling back to the national one, are printed with the warnings)."""
    baseline = results.get("baseline") or {}
    lines = []
    if baseline.get("why") and baseline.get("kind") == "self":
        lines.append(
            f"Baseline {baseline['kind']} chosen automatically: {baseline['why']} "
            "(give --baseline local|england|FILE to choose another)."
        )
    for trust in results.get("trusts") or []:
        lines.append(trust["summary"])
    return lines


def summary_table(selected: list[dict[str, Any]], count: str):
    """The selected schools in a table that fits an 80-column terminal: the counts and reasons
    never wrap (a reason is a code, shown whole), the school's name takes what is left."""
    from rich.table import Table

    table = Table(
        title=f"{count}schools selected for audit",
        caption="obs / exp: observed and expected count, then the band (see the Method sheet)",
        caption_justify="left",
    )
    table.add_column("School", overflow="fold", ratio=1, min_width=6)  # a URN, at least
    table.add_column("EHE\nobs / exp", no_wrap=True)
    table.add_column("Unexplained\nobs / exp", no_wrap=True)
    table.add_column("Why selected", no_wrap=True)
    for school in selected:
        table.add_row(
            f"{school['urn']}\n{school.get('name') or ''}".strip(),
            _pair(school, "ehe"),
            _pair(school, "unexplained"),
            "\n".join(school["audit_reasons"]),
        )
    return table


def _pair(school: dict[str, Any], outcome: str) -> str:
    block = school.get(outcome)
    if not block:
        return ""
    return f"{block['observed']} / {block['expected']:.1f}\n{block['band']}"
