"""Load a dataset folder into canonical, validated polars frames.

Real exports are messy: BOMs, Windows-1252, MIS-style headers, UK dates,
`Y/N` flags, spreadsheets. Everything is read as text first and parsed by
vectorised expressions, so every bad cell can be reported with its file, row
and column instead of failing on the first one. Nothing here prints; all
findings go into a `Report`.

Speed: a national roll is about 9 million rows. Coded columns (codes, flags,
dates, numbers, URNs) hold few distinct values, so each distinct cell is
parsed once and the results are gathered back by index; text columns are only
trimmed. No Python loop runs per row except in error paths.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import polars as pl

from offroll_audit import codes, spreadsheet
from offroll_audit.problems import ERROR, MAX_ROWS_PER_PROBLEM, WARNING, DataError, Report
from offroll_audit.schema import REQUIRED_TABLES, TABLES, Column, Dataset, dtype_of, empty_frame
from offroll_audit.spreadsheet import MAX_CELL_BYTES, MAX_COLUMNS
from offroll_audit.window import TERM_SHAPE, Calendar, term_index, term_indexes, terms_of_days

SUFFIXES = (".csv", ".xlsx", ".parquet")
MISSING_TOKENS = ["", "na", "n/a", "null"]
# Every capitalisation of the missing-value tokens, so cells never need lower-casing.
_MISSING_VARIANTS = sorted(
    {
        "".join(chars)
        for token in MISSING_TOKENS
        for chars in itertools.product(*[(c.lower(), c.upper()) for c in token])
    }
)
LINE = "line"
_ROW = "\x00row"  # the row number while a user's columns (maybe one called `line`) are around
SNIFF_BYTES = 1 << 16
MAX_HEADER_BYTES = 1 << 20  # a header line; 16,384 long names fit in a tenth of it

UPN_CHECK_ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ"

TRUE_WORDS = {"true", "t", "yes", "y", "1"}
FALSE_WORDS = {"false", "f", "no", "n", "0"}

ENCODING_HINT = (
    "save it as UTF-8 (in Excel: CSV UTF-8), or give its encoding, "
    "e.g. --encoding cp1252 (Windows/Excel) or --encoding latin-1"
)


def header_key(name: str) -> str:
    """Header matching ignores case, spaces, hyphens and underscores."""
    return re.sub(r"[\s_\-]+", "", name.replace("\ufeff", "").strip().lower())


# --------------------------------------------------------------------------- reading


@dataclass
class RawTable:
    """A table read as text (some columns categorical); `header_row` is its spreadsheet row."""

    frame: pl.DataFrame
    header_row: int = 1
    duplicated: tuple[str, ...] = ()  # header names that appear more than once


def find_table_files(root: Path, table: str) -> list[Path]:
    """Every file in DATA/ that could hold `table` (csv, xlsx or parquet)."""
    return [
        p
        for p in sorted(root.iterdir())
        if p.stem.lower() == table and p.suffix.lower() in SUFFIXES and p.is_file()
    ]


def read_text_table(
    path: Path, encoding: str | None, report: Report, table: str | None = None
) -> RawTable | None:
    """Read a csv/xlsx/parquet file as text, or None after reporting why.

    With `table`, a CSV's or parquet file's tabulated columns (codes, flags, dates...) are
    read as categorical: the same text, a fraction of the memory and parsing time. Spreadsheets
    are inspected before a parser sees them (offroll_audit.spreadsheet): a hostile file
    is refused with a problem, never an abort.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            raw = _read_csv(path, encoding, report, table)
        elif suffix == ".xlsx":
            raw = _read_xlsx(path)
        else:
            tabulated = (lambda names: tabulated_headers(names, table)) if table else None
            raw = RawTable(spreadsheet.read_parquet(path, tabulated))
    except spreadsheet.Refused as refused:
        report.error(path.name, refused.row, refused.column, refused.message, refused.hint)
        return None
    except pl.exceptions.NoDataError:
        report.error(
            path.name,
            None,
            None,
            "the first sheet is empty",
            "put the table in the first sheet, header in its first row",
        )
        return None
    except MemoryError:
        report.error(path.name, None, None, "is too large to read into memory", BIG_FILE_HINT)
        return None
    except Exception as exc:  # calamine and arrow raise many types for a broken file
        _unreadable(path, exc, report)
        return None
    except BaseException as exc:  # a Rust panic is a BaseException; nothing else is caught
        if type(exc).__name__ != "PanicException":
            raise
        _unreadable(path, exc, report)
        return None
    if raw is None or not _cells_fit(raw, path.name, report):
        return None
    return raw


BIG_FILE_HINT = "split the table, or export it as CSV UTF-8"


def _unreadable(path: Path, exc: BaseException, report: Report) -> None:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    report.error(
        path.name,
        None,
        None,
        f"cannot be read as {path.suffix.lower()[1:]}: {reason}",
        "open it in a spreadsheet program and save it again",
    )


def _read_xlsx(path: Path) -> RawTable:
    """The first sheet, header in its first non-empty row; blank rows keep their numbers."""
    workbook = spreadsheet.read_xlsx(path)
    names = [name for name in workbook.header if name]
    duplicated = tuple(sorted({n for n in names if names.count(n) > 1}))
    return RawTable(workbook.frame, workbook.header_row, duplicated)


def _cells_fit(raw: RawTable, file: str, report: Report) -> bool:
    """No cell longer than MAX_CELL_BYTES: such a cell is an unclosed quote or not a table,
    and every later step would carry it. Reports the first such cell of each column."""
    fits = True
    for name, column in zip(raw.frame.columns, raw.frame.get_columns(), strict=True):
        if column.dtype == pl.Categorical:
            longest = column.unique().cast(pl.String).str.len_bytes().max()
            if not isinstance(longest, int) or longest <= MAX_CELL_BYTES:
                continue
            column = column.cast(pl.String)
        elif column.dtype != pl.String:
            continue
        lengths = column.str.len_bytes()
        longest = lengths.max()
        if not isinstance(longest, int) or longest <= MAX_CELL_BYTES:
            continue
        first = int((lengths > MAX_CELL_BYTES).arg_true()[0])
        report.error(
            file,
            raw.header_row + 1 + first,
            _shorten(name),
            f"this cell holds {int(lengths[first]):,} bytes of text; a cell may hold at most "
            f"{MAX_CELL_BYTES:,}",
            "check for a quote that is never closed, or move long text out of the table",
        )
        fits = False
    return fits


