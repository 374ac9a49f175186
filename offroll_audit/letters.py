"""The letters stage: find deregistration letters written from a school's template.

Parents may copy a public sample letter (innocent); what the Ofsted and OSA
evidence points to is a letter the school wrote and handed to several
unrelated families. This stage groups letters by wording and judges each group
by its spread: one school (or one trust) -> `school_template`; many unrelated
schools, or a known public template -> `shared_public_template`.

Stages, each a small function: extract (offroll_audit.extract) -> normalise
-> shingle -> candidate pairs (all pairs within a school, MinHash LSH across
schools) -> exact verification -> incremental clustering -> verdict ->
evidence. Memory does not grow with the number of similar pairs: a public
template used by 30,000 families would give ~450M pairs, so a letter is only
compared with a few representatives of each existing group (and with its own
school's letters), and no pair list is ever built.

Input of `detect_templates` (the loader's letters frame plus text):
    letter_id (str), urn (str), pupil_id (str, nullable), family_id (str, nullable),
    received_date (Date, nullable), text (str, nullable: null = not read),
    optional metadata (Struct of str fields, any of METADATA_FIELDS; see
    `read_letter_texts`, which builds text/metadata/warning from `path`),
    optional warning (str: why the file could not be read),
    optional last_suspension_date (Date: the pupil's last suspension before exit).
"""

from __future__ import annotations

import difflib
import itertools
import re
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
PARAGRAPH = "\u00b6"  # marks a blank line: the next word starts a sentence
_EDGE_PUNCTUATION = r"^[^\w<>]+|[^\w<>]+$"
_SPLITMIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_GRAM_KEYS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(1))


@dataclass(frozen=True)
class LetterSettings:
    """Tuning of the scan. Defaults were set on the synthetic letters (see tests)."""

    threshold: float = 0.5  # word 3-gram Jaccard that links a letter to a group (see tests)
    char_threshold: float = 0.5  # char 5-gram Jaccard, for letters whose words run together
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
    seed: int = 1


@dataclass
class LetterResult:
    """Per-letter verdicts, per-cluster evidence (results.json `letter_clusters`) and warnings."""

    letters: pl.DataFrame
    clusters: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    per_school: pl.DataFrame | None = None  # filled by run_letters (see letters_per_school)
    families: pl.DataFrame | None = None  # letter_id -> family key, from detect_templates

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


def _squash(text: str) -> str:
    return re.sub(r"[\W\d_]+", "", text.lower())


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


