"""Canonical tables: which columns each input table has and what type they load as.

The loader turns whatever the user's export looks like into these frames;
every later stage can rely on the names and dtypes here and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from offroll_audit import codes


@dataclass(frozen=True)
class Column:
    """One column of the contract. `kind` says how a raw text cell is parsed."""

    name: str
    kind: str  # text | urn | code | bool | date | float | int | year | upn
    required: bool = False
    codes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    case_sensitive_codes: bool = False


def _code(name: str, values: list[str], required: bool = False, **kw) -> Column:
    return Column(name, "code", required, tuple(values), **kw)


PUPIL_COLUMNS = [
    Column("pupil_id", "upn", True, aliases=("upn", "pupilid", "pupilref")),
    Column("urn", "urn", True, aliases=("schoolurn",)),
    Column("year_group", "year", True, aliases=("ncyear", "ncyearactual", "year", "yeargroup")),
    _code("sen_provision", codes.SEN_PROVISION, True, aliases=("senprovision", "sen")),
    Column("disadvantaged", "bool", True, aliases=("fsm6", "pupilpremium", "ever6", "pp")),
    _code("social_care", codes.SOCIAL_CARE, True, aliases=("socialcare",)),
    _code("sen_need", codes.SEN_NEED, aliases=("primarysenneed", "senneed", "primaryneed")),
    Column("fsm", "bool", aliases=("fsmeligible",)),
    Column("sex", "text", aliases=("gender",)),
    Column("ethnicity", "text"),
    Column("attendance", "float", aliases=("attendancerate",)),
    Column("suspensions", "int", aliases=("fixedtermexclusions",)),
    Column("family_id", "text", aliases=("householdid", "familyid")),
    Column("census", "text"),
    _code("enrolment_status", codes.ENROLMENT_STATUS, aliases=("enrolstatus", "enrolmentstatus")),
    Column("on_roll_from", "date", aliases=("entrydate", "onrollfrom", "admissiondate")),
    Column("on_roll_to", "date", aliases=("leavingdate", "onrollto")),
]

EXIT_COLUMNS = [
    Column("pupil_id", "upn", True, aliases=("upn", "pupilid")),
    Column("urn", "urn", True, aliases=("schoolurn",)),
    Column("exit_date", "date", True, aliases=("leavingdate", "deletiondate", "exitdate")),
    # Required, but may be derived from `ground`: the loader checks that itself.
    _code("destination", codes.DESTINATIONS),
    Column("ground", "text", aliases=("groundfordeletion", "deletionground")),
    Column("destination_urn", "urn", aliases=("destinationurn", "newschoolurn")),
    Column("address_changed", "bool", aliases=("addresschanged", "newaddress")),
    Column("la_placed", "bool", aliases=("laplaced",)),
    Column("la_consent", "bool", aliases=("laconsent",)),
    Column("la_notified_date", "date", aliases=("lanotifieddate", "lanotified")),
    _code("reason", codes.REASONS, aliases=("ehereason",)),
    Column("returned_date", "date", aliases=("returneddate",)),
    Column("last_suspension_date", "date", aliases=("lastsuspensiondate",)),
    Column("letter_id", "text", aliases=("letterid",)),
    Column("family_id", "text", aliases=("familyid", "householdid")),
]

SCHOOL_COLUMNS = [
    Column("urn", "urn", True),
    Column("name", "text", aliases=("schoolname", "establishmentname")),
    Column("la_code", "text", aliases=("lacode", "la")),
    _code("phase", codes.PHASES, aliases=("phaseofeducation",)),
    _code("type", codes.SCHOOL_TYPES, aliases=("schooltype", "establishmenttype")),
    Column("trust", "text", aliases=("trustname", "mat")),
]

LETTER_COLUMNS = [
    Column("letter_id", "text", True, aliases=("letterid",)),
    Column("file", "text", True, aliases=("path", "filename")),
    Column("urn", "urn", True),
    Column("pupil_id", "upn", aliases=("upn",)),
    Column("family_id", "text", aliases=("familyid",)),
    Column("received_date", "date", aliases=("receiveddate", "received")),
]

TABLES: dict[str, list[Column]] = {
    "pupils": PUPIL_COLUMNS,
    "exits": EXIT_COLUMNS,
    "schools": SCHOOL_COLUMNS,
    "letters": LETTER_COLUMNS,
}
REQUIRED_TABLES = ("pupils", "exits")

_POLARS_TYPE = {
    "text": pl.String,
    "upn": pl.String,
    "urn": pl.String,
    "bool": pl.Boolean,
    "date": pl.Date,
    "float": pl.Float64,
    "int": pl.Int64,
    "year": codes.YearGroup,
}


def dtype_of(column: Column) -> pl.DataType:
    """The polars dtype a canonical column loads as."""
    if column.kind == "code":
        return pl.Enum(list(column.codes))
    return _POLARS_TYPE[column.kind]


def empty_frame(table: str) -> pl.DataFrame:
    """A canonical frame with no rows (an optional table that was not given)."""
    schema = {c.name: dtype_of(c) for c in TABLES[table]}
    schema["line"] = pl.Int64
    return pl.DataFrame(schema=schema)


@dataclass
class Dataset:
    """A loaded, validated dataset. Every frame has all canonical columns.

    Each frame also has `line`: the row as the user sees it in a spreadsheet
    (header = 1), so later stages can point at a row without repeating it.
    `letters` has `path`: the resolved file inside `letters/`, or null when it
    was refused. Optional tables that were absent are empty frames.
    """

    root: Path
    pupils: pl.DataFrame
    exits: pl.DataFrame
    schools: pl.DataFrame
    letters: pl.DataFrame
    files: dict[str, Path] = field(default_factory=dict)  # table -> source file
    has_schools: bool = False
    has_letters: bool = False