def _empty_file(name: str, report: Report) -> None:
    hint = "export the table again with its header row"
    report.error(name, None, None, "the file is empty", hint)


def _read_csv(
    path: Path, encoding: str | None, report: Report, table: str | None
) -> RawTable | None:
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
        if b"\n" not in head and b"\r" not in head:
            head += handle.read(MAX_HEADER_BYTES - len(head))
    if not head.replace(codecs.BOM_UTF8, b"").strip():
        return _empty_file(path.name, report)
    is_utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if encoding is None and not is_utf16 and b"\x00" in head:
        report.error(path.name, None, None, *_binary_diagnosis(head))
        return None
    if not _header_fits(path.name, head, is_utf16, report):
        return None
    old_mac = b"\r" in head and b"\n" not in head
    utf8 = encoding is None and not is_utf16 and not old_mac and _utf8_prefix(head)
    refused = utf8 and not _quotes_balanced(path)  # polars would copy the rest into its error
    if utf8 and not refused:
        # The fast path: polars reads UTF-8 (with or without BOM) straight from the file.
        try:
            return _raw_csv(_polars_csv(path, table))
        except pl.exceptions.NoDataError:
            return _empty_file(path.name, report)
        except pl.exceptions.PolarsError:
            refused = True  # not UTF-8, or malformed: the careful path below says exactly why
    data = path.read_bytes()
    if refused:
        try:
            text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:  # polars refused these very bytes: a second try would only cost memory
            return _read_csv_slowly(path.name, text, report)
    text = _decode(path, data, encoding, report)
    if text is None:
        return None
    if "\n" not in text:
        text = text.replace("\r", "\n")
    try:
        return _raw_csv(_polars_csv(io.BytesIO(text.encode("utf-8")), table))
    except pl.exceptions.NoDataError:
        return _empty_file(path.name, report)
    except pl.exceptions.PolarsError:
        return _read_csv_slowly(path.name, text, report)


def _quotes_balanced(path: Path) -> bool:
    """Whether the file holds an even number of `"`: an odd one is a quote never closed,
    which polars reports by copying the rest of the file into its error message (a 100 MB
    file costs gigabytes). One streaming pass; a national file takes a fraction of a second."""
    quotes = 0
    with path.open("rb") as handle:
        while piece := handle.read(1 << 24):
            quotes += piece.count(b'"')
    return quotes % 2 == 0


def _header_fits(file: str, head: bytes, is_utf16: bool, report: Report) -> bool:
    """A header line of at most MAX_HEADER_BYTES and MAX_COLUMNS cells, checked before any
    parser builds a frame that wide (a one-line 100 MB file would be 10 million columns)."""
    end = min((i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0), default=-1)
    if end < 0 and len(head) >= MAX_HEADER_BYTES:
        report.error(
            file,
            1,
            None,
            f"the first line (the header) is longer than {MAX_HEADER_BYTES // (1 << 20)} MB",
            "export the table again as CSV UTF-8, with its column names in the first line",
        )
        return False
    line = head[: end if end >= 0 else len(head)]
    text = line.decode("utf-16" if is_utf16 else "utf-8", errors="replace")
    try:
        cells = len(next(csv.reader([text]), []))
    except csv.Error:  # a quoted header cell running over the line: count its commas
        cells = text.count(",") + 1
    if cells > MAX_COLUMNS:
        report.error(
            file,
            1,
            None,
            f"the header has {cells:,} columns; at most {MAX_COLUMNS:,} are read",
            "export only the table's columns, as CSV UTF-8",
        )
        return False
    return True


def _polars_csv(source: Path | io.BytesIO, table: str | None) -> pl.DataFrame:
    """All columns as text; a table's tabulated columns as categorical text."""
    overrides: dict[str, pl.DataType] = {}
    if table is not None:
        headers = pl.read_csv(source, n_rows=0, infer_schema=False).columns
        overrides = dict.fromkeys(tabulated_headers(headers, table), pl.Categorical())
        if isinstance(source, io.BytesIO):
            source.seek(0)
    return pl.read_csv(source, infer_schema=False, schema_overrides=overrides)


def _utf8_prefix(head: bytes) -> bool:
    """Whether the start of a file is valid UTF-8 (polars decodes a bad header lossily)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _binary_diagnosis(head: bytes) -> tuple[str, str]:
    """What a .csv holding NUL bytes probably is, and what to do (message, hint)."""
    if head.startswith(b"PK\x03\x04"):
        return (
            "this is a zip file (an Excel workbook?), not CSV",
            "rename an Excel workbook to .xlsx, or save it as CSV UTF-8",
        )
    sample = head[:400]
    if sample[1::2].count(0) > len(sample) // 4 or sample[0::2].count(0) > len(sample) // 4:
        return (
            "the file looks like UTF-16 without a byte-order mark",
            "save it as UTF-8 (in Excel: CSV UTF-8), or pass --encoding utf-16-le",
        )
    return ("the file is not text (it holds NUL bytes)", "export the table again as CSV UTF-8")


def _raw_csv(frame: pl.DataFrame) -> RawTable:
    duplicated = tuple(
        sorted(
            {
                m.group(1)
                for c in frame.columns
                if (m := re.fullmatch(r"(.*)_duplicated_\d+", c)) and m.group(1) in frame.columns
            }
        )
    )
    return RawTable(frame, 1, duplicated)


def _decode(path: Path, data: bytes, encoding: str | None, report: Report) -> str | None:
    """The file's text. Windows-1252 is detected and warned about, never garbled."""
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            report.error(
                path.name,
                None,
                None,
                f"{encoding!r} is not an encoding Python knows",
                "try --encoding cp1252, latin-1, utf-8 or utf-16",
            )
            return None
        try:
            return data.decode(encoding).removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            report.error(
                path.name, line, None, f"this line cannot be decoded as {encoding}", ENCODING_HINT
            )
            return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16").removeprefix("\ufeff")
        except UnicodeDecodeError:
            report.error(
                path.name,
                None,
                None,
                "the file starts like UTF-16 but is not valid UTF-16",
                ENCODING_HINT,
            )
            return None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    try:
        decoded = data.decode("cp1252")
    except UnicodeDecodeError:
        report.error(
            path.name,
            line,
            None,
            "the file is neither UTF-8 nor Windows-1252 (first bad byte on this line)",
            ENCODING_HINT,
        )
        return None
    report.warn(
        path.name,
        line,
        None,
        "the file is not UTF-8; read it as Windows-1252 (first such byte on this line)",
        "if any names look wrong, give the right encoding (e.g. --encoding latin-1); "
        "--encoding cp1252 confirms this guess",
    )
    return decoded


