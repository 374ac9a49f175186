"""packs/URN.xlsx: the audit pack for one school selected for audit.

Written for the LA officer who visits the school and for the head teacher
who reads it: why the school was selected in plain English, where its exits
came from, the pupils behind the numbers, the letters, and the questions to
ask. A flag is a question, not proof, and the pack says so on its cover.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from openpyxl import Workbook
from openpyxl.cell.rich_text import CellRichText, TextBlock
from openpyxl.cell.text import InlineFont
from openpyxl.chart import BarChart, Reference
from openpyxl.worksheet.worksheet import Worksheet

from offroll_audit.classify import FLAG_TEXT
from offroll_audit.workbooks.history import history_sheet
from offroll_audit.workbooks.overview import (
    EXIT_COLUMNS,
    OUTCOME_NAME,
    OUTCOME_SHORT,
    PUPIL_DATA_NOTE,
    QUESTION_NOT_PROOF,
    SCHOOL_NAME,
    SUPPRESSED_DERIVED,
    VERDICT_LABEL,
    VERDICT_TEXT,
    exit_row,
    families_text,
    links_text,
    method_sheet,
    outcome_sentence,
    rag_formats,
    templated_letters_evidence,
    window_text,
)
from offroll_audit.workbooks.style import (
    BOLD,
    BOX,
    DARK,
    FACE,
    FMT_EXPECTED,
    FMT_INT,
    FMT_RATIO,
    HEADING_FONT,
    NOTE_COLOUR,
    NOTE_FONT,
    NUMBER_COLUMN,
    SHARED_COLOUR,
    WRAP_TOP,
    Book,
    clean_text,
    count_text,
    header,
    is_suppressed,
    note_row,
    print_setup,
    put,
    set_widths,
    text_height,
    title,
    write_lines,
)
from offroll_audit.workbooks.trust import self_review_cautions

GROUPINGS = {
    "sen_provision": ("SEN", {"E": "EHC plan", "K": "SEN support", "N": "no SEN"}),
    "disadvantaged": ("Disadvantage", {"true": "disadvantaged", "false": "not disadvantaged"}),
    "social_care": (
        "Social care",
        {
            "CLA": "looked after",
            "CPP": "child protection plan",
            "CIN": "child in need",
            "none": "none",
        },
    ),
    "key_stage": ("Key stage", {}),
}
RAG_ORDER = {"red": 0, "amber": 1, "green": 2}
# a pack is one school's: its Pupils sheet is the Exits sheet without URN and school name
_PUPIL_AT = [i for i, c in enumerate(EXIT_COLUMNS) if c.key not in ("urn", SCHOOL_NAME)]
PUPIL_COLUMNS = [EXIT_COLUMNS[i] for i in _PUPIL_AT]
SHARED_FONT = InlineFont(rFont=FACE, sz=11, b=True, color=SHARED_COLOUR)
PLAIN_FONT = InlineFont(rFont=FACE, sz=11, color="404040")
LEGEND_FONT = InlineFont(rFont=FACE, sz=11, i=True, color="595959")
EXCERPT_WIDTH = 58
MAX_SIDE_BY_SIDE = 4


@dataclass
class PackContext:
    """What every pack needs from the whole results, indexed once."""

    results: dict[str, Any]
    suppress: int
    when: dt.datetime
    exits_by_urn: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    clusters_by_urn: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    letter_school: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, results: dict[str, Any], suppress: int, when: dt.datetime) -> PackContext:
        selected = {str(s.get("urn")) for s in results.get("schools", []) if s.get("audit")}
        context = cls(results, suppress, when)
        for e in results.get("exits", []):
            urn = str(e.get("urn"))
            if e.get("letter_id"):
                context.letter_school[str(e["letter_id"])] = urn
            if urn in selected:
                context.exits_by_urn.setdefault(urn, []).append(e)
        for cluster in results.get("letter_clusters", []):
            touched = set(map(str, (cluster.get("school_families") or {}))) | {
                str(cluster.get("urn"))
            }
            for urn in sorted(touched & selected):
                context.clusters_by_urn.setdefault(urn, []).append(cluster)
        return context


def write_pack(school: dict[str, Any], context: PackContext, path: Any) -> None:
    book = Book(Workbook())
    book.wb.remove(book.wb.active)
    urn = str(school.get("urn"))
    exits = context.exits_by_urn.get(urn, [])
    clusters = context.clusters_by_urn.get(urn, [])
    cover_sheet(book, school, context, exits, clusters)
    breakdown_sheet(book, school, context.suppress)
    if school.get("history"):
        history_sheet(book, school, context.suppress)
    pupils_sheet(book, exits)
    letters_sheet(book, school, clusters, context)
    questions_sheet(book, school, context)
    method_sheet(book, context.results)
    book.save(path, context.when, f"Audit pack: {school.get('name') or urn} (URN {urn})")


# ------------------------------------------------------------------------------------ cover


def cover_sheet(
    book: Book,
    school: dict[str, Any],
    context: PackContext,
    exits: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
) -> None:
    ws = book.wb.create_sheet("Cover")
    suppress = context.suppress
    set_widths(ws, [30, 110])
    urn = str(school.get("urn"))
    title(ws, f"Audit pack: {clean_text(school.get('name') or urn)}")
    put(ws, 2, 1, QUESTION_NOT_PROOF, font=BOLD, alignment=WRAP_TOP, fill_colour=NOTE_COLOUR)
    ws.merge_cells("A2:B2")
    ws.row_dimensions[2].height = 34
    about = [
        ("School", school.get("name") or ""),
        ("URN", urn),
        (
            "Phase and type",
            " ".join(str(v) for v in (school.get("phase"), school.get("type")) if v),
        ),
        ("Trust", school.get("trust") or "none recorded"),
        ("Pupils", count_text(school.get("pupils"), suppress)),
        ("Window", window_text(context.results)),
        ("Profile", str(context.results.get("profile", ""))),
    ]
    row = write_lines(ws, 4, about, width=110)
    row = _section(
        ws,
        row + 1,
        "Why this school was selected",
        [
            ("Reason", text)
            for text in school.get("audit_reasons_text") or school.get("audit_reasons") or []
        ],
    )
    numbers = [
        (OUTCOME_NAME.get(outcome, outcome), outcome_sentence(school, outcome, suppress))
        for outcome in ("ehe", "ehe_vulnerable", "unexplained", "y10_loss")
        if school.get(outcome)
    ]
    row = _section(ws, row, "What the numbers say", numbers)
    counts = school.get("flag_counts") or {}
    flags = [
        (f"{count_text(n, suppress)} exit(s)", f"{FLAG_TEXT.get(code, code)} [{code}]")
        for code, n in counts.items()
        if n
    ]
    row = _section(ws, row, "Child-level flags", flags or [("None", "no exit carries a flag")])
    letters = school.get("letters") or {}
    letter_lines = [
        (
            "Letters from this school's families",
            str(count_text(letters.get("letters", 0), suppress)),
        )
    ]
    if letters.get("templated"):
        letter_lines.append(
            ("Matching a school template", str(count_text(letters.get("templated"), suppress)))
        )
    for cluster in clusters:
        families = (cluster.get("school_families") or {}).get(urn, cluster.get("families"))
        letter_lines.append(
            (
                f"Cluster {cluster.get('cluster_id')}",
                f"{VERDICT_LABEL.get(cluster.get('verdict'), cluster.get('verdict'))}: "
                f"{plural(count_text(families, suppress), 'family', 'families')} here, "
                f"{cluster.get('families')} in all at "
                f"{plural(cluster.get('schools'), 'school', 'schools')} (see the Letters sheet)",
            )
        )
    row = _section(ws, row, "Letters", letter_lines)
    rag = Counter(e.get("rag") for e in exits)
    exit_lines = [
        ("Exits in the data", str(count_text(len(exits), suppress))),
        (
            "Rated red / amber / green",
            " / ".join(str(count_text(rag[c], suppress)) for c in ("red", "amber", "green")),
        ),
    ]
    row = _section(ws, row, "Exits at this school", exit_lines)
    cautions = [
        (
            "Counts",
            "Counts catch blatant off-rolling; a school that moves a few pupils will rarely "
            "stand out by numbers alone, so letters and child-level flags matter as much.",
        ),
    ]
    for outcome, block in (context.results.get("overdispersion") or {}).items():
        if block.get("warning"):
            cautions.append((OUTCOME_NAME.get(outcome, outcome), block["warning"]))
    if suppress > 1:
        cautions.append(
            (
                "Small counts",
                f"Counts from 1 to {suppress - 1} show as <{suppress} on "
                "this sheet and Breakdown; Pupils lists every exit and is not for sharing.",
            )
        )
    cautions += self_review_cautions(context.results)
    row = _section(ws, row, "Cautions", cautions)
    contents = [
        (
            "Breakdown",
            "observed against expected exits by SEN, disadvantage, social care, key stage",
        ),
        ("Pupils", "the exits behind the numbers, with flags and a RAG rating (pupil-level)"),
        ("Letters", "letter clusters touching the school, excerpts side by side"),
        ("Questions", "what to ask the school, from the statutory guidance"),
        ("Method", "how the numbers were made and the thresholds used"),
    ]
    _section(ws, row, "In this pack", contents)
    print_setup(ws)


def _section(ws: Worksheet, row: int, title: str, lines: list[tuple[str, Any]]) -> int:
    put(ws, row, 1, title, font=HEADING_FONT)
    return write_lines(ws, row + 1, lines, width=110) + 1


# ------------------------------------------------------------------------------------ breakdown


def group_rows(groups: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(label, pupils, observed, expected) for each level of each grouping, in a fixed order."""
    rows = []
    for grouping, (name, labels) in GROUPINGS.items():
        levels = groups.get(grouping) or {}
        order = list(labels) + sorted(k for k in levels if k not in labels)
        for level in order:
            if level not in levels:
                continue
            cell = levels[level] or {}
            rows.append(
                (
                    f"{name}: {labels.get(level, level)}",
                    cell.get("pupils"),
                    cell.get("observed"),
                    cell.get("expected"),
                )
            )
    return rows


