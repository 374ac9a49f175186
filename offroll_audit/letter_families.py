"""Which letters come from one family: a family's letters are one voice, never a template.

An id says so when there is one: letters.csv `family_id`, else the `family_id` that
exits.csv or pupils.csv gives the letter's pupils. Without an id, a family is recognised
from the letters themselves, and only among letters that share wording (the only place
where counting families matters, so a common name elsewhere merges nothing):

- the same parent's full name (first name and surname) in the signature;
- the same surname at the same address (house number, street and postcode);
- the same signature, however brief ("Mrs Smith"), on letters received within a few days.

Ids always win: letters with two different ids are never made one family, whatever the
text says. Each family says how it was recognised (`how`), for the auditor to check.
"""

from __future__ import annotations

import difflib

import numpy as np
import polars as pl

from offroll_audit.ocr import ocr_canonical

# How a family's letters were tied together (or why one letter stands alone), in the words
# the evidence shows; the order is the order of strength.
ID_SOURCES = {
    "family_id": "family_id in letters.csv",
    "exit_family_id": "family_id in exits.csv",
    "roll_family_id": "family_id in pupils.csv",
}
SAME_PUPIL = "the same pupil"
SAME_PARENT = "the same parent's name in the letters"
SAME_ADDRESS = "the same surname and address in the letters"
SAME_PHONE = "the same phone number in the letters"
SAME_SENDER = "the same signature on letters received within {days} days"
MISREAD = "the same name or address but for OCR misreads, on letters received within {days} days"
MISREAD_RATIO = 0.8  # difflib ratio of two OCR-canonical names taken as one name misread
MISREAD_WHOLE = 0.9  # ... or this share of the shorter one found in the other
MISREAD_GROUP_MAX = 100  # approximate matching only in groups this small (pairs are compared)
ALONE = "one letter, no family id"

TITLES = ("mr", "mrs", "ms", "miss", "mx", "dr", "rev", "sir", "dame", "prof")
# A sign-off line: a closing word (OCR may garble the rest of the line), or a short line
# ending with a comma ("With love,"). The name under it, or after a "Name:" label on a
# form, is the signature; the last one in a letter counts (a form's first "Name:" is
# often the pupil's).
_SIGN_OFF = (
    r"(?:[^\n,]{0,30}?\b(?:regards|wishes|sincerely|faithfully|truly|thanks|thank\s+you"
    r"|signed|cheers|respectfully|love)\b[^\n]{0,12}|[\p{L}]+(?:[ \t]+[\p{L}]+){0,3},)"
)
SIGNATURE = (
    rf"(?im)^[ \t]*(?:{_SIGN_OFF}[ \t]*\n(?:[ \t]*\n)*"
    r"|(?:print\s+name|parent(?:/carer)?(?:'s)?\s+name|name\s*\(please\s+print\)|name"
    r"|signed)[ \t]*[:\-][ \t]*)"
    r"([^\n_:]{2,60})$"
)
# The same, for a scan: OCR loses capitals, misreads the sign-off and merges it with the
# name's line. Only ever compared with the name in another letter of a small group (see
# _join_misread), so a stray line taken for a name merges nothing.
_LOOSE_SIGN_OFF = (
    r"(?:[^\n,]{0,30}?\b(?:regards|wishes|sincerely|faithfully|truly|thanks|thank\s+you"
    r"|signed|cheers|respectfully|love)\b[,.!]?|[\p{L}\d|]+(?:[ \t]+[\p{L}\d|]+){0,3},)"
)
LOOSE_SIGNATURE = (
    rf"(?im)^[ \t]*{_LOOSE_SIGN_OFF}(?:[ \t]*\n(?:[ \t]*\n)*|[ \t]+)[ \t]*"
    r"([\p{L}\d.'()|\- ]{3,60})[ \t]*$"
)
# A parent's phone number: a UK number the writer gives as theirs ("contact me on", "my
# number is"), never a letterhead's "Tel:" (a school form's number is on every copy).
PHONE = (
    r"(?i)(?:(?:me|us)\s+on|reached\s+on|number\s+is|my\s+mobile|call\s+(?:me|us)"
    r"|contact\s+(?:me|us)|reach\s+(?:me|us)|ring\s+(?:me|us)|text\s+(?:me|us)|my\s+number"
    r"|my\s+phone|our\s+number)[^\n\d]{0,15}"
    r"(0[\dOolIS]{3,4}[ \t]?[\dOolIS]{3}[ \t]?[\dOolIS]{3,4})\b"
)
NAME_WORDS = r"^(?:(?:[A-Z][\p{L}'\-]*\.?|and|&)(?:\s+|$)){1,7}$"
# A house number and street, then the postcode within the next lines: a parent's address.
# A school's letterhead rarely starts with a house number, so it is not taken for one.
ADDRESS = (
    r"(?im)^[ \t]*((?:flat|apartment|unit)\s+\w+,?\s*)?(\d{1,4}[a-z]?)[ \t,]+"
    r"([a-z][a-z0-9' ]{2,40}?)[ \t]*(?:,|$)[^\n]*?(?:\n[^\n]*?){0,2}?"
    r"\b([a-z]{1,2}\d[a-z\d]?[ \t]*\d[a-z]{2})\b"
)


