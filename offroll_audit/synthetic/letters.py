"""Synthetic parents' deregistration letters with known answers.

The letters scan (`offroll_audit/letters.py`) must find school-authored
templates among genuine parents' letters, many of which legitimately copy a
public sample letter. This module writes such a mix with the answer kept
aside: each letter's kind (school template, public template, sibling, free
form), which template it came from and which family wrote it.

Planning (who writes, which kind, which format, which dates) is vectorised
with polars/numpy. Rendering is one pass over letters, not pupils: every
letter is one file. Text comes from a phrase grammar expanded by a
`random.Random` seeded per family or per letter from the numpy generator, so
a letter's wording depends only on its seed and the whole output is
byte-identical for one rng seed.

.docx files are assembled from a package skeleton that python-docx builds
once (python-docx takes ~36 ms to load and save one document; 20,000 .docx
letters would take 12 minutes); .pdf files are written by hand (Helvetica,
uncompressed content streams) so no PDF library is needed.
"""

# The phrase tables below keep one sentence per line so the wording can be read
# and reviewed; splitting them to fit 100 columns would hide it.

from __future__ import annotations

import datetime as dt
import functools
import io
import random
import re
import textwrap
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import numpy as np
import polars as pl

from offroll_audit.codes import YEAR_NUMBER
from offroll_audit.synthetic.phrasebook import phrases

if TYPE_CHECKING:
    from offroll_audit.synthetic.hard_letters import HardLetters

LETTER_KINDS = ("school_template", "public_template", "sibling", "free_form")
NO_TEXT_KIND = "no_text"  # the one scanned PDF without a text layer
FORMATS = ("txt", "md", "docx", "pdf")
FORMAT_SHARES = (0.62, 0.03, 0.20, 0.15)

P_LETTER = 0.85  # families that write at all
P_SCHOOL_TEMPLATE = 0.80  # families at a template school handed the school's letter
P_PUBLIC_TEMPLATE = 0.30  # other families who copy a public sample letter
P_JOINT_SIBLING_LETTER = 0.5  # sibling families writing one letter for all children
P_SUBFOLDER = 0.25  # letters filed under a year folder
PUBLIC_TEMPLATE_WEIGHTS = (0.40, 0.30, 0.18, 0.12)
JOINT_LETTER_MAX_SPAN_DAYS = 14

# --------------------------------------------------------------------------- names

_NAMES = phrases("names")
GIRL_NAMES = _NAMES["girl_names"]
BOY_NAMES = _NAMES["boy_names"]
SURNAMES = _NAMES["surnames"]
MOTHER_NAMES = _NAMES["mother_names"]
FATHER_NAMES = _NAMES["father_names"]
STAFF_SURNAMES = _NAMES["staff_surnames"]
STAFF_ROLES = _NAMES["staff_roles"]
STREETS = _NAMES["streets"]
TOWNS = _NAMES["towns"]
HOBBIES = _NAMES["hobbies"]

MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# --------------------------------------------------------------------------- phrase grammar
# `{name}` is either a context value (child, he, his, I, my, school, exit, ...) or
# one of these symbols, replaced by one of its alternatives at random. The size of
# the grammar is what keeps two families' free-form letters dissimilar: word
# 3-gram Jaccard well under 0.1 between different families. The tables are in
# phrases/*.toml.

FREE_FORM: dict[str, tuple[str, ...]] = phrases("free_form")["free_form"]

REASON_SYMBOLS = (
    "reason_mental",
    "reason_bullying",
    "reason_philosophy",
    "reason_send",
    "reason_health",
    "reason_lifestyle",
    "reason_religious",
)

# School-authored templates: written by staff for a parent to sign, so they carry
# the school's voice. Each school's template is one expansion of this grammar;
# {slots} that name a family's details are left in place until a copy is filled.
_SCHOOL = phrases("school_template")
SCHOOL_TEMPLATE: dict[str, tuple[str, ...]] = _SCHOOL["school_template"]

# Words a school's template misspells (the same in every copy); one is picked per
# template from those its text contains.
TEMPLATE_TYPOS = _SCHOOL["template_typos"]

# Small changes a parent makes when retyping a letter someone else wrote.
RETYPE_EDITS = _SCHOOL["retype_edits"]

# Sentences a parent adds to a letter they were given (their own voice, short).
PARENT_ADDITIONS = _SCHOOL["parent_additions"]

# Public sample letters of the kind home-education charities publish (invented
# wording). A paragraph is a tuple of sentences; a leading "?" marks a sentence a
# parent may leave out.
PUBLIC_TEMPLATES: tuple[tuple[tuple[str, ...], ...], ...] = phrases("public_templates")[
    "public_templates"
]
# A sample letter copied at one school only (hard letters: see hard_letters.py).
RARE_PUBLIC_TEMPLATES: tuple[tuple[tuple[str, ...], ...], ...] = phrases("public_templates")[
    "rare_public_templates"
]

DOCX_TEMPLATE_NAMES = _SCHOOL["docx_template_names"]
HELPERS = ("husband", "wife", "partner", "mum", "dad")  # "my ... works from home"
HELPERS_PLURAL = ("nan", "eldest", "grandad", "aunt")  # "our ... works from home"
PARENT_AUTHORS = ("User", "Owner", "HP", "Windows User", "Microsoft Office User", "")
WORD_APPS = (
    "Microsoft Office Word",
    "Microsoft Office Word",
    "Microsoft Macintosh Word",
    "LibreOffice/7.6",
)
PDF_PRODUCERS = (
    "Microsoft: Print To PDF",
    "Microsoft Word for Microsoft 365",
    "macOS Version 14.2 Quartz PDFContext",
    "LibreOffice 7.6",
    "Skia/PDF m120",
    "iOS Version 17.1 Quartz PDFContext",
)

# --------------------------------------------------------------------------- text engine

_SLOT = re.compile(r"\{(\w+)\}")
Grammar = dict[str, tuple[str, ...]]
Paragraphs = list[list[str]]