def breakdown_sheet(book: Book, school: dict[str, Any], suppress: int) -> None:
    ws = book.wb.create_sheet("Breakdown")
    set_widths(ws, [21, 34, 9, 10, 10, 10])
    title(ws, "Where the exits came from: observed against expected by group")
    note = (
        "Expected: what pupils like these left at across the baseline. A group far above its "
        "expected count is where to look first; small groups vary a lot by chance."
    )
    if suppress > 1:
        note += (
            f" Counts from 1 to {suppress - 1} show as <{suppress} (ratios as "
            f"{SUPPRESSED_DERIVED}) and are left out of the charts."
        )
    note_row(ws, 2, note, 6, 32)
    groups = school.get("groups") or {}
    blocks = [("ehe", groups), ("unexplained", groups.get("unexplained") or {})]
    row, anchor = 4, 4
    for outcome, outcome_groups in blocks:
        rows = group_rows(outcome_groups)
        if not rows:
            continue
        header_row = row
        for column, text in enumerate(
            ["Outcome", "Group", "Pupils", "Observed", "Expected", "Ratio (O/E)"], 1
        ):
            header(ws, row, column, text)
        ws.row_dimensions[row].height = 30
        row += 1
        for label, pupils, observed, expected in rows:
            hidden = is_suppressed(observed, suppress)
            ratio = None
            if observed is not None and expected:
                ratio = SUPPRESSED_DERIVED if hidden else observed / expected
            values = [
                OUTCOME_NAME.get(outcome, outcome),
                label,
                count_text(pupils, suppress),
                count_text(observed, suppress),
                expected,
                ratio,
            ]
            formats = [None, None, FMT_INT, FMT_INT, FMT_EXPECTED, FMT_RATIO]
            for column, (value, fmt) in enumerate(zip(values, formats, strict=True), 1):
                align = NUMBER_COLUMN if fmt else None
                put(ws, row, column, value, number_format=fmt, border=BOX, alignment=align)
            row += 1
        chart = BarChart()
        chart.type = "bar"
        chart.style = 2
        chart.title = f"{OUTCOME_SHORT.get(outcome, outcome)} by group"
        chart.add_data(
            Reference(ws, min_col=4, max_col=5, min_row=header_row, max_row=row - 1),
            titles_from_data=True,
        )
        for series, colour in zip(chart.series, (DARK, "A5A5A5"), strict=False):
            series.graphicalProperties.solidFill = colour
            series.graphicalProperties.line.solidFill = colour
        chart.set_categories(Reference(ws, min_col=2, min_row=header_row + 1, max_row=row - 1))
        chart.x_axis.scaling.orientation = "maxMin"  # same order as the table, top down
        chart.x_axis.delete = chart.y_axis.delete = False
        chart.y_axis.title = "Exits"
        chart.y_axis.number_format = "0"
        chart.y_axis.majorGridlines = None
        chart.legend.position = "b"
        chart.gapWidth = 60
        chart.height, chart.width = 10, 17
        ws.add_chart(chart, f"H{anchor}")
        anchor += 21
        row += 2
    if row == 4:
        put(ws, 4, 1, "No group breakdown is available for this school.", font=NOTE_FONT)
    print_setup(ws)