def _last_match(pattern: str) -> pl.Expr:
    """The first group of the last match of `pattern` in a letter's text: a letter signs off,
    and gives its sender's details, at its end."""
    return pl.col("text").str.extract_all(pattern).list.last().str.extract(pattern, 1)


def parent_identity(texts: pl.Series) -> pl.DataFrame:
    """Per text: the signature as written (lower-cased, without titles' dots or a role in
    brackets), a looser reading of it (for scans, whose OCR loses capitals), the parent's
    surname, full name (first name and surname) and address key."""
    frame = pl.DataFrame({"text": texts.fill_null("")})
    signed = (
        _last_match(SIGNATURE)
        .str.replace_all(r"\([^)]*\)", " ")
        .str.replace_all(r"[,;]", " ")
        .str.strip_chars()
    )
    frame = frame.with_columns(raw=signed).with_columns(
        raw=pl.when(pl.col("raw").str.contains(NAME_WORDS)).then("raw")
    )
    words = (
        pl.col("raw")
        .str.to_lowercase()
        .str.replace_all(r"\.", "")
        .str.split(" ")
        .list.eval(pl.element().filter(pl.element() != ""))
    )
    frame = frame.with_columns(words=words).with_columns(
        names=pl.col("words").list.eval(
            pl.element().filter(~pl.element().is_in([*TITLES, "and", "&"]))
        )
    )
    first = pl.col("names").list.first()
    surname = pl.col("names").list.last()
    full = pl.when(pl.col("names").list.len() >= 2).then(
        first + " " + surname
    )  # "Jo and Sam Smith": Jo Smith
    address = pl.col("text").str.extract_groups(ADDRESS)
    postcode = address.struct.field("4").str.to_uppercase().str.replace_all(r"[ \t]+", "")
    street = address.struct.field("3").str.to_lowercase().str.replace_all(r"\s+", " ")
    house = pl.concat_str(
        address.struct.field("1").fill_null("").str.to_lowercase().str.replace_all(r"\W+", ""),
        address.struct.field("2").str.to_lowercase(),
    )
    loose = _last_match(LOOSE_SIGNATURE).str.replace_all(r"\([^)]*\)?|\)", " ")
    identity = frame.select(
        signature=pl.col("words").list.join(" ").replace("", None),
        loose=loose,
        surname=surname,
        full_name=full,
        address=pl.concat_str(house, street.str.strip_chars(), postcode, separator="|"),
        phone=_last_match(PHONE)
        .str.replace_all(r"[ \t]", "")
        .str.replace_all("[Oo]", "0")
        .str.replace_all("[lI]", "1")
        .str.replace_all("S", "5"),
    )
    # compared as OCR-canonical letters, so a scanned "Srnith" is still Smith
    return identity.with_columns(
        pl.Series(name, ocr_canonical(identity.get_column(name))).replace("", None)
        if name not in ("address", "phone")
        else pl.col(name)
        for name in identity.columns
    )


