"""Harder synthetic letters, shaped like a real EHE inbox (opt-in: `fixtures --hard-letters`).

The default letters are clean: typed, short, each family's id in letters.csv. Real letters
arrive messier, and each case here is one the letters scan must survive, kept in the truth:

- scans: a share of letters arrive as PDFs whose text layer is a copier's OCR (misread
  characters, broken and merged words, hyphenation, merged lines);
- long personal additions: families who sign the school's form but add a long paragraph of
  their own and strike out lines they disagree with (a school's declaration form signed by
  three such families, and a share of every template school's copies);
- a primary's own form with the pupil's UPN and its letterhead, signed by two families;
- families without ids: letters.csv (and exits.csv) leave out half the families' ids, and
  pupils.csv those of families whose children are at different schools;
- a sample letter a local group published, copied by a few families at one school only:
  only `--known-templates` (the folder written next to the data) tells it apart.

Nothing here draws from the default letters' generator: the hard cases use a stream of their
own, so `fixtures` without the flag writes exactly what it always did.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from offroll_audit.synthetic import letters as base

P_SCANNED = 0.12  # letters that arrive as scans with a copier's OCR text layer
P_LONG = 0.3  # school-template copies with a long personal paragraph and struck-out lines
P_NO_ID = 0.5  # families with no family_id in letters.csv and exits.csv
DECLARATION_FAMILIES = 3
FORM_FAMILIES = 2
RARE_PUBLIC_FAMILIES = 3
KNOWN_TEMPLATES_FOLDER = "known_templates"
COPIERS = (
    "Canon iR-ADV C5535 PDF",
    "RICOH IM C3000",
    "Xerox WorkCentre 7845",
    "KONICA MINOLTA bizhub C300i",
    "HP Scan",
    "Adobe Scan for Android",
)
_SALT = 0x5EED_0C12  # a letter's hard-case randomness: its own seed, salted

# How a copier's OCR misreads: a character for a look-alike (mostly the confusions the
# detector undoes, some it cannot), plus broken and merged words and lines.
_MISREADS = {
    "m": ("rn",),
    "w": ("vv",),
    "d": ("cl",),
    "h": ("li",),
    "l": ("1", "I", "|"),
    "I": ("l", "1"),
    "i": ("l", "1"),
    "o": ("0",),
    "O": ("0",),
    "s": ("5",),
    "S": ("5",),
    "e": ("c",),
    "c": ("e",),
    "a": ("o", "u"),
    "n": ("u", "ri"),
    "u": ("n", "ii"),
    "t": ("f", "l"),
    "r": ("n",),
    "b": ("h", "6"),
    "g": ("q", "9"),
    ",": (".",),
    ".": (",", ""),
}


@dataclass(frozen=True)
class HardLetters:
    """Which schools get the hard cases, and the shares of the spread-out ones."""

    declaration_urns: tuple[str, ...] = ()  # three families sign the form, each adding a lot
    form_urns: tuple[str, ...] = ()  # a primary's UPN form signed by two families
    rare_public_urns: tuple[str, ...] = ()  # three families copy a rare public letter, each
    # school its own (so it is used at one school only)
    scanned_share: float = P_SCANNED
    long_share: float = P_LONG
    no_id_share: float = P_NO_ID


def choose_schools(
    ehe_exits: pl.DataFrame,
    schools: pl.DataFrame,
    exclude: list[str],
    rng: np.random.Generator,
    count: int = 1,
) -> HardLetters:
    """`count` schools per case among those not excluded (planted or templated) with enough
    families leaving for EHE; the UPN form goes to primaries where there are any."""
    families = (
        ehe_exits.with_columns(
            family=pl.coalesce(pl.col("family_id"), pl.lit("pupil:") + pl.col("pupil_id"))
        )
        .group_by("urn")
        .agg(pl.col("family").n_unique().alias("families"))
        .join(schools.select("urn", "phase"), on="urn", how="left")
        .filter(~pl.col("urn").is_in(exclude))
        .sort("urn")
    )
    chosen: list[str] = []

    def pick(frame: pl.DataFrame, needed: int, number: int = count) -> tuple[str, ...]:
        pool = frame.filter(
            (pl.col("families") >= needed) & ~pl.col("urn").is_in(chosen)
        ).get_column("urn")
        picked = [str(u) for u in rng.permutation(pool.to_numpy())[:number]]
        chosen.extend(picked)
        return tuple(sorted(picked))

    primaries = families.filter(pl.col("phase") == "primary")
    form = pick(primaries, FORM_FAMILIES + 1) or pick(families, FORM_FAMILIES + 1)
    declaration = pick(families, DECLARATION_FAMILIES + 1)
    rare = pick(families, RARE_PUBLIC_FAMILIES + 1, min(count, len(base.RARE_PUBLIC_TEMPLATES)))
    return HardLetters(declaration_urns=declaration, form_urns=form, rare_public_urns=rare)


# --------------------------------------------------------------------------- planning


def add_templates(
    hard: HardLetters,
    profiles: dict[str, base.SchoolProfile],
    templates: dict[str, base.LetterTemplate],
    rng: np.random.Generator,
) -> dict[str, base.LetterTemplate]:
    """The declaration forms and the UPN forms, one per school, with the others."""
    templates = dict(templates)
    urns = [*hard.declaration_urns, *hard.form_urns]
    seeds = rng.integers(0, 1 << 62, len(urns))
    for urn, seed in zip(urns, seeds, strict=True):
        profile = profiles[urn]
        kind = "declaration" if urn in hard.declaration_urns else "form"
        template = base.school_template(
            random.Random(int(seed)), f"{kind}-{urn}", profile.name, profile.letterhead
        )
        templates[urn] = upn_form(template) if kind == "form" else template
    return templates


def upn_form(template: base.LetterTemplate) -> base.LetterTemplate:
    """The template with the pupil's details block (name, UPN, tutor group) if it lacked one."""
    if any("{upn}" in s for p in template.paragraphs for s, _ in p):
        return template
    details = (("Pupil name: {child_full}\nUPN: {upn}\nTutor group: {tutor}", False),)
    start, end = template.body
    salutation = start - 1
    paragraphs = (*template.paragraphs[:salutation], details, *template.paragraphs[salutation:])
    return base.LetterTemplate(
        template.template_id,
        paragraphs,
        (start + 1, end + 1),
        template.header,
        template.metadata,
        template.date_style,
        template.typos,
    )