def _read_csv_slowly(file: str, text: str, report: Report) -> RawTable | None:
    """Read CSV the way a spreadsheet does, after polars refused it; report bad rows.

    Only an error path runs this. A stray quote inside an unquoted cell (`O"Brien`)
    loads as written; an unclosed quote or a row with more (non-empty) cells than
    the header is an error naming the row.
    """
    if csv.field_size_limit() < MAX_CELL_BYTES:  # process-wide, but only ever raised
        csv.field_size_limit(MAX_CELL_BYTES)
    reader = csv.reader(io.StringIO(text), strict=True)
    records: list[list[str]] = []
    try:
        for record in reader:
            records.append(record)
    except csv.Error as exc:
        row = len(records) + 1
        if "field larger than field limit" in str(exc):
            message = f"a cell starting in this row is longer than {MAX_CELL_BYTES:,} characters"
            hint = "check for a quote that is never closed, or move long text out of the table"
        elif "unexpected end of data" in str(exc) or "EOF" in str(exc):
            message, hint = "a quote opened in this row is never closed", "close the quote"
        else:
            message, hint = (
                "a quote in this row is not where CSV allows it",
                ('quote the whole cell and double any quote inside it ("")'),
            )
        report.error(file, row, None, message, hint)
        return None
    if not records:
        return _empty_file(file, report)
    header, body = records[0], records[1:]
    width = len(header)
    ragged = [i for i, r in enumerate(body, start=2) if len(r) > width and any(r[width:])]
    if ragged:
        report.rows(
            ERROR,
            file,
            None,
            ragged,
            len(ragged),
            "this row has more cells than the header",
            "check for an unquoted comma, or quote the cell",
        )
        return None
    names = _unique_names(header)
    columns = {
        name: [(r[i] if i < len(r) and r[i] != "" else None) for r in body]
        for i, name in enumerate(names)
    }
    frame = pl.DataFrame(columns, schema=dict.fromkeys(names, pl.String))
    return _raw_csv(frame)


def _unique_names(header: list[str]) -> list[str]:
    """Header names made unique the way polars does (`a`, `a_duplicated_0`)."""
    names: list[str] = []
    for name in header:
        unique, n = name, 0
        while unique in names:
            unique, n = f"{name}_duplicated_{n}", n + 1
        names.append(unique)
    return names


# --------------------------------------------------------------------------- columns


def match_columns(
    frame: pl.DataFrame,
    table: str,
    file: str,
    report: Report,
    header_row: int = 1,
    duplicated: tuple[str, ...] = (),
) -> dict[str, str]:
    """Map canonical column name -> the user's header; report missing and ambiguous ones."""
    by_key: dict[str, list[str]] = {}
    for header in frame.columns:
        by_key.setdefault(header_key(header), []).append(header)
    mapping: dict[str, str] = {}
    ambiguous: set[str] = set()
    for column in TABLES[table]:
        keys = (header_key(column.name), *column.aliases)
        candidates = list(dict.fromkeys(h for key in keys for h in by_key.get(key, [])))
        twice = [d for d in duplicated if header_key(d) in keys]
        if twice:
            ambiguous.add(column.name)
            report.error(
                file,
                header_row,
                column.name,
                f"the column {twice[0]!r} appears twice",
                "rename or delete one of them",
            )
        elif len(candidates) > 1:
            ambiguous.add(column.name)
            report.error(
                file,
                header_row,
                column.name,
                f"several columns could be {column.name}: " + ", ".join(candidates),
                "rename or delete all but one",
            )
        elif candidates:
            mapping[column.name] = candidates[0]
    for column in TABLES[table]:
        needed = column.required or (table == "exits" and column.name == "destination")
        if not needed or column.name in mapping or column.name in ambiguous:
            continue
        if column.name == "destination" and "ground" in mapping:
            continue
        report.error(
            file,
            header_row,
            column.name,
            f"required column {column.name} is missing",
            _missing_column_hint(frame.columns),
        )
    return mapping


def _missing_column_hint(columns: list[str]) -> str:
    if len(columns) == 1 and (";" in columns[0] or "\t" in columns[0]):
        separator = "semicolons" if ";" in columns[0] else "tabs"
        return f"the file seems to separate cells with {separator}; save it as comma-separated CSV"
    shown = ", ".join(_shorten(c) for c in columns[:15])
    more = f" and {len(columns) - 15} more" if len(columns) > 15 else ""
    return f"columns found: {shown}{more}"


def _clean(raw: str | pl.Expr) -> pl.Expr:
    """Trim a text cell; the contract's missing-value tokens become null."""
    value = (pl.col(raw) if isinstance(raw, str) else raw).str.strip_chars()
    return pl.when(value.is_in(_MISSING_VARIANTS)).then(None).otherwise(value)


_DATE_PART = r"^(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{4})(?:[ T].*)?$"


def parse_expr(column: Column, value: pl.Expr) -> pl.Expr:
    """The canonical value of a cleaned text cell; null where the text is invalid."""
    kind = column.kind
    if kind in ("text", "upn"):
        return value
    if kind == "urn":
        digits = value.str.replace(r"\.0+$", "")
        return pl.when(digits.str.contains(r"^\d{6}$")).then(digits)
    if kind == "code":
        lookup = {c.lower(): c for c in column.codes}
        return value.str.to_lowercase().replace_strict(lookup, default=None).cast(dtype_of(column))
    if kind == "bool":
        lower = value.str.to_lowercase()
        return (
            pl.when(lower.is_in(TRUE_WORDS)).then(True).when(lower.is_in(FALSE_WORDS)).then(False)
        )
    if kind == "date":
        day = value.str.extract(_DATE_PART, 1)
        return pl.coalesce(
            day.str.strptime(pl.Date, "%Y-%m-%d", strict=False),
            day.str.strptime(pl.Date, "%d/%m/%Y", strict=False),
        )
    if kind == "float":
        percent = value.str.ends_with("%")
        number = value.str.strip_suffix("%").str.strip_chars().cast(pl.Float64, strict=False)
        number = pl.when(number.is_finite()).then(number)
        return pl.when(percent).then(number / 100).otherwise(number)
    if kind == "int":
        number = value.cast(pl.Float64, strict=False)
        whole = number.is_finite() & (number == number.round(0)) & (number.abs() < 2**53)
        return pl.when(whole).then(number).cast(pl.Int64, strict=False)
    if kind == "year":
        return year_group_expr(value)
    raise ValueError(f"unknown column kind {kind}")


