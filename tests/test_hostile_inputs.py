"""Hostile inputs: no file can abort the process, exhaust memory or hang it.

Each case is a valid dataset with one hostile file in it: a workbook whose sheet claims
XFD1048576, zip bombs, a 100 MB cell, deeply nested or entity-expanding XML, truncated and
corrupt workbooks and parquet files, a parquet footer that claims billions of rows, CSV
files with an absurdly long line. The real command runs in a subprocess under a memory
limit (RLIMIT_AS) and a timeout, so an abort (a Rust allocation failure or panic) or a
hang fails its test instead of killing pytest; a small runner reports each run's own
peak memory (`os.wait4`). All cases are built and run once, two at a time, by a module
fixture; each test then checks one case: exit 2 with a problem naming the file (and the
cell, where it is about one), or the file read by its real extent.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from conftest import base_tables, csv_text, write_dataset

GIB = 1 << 30
MEMORY_LIMIT = 4 * GIB  # address space, not memory used: polars maps ~2.6 GB even for a tiny file
TIMEOUT = 90  # seconds: only a hang gets near this; each case must take a few seconds
FAST = 30  # seconds a hostile case may take on a busy 2-core machine
CRASH_SIGNS = ("Traceback", "panicked", "memory allocation of", "RUST_BACKTRACE", "Segmentation")

# A small fresh Python sets the memory limit, runs the command as its child and writes the
# child's exit code and peak memory to a file: no preexec_fn (unsafe with threads), and the
# peak is the command's own, not that of the pytest process it was forked from.
RUN_LIMITED = """
import os, resource, sys
limit, report = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
child = os.fork()
if child == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
_, status, usage = os.wait4(child, 0)
with open(report, "w") as handle:
    cpu = usage.ru_utime + usage.ru_stime
    handle.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {cpu}")
