"""Letters as they really arrive (issue 16): scans, long additions, families without ids,
evidence-weighted selection, known templates under personal paragraphs, optional OCR."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from offroll_audit import extract, ocr
from offroll_audit.letter_families import parent_identity, recognise_families
from offroll_audit.letters import (
    LetterSettings,
    _char_gram_set,
    _ordered_shared_words,
    detect_templates,
    letters_per_school,
    roll_families,
)
from offroll_audit.select import rule_holds
from offroll_audit.synthetic.hard_letters import ocr_noise
from offroll_audit.workbooks.overview import templated_letters_evidence

SCHOOLS = pl.DataFrame(
    {
        "urn": [str(100000 + i) for i in range(6)],
        "name": ["Oakfield Academy", "Brook Primary", *[f"School {i}" for i in range(2, 6)]],
        "trust": [None] * 6,
    }
)
LETTERHEAD = "Oakfield Academy\nMill Lane, Ashbridge AB1 2CD\nTel: 01234 567890\n\n"
FORM = (
    "To the Headteacher\n\nDear Headteacher,\n\n"
    "Following our meeting with the pastoral team I confirm my request for my child to be "
    "taken off the admissions register so that I can educate at home. I understand the school "
    "is no longer responsible for the education of my child and that responsibility now rests "
    "with me. As agreed, the school will return any coursework and equipment and the "
    "attendance officer will close the file. I have been advised that a place cannot be held "
    "open and that if I change my mind I will need to reapply through the local authority "
    "admissions team. I confirm that this is my own decision and that I have not been "
    "pressured by the school. Please remove my child from the roll with effect from the end "
    "of this week.\n\nYours sincerely,\n"
)
OWN = [
    "My daughter has struggled with anxiety since the start of Year 8 and most mornings end in "
    "tears at the gate. We have tried a reduced timetable, a mentor and counselling, but "
    "nothing has helped her feel safe in lessons. At home she reads for hours, has started "
    "learning the piano again and spends afternoons with her grandmother who taught for "
    "thirty years. We plan to follow a project approach built around her interests in "
    "marine biology and drawing, with a maths tutor twice a week and a weekly art group.",
    "Our son has autism and the noise of the corridors leaves him exhausted by lunchtime. "
    "His support plan was never really put in place and he has spent weeks sitting in the "
    "library rather than in class. He is happiest building electronics projects and we have "
    "found a local makerspace that runs sessions for young people. My partner works from "
    "home and we will share the teaching between us, using online courses for science and "
    "a structured programme for English that he can work through at his own pace.",
    "Since the move to secondary my son has been bullied on the bus and at lunch, and he has "
    "stopped eating properly. We reported it several times and we know staff have tried, "
    "but he no longer wants to go through the doors. He loves football, history and cooking, "
    "and his uncle runs a small bakery where he will spend one morning a week. We will use "
    "library visits, museum trips and a home education co-op that meets every Thursday, and "
    "we will keep a portfolio of his work for the local authority to see.",
]


OTHER_FORM = (
    "Dear Head of School,\n\nThis note records that after the review meeting I have chosen to "
    "teach my child at home from next Monday. I know that the local authority will be told "
    "and that an adviser may visit to talk about the education I provide. Please send any "
    "books and the reading folder home with my child on Friday, and pass my thanks to the "
    "class team for their kindness over the years. I do not need a leaving meeting and I "
    "understand that a place may not be available later.\n\nRegards,\n"
)
UNRELATED = (
    "Dear Headteacher, we are moving to Cornwall at half term to be closer to my parents and "
    "we will home educate until we find a school near the new house. Thank you for "
    "everything the staff have done; the children will miss their friends and we will send "
    "a postcard from the beach. Please forward their records when we have a new address and "
    "let me know if you need anything signed before we go.\n\nBest wishes,\nDana Fox\n"
)


def _frame(rows: list[dict]) -> pl.DataFrame:
    """letter_id, urn, text and optional family_id, pupil_id, received_date."""
    frame = pl.DataFrame(rows)
    defaults = {"family_id": pl.String, "pupil_id": pl.String}
    for name, dtype in defaults.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(name))
    if "received_date" not in frame.columns:
        frame = frame.with_columns(received_date=pl.lit(dt.date(2024, 11, 4)))
    return frame


def _signed(name: str, extra: str = "") -> str:
    return FORM.replace("Yours sincerely,\n", extra + "Yours sincerely,\n") + name + "\n"


def _cluster_of(result, letter_id: str) -> dict | None:
    return next((c for c in result.clusters if letter_id in c["letters"]), None)


# --------------------------------------------------------------------------- OCR view


def test_ocr_canonical_undoes_common_misreads() -> None:
    typed, scanned = (
        pl.Series(["modern school, 10 all"]),
        pl.Series(["rnodern sch0ol. 1O aII"]),
    )
    assert ocr.ocr_canonical(typed).to_list() == ocr.ocr_canonical(scanned).to_list()
    spaced = "I am writing to inform you that my son will be home educated."
    assert np.array_equal(_char_gram_set(spaced), _char_gram_set(spaced.replace(" ", "")))


def test_a_scanned_copy_joins_its_typed_siblings_by_characters() -> None:
    names = ["Sarah Jones", "Amir Khan", "Leah Brown", "Tom Price"]
    rows = [
        {
            "letter_id": f"T{k}",
            "urn": "100000",
            "family_id": f"f{k}",
            "text": LETTERHEAD + _signed(n),
        }
        for k, n in enumerate(names[:3])
    ]
    noisy = ocr_noise(LETTERHEAD + _signed(names[3]), random.Random(4), 0.04)
    rows.append({"letter_id": "S1", "urn": "100000", "family_id": "f9", "text": noisy})
    plain = detect_templates(_frame(rows), SCHOOLS, settings=LetterSettings(ocr_view=False))
    assert _cluster_of(plain, "S1") is None, "the word view alone misses the scan"
    result = detect_templates(_frame(rows), SCHOOLS)
    cluster = _cluster_of(result, "S1")
    assert cluster and cluster["verdict"] == "school_template" and cluster["families"] == 4
    assert cluster["links"]["characters"] >= 1
    assert all(e["letter_id"] != "S1" for e in cluster["excerpts"][:1]), "evidence reads typed"


# --------------------------------------------------------------------------- containment


def test_the_form_under_long_personal_paragraphs_is_found() -> None:
    struck = (
        "As agreed, the school will return any coursework and equipment and the attendance "
        "officer will close the file. "
    )
    rows = [
        {
            "letter_id": f"D{k}",
            "urn": "100000",
            "family_id": f"f{k}",
            "text": _signed(f"Parent {k}", extra=OWN[k] + "\n\n").replace(
                struck, "" if k else struck
            ),
        }
        for k in range(3)
    ]
    rows.append({"letter_id": "X1", "urn": "100000", "family_id": "x", "text": UNRELATED})
    result = detect_templates(_frame(rows), SCHOOLS)
    cluster = _cluster_of(result, "D0")
    assert cluster and cluster["verdict"] == "school_template" and cluster["families"] == 3
    assert "X1" not in cluster["letters"]
    assert cluster["links"]["containment"] + cluster["links"]["passages"] >= 1


def test_ordered_shared_words_count_only_runs_in_order() -> None:
    rng = np.random.default_rng(0)
    form = rng.integers(0, 2**31, 200).astype(np.uint32)
    own = rng.integers(0, 2**31, 300).astype(np.uint32)
    letter = np.concatenate([form[:100], own, form[110:]])
    assert _ordered_shared_words(letter, form, 8) == 102 + 92
    shuffled = np.concatenate([form[100:120], form[:20]])
    assert _ordered_shared_words(shuffled, form, 8) == 22


def test_a_lone_letter_a_later_copy_contains_joins_the_form() -> None:
    """A form under a long paragraph that contains too little of the earlier full copies
    stays alone until a later, shorter copy links to it; that copy joins the form's group,
    and the lone letter must follow (as if it had come after the copy), whatever the
    cohesion of two groups says."""
    body = FORM.split("\n\n")[2]
    sentences = re.split(r"(?<=\.) ", body)
    head = "To the Headteacher\n\nDear Headteacher,\n\n"

    def letter(day: int, family: str, parts: list[str], name: str) -> dict:
        text = head + "\n\n".join(parts) + "\n\nYours sincerely,\n" + name + "\n"
        return {
            "letter_id": family.upper(),
            "urn": "100000",
            "family_id": family,
            "text": text,
            "received_date": dt.date(2024, 11, day),
        }

    opening = " ".join(sentences[:2])
    rows = [
        letter(1, "a1", [body], "Sarah Jones"),
        letter(2, "a2", [body], "Amir Khan"),
        letter(3, "x", [opening, OWN[0], OWN[1]], "Leah Brown"),  # alone when it arrives
        letter(4, "a3", [opening + " " + sentences[-1]], "Tom Price"),  # contained by X
    ]
    # the word view alone (the character view's second pass can rescue a lone letter too)
    for settings in (LetterSettings(ocr_view=False), LetterSettings()):
        result = detect_templates(_frame(rows), SCHOOLS, settings=settings)
        cluster = _cluster_of(result, "A1")
        assert cluster and cluster["verdict"] == "school_template"
        assert cluster["letters"] == ["A1", "A2", "A3", "X"] and cluster["families"] == 4


def test_two_schools_with_similar_forms_stay_two_templates() -> None:
    half = FORM.index("I have been advised")  # the same opening, then the school's own words
    other = FORM[:half] + OTHER_FORM.split("\n\n", 1)[1]
    rows = [
        {"letter_id": f"A{k}", "urn": "100000", "family_id": f"a{k}", "text": _signed(f"P {k}")}
        for k in range(3)
    ] + [
        {"letter_id": f"B{k}", "urn": "100002", "family_id": f"b{k}", "text": other + f"Q {k}\n"}
        for k in range(3)
    ]
    result = detect_templates(_frame(rows), SCHOOLS)
    assert {c["verdict"] for c in result.clusters} == {"school_template"}
    assert all(c["schools"] == 1 for c in result.clusters)


# --------------------------------------------------------------------------- families


def test_parent_identity_reads_signatures_addresses_and_phones() -> None:
    texts = pl.Series(
        [
            "12 Mill Lane\nAshbridge\nAB1 2CD\n\nDear Sir,\nCall me on 07712 345678.\n\n"
            "Yours sincerely,\nMrs Sarah Smith (Mum)\n",
            "Pupil name: Tom Doe\nPrint name: Mr K. Patel\nDate: 1/2/2024",
            "School X\nTel: 01234 567890\n\nWith thanks,\nSarah and John Smith",
        ]
    )
    identity = parent_identity(texts)
    assert identity["full_name"].to_list() == ["sarahsmlth", "kpatel", "sarahsmlth"]
    assert identity["address"][0] == "12|mill lane|AB12CD"
    assert identity["phone"].to_list() == ["07712345678", None, None], "never a letterhead's"


def test_siblings_without_ids_are_one_voice_never_a_cluster() -> None:
    letter = "12 Mill Lane\nAshbridge\nAB1 2CD\n\n" + OWN[1] + "\n\nKind regards,\nJo Smith\n"
    rows = [
        {"letter_id": "S1", "urn": "100001", "pupil_id": "P1", "text": letter},
        {
            "letter_id": "S2",
            "urn": "100002",
            "pupil_id": "P2",
            "text": letter.replace("son", "daughter"),
        },
    ]
    result = detect_templates(_frame(rows), SCHOOLS)
    assert result.clusters == [], "one family's two letters"
    families = result.families["family"].unique()
    assert families.len() == 1


def test_family_ids_win_over_names() -> None:
    texts = [_signed("Sarah Smith") for _ in range(3)]
    frame = _frame(
        [
            {"letter_id": f"L{k}", "urn": "100000", "family_id": f"f{k}", "text": t}
            for k, t in enumerate(texts)
        ]
    )
    result = detect_templates(frame, SCHOOLS)
    assert result.clusters[0]["families"] == 3, "three ids: three families, one common name"
    assert result.clusters[0]["families_recognised"] == {"family_id in letters.csv": 3}


def test_same_signature_within_days_is_one_family_and_says_so() -> None:
    frame = pl.DataFrame(
        {
            "letter_id": ["A", "B", "C"],
            "pupil_id": ["P1", "P2", "P3"],
            "family_id": [None, None, None],
            "exit_family_id": [None, None, None],
            "roll_family_id": [None, None, None],
            "received_date": [dt.date(2024, 11, 1), dt.date(2024, 11, 5), dt.date(2025, 3, 1)],
            "text": ["Thanks,\nMrs Okafor\n"] * 3,
        },
        schema_overrides={c: pl.String for c in ("family_id", "exit_family_id", "roll_family_id")},
    )
    families = recognise_families(frame, np.array([0, 0, 0]), same_sender_days=14)
    assert families["family"][0] == families["family"][1] != families["family"][2]
    assert any("same signature" in how for how in families["family_how"][0])


def test_roll_families_come_from_exits_then_pupils() -> None:
    letters = pl.DataFrame({"letter_id": ["L1", "L2", "L3"], "pupil_id": ["P1", None, "P4"]})
    exits = pl.DataFrame(
        {
            "letter_id": ["L2", "L2", "L3"],
            "pupil_id": ["P2", "P3", "P4"],
            "family_id": ["F2", "F2", None],
        }
    )
    pupils = pl.DataFrame(
        {
            "pupil_id": ["P1", "P2", "P4", "P4"],
            "urn": ["1", "1", "1", "2"],
            "family_id": ["F1", "F2", "F4", "F4"],
        }
    )
    found = roll_families(letters, exits, pupils).sort("letter_id")
    assert found["exit_family_id"].to_list() == [None, "F2", None]
    assert found["roll_family_id"].to_list() == ["F1", "F2", "F4"]


# --------------------------------------------------------------------------- selection


def _upn_form(upn: str, name: str) -> str:
    return (
        LETTERHEAD
        + FORM.replace(
            "Dear Headteacher,", f"Pupil: {name} Junior\nUPN: {upn}\n\nDear Headteacher,"
        )
        + name
        + "\n"
    )


def test_two_families_on_a_form_with_the_upn_select_the_school() -> None:
    rows = [
        {
            "letter_id": "U1",
            "urn": "100000",
            "family_id": "f1",
            "text": _upn_form("A801200005001", "Ann Lee"),
        },
        {
            "letter_id": "U2",
            "urn": "100000",
            "family_id": "f2",
            "text": _upn_form("B801200005002", "Raj Shah"),
        },
        {"letter_id": "P1", "urn": "100001", "family_id": "g1", "text": OTHER_FORM + "Kim Ode\n"},
        {
            "letter_id": "P2",
            "urn": "100001",
            "family_id": "g2",
            "text": OTHER_FORM.replace("Friday", "Thursday") + "Ben Ode\n",
        },
    ]
    frame = _frame(rows)
    result = detect_templates(frame, SCHOOLS)
    per_school = letters_per_school(result, frame).sort("urn")
    strong = dict(per_school.select("urn", "template_families_school_only").iter_rows())
    assert strong["100000"] == 2 and strong["100001"] == 0
    upn = _cluster_of(result, "U1")
    assert {d["code"] for d in upn["school_only"]} >= {"UPN", "LETTERHEAD"}
    rule = {
        "code": "TEMPLATED_LETTERS",
        "letters_min_families": 3,
        "letters_min_families_school_only": 2,
    }
    selected = per_school.filter(rule_holds(per_school.columns, rule, {}))["urn"].to_list()
    assert selected == ["100000"], "two families on a plain template are not enough"
    plain_rule = {"code": "TEMPLATED_LETTERS", "letters_min_families": 3}
    assert per_school.filter(rule_holds(per_school.columns, plain_rule, {})).height == 0
    results = {
        "schools": [{"urn": "100000", "audit_reasons": ["TEMPLATED_LETTERS"]}],
        "profile_settings": {"select": {"rules": [rule]}},
    }
    why = templated_letters_evidence(upn, "100000", results)
    assert why and "2 families" in why and "UPN" in why and "(3 on a plainer template)" in why


def test_letters_rule_without_the_strong_column_still_reads_families() -> None:
    frame = pl.DataFrame({"urn": ["1", "2"], "template_families": [3, 2]})
    rule = {"code": "T", "letters_min_families": 3, "letters_min_families_school_only": 2}
    assert frame.filter(rule_holds(frame.columns, rule, {}))["urn"].to_list() == ["1"]


# --------------------------------------------------------------------------- known templates


def test_a_known_template_under_personal_paragraphs_is_recognised() -> None:
    sample = FORM.replace(
        "Following our meeting with the pastoral team", "[Your name]\n\nAs is my right"
    )
    rows = [
        {
            "letter_id": f"K{k}",
            "urn": "100003",
            "family_id": f"f{k}",
            "text": _signed(f"Parent {k}", extra=OWN[k] + "\n\n"),
        }
        for k in range(3)
    ]
    plain = detect_templates(_frame(rows), SCHOOLS)
    assert plain.clusters[0]["verdict"] == "school_template", "one school: looks like a form"
    known = detect_templates(_frame(rows), SCHOOLS, known_templates={"charity.txt": sample})
    assert known.clusters[0]["verdict"] == "shared_public_template"
    assert known.clusters[0]["known_template"] == "charity.txt"


# --------------------------------------------------------------------------- optional OCR


def test_a_pdf_without_text_reads_through_a_local_ocr_engine(tmp_path: Path, monkeypatch) -> None:
    from offroll_audit.synthetic.letters import write_letter_file

    write_letter_file(tmp_path / "scan.pdf", "Dear Sir, some words", "pdf", text_layer=False)
    without = extract.extract_letter(tmp_path / "scan.pdf", tmp_path)
    if ocr.engine() is None:
        assert without.warning and "needs OCR" in without.warning
    monkeypatch.setattr(ocr, "pdf_text", lambda data: "Dear Sir, the words OCR read")
    got = extract.extract_letter(tmp_path / "scan.pdf", tmp_path)
    assert got.warning is None and got.text == "Dear Sir, the words OCR read"


@pytest.mark.skipif(ocr.engine() is not None, reason="a local OCR engine is installed")
def test_without_an_engine_ocr_reads_nothing() -> None:
    assert ocr.pdf_text(b"%PDF-1.4 not really") == ""


# --------------------------------------------------------------------------- workbooks


def test_letters_sheets_say_which_evidence_selected_the_school(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    from offroll_audit.workbooks import write_workbooks

    rule = {
        "code": "TEMPLATED_LETTERS",
        "explain": "templated letters",
        "letters_min_families": 3,
        "letters_min_families_school_only": 2,
    }
    cluster = {
        "cluster_id": "C1",
        "urn": "1",
        "letters": ["L1", "L2"],
        "families": 2,
        "schools": 1,
        "similarity": 0.8,
        "verdict": "school_template",
        "school_families": {"1": 2},
        "school_only": [{"code": "UPN", "families": 2, "detail": "The pupil's UPN is in ..."}],
        "school_only_families": {"1": 2},
        "families_recognised": {"family_id in pupils.csv": 2},
        "family_links": [],
        "links": {"words": 1, "containment": 0, "passages": 1, "characters": 0},
        "signals": [],
        "excerpts": [],
    }
    document = {
        "window": {"from": "2024-09-01", "to": "2024-12-20"},
        "profile_settings": {"select": {"rules": [rule]}},
        "schools": [
            {
                "urn": "1",
                "name": "Brook Primary",
                "pupils": 200,
                "audit": True,
                "audit_reasons": ["TEMPLATED_LETTERS"],
                "letters": {"letters": 2, "clusters": 1, "templated": 2, "template_families": 2},
            }
        ],
        "exits": [],
        "letter_clusters": [cluster],
    }
    write_workbooks(document, tmp_path)
    pack = load_workbook(tmp_path / "packs" / "1.xlsx")["Letters"]
    cells = [str(c.value) for row in pack.iter_rows() for c in row if c.value]
    assert "Why it selected this school" in cells
    assert any(
        "2 families at this school signed a form carrying the pupil's UPN" in c for c in cells
    )
    assert any("1 by long passages shared in order" in c for c in cells)
    overview = load_workbook(tmp_path / "overview.xlsx")["Letters"]
    headers = [c.value for c in overview[2]]
    row = dict(zip(headers, [c.value for c in overview[3]], strict=True))
    assert "UPN" in row["Selected its lead school because"]
    assert row["Families recognised"] == "2 by family_id in pupils.csv"