def year_group_expr(value: pl.Expr) -> pl.Expr:
    """`7`, `07`, `7.0`, `Y7`, `Year 7`, `R`, `Reception`, `N1` -> the canonical year group."""
    text = value.str.to_uppercase().str.replace_all(r"\s+", "")
    text = text.str.replace(r"^(YEAR|YR|Y)(\d+)$", "$2").str.replace(r"^RECEPTION$", "R")
    text = text.str.replace(r"^(\d+)\.0+$", "$1")
    text = (
        pl.when(text.str.contains(r"^\d+$")).then(text.str.strip_chars_start("0")).otherwise(text)
    )
    lookup = {y: y for y in codes.YEAR_GROUPS}
    return text.replace_strict(lookup, default=None).cast(codes.YearGroup)


# Range checks on parsed values: column -> (valid condition, message, hint).
RANGE_CHECKS: dict[str, tuple[Callable[[pl.Expr], pl.Expr], str, str]] = {
    "attendance": (
        lambda v: v.is_between(0, 1),
        "attendance must be between 0 and 1",
        "write a rate like 0.93 or a percentage like 93%",
    ),
    "suspensions": (lambda v: v >= 0, "suspensions cannot be negative", ""),
}


def _hint_for(column: Column) -> str:
    if column.kind == "code":
        return "use one of: " + ", ".join(column.codes)
    return {
        "urn": "a URN has 6 digits",
        "bool": "use true/false, Y/N, yes/no or 1/0",
        "date": "use 2024-11-05 or 05/11/2024",
        "float": "use a number, e.g. 0.93",
        "int": "use a whole number",
        "year": "use N1, N2, R or 1 to 14 (Y7 and Year 7 also work)",
    }.get(column.kind, "")


# Columns whose cells are nearly all distinct: trimmed as text, never tabulated.
# Every other column is read as categorical and parsed once per distinct cell.
WIDE_TEXT = frozenset({"pupil_id", "family_id", "letter_id", "file"})


def tabulated_headers(headers: list[str], table: str) -> list[str]:
    """The user's headers that hold a tabulated (low-cardinality) column of `table`."""
    keys = {
        key
        for c in TABLES[table]
        if c.name not in WIDE_TEXT
        for key in (header_key(c.name), *c.aliases)
    }
    return [h for h in headers if header_key(h) in keys]


@dataclass
class _Lookup:
    """Each distinct raw cell of a tabulated column, parsed once, by physical id."""

    invalid: list[int]  # ids of cells that are not valid values
    out_of_range: list[int]  # ids of valid values that fail the column's range check


_OK, _MISSING, _INVALID, _OUT_OF_RANGE = range(4)


def _lookup_plan(column: Column, cells: pl.Series) -> pl.LazyFrame:
    """The distinct cells of a categorical column, each cleaned, parsed and checked."""
    distinct = cells.unique().drop_nulls()
    clean = _clean(pl.col("raw"))
    value = parse_expr(column, clean).cast(dtype_of(column))
    check = RANGE_CHECKS.get(column.name)
    status = (
        pl.when(clean.is_null())
        .then(_MISSING)
        .when(value.is_null())
        .then(_INVALID)
        .when(~check[0](value) if check else pl.lit(False))
        .then(_OUT_OF_RANGE)
        .otherwise(_OK)
    )
    frame = pl.LazyFrame({"id": distinct.to_physical(), "raw": distinct.cast(pl.String)})
    return frame.select("id", value.alias("value"), status.alias("status"))


def _parse_tabulated(
    column: Column, cells: pl.Series, table: pl.DataFrame
) -> tuple[pl.Series, _Lookup]:
    """Parse a categorical column from its lookup table: one gather by physical id."""
    dtype = dtype_of(column)
    ids = table.get_column("id").to_numpy()
    statuses = table.get_column("status").to_numpy()
    lookup = _Lookup(
        invalid=ids[statuses == _INVALID].tolist(),
        out_of_range=ids[statuses == _OUT_OF_RANGE].tolist(),
    )
    if ids.size == 0:
        return pl.repeat(None, len(cells), dtype=dtype, eager=True).alias(column.name), lookup
    # A dense table of values indexed by physical id: one gather parses the whole column.
    values = pl.repeat(None, int(ids.max()) + 1, dtype=dtype, eager=True)
    values = values.scatter(ids, table.get_column("value"))
    return values.gather(cells.to_physical()).alias(column.name), lookup


def _clean_wide(cells: pl.Series) -> pl.Series:
    """Trim a high-cardinality text column; missing-value tokens become null."""
    cells = cells.str.strip_chars()
    missing = cells.is_in(_MISSING_VARIANTS)
    if missing.any():
        cells = (
            pl.select(pl.when(missing).then(None).otherwise(cells)).to_series().alias(cells.name)
        )
    return cells


