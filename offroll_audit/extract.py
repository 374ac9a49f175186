"""Read the text and document metadata of one parent's letter, safely.

Letters come from parents, schools and scanners, so every file is treated as
hostile: nothing outside letters/ or behind a symlink is opened, sizes are
capped before anything is decompressed, and a file that cannot be read gives
a warning naming the file (never its contents) instead of an exception.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

MAX_FILE_BYTES = 20 * 1024 * 1024  # a letter is a few pages; anything bigger is not a letter
MAX_DOCX_UNCOMPRESSED = 64 * 1024 * 1024  # all members of a .docx together, as declared
MAX_DOCX_RATIO = 100  # uncompressed / compressed: ordinary .docx files are about 3-15
MAX_XML_BYTES = 8 * 1024 * 1024  # one XML part we parse
MAX_PDF_PAGES = 50
MAX_METADATA_CHARS = 200

TEXT_SUFFIXES = {".txt", ".md"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | {".docx", ".pdf"}

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
CORE_FIELDS = {
    "{http://purl.org/dc/elements/1.1/}creator": "author",
    "{http://schemas.openxmlformats.org/package/2006/metadata/core-properties}lastModifiedBy": (
        "last_modified_by"
    ),
}
APP_FIELDS = {
    "{http://schemas.openxmlformats.org/officeDocument/2006/extended-properties}Company": "company",
    "{http://schemas.openxmlformats.org/officeDocument/2006/extended-properties}Template": (
        "template"
    ),
}
PDF_FIELDS = {"/Producer": "producer", "/Author": "author", "/Creator": "creator"}


@dataclass(frozen=True)
class Extracted:
    """A letter's text, its document metadata and, if it could not be read, why."""

    text: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    warning: str | None = None


class Unreadable(Exception):
    """A letter file that must be left out; the message is safe to show (no contents)."""


def extract_letter(path: Path, letters_root: Path) -> Extracted:
    """The text and metadata of one letter file; never raises for a bad file."""
    name = _display_name(path, letters_root)
    try:
        _refuse_unsafe_path(path, letters_root)
        data = _read_bytes(path)
        text, metadata = _parse(path.suffix.lower(), data)
    except Unreadable as why:
        return Extracted(warning=f"letter {name}: {why}; it was left out")
    if not text.strip() and path.suffix.lower() == ".pdf":
        from offroll_audit.ocr import pdf_text  # "" unless a local OCR engine is installed

        text = pdf_text(data)
    if not text.strip():
        why = "no text layer, needs OCR" if path.suffix.lower() == ".pdf" else "has no text"
        return Extracted(metadata=metadata, warning=f"letter {name}: {why}")
    return Extracted(text=text, metadata=metadata)


def _display_name(path: Path, letters_root: Path) -> str:
    """The path as the user wrote it under letters/ (never resolved, never its contents)."""
    try:
        return Path(os.path.relpath(path, letters_root)).as_posix()
    except ValueError:  # another drive on Windows
        return path.name


def _refuse_unsafe_path(path: Path, letters_root: Path) -> None:
    """Refuse `..` escapes, symlinks anywhere below letters/ and anything resolving outside it.

    The loader may pass either the path as written or its resolved form, so the
    path is checked against letters/ both as given and resolved.
    """
    absolute = Path(os.path.abspath(path))  # collapses `..` without following links
    bases = [Path(os.path.abspath(letters_root)), letters_root.resolve()]
    base = next((b for b in bases if absolute.is_relative_to(b)), None)
    if base is None:
        raise Unreadable("is outside letters/")
    current = base
    for part in absolute.relative_to(base).parts:
        current = current / part
        if current.is_symlink():
            raise Unreadable("is a symbolic link, which is never followed")
    if not absolute.resolve().is_relative_to(bases[1]):
        raise Unreadable("is outside letters/")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise Unreadable(f"has an unsupported type {path.suffix or '(none)'!r}")


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, opened without following a link and capped in size."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise Unreadable(f"cannot be opened ({type(error).__name__})") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise Unreadable(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise Unreadable(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    return data


def _parse(suffix: str, data: bytes) -> tuple[str, dict[str, str]]:
    if suffix in TEXT_SUFFIXES:
        return decode_text(data), {}
    if suffix == ".docx":
        return _docx(data)
    return _pdf(data)


