"""Read .xlsx and .parquet files that may be hostile, without letting a parser abort.

Why this module exists: calamine (behind `polars.read_excel`) allocates the whole
rectangle between a sheet's first and last cells before it returns a value, so one stray
cell at XFD1048576 asks for 512 GiB and the process aborts; polars allocates whatever row
count a parquet footer claims, and aborts too. An abort cannot be caught, so every file is
inspected first by code that only streams and counts, and a parser is handed only what
passed:

* .xlsx: the zip directory is checked (counts, sizes, compression ratios) before anything
  is inflated; the parts calamine reads are copied into a fresh in-memory workbook, so it
  sees exactly the bytes checked here (a member cannot inflate to more than it declared);
  every XML part is refused if it carries a DTD (entity expansion); the first sheet's cell
  references are scanned as bytes, and a sheet whose cells reach far beyond its values is
  rewritten with only the cells that hold a value (its real extent).
* .parquet: the footer is read by pyarrow, which raises instead of aborting, and checked
  for plausible sizes; the data is read by pyarrow too.

Anything refused raises `Refused`, whose message and hint are safe to show (they never
quote a cell).
"""

from __future__ import annotations

import io
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import polars as pl

MIB = 1024 * 1024
MAX_WORKBOOK_BYTES = 256 * MIB  # an .xlsx on disk; Excel's 1,048,576 rows fit in far less
MAX_DIRECTORY_BYTES = 4 * MIB  # the zip's central directory (about 100 bytes per member)
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 1024 * MIB  # one member, uncompressed, as declared
MAX_TOTAL_BYTES = 2048 * MIB  # all members together, uncompressed, as declared
MAX_RATIO = 200  # uncompressed / compressed; real sheets are 5-20, zip bombs 1,000
RATIO_FROM_BYTES = MIB  # small members may compress better than that, harmlessly
MAX_SHEET_CELLS = 25_000_000  # the rectangle calamine allocates (32 bytes a cell)
SPARSE_FLOOR = 1_000_000  # a rectangle this small is read however few cells it holds...
SPARSE_FACTOR = 8  # ...a larger one only if at least one cell in 8 is there
MAX_CELL_BYTES = 1_000_000  # a cell's text; Excel itself stops at 32,767 characters
MAX_XML_DEPTH = 64  # worksheets nest about 8 deep
MAX_COLUMNS = 16_384  # Excel's own limit, XFD
MAX_PARQUET_ROWS = 100_000_000  # ten national rolls
PARQUET_ROWS_PER_BYTE = 64  # even run-length encoded ids take more than 1/64 byte a row
PARQUET_BATCH_ROWS = 1 << 20  # rows converted to polars at a time
CHUNK_BYTES = 8 * MIB
STORE_BELOW_BYTES = 64 * MIB  # parts copied uncompressed into the rebuilt workbook
MAX_PART_BYTES = 64 * MIB  # a part other than the sheet or its strings (styles, links...)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an encrypted .xlsx, or an old .xls
RESAVE = "open it in Excel and save it again as Excel Workbook (.xlsx), or export it as CSV UTF-8"
TOO_BIG = "if it really is this large, export the table as CSV UTF-8"
MAIN_PARTS = {"sharedStrings", "styles"}  # what calamine reads besides the sheet


