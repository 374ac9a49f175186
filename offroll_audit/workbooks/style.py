"""Shared building blocks of the Excel outputs: inert cells, styles, tables and a reproducible save.

Every cell whose text comes from input is written as a string cell, never a
formula, so a school name such as `=HYPERLINK(...)` stays text; text with a
risky first character also gets Excel's quote prefix so editing the cell does
not turn it into a formula. Characters XML cannot hold are replaced.

Big tables (the overview's 700,000 exits) are too slow for openpyxl's cell
objects (about 10 microseconds a cell), so a `Table` is written by openpyxl as
a header and two styled template rows, and its data rows are streamed as XML
into the saved sheet with the template rows' styles. Both paths use the same
text cleaning. The zip is rewritten with fixed timestamps and fixed document
properties so the same results give byte-identical workbooks.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from copy import copy
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.cell.rich_text import CellRichText
from openpyxl.drawing.spreadsheet_drawing import SpreadsheetDrawing
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._writer import WorksheetWriter
from openpyxl.worksheet.worksheet import Worksheet
from openpyxl.writer.excel import ExcelWriter

CREATOR = "offroll-audit"
MAX_TEXT = 32_000  # Excel holds at most 32,767 characters in a cell
TRUNCATED = " …[truncated]"
RISKY_START = ("=", "+", "-", "@", "\t", "\r", "\n")
ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
EXCEL_ROWS = 1_048_576
EXCEL_EPOCH = dt.date(1899, 12, 30)

# number formats: what a reader expects to see
FMT_RATIO = "0.00"

# A band in words, as every sheet shows it.
BAND_LABEL = {
    "high_998": "above 99.8% limit",
    "high_95": "above 95% limit",
    "expected": "within limits",
    "low_95": "below 95% limit",
    "low_998": "below 99.8% limit",
    "too_few": "too few to judge",
}
FMT_EXPECTED = "0.0"
FMT_P = '[<0.001]"<0.001";0.0000'
FMT_INT = "#,##0"
FMT_DATE = "yyyy-mm-dd"

# colours (fills light enough to print in black and white)
DARK = "1F3864"
RED_FILL = "F8CBAD"
AMBER_FILL = "FFE699"
GREEN_FILL = "C6EFCE"
BLUE_FILL = "DDEBF7"
GREY_FILL = "EDEDED"
SHARED_COLOUR = "9C0006"

# fonts name their face: a nameless font falls back to a serif face in LibreOffice
FACE = "Calibri"
TITLE_FONT = Font(name=FACE, bold=True, size=16, color=DARK)
HEADING_FONT = Font(name=FACE, bold=True, size=12, color=DARK)
BOLD = Font(name=FACE, size=11, bold=True)
NOTE_FONT = Font(name=FACE, size=11, italic=True, color="595959")
HEADER_FONT = Font(name=FACE, size=11, bold=True, color="FFFFFF")
NOTE_COLOUR = "FFF2CC"
WRAP_TOP = Alignment(wrap_text=True, vertical="top")
NUMBER_COLUMN = Alignment(vertical="top", horizontal="right")  # "<5" and "c" line up too
TEXT_COLUMN = Alignment(vertical="top", indent=1)  # a gap after a right-aligned number
WRAP_TEXT_COLUMN = Alignment(vertical="top", indent=1, wrap_text=True)
LEFT_TOP = Alignment(wrap_text=True, vertical="top", horizontal="left")
HEADER_ALIGN = Alignment(wrap_text=True, vertical="center", horizontal="center")
THIN = Side(style="thin", color="BFBFBF")
BOX = Border(left=THIN, right=THIN, top=THIN, bottom=THIN)


def fill(colour: str) -> PatternFill:
    return PatternFill("solid", fgColor=colour, bgColor=colour)


# ------------------------------------------------------------------------------------ values


def clean_text(value: Any) -> str:
    """Text safe for XML and Excel: illegal characters replaced, over-long text cut."""
    text = value if isinstance(value, str) else str(value)
    if ILLEGAL_XML.search(text):
        text = ILLEGAL_XML.sub("\ufffd", text)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - len(TRUNCATED)] + TRUNCATED
    return text


def is_risky(text: str) -> bool:
    """Text a spreadsheet could take for a formula if typed in (CSV-injection payloads)."""
    return text.startswith(RISKY_START)


def number(value: Any) -> float | int | None:
    """A finite number or None (JSON nulls, NaN and infinity show as empty cells)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def excel_date(value: Any) -> int | str | None:
    """An ISO date as an Excel serial day (so it sorts and filters as a date); other text as is."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return (value - EXCEL_EPOCH).days
    text = str(value)
    try:
        return (dt.date.fromisoformat(text[:10]) - EXCEL_EPOCH).days
    except ValueError:
        return text


def yes_no(value: Any) -> str | None:
    if value is None:
        return None
    return "yes" if value else "no"


def put(
    ws: Worksheet,
    row: int,
    column: int,
    value: Any,
    *,
    font: Font | None = None,
    number_format: str | None = None,
    alignment: Alignment | None = None,
    fill_colour: str | None = None,
    border: Border | None = None,
) -> Cell:
    """Write one cell; text is always a string cell (never a formula or an error value).

    Styles are cached per workbook: openpyxl hashes every style object on each
    assignment, which made small packs slow; a cached StyleArray is a copy.
    """
    cell = ws.cell(row=row, column=column)
    quote = False
    if isinstance(value, str):
        text = clean_text(value)
        cell.value = text
        cell.data_type = "s"  # openpyxl would take a leading "=" for a formula
        quote = is_risky(text)
    elif isinstance(value, bool):
        cell.value = yes_no(value)
        cell.data_type = "s"
    elif value is None or isinstance(value, int | float):
        cell.value = number(value)
    elif isinstance(value, CellRichText):  # its blocks were cleaned by the caller
        cell.value = value
    else:
        return put(
            ws,
            row,
            column,
            str(value),
            font=font,
            number_format=number_format,
            alignment=alignment,
            fill_colour=fill_colour,
            border=border,
        )
    style_key = (id(font), number_format, id(alignment), fill_colour, id(border), quote)
    cache = _style_cache(ws)
    cached = cache.get(style_key)
    if cached is not None:
        cell._style = copy(cached)
        return cell
    if font is not None:
        cell.font = font
    if number_format is not None:
        cell.number_format = number_format
    if alignment is not None:
        cell.alignment = alignment
    if fill_colour is not None:
        cell.fill = fill(fill_colour)
    if border is not None:
        cell.border = border
    if quote:
        cell.quotePrefix = True
    cache[style_key] = copy(cell._style)
    return cell


def header(ws: Worksheet, row: int, column: int, text: str) -> Cell:
    """A column header: white bold on dark blue, wrapped and centred."""
    return put(ws, row, column, text, font=HEADER_FONT, alignment=HEADER_ALIGN, fill_colour=DARK)


def _style_cache(ws: Worksheet) -> dict[tuple, Any]:
    workbook = ws.parent
    cache = getattr(workbook, "_offroll_styles", None)
    if cache is None:
        cache = {}
        workbook._offroll_styles = cache
    return cache


def count_text(value: Any, suppress: int) -> Any:
    """A count, or `<N` when suppression is on and the count is 1 to N-1 (zero discloses no one)."""
    if is_suppressed(value, suppress):
        return f"<{suppress}"
    return value


def is_suppressed(value: Any, suppress: int) -> bool:
    """Whether a count would be shown as `<N` (booleans are not counts)."""
    return (
        suppress > 1
        and isinstance(value, int)
        and not isinstance(value, bool)
        and 1 <= value < suppress
    )


# ------------------------------------------------------------------------------------ sheets


def note_row(ws: Worksheet, row: int, text: str, columns: int, height: float) -> None:
    """A note in small italic type across the first `columns` columns of `row`, wrapped in
    one merged cell `height` points high (a sheet's explanation under its title)."""
    put(ws, row, 1, text, font=NOTE_FONT, alignment=WRAP_TOP)
    ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=columns)
    ws.row_dimensions[row].height = height


