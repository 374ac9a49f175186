"""Synthetic deregistration letters: files, manifest, known answers and similarity structure."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import statistics
import zipfile
from pathlib import Path

import docx
import numpy as np
import polars as pl
import pypdf
import pytest

from offroll_audit.synthetic.letters import (
    LETTER_KINDS,
    NO_TEXT_KIND,
    write_letter_file,
    write_letters,
)

TEMPLATE_SCHOOL = "100003"
TRUST_SCHOOLS = ["100001", "100002"]
OTHER_SCHOOLS = ["100004", "100005", "100006"]
SEED = 20240901


def tiny_frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Six schools; single children everywhere, and sibling families leaving together."""
    schools = pl.DataFrame(
        {
            "urn": [*TRUST_SCHOOLS, TEMPLATE_SCHOOL, *OTHER_SCHOOLS],
            "name": [
                "Oakfield Academy",
                "Riverside Academy",
                "Hillcrest School",
                "Meadow Primary",
                "Kingsway High",
                "Brookside College",
            ],
            "trust": ["Northern Star Trust", "Northern Star Trust", None, None, None, None],
            "phase": ["secondary"] * 6,
        }
    )
    rng = np.random.default_rng(7)
    singles = [TEMPLATE_SCHOOL] * 24 + TRUST_SCHOOLS * 8 + OTHER_SCHOOLS * 14
    urns = list(singles)
    families = [f"F{i:03d}" for i in range(len(singles))]
    dates = [
        dt.date(2024, 9, 2) + dt.timedelta(days=int(d)) for d in rng.integers(0, 150, len(singles))
    ]
    for k in range(8):  # siblings leaving the same week, same school (the last family: two schools)
        size = 2 + k % 2
        urn = OTHER_SCHOOLS[k % len(OTHER_SCHOOLS)]
        urns += [urn] * (size - 1) + [OTHER_SCHOOLS[(k + 1) % 3] if k == 7 else urn]
        families += [f"S{k:02d}"] * size
        dates += [dt.date(2024, 10, 7) + dt.timedelta(days=7 * k + j) for j in range(size)]
    n = len(urns)
    exits = pl.DataFrame(
        {
            "pupil_id": [f"P{i:05d}" for i in range(n)],
            "urn": urns,
            "family_id": families,
            "exit_date": dates,
            "year_group": [str(y) for y in rng.integers(7, 12, n)],
        }
    )
    return exits, schools


def generate(out: Path, seed: int = SEED):
    exits, schools = tiny_frames()
    return write_letters(
        out,
        exits,
        schools,
        np.random.default_rng(seed),
        [TEMPLATE_SCHOOL, *TRUST_SCHOOLS],
        TRUST_SCHOOLS,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("letters_run")
    manifest, exit_letters, truth = generate(out)
    texts = {
        row["letter_id"]: letter_text(out / "letters" / row["file"])
        for row in manifest.iter_rows(named=True)
    }
    return out, manifest, exit_letters, truth, texts


# --------------------------------------------------------------------------- helpers


def letter_text(path: Path) -> str:
    """What a reader of the letter sees: txt/md as is, docx header + body, PDF text layer."""
    if path.suffix in (".txt", ".md"):
        return path.read_text(encoding="utf-8")
    if path.suffix == ".docx":
        document = docx.Document(str(path))
        header = [p.text for p in document.sections[0].header.paragraphs]
        return "\n".join(header + [p.text for p in document.paragraphs])
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(path, strict=True).pages)


def trigrams(text: str) -> set[tuple[str, ...]]:
    words = [w for w in re.split(r"[^a-z]+", text.lower()) if w]
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def jaccard(a: str, b: str) -> float:
    x, y = trigrams(a), trigrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def of_kind(truth: dict, kind: str, template_id: str | None = "any") -> list[str]:
    return [
        k
        for k, v in truth.items()
        if v["kind"] == kind and template_id in ("any", v["template_id"])
    ]


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- files and manifest


def test_same_seed_gives_identical_bytes_and_answers(tmp_path, run):
    out, manifest, exit_letters, truth, _ = run
    again = generate(tmp_path / "again")
    assert digest(tmp_path / "again") == digest(out)
    assert again[0].equals(manifest) and again[1].equals(exit_letters) and again[2] == truth
    other = generate(tmp_path / "other", seed=SEED + 1)
    assert digest(tmp_path / "other") != digest(out)
    assert other[2] != truth


