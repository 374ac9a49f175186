"""Load a dataset folder into canonical, validated polars frames.

Real exports are messy: BOMs, Windows-1252, MIS-style headers, UK dates,
`Y/N` flags, spreadsheets. Everything is read as text first and parsed by
vectorised expressions, so every bad cell can be reported with its file, row
and column instead of failing on the first one. Nothing here prints; all
findings go into a `Report`.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import polars as pl

from offroll_audit import codes
from offroll_audit.problems import WARNING, DataError, Report
from offroll_audit.schema import REQUIRED_TABLES, TABLES, Column, Dataset, dtype_of, empty_frame

SUFFIXES = (".csv", ".xlsx", ".parquet")
MISSING_TOKENS = ["", "na", "n/a", "null"]
LINE = "line"

UPN_CHECK_ALPHABET = "ABCDEFGHJKLMNPQRTUVWXYZ"
UPN_SHAPE = r"^[A-Z](\d{12}|\d{11}[A-Z])$"

TRUE_WORDS = {"true", "t", "yes", "y", "1"}
FALSE_WORDS = {"false", "f", "no", "n", "0"}


def header_key(name: str) -> str:
    """Header matching ignores case, spaces, hyphens and underscores."""
    return re.sub(r"[\s_\-]+", "", name.replace("\ufeff", "").strip().lower())


# --------------------------------------------------------------------------- reading


def find_table_file(root: Path, table: str, report: Report) -> Path | None:
    """The one file holding `table` (csv, xlsx or parquet), or None if absent."""
    found = [
        p for p in sorted(root.iterdir()) if p.is_file() and p.stem.lower() == table
        and p.suffix.lower() in SUFFIXES
    ]  # fmt: skip
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        report.error(names, None, None, f"two files hold the {table} table",
                     "keep one of them (csv, xlsx or parquet)")  # fmt: skip
        return None
    return found[0] if found else None


def read_text_table(path: Path, encoding: str | None, report: Report) -> pl.DataFrame | None:
    """Read a csv/xlsx/parquet file as all-text columns, or None after reporting why."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, encoding, report)
    try:
        if suffix == ".xlsx":
            frame = pl.read_excel(path, engine="calamine", infer_schema_length=0)
        else:
            frame = pl.read_parquet(path).with_columns(pl.all().cast(pl.String))
    except Exception as exc:  # calamine and arrow raise many types for a broken file
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        report.error(path.name, None, None, f"cannot be read as {suffix[1:]}: {reason}",
                     "open it in a spreadsheet program and save it again")  # fmt: skip
        return None
    return frame


def _read_csv(path: Path, encoding: str | None, report: Report) -> pl.DataFrame | None:
    data = path.read_bytes()
    text_bytes = _to_utf8(path, data, encoding, report)
    if text_bytes is None:
        return None
    try:
        return pl.read_csv(io.BytesIO(text_bytes), infer_schema=False)
    except pl.exceptions.ComputeError as exc:
        row = _ragged_row(text_bytes)
        if row is not None:
            report.error(path.name, row, None, "this row has more cells than the header",
                         "check for an unquoted comma, or quote the cell")  # fmt: skip
        else:
            report.error(path.name, None, None, f"cannot be read as CSV: {str(exc).splitlines()[0]}")
        return None


def _to_utf8(path: Path, data: bytes, encoding: str | None, report: Report) -> bytes | None:
    """Bytes as UTF-8 without BOM. Windows-1252 is detected and warned, never garbled."""
    if encoding:
        try:
            return data.decode(encoding).encode("utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            report.error(path.name, None, None, f"cannot be decoded as {encoding}: {exc}",
                         "check the --encoding value")  # fmt: skip
            return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16").encode("utf-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    try:
        decoded = data.decode("cp1252")
    except UnicodeDecodeError:
        report.error(path.name, line, None, "the file is neither UTF-8 nor Windows-1252",
                     "save it as UTF-8 (CSV UTF-8 in Excel) or pass --encoding")  # fmt: skip
        return None
    report.warn(path.name, line, None, "the file is not UTF-8; read it as Windows-1252",
                "if names look wrong, pass --encoding (e.g. --encoding latin-1)")  # fmt: skip
    return decoded.encode("utf-8")


