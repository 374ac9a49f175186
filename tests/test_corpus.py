"""A corpus of datasets, valid, messy and broken, each run through the real command line.

Every input is built at test time from small builders (nothing is committed): small
valid datasets (1-5 schools, a handful of pupils, with and without exits to home
education, none at all with --from/--to), messy-but-valid exports (BOM, Windows-1252,
UTF-16, UK dates, Y/N, MIS headers, .xlsx, .parquet, CRLF, a stray far cell) and broken
or hostile ones (bad codes, missing columns, duplicate stems, a zip bomb, corrupt files,
paths leaving letters/...). Each runs as `validate` and as `audit` through the CLI's own
entry point (run_guarded, as `main` calls it) in this process, which keeps the corpus to
seconds; a sample of cases (SUBPROCESS) also runs as a real process under a memory limit
and a timeout (tests/test_hostile_inputs.py's `run_limited`), where an abort or a hang of
any input is tested on its own.

Whatever the input: never exit 1, never a traceback or a Rust panic, never killed. Valid
inputs exit 0 and write results.json, schools.csv, exits.csv, manifest.json (and
overview.xlsx when workbooks are on); broken ones exit 2, write nothing, and every problem
line names its file (and the row and column of a bad cell).

The same module checks that `validate` reads every letter file and warns, in the audit's
own words, about each one the audit would leave out.
"""

from __future__ import annotations

import codecs
import datetime as dt
import io
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
import polars as pl
import pytest
from conftest import Table, base_tables, csv_text, set_cell, write_dataset
from test_hostile_inputs import (
    Run,
    declared_bomb,
    json_problems,
    pupils_sheet,
    run_all,
    sheet_rows,
    sheet_xml,
    workbook_parts,
    zip_bytes,
)

from offroll_audit.synthetic.letters import assemble_pdf

Tables = dict[str, Table | None]
OUTPUTS = ("results.json", "schools.csv", "exits.csv", "manifest.json")
PROBLEM_LINE = re.compile(r"^(error|warning): (.+?)(?::(\d+))?(?: \[(.+?)\])?: (.+)$")

# --------------------------------------------------------------------------- builders

PUPIL_HEADER = base_tables()["pupils"][0]
EXIT_HEADER = base_tables()["exits"][0]
SEN = ["N", "N", "N", "K", "N", "E", "N", "K"]
CARE = ["none", "none", "CIN", "none", "none", "CPP", "none", "CLA"]


def school_tables(
    schools: int, pupils: int, exits: list[tuple[int, int, str]], *, letters: bool = False
) -> dict[str, Table | None]:
    """`schools` schools of `pupils` pupils each; `exits` as (school, pupil, destination).

    Values cycle through every code so that small data still has some variety; an EHE
    exit gets the ground 9(1)(f), others 9(1)(a) (or 9(1)(g) for a move away).
    """
    pupil_rows: Table = [list(PUPIL_HEADER)]
    for s in range(schools):
        for p in range(pupils):
            i = s * pupils + p
            values = {
                "pupil_id": f"P{s:02d}{p:03d}",
                "urn": f"{100001 + s}",
                "year_group": str(7 + i % 5),
                "sen_provision": SEN[i % len(SEN)],
                "disadvantaged": "true" if i % 3 == 0 else "false",
                "social_care": CARE[i % len(CARE)],
                "sen_need": "SEMH" if SEN[i % len(SEN)] != "N" else "",
                "fsm": "true" if i % 4 == 0 else "false",
                "sex": "F" if i % 2 else "M",
                "attendance": f"{0.8 + (i % 10) / 60:.3f}",
                "suspensions": str(i % 3),
                "enrolment_status": "C",
                "on_roll_from": "2024-09-01",
                "on_roll_to": "",
                "family_id": f"F{s:02d}{p:03d}",
            }
            pupil_rows.append([values[h] for h in PUPIL_HEADER])
    exit_rows: Table = [list(EXIT_HEADER)]
    letter_rows: Table = [["letter_id", "file", "urn", "pupil_id", "received_date"]]
    for n, (s, p, destination) in enumerate(exits):
        ground = {"EHE": "9(1)(f)", "MOVED_AWAY": "9(1)(g)"}.get(destination, "9(1)(a)")
        letter = f"L{n}" if letters and destination == "EHE" else ""
        values = {
            "pupil_id": f"P{s:02d}{p:03d}",
            "urn": f"{100001 + s}",
            "exit_date": f"2024-{9 + n % 4:02d}-{10 + n % 15:02d}",
            "destination": destination,
            "ground": ground,
            "destination_urn": "",
            "address_changed": "true" if destination == "SCHOOL" and n % 2 else "false",
            "reason": "HEALTH_MENTAL" if destination == "EHE" else "",
            "returned_date": "",
            "letter_id": letter,
        }
        exit_rows.append([values[h] for h in EXIT_HEADER])
        if letter:
            letter_rows.append([letter, f"{letter}.txt", values["urn"], values["pupil_id"], ""])
    school_rows: Table = [["urn", "name", "phase", "type", "trust"]]
    school_rows += [
        [f"{100001 + s}", f"School {s}", "secondary", "academy", "Trust A" if s % 2 else ""]
        for s in range(schools)
    ]
    return {
        "pupils": pupil_rows,
        "exits": exit_rows,
        "schools": school_rows,
        "letters": letter_rows if letters else None,
    }


