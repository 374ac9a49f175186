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
    example: bool = typer.Option(
        False,
        "--example",
        help="The kind of LA shipped as fixtures/example-la (that one is --example --seed 5): "
        "--terms censuses (default 9) to 2025-SUM whose latest school year, 2024-25, carries "
        "the one-year plants (an EHE off-roller with a school-written letter template, a "
        "school moving Years 10-11 on, a special school without LA consent, a trust sharing a "
        "template, a large innocent school) after a history with an excess that stopped two "
        "years before and a sibling family; default 40 schools, 15,000 pupils.",
    ),
    ehe_rate_factor: float | None = typer.Option(
        None,
        "--ehe-rate-factor",
        help="The LA's EHE rate as a multiple of the national ~0.75% a year "
        "(e.g. 0.5 for a quiet LA, 3 for a busy one; default 1).",
    ),
    letters: bool = typer.Option(
        True,
        "--letters/--no-letters",
        help="Write parents' letters (.txt, .docx, .pdf) and letters.csv.",
    ),
    hard_letters: bool = typer.Option(
        False,
        "--hard-letters",
        help="Letters as they really arrive (one school year only): copier scans with OCR "
        "noise, forms under long personal paragraphs with struck-out lines, a primary's UPN "
        "form signed by two families, family ids left out, and a public sample used at one "
        "school only (its published text in OUT/known_templates, for --known-templates). "
        "Every case is marked in truth.json.",
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
    if hard_letters and (example or terms is not None or not letters):
        raise UsageError("--hard-letters: only for one school year with letters")
    if example:
        return _example(
            console,
            out,
            seed=seed,
            schools=schools,
            pupils=pupils,
            terms=terms,
            last_term=last_term,
            ehe_rate_factor=ehe_rate_factor,
            letters=letters,
            null=null,
            heterogeneity_sd=heterogeneity_sd,
        )
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
    if last_term is not None:
        raise UsageError("--last-term needs --terms (a multi-term history)")
    from offroll_audit.synthetic import generate_dataset

    truth = generate_dataset(
        out,
        seed=seed,
        schools=ONE_YEAR["schools"] if schools is None else schools,
        pupils=ONE_YEAR["pupils"] if pupils is None else pupils,
        letters=letters,
        null=null,
        heterogeneity_sd=heterogeneity_sd,
        ehe_rate_factor=1.0 if ehe_rate_factor is None else ehe_rate_factor,
        hard_letters=hard_letters,
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
    hard = (truth.get("letters") or {}).get("hard") or {}
    for case in ("declaration_schools", "form_schools", "rare_public_schools"):
        if hard.get(case):
            label = case.replace("_", " ").replace("rare public", "public sample used at")
            console.print(f"  hard letters, {label}: {', '.join(hard[case])}")
    if hard:
        console.print(f"  published samples for --known-templates: {out / 'known_templates'}")
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


def _example(
    console: Console,
    out: Path,
    *,
    seed: int,
    schools: int | None,
    pupils: int | None,
    terms: int | None,
    last_term: str | None,
    ehe_rate_factor: float | None,
    letters: bool,
    null: bool,
    heterogeneity_sd: float,
) -> int:
    """Write the example LA and say what was planted where, and what an audit should select."""
    from offroll_audit.problems import UsageError
    from offroll_audit.synthetic.example import DEFAULTS, LAST_TERM, generate_example

    if null or ehe_rate_factor is not None:
        raise UsageError(
            "--example plants its answers at the national EHE rate: drop --null "
            "and --ehe-rate-factor"
        )
    if last_term is not None and last_term.strip().upper() != LAST_TERM:
        raise UsageError(f"--example ends at {LAST_TERM}: its one-year plants are dated in 2024-25")
    truth = generate_example(
        out,
        seed=seed,
        schools=DEFAULTS["schools"] if schools is None else schools,
        pupils=DEFAULTS["pupils"] if pupils is None else pupils,
        terms=DEFAULTS["terms"] if terms is None else terms,
        letters=letters,
        heterogeneity_sd=heterogeneity_sd,
    )
    labels, planted = truth["terms"], truth["planted"]
    console.print(
        f"Wrote the example LA over {len(labels)} terms, {labels[0]} to {labels[-1]}, to {out} "
        f"(seed {seed}); known answers in {out / 'truth.json'}"
    )
    console.print(f"  planted in {truth['window']['school_year']}:")
    for name in ("offroll_ehe", "offroll_moves", "special_no_consent", "innocent_high"):
        urns = ", ".join(entry["urn"] for entry in planted[name]) or "none"
        console.print(f"    {name.replace('_', ' ')}: school(s) {urns}")
    console.print(f"    trust template: schools {', '.join(planted['trust_template']['urns'])}")
    for name in ("stopped_excess", "sibling_family"):
        for entry in planted[name]:
            first, last = entry["terms"][0], entry["terms"][-1]
            when = first if first == last else f"{first}..{last}"
            console.print(f"  planted {name.replace('_', ' ')}: school {entry['urn']} ({when})")
    selection = truth["selection"]
    console.print(
        f"  an audit of {labels[-1]} should select {', '.join(selection['selected'])}, "
        f"and not {', '.join(selection['not_selected'])}"
    )
    return 0