"""


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    """One finished command: exit code (negative: killed by that signal), output, cost."""

    args: list[str]
    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float
    timed_out: bool = False
    cpu_seconds: float = 0.0

    def crashed(self) -> str | None:
        """Why this run counts as a crash, or None."""
        if self.timed_out:
            return f"no answer after {TIMEOUT} s"
        if self.code < 0:
            return f"killed by signal {-self.code}"
        signs = [s for s in CRASH_SIGNS if s in self.stdout + self.stderr]
        return f"printed {signs}" if signs else None

    def describe(self) -> str:
        return (
            f"$ offroll-audit {' '.join(self.args)}\nexit {self.code} after {self.seconds:.1f} s "
            f"({self.cpu_seconds:.1f} s of CPU), peak {self.peak_mb:.0f} MB\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


def run_limited(args: list[str], memory: int = MEMORY_LIMIT, timeout: float = TIMEOUT) -> Run:
    """Run `python -m offroll_audit ARGS` under a memory limit and a timeout."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "RUST_BACKTRACE": "0"}
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report"
        command = [sys.executable, "-c", RUN_LIMITED, str(memory), str(report)]
        command += ["-m", "offroll_audit", *args]
        out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
        start = time.monotonic()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            runner = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                start_new_session=True,  # a timeout kills the command with its runner
            )
            try:
                runner.wait(timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
                timed_out = True
        seconds = time.monotonic() - start
        code, peak_kb, cpu = (
            (-signal.SIGKILL, 0, 0.0) if timed_out else _read_report(report, runner)
        )
        return Run(
            args,
            code,
            out.read_text(encoding="utf-8", errors="replace"),
            err.read_text(encoding="utf-8", errors="replace"),
            seconds,
            peak_kb / 1024,  # ru_maxrss is in kilobytes on Linux
            timed_out,
            cpu,
        )


def _read_report(report: Path, runner: subprocess.Popen) -> tuple[int, int, float]:
    if not report.exists():  # the runner itself failed
        return runner.returncode or -1, 0, 0.0
    code, peak, cpu = report.read_text().split()
    return int(code), int(peak), float(cpu)


def run_all(jobs: dict[str, list[str]], workers: int = 2) -> dict[str, Run]:
    """Run several commands, `workers` at a time (threads only wait on children)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(run_limited, args) for name, args in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def json_problems(run: Run) -> list[dict]:
    """The problems of `validate --json` (a crash or other output fails the caller)."""
    try:
        return json.loads(run.stdout)["problems"]
    except (ValueError, KeyError):
        raise AssertionError("validate --json printed no report:\n" + run.describe()) from None


# --------------------------------------------------------------------------- workbooks

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/></Types>'
)


def workbook_parts(sheet: bytes, strings: bytes | None = None) -> dict[str, bytes]:
    """The parts of a minimal workbook around one sheet (and shared strings, if given)."""
    links = f'<Relationship Id="rId1" Type="{DOC_RELS}/worksheet" Target="worksheets/sheet1.xml"/>'
    if strings is not None:
        links += (
            f'<Relationship Id="rId2" Type="{DOC_RELS}/sharedStrings" Target="sharedStrings.xml"/>'
        )
    parts = {
        "[Content_Types].xml": CONTENT_TYPES.encode(),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}">'
            f'<Relationship Id="rId1" Type="{DOC_RELS}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ).encode(),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" '
            f'xmlns:r="{DOC_RELS}"><sheets><sheet name="Pupils" sheetId="1" r:id="rId1"/>'
            "</sheets></workbook>"
        ).encode(),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}">{links}'
            "</Relationships>"
        ).encode(),
        "xl/worksheets/sheet1.xml": sheet,
    }
    if strings is not None:
        parts["xl/sharedStrings.xml"] = strings
    return parts


def zip_bytes(parts: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def inline(text: str) -> str:
    return f'<is><t xml:space="preserve">{escape(text)}</t></is>'


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def column_name(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def sheet_rows(rows: list[list[str]], *, top: str = "", tail: str = "") -> str:
    """`<row>` elements holding `rows` as inline strings (empty cells left out)."""
    out = [top]
    for r, row in enumerate(rows, start=1):
        cells = "".join(
            f'<c r="{column_name(i)}{r}" t="inlineStr">{inline(v)}</c>'
            for i, v in enumerate(row)
            if v != ""
        )
        out.append(f'<row r="{r}">{cells}</row>')
    out.append(tail)
    return "".join(out)


def sheet_xml(body: str, *, prolog: str = "", dimension: str = "") -> bytes:
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>{prolog}'
        f'<worksheet xmlns="{MAIN}">{dim}<sheetData>{body}</sheetData></worksheet>'
    ).encode()


def pupils_xlsx(folder: Path, data: bytes) -> None:
    (folder / "pupils.csv").unlink()
    (folder / "pupils.xlsx").write_bytes(data)


def pupils_sheet(**extra: str) -> bytes:
    return sheet_xml(sheet_rows(base_tables()["pupils"], **extra))


def stray_empty_cell(folder: Path) -> None:
    """The common Excel artefact: one formatted, empty cell at the sheet's last corner."""
    sheet = sheet_xml(
        sheet_rows(
            base_tables()["pupils"], tail='<row r="1048576"><c r="XFD1048576" s="1"/></row>'
        ),
        dimension="A1:XFD1048576",
    )
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


def stray_value_cell(folder: Path) -> None:
    sheet = sheet_xml(
        sheet_rows(
            base_tables()["pupils"], tail='<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>'
        )
    )
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


def stray_value_far_down(folder: Path) -> None:
    """A stray value in A30000: inside what is read, so its row is reported like any other."""
    sheet = sheet_xml(
        sheet_rows(base_tables()["pupils"], tail='<row r="30000"><c r="A30000"><v>7</v></c></row>')
    )
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


def cells_without_references(folder: Path) -> None:
    """Cells without `r` (some writers leave it out): placed by order, as Excel does."""
    rows = base_tables()["pupils"]
    body = "".join(
        "<row>"
        + "".join(f'<c t="inlineStr">{inline(v)}</c>' if v else "<c/>" for v in row)
        + "</row>"
        for row in rows
    )
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet_xml(body))))


def ratio_bomb(folder: Path) -> None:
    """A sheet of 100 MB of spaces that zips to about 100 KB."""
    spaces = b" " * (100 << 20)
    sheet = pupils_sheet().replace(b"<sheetData>", b"<sheetData>" + spaces, 1)
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


def declared_bomb(folder: Path) -> None:
    """A zip whose directory says its sheet inflates to 16 GB."""
    data = bytearray(zip_bytes(workbook_parts(pupils_sheet())))
    _patch_sizes(data, "xl/worksheets/sheet1.xml", uncompressed=16 * GIB - 1)
    pupils_xlsx(folder, bytes(data))


def lying_bomb(folder: Path) -> None:
    """A zip whose directory says its sheet is 100 bytes; it inflates to 50 MB of spaces."""
    sheet = pupils_sheet().replace(b"<sheetData>", b"<sheetData>" + b" " * (50 << 20), 1)
    data = bytearray(zip_bytes(workbook_parts(sheet)))
    _patch_sizes(data, "xl/worksheets/sheet1.xml", uncompressed=100)
    pupils_xlsx(folder, bytes(data))


