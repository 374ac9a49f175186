"""`offroll-audit fixtures OUT`: write a synthetic LA with known answers."""

from __future__ import annotations

from pathlib import Path

import typer

from offroll_audit.console.options import QUIET


def command(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (new or empty)."),
    seed: int = typer.Option(1, "--seed", help="Random seed: the same seed gives identical files."),
    schools: int = typer.Option(40, "--schools", help="Number of schools."),
    pupils: int = typer.Option(15_000, "--pupils", help="Pupils on roll at the start of the year."),
    letters: bool = typer.Option(
        True,
        "--letters/--no-letters",
        help="Write parents' letters (.txt, .docx, .pdf) and letters.csv.",
    ),
    null: bool = typer.Option(
        False, "--null", help="Plant nothing: only natural differences between schools."
    ),
    heterogeneity_sd: float = typer.Option(
        0.25, "--heterogeneity-sd", help="Between-school sd of EHE log-odds."
    ),
    quiet: bool = QUIET,
) -> int:
    """Write a synthetic dataset with planted off-rolling patterns and OUT/truth.json."""
    from offroll_audit.console.render import stdout_console
    from offroll_audit.synthetic import generate_dataset

    truth = generate_dataset(
        out,
        seed=seed,
        schools=schools,
        pupils=pupils,
        letters=letters,
        null=null,
        heterogeneity_sd=heterogeneity_sd,
    )
    console = stdout_console(quiet)
    planted = truth.get("planted", {})
    console.print(
        f"Wrote a synthetic LA to {out} (seed {seed}); known answers in {out / 'truth.json'}"
    )
    for name, schools_planted in planted.items():
        if isinstance(schools_planted, dict):  # the trust template: one entry, several schools
            schools_planted = [{"urn": u} for u in schools_planted.get("urns", [])]
        if not isinstance(schools_planted, list):
            continue
        urns = [s["urn"] for s in schools_planted]
        console.print(f"  planted {name.replace('_', ' ')}: school(s) {', '.join(urns) or 'none'}")
    return 0
