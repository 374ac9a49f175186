"""OCR: undoing a copier's misreads when comparing letters, and reading scans without text.

Many letters reach the EHE team as scans. A copier's OCR gives the PDF a text layer with
misread characters ('rn' for 'm', '1' for 'l', '0' for 'o'), words broken or run together
and lines merged. `ocr_canonical` maps every text to one run of letters with those
misreads undone the same way everywhere, so a scan and a typed copy of one form meet.

A scan with no text layer at all needs OCR. That is optional: with the `ocr` extra
installed (`pip install 'offroll-audit[ocr]'`: pytesseract and Pillow) and the Tesseract
engine on the machine (`apt install tesseract-ocr`, `brew install tesseract`, or the
Windows installer), `pdf_text` reads the page images; without them the letter keeps its
"needs OCR" warning and is left out, as before. Nothing is sent anywhere: the engine runs
locally.
"""

from __future__ import annotations

import functools
import io
import shutil

import polars as pl

# Misreads undone (after lower-casing): pairs of letters a copier's OCR reads for one
# letter, then look-alike characters. Applied the same way to every letter, so a typed
# 'modern' and a scanned 'rnodem' both become 'modem'.
OCR_CONFUSIONS = (
    ("rn", "m"),
    ("vv", "w"),
    ("cl", "d"),
    ("li", "h"),
    ("1", "l"),
    ("|", "l"),
    ("i", "l"),
    ("0", "o"),
    ("5", "s"),
    ("c", "e"),
)
MAX_OCR_PAGES = 5  # a letter is a page or two; a long scan is read no further
MAX_OCR_PIXELS = 40_000_000  # a page image larger than this is not a letter's page


def ocr_canonical(texts: pl.Series) -> pl.Series:
    """Each text as one run of lower-case letters with common OCR misreads undone: a
    copier's 'rnodern sch0ol' and a typed 'modern school' meet, and so do words that ran
    together, split or were hyphenated across lines."""
    lowered = texts.fill_null("").str.to_lowercase()
    patterns, replacements = zip(*OCR_CONFUSIONS, strict=True)
    mended = lowered.str.replace_many(list(patterns), list(replacements), leftmost=True)
    return mended.str.replace_all(r"[^\p{L}]+", "")


@functools.cache
def engine() -> str | None:
    """The local OCR engine's name ("tesseract x.y"), or None when it is not installed."""
    try:
        import pytesseract
        from PIL import Image  # noqa: F401  (pytesseract reads Pillow images)
    except ImportError:
        return None
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        return None
    try:
        return f"tesseract {pytesseract.get_tesseract_version()}"
    except Exception:  # a broken install: as if there were none
        return None


def pdf_text(data: bytes) -> str:
    """The text OCR reads from a scanned PDF's page images ("" without an engine, or if
    the pages hold no readable image). Never raises for a bad file."""
    if engine() is None:
        return ""
    import pytesseract
    from pypdf import PdfReader

    pages = []
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        for page in reader.pages[:MAX_OCR_PAGES]:
            for picture in page.images:
                image = picture.image
                if image is None or image.width * image.height > MAX_OCR_PIXELS:
                    continue
                pages.append(pytesseract.image_to_string(image, lang="eng"))
    except Exception:  # pypdf, Pillow and tesseract raise many types for a bad scan
        return "\n".join(pages)
    return "\n".join(pages)
