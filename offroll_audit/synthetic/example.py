"""The example LA shipped with the tool (fixtures/example-la): a termly history whose latest
school year carries the one-year generator's planted answers.

`generate_example` follows an LA over termly censuses (by default the nine from 2022-AUT to
2025-SUM) as `generate_history` does, with pupils who persist, but plants what the demo and
the end-to-end tests look for:

- in the latest school year (2024-25), the one-year generator's patterns, chosen from the
  roll at its start by dataset.py's own planting code (`plant_patterns`, dated by
  `exit_days`): an EHE off-roller with a school-written letter template (vulnerable Years
  9-11, before the January census), a school moving Years 10-11 to other schools without
  house moves, a special school deleting LA-placed pupils without LA consent, two schools of
  one trust sharing a template, and a large deprived school whose raw EHE count is the LA's
  highest but explained by its intake (it must not be selected). None of them has an excess
  before that year, so the off-roller's history shows a rise;
- an excess that stopped two years before the latest term (x3 in the first school year, from
  7 terms on), which an audit of the latest term must not select;
- a family of four or five siblings leaving one primary for home education on one day in
  the latest term (one family's decision, not five).

Planting follows the one-year generator: a preview of the year's natural exits is drawn from
the same hazards (ExitDraws), `plant_patterns` tops each planted school up to its target
(the off-roller: `offroll_factor` times its intake prediction) and marks the pupils, and
those pupils then leave on their planted day while their natural exits are held back until
then. Everything else is drawn term by term as in history.py, so a planted school reaches
its target on average, give or take its natural variation (the one-year generator reaches it
exactly, having drawn the natural exits first). At least one of the special school's
deletions falls in the latest term, the one an audit of the data looks at first (flag rules
read the audited term's exits). Letters are written for the latest school year's EHE exits
only, the year the templates are handed out.

truth.json keeps the one-year truth's keys for that year (`window`; planted.offroll_ehe,
offroll_moves, special_no_consent, innocent_high, trust_template; `letters`), adds the
history's (`terms`, per-term `expected_ehe`, `mean_ehe`, `observed_ehe`), the temporal
plants (planted.stopped_excess, planted.sibling_family), `latest_year` (each school's
counts over that year) and `selection`: what an audit of the latest term should select and
must not.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
from numpy.random import Generator
from scipy.special import expit

from offroll_audit.problems import UsageError
from offroll_audit.synthetic.dataset import (
    DEST,
    EHE_TARGET_RATE,
    NO_PLANT,
    PRIMARY,
    PRIVATE_EXIT_COLUMNS,
    SECONDARY,
    SPECIAL_NO_CONSENT,
    ExitDraws,
    Exits,
    Plan,
    S,
    Schools,
    World,
    build_schools,
    check_arguments,
    ehe_log_odds,
    exit_days,
    plant_patterns,
    planted_truth,
    prepare_output_folder,
    pupil_ids,
    schools_frame,
    write_letter_files,
)
from offroll_audit.synthetic.history import (
    STOPPED_GAP,
    Calendar,
    Forced,
    History,
    HistoryPlan,
    check_history_arguments,
    school_days_of_year,
    stream,
)
from offroll_audit.window import census_day

LAST_TERM = "2025-SUM"  # dataset.py's planted periods are dates of 2024-25
DEFAULTS = {"schools": 40, "pupils": 15_000, "terms": 9}
SHIPPED_SEED = 5  # fixtures/example-la


def generate_example(
    out: Path | str,
    *,
    seed: int = SHIPPED_SEED,
    schools: int = DEFAULTS["schools"],
    pupils: int = DEFAULTS["pupils"],
    terms: int = DEFAULTS["terms"],
    letters: bool = True,
    heterogeneity_sd: float = 0.25,
    offroll_factor: float = 3.0,
) -> dict:
    """Write the example LA over `terms` terms ending 2025-SUM into `out`; return its truth
    (also truth.json). `pupils` is the number on roll at the first census."""
    out = Path(out)
    labels = check_history_arguments(seed, schools, pupils, terms, LAST_TERM, heterogeneity_sd, 1.0)
    check_arguments(seed, schools, pupils, heterogeneity_sd, offroll_factor)
    if terms < 3:
        raise UsageError("--example: give at least 3 terms, the planted school year 2024-25")
    prepare_output_folder(out)
    arguments = {
        "example": True,
        "seed": seed,
        "schools": schools,
        "pupils": pupils,
        "terms": terms,
        "last_term": LAST_TERM,
        "letters": letters,
        "heterogeneity_sd": heterogeneity_sd,
        "offroll_factor": offroll_factor,
        "command": example_command(seed, schools, pupils, terms, letters, heterogeneity_sd),
    }
    table, one_year, plan = example_schools(
        schools, pupils, heterogeneity_sd, offroll_factor, terms, seed
    )
    history = ExampleHistory(
        table, plan, Calendar.of(labels), seed, EHE_TARGET_RATE, one_year, offroll_factor
    )
    history.run()
    ids = pupil_ids(history.people_for_ids(), table, stream(seed, "ids"))
    exits = history.exits_frame(ids)
    school_frame = schools_frame(table)
    letter_truth = None
    if letters:
        exits, letter_truth = history.latest_year_letters(out, exits, school_frame)
    history.write_pupils(out / "pupils.csv", ids)
    exits.drop(PRIVATE_EXIT_COLUMNS).write_csv(out / "exits.csv")
    school_frame.write_csv(out / "schools.csv")
    truth = history.example_truth(arguments, exits, ids, letter_truth)
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def example_command(
    seed: int, schools: int, pupils: int, terms: int, letters: bool, sd: float
) -> str:
    """The `offroll-audit fixtures` command that writes this example into OUT."""
    command = (
        f"offroll-audit fixtures OUT --example --seed {seed} --schools {schools} "
        f"--pupils {pupils} --terms {terms}"
    )
    if not letters:
        command += " --no-letters"
    if sd != 0.25:
        command += f" --heterogeneity-sd {sd:g}"
    return command


def example_schools(
    n: int, pupils: int, sd: float, factor: float, terms: int, seed: int
) -> tuple[Schools, Plan, HistoryPlan]:
    """The one-year generator's schools with its plan (the innocent school sized to top its
    LA's EHE count), then a stopped excess and a sibling family at schools it left alone.
    Planted schools get no random effect, so their excess is exactly what was planted."""
    table, one_year = build_schools(n, pupils, False, sd, factor, stream(seed, "schools"))
    plan = temporal_plan(table, one_year, terms, stream(seed, "plants"))
    table.effect[plan.all()] = 1.0
    return table, one_year, plan


def temporal_plan(table: Schools, one_year: Plan, terms: int, rng: Generator) -> HistoryPlan:
    """Per LA: a secondary outside the one-year plan for the stopped excess (only when the span
    reaches back far enough) and one of the larger remaining primaries for the sibling family."""
    taken = np.isin(np.arange(table.count), one_year.all())
    raw = table.raw_size
    stopped, sibling = [], []
    for a in range(len(table.la_codes)):
        free = np.flatnonzero((table.la == a) & ~taken)
        secondaries = free[table.phase[free] == SECONDARY]
        if terms > STOPPED_GAP and len(secondaries):
            stopped.append(rng.choice(secondaries))
        primaries = free[table.phase[free] == PRIMARY]
        primaries = primaries[np.argsort(-raw[primaries], kind="stable")]
        if len(primaries):
            sibling.append(rng.choice(primaries[: max(1, (len(primaries) + 1) // 2)]))
    nothing = np.zeros(0, dtype=np.int64)
    as_array = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    return HistoryPlan(nothing, nothing, as_array(stopped), as_array(sibling))


class ExampleHistory(History):
    """A History whose latest school year also carries the one-year plants (see the module)."""

    def __init__(
        self,
        table: Schools,
        plan: HistoryPlan,
        calendar: Calendar,
        seed: int,
        rate: float,
        one_year: Plan,
        factor: float,
    ) -> None:
        super().__init__(table, plan, calendar, seed, rate)
        self.one_year, self.factor = one_year, factor
        self.year = int(calendar.school_year[-1])
        self.year_terms = np.flatnonzero(calendar.school_year == self.year)
        self.year_days = school_days_of_year(self.year)
        self.year_offset = int(np.searchsorted(calendar.days, self.year_days[0]))
        self.scheduled: Forced | None = None
        self.scheduled_term = np.zeros(0, dtype=np.int64)
        self.at_plant: dict[str, np.ndarray] = {}

    def forced_exits(self, term: int, rng: Generator) -> Forced | None:
        """The sibling family's exits, and the one-year plants due this term (chosen at the
        start of the latest school year)."""
        if term == self.year_terms[0]:
            self.plant_year(term)
        due = None
        if self.scheduled is not None:
            now = self.scheduled_term == term
            due = Forced(
                *(getattr(self.scheduled, f.name)[now] for f in dataclasses.fields(Forced))
            )
        return Forced.merge([super().forced_exits(term, rng), due])

    def plant_year(self, term: int) -> None:
        """Choose the year's planted exits from the roll at its start, with dataset.py's
        planting on a preview of the year's natural exits, and date them as it does.

        The preview only decides how many each school needs (its target less its natural
        count) and which pupils are free; the natural exits themselves are drawn term by term.
        """
        rng = stream(self.seed, "example")
        rows, table = self.open, self.table
        view = self.view(rows, int(self.cal.first[term]))
        eta = ehe_log_odds(view) + np.log(table.effect)[rows.school]
        p_ehe = np.where(rows.status == S, 0.0, expit(self.intercept + eta))
        draws = ExitDraws(view, table, p_ehe, len(self.year_days), rng)
        dest = draws.natural()
        plant = np.zeros(len(rows), dtype=np.int8)
        self.at_plant = plant_patterns(
            view, table, self.one_year, dest, plant, draws, self.factor, rng
        )
        chosen = np.flatnonzero(plant != NO_PLANT)
        day = self.year_offset + exit_days(
            view, chosen, dest[chosen], plant[chosen], self.year_days, rng
        )
        day = self.breach_in_latest_term(day, rows.school[chosen], plant[chosen], rng)
        self.scheduled = Forced.of(
            rows.person[chosen], rows.school[chosen], dest[chosen], plant[chosen], day
        )
        self.scheduled_term = np.searchsorted(self.cal.stop, self.scheduled.day, side="right")
        self.waiting = np.union1d(self.waiting, self.scheduled.persons)

    def breach_in_latest_term(
        self, day: np.ndarray, school: np.ndarray, kind: np.ndarray, rng: Generator
    ) -> np.ndarray:
        """Move each special school's last deletion into the latest term when none falls in
        it, so an audit of that term (flag rules read its exits only) sees the breach."""
        last = len(self.cal.labels) - 1
        first, stop = int(self.cal.first[last]), int(self.cal.stop[last])
        for special in self.one_year.special_no_consent.tolist():
            mine = np.flatnonzero((kind == SPECIAL_NO_CONSENT) & (school == special))
            if len(mine) and not (day[mine] >= first).any():
                day[mine[np.argmax(day[mine])]] = first + int(rng.integers(0, stop - first))
        return day

    # ----------------------------------------------------------------------- output

    def latest_year_letters(
        self, out: Path, exits: pl.DataFrame, schools: pl.DataFrame
    ) -> tuple[pl.DataFrame, dict]:
        """Parents' letters (dataset.py's write_letter_files) for the latest school year's
        EHE exits, the year the template school and the trust hand out their letters."""
        latest = pl.col("exit_date") >= self.cal.days[self.year_offset].item()
        written, truth = write_letter_files(
            out, exits.filter(latest), schools, self.one_year, stream(self.seed, "letters")
        )
        frame = pl.concat([exits.filter(~latest), written])
        truth["note"] = f"letters of the EHE exits of {self.year}-{(self.year + 1) % 100:02d} only"
        return frame.sort(["urn", "exit_date", "pupil_id"], maintain_order=True), truth

    def latest_year_world(self) -> World:
        """The latest school year as the one-year generator's World, so planted_truth reports
        its plants as it does for a one-year dataset."""
        exits, roll = self.exit_rows()
        keep = np.flatnonzero(exits.day >= self.year_offset)
        exits = Exits(**{f.name: getattr(exits, f.name)[keep] for f in dataclasses.fields(Exits)})
        exits.row = np.arange(len(keep))
        roll = roll.take(keep)
        observed = self.observed[:, self.year_terms].sum(axis=1)
        plants = (exits.plant != NO_PLANT) & (exits.dest == DEST["EHE"])
        planted_ehe = np.bincount(roll.school[plants], minlength=self.table.count)
        return World(
            table=self.table,
            plan=self.one_year,
            roll=roll,
            joined=roll.take(np.zeros(0, dtype=np.int64)),
            days=self.year_days,
            eta=np.zeros(0),
            intercept=self.intercept,
            dest=exits.dest,
            exits=exits,
            planted=dict(self.at_plant, natural_ehe=observed - planted_ehe),
            redraws=0,
        )

    def example_truth(
        self, arguments: dict, exits: pl.DataFrame, ids: pl.Series, letters: dict | None
    ) -> dict:
        """History's truth (per-term counts) with the one-year truth's keys for the latest
        school year and the temporal plants under `planted`."""
        truth = self.truth(arguments, exits, ids)
        truth["generator"] = "offroll_audit.synthetic.example"
        truth["per_term"]["mean_ehe"] = (
            "the generator's own expectation: with the school effect (a forced exit, planted "
            "or a sibling's, counts 1; a pupil waiting for one counts 0)"
        )
        labels = self.cal.labels
        year_labels = [labels[t] for t in self.year_terms]
        first_day, last_day = self.year_days[0].item(), self.year_days[-1].item()
        latest = exits.filter(pl.col("exit_date") >= first_day)
        observed = self.observed[:, self.year_terms].sum(axis=1)
        intake = self.expected[:, self.year_terms].sum(axis=1)
        one_year = planted_truth(self.latest_year_world(), latest, observed, intake)
        one_year.pop("innocent_redraws")
        temporal = truth.pop("planted")
        urns = [self.table.urn_text(i) for i in range(self.table.count)]
        for entry in one_year["offroll_ehe"] + one_year["offroll_moves"]:
            i = urns.index(entry["urn"])
            entry["excess_from"] = year_labels[0]
            entry["expected_ehe_by_term"] = dict(
                zip(labels, np.round(self.expected[i], 4).tolist(), strict=True)
            )
            entry["observed_ehe_by_term"] = dict(
                zip(labels, self.observed[i].tolist(), strict=True)
            )
        planted = one_year | {
            pattern: [e for e in temporal if e["pattern"] == pattern]
            for pattern in ("stopped_excess", "sibling_family")
        }
        truth["window"] = {
            "school_year": f"{self.year}-{(self.year + 1) % 100:02d}",
            "terms": year_labels,
            "from": first_day.isoformat(),
            "to": last_day.isoformat(),
            "spring_census": census_day(f"{self.year + 1}-SPR").isoformat(),
        }
        truth["latest_year"] = {
            "note": "the window's intake-predicted and observed EHE exits per school",
            "expected_ehe": {u: round(float(v), 4) for u, v in zip(urns, intake, strict=True)},
            "observed_ehe": {u: int(v) for u, v in zip(urns, observed, strict=True)},
        }
        truth["planted"] = planted
        not_planted = {
            "steady_excess": "not in the example LA",
            "recent_excess": "the EHE off-roller (planted.offroll_ehe) is its excess of the "
            "latest school year",
        }
        if not planted["stopped_excess"]:
            not_planted["stopped_excess"] = f"needs at least {STOPPED_GAP + 1} terms"
        truth["not_planted"] = not_planted
        truth["selection"] = expected_selection(planted)
        if letters is not None:
            truth["letters"] = letters
        return truth


def expected_selection(planted: dict) -> dict[str, list[str]]:
    """What an audit of the latest term should select, and what it must not."""
    selected = [
        e["urn"]
        for key in ("offroll_ehe", "offroll_moves", "special_no_consent")
        for e in planted[key]
    ]
    selected += planted["trust_template"]["urns"]
    not_selected = [
        e["urn"]
        for key in ("innocent_high", "stopped_excess", "sibling_family")
        for e in planted[key]
    ]
    return {"selected": sorted(selected), "not_selected": sorted(not_selected)}
