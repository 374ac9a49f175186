"""Property tests for the loader: what must hold for any export, not just the examples.

- any order, case and spacing of headers loads the same frames;
- any valid table loads to identical canonical frames from csv, xlsx and parquet;
- junk bytes never raise anything but DataError (exit 2, never a traceback);
- a problem's row always points at the row (spreadsheet row) holding the bad value.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import tempfile
from pathlib import Path

import openpyxl
import polars as pl
from conftest import TABLES, Table, base_tables, csv_text, write_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from offroll_audit import codes
from offroll_audit.load import load_dataset
from offroll_audit.problems import DataError
from offroll_audit.schema import TABLES as CANONICAL

# Modest example counts keep this file under ~20 s; OFFROLL_HYPOTHESIS_SCALE=20 hunts harder.
SCALE = int(os.environ.get("OFFROLL_HYPOTHESIS_SCALE", "1"))


def examples(count: int) -> settings:
    return settings(
        max_examples=count * SCALE, deadline=None, suppress_health_check=list(HealthCheck)
    )


def canonical(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    names = [c.name for c in CANONICAL[table]]
    return frame.select(names).sort(names[:2], nulls_last=True)


def load_frames(folder: Path) -> dict[str, pl.DataFrame]:
    dataset, report = load_dataset(folder)
    assert report.ok
    return {t: canonical(getattr(dataset, t), t) for t in ("pupils", "exits")}


BASE: dict[str, pl.DataFrame] = {}


def base() -> dict[str, pl.DataFrame]:
    if not BASE:
        with tempfile.TemporaryDirectory() as tmp:
            BASE.update(load_frames(write_dataset(Path(tmp) / "data")))
    return BASE


# --------------------------------------------------------------------------- headers


@st.composite
def spelling(draw: st.DrawFn, name: str) -> str:
    """`sen_provision` as an export might spell it: `SEN Provision`, ` SEN-PROVISION`..."""
    separator = draw(st.sampled_from(["_", " ", "-", "", "__", " - ", "\t"]))
    words = [draw(st.sampled_from([w.lower(), w.upper(), w.title()])) for w in name.split("_")]
    padding = draw(st.sampled_from(["", " ", "  "]))
    return padding + separator.join(words) + draw(st.sampled_from(["", " "]))


@st.composite
def respelt_table(draw: st.DrawFn, table: str) -> Table:
    rows = TABLES[table]
    order = draw(st.permutations(range(len(rows[0]))))
    header = [draw(spelling(rows[0][i])) for i in order]
    return [header] + [[row[i] for i in order] for row in rows[1:]]


@examples(10)
@given(pupils=respelt_table("pupils"), exits=respelt_table("exits"))
def test_any_order_case_and_spacing_of_headers_loads_the_same(pupils: Table, exits: Table) -> None:
    tables = {**base_tables(), "pupils": pupils, "exits": exits}
    with tempfile.TemporaryDirectory() as tmp:
        frames = load_frames(write_dataset(Path(tmp) / "data", tables))
    for table, frame in frames.items():
        assert_frame_equal(frame, base()[table])


# --------------------------------------------------------------------------- round trip

TEXT = st.text(alphabet="abcXYZ é£'\",;-\n", max_size=8)
OPTIONAL = st.one_of(st.just(""), st.sampled_from(["NA", "N/A", "null"]))


def any_case(values: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(values).flatmap(
        lambda v: st.sampled_from([v, v.lower(), v.upper(), f" {v} "])
    )


def date_text() -> st.SearchStrategy[str]:
    dates = st.dates(dt.date(2020, 1, 1), dt.date(2026, 12, 31))
    return dates.flatmap(
        lambda d: st.sampled_from(
            [d.isoformat(), d.strftime("%d/%m/%Y"), f"{d.isoformat()} 00:00:00"]
        )
    )


@st.composite
def pupil_row(draw: st.DrawFn, pupil_id: str) -> list[str]:
    attendance = draw(
        st.one_of(
            OPTIONAL,
            st.integers(0, 1000).map(lambda n: f"{n / 1000}"),
            st.integers(0, 100).map(lambda n: f"{n}%"),
        )
    )
    return [
        pupil_id,
        draw(st.sampled_from(["100001", "100002", "123456"])),
        draw(any_case([*codes.YEAR_GROUPS, "Y7", "Year 10", "07", "Reception"])),
        draw(any_case(codes.SEN_PROVISION)),
        draw(any_case(["true", "false", "Y", "N", "yes", "no", "1", "0"])),
        draw(any_case(codes.SOCIAL_CARE)),
        draw(st.one_of(OPTIONAL, any_case(codes.SEN_NEED))),
        draw(st.one_of(OPTIONAL, any_case(["true", "false", "y", "n"]))),
        draw(st.one_of(OPTIONAL, TEXT)),
        attendance,
        draw(st.one_of(OPTIONAL, st.integers(0, 30).map(str))),
        draw(st.one_of(OPTIONAL, any_case(codes.ENROLMENT_STATUS))),
        draw(st.one_of(OPTIONAL, date_text())),
        "",
        draw(st.one_of(OPTIONAL, TEXT)),
    ]


@st.composite
def pupil_table(draw: st.DrawFn, min_size: int = 1, max_size: int = 12) -> Table:
    count = draw(st.integers(min_size, max_size))
    return [TABLES["pupils"][0]] + [draw(pupil_row(f"P{i:04d}")) for i in range(count)]


def write_table(folder: Path, name: str, rows: list[list[str]], suffix: str) -> None:
    if suffix == ".csv":
        (folder / f"{name}.csv").write_text(csv_text(rows), encoding="utf-8")
    elif suffix == ".xlsx":
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        for row in rows:
            sheet.append([cell if cell != "" else None for cell in row])
        workbook.save(folder / f"{name}.xlsx")
    else:
        header, body = rows[0], rows[1:]
        columns = {h: [r[i] if r[i] != "" else None for r in body] for i, h in enumerate(header)}
        pl.DataFrame(columns, schema=dict.fromkeys(header, pl.String)).write_parquet(
            folder / f"{name}.parquet"
        )


def folder_with_pupils(root: Path, pupils: Table, suffix: str, name: str = "data") -> Path:
    tables = {"pupils": None, "exits": TABLES["exits"][:1], "schools": None, "letters": None}
    folder = write_dataset(root / name, tables, letter_files={})
    write_table(folder, "pupils", pupils, suffix)
    return folder


@examples(8)
@given(pupils=pupil_table())
def test_valid_rows_load_identically_from_csv_xlsx_and_parquet(pupils: Table) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        frames = [
            load_frames(folder_with_pupils(Path(tmp), pupils, suffix, suffix[1:]))["pupils"]
            for suffix in (".csv", ".xlsx", ".parquet")
        ]
    assert frames[0].height == len(pupils) - 1
    assert_frame_equal(frames[0], frames[1])
    assert_frame_equal(frames[0], frames[2])


# --------------------------------------------------------------------------- junk

JUNK_TEXT = st.text(alphabet=',"\n\r\t ;abc1\x00é£\ufeff\u2028', max_size=200)


@st.composite
def junk(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, content): random bytes, random CSV-ish text, or a valid file with junk in it."""
    kind = draw(st.sampled_from(["bytes", "text", "spliced"]))
    name = draw(st.sampled_from(["pupils.csv", "exits.csv", "schools.csv", "letters.csv"]))
    if kind == "bytes":
        return name, draw(st.binary(max_size=300))
    if kind == "text":
        encoding = draw(st.sampled_from(["utf-8", "utf-16", "utf-16-le", "cp1252"]))
        return name, draw(JUNK_TEXT).encode(encoding, errors="replace")
    original = csv_text(TABLES[name.removesuffix(".csv")]).encode()
    at = draw(st.integers(0, len(original)))
    return name, original[:at] + draw(st.binary(max_size=20)) + original[at:]


