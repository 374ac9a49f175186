"""Self-review and the trust roll-up in the workbooks: the overview's "Trust" sheet (the trust
against its reference level overall and by phase, its own level, its schools ranked both ways,
and a funnel of its schools against the reference), the Method sheet's lines on how the
baseline was chosen and what a self-review rests on, and the pack Cover's cautions.

All of it is read from results.json (`baseline`, `trusts`), so it can never disagree with it.
"""

from __future__ import annotations

from typing import Any

from openpyxl.chart import Reference, Series

from offroll_audit.self_review import CANNOT_TELL
from offroll_audit.trusts import OUTCOMES
from offroll_audit.workbooks.overview import (
    FUNNEL_GRID,
    OUTCOME_NAME,
    SUPPRESSED_DERIVED,
    funnel_chart,
    funnel_limit_grid,
    funnel_rows,
    nice_ceiling,
)
from offroll_audit.workbooks.style import (
    BAND_LABEL,
    BOLD,
    BOX,
    FMT_EXPECTED,
    FMT_INT,
    FMT_RATIO,
    HEADING_FONT,
    NOTE_COLOUR,
    NOTE_FONT,
    NUMBER_COLUMN,
    WRAP_TEXT_COLUMN,
    WRAP_TOP,
    Book,
    Column,
    count_text,
    header,
    is_suppressed,
    note_row,
    number,
    print_setup,
    put,
    set_widths,
    text_height,
    title,
    write_lines,
)

LEVEL_HOW = {
    "estimated": "estimated from the schools in the data",
    "anchored": "anchored to the LA's published rate (--la-rates)",
    "national": "the national level (too few schools or exits to estimate one)",
}
CHART_ROWS = 32  # the funnel chart's height in rows, above its data table
OWN_RISKS_INTRO = (
    "The shape file gives no relative risk for these, so they were estimated from your own "
    "pupils, comparing pupils at the same school (a school's overall excess cannot enter "
    "them) and leaning towards no difference where exits are few: "
)


def trust_sheets(book: Book, results: dict[str, Any], suppress: int) -> None:
    """A "Trust" sheet for each rolled-up trust in results.json (none: no sheet)."""
    for index, trust in enumerate(results.get("trusts") or []):
        trust_sheet(book, results, trust, suppress, "Trust" if index == 0 else f"Trust {index + 1}")


def trust_sheet(
    book: Book, results: dict[str, Any], trust: dict[str, Any], suppress: int, name: str
) -> None:
    ws = book.wb.create_sheet(name)
    set_widths(ws, [22, 30, 11, 10, 11, 11, 11, 10, 11, 11, 11, 11, 11, 12, 12, 12, 12])
    title(ws, f"Trust: {trust.get('trust', '')}")
    reference = (trust.get("reference") or {}).get("text", "the reference")
    note = (
        f"The trust's {trust.get('schools', 0)} school(s) together, against {reference}, and "
        "each school twice: against the level of the trust's other schools (what a "
        "self-review judges by) and against that reference. A flag is a question to ask, "
        "not proof of off-rolling."
    )
    note_row(ws, 2, note, 12, text_height(note, 125))
    row = _lines_table(ws, 4, trust, reference, suppress)
    row = _own_levels(ws, row + 1, trust)
    put(ws, row, 1, "What a self-review cannot tell", font=BOLD, alignment=WRAP_TOP)
    put(ws, row, 2, CANNOT_TELL, alignment=WRAP_TOP, fill_colour=NOTE_COLOUR)
    ws.merge_cells(start_row=row, start_column=2, end_row=row, end_column=12)
    ws.row_dimensions[row].height = text_height(CANNOT_TELL, 125)
    row = _ranking_table(ws, row + 2, trust, suppress)
    _funnel(book, ws, row + 1, results, trust, suppress)
    print_setup(ws)