def title(ws: Worksheet, text: str) -> None:
    """The sheet's title in A1, with a row tall enough for the large font."""
    put(ws, 1, 1, text, font=TITLE_FONT)
    ws.row_dimensions[1].height = 24


def set_widths(ws: Worksheet, widths: Sequence[float], start: int = 1) -> None:
    for offset, width in enumerate(widths):
        ws.column_dimensions[get_column_letter(start + offset)].width = width


def print_setup(ws: Worksheet, title_rows: str | None = None, portrait: bool = False) -> None:
    """Landscape A4, fitted to one page wide (as many pages tall as needed)."""
    ws.page_setup.orientation = "portrait" if portrait else "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.gridLines = False
    ws.page_margins.left = ws.page_margins.right = 0.4
    ws.page_margins.top = ws.page_margins.bottom = 0.5
    if title_rows:
        ws.print_title_rows = title_rows


def text_height(text: str, width: float, line_points: float = 15.0) -> float:
    """Row height (points) a wrapped text needs in a column `width` characters wide."""
    chars = max(int(width * 1.15), 10)
    lines = sum(max(1, math.ceil(len(part) / chars)) for part in text.split("\n"))
    return min(409.0, max(line_points, lines * line_points))


def write_lines(
    ws: Worksheet,
    row: int,
    lines: Iterable[tuple[str, Any]],
    width: float = 100,
    label_font: Font = BOLD,
    merge_to: int = 2,
    value_alignment: Alignment = LEFT_TOP,
) -> int:
    """Label/value pairs in column A and B (B merged up to column `merge_to`), wrapped.

    Returns the next free row. Heights are set because no spreadsheet grows a
    wrapped row on opening a file.
    """
    for label, value in lines:
        put(ws, row, 1, label, font=label_font, alignment=WRAP_TOP)
        put(ws, row, 2, value, alignment=value_alignment)
        if merge_to > 2:
            ws.merge_cells(start_row=row, start_column=2, end_row=row, end_column=merge_to)
        height = max(
            text_height(str(label), ws.column_dimensions["A"].width or 13),
            text_height("" if value is None else str(value), width),  # as put writes it
        )
        ws.row_dimensions[row].height = height
        row += 1
    return row