def test_manifest_files_exist_inside_letters_and_nothing_else_is_written(run):
    out, manifest, _, _, _ = run
    root = (out / "letters").resolve()
    files = manifest["file"].to_list()
    for file in files:
        assert not Path(file).is_absolute() and ".." not in Path(file).parts
        path = (root / file).resolve()
        assert path.is_relative_to(root) and path.is_file()
    assert sorted(files) == sorted(digest(out / "letters"))
    assert manifest["letter_id"].is_unique().all()
    assert all(re.fullmatch(r"L\d{5}", i) for i in manifest["letter_id"])
    assert any("/" in f for f in files), "some letters are filed in year folders"
    assert manifest.schema["received_date"] == pl.Date
    assert set(manifest.columns) == {
        "letter_id",
        "file",
        "urn",
        "pupil_id",
        "family_id",
        "received_date",
    }


def test_formats_are_mixed_with_txt_the_bulk(run):
    _, manifest, _, _, _ = run
    formats = manifest["file"].str.extract(r"\.(\w+)$").value_counts().to_dict(as_series=False)
    counts = dict(zip(formats["file"], formats["count"], strict=True))
    assert counts["txt"] > counts["docx"] > 0 and counts["pdf"] > 0
    assert counts["txt"] >= manifest.height / 2


def test_exit_letters_link_exits_to_manifest_letters(run):
    _, manifest, exit_letters, _, _ = run
    exits, _ = tiny_frames()
    assert set(exit_letters["letter_id"]) == set(manifest["letter_id"])
    assert exit_letters.join(exits, on=["pupil_id", "urn"], how="anti").height == 0
    assert exit_letters.select("pupil_id", "urn").is_unique().all()
    rows = exit_letters.group_by("letter_id").agg(
        pl.len().alias("n"), pl.col("pupil_id").first().alias("first")
    )
    joined = manifest.join(rows, on="letter_id")
    single = joined.filter(pl.col("pupil_id").is_not_null())
    assert (single["n"] == 1).all() and (single["pupil_id"] == single["first"]).all()
    joint = joined.filter(pl.col("pupil_id").is_null())
    assert joint.height > 0 and (joint["n"] >= 2).all()
    assert 0.7 <= exit_letters.height / exits.height <= 0.97


def test_received_dates_are_near_the_exit(run):
    _, manifest, exit_letters, _, _ = run
    exits, _ = tiny_frames()
    linked = exit_letters.join(exits, on=["pupil_id", "urn"]).join(
        manifest.select("letter_id", "received_date"), on="letter_id"
    )
    gap = (linked["received_date"] - linked["exit_date"]).dt.total_days()
    assert gap.min() >= -6 and gap.max() <= 14


def test_truth_kinds_follow_the_plan(run):
    _, manifest, exit_letters, truth, _ = run
    assert set(truth) == set(manifest["letter_id"])
    kinds = [v["kind"] for v in truth.values()]
    assert set(kinds) <= {*LETTER_KINDS, NO_TEXT_KIND} and set(LETTER_KINDS) <= set(kinds)
    assert kinds.count(NO_TEXT_KIND) == 1
    school = [v for v in truth.values() if v["kind"] == "school_template"]
    assert {v["urn"] for v in school} == {TEMPLATE_SCHOOL, *TRUST_SCHOOLS}
    trust_ids = {v["template_id"] for v in school if v["urn"] in TRUST_SCHOOLS}
    assert len(trust_ids) == 1, "the trust's two schools share one template"
    assert {v["template_id"] for v in school if v["urn"] == TEMPLATE_SCHOOL} == {
        f"school-{TEMPLATE_SCHOOL}"
    }
    at_template = [v["kind"] for v in truth.values() if v["urn"] == TEMPLATE_SCHOOL]
    assert at_template.count("school_template") >= 0.65 * len(at_template)
    assert {v["template_id"] for v in truth.values() if v["kind"] == "public_template"} <= {
        f"public-{i}" for i in range(1, 5)
    }
    assert all(v["template_id"] is None for v in truth.values() if v["kind"] == "free_form")
    family_sizes = tiny_frames()[0].group_by("family_id").len()
    sibling_families = {v["family_id"] for v in truth.values() if v["kind"] == "sibling"}
    assert family_sizes.filter(pl.col("family_id").is_in(list(sibling_families)))["len"].min() >= 2
    assert exit_letters.join(manifest, on="letter_id").height == exit_letters.height