def _ragged_row(text_bytes: bytes) -> int | None:
    """The spreadsheet row of the first record with more cells than the header."""
    reader = csv.reader(io.StringIO(text_bytes.decode("utf-8", errors="replace")))
    header = next(reader, [])
    for index, record in enumerate(reader, start=2):
        if len(record) > len(header):
            return index
    return None


# --------------------------------------------------------------------------- columns


def match_columns(frame: pl.DataFrame, table: str, file: str, report: Report) -> dict[str, str]:
    """Map canonical column name -> the user's header; report missing and ambiguous ones."""
    by_key: dict[str, list[str]] = {}
    for header in frame.columns:
        by_key.setdefault(header_key(header), []).append(header)
    mapping: dict[str, str] = {}
    for column in TABLES[table]:
        candidates = [
            h for key in (header_key(column.name), *column.aliases) for h in by_key.get(key, [])
        ]
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) > 1:
            report.error(file, 1, column.name, f"several columns could be {column.name}: "
                         + ", ".join(candidates), "rename or delete all but one")  # fmt: skip
        elif candidates:
            mapping[column.name] = candidates[0]
    for column in TABLES[table]:
        needed = column.required or (table == "exits" and column.name == "destination")
        if needed and column.name not in mapping and not (
            column.name == "destination" and _has_ground(by_key)
        ):
            shown = ", ".join(frame.columns[:15])
            report.error(file, 1, column.name, f"required column {column.name} is missing",
                         f"columns found: {shown}")  # fmt: skip
    return mapping


def _has_ground(by_key: dict[str, list[str]]) -> bool:
    return any(k in by_key for k in ("ground", "groundfordeletion", "deletionground"))


def _clean(raw: str) -> pl.Expr:
    """Trim a text cell; the contract's missing-value tokens become null."""
    value = pl.col(raw).str.strip_chars()
    return pl.when(value.str.to_lowercase().is_in(MISSING_TOKENS)).then(None).otherwise(value)


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
        return pl.when(lower.is_in(TRUE_WORDS)).then(True).when(lower.is_in(FALSE_WORDS)).then(False)
    if kind == "date":
        day = value.str.slice(0, 10)
        return pl.coalesce(
            day.str.strptime(pl.Date, "%Y-%m-%d", strict=False),
            day.str.strptime(pl.Date, "%d/%m/%Y", strict=False),
        )
    if kind == "float":
        percent = value.str.ends_with("%")
        number = value.str.strip_suffix("%").str.strip_chars().cast(pl.Float64, strict=False)
        return pl.when(percent).then(number / 100).otherwise(number)
    if kind == "int":
        number = value.cast(pl.Float64, strict=False)
        return pl.when(number == number.round(0)).then(number).cast(pl.Int64, strict=False)
    if kind == "year":
        return year_group_expr(value)
    raise ValueError(f"unknown column kind {kind}")


def year_group_expr(value: pl.Expr) -> pl.Expr:
    """`7`, `07`, `Y7`, `Year 7`, `R`, `Reception`, `N1` -> the canonical year group."""
    text = value.str.to_uppercase().str.replace_all(r"\s+", "")
    text = text.str.replace(r"^(YEAR|YR|Y)(\d+)$", "$2").str.replace(r"^RECEPTION$", "R")
    text = pl.when(text.str.contains(r"^\d+$")).then(text.str.strip_chars_start("0")).otherwise(text)
    lookup = {y: y for y in codes.YEAR_GROUPS}
    return text.replace_strict(lookup, default=None).cast(codes.YearGroup)


RANGE_CHECKS = {
    "attendance": (pl.col("attendance").is_between(0, 1), "attendance must be between 0 and 1",
                   "write a rate like 0.93 or a percentage like 93%"),
    "suspensions": (pl.col("suspensions") >= 0, "suspensions cannot be negative", ""),
}  # fmt: skip


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