def _patch_sizes(data: bytearray, name: str, uncompressed: int) -> None:
    """Rewrite a member's uncompressed size in its local header and the central directory."""
    size = min(uncompressed, 0xFFFFFFFF)
    encoded = name.encode()
    at = data.find(b"PK\x03\x04")
    while at >= 0:
        if data[at + 30 : at + 30 + len(encoded)] == encoded:
            struct.pack_into("<L", data, at + 22, size)
        at = data.find(b"PK\x03\x04", at + 4)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        if data[at + 46 : at + 46 + len(encoded)] == encoded:
            struct.pack_into("<L", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)


def random_text(size: int) -> str:
    """Text that does not compress (so no zip check stops it): base64 of random bytes."""
    return base64.b64encode(os.urandom(size * 3 // 4)).decode()


def huge_inline_cell(folder: Path) -> None:
    """A 100 MB text in one cell, stored uncompressed: a plausible-looking 100 MB file."""
    rows = base_tables()["pupils"]
    rows[2][rows[0].index("sex")] = random_text(100 << 20)
    sheet = sheet_xml(sheet_rows(rows))
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet), zipfile.ZIP_STORED))


def huge_shared_string(folder: Path) -> None:
    """A 100 MB shared string, used by one cell of data row 3 (sheet row 4)."""
    rows = base_tables()["pupils"]
    strings = f'<sst xmlns="{MAIN}"><si><t>{random_text(100 << 20)}</t></si></sst>'
    sex = column_name(rows[0].index("sex"))
    sheet = sheet_xml(sheet_rows(rows)).replace(
        f'<c r="{sex}4" t="inlineStr">{inline(rows[3][rows[0].index("sex")])}</c>'.encode(),
        f'<c r="{sex}4" t="s"><v>0</v></c>'.encode(),
    )
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet, strings.encode()), zipfile.ZIP_STORED))


def deep_nesting(folder: Path) -> None:
    """100,000 nested elements in the header's first cell (small enough for the ratio check)."""
    depth = 100_000
    nested = "<x>" * depth + "</x>" * depth
    sheet = pupils_sheet().replace(b"<is>", f"<is>{nested}".encode(), 1)
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


LAUGHS = (
    '<!DOCTYPE worksheet [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]>"
)


def billion_laughs_sheet(folder: Path) -> None:
    sheet = sheet_xml(sheet_rows(base_tables()["pupils"]), prolog=LAUGHS)
    sheet = sheet.replace(
        b'<t xml:space="preserve">pupil_id', b'<t xml:space="preserve">&j;pupil_id', 1
    )
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


def billion_laughs_strings(folder: Path) -> None:
    doctype = LAUGHS.replace("worksheet", "sst")
    strings = f'<?xml version="1.0"?>{doctype}<sst xmlns="{MAIN}"><si><t>&j;</t></si></sst>'
    pupils_xlsx(folder, zip_bytes(workbook_parts(pupils_sheet(), strings.encode())))


def external_entity(folder: Path) -> None:
    """XXE: an entity that would read a file off the machine into a cell."""
    prolog = '<!DOCTYPE worksheet [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    sheet = sheet_xml(sheet_rows(base_tables()["pupils"]), prolog=prolog)
    sheet = sheet.replace(b">P0002<", b">&secret;<", 1)
    pupils_xlsx(folder, zip_bytes(workbook_parts(sheet)))


def valid_xlsx() -> bytes:
    return zip_bytes(workbook_parts(pupils_sheet()))