# ------------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Column:
    """One column of a Table: header, width and how its values look.

    `key` names the results.json field the column shows, where a table is built from
    records (the exits): positions are then found by key, never by counting columns.
    """

    header: str
    width: float = 12
    number_format: str | None = None  # numbers and dates; None for text
    wrap: bool = False
    date: bool = False  # ISO date text written as an Excel date
    key: str | None = None


def key_index(columns: Sequence[Column], key: str) -> int:
    """The 0-based position of the column showing field `key` (ValueError if none does)."""
    for index, column in enumerate(columns):
        if column.key == key:
            return index
    raise ValueError(f"no column shows {key!r}")


@dataclass
class Table:
    """Rows streamed into a sheet at save time (see the module docstring)."""

    ws: Worksheet
    header_row: int
    columns: list[Column]
    rows: Iterable[Sequence[Any]]
    count: int
    cut: int = 0  # rows left out because the sheet would pass Excel's row limit

    @property
    def first_row(self) -> int:
        return self.header_row + 1

    @property
    def last_row(self) -> int:
        return self.header_row + max(self.count, 1)

    @property
    def last_column(self) -> str:
        return get_column_letter(len(self.columns))

    def column_range(self, index: int) -> str:
        """A1 range of data column `index` (0-based), for conditional formats."""
        letter = get_column_letter(index + 1)
        return f"{letter}{self.first_row}:{letter}{self.last_row}"

    def key_range(self, key: str) -> str:
        """A1 range of the data column showing field `key`, for conditional formats."""
        return self.column_range(key_index(self.columns, key))


@dataclass
class Book:
    """A workbook plus the tables to stream into it when it is saved."""

    wb: Workbook
    tables: list[Table] = field(default_factory=list)

    def table(
        self,
        ws: Worksheet,
        header_row: int,
        columns: list[Column],
        rows: Iterable[Sequence[Any]],
        count: int,
        *,
        autofilter: bool = True,
        freeze: str | None = "A",
    ) -> Table:
        """Headers now, data rows at save time. `freeze` is the first unfrozen column (or None)."""
        room = EXCEL_ROWS - header_row
        cut = max(0, count - room)
        table = Table(ws, header_row, columns, rows, count - cut, cut)
        for index, column in enumerate(columns, 1):
            header(ws, header_row, index, column.header)
            ws.column_dimensions[get_column_letter(index)].width = column.width
            # two template rows carry each column's style, plain and with the quote prefix
            text = column.number_format is None
            alignment = (
                (WRAP_TEXT_COLUMN if column.wrap else TEXT_COLUMN) if text else NUMBER_COLUMN
            )
            put(
                ws,
                header_row + 1,
                index,
                0,
                number_format=column.number_format,
                alignment=alignment,
            )
            put(
                ws,
                header_row + 2,
                index,
                "=",
                number_format=column.number_format,
                alignment=alignment,
            )
        ws.row_dimensions[header_row].height = 32
        if autofilter:
            ws.auto_filter.ref = f"A{header_row}:{table.last_column}{table.last_row}"
        if freeze:
            ws.freeze_panes = f"{freeze}{header_row + 1}"
        self.tables.append(table)
        return table

    def save(self, path: Any, when: dt.datetime, title: str) -> None:
        save_book(self, path, when, title)