def canonicalise(frame: pl.DataFrame, table: str, file: str, report: Report) -> pl.DataFrame | None:
    """Rename, parse and check one table; None when a required column is missing."""
    errors_before = len(report.errors)
    mapping = match_columns(frame, table, file, report)
    if len(report.errors) > errors_before:
        return None
    frame = frame.with_row_index(LINE, offset=2).with_columns(pl.col(LINE).cast(pl.Int64))
    used = set(mapping.values())
    extras = [c for c in frame.columns if c not in used and c != LINE]
    cleaned = frame.select(
        pl.col(LINE),
        *[_clean(raw).alias(name) for name, raw in mapping.items()],
        *[pl.col(c).alias(_extra_name(c)) for c in extras],
    )
    parsed_columns = []
    for column in TABLES[table]:
        if column.name in mapping:
            parsed_columns.append(parse_expr(column, pl.col(column.name)).alias(column.name))
        else:
            parsed_columns.append(pl.lit(None, dtype_of(column)).alias(column.name))
    parsed = cleaned.with_columns(parsed_columns)
    for column in TABLES[table]:
        if column.name not in mapping:
            continue
        _report_bad_cells(cleaned, parsed, column, table, file, report)
    if table == "pupils":
        _check_upns(parsed, file, report)
        if "census" in mapping:
            _check_census(parsed, file, report)
    if table == "exits":
        raw_empty = (
            cleaned.get_column("destination").is_null()
            if "destination" in mapping
            else pl.repeat(True, cleaned.height, eager=True)
        )
        parsed = _derive_destination(parsed, raw_empty, "ground" in mapping, file, report)
    canonical = [c.name for c in TABLES[table]]
    return parsed.select(LINE, *canonical, *[c for c in parsed.columns if c not in canonical
                                             and c != LINE])  # fmt: skip


def _extra_name(header: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z]+", "_", header.replace("\ufeff", "").strip().lower()).strip("_")
    return f"extra_{name}" if name in {c.name for t in TABLES.values() for c in t} else name


def _report_bad_cells(cleaned: pl.DataFrame, parsed: pl.DataFrame, column: Column, table: str,
                      file: str, report: Report) -> None:  # fmt: skip
    name = column.name
    raw_null = cleaned.get_column(name).is_null()
    value_null = parsed.get_column(name).is_null()
    invalid = ~raw_null & value_null
    if invalid.any():
        rows = parsed.filter(invalid).get_column(LINE)
        example = cleaned.filter(invalid).get_column(name).head(1).item()
        report.rows("error", file, name, rows.head(20).to_list(), len(rows),
                    f"{_shorten(example)!r} is not a valid {name}", _hint_for(column))  # fmt: skip
    if column.required and not (table == "exits" and name == "destination"):
        missing = raw_null
        if missing.any():
            rows = parsed.filter(missing).get_column(LINE)
            report.rows("error", file, name, rows.head(20).to_list(), len(rows),
                        f"{name} is empty", "every row needs a value here")  # fmt: skip
    if name in RANGE_CHECKS:
        condition, message, hint = RANGE_CHECKS[name]
        bad = parsed.filter(pl.col(name).is_not_null() & ~condition)
        if bad.height:
            report.rows("error", file, name, bad.get_column(LINE).head(20).to_list(),
                        bad.height, message, hint)  # fmt: skip


def _shorten(value: object) -> str:
    text = str(value)
    return text if len(text) <= 30 else text[:27] + "..."


# --------------------------------------------------------------------------- UPNs and census


def upn_check_letter(ids: pl.Expr) -> pl.Expr:
    """The check letter a UPN-shaped id should start with (domain-facts.md)."""
    weighted = []
    for position in range(2, 14):
        char = ids.str.slice(position - 1, 1)
        if position == 13:
            letter_index = {letter: i for i, letter in enumerate(UPN_CHECK_ALPHABET)}
            value = pl.when(char.str.contains(r"\d")).then(char.cast(pl.Int64, strict=False))
            value = value.otherwise(char.replace_strict(letter_index, default=None, return_dtype=pl.Int64))
        else:
            value = char.cast(pl.Int64, strict=False)
        weighted.append(value * position)
    remainder = pl.sum_horizontal(weighted) % 23
    return remainder.replace_strict(dict(enumerate(UPN_CHECK_ALPHABET)), default=None,
                                    return_dtype=pl.String)  # fmt: skip