# --------------------------------------------------------------------------- plain text


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252: the encodings
    letters saved by Notepad, Word's 'plain text' and older Windows tools arrive in."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode_or_refuse(data, "utf-16")
    if b"\x00" in data[:4096]:
        raise Unreadable("is not a text file (it contains binary data)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _decode_or_refuse(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise Unreadable(f"is not valid {encoding.upper()} text") from None


# --------------------------------------------------------------------------- docx


def _docx(data: bytes) -> tuple[str, dict[str, str]]:
    """Headers, body (tables and text boxes included), footnotes and footers, in that order."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise Unreadable("is not a valid .docx (corrupt zip)") from None
    with archive:
        _refuse_zip_bomb(archive)
        names = set(archive.namelist())
        if "word/document.xml" not in names:
            raise Unreadable("is not a valid .docx (no word/document.xml)")
        parts = [
            *sorted(n for n in names if n.startswith("word/header") and n.endswith(".xml")),
            "word/document.xml",
            *[n for n in ("word/footnotes.xml", "word/endnotes.xml") if n in names],
            *sorted(n for n in names if n.startswith("word/footer") and n.endswith(".xml")),
        ]
        texts = [_docx_part_text(_xml(archive, part)) for part in parts]
        metadata = _docx_metadata(archive, names)
    return "\n".join(t for t in texts if t.strip()), metadata


def _refuse_zip_bomb(archive: zipfile.ZipFile) -> None:
    """Check declared sizes before inflating anything (reads are capped again later)."""
    members = archive.infolist()
    declared = sum(m.file_size for m in members)
    compressed = sum(m.compress_size for m in members)
    if len(members) > 2000 or declared > MAX_DOCX_UNCOMPRESSED:
        raise Unreadable("is too large once decompressed (possible zip bomb)")
    if declared > 1024 * 1024 and declared > MAX_DOCX_RATIO * max(compressed, 1):
        raise Unreadable("compresses implausibly well (possible zip bomb)")


def _xml(archive: zipfile.ZipFile, name: str) -> ElementTree.Element:
    """One XML part, size-capped while inflating and without any DTD (no entity tricks)."""
    try:
        with archive.open(name) as member:
            raw = member.read(MAX_XML_BYTES + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, NotImplementedError):
        raise Unreadable("is not a valid .docx (corrupt member)") from None
    if len(raw) > MAX_XML_BYTES:
        raise Unreadable("has an XML part that is too large (possible zip bomb)")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise Unreadable("has a DTD in its XML, which Word never writes")
    try:
        return ElementTree.fromstring(raw)
    except ElementTree.ParseError:
        raise Unreadable("is not a valid .docx (broken XML)") from None


def _docx_part_text(root: ElementTree.Element) -> str:
    """Paragraphs one per line; a text box's paragraphs follow the paragraph holding it."""
    lines: list[str] = []
    _collect_paragraphs(root, lines)
    return "\n".join(lines)


def _collect_paragraphs(element: ElementTree.Element, lines: list[str]) -> None:
    for child in element:
        if child.tag == MC_FALLBACK:  # the same text box again, for old readers
            continue
        if child.tag == f"{W}p":
            boxes: list[ElementTree.Element] = []
            lines.append(_paragraph_text(child, boxes))
            for box in boxes:
                _collect_paragraphs(box, lines)
        else:
            _collect_paragraphs(child, lines)


def _paragraph_text(paragraph: ElementTree.Element, boxes: list[ElementTree.Element]) -> str:
    """The paragraph's own runs; nested text boxes are handed back in `boxes`."""
    pieces: list[str] = []

    def walk(element: ElementTree.Element) -> None:
        for child in element:
            tag = child.tag
            if tag == MC_FALLBACK:
                continue
            if tag == f"{W}txbxContent":
                boxes.append(child)
            elif tag == f"{W}t":
                pieces.append(child.text or "")
            elif tag == f"{W}tab":
                pieces.append("\t")
            elif tag in (f"{W}br", f"{W}cr"):
                pieces.append("\n")
            elif tag not in (f"{W}delText", f"{W}instrText"):
                walk(child)

    walk(paragraph)
    return "".join(pieces)


def _docx_metadata(archive: zipfile.ZipFile, names: set[str]) -> dict[str, str]:
    """Author, last editor, company, template and rsidRoot: identical values across
    unrelated families suggest one source document."""
    metadata: dict[str, str] = {}
    for part, fields in (("docProps/core.xml", CORE_FIELDS), ("docProps/app.xml", APP_FIELDS)):
        if part in names:
            root = _xml(archive, part)
            for child in root:
                if child.tag in fields and (child.text or "").strip():
                    metadata[fields[child.tag]] = child.text.strip()[:MAX_METADATA_CHARS]
    if "word/settings.xml" in names:
        rsid_root = _xml(archive, "word/settings.xml").find(f"{W}rsids/{W}rsidRoot")
        if rsid_root is not None and rsid_root.get(f"{W}val"):
            metadata["rsid_root"] = rsid_root.get(f"{W}val", "")[:MAX_METADATA_CHARS]
    return metadata


# --------------------------------------------------------------------------- pdf


def _pdf(data: bytes) -> tuple[str, dict[str, str]]:
    """The text layer of the first pages; scanned letters have none and need OCR."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    if not data.lstrip()[:1024].startswith(b"%PDF") and b"%PDF" not in data[:1024]:
        raise Unreadable("is not a PDF")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not _opens_without_password(reader):
            raise Unreadable("is an encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages[:MAX_PDF_PAGES]]
        info = reader.metadata or {}
        metadata = {
            key: str(info[name]).strip()[:MAX_METADATA_CHARS]
            for name, key in PDF_FIELDS.items()
            if info.get(name) is not None and str(info[name]).strip()
        }
    except Unreadable:
        raise
    except (
        PdfReadError,
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        OSError,
        RecursionError,
        ZeroDivisionError,
        AssertionError,
    ):
        raise Unreadable("is not a readable PDF (corrupt)") from None
    return "\n".join(pages), metadata


def _opens_without_password(reader: object) -> bool:
    """An owner-password-only PDF opens with the empty user password."""
    try:
        return bool(reader.decrypt(""))  # type: ignore[attr-defined]
    except Exception:  # pypdf raises several types, incl. a missing crypto dependency
        return False