def _lines_table(ws: Any, row: int, trust: dict[str, Any], reference: str, suppress: int) -> int:
    """The trust line overall and by phase, per outcome, against the reference."""
    put(ws, row, 1, f"The trust against {reference}", font=HEADING_FONT)
    row += 1
    headings = ["Outcome", "Phase", "Schools", "Pupils", "Observed", "Expected", "Ratio (O/E)"]
    headings += ["95% CI low", "95% CI high"]
    for column, text in enumerate(headings, 1):
        header(ws, row, column, text)
    ws.row_dimensions[row].height = 30
    row += 1
    formats = [None, None, FMT_INT, FMT_INT, FMT_INT, FMT_EXPECTED, FMT_RATIO, FMT_RATIO]
    formats.append(FMT_RATIO)
    for outcome in OUTCOMES:
        block = trust.get(outcome)
        if not block:
            continue
        scopes = [("all schools", block["all"]), *(block.get("by_phase") or {}).items()]
        for scope, line in scopes:
            hidden = is_suppressed(line.get("observed"), suppress)
            ci = line.get("ci95") or [None, None]
            derived = [SUPPRESSED_DERIVED] * 3 if hidden else [line.get("ratio"), *ci]
            values = [
                OUTCOME_NAME.get(outcome, outcome),
                scope,
                line.get("schools"),
                count_text(line.get("pupils"), suppress),
                count_text(line.get("observed"), suppress),
                line.get("expected"),
                *derived,
            ]
            for column, (value, fmt) in enumerate(zip(values, formats, strict=True), 1):
                align = NUMBER_COLUMN if fmt else WRAP_TEXT_COLUMN
                put(ws, row, column, value, number_format=fmt, border=BOX, alignment=align)
            row += 1
    summary = trust.get("summary") or ""
    put(ws, row, 1, summary, font=NOTE_FONT, alignment=WRAP_TOP)
    ws.merge_cells(start_row=row, start_column=1, end_row=row, end_column=12)
    ws.row_dimensions[row].height = text_height(summary, 125)
    return row + 1


def _own_levels(ws: Any, row: int, trust: dict[str, Any]) -> int:
    """The trust's own level against the reference, per outcome, in words."""
    put(ws, row, 1, "The trust's own level", font=HEADING_FONT)
    lines = []
    for outcome in OUTCOMES:
        block = trust.get(outcome)
        if not block:
            continue
        lines.append((OUTCOME_NAME.get(outcome, outcome), level_text(block)))
    return write_lines(ws, row + 1, lines, width=125, merge_to=12) + 1


def level_text(block: dict[str, Any]) -> str:
    """'1.19 times the reference (95% interval 0.75 to 1.91), from 4 schools ...'."""
    level = block.get("own_level")
    if not level or level.get("value") is None:
        return block.get("own_level_note") or "not estimated"
    low, high = level.get("ci95") or [None, None]
    text = f"{level['value']:.2f} times the reference"
    if low is not None and high is not None:
        text += f" (95% interval {low:.2f} to {high:.2f})"
    text += f", from {level.get('schools')} school(s) with {level.get('exits'):g} exits"
    if level.get("set_aside"):
        text += f"; set aside as beyond chance: {', '.join(level['set_aside'])}"
    return text + "."


RANK_HEADINGS = [
    "Rank (own level)",
    "School",
    "URN",
    "Phase",
    "Selected for audit",
    "EHE observed",
    "EHE expected (own level)",
    "EHE ratio (own level)",
    "EHE band (own level)",
    "EHE expected (reference)",
    "EHE ratio (reference)",
    "EHE band (reference)",
    "Rank (reference)",
    "Unexplained observed",
    "Unexplained ratio (own level)",
    "Unexplained band (own level)",
    "Unexplained band (reference)",
]