def _word_sets(
    texts: pl.Series, seed: int, chunk: int = 10_000
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Word 3-gram sets (dense ids), word counts and the number of distinct 3-grams of every
    text, tokenised in chunks so the per-word frame never holds the whole batch."""
    ordinary = _lower_case_words(texts)
    idx_parts, hash_parts, counts = [np.empty(0, np.int64)], [np.empty(0, np.uint64)], []
    for start in range(0, texts.len(), chunk):
        part = texts.slice(start, chunk)
        tokens = _token_frame(part, ordinary=ordinary)
        counts.append(np.bincount(tokens.get_column("idx").to_numpy(), minlength=part.len()))
        idx, hashes = _word_gram_hashes(tokens, seed)
        idx_parts.append(idx.astype(np.int64) + start)
        hash_parts.append(hashes)
    sets, vocabulary = _sets_by_row(
        np.concatenate(idx_parts), np.concatenate(hash_parts), texts.len()
    )
    words = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    return sets, words, vocabulary


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
    idx = tokens.get_column("idx").to_numpy()
    word = tokens.get_column("token").hash(seed=seed).to_numpy()
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


def _char_gram_set(text: str, n: int = 5) -> np.ndarray:
    """Hashed character n-grams of the lower-cased letters only, sorted unique, so
    'wordsruntogether' in a PDF's text layer matches 'words run together'."""
    codes = np.frombuffer(_squash(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size < n:
        return np.unique(_mix64(codes[:1] + np.uint64(1)))
    with np.errstate(over="ignore"):
        combined = np.zeros(codes.size - n + 1, dtype=np.uint64)
        for k in range(n):
            combined = combined * _GRAM_KEYS[0] + codes[k : codes.size - n + 1 + k]
    return np.unique(_mix64(combined))


# --------------------------------------------------------------------------- similarity spaces


class _Space:
    """One way of comparing letters: shingle sets, their MinHashes and the linking threshold.

    Word sets hold dense shingle ids (`vocabulary` of them), so exact intersections are a
    lookup in a reusable mask; character sets are hashed and intersected by binary search.
    """

    def __init__(
        self,
        threshold: float,
        settings: LetterSettings,
        make_set: Callable[[int], np.ndarray],
        vocabulary: int | None = None,
    ):
        self.threshold = threshold
        self._settings = settings
        self._make_set = make_set
        self._mask = np.zeros(vocabulary, dtype=bool) if vocabulary is not None else None
        self.sets: dict[int, np.ndarray] = {}
        self.minhashes: dict[int, LeanMinHash] = {}

    def set_of(self, i: int) -> np.ndarray:
        if i not in self.sets:
            self.sets[i] = self._make_set(i)
        return self.sets[i]

    def minhash(self, i: int) -> LeanMinHash:
        if i not in self.minhashes:
            self.add_minhashes([i])
        return self.minhashes[i]

    def add_minhashes(self, rows: Sequence[int]) -> None:
        """MinHashes in bulk (datasketch reuses one permutation state for all); values must
        fit 32 bits: ids do, 64-bit hashes give their top half."""
        values = (_as_32_bit(self.set_of(i)).tolist() for i in rows)
        generated = MinHash.generator(
            values, num_perm=self._settings.num_perm, seed=self._settings.seed, hashfunc=_identity
        )
        for i, minhash in zip(rows, generated, strict=True):
            self.minhashes[i] = LeanMinHash(minhash)

    def jaccard_many(self, x: int, others: Sequence[int]) -> np.ndarray:
        """Exact Jaccard of letter x with each of `others`."""
        if not others:
            return np.empty(0)
        own = self.set_of(x)
        arrays = [self.set_of(o) for o in others]
        if self._mask is None:
            return _jaccard_against(own, arrays)
        self._mask[own] = True
        try:
            return _jaccard_from_hits(own.size, arrays, lambda flat: self._mask[flat])
        finally:
            self._mask[own] = False


def _as_32_bit(values: np.ndarray) -> np.ndarray:
    return values >> np.uint64(32) if values.dtype == np.uint64 else values


def _identity(value: int) -> int:
    return value


def _jaccard_against(own: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """Exact Jaccard of one sorted set with each of several, by binary search."""
    if own.size == 0:
        return np.zeros(len(arrays))

    def hits(flat: np.ndarray) -> np.ndarray:
        return own[np.minimum(np.searchsorted(own, flat), own.size - 1)] == flat

    return _jaccard_from_hits(own.size, arrays, hits)


def _jaccard_from_hits(
    size: int, arrays: list[np.ndarray], hits: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays)
    if flat.size == 0:
        return np.zeros(len(arrays))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    inter = np.add.reduceat(hits(flat).astype(np.int64), np.minimum(starts, flat.size - 1))
    inter = np.where(lengths > 0, inter, 0)
    union = size + lengths - inter
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


Earlier = Callable[[int], tuple[list[int], np.ndarray]]


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
        near, near_similarity = earlier(x)
        known = set(near)
        anchors = [a for a in lsh.query(space.minhash(x)) if a not in known]
        candidates = [*near, *anchors]
        similarity = np.concatenate([near_similarity, space.jaccard_many(x, anchors)])
        linked = _linked_groups(candidates, similarity, space.threshold, groups)
        if not linked:
            groups.start(x)
            lsh.insert(x, space.minhash(x))
            continue
        best = max(linked, key=lambda root: (linked[root], -root))
        groups.attach(x, best)
        if linked[best] < settings.rep_novelty and len(groups.reps[best]) < settings.max_reps:
            groups.reps[best].append(x)
            lsh.insert(x, space.minhash(x))
        for other in sorted(linked):
            _merge_if_cohesive(groups.find(x), other, space, groups, settings)


def _linked_groups(
    candidates: list[int], similarity: np.ndarray, threshold: float, groups: _Groups
) -> dict[int, float]:
    """Group root -> best exact similarity of the letter to one of the candidate letters."""
    linked: dict[int, float] = {}
    for position in np.flatnonzero(similarity >= threshold):
        root = groups.find(candidates[position])
        linked[root] = max(linked.get(root, 0.0), float(similarity[position]))
    return linked


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
            school: _pairwise_jaccard([space.set_of(x) for x in rows])
            for school, rows in self.rows.items()
            if 1 < len(rows) <= limit
        }

    def __call__(self, x: int) -> tuple[list[int], np.ndarray]:
        school, p = self.place[x]
        near = self.rows[school][max(0, p - self.limit) : p]
        if school in self.matrix:
            return near, self.matrix[school][p, :p]
        return near, self.space.jaccard_many(x, near)  # a huge "school": its latest letters


def _pairwise_jaccard(sets: list[np.ndarray]) -> np.ndarray:
    """Exact Jaccard matrix of a few hundred shingle sets via a sparse product."""
    lengths = np.array([s.size for s in sets])
    _, columns = np.unique(np.concatenate(sets), return_inverse=True)
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    matrix = sparse.csr_matrix((np.ones(columns.size, dtype=np.int32), columns, indptr))
    inter = (matrix @ matrix.T).toarray()
    union = lengths[:, None] + lengths[None, :] - inter
    return (inter / np.maximum(union, 1)).astype(np.float32)


def _merge_if_cohesive(
    a: int, b: int, space: _Space, groups: _Groups, settings: LetterSettings
) -> None:
    """Merge two groups a letter links only if their representatives are similar on average:
    a public template and a school's own letter stay apart even if one letter mixes both."""
    a, b = groups.find(a), groups.find(b)
    if a == b:
        return
    mean = np.mean([space.jaccard_many(r, groups.reps[b]).mean() for r in groups.reps[a]])
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
    usable: np.ndarray,
    settings: LetterSettings,
) -> np.ndarray:
    """Group root of every usable letter (-1 for letters left out).

    Letters are added in the order they were received. Letters whose words ran together
    come last and are compared by characters with their school's letters and with the
    representatives of groups that have formed.
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
    spaced_out = [i for i in ordered if usable[i] and run_together[i]]
    if spaced_out:
        seen = {school: list(rows) for school, rows in school_pairs.rows.items()}

        def earlier(x: int) -> tuple[list[int], np.ndarray]:
            rows = seen.setdefault(school_of[x], [])
            near = rows[-settings.exact_school_max :]
            rows.append(x)
            return near, char.jaccard_many(x, near)

        char_lsh = _new_lsh(settings)
        for root, reps in groups.reps.items():
            if groups.size[root] > 1:
                for rep in reps:
                    char_lsh.insert(rep, char.minhash(rep))
        _stream(spaced_out, char, char_lsh, groups, earlier, settings)
    return np.array([groups.find(i) if usable[i] else -1 for i in range(n)], dtype=np.int64)


# --------------------------------------------------------------------------- verdicts

OPTIONAL_INPUT = {
    "pupil_id": pl.String,
    "family_id": pl.String,
    "received_date": pl.Date,
    "text": pl.String,
    "warning": pl.String,
    "last_suspension_date": pl.Date,
}


def _prepare(letters: pl.DataFrame) -> pl.DataFrame:
    """The columns the stage uses, with a family key: a family's letters are one voice."""
    frame = letters
    for name, dtype in OPTIONAL_INPUT.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(name))
    if "metadata" not in frame.columns or not isinstance(frame.schema["metadata"], pl.Struct):
        frame = frame.with_columns(pl.lit(None, _METADATA_DTYPE).alias("metadata"))
    family = pl.coalesce(
        pl.lit("family:") + pl.col("family_id"),
        pl.lit("pupil:") + pl.col("pupil_id"),
        pl.lit("letter:") + pl.col("letter_id"),
    )
    return frame.sort(pl.col("letter_id").cast(pl.String)).select(  # input order must not matter
        pl.col("letter_id").cast(pl.String),
        pl.col("urn").cast(pl.String),
        family.alias("family"),
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


def _similarities(space: _Space, rows: np.ndarray, settings: LetterSettings) -> dict:
    """Exact Jaccard within a group: mean and min over a sample's pairs, each member's best
    match in the sample, and the sample's medoid."""
    sample = _sample(rows, settings.evidence_sample)
    refs = [space.set_of(int(r)) for r in sample]
    ref_sizes = np.array([r.size for r in refs])
    members = [space.set_of(int(r)) for r in rows]
    sizes = np.array([m.size for m in members])
    inter = _intersections(members, refs)
    similarity = inter / np.maximum(sizes[:, None] + ref_sizes[None, :] - inter, 1)
    similarity[rows[:, None] == sample[None, :]] = np.nan
    pairwise = similarity[np.searchsorted(rows, sample)]
    with np.errstate(all="ignore"):
        best = np.nanmax(np.where(np.isnan(similarity), -1.0, similarity), axis=1)
        mean_to_others = np.nanmean(pairwise, axis=1)
    return {
        "best": np.where(best < 0, np.nan, best),
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
    census = spring_census_on_or_after(prepared.get_column("received_date"))
    days_before = (pl.col("census") - pl.col("received_date")).dt.total_days()
    after_suspension = (pl.col("received_date") - pl.col("last_suspension_date")).dt.total_days()
    return (
        prepared.with_row_index("i")
        .join(units.select("urn", "name"), on="urn", how="left")
        .with_columns(census=census)
        .select(
            "i",
            school_name=(name.str.len_chars() >= 4)
            & (
                lowered.str.contains(name, literal=True)
                | ((short.str.count_matches(" ") >= 1) & lowered.str.contains(short, literal=True))
            ),
            pupil_ref=pl.col("text").fill_null("").str.contains(UPN_IN_TEXT)
            | pl.col("text").fill_null("").str.contains(TUTOR_GROUP),
            voice=lowered.str.extract_many(list(SCHOOL_VOICE), overlapping=False),
            pre_census=days_before.is_between(1, settings.census_weeks * 7),
            after_suspension=after_suspension.is_between(0, settings.window_days),
            census=pl.col("census"),
        )
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
    word_sets, words, vocabulary = _word_sets(batch, settings.seed)  # one id space for both
    known = [
        (n, word_sets[texts.len() + k])
        for k, n in enumerate(names)
        if word_sets[texts.len() + k].size
    ]
    words = words[: texts.len()]
    run_together = _run_together(texts)
    # a letter whose words ran together has few, very long "words": estimate from its length
    words = np.where(
        run_together, np.maximum(words, texts.fill_null("").str.len_chars() // 6), words
    )
    usable = (words >= max(settings.min_words, 3)) & texts.is_not_null().to_numpy()
    word = _Space(settings.threshold, settings, lambda i: word_sets[i], vocabulary)
    char = _Space(settings.char_threshold, settings, lambda i: _char_gram_set(texts[i] or ""))
    roots = _cluster(prepared, word, char, run_together, usable, settings)
    members = _groups_frame(prepared, roots, units)
    verdicts = _verdicts(members, settings)
    flags = _letter_flags(prepared, units, settings)
    clusters, per_letter = _evidence(
        members, verdicts, flags, word, char, run_together, known, texts, settings
    )
    frame = _letters_frame(prepared, words, usable, per_letter, settings)
    warnings = _warnings(prepared, usable, words, settings)
    return LetterResult(frame, clusters, warnings, families=prepared.select("letter_id", "family"))


def _evidence(
    members: pl.DataFrame,
    verdicts: pl.DataFrame,
    flags: pl.DataFrame,
    word: _Space,
    char: _Space,
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
        space = char if run_together[rows].any() else word
        stats = _similarities(space, rows, settings)
        known_name = _matching_known(word, rows, known, settings)
        verdict = "shared_public_template" if known_name else row["verdict"]
        drafts.append((verdict, row, group, rows, stats, known_name))
    drafts.sort(key=_cluster_order)
    clusters, per_letter = [], []
    for number, (verdict, row, group, rows, stats, known_name) in enumerate(drafts, start=1):
        cluster_id = f"C{number}"
        evidence = (stats, known_name, texts, run_together, settings)
        clusters.append(_cluster_dict(cluster_id, verdict, row, group, rows, *evidence))
        per_letter.append(
            pl.DataFrame(
                {
                    "i": rows,
                    "cluster_id": cluster_id,
                    "verdict": verdict,
                    "similarity": stats["best"],
                }
            )
        )
    schema = {
        "i": pl.UInt32,
        "cluster_id": pl.String,
        "verdict": pl.String,
        "similarity": pl.Float64,
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
    """The known public template the group's letters match best, if any reaches the threshold."""
    if not known:
        return None
    sample = [word.set_of(int(r)) for r in _sample(rows, settings.evidence_sample)]
    scores = [(float(_jaccard_against(template, sample).max()), name) for name, template in known]
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
    run_together: np.ndarray,
    settings: LetterSettings,
) -> dict:
    """One entry of results.json `letter_clusters`, with the evidence an auditor reads."""
    spaced = rows[~run_together[rows]]
    medoid = (
        stats["medoid"]
        if not run_together[stats["medoid"]]
        else int(spaced[0])
        if spaced.size
        else -1
    )
    medoid_family = group.filter(pl.col("i") == medoid).item(0, "family")
    others = (
        group.filter(
            (pl.col("family") != medoid_family) & ~pl.col("i").is_in(np.flatnonzero(run_together))
        )
        .sort("letter_id")  # by id, not input order: the same letters give the same evidence
        .unique("family", keep="first", maintain_order=True)
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
        "passages": _shared_passages(medoid, compared, texts, settings) if medoid >= 0 else [],
        "excerpts": _excerpts(medoid, compared[:2], group, texts, settings) if medoid >= 0 else [],
        "signals": _signals(group, row["main_urn"], settings),
    }


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
    written just after one can be shown as a supporting signal.
    """
    suspensions = (
        dataset.exits.filter(pl.col("letter_id").is_not_null())
        .group_by("letter_id")
        .agg(pl.col("last_suspension_date").max())
    )
    letters = dataset.letters.join(suspensions, on="letter_id", how="left")
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


def letters_per_school(result: LetterResult, manifest: pl.DataFrame) -> pl.DataFrame:
    """Per school: letters received, school-template clusters touching it, its letters in
    them, and the most families in one such cluster (what the TEMPLATED_LETTERS rule uses).
    Families come from `result.families` (detect_templates' keys), else from `manifest`."""
    received = manifest.group_by("urn").agg(pl.len().cast(pl.Int64).alias("letters"))
    templated = result.letters.filter(pl.col("verdict") == "school_template")
    family_of = result.families
    if family_of is None:
        family_of = _prepare(manifest).select("letter_id", "family")
    in_clusters = (
        templated.join(family_of, on="letter_id", how="left")
        .group_by("urn", "cluster_id")
        .agg(pl.len().alias("n"), pl.col("family").n_unique().alias("families"))
        .group_by("urn")
        .agg(
            pl.len().cast(pl.Int64).alias("clusters"),
            pl.col("n").sum().cast(pl.Int64).alias("templated"),
            pl.col("families").max().cast(pl.Int64).alias("template_families"),
        )
    )
    return (
        received.join(in_clusters, on="urn", how="full", coalesce=True)
        .with_columns(pl.exclude("urn").fill_null(0))
        .select([pl.col(name).cast(dtype) for name, dtype in PER_SCHOOL_SCHEMA.items()])
        .sort("urn")
    )