def assign_cases(
    planned: pl.DataFrame, hard: HardLetters, rng: np.random.Generator
) -> pl.DataFrame:
    """Hand the forms and the rare public letter to a few writing families at each chosen
    school (each child's own letter); `case` names what was handed."""
    planned = planned.with_columns(
        case=pl.lit(None, pl.String),
        rare_index=pl.col("urn")
        .replace_strict({u: k for k, u in enumerate(hard.rare_public_urns)}, default=None)
        .cast(pl.Int64),
    )
    cases = (
        [(u, "declaration", DECLARATION_FAMILIES) for u in hard.declaration_urns]
        + [(u, "upn_form", FORM_FAMILIES) for u in hard.form_urns]
        + [(u, "rare_public", RARE_PUBLIC_FAMILIES) for u in hard.rare_public_urns]
    )
    for urn, case, size in cases:
        keys = planned.filter(pl.col("urn") == urn).get_column("family_key").unique().sort()
        chosen = rng.permutation(keys.to_numpy())[:size].tolist()
        handed = (pl.col("urn") == urn) & pl.col("family_key").is_in(chosen)
        kind = "public_template" if case == "rare_public" else "school_template"
        planned = planned.with_columns(
            kind=pl.when(handed).then(pl.lit(kind)).otherwise("kind"),
            case=pl.when(handed).then(pl.lit(case)).otherwise("case"),
            letter_key=pl.when(handed)
            .then(pl.lit("row:") + pl.col("row").cast(pl.String))
            .otherwise("letter_key"),
        )
    return planned


def mark_letters(
    letters: pl.DataFrame, hard: HardLetters, rng: np.random.Generator
) -> pl.DataFrame:
    """Per letter: scanned (a copier's PDF), long (a long paragraph and struck lines), and
    whether letters.csv lists the family's id."""
    n = letters.height
    families = letters.get_column("family_key").unique().sort()
    unlisted = families.filter(pl.Series(rng.random(families.len()) < hard.no_id_share))
    readable = pl.col("kind") != base.NO_TEXT_KIND
    scanned = readable & pl.Series(rng.random(n) < hard.scanned_share)
    templated = (pl.col("kind") == "school_template") & (pl.col("case") != "upn_form").fill_null(
        True
    )
    long = templated & (
        (pl.col("case") == "declaration").fill_null(False)
        | pl.Series(rng.random(n) < hard.long_share)
    )
    return letters.with_columns(
        scanned=scanned,
        long=long,
        listed=~pl.col("family_key").is_in(unlisted.implode()) & pl.col("family_id").is_not_null(),
        fmt=pl.when(scanned).then(pl.lit("pdf")).otherwise("fmt"),
    )