class Refused(Exception):
    """A file that is not handed to a parser: why, what to do, and where if a cell."""

    def __init__(
        self, message: str, hint: str, row: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.hint, self.row, self.column = message, hint, row, column


def _broken(why: str, hint: str = RESAVE) -> Refused:
    """A workbook no parser should be given: damaged, disguised, or built to hurt one."""
    return Refused(f"cannot be read as xlsx: {why}", hint)


class _Stop(Exception):
    """Ends an expat parse early, once it has seen what it was looking for."""


# --------------------------------------------------------------------------- xlsx


@dataclass
class Workbook:
    """The first sheet as calamine reads it, with the header found by scanning."""

    frame: pl.DataFrame
    header_row: int  # the sheet row calamine takes the header from (its first row with a value)
    header: list[str]  # that row's texts, for telling duplicated headers apart


def read_xlsx(path: Path) -> Workbook:
    """The first sheet of a workbook as text columns; raises Refused or polars' errors."""
    size = path.stat().st_size
    if size > MAX_WORKBOOK_BYTES:
        raise Refused(f"is larger than {MAX_WORKBOOK_BYTES // MIB} MB", TOO_BIG)
    with path.open("rb") as handle:
        archive = _open_zip(handle, size)
        with archive:
            _check_members(archive)
            data, scan = _rebuild(archive)
    frame = pl.read_excel(
        io.BytesIO(data), engine="calamine", infer_schema_length=0, drop_empty_rows=False
    )
    return Workbook(frame.with_columns(pl.all().cast(pl.String)), scan.header_row, scan.header)


def _open_zip(handle: BinaryIO, size: int) -> zipfile.ZipFile:
    """The archive, once its directory is known to be small enough to list."""
    head = handle.read(8)
    if head.startswith(OLE_MAGIC):
        raise Refused(
            "is a password-protected workbook or an old .xls file, not .xlsx",
            "remove the password, or save it as Excel Workbook (.xlsx)",
        )
    if not head.startswith(b"PK"):
        raise _broken("it is not an Excel workbook (an .xlsx file is a zip archive)")
    entries, directory = _directory_size(handle, size)
    if entries > MAX_MEMBERS or directory > MAX_DIRECTORY_BYTES:
        raise Refused(f"holds more than {MAX_MEMBERS:,} parts, which no workbook needs", RESAVE)
    handle.seek(0)
    try:
        return zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise _broken("it is damaged (its zip directory cannot be read)") from None


def _directory_size(handle: BinaryIO, size: int) -> tuple[int, int]:
    """(members, bytes) of the zip's central directory, from its end record (zip64 too)."""
    tail_size = min(size, 22 + 65_535)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise _broken("it is damaged or truncated (its zip directory is missing)")
    entries, directory, offset = struct.unpack_from("<10xHLL", tail, at)
    if entries != 0xFFFF and 0xFFFFFFFF not in (directory, offset):
        return entries, directory
    locator = at - 20
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        raise _broken("it is damaged (its zip64 directory is missing)")
    (record,) = struct.unpack_from("<8xQ", tail, locator)
    if record + 56 > size:
        raise _broken("it is damaged (its zip64 directory is outside the file)")
    handle.seek(record)
    raw = handle.read(56)
    if raw[:4] != b"PK\x06\x06":
        raise _broken("it is damaged (its zip64 directory is missing)")
    entries64, directory64 = struct.unpack_from("<32xQQ", raw)
    return entries64, directory64


def _check_members(archive: zipfile.ZipFile) -> None:
    """Declared sizes and ratios, before a single byte is inflated (reads are capped too)."""
    total = 0
    for info in archive.infolist():
        if info.flag_bits & 0x1:
            raise _broken("it is encrypted", "remove the password and save it again")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _broken("it uses a kind of compression Excel never writes")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_MEMBER_BYTES or (
            info.file_size > RATIO_FROM_BYTES and ratio > MAX_RATIO
        ):
            raise Refused(
                f"would inflate to {_size(info.file_size)} from {_size(info.compress_size)} "
                "(possibly a zip bomb)",
                TOO_BIG,
            )
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise Refused(f"would inflate to {_size(total)} in all (possibly a zip bomb)", TOO_BIG)


def _size(count: int) -> str:
    """A byte count for people: 300 MB, 12 KB."""
    return f"{count / MIB:,.0f} MB" if count >= MIB else f"{count / 1024:,.0f} KB"


def _chunks(archive: zipfile.ZipFile, name: str) -> Iterator[bytes]:
    """A member's bytes in pieces; never more than its declared size, CRC checked."""
    try:
        with archive.open(name) as member:
            while piece := member.read(CHUNK_BYTES):
                yield piece
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError):
        raise _broken("it is damaged (a part of it cannot be decompressed)") from None
    except NotImplementedError:
        raise _broken("it uses a kind of compression Excel never writes") from None


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    """A small part (workbook, links), whole."""
    _check_part_size(archive, name)
    return b"".join(_chunks(archive, name))


def _check_part_size(archive: zipfile.ZipFile, name: str) -> None:
    """Parts other than the sheet and its strings are small in every real workbook."""
    if archive.getinfo(name).file_size > MAX_PART_BYTES:
        raise _broken(f"its part {name[:60]} is larger than any workbook needs")