# --------------------------------------------------------------------------- readable files


def test_pdf_letters_have_a_real_text_layer(run):
    _, manifest, _, truth, texts = run
    pdfs = [
        r
        for r in manifest.iter_rows(named=True)
        if r["file"].endswith(".pdf") and truth[r["letter_id"]]["kind"] != NO_TEXT_KIND
    ]
    assert pdfs
    for row in pdfs:
        assert len(texts[row["letter_id"]].split()) >= 60
        assert re.search(
            r"Dear|NOTICE|To:|FAO|Hello|Good morning|Headteacher", texts[row["letter_id"]]
        )


def test_pdf_writer_round_trips_text_escapes_and_pages(tmp_path):
    long_paragraph = " ".join(f"word{i}" for i in range(300))
    lines = [f"Line {i} (with parentheses) and a back\\slash" for i in range(70)]
    text = "Dear Mrs O'Neill,\n\n" + long_paragraph + "\n\n" + "\n".join(lines) + "\n\nFees: £10"
    write_letter_file(
        tmp_path / "a.pdf", text, "pdf", header="Oak School", metadata={"author": "J. Hollis"}
    )
    reader = pypdf.PdfReader(tmp_path / "a.pdf", strict=True)
    assert len(reader.pages) == 2
    assert reader.metadata.author == "J. Hollis"
    extracted = "\n".join(page.extract_text() for page in reader.pages)
    assert extracted.split() == ("Oak School\n" + text).split()


def test_no_text_pdf_extracts_nothing(run, tmp_path):
    out, manifest, _, truth, _ = run
    scanned = [
        r["file"]
        for r in manifest.iter_rows(named=True)
        if truth[r["letter_id"]]["kind"] == NO_TEXT_KIND
    ]
    assert len(scanned) == 1 and scanned[0].endswith(".pdf")
    reader = pypdf.PdfReader(out / "letters" / scanned[0], strict=True)
    assert len(reader.pages) == 1 and reader.pages[0].extract_text().strip() == ""
    write_letter_file(tmp_path / "scan.pdf", "Dear Sir, some words", "pdf", text_layer=False)
    assert pypdf.PdfReader(tmp_path / "scan.pdf").pages[0].extract_text().strip() == ""


def test_school_template_docx_carries_the_schools_header_and_metadata(run):
    out, manifest, _, truth, _ = run
    rows = [
        r
        for r in manifest.iter_rows(named=True)
        if r["file"].endswith(".docx") and truth[r["letter_id"]]["kind"] == "school_template"
    ]
    assert rows
    by_template: dict[str, set] = {}
    for row in rows:
        path = out / "letters" / row["file"]
        document = docx.Document(str(path))
        header = "\n".join(p.text for p in document.sections[0].header.paragraphs)
        body = "\n".join(p.text for p in document.paragraphs)
        assert header.split("\n")[0] in ("Hillcrest School", "Northern Star Trust")
        assert len(body.split()) > 80
        with zipfile.ZipFile(path) as package:
            app = package.read("docProps/app.xml").decode()
            settings = package.read("word/settings.xml").decode()
        company = re.search(r"<Company>([^<]*)</Company>", app).group(1)
        assert company == header.split("\n")[0]
        template = re.search(r"<Template>([^<]*)</Template>", app).group(1)
        rsid_root = re.search(r'rsidRoot w:val="(\w+)"', settings).group(1)
        signature = (document.core_properties.author, company, template, rsid_root)
        by_template.setdefault(truth[row["letter_id"]]["template_id"], set()).add(signature)
    assert all(len(s) == 1 for s in by_template.values()), (
        "every copy of a template shares its metadata"
    )