# ------------------------------------------------------------------------------------ pupils


def pupils_sheet(book: Book, exits: list[dict[str, Any]]) -> None:
    ws = book.wb.create_sheet("Pupils")
    ordered = sorted(exits, key=lambda e: (RAG_ORDER.get(e.get("rag"), 3), str(e.get("exit_date"))))

    def rows() -> Iterator[list[Any]]:
        for e in ordered:
            row = exit_row(e, None)
            yield [row[i] for i in _PUPIL_AT]

    put(
        ws,
        1,
        1,
        PUPIL_DATA_NOTE + " Red first, then amber, green and unrated.",
        font=NOTE_FONT,
        fill_colour=NOTE_COLOUR,
    )
    table = book.table(ws, 2, PUPIL_COLUMNS, rows(), len(ordered), freeze="B")
    rag_formats(ws, table.key_range("rag"))
    print_setup(ws, title_rows="2:2")


# ------------------------------------------------------------------------------------ letters


def rich_excerpt(segments: list[dict[str, Any]]) -> CellRichText:
    """An excerpt with the passages shared with other letters in bold dark red."""
    blocks: list[Any] = []
    for i, segment in enumerate(segments):
        text = clean_text(segment.get("text") or "")
        if not text:
            continue
        if i and blocks:
            text = " " + text
        blocks.append(TextBlock(SHARED_FONT if segment.get("shared") else PLAIN_FONT, text))
    return CellRichText(blocks or [""])