def letter_texts(tables: dict[str, Table | None]) -> dict[str, str]:
    """A plain letter for every row of the letters table."""
    rows = tables.get("letters") or [[]]
    return {
        row[1]: f"Dear Head, we will educate child {row[3]} at home from now on. Yours, a parent.\n"
        for row in rows[1:]
    }


Build = Callable[[Path], None]


def dataset(
    tables: dict[str, Table | None] | None = None, *then: Build, letters: bool = True
) -> Build:
    """A builder: write `tables` (default: the conftest dataset) in place of the folder's
    files, with a letter for each letters row (else conftest's one letter), then apply
    `then`. Other builders edit the conftest dataset already in the folder."""

    def build(folder: Path) -> None:
        shutil.rmtree(folder)
        chosen = base_tables() if tables is None else tables
        texts = letter_texts(chosen) if tables is not None and letters else None
        write_dataset(folder, chosen, letter_files=texts)
        for step in then:
            step(folder)

    return build


def steps(*builds: Build) -> Build:
    """Several builders, one after the other."""

    def build(folder: Path) -> None:
        for step in builds:
            step(folder)

    return build


def edited(edit: Callable[[dict[str, Table | None]], None], *then: Build) -> Build:
    """The conftest dataset with `edit` applied to its tables."""
    tables: dict[str, Table | None] = dict(base_tables())
    edit(tables)
    return dataset(tables, *then, letters=False)


def cell(table: str, row: int, column: str, value: str) -> Callable[[Tables], None]:
    def edit(tables: Tables) -> None:
        set_cell(tables[table], row, column, value)  # type: ignore[arg-type]

    return edit


def rewrite(name: str, *, encoding: str = "utf-8", bom: bytes = b"", newline: str = "\n") -> Build:
    """Write a table again in another encoding or line ending."""

    def build(folder: Path) -> None:
        rows = list(csv_reader(folder / name))
        (folder / name).write_bytes(bom + csv_text(rows, newline).encode(encoding))

    return build


def csv_reader(path: Path) -> Iterator[list[str]]:
    import csv

    yield from csv.reader(io.StringIO(path.read_text(encoding="utf-8")))


def retable(name: str, change: Callable[[Table], None]) -> Build:
    def build(folder: Path) -> None:
        rows = list(csv_reader(folder / f"{name}.csv"))
        change(rows)
        (folder / f"{name}.csv").write_text(csv_text(rows), encoding="utf-8")

    return build


def as_xlsx(name: str, typed: bool = True, blank_top: bool = False) -> Build:
    """Replace a table's CSV by an .xlsx with numbers, booleans and dates as Excel keeps them."""

    def build(folder: Path) -> None:
        rows = list(csv_reader(folder / f"{name}.csv"))
        (folder / f"{name}.csv").unlink()
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        if blank_top:
            sheet.append([])
        sheet.append(rows[0])
        for row in rows[1:]:
            cells = zip(rows[0], row, strict=True)
            sheet.append([_typed(h, v) if typed else (v or None) for h, v in cells])
        workbook.save(folder / f"{name}.xlsx")

    return build


