"""`offroll-audit fixtures OUT`: write a synthetic LA with known answers.

Without --terms, one school year (generate_dataset); with --terms N, the LA followed over N
termly censuses (generate_history), the test bed for termly monitoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from offroll_audit.console.options import QUIET

if TYPE_CHECKING:
    from rich.console import Console

# One school year keeps its historical defaults, so its output is unchanged.
ONE_YEAR = {"schools": 40, "pupils": 15_000}
HISTORY = {"schools": 100, "pupils": 50_000}


def command(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (new or empty)."),
    seed: int = typer.Option(1, "--seed", help="Random seed: the same seed gives identical files."),
    schools: int | None = typer.Option(
        None, "--schools", help="Number of schools (default 40; 100 with --terms)."
    ),
    pupils: int | None = typer.Option(
        None,
        "--pupils",
        help="Pupils on roll at the start of the year, or at the first census with --terms "
        "(default 15,000; 50,000 with --terms).",
    ),
    terms: int | None = typer.Option(
        None,
        "--terms",
        help="Follow the LA's pupils over N termly censuses (1-15) ending at --last-term: one "
        "pupils.csv row per pupil per school per census, planted patterns over time.",
    ),
    last_term: str | None = typer.Option(
        None, "--last-term", help="With --terms: the latest term, e.g. 2025-SUM (the default)."
    ),
    ehe_rate_factor: float | None = typer.Option(
        None,
        "--ehe-rate-factor",
        help="With --terms: the EHE rate as a multiple of the national ~0.75% a year "
        "(e.g. 0.5 for a quiet LA, 3 for a busy one; default 1).",
    ),
    letters: bool = typer.Option(
        True,
        "--letters/--no-letters",
        help="Write parents' letters (.txt, .docx, .pdf) and letters.csv.",
    ),
    null: bool = typer.Option(
        False,
        "--null",
        help="Plant nothing: only natural (with --terms: persistent) differences between schools.",
    ),
    heterogeneity_sd: float = typer.Option(
        0.25, "--heterogeneity-sd", help="Between-school sd of EHE log-odds."
    ),
    quiet: bool = QUIET,
) -> int:
    """Write a synthetic dataset with planted off-rolling patterns and OUT/truth.json."""
    from offroll_audit.console.render import stdout_console
    from offroll_audit.problems import UsageError

    console = stdout_console(quiet)
    if terms is not None:
        return _history(
            console,
            out,
            seed=seed,
            schools=HISTORY["schools"] if schools is None else schools,
            pupils=HISTORY["pupils"] if pupils is None else pupils,
            terms=terms,
            last_term=last_term,
            ehe_rate_factor=1.0 if ehe_rate_factor is None else ehe_rate_factor,
            letters=letters,
            null=null,
            heterogeneity_sd=heterogeneity_sd,
        )
    for name, value in (("--last-term", last_term), ("--ehe-rate-factor", ehe_rate_factor)):
        if value is not None:
            raise UsageError(f"{name} needs --terms (a multi-term history)")
    from offroll_audit.synthetic import generate_dataset

    truth = generate_dataset(
        out,
        seed=seed,
        schools=ONE_YEAR["schools"] if schools is None else schools,
        pupils=ONE_YEAR["pupils"] if pupils is None else pupils,
        letters=letters,
        null=null,
        heterogeneity_sd=heterogeneity_sd,
    )
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


def _history(
    console: Console, out: Path, *, seed: int, last_term: str | None, **options: Any
) -> int:
    """Write the multi-term history and say what was planted where, and when."""
    from offroll_audit.synthetic import generate_history
    from offroll_audit.synthetic.history import LAST_TERM

    truth = generate_history(out, seed=seed, last_term=last_term or LAST_TERM, **options)
    terms = truth["terms"]
    console.print(
        f"Wrote a synthetic LA followed over {len(terms)} term(s), {terms[0]} to {terms[-1]}, "
        f"to {out} (seed {seed}); known answers in {out / 'truth.json'}"
    )
    if not truth["planted"]:
        console.print("  planted: nothing (only persistent differences between schools)")
    for entry in truth["planted"]:
        first, last = entry["terms"][0], entry["terms"][-1]
        when = first if first == last else f"{first}..{last}"
        how = (
            f"x{entry['multiplier']:g}" if entry["multiplier"] else f"{entry['siblings']} siblings"
        )
        console.print(
            f"  planted {entry['pattern'].replace('_', ' ')}: school {entry['urn']} ({when}, {how})"
        )
    return 0