def test_docx_writer_round_trips_header_body_and_core_properties(tmp_path):
    created = dt.datetime(2024, 11, 5, 9, 30)
    metadata = {
        "author": "Mr Hollis",
        "company": "Oak Trust",
        "template": "EHE.dotx",
        "rsid_root": "00ABC123",
        "created": created,
        "comments": "draft",
    }
    write_letter_file(
        tmp_path / "a.docx",
        "Dear Sir,\n\nFirst & second <para>.\nNext line",
        "docx",
        header="Oak School\nHigh Street",
        metadata=metadata,
    )
    document = docx.Document(str(tmp_path / "a.docx"))
    assert [p.text for p in document.paragraphs] == [
        "Dear Sir,",
        "First & second <para>.\nNext line",
    ]
    assert document.sections[0].header.paragraphs[0].text == "Oak School\nHigh Street"
    assert (
        document.core_properties.author == "Mr Hollis"
        and document.core_properties.comments == "draft"
    )
    assert document.core_properties.created.replace(tzinfo=None) == created
    with zipfile.ZipFile(tmp_path / "a.docx") as package:
        assert "<Company>Oak Trust</Company>" in package.read("docProps/app.xml").decode()
        assert {i.date_time for i in package.infolist()} == {(2024, 11, 5, 9, 30, 0)}
    write_letter_file(
        tmp_path / "b.docx",
        "Dear Sir,\n\nFirst & second <para>.\nNext line",
        "docx",
        header="Oak School\nHigh Street",
        metadata=metadata,
    )
    assert (tmp_path / "a.docx").read_bytes() == (tmp_path / "b.docx").read_bytes()