def _typed(header: str, value: str) -> object:
    if value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    if header in ("urn", "suspensions") and value.isdigit():
        return int(value)
    if header == "attendance":
        return float(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return dt.datetime.fromisoformat(value)
    return value


def as_parquet(name: str) -> Build:
    def build(folder: Path) -> None:
        frame = pl.read_csv(folder / f"{name}.csv", infer_schema=False)
        (folder / f"{name}.csv").unlink()
        frame.write_parquet(folder / f"{name}.parquet")

    return build


def stray_cell_xlsx(value: bool = False) -> Build:
    """pupils as .xlsx with one far cell: formatted and empty (Excel's artefact) or holding 1."""

    def build(folder: Path) -> None:
        rows = list(csv_reader(folder / "pupils.csv"))
        (folder / "pupils.csv").unlink()
        far = '<c r="XFD1048576"><v>1</v></c>' if value else '<c r="XFD1048576" s="1"/>'
        sheet = sheet_xml(
            sheet_rows(rows, tail=f'<row r="1048576">{far}</row>'), dimension="A1:XFD1048576"
        )
        (folder / "pupils.xlsx").write_bytes(zip_bytes(workbook_parts(sheet)))

    return build


def write(name: str, data: bytes | str) -> Build:
    def build(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return build


def remove(name: str) -> Build:
    def build(folder: Path) -> None:
        (folder / name).unlink()

    return build


def map_column(table: str, column: str, mapping: dict[str, str]) -> Build:
    def change(rows: Table) -> None:
        index = rows[0].index(column)
        for row in rows[1:]:
            row[index] = mapping.get(row[index], row[index])

    return retable(table, change)


def rename(table: str, names: dict[str, str]) -> Build:
    def change(rows: Table) -> None:
        rows[0] = [names.get(h, h) for h in rows[0]]

    return retable(table, change)


def uk_dates(table: str) -> Build:
    def change(rows: Table) -> None:
        for row in rows[1:]:
            for i, value in enumerate(row):
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                    year, month, day = value.split("-")
                    row[i] = f"{day}/{month}/{year}"

    return retable(table, change)


def add_column(table: str, name: str, value: str) -> Build:
    def change(rows: Table) -> None:
        rows[0].append(name)
        for row in rows[1:]:
            row.append(value)

    return retable(table, change)


def drop_column(table: str, name: str) -> Build:
    def change(rows: Table) -> None:
        index = rows[0].index(name)
        for row in rows:
            del row[index]

    return retable(table, change)


def cp1252_names(folder: Path) -> None:
    rows = list(csv_reader(folder / "schools.csv"))
    rows[1][1] = "École Saint-Zoë"
    (folder / "schools.csv").write_bytes(csv_text(rows).encode("cp1252"))


def utf16(name: str) -> Build:
    return rewrite(name, encoding="utf-16")


def symlink_out(folder: Path) -> None:
    (folder / "letters" / "l1.txt").unlink()
    (folder / "letters" / "l1.txt").symlink_to("/etc/hostname")


# --------------------------------------------------------------------------- letter files


def pdf(text: str | None) -> bytes:
    """A one-page PDF; None: a page with no text (a scan)."""
    if text is None:
        ops = b"0.5 g 72 72 451 698 re f"
    else:
        ops = b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Producer (Test) >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents 6 0 R >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(ops), ops),
        ]
    )


def docx(text: str) -> bytes:
    """A .docx with one paragraph (empty text: a document with no text at all)."""
    import docx as python_docx

    document = python_docx.Document()
    if text:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