# ------------------------------------------------------------------------------------ streaming

_CACHE_LIMIT = 50_000  # distinct values remembered per column (ids are unique: no use caching)


def _inline_text(text: str) -> str:
    """The <is> element of an inline string (text already cleaned)."""
    space = ' xml:space="preserve"' if text != text.strip() or "\n" in text else ""
    return f"<is><t{space}>{escape(text).replace(chr(13), '&#13;')}</t></is>"


_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_CELL = re.compile(r"<c\b([^>]*)>")


def _template_styles(xml: str, row: int) -> dict[str, str]:
    """Column letter -> style id of the cells in template row `row` of openpyxl's sheet XML."""
    start = xml.index(f'<row r="{row}"')
    end = xml.index("</row>", start)
    styles = {}
    for match in _CELL.finditer(xml, start, end):
        attributes = dict(_ATTRIBUTE.findall(match.group(1)))
        reference = attributes.get("r", "")
        styles[reference.rstrip("0123456789")] = attributes.get("s", "0")
    return styles


SST_PART = "xl/sharedStrings.xml"
SST_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
SST_RELATION = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


class _SharedStrings:
    """The workbook's shared-string table for streamed text: each distinct text is stored once
    and cells refer to it by number (half the XML of inline strings for a big sheet)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def add(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.index)
        return found

    def xml(self) -> bytes:
        items = "".join(f"<si>{_inline_text(text)[4:-5]}</si>" for text in self.index)
        return (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst xmlns="{MAIN_NS}" '
            f'uniqueCount="{len(self.index)}">{items}</sst>'
        ).encode()


class _ColumnCells(dict):
    """One column's cell XML after the reference `<c r="B12`, cached by value (a dict with
    __missing__, so a repeated value costs one look-up done in C); unique values (ids) stop
    being remembered after _CACHE_LIMIT."""

    def __init__(
        self, style: str, quote_style: str, is_date: bool, strings: _SharedStrings | None
    ) -> None:
        super().__init__()
        self.style, self.quote_style, self.is_date = style, quote_style, is_date
        self.strings = strings

    def __missing__(self, value: Any) -> str:
        if type(value) is str and value and self.strings is not None and not self.is_date:
            # the common miss (a unique id), inlined: a third of a big sheet's time
            text = value
            if len(text) > MAX_TEXT or ILLEGAL_XML.search(text):
                text = clean_text(text)
            style = self.quote_style if text.startswith(RISKY_START) else self.style
            index = self.strings.index
            number_ = index.get(text)
            if number_ is None:
                number_ = index[text] = len(index)
            made = f'" s="{style}" t="s"><v>{number_}</v></c>'
        else:
            made = self.make(value)
        if len(self) < _CACHE_LIMIT:
            self[value] = made
        return made

    def make(self, value: Any) -> str:
        if value is None or value == "":
            return f'" s="{self.style}"/>'
        if self.is_date and isinstance(value, str | dt.date):
            value = excel_date(value)
        if isinstance(value, bool):
            return self._text("yes" if value else "no", self.style)
        if isinstance(value, int):
            return f'" s="{self.style}"><v>{value}</v></c>'
        if isinstance(value, float):
            if not math.isfinite(value):
                return f'" s="{self.style}"/>'
            return f'" s="{self.style}"><v>{value!r}</v></c>'
        text = clean_text(value)
        return self._text(text, self.quote_style if is_risky(text) else self.style)

    def _text(self, text: str, style: str) -> str:
        if self.strings is None:
            return f'" s="{style}" t="inlineStr">{_inline_text(text)}</c>'
        return f'" s="{style}" t="s"><v>{self.strings.add(text)}</v></c>'


def _stream_sheet(
    xml: str, table: Table, sink: Callable[[bytes], Any], strings: _SharedStrings | None
) -> None:
    """openpyxl's sheet XML with the template rows replaced by the table's data rows.

    Each row is one str.format of a fixed template with every column's cached
    cell XML: the per-cell work happens in C, which makes 700,000 rows feasible.
    """
    first = table.first_row
    plain = _template_styles(xml, first)
    quoted = _template_styles(xml, first + 1)
    start = xml.index(f'<row r="{first}"')
    end = xml.index("</sheetData>", start)
    head = re.sub(
        r'<dimension ref="[^"]*"\s*/>',
        f'<dimension ref="A1:{table.last_column}{table.last_row}"/>',
        xml[:start],
        count=1,
    )
    sink(head.encode("utf-8"))
    letters = [get_column_letter(i) for i in range(1, len(table.columns) + 1)]
    columns = [
        _ColumnCells(plain.get(letter, "0"), quoted.get(letter, "0"), column.date, strings)
        for letter, column in zip(letters, table.columns, strict=True)
    ]
    width = len(columns)
    template = (
        '<row r="{0}">'
        + "".join(f'<c r="{letter}{{0}}{{{i}}}' for i, letter in enumerate(letters, 1))
        + "</row>"
    ).format
    lookup = dict.__getitem__
    chunk: list[str] = []
    append = chunk.append
    for number_, values in zip(range(first, first + table.count), table.rows, strict=False):
        if len(values) != width:  # short rows are padded, long ones cut
            values = (list(values) + [None] * width)[:width]
        try:
            append(template(number_, *map(lookup, columns, values)))
        except TypeError:  # an unhashable value (a list): written as its text
            texts = [v if v is None or isinstance(v, str | int | float) else str(v) for v in values]
            append(template(number_, *map(lookup, columns, texts)))
        if len(chunk) >= 20_000:
            sink("".join(chunk).encode("utf-8"))
            chunk.clear()
    sink("".join(chunk).encode("utf-8"))
    sink(xml[end:].encode("utf-8"))


def _zip_info(name: str, when: dt.datetime) -> zipfile.ZipInfo:
    """A zip entry with a fixed date and attributes (zipfile would stamp the current time)."""
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 0
    info.external_attr = 0
    return info


class _MemoryWriter(ExcelWriter):
    """openpyxl's writer with each sheet built in memory instead of a temporary file (creating
    and deleting one per sheet was a fifth of a small pack's time)."""

    def write_worksheet(self, ws: Worksheet) -> None:
        ws._drawing = SpreadsheetDrawing()
        ws._drawing.charts = ws._charts
        ws._drawing.images = ws._images
        buffer = io.BytesIO()
        writer = WorksheetWriter(ws, buffer)
        writer.write()
        ws._rels = writer._rels
        self._archive.writestr(ws.path[1:], buffer.getvalue())
        self.manifest.append(ws)