def canonicalise(raw: RawTable, table: str, file: str, report: Report) -> pl.DataFrame | None:
    """Rename, parse and check one table; None when its columns are unusable.

    Takes the raw frame out of `raw` and lets each raw column go once it is parsed (unless
    its bad cells are still to be quoted): a national roll is never held twice over.
    """
    frame, header_row, duplicated = raw.frame, raw.header_row, raw.duplicated
    raw.frame = pl.DataFrame()
    errors_before = len(report.errors)
    mapping = match_columns(frame, table, file, report, header_row, duplicated)
    if len(report.errors) > errors_before:
        return None
    frame = frame.with_row_index(_ROW, offset=header_row + 1)
    frame = _drop_blank_rows(frame.with_columns(pl.col(_ROW).cast(pl.Int64)))
    columns = {c.name: c for c in TABLES[table]}
    tabulated = [n for n in mapping if n not in WIDE_TEXT]
    as_text = [mapping[n] for n in tabulated if frame.schema[mapping[n]] != pl.Categorical]
    if as_text:  # xlsx, parquet and hand-parsed CSV arrive as text
        frame = frame.with_columns(pl.col(as_text).cast(pl.String).cast(pl.Categorical))
    parsed: dict[str, pl.Series] = {LINE: frame.get_column(_ROW)}
    lookups: dict[str, _Lookup] = {}
    plans = [_lookup_plan(columns[n], frame.get_column(mapping[n])) for n in tabulated]
    tables = dict(zip(tabulated, pl.collect_all(plans), strict=True))  # one parallel query
    for column in TABLES[table]:
        if column.name in WIDE_TEXT and column.name in mapping:
            parsed[column.name] = _clean_wide(frame.get_column(mapping[column.name]))
            frame = frame.drop(mapping[column.name])
        elif column.name in mapping:
            cells = frame.get_column(mapping[column.name])
            parsed[column.name], lookups[column.name] = _parse_tabulated(
                column, cells, tables[column.name]
            )
            del cells
            lookup = lookups[column.name]
            quoted_later = lookup.invalid or lookup.out_of_range or column.name == "destination"
            if not quoted_later:
                frame = frame.drop(mapping[column.name])
        else:
            parsed[column.name] = pl.repeat(None, frame.height, dtype=dtype_of(column), eager=True)
    used = set(mapping.values())
    for extra in (c for c in frame.columns if c not in used and c != _ROW):
        name, n = _extra_name(extra), 1
        while name in parsed:  # `Notes` and `notes ` are two columns, kept apart
            name, n = f"{_extra_name(extra)}_{n}", n + 1
        parsed[name] = frame.get_column(extra)
    result = pl.DataFrame([series.alias(name) for name, series in parsed.items()])
    for name, header in mapping.items():
        _report_bad_cells(frame, result, columns[name], header, lookups.get(name), file, report)
    if table == "pupils":
        _check_upns(result, file, report)
        if "census" in mapping:
            _check_census(result, file, report)
        _check_order(result, "on_roll_from", "on_roll_to", file, report)
    if table == "exits":
        lookup = lookups.get("destination")  # none when the ground stands in for the column
        invalid_lines = frame.filter(
            pl.col(mapping["destination"]).to_physical().is_in(lookup.invalid) if lookup else False
        ).get_column(_ROW)
        result = _derive_destination(result, "ground" in mapping, invalid_lines, file, report)
        _check_order(result, "exit_date", "returned_date", file, report)
    return result


def _drop_blank_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with no cell at all (blank lines, `,,,,`) are not records; others keep their line."""
    cells = [c for c in frame.columns if c != _ROW]
    if not cells:
        return frame
    blank = frame.select(pl.all_horizontal(pl.col(cells).is_null()).alias("blank"))["blank"]
    return frame.filter(~blank) if blank.any() else frame


def _extra_name(header: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z]+", "_", header.replace("\ufeff", "").strip().lower()).strip("_")
    name = name or "column"
    return (
        f"extra_{name}" if name in {c.name for t in TABLES.values() for c in t} | {LINE} else name
    )


def _report_cells(
    report: Report,
    file: str,
    column: str,
    rows: pl.DataFrame,
    total: int,
    message: Callable[[object], str],
    hint: str,
) -> None:
    """One error per bad cell (up to the limit), each quoting its own cell, then a count."""
    cells = rows.head(MAX_ROWS_PER_PROBLEM).iter_rows()
    report.listed(ERROR, file, column, ((line, message(v)) for line, v in cells), total, hint)


def _report_bad_cells(
    frame: pl.DataFrame,
    parsed: pl.DataFrame,
    column: Column,
    raw: str,
    lookup: _Lookup | None,
    file: str,
    report: Report,
) -> None:
    name = column.name

    def cells(ids: list[int]) -> pl.DataFrame:
        rows = frame.filter(pl.col(raw).to_physical().is_in(ids))
        return rows.select(pl.col(_ROW).alias(LINE), pl.col(raw).cast(pl.String))

    invalid = cells(lookup.invalid) if lookup is not None and lookup.invalid else None
    if invalid is not None:
        _report_cells(
            report,
            file,
            name,
            invalid,
            invalid.height,
            lambda v: f"{_shorten(v)!r} is not a valid {name}",
            _hint_for(column),
        )
    if column.required:
        empty = parsed.filter(pl.col(name).is_null())
        if invalid is not None:  # already reported as invalid, not as empty
            empty = empty.join(invalid.select(LINE), on=LINE, how="anti")
        if empty.height:
            _report_cells(
                report,
                file,
                name,
                empty.select(LINE, name),
                empty.height,
                lambda _: f"{name} is empty",
                "every row needs a value here",
            )
    if lookup is not None and lookup.out_of_range:
        _, message, hint = RANGE_CHECKS[name]
        bad = cells(lookup.out_of_range)
        _report_cells(
            report,
            file,
            name,
            bad,
            bad.height,
            lambda v: f"{message} (found {_shorten(v)!r})",
            hint,
        )


def _shorten(value: object) -> str:
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _check_order(frame: pl.DataFrame, first: str, then: str, file: str, report: Report) -> None:
    """A later date (`then`) before the earlier one (`first`) on the same row is an error."""
    bad = frame.filter(pl.col(then) < pl.col(first))
    if bad.height:
        text = pl.format(f"{then} {{}} is before {first} {{}}", pl.col(then), pl.col(first))
        _report_cells(
            report,
            file,
            then,
            bad.select(LINE, text),
            bad.height,
            str,
            f"check both dates; {then} cannot come before {first}",
        )


# --------------------------------------------------------------------------- UPNs and census


def _upn_tables() -> tuple[np.ndarray, np.ndarray]:
    """By byte: the value of a UPN's final character (-1 if invalid); check letters (lower)."""
    value = np.full(256, -1, dtype=np.int16)  # digits their value, letters their alphabet index
    for index, letter in enumerate(UPN_CHECK_ALPHABET):
        value[ord(letter)] = value[ord(letter.lower())] = index
    value[ord("0") : ord("9") + 1] = np.arange(10)
    check = np.frombuffer(UPN_CHECK_ALPHABET.lower().encode(), dtype=np.uint8)
    return value, check


_UPN_LAST_VALUE, _UPN_CHECK = _upn_tables()