def test_writer_refuses_unknown_format_and_metadata(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_letter_file(tmp_path / "a.rtf", "x", "rtf")
    with pytest.raises(ValueError, match="metadata"):
        write_letter_file(tmp_path / "a.docx", "x", "docx", metadata={"autor": "typo"})


# --------------------------------------------------------------------------- similarity structure


def pairwise(texts: dict, a: list[str], b: list[str], truth: dict) -> list[float]:
    pairs = itertools.combinations(a, 2) if a is b else itertools.product(a, b)
    return [
        jaccard(texts[x], texts[y])
        for x, y in pairs
        if truth[x]["family_id"] != truth[y]["family_id"]
    ]


def test_copies_of_one_school_template_are_similar(run):
    _, _, _, truth, texts = run
    for template_id in {v["template_id"] for v in truth.values() if v["kind"] == "school_template"}:
        copies = of_kind(truth, "school_template", template_id)
        scores = pairwise(texts, copies, copies, truth)
        assert len(scores) >= 10
        assert statistics.median(scores) > 0.5
        assert sum(s > 0.4 for s in scores) >= 0.9 * len(scores)


def test_free_form_letters_of_different_families_are_dissimilar(run):
    _, _, _, truth, texts = run
    letters = of_kind(truth, "free_form")
    scores = sorted(pairwise(texts, letters, letters, truth))
    assert len(scores) >= 100
    assert statistics.median(scores) < 0.05
    assert scores[int(0.95 * len(scores))] < 0.1
    assert scores[-1] < 0.25


def test_school_templates_do_not_resemble_public_templates_or_free_form_siblings(run):
    _, _, _, truth, texts = run
    school = of_kind(truth, "school_template")
    public = of_kind(truth, "public_template")
    free_siblings = of_kind(truth, "sibling", None)
    assert public and free_siblings
    assert max(pairwise(texts, school, public, truth)) < 0.1
    assert max(pairwise(texts, school, free_siblings, truth)) < 0.1


def test_copies_of_one_public_template_are_similar(run):
    _, _, _, truth, texts = run
    for template_id in {v["template_id"] for v in truth.values() if v["kind"] == "public_template"}:
        copies = of_kind(truth, "public_template", template_id)
        if len(copies) >= 2:
            assert statistics.median(pairwise(texts, copies, copies, truth)) > 0.4


def test_one_familys_letters_for_several_children_share_one_voice(run):
    _, manifest, _, truth, texts = run
    per_child = manifest.filter(pl.col("pupil_id").is_not_null()).join(
        pl.DataFrame({"letter_id": list(truth), "kind": [v["kind"] for v in truth.values()]}),
        on="letter_id",
    )
    groups = per_child.filter(pl.col("kind") == "sibling").group_by("family_id").agg("letter_id")
    pairs = [(a, b) for ids in groups["letter_id"] for a, b in itertools.combinations(ids, 2)]
    assert pairs
    assert all(jaccard(texts[a], texts[b]) > 0.5 for a, b in pairs)


# --------------------------------------------------------------------------- hard letters (opt-in)


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_without_the_hard_flag_the_letters_are_unchanged(tmp_path, run):
    out, *_ = run
    exits, schools = tiny_frames()
    write_letters(
        tmp_path,
        exits,
        schools,
        np.random.default_rng(SEED),
        [TEMPLATE_SCHOOL, *TRUST_SCHOOLS],
        TRUST_SCHOOLS,
        hard=None,
    )
    assert _tree_digest(tmp_path / "letters") == _tree_digest(out / "letters")


@pytest.fixture(scope="module")
def hard_run(tmp_path_factory):
    from offroll_audit.synthetic.hard_letters import HardLetters

    out = tmp_path_factory.mktemp("hard_letters")
    exits, schools = tiny_frames()
    hard = HardLetters(
        declaration_urns=("100004",), form_urns=("100005",), rare_public_urns=("100006",)
    )
    manifest, _, truth = write_letters(
        out, exits, schools, np.random.default_rng(SEED), [TEMPLATE_SCHOOL], [], hard=hard
    )
    return out, manifest, truth


def test_hard_letters_mark_every_case_in_the_truth(hard_run):
    out, manifest, truth = hard_run
    hard = truth.pop("hard")
    letters = list(truth.values())
    declaration = [v for v in letters if v["case"] == "declaration"]
    assert len({v["family_id"] for v in declaration}) == 3
    assert all(v["long_personal"] and v["kind"] == "school_template" for v in declaration)
    form = [v for v in letters if v["case"] == "upn_form"]
    assert len({v["family_id"] for v in form}) == 2 and {v["urn"] for v in form} == {"100005"}
    rare = [v for v in letters if v["case"] == "rare_public"]
    assert {v["template_id"] for v in rare} == {"public-rare-1"} and {v["urn"] for v in rare} == {
        "100006"
    }
    assert any(v["scanned"] for v in letters) and any(v["struck_lines"] for v in letters)
    listed = manifest.filter(pl.col("family_id").is_not_null()).height
    assert 0 < listed < manifest.height, "letters.csv leaves some families' ids out"
    assert set(hard["unlisted_families"]) <= {v["family_id"] for v in letters}
    assert sorted(p.name for p in (out / hard["known_templates_folder"]).iterdir()) == [
        *[f"public-{i}.txt" for i in range(1, 5)],
        "public-rare-1.txt",
        "public-rare-2.txt",
    ]


def test_scans_carry_a_noisy_text_layer_and_forms_their_upn(hard_run):
    out, manifest, truth = hard_run
    files = dict(manifest.select("letter_id", "file").iter_rows())
    scans = [k for k, v in truth.items() if k != "hard" and v["scanned"]]
    for letter in scans:
        assert files[letter].endswith(".pdf")
        text = letter_text(out / "letters" / files[letter])
        assert len(text.split()) > 40
        assert re.search(r"[a-z][01|5][a-z]|rn|vv|-\n", text), "a copier's OCR misreads"
    pupils = dict(manifest.select("letter_id", "pupil_id").iter_rows())
    for letter, entry in truth.items():
        if letter != "hard" and entry["case"] == "upn_form" and not entry["scanned"]:
            text = letter_text(out / "letters" / files[letter])
            assert pupils[letter] in text and text.startswith("Kingsway High"), "UPN, letterhead"


def test_fixtures_hard_letters_option_writes_known_templates(tmp_path):
    from offroll_audit.synthetic import generate_dataset

    truth = generate_dataset(tmp_path, seed=3, hard_letters=True)
    assert truth["arguments"]["hard_letters"] is True
    hard = truth["letters"]["hard"]
    assert hard["form_schools"] and hard["declaration_schools"] and hard["rare_public_schools"]
    planted = set()
    for group in truth["planted"].values():
        planted |= set(group.get("urns", [])) if isinstance(group, dict) else set()
        planted |= {s["urn"] for s in group} if isinstance(group, list) else set()
    assert not planted & {*hard["form_schools"], *hard["declaration_schools"]}
    assert (tmp_path / "known_templates" / "public-rare-1.txt").is_file()
    pupils = pl.read_csv(tmp_path / "pupils.csv", infer_schema_length=0)
    exits = pl.read_csv(tmp_path / "exits.csv", infer_schema_length=0)
    unlisted = set(hard["unlisted_families"])
    assert not unlisted & set(exits["family_id"].drop_nulls().to_list())
    assert set(pupils["family_id"].drop_nulls().to_list()) & unlisted, "kept within a school"