def expand(text: str, rnd: random.Random, ctx: dict[str, str], grammar: Grammar) -> str:
    """Replace each {slot} by its context value or a random alternative, recursively.

    Context values never consume randomness, so two children of one family get
    the same wording from the same seed. Unknown slots are left for a later pass.
    """

    def pick(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ctx:
            return ctx[name]
        options = grammar.get(name)
        if options is None:
            return match.group(0)
        return _SLOT.sub(pick, options[int(rnd.random() * len(options))])

    return _SLOT.sub(pick, text)


def fill(text: str, ctx: dict[str, str]) -> str:
    """Replace every remaining {slot} from the context; a missing one is a bug."""
    return _SLOT.sub(lambda m: ctx[m.group(1)], text)


def _tidy(sentence: str) -> str:
    """Mend what empty alternatives leave behind and capitalise the first letter."""
    sentence = re.sub(r" {2,}", " ", sentence).strip()
    sentence = re.sub(r" ([,.;:?])", r"\1", sentence).replace(",.", ".").replace(",,", ",")
    return sentence[:1].upper() + sentence[1:]


def _join(paragraphs: Paragraphs) -> str:
    return "\n\n".join(" ".join(p) for p in paragraphs if p and any(p)) + "\n"


def _words(paragraphs: Paragraphs) -> int:
    return sum(len(s.split()) for p in paragraphs for s in p)


def _nth(day: dt.date) -> str:
    """The day of the month as an ordinal: "1st", "12th", "22nd"."""
    n = day.day
    suffix = "th" if 11 <= n <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _month(day: dt.date) -> str:
    return MONTHS[day.month - 1]


# How UK letter writers write a date; a letter picks one style by index.
DATE_FORMATS: tuple[Callable[[dt.date], str], ...] = (
    lambda day: f"{_nth(day)} {_month(day)} {day.year}",
    lambda day: f"{day.day} {_month(day)} {day.year}",
    lambda day: f"{day:%d/%m/%Y}",
    lambda day: f"{day.day}/{day.month}/{day.year}",
    lambda day: f"{WEEKDAYS[day.weekday()]} {_nth(day)} {_month(day)} {day.year}",
    lambda day: f"{_nth(day)} {_month(day)[:3]} {day.year}",
    lambda day: f"{day:%d.%m.%Y}",
    lambda day: f"{day:%d/%m/%y}",
)
DATE_STYLES = len(DATE_FORMATS)


def format_date(day: dt.date, style: int) -> str:
    """A date as UK letter writers write it ("5th November 2024", "05/11/2024", ...)."""
    return DATE_FORMATS[style % DATE_STYLES](day)


# --------------------------------------------------------------------------- file writers

METADATA_KEYS = frozenset(
    {
        "author",
        "last_modified_by",
        "title",
        "comments",
        "revision",
        "created",
        "modified",
        "last_printed",
        "company",
        "template",
        "application",
        "producer",
        "rsid_root",
    }
)
DEFAULT_TIMESTAMP = dt.datetime(2024, 1, 1, 9, 0, 0)


def write_letter_file(
    path: Path,
    text: str,
    fmt: str,
    *,
    header: str | None = None,
    metadata: dict | None = None,
    text_layer: bool = True,
    struck: tuple[str, ...] = (),
) -> None:
    """Write one letter as txt, md, docx or pdf; identical inputs give identical bytes.

    `header` is a letterhead: the top lines of a txt/md/pdf, the page header of
    a docx. `metadata` keys (see METADATA_KEYS) go to docx core/app properties
    and settings (rsidRoot) or to the PDF info dictionary; txt/md ignore them.
    `text_layer=False` writes a PDF holding only a picture of the page, as a
    scanner would: it has no extractable text. `struck` sentences were struck out by the
    parent: struck-through runs in a docx, ~~struck~~ in markdown, left out of txt and pdf.
    """
    metadata = dict(metadata or {})
    for sentence in struck if fmt != "docx" else ():
        text = text.replace(sentence, f"~~{sentence}~~" if fmt == "md" else "", 1)
    unknown = set(metadata) - METADATA_KEYS
    if unknown:
        raise ValueError(f"unknown letter metadata keys: {sorted(unknown)}")
    if fmt in ("txt", "md"):
        body = f"{header}\n\n{text}" if header else text
        data = body.encode("utf-8")
    elif fmt == "docx":
        data = docx_bytes(text, header=header, metadata=metadata, struck=struck)
    elif fmt == "pdf":
        lines = _pdf_lines(text, header)
        data = pdf_bytes(lines, metadata) if text_layer else scanned_pdf_bytes(lines, metadata)
    else:
        raise ValueError(f"unknown letter format {fmt!r}; use one of {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---- docx: a python-docx package skeleton, filled per letter


@dataclass(frozen=True)
class _DocxSkeleton:
    parts: dict[str, bytes]
    document_head: str  # document.xml up to the body's first paragraph
    document_tail: str  # the section properties and closing tags
    header_name: str
    header_head: str
    app_xml: str
    settings_xml: str


_DROPPED_PARTS = ("docProps/thumbnail.jpeg", "word/stylesWithEffects.xml", "customXml/")


@functools.cache
def _docx_skeleton() -> _DocxSkeleton:
    """A minimal, valid package saved once by python-docx, trimmed of bulky parts."""
    import docx

    document = docx.Document()
    document.sections[0].header.is_linked_to_previous = False  # creates the header part
    buffer = io.BytesIO()
    document.save(buffer)
    with zipfile.ZipFile(buffer) as package:
        parts = {n: package.read(n) for n in package.namelist() if not n.startswith(_DROPPED_PARTS)}
    # python-docx's 430 kB styles part would dominate every letter; its small default will do.
    styles = Path(docx.__file__).parent / "templates" / "default-styles.xml"
    parts["word/styles.xml"] = styles.read_bytes()
    dropped = r"(?:docProps/thumbnail\.jpeg|stylesWithEffects\.xml|\.\./customXml/item1\.xml)"
    for name, pattern in (
        ("_rels/.rels", rf'<Relationship [^>]*Target="{dropped}"/>'),
        ("word/_rels/document.xml.rels", rf'<Relationship [^>]*Target="{dropped}"/>'),
        (
            "[Content_Types].xml",
            r'<Override PartName="/(?:customXml|word/stylesWithEffects)[^>]*/>',
        ),
    ):
        parts[name] = re.sub(pattern, "", parts[name].decode()).encode()
    rels = parts["word/_rels/document.xml.rels"].decode()
    header_name = "word/" + re.search(r'Target="(header\d+\.xml)"', rels).group(1)
    document_xml = parts.pop("word/document.xml").decode()
    document_xml = document_xml.replace('w:w="12240" w:h="15840"', 'w:w="11906" w:h="16838"')  # A4
    body = document_xml.index("<w:body>") + len("<w:body>")
    header_xml = parts.pop(header_name).decode()
    header_open = header_xml.index(">", header_xml.index("<w:hdr")) + 1
    return _DocxSkeleton(
        parts=parts,
        document_head=document_xml[:body],
        document_tail=document_xml[body:],
        header_name=header_name,
        header_head=header_xml[:header_open],
        app_xml=parts.pop("docProps/app.xml").decode(),
        settings_xml=parts.pop("word/settings.xml").decode(),
    )


def _docx_paragraphs(text: str, rsid: str, struck: tuple[str, ...] = ()) -> str:
    """WordprocessingML paragraphs: one per blank-line block, line breaks inside; `struck`
    sentences in struck-through runs of their own."""
    paragraphs = []
    for block in text.strip("\n").split("\n\n"):
        runs = "<w:br/>".join(
            f'<w:t xml:space="preserve">{escape(line)}</w:t>' for line in block.split("\n")
        )
        runs = f"<w:r>{runs}</w:r>"
        for sentence in struck:
            if escape(sentence) in runs:
                strike = (
                    f'</w:t></w:r><w:r><w:rPr><w:strike/></w:rPr><w:t xml:space="preserve">'
                    f'{escape(sentence)}</w:t></w:r><w:r><w:t xml:space="preserve">'
                )
                runs = runs.replace(escape(sentence), strike, 1)
        paragraphs.append(f'<w:p w:rsidR="{rsid}" w:rsidRDefault="{rsid}">{runs}</w:p>')
    return "".join(paragraphs)


def _w3c(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def _core_xml(meta: dict) -> str:
    created = meta.get("created", DEFAULT_TIMESTAMP)
    modified = meta.get("modified", created)
    printed = meta.get("last_printed")
    modified_by = meta.get("last_modified_by", meta.get("author", ""))
    printed_xml = f"<cp:lastPrinted>{_w3c(printed)}</cp:lastPrinted>" if printed else ""
    return (
        "<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n"
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/"'
        ' xmlns:dcmitype="http://purl.org/dc/dcmitype/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<dc:title>{escape(meta.get('title', ''))}</dc:title><dc:subject/>"
        f"<dc:creator>{escape(meta.get('author', ''))}</dc:creator><cp:keywords/>"
        f"<dc:description>{escape(meta.get('comments', ''))}</dc:description>"
        f"<cp:lastModifiedBy>{escape(modified_by)}</cp:lastModifiedBy>"
        f"<cp:revision>{int(meta.get('revision', 1))}</cp:revision>{printed_xml}"
        f'<dcterms:created xsi:type="dcterms:W3CDTF">{_w3c(created)}</dcterms:created>'
        f'<dcterms:modified xsi:type="dcterms:W3CDTF">{_w3c(modified)}</dcterms:modified>'
        "<cp:category/></cp:coreProperties>"
    )


def _app_xml(skeleton: _DocxSkeleton, meta: dict, text: str) -> str:
    words = len(text.split())
    replacements = {
        "Template": meta.get("template", "Normal.dotm"),
        "Application": meta.get("application", "Microsoft Office Word"),
        "Company": meta.get("company", ""),
        "Words": str(words),
        "Characters": str(len(text.replace(" ", "").replace("\n", ""))),
        "CharactersWithSpaces": str(len(text)),
        "Paragraphs": str(text.count("\n\n") + 1),
        "Lines": str(text.count("\n") + 1),
    }
    xml = skeleton.app_xml
    for tag, value in replacements.items():
        xml = re.sub(
            rf"<{tag}>[^<]*</{tag}>|<{tag}/>", f"<{tag}>{escape(value)}</{tag}>", xml, count=1
        )
    return xml


def docx_bytes(
    text: str,
    *,
    header: str | None = None,
    metadata: dict | None = None,
    struck: tuple[str, ...] = (),
) -> bytes:
    """A .docx with `text` as body paragraphs (`struck` sentences struck through), `header`
    as page header, and metadata set."""
    meta = metadata or {}
    skeleton = _docx_skeleton()
    default_rsid = re.search(r'<w:rsidRoot w:val="([0-9A-F]+)"', skeleton.settings_xml).group(1)
    rsid = meta.get("rsid_root", default_rsid)
    parts = dict(skeleton.parts)
    parts["word/document.xml"] = (
        skeleton.document_head + _docx_paragraphs(text, rsid, struck) + skeleton.document_tail
    ).encode()
    parts[skeleton.header_name] = (
        skeleton.header_head + _docx_paragraphs(header or "", rsid) + "</w:hdr>"
    ).encode()
    parts["word/settings.xml"] = skeleton.settings_xml.replace(default_rsid, rsid).encode()
    parts["docProps/core.xml"] = _core_xml(meta).encode()
    parts["docProps/app.xml"] = _app_xml(skeleton, meta, text).encode()
    return _zip_bytes(parts, meta.get("modified", meta.get("created", DEFAULT_TIMESTAMP)))


def _zip_bytes(parts: dict[str, bytes], when: dt.datetime) -> bytes:
    """A zip whose bytes depend only on its content: fixed dates and host system."""
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    buffer = io.BytesIO()
    names = sorted(parts, key=lambda n: (n != "[Content_Types].xml", n))
    with zipfile.ZipFile(buffer, "w") as package:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0
            info.external_attr = 0
            package.writestr(info, parts[name], compresslevel=6)
    return buffer.getvalue()


# ---- pdf: written by hand, Helvetica, one text line per Tj

PDF_WIDTH, PDF_HEIGHT = 595, 842  # A4 in points
PDF_LEFT, PDF_TOP, PDF_LEADING, PDF_FONT_SIZE = 56, 786, 14, 10.5
PDF_LINES_PER_PAGE = 52
PDF_WRAP = 90


def _pdf_lines(text: str, header: str | None) -> list[str]:
    """The letter's lines wrapped to ~90 characters, letterhead first."""
    lines: list[str] = []
    source = (f"{header}\n\n{text}" if header else text).rstrip("\n")
    for raw in source.split("\n"):
        lines.extend(textwrap.wrap(raw, PDF_WRAP) or [""])
    return lines


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsi: backslash, parentheses and non-ASCII escaped."""
    out = bytearray(b"(")
    for byte in text.encode("cp1252", errors="replace"):
        if byte in b"\\()":
            out += b"\\" + bytes([byte])
        elif byte < 32 or byte > 126:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b")")


def _pdf_date(moment: dt.datetime) -> str:
    return f"D:{moment:%Y%m%d%H%M%S}Z"


def _pdf_info(meta: dict) -> bytes:
    created = meta.get("created", DEFAULT_TIMESTAMP)
    entries = {
        "Title": meta.get("title"),
        "Author": meta.get("author"),
        "Creator": meta.get("application"),
        "Producer": meta.get("producer", "offroll-audit synthetic letters"),
        "CreationDate": _pdf_date(created),
        "ModDate": _pdf_date(meta.get("modified", created)),
    }
    body = b"".join(b"/%s %s " % (k.encode(), _pdf_string(v)) for k, v in entries.items() if v)
    return b"<< " + body + b">>"


def _pdf_stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), extra, data)


def assemble_pdf(objects: list[bytes]) -> bytes:
    """Number the objects from 1 (1 = catalog, 4 = info) and write a correct xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _pdf_document(
    page_contents: list[bytes], page_resources: list[bytes], extra: list[bytes], meta: dict
) -> bytes:
    """Catalog, page tree, font, info, then a page and content stream per page, then `extra`."""
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(page_contents)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_contents)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        _pdf_info(meta),
    ]
    for i, (content, resources) in enumerate(zip(page_contents, page_resources, strict=True)):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources %s /Contents %d 0 R >>"
            % (PDF_WIDTH, PDF_HEIGHT, resources, first_page + 2 * i + 1)
        )
        objects.append(_pdf_stream(content))
    return assemble_pdf(objects + extra)


