"""Shared test helpers: a tiny valid dataset folder, written from editable tables."""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]  # the checkout the tests run in

Table = list[list[str]]  # header row first, then data rows, all cells as text

# Five pupils at two schools, two exits (one EHE with a letter), both optional tables.
# The first pupil has a real UPN (domain-facts.md's worked example); the rest are pseudonyms.
TABLES: dict[str, Table] = {
    "pupils": [
        [
            "pupil_id",
            "urn",
            "year_group",
            "sen_provision",
            "disadvantaged",
            "social_care",
            "sen_need",
            "fsm",
            "sex",
            "attendance",
            "suspensions",
            "enrolment_status",
            "on_roll_from",
            "on_roll_to",
            "family_id",
        ],
        [
            "B801200005001",
            "100001",
            "7",
            "N",
            "false",
            "none",
            "",
            "false",
            "F",
            "0.95",
            "0",
            "C",
            "2024-09-01",
            "",
            "F1",
        ],
        [
            "P0002",
            "100001",
            "8",
            "K",
            "true",
            "CIN",
            "SEMH",
            "true",
            "M",
            "0.81",
            "2",
            "C",
            "2024-09-01",
            "",
            "F2",
        ],
        [
            "P0003",
            "100001",
            "10",
            "E",
            "false",
            "CPP",
            "ASD",
            "false",
            "F",
            "0.9",
            "0",
            "C",
            "2024-09-01",
            "2024-10-15",
            "F3",
        ],
        [
            "P0004",
            "100002",
            "11",
            "N",
            "true",
            "CLA",
            "",
            "true",
            "M",
            "0.7",
            "1",
            "M",
            "2024-09-01",
            "",
            "F4",
        ],
        [
            "P0005",
            "100002",
            "R",
            "N",
            "false",
            "none",
            "",
            "false",
            "F",
            "",
            "0",
            "C",
            "",
            "",
            "F5",
        ],
    ],
    "exits": [
        [
            "pupil_id",
            "urn",
            "exit_date",
            "destination",
            "ground",
            "destination_urn",
            "address_changed",
            "reason",
            "returned_date",
            "letter_id",
        ],
        ["P0003", "100001", "2024-10-15", "EHE", "9(1)(f)", "", "false", "HEALTH_MENTAL", "", "L1"],
        ["P0004", "100002", "2024-11-05", "SCHOOL", "9(1)(a)", "100001", "true", "", "", ""],
    ],
    "schools": [
        ["urn", "name", "phase", "type", "trust"],
        ["100001", "Alpha Academy", "secondary", "academy", "Trust A"],
        ["100002", "Beta School", "all-through", "maintained", ""],
    ],
    "letters": [
        ["letter_id", "file", "urn", "pupil_id", "received_date"],
        ["L1", "l1.txt", "100001", "P0003", "2024-10-10"],
    ],
}
LETTER_FILES = {"l1.txt": "Dear Head, we will educate our child at home. Yours, a parent.\n"}
ROWS = {name: len(table) - 1 for name, table in TABLES.items()}  # data rows in each table


def base_tables() -> dict[str, Table]:
    """A fresh, editable copy of the valid tables."""
    return copy.deepcopy(TABLES)


def csv_text(table: Table, newline: str = "\n") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(table)
    return buffer.getvalue()


def set_cell(table: Table, row: int, column: str, value: str) -> None:
    """Set a cell by spreadsheet row (header = 1) and column name."""
    table[row - 1][table[0].index(column)] = value


def write_dataset(
    folder: Path,
    tables: dict[str, Table | None] | None = None,
    *,
    letter_files: dict[str, str] | None = None,
) -> Path:
    """Write tables as CSV (None leaves a table out) and the letter files; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in (base_tables() if tables is None else tables).items():
        if table is not None:
            (folder / f"{name}.csv").write_text(csv_text(table), encoding="utf-8")
    letters = folder / "letters"
    letters.mkdir(exist_ok=True)
    for name, text in (LETTER_FILES if letter_files is None else letter_files).items():
        (letters / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """`make_dataset(tables=None, name="data", letter_files=None)` -> a dataset folder."""

    def make(
        tables: dict[str, Table | None] | None = None,
        name: str = "data",
        letter_files: dict[str, str] | None = None,
    ) -> Path:
        return write_dataset(tmp_path / name, tables, letter_files=letter_files)

    return make
