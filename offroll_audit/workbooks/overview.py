"""overview.xlsx: the LA's workbook of every school, the funnel plot, every exit and letter cluster.

Also the wording both workbooks share (band labels, the sentences about a
school's counts, the Method sheet), so the overview and the packs can never
describe the same number differently.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from openpyxl import Workbook
from openpyxl.chart import Reference, ScatterChart, Series
from openpyxl.chart.layout import Layout, ManualLayout
from openpyxl.formatting.rule import CellIsRule, FormulaRule
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from offroll_audit.classify import FLAG_TEXT
from offroll_audit.results import plain_band
from offroll_audit.significance import funnel_limits
from offroll_audit.workbooks.history import monitoring_method_lines, since_last_term_sheet
from offroll_audit.workbooks.style import (
    AMBER_FILL,
    BAND_LABEL,
    BLUE_FILL,
    BOLD,
    FMT_DATE,
    FMT_EXPECTED,
    FMT_INT,
    FMT_P,
    FMT_RATIO,
    GREEN_FILL,
    GREY_FILL,
    HEADING_FONT,
    LEFT_TOP,
    NOTE_COLOUR,
    NOTE_FONT,
    RED_FILL,
    WRAP_TOP,
    Book,
    Column,
    count_text,
    fill,
    header,
    is_suppressed,
    key_index,
    note_row,
    number,
    print_setup,
    put,
    set_widths,
    text_height,
    title,
    write_lines,
)

QUESTION_NOT_PROOF = (
    "A flag is a question to ask the school, not proof of off-rolling. Every number here "
    "compares a school with what its own pupils predict; a school may have a good explanation "
    "the data cannot see."
)

BAND_ORDER = {band: i for i, band in enumerate(BAND_LABEL)}
BAND_FILL = {
    "high_998": RED_FILL,
    "high_95": AMBER_FILL,
    "low_95": BLUE_FILL,
    "low_998": BLUE_FILL,
    "too_few": GREY_FILL,
}
RAG_FILL = {"red": RED_FILL, "amber": AMBER_FILL, "green": GREEN_FILL}
VERDICT_LABEL = {
    "school_template": "school template",
    "shared_public_template": "public template (innocent)",
    "unique": "unique letter",
}
VERDICT_TEXT = {
    "school_template": "letters from several families share wording that points to the school "
    "(its name, voice, pupil references or document metadata): ask who wrote them",
    "shared_public_template": "letters copy a widely published sample letter: similarity is "
    "expected and innocent, shown only for completeness",
    "unique": "no shared template",
}
OUTCOME_NAME = {
    "ehe": "Home education (EHE)",
    "unexplained": "Unexplained exits",
    "y10_loss": "Year 10 pupils lost",
    "ehe_vulnerable": "Vulnerable Years 9-11 to EHE",
}
OUTCOME_SHORT = {
    "ehe": "Home education",
    "unexplained": "Unexplained",
    "y10_loss": "Y10 loss",
    "ehe_vulnerable": "Vulnerable Y9-11 EHE",
}
METHOD_TEXT = {
    "nb": "negative binomial: exact count probabilities that allow for ordinary differences "
    "between schools (overdispersion)",
    "poisson": "Poisson: exact count probabilities with no allowance for differences between "
    "schools (more schools fall outside the limits)",
    "funnelplotr": "FunnelPlotR-compatible (NHS SHMI-style) limits, for comparison with that "
    "package; the funnel lines drawn here are the exact count limits",
}
FLAG_SHORT = {
    "EHE_VULNERABLE": "Vulnerable pupil to EHE",
    "SPECIAL_NO_CONSENT": "Special school: no LA consent",
    "KS4_PRE_CENSUS": "Y10-11 before January census",
    "AFTER_SUSPENSION": "After a suspension",
    "LOW_ATTENDANCE": "Low attendance",
    "LATE_NOTIFICATION": "LA told late",
    "RETURNED_QUICKLY": "Returned quickly",
    "SCHOOL_PRESSURE_REASON": "Reason: school pressure",
    "CME_UNKNOWN": "Whereabouts unknown",
    "TEMPLATED_LETTER": "Templated letter",
}
SUPPRESSED_DERIVED = "c"


# ------------------------------------------------------------------------------------ wording


def document_time(results: dict[str, Any]) -> dt.datetime:
    """A fixed timestamp for the files: midnight after the window ends (never the wall clock)."""
    try:
        end = dt.date.fromisoformat(str(results["window"]["to"])[:10])
        return dt.datetime.combine(end, dt.time()) + dt.timedelta(days=1)
    except (KeyError, TypeError, ValueError):
        return dt.datetime(2000, 1, 1)


def window_text(results: dict[str, Any]) -> str:
    window = results.get("window") or {}
    text = f"{window.get('from', '?')} to {window.get('to', '?')}"
    return text + (f" ({window['source']})" if window.get("source") else "")


def flag_codes(results: dict[str, Any]) -> list[str]:
    """Every child-level flag code: the classifier's, then any others the results carry."""
    codes = list(FLAG_TEXT)
    for school in results.get("schools", []):
        codes += [c for c in (school.get("flag_counts") or {}) if c not in codes]
    return codes