def letters_sheet(
    book: Book, school: dict[str, Any], clusters: list[dict[str, Any]], context: PackContext
) -> None:
    ws = book.wb.create_sheet("Letters")
    urn = str(school.get("urn"))
    # as many excerpt columns as the widest cluster needs (at least two, for the text above)
    wide = min(MAX_SIDE_BY_SIDE, max([len(c.get("excerpts") or []) for c in clusters] + [2]))
    set_widths(ws, [22] + [EXCERPT_WIDTH] * wide)
    title(ws, "Parents' letters that share wording")
    legend = CellRichText(
        [
            TextBlock(LEGEND_FONT, "Excerpts side by side. "),
            TextBlock(SHARED_FONT, "Bold dark red"),
            TextBlock(
                LEGEND_FONT,
                ": wording shared with other letters in the cluster; plain: the letter's own "
                "words. <name>, <date>, <num> and <upn> stand for details that differ.",
            ),
        ]
    )
    put(ws, 2, 1, legend, alignment=WRAP_TOP)
    ws.merge_cells(start_row=2, start_column=1, end_row=2, end_column=1 + wide)
    ws.row_dimensions[2].height = 20
    row = 4
    if not clusters:
        letters = school.get("letters") or {}
        put(
            ws,
            row,
            1,
            f"No letter cluster touches this school ({letters.get('letters', 0)} "
            "letter(s) from its families were read).",
            font=NOTE_FONT,
        )
    for cluster in clusters:
        row = _cluster_block(ws, row, cluster, urn, context, wide)
    print_setup(ws)