def truncated_xlsx(folder: Path) -> None:
    data = valid_xlsx()
    pupils_xlsx(folder, data[: len(data) // 2])


def corrupt_xlsx(folder: Path) -> None:
    """The sheet's compressed bytes overwritten in the middle (the zip directory intact)."""
    data = bytearray(valid_xlsx())
    start = data.find(b"xl/worksheets/sheet1.xml") + 40
    data[start : start + 200] = bytes(range(200))
    pupils_xlsx(folder, bytes(data))


def not_a_zip(folder: Path) -> None:
    pupils_xlsx(folder, csv_text(base_tables()["pupils"]).encode())


def password_protected(folder: Path) -> None:
    pupils_xlsx(folder, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096))


# --------------------------------------------------------------------------- parquet


def pupils_parquet_bytes() -> bytes:
    table = base_tables()["pupils"]
    frame = pl.DataFrame({h: [r[i] for r in table[1:]] for i, h in enumerate(table[0])})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def pupils_parquet(folder: Path, data: bytes) -> None:
    (folder / "pupils.csv").unlink()
    (folder / "pupils.parquet").write_bytes(data)


def truncated_parquet(folder: Path) -> None:
    data = pupils_parquet_bytes()
    pupils_parquet(folder, data[: len(data) // 2] + data[-8:])  # footer length and PAR1 kept


def corrupt_parquet(folder: Path) -> None:
    data = bytearray(pupils_parquet_bytes())
    data[4:400] = bytes(range(256)) + bytes(range(140))  # the first pages' headers and data
    pupils_parquet(folder, bytes(data))


def huge_claim_parquet(folder: Path) -> None:
    """A footer claiming 2^31 rows (polars would allocate 32 GB for it and abort)."""

    def claim(meta: list) -> None:
        _field(meta, 3)[2] = 2**31
        for group in _field(meta, 4)[2][2]:
            _field(group, 3)[2] = 2**31
            for chunk in _field(group, 1)[2][2]:
                _field(_field(chunk, 3)[2], 5)[2] = 2**31  # num_values

    pupils_parquet(folder, _rewrite_footer(pupils_parquet_bytes(), claim))


# A Thrift compact-protocol codec, just enough to rewrite a parquet footer's numbers.


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read(data: bytes, at: int, kind: int) -> tuple[object, int]:
    if kind in (1, 2):
        return kind == 1, at
    if kind == 3:
        return data[at], at + 1
    if kind in (4, 5, 6):
        value, at = _varint(data, at)
        return (value >> 1) ^ -(value & 1), at
    if kind == 7:
        return data[at : at + 8], at + 8
    if kind == 8:
        size, at = _varint(data, at)
        return data[at : at + size], at + size
    if kind in (9, 10):
        size, item = data[at] >> 4, data[at] & 0x0F
        at += 1
        if size == 15:
            size, at = _varint(data, at)
        items = []
        for _ in range(size):
            if item in (1, 2):
                value, at = data[at] == 1, at + 1
            else:
                value, at = _read(data, at, item)
            items.append(value)
        return ["list", item, items], at
    if kind == 12:
        return _read_struct(data, at)
    raise ValueError(f"thrift type {kind}")


def _read_struct(data: bytes, at: int) -> tuple[list, int]:
    fields: list = []
    last = 0
    while True:
        head = data[at]
        at += 1
        if head == 0:
            return ["struct", fields], at
        delta, kind = head >> 4, head & 0x0F
        if delta:
            number = last + delta
        else:
            raw, at = _varint(data, at)
            number = (raw >> 1) ^ -(raw & 1)
        last = number
        value, at = _read(data, at, kind)
        fields.append([number, kind, value])


def _write(value: object, kind: int) -> bytes:
    if kind in (1, 2):
        return b""
    if kind == 3:
        return bytes([value])  # type: ignore[list-item]
    if kind in (4, 5, 6):
        number = int(value)  # type: ignore[call-overload]
        return _encode_varint(((number << 1) ^ (number >> 63)) & (2**64 - 1))
    if kind == 7:
        return bytes(value)  # type: ignore[arg-type]
    if kind == 8:
        raw = bytes(value)  # type: ignore[arg-type]
        return _encode_varint(len(raw)) + raw
    if kind in (9, 10):
        _, item, items = value  # type: ignore[misc]
        head = bytes([len(items) << 4 | item]) if len(items) < 15 else bytes([0xF0 | item])
        if len(items) >= 15:
            head += _encode_varint(len(items))
        body = b"".join(
            bytes([1 if i else 2]) if item in (1, 2) else _write(i, item) for i in items
        )
        return head + body
    if kind == 12:
        return _write_struct(value)  # type: ignore[arg-type]
    raise ValueError(f"thrift type {kind}")


def _write_struct(struct_: list) -> bytes:
    out = bytearray()
    last = 0
    for number, kind, value in struct_[1]:
        kind = (1 if value else 2) if kind in (1, 2) else kind
        if 0 < number - last <= 15:
            out.append((number - last) << 4 | kind)
        else:
            out.append(kind)
            out += _encode_varint((number << 1) ^ (number >> 63))
        out += _write(value, kind)
        last = number
    out.append(0)
    return bytes(out)


def _field(struct_: list, number: int) -> list:
    return next(f for f in struct_[1] if f[0] == number)


def _rewrite_footer(data: bytes, edit: Callable[[list], None]) -> bytes:
    size = struct.unpack("<I", data[-8:-4])[0]
    meta, _ = _read_struct(data[-8 - size : -8], 0)
    edit(meta)
    footer = _write_struct(meta)
    return data[: -8 - size] + footer + struct.pack("<I", len(footer)) + b"PAR1"


# --------------------------------------------------------------------------- csv


def csv_huge_cell(folder: Path) -> None:
    rows = base_tables()["pupils"]
    rows[2][rows[0].index("sex")] = "x" * (100 << 20)  # data row 2: file line 3
    (folder / "pupils.csv").write_text(csv_text(rows), encoding="utf-8")


def csv_long_header(folder: Path) -> None:
    """One 100 MB line of commas: ten million columns if anything tried to build them."""
    (folder / "pupils.csv").write_bytes(b"," * (100 << 20))


def csv_wide_header(folder: Path) -> None:
    header = ",".join(f"c{i}" for i in range(50_000))
    (folder / "pupils.csv").write_text(header + "\n" + "x" * 10 + "\n", encoding="utf-8")


def csv_unclosed_quote(folder: Path) -> None:
    """A quote opened on line 3 and never closed, with 100 MB after it."""
    text = csv_text(base_tables()["pupils"])
    lines = text.split("\n")
    lines[2] = lines[2].replace("P0002", '"P0002', 1)
    (folder / "pupils.csv").write_text("\n".join(lines) + "y" * (100 << 20), encoding="utf-8")


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Hostile:
    id: str
    build: Callable[[Path], None]
    file: str  # the file every problem must name
    code: int = 2  # what validate and audit exit with
    row: int | None = None  # the row a problem must name, if about a cell
    column: str | None = None
    fragment: str = ""  # a phrase the problem must contain
    max_mb: float = 1200  # peak memory of the run
    audit: bool = False  # also run `audit`


HOSTILE = [
    Hostile("stray_empty_cell_xfd1048576", stray_empty_cell, "pupils.xlsx", code=0, audit=True),
    Hostile(
        "stray_value_xfd1048576",
        stray_value_cell,
        "pupils.xlsx",
        row=1048576,
        column="XFD",
        fragment="XFD1048576",
        audit=True,
    ),
    Hostile(
        "stray_value_a30000",
        stray_value_far_down,
        "pupils.xlsx",
        row=30000,
        column="urn",
        fragment="urn is empty",
    ),
    Hostile("cells_without_r", cells_without_references, "pupils.xlsx", code=0),
    Hostile(
        "zip_bomb_ratio", ratio_bomb, "pupils.xlsx", fragment="zip bomb", max_mb=400, audit=True
    ),
    Hostile("zip_bomb_declared", declared_bomb, "pupils.xlsx", fragment="zip bomb", max_mb=400),
    Hostile(
        "zip_bomb_lying_sizes", lying_bomb, "pupils.xlsx", fragment="cannot be read", max_mb=400
    ),
    Hostile(
        "xlsx_100mb_inline_cell",
        huge_inline_cell,
        "pupils.xlsx",
        row=3,
        column=column_name(base_tables()["pupils"][0].index("sex")),  # refused while scanning
        fragment="characters in cell",
        max_mb=400,
    ),
    Hostile(
        "xlsx_100mb_shared_string",
        huge_shared_string,
        "pupils.xlsx",
        row=4,
        column="sex",
        fragment="bytes of text",
    ),
    Hostile("xlsx_deep_nesting", deep_nesting, "pupils.xlsx", fragment="nested", max_mb=400),
    Hostile(
        "xlsx_billion_laughs_sheet", billion_laughs_sheet, "pupils.xlsx", fragment="DTD", max_mb=400
    ),
    Hostile(
        "xlsx_billion_laughs_strings",
        billion_laughs_strings,
        "pupils.xlsx",
        fragment="DTD",
        max_mb=400,
    ),
    Hostile("xlsx_external_entity", external_entity, "pupils.xlsx", fragment="DTD", max_mb=400),
    Hostile("xlsx_truncated", truncated_xlsx, "pupils.xlsx", fragment="cannot be read", max_mb=400),
    Hostile(
        "xlsx_corrupt_member", corrupt_xlsx, "pupils.xlsx", fragment="cannot be read", max_mb=400
    ),
    Hostile(
        "xlsx_not_a_zip", not_a_zip, "pupils.xlsx", fragment="not an Excel workbook", max_mb=400
    ),
    Hostile("xlsx_password_protected", password_protected, "pupils.xlsx", fragment="password"),
    Hostile("parquet_truncated", truncated_parquet, "pupils.parquet", fragment="cannot be read"),
    Hostile("parquet_corrupt", corrupt_parquet, "pupils.parquet", fragment="cannot be read"),
    Hostile(
        "parquet_claims_2e31_rows",
        huge_claim_parquet,
        "pupils.parquet",
        fragment="claims",
        audit=True,
    ),
    Hostile("csv_100mb_cell", csv_huge_cell, "pupils.csv", row=3, column="sex", fragment="bytes"),
    Hostile("csv_100mb_line", csv_long_header, "pupils.csv", row=1, fragment="longer than"),
    Hostile("csv_50000_columns", csv_wide_header, "pupils.csv", row=1, fragment="columns"),
    Hostile("csv_unclosed_quote_100mb", csv_unclosed_quote, "pupils.csv", row=3, fragment="quote"),
]


@dataclass
class Outcome:
    folder: Path
    validate: Run
    audit: Run | None = None
    out: Path = field(default_factory=Path)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every case built, then validated (and audited) two at a time; one entry per case."""
    root = tmp_path_factory.mktemp("hostile")
    jobs: dict[str, list[str]] = {}
    folders: dict[str, Path] = {}
    for case in HOSTILE:
        folder = write_dataset(root / case.id)
        case.build(folder)
        folders[case.id] = folder
        jobs[f"{case.id}/validate"] = ["validate", str(folder), "--json"]
        if case.audit:
            out = root / f"{case.id}-out"
            jobs[f"{case.id}/audit"] = [
                "audit",
                str(folder),
                "--out",
                str(out),
                "--no-workbooks",
                "--quiet",
            ]
    runs = run_all(jobs)
    yield {
        case.id: Outcome(
            folders[case.id],
            runs[f"{case.id}/validate"],
            runs.get(f"{case.id}/audit"),
            root / f"{case.id}-out",
        )
        for case in HOSTILE
    }


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in HOSTILE])
def test_hostile_file_is_refused_or_read_never_crashes(
    case: Hostile, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[case.id]
    for run in (outcome.validate, outcome.audit):
        if run is None:
            continue
        crash = run.crashed()
        assert crash is None, f"{crash}\n{run.describe()}"
        assert run.code == case.code, run.describe()
        assert run.seconds < FAST, f"took {run.seconds:.1f} s\n{run.describe()}"
        assert run.peak_mb < case.max_mb, f"peak {run.peak_mb:.0f} MB\n{run.describe()}"
    errors = [p for p in json_problems(outcome.validate) if p["severity"] == "error"]
    if case.code == 0:
        assert not errors, outcome.validate.describe()
        return
    assert errors, outcome.validate.describe()
    assert all(p["file"] == case.file for p in errors), outcome.validate.describe()
    wanted = [
        p
        for p in errors
        if case.fragment.lower() in (p["message"] + " " + p["hint"]).lower()
        and (case.row is None or p["row"] == case.row)
        and (case.column is None or p["column"] == case.column)
    ]
    assert wanted, outcome.validate.describe()
    for problem in errors:  # never the contents of a hostile cell
        assert len(problem["message"]) < 400 and "root:" not in problem["message"]
    if outcome.audit is not None:
        assert not outcome.out.exists(), "audit wrote outputs for bad input"
        assert f"error: {case.file}" in outcome.audit.stderr, outcome.audit.describe()


def test_stray_cell_workbook_loads_like_the_csv(outcomes: dict[str, Outcome]) -> None:
    """Read by its real extent: the same frames, the same row numbers, as the clean CSV.
    (Loaded in this process only once the subprocess above has shown it cannot abort.)"""
    from offroll_audit.load import load_dataset

    outcome = outcomes["stray_empty_cell_xfd1048576"]
    if outcome.validate.crashed() or outcome.validate.code != 0:
        pytest.fail("the subprocess run failed:\n" + outcome.validate.describe())
    clean, _ = load_dataset(write_dataset(outcome.folder.parent / "clean"))
    stray, report = load_dataset(outcome.folder)
    assert report.ok
    assert stray.pupils.equals(clean.pupils)
    assert stray.pupils.get_column("line").to_list() == [2, 3, 4, 5, 6]
    results = json.loads((outcome.out / "results.json").read_text(encoding="utf-8"))
    assert {s["urn"] for s in results["schools"]} == {"100001", "100002"}