def _ranking_table(ws: Any, row: int, trust: dict[str, Any], suppress: int) -> int:
    """The trust's schools, most unusual against the trust's own level first."""
    put(ws, row, 1, "The trust's schools, ranked", font=HEADING_FONT)
    row += 1
    for column, text in enumerate(RANK_HEADINGS, 1):
        header(ws, row, column, text)
    ws.row_dimensions[row].height = 45
    row += 1
    fmts = [FMT_INT, None, None, None, None, FMT_INT, FMT_EXPECTED, FMT_RATIO, None]
    fmts += [FMT_EXPECTED, FMT_RATIO, None, FMT_INT, FMT_INT, FMT_RATIO, None, None]
    for school in trust.get("ranking") or []:
        ehe, unexplained = school.get("ehe") or {}, school.get("unexplained") or {}
        own, ref = ehe.get("own") or {}, ehe.get("reference") or {}
        u_own, u_ref = unexplained.get("own") or {}, unexplained.get("reference") or {}
        hidden = is_suppressed(ehe.get("observed"), suppress)
        hidden_u = is_suppressed(unexplained.get("observed"), suppress)
        values = [
            own.get("rank"),
            school.get("name") or "",
            school.get("urn"),
            school.get("phase") or "",
            bool(school.get("audit")),
            count_text(ehe.get("observed"), suppress),
            own.get("expected"),
            SUPPRESSED_DERIVED if hidden and own else own.get("ratio"),
            BAND_LABEL.get(own.get("band"), own.get("band") or ""),
            ref.get("expected"),
            SUPPRESSED_DERIVED if hidden and ref else ref.get("ratio"),
            BAND_LABEL.get(ref.get("band"), ref.get("band") or ""),
            ref.get("rank"),
            count_text(unexplained.get("observed"), suppress),
            SUPPRESSED_DERIVED if hidden_u and u_own else u_own.get("ratio"),
            BAND_LABEL.get(u_own.get("band"), u_own.get("band") or ""),
            BAND_LABEL.get(u_ref.get("band"), u_ref.get("band") or ""),
        ]
        for column, (value, fmt) in enumerate(zip(values, fmts, strict=True), 1):
            align = NUMBER_COLUMN if fmt else WRAP_TEXT_COLUMN
            put(ws, row, column, value, number_format=fmt, border=BOX, alignment=align)
        row += 1
    return row


def _funnel(
    book: Book, ws: Any, row: int, results: dict[str, Any], trust: dict[str, Any], suppress: int
) -> None:
    """The trust's schools on a funnel against the reference (exits to home education), with
    the trust's own level as a line: a level far above 1 is what the self-review cannot see."""
    put(ws, row, 1, "Funnel: the trust's schools against the reference", font=HEADING_FONT)
    block = trust.get("ehe") or {}
    alpha = number(block.get("reference_alpha")) or 0.0
    stats = (results.get("profile_settings") or {}).get("statistics") or {}
    p998, p95 = float(stats.get("p_high_998", 0.001)), float(stats.get("p_high_95", 0.025))
    minimum = float(stats.get("min_expected", 1.0) or 0.0)
    points = []
    for school in trust.get("ranking") or []:
        ehe = school.get("ehe") or {}
        ref = ehe.get("reference") or {}
        expected, ratio = number(ref.get("expected")), number(ref.get("ratio"))
        if expected is None or ratio is None or expected <= 0 or expected < minimum:
            continue
        if is_suppressed(ehe.get("observed"), suppress):
            continue
        points.append((school, expected, ratio, ref.get("band")))
    points.sort(key=lambda p: (bool(p[0].get("audit")), p[1], str(p[0].get("urn"))))
    others = sum(not p[0].get("audit") for p in points)
    level = number((block.get("own_level") or {}).get("value"))
    note = (
        f"Dots: the trust's schools (red: selected for audit); across, the exits to home "
        f"education expected at the reference ({block.get('reference', {}).get('text', '')}); "
        f"up, observed over expected. Lines: 95% and 99.8% limits (alpha {alpha:.3f})"
        + (f"; the trust's own level ({level:.2f})" if level is not None else "")
        + ". Schools with too few expected exits, or suppressed counts, are not plotted."
    )
    note_row(ws, row + 1, note, 12, text_height(note, 125))
    chart_row, header_row = row + 2, row + 2 + CHART_ROWS
    grid_values, limit_values = funnel_limit_grid([p[1] for p in points], alpha, p998, p95)
    columns = [
        Column("URN", 22),
        Column("School", 30),
        Column("Expected (reference)", 11, FMT_EXPECTED),
        Column("Ratio (reference)", 10, FMT_RATIO),
        Column("Band (reference)", 11),
        Column("Selected for audit", 11),
        Column("Limit grid: E", 11, "0.00"),
        Column("Lower 99.8%", 10, FMT_RATIO),
        Column("Lower 95%", 11, FMT_RATIO),
        Column("Upper 95%", 11, FMT_RATIO),
        Column("Upper 99.8%", 11, FMT_RATIO),
        Column("As expected", 11, FMT_RATIO),
        Column("Trust's own level", 11, FMT_RATIO),
    ]
    count = max(len(points), FUNNEL_GRID)
    rows = funnel_rows(points, grid_values, limit_values, level)
    table = book.table(ws, header_row, columns, rows, count, freeze=None, autofilter=False)
    if not points:
        put(ws, chart_row, 1, "No school of the trust had enough expected exits to plot.")
        return
    y_top = nice_ceiling(max(max(p[2] for p in points) * 1.05, (level or 0) * 1.1, 2.0))
    chart = funnel_chart(
        ws,
        table.first_row,
        others,
        len(points) - others,
        (grid_values[0], grid_values[-1]),
        y_top,
        alpha,
    )
    chart.title = "The trust's schools: observed / expected at the reference level"
    if level is not None:
        series = Series(
            Reference(ws, min_col=13, min_row=table.first_row, max_row=table.first_row + 119),
            Reference(ws, min_col=7, min_row=table.first_row, max_row=table.first_row + 119),
            title="Trust's own level",
        )
        series.marker.symbol = "none"
        series.smooth = False
        series.graphicalProperties.line.solidFill = "7030A0"
        series.graphicalProperties.line.width = 22000
        series.graphicalProperties.line.dashStyle = "lgDash"
        chart.series.append(series)
    ws.add_chart(chart, f"A{chart_row}")