def _cluster_block(
    ws: Worksheet, row: int, cluster: dict[str, Any], urn: str, context: PackContext, wide: int
) -> int:
    """One cluster: what it is, why it looks school-written, excerpts side by side."""
    verdict = cluster.get("verdict")
    span = 1 + wide
    put(
        ws,
        row,
        1,
        f"Cluster {cluster.get('cluster_id')}: {VERDICT_LABEL.get(verdict, verdict)}",
        font=HEADING_FONT,
    )
    row += 1
    families = cluster.get("school_families") or {}
    here = families.get(urn)
    summary = (
        f"{plural(cluster.get('families'), 'family', 'families')} at "
        f"{plural(cluster.get('schools'), 'school', 'schools')}"
        + (f", {count_text(here, context.suppress)} at this school" if here else "")
        + f"; mean similarity {cluster.get('similarity') or 0:.2f}"
        + (f" (lowest {cluster['similarity_min']:.2f})" if cluster.get("similarity_min") else "")
        + f"; letters dated {cluster.get('date_from')} to {cluster.get('date_to')}. "
        + _sentence(VERDICT_TEXT.get(verdict, ""))
        + "."
    )
    lines = [("Summary", summary)]
    selected_by = templated_letters_evidence(cluster, urn, context.results)
    if selected_by:
        lines.append(("Why it selected this school", _sentence(selected_by) + "."))
    if cluster.get("trusts"):
        lines.append(("Trusts", "; ".join(map(str, cluster["trusts"]))))
    if len(families) > 1:
        lines.append(
            ("Families by school", "; ".join(f"URN {u}: {n}" for u, n in families.items()))
        )
    if cluster.get("known_template"):
        lines.append(("Matches public sample", str(cluster["known_template"])))
    for signal in cluster.get("signals") or []:
        lines.append((signal_label(str(signal.get("code", ""))), signal.get("detail", "")))
    details = " ".join(str(d.get("detail", "")) for d in cluster.get("school_only") or [])
    if details:
        lines.append(("School-only details", details))
    if cluster.get("families_recognised"):
        lines.append(("Families recognised", _sentence(families_text(cluster)) + "."))
    if any((cluster.get("links") or {}).values()):
        lines.append(("How letters matched", _sentence(links_text(cluster["links"])) + "."))
    row = write_lines(
        ws, row, lines, width=EXCERPT_WIDTH * wide, merge_to=span, value_alignment=WRAP_TOP
    )
    excerpts = (cluster.get("excerpts") or [])[:wide]
    if excerpts:
        row += 1
        put(ws, row, 1, "Excerpts", font=BOLD)
        for column, excerpt in enumerate(excerpts, 2):
            letter = str(excerpt.get("letter_id", ""))
            school = context.letter_school.get(letter)
            where = (
                "this school"
                if school == urn
                else (f"URN {school}" if school else "school not known")
            )
            header(ws, row, column, f"Letter {letter} ({where})")
        row += 1
        height = 15.0
        for column, excerpt in enumerate(excerpts, 2):
            segments = excerpt.get("segments") or []
            put(ws, row, column, rich_excerpt(segments), alignment=WRAP_TOP, border=BOX)
            text = " ".join(str(s.get("text") or "") for s in segments)
            height = max(height, text_height(text, EXCERPT_WIDTH))
        ws.row_dimensions[row].height = height
        row += 1
    letters_here = [
        letter
        for letter in cluster.get("letters") or []
        if context.letter_school.get(str(letter)) == urn
    ]
    if letters_here:
        row = write_lines(
            ws,
            row,
            [("This school's letters", ", ".join(map(str, letters_here)))],
            width=EXCERPT_WIDTH * wide,
            merge_to=span,
            value_alignment=WRAP_TOP,
        )
    return row + 2


# ------------------------------------------------------------------------------------ questions


