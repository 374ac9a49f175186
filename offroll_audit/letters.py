"""The letters stage: find deregistration letters written from a school's template.

Parents may copy a public sample letter (innocent); what the Ofsted and OSA
evidence points to is a letter the school wrote and handed to several
unrelated families. This stage groups letters by wording and judges each group
by its spread: one school (or one trust) -> `school_template`; many unrelated
schools, or a known public template -> `shared_public_template`.

Stages, each a small function: extract (offroll_audit.extract) -> normalise
-> shingle -> candidate pairs (all pairs within a school, MinHash LSH across
schools) -> exact verification -> incremental clustering -> families -> verdict ->
evidence. Memory does not grow with the number of similar pairs: a public
template used by 30,000 families would give ~450M pairs, so a letter is only
compared with a few representatives of each existing group (and with its own
school's letters), and no pair list is ever built.

Letters arrive messy (issue 16), so a link is more than whole-letter Jaccard:
- within a school, containment of the shorter letter (a form under a parent's own
  paragraph) and long passages shared in the same order (a form several families signed,
  each adding a lot) link letters too; across schools only Jaccard does, since schools'
  forms share boilerplate;
- a scan whose OCR garbled its words (many words found in no other letter) and a text
  layer that lost its spaces are compared again by characters, after undoing common OCR
  misreads (offroll_audit.ocr);
- families are counted from ids (letters.csv, else exits.csv or pupils.csv of the
  letter's pupils), else from the letters themselves (offroll_audit.letter_families):
  one family's letters are one voice, never a template;
- a form carrying what only the school holds (UPN, tutor group, letterhead, document
  author or company) is reported per cluster (`school_only`), so the TEMPLATED_LETTERS
  rule can select on two such families (`template_families_school_only`).

Input of `detect_templates` (the loader's letters frame plus text):
    letter_id (str), urn (str), pupil_id (str, nullable), family_id (str, nullable),
    received_date (Date, nullable), text (str, nullable: null = not read),
    optional metadata (Struct of str fields, any of METADATA_FIELDS; see
    `read_letter_texts`, which builds text/metadata/warning from `path`),
    optional warning (str: why the file could not be read),
    optional last_suspension_date (Date: the pupil's last suspension before exit),
    optional exit_family_id and roll_family_id (str: the family_id exits.csv and pupils.csv
    give the letter's pupils; see `roll_families`).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

# datasketch: MinHash LSH done right (exact banding), maintained, and it lets us set the
# bands x rows explicitly instead of a threshold-derived default that misses half the pairs.
from datasketch import LeanMinHash, MinHash, MinHashLSH
from scipy import sparse

from offroll_audit.extract import SUPPORTED_SUFFIXES, Extracted, extract_letter
from offroll_audit.letter_families import ID_SOURCES, recognise_families
from offroll_audit.ocr import ocr_canonical
from offroll_audit.progress import SILENT, Progress
from offroll_audit.window import spring_census_on_or_after

VERDICTS = ("school_template", "shared_public_template", "unique")
METADATA_FIELDS = ("author", "last_modified_by", "company", "template", "rsid_root", "producer")
SHARED_METADATA_FIELDS = ("author", "last_modified_by", "company", "template", "rsid_root")
# Values Word and PDF tools write for everyone: sharing them says nothing.
GENERIC_METADATA = {
    "",
    "user",
    "owner",
    "admin",
    "administrator",
    "hp",
    "dell",
    "lenovo",
    "windows user",
    "microsoft office user",
    "normal",
    "normal.dot",
    "normal.dotm",
    "normal.dotx",
    "unknown",
}
SCHOOL_VOICE = (
    "following our meeting",
    "following our recent meeting",
    "following the meeting",
    "at our meeting",
    "in our meeting",
    "as discussed",
    "as we discussed",
    "as agreed",
    "we have agreed",
    "i have agreed with the school",
    "the school is no longer responsible",
    "school will no longer be responsible",
    "no longer responsible for",
    "i understand that the school",
    "i understand the school",
    "i have been advised",
    "i have been informed by the school",
    "the school has explained",
    "the school has advised",
    "i confirm that i have been",
    "i accept that",
    "managed move",
    "in the best interests of the school",
)

# Words that start sentences in letters; never taken for names there.
COMMON_WORDS = (
    "a",
    "after",
    "all",
    "also",
    "although",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "because",
    "before",
    "being",
    "best",
    "but",
    "by",
    "can",
    "could",
    "dear",
    "due",
    "during",
    "each",
    "every",
    "following",
    "for",
    "from",
    "further",
    "given",
    "going",
    "good",
    "had",
    "has",
    "have",
    "he",
    "hello",
    "her",
    "here",
    "hi",
    "his",
    "how",
    "i",
    "if",
    "in",
    "is",
    "it",
    "its",
    "just",
    "kind",
    "many",
    "may",
    "most",
    "my",
    "no",
    "not",
    "now",
    "of",
    "on",
    "once",
    "or",
    "our",
    "please",
    "re",
    "regards",
    "she",
    "since",
    "so",
    "some",
    "sincerely",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "unfortunately",
    "until",
    "we",
    "what",
    "when",
    "where",
    "whilst",
    "while",
    "who",
    "why",
    "will",
    "with",
    "would",
    "yes",
    "yours",
    "you",
    "your",
    "faithfully",
    "thank",
    "thanks",
    "signed",
    "signature",
    "name",
    "date",
    "address",
    "dob",
    "parent",
    "carer",
    "child",
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_WEEKDAY = r"(?:(?:mon|tues|wed(?:nes)?|thu(?:rs)?|fri|satur|sun)day,?\s+)?"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
WORD_DATE = (
    rf"(?i)\b{_WEEKDAY}(?:{_DAY}(?:\s+of)?\s+{_MONTH},?(?:\s+\d{{4}})?"
    rf"|{_MONTH}\s+{_DAY},?(?:\s+\d{{4}})?|{_MONTH}\s+\d{{4}})\b"
)
LOWER_CASE_WORD = r"\b\p{Ll}[\p{Ll}']*\b"
NUMERIC_DATE = r"\b\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}\b"
UPN_TOKEN = r"^[A-Za-z]\d{11}[0-9A-Za-z]$"
UPN_IN_TEXT = r"\b[A-HJ-NP-RT-Z]\d{11}[0-9A-Z]\b"
TUTOR_GROUP = (
    r"(?i:\b(?:tutor|form|registration|reg)(?:\s+(?:group|class|room))?)\s*:?\s*"
    r"\d{1,2}\s?[A-Z]{1,3}\d?\b"
)
# A letterhead: the school's (or trust's) name in a letter's first lines, with the kind of
# contact details a parent's own letter does not open with.
LETTERHEAD_CHARS = 400  # a letter's first lines
CONTACT_DETAILS = (
    r"(?:^|[^a-z])(?:tel|telephone|phone|fax)\b|www\.|@[a-z0-9.-]+\.|\.sch\.uk|\.org\.uk"
)
PARAGRAPH = "\u00b6"  # marks a blank line: the next word starts a sentence
_EDGE_PUNCTUATION = r"^[^\w<>]+|[^\w<>]+$"
_SPLITMIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_GRAM_KEYS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(1))


@dataclass(frozen=True)
class LetterSettings:
    """Tuning of the scan. Defaults were set on the synthetic letters (see tests)."""

    threshold: float = 0.5  # word 3-gram similarity that links a letter to a group (see tests)
    # A letter that contains most of a shorter one links to it too: this share of the shorter
    # letter's shingles, and at least this many of them (a form under a long paragraph).
    containment: float = 0.5
    containment_min_shared: int = 40
    # The character view, for scans whose OCR garbled words and text layers that lost spaces:
    # OCR-canonical character n-grams, 1 in `char_sample` of them kept (the same everywhere).
    char_threshold: float = 0.5
    char_containment: float = 0.45  # OCR noise costs a scan some of its shared grams
    char_gram: int = 6
    char_sample: int = 4
    char_min_shared: int = 40
    ocr_view: bool = True  # garbled letters left alone by words are compared by characters
    ocr_unseen_share: float = 0.03  # garbled: this share of its words is in no other letter
    same_sender_days: int = 14  # one signature on letters this close: one family (no ids)
    school_only_min_families: int = 2  # families whose letters carry a school-only detail
    merge_threshold: float = 0.4  # mean similarity of two groups' representatives to merge them
    min_words: int = 25  # shorter letters are left out: short generic notes all look alike
    min_families: int = 2  # families that make a template; one family is one voice
    public_min_units: int = 3  # unrelated schools/trusts that make a template public
    dominant_share: float = 0.75  # with 2 units, the main one's share that keeps it the school's
    num_perm: int = 96  # = bands x rows: permutations beyond those are never used
    lsh_bands: int = 32  # 32 x 3: 98.6% of pairs at Jaccard 0.5 become candidates (32 x 4: 87%)
    lsh_rows: int = 3
    max_reps: int = 8  # representatives per group that later letters are compared with
    rep_novelty: float = (
        0.6  # a member less similar than this to its group becomes a representative
    )
    exact_school_max: int = 2000  # compare a letter exactly with up to this many of its school's
    window_days: int = 14  # "several families within about 14 days"; also days after a suspension
    burst_min_families: int = 3
    census_weeks: int = 6  # letters received this long before the January census
    evidence_sample: int = 64  # members whose pairwise similarity is computed exactly
    passage_min_words: int = 8
    passages: int = 3
    passage_compare: int = 6  # members the medoid is aligned with to find shared passages
    # Two letters that share this many words in runs of passage_min_words or more, in order,
    # are linked even when their own additions keep both ratios low (aligned only when they
    # share passage_min_shared shingles).
    passage_link_words: int = 70
    passage_min_shared: int = 40
    seed: int = 1


@dataclass
class LetterResult:
    """Per-letter verdicts, per-cluster evidence (results.json `letter_clusters`) and warnings."""

    letters: pl.DataFrame
    clusters: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    per_school: pl.DataFrame | None = None  # filled by run_letters (see letters_per_school)
    # letter_id -> family key, and whether the letter carries its cluster's school-only
    # details (see _school_only), from detect_templates
    families: pl.DataFrame | None = None

    def school_template_ids(self) -> pl.Series:
        """Ids of the letters in a school-template cluster: their exits get TEMPLATED_LETTER."""
        return self.letters.filter(pl.col("verdict") == "school_template").get_column("letter_id")


LETTER_SCHEMA = {
    "letter_id": pl.String,
    "urn": pl.String,
    "cluster_id": pl.String,
    "verdict": pl.Enum(VERDICTS),
    "similarity": pl.Float64,
    "words": pl.Int64,
    "warning": pl.String,
}


# --------------------------------------------------------------------------- reading files


def read_letter_texts(
    letters: pl.DataFrame, letters_root: Path, progress: Progress = SILENT
) -> pl.DataFrame:
    """Add text, metadata and warning by extracting each letter's `path` (null: refused)."""
    paths = progress.track(letters.get_column("path").to_list(), "Reading letters", letters.height)
    extracted = [
        extract_letter(Path(path), letters_root) if path else Extracted() for path in paths
    ]
    return letters.with_columns(
        pl.Series("text", [e.text if e.text.strip() else None for e in extracted], pl.String),
        pl.Series("metadata", [_metadata_row(e.metadata) for e in extracted], _METADATA_DTYPE),
        pl.Series("warning", [e.warning for e in extracted], pl.String),
    )