# ----------------------------------------------------------------- which parts to copy


@dataclass
class _Parts:
    sheet: str
    others: list[str]  # parts calamine reads besides the sheet, under their own names
    strings: str | None  # the shared strings part, if any


def _locate(archive: zipfile.ZipFile) -> _Parts:
    """The first sheet and the parts calamine needs to read it, by the package's links."""
    names = set(archive.namelist())
    package = _relationships(archive, "_rels/.rels", "", names)
    workbook = next(
        (target for kind, target in package.values() if kind == "officeDocument"),
        "xl/workbook.xml",
    )
    if workbook not in names:
        raise _broken("it is not an Excel workbook (it has no workbook part)")
    links_name = posixpath.join(
        posixpath.dirname(workbook), "_rels", posixpath.basename(workbook) + ".rels"
    )
    links = _relationships(archive, links_name, posixpath.dirname(workbook), names)
    first = _first_sheet_id(_member(archive, workbook))
    if first is None or first not in links or links[first][1] not in names:
        raise _broken("it has no first sheet to read")
    wanted = {"[Content_Types].xml", "_rels/.rels", workbook, links_name}
    wanted |= {target for kind, target in links.values() if kind in MAIN_PARTS}
    wanted |= {"xl/sharedStrings.xml", "xl/styles.xml"}  # where calamine also looks by name
    sheet = links[first][1]
    strings = next((t for kind, t in links.values() if kind == "sharedStrings"), None)
    if strings not in names:
        strings = "xl/sharedStrings.xml" if "xl/sharedStrings.xml" in names else None
    return _Parts(sheet, sorted(n for n in wanted & names if n != sheet), strings)


def _relationships(
    archive: zipfile.ZipFile, name: str, base: str, names: set[str]
) -> dict[str, tuple[str, str]]:
    """Relationship id -> (kind, part name) of a .rels part; empty if there is none."""
    if name not in names:
        return {}
    found: dict[str, tuple[str, str]] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        if _local(tag) == "Relationship" and attrs.get("TargetMode") != "External":
            target = attrs.get("Target", "")
            part = target.lstrip("/") if target.startswith("/") else posixpath.join(base, target)
            kind = attrs.get("Type", "").rsplit("/", 1)[-1]
            found[attrs.get("Id", "")] = (kind, posixpath.normpath(part))

    _parse_small(_member(archive, name), start)
    return found


def _first_sheet_id(workbook: bytes) -> str | None:
    """The relationship id of the workbook's first sheet (the one polars reads)."""
    first: list[str] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        if _local(tag) == "sheet":
            first.extend(v for k, v in attrs.items() if _local(k) == "id")
            raise _Stop

    _parse_small(workbook, start)
    return first[0] if first else None


def _local(name: str) -> str:
    """`x:sheet` and `uri}sheet` -> `sheet`."""
    return name.rpartition("}")[2].rpartition(":")[2]


def _parser(namespaces: bool = False) -> expat.XMLParserType:
    """An expat parser that refuses DTDs, so no entity can be declared, let alone expanded."""
    parser = expat.ParserCreate(namespace_separator="}" if namespaces else None)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(*_: object) -> None:
        raise _broken("it holds a DTD (entity declarations), which Excel never writes")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    return parser