def _check_upns(frame: pl.DataFrame, file: str, report: Report) -> None:
    """Ids shaped like a UPN must carry the right check letter; other ids are pseudonyms."""
    ids = pl.col("pupil_id").str.to_uppercase()
    bad = frame.filter(
        ids.str.contains(UPN_SHAPE) & (ids.str.slice(0, 1) != upn_check_letter(ids))
    ).get_column(LINE)
    if len(bad):
        report.rows("error", file, "pupil_id", bad.head(20).to_list(), len(bad),
                    "this UPN's check letter is wrong",
                    "correct the UPN (or use a pseudonymous id that is not UPN-shaped)")  # fmt: skip


CENSUS_SHAPE = r"^\d{4}-(AUT|SPR|SUM)$"


def _check_census(frame: pl.DataFrame, file: str, report: Report) -> None:
    bad = frame.filter(
        pl.col("census").is_not_null() & ~pl.col("census").str.to_uppercase().str.contains(CENSUS_SHAPE)
    ).get_column(LINE)
    if len(bad):
        report.rows("error", file, "census", bad.head(20).to_list(), len(bad),
                    "census must look like 2024-AUT, 2025-SPR or 2025-SUM")  # fmt: skip


# --------------------------------------------------------------------------- exits


def normalise_ground(ground: pl.Expr) -> pl.Expr:
    """`9 (1)(F)` -> `9(1)(f)`: grounds match ignoring spaces and case."""
    return ground.str.replace_all(r"\s+", "").str.to_lowercase()


def _derive_destination(exits: pl.DataFrame, raw_empty: pl.Series, has_ground: bool, file: str,
                        report: Report) -> pl.DataFrame:  # fmt: skip
    """Fill a missing destination from a ground that decides it; report the rest."""
    if has_ground:
        exits = exits.with_columns(normalise_ground(pl.col("ground")).alias("ground"))
        derived = pl.col("ground").replace_strict(codes.GROUND_DESTINATION, default=None)
        exits = exits.with_columns(
            pl.coalesce(pl.col("destination"), derived.cast(codes.Destination)).alias("destination")
        )
    # Invalid destination text is reported as invalid already; here only empty cells count.
    missing = exits.filter(pl.col("destination").is_null() & raw_empty)
    if missing.height:
        hint = "give a destination code; only grounds such as 9(1)(f) decide it on their own"
        report.rows("error", file, "destination", missing.get_column(LINE).head(20).to_list(),
                    missing.height, "destination is empty and the ground does not decide it", hint)  # fmt: skip
    return exits



# --------------------------------------------------------------------------- duplicates


def drop_duplicates(frame: pl.DataFrame, table: str, keys: list[str], file: str,
                    report: Report) -> pl.DataFrame:  # fmt: skip
    """Exact duplicate rows count once (warning); rows that share a key but disagree are errors."""
    content = [c for c in frame.columns if c != LINE]
    exact = frame.filter(pl.struct(content).is_duplicated() & ~pl.struct(content).is_first_distinct())
    if exact.height:
        report.rows(WARNING, file, None, exact.get_column(LINE).head(20).to_list(), exact.height,
                    "exact duplicate of an earlier row; counted once")  # fmt: skip
        frame = frame.unique(subset=content, keep="first", maintain_order=True)
    if keys:
        clash = frame.filter(pl.struct(keys).is_duplicated())
        if clash.height:
            first_lines = clash.group_by(keys, maintain_order=True).agg(pl.col(LINE).min().alias("first"))
            later = clash.join(first_lines, on=keys).filter(pl.col(LINE) != pl.col("first"))
            key_text = " + ".join(keys)
            for row, first in later.select(LINE, "first").head(20).iter_rows():
                report.error(file, row, keys[0], f"same {key_text} as row {first} but different data",
                             "keep one row per " + key_text)  # fmt: skip
            if later.height > 20:
                report.error(file, None, keys[0], f"{later.height - 20:,} more conflicting duplicates")
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
    candidate = letters_root / text
    root = letters_root.resolve()
    resolved = candidate.resolve(strict=False)
    if not resolved.is_relative_to(root):
        return None, "is a link that leaves letters/"
    if not resolved.is_file():
        return None, "does not exist in letters/"
    return resolved, None


