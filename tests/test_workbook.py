"""The Excel outputs (offroll_audit.workbook): sheets, chart references, inert text,
suppression and byte-identical reruns.

The results come from a real audit of the bundled example LA (the CLI with
--no-workbooks, once per module), so the workbooks are tested against the
results.json the tool actually writes; payloads are then planted in a copy.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from openpyxl import load_workbook
from openpyxl.utils import column_index_from_string

from offroll_audit.results import EXIT_FIELDS
from offroll_audit.workbooks import pack_name, write_workbooks
from offroll_audit.workbooks.overview import (
    EXIT_COLUMNS,
    EXIT_KEYS,
    FUNNEL_GRID,
    FUNNEL_HEADER_ROW,
    SCHOOL_NAME,
)
from offroll_audit.workbooks.pack import PUPIL_COLUMNS
from offroll_audit.workbooks.style import clean_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "fixtures" / "example-la"
OVERVIEW_SHEETS = ["Summary", "Schools", "Funnel", "Exits", "Letters", "Method", "Data issues"]
PACK_SHEETS = ["Cover", "Breakdown", "Pupils", "Letters", "Questions", "Method"]
# The example LA is termly: its overview adds "Since last term", each pack a "History" sheet.
TERMLY_OVERVIEW_SHEETS = [OVERVIEW_SHEETS[0], "Since last term", *OVERVIEW_SHEETS[1:]]
TERMLY_PACK_SHEETS = [*PACK_SHEETS[:2], "History", *PACK_SHEETS[2:]]
CHART_NS = {"c": "http://schemas.openxmlformats.org/drawingml/2006/chart"}
PAYLOADS = [
    '=HYPERLINK("http://x","y")',
    "=1+1",
    "+SUM(1,2)",
    "-2+3",
    "@SUM(A1)",
    "\t=1+1",
    "\r=1+1",
]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def audit_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CLI's output for the example LA, workbooks included, from another interpreter
    with its own hash seed (so comparing with workbooks written here tests both the CLI's
    use of write_workbooks and that nothing depends on the process)."""
    out = tmp_path_factory.mktemp("audit") / "out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "offroll_audit",
            "audit",
            str(EXAMPLE),
            "--out",
            str(out),
            "--quiet",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    return out


@pytest.fixture(scope="module")
def results(audit_out: Path) -> dict[str, Any]:
    """results.json of the example LA, as the CLI writes it."""
    document = json.loads((audit_out / "results.json").read_text(encoding="utf-8"))
    assert any(s["audit"] for s in document["schools"]), "the example LA should select schools"
    assert document["letter_clusters"], "the example LA should have letter clusters"
    return document