def _parse_small(data: bytes, start: Callable[[str, dict[str, str]], None]) -> None:
    """Parse a small XML part, calling `start` for each element (it may raise _Stop)."""
    parser = _parser(namespaces=True)
    depth = 0

    def on_start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            raise _broken("it has XML nested deeper than any workbook")
        start(tag, attrs)

    def on_end(_: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartElementHandler, parser.EndElementHandler = on_start, on_end
    try:
        parser.Parse(data, True)
    except _Stop:
        pass
    except expat.ExpatError:
        raise _broken("it is damaged (a part of it is not well-formed XML)") from None


def _check_prolog(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pass a part's bytes through, refusing it if a DTD comes before its root element."""
    parser, open_ = _parser(), True

    def root(*_: object) -> None:
        raise _Stop

    parser.StartElementHandler = root
    for piece in chunks:
        if open_:
            try:
                parser.Parse(piece, False)
            except _Stop:
                open_ = False
            except expat.ExpatError:
                raise _broken("it is damaged (a part of it is not well-formed XML)") from None
        yield piece


# --------------------------------------------------------------------------- rebuilding


def _rebuild(archive: zipfile.ZipFile) -> tuple[bytes, _SheetScan]:
    """A new workbook holding only the checked parts calamine needs, and the sheet's scan."""
    parts = _locate(archive)
    held = None  # a sheet small enough to keep is inflated once, not twice
    if archive.getinfo(parts.sheet).file_size <= STORE_BELOW_BYTES:
        held = list(_chunks(archive, parts.sheet))

    def sheet() -> Iterator[bytes]:
        return iter(held) if held is not None else _chunks(archive, parts.sheet)

    scan = _fast_scan(sheet())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as rebuilt:
        for name in parts.others:
            if name != parts.strings:
                _check_part_size(archive, name)
            with _new_member(rebuilt, archive, name) as out:
                for piece in _check_prolog(_chunks(archive, name)):
                    out.write(piece)
        with _new_member(rebuilt, archive, parts.sheet) as out:
            if scan.usable:
                for piece in sheet():
                    out.write(piece)
            else:  # cells far beyond the values, or XML the byte scan cannot vouch for
                scan = _rewrite_sheet(sheet(), out)
    scan.resolve_header(lambda wanted: _shared_strings(archive, parts.strings, wanted))
    return buffer.getvalue(), scan


def _new_member(rebuilt: zipfile.ZipFile, archive: zipfile.ZipFile, name: str) -> BinaryIO:
    """A member of the rebuilt workbook: stored if small (calamine reads it fastest) or if it
    hardly compresses (it already costs its size on disk), else compressed, so memory stays
    near the size of the file."""
    info = archive.getinfo(name)
    if info.file_size > max(STORE_BELOW_BYTES, 2 * info.compress_size):
        return rebuilt.open(name, "w", force_zip64=True)
    return rebuilt.open(zipfile.ZipInfo(name), "w", force_zip64=True)  # ZIP_STORED


# --------------------------------------------------------------------------- the sheet


def allowed_cells(cells: int) -> int:
    """The largest rectangle read for a sheet of `cells` cells: calamine allocates all of it,
    so a sheet mostly empty space (a far stray value) costs no more than a full one."""
    return min(MAX_SHEET_CELLS, max(SPARSE_FLOOR, SPARSE_FACTOR * cells))


def column_letters(number: int) -> str:
    """1 -> A, 16384 -> XFD."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - ord("A") + 1
    return number


_REFERENCE = re.compile(r"([A-Za-z]{1,3})([0-9]{1,7})")
_PREFIXED_CELL = re.compile(rb":c[\s>/]")  # <x:c ...>: a cell with a namespace prefix


@dataclass
class _Extent:
    """The rectangle of some cells, and the one farthest from A1 (to name it)."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0
    farthest: tuple[int, int] = (0, 0)

    def add(self, row: int, column: int) -> None:
        if not self.top:
            self.top, self.bottom, self.left, self.right = row, row, column, column
        else:
            self.top, self.bottom = min(self.top, row), max(self.bottom, row)
            self.left, self.right = min(self.left, column), max(self.right, column)
        if row * column > self.farthest[0] * self.farthest[1]:
            self.farthest = (row, column)

    @property
    def cells(self) -> int:
        if not self.top:
            return 0
        return (self.bottom - self.top + 1) * (self.right - self.left + 1)


@dataclass
class _SheetScan:
    """What scanning a sheet found: whether calamine may read it as it is, and the header."""

    usable: bool = True
    header_row: int = 1
    header_cells: list[tuple[int, str, str]] = field(default_factory=list)  # column, type, text
    header: list[str] = field(default_factory=list)

    def resolve_header(self, strings: Callable[[set[int]], dict[int, str]]) -> None:
        """The header's texts, looking up shared strings by index."""
        wanted = {int(t) for _, kind, t in self.header_cells if kind == "s" and t.isdigit()}
        found = strings(wanted) if wanted else {}
        self.header = [
            (found.get(int(text), "") if kind == "s" and text.isdigit() else text).strip()
            for _, kind, text in sorted(self.header_cells)
        ]


def _fast_scan(chunks: Iterator[bytes]) -> _SheetScan:
    """Where the sheet's cells are, from their `r` attributes scanned as bytes.

    Ordinary sheets write `<c r="B7"` for every cell, so counting those tags against all
    tags starting `<c` within sheetData proves every cell was seen; anything else (prefixed
    names, cells without `r`, another encoding) is left to the exact, slower rewrite. The
    header is found by an expat parse that stops at the end of the first row with a value.
    """
    scan = _ByteScan()
    header = _SheetParser(None, header_only=True)
    carry = b""
    for number, piece in enumerate(chunks):
        if number == 0 and (b"\x00" in piece[:4] or piece.startswith((b"\xff\xfe", b"\xfe\xff"))):
            scan.doubtful = True  # UTF-16 or UTF-32: the byte patterns would not match
            break
        header.feed(piece)
        data = carry + piece
        cut = data.rfind(b"<", max(0, len(data) - 64))  # a tag's start stays whole
        data, carry = (data, b"") if cut < 0 else (data[:cut], data[cut:])
        if not scan.add(data):
            break
    else:
        scan.add(carry)
        header.finish()
    usable = scan.seen and not scan.doubtful and scan.extent.cells <= allowed_cells(scan.cells)
    return _SheetScan(usable, header.header_row or 1, header.header_cells)


@dataclass
class _ByteScan:
    """The extent of every cell tag within sheetData, read from the bytes with numpy."""

    extent: _Extent = field(default_factory=_Extent)
    cells: int = 0
    seen: bool = False  # sheetData was found
    inside: bool = False
    doubtful: bool = False
    run: int = 0  # bytes since the last `<`, carried from piece to piece

    def add(self, data: bytes) -> bool:
        """Take in the next piece (cut before a tag); False once the sheet needs the rewrite.

        Besides the cells' places, text runs are measured: a run longer than a cell may be
        sends the sheet to the exact reader, which names the cell and refuses it at once
        (instead of calamine reading 100 MB of it first)."""
        if _PREFIXED_CELL.search(data):
            self.doubtful = True
            return False
        buffer = np.frombuffer(data + bytes(16), dtype=np.uint8)  # padded for fixed offsets
        opens = np.flatnonzero(buffer[: len(data)] == ord("<"))
        if not self._runs_fit(opens, len(data)):
            self.doubtful = True
            return False
        start = 0
        if not self.inside:
            start = data.find(b"<sheetData")
            if start < 0:
                return True
            self.seen = self.inside = True
        end = data.find(b"</sheetData>", start)
        if end < 0:
            end = len(data)
        else:
            self.inside = False
        places = _cell_places(buffer, opens[(opens >= start) & (opens < end)])
        if places is None:
            self.doubtful = True
            return False
        rows, columns = places
        if rows.size:
            self.extent.add(int(rows.min()), int(columns.min()))
            self.extent.add(int(rows.max()), int(columns.max()))
            self.cells += int(rows.size)
        return self.extent.cells <= MAX_SHEET_CELLS

    def _runs_fit(self, opens: np.ndarray, size: int) -> bool:
        if opens.size == 0:
            self.run += size
            return self.run <= MAX_CELL_BYTES
        longest = max(self.run + int(opens[0]), int(np.diff(opens).max(initial=0)))
        self.run = size - int(opens[-1])
        return longest <= MAX_CELL_BYTES


_TAG_ENDS = np.frombuffer(b" >/\t\n\r", dtype=np.uint8)


def _cell_places(buffer: np.ndarray, opens: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, columns) of every `<c` tag starting at `opens` (the `<`s of a padded piece),
    or None unless each is `<c r="A1"`.

    Vectorised over the bytes: a sheet of a million cells is read in a few numpy passes,
    where a regular expression would take a second.
    """
    opens = opens[buffer[opens + 1] == ord("c")]
    cells = opens[np.isin(buffer[opens + 2], _TAG_ENDS)]  # not <col, <color, <cfRule...
    plain = (
        (buffer[cells + 2] == ord(" "))
        & (buffer[cells + 3] == ord("r"))
        & (buffer[cells + 4] == ord("="))
        & (buffer[cells + 5] == ord('"'))
    )
    if not plain.all():
        return None
    at = cells + 6
    columns = np.zeros(at.size, dtype=np.int64)
    letters = np.zeros(at.size, dtype=np.int64)
    going = np.ones(at.size, dtype=bool)
    for k in range(3):
        value = buffer[at + k] - np.uint8(ord("A") - 1)  # A -> 1; uint8 wraps below A
        going &= (value >= 1) & (value <= 26)
        columns = np.where(going, columns * 26 + value, columns)
        letters += going
    rows = np.zeros(at.size, dtype=np.int64)
    digits = np.zeros(at.size, dtype=np.int64)
    going = np.ones(at.size, dtype=bool)
    at = at + letters
    for k in range(8):
        value = buffer[at + k] - np.uint8(ord("0"))
        going &= value < 10
        rows = np.where(going, rows * 10 + value, rows)
        digits += going
    closed = buffer[at + digits] == ord('"')
    if not (closed.all() and (letters > 0).all() and (digits > 0).all() and (digits < 8).all()):
        return None
    return rows, columns


def _rewrite_sheet(chunks: Iterator[bytes], out: BinaryIO) -> _SheetScan:
    """Write the sheet again with only the cells that hold a value, each with its `r`."""
    writer = _Writer(out)
    parser = _SheetParser(writer.write, header_only=False)
    for piece in chunks:
        parser.feed(piece)
    parser.finish()
    writer.close()
    extent = parser.extent
    if extent.cells > allowed_cells(parser.kept):
        row, column = extent.farthest
        raise Refused(
            f"has a value in cell {column_letters(column)}{row}, far from the rest: reading "
            f"it would take {extent.cells:,} cells for the {parser.kept:,} that hold a value",
            "delete that cell and anything else outside the table (or copy the table into a "
            "new workbook), save, and try again",
            row,
            column_letters(column),
        )
    return _SheetScan(
        usable=True, header_row=parser.header_row or 1, header_cells=parser.header_cells
    )


class _Writer:
    """Buffered UTF-8 output into a zip member."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pending: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.pending.append(text)
        self.size += len(text)
        if self.size > MIB:
            self.flush()

    def flush(self) -> None:
        self.out.write("".join(self.pending).encode("utf-8"))
        self.pending, self.size = [], 0

    def close(self) -> None:
        self.flush()


@dataclass
class _Cell:
    row: int
    column: int
    kind: str  # the `t` attribute: n, s, str, inlineStr, b, e, d
    depth: int
    tag: str
    attrs: dict[str, str]
    parts: list[str] = field(default_factory=list)
    has_value_element: bool = False
    has_inline_string: bool = False
    value: str = ""  # the text of <v>
    text: str = ""  # the text of an inline string (not its phonetic runs)
    chars: int = 0
    inside: list[str] = field(default_factory=list)  # local names of open elements below <c>

    def holds_value(self) -> bool:
        """Whether calamine reads a value here (an empty number is no value; "" text is)."""
        if self.has_inline_string:
            return True
        return self.has_value_element and (
            self.value != "" or self.kind in ("s", "str", "inlineStr")
        )


class _SheetParser:
    """Walk a worksheet with expat: each cell's place, whether it holds a value, the header.

    With `write`, the sheet is written again with only its cells that hold a value (and
    each cell's reference spelt out); with `header_only`, it stops after the header row.
    Names keep their prefixes (no namespace processing), so the copy stays in the same
    namespace as the original.
    """

    def __init__(self, write: Callable[[str], None] | None, header_only: bool) -> None:
        self.parser = _parser()
        self.parser.buffer_text = True
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.CharacterDataHandler = self._text
        self.write, self.header_only, self.done = write, header_only, False
        self.depth = self.row = self.column = 0
        self.root: tuple[str, dict[str, str]] | None = None
        self.sheet_data: str | None = None  # its tag while inside it
        self.row_tag, self.open_row = "row", 0  # the row element written last, if still open
        self.cell: _Cell | None = None
        self.extent = _Extent()
        self.kept = 0  # cells holding a value
        self.header_row: int | None = None
        self.header_cells: list[tuple[int, str, str]] = []

    def feed(self, piece: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.Parse(piece, False)
        except _Stop:
            self.done = True
        except expat.ExpatError:
            raise _broken("it is damaged (its sheet is not well-formed XML)") from None

    def finish(self) -> None:
        self.feed(b"")
        if not self.done:
            try:
                self.parser.Parse(b"", True)
            except expat.ExpatError:
                raise _broken("it is damaged (its sheet is not well-formed XML)") from None
        if self.write is not None and self.root is None:
            raise _broken("it is damaged (its sheet is empty XML)")

    # expat handlers

    def _start(self, tag: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_XML_DEPTH:
            raise _broken("it has XML nested deeper than any workbook")
        local = _local(tag)
        cell = self.cell
        if cell is not None:
            if self.write is not None:
                cell.parts.append(f"<{tag}{_attributes(attrs)}>")
            if len(cell.inside) == 0 and local == "v":
                cell.has_value_element = True
            elif len(cell.inside) == 0 and local == "is":
                cell.has_inline_string = True
            cell.inside.append(local)
        elif self.depth == 1:
            self.root = (tag, attrs)
            if self.write is not None:
                self.write('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n')
                self.write(f"<{tag}{_attributes(attrs)}>")
        elif self.sheet_data is None and local == "sheetData":
            self.sheet_data = tag
            if self.write is not None:
                self.write(f"<{tag}>")
        elif self.sheet_data is not None and local == "row":
            self.row = _whole(attrs.get("r")) or self.row + 1
            self.row_tag, self.column = tag, 0
        elif self.sheet_data is not None and local == "c":
            row, column = max(self.row, 1), self.column + 1
            reference = attrs.get("r")
            if reference is not None:
                match = _REFERENCE.fullmatch(reference)
                if match is None:
                    raise _broken("it is damaged (a cell reference is not valid)")
                column, row = _column_number(match.group(1).upper()), int(match.group(2))
            self.column = column
            self.cell = _Cell(row, column, attrs.get("t", "n"), self.depth, tag, attrs)

    def _text(self, data: str) -> None:
        cell = self.cell
        if cell is None:
            return
        cell.chars += len(data)
        if cell.chars > MAX_CELL_BYTES:
            raise Refused(
                f"holds more than {MAX_CELL_BYTES:,} characters in cell "
                f"{column_letters(cell.column)}{cell.row}",
                "shorten the cell, or move long text out of the table",
                cell.row,
                column_letters(cell.column),
            )
        if self.write is not None:
            cell.parts.append(escape(data))
        if cell.inside == ["v"]:
            cell.value += data
        elif cell.inside[:1] == ["is"] and cell.inside[-1] == "t" and "rPh" not in cell.inside:
            cell.text += data  # phonetic guides (rPh) are not part of the value

    def _end(self, tag: str) -> None:
        cell = self.cell
        if cell is not None and self.depth > cell.depth:
            if self.write is not None:
                cell.parts.append(f"</{tag}>")
            cell.inside.pop()
        elif cell is not None:
            self.cell = None
            if cell.holds_value():
                self._keep(cell)
        elif self.header_only and self.header_row is not None and _local(tag) == "row":
            raise _Stop  # the end of the header row: all the header is known
        elif self.sheet_data is not None and tag == self.sheet_data:
            self.sheet_data = None
            if self.write is not None:
                self._close_row()
                self.write(f"</{tag}>")
        elif self.root is not None and self.depth == 1 and self.write is not None:
            self.write(f"</{tag}>")
        self.depth -= 1

    def _keep(self, cell: _Cell) -> None:
        if self.header_row is None:
            self.header_row = cell.row
        if cell.row == self.header_row:
            text = cell.text if cell.has_inline_string else cell.value
            self.header_cells.append((cell.column, cell.kind, text))
        elif self.header_only:
            raise _Stop
        self.extent.add(cell.row, cell.column)
        self.kept += 1
        if self.write is None:
            return
        if self.open_row != cell.row:
            self._close_row()
            self.write(f'<{self.row_tag} r="{cell.row}">')
            self.open_row = cell.row
        attrs = {k: v for k, v in cell.attrs.items() if k != "r"}
        reference = f"{column_letters(cell.column)}{cell.row}"
        self.write(f'<{cell.tag} r="{reference}"{_attributes(attrs)}>')
        self.write("".join(cell.parts))
        self.write(f"</{cell.tag}>")

    def _close_row(self) -> None:
        if self.open_row and self.write is not None:
            self.write(f"</{self.row_tag}>")
        self.open_row = 0


def _attributes(attrs: dict[str, str]) -> str:
    return "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items())


def _whole(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() and len(text) <= 7 else 0


def _shared_strings(archive: zipfile.ZipFile, name: str | None, wanted: set[int]) -> dict[int, str]:
    """The shared strings at the `wanted` indexes, reading no further than the last of them."""
    found: dict[int, str] = {}
    if name is None or not wanted:
        return found
    parser, last = _parser(), max(wanted)
    index, depth = -1, 0
    inside: list[str] = []  # local names of the open elements from <si> down
    pieces: list[str] = []

    def start(tag: str, _: dict[str, str]) -> None:
        nonlocal index, depth
        depth += 1
        if depth > MAX_XML_DEPTH:
            raise _broken("it has XML nested deeper than any workbook")
        local = _local(tag)
        if local == "si" and not inside:
            index += 1
            pieces.clear()
        if inside or local == "si":
            inside.append(local)

    def text(data: str) -> None:
        if inside and inside[-1] == "t" and "rPh" not in inside and index in wanted:
            pieces.append(data)

    def end(_: str) -> None:
        nonlocal depth
        depth -= 1
        if inside:
            inside.pop()
            if not inside:
                if index in wanted:
                    found[index] = "".join(pieces)[:MAX_CELL_BYTES]
                if index >= last:
                    raise _Stop

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    try:
        for piece in _chunks(archive, name):
            parser.Parse(piece, False)
        parser.Parse(b"", True)
    except _Stop:
        pass
    except expat.ExpatError:
        raise _broken("it is damaged (its shared strings are not well-formed XML)") from None
    return found


# --------------------------------------------------------------------------- parquet


def read_parquet(
    path: Path, categorical: Callable[[list[str]], Collection[str]] | None = None
) -> pl.DataFrame:
    """A parquet file's columns as text, after its footer's claims were found plausible.

    `categorical` picks, from the column names, text columns to read as categorical text
    instead: pyarrow hands over their dictionary pages as they are, so a national roll's
    coded columns never exist as millions of strings. The file is read in batches, each
    converted as it comes, so the table is never held twice (as arrow and as polars).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    hint = "write the parquet file again, or export the table as CSV UTF-8"
    size = path.stat().st_size
    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError, MemoryError):
        raise Refused("cannot be read as parquet: it is damaged or truncated", hint) from None
    rows = metadata.num_rows
    if rows < 0 or rows > MAX_PARQUET_ROWS or rows > max(100_000, PARQUET_ROWS_PER_BYTE * size):
        raise Refused(f"claims {rows:,} rows in {size:,} bytes, which cannot be right", hint)
    if metadata.num_columns > MAX_COLUMNS:
        raise Refused(f"has {metadata.num_columns:,} columns; at most {MAX_COLUMNS:,}", hint)
    chosen = set(categorical(schema.names)) if categorical else set()
    text = (pa.string(), pa.large_string())
    dictionary = [f.name for f in schema if f.name in chosen and f.type in text]
    frames: list[pl.DataFrame] = []
    try:
        file = pq.ParquetFile(path, read_dictionary=dictionary)
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            frames.append(_from_arrow(batch))
        if not frames:
            frames.append(_from_arrow(file.schema_arrow.empty_table()))
    except (pa.ArrowMemoryError, MemoryError):
        raise Refused("is too large to read into memory", TOO_BIG) from None
    except (pa.ArrowException, OSError, ValueError):
        raise Refused("cannot be read as parquet: it is damaged or truncated", hint) from None
    frame = pl.concat(frames, rechunk=False) if len(frames) > 1 else frames[0]
    del frames
    kept = set(dictionary)  # every other column is text, as a CSV's would be
    return frame.with_columns(pl.exclude(kept).cast(pl.String)) if kept else frame


def _from_arrow(batch: object) -> pl.DataFrame:
    frame = pl.from_arrow(batch)  # type: ignore[arg-type]
    assert isinstance(frame, pl.DataFrame)  # a table, not an array
    return frame
