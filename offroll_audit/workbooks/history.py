"""Termly monitoring in the workbooks: a school's terms (pack "History" sheet: a native chart of
observed against expected by term with the 95% and 99.8% limits, the table beneath it, and
the accumulated evidence in words), the overview's "Since last term" sheet, and the Method
sheet's account of the rules over time. All of it is read from results.json."""

from __future__ import annotations

from typing import Any

from openpyxl.chart import LineChart, Reference
from openpyxl.worksheet.worksheet import Worksheet

from offroll_audit.workbooks.style import (
    BAND_LABEL,
    BOX,
    DARK,
    FMT_EXPECTED,
    FMT_INT,
    FMT_RATIO,
    HEADING_FONT,
    NOTE_FONT,
    NUMBER_COLUMN,
    WRAP_TEXT_COLUMN,
    WRAP_TOP,
    Book,
    count_text,
    header,
    note_row,
    print_setup,
    put,
    set_widths,
    text_height,
    title,
)

OUTCOMES = {
    "ehe": "Exits to home education",
    "unexplained": "Unexplained exits",
    "ehe_vulnerable": "Vulnerable pupils in Years 9-11 to home education",
}
WIDTHS = [11, 10, 10, 9, 11, 11, 20, 12]
WIDE = sum(WIDTHS) - 6  # a merged row across the table, less a margin for the font

STATUS_TEXT = {
    "newly": "Newly selected this term",
    "still": "Still selected",
    "no_longer": "No longer selected",
}


def history_sheet(book: Book, school: dict[str, Any], suppress: int) -> None:
    """The pack's History sheet, for termly data: per outcome a chart and a table by term."""
    history = school.get("history") or []
    ws = book.wb.create_sheet("History")
    set_widths(ws, WIDTHS)
    title(ws, "Term by term: observed against expected, with the limits")
    note = (
        "Each term is judged against what this school's own pupils that term would predict. "
        "A single term beyond the 95% limit happens by chance to about 1 school in 40; what "
        "matters is a count that stays high, or a large excess now. The limits are counts: "
        "the expected count times the funnel limits of that term."
    )
    note_row(ws, 2, note, 8, 45)
    row = 4
    monitoring = school.get("monitoring") or {}
    for outcome, name in OUTCOMES.items():
        terms = [h for h in history if h.get(outcome)]
        if not terms:
            continue
        put(ws, row, 1, name, font=HEADING_FONT)
        row += 1
        summary = (monitoring.get(outcome) or {}).get("summary")
        if summary:
            put(ws, row, 1, summary[0].upper() + summary[1:] + ".", alignment=WRAP_TOP)
            ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=8)
            ws.row_dimensions[row].height = text_height(summary, WIDE)
            row += 1
        siblings = _siblings_note(terms, outcome)
        if siblings:
            put(ws, row, 1, siblings, font=NOTE_FONT, alignment=WRAP_TOP)
            ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=8)
            ws.row_dimensions[row].height = text_height(siblings, WIDE)
            row += 1
        chart_row = row
        row += 17  # the chart sits above its table
        row = _history_table(ws, row, terms, outcome, suppress)
        _history_chart(ws, chart_row, row - len(terms), len(terms), name, suppress)
        row += 2
    if row == 4:
        put(ws, 4, 1, "No earlier terms in the data.", font=NOTE_FONT)
    print_setup(ws)


def _siblings_note(terms: list[dict[str, Any]], outcome: str) -> str:
    """Say when a count includes siblings: the tests counted each family's decision once."""
    pupils = sum(t[outcome]["observed"] for t in terms)
    decisions = sum(t[outcome].get("decisions", t[outcome]["observed"]) for t in terms)
    if decisions >= pupils:
        return ""
    return (
        f"These counts include siblings: {pupils} pupils left in {decisions} family decisions "
        "over these terms. The tests count each family's decision once, so siblings leaving "
        "together are not treated as independent events."
    )


def _history_table(
    ws: Worksheet, row: int, terms: list[dict[str, Any]], outcome: str, suppress: int
) -> int:
    """Term, observed, expected, ratio, the two upper limits as counts, band, selected."""
    headings = [
        "Term",
        "Observed",
        "Expected",
        "Ratio",
        "95% limit",
        "99.8% limit",
        "Band",
        "Selected",
    ]
    for column, text in enumerate(headings, 1):
        header(ws, row, column, text)
    row += 1
    for term in terms:
        block = term[outcome]
        expected = block.get("expected") or 0.0
        upper = [
            (block.get(key) or 0.0) * expected if block.get(key) is not None else None
            for key in ("limit95_high", "limit998_high")
        ]
        hidden = suppress > 1 and 0 < block["observed"] < suppress
        values = [
            term["term"],
            count_text(block["observed"], suppress),
            expected,
            None if hidden else block.get("ratio"),
            *upper,
            BAND_LABEL.get(block.get("band"), block.get("band")),
            "yes" if term.get("audit") else "",
        ]
        formats = [None, FMT_INT, FMT_EXPECTED, FMT_RATIO, FMT_EXPECTED, FMT_EXPECTED, None, None]
        for column, (value, fmt) in enumerate(zip(values, formats, strict=True), 1):
            align = NUMBER_COLUMN if fmt else WRAP_TEXT_COLUMN
            put(ws, row, column, value, number_format=fmt, border=BOX, alignment=align)
        row += 1
    return row