_METADATA_DTYPE = pl.Struct({name: pl.String for name in METADATA_FIELDS})


def _metadata_row(metadata: dict[str, str]) -> dict[str, str | None]:
    return {name: metadata.get(name) for name in METADATA_FIELDS}


# --------------------------------------------------------------------------- normalise and shingle


def normalise(text: str) -> list[str]:
    """Lower-cased words with dates, numbers, UPNs and names masked: what a template keeps."""
    return _token_frame(pl.Series([text], dtype=pl.String)).get_column("token").to_list()


def word_shingles(words: Sequence[str], n: int = 3) -> set[str]:
    """Overlapping word n-grams (the whole text if shorter than n)."""
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _clean_text(text: pl.Expr) -> pl.Expr:
    """Dates to one `<date>` word, paragraph breaks marked, whitespace collapsed."""
    return (
        text.fill_null("")
        .str.replace_all("[\u2018\u2019\u201b\u2032]", "'")
        .str.replace_all("[\u201c\u201d]", '"')
        .str.replace_all(WORD_DATE, "<date>")
        .str.replace_all(NUMERIC_DATE, "<date>")
        .str.replace_all(r"\n[^\S\n]*\n", f" {PARAGRAPH} ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def _lower_case_words(texts: pl.Series, chunk: int = 20_000) -> pl.Series:
    """Every word written in lower case somewhere in the batch (so not a name when it
    starts a sentence capitalised)."""
    parts = [
        texts.slice(start, chunk).str.extract_all(LOWER_CASE_WORD).explode().drop_nulls().unique()
        for start in range(0, texts.len(), chunk)
    ]
    return pl.concat([*parts, pl.Series(list(COMMON_WORDS))]).unique()


def _token_frame(
    texts: pl.Series, *, shown: bool = False, ordinary: pl.Series | None = None
) -> pl.DataFrame:
    """One row per word of each text, in order: idx (row of `texts`), token, and, with
    `shown`, the word as written (raw) and with any masked part replaced by its mask.

    A capitalised word inside a sentence is a name. At a sentence start it is a name
    unless it is `ordinary`: a common word or one written in lower case somewhere in the
    batch ("Thank you.\nJane Smith": Jane is masked, Thank is not).
    """
    ordinary = _lower_case_words(texts) if ordinary is None else ordinary
    words = (
        pl.DataFrame({"text": texts})
        .with_row_index("idx")
        .select("idx", raw=_clean_text(pl.col("text")).str.split(" "))
        .explode("raw")
    )
    first = (pl.col("idx") != pl.col("idx").shift(1)).fill_null(True)
    after_stop = pl.col("raw").shift(1).str.contains(rf"[.!?:][\"')\]]*$|^{PARAGRAPH}$")
    frame = (
        words.with_columns(
            core=pl.col("raw").str.replace_all(_EDGE_PUNCTUATION, ""),
            starts=first | after_stop.fill_null(False),
        )
        .filter((pl.col("core") != "") & (pl.col("raw") != PARAGRAPH))
        .with_columns(lower=pl.col("core").str.to_lowercase())
    )
    core, lower = pl.col("core"), pl.col("lower")
    name = (
        (core.str.head(1) != lower.str.head(1))
        & ~core.str.contains(r"^I(?:'[a-z]+)?$")
        & (~pl.col("starts") | ~lower.is_in(ordinary.implode()))
    )
    token = (
        pl.when(core == "<date>")
        .then(pl.lit("<date>"))
        .when(core.str.contains(UPN_TOKEN))
        .then(pl.lit("<upn>"))
        .when(core.str.contains(r"\d"))
        .then(pl.lit("<num>"))
        .when(name)
        .then(pl.lit("<name>"))
        .otherwise(lower)
    )
    frame = frame.with_columns(token=token)
    if not shown:
        return frame.select("idx", "token")
    masked = pl.col("token") != pl.col("lower")
    edges = pl.col("raw").str.extract(r"^([^\w<>]*)", 1) + pl.col("token")
    return frame.select(
        "idx",
        "token",
        "raw",
        shown=pl.when(masked)
        .then(edges + pl.col("raw").str.extract(r"([^\w<>]*)$", 1))
        .otherwise("raw"),
    )


@dataclass
class _Words:
    """The word view of a batch of texts (see _word_sets)."""

    sets: list[np.ndarray]  # distinct word 3-grams of each text, as sorted dense ids
    counts: np.ndarray  # words in each text
    vocabulary: int  # distinct 3-grams in all
    sequences: list[np.ndarray]  # each text's 3-grams in order (32-bit hashes)
    unseen: np.ndarray  # share of a text's lower-case words that no other text has


def _word_sets(
    texts: pl.Series, seed: int, chunk: int = 10_000, ordinary: pl.Series | None = None
) -> _Words:
    """The word view of every text, tokenised in chunks so the per-word frame never holds
    the whole batch. `unseen` is high for a scan whose OCR garbled its words: typed letters
    reuse the batch's words, a copier's 'sch0ol' and 'thnk' are in no other letter."""
    ordinary = _lower_case_words(texts) if ordinary is None else ordinary
    idx_parts, hash_parts, counts = [np.empty(0, np.int64)], [np.empty(0, np.uint64)], []
    lower_parts = []
    for start in range(0, texts.len(), chunk):
        part = texts.slice(start, chunk)
        tokens = _token_frame(part, ordinary=ordinary)
        counts.append(np.bincount(tokens.get_column("idx").to_numpy(), minlength=part.len()))
        row = tokens.get_column("idx").to_numpy()
        word = tokens.get_column("token").hash(seed=seed).to_numpy()
        idx, hashes = _gram_hashes(row, word)
        idx_parts.append(idx.astype(np.int64) + start)
        hash_parts.append(hashes)
        written = ~tokens.get_column("token").str.starts_with("<").to_numpy()  # not masked
        lower_parts.append(
            pl.DataFrame(
                {"idx": row[written].astype(np.int64) + start, "word": word[written]}
            ).unique()
        )
    idx, hashes = np.concatenate(idx_parts), np.concatenate(hash_parts)
    in_order = (hashes >> np.uint64(32)).astype(np.uint32)
    sequences = np.split(in_order, np.cumsum(np.bincount(idx, minlength=texts.len()))[:-1])
    sets, vocabulary = _sets_by_row(idx, hashes, texts.len())
    words = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    return _Words(sets, words, vocabulary, sequences, _unseen_share(lower_parts, texts.len()))


def _unseen_share(parts: list[pl.DataFrame], rows: int) -> np.ndarray:
    """Per text, the share of its distinct words (masks aside) found in no other text."""
    if not parts:
        return np.zeros(rows)
    words = pl.concat(parts)
    shares = (
        words.with_columns(once=pl.len().over("word") == 1)
        .group_by("idx")
        .agg(pl.col("once").mean())
    )
    out = np.zeros(rows)
    out[shares.get_column("idx").to_numpy()] = shares.get_column("once").to_numpy()
    return out


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads combined hashes over all 64 bits."""
    z = values.copy()
    z ^= z >> np.uint64(30)
    z *= _SPLITMIX[0]
    z ^= z >> np.uint64(27)
    z *= _SPLITMIX[1]
    z ^= z >> np.uint64(31)
    return z


def _word_gram_hashes(tokens: pl.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(idx, hash) of every word 3-gram, from per-word hashes (no 3-gram strings built)."""
    return _gram_hashes(
        tokens.get_column("idx").to_numpy(), tokens.get_column("token").hash(seed=seed).to_numpy()
    )


def _gram_hashes(idx: np.ndarray, word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(idx, hash) of every word 3-gram from the words' row and hash, in order."""
    if idx.size < 3:
        return np.empty(0, np.uint32), np.empty(0, np.uint64)
    with np.errstate(over="ignore"):
        grams = _mix64(
            (word[:-2] * _GRAM_KEYS[0]) ^ (word[1:-1] * _GRAM_KEYS[1]) ^ (word[2:] * _GRAM_KEYS[2])
        )
    same = idx[:-2] == idx[2:]
    return idx[:-2][same], grams[same]


def _sets_by_row(idx: np.ndarray, hashes: np.ndarray, rows: int) -> tuple[list[np.ndarray], int]:
    """Each row's distinct shingles as sorted dense ids (uint32, views into one array: cheap
    for 100,000 letters), and how many distinct shingles there are in all."""
    frame = pl.DataFrame({"idx": idx, "h": hashes}).sort("idx", "h")
    idx, values = frame.get_column("idx").to_numpy(), frame.get_column("h").to_numpy()
    del frame
    keep = np.ones(values.size, dtype=bool)
    keep[1:] = (values[1:] != values[:-1]) | (idx[1:] != idx[:-1])
    # ranks keep each row's order: ids are increasing where hashes are
    ids = (pl.Series(values[keep]).rank("dense").cast(pl.UInt32) - 1).to_numpy()
    counts = np.bincount(idx[keep], minlength=rows)
    return np.split(ids, np.cumsum(counts)[:-1]), int(ids.max()) + 1 if ids.size else 0


def _char_gram_hashes(
    texts: pl.Series, settings: LetterSettings, offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(row, hash) of the sampled character n-grams of every text's OCR-canonical form.

    The n bytes of a gram are packed into one integer (no collisions before hashing); a
    gram is kept when its hash falls in 1/`char_sample` of the range, the same grams in
    every letter, so sets stay small and their Jaccard and containment stay unbiased.
    """
    n, sample = settings.char_gram, np.uint64(settings.char_sample - 1)
    canonical = ocr_canonical(texts)
    lengths = canonical.str.len_bytes().to_numpy().astype(np.int64)
    data = np.frombuffer(canonical.str.join("").item().encode(), dtype=np.uint8)
    starts = np.arange(max(data.size - n + 1, 0))
    if starts.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    ends = np.cumsum(lengths)
    row = np.searchsorted(ends, starts, side="right")
    inside = starts + n <= ends[np.minimum(row, ends.size - 1)]
    packed = np.zeros(starts.size, dtype=np.uint64)
    for k in range(n):
        packed |= data[k : k + starts.size].astype(np.uint64) << np.uint64(8 * k)
    hashes = _mix64(packed ^ _GRAM_KEYS[1])
    keep = inside & ((hashes & sample) == 0)
    return row[keep] + offset, hashes[keep]


class _CharSets:
    """Sampled OCR-canonical character n-gram sets (sorted hashes), computed only for the
    letters that need them (scans, letters of their schools, groups' representatives), in one
    vectorised pass per request."""

    def __init__(self, texts: pl.Series, settings: LetterSettings):
        self._texts = texts
        self._settings = settings
        self._sets: dict[int, np.ndarray] = {}

    def prepare(self, rows: Iterable[int]) -> None:
        missing = sorted({int(r) for r in rows} - self._sets.keys())
        for start in range(0, len(missing), 5_000):
            chunk = missing[start : start + 5_000]
            row, hashes = _char_gram_hashes(self._texts.gather(chunk), self._settings)
            frame = pl.DataFrame({"row": row, "h": hashes}).unique().sort("row", "h")
            counts = np.bincount(frame.get_column("row").to_numpy(), minlength=len(chunk))
            values = np.split(frame.get_column("h").to_numpy(), np.cumsum(counts)[:-1])
            self._sets.update(zip(chunk, values, strict=True))

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._sets:
            self.prepare([i])
        return self._sets[i]


def _char_gram_set(text: str, settings: LetterSettings | None = None) -> np.ndarray:
    """One text's sampled character n-gram hashes, sorted: 'wordsruntogether' in a PDF's
    text layer gives the same set as 'words run together'."""
    _, hashes = _char_gram_hashes(pl.Series([text], dtype=pl.String), settings or LetterSettings())
    return np.unique(hashes)


# --------------------------------------------------------------------------- similarity spaces


@dataclass(frozen=True)
class _Score:
    """How two shingle sets' overlap becomes one similarity: their Jaccard or, when the
    smaller set lies mostly inside the larger (at least `containment` of it and `min_shared`
    shingles), that containment. A form under a long personal paragraph or with struck-out
    lines keeps most of its own shingles though its Jaccard with a plain copy falls."""

    threshold: float
    containment: float
    min_shared: int

    def parts(
        self, inter: np.ndarray, size: np.ndarray | int, sizes: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Jaccard, containment of the smaller set, and whether the containment counts."""
        inter = np.asarray(inter, dtype=np.float64)
        jaccard = inter / np.maximum(size + sizes - inter, 1)  # an empty union: 0 / 1
        contained = inter / np.maximum(np.minimum(size, sizes), 1)
        counts = (contained >= self.containment) & (inter >= self.min_shared)
        return jaccard, contained, counts

    def __call__(
        self, inter: np.ndarray, size: np.ndarray | int, sizes: np.ndarray | int
    ) -> np.ndarray:
        jaccard, contained, counts = self.parts(inter, size, sizes)
        return np.where(counts, np.maximum(jaccard, contained), jaccard)

    def pair(
        self, inter: np.ndarray, size: np.ndarray | int, sizes: np.ndarray | int
    ) -> np.ndarray:
        """Similarity, Jaccard and the number of shared shingles, stacked (3 rows)."""
        jaccard, contained, counts = self.parts(inter, size, sizes)
        out = np.empty((3, *np.broadcast_shapes(np.shape(inter), np.shape(sizes))))
        out[0] = np.where(counts, np.maximum(jaccard, contained), jaccard)
        out[1] = jaccard
        out[2] = inter
        return out


class _Space:
    """One way of comparing letters: shingle sets, their MinHashes and the score that links
    two letters (`score.threshold`).

    Word sets hold dense ids (`vocabulary` of them), so exact intersections are a lookup in a
    reusable mask; character sets (a _CharSets, filled on demand) hold sorted hashes,
    intersected by binary search.
    """

    def __init__(
        self,
        score: _Score,
        settings: LetterSettings,
        sets: list[np.ndarray] | _CharSets,
        vocabulary: int | None = None,
        passages: _Passages | None = None,
    ):
        self.score = score
        self.threshold = score.threshold
        self._settings = settings
        self._sets = sets
        self._mask = np.zeros(vocabulary, dtype=bool) if vocabulary is not None else None
        self.kind = "characters" if isinstance(sets, _CharSets) else "words"
        self.minhashes: dict[int, LeanMinHash] = {}
        self.passages = passages

    def set_of(self, i: int) -> np.ndarray:
        return self._sets[i]

    def prepare(self, rows: Iterable[int]) -> None:
        """Compute the sets of these letters in one pass (character sets are made on demand)."""
        if isinstance(self._sets, _CharSets):
            self._sets.prepare(rows)

    def minhash(self, i: int) -> LeanMinHash:
        if i not in self.minhashes:
            self.add_minhashes([i])
        return self.minhashes[i]

    def add_minhashes(self, rows: Sequence[int]) -> None:
        """MinHashes in bulk (datasketch reuses one permutation state for all)."""
        rows = [i for i in rows if i not in self.minhashes]
        self.prepare(rows)
        values = (_as_32_bit(self.set_of(i)).tolist() for i in rows)
        generated = MinHash.generator(
            values, num_perm=self._settings.num_perm, seed=self._settings.seed, hashfunc=_identity
        )
        for i, minhash in zip(rows, generated, strict=True):
            self.minhashes[i] = LeanMinHash(minhash)

    def compare(self, x: int, others: Sequence[int]) -> np.ndarray:
        """Exact similarity (row 0, see _Score), Jaccard (row 1) and shared shingles (row 2)
        of letter x with each of `others`: the similarity links letters, the Jaccard says how
        new a member is."""
        if not len(others):
            return np.empty((3, 0))
        own = self.set_of(x)
        arrays = [self.set_of(o) for o in others]
        if self._mask is None:
            inter, lengths = _intersect_sorted(own, arrays)
            return self.score.pair(inter, own.size, lengths)
        self._mask[own] = True
        try:
            inter, lengths = _hit_counts(arrays, lambda flat: self._mask[flat])
        finally:
            self._mask[own] = False
        return self.score.pair(inter, own.size, lengths)


class _Passages:
    """The long passages two letters share in the same order, for pairs the sets alone cannot
    settle: a form both families signed under long paragraphs of their own shares a few
    hundred words with every copy yet is a small part of each letter. Unrelated letters share
    a few stock sentences at most, in no common order."""

    def __init__(self, sequences: list[np.ndarray], settings: LetterSettings):
        self._sequences = sequences
        self._settings = settings

    def shared_words(self, a: int, b: int) -> int:
        """Words of `a` in runs of at least `passage_min_words` that `b` has in the same order."""
        return _ordered_shared_words(
            self._sequences[a], self._sequences[b], self._settings.passage_min_words
        )

    def promote(self, x: int, candidates: list[int], scores: np.ndarray, threshold: float) -> None:
        """Raise to `threshold` the similarity of pairs that share enough words in long runs
        (only pairs with many shared shingles that do not link otherwise are aligned)."""
        settings = self._settings
        if not candidates:
            return
        unsettled = (scores[0] < threshold) & (scores[2] >= settings.passage_min_shared)
        for position in np.flatnonzero(unsettled):
            if self.shared_words(x, candidates[position]) >= settings.passage_link_words:
                scores[0, position] = threshold


def _ordered_shared_words(a: np.ndarray, b: np.ndarray, min_words: int) -> int:
    """Words in the runs of at least `min_words` words that two letters share, keeping only
    runs that appear in the same order in both (a and b: their word 3-grams in order).

    Runs are diagonals of matching 3-grams; the heaviest chain of runs increasing in both
    letters is found by dynamic programming over the runs (a few dozen at most)."""
    grams = max(min_words - 2, 1)
    if a.size < grams or b.size < grams:
        return 0
    order = np.argsort(b, kind="stable")
    ranked = b[order]
    place = np.minimum(np.searchsorted(ranked, a), b.size - 1)
    hit = ranked[place] == a
    at = np.where(hit, order[place], -2)
    follows = np.zeros(a.size, dtype=bool)
    follows[1:] = hit[1:] & hit[:-1] & (at[1:] == at[:-1] + 1)
    opens = hit & ~follows
    starts = np.flatnonzero(opens)
    lengths = np.bincount((np.cumsum(opens) - 1)[hit], minlength=starts.size)
    long_runs = lengths >= grams
    i0, j0, size = starts[long_runs], at[starts[long_runs]], lengths[long_runs]
    best = np.zeros(i0.size)
    for k in range(i0.size):
        before = (i0[:k] + size[:k] <= i0[k]) & (j0[:k] + size[:k] <= j0[k])
        best[k] = size[k] + 2 + (best[:k][before].max() if before.any() else 0)
    return int(best.max()) if best.size else 0


def _as_32_bit(values: np.ndarray) -> np.ndarray:
    """MinHash values must fit 32 bits: dense ids do, 64-bit hashes give their top half."""
    return values >> np.uint64(32) if values.dtype == np.uint64 else values


def _identity(value: int) -> int:
    return value


def _hit_counts(
    arrays: list[np.ndarray], hits: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """How many elements of each array `hits` marks, and each array's size."""
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.empty(0, np.int64)
    if flat.size == 0:
        return np.zeros(len(arrays), np.int64), lengths
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    inter = np.add.reduceat(hits(flat).astype(np.int64), np.minimum(starts, flat.size - 1))
    return np.where(lengths > 0, inter, 0), lengths


def _intersect_sorted(own: np.ndarray, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """|own & a| and |a| for each array, by binary search in the sorted set `own`."""
    if own.size == 0:
        return np.zeros(len(arrays), np.int64), np.array([a.size for a in arrays], np.int64)
    return _hit_counts(
        arrays, lambda flat: own[np.minimum(np.searchsorted(own, flat), own.size - 1)] == flat
    )


def _jaccard_against(own: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """Exact Jaccard of one sorted set with each of several."""
    inter, lengths = _intersect_sorted(own, arrays)
    union = own.size + lengths - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _new_lsh(settings: LetterSettings) -> MinHashLSH:
    return MinHashLSH(num_perm=settings.num_perm, params=(settings.lsh_bands, settings.lsh_rows))


# --------------------------------------------------------------------------- clustering


class _Groups:
    """Union-find over letters, with a few representatives per group (the only members a
    letter from another school is compared with: bounded work, and no chaining through a
    stray member)."""

    def __init__(self, n: int):
        self.parent = list(range(n))
        self.reps: dict[int, list[int]] = {}
        self.size: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def start(self, x: int) -> None:
        self.reps[x] = [x]
        self.size[x] = 1

    def attach(self, x: int, root: int) -> None:
        self.parent[x] = root
        self.size[root] += 1

    def forget(self, x: int) -> None:
        """Undo `start` for a letter that stayed alone, so it can be streamed again."""
        del self.reps[x], self.size[x]

    def union(self, a: int, b: int, max_reps: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size.pop(b)
        self.reps[a] = (self.reps[a] + self.reps.pop(b))[:max_reps]
        return a


Earlier = Callable[[int], tuple[list[int], np.ndarray]]  # letters, rows of _Space.compare


def _stream(
    order: Iterable[int],
    space: _Space,
    lsh: MinHashLSH,
    groups: _Groups,
    earlier: Earlier,
    settings: LetterSettings,
) -> None:
    """Add letters one at a time: compare with the same school's earlier letters and, through
    LSH, with other groups' representatives; join the best group above the threshold."""
    for x in order:
        near, near_scores = earlier(x)
        known = set(near)
        anchors = [a for a in lsh.query(space.minhash(x)) if a not in known]
        candidates = [*near, *anchors]
        across = space.compare(x, anchors)
        if space.passages is not None:
            # Words: containment and passages count only within a school (schools' forms
            # share boilerplate); across schools, Jaccard alone links, as it always did.
            across[0] = across[1]
        scores = np.concatenate([near_scores, across], axis=1)
        if space.passages is not None:
            space.passages.promote(x, near, scores[:, : len(near)], space.threshold)
        linked, closest = _linked_groups(candidates, scores, space.threshold, groups)
        if not linked:
            groups.start(x)
            lsh.insert(x, space.minhash(x))
            continue
        best = max(linked, key=lambda root: (linked[root], -root))
        groups.attach(x, best)
        if closest[best] < settings.rep_novelty and len(groups.reps[best]) < settings.max_reps:
            groups.reps[best].append(x)
            lsh.insert(x, space.minhash(x))
        for other in sorted(linked):
            if groups.find(other) != groups.find(x) and groups.size[groups.find(other)] == 1:
                # A letter that stayed alone joins x's group, as it would have had it come
                # after x: a form under a long paragraph that no earlier copy contained enough
                # of is contained by a later, shorter copy (cohesion is for two groups).
                groups.union(groups.find(x), other, settings.max_reps)
            else:
                _merge_if_cohesive(groups.find(x), other, space, groups, settings)


def _linked_groups(
    candidates: list[int], scores: np.ndarray, threshold: float, groups: _Groups
) -> tuple[dict[int, float], dict[int, float]]:
    """Group root -> best exact similarity of the letter to one of the candidate letters, and
    root -> its highest Jaccard with one of them (low: a new kind of member)."""
    linked: dict[int, float] = {}
    closest: dict[int, float] = {}
    for position in np.flatnonzero(scores[0] >= threshold):
        root = groups.find(candidates[position])
        linked[root] = max(linked.get(root, 0.0), float(scores[0, position]))
        closest[root] = max(closest.get(root, 0.0), float(scores[1, position]))
    return linked, closest


class _SchoolPairs:
    """Exact similarity of every pair of letters within each school (one sparse product per
    school), looked up as letters stream in."""

    def __init__(self, order: list[int], school_of: list[str], space: _Space, limit: int):
        self.limit = limit
        self.rows: dict[str, list[int]] = {}
        for x in order:
            self.rows.setdefault(school_of[x], []).append(x)
        self.place = {
            x: (school, p) for school, rows in self.rows.items() for p, x in enumerate(rows)
        }
        self.space = space
        self.matrix = {
            school: _pairwise_scores([space.set_of(x) for x in rows], space.score)
            for school, rows in self.rows.items()
            if 1 < len(rows) <= limit
        }

    def __call__(self, x: int) -> tuple[list[int], np.ndarray]:
        school, p = self.place[x]
        near = self.rows[school][max(0, p - self.limit) : p]
        if school in self.matrix:
            return near, self.matrix[school][:, p, :p]
        return near, self.space.compare(x, near)  # a huge "school": its latest letters


def _pairwise_scores(sets: list[np.ndarray], score: _Score) -> np.ndarray:
    """Exact similarity and Jaccard matrices (stacked) of a few hundred shingle sets via a
    sparse product."""
    lengths = np.array([s.size for s in sets])
    _, columns = np.unique(np.concatenate(sets), return_inverse=True)
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    shape = (len(sets), int(columns.max(initial=0)) + 1)
    matrix = sparse.csr_matrix((np.ones(columns.size, dtype=np.int32), columns, indptr), shape)
    inter = (matrix @ matrix.T).toarray()
    return score.pair(inter, lengths[:, None], lengths[None, :]).astype(np.float32)


def _merge_if_cohesive(
    a: int, b: int, space: _Space, groups: _Groups, settings: LetterSettings
) -> None:
    """Merge two groups a letter links only if their representatives are similar on average
    (Jaccard): a public template and a school's own letter stay apart even if one letter mixes
    both, and two schools' forms that share boilerplate stay two forms."""
    a, b = groups.find(a), groups.find(b)
    if a == b:
        return
    mean = np.mean([space.compare(r, groups.reps[b])[1].mean() for r in groups.reps[a]])
    if mean >= settings.merge_threshold:
        groups.union(a, b, settings.max_reps)


def _run_together(texts: pl.Series) -> np.ndarray:
    """Letters whose text layer lost its spaces: most letters sit in 'words' of 20+ characters
    (English words that long are rare)."""
    text = pl.col("text").fill_null("")
    in_long = text.str.extract_all(r"\S{20,}").list.eval(pl.element().str.count_matches(r"\p{L}"))
    shares = pl.DataFrame({"text": texts}).select(
        long=in_long.list.sum().fill_null(0), letters=text.str.count_matches(r"\p{L}")
    )
    return (shares["long"] > 0.3 * shares["letters"]).to_numpy()


def _cluster(
    prepared: pl.DataFrame,
    word: _Space,
    char: _Space,
    run_together: np.ndarray,
    garbled: np.ndarray,
    usable: np.ndarray,
    settings: LetterSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """Group root of every usable letter (-1 for letters left out), and which letters were
    placed by the character view.

    Letters are added in the order they were received, compared by words. Then garbled
    letters the words left alone (a scan whose OCR misread its words) and those whose words
    ran together are streamed again by characters, against all their school's letters and
    the representatives of the groups that have formed. Typed letters are compared by words
    only: their words are reliable, and characters would link letters that share half a
    template.
    """
    n = prepared.height
    groups = _Groups(n)
    school_of = prepared.get_column("urn").fill_null("").to_list()
    order = prepared.with_row_index("i").sort("received_date", "letter_id", nulls_last=True)
    ordered = order.get_column("i").to_list()
    words_first = [i for i in ordered if usable[i] and not run_together[i]]
    word.add_minhashes(words_first)
    school_pairs = _SchoolPairs(words_first, school_of, word, settings.exact_school_max)
    _stream(words_first, word, _new_lsh(settings), groups, school_pairs, settings)
    alone = {i for i in words_first if garbled[i] and groups.size.get(i) == 1}
    second = [i for i in ordered if usable[i] and (run_together[i] or i in alone)]
    if second:
        for x in alone:
            groups.forget(x)
        schools = {school_of[x] for x in second}
        seen: dict[str, list[int]] = {}
        for i in words_first:
            if i not in alone and school_of[i] in schools:
                seen.setdefault(school_of[i], []).append(i)
        char.prepare([i for rows in seen.values() for i in rows[-settings.exact_school_max :]])

        def earlier(x: int) -> tuple[list[int], np.ndarray]:
            rows = seen.setdefault(school_of[x], [])
            near = rows[-settings.exact_school_max :]
            rows.append(x)
            return near, char.compare(x, near)

        reps = [rep for root, kept in groups.reps.items() for rep in kept]
        char.add_minhashes([*reps, *second])
        char_lsh = _new_lsh(settings)
        for rep in reps:
            char_lsh.insert(rep, char.minhash(rep))
        _stream(second, char, char_lsh, groups, earlier, settings)
    roots = np.array([groups.find(i) if usable[i] else -1 for i in range(n)], dtype=np.int64)
    by_char = np.zeros(n, dtype=bool)
    by_char[second] = True
    return roots, by_char


# --------------------------------------------------------------------------- verdicts

OPTIONAL_INPUT = {
    "pupil_id": pl.String,
    "family_id": pl.String,
    "exit_family_id": pl.String,
    "roll_family_id": pl.String,
    "received_date": pl.Date,
    "text": pl.String,
    "warning": pl.String,
    "last_suspension_date": pl.Date,
}


def _prepare(letters: pl.DataFrame) -> pl.DataFrame:
    """The columns the stage uses, with a first family key (from ids alone; see
    offroll_audit.letter_families for the one the verdicts use)."""
    frame = letters
    for name, dtype in OPTIONAL_INPUT.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(name))
    if "metadata" not in frame.columns or not isinstance(frame.schema["metadata"], pl.Struct):
        frame = frame.with_columns(pl.lit(None, _METADATA_DTYPE).alias("metadata"))
    ids = [pl.col(c).cast(pl.String) for c in ("family_id", "exit_family_id", "roll_family_id")]
    family = pl.coalesce(
        pl.lit("family:") + pl.coalesce(*ids),
        pl.lit("pupil:") + pl.col("pupil_id"),
        pl.lit("letter:") + pl.col("letter_id"),
    )
    return frame.sort(pl.col("letter_id").cast(pl.String)).select(  # input order must not matter
        pl.col("letter_id").cast(pl.String),
        pl.col("urn").cast(pl.String),
        family.alias("family"),
        pl.col("pupil_id").cast(pl.String),
        *[c.alias(name) for c, name in zip(ids, ID_SOURCES, strict=True)],
        pl.col("received_date").cast(pl.Date),
        pl.col("last_suspension_date").cast(pl.Date),
        pl.col("text").cast(pl.String),
        pl.col("warning").cast(pl.String),
        *[_metadata_field(frame, name) for name in METADATA_FIELDS],
    )


def _metadata_field(frame: pl.DataFrame, name: str) -> pl.Expr:
    fields = {f.name for f in frame.schema["metadata"].fields}
    if name not in fields:
        return pl.lit(None, pl.String).alias(f"meta_{name}")
    return pl.col("metadata").struct.field(name).cast(pl.String).alias(f"meta_{name}")


def _school_units(schools: pl.DataFrame) -> pl.DataFrame:
    """urn -> unit (the trust if the school has one, else the school) and its name."""
    columns = {"urn": pl.String, "name": pl.String, "trust": pl.String}
    present = [
        pl.col(c).cast(t) if c in schools.columns else pl.lit(None, t).alias(c)
        for c, t in columns.items()
    ]
    return (
        schools.select(present)
        .unique("urn", keep="first")
        .with_columns(trust=pl.col("trust").str.strip_chars().replace("", None))
    )


def _groups_frame(prepared: pl.DataFrame, roots: np.ndarray, units: pl.DataFrame) -> pl.DataFrame:
    """Usable letters with their group root, unit (trust or school) and trust."""
    return (
        prepared.with_row_index("i")
        .with_columns(root=pl.Series(roots))
        .filter(pl.col("root") >= 0)
        .join(units.select("urn", "trust"), on="urn", how="left")
        .with_columns(
            unit=pl.coalesce(pl.lit("trust:") + pl.col("trust"), pl.lit("urn:") + pl.col("urn"))
        )
    )


def _verdicts(members: pl.DataFrame, settings: LetterSettings) -> pl.DataFrame:
    """One row per group of >= min_families families: spread, main school and verdict.

    Each family counts once, at its own main unit (a family writing to two schools is
    still one voice). One unit -> school_template; >= public_min_units units ->
    shared_public_template; two units -> the school's only if the main unit dominates.
    """
    family_unit = (
        members.group_by("root", "family", "unit")
        .agg(pl.len().alias("n"), pl.col("urn").min().alias("urn"))
        .sort("root", "family", "n", "unit", descending=[False, False, True, False])
        .unique(["root", "family"], keep="first", maintain_order=True)
    )
    units = (
        family_unit.group_by("root", "unit")
        .agg(pl.len().alias("unit_families"))
        .sort("root", "unit_families", "unit", descending=[False, True, False])
        .group_by("root", maintain_order=True)
        .agg(pl.len().alias("units"), pl.col("unit_families").first().alias("main_families"))
    )
    main_school = (
        members.group_by("root", "urn")
        .agg(pl.col("family").n_unique().alias("n"))
        .sort("root", "n", "urn", descending=[False, True, False])
        .unique("root", keep="first", maintain_order=True)
        .select("root", main_urn="urn")
    )
    spread = members.group_by("root").agg(
        families=pl.col("family").n_unique(),
        schools=pl.col("urn").n_unique(),
        letters=pl.len(),
        trusts=pl.col("trust").drop_nulls().unique().sort(),
    )
    share = pl.col("main_families") / pl.col("families")
    verdict = (
        pl.when(pl.col("units") == 1)
        .then(pl.lit("school_template"))
        .when(pl.col("units") >= settings.public_min_units)
        .then(pl.lit("shared_public_template"))
        .when(share >= settings.dominant_share)
        .then(pl.lit("school_template"))
        .otherwise(pl.lit("shared_public_template"))
    )
    return (
        spread.filter(pl.col("families") >= max(settings.min_families, 2))
        .join(units, on="root")
        .join(main_school, on="root")
        .with_columns(verdict=verdict)
    )


# --------------------------------------------------------------------------- evidence


def _sample(rows: np.ndarray, size: int) -> np.ndarray:
    """An evenly spread, deterministic sample of a group's rows."""
    if rows.size <= size:
        return rows
    return rows[np.linspace(0, rows.size - 1, size).round().astype(np.int64)]


def _intersections(members: list[np.ndarray], refs: list[np.ndarray]) -> np.ndarray:
    """|member & ref| for every pair, chunked so memory stays bounded."""
    vocabulary = np.unique(np.concatenate(refs))
    presence = np.zeros((vocabulary.size, len(refs)), dtype=np.int32)
    for column, ref in enumerate(refs):
        presence[np.searchsorted(vocabulary, ref), column] = 1
    counts = np.zeros((len(members), len(refs)), dtype=np.int64)
    chunk = 1024
    for start in range(0, len(members), chunk):
        block = members[start : start + chunk]
        lengths = np.fromiter((m.size for m in block), dtype=np.int64, count=len(block))
        flat = np.concatenate(block)
        position = np.minimum(np.searchsorted(vocabulary, flat), vocabulary.size - 1)
        found = vocabulary[position] == flat
        hits = presence[position] * found[:, None]
        sums = np.add.reduceat(hits, np.concatenate(([0], np.cumsum(lengths)[:-1])), axis=0)
        sums[lengths == 0] = 0
        counts[start : start + len(block)] = sums
    return counts


# What linked a member to its group: its words (Jaccard), containment of the shorter letter,
# long passages shared in order (a form under long personal paragraphs), or characters (a scan).
LINK_KINDS = ("words", "containment", "passages", "characters")


def _similarities(spaces: list[_Space], rows: np.ndarray, settings: LetterSettings) -> dict:
    """Exact similarity within a group, the better of the given views for each pair: mean and
    min over a sample's pairs, each member's best match in the sample, what linked it (see
    LINK_KINDS: the first kind of link it has with a sampled member), and the sample's medoid."""
    sample = _sample(rows, settings.evidence_sample)
    itself = rows[:, None] == sample[None, :]
    scores, links = [], []
    for space in spaces:
        space.prepare(rows.tolist())
        refs = [space.set_of(int(r)) for r in sample]
        ref_sizes = np.array([r.size for r in refs])[None, :]
        members = [space.set_of(int(r)) for r in rows]
        sizes = np.array([m.size for m in members])[:, None]
        inter = _intersections(members, refs)
        jaccard, _, _ = space.score.parts(inter, sizes, ref_sizes)
        score = space.score(inter, sizes, ref_sizes)
        scores.append(score)
        by_words = space.kind == "words"
        links.append(("words" if by_words else "characters", jaccard >= space.threshold))
        links.append(("containment" if by_words else "characters", score >= space.threshold))
    similarity = np.stack(scores).max(axis=0)
    similarity[itself] = np.nan
    pairwise = similarity[np.searchsorted(rows, sample)]
    with np.errstate(all="ignore"):
        best = np.nanmax(np.where(np.isnan(similarity), -1.0, similarity), axis=1)
        mean_to_others = np.nanmean(pairwise, axis=1)
    how = np.full(rows.size, "passages")  # aligned passages, or only through other members
    for kind, link in reversed(links):
        how = np.where((link & ~itself).any(axis=1), kind, how)
    return {
        "best": np.where(best < 0, np.nan, best),
        "how": how,
        "mean": float(np.nanmean(pairwise)),
        "min": float(np.nanmin(pairwise)),
        "medoid": int(sample[int(np.nanargmax(mean_to_others))]),
    }


def _tokenised(texts: pl.Series, rows: list[int]) -> tuple[list[pl.DataFrame], list[list[str]]]:
    """The chosen letters' word frames (token, shown, raw) and their token lists."""
    words = _token_frame(texts.gather(rows), shown=True)
    by_row = words.partition_by("idx", as_dict=True, include_key=False)
    empty = pl.DataFrame(schema={"token": pl.String, "shown": pl.String, "raw": pl.String})
    letters = [by_row.get((k,), empty) for k in range(len(rows))]
    return letters, [letter.get_column("token").to_list() for letter in letters]


def _shared_runs(tokens: list[str], other: list[str], min_words: int) -> np.ndarray:
    """Which of `tokens` lie in a run of at least `min_words` words that `other` also has."""
    shared = np.zeros(len(tokens), dtype=bool)
    matcher = difflib.SequenceMatcher(None, tokens, other, autojunk=False)
    for block in matcher.get_matching_blocks():
        if block.size >= min_words:
            shared[block.a : block.a + block.size] = True
    return shared


def _shared_passages(
    medoid: int, others: list[int], texts: pl.Series, settings: LetterSettings
) -> list[str]:
    """Runs of >= passage_min_words words of the medoid that most compared letters also have,
    richest first, in the medoid's own wording. Dates, numbers and names stay masked unless
    the name is in most compared letters too (a school or staff name, never a family's)."""
    if not others:
        return []
    chosen = [medoid, *others]
    letters, tokens = _tokenised(texts, chosen)
    needed = len(others) // 2 + len(others) % 2  # at least half of the compared letters
    coverage = np.zeros(len(tokens[0]), dtype=np.int64)
    for other in tokens[1:]:
        coverage += _shared_runs(tokens[0], other, settings.passage_min_words)
    shown = _reveal_common_names(letters, needed)
    runs = [r for r in _true_runs(coverage >= needed) if r[1] - r[0] >= settings.passage_min_words]
    plain = [sum(not t.startswith("<") for t in tokens[0][a:b]) for a, b in runs]
    ranked = sorted(range(len(runs)), key=lambda k: (-plain[k], runs[k][0]))
    return [_passage(shown[runs[k][0] : runs[k][1]]) for k in ranked[: settings.passages]]


def _excerpts(
    medoid: int,
    others: list[int],
    group: pl.DataFrame,
    texts: pl.Series,
    settings: LetterSettings,
    limit: int = 160,
) -> list[dict]:
    """The opening of the medoid and up to two other families' letters, side by side, as
    segments marked `shared` where a run of words also appears in another of them. Names,
    dates and numbers stay masked unless every other excerpt has the same word."""
    chosen = [medoid, *others]
    letters, tokens = _tokenised(texts, chosen)
    ids = dict(group.select("i", "letter_id").iter_rows())
    excerpts = []
    for k, row in enumerate(chosen):
        order = [k, *[j for j in range(len(chosen)) if j != k]]
        shown = _reveal_common_names([letters[j] for j in order], max(len(chosen) - 1, 1))
        shared = np.zeros(len(tokens[k]), dtype=bool)
        for j in order[1:]:
            shared |= _shared_runs(tokens[k], tokens[j], settings.passage_min_words)
        cut = min(limit, len(shown))
        edges = np.flatnonzero(np.diff(shared[:cut].astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), cut]
        segments = [
            {"text": " ".join(shown[a:b]), "shared": bool(shared[a])}
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        if cut < len(shown):
            segments.append({"text": "...", "shared": False})
        excerpts.append({"letter_id": ids.get(row), "segments": segments})
    return excerpts


def _reveal_common_names(letters: list[pl.DataFrame], needed: int) -> list[str]:
    """The medoid's words as shown, with a masked name written out when at least `needed`
    other letters contain the same word: shared by unrelated families, it is not personal."""
    core = pl.col("raw").str.replace_all(_EDGE_PUNCTUATION, "")
    others = pl.concat(
        [
            letter.select(core.unique()).with_columns(k=pl.lit(k))
            for k, letter in enumerate(letters[1:])
        ]
    )
    common = set(others.group_by("raw").agg(pl.len()).filter(pl.col("len") >= needed)["raw"])
    medoid = letters[0].with_columns(core=core)
    reveal = (pl.col("token") == "<name>") & pl.col("core").is_in(list(common))
    return medoid.select(pl.when(reveal).then("raw").otherwise("shown")).to_series().to_list()


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


def _passage(words: list[str], limit: int = 60) -> str:
    text = " ".join(words)
    return text if len(words) <= limit else " ".join(words[:limit]) + " ..."


def _letter_flags(
    prepared: pl.DataFrame, units: pl.DataFrame, settings: LetterSettings
) -> pl.DataFrame:
    """Per-letter supporting signals, vectorised over all letters."""
    lowered = (
        pl.col("text").fill_null("").str.replace_all(r"[\u2018\u2019]", "'").str.to_lowercase()
    )
    lowered = lowered.str.replace_all(r"\s+", " ")
    name = (
        pl.col("name")
        .fill_null("")
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )
    short = name.str.replace(r"\s+(school|academy|college)$", "")
    trust = pl.col("trust").fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ")
    head = pl.col("text").fill_null("").str.slice(0, LETTERHEAD_CHARS).str.to_lowercase()
    head = head.str.replace_all(r"\s+", " ")
    named_at_top = ((name.str.len_chars() >= 4) & head.str.contains(name, literal=True)) | (
        (trust.str.len_chars() >= 4) & head.str.contains(trust, literal=True)
    )
    company = pl.col("meta_company").fill_null("").str.to_lowercase().str.strip_chars()
    census = spring_census_on_or_after(prepared.get_column("received_date"))
    days_before = (pl.col("census") - pl.col("received_date")).dt.total_days()
    after_suspension = (pl.col("received_date") - pl.col("last_suspension_date")).dt.total_days()
    return (
        prepared.with_row_index("i")
        .join(units.select("urn", "name", "trust"), on="urn", how="left")
        .with_columns(census=census)
        .select(
            "i",
            school_name=(name.str.len_chars() >= 4)
            & (
                lowered.str.contains(name, literal=True)
                | ((short.str.count_matches(" ") >= 1) & lowered.str.contains(short, literal=True))
            ),
            upn=pl.col("text").fill_null("").str.contains(UPN_IN_TEXT),
            tutor_group=pl.col("text").fill_null("").str.contains(TUTOR_GROUP),
            letterhead=named_at_top & head.str.contains(CONTACT_DETAILS),
            company_names_school=(company.str.len_chars() >= 4)
            & ((company == name) | (company == short) | (company == trust)),
            voice=lowered.str.extract_many(list(SCHOOL_VOICE), overlapping=False),
            pre_census=days_before.is_between(1, settings.census_weeks * 7),
            after_suspension=after_suspension.is_between(0, settings.window_days),
            census=pl.col("census"),
        )
        .with_columns(pupil_ref=pl.col("upn") | pl.col("tutor_group"))
    )


def _signals(group: pl.DataFrame, main_urn: str, settings: LetterSettings) -> list[dict[str, str]]:
    """Supporting signals of one group, as codes with a plain-English detail."""
    n = group.height
    signals: list[dict[str, str]] = []

    def add(code: str, detail: str) -> None:
        signals.append({"code": code, "detail": detail})

    named = int(group.get_column("school_name").sum())
    if named:
        add("SCHOOL_NAME", f"The school's own name appears in {named} of {n} letters.")
    refs = int(group.get_column("pupil_ref").sum())
    if refs:
        add(
            "PUPIL_REFERENCE",
            f"A UPN or tutor group appears in {refs} of {n} letters; "
            "parents rarely quote these, schools do.",
        )
    phrases = group.get_column("voice").explode().drop_nulls()
    if phrases.len():
        voiced = int(group.get_column("voice").list.len().gt(0).sum())
        common = phrases.value_counts(sort=True).head(3).get_column("voice").to_list()
        add(
            "SCHOOL_VOICE",
            f"{voiced} of {n} letters use the school's voice, e.g. "
            + ", ".join(f"'{p}'" for p in common)
            + ".",
        )
    for name in SHARED_METADATA_FIELDS:
        shared = _shared_metadata(group, f"meta_{name}")
        if shared:
            value, families = shared
            add(
                "SAME_METADATA",
                f"Document {name.replace('_', ' ')} '{value}' is identical "
                f"in letters from {families} different families.",
            )
    burst = _burst(group, main_urn, settings.window_days)
    if burst >= settings.burst_min_families:
        add(
            "FAMILIES_WITHIN_DAYS",
            f"{burst} families at school {main_urn} wrote within "
            f"{settings.window_days} days of each other.",
        )
    before = group.filter("pre_census")
    if before.height:
        day = before.get_column("census").min()
        add(
            "BEFORE_JANUARY_CENSUS",
            f"{before.height} of {n} letters arrived in the "
            f"{settings.census_weeks} weeks before the January census ({day}).",
        )
    suspended = int(group.get_column("after_suspension").fill_null(False).sum())
    if suspended:
        add(
            "AFTER_SUSPENSION",
            f"{suspended} of {n} letters arrived within "
            f"{settings.window_days} days after the pupil's suspension.",
        )
    return signals


# Details only the school holds: a form that carries them came from the school, so two
# families on it weigh as much as three on a plainer template (see the TEMPLATED_LETTERS rule).
SCHOOL_ONLY = {
    "UPN": "the pupil's UPN",
    "TUTOR_GROUP": "the pupil's tutor group",
    "LETTERHEAD": "the school's letterhead",
    "DOCUMENT_AUTHOR": "the same document author",
    "DOCUMENT_COMPANY": "the school as the document's company",
}


def _school_only(group: pl.DataFrame, settings: LetterSettings) -> tuple[list[dict], np.ndarray]:
    """School-only details the group's form carries (each in the letters of at least
    `school_only_min_families` families), and which members carry one of them."""
    carried = {
        "UPN": group.get_column("upn").fill_null(False),
        "TUTOR_GROUP": group.get_column("tutor_group").fill_null(False),
        "LETTERHEAD": group.get_column("letterhead").fill_null(False),
        "DOCUMENT_AUTHOR": _carries_shared(group, "meta_author"),
        "DOCUMENT_COMPANY": group.get_column("company_names_school").fill_null(False)
        | _carries_shared(group, "meta_company"),
    }
    families = group.get_column("family")
    details, strong = [], np.zeros(group.height, dtype=bool)
    for code, mask in carried.items():
        count = families.filter(mask).n_unique()
        if count >= settings.school_only_min_families:
            strong |= mask.to_numpy()
            details.append(
                {
                    "code": code,
                    "families": count,
                    "detail": f"{_sentence_case(SCHOOL_ONLY[code])} is in the letters of "
                    f"{count} families.",
                }
            )
    return details, strong


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _carries_shared(group: pl.DataFrame, column: str) -> pl.Series:
    """Members whose metadata field holds the value most families share (if >= 2 do)."""
    shared = _shared_metadata(group, column)
    if shared is None:
        return pl.Series([False] * group.height)
    return group.get_column(column).str.strip_chars().eq(shared[0]).fill_null(False)


def _shared_metadata(group: pl.DataFrame, column: str) -> tuple[str, int] | None:
    """The most widely shared non-generic value of a metadata field, if >= 2 families share it."""
    values = (
        group.select("family", value=pl.col(column).str.strip_chars())
        .filter(
            pl.col("value").is_not_null()
            & ~pl.col("value").str.to_lowercase().is_in(GENERIC_METADATA)
        )
        .group_by("value")
        .agg(families=pl.col("family").n_unique())
        .sort("families", "value", descending=[True, False])
    )
    if values.height and values.item(0, "families") >= 2:
        return values.item(0, "value"), int(values.item(0, "families"))
    return None


def _burst(group: pl.DataFrame, urn: str, window_days: int) -> int:
    """Most families at one school whose first letters fall within `window_days`."""
    dates = (
        group.filter((pl.col("urn") == urn) & pl.col("received_date").is_not_null())
        .group_by("family")
        .agg(pl.col("received_date").min())
        .get_column("received_date")
        .sort()
        .to_numpy()
        .astype("datetime64[D]")
        .astype(np.int64)
    )
    if dates.size == 0:
        return 0
    ends = np.searchsorted(dates, dates + window_days, side="right")
    return int((ends - np.arange(dates.size)).max())


# --------------------------------------------------------------------------- the stage


def detect_templates(
    letters: pl.DataFrame,
    schools: pl.DataFrame,
    *,
    settings: LetterSettings = LetterSettings(),
    known_templates: dict[str, str] | None = None,
) -> LetterResult:
    """Group letters by wording and judge each group; see the module docstring for input."""
    prepared = _prepare(letters)
    units = _school_units(schools)
    texts = prepared.get_column("text")
    names = sorted(known_templates or {})
    batch = pl.concat([texts, pl.Series([known_templates[n] for n in names], dtype=pl.String)])
    ordinary = _lower_case_words(batch)
    view = _word_sets(batch, settings.seed, ordinary=ordinary)
    known = [
        (n, view.sets[texts.len() + k])
        for k, n in enumerate(names)
        if view.sets[texts.len() + k].size
    ]
    words = view.counts[: texts.len()]
    run_together = _run_together(texts)
    garbled = (view.unseen[: texts.len()] >= settings.ocr_unseen_share) & settings.ocr_view
    # a letter whose words ran together has few, very long "words": estimate from its length
    words = np.where(
        run_together, np.maximum(words, texts.fill_null("").str.len_chars() // 6), words
    )
    usable = (words >= max(settings.min_words, 3)) & texts.is_not_null().to_numpy()
    word_score = _Score(settings.threshold, settings.containment, settings.containment_min_shared)
    word = _Space(
        word_score, settings, view.sets, view.vocabulary, _Passages(view.sequences, settings)
    )
    char_score = _Score(
        settings.char_threshold, settings.char_containment, settings.char_min_shared
    )
    char = _Space(char_score, settings, _CharSets(texts, settings))
    roots, by_char = _cluster(prepared, word, char, run_together, garbled, usable, settings)
    prepared = prepared.drop("family").hstack(
        recognise_families(prepared, roots, settings.same_sender_days, by_char | garbled)
    )
    members = _groups_frame(prepared, roots, units)
    verdicts = _verdicts(members, settings)
    flags = _letter_flags(prepared, units, settings)
    clusters, per_letter = _evidence(
        members, verdicts, flags, (word, char), by_char, run_together, known, texts, settings
    )
    frame = _letters_frame(prepared, words, usable, per_letter, settings)
    warnings = _warnings(prepared, usable, words, settings)
    families = (
        prepared.with_row_index("i")
        .join(per_letter.select("i", "school_only"), on="i", how="left")
        .select("letter_id", "family", pl.col("school_only").fill_null(False))
    )
    return LetterResult(frame, clusters, warnings, families=families)


def _evidence(
    members: pl.DataFrame,
    verdicts: pl.DataFrame,
    flags: pl.DataFrame,
    spaces: tuple[_Space, _Space],
    by_char: np.ndarray,
    run_together: np.ndarray,
    known: list[tuple[str, np.ndarray]],
    texts: pl.Series,
    settings: LetterSettings,
) -> tuple[list[dict], pl.DataFrame]:
    """Cluster dicts (ordered, with ids) and per-letter (i, cluster_id, verdict, similarity)."""
    flagged = members.filter(pl.col("root").is_in(verdicts["root"].implode())).join(
        flags, on="i", how="left"
    )
    by_root = flagged.partition_by("root", as_dict=True)
    drafts = []
    for row in verdicts.iter_rows(named=True):
        group = by_root[(row["root"],)].sort("i")
        rows = group.get_column("i").to_numpy()
        word, char = spaces
        if run_together[rows].any():
            stats = _similarities([char], rows, settings)
        else:
            stats = _similarities([word, char] if by_char[rows].any() else [word], rows, settings)
        known_name = _matching_known(word, rows, known, settings)
        verdict = "shared_public_template" if known_name else row["verdict"]
        stats["school_only"], stats["strong"] = _school_only(group, settings)
        drafts.append((verdict, row, group, rows, stats, known_name))
    drafts.sort(key=_cluster_order)
    clusters, per_letter = [], []
    for number, (verdict, row, group, rows, stats, known_name) in enumerate(drafts, start=1):
        cluster_id = f"C{number}"
        evidence = (stats, known_name, texts, by_char, run_together, settings)
        clusters.append(_cluster_dict(cluster_id, verdict, row, group, rows, *evidence))
        per_letter.append(
            pl.DataFrame(
                {
                    "i": rows,
                    "cluster_id": cluster_id,
                    "verdict": verdict,
                    "similarity": stats["best"],
                    "school_only": stats["strong"],
                }
            )
        )
    schema = {
        "i": pl.UInt32,
        "cluster_id": pl.String,
        "verdict": pl.String,
        "similarity": pl.Float64,
        "school_only": pl.Boolean,
    }
    frame = (
        pl.concat([p.cast(schema) for p in per_letter])
        if per_letter
        else pl.DataFrame(schema=schema)
    )
    return clusters, frame


def _cluster_order(draft: tuple) -> tuple:
    """School templates first, then bigger clusters, then by school and first letter."""
    verdict, row, group = draft[:3]
    return VERDICTS.index(verdict), -row["families"], row["main_urn"], group["letter_id"].min()


def _matching_known(
    word: _Space, rows: np.ndarray, known: list[tuple[str, np.ndarray]], settings: LetterSettings
) -> str | None:
    """The known public template the group's letters match best, if it reaches the threshold
    for at least half of them (a parent's own paragraphs around it: containment counts)."""
    if not known:
        return None
    sample = [word.set_of(int(r)) for r in _sample(rows, settings.evidence_sample)]
    sizes = np.array([s.size for s in sample])
    scores = []
    for name, template in known:
        inter, _ = _intersect_sorted(template, sample)
        scores.append((float(np.median(word.score(inter, template.size, sizes))), name))
    score, name = max(scores)
    return name if score >= settings.threshold else None


def _cluster_dict(
    cluster_id: str,
    verdict: str,
    row: dict,
    group: pl.DataFrame,
    rows: np.ndarray,
    stats: dict,
    known_name: str | None,
    texts: pl.Series,
    by_char: np.ndarray,
    run_together: np.ndarray,
    settings: LetterSettings,
) -> dict:
    """One entry of results.json `letter_clusters`, with the evidence an auditor reads.

    Passages and excerpts come from letters whose words could be read (not those placed by
    characters: a garbled scan shows little), unless there are no others."""
    medoid = _readable_medoid(stats["medoid"], rows, by_char, run_together)
    medoid_family = group.filter(pl.col("i") == medoid).item(0, "family") if medoid >= 0 else None
    garbled = pl.col("i").is_in(np.flatnonzero(by_char))
    others = (
        group.filter(
            (pl.col("family") != medoid_family) & ~pl.col("i").is_in(np.flatnonzero(run_together))
        )
        # readable letters first, then by id (not input order: the same evidence every run)
        .sort(garbled, "letter_id")
        .unique("family", keep="first", maintain_order=True)
        .filter(~garbled | (pl.int_range(pl.len()) < 1))
        .get_column("i")
        .to_numpy()
    )
    compared = [int(i) for i in _sample(others, settings.passage_compare)]
    dates = group.get_column("received_date").drop_nulls()
    school_families = (
        group.group_by("urn")
        .agg(pl.col("family").n_unique().alias("n"))
        .sort("n", "urn", descending=[True, False])
        .head(10)
    )
    return {
        "cluster_id": cluster_id,
        "urn": row["main_urn"],
        "letters": sorted(group.get_column("letter_id").to_list()),
        "families": int(row["families"]),
        "schools": int(row["schools"]),
        "similarity": round(stats["mean"], 4),
        "verdict": verdict,
        "trusts": row["trusts"],
        "school_families": dict(school_families.iter_rows()),
        "date_from": dates.min().isoformat() if dates.len() else None,
        "date_to": dates.max().isoformat() if dates.len() else None,
        "similarity_min": round(stats["min"], 4),
        "known_template": known_name,
        "links": {kind: int((stats["how"] == kind).sum()) for kind in LINK_KINDS},
        "school_only": stats["school_only"],
        "school_only_families": dict(
            group.filter(pl.Series(stats["strong"]))
            .group_by("urn")
            .agg(pl.col("family").n_unique().alias("n"))
            .sort("n", "urn", descending=[True, False])
            .iter_rows()
        ),
        "families_recognised": _families_recognised(group),
        "family_links": _family_links(group),
        "passages": _shared_passages(medoid, compared, texts, settings) if medoid >= 0 else [],
        "excerpts": _excerpts(medoid, compared[:2], group, texts, settings) if medoid >= 0 else [],
        "signals": _signals(group, row["main_urn"], settings),
    }


def _families_recognised(group: pl.DataFrame) -> dict[str, int]:
    """How many of the group's families were recognised each way (a family counts under the
    strongest way it was)."""
    firsts = group.unique("family").get_column("family_how").list.first()
    return dict(sorted(firsts.value_counts().iter_rows(), key=lambda kv: (-kv[1], kv[0])))


def _family_links(group: pl.DataFrame) -> list[dict]:
    """The families with several letters in the group: their letters and how they were
    recognised as one family (one voice, counted once)."""
    several = (
        group.group_by("family")
        .agg(pl.col("letter_id").sort(), pl.col("family_how").first())
        .filter(pl.col("letter_id").list.len() > 1)
        .sort(pl.col("letter_id").list.first())
    )
    return [
        {"letters": letters, "how": how}
        for letters, how in several.select("letter_id", "family_how").iter_rows()
    ]


def _readable_medoid(
    medoid: int, rows: np.ndarray, by_char: np.ndarray, run_together: np.ndarray
) -> int:
    """The medoid if its words could be read, else the first member whose could (-1: none)."""
    if not by_char[medoid]:
        return medoid
    clean = rows[~by_char[rows]]
    if clean.size:
        return int(clean[0])
    return -1 if run_together[medoid] else medoid


def _letters_frame(
    prepared: pl.DataFrame,
    words: np.ndarray,
    usable: np.ndarray,
    per_letter: pl.DataFrame,
    settings: LetterSettings,
) -> pl.DataFrame:
    too_short = pl.format(
        "too little text to compare ({} words; at least {} needed)",
        pl.col("words"),
        pl.lit(settings.min_words),
    )
    return (
        prepared.with_row_index("i")
        .with_columns(words=pl.Series(words, dtype=pl.Int64), usable=pl.Series(usable))
        .join(per_letter, on="i", how="left")
        .with_columns(
            verdict=pl.col("verdict").fill_null("unique"),
            warning=pl.coalesce(
                "warning", pl.when(~pl.col("usable") & pl.col("text").is_not_null()).then(too_short)
            ),
        )
        .sort("i")
        .select([pl.col(name).cast(dtype) for name, dtype in LETTER_SCHEMA.items()])
    )


def _warnings(
    prepared: pl.DataFrame, usable: np.ndarray, words: np.ndarray, settings: LetterSettings
) -> list[str]:
    """Unreadable files one by one (they name the file); short letters counted."""
    messages = prepared.get_column("warning").drop_nulls().to_list()
    has_text = prepared.get_column("text").is_not_null().to_numpy()
    short = int((has_text & ~usable).sum())
    if short:
        messages.append(
            f"{short} letter(s) had fewer than {settings.min_words} words and were not "
            "compared (see the warning column of letters.csv)"
        )
    return messages


# --------------------------------------------------------------------------- within an audit

PER_SCHOOL_SCHEMA = {
    "urn": pl.String,
    "letters": pl.Int64,
    "clusters": pl.Int64,
    "templated": pl.Int64,
    "template_families": pl.Int64,
    "template_families_school_only": pl.Int64,
}


def read_known_templates(folder: Path | None) -> dict[str, str]:
    """Public sample letters the user supplies (`--known-templates DIR`): name -> text."""
    if folder is None:
        return {}
    templates = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES):
        text = extract_letter(path, folder).text
        if text.strip():
            templates[path.name] = text
    return templates


def run_letters(
    dataset,
    known_templates: Path | None = None,
    settings: LetterSettings = LetterSettings(),
    progress: Progress = SILENT,
) -> LetterResult:
    """The letters stage on a loaded dataset: read files, find templates, count per school.

    The pupil's last suspension (from exits.csv) rides along so that a letter
    written just after one can be shown as a supporting signal, and so do the family ids
    the roll gives the letter's pupils (a letter without its own family_id).
    """
    suspensions = (
        dataset.exits.filter(pl.col("letter_id").is_not_null())
        .group_by("letter_id")
        .agg(pl.col("last_suspension_date").max())
    )
    letters = dataset.letters.join(suspensions, on="letter_id", how="left").join(
        roll_families(dataset.letters, dataset.exits, dataset.pupils), on="letter_id", how="left"
    )
    texts = read_letter_texts(letters, dataset.root / "letters", progress)
    with progress.step("Comparing letters"):
        result = detect_templates(
            texts,
            dataset.schools,
            settings=settings,
            known_templates=read_known_templates(known_templates),
        )
    result.per_school = letters_per_school(result, dataset.letters)
    return result


def roll_families(letters: pl.DataFrame, exits: pl.DataFrame, pupils: pl.DataFrame) -> pl.DataFrame:
    """letter_id -> exit_family_id (exits.csv rows naming the letter) and roll_family_id
    (pupils.csv rows of the letter's pupils, named by letters.csv or by those exits); a
    letter whose pupils have two different ids gets none (it cannot say which)."""
    named = exits.filter(pl.col("letter_id").is_not_null())
    pupils_of = pl.concat(
        [
            letters.select("letter_id", "pupil_id"),
            named.select(pl.col("letter_id").cast(pl.String), pl.col("pupil_id").cast(pl.String)),
        ]
    ).drop_nulls()
    wanted = pupils_of.get_column("pupil_id").unique().implode()
    roll = (
        pupils.lazy()
        .filter(pl.col("pupil_id").is_in(wanted) & pl.col("family_id").is_not_null())
        .select("pupil_id", "family_id")
        .unique()
        .collect()
    )
    on_roll = _single_id(pupils_of.join(roll, on="pupil_id"), "roll_family_id")
    on_exits = _single_id(named.select("letter_id", "family_id"), "exit_family_id")
    return (
        letters.select("letter_id")
        .unique()
        .join(on_exits, on="letter_id", how="left")
        .join(on_roll, on="letter_id", how="left")
    )


def _single_id(pairs: pl.DataFrame, name: str) -> pl.DataFrame:
    """letter_id -> its one family_id (letters with none, or several, are left out)."""
    return (
        pairs.drop_nulls("family_id")
        .group_by("letter_id")
        .agg(pl.col("family_id").unique())
        .filter(pl.col("family_id").list.len() == 1)
        .select(pl.col("letter_id").cast(pl.String), pl.col("family_id").list.first().alias(name))
    )


def letters_per_school(result: LetterResult, manifest: pl.DataFrame) -> pl.DataFrame:
    """Per school: letters received, school-template clusters touching it, its letters in
    them, the most families in one such cluster, and the most families whose letters in one
    such cluster carry school-only details (the TEMPLATED_LETTERS rule reads the last two).
    Families come from `result.families` (detect_templates' keys), else from `manifest`."""
    received = manifest.group_by("urn").agg(pl.len().cast(pl.Int64).alias("letters"))
    templated = result.letters.filter(pl.col("verdict") == "school_template")
    family_of = result.families
    if family_of is None:
        family_of = _prepare(manifest).select("letter_id", "family", school_only=pl.lit(False))
    in_clusters = (
        templated.join(family_of, on="letter_id", how="left")
        .group_by("urn", "cluster_id")
        .agg(
            pl.len().alias("n"),
            pl.col("family").n_unique().alias("families"),
            pl.col("family").filter(pl.col("school_only")).n_unique().alias("strong"),
        )
        .group_by("urn")
        .agg(
            pl.len().cast(pl.Int64).alias("clusters"),
            pl.col("n").sum().cast(pl.Int64).alias("templated"),
            pl.col("families").max().cast(pl.Int64).alias("template_families"),
            pl.col("strong").max().cast(pl.Int64).alias("template_families_school_only"),
        )
    )
    return (
        received.join(in_clusters, on="urn", how="full", coalesce=True)
        .with_columns(pl.exclude("urn").fill_null(0))
        .select([pl.col(name).cast(dtype) for name, dtype in PER_SCHOOL_SCHEMA.items()])
        .sort("urn")
    )