class _Households:
    """Union-find over letters that never joins two different ids (ids win over text)."""

    def __init__(self, ids: list[str | None]):
        self.parent = list(range(len(ids)))
        self.id = list(ids)
        self.how: dict[int, set[str]] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(self, a: int, b: int, how: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self.id[a] is not None and self.id[b] is not None and self.id[a] != self.id[b]:
            return
        self.parent[b] = a
        self.id[a] = self.id[a] if self.id[a] is not None else self.id[b]
        self.how[a] = self.how.get(a, set()) | self.how.pop(b, set()) | {how}


def recognise_families(
    letters: pl.DataFrame,
    roots: np.ndarray,
    same_sender_days: int,
    scanned: np.ndarray | None = None,
) -> pl.DataFrame:
    """Per letter (row order kept): `family` key and `family_how` (list of reasons).

    letters: letter_id, pupil_id, family_id, exit_family_id, roll_family_id, received_date,
    text (columns may be null). roots: the letter's group of shared wording (-1: none);
    text evidence joins letters only within one group. scanned: letters whose text OCR may
    have garbled; in a small group their names and addresses may match approximately.
    """
    explicit = pl.lit("family:") + pl.coalesce(*ID_SOURCES)  # one household key space
    source = pl.coalesce(
        *[pl.when(pl.col(c).is_not_null()).then(pl.lit(label)) for c, label in ID_SOURCES.items()]
    )
    frame = (
        letters.select(
            "letter_id",
            "pupil_id",
            "received_date",
            explicit=explicit,
            source=source,
        )
        .with_row_index("i")
        .with_columns(root=pl.Series(roots, dtype=pl.Int64))
    )
    # names and addresses matter only among letters that share wording: read those alone
    shared = frame.select((pl.col("root") >= 0) & (pl.len().over("root") > 1)).to_series()
    identity = parent_identity(letters.get_column("text").filter(shared))
    frame = frame.hstack(_spread(identity, shared))
    households = _Households(frame.get_column("explicit").to_list())
    _join_groups(households, frame, ["explicit"], None)
    _join_groups(households, frame, ["pupil_id"], SAME_PUPIL)
    grouped = frame.filter(pl.col("root") >= 0)
    _join_groups(households, grouped, ["root", "full_name"], SAME_PARENT)
    _join_groups(households, grouped, ["root", "surname", "address"], SAME_ADDRESS)
    _join_groups(households, grouped, ["root", "phone"], SAME_PHONE)
    _join_senders(households, grouped, same_sender_days)
    if scanned is not None and scanned.any():
        _join_misread(households, grouped, same_sender_days, scanned)
    family, how = _keys(households, frame)
    return pl.DataFrame(
        {"family": family, "family_how": how},
        schema={"family": pl.String, "family_how": pl.List(pl.String)},
    )


def _spread(identity: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """`identity`'s rows at the positions where `rows` is true, nulls elsewhere."""
    positions = pl.DataFrame({"k": rows.cast(pl.Int64).cum_sum() - 1, "on": rows})
    positions = positions.with_columns(k=pl.when("on").then("k"))
    return positions.join(
        identity.with_row_index("k").with_columns(pl.col("k").cast(pl.Int64)),
        on="k",
        how="left",
        maintain_order="left",
    ).drop("k", "on")


def _join_groups(
    households: _Households, frame: pl.DataFrame, keys: list[str], how: str | None
) -> None:
    """Join the letters that agree on every key (none of them null)."""
    complete = frame.drop_nulls(keys)
    if complete.height < 2:
        return
    groups = complete.group_by(keys).agg(pl.col("i")).filter(pl.col("i").list.len() > 1)
    for members in groups.get_column("i").to_list():
        for other in members[1:]:
            households.join(members[0], other, how or "")


def _join_senders(households: _Households, frame: pl.DataFrame, days: int) -> None:
    """Join letters with the same signature in one group received within `days` of the
    previous such letter."""
    dated = frame.drop_nulls(["signature", "received_date"]).sort(
        "root", "signature", "received_date", "i"
    )
    if dated.height < 2:
        return
    same = (
        (pl.col("root") == pl.col("root").shift(1))
        & (pl.col("signature") == pl.col("signature").shift(1))
        & ((pl.col("received_date") - pl.col("received_date").shift(1)).dt.total_days() <= days)
    )
    pairs = dated.select(pl.col("i").shift(1).alias("a"), pl.col("i").alias("b"), same=same)
    how = SAME_SENDER.format(days=days)
    for a, b in pairs.filter(pl.col("same")).select("a", "b").iter_rows():
        households.join(a, b, how)


def _join_misread(
    households: _Households, frame: pl.DataFrame, days: int, scanned: np.ndarray
) -> None:
    """In small groups, join a scanned letter to another whose signature, full name or
    surname and address read alike but for a few OCR misreads, received within `days`."""
    sizes = frame.group_by("root").len()
    small = sizes.filter(pl.col("len").is_between(2, MISREAD_GROUP_MAX)).get_column("root")
    frame = frame.filter(pl.col("root").is_in(small.implode())).with_columns(
        scanned=pl.lit(pl.Series(scanned)).gather(pl.col("i"))
    )
    for group in frame.filter(pl.col("scanned").any().over("root")).partition_by("root"):
        rows = group.to_dicts()
        for k, one in enumerate(rows):
            for other in rows[k + 1 :]:
                if (one["scanned"] or other["scanned"]) and _alike(one, other, days):
                    households.join(one["i"], other["i"], MISREAD.format(days=days))


def _alike(one: dict, other: dict, days: int) -> bool:
    if one["received_date"] is None or other["received_date"] is None:
        return False
    if abs((one["received_date"] - other["received_date"]).days) > days:
        return False
    signed = [
        _close(a, b)
        for a in (one["signature"], one["loose"])
        for b in (other["signature"], other["loose"])
    ]
    return (
        any(signed)
        or _close(one["address"], other["address"])
        or _close(one["phone"], other["phone"], 0.9)
    )


def _close(a: str | None, b: str | None, ratio: float = MISREAD_RATIO) -> bool:
    """Two OCR-canonical strings alike but for a few misread letters (or one of at least
    eight letters found almost whole in the other: a role or bracket read as letters)."""
    if not a or not b or min(len(a), len(b)) < 4:
        return False
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.ratio() >= ratio:
        return True
    shorter = min(len(a), len(b))
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return shorter >= 8 and matched >= MISREAD_WHOLE * shorter


def _keys(households: _Households, frame: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The family key of each letter (its id, else its first pupil, else its first letter)
    and how the family was recognised (the ids its letters carry, then what joined them)."""
    letter_ids = frame.get_column("letter_id").to_list()
    pupils = frame.get_column("pupil_id").to_list()
    sources = frame.get_column("source").to_list()
    roots = [households.find(i) for i in range(frame.height)]
    lead: dict[int, int] = {}
    reasons: dict[int, set[str]] = {}
    for i, root in enumerate(roots):
        lead.setdefault(root, i)
        if sources[i] is not None:
            reasons.setdefault(root, set()).add(sources[i])
    keys, hows = {}, {}
    for root, i in lead.items():
        if households.id[root] is not None:
            keys[root] = households.id[root]
        elif pupils[i] is not None:
            keys[root] = f"pupil:{pupils[i]}"
        else:
            keys[root] = f"letter:{letter_ids[i]}"
        found = reasons.get(root, set()) | (households.how.get(root, set()) - {""})
        hows[root] = sorted(found, key=_strength) if found else [ALONE]
    return [keys[r] for r in roots], [hows[r] for r in roots]


_ORDER = [*ID_SOURCES.values(), SAME_PUPIL, SAME_PARENT, SAME_ADDRESS, SAME_PHONE]


def _strength(reason: str) -> tuple[int, str]:
    return (_ORDER.index(reason) if reason in _ORDER else len(_ORDER), reason)