@dataclass(frozen=True)
class Question:
    """A question for the school; `flags` are the codes that make it this school's question,
    `evidence` says what the school's own exits show ({n} is the count, {days} a profile
    number)."""

    ask: str
    why: str
    guidance: str
    flags: tuple[str, ...] = ()
    evidence: str = ""
    special_only: bool = False


QUESTIONS = [
    Question(
        "Before each pupil's name was removed for home education, was a meeting offered and held "
        "with the parents and the pupil? Who attended, what was said about the options, and is "
        "there a record?",
        "Keeping children safe in education recommends a meeting before the decision, especially "
        "where the child has SEND, is vulnerable or has a social worker.",
        "Keeping children safe in education; DfE Elective home education guidance",
        ("EHE_VULNERABLE",),
        "{n} pupil(s) who left for home education had SEN, disadvantage or a social-care plan.",
    ),
    Question(
        "For each home-education deletion, do you hold the parent's own written notice? Who "
        "drafted it; did the school supply a form, a model letter or help writing it?",
        "The ground for deletion is the parent's written notification that the child is educated "
        "otherwise than at school; it is the parent's decision, not the school's.",
        "School Attendance (Pupil Registration) (England) Regulations 2024, reg. 9(1)(f)",
        ("TEMPLATED_LETTER",),
        "{n} letter(s) match a template that points to the school (see Letters).",
    ),
    Question(
        "For pupils placed at the school by the LA, was the LA's consent obtained before each "
        "name was removed? Where is it recorded?",
        "A pupil placed at a special school under arrangements made by the LA may not be deleted "
        "without the LA's consent.",
        "Pupil Registration Regulations 2024, reg. 9(3)",
        ("SPECIAL_NO_CONSENT",),
        "{n} LA-placed pupil(s) were deleted for home education with no LA consent recorded: "
        "a statutory breach.",
        special_only=True,
    ),
    Question(
        "Was home education, or leaving, ever raised with the family as a way to avoid an "
        "exclusion, or because of attendance or behaviour? What alternatives were tried first "
        "(a support plan, a managed move, alternative provision, a review of SEN support)?",
        "Statutory guidance: schools should not persuade parents to home educate to avoid an "
        "exclusion or because of poor attendance.",
        "DfE Elective home education guidance; Suspension and permanent exclusion guidance",
        ("SCHOOL_PRESSURE_REASON", "AFTER_SUSPENSION"),
        "{n} exit(s) give a reason that points at the school or followed soon after a suspension.",
    ),
    Question(
        "Were any of these pupils on a part-time timetable, in isolation or educated off site "
        "before they left? For how long, agreed with whom, and reviewed when?",
        "A part-time timetable should be short, agreed with the parent and reviewed; a long one "
        "can come before a move off roll.",
        "DfE Working together to improve school attendance",
        ("LOW_ATTENDANCE",),
        "{n} pupil(s) had attendance below the persistent-absence line before leaving.",
    ),
    Question(
        "Was the LA sent the deletion return for each pupil (name, address, parents, the ground, "
        "the new school if known) no later than the deletion itself?",
        "The LA can only check that a child is safe and educated if it is told in time.",
        "Pupil Registration Regulations 2024 (returns to the local authority)",
        ("LATE_NOTIFICATION",),
        "{n} deletion(s) reached the LA more than {days} school days late, or not at all.",
    ),
    Question(
        "For pupils with an EHC plan, SEN support or a social worker who left: were the SENCO, "
        "the social worker and the LA's SEN team told before the deletion? Was the EHC plan "
        "reviewed?",
        "Vulnerable children who leave for home education are the group the guidance is most "
        "concerned about.",
        "SEND Code of Practice; Working together to safeguard children",
        ("EHE_VULNERABLE",),
    ),
    Question(
        "How were decisions made about the Year 10-11 pupils who left before the January census? "
        "Were exam entries or results discussed with the families?",
        "Exits timed before the census that decides whose results count are the pattern "
        "Ofsted's off-rolling work describes.",
        "Ofsted: off-rolling (School inspection handbook)",
        ("KS4_PRE_CENSUS",),
        "{n} Year 10-11 pupil(s) left in the months before the January census.",
    ),
    Question(
        "For pupils whose whereabouts were unknown: what enquiries were made, jointly with the "
        "LA, before the deletion, and when was the LA's children missing education officer told?",
        "Deletion on these grounds needs reasonable enquiries by the school and the LA first.",
        "Children missing education statutory guidance; Pupil Registration Regulations 2024",
        ("CME_UNKNOWN",),
        "{n} pupil(s) left with whereabouts unknown: a welfare check is due.",
    ),
    Question(
        "Some pupils were back on a school roll within weeks of leaving for home education. What "
        "happened, and what did the school tell the family about coming back?",
        "A quick return suggests home education was not a settled choice.",
        "DfE Elective home education guidance",
        ("RETURNED_QUICKLY",),
        "{n} pupil(s) returned to a school roll quickly.",
    ),
]