# --------------------------------------------------------------------------- rendering


def rare_public_template(index: int = 0) -> base.LetterTemplate:
    """A rarely used public sample letter (see public_templates.toml)."""
    source = base.RARE_PUBLIC_TEMPLATES[index]
    paragraphs = tuple(tuple((s.lstrip("?"), s.startswith("?")) for s in p) for p in source)
    signoff = next(i for i, p in enumerate(source) if p[0].startswith("With"))
    return base.LetterTemplate(f"public-rare-{index + 1}", paragraphs, (signoff - 2, signoff))


def write_hard_letter(
    root: Path,
    letter: dict,
    profiles: dict[str, base.SchoolProfile],
    templates: dict[str, base.LetterTemplate],
) -> dict:
    """Render and write one letter with its hard cases; its entry of the truth."""
    template_id, text, header, metadata = base.render_letter(letter, profiles, templates)
    rnd = random.Random(letter["letter_seed"] ^ _SALT)
    if letter["case"] == "upn_form":
        header = templates[letter["urn"]].header  # the form is always on the letterhead
    struck: tuple[str, ...] = ()
    if letter["long"]:
        text, struck = lengthen(text, rnd, letter, profiles)
    path = root / letter["file"]
    if letter["kind"] == base.NO_TEXT_KIND:
        base.write_letter_file(path, text, "pdf", metadata=metadata, text_layer=False)
    elif letter["scanned"]:
        source = f"{header}\n\n{text}" if header else text
        noisy = ocr_noise(source, rnd, rnd.uniform(0.01, 0.05), struck)
        when = dt.datetime.combine(letter["received_date"], dt.time(rnd.randint(8, 17)))
        copier = {"producer": rnd.choice(COPIERS), "created": when}
        base.write_letter_file(path, noisy, "pdf", metadata=copier)
    else:
        base.write_letter_file(
            path, text, letter["fmt"], header=header, metadata=metadata, struck=struck
        )
    return {
        "scanned": bool(letter["scanned"]),
        "long_personal": bool(letter["long"]),
        "struck_lines": len(struck),
        "case": letter["case"],
        "family_id_listed": bool(letter["listed"]),
        "template_id": template_id,
    }


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def lengthen(
    text: str, rnd: random.Random, letter: dict, profiles: dict[str, base.SchoolProfile]
) -> tuple[str, tuple[str, ...]]:
    """A long paragraph or two of the parent's own (as long as the form or longer) inside
    the copy, and one to three of the form's sentences struck out."""
    school = profiles[letter["urn"]]
    family, _ = base.family_voice(letter["family_seed"])
    ctx = base.letter_context(
        letter["children"],
        family,
        school,
        letter["first_exit"],
        letter["received_date"],
        family.date_style,
        False,
    )
    paragraphs = text.rstrip("\n").split("\n\n")
    body = [
        s
        for p in paragraphs[2:-2]
        if "\n" not in p
        for s in _SENTENCE_END.split(p)
        if len(s.split()) >= 6
    ]
    struck = tuple(rnd.sample(body, min(len(body), rnd.randint(1, 3))))
    pick = base._SentencePicker(rnd, ctx, base.FREE_FORM)
    target = int(len(text.split()) * rnd.uniform(1.0, 1.8))
    own: list[list[str]] = [[]]
    reasons = rnd.sample(base.REASON_SYMBOLS, 3)
    symbols = [*reasons, "plan", "personal", *reasons]
    while sum(len(s.split()) for p in own for s in p) < target and symbols:
        sentence = pick.one(symbols[0])
        if sentence is None:
            symbols.pop(0)
            continue
        own[-1].append(sentence)
        if len(own[-1]) >= rnd.randint(4, 7):
            own.append([])
    where = rnd.randint(len(paragraphs) // 2, max(len(paragraphs) // 2, len(paragraphs) - 2))
    added = [" ".join(p) for p in own if p]
    paragraphs[where:where] = added
    return "\n\n".join(paragraphs) + "\n", struck


def ocr_noise(text: str, rnd: random.Random, rate: float, struck: tuple[str, ...] = ()) -> str:
    """The text layer a copier's OCR makes of a printed letter: misread characters at
    `rate`, words broken or run together, hyphenated line ends, lines merged, and struck-out
    sentences read as garbage."""
    for sentence in struck:
        text = text.replace(sentence, _garbled(sentence, rnd), 1)
    lines = []
    for raw in text.split("\n"):
        lines.extend(base.textwrap.wrap(raw, rnd.randint(60, 80)) or [""])
    out: list[str] = []
    for line in lines:
        line = _misread(line, rnd, rate)
        if out and out[-1] and line and rnd.random() < 0.12:  # two lines read as one
            out[-1] = out[-1] + " " + line
            continue
        words = line.split(" ")
        if len(words) > 3 and len(words[-1]) >= 7 and rnd.random() < 0.25:  # hyphenated
            cut = rnd.randint(3, len(words[-1]) - 3)
            out.append(" ".join([*words[:-1], words[-1][:cut] + "-"]))
            line = words[-1][cut:]
        out.append(line)
    return "\n".join(out) + "\n"


def _misread(line: str, rnd: random.Random, rate: float) -> str:
    chars = []
    for char in line:
        roll = rnd.random()
        if char == " ":
            if roll < rate * 0.8:  # words run together
                continue
            chars.append(char)
        elif roll < rate and char in _MISREADS:
            chars.append(rnd.choice(_MISREADS[char]))
        elif roll < rate * 1.2:  # dropped
            continue
        elif roll < rate * 1.5 and char.isalpha():  # a word broken in two
            chars.append(char + " ")
        else:
            chars.append(char)
    return "".join(chars)


def _garbled(sentence: str, rnd: random.Random) -> str:
    """A struck-out sentence as OCR reads it: the line through the words eats most of them."""
    return "".join(rnd.choice("-~=_") if c != " " and rnd.random() < 0.6 else c for c in sentence)


# --------------------------------------------------------------------------- known templates


def write_known_templates(out: Path) -> list[str]:
    """The public sample letters as their publishers print them (placeholders in brackets),
    for `--known-templates`; returns the file names."""
    folder = out / KNOWN_TEMPLATES_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    samples = [base.public_template(i) for i in range(len(base.PUBLIC_TEMPLATES))]
    samples += [rare_public_template(i) for i in range(len(base.RARE_PUBLIC_TEMPLATES))]
    for template in samples:
        text = base._join([[base.fill(s, PLACEHOLDERS) for s, _ in p] for p in template.paragraphs])
        name = f"{template.template_id}.txt"
        (folder / name).write_text(text, encoding="utf-8")
        written.append(name)
    return written


PLACEHOLDERS = {
    "address_block": "[Your address]",
    "date": "[Date]",
    "head": "[Headteacher's name]",
    "child_noun": "child",
    "child_full": "[Child's full name]",
    "child": "[Child's first name]",
    "dob_label": "date of birth",
    "dob_label_caps": "Date of birth",
    "dob": "[Date of birth]",
    "school": "[School name]",
    "exit": "[Date]",
    "him": "him/her",
    "his": "his/her",
    "he": "he/she",
    "names": "name",
    "son": "child",
    "year": "[Year group]",
    "parent": "[Your name]",
}


# --------------------------------------------------------------------------- the roll


def hide_family_ids(
    exits: pl.DataFrame, pupils: pl.DataFrame, letter_truth: dict
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What an LA's files would not say about the families letters.csv leaves unlisted:
    exits.csv gives them no family_id, and pupils.csv none where their children are at
    different schools (a school's MIS links siblings on its own roll only)."""
    unlisted = (letter_truth.get("hard") or {}).get("unlisted_families") or []
    hidden = pl.col("family_id").is_in(unlisted)
    across = (
        pupils.filter(hidden)
        .group_by("family_id")
        .agg(pl.col("urn").n_unique().alias("schools"))
        .filter(pl.col("schools") > 1)
        .get_column("family_id")
    )
    exits = exits.with_columns(family_id=pl.when(hidden).then(None).otherwise("family_id"))
    pupils = pupils.with_columns(
        family_id=pl.when(pl.col("family_id").is_in(across.implode()))
        .then(None)
        .otherwise("family_id")
    )
    return exits, pupils