@examples(30)
@given(junk())
def test_junk_never_raises_anything_but_data_error(case: tuple[str, bytes]) -> None:
    name, content = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dataset(Path(tmp) / "data")
        (folder / name).write_bytes(content)
        try:
            dataset, report = load_dataset(folder)
        except DataError as error:
            assert error.report.errors
            for problem in error.report.problems:
                assert problem.file and problem.message
        else:
            assert report.ok and dataset.pupils.height > 0


@examples(10)
@given(st.binary(max_size=200), st.sampled_from([".xlsx", ".parquet"]))
def test_junk_spreadsheets_are_data_errors(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dataset(Path(tmp) / "data")
        (folder / "exits.csv").unlink()
        (folder / f"exits{suffix}").write_bytes(content)
        try:
            load_dataset(folder)
        except DataError as error:
            assert any(p.file == f"exits{suffix}" for p in error.report.errors)


# --------------------------------------------------------------------------- row numbers

BAD_VALUES = {
    "pupil_id": "C801200005001",  # UPN-shaped, wrong check letter
    "urn": "12345",
    "year_group": "Year 15",
    "sen_provision": "Q",
    "disadvantaged": "maybe",
    "social_care": "LAC",
    "sen_need": "ADHD",
    "attendance": "1.5",
    "suspensions": "-3",
    "enrolment_status": "Z",
    "on_roll_from": "30/02/2024",
}


@st.composite
def table_with_one_bad_cell(draw: st.DrawFn) -> tuple[list[list[str]], int, str, str]:
    """(rows as written, spreadsheet row of the bad cell, its column, format)."""
    pupils = draw(pupil_table(min_size=1, max_size=15))
    header, body = [*pupils[0], "notes"], [[*r, ""] for r in pupils[1:]]
    for row in body:  # cells with line breaks and commas must not shift row numbers
        row[-1] = draw(st.sampled_from(["", "two\nlines", 'a "quoted", b', "x\r\ny\nz"]))
    index = draw(st.integers(0, len(body) - 1))
    column = draw(st.sampled_from(sorted(BAD_VALUES)))
    body[index][header.index(column)] = BAD_VALUES[column]
    written: list[list[str]] = [header]
    bad_row = 0
    for i, row in enumerate(body):
        while draw(st.integers(0, 5)) == 0:  # blank rows keep their place in a spreadsheet
            written.append([])
        written.append(row)
        if i == index:
            bad_row = len(written)
    suffix = draw(st.sampled_from([".csv", ".xlsx"]))
    return written, bad_row, column, suffix


@examples(10)
@given(table_with_one_bad_cell())
def test_problem_row_points_at_the_row_holding_the_bad_value(
    case: tuple[list[list[str]], int, str, str],
) -> None:
    rows, bad_row, column, suffix = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = folder_with_pupils(Path(tmp), rows, suffix)
        try:
            load_dataset(folder)
        except DataError as error:
            found = [(p.file, p.row, p.column) for p in error.report.errors]
        else:
            found = []
    assert found == [(f"pupils{suffix}", bad_row, column)]


def test_csv_writer_blank_rows_are_blank_lines() -> None:
    """The property above relies on csv writing [] as an empty line (one spreadsheet row)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["a"], [], ["b"]])
    assert buffer.getvalue() == "a\n\nb\n"


# --------------------------------------------------------------------------- UPN check letters

ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ"


def reference_check_letter(rest: str) -> str:
    """domain-facts.md, written out plainly: characters 2..13 times their position, mod 23."""
    total = sum(
        (int(char) if char.isdigit() else ALPHABET.index(char)) * position
        for position, char in zip(range(2, 14), rest, strict=True)
    )
    return ALPHABET[total % 23]


UPN_BODIES = st.tuples(
    st.text(alphabet="0123456789", min_size=11, max_size=11),
    st.sampled_from([*"0123456789", *ALPHABET]),
).map("".join)


@examples(30)
@given(
    st.lists(
        st.tuples(
            UPN_BODIES, st.sampled_from(sorted(set("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))), st.booleans()
        ),
        min_size=1,
        max_size=50,
    )
)
def test_upn_check_letters_match_the_published_rule(ids: list[tuple[str, str, bool]]) -> None:
    from offroll_audit.load import bad_upn_rows

    upns = [(letter + body).lower() if lower else letter + body for body, letter, lower in ids]
    expected = [
        i for i, (body, letter, _) in enumerate(ids) if letter != reference_check_letter(body)
    ]
    assert reference_check_letter("801200005001") == "B"  # the worked example
    assert bad_upn_rows(pl.Series(upns)).tolist() == expected
    # Ids that are not UPN-shaped are pseudonyms: never checked.
    assert bad_upn_rows(pl.Series([u[:12] for u in upns] + [u + "1" for u in upns])).size == 0
