"""The loader (offroll_audit.load): every kind of bad input is reported, messy exports load.

Expected behaviour comes from the data contract, section 1: problems name the
file, the row as the user sees it in a spreadsheet (header = row 1; for .xlsx
the sheet row) and the column; `validate` exits 2 on any error, with no
traceback. Each bad-input case breaks one thing in an otherwise valid dataset
(tests/conftest.py) and checks the exact file, row and column reported.
"""

from __future__ import annotations

import builtins
import codecs
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
import polars as pl
import pytest
from conftest import ROWS, Table, base_tables, csv_text, set_cell, write_dataset
from polars.testing import assert_frame_equal

from offroll_audit.load import load_dataset
from offroll_audit.problems import DataError, Problem, Report
from offroll_audit.schema import TABLES as CANONICAL

Tables = dict[str, Table | None]


# --------------------------------------------------------------------------- helpers


def load_errors(folder: Path, **options: str) -> Report:
    """The report of a dataset that must fail to load."""
    with pytest.raises(DataError) as raised:
        load_dataset(folder, **options)
    assert raised.value.report.errors, "DataError without errors"
    return raised.value.report


def load_ok(folder: Path, **options: str):
    dataset, report = load_dataset(folder, **options)
    assert report.ok
    return dataset, report


def canonical(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """The contract's columns only, in a fixed row order: what later stages rely on."""
    names = [c.name for c in CANONICAL[table]]
    return frame.select(names).sort(names[:2], nulls_last=True)


@pytest.fixture(scope="module")
def base_frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    """The clean dataset's canonical frames: what every messy variant must equal."""
    dataset, _ = load_ok(write_dataset(tmp_path_factory.mktemp("base") / "data"))
    return {t: canonical(getattr(dataset, t), t) for t in CANONICAL}


def find(
    problems: list[Problem], file: str, row: int | None, column: str | None, fragment: str
) -> Problem | None:
    for p in problems:
        text = f"{p.message} {p.hint}".lower()
        if (p.file, p.row, p.column) == (file, row, column) and fragment.lower() in text:
            return p
    return None


def assert_reported(
    problems: list[Problem], file: str, row: int | None, column: str | None, fragment: str
) -> None:
    if find(problems, file, row, column, fragment) is None:
        shown = "\n".join(p.line() for p in problems)
        raise AssertionError(f"no problem ({file}, {row}, {column}, {fragment!r}) in:\n{shown}")


def write_xlsx(path: Path, rows: list[list[object]]) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def drop_column(table: Table, column: str) -> None:
    index = table[0].index(column)
    for row in table:
        del row[index]


def add_column(table: Table, column: str, values: list[str]) -> None:
    table[0].append(column)
    for row, value in zip(table[1:], values, strict=True):
        row.append(value)


def raw_text(folder: Path, name: str) -> str:
    return (folder / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- bad input


@dataclass
class Bad:
    """One kind of bad input: edit the tables, then the written files; what must be reported."""

    id: str
    expected: list[tuple[str, int | None, str | None, str]]
    tables: Callable[[Tables], None] | None = None
    files: Callable[[Path], None] | None = None
    options: dict[str, str] = field(default_factory=dict)


def cell(table: str, row: int, column: str, value: str) -> Callable[[Tables], None]:
    def edit(tables: Tables) -> None:
        set_cell(tables[table], row, column, value)  # type: ignore[arg-type]

    return edit


def without(table: str) -> Callable[[Tables], None]:
    def edit(tables: Tables) -> None:
        tables[table] = None

    return edit


def column_dropped(table: str, column: str) -> Callable[[Tables], None]:
    def edit(tables: Tables) -> None:
        drop_column(tables[table], column)  # type: ignore[arg-type]

    return edit


def edits(*steps: Callable[[Tables], None]) -> Callable[[Tables], None]:
    def edit(tables: Tables) -> None:
        for step in steps:
            step(tables)

    return edit


def replace_in(name: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        text = raw_text(folder, name)
        assert old in text, f"{old!r} not in {name}"
        (folder / name).write_text(text.replace(old, new, 1), encoding="utf-8")

    return edit


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(data)

    return edit


def pupils_xlsx_with_bad_cell(folder: Path) -> None:
    """pupils as .xlsx: a blank first sheet row, a blank row, then a bad code at sheet row 6."""
    table = base_tables()["pupils"]
    set_cell(table, 4, "sen_provision", "X")  # data row 3 -> sheet row 5, +1 for the top row
    rows: list[list[object]] = [[], table[0], table[1], []]
    rows += [[int(c) if c.isdigit() and len(c) == 6 else c for c in r] for r in table[2:]]
    (folder / "pupils.csv").unlink()
    write_xlsx(folder / "pupils.xlsx", rows)


def duplicated_header(tables: Tables) -> None:
    add_column(tables["pupils"], "urn", ["100001"] * ROWS["pupils"])  # type: ignore[arg-type]


def ambiguous_header(tables: Tables) -> None:
    add_column(tables["pupils"], "UPN", ["X"] * ROWS["pupils"])  # type: ignore[arg-type]


def census_column(value: str) -> Callable[[Tables], None]:
    def edit(tables: Tables) -> None:
        values = ["2024-AUT"] * ROWS["pupils"]
        values[1] = value  # row 3
        add_column(tables["pupils"], "census", values)  # type: ignore[arg-type]

    return edit


def letters_escape(path: str) -> Callable[[Tables], None]:
    return cell("letters", 2, "file", path)


def symlink_out(folder: Path) -> None:
    secret = folder.parent / "secret.txt"
    secret.write_text("not a letter\n")
    (folder / "letters" / "evil.txt").symlink_to(secret)


def symlinked_folder_out(folder: Path) -> None:
    outside = folder.parent / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("not a letter\n")
    (folder / "letters" / "sub").symlink_to(outside, target_is_directory=True)


def header_only(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        text = raw_text(folder, name)
        (folder / name).write_text(text.splitlines()[0] + "\n", encoding="utf-8")

    return edit


def undecodable(folder: Path) -> None:
    """Bytes that are neither UTF-8 nor Windows-1252 (0x81 and 0x8D are unassigned) on line 3."""
    text = raw_text(folder, "pupils.csv").encode("utf-8")
    (folder / "pupils.csv").write_bytes(text.replace(b"P0002", b"P\x81\x8d02", 1))


def utf16_no_bom(folder: Path) -> None:
    (folder / "pupils.csv").write_bytes(raw_text(folder, "pupils.csv").encode("utf-16-le"))


def semicolons(folder: Path) -> None:
    (folder / "pupils.csv").write_text(raw_text(folder, "pupils.csv").replace(",", ";"))


BAD: list[Bad] = [
    Bad(
        "pupils_file_missing",
        [("pupils.csv", None, None, "pupils table is missing")],
        tables=without("pupils"),
    ),
    Bad(
        "exits_file_missing",
        [("exits.csv", None, None, "exits table is missing")],
        tables=without("exits"),
    ),
    Bad(
        "two_files_one_stem",
        [("pupils.csv and pupils.xlsx", None, None, "two files")],
        files=lambda f: write_xlsx(f / "pupils.xlsx", [["pupil_id"], ["P1"]]),
    ),
    Bad(
        "required_column_missing",
        [("pupils.csv", 1, "social_care", "required column")],
        tables=column_dropped("pupils", "social_care"),
    ),
    Bad(
        "required_exits_column_missing",
        [("exits.csv", 1, "exit_date", "required column")],
        tables=column_dropped("exits", "exit_date"),
    ),
    Bad(
        "destination_and_ground_columns_missing",
        [("exits.csv", 1, "destination", "required column")],
        tables=edits(column_dropped("exits", "destination"), column_dropped("exits", "ground")),
    ),
    Bad(
        "ambiguous_columns",
        [("pupils.csv", 1, "pupil_id", "several columns")],
        tables=ambiguous_header,
    ),
    Bad("duplicated_header", [("pupils.csv", 1, "urn", "appears twice")], tables=duplicated_header),
    Bad(
        "bad_urn",
        [("pupils.csv", 3, "urn", "not a valid urn")],
        tables=cell("pupils", 3, "urn", "10001"),
    ),
    Bad(
        "bad_year_group",
        [("pupils.csv", 3, "year_group", "not a valid year_group")],
        tables=cell("pupils", 3, "year_group", "15"),
    ),
    Bad(
        "bad_sen_provision",
        [("pupils.csv", 4, "sen_provision", "'X' is not a valid")],
        tables=cell("pupils", 4, "sen_provision", "X"),
    ),
    Bad(
        "bad_boolean",
        [("pupils.csv", 2, "disadvantaged", "'maybe' is not a valid")],
        tables=cell("pupils", 2, "disadvantaged", "maybe"),
    ),
    Bad(
        "bad_optional_boolean",
        [("exits.csv", 3, "address_changed", "not a valid")],
        tables=cell("exits", 3, "address_changed", "moved"),
    ),
    Bad(
        "bad_social_care",
        [("pupils.csv", 5, "social_care", "'LAC' is not a valid")],
        tables=cell("pupils", 5, "social_care", "LAC"),
    ),
    Bad(
        "bad_date",
        [("exits.csv", 2, "exit_date", "'2024-13-01' is not a valid")],
        tables=cell("exits", 2, "exit_date", "2024-13-01"),
    ),
    Bad(
        "impossible_uk_date",
        [("exits.csv", 3, "exit_date", "not a valid exit_date")],
        tables=cell("exits", 3, "exit_date", "31/02/2024"),
    ),
    Bad(
        "us_date",
        [("exits.csv", 3, "exit_date", "not a valid exit_date")],
        tables=cell("exits", 3, "exit_date", "11/25/2024"),
    ),
    Bad(
        "bad_optional_date",
        [("pupils.csv", 6, "on_roll_from", "not a valid on_roll_from")],
        tables=cell("pupils", 6, "on_roll_from", "sometime"),
    ),
    Bad(
        "bad_destination",
        [("exits.csv", 3, "destination", "'HOME' is not a valid")],
        tables=cell("exits", 3, "destination", "HOME"),
    ),
    Bad(
        "ground_does_not_decide_destination",
        [("exits.csv", 3, "destination", "ground does not decide")],
        tables=cell("exits", 3, "destination", ""),
    ),
    Bad(
        "destination_and_ground_empty",
        [("exits.csv", 2, "destination", "destination is empty")],
        tables=edits(cell("exits", 2, "destination", ""), cell("exits", 2, "ground", "NA")),
    ),
    Bad(
        "invalid_reason",
        [("exits.csv", 2, "reason", "'BORED' is not a valid reason")],
        tables=cell("exits", 2, "reason", "BORED"),
    ),
    Bad(
        "invalid_sen_need",
        [("pupils.csv", 3, "sen_need", "'ADHD' is not a valid")],
        tables=cell("pupils", 3, "sen_need", "ADHD"),
    ),
    Bad(
        "attendance_above_one",
        [("pupils.csv", 4, "attendance", "between 0 and 1")],
        tables=cell("pupils", 4, "attendance", "1.2"),
    ),
    Bad(
        "attendance_above_100_percent",
        [("pupils.csv", 2, "attendance", "between 0 and 1")],
        tables=cell("pupils", 2, "attendance", "150%"),
    ),
    Bad(
        "attendance_not_a_number",
        [("pupils.csv", 2, "attendance", "not a valid attendance")],
        tables=cell("pupils", 2, "attendance", "good"),
    ),
    Bad(
        "negative_suspensions",
        [("pupils.csv", 3, "suspensions", "cannot be negative")],
        tables=cell("pupils", 3, "suspensions", "-1"),
    ),
    Bad(
        "fractional_suspensions",
        [("pupils.csv", 3, "suspensions", "whole number")],
        tables=cell("pupils", 3, "suspensions", "1.5"),
    ),
    Bad(
        "upn_wrong_check_letter",
        [("pupils.csv", 2, "pupil_id", "wrong check letter")],
        tables=cell("pupils", 2, "pupil_id", "C801200005001"),
    ),
    Bad(
        "temporary_upn_ending_in_i",
        [("pupils.csv", 2, "pupil_id", "wrong check letter")],
        tables=cell("pupils", 2, "pupil_id", "B80120000500I"),
    ),
    Bad(
        "required_value_empty",
        [("pupils.csv", 4, "sen_provision", "sen_provision is empty")],
        tables=cell("pupils", 4, "sen_provision", ""),
    ),
    Bad(
        "required_value_na",
        [("pupils.csv", 5, "year_group", "year_group is empty")],
        tables=cell("pupils", 5, "year_group", "N/A"),
    ),
    Bad(
        "required_text_value_null",
        [("exits.csv", 3, "pupil_id", "pupil_id is empty")],
        tables=cell("exits", 3, "pupil_id", "NULL"),
    ),
    Bad(
        "duplicates_disagree",
        [("pupils.csv", 7, "pupil_id", "same pupil_id + urn as row 3")],
        tables=lambda t: t["pupils"].append(  # type: ignore[union-attr]
            [*t["pupils"][2][:2], "9", *t["pupils"][2][3:]]
        ),
    ),  # type: ignore[index]
    Bad(
        "exit_pupil_not_on_that_roll",
        [("exits.csv", 2, "pupil_id", "not on this school's roll")],
        tables=cell("exits", 2, "urn", "100002"),
    ),
    Bad(
        "exit_pupil_unknown",
        [("exits.csv", 3, "pupil_id", "not on this school's roll")],
        tables=cell("exits", 3, "pupil_id", "P9999"),
    ),
    Bad(
        "letter_file_missing",
        [("letters.csv", 2, "file", "does not exist")],
        tables=letters_escape("missing.txt"),
    ),
    Bad(
        "letter_path_dotdot",
        [("letters.csv", 2, "file", "goes outside letters/")],
        tables=letters_escape("../pupils.csv"),
    ),
    Bad(
        "letter_path_dotdot_inside",
        [("letters.csv", 2, "file", "goes outside letters/")],
        tables=letters_escape("sub/../../exits.csv"),
    ),
    Bad(
        "letter_path_absolute",
        [("letters.csv", 2, "file", "absolute path")],
        tables=letters_escape("/etc/hostname"),
    ),
    Bad(
        "letter_path_windows_absolute",
        [("letters.csv", 2, "file", "absolute path")],
        tables=letters_escape("C:\\letters\\l1.txt"),
    ),
    Bad(
        "letter_symlink_leaves",
        [("letters.csv", 2, "file", "link that leaves letters/")],
        tables=letters_escape("evil.txt"),
        files=symlink_out,
    ),
    Bad(
        "letter_symlinked_folder_leaves",
        [("letters.csv", 2, "file", "leaves letters/")],
        tables=letters_escape("sub/x.txt"),
        files=symlinked_folder_out,
    ),
    Bad(
        "letter_id_not_in_letters",
        [("exits.csv", 2, "letter_id", "not in letters")],
        tables=cell("exits", 2, "letter_id", "L9"),
    ),
    Bad(
        "letters_required_column_missing",
        [("letters.csv", 1, "file", "required column")],
        tables=column_dropped("letters", "file"),
    ),
    Bad(
        "ragged_row",
        [("pupils.csv", 4, None, "more cells than the header")],
        files=replace_in("pupils.csv", "F3\n", "F3,extra,cells\n"),
    ),
    Bad(
        "unclosed_quote",
        [("exits.csv", 3, None, "never closed")],
        files=replace_in("exits.csv", "P0004,", '"P0004,'),
    ),
    Bad("undecodable_bytes", [("pupils.csv", 3, None, "--encoding cp1252")], files=undecodable),
    Bad(
        "wrong_explicit_encoding",
        [("pupils.csv", 3, None, "cannot be decoded as utf-8")],
        files=undecodable,
        options={"encoding": "utf-8"},
    ),
    Bad(
        "unknown_encoding",
        [("pupils.csv", None, None, "not an encoding")],
        options={"encoding": "klingon"},
        files=undecodable,
    ),
    Bad(
        "utf16_without_bom",
        [("pupils.csv", None, None, "UTF-16 without a byte-order mark")],
        files=utf16_no_bom,
    ),
    Bad("semicolon_separated", [("pupils.csv", 1, "pupil_id", "semicolons")], files=semicolons),
    Bad("empty_file", [("exits.csv", None, None, "empty")], files=write_bytes("exits.csv", b"")),
    Bad(
        "blank_file",
        [("exits.csv", None, None, "empty")],
        files=write_bytes("exits.csv", b"\xef\xbb\xbf\r\n\r\n"),
    ),
    Bad(
        "header_only_pupils",
        [("pupils.csv", None, None, "no pupils")],
        files=header_only("pupils.csv"),
    ),
    Bad(
        "bad_destination_urn",
        [("exits.csv", 3, "destination_urn", "a URN has 6 digits")],
        tables=cell("exits", 3, "destination_urn", "12345"),
    ),
    Bad(
        "bad_census",
        [("pupils.csv", 3, "census", "'2024-AUTUMN' is not a valid census")],
        tables=census_column("2024-AUTUMN"),
    ),
    Bad(
        "bad_enrolment_status",
        [("pupils.csv", 6, "enrolment_status", "'D' is not a valid")],
        tables=cell("pupils", 6, "enrolment_status", "D"),
    ),
    Bad(
        "on_roll_from_after_on_roll_to",
        [("pupils.csv", 4, "on_roll_to", "before on_roll_from")],
        tables=cell("pupils", 4, "on_roll_from", "2024-10-20"),
    ),
    Bad(
        "returned_before_exit",
        [("exits.csv", 2, "returned_date", "before exit_date")],
        tables=cell("exits", 2, "returned_date", "01/09/2024"),
    ),
    Bad(
        "bad_school_phase",
        [("schools.csv", 3, "phase", "'college' is not a valid phase")],
        tables=cell("schools", 3, "phase", "college"),
    ),
    Bad(
        "xlsx_bad_cell_sheet_row",
        [("pupils.xlsx", 6, "sen_provision", "'X' is not a valid")],
        files=pupils_xlsx_with_bad_cell,
    ),
    Bad(
        "corrupt_xlsx",
        [("exits.xlsx", None, None, "cannot be read as xlsx")],
        files=lambda f: ((f / "exits.csv").unlink(), write_bytes("exits.xlsx", b"PK junk")(f)),
    ),
    Bad(
        "corrupt_parquet",
        [("exits.parquet", None, None, "cannot be read as parquet")],
        files=lambda f: ((f / "exits.csv").unlink(), write_bytes("exits.parquet", b"PAR1")(f)),
    ),
    Bad(
        "empty_xlsx_sheet",
        [("exits.xlsx", None, None, "first sheet is empty")],
        files=lambda f: ((f / "exits.csv").unlink(), write_xlsx(f / "exits.xlsx", [])),
    ),
    Bad(
        "xlsx_named_csv",
        [("exits.csv", None, None, "zip file")],
        files=lambda f: write_xlsx(f / "exits.csv", [["pupil_id"], ["P0003"]]),
    ),
]


def make_bad(case: Bad, tmp_path: Path) -> Path:
    tables: Tables = dict(base_tables())
    if case.tables:
        case.tables(tables)
    folder = write_dataset(tmp_path / "data", tables)
    if case.files:
        case.files(folder)
    return folder


def test_enough_kinds_of_bad_input() -> None:
    assert len({c.id for c in BAD}) == len(BAD) >= 25


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD])
def test_bad_input_is_reported_with_file_row_and_column(case: Bad, tmp_path: Path) -> None:
    folder = make_bad(case, tmp_path)
    report = load_errors(folder, **case.options)
    for expected in case.expected:
        assert_reported(report.errors, *expected)
    for problem in report.problems:  # never a whole record: at most one cell
        assert len(problem.message) < 400
        assert "B801200005001,100001" not in problem.message


# Through the command too: every third kind (all kinds are checked through the library above).
CLI_SUBSET = [c for i, c in enumerate(BAD) if i % 3 == 0 or c.options]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CLI_SUBSET])
def test_validate_exits_2_with_the_problem_and_no_traceback(
    case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from offroll_audit.cli import main

    folder = make_bad(case, tmp_path)
    encoding = ["--encoding", case.options["encoding"]] if "encoding" in case.options else []
    with pytest.raises(SystemExit) as stopped:
        main(["validate", str(folder), "--json", *encoding])
    out, err = capsys.readouterr()
    assert stopped.value.code == 2, out + err
    assert "Traceback" not in out + err
    result = json.loads(out)
    assert result["valid"] is False
    problems = [Problem(**p) for p in result["problems"]]
    for expected in case.expected:
        assert_reported([p for p in problems if p.severity == "error"], *expected)


CLI_CASES = ["bad_sen_provision", "undecodable_bytes"]


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_validate_command_in_a_subprocess(case_id: str, tmp_path: Path) -> None:
    """The installed entry point: exit code 2, a table naming file/row/column, no traceback."""
    case = next(c for c in BAD if c.id == case_id)
    folder = make_bad(case, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "offroll_audit", "validate", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    file, row, column, _ = case.expected[0]
    assert file in output and "not valid" in output
    if row is not None:
        assert f"│ {row} " in output
    if column is not None:
        assert column in output


def test_validate_valid_dataset_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from offroll_audit.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["validate", str(write_dataset(tmp_path / "data")), "--json"])
    assert stopped.value.code == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_not_a_folder(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    report = load_errors(folder / "pupils.csv")
    assert "not a folder" in report.errors[0].message


def test_many_bad_cells_are_listed_then_counted(tmp_path: Path) -> None:
    tables = base_tables()
    pupils = tables["pupils"]
    template = pupils[2]
    for n in range(30):
        pupils.append([f"Q{n:03d}", *template[1:3], f"Z{n}", *template[4:]])
    report = load_errors(write_dataset(tmp_path / "data", tables))
    rows = [p for p in report.errors if p.column == "sen_provision"]
    assert [p.row for p in rows[:20]] == list(range(7, 27))
    assert [p.message for p in rows[:2]] == [
        "'Z0' is not a valid sen_provision",
        "'Z1' is not a valid sen_provision",
    ]
    assert rows[20].row is None and "10 more rows" in rows[20].message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    tables = base_tables()
    set_cell(tables["pupils"], 2, "urn", "1")
    set_cell(tables["pupils"], 3, "year_group", "99")
    set_cell(tables["exits"], 3, "exit_date", "yesterday")
    set_cell(tables["letters"], 2, "file", "../x")
    report = load_errors(write_dataset(tmp_path / "data", tables))
    assert_reported(report.errors, "pupils.csv", 2, "urn", "not a valid")
    assert_reported(report.errors, "pupils.csv", 3, "year_group", "not a valid")
    assert_reported(report.errors, "exits.csv", 3, "exit_date", "not a valid")
    assert_reported(report.errors, "letters.csv", 2, "file", "outside")


# --------------------------------------------------------------------------- row numbers


def test_row_numbers_count_quoted_multiline_cells_as_one_row(tmp_path: Path) -> None:
    """A spreadsheet shows a cell with line breaks as one row; so do problems."""
    tables = base_tables()
    add_column(tables["pupils"], "notes", ["a, b", "line 1\nline 2\nline 3", "", "", ""])
    set_cell(tables["pupils"], 5, "year_group", "Year 15")
    report = load_errors(write_dataset(tmp_path / "data", tables))
    assert_reported(report.errors, "pupils.csv", 5, "year_group", "'Year 15'")


def test_row_numbers_keep_blank_lines(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    text = raw_text(folder, "pupils.csv").splitlines(keepends=True)
    text.insert(2, "\n")  # a blank row 3
    text.insert(4, ",,,,,,,,,,,,,,\n")  # an empty row 5 (Excel's trailing rows look like this)
    (folder / "pupils.csv").write_text(
        "".join(text).replace("P0004,100002,11,N", "P0004,100002,11,Q")
    )
    report = load_errors(folder)
    assert_reported(report.errors, "pupils.csv", 7, "sen_provision", "'Q'")
    assert len(report.errors) == 1  # blank rows are not records: no "empty" errors for them


def test_xlsx_rows_are_sheet_rows_with_blank_rows(tmp_path: Path) -> None:
    case = next(c for c in BAD if c.id == "xlsx_bad_cell_sheet_row")
    report = load_errors(make_bad(case, tmp_path))
    assert [(p.file, p.row, p.column) for p in report.errors] == [
        ("pupils.xlsx", 6, "sen_provision")
    ]


def test_missing_column_is_named_with_a_hint(tmp_path: Path) -> None:
    tables = base_tables()
    drop_column(tables["pupils"], "urn")
    report = load_errors(write_dataset(tmp_path / "data", tables))
    [problem] = report.errors
    assert problem.hint.startswith("columns found: pupil_id, year_group")


# --------------------------------------------------------------------------- messy but valid


@dataclass
class Messy:
    """An export that differs from the base dataset only in form: it must load the same."""

    id: str
    write: Callable[[Path], None]
    warnings: tuple[str, ...] = ()  # fragments of expected warnings
    options: dict[str, str] = field(default_factory=dict)


def rewrite(
    name: str,
    change: Callable[[str], str] | None = None,
    *,
    encoding: str = "utf-8",
    newline: str = "\n",
    bom: bytes = b"",
) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        text = raw_text(folder, name)
        if change:
            text = change(text)
        text = text.replace("\n", newline)
        (folder / name).write_bytes(bom + text.encode(encoding))

    return write


def retable(table: str, change: Callable[[Table], None]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        rows = base_tables()[table]
        change(rows)
        (folder / f"{table}.csv").write_text(csv_text(rows), encoding="utf-8")

    return write


def map_column(column: str, mapping: dict[str, str]) -> Callable[[Table], None]:
    def change(rows: Table) -> None:
        index = rows[0].index(column)
        for row in rows[1:]:
            row[index] = mapping.get(row[index], row[index])

    return change


def map_all(change: Callable[[str, str], str]) -> Callable[[Table], None]:
    """Change every data cell: change(column, value) -> new value."""

    def apply(rows: Table) -> None:
        for row in rows[1:]:
            for i, value in enumerate(row):
                row[i] = change(rows[0][i], value)

    return apply


def uk_date(value: str) -> str:
    if len(value) == 10 and value[4] == "-":
        return dt.date.fromisoformat(value).strftime("%d/%m/%Y")
    return value


def with_time(value: str) -> str:
    return f"{value} 00:00:00" if len(value) == 10 and value[4] == "-" else value


def both(*writes: Callable[[Path], None]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for step in writes:
            step(folder)

    return write


def rename_headers(table: str, names: dict[str, str]) -> Callable[[Table], None]:
    def change(rows: Table) -> None:
        rows[0] = [names.get(h, h) for h in rows[0]]

    return change


BOOLS = ("disadvantaged", "fsm", "address_changed")
MISSING = ["NA", "N/A", "NULL", "n/a", "  ", "na"]


def missing_tokens(rows: Table) -> None:
    required = {c.name for t in CANONICAL.values() for c in t if c.required}
    counter = iter(range(10**6))
    for row in rows[1:]:
        for i, value in enumerate(row):
            if value == "" and rows[0][i] not in required:
                row[i] = MISSING[next(counter) % len(MISSING)]


def pupils_as_xlsx(folder: Path) -> None:
    """Typed cells as Excel keeps them: numbers, booleans, dates, blanks."""
    rows = base_tables()["pupils"]
    header, body = rows[0], rows[1:]
    typed: list[list[object]] = [list(header)]
    for row in body:
        cells: list[object] = []
        for name, value in zip(header, row, strict=True):
            if value == "":
                cells.append(None)
            elif name in ("disadvantaged", "fsm"):
                cells.append(value == "true")
            elif name in ("urn", "suspensions") or (name == "year_group" and value.isdigit()):
                cells.append(int(value))
            elif name == "attendance":
                cells.append(float(value))
            elif name.startswith("on_roll"):
                cells.append(dt.datetime.fromisoformat(value))
            else:
                cells.append(value)
        typed.append(cells)
    (folder / "pupils.csv").unlink()
    write_xlsx(folder / "pupils.xlsx", typed)


def exits_as_parquet(folder: Path) -> None:
    frame = pl.read_csv(folder / "exits.csv", infer_schema=False)
    frame = frame.with_columns(
        pl.col("exit_date").str.to_date(),
        pl.col("address_changed").replace_strict({"true": True, "false": False}, default=None),
    )
    (folder / "exits.csv").unlink()
    frame.write_parquet(folder / "exits.parquet")


def pupils_as_parquet(folder: Path) -> None:
    frame = pl.read_csv(folder / "pupils.csv", infer_schema=False)
    frame = frame.with_columns(pl.col("attendance").cast(pl.Float64), pl.col("urn").cast(pl.Int64))
    (folder / "pupils.csv").unlink()
    frame.write_parquet(folder / "pupils.parquet")


def extra_columns(rows: Table) -> None:
    add_column(rows, "Notes (free text)", ["x", "y, z", "", "NA", "w"])
    add_column(rows, "line", ["1", "2", "3", "4", "5"])


def quoted_cells(rows: Table) -> None:
    add_column(rows, "notes", ['said "no", then\nleft', "a,b,c", "\n", "", "é £ ü"])
    index = rows[0].index("sex")
    rows[2][index] = " M "


def exact_duplicate(rows: Table) -> None:
    rows.append(list(rows[3]))


def padded_lowercase(rows: Table) -> None:
    def change(column: str, value: str) -> str:
        if column in ("sen_provision", "social_care", "sen_need", "enrolment_status"):
            value = value.lower()
        return f"  {value}\t" if value else value

    map_all(change)(rows)


def grounds_decide(rows: Table) -> None:
    set_cell(rows, 2, "destination", "")
    set_cell(rows, 2, "ground", "9 (1)(F)")


MESSY: list[Messy] = [
    Messy("utf8_bom", rewrite("pupils.csv", bom=codecs.BOM_UTF8)),
    Messy("utf16_le_bom", rewrite("pupils.csv", encoding="utf-16")),
    Messy("utf16_be_bom", rewrite("exits.csv", encoding="utf-16-be", bom=codecs.BOM_UTF16_BE)),
    Messy(
        "crlf", both(rewrite("pupils.csv", newline="\r\n"), rewrite("exits.csv", newline="\r\n"))
    ),
    Messy("old_mac_cr", rewrite("exits.csv", newline="\r")),
    Messy(
        "uk_dates",
        both(
            retable("pupils", map_all(lambda c, v: uk_date(v))),
            retable("exits", map_all(lambda c, v: uk_date(v))),
        ),
    ),
    Messy("dates_with_time", retable("exits", map_all(lambda c, v: with_time(v)))),
    Messy(
        "y_n_booleans", retable("pupils", map_column("disadvantaged", {"true": "Y", "false": "n"}))
    ),
    Messy("yes_no_booleans", retable("pupils", map_column("fsm", {"true": "Yes", "false": "NO"}))),
    Messy(
        "one_zero_booleans",
        retable("exits", map_column("address_changed", {"true": "1", "false": "0"})),
    ),
    Messy(
        "mis_headers",
        retable(
            "pupils",
            rename_headers(
                "pupils",
                {
                    "pupil_id": "UPN",
                    "sen_provision": "SEN Provision",
                    "disadvantaged": "FSM6",
                    "year_group": "Year Group",
                    "social_care": "Social-Care",
                    "on_roll_from": "Entry Date",
                },
            ),
        ),
    ),
    Messy(
        "pupil_premium_header",
        retable(
            "pupils",
            rename_headers(
                "pupils",
                {"disadvantaged": "Pupil-Premium", "urn": "URN", "sen_need": "Primary SEN Need"},
            ),
        ),
    ),
    Messy("xlsx_typed_cells", pupils_as_xlsx),
    Messy("parquet", both(pupils_as_parquet, exits_as_parquet)),
    Messy("extra_columns", retable("pupils", extra_columns)),
    Messy("quoted_commas_newlines", retable("pupils", quoted_cells)),
    Messy(
        "year_group_spellings",
        retable(
            "pupils",
            map_column(
                "year_group",
                {"7": "Y7", "8": "Year 8", "10": "010", "11": "yr 11", "R": "Reception"},
            ),
        ),
    ),
    Messy(
        "attendance_percent",
        retable(
            "pupils", map_column("attendance", {"0.95": "95%", "0.81": "81 %", "0.9": "90.0%"})
        ),
    ),
    Messy(
        "missing_tokens", both(retable("pupils", missing_tokens), retable("exits", missing_tokens))
    ),
    Messy(
        "exact_duplicate_row",
        retable("pupils", exact_duplicate),
        warnings=("exact duplicate of an earlier row",),
    ),
    Messy("padded_lowercase_codes", retable("pupils", padded_lowercase)),
    Messy("ground_decides_destination", retable("exits", grounds_decide)),
    Messy(
        "explicit_encoding",
        rewrite("pupils.csv", encoding="cp1252"),
        options={"encoding": "cp1252"},
    ),
    Messy("trailing_empty_rows", rewrite("pupils.csv", lambda t: t + ",,,,\n\n,,\n")),
]


def test_enough_messy_variants() -> None:
    assert len({m.id for m in MESSY}) == len(MESSY) >= 10


@pytest.mark.parametrize("variant", [pytest.param(m, id=m.id) for m in MESSY])
def test_messy_export_loads_like_the_clean_one(
    variant: Messy, tmp_path: Path, base_frames: dict[str, pl.DataFrame]
) -> None:
    expected = base_frames
    folder = write_dataset(tmp_path / "data")
    variant.write(folder)
    dataset, report = load_ok(folder, **variant.options)
    for table in CANONICAL:
        got = canonical(getattr(dataset, table), table)
        assert_frame_equal(got, expected[table], check_exact=False)  # 81% = 0.81 +- float error
    assert dataset.pupils.height == ROWS["pupils"] and dataset.exits.height == ROWS["exits"]
    for fragment in variant.warnings:
        assert any(fragment in p.message for p in report.warnings), report.problems
    if not variant.warnings:
        assert not report.warnings, [p.line() for p in report.warnings]


def test_windows_1252_loads_with_a_warning_and_right_characters(tmp_path: Path) -> None:
    tables = base_tables()
    set_cell(tables["schools"], 2, "name", "École Saint-Félix £5 “fund”")
    set_cell(tables["pupils"], 3, "sex", "é")
    folder = write_dataset(tmp_path / "data", tables)
    for name in ("schools.csv", "pupils.csv"):
        (folder / name).write_bytes(raw_text(folder, name).encode("cp1252"))
    dataset, report = load_ok(folder)
    assert dataset.schools["name"][0] == "École Saint-Félix £5 “fund”"
    assert dataset.pupils.filter(pl.col("pupil_id") == "P0002")["sex"].item() == "é"
    warned = {(p.file, p.row) for p in report.warnings if "Windows-1252" in p.message}
    assert warned == {("schools.csv", 2), ("pupils.csv", 3)}
    assert all("--encoding" in p.hint for p in report.warnings)
    # Told the encoding, it loads the same without a warning.
    dataset2, report2 = load_ok(folder, encoding="cp1252")
    assert not report2.warnings and dataset2.schools["name"][0] == dataset.schools["name"][0]


def test_extra_columns_are_kept(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    retable("pupils", extra_columns)(folder)
    dataset, _ = load_ok(folder)
    assert dataset.pupils["notes_free_text"].to_list() == ["x", "y, z", None, "NA", "w"]
    assert dataset.pupils["extra_line"].to_list() == ["1", "2", "3", "4", "5"]  # not `line`
    assert dataset.pupils["line"].to_list() == [2, 3, 4, 5, 6]


def test_exact_duplicates_count_once(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "data")
    retable("pupils", exact_duplicate)(folder)
    dataset, report = load_ok(folder)
    assert dataset.pupils.height == ROWS["pupils"]
    [warning] = report.warnings
    assert (warning.file, warning.row) == ("pupils.csv", 7)


def test_census_allows_one_row_per_pupil_per_census(tmp_path: Path) -> None:
    tables = base_tables()
    pupils = tables["pupils"]
    add_column(pupils, "census", ["2024-AUT"] * ROWS["pupils"])
    pupils.append([*pupils[2][:-1], "2025-SPR"])
    dataset, _ = load_ok(write_dataset(tmp_path / "data", tables))
    assert dataset.pupils.height == ROWS["pupils"] + 1


def test_temporary_upn_with_right_check_letter_is_valid(tmp_path: Path) -> None:
    from offroll_audit.load import bad_upn_rows

    # B801200005001 is valid; a final "A" (value 0) instead of "1" lowers the sum by 13.
    alphabet = "ABCDEFGHJKLMNPQRTUVWXYZ"
    letter = alphabet[(alphabet.index("B") - 13) % 23]
    temporary = f"{letter}80120000500A"
    assert bad_upn_rows(pl.Series([temporary, "B801200005001", "b801200005001"])).size == 0
    tables = base_tables()
    set_cell(tables["pupils"], 2, "pupil_id", temporary)
    load_ok(write_dataset(tmp_path / "data", tables))


def test_upns_are_checked_slice_by_slice_with_the_right_rows(monkeypatch) -> None:
    """A national roll's ids are checked in slices; a bad UPN is reported at its own row
    whichever slice it falls in."""
    from offroll_audit import load
    from offroll_audit.problems import Report

    good, bad = "B801200005001", "A801200005001"
    ids = [good, bad, good, good, bad, good, "P0001", bad]
    frame = pl.DataFrame({load.LINE: list(range(2, 10)), "pupil_id": ids})
    monkeypatch.setattr(load, "UPN_SLICE_ROWS", 3)
    report = Report()
    load._check_upns(frame, "pupils.csv", report)
    assert [e.row for e in report.errors] == [3, 6, 9]


def test_values_parse_to_canonical_types(tmp_path: Path) -> None:
    dataset, _ = load_ok(write_dataset(tmp_path / "data"))
    pupil = dataset.pupils.filter(pl.col("pupil_id") == "P0003").row(0, named=True)
    assert pupil["year_group"] == "10" and pupil["sen_provision"] == "E"
    assert pupil["disadvantaged"] is False and pupil["attendance"] == pytest.approx(0.9)
    assert pupil["on_roll_to"] == dt.date(2024, 10, 15) and pupil["line"] == 4
    exit_ = dataset.exits.row(0, named=True)
    assert exit_["destination"] == "EHE" and exit_["ground"] == "9(1)(f)"
    assert dataset.letters["path"].item() == str((tmp_path / "data/letters/l1.txt").resolve())
    assert dataset.has_schools and dataset.has_letters


def test_optional_tables_may_be_absent(tmp_path: Path) -> None:
    tables: Tables = dict(base_tables())
    tables["schools"] = tables["letters"] = None
    dataset, report = load_ok(write_dataset(tmp_path / "data", tables))
    assert not dataset.has_schools and dataset.schools.height == 0
    assert "path" in dataset.letters.columns
    assert any("no letters table" in p.message for p in report.warnings)


def test_urn_missing_from_schools_is_a_warning(tmp_path: Path) -> None:
    tables = base_tables()
    del tables["schools"][2]
    _, report = load_ok(write_dataset(tmp_path / "data", tables))
    assert_reported(report.warnings, "pupils.csv", None, "urn", "URN 100002 is not in schools")


def test_exits_may_be_empty(tmp_path: Path) -> None:
    tables: Tables = dict(base_tables())
    tables["exits"] = tables["exits"][:1]  # type: ignore[index]
    tables["letters"] = None
    dataset, _ = load_ok(write_dataset(tmp_path / "data", tables))
    assert dataset.exits.height == 0


# --------------------------------------------------------------------------- safety


def test_letter_paths_outside_letters_are_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`../`, absolute and symlinked paths are refused from their text and links alone."""
    secret = tmp_path / "secret.txt"
    secret.write_text("private\n")
    tables = base_tables()
    letters = tables["letters"]
    letters.append(["L2", "../../secret.txt", "100001", "", ""])
    letters.append(["L3", str(secret), "100001", "", ""])
    letters.append(["L4", "link.txt", "100001", "", ""])
    folder = write_dataset(tmp_path / "data", tables)
    (folder / "letters" / "link.txt").symlink_to(secret)

    opened: list[str] = []

    def spy(original: Callable) -> Callable:
        def wrapper(target: object, *args: object, **kwargs: object) -> object:
            if isinstance(target, (str, os.PathLike)):
                opened.append(os.path.realpath(os.fspath(target)))
            return original(target, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(io, "open", spy(io.open))
    monkeypatch.setattr(os, "open", spy(os.open))
    for method in ("open", "read_bytes", "read_text"):
        monkeypatch.setattr(Path, method, spy(getattr(Path, method)))
    report = load_errors(folder)
    monkeypatch.undo()

    assert opened, "the spy saw no file at all"
    assert str(secret.resolve()) not in opened
    inside = str((folder / "letters").resolve()) + os.sep
    assert not any(p.startswith(inside) for p in opened)  # the loader reads no letter at all
    for row in (3, 4, 5):
        assert find(report.errors, "letters.csv", row, "file", "") is not None


@pytest.mark.parametrize("case_id", ["bad_urn", "duplicates_disagree", "undecodable_bytes"])
def test_input_files_are_never_modified(case_id: str, tmp_path: Path) -> None:
    from offroll_audit.cli import main

    valid = write_dataset(tmp_path / "valid")
    pupils_as_xlsx(valid)
    bad = make_bad(next(c for c in BAD if c.id == case_id), tmp_path / "bad")
    for folder in (valid, bad):
        before = file_hashes(folder)
        names = sorted(p.name for p in folder.rglob("*"))
        with contextlib.suppress(DataError):
            load_dataset(folder)
        with pytest.raises(SystemExit):
            main(["validate", str(folder)])
        assert file_hashes(folder) == before
        assert sorted(p.name for p in folder.rglob("*")) == names


def test_more_invalid_destinations_than_are_listed_are_not_also_called_empty(tmp_path) -> None:
    """Only the first 20 bad cells are listed; the rest must not come back as 'empty'."""
    tables = base_tables()
    exits = tables["exits"]
    for _ in range(25):
        exits.append([*exits[1][:3], "BOGUS", "9(9)(z)", *exits[1][5:]])
    report = load_errors(write_dataset(tmp_path / "data", tables))
    messages = [p.message for p in report.errors if p.column == "destination"]
    assert sum("not a valid destination" in m for m in messages) == 20
    assert not [m for m in messages if "empty" in m]