def save_book(book: Book, path: Any, when: dt.datetime, title: str) -> None:
    """Save with fixed properties and zip timestamps, streaming each Table's rows."""
    wb = book.wb
    properties = wb.properties
    properties.creator = CREATOR
    properties.lastModifiedBy = CREATOR
    properties.title = clean_text(title)
    properties.created = when
    properties.modified = when
    staged = io.BytesIO()
    # openpyxl's own writer, without save_workbook's wall-clock "modified" and without
    # compressing: the entries are compressed once, below
    _MemoryWriter(wb, zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED)).save()
    by_part = {table.ws.path.lstrip("/"): table for table in book.tables}
    with zipfile.ZipFile(staged) as source, zipfile.ZipFile(path, "w") as target:
        names = source.namelist()
        # openpyxl writes text inline; streamed text goes to a shared-string table we add
        # (unless this openpyxl already wrote one: then streamed text is inline too)
        strings = None if SST_PART in names else _SharedStrings()
        deferred = {"[Content_Types].xml", "xl/_rels/workbook.xml.rels"}
        for entry in source.infolist():
            if entry.filename in deferred:
                continue
            info = _zip_info(entry.filename, when)
            table = by_part.get(entry.filename)
            if table is None:
                target.writestr(info, source.read(entry), compresslevel=6)
                continue
            big = table.count > 20_000
            info._compresslevel = 1 if big else 6  # speed over a few % of size for big sheets
            with target.open(info, "w", force_zip64=big) as stream:
                _stream_sheet(source.read(entry).decode("utf-8"), table, stream.write, strings)
        for name in names:
            if name not in deferred:
                continue
            data = source.read(name)
            if strings is not None and strings.index:
                data = _register_strings(name, data.decode("utf-8")).encode("utf-8")
            target.writestr(_zip_info(name, when), data, compresslevel=6)
        if strings is not None and strings.index:
            info = _zip_info(SST_PART, when)
            info._compresslevel = 6
            target.writestr(info, strings.xml(), compresslevel=6)


def _register_strings(name: str, xml: str) -> str:
    """Add the shared-string part to the content types or the workbook's relationships."""
    if name == "[Content_Types].xml":
        entry = f'<Override PartName="/{SST_PART}" ContentType="{SST_TYPE}"/>'
        return xml.replace("</Types>", entry + "</Types>", 1)
    entry = f'<Relationship Type="{SST_RELATION}" Target="sharedStrings.xml" Id="rIdStrings"/>'
    return xml.replace("</Relationships>", entry + "</Relationships>", 1)