def questions(school: dict[str, Any], context: PackContext) -> list[tuple[str, str, str]]:
    """(question, why we ask, guidance), those the school's own flags point to first, then the
    general ones, then whether the numbers miss something (fairness to the school)."""
    counts = school.get("flag_counts") or {}
    flags = (context.results.get("profile_settings") or {}).get("flags") or {}
    days = flags.get("late_notification_school_days", 5)
    special = "special" in f"{school.get('type', '')} {school.get('phase', '')}".lower()
    flagged, general = [], []
    for question in QUESTIONS:
        n = sum(counts.get(code) or 0 for code in question.flags)
        if question.special_only and not (special or n):
            continue
        why = question.why
        if n and question.evidence:
            evidence = question.evidence.format(n=count_text(n, context.suppress), days=days)
            why = f"{evidence} {why}"
        (flagged if n else general).append((question.ask, why, question.guidance))
    numbers = outcome_sentence(school, "ehe", context.suppress) or "The counts are on the Cover."
    general.append(
        (
            "Is there something these numbers cannot see: a unit closing, a local home-education "
            "community, a change in intake, pupils recorded at the wrong school?",
            numbers,
            "This pack (Method sheet)",
        )
    )
    return flagged + general


def questions_sheet(book: Book, school: dict[str, Any], context: PackContext) -> None:
    ws = book.wb.create_sheet("Questions")
    widths = [5, 62, 52, 30, 40, 24]
    set_widths(ws, widths)
    title(ws, "Questions to ask the school")
    put(
        ws,
        2,
        1,
        "Drawn from the statutory guidance; those this school's own flags point to come "
        "first. The last two columns are for the visit.",
        font=NOTE_FONT,
    )
    headers = ["#", "Question", "Why we ask", "Guidance", "The school's answer", "Evidence seen"]
    for column, text in enumerate(headers, 1):
        header(ws, 4, column, text)
    row = 5
    for number_, (question, why, source) in enumerate(questions(school, context), 1):
        for column, value in enumerate([number_, question, why, source, "", ""], 1):
            put(
                ws,
                row,
                column,
                value if value != "" else None,
                alignment=WRAP_TOP,
                border=BOX,
                fill_colour=NOTE_COLOUR if column == 5 else None,
            )
        ws.row_dimensions[row].height = max(
            text_height(question, widths[1]), text_height(why, widths[2]), 45.0
        )
        row += 1
    ws.freeze_panes = "A5"
    print_setup(ws, title_rows="4:4")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


SIGNAL_LABEL = {
    "SCHOOL_NAME": "School's name",
    "PUPIL_REFERENCE": "Pupil reference",
    "SCHOOL_VOICE": "School's voice",
    "SAME_METADATA": "Same document details",
    "FAMILIES_WITHIN_DAYS": "Letters close together",
    "BEFORE_JANUARY_CENSUS": "Before January census",
    "AFTER_SUSPENSION": "After a suspension",
}


def signal_label(code: str) -> str:
    """A reader's label for a letter signal code (unknown codes: the code in words)."""
    return SIGNAL_LABEL.get(code) or _sentence(code.replace("_", " ").lower())


def plural(count: Any, one: str, many: str) -> str:
    """'1 family', '3 families', '<5 families'."""
    return f"{count} {one if count == 1 else many}"