LETTER_TEXT = (
    "Dear Head, we have decided to educate our child at home from Monday. Yours, a parent."
)
GOOD_LETTERS = {
    "a.txt": LETTER_TEXT.encode(),
    "b.md": ("# Notice\n" + LETTER_TEXT).encode(),
    "c.docx": docx(LETTER_TEXT),
    "d.pdf": pdf(LETTER_TEXT),
}
BAD_LETTERS = {  # file -> what the warning says
    "empty.docx": (docx(""), "has no text"),
    "zero.docx": (b"", "corrupt zip"),
    "broken.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog", "not a readable PDF"),
    "scan.pdf": (pdf(None), "no text layer, needs OCR"),
    "notes.odt": (b"PK\x03\x04 an OpenDocument text", "unsupported type '.odt'"),
    "photo.jpg": (b"\xff\xd8\xff\xe0 a photo", "unsupported type '.jpg'"),
}


def with_letters(files: dict[str, bytes]) -> Build:
    """The conftest dataset with one letter row (urn 100001) per file."""

    def build(folder: Path) -> None:
        rows = [["letter_id", "file", "urn", "pupil_id", "received_date"]]
        for n, (name, data) in enumerate(files.items()):
            (folder / "letters" / name).write_bytes(data)
            rows.append([f"X{n}", name, "100001", "", "2024-10-10"])
        rows.append(["L1", "l1.txt", "100001", "P0003", "2024-10-10"])
        (folder / "letters.csv").write_text(csv_text(rows), encoding="utf-8")

    return build


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    valid: bool = True
    expected: tuple[str, int | None, str | None, str] | None = None  # file, row, column, words
    audit_args: tuple[str, ...] = ()
    workbooks: bool = False
    usage: str = ""  # valid data the audit refuses as a usage error (exit 2): its words


def valid(id: str, build: Build, *args: str, workbooks: bool = False) -> Case:
    """A valid input; `args` are extra options of `audit` (the window, say)."""
    assert all(isinstance(a, str) for a in args), "combine builders with steps()"
    return Case(id, build, audit_args=args, workbooks=workbooks)


def broken(
    id: str, build: Build, file: str, row: int | None, column: str | None, words: str
) -> Case:
    return Case(id, build, valid=False, expected=(file, row, column, words))


WINDOW = ("--from", "2024-09-01", "--to", "2024-12-20")
EHE_AND_OTHERS = [(0, 1, "EHE"), (0, 2, "SCHOOL"), (1, 3, "EHE"), (1, 0, "MOVED_AWAY")]