@pytest.fixture(scope="module")
def written(results: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("workbooks")
    write_workbooks(results, out)
    return out


def planted(results: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy of the results with injection payloads and control characters in input text."""
    document = copy.deepcopy(results)
    school = next(s for s in document["schools"] if s["audit"])
    school["name"] = PAYLOADS[0]
    school["trust"] = "@trust\x01with a control character"
    school["audit_reasons_text"] = [PAYLOADS[2]]
    exits = [e for e in document["exits"] if e["urn"] == school["urn"]]
    exits[0]["pupil_id"] = PAYLOADS[1]
    exits[0]["why"] = PAYLOADS[3]
    exits[0]["reason"] = PAYLOADS[5]
    exits[1]["pupil_id"] = PAYLOADS[6]
    exits[1]["rag_why"] = "=cmd|' /C calc'!A0\x00"
    cluster = document["letter_clusters"][0]
    cluster["school_families"] = {school["urn"]: 2, **cluster.get("school_families", {})}
    cluster["excerpts"][0]["segments"][0]["text"] = "=1+1 shared\x07 text"
    cluster["signals"].append({"code": "SCHOOL_NAME", "detail": PAYLOADS[4]})
    document["data_issues"] = [
        {"file": "=evil.csv", "row": 3, "column": "@name", "message": "-1+1", "hint": "+1"}
    ]
    return document, school["urn"]


def cells(path: Path) -> list[Any]:
    """Every non-empty cell of every sheet, loaded with openpyxl."""
    workbook = load_workbook(path)
    return [c for ws in workbook for row in ws.iter_rows() for c in row if c.value is not None]


def sheet_xml(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        return {
            name: archive.read(name).decode("utf-8")
            for name in archive.namelist()
            if name.startswith("xl/worksheets/sheet")
        }


def header_row(ws, row: int) -> list[Any]:
    return [c.value for c in ws[row]]


# ------------------------------------------------------------------------------------ structure


def test_overview_sheets_and_headers(written: Path, results: dict[str, Any]) -> None:
    workbook = load_workbook(written / "overview.xlsx")
    assert workbook.sheetnames == TERMLY_OVERVIEW_SHEETS
    schools = workbook["Schools"]
    headers = header_row(schools, 2)
    for name in (
        "URN",
        "School",
        "EHE observed",
        "EHE expected",
        "EHE ratio (O/E)",
        "EHE 95% CI low",
        "EHE 95% CI high",
        "EHE band",
        "EHE q",
        "Unexplained observed",
        "Unexplained expected",
        "Unexplained band",
        "Template clusters",
        "Selected for audit",
    ):
        assert name in headers
    assert schools.freeze_panes == "C3"
    assert schools.auto_filter.ref == f"A2:{schools.cell(2, len(headers)).column_letter}" + str(
        2 + len(results["schools"])
    )
    assert schools.max_row == 2 + len(results["schools"])
    assert schools.conditional_formatting  # bands are coloured
    # numbers are numbers, with the formats a reader expects
    column = {name: i + 1 for i, name in enumerate(headers)}
    first = schools.cell(3, column["EHE ratio (O/E)"])
    assert isinstance(first.value, float) and first.number_format == "0.00"
    assert schools.cell(3, column["EHE expected"]).number_format == "0.0"
    assert "<0.001" in schools.cell(3, column["EHE q"]).number_format
    selected = [
        r[column["URN"] - 1].value
        for r in schools.iter_rows(min_row=3)
        if r[column["Selected for audit"] - 1].value == "yes"
    ]
    assert sorted(selected) == sorted(s["urn"] for s in results["schools"] if s["audit"])

    exits = workbook["Exits"]
    assert exits.max_row == 2 + len(results["exits"])
    assert "Pupil-level" in exits["A1"].value
    exit_headers = header_row(exits, 2)
    assert exit_headers[:4] == ["Pupil id", "URN", "School", "Exit date"]
    row = {h: c.value for h, c in zip(exit_headers, exits[3], strict=True)}
    first_exit = results["exits"][0]
    assert row["Pupil id"] == first_exit["pupil_id"]
    assert row["Exit date"] == dt.datetime.fromisoformat(first_exit["exit_date"])
    assert row["Explained"] == ("yes" if first_exit["explained"] else "no")
    assert workbook["Letters"].max_row == 2 + len(results["letter_clusters"])
    method = [c.value for c in workbook["Method"]["B"] if c.value]
    alpha = results["overdispersion"]["ehe"]["alpha"]
    assert any(f"{alpha:.3f}" in str(text) for text in method)
    assert any(results["baseline"]["source"] in str(text) for text in method)


def test_exit_columns_show_every_exit_field_once() -> None:
    """The Exits sheet shows each field of results.json's exits once, plus the school's name;
    a pack's Pupils sheet leaves out URN and school name."""
    assert set(EXIT_KEYS) == set(EXIT_FIELDS)
    assert len(EXIT_KEYS) == len(set(EXIT_KEYS))
    assert [c.key for c in EXIT_COLUMNS] == [*EXIT_KEYS[:2], SCHOOL_NAME, *EXIT_KEYS[2:]]
    assert [c.key for c in PUPIL_COLUMNS] == [k for k in EXIT_KEYS if k != "urn"]


def test_rag_colours_sit_on_the_rag_column(written: Path, results: dict[str, Any]) -> None:
    """The red/amber/green conditional formats of Exits and Pupils cover the RAG column."""
    selected = {s["urn"] for s in results["schools"] if s["audit"]}
    urn = next(e["urn"] for e in results["exits"] if e["rag"] and e["urn"] in selected)
    sheets = [
        load_workbook(written / "overview.xlsx")["Exits"],
        load_workbook(written / "packs" / f"{urn}.xlsx")["Pupils"],
    ]
    for ws in sheets:
        headers = header_row(ws, 2)
        ranges = {str(rule_range.sqref) for rule_range in ws.conditional_formatting}
        assert len(ranges) == 1, ws.title
        (cells_range,) = ranges
        letter = re.match(r"[A-Z]+", cells_range).group()
        assert headers[column_index_from_string(letter) - 1] == "RAG", ws.title
        rags = {ws[f"{letter}{r}"].value for r in range(3, ws.max_row + 1)}
        assert rags <= {"red", "amber", "green", None} and rags - {None}, ws.title


def test_one_pack_per_selected_school(written: Path, results: dict[str, Any]) -> None:
    selected = sorted(s["urn"] for s in results["schools"] if s["audit"])
    assert sorted(p.stem for p in (written / "packs").glob("*.xlsx")) == selected
    for urn in selected:
        path = written / "packs" / f"{urn}.xlsx"
        workbook = load_workbook(path)
        assert workbook.sheetnames == TERMLY_PACK_SHEETS
        cover = [str(c.value) for c in workbook["Cover"]["A"] + workbook["Cover"]["B"] if c.value]
        assert any("not proof" in text for text in cover)
        school = next(s for s in results["schools"] if s["urn"] == urn)
        assert any(school["audit_reasons_text"][0] in text for text in cover)
        assert any("would be expected for this school's pupils" in text for text in cover)
        pupils = workbook["Pupils"]
        assert pupils.max_row == 2 + sum(e["urn"] == urn for e in results["exits"])
        questions = [c.value for c in workbook["Questions"]["B"][4:] if c.value]
        assert len(questions) >= 5
        assert path.stat().st_size < 2_000_000


def test_the_off_rollers_history_charts_its_rise(written: Path) -> None:
    """The planted off-roller's History sheet charts observed against expected by term, and
    its table shows the rise: beyond the 99.8% limit in the term the excess started, within
    it in every term before."""
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    off_roller = truth["planted"]["offroll_ehe"][0]
    sheet = load_workbook(written / "packs" / f"{off_roller['urn']}.xlsx")["History"]
    assert len(sheet._charts) == 3, "one chart per outcome: EHE, unexplained, targeted pupils"
    assert len(sheet._charts[0].series) == 4, "observed, expected and the two limits"
    terms = [row for row in sheet.iter_rows(values_only=True) if row[0] in truth["terms"]]
    ehe = {row[0]: row for row in terms[: len(truth["terms"])]}  # the EHE table comes first
    assert list(ehe) == truth["terms"]
    started = off_roller["excess_from"]
    observed, limit998 = 1, 5
    assert ehe[started][observed] > ehe[started][limit998]
    for term in truth["terms"][: truth["terms"].index(started)]:
        assert ehe[term][observed] <= ehe[term][limit998]


def test_pack_letters_mark_shared_passages(written: Path, results: dict[str, Any]) -> None:
    cluster = next(c for c in results["letter_clusters"] if c["verdict"] == "school_template")
    urn = next(u for u in cluster["school_families"] if (written / "packs" / f"{u}.xlsx").exists())
    workbook = load_workbook(written / "packs" / f"{urn}.xlsx", rich_text=True)
    letters = workbook["Letters"]
    rich = [
        c.value
        for row in letters.iter_rows()
        for c in row
        if type(c.value).__name__ == "CellRichText"
    ]
    assert rich, "excerpts are rich text"
    bold = [
        block for value in rich for block in value if not isinstance(block, str) and block.font.b
    ]
    assert bold, "shared passages are bold"
    shared = {s["text"] for e in cluster["excerpts"] for s in e["segments"] if s["shared"]}
    assert any(block.text.strip() in shared for block in bold)
    texts = [str(c.value) for row in letters.iter_rows() for c in row if c.value]
    assert any(f"Cluster {cluster['cluster_id']}" in t for t in texts)
    assert any(cluster["signals"][0]["detail"] in t for t in texts)


def test_funnel_chart_points_at_the_funnel_cells(written: Path, results: dict[str, Any]) -> None:
    path = written / "overview.xlsx"
    with zipfile.ZipFile(path) as archive:
        charts = [n for n in archive.namelist() if n.startswith("xl/charts/")]
        assert len(charts) == 1
        tree = ElementTree.fromstring(archive.read(charts[0]))
    assert tree.find(".//c:scatterChart", CHART_NS) is not None
    assert tree.find(".//c:valAx/c:scaling/c:logBase", CHART_NS).get("val") == "10"
    titles = [t.text for t in tree.findall(".//c:valAx/c:title//{*}t", CHART_NS)]
    assert any("Expected" in t for t in titles) and any("Observed" in t for t in titles)
    series = {}
    for ser in tree.findall(".//c:ser", CHART_NS):
        name = ser.find("c:tx/c:v", CHART_NS).text
        series[name] = (
            ser.find("c:xVal//c:f", CHART_NS).text,
            ser.find("c:yVal//c:f", CHART_NS).text,
        )
    assert {
        "Upper 99.8% limit",
        "Upper 95% limit",
        "Lower 95% limit",
        "Lower 99.8% limit",
        "Selected for audit",
    } <= set(series)
    ws = load_workbook(path)["Funnel"]
    headers = header_row(ws, FUNNEL_HEADER_ROW)
    reference = re.compile(r"'Funnel'!\$([A-Z]+)\$(\d+):\$([A-Z]+)\$(\d+)")

    def column(ref: str) -> tuple[str, int, list[Any]]:
        """The header of a referenced single-column range, its first row and its values."""
        letter, first, letter2, last = reference.fullmatch(ref).groups()
        assert letter == letter2
        values = [ws[f"{letter}{r}"].value for r in range(int(first), int(last) + 1)]
        return headers[column_index_from_string(letter) - 1], int(first), values

    (x_name, x_first, x_values), (y_name, y_first, y_values) = map(
        column, series["Upper 99.8% limit"]
    )
    assert (x_name, y_name) == ("Limit grid: E", "Upper 99.8%")
    assert x_first == y_first == FUNNEL_HEADER_ROW + 1
    assert len(x_values) == FUNNEL_GRID and all(isinstance(v, float) for v in x_values)
    assert x_values == sorted(x_values) and all(v > 0 for v in y_values)
    assert column(series["Lower 95% limit"][1])[0] == "Lower 95%"
    (x_name, x_first, x_values), (y_name, y_first, y_values) = map(
        column, series["Selected for audit"]
    )
    assert (x_name, y_name) == ("Expected (E)", "Ratio (O/E)") and x_first == y_first
    if "Schools" in series:  # the other schools come first, then the selected ones
        others = column(series["Schools"][0])
        assert others[1] == FUNNEL_HEADER_ROW + 1 and x_first == others[1] + len(others[2])
        assert all(ws[f"F{r}"].value == "no" for r in range(others[1], x_first))
    rows = range(x_first, x_first + len(x_values))
    assert all(ws[f"F{r}"].value == "yes" for r in rows)
    by_urn = {s["urn"]: s for s in results["schools"]}
    for r, expected, ratio in zip(rows, x_values, y_values, strict=True):
        school = by_urn[ws[f"A{r}"].value]
        assert school["audit"]
        assert expected == pytest.approx(school["ehe"]["expected"])
        assert ratio == pytest.approx(school["ehe"]["ratio"])


# ------------------------------------------------------------------------------------ safety


def test_no_cell_holds_a_formula(written: Path) -> None:
    for path in [written / "overview.xlsx", *sorted((written / "packs").glob("*.xlsx"))]:
        for name, xml in sheet_xml(path).items():
            assert not re.search(r"<f[ >/]", xml), f"{path.name} {name} holds a formula"
        assert all(c.data_type != "f" for c in cells(path))


def test_injection_payloads_are_inert(results: dict[str, Any], tmp_path: Path) -> None:
    document, urn = planted(results)
    write_workbooks(document, tmp_path)
    paths = [tmp_path / "overview.xlsx", tmp_path / "packs" / f"{urn}.xlsx"]
    found: dict[str, Any] = {}
    for path in paths:
        for name, xml in sheet_xml(path).items():
            assert not re.search(r"<f[ >/]", xml), f"{path.name} {name} holds a formula"
        for cell in cells(path):
            assert cell.data_type != "f"
            if isinstance(cell.value, str):
                found.setdefault(cell.value.replace("\n", "\r"), cell)
    for payload in PAYLOADS:
        cell = found.get(payload.replace("\n", "\r"))
        assert cell is not None, f"{payload!r} not written as text"
        assert cell.data_type == "s"
        assert cell.quotePrefix, f"{payload!r} has no quote prefix"
    assert "@trust\ufffdwith a control character" in found
    assert "=cmd|' /C calc'!A0\ufffd" in found
    assert found["=evil.csv"].data_type == "s"
    letters = load_workbook(paths[1], rich_text=True)["Letters"]
    excerpt_text = [str(c.value) for row in letters.iter_rows() for c in row if c.value]
    assert any("=1+1 shared\ufffd text" in t for t in excerpt_text)


def test_clean_text() -> None:
    assert clean_text("a\x00b\x1fc\ud800") == "a\ufffdb\ufffdc\ufffd"
    assert clean_text("tab\tand\nnewline") == "tab\tand\nnewline"
    long = clean_text("x" * 40_000)
    assert len(long) <= 32_767 and long.endswith("[truncated]")


def test_pack_names_cannot_escape_the_folder() -> None:
    assert pack_name("100001") == "100001.xlsx"
    assert pack_name("../../etc/x") == "______etc_x.xlsx"
    assert pack_name("") == "_.xlsx"


# ------------------------------------------------------------------------------------ suppression


def test_suppression_hides_small_counts(results: dict[str, Any], tmp_path: Path) -> None:
    write_workbooks(results, tmp_path, suppress=5)
    workbook = load_workbook(tmp_path / "overview.xlsx")
    schools = workbook["Schools"]
    headers = header_row(schools, 2)
    column = {name: i for i, name in enumerate(headers)}
    by_urn = {s["urn"]: s for s in results["schools"]}
    seen_small = seen_zero = 0
    for row in schools.iter_rows(min_row=3, values_only=True):
        school = by_urn[row[column["URN"]]]
        observed = school["ehe"]["observed"]
        shown = row[column["EHE observed"]]
        if 1 <= observed <= 4:
            seen_small += 1
            assert shown == "<5"
            assert row[column["EHE ratio (O/E)"]] == "c"
            assert row[column["EHE 95% CI high"]] == "c"
        elif observed == 0:
            seen_zero += 1
            assert shown == 0
        else:
            assert shown == observed
        for name in headers:
            value = row[column[name]]
            assert not (
                isinstance(value, int)
                and 1 <= value <= 4
                and "band" not in name
                and "flag (99.8%)" not in name
                and name != "Template clusters"
            ), name
    assert seen_small and seen_zero
    summary = [c for row in workbook["Summary"].iter_rows(max_row=30) for c in row]
    assert all(not (isinstance(c.value, int) and 1 <= c.value <= 4) for c in summary)
    assert "Pupil-level" in workbook["Exits"]["A1"].value
    for path in sorted((tmp_path / "packs").glob("*.xlsx")):
        pack = load_workbook(path)
        breakdown = [c.value for row in pack["Breakdown"].iter_rows(min_row=4) for c in row[2:4]]
        assert all(not (isinstance(v, int) and 1 <= v <= 4) for v in breakdown)
        cover = [c.value for row in pack["Cover"].iter_rows() for c in row]
        assert all(not (isinstance(v, int) and 1 <= v <= 4) for v in cover)
        assert not any(re.match(r"^[1-4] exit", str(v)) for v in cover)


# ------------------------------------------------------------------------------------ reproducible


def test_same_results_give_byte_identical_files(
    written: Path, audit_out: Path, results: dict[str, Any], tmp_path: Path
) -> None:
    """Twice here, and once by the CLI in another process: the same bytes every time."""
    again = tmp_path / "again"
    write_workbooks(results, again)
    files = sorted(p.relative_to(written) for p in written.rglob("*.xlsx"))
    assert files and files == sorted(p.relative_to(again) for p in again.rglob("*.xlsx"))
    assert files == sorted(p.relative_to(audit_out) for p in audit_out.rglob("*.xlsx"))
    for name in files:
        assert (written / name).read_bytes() == (again / name).read_bytes(), name
        assert (written / name).read_bytes() == (audit_out / name).read_bytes(), name


def test_fixed_properties_and_timestamps(written: Path, results: dict[str, Any]) -> None:
    end = dt.date.fromisoformat(results["window"]["to"])
    when = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
    for path in [written / "overview.xlsx", *sorted((written / "packs").glob("*.xlsx"))]:
        with zipfile.ZipFile(path) as archive:
            assert {info.date_time for info in archive.infolist()} == {when.timetuple()[:6]}
            core = ElementTree.fromstring(archive.read("docProps/core.xml"))
        values = {element.tag.split("}")[1]: element.text for element in core}
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert values["creator"] == values["lastModifiedBy"] == "offroll-audit"
        assert values["created"] == values["modified"] == stamp


# ------------------------------------------------------------------------------------ edge cases


def test_nothing_selected_and_missing_fields(tmp_path: Path) -> None:
    """A minimal document (no exits, no letters, an outcome missing) still gives an overview."""
    document = {
        "window": {"from": "2024-09-01", "to": "2024-12-20"},
        "schools": [
            {
                "urn": "1",
                "name": "Tiny School",
                "pupils": 3,
                "audit": False,
                "ehe": {"observed": 0, "expected": 0.01, "ratio": 0.0, "band": "too_few"},
            },
            {"urn": "2", "name": None, "pupils": None, "audit": False},
        ],
        "exits": [],
    }
    write_workbooks(document, tmp_path)
    workbook = load_workbook(tmp_path / "overview.xlsx")
    assert workbook.sheetnames == OVERVIEW_SHEETS
    assert workbook["Schools"].max_row == 4
    assert workbook["Exits"].max_row == 2
    assert list((tmp_path / "packs").glob("*.xlsx")) == []


def test_pack_for_a_school_without_exits_or_letters(
    results: dict[str, Any], tmp_path: Path
) -> None:
    document = copy.deepcopy(results)
    school = next(s for s in document["schools"] if s["audit"])
    document["exits"] = [e for e in document["exits"] if e["urn"] != school["urn"]]
    document["letter_clusters"] = []
    school["groups"] = {}
    write_workbooks(document, tmp_path)
    pack = load_workbook(tmp_path / "packs" / f"{school['urn']}.xlsx")
    assert pack["Pupils"].max_row == 2
    assert "No letter cluster" in str(pack["Letters"]["A4"].value)


def test_rows_beyond_excels_limit_are_cut_with_a_note(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Excel holds 1,048,576 rows; more exits than that are cut, and the sheet says so."""
    import offroll_audit.workbooks.style as style

    monkeypatch.setattr(style, "EXCEL_ROWS", 12)
    exits = [
        {"pupil_id": f"P{i:03d}", "urn": "1", "exit_date": "2024-10-01", "flags": []}
        for i in range(20)
    ]
    document = {"window": {"to": "2024-12-20"}, "schools": [], "exits": exits}
    write_workbooks(document, tmp_path)
    sheet = load_workbook(tmp_path / "overview.xlsx")["Exits"]
    assert sheet.max_row == 12
    assert [sheet.cell(r, 1).value for r in (3, 12)] == ["P000", "P009"]
    assert "the last 10 exits" in sheet["A1"].value