def _byte_columns(ids: pl.Series, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(positions, one byte array per character) for the ids exactly `width` bytes long.

    Reads the strings' UTF-8 bytes straight from their Arrow buffers, so nine
    million ids cost a few numpy passes and no Python objects.
    """
    import pyarrow as pa

    array = ids.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
    if array.type != pa.large_string():
        array = array.cast(pa.large_string())
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[
        array.offset : array.offset + len(array) + 1
    ]
    keep = np.diff(offsets) == width
    if array.null_count:
        keep &= ids.is_not_null().to_numpy()
    positions = np.flatnonzero(keep)
    if positions.size == 0 or data_buffer is None:
        return positions, []
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    if positions.size == len(ids) and offsets[-1] - offsets[0] == width * positions.size:
        # Every id has `width` bytes, back to back: a zero-copy matrix, transposed once.
        matrix = data[offsets[0] : offsets[-1]].reshape(-1, width)
        return positions, list(np.ascontiguousarray(matrix.T))
    starts = offsets[:-1][positions]
    return positions, [data.take(starts + k) for k in range(width)]


def bad_upn_rows(ids: pl.Series) -> np.ndarray:
    """Positions of UPN-shaped ids whose check letter is wrong (vectorised with numpy).

    UPN-shaped: a letter, then 12 digits or 11 digits and a letter (any case).
    The check letter is sum(position * value of characters 2..13) mod 23, mapped
    to `UPN_CHECK_ALPHABET`; a final letter counts as its index in that alphabet,
    and a final I, O or S is never valid.
    """
    positions, columns = _byte_columns(ids, 13)
    if positions.size == 0:
        return positions
    first = columns[0] | np.uint8(0x20)  # ASCII letters to lower case
    shaped = (first - np.uint8(ord("a"))) < 26  # uint8 arithmetic wraps: one test per range
    total = np.zeros(positions.size, dtype=np.uint16)  # at most 9 * 77 + 22 * 13
    for position in range(2, 13):
        digit = columns[position - 1] - np.uint8(ord("0"))
        shaped &= digit < 10
        total += digit.astype(np.uint16) * np.uint16(position)
    last = columns[12]
    shaped &= ((last - np.uint8(ord("0"))) < 10) | (
        ((last | np.uint8(0x20)) - np.uint8(ord("a"))) < 26
    )
    last_value = _UPN_LAST_VALUE.take(last)
    total += np.maximum(last_value, 0).astype(np.uint16) * np.uint16(13)
    expected = _UPN_CHECK.take(total % 23)
    wrong = shaped & ((expected != first) | (last_value < 0))
    return positions[wrong]


UPN_SLICE_ROWS = 1 << 22  # ids checked at a time: a national roll's bytes are never all copied


def _check_upns(frame: pl.DataFrame, file: str, report: Report) -> None:
    """Ids shaped like a UPN must carry the right check letter; other ids are pseudonyms."""
    ids = frame.get_column("pupil_id")
    bad = np.concatenate(
        [
            bad_upn_rows(ids.slice(start, UPN_SLICE_ROWS)) + start
            for start in range(0, max(len(ids), 1), UPN_SLICE_ROWS)
        ]
    )
    if bad.size:
        rows = frame.select(LINE, "pupil_id")[pl.Series(bad)]
        _report_cells(
            report,
            file,
            "pupil_id",
            rows,
            int(bad.size),
            lambda v: f"UPN {v} has the wrong check letter",
            "correct the UPN (or use a pseudonymous id that is not UPN-shaped)",
        )


CENSUS_SHAPE = f"^{TERM_SHAPE.pattern}$"  # one definition of a term, in window.py


def _check_census(frame: pl.DataFrame, file: str, report: Report) -> None:
    distinct = frame.get_column("census").drop_nulls().unique()
    wrong = distinct.filter(~distinct.str.to_uppercase().str.contains(CENSUS_SHAPE))
    if wrong.len():
        rows = frame.filter(pl.col("census").is_in(wrong.implode())).select(LINE, "census")
        _report_cells(
            report,
            file,
            "census",
            rows,
            rows.height,
            lambda v: f"{_shorten(v)!r} is not a valid census",
            "write a census like 2024-AUT, 2025-SPR or 2025-SUM",
        )


# --------------------------------------------------------------------------- exits


def normalise_ground(ground: pl.Expr) -> pl.Expr:
    """`9 (1)(F)` -> `9(1)(f)`: grounds match ignoring spaces and case."""
    return ground.str.replace_all(r"\s+", "").str.to_lowercase()


def _derive_destination(
    exits: pl.DataFrame, has_ground: bool, invalid_lines: pl.Series, file: str, report: Report
) -> pl.DataFrame:
    """Fill an empty destination from a ground that decides it; report the rest.

    Rows whose destination text was invalid (`invalid_lines`) are already reported (and
    null); they are not filled from the ground: wrong data is worse than no data.
    """
    invalid = pl.col(LINE).is_in(invalid_lines.implode())
    if has_ground:
        exits = exits.with_columns(normalise_ground(pl.col("ground")).alias("ground"))
        derived = pl.col("ground").replace_strict(
            codes.GROUND_DESTINATION, default=None, return_dtype=pl.String
        )
        filled = pl.coalesce(pl.col("destination"), derived.cast(codes.Destination))
        exits = exits.with_columns(
            pl.when(invalid).then(pl.col("destination")).otherwise(filled).alias("destination")
        )
    missing = exits.filter(pl.col("destination").is_null() & ~invalid)
    if missing.height:
        if has_ground:
            message = "destination is empty and the ground does not decide it"
            hint = "give a destination code; only grounds such as 9(1)(f) decide it on their own"
        else:
            message, hint = "destination is empty", "give a destination code, e.g. EHE or SCHOOL"
        _report_cells(
            report,
            file,
            "destination",
            missing.select(LINE, "ground"),
            missing.height,
            lambda _: message,
            hint,
        )
    return exits


# --------------------------------------------------------------------------- duplicates


def repeated_keys(frame: pl.DataFrame, keys: list[str]) -> pl.Series:
    """True on rows whose `keys` hash like another row's: a superset of the rows that share
    their keys, found by sorting row hashes (faster than a hash table, and far faster than a
    window over a national roll); exact checks then run on these few rows only."""
    hashes = frame.select(keys).hash_rows()
    ordered = np.sort(hashes.to_numpy())
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    return hashes.is_in(pl.Series(repeated, dtype=hashes.dtype).implode())


def drop_duplicates(
    frame: pl.DataFrame, keys: list[str], file: str, report: Report
) -> pl.DataFrame:
    """Exact duplicate rows count once (warning); rows that share a key but disagree are errors.

    Row hashes find the few candidate rows first, so a national roll is not
    compared column by column; the exact checks then run on the candidates only.
    """
    content = [c for c in frame.columns if c != LINE]
    if frame.height < 2 or not content:
        return frame
    repeats = repeated_keys(frame, keys or content)
    if not repeats.any():
        return frame
    candidates = frame.filter(repeats)
    exact = candidates.filter(
        pl.struct(content).is_duplicated() & ~pl.struct(content).is_first_distinct()
    )
    if exact.height:
        report.rows(
            WARNING,
            file,
            None,
            exact.get_column(LINE).head(MAX_ROWS_PER_PROBLEM).to_list(),
            exact.height,
            "exact duplicate of an earlier row; counted once",
        )
        frame = frame.filter(~pl.col(LINE).is_in(exact.get_column(LINE).implode()))
        candidates = candidates.filter(~pl.col(LINE).is_in(exact.get_column(LINE).implode()))
    if keys:
        clash = candidates.filter(pl.struct(keys).is_duplicated())
        if clash.height:
            first_lines = clash.group_by(keys, maintain_order=True).agg(
                pl.col(LINE).min().alias("first")
            )
            later = clash.join(first_lines, on=keys, nulls_equal=True).filter(
                pl.col(LINE) != pl.col("first")
            )
            later = later.sort(LINE)
            key_text = " + ".join(keys)
            pairs = later.select(LINE, "first").head(MAX_ROWS_PER_PROBLEM).iter_rows()
            message = "same {} as row {} but different data"
            report.listed(
                ERROR,
                file,
                keys[0],
                ((row, message.format(key_text, first)) for row, first in pairs),
                later.height,
                "keep one row per " + key_text,
                lambda more: f"{more:,} more conflicting duplicates",
            )
    return frame


# --------------------------------------------------------------------------- letters


def resolve_letter_path(letters_root: Path, relative: str) -> tuple[Path | None, str | None]:
    """The file inside letters/ a manifest row names, or (None, why it is refused).

    Paths are checked as text and then resolved without opening anything, so a
    `../`, absolute or symlinked path that leaves letters/ is never read.
    """
    text = relative.replace("\\", "/")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(relative).drive:
        return None, "is an absolute path; give a path relative to letters/"
    if ".." in PurePosixPath(text).parts:
        return None, "goes outside letters/ (contains ..)"
    if "\x00" in text:
        return None, "is not a valid file name"
    candidate = letters_root / text
    root = letters_root.resolve()
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        return None, "is a link that cannot be followed"
    if not resolved.is_relative_to(root):
        return None, "is a link that leaves letters/"
    if not resolved.is_file():
        return None, "does not exist in letters/"
    return resolved, None


def _attach_letter_paths(
    letters: pl.DataFrame, root: Path, file: str, report: Report
) -> pl.DataFrame:
    letters_root = root / "letters"
    resolved: list[str | None] = []
    for line, relative in letters.select(LINE, "file").iter_rows():
        path, why = resolve_letter_path(letters_root, relative or "")
        if why:
            report.error(
                file,
                line,
                "file",
                f"{_shorten(relative)!r} {why}",
                "put the letter in the letters/ folder and give its relative path",
            )
        resolved.append(str(path) if path else None)
    return letters.with_columns(pl.Series("path", resolved, dtype=pl.String))


def check_letters(letters: pl.DataFrame, root: Path, file: str, report: Report) -> None:
    """Warn about every letter file the audit would leave out, in the audit's own words.

    The audit reads letters with `extract_letter` and reports its `warning`; calling the
    same function with the same arguments here, once per file, means the two can never
    disagree. Rows whose path was refused are already errors and are not opened.
    """
    from offroll_audit.extract import extract_letter

    letters_root = root / "letters"
    warnings: dict[str, str | None] = {}  # by resolved path: a file named twice is read once
    for line, path in letters.select(LINE, "path").iter_rows():
        if path is None:
            continue
        if path not in warnings:
            warnings[path] = extract_letter(Path(path), letters_root).warning
        if warnings[path]:
            report.warn(file, line, "file", warnings[path], LETTER_HINT)


LETTER_HINT = "give a readable copy: .txt, .md, .docx, or a PDF with a text layer"


# --------------------------------------------------------------------------- cross-table checks


def _termly_checks(tables: dict[str, pl.DataFrame], files: dict[str, str], report: Report) -> None:
    """With a census column: a pupil on two schools' rolls at once in one census needs a dual
    registration; and on termly data every term with exits needs its census (the term's
    expected counts come from it)."""
    pupils, exits = tables.get("pupils"), tables.get("exits")
    if pupils is None or "census" not in pupils.columns or pupils["census"].is_null().all():
        return
    _check_dual_rolls(pupils, files["pupils"], report)
    if exits is None or not exits.height:
        return
    calendar = Calendar.of(pupils, exits)
    if not calendar.termly:
        return
    first = term_index(calendar.census_terms[0])
    terms = terms_of_days(exits.get_column("exit_date"))
    known = {term_index(t) for t in calendar.census_terms}
    index = term_indexes(terms)
    lacking = exits.with_columns(terms, index.alias("_at")).filter(
        (pl.col("_at") >= first) & ~pl.col("_at").is_in(list(known))
    )
    if lacking.height:
        missing = ", ".join(sorted(set(lacking.get_column("term").to_list()), key=term_index))
        report.rows(
            ERROR,
            files["exits"],
            "exit_date",
            lacking.get_column(LINE).head(MAX_ROWS_PER_PROBLEM).to_list(),
            lacking.height,
            f"an exit in a term with no census in pupils ({missing})",
            "add that term's census to pupils, or leave its exits out until it is taken",
        )


def _check_dual_rolls(pupils: pl.DataFrame, file: str, report: Report) -> None:
    """A pupil on two schools' rolls in one census, at overlapping times, neither registration
    marked dual (enrolment_status M or S): one of the rows is wrong."""
    keys = ["pupil_id", "census"]
    candidates = pupils.filter(repeated_keys(pupils, keys))  # a pupil listed twice in a census
    several = candidates.filter(
        pl.col("census").is_not_null() & (pl.col("urn").n_unique().over(keys) > 1)
    )
    if not several.height:
        return
    rows = several.select(
        LINE,
        *keys,
        "urn",
        pl.col("enrolment_status").cast(pl.String).fill_null("C").alias("_status"),
        pl.col("on_roll_from").fill_null(pl.date(1900, 1, 1)).alias("_from"),
        pl.col("on_roll_to").fill_null(pl.date(2999, 12, 31)).alias("_to"),
    )
    pairs = rows.join(rows, on=keys, suffix="_b").filter(
        (pl.col("urn") < pl.col("urn_b"))
        & (pl.col("_status") == "C")
        & (pl.col("_status_b") == "C")
        & (pl.col("_from") <= pl.col("_to_b"))
        & (pl.col("_from_b") <= pl.col("_to"))
    )
    if pairs.height:
        later = pairs.select(pl.max_horizontal(LINE, f"{LINE}_b").alias(LINE)).unique().sort(LINE)
        report.rows(
            ERROR,
            file,
            "urn",
            later.get_column(LINE).head(MAX_ROWS_PER_PROBLEM).to_list(),
            later.height,
            "this pupil is on two schools' rolls in this census at the same time, and neither "
            "registration is dual",
            "mark dual registrations M (main) and S (subsidiary) in enrolment_status, give "
            "on_roll_from/on_roll_to for a move between schools, or remove the wrong row",
        )


def _cross_checks(tables: dict[str, pl.DataFrame], files: dict[str, str], report: Report) -> None:
    pupils, exits = tables.get("pupils"), tables.get("exits")
    if pupils is not None and exits is not None and exits.height:
        keys = ["pupil_id", "urn"]
        # Row hashes narrow a national roll to the few rows that can match an exit; the
        # anti-join on those rows is then exact.
        exit_hashes = exits.select(keys).hash_rows()
        leavers = pupils.filter(pupils.select(keys).hash_rows().is_in(exit_hashes.implode()))
        orphans = exits.join(leavers.select(keys), on=keys, how="anti")
        if orphans.height:
            report.rows(
                ERROR,
                files["exits"],
                "pupil_id",
                orphans.get_column(LINE).head(MAX_ROWS_PER_PROBLEM).to_list(),
                orphans.height,
                "this pupil is not on this school's roll in pupils",
                "add the pupil to pupils for that urn, or correct pupil_id/urn",
            )
    schools = tables.get("schools")
    if schools is not None:
        known = schools.get_column("urn").unique().implode()
        for table in ("pupils", "exits", "letters"):
            if tables.get(table) is None:
                continue
            urns = tables[table].get_column("urn").unique().drop_nulls()
            unknown = sorted(urns.filter(~urns.is_in(known)).to_list())
            report.listed(
                WARNING,
                files[table],
                "urn",
                ((None, f"URN {urn} is not in schools") for urn in unknown),
                len(unknown),
                "add it to schools for its name, phase and trust",
                lambda more: f"{more:,} more URNs not in schools",
            )
    letters = tables.get("letters")
    if exits is not None:
        linked = exits.filter(pl.col("letter_id").is_not_null())
        if linked.height and letters is None:
            report.warn(
                files["exits"],
                None,
                "letter_id",
                "exits name letters but there is no letters table",
                "add letters.csv and the letters/ folder to check them",
            )
        elif linked.height and letters is not None:
            unknown_letters = linked.join(letters.select("letter_id"), on="letter_id", how="anti")
            if unknown_letters.height:
                report.rows(
                    ERROR,
                    files["exits"],
                    "letter_id",
                    unknown_letters.get_column(LINE).head(MAX_ROWS_PER_PROBLEM).to_list(),
                    unknown_letters.height,
                    "this letter_id is not in letters",
                    "add the letter to letters or clear the cell",
                )


# --------------------------------------------------------------------------- entry point

KEYS = {"pupils": ["pupil_id", "urn"], "exits": [], "schools": ["urn"], "letters": ["letter_id"]}


def load_dataset(
    root: Path, *, encoding: str | None = None, check_letter_files: bool = False
) -> tuple[Dataset, Report]:
    """Load and validate DATA/. Raises DataError (with the whole report) on any error.

    With `check_letter_files` (what `validate` asks for), every letter file the manifest
    names is also read, and each one the audit would leave out is a warning.
    """
    report = Report()
    root = Path(root)
    if not root.is_dir():
        report.error(str(root), None, None, "is not a folder", "give the dataset folder")
        raise DataError(report)
    tables: dict[str, pl.DataFrame] = {}
    files: dict[str, Path] = {}
    for table in TABLES:
        found = find_table_files(root, table)
        if len(found) > 1:
            report.error(
                " and ".join(p.name for p in found),
                None,
                None,
                f"two files hold the {table} table",
                "keep one of them (csv, xlsx or parquet)",
            )
            continue
        if not found:
            if table in REQUIRED_TABLES:
                report.error(
                    f"{table}.csv",
                    None,
                    None,
                    f"the {table} table is missing",
                    f"add {table}.csv (or .xlsx/.parquet) to {root.name}/",
                )
            continue
        path = found[0]
        files[table] = path
        raw = read_text_table(path, encoding, report, table)
        if raw is None:
            continue
        frame = canonicalise(raw, table, path.name, report)
        del raw
        if frame is None:
            continue
        if table == "pupils" and frame.height == 0:
            report.error(
                path.name,
                None,
                None,
                "there are no pupils (only a header)",
                "pupils must list everyone on roll in the audit window",
            )
        keys = KEYS[table] + (
            ["census"] if table == "pupils" and frame["census"].is_not_null().any() else []
        )
        tables[table] = drop_duplicates(frame, keys, path.name, report)
    names = {t: p.name for t, p in files.items()}
    if "letters" in tables:
        tables["letters"] = _attach_letter_paths(tables["letters"], root, names["letters"], report)
        if check_letter_files:
            check_letters(tables["letters"], root, names["letters"], report)
    _cross_checks(tables, names, report)
    _termly_checks(tables, names, report)
    if not report.ok:
        raise DataError(report)
    dataset = Dataset(
        root=root,
        pupils=tables["pupils"],
        exits=tables["exits"],
        schools=tables.get("schools", empty_frame("schools")),
        letters=tables.get(
            "letters", empty_frame("letters").with_columns(pl.lit(None, pl.String).alias("path"))
        ),
        files=files,
        has_schools="schools" in tables,
        has_letters="letters" in tables,
    )
    return dataset, report