def pdf_bytes(lines: list[str], metadata: dict | None = None) -> bytes:
    """A PDF with a real text layer: each line drawn with Tj, ~52 lines a page."""
    pages = [
        lines[i : i + PDF_LINES_PER_PAGE] for i in range(0, max(len(lines), 1), PDF_LINES_PER_PAGE)
    ]
    contents = []
    for page in pages:
        ops = [
            b"BT /F1 %s Tf %d TL %d %d Td"
            % (str(PDF_FONT_SIZE).encode(), PDF_LEADING, PDF_LEFT, PDF_TOP)
        ]
        ops += [(_pdf_string(line) + b" Tj T*") if line else b"T*" for line in page]
        ops.append(b"ET")
        contents.append(b"\n".join(ops))
    resources = [b"<< /Font << /F1 3 0 R >> >>"] * len(pages)
    return _pdf_document(contents, resources, [], metadata or {})


def scanned_pdf_bytes(lines: list[str], metadata: dict | None = None) -> bytes:
    """A one-page PDF that is only a grey picture of the letter's lines: no text layer."""
    width, height = 298, 421
    image = np.full((height, width), 250, dtype=np.uint8)
    for i, line in enumerate(lines[:52]):
        top = 22 + i * 7
        image[top : top + 3, 28 : 28 + min(len(line) * 27 // 10, width - 40)] = 60
    data = zlib.compress(image.tobytes(), 6)
    image_object = _pdf_stream(
        data,
        b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode " % (width, height),
    )
    content = b"q %d 0 0 %d 0 0 cm /Im1 Do Q" % (PDF_WIDTH, PDF_HEIGHT)
    resources = [b"<< /XObject << /Im1 7 0 R >> >>"]  # object 7: after page 5 and content 6
    return _pdf_document([content], resources, [image_object], metadata or {})


# --------------------------------------------------------------------------- people and places

FREE_FORM["staff_surname"] = tuple(STAFF_SURNAMES)
_POSTCODE_AREAS = ("AB", "BD", "CB", "DN", "HX", "LS", "NR", "PO", "SO", "TS", "WF", "YO")
_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


@dataclass(frozen=True)
class SchoolProfile:
    """What a letter needs to know about a school: names, letterhead, staff."""

    urn: str
    name: str
    trust: str | None
    town: str
    head: str
    letterhead: str
    staff: tuple[tuple[str, str], ...]  # (name, role)
    tutors: tuple[str, ...]  # tutor initials, as in "10JH"


@dataclass(frozen=True)
class Family:
    """One household's voice: names, address and writing habits, drawn from its seed."""

    surname: str
    signature: str
    address: str
    phone: str
    plural: bool  # writes as "we"
    helper: str  # who shares the teaching: "my husband", "our nan"
    hobbies: tuple[str, str]
    author: str
    rsid: str
    application: str
    producer: str
    date_style: int


@dataclass(frozen=True)
class LetterTemplate:
    """A letter many families copy: paragraphs of (sentence, may be left out)."""

    template_id: str
    paragraphs: tuple[tuple[tuple[str, bool], ...], ...]
    body: tuple[int, int]  # paragraphs a parent adds to: [start, end)
    header: str | None = None
    metadata: dict = field(default_factory=dict)
    date_style: int = 0
    typos: tuple[tuple[str, str], ...] = ()  # (correct, misspelt)


def _postcode(rnd: random.Random) -> str:
    letters = rnd.choice(_LETTERS) + rnd.choice(_LETTERS)
    return f"{rnd.choice(_POSTCODE_AREAS)}{rnd.randint(1, 29)} {rnd.randint(1, 9)}{letters}"


def _phone(rnd: random.Random) -> str:
    return f"0{rnd.choice(('1', '7'))}{rnd.randint(100, 999)} {rnd.randint(100000, 999999)}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())[:24] or "school"


def _staff_name(rnd: random.Random) -> str:
    return f"{rnd.choice(('Mr', 'Mrs', 'Ms', 'Miss', 'Dr'))} {rnd.choice(STAFF_SURNAMES)}"


def school_profile(urn: str, name: str | None, trust: str | None, seed: int) -> SchoolProfile:
    """A school's letterhead, head, pastoral staff and tutor groups (invented, stable per seed)."""
    rnd = random.Random(seed)
    name = name or f"School {urn}"
    town = rnd.choice(TOWNS)
    head = _staff_name(rnd)
    street = f"{rnd.choice(STREETS)}, {town} {_postcode(rnd)}"
    letterhead = (
        f"{name}\n{street}\nTel: {_phone(rnd)} | office@{_slug(name)}.sch.uk\nHeadteacher: {head}"
    )
    staff = tuple((_staff_name(rnd), rnd.choice(STAFF_ROLES)) for _ in range(3))
    tutors = tuple(rnd.choice(_LETTERS) + rnd.choice(_LETTERS) for _ in range(6))
    return SchoolProfile(urn, name, trust, town, head, letterhead, staff, tutors)


def trust_letterhead(trust: str, seed: int) -> str:
    rnd = random.Random(seed)
    town = rnd.choice(TOWNS)
    return (
        f"{trust}\nCentral Office, {rnd.choice(STREETS)}, {town} {_postcode(rnd)}\n"
        f"Tel: {_phone(rnd)} | www.{_slug(trust)}.org.uk\nChief Executive: {_staff_name(rnd)}"
    )


def family_voice(seed: int) -> tuple[Family, random.Random]:
    """A family drawn from its seed, and the generator its letters continue from."""
    rnd = random.Random(seed)
    surname = rnd.choice(SURNAMES)
    mother = rnd.random() < 0.75
    first = rnd.choice(MOTHER_NAMES if mother else FATHER_NAMES)
    title = rnd.choice(("Mrs", "Ms", "Miss")) if mother else "Mr"
    plural = rnd.random() < 0.3
    if plural:
        other = rnd.choice(FATHER_NAMES if mother else MOTHER_NAMES)
        signature = rnd.choice(
            (f"{first} and {other} {surname}", f"{title} {first} {surname} and {other} {surname}")
        )
    else:
        role = "Mum" if mother else "Dad"
        signature = rnd.choice(
            (
                f"{first} {surname}",
                f"{title} {first} {surname}",
                f"{title} {surname}",
                f"{first} {surname} ({role})",
            )
        )
    address = f"{rnd.randint(1, 180)} {rnd.choice(STREETS)}\n{rnd.choice(TOWNS)}\n{_postcode(rnd)}"
    hobbies = tuple(rnd.sample(HOBBIES, 2))
    author = rnd.choice(
        (f"{first} {surname}", f"{first} {surname}", first.lower(), *PARENT_AUTHORS)
    )
    family = Family(
        surname=surname,
        signature=signature,
        address=address,
        phone=_phone(rnd),
        plural=plural,
        helper=rnd.choice(HELPERS_PLURAL if plural else HELPERS),
        hobbies=hobbies,
        author=author,
        rsid=f"00{rnd.randrange(16**6):06X}",
        application=rnd.choice(WORD_APPS),
        producer=rnd.choice(PDF_PRODUCERS),
        date_style=rnd.randrange(DATE_STYLES),
    )
    return family, rnd


# --------------------------------------------------------------------------- letter context


def _year_label(year_group: str) -> str:
    if year_group == "R":
        return "Reception"
    if year_group in ("N1", "N2"):
        return "Nursery"
    return f"Year {year_group}"


def _and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def letter_context(
    children: list[dict],
    family: Family,
    school: SchoolProfile,
    exit_date: dt.date,
    letter_date: dt.date,
    date_style: int,
    plural_voice: bool,
) -> dict[str, str]:
    """Every {slot} a letter can name: the children, the parent's voice, dates, school."""
    one = len(children) == 1
    names = _and_list([c["first_name"] for c in children])
    female = children[0]["female"]
    if one:
        he, him, his, himself = (
            ("she", "her", "her", "herself") if female else ("he", "him", "his", "himself")
        )
    else:
        he, him, his, himself = "they", "them", "their", "themselves"
    years = [c["year_group"] for c in children]
    number = YEAR_NUMBER.get(years[0], 7)
    year = _year_label(years[0]) if one else "Years " + _and_list([y for y in dict.fromkeys(years)])
    ctx = {
        "child": names,
        "child_full": f"{names} {family.surname}",
        "child_noun": "child" if one else "children",
        "son": ("daughter" if female else "son") if one else "children",
        "he": he,
        "him": him,
        "his": his,
        "himself": himself,
        "is": "is" if one else "are",
        "has": "has" if one else "have",
        "was": "was" if one else "were",
        "does": "does" if one else "do",
        "s": "s" if one else "",
        "names_of": f"{names}'s name has" if one else f"{names}'s names have",
        "names": "name" if one else "names",
        "dob_label": "date of birth" if one else "dates of birth",
        "dob_label_caps": "Date of birth" if one else "Dates of birth",
        "partner": family.helper,
        "year": year,
        "yearnum": str(max(number, 1)),
        "nextyear": str(max(number, 0) + 1),
        "dob": _and_list([format_date(c["dob"], date_style) for c in children]),
        "upn": children[0]["pupil_id"],
        "school": school.name,
        "head": school.head,
        "town": school.town,
        "exit": format_date(exit_date, date_style),
        "date": format_date(letter_date, date_style),
        "parent": family.signature,
        "phone": family.phone,
        "address_block": family.address,
        "hobby": family.hobbies[0],
        "hobby2": family.hobbies[1],
    }
    voice = (
        ("we", "our", "us", "are", "ourselves")
        if plural_voice
        else ("I", "my", "me", "am", "myself")
    )
    ctx.update(zip(("I", "my", "me", "am", "myself"), voice, strict=True))
    return ctx


# --------------------------------------------------------------------------- letter bodies


class _SentencePicker:
    """Draws sentences from a grammar without repeating one within a letter."""

    def __init__(self, rnd: random.Random, ctx: dict[str, str], grammar: Grammar) -> None:
        self.rnd, self.ctx, self.grammar, self.used = rnd, ctx, grammar, set()

    def one(self, symbol: str) -> str | None:
        options = [o for o in self.grammar[symbol] if o not in self.used]
        if not options:
            return None
        choice = options[int(self.rnd.random() * len(options))]
        self.used.add(choice)
        return _tidy(expand(choice, self.rnd, self.ctx, self.grammar))

    def count(self, symbol: str) -> int:
        return len(self.used.intersection(self.grammar[symbol]))

    def some(self, symbol: str, count: int) -> list[str]:
        return [s for s in (self.one(symbol) for _ in range(count)) if s]


def free_form_text(rnd: random.Random, ctx: dict[str, str]) -> str:
    """A parent's own letter: varied openings, reasons, plans and closings, 100-350 words."""
    pick = _SentencePicker(rnd, ctx, FREE_FORM)
    target = int(rnd.triangular(100, 350, 170))
    top: Paragraphs = []
    if rnd.random() < 0.45:
        top.append([ctx["address_block"]])
    if rnd.random() < 0.7:
        top.append([ctx["date"]])
    top.append(pick.some("salutation", 1))
    intro = pick.some("intro", 1) + (pick.some("details", 1) if rnd.random() < 0.5 else [])
    reasons = rnd.sample(REASON_SYMBOLS, 1 + (rnd.random() < 0.45))
    blocks = [pick.some(reason, rnd.randint(1, 3)) for reason in reasons]
    blocks.append(pick.some("plan", rnd.randint(1, 3)))
    for symbol, chance in (("personal", 0.5), ("legal", 0.45), ("request", 0.55)):
        if rnd.random() < chance:
            blocks.append(pick.some(symbol, rnd.randint(1, 2)))
    rnd.shuffle(blocks)
    body = [intro, *blocks, pick.some("closing", rnd.randint(1, 2))]
    _fit_length(rnd, pick, body, target, reasons)
    sign = [[f"{pick.one('signoff')}\n{ctx['parent']}"]]
    return _join(top + body + sign)


def _fit_length(
    rnd: random.Random, pick: _SentencePicker, body: Paragraphs, target: int, reasons: list[str]
) -> None:
    """Grow the letter towards `target` words (more reasons, plans, asides), or trim it."""
    spare = [r for r in REASON_SYMBOLS if r not in reasons]
    for _ in range(12):
        if _words(body) >= target:
            break
        if spare and rnd.random() < 0.35:
            reason = spare.pop(int(rnd.random() * len(spare)))
            body.insert(1 + int(rnd.random() * (len(body) - 1)), pick.some(reason, 2))
            reasons = [*reasons, reason]
            continue
        open_pools = [r for r in reasons if pick.count(r) < 4] + ["plan", "personal"]
        sentence = pick.one(rnd.choice(open_pools))
        if sentence:
            body[1 + int(rnd.random() * (len(body) - 2))].append(sentence)
    while _words(body) > target:
        middle = [p for p in body[1:-1] if p]
        if not middle or (len(middle) == 1 and len(middle[0]) == 1):
            break
        paragraph = rnd.choice(middle)
        paragraph.pop(int(rnd.random() * len(paragraph)))
    body[:] = [p for p in body if p]


EDIT_COUNT_WEIGHTS = (0.35, 0.40, 0.25)  # a copy gets 0, 1 or 2 of a template's edit kinds


def personalise(
    rnd: random.Random,
    template: LetterTemplate,
    ctx: dict[str, str],
    kinds: tuple[str, ...],
    remark_sentences: int = 1,
) -> str:
    """A family's copy of a template: details filled in, and at most two light edits.

    Edit kinds: drop (an optional sentence), add (a short parent sentence),
    remark (a paragraph of the parent's reasons), retype (small rewordings),
    fix_typo (correct one of the template's misspellings).
    """
    count = rnd.choices(range(len(EDIT_COUNT_WEIGHTS)), weights=EDIT_COUNT_WEIGHTS)[0]
    edits = set(rnd.sample(kinds, min(count, len(kinds))))
    paragraphs: Paragraphs = [[s for s, _ in p] for p in template.paragraphs]
    optional = [
        (i, s) for i, p in enumerate(template.paragraphs) for s, is_optional in p if is_optional
    ]
    if "drop" in edits and optional:
        index, sentence = rnd.choice(optional)
        paragraphs[index].remove(sentence)
    start, end = template.body
    if "add" in edits:
        paragraphs[start + int(rnd.random() * (end - start))].append(rnd.choice(PARENT_ADDITIONS))
    if "remark" in edits:
        pick = _SentencePicker(rnd, ctx, FREE_FORM)
        paragraphs.insert(
            end, pick.some(rnd.choice(REASON_SYMBOLS), rnd.randint(1, remark_sentences))
        )
    text = _join([[_tidy(expand(s, rnd, ctx, FREE_FORM)) for s in p] for p in paragraphs])
    if "retype" in edits:
        present = [edit for edit in RETYPE_EDITS if edit[0] in text]
        for old, new in rnd.sample(present, min(len(present), rnd.randint(1, 2))):
            text = text.replace(old, new, 1)
    if "fix_typo" in edits and template.typos:
        correct, typo = rnd.choice(template.typos)
        text = text.replace(typo, correct, 1)
    return text


def school_template(
    rnd: random.Random, template_id: str, org: str, letterhead: str
) -> LetterTemplate:
    """One school's (or trust's) pro-forma: its voice, its typos, its document metadata."""
    ctx = {"org": org}

    def say(symbol: str) -> str:
        return expand("{" + symbol + "}", rnd, ctx, SCHOOL_TEMPLATE)

    paragraphs: list[list[tuple[str, bool]]] = [[(say("st_addressee"), False)], [("{date}", False)]]
    if rnd.random() < 0.8:
        paragraphs.append([(say("st_subject"), False)])
    if rnd.random() < 0.6:
        paragraphs.append([(say("st_details"), False)])
    paragraphs.append([(say("st_salutation"), False)])
    start = len(paragraphs)
    advice = list(dict.fromkeys(say("st_advised") for _ in range(rnd.randint(2, 3))))
    middle = [(s, True) for s in advice]
    if rnd.random() < 0.7:
        middle.append((say("st_consequence"), True))
    if rnd.random() < 0.85:
        middle.append((say("st_voluntary"), False))
    rnd.shuffle(middle)
    paragraphs += [[(say("st_meeting"), False), (say("st_responsibility"), False)], middle]
    if rnd.random() < 0.6:
        points = rnd.sample(SCHOOL_TEMPLATE["st_advice"], 3)
        bullets = "\n".join(f"- {expand(point, rnd, ctx, SCHOOL_TEMPLATE)}" for point in points)
        paragraphs.append([(f"{say('st_understand')}\n{bullets}", False)])
    paragraphs.append([(say("st_request"), False), (say("st_closing"), True)])
    end = len(paragraphs)
    paragraphs += [[(say("st_signoff"), False)], [(say("st_signblock"), False)]]
    office = say("st_office")
    if office:
        paragraphs.append([(office, False)])
    paragraphs, typos = _plant_typos(rnd, paragraphs)
    surname, initial = rnd.choice(STAFF_SURNAMES), rnd.choice(_LETTERS)
    created = dt.datetime(
        2023, rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(8, 17), rnd.randint(0, 59)
    )
    metadata = {
        "author": rnd.choice((f"{initial}. {surname}", f"{initial.lower()}{surname.lower()}")),
        "company": org,
        "template": rnd.choice(DOCX_TEMPLATE_NAMES),
        "rsid_root": f"00{rnd.randrange(16**6):06X}",
        "application": "Microsoft Office Word",
        "producer": rnd.choice(PDF_PRODUCERS[:2]),
        "title": rnd.choice(("EHE letter", "Elective Home Education", "Letter", "")),
        "created": created,
    }
    frozen = tuple(tuple(p) for p in paragraphs if p)
    return LetterTemplate(
        template_id, frozen, (start, end), letterhead, metadata, rnd.randrange(DATE_STYLES), typos
    )


def _plant_typos(
    rnd: random.Random, paragraphs: list[list[tuple[str, bool]]]
) -> tuple[list[list[tuple[str, bool]]], tuple[tuple[str, str], ...]]:
    """Misspell one or two words the template contains, once each, as its author did."""
    text = " ".join(s for p in paragraphs for s, _ in p)
    present = [pair for pair in TEMPLATE_TYPOS if re.search(rf"\b{pair[0]}\b", text)]
    chosen = rnd.sample(present, min(len(present), 1 + (rnd.random() < 0.6)))
    for correct, typo in chosen:
        done = False
        for p in paragraphs:
            for i, (sentence, optional) in enumerate(p):
                if not done and re.search(rf"\b{correct}\b", sentence):
                    p[i] = (re.sub(rf"\b{correct}\b", typo, sentence, count=1), optional)
                    done = True
    return paragraphs, tuple(chosen)


def public_template(index: int) -> LetterTemplate:
    """Public sample letter `index` (0-based); parents add remarks before the sign-off."""
    source = PUBLIC_TEMPLATES[index]
    paragraphs = tuple(tuple((s.lstrip("?"), s.startswith("?")) for s in p) for p in source)
    signoff = next(
        i for i, p in enumerate(source) if p[0].startswith(("Yours", "Best", "Signed", "Kind"))
    )
    return LetterTemplate(f"public-{index + 1}", paragraphs, (signoff - 2, signoff))


# --------------------------------------------------------------------------- planning (vectorised)


def _children(ehe_exits: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One row per EHE exit with a household key, a first name, sex and date of birth."""
    exits = (
        ehe_exits.select(
            pl.col("pupil_id").cast(pl.String),
            pl.col("urn").cast(pl.String),
            pl.col("family_id").cast(pl.String),
            pl.col("exit_date").cast(pl.Date),
            pl.col("year_group").cast(pl.String),
        )
        .with_columns(
            family_key=pl.coalesce(
                "family_id", pl.lit("solo:") + pl.col("pupil_id") + "@" + pl.col("urn")
            )
        )
        .sort("family_key", "pupil_id", "urn", "exit_date")
        .with_row_index("row")
    )
    n = exits.height
    female = rng.random(n) < 0.5
    draw = rng.integers(0, 1 << 30, n)
    girls, boys = np.array(GIRL_NAMES), np.array(BOY_NAMES)
    first = np.where(female, girls[draw % len(girls)], boys[draw % len(boys)])
    second = np.where(female, girls[(draw + 7) % len(girls)], boys[(draw + 7) % len(boys)])
    academic_year = pl.col("exit_date").dt.year() - (pl.col("exit_date").dt.month() < 9).cast(
        pl.Int32
    )
    year_number = pl.col("year_group").replace_strict(YEAR_NUMBER, default=7, return_dtype=pl.Int32)
    return exits.with_columns(
        female=pl.Series(female),
        first_name=pl.Series(first),
        alt_name=pl.Series(second),
        dob=pl.date(academic_year - year_number - 5, 9, 1)
        + pl.duration(days=pl.Series(rng.integers(0, 365, n))),
    ).with_columns(  # siblings never share a first name
        first_name=pl.when(pl.int_range(pl.len()).over("family_key", "first_name") > 0)
        .then("alt_name")
        .otherwise("first_name")
    )


def _kinds(
    children: pl.DataFrame, rng: np.random.Generator, template_urns: list[str]
) -> pl.DataFrame:
    """Each exit's letter kind (null: no letter) and the key of the letter that covers it."""
    families = children.select("family_key").unique().sort("family_key")
    nf = families.height
    families = families.with_columns(
        u_letter=pl.Series(rng.random(nf)),
        u_public=pl.Series(rng.random(nf)),
        public_index=pl.Series(rng.choice(len(PUBLIC_TEMPLATES), nf, p=PUBLIC_TEMPLATE_WEIGHTS)),
        joint=pl.Series(rng.random(nf) < P_JOINT_SIBLING_LETTER),
        family_seed=pl.Series(rng.integers(0, 1 << 62, nf)),
    )
    units = children.select("family_key", "urn").unique().sort("family_key", "urn")
    units = units.with_columns(u_template=pl.Series(rng.random(units.height)))
    planned = children.join(families, on="family_key").join(units, on=["family_key", "urn"])
    handed = pl.col("urn").is_in(template_urns) & (pl.col("u_template") < P_SCHOOL_TEMPLATE)
    first = (
        pl.when(handed)
        .then(pl.lit("school_template"))
        .when(pl.col("u_letter") >= P_LETTER)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit("own"))
    )
    planned = planned.with_columns(kind=first).with_columns(
        own_letters=(pl.col("kind") == "own").sum().over("family_key"),
        span=(pl.col("exit_date").max() - pl.col("exit_date").min()).over("family_key"),
    )
    own_kind = (
        pl.when(pl.col("own_letters") >= 2)
        .then(pl.lit("sibling"))
        .when(pl.col("u_public") < P_PUBLIC_TEMPLATE)
        .then(pl.lit("public_template"))
        .otherwise(pl.lit("free_form"))
    )
    joint = (
        (pl.col("kind") == "sibling")
        & pl.col("joint")
        & (pl.col("span") <= pl.duration(days=JOINT_LETTER_MAX_SPAN_DAYS))
    )
    return (
        planned.with_columns(kind=pl.when(pl.col("kind") == "own").then(own_kind).otherwise("kind"))
        .with_columns(
            letter_key=pl.when(joint)
            .then(pl.col("family_key") + "|" + pl.col("urn"))
            .otherwise(pl.lit("row:") + pl.col("row").cast(pl.String)),
            sibling_public=pl.col("u_public") < P_PUBLIC_TEMPLATE,
        )
        .filter(pl.col("kind").is_not_null())
    )


def _letters(planned: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One row per letter: id, kind, children covered, dates, format and file name."""
    letters = (
        planned.group_by("letter_key")
        .agg(
            pl.col(
                "urn",
                "family_key",
                "family_id",
                "kind",
                "public_index",
                "family_seed",
                "sibling_public",
                *[c for c in ("case", "rare_index") if c in planned.columns],  # hard letters
            ).first(),
            first_exit=pl.col("exit_date").min(),
            children=pl.struct("pupil_id", "first_name", "female", "dob", "year_group").sort_by(
                "row"
            ),
        )
        .sort("first_exit", "urn", "letter_key")
    )
    n = letters.height
    width = max(5, len(str(n)))
    received = pl.col("first_exit") + pl.duration(days=pl.Series(rng.integers(-5, 3, n)))
    letters = letters.with_columns(
        letter_id=pl.format("L{}", pl.int_range(1, n + 1).cast(pl.String).str.zfill(width)),
        received_date=received,
        write_lag=pl.Series(rng.integers(0, 4, n)),
        fmt=pl.Series(np.array(FORMATS)[rng.choice(len(FORMATS), n, p=FORMAT_SHARES)]),
        subfolder=pl.Series(rng.random(n) < P_SUBFOLDER),
        letter_seed=pl.Series(rng.integers(0, 1 << 62, n)),
    )
    return _mark_scanned_letter(letters, rng)


def _mark_scanned_letter(letters: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One parent's letter arrives as a scan with no text layer ("needs OCR")."""
    for kind in ("free_form", "public_template", "sibling"):
        candidates = np.flatnonzero((letters["kind"] == kind).to_numpy())
        if candidates.size:
            chosen = int(candidates[rng.integers(0, candidates.size)])
            is_chosen = pl.int_range(pl.len()) == chosen
            return letters.with_columns(
                kind=pl.when(is_chosen).then(pl.lit(NO_TEXT_KIND)).otherwise("kind"),
                fmt=pl.when(is_chosen).then(pl.lit("pdf")).otherwise("fmt"),
            )
    return letters


def _with_files(letters: pl.DataFrame) -> pl.DataFrame:
    name = pl.col("letter_id") + "." + pl.col("fmt")
    folder = pl.col("received_date").dt.year().cast(pl.String) + "/"
    return letters.with_columns(
        file=pl.when(pl.col("subfolder")).then(folder + name).otherwise(name)
    )


# --------------------------------------------------------------------------- the public entry point


def _school_profiles(
    schools: pl.DataFrame, urns: list[str], rng: np.random.Generator
) -> dict[str, SchoolProfile]:
    known = {
        row["urn"]: row
        for row in schools.select(
            pl.col("urn").cast(pl.String),
            pl.col("name").cast(pl.String),
            pl.col("trust").cast(pl.String),
        ).iter_rows(named=True)
    }
    every = sorted(set(known) | set(urns))
    seeds = rng.integers(0, 1 << 62, len(every))
    return {
        urn: school_profile(
            urn, known.get(urn, {}).get("name"), known.get(urn, {}).get("trust"), int(seed)
        )
        for urn, seed in zip(every, seeds, strict=True)
    }


def _templates(
    profiles: dict[str, SchoolProfile],
    template_schools: list[str],
    trust_template_schools: list[str],
    rng: np.random.Generator,
) -> dict[str, LetterTemplate]:
    """Template per template school; the trust's two schools share one."""
    templates: dict[str, LetterTemplate] = {}
    trust_urns = sorted(u for u in trust_template_schools if u in profiles)
    own_urns = sorted(u for u in set(template_schools) - set(trust_urns) if u in profiles)
    seeds = rng.integers(0, 1 << 62, len(own_urns) + 2)
    if trust_urns:
        first = profiles[trust_urns[0]]
        trust = first.trust or f"{first.town} Learning Trust"
        letterhead = trust_letterhead(trust, int(seeds[-1]))
        shared = school_template(
            random.Random(int(seeds[-2])), f"trust-{_slug(trust)}", trust, letterhead
        )
        templates.update(dict.fromkeys(trust_urns, shared))
    for urn, seed in zip(own_urns, seeds, strict=False):
        profile = profiles[urn]
        templates[urn] = school_template(
            random.Random(int(seed)), f"school-{urn}", profile.name, profile.letterhead
        )
    return templates


def write_letters(
    out: Path,
    ehe_exits: pl.DataFrame,
    schools: pl.DataFrame,
    rng: np.random.Generator,
    template_schools: list[str],
    trust_template_schools: list[str],
    hard: HardLetters | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Write parents' letters for ~85% of EHE exits into out/letters/, with known answers.

    ehe_exits: pupil_id, urn, family_id, exit_date (Date), year_group (str).
    schools: urn, name, trust (may be null), phase. template_schools: URNs whose
    families are mostly handed a school-authored letter; trust_template_schools:
    two URNs of one trust sharing the trust's letter.
    Returns (manifest, exit_letters, truth): manifest has the letters.csv columns
    (letter_id, file relative to out/letters/, urn, pupil_id [null for a letter
    covering several children], family_id, received_date); exit_letters links
    (pupil_id, urn) to letter_id; truth maps letter_id to kind, template_id,
    family_id and urn. Kinds are LETTER_KINDS plus one NO_TEXT_KIND scan.
    `hard` adds the harder cases of hard_letters.py (each letter's truth then says which);
    without it nothing changes, draw for draw.
    """
    root = out / "letters"
    root.mkdir(parents=True, exist_ok=True)
    children = _children(ehe_exits, rng)
    profiles = _school_profiles(schools, children["urn"].unique().to_list(), rng)
    templates = _templates(profiles, list(template_schools), list(trust_template_schools), rng)
    planned = _kinds(children, rng, sorted(templates))
    if hard is not None:
        return _write_hard(out, hard, rng, profiles, templates, planned)
    letters = _with_files(_letters(planned, rng))
    truth: dict[str, dict] = {}
    for letter in letters.iter_rows(named=True):
        template_id, text, header, metadata = render_letter(letter, profiles, templates)
        scanned = letter["kind"] == NO_TEXT_KIND
        path = root / letter["file"]
        write_letter_file(
            path, text, letter["fmt"], header=header, metadata=metadata, text_layer=not scanned
        )
        truth[letter["letter_id"]] = {
            "kind": letter["kind"],
            "template_id": template_id,
            "family_id": letter["family_id"],
            "urn": letter["urn"],
        }
    return _manifest(letters, pl.col("family_id")), _exit_letters(letters), truth


def _manifest(letters: pl.DataFrame, family_id: pl.Expr) -> pl.DataFrame:
    """letters.csv: one row per letter (pupil_id null for a letter covering several)."""
    return letters.select(
        "letter_id",
        "file",
        "urn",
        pupil_id=pl.when(pl.col("children").list.len() == 1)
        .then(pl.col("children").list.first().struct.field("pupil_id"))
        .otherwise(pl.lit(None, pl.String)),
        family_id=family_id,
        received_date="received_date",
    )


def _exit_letters(letters: pl.DataFrame) -> pl.DataFrame:
    """(pupil_id, urn) -> letter_id for every child a letter covers."""
    return (
        letters.select(
            "letter_id",
            "urn",
            pupil_id=pl.col("children").list.eval(pl.element().struct.field("pupil_id")),
        )
        .explode("pupil_id")
        .select("pupil_id", "urn", "letter_id")
    )


def _write_hard(
    out: Path,
    hard: HardLetters,
    rng: np.random.Generator,
    profiles: dict[str, SchoolProfile],
    templates: dict[str, LetterTemplate],
    planned: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """write_letters with the hard cases (hard_letters.py), drawn from a stream of their own.

    The truth gains, per letter, which cases it carries, and a `hard` entry: the chosen
    schools, the families letters.csv does not list, and the known-templates folder.
    """
    from offroll_audit.synthetic import hard_letters

    own = rng.spawn(1)[0]
    templates = hard_letters.add_templates(hard, profiles, templates, own)
    planned = hard_letters.assign_cases(planned, hard, own)
    letters = _with_files(hard_letters.mark_letters(_letters(planned, rng), hard, own))
    root = out / "letters"
    truth: dict[str, dict] = {}
    for letter in letters.iter_rows(named=True):
        truth[letter["letter_id"]] = {
            "kind": letter["kind"],
            "family_id": letter["family_id"],
            "urn": letter["urn"],
            **hard_letters.write_hard_letter(root, letter, profiles, templates),
        }
    unlisted = letters.filter(~pl.col("listed") & pl.col("family_id").is_not_null())
    truth["hard"] = {
        "declaration_schools": list(hard.declaration_urns),
        "form_schools": list(hard.form_urns),
        "rare_public_schools": list(hard.rare_public_urns),
        "unlisted_families": sorted(unlisted.get_column("family_id").unique().to_list()),
        "known_templates": hard_letters.write_known_templates(out),
        "known_templates_folder": hard_letters.KNOWN_TEMPLATES_FOLDER,
    }
    manifest = _manifest(letters, pl.when("listed").then("family_id"))
    return manifest, _exit_letters(letters), truth


# --------------------------------------------------------------------------- rendering one letter


def _letter_moment(rnd: random.Random, day: dt.date) -> dt.datetime:
    return dt.datetime(
        day.year, day.month, day.day, rnd.randint(7, 22), rnd.randint(0, 59), rnd.randint(0, 59)
    )


def render_letter(
    letter: dict, profiles: dict[str, SchoolProfile], templates: dict[str, LetterTemplate]
) -> tuple[str | None, str, str | None, dict]:
    """(template_id, text, docx/pdf header, file metadata) for one planned letter."""
    school = profiles[letter["urn"]]
    letter_date = letter["received_date"] - dt.timedelta(days=letter["write_lag"])
    family, family_rnd = family_voice(letter["family_seed"])
    own = random.Random(letter["letter_seed"])
    kind = letter["kind"]
    if kind == "school_template":
        return _school_copy(letter, templates[letter["urn"]], school, family, own, letter_date)
    use_public = kind == "public_template" or (kind == "sibling" and letter["sibling_public"])
    plural_voice = family.plural and not use_public
    ctx = letter_context(
        letter["children"],
        family,
        school,
        letter["first_exit"],
        letter_date,
        family.date_style,
        plural_voice,
    )
    if use_public:
        template = public_template(letter["public_index"])
        if letter.get("case") == "rare_public":
            from offroll_audit.synthetic.hard_letters import rare_public_template

            template = rare_public_template(letter["rare_index"])
        text = personalise(
            family_rnd, template, ctx, ("drop", "remark", "retype"), remark_sentences=2
        )
        template_id: str | None = template.template_id
    else:
        text, template_id = free_form_text(family_rnd, ctx), None
    moment = _letter_moment(own, letter_date)
    metadata = {
        "author": family.author,
        "template": "Normal.dotm",
        "rsid_root": family.rsid,
        "application": family.application,
        "producer": family.producer,
        "created": moment,
        "modified": moment + dt.timedelta(minutes=own.randint(3, 90)),
    }
    return template_id, text, None, metadata


def _school_copy(
    letter: dict,
    template: LetterTemplate,
    school: SchoolProfile,
    family: Family,
    rnd: random.Random,
    letter_date: dt.date,
) -> tuple[str, str, str | None, dict]:
    """A family's filled-in copy of the school's letter, with the school's metadata."""
    style = template.date_style if rnd.random() < 0.8 else family.date_style
    ctx = letter_context(
        letter["children"], family, school, letter["first_exit"], letter_date, style, False
    )
    child = letter["children"][0]
    staff_name, role = school.staff[int(rnd.random() * len(school.staff))]
    year_code = "N" if child["year_group"] in ("N1", "N2") else child["year_group"]
    ctx |= {
        "staff": rnd.choice((staff_name, f"{staff_name} ({role})", f"{staff_name}, {role},")),
        "meeting_date": format_date(letter_date - dt.timedelta(days=rnd.randint(1, 9)), style),
        "tutor": year_code + rnd.choice(school.tutors),
    }
    text = personalise(rnd, template, ctx, ("drop", "add", "remark", "retype", "fix_typo"))
    moment = _letter_moment(rnd, letter_date)
    metadata = dict(template.metadata)
    metadata |= {"modified": moment, "revision": rnd.randint(2, 9)}
    if rnd.random() < 0.3:
        metadata["last_modified_by"] = family.author or "User"
    header = template.header
    if letter["fmt"] != "docx" and rnd.random() < 0.1:
        header = None  # a parent who retyped it without the letterhead
    return template.template_id, text, header, metadata