CORPUS: list[Case] = [
    # small and valid
    valid("conftest_dataset", dataset(), workbooks=True),
    valid("one_school", dataset(school_tables(1, 6, [(0, 1, "EHE"), (0, 2, "SCHOOL")]))),
    valid("one_school_one_pupil", dataset(school_tables(1, 1, [(0, 0, "EHE")]))),
    valid("two_schools", dataset(school_tables(2, 5, EHE_AND_OTHERS))),
    valid("three_schools_letters", dataset(school_tables(3, 4, EHE_AND_OTHERS, letters=True))),
    valid(
        "five_schools",
        dataset(school_tables(5, 8, [(s, p, "EHE") for s in range(5) for p in range(s % 3)])),
        workbooks=True,
    ),
    valid("four_schools_no_ehe", dataset(school_tables(4, 5, [(0, 1, "SCHOOL"), (2, 2, "AP")]))),
    valid("all_exits_ehe", dataset(school_tables(3, 3, [(s, 0, "EHE") for s in range(3)]))),
    valid("no_exits_from_to", dataset(school_tables(3, 5, [])), *WINDOW),
    valid("no_exits_term", dataset(school_tables(2, 5, [])), "--term", "2024-AUT"),
    valid("required_tables_only", edited(lambda t: t.update(schools=None, letters=None))),
    valid("letters_every_format", with_letters(GOOD_LETTERS)),
    valid("letters_unreadable_warn", with_letters({k: v for k, (v, _) in BAD_LETTERS.items()})),
    valid("census_column", add_column("pupils", "census", "2024-AUT")),
    valid(
        "grounds_decide_destination",
        edited(cell("exits", 3, "ground", "9(1)(k)"), drop_column("exits", "destination")),
    ),
    valid("exit_outside_the_window", dataset(), "--term", "2025-SUM"),
    # messy and valid
    valid("utf8_bom", rewrite("pupils.csv", bom=codecs.BOM_UTF8)),
    valid("cp1252_names", cp1252_names),
    valid("utf16_bom", utf16("exits.csv")),
    valid(
        "crlf", steps(rewrite("pupils.csv", newline="\r\n"), rewrite("exits.csv", newline="\r\n"))
    ),
    valid("uk_dates", steps(uk_dates("pupils"), uk_dates("exits"))),
    valid("y_n_booleans", map_column("pupils", "disadvantaged", {"true": "Y", "false": "N"})),
    valid(
        "mis_headers",
        rename(
            "pupils",
            {"pupil_id": "UPN", "sen_provision": "SEN Provision", "disadvantaged": "FSM6"},
        ),
    ),
    valid("pupils_xlsx", as_xlsx("pupils"), workbooks=True),
    valid("exits_xlsx_text_cells", as_xlsx("exits", typed=False)),
    valid("schools_xlsx_blank_top_row", as_xlsx("schools", blank_top=True)),
    valid("parquet_tables", steps(as_parquet("pupils"), as_parquet("exits"))),
    valid("stray_far_cell_xlsx", stray_cell_xlsx(), workbooks=True),
    valid("extra_columns", add_column("pupils", "Notes (free text)", "said no, then left")),
    valid("exact_duplicate_row", retable("pupils", lambda r: r.append(list(r[3])))),
    # broken and hostile
    broken(
        "bad_sen_provision",
        edited(cell("pupils", 3, "sen_provision", "X")),
        "pupils.csv",
        3,
        "sen_provision",
        "'X' is not a valid",
    ),
    broken(
        "bad_urn", edited(cell("exits", 2, "urn", "12345")), "exits.csv", 2, "urn", "not a valid"
    ),
    broken(
        "bad_date",
        edited(cell("exits", 3, "exit_date", "31/02/2024")),
        "exits.csv",
        3,
        "exit_date",
        "not a valid",
    ),
    broken(
        "wrong_upn_check_letter",
        edited(cell("pupils", 2, "pupil_id", "C801200005001")),
        "pupils.csv",
        2,
        "pupil_id",
        "check letter",
    ),
    broken(
        "returned_before_exit",
        edited(cell("exits", 2, "returned_date", "2024-09-01")),
        "exits.csv",
        2,
        "returned_date",
        "before exit_date",
    ),
    broken(
        "destination_undecided",
        edited(cell("exits", 3, "destination", "")),
        "exits.csv",
        3,
        "destination",
        "does not decide",
    ),
    broken(
        "missing_required_column",
        drop_column("pupils", "social_care"),
        "pupils.csv",
        1,
        "social_care",
        "required column",
    ),
    broken(
        "duplicate_header", add_column("pupils", "urn", "100001"), "pupils.csv", 1, "urn", "twice"
    ),
    broken(
        "duplicate_header_xlsx",
        steps(add_column("schools", "urn", "100001"), as_xlsx("schools")),
        "schools.xlsx",
        1,
        "urn",
        "twice",
    ),
    broken(
        "duplicate_stems",
        write("pupils.parquet", b"PAR1"),
        "pupils.csv and pupils.parquet",
        None,
        None,
        "two files",
    ),
    broken("pupils_missing", remove("pupils.csv"), "pupils.csv", None, None, "missing"),
    broken(
        "pupils_header_only",
        write("pupils.csv", ",".join(PUPIL_HEADER) + "\n"),
        "pupils.csv",
        None,
        None,
        "no pupils",
    ),
    broken("exits_empty_file", write("exits.csv", b""), "exits.csv", None, None, "empty"),
    broken(
        "exit_not_on_roll",
        edited(cell("exits", 2, "pupil_id", "P9999")),
        "exits.csv",
        2,
        "pupil_id",
        "not on this school's roll",
    ),
    broken(
        "conflicting_duplicates",
        retable("pupils", lambda r: r.append([*r[2][:3], "E", *r[2][4:]])),
        "pupils.csv",
        7,
        "pupil_id",
        "different data",
    ),
    broken(
        "unknown_letter_id",
        edited(cell("exits", 2, "letter_id", "L404")),
        "exits.csv",
        2,
        "letter_id",
        "not in letters",
    ),
    broken(
        "letter_path_traversal",
        edited(cell("letters", 2, "file", "../../../etc/passwd")),
        "letters.csv",
        2,
        "file",
        "outside letters/",
    ),
    broken("letter_symlink_out", symlink_out, "letters.csv", 2, "file", "leaves letters/"),
    broken(
        "letter_file_missing",
        edited(cell("letters", 2, "file", "gone.txt")),
        "letters.csv",
        2,
        "file",
        "does not exist",
    ),
    broken("zip_bomb_xlsx", declared_bomb, "pupils.xlsx", None, None, "zip bomb"),
    broken(
        "ratio_bomb_xlsx",
        lambda f: (
            (f / "pupils.csv").unlink(),
            (f / "pupils.xlsx").write_bytes(
                zip_bytes(
                    workbook_parts(
                        pupils_sheet().replace(b"<sheetData>", b"<sheetData>" + b" " * (40 << 20))
                    )
                )
            ),
        ),
        "pupils.xlsx",
        None,
        None,
        "zip bomb",
    ),
    broken(
        "corrupt_xlsx",
        lambda f: ((f / "exits.csv").unlink(), (f / "exits.xlsx").write_bytes(b"PK\x03\x04junk")),
        "exits.xlsx",
        None,
        None,
        "cannot be read as xlsx",
    ),
    broken(
        "not_a_zip_xlsx",
        lambda f: (f / "schools.csv").rename(f / "schools.xlsx"),
        "schools.xlsx",
        None,
        None,
        "not an Excel workbook",
    ),
    broken(
        "stray_value_far_cell",
        stray_cell_xlsx(value=True),
        "pupils.xlsx",
        1048576,
        "XFD",
        "XFD1048576",
    ),
    broken(
        "truncated_parquet",
        lambda f: (
            as_parquet("exits")(f),
            (f / "exits.parquet").write_bytes((f / "exits.parquet").read_bytes()[:200] + b"PAR1"),
        ),
        "exits.parquet",
        None,
        None,
        "cannot be read as parquet",
    ),
    broken(
        "xlsx_named_csv",
        lambda f: (as_xlsx("exits")(f), (f / "exits.xlsx").rename(f / "exits.csv")),
        "exits.csv",
        None,
        None,
        "zip file",
    ),
    broken(
        "header_line_over_1mb",
        write("schools.csv", "u" * (2 << 20)),
        "schools.csv",
        1,
        None,
        "longer than",
    ),
    broken(
        "unclosed_quote",
        write("exits.csv", csv_text(base_tables()["exits"]).replace("\nP0004", '\n"P0004')),
        "exits.csv",
        3,
        None,
        "never closed",
    ),
    broken(
        "semicolons",
        write("schools.csv", "urn;name\n100001;Alpha\n"),
        "schools.csv",
        1,
        "urn",
        "semicolons",
    ),
    broken(
        "billion_laughs_xlsx",
        lambda f: (
            (f / "schools.csv").unlink(),
            (f / "schools.xlsx").write_bytes(
                zip_bytes(
                    workbook_parts(
                        sheet_xml(
                            sheet_rows([["urn"], ["100001"]]),
                            prolog='<!DOCTYPE w [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>',
                        )
                    )
                )
            ),
        ),
        "schools.xlsx",
        None,
        None,
        "DTD",
    ),
    Case("no_exits_no_window", dataset(school_tables(2, 4, [])), usage="window must be given"),
]