def _attach_letter_paths(letters: pl.DataFrame, root: Path, file: str, report: Report) -> pl.DataFrame:
    letters_root = root / "letters"
    resolved: list[str | None] = []
    for line, relative in letters.select(LINE, "file").iter_rows():
        path, why = resolve_letter_path(letters_root, relative or "")
        if why:
            report.error(file, line, "file", f"{_shorten(relative)!r} {why}",
                         "put the letter in the letters/ folder and give its relative path")  # fmt: skip
        resolved.append(str(path) if path else None)
    return letters.with_columns(pl.Series("path", resolved, dtype=pl.String))


# --------------------------------------------------------------------------- cross-table checks


def _cross_checks(tables: dict[str, pl.DataFrame], files: dict[str, str], report: Report) -> None:
    pupils, exits = tables.get("pupils"), tables.get("exits")
    if pupils is not None and exits is not None:
        orphans = exits.join(pupils.select("pupil_id", "urn").unique(), on=["pupil_id", "urn"], how="anti")
        if orphans.height:
            report.rows("error", files["exits"], "pupil_id", orphans.get_column(LINE).head(20).to_list(),
                        orphans.height, "this pupil is not on this school's roll in pupils",
                        "add the pupil to pupils for that urn, or correct pupil_id/urn")  # fmt: skip
    schools = tables.get("schools")
    if schools is not None:
        known = set(schools.get_column("urn").to_list())
        for table in ("pupils", "exits", "letters"):
            if tables.get(table) is None:
                continue
            urns = sorted(set(tables[table].get_column("urn").unique().to_list()) - known)
            for urn in urns[:20]:
                report.warn(files[table], None, "urn", f"URN {urn} is not in schools",
                            "add it to schools for its name, phase and trust")  # fmt: skip
    letters = tables.get("letters")
    if exits is not None:
        linked = exits.filter(pl.col("letter_id").is_not_null())
        if linked.height and letters is None:
            report.warn(files["exits"], None, "letter_id", "exits name letters but there is no letters table",
                        "add letters.csv and the letters/ folder to check them")  # fmt: skip
        elif linked.height and letters is not None:
            unknown = linked.join(letters.select("letter_id"), on="letter_id", how="anti")
            if unknown.height:
                report.rows("error", files["exits"], "letter_id", unknown.get_column(LINE).head(20).to_list(),
                            unknown.height, "this letter_id is not in letters",
                            "add the letter to letters or clear the cell")  # fmt: skip


# --------------------------------------------------------------------------- entry point

KEYS = {"pupils": ["pupil_id", "urn"], "exits": [], "schools": ["urn"], "letters": ["letter_id"]}


def load_dataset(root: Path, *, encoding: str | None = None) -> tuple[Dataset, Report]:
    """Load and validate DATA/. Raises DataError (with the whole report) on any error."""
    report = Report()
    root = Path(root)
    if not root.is_dir():
        report.error(str(root), None, None, "is not a folder", "give the dataset folder")
        raise DataError(report)
    tables: dict[str, pl.DataFrame] = {}
    files: dict[str, Path] = {}
    for table in TABLES:
        path = find_table_file(root, table, report)
        if path is None:
            if table in REQUIRED_TABLES and not any(p.file.startswith(table) for p in report.errors):
                report.error(f"{table}.csv", None, None, f"the {table} table is missing",
                             f"add {table}.csv (or .xlsx/.parquet) to {root.name}/")  # fmt: skip
            continue
        files[table] = path
        raw = read_text_table(path, encoding, report)
        if raw is None:
            continue
        frame = canonicalise(raw, table, path.name, report)
        if frame is None:
            continue
        keys = KEYS[table] + (["census"] if table == "pupils" and frame["census"].is_not_null().any() else [])
        tables[table] = drop_duplicates(frame, table, keys, path.name, report)
    names = {t: p.name for t, p in files.items()}
    if "letters" in tables:
        tables["letters"] = _attach_letter_paths(tables["letters"], root, names["letters"], report)
    _cross_checks(tables, names, report)
    if not report.ok:
        raise DataError(report)
    dataset = Dataset(
        root=root,
        pupils=tables["pupils"],
        exits=tables["exits"],
        schools=tables.get("schools", empty_frame("schools")),
        letters=tables.get("letters", empty_frame("letters").with_columns(pl.lit(None, pl.String).alias("path"))),
        files=files,
        has_schools="schools" in tables,
        has_letters="letters" in tables,
    )
    return dataset, report