# ------------------------------------------------------------------------------------ method


def self_review_method_lines(results: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The Method sheet's lines on the baseline choice and, for a self-review, its shape,
    each outcome's level and what it cannot tell (both workbooks: the packs say so too)."""
    baseline = results.get("baseline") or {}
    lines: list[tuple[str, str | None]] = []
    if baseline.get("why") and baseline.get("kind") == "self":
        lines.append(
            (
                "Baseline chosen automatically",
                f"{baseline.get('kind')}: {baseline['why']}. Give --baseline local, england or "
                "a baseline file to choose another.",
            )
        )
    if baseline.get("kind") == "self":
        lines.append(
            (
                "Self-review",
                f"relative risks (how SEN, disadvantage, social care and year group change the "
                f"risk) from the baseline {baseline.get('shape', 'england')}; the level of each "
                "outcome from the data, for primary and secondary years apart (the file's ratio "
                "between them is only an estimate), each school judged against the level of the "
                "other schools with that level's uncertainty in its test, and with how unsure "
                "the relative risks are (as the baseline file states, or as far as your pupils "
                "show them) where its pupils differ from those the level rests on.",
            )
        )
        for outcome, level in (baseline.get("level") or {}).items():
            note = level.get("note") or LEVEL_HOW.get(level.get("how"), "")
            label = f"Level: {OUTCOME_NAME.get(outcome, outcome)}"
            lines.append((label, note[:1].upper() + note[1:]))
        for outcome, risks in (baseline.get("own_risks") or {}).items():
            if risks:
                lines.append(
                    (
                        f"Estimated from your pupils: {OUTCOME_NAME.get(outcome, outcome)}",
                        OWN_RISKS_INTRO + "; ".join(r["sentence"] for r in risks) + ".",
                    )
                )
        lines.append(("What a self-review cannot tell", CANNOT_TELL))
    for trust in results.get("trusts") or []:
        lines.append((f"Trust: {trust.get('trust')}", trust.get("summary") or ""))
    return lines


def self_review_cautions(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The pack Cover's cautions: a level that fell back to the national one, and what a
    self-review cannot tell."""
    baseline = results.get("baseline") or {}
    if baseline.get("kind") != "self":
        return []
    cautions = [
        (f"Level: {OUTCOME_NAME.get(o, o)}", level["warning"][:1].upper() + level["warning"][1:])
        for o, level in (baseline.get("level") or {}).items()
        if level.get("warning")
    ]
    cautions.append(("Self-review", CANNOT_TELL))
    return cautions