# cases also run as real processes: one valid, one messy, one broken of each reader
SUBPROCESS = {"one_school_one_pupil", "stray_far_cell_xlsx", "bad_sen_provision"}


def _sampled(job: str) -> bool:
    return job.split("/")[0] in SUBPROCESS


def run_here(args: list[str]) -> Run:
    """The CLI in this process: run_guarded is what `main` runs, so the exit code, stdout and
    stderr are the command's own (a crash would be an exception here, and fail the test)."""
    import contextlib
    import time

    from offroll_audit.cli import app
    from offroll_audit.console.errors import run_guarded

    stdout, stderr = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run_guarded(app, args, {"debug": False})
    return Run(args, code, stdout.getvalue(), stderr.getvalue(), time.monotonic() - start, 0.0)


@dataclass
class Outcome:
    folder: Path
    out: Path
    validate: Run
    audit: Run
    files: set[str] = field(default_factory=set)  # the dataset's file names


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case built, then validated and audited, two commands at a time."""
    root = tmp_path_factory.mktemp("corpus")
    jobs: dict[str, list[str]] = {}
    for case in CORPUS:
        folder = write_dataset(root / case.id)  # what most builders edit
        case.build(folder)
        out = root / f"{case.id}-out"
        audit = ["audit", str(folder), "--out", str(out), "--quiet", *case.audit_args]
        jobs[f"{case.id}/validate"] = ["validate", str(folder), "--json"]
        jobs[f"{case.id}/audit"] = audit + ([] if case.workbooks else ["--no-workbooks"])
    runs = {name: run_here(args) for name, args in jobs.items() if not _sampled(name)}
    runs.update(run_all({name: args for name, args in jobs.items() if _sampled(name)}))
    return {
        case.id: Outcome(
            root / case.id,
            root / f"{case.id}-out",
            runs[f"{case.id}/validate"],
            runs[f"{case.id}/audit"],
            {p.name for p in (root / case.id).iterdir()},
        )
        for case in CORPUS
    }


def test_the_sampled_cases_ran_as_real_processes(outcomes: dict[str, Outcome]) -> None:
    assert {c.id for c in CORPUS} >= SUBPROCESS
    for case in SUBPROCESS:
        assert outcomes[case].audit.peak_mb > 0  # measured by the limited runner


def test_corpus_is_large_and_varied() -> None:
    assert len({c.id for c in CORPUS}) == len(CORPUS) >= 60
    assert sum(c.valid for c in CORPUS) >= 25 and sum(not c.valid for c in CORPUS) >= 25


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CORPUS])
def test_corpus_case(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.id]
    for run in (outcome.validate, outcome.audit):
        crash = run.crashed()
        assert crash is None, f"{crash}\n{run.describe()}"
        assert run.code != 1, run.describe()
    assert outcome.validate.code == (0 if case.valid else 2), outcome.validate.describe()
    problems = json_problems(outcome.validate)
    errors = [p for p in problems if p["severity"] == "error"]
    if case.usage:  # the data is valid, the command line is not
        assert outcome.audit.code == 2 and case.usage in outcome.audit.stderr
        assert not outcome.out.exists(), "wrote outputs"
    elif case.valid:
        assert outcome.audit.code == 0, outcome.audit.describe()
        written = {p.name for p in outcome.out.iterdir()}
        wanted = {*OUTPUTS, *(["overview.xlsx"] if case.workbooks else [])}
        assert wanted <= written, f"missing {wanted - written}\n{outcome.audit.describe()}"
    if case.valid:
        assert not errors, outcome.validate.describe()
        return
    assert outcome.audit.code == 2, outcome.audit.describe()
    assert not outcome.out.exists() or not any(outcome.out.iterdir()), "wrote outputs"
    check_problem_lines(outcome)
    assert case.expected is not None
    file, row, column, words = case.expected
    found = [
        p
        for p in errors
        if (p["file"], p["row"], p["column"]) == (file, row, column)
        and words.lower() in (p["message"] + " " + p["hint"]).lower()
    ]
    shown = "\n".join(f"{p['file']}:{p['row']} [{p['column']}] {p['message']}" for p in errors)
    assert found, f"no problem {case.expected} in:\n{shown}"


def check_problem_lines(outcome: Outcome) -> None:
    """Each problem line of the failed audit names a file of the dataset (a cell: its row)."""
    lines = [
        line
        for line in outcome.audit.stderr.splitlines()
        if line.startswith(("error: ", "warning: "))
    ]
    assert lines, outcome.audit.describe()
    for line in lines:
        match = PROBLEM_LINE.match(line)
        assert match, f"not a problem line: {line!r}"
        _, where, row, column, message = match.groups()
        named = {part for part in where.split(" and ")}
        known = outcome.files | {f"{t}.csv" for t in ("pupils", "exits")}
        assert named <= known, f"{line!r} names no file of the dataset ({sorted(known)})"
        if re.search(r"'.*' is not a valid", message):  # about a cell: where it is
            assert row is not None and column is not None, line


# --------------------------------------------------------------------------- validate: letters


def letters_dataset(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = write_dataset(tmp_path / "data")
    with_letters(files)(folder)
    return folder


def test_validate_warns_about_each_letter_the_audit_would_leave_out(tmp_path: Path) -> None:
    from offroll_audit.letters import run_letters
    from offroll_audit.load import load_dataset

    files = {name: data for name, (data, _) in BAD_LETTERS.items()} | GOOD_LETTERS
    folder = letters_dataset(tmp_path, files)
    _, report = load_dataset(folder, check_letter_files=True)
    assert report.ok
    warned = {p.message: p for p in report.warnings if p.column == "file"}
    for name, (_, words) in BAD_LETTERS.items():
        problem = next((p for m, p in warned.items() if m.startswith(f"letter {name}:")), None)
        assert problem is not None, f"no warning for {name}: {sorted(warned)}"
        assert words in problem.message and problem.file == "letters.csv"
        assert problem.row == 2 + list(files).index(name)  # the manifest row
    assert not [m for m in warned if any(m.startswith(f"letter {g}:") for g in GOOD_LETTERS)]
    dataset, _ = load_dataset(folder)
    audit_words = {w for w in run_letters(dataset).warnings if w.startswith("letter ")}
    assert audit_words == set(warned), "validate and audit word the letters differently"


def test_validate_command_lists_letter_warnings_and_exits_0(tmp_path: Path) -> None:
    folder = letters_dataset(tmp_path, {"scan.pdf": pdf(None), "notes.odt": b"PK\x03\x04"})
    run = run_all({"validate": ["validate", str(folder), "--json"]})["validate"]
    assert run.code == 0, run.describe()
    messages = {p["message"] for p in json_problems(run) if p["severity"] == "warning"}
    assert "letter scan.pdf: no text layer, needs OCR" in messages
    assert "letter notes.odt: has an unsupported type '.odt'; it was left out" in messages


def test_each_letter_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offroll_audit import extract
    from offroll_audit.load import load_dataset

    folder = letters_dataset(tmp_path, {"a.txt": LETTER_TEXT.encode()})
    rows = (folder / "letters.csv").read_text(encoding="utf-8").splitlines()
    rows.append("X9,a.txt,100002,,2024-10-11")  # the same file named by a second row
    (folder / "letters.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    calls: list[Path] = []
    real = extract.extract_letter
    monkeypatch.setattr(extract, "extract_letter", lambda p, r: (calls.append(p), real(p, r))[1])
    load_dataset(folder, check_letter_files=True)
    assert len(calls) == len(set(calls)) == 2  # a.txt and l1.txt, each once
    calls.clear()
    load_dataset(folder)  # audit, letters and model do not pay for the check
    assert calls == []


def test_letter_check_is_not_run_for_refused_paths(tmp_path: Path) -> None:
    from offroll_audit.load import load_dataset
    from offroll_audit.problems import DataError

    folder = letters_dataset(tmp_path, {})
    (folder / "letters.csv").write_text(
        "letter_id,file,urn\nL1,../pupils.csv,100001\n", encoding="utf-8"
    )
    with pytest.raises(DataError) as raised:
        load_dataset(folder, check_letter_files=True)
    assert [p.severity for p in raised.value.report.problems if p.column == "file"] == ["error"]


def test_corpus_builders_write_what_they_say(tmp_path: Path) -> None:
    """The builders the corpus relies on: a dataset folder with the expected files."""
    folder = write_dataset(tmp_path / "x")
    dataset(school_tables(2, 3, [(0, 1, "EHE")], letters=True))(folder)
    assert {p.name for p in folder.iterdir()} == {
        "pupils.csv",
        "exits.csv",
        "schools.csv",
        "letters.csv",
        "letters",
    }
    assert (folder / "letters" / "L0.txt").read_text(encoding="utf-8").startswith("Dear Head")
    assert zipfile.is_zipfile(io.BytesIO(docx(LETTER_TEXT)))
    assert os.path.getsize(folder / "pupils.csv") > 0