def outcome_sentence(school: dict[str, Any], outcome: str, suppress: int) -> str:
    """The cover's sentence, e.g. '9 exits to elective home education; about 2.4 would be ...'."""
    block = school.get(outcome) or {}
    observed, expected = block.get("observed"), block.get("expected")
    if observed is None or expected is None:
        return ""
    # with the count hidden, its chance would give it away (E and p fix O)
    p = None if is_suppressed(observed, suppress) else block.get("p")
    text = plain_band(outcome, count_text(observed, suppress), float(expected), p)
    band = block.get("band")
    if band == "too_few":
        text += "; too few expected to judge"
    flag_95, flag_998 = block.get("flag_count_95"), block.get("flag_count_998")
    if band == "high_95" and flag_998 is not None:
        text += f". A count of {flag_998} would have passed the 99.8% limit"
    elif band not in ("high_998", "high_95") and flag_95 is not None and flag_998 is not None:
        text += (
            f". A count of {flag_95} would have passed the 95% limit, {flag_998} the 99.8% limit"
        )
    if block.get("ratio") is not None and not is_suppressed(observed, suppress):
        ci = block.get("ci95") or [None, None]
        text += f". Ratio observed/expected {block['ratio']:.2f}"
        if ci[0] is not None and ci[1] is not None:
            text += f" (95% interval {ci[0]:.2f} to {ci[1]:.2f})"
    return text + "."


def alpha_text(block: dict[str, Any] | None) -> str:
    if not block or block.get("alpha") is None:
        return "not estimated"
    text = f"{block['alpha']:.3f}"
    low, high = (block.get("alpha_ci95") or [None, None])[:2]
    if low is not None and high is not None:
        text += f" (95% interval {low:.3f} to {high:.3f})"
    method = block.get("method")
    if method:
        text += f", by {method}"
    if block.get("moment_alpha") is not None:
        text += f"; moment estimate {block['moment_alpha']:.3f}"
    if block.get("n_schools") is not None:
        text += f"; from {block['n_schools']} schools"
        if block.get("n_set_aside"):
            text += f", {block['n_set_aside']} outlier(s) set aside"
    return text


def fit_text(fit: dict[str, Any]) -> str:
    """The local baseline's model and, in plain sentences, what the data made of it."""
    sentences = [f"model: {fit.get('model', '?')}"]
    sentences += [f"Caution: {text}" for text in fit.get("warnings") or []]
    sentences += list(fit.get("notes") or [])
    return ". ".join(s[:1].upper() + s[1:] for s in sentences) + "."