def _history_chart(
    ws: Worksheet, anchor: int, first: int, count: int, name: str, suppress: int
) -> None:
    """A native line chart by term: observed, expected, and the 95% and 99.8% limits."""
    chart = LineChart()
    chart.title = f"{name}: observed and expected by term"
    chart.style = 2
    chart.height, chart.width = 8, 18
    columns = (2, 3, 5, 6) if suppress <= 1 else (3, 5, 6)  # suppressed counts stay off charts
    for column in columns:
        chart.add_data(
            Reference(ws, min_col=column, min_row=first - 1, max_row=first + count - 1),
            titles_from_data=True,
        )
    chart.set_categories(Reference(ws, min_col=1, min_row=first, max_row=first + count - 1))
    styles = {
        2: (DARK, "solid", 28000),
        3: ("7F7F7F", "solid", 19000),
        5: ("C55A11", "dash", 15000),
        6: ("C00000", "sysDot", 15000),
    }
    for series, column in zip(chart.series, columns, strict=True):
        colour, dash, width = styles[column]
        series.graphicalProperties.line.solidFill = colour
        series.graphicalProperties.line.dashStyle = dash
        series.graphicalProperties.line.width = width
        series.smooth = False
    chart.y_axis.title = "Exits"
    chart.y_axis.number_format = "0"
    chart.x_axis.delete = chart.y_axis.delete = False
    chart.legend.position = "b"
    ws.add_chart(chart, f"A{anchor}")


def since_last_term_sheet(book: Book, results: dict[str, Any]) -> None:
    """The overview's view of change: schools newly, still and no longer selected, each with
    the term its selection started and the reasons."""
    monitoring = results.get("monitoring") or {}
    since = monitoring.get("since_last_term") or {}
    ws = book.wb.create_sheet("Since last term")
    set_widths(ws, [10, 38, 14, 60])
    title(
        ws,
        f"Since last term ({monitoring.get('previous_term', '?')} to "
        f"{monitoring.get('audited_term', '?')})",
    )
    note = (
        "Selection at each term uses what the data held up to that term. 'Started' is the "
        "first term of the school's current run of selection (for a school no longer selected, "
        "of the run that ended last term). A school no longer selected is not cleared: its "
        "History sheet shows what happened."
    )
    note_row(ws, 2, note, 4, 45)
    row = 4
    for status, heading in STATUS_TEXT.items():
        schools = since.get(status) or []
        put(ws, row, 1, f"{heading} ({len(schools)})", font=HEADING_FONT)
        row += 1
        if not schools:
            put(ws, row, 1, "None.", font=NOTE_FONT)
            row += 2
            continue
        for column, text in enumerate(["URN", "School", "Started", "Reasons"], 1):
            header(ws, row, column, text)
        row += 1
        for school in schools:
            values = [school["urn"], school.get("name") or "", school.get("started") or ""]
            values.append(", ".join(school.get("reasons") or []))
            for column, value in enumerate(values, 1):
                put(ws, row, column, value, border=BOX, alignment=WRAP_TEXT_COLUMN)
            row += 1
        row += 1
    print_setup(ws)


def monitoring_method_lines(results: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The Method sheet's account of termly monitoring (empty for a single-window audit)."""
    monitoring = results.get("monitoring")
    if not monitoring:
        return []
    terms = monitoring.get("terms") or []
    lines: list[tuple[str, str | None]] = [("Termly monitoring", None)]
    lines.append(
        (
            "Terms seen",
            f"{len(terms)} terms, {terms[0]} to {terms[-1]}; each is judged against its own "
            "census and exposure within the term, then the evidence accumulates.",
        )
    )
    lines.append(
        (
            "Pooled tests",
            "Over the last year (three terms) and over all terms: observed and expected summed, "
            "with the between-school allowance (alpha) fitted on the pooled counts across "
            "schools, not on one term: "
            + "; ".join(
                f"{OUTCOMES.get(o, o).lower()} alpha {a.get('year')} (year), "
                f"{a.get('history')} (all terms)"
                for o, a in (monitoring.get("pooled_alpha") or {}).items()
            ),
        )
    )
    for outcome, design in (monitoring.get("cusum") or {}).items():
        lines.append(
            (
                f"CUSUM: {OUTCOMES.get(outcome, outcome).lower()}",
                f"a running check per school for a rise to {design['rho']:g} times the "
                "expected rate (negative binomial steps), restarted after each signal; its "
                "limit depends on the school's expected count per term and was set by "
                "simulating ordinary schools (each with a lasting school effect, alpha "
                f"{design['alpha']}) so that one signals at most "
                f"{design['design_signals_per_school_year']:g} times per school-year "
                f"(about once in {round(1 / design['design_signals_per_school_year']):,} "
                "school-years).",
            )
        )
    lines.append(
        (
            "Families",
            "Siblings who leave together are one family's decision: the tests count each "
            "family (family_id) once and scale the expected count by the same factor, so five "
            "siblings leaving on one day are not five independent events.",
        )
    )
    lines.append(
        (
            "Persistence",
            "how many of the last six terms were beyond the 95% limit, and how many in a row.",
        )
    )
    return lines