def method_lines(results: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The Method sheet: what was done and the profile's thresholds, with the numbers used.

    A None value marks a section heading.
    """
    settings = results.get("profile_settings") or {}
    stats = settings.get("statistics") or {}
    baseline = results.get("baseline") or {}
    method = results.get("method") or "nb"
    p998, p95 = stats.get("p_high_998", 0.001), stats.get("p_high_95", 0.025)
    lines: list[tuple[str, str | None]] = [("What was done", None)]
    case_mix = ", ".join(stats.get("case_mix") or []) or "the pupil characteristics in the data"
    lines += [
        (
            "Expected counts",
            "Each school's expected count is the sum, over its pupils, of the rate "
            "at which pupils like them (" + case_mix + ") left that way across the baseline. "
            "This is indirect standardisation: a school is compared with its own intake.",
        ),
        (
            "Baseline",
            f"{baseline.get('kind', '?')}: {baseline.get('source', '')}"
            + (f"; model: {baseline['model']} effects" if baseline.get("model") else ""),
        ),
    ]
    lines += self_review_method_lines(results)
    for outcome, robust in (baseline.get("robust") or {}).items():
        note = robust.get("note") or ""
        excluded = robust.get("excluded_urns") or []
        if excluded:
            note += f" (set aside: {', '.join(map(str, excluded))})"
        lines.append((f"Robust refit: {OUTCOME_NAME.get(outcome, outcome)}", note))
    for outcome, fit in (baseline.get("fit") or {}).items():
        lines.append((f"Case-mix fit: {OUTCOME_NAME.get(outcome, outcome)}", fit_text(fit)))
    lines.append(("Test", METHOD_TEXT.get(method, method)))
    for outcome, block in (results.get("overdispersion") or {}).items():
        text = alpha_text(block)
        if method == "poisson":
            text += " (not used: the Poisson method assumes none)"
        if block.get("warning"):
            text += ". Caution: " + block["warning"]
        lines.append(
            (f"Between-school allowance (alpha): {OUTCOME_NAME.get(outcome, outcome)}", text)
        )
    lines += [
        (
            "Bands",
            f"above 99.8% limit: a count this high would happen by chance at fewer than "
            f"1 in {round(1 / p998):,} schools like it (p < {p998:g}); above 95% limit: fewer than "
            f"1 in {round(1 / p95):,} (p < {p95:g}); below limits: the same in the lower tail; "
            f"too few to judge: fewer than "
            f"{stats.get('min_expected', 1.0):g} exits expected (the count that would have flagged "
            "is reported instead).",
        ),
        (
            "Many schools at once",
            "With many schools some fall outside the limits by chance "
            "(about 1 in 40 beyond the 95% limit, 1 in 1,000 beyond 99.8%). The q value "
            "(Benjamini-Hochberg, over all schools with expected exits) says how likely a flag at "
            "that level is a false discovery.",
        ),
        (
            "What counts can show",
            "Counts catch blatant off-rolling; a school that moves a few pupils will rarely stand "
            "out by numbers alone. Letters, statutory flags and child-level flags carry the rest.",
        ),
    ]
    lines += monitoring_method_lines(results)
    select = settings.get("select") or {}
    lines.append(("Selection for audit", None))
    floors = []
    if select.get("min_exits"):
        floors.append(f"at least {select['min_exits']} exits")
    if select.get("min_share"):
        floors.append(f"at least {select['min_share']:.0%} of the cohort")
    if floors:
        lines.append(("Floors for count rules", " and ".join(floors)))
    for rule in select.get("rules") or []:
        lines.append((str(rule.get("code", "")), str(rule.get("explain", ""))))
    measured = select.get("measured") or {}
    if measured:
        lines.append(("Measured error rates of these rules", None))
        lines += [(str(key), str(value)) for key, value in measured.items()]
    classification = settings.get("classification") or {}
    if classification:
        lines.append(("Classification of exits", None))
        lines.append(("Explained destinations", ", ".join(classification.get("explained") or [])))
        lines.append(
            ("Unexplained destinations", ", ".join(classification.get("unexplained") or []))
        )
    flags = settings.get("flags") or {}
    lines.append(("Child-level flags", None))
    for code, text in FLAG_TEXT.items():
        lines.append((code, text + _flag_threshold(code, flags)))
    rag = settings.get("rag") or {}
    if rag:
        points = rag.get("points") or {}
        lines.append(("RAG rating", None))
        lines.append(
            (
                "How it is scored",
                f"points add up per exit: red from "
                f"{rag.get('red_from')}, amber from {rag.get('amber_from')}; "
                + "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in points.items()),
            )
        )
    lines.append(("Profile", f"{results.get('profile', '')}: {settings.get('description', '')}"))
    tool = results.get("tool") or {}
    lines.append(("Tool", f"{tool.get('name', 'offroll-audit')} {tool.get('version', '')}"))
    lines.append(("Reading the results", QUESTION_NOT_PROOF))
    return lines


def _flag_threshold(code: str, flags: dict[str, Any]) -> str:
    """The profile number behind a flag, in words."""
    if code == "KS4_PRE_CENSUS" and "pre_census_days" in flags:
        return f" (within {flags['pre_census_days']} days before the census)"
    if code == "AFTER_SUSPENSION" and "after_suspension_days" in flags:
        return f" (within {flags['after_suspension_days']} days)"
    if code == "LOW_ATTENDANCE" and "persistent_absence_below" in flags:
        return f" (attendance below {flags['persistent_absence_below']:.0%})"
    if code == "LATE_NOTIFICATION" and "late_notification_school_days" in flags:
        return f" (more than {flags['late_notification_school_days']} school days)"
    if code == "RETURNED_QUICKLY" and "returned_within_weeks" in flags:
        return f" (within {flags['returned_within_weeks']} weeks)"
    return ""


def method_sheet(book: Book, results: dict[str, Any]) -> Worksheet:
    """The Method sheet of both workbooks."""
    ws = book.wb.create_sheet("Method")
    set_widths(ws, [34, 110])
    title(ws, "Method and thresholds")
    put(
        ws,
        2,
        1,
        "How the numbers in this workbook were made, with the settings used.",
        font=NOTE_FONT,
    )
    row = 4
    for label, text in method_lines(results):
        if text is None:
            row += 1 if row > 4 else 0
            put(ws, row, 1, label, font=HEADING_FONT)
        else:
            row = write_lines(ws, row, [(label, text)], width=110)
            continue
        row += 1
    print_setup(ws)
    return ws


# ------------------------------------------------------------------------------------ overview


def write_overview(results: dict[str, Any], path: Any, suppress: int, when: dt.datetime) -> None:
    book = Book(Workbook())
    book.wb.remove(book.wb.active)
    schools = sorted(results.get("schools", []), key=school_order)
    summary_sheet(book, results, schools, suppress)
    if results.get("monitoring"):
        since_last_term_sheet(book, results)
    schools_sheet(book, results, schools, suppress)
    funnel_sheet(book, results, schools, suppress)
    trust_sheets(book, results, suppress)
    exits_sheet(book, results)
    letters_sheet(book, results)
    method_sheet(book, results)
    issues_sheet(book, results)
    book.save(path, when, "Off-rolling audit: overview")


def school_order(school: dict[str, Any]) -> tuple:
    """Selected schools first, then the most unusual EHE counts."""
    ehe = school.get("ehe") or {}
    p = ehe.get("p")
    return (
        not school.get("audit"),
        BAND_ORDER.get(ehe.get("band"), 9),
        p if p is not None else 2.0,
        str(school.get("urn")),
    )


def summary_sheet(
    book: Book, results: dict[str, Any], schools: list[dict[str, Any]], suppress: int
) -> None:
    ws = book.wb.create_sheet("Summary")
    set_widths(ws, [34, 30, 45, 60])
    title(ws, "Off-rolling audit: overview")
    put(ws, 2, 1, QUESTION_NOT_PROOF, font=NOTE_FONT)
    ws.merge_cells("A2:D2")
    ws.row_dimensions[2].height = 32
    ws["A2"].alignment = WRAP_TOP
    settings = results.get("profile_settings") or {}
    baseline = results.get("baseline") or {}
    overdispersion = results.get("overdispersion") or {}
    method = results.get("method") or "nb"
    lines = [
        ("Window", window_text(results)),
        ("Profile", f"{results.get('profile', '')}: {settings.get('description', '')}"),
        ("Method", METHOD_TEXT.get(method, method)),
        ("Baseline", f"{baseline.get('kind', '?')}: {baseline.get('source', '')}"),
        ("Allowance for differences between schools (EHE)", alpha_text(overdispersion.get("ehe"))),
    ]
    row = write_lines(ws, 4, lines, width=135, merge_to=4)
    exits = results.get("exits", [])
    rag = Counter(e.get("rag") for e in exits)
    verdicts = Counter(c.get("verdict") for c in results.get("letter_clusters", []))
    selected = [s for s in schools if s.get("audit")]

    def total(outcome: str, key: str) -> float:
        return sum((s.get(outcome) or {}).get(key) or 0 for s in schools)

    def bands(outcome: str) -> str:
        found = Counter((s.get(outcome) or {}).get("band") for s in schools if s.get(outcome))
        return ", ".join(f"{found[b]} {BAND_LABEL[b]}" for b in BAND_LABEL if found[b]) or "none"

    row += 1
    put(ws, row, 1, "Headline counts", font=HEADING_FONT)
    counts: list[tuple[str, Any]] = [
        ("Schools reported", len(schools)),
        ("Schools selected for audit", len(selected)),
        ("Pupils on roll", count_text(sum(s.get("pupils") or 0 for s in schools), suppress)),
        ("Exits in the data", count_text(len(exits), suppress)),
        ("Exits to home education", count_text(int(total("ehe", "observed")), suppress)),
        ("Expected exits to home education", round(total("ehe", "expected"), 1)),
        ("Unexplained exits", count_text(int(total("unexplained", "observed")), suppress)),
        ("Schools by EHE band", bands("ehe")),
        ("Schools by unexplained band", bands("unexplained")),
        (
            "Exits rated red / amber / green",
            " / ".join(str(count_text(rag[c], suppress)) for c in ("red", "amber", "green")),
        ),
        (
            "Letter clusters",
            ", ".join(f"{n} {VERDICT_LABEL.get(v, v)}" for v, n in sorted(verdicts.items()))
            or "none",
        ),
        (
            "Warnings and data issues",
            f"{len(results.get('warnings', []))} warnings, "
            f"{len(results.get('data_issues', []))} data issues (see the Data issues sheet)",
        ),
    ]
    row += 1
    for label, value in counts:
        put(ws, row, 1, label, font=BOLD)
        put(
            ws,
            row,
            2,
            value,
            number_format=FMT_INT if isinstance(value, int) else None,
            alignment=LEFT_TOP,
        )
        ws.merge_cells(start_row=row, start_column=2, end_row=row, end_column=4)
        if isinstance(value, str):
            ws.row_dimensions[row].height = text_height(value, 135)
        row += 1
    row += 1
    put(ws, row, 1, "Schools selected for audit, and why", font=HEADING_FONT)
    row += 1
    if not selected:
        put(ws, row, 1, "No school met the profile's rules for an audit.", font=NOTE_FONT)
    else:
        for column, text in enumerate(["URN", "School", "Why selected", "Home education"], 1):
            header(ws, row, column, text)
        row += 1
        for school in selected:
            reasons = "; ".join(
                school.get("audit_reasons_text") or school.get("audit_reasons") or []
            )
            sentence = outcome_sentence(school, "ehe", suppress)
            put(ws, row, 1, str(school.get("urn", "")), alignment=WRAP_TOP)
            put(ws, row, 2, school.get("name") or "", alignment=WRAP_TOP)
            put(ws, row, 3, reasons, alignment=WRAP_TOP)
            put(ws, row, 4, sentence, alignment=WRAP_TOP)
            ws.row_dimensions[row].height = max(text_height(reasons, 45), text_height(sentence, 60))
            row += 1
    print_setup(ws)


def schools_sheet(
    book: Book, results: dict[str, Any], schools: list[dict[str, Any]], suppress: int
) -> None:
    ws = book.wb.create_sheet("Schools")
    codes = flag_codes(results)
    has_y10 = any(s.get("y10_loss") for s in schools)
    columns = [
        Column("URN", 9),
        Column("School", 30),
        Column("Selected for audit", 9),
        Column("Pupils", 8, FMT_INT),
        Column("EHE observed", 9, FMT_INT),
        Column("EHE expected", 9, FMT_EXPECTED),
        Column("EHE ratio (O/E)", 9, FMT_RATIO),
        Column("EHE 95% CI low", 8, FMT_RATIO),
        Column("EHE 95% CI high", 8, FMT_RATIO),
        Column("EHE band", 15),
        Column("EHE p", 8, FMT_P),
        Column("EHE q", 8, FMT_P),
        Column("EHE count that would flag (99.8%)", 10, FMT_INT),
        Column("Unexplained observed", 12, FMT_INT),
        Column("Unexplained expected", 12, FMT_EXPECTED),
        Column("Unexplained ratio", 12, FMT_RATIO),
        Column("Unexplained band", 15),
    ]
    if has_y10:
        columns.append(Column("Year 10 loss band", 15))
    columns += [
        Column("Child-level flags (all)", 9, FMT_INT),
        Column("Letters", 8, FMT_INT),
        Column("Template clusters", 9, FMT_INT),
        Column("Letters matching a school template", 10, FMT_INT),
        Column("Why selected", 50),
    ]
    columns += [Column(FLAG_SHORT.get(code, code), 10, FMT_INT) for code in codes]
    columns += [Column("Phase", 11), Column("Type", 12), Column("Trust", 24)]
    note = (
        "One row per school, selected schools first. Bands compare each school's count with "
        "what its own pupils predict; a flag is a question to ask the school, not proof of "
        "off-rolling."
    )
    if suppress > 1:
        note += (
            f" Counts from 1 to {suppress - 1} show as <{suppress}; ratios, intervals and "
            f"p/q values that would reveal them show as {SUPPRESSED_DERIVED}."
        )
    put(ws, 1, 1, note, font=NOTE_FONT)

    def rows() -> Iterator[list[Any]]:
        for s in schools:
            ehe, unexplained = s.get("ehe") or {}, s.get("unexplained") or {}
            hidden = is_suppressed(ehe.get("observed"), suppress)
            hidden_u = is_suppressed(unexplained.get("observed"), suppress)
            ci = ehe.get("ci95") or [None, None]
            counts = s.get("flag_counts") or {}
            letters = s.get("letters") or {}

            def derived(value: Any, is_hidden: bool) -> Any:
                return SUPPRESSED_DERIVED if is_hidden and value is not None else number(value)

            row = [
                str(s.get("urn", "")),
                s.get("name"),
                bool(s.get("audit")),  # the table writer shows yes/no (missing: no)
                count_text(s.get("pupils"), suppress),
                count_text(ehe.get("observed"), suppress),
                number(ehe.get("expected")),
                derived(ehe.get("ratio"), hidden),
                derived(ci[0], hidden),
                derived(ci[1], hidden),
                BAND_LABEL.get(ehe.get("band"), ehe.get("band")),
                derived(ehe.get("p"), hidden),
                derived(ehe.get("q"), hidden),
                ehe.get("flag_count_998"),
                count_text(unexplained.get("observed"), suppress),
                number(unexplained.get("expected")),
                derived(unexplained.get("ratio"), hidden_u),
                BAND_LABEL.get(unexplained.get("band"), unexplained.get("band")),
            ]
            if has_y10:
                band = (s.get("y10_loss") or {}).get("band")
                row.append(BAND_LABEL.get(band, band))
            row += [
                count_text(sum(v or 0 for v in counts.values()), suppress),
                count_text(letters.get("letters", 0), suppress),
                letters.get("clusters", 0),
                count_text(letters.get("templated", 0), suppress),
                "; ".join(s.get("audit_reasons_text") or s.get("audit_reasons") or []),
            ]
            row += [count_text(counts.get(code, 0), suppress) for code in codes]
            row += [s.get("phase"), s.get("type"), s.get("trust")]
            yield row

    table = book.table(ws, 2, columns, rows(), len(schools), freeze="C")
    headers = [c.header for c in columns]
    spans = [
        ("EHE band", "EHE observed", "EHE count that would flag (99.8%)"),
        ("Unexplained band", "Unexplained observed", "Unexplained band"),
    ]
    if has_y10:
        spans.append(("Year 10 loss band", "Year 10 loss band", "Year 10 loss band"))
    for band_column, first, last in spans:
        band_letter = get_column_letter(headers.index(band_column) + 1)
        span = (
            f"{get_column_letter(headers.index(first) + 1)}{table.first_row}:"
            f"{get_column_letter(headers.index(last) + 1)}{table.last_row}"
        )
        for band, colour in BAND_FILL.items():
            rule = FormulaRule(
                formula=[f'${band_letter}{table.first_row}="{BAND_LABEL[band]}"'], fill=fill(colour)
            )
            ws.conditional_formatting.add(span, rule)
    selected_range = table.column_range(headers.index("Selected for audit"))
    ws.conditional_formatting.add(
        selected_range,
        CellIsRule(operator="equal", formula=['"yes"'], fill=fill(RED_FILL), font=BOLD),
    )
    print_setup(ws, title_rows="2:2")
    ws.page_setup.paperSize = ws.PAPERSIZE_A3
    ws.row_dimensions[2].height = 62


# ------------------------------------------------------------------------------------ funnel


def nice_ceiling(value: float) -> float:
    """The next 1, 2, 2.5 or 5 times a power of ten at or above value (an axis maximum)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value - 1e-12:
            return step * power
    return 10 * power


def funnel_points(
    results: dict[str, Any],
    schools: list[dict[str, Any]],
    suppress: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
    """Schools to plot (not selected, selected), and how many were left out and why."""
    minimum = float(
        ((results.get("profile_settings") or {}).get("statistics") or {}).get("min_expected", 1.0)
        or 0.0
    )
    plotted, too_few, hidden = [], 0, 0
    for school in schools:
        ehe = school.get("ehe") or {}
        expected, ratio = number(ehe.get("expected")), number(ehe.get("ratio"))
        if expected is None or ratio is None or expected <= 0 or expected < minimum:
            too_few += 1
            continue
        if is_suppressed(ehe.get("observed"), suppress):
            hidden += 1
            continue
        plotted.append(school)
    plotted.sort(key=lambda s: (s["ehe"]["expected"], str(s.get("urn"))))
    return (
        [s for s in plotted if not s.get("audit")],
        [s for s in plotted if s.get("audit")],
        too_few,
        hidden,
    )


FUNNEL_GRID = 120
FUNNEL_HEADER_ROW = 36


def funnel_limit_grid(
    expected: list[float], alpha: float, p998: float, p95: float
) -> tuple[list[float], list[list[float]]]:
    """The funnel's limit lines: a log-spaced grid of expected counts spanning the schools'
    (whole decades), and the lower 99.8%, lower 95%, upper 95% and upper 99.8% limits of the
    ratio along it, as plain floats (a NumPy scalar would be written as its repr)."""
    if expected:
        x_min = 10 ** math.floor(math.log10(min(expected)))
        x_max = 10 ** math.ceil(math.log10(max(expected) * 1.05))
    else:
        x_min, x_max = 1.0, 100.0
    grid = np.geomspace(x_min, x_max, FUNNEL_GRID)
    probs = (p998, p95, 1 - p95, 1 - p998)
    limits = funnel_limits(grid, alpha, probs)
    return grid.tolist(), [limits[p].tolist() for p in probs]


def funnel_rows(
    points: list[tuple[dict[str, Any], float, float, str | None]],
    grid_values: list[float],
    limit_values: list[list[float]],
    *lines: float | None,
) -> Iterator[list[Any]]:
    """A funnel's data table: each plotted school (URN, name, expected, ratio, band in words,
    selected) beside the limit grid (E, the four limits, 1.0 and any further level `lines`)."""
    for i in range(max(len(points), len(grid_values))):
        row: list[Any] = [None] * 6
        if i < len(points):
            school, expected, ratio, band = points[i]
            row = [
                str(school.get("urn", "")),
                school.get("name"),
                expected,
                ratio,
                BAND_LABEL.get(band, band),
                bool(school.get("audit")),
            ]
        if i < len(grid_values):
            row += [grid_values[i], *(limit[i] for limit in limit_values), 1.0, *lines]
        yield row


def funnel_sheet(
    book: Book, results: dict[str, Any], schools: list[dict[str, Any]], suppress: int
) -> None:
    ws = book.wb.create_sheet("Funnel")
    others, selected, too_few, hidden = funnel_points(results, schools, suppress)
    stats = (results.get("profile_settings") or {}).get("statistics") or {}
    p998, p95 = float(stats.get("p_high_998", 0.001)), float(stats.get("p_high_95", 0.025))
    method = results.get("method") or "nb"
    alpha = number(((results.get("overdispersion") or {}).get("ehe") or {}).get("alpha")) or 0.0
    if method == "poisson":
        alpha = 0.0
    title(ws, "Funnel plot: exits to home education against what each school's pupils predict")
    note = (
        f"Each dot is a school: across, the exits its pupils predict (log scale); up, observed "
        f"divided by expected. Lines: the 95% and 99.8% limits for a school of that size "
        f"(allowance for differences between schools alpha = {alpha:.3f}). Red dots: schools "
        "selected for audit (for any reason, not only this count)."
    )
    if too_few:
        note += f" {too_few} school(s) with too few expected exits to judge are not plotted."
    if hidden:
        note += (
            f" {hidden} school(s) with fewer than {suppress} exits are not plotted (suppression)."
        )
    note_row(ws, 2, note, 12, text_height(note, 125))
    points = others + selected
    expected = [s["ehe"]["expected"] for s in points]
    ratios = [s["ehe"]["ratio"] for s in points]
    grid_values, limit_values = funnel_limit_grid(expected, alpha, p998, p95)
    columns = [
        Column("URN", 9),
        Column("School", 30),
        Column("Expected (E)", 10, FMT_EXPECTED),
        Column("Ratio (O/E)", 10, FMT_RATIO),
        Column("Band", 15),
        Column("Selected for audit", 9),
        Column("Limit grid: E", 10, "0.00"),
        Column("Lower 99.8%", 10, FMT_RATIO),
        Column("Lower 95%", 10, FMT_RATIO),
        Column("Upper 95%", 10, FMT_RATIO),
        Column("Upper 99.8%", 10, FMT_RATIO),
        Column("As expected", 10, FMT_RATIO),
    ]
    count = max(len(points), FUNNEL_GRID)
    plotted = [
        (s, e, r, s["ehe"].get("band")) for s, e, r in zip(points, expected, ratios, strict=True)
    ]
    rows = funnel_rows(plotted, grid_values, limit_values)
    table = book.table(ws, FUNNEL_HEADER_ROW, columns, rows, count, freeze=None)
    if points:
        y_top = nice_ceiling(max(max(ratios) * 1.05, 2.0))
        ws.add_chart(
            funnel_chart(
                ws,
                table.first_row,
                len(others),
                len(selected),
                (grid_values[0], grid_values[-1]),
                y_top,
                alpha,
            ),
            "A4",
        )
    else:
        put(ws, 4, 1, "No school had enough expected exits to plot.", font=NOTE_FONT)
    print_setup(ws)


def funnel_chart(
    ws: Worksheet,
    first: int,
    others: int,
    selected: int,
    x_range: tuple[float, float],
    y_top: float,
    alpha: float,
) -> ScatterChart:
    """Native scatter chart: schools, selected schools, limit lines (data from the Funnel sheet)."""
    chart = ScatterChart()
    chart.title = "Home education: observed / expected, by school size"
    chart.style = 2
    chart.height, chart.width = 15.5, 27
    chart.scatterStyle = "lineMarker"
    chart.x_axis.title = "Expected exits to home education (E, log scale)"
    chart.y_axis.title = "Observed / expected (1 = as expected)"
    chart.x_axis.scaling.logBase = 10
    chart.x_axis.scaling.min, chart.x_axis.scaling.max = x_range
    chart.y_axis.scaling.min, chart.y_axis.scaling.max = 0, y_top
    chart.x_axis.number_format = "General"
    chart.y_axis.number_format = "0.0"
    chart.x_axis.delete = chart.y_axis.delete = False
    chart.legend.position = "b"
    chart.layout = Layout(manualLayout=ManualLayout(x=0.06, y=0.1, w=0.9, h=0.68))
    grid_last = first + FUNNEL_GRID - 1
    lines = [
        (11, "Upper 99.8% limit", "C00000", "solid"),
        (10, "Upper 95% limit", "ED7D31", "dash"),
        (12, "As expected (ratio 1)", "7F7F7F", "sysDot"),
        (9, "Lower 95% limit", "ED7D31", "dash"),
        (8, "Lower 99.8% limit", "C00000", "solid"),
    ]
    for column, name, colour, dash in lines:
        series = Series(
            Reference(ws, min_col=column, min_row=first, max_row=grid_last),
            Reference(ws, min_col=7, min_row=first, max_row=grid_last),
            title=name,
        )
        series.marker.symbol = "none"
        series.smooth = False
        series.graphicalProperties.line.solidFill = colour
        series.graphicalProperties.line.width = 19050
        series.graphicalProperties.line.dashStyle = dash
        chart.series.append(series)
    for start, size, name, colour, marker_size in (
        (first, others, "Schools", "5B9BD5", 5),
        (first + others, selected, "Selected for audit", "C00000", 8),
    ):
        if not size:
            continue
        series = Series(
            Reference(ws, min_col=4, min_row=start, max_row=start + size - 1),
            Reference(ws, min_col=3, min_row=start, max_row=start + size - 1),
            title=name,
        )
        series.marker.symbol = "circle"
        series.marker.size = marker_size
        series.marker.graphicalProperties.solidFill = colour
        series.marker.graphicalProperties.line.solidFill = colour
        series.graphicalProperties.line.noFill = True
        chart.series.append(series)
    return chart


# ------------------------------------------------------------------------------------ exits etc.

SCHOOL_NAME = "school_name"  # not an exit field: the name of the exit's school, found by URN

EXIT_COLUMNS = [
    Column("Pupil id", 16, key="pupil_id"),
    Column("URN", 9, key="urn"),
    Column("School", 28, key=SCHOOL_NAME),
    Column("Exit date", 11, FMT_DATE, date=True, key="exit_date"),
    Column("In window", 8, key="in_window"),
    Column("Year", 6, key="year_group"),
    Column("Destination", 18, key="destination"),
    Column("Ground", 9, key="ground"),
    Column("Explained", 9, key="explained"),
    Column("Why", 42, key="why"),
    Column("Flags", 34, key="flags"),
    Column("RAG", 7, key="rag"),
    Column("RAG score", 7, FMT_INT, key="rag_score"),
    Column("RAG why", 34, key="rag_why"),
    Column("Letter", 9, key="letter_id"),
    Column("SEN", 6, key="sen_provision"),
    Column("Disadvantaged", 9, key="disadvantaged"),
    Column("Social care", 9, key="social_care"),
    Column("Reason given", 20, key="reason"),
]
EXIT_KEYS = tuple(c.key for c in EXIT_COLUMNS if c.key != SCHOOL_NAME)
_exit_values = itemgetter(*EXIT_KEYS)
_FLAGS_AT = EXIT_KEYS.index("flags")
_SCHOOL_AT = key_index(EXIT_COLUMNS, SCHOOL_NAME)


def exit_row(e: dict[str, Any], school_name: str | None) -> list[Any]:
    """One exit as a row of the Exits sheet (EXIT_COLUMNS); a pack's Pupils picks its columns.

    Yes/no values stay booleans: the table writer shows them as yes/no.
    """
    try:
        values = list(_exit_values(e))
    except KeyError:  # an older or partial results document
        values = [e.get(key) for key in EXIT_KEYS]
    flags = values[_FLAGS_AT]
    if isinstance(flags, list):
        values[_FLAGS_AT] = "; ".join(map(str, flags))
    values.insert(_SCHOOL_AT, school_name)
    return values


PUPIL_DATA_NOTE = (
    "Pupil-level data: one row per deletion from a school roll. Not for sharing outside the "
    "LA: suppression of small counts does not apply to this sheet."
)


def rag_formats(ws: Worksheet, cell_range: str) -> None:
    for rag, colour in RAG_FILL.items():
        ws.conditional_formatting.add(
            cell_range, CellIsRule(operator="equal", formula=[f'"{rag}"'], fill=fill(colour))
        )


def exits_sheet(book: Book, results: dict[str, Any]) -> None:
    ws = book.wb.create_sheet("Exits")
    names = {str(s.get("urn")): s.get("name") for s in results.get("schools", [])}
    exits: Sequence[dict[str, Any]] = results.get("exits", [])
    table = book.table(
        ws,
        2,
        EXIT_COLUMNS,
        (exit_row(e, names.get(str(e.get("urn")))) for e in exits),
        len(exits),
        freeze="B",
    )
    note = PUPIL_DATA_NOTE
    if table.cut:
        note += (
            f" Excel holds at most {table.count:,} rows here: the last {table.cut:,} exits "
            "are only in exits.csv and results.json."
        )
    put(ws, 1, 1, note, font=NOTE_FONT, fill_colour=NOTE_COLOUR)
    rag_formats(ws, table.key_range("rag"))
    print_setup(ws, title_rows="2:2")


SCHOOL_ONLY_LABEL = {
    "UPN": "the pupil's UPN",
    "TUTOR_GROUP": "the tutor group",
    "LETTERHEAD": "the school's letterhead",
    "DOCUMENT_AUTHOR": "the school's document author",
    "DOCUMENT_COMPANY": "the school as document company",
}
LINK_LABEL = {
    "words": "by their words",
    "containment": "by containing the form under their own additions",
    "passages": "by long passages shared in order",
    "characters": "by characters (scans read by OCR)",
}


def templated_letters_evidence(
    cluster: dict[str, Any], urn: str, results: dict[str, Any]
) -> str | None:
    """Why this school template selected school `urn` under TEMPLATED_LETTERS (the profile's
    two thresholds: families, or fewer families on a form with school-only details), or None
    when it did not."""
    schools = {str(s.get("urn")): s for s in results.get("schools", [])}
    if cluster.get("verdict") != "school_template":
        return None
    if "TEMPLATED_LETTERS" not in (schools.get(urn, {}).get("audit_reasons") or []):
        return None
    rules = ((results.get("profile_settings") or {}).get("select") or {}).get("rules") or []
    rule = next((r for r in rules if r.get("code") == "TEMPLATED_LETTERS"), {})
    plain, weighted = rule.get("letters_min_families"), rule.get("letters_min_families_school_only")
    here = int((cluster.get("school_families") or {}).get(urn, 0))
    carried = int((cluster.get("school_only_families") or {}).get(urn, 0))
    if plain is not None and here >= int(plain):
        return f"{here} families at this school used it (the profile selects from {plain})"
    if weighted is not None and carried >= int(weighted):
        codes = [str(d.get("code")) for d in cluster.get("school_only") or []]
        details = [SCHOOL_ONLY_LABEL.get(code, code) for code in codes] or ["school-only details"]
        carrying = (
            details[0] if len(details) == 1 else ", ".join(details[:-1]) + " and " + details[-1]
        )
        return (
            f"{carried} families at this school signed a form carrying {carrying}: details "
            f"only the school holds, so {weighted} families select it ({plain} on a plainer "
            "template)"
        )
    return None


def links_text(links: dict[str, int]) -> str:
    """'12 letters by their words, 2 by characters (scans read by OCR)'."""
    parts = [f"{n} {LINK_LABEL.get(kind, kind)}" for kind, n in links.items() if n]
    return ("; ".join(parts) + " (each letter's closest match)") if parts else ""


def families_text(cluster: dict[str, Any]) -> str:
    """How the cluster's families were recognised, and the families with several letters."""
    recognised = cluster.get("families_recognised") or {}
    text = "; ".join(f"{n} by {how}" for how, n in recognised.items())
    for link in cluster.get("family_links") or []:
        text += (
            f". Letters {', '.join(map(str, link.get('letters') or []))} are one family's "
            f"({', '.join(link.get('how') or [])}): one voice, counted once"
        )
    return text


def letters_sheet(book: Book, results: dict[str, Any]) -> None:
    ws = book.wb.create_sheet("Letters")
    clusters = results.get("letter_clusters", [])
    names = {str(s.get("urn")): s.get("name") for s in results.get("schools", [])}
    columns = [
        Column("Cluster", 8),
        Column("Verdict", 16),
        Column("Lead school URN", 9),
        Column("Lead school", 26),
        Column("Families", 8, FMT_INT),
        Column("Schools", 8, FMT_INT),
        Column("Families by school (URN: families)", 26, wrap=True),
        Column("Trusts", 26, wrap=True),
        Column("Mean similarity", 10, FMT_RATIO),
        Column("Lowest similarity", 10, FMT_RATIO),
        Column("First letter", 11, FMT_DATE, date=True),
        Column("Last letter", 11, FMT_DATE, date=True),
        Column("Why it looks school-written", 60, wrap=True),
        Column("School-only details on the form", 30, wrap=True),
        Column("Selected its lead school because", 40, wrap=True),
        Column("Families recognised", 40, wrap=True),
        Column("How letters matched", 40, wrap=True),
        Column("Letters", 30, wrap=True),
    ]

    def rows() -> Iterator[list[Any]]:
        for c in clusters:
            families = c.get("school_families") or {}
            yield [
                c.get("cluster_id"),
                VERDICT_LABEL.get(c.get("verdict"), c.get("verdict")),
                c.get("urn"),
                names.get(str(c.get("urn"))),
                c.get("families"),
                c.get("schools"),
                "; ".join(f"{urn}: {n}" for urn, n in families.items()),
                "; ".join(c.get("trusts") or []),
                number(c.get("similarity")),
                number(c.get("similarity_min")),
                c.get("date_from"),
                c.get("date_to"),
                "\n".join(str(s.get("detail", "")) for s in c.get("signals") or []),
                "\n".join(str(d.get("detail", "")) for d in c.get("school_only") or []),
                templated_letters_evidence(c, str(c.get("urn")), results),
                families_text(c),
                links_text(c.get("links") or {}),
                ", ".join(map(str, c.get("letters") or [])),
            ]

    put(
        ws,
        1,
        1,
        "Groups of parents' letters that share wording. A school template is a question "
        "to ask (who wrote the letter?); a public template is innocent.",
        font=NOTE_FONT,
    )
    book.table(ws, 2, columns, rows(), len(clusters), freeze="B")
    print_setup(ws, title_rows="2:2")


def issues_sheet(book: Book, results: dict[str, Any]) -> None:
    ws = book.wb.create_sheet("Data issues")
    issues = results.get("data_issues", [])
    warnings = results.get("warnings", [])
    columns = [
        Column("From", 10),
        Column("File", 18),
        Column("Row", 8, FMT_INT),
        Column("Column", 16),
        Column("Message", 70, wrap=True),
        Column("Hint", 50, wrap=True),
    ]

    def rows() -> Iterator[list[Any]]:
        for issue in issues:
            yield [
                "loading",
                issue.get("file"),
                issue.get("row"),
                issue.get("column"),
                issue.get("message"),
                issue.get("hint"),
            ]
        for warning in warnings:
            yield ["the run", None, None, None, warning, None]

    put(
        ws,
        1,
        1,
        "Warnings from reading the data and from the run. None of them stopped the audit; "
        "each may affect the numbers for the schools or pupils it names.",
        font=NOTE_FONT,
    )
    book.table(ws, 2, columns, rows(), len(issues) + len(warnings), freeze=None)
    print_setup(ws, title_rows="2:2")


# the self-review's sheet and Method lines use this module's wording: imported last
from offroll_audit.workbooks.trust import (  # noqa: E402
    self_review_method_lines,
    trust_sheets,
)
