"""Small data never crash: every case-mix fit degrades to a well-defined answer and says so.

Unit tests build tiny pattern-total frames by hand and check the fallback chosen, its words and
that expected counts still add up to the observed; a property test writes small random valid
datasets (1-5 schools, 5-200 pupils, 0-30 exits, degenerate mixes included) and runs the real
`audit` command on them. OFFROLL_HYPOTHESIS_SCALE=20 hunts harder.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from datetime import date, timedelta
from io import StringIO
from pathlib import Path
from random import Random

import numpy as np
import openpyxl
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offroll_audit import codes
from offroll_audit import expected as exp
from offroll_audit import significance as stats
from offroll_audit.audit import refit_note, refit_without_outliers
from offroll_audit.cli import main

SCALE = int(os.environ.get("OFFROLL_HYPOTHESIS_SCALE", "1"))
DTYPES = {
    "sen_provision": codes.SenProvision,
    "disadvantaged": pl.Boolean,
    "social_care": codes.SocialCare,
    "year_group": codes.YearGroup,
}


def totals(factors: list[str], rows: list[tuple]) -> pl.DataFrame:
    """Pattern totals as CellLayout.pattern_totals gives them: each row is the factors' levels,
    then trials, then events."""
    columns = list(zip(*rows, strict=True))
    frame = {f: pl.Series(f, columns[i], dtype=DTYPES[f]) for i, f in enumerate(factors)}
    frame["trials"] = pl.Series("trials", columns[-2], dtype=pl.Float64)
    frame["events"] = pl.Series("events", columns[-1], dtype=pl.Float64)
    return pl.DataFrame(frame)


def expected_total(patterns: pl.DataFrame, fit: exp.RateFit) -> float:
    return float((patterns["trials"] * fit.rates["rate"]).sum())


def rate_of(fit: exp.RateFit, **levels) -> float:
    return fit.rates.filter(**levels)["rate"].item()


# --------------------------------------------------------------------------- degraded fits


def test_a_level_nobody_left_gets_rate_zero_and_the_rest_still_balances() -> None:
    mix = ["sen_provision", "social_care"]
    patterns = totals(
        mix,
        [
            ("N", "none", 120.0, 6),
            ("K", "none", 40.0, 4),
            ("N", "CLA", 3.0, 0),
            ("K", "CIN", 10.0, 2),
            ("N", "CIN", 15.0, 1),
        ],
    )
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.warnings == []
    assert rate_of(fit, social_care="CLA") < 1e-8  # the limit of the fit: nobody there left
    assert fit.notes == [
        "none of these pupils left this way in the data the rates were fitted on, so their "
        "expected rate is 0: pupils with social care CLA"
    ]
    assert expected_total(patterns, fit) == pytest.approx(13.0, abs=1e-9)


def test_the_reference_level_without_events_is_settled_too() -> None:
    """No exits among SEN N (the reference): the plain fit cannot reach its limit, so the
    settled route sets N to 0 and fits the others."""
    mix = ["sen_provision", "disadvantaged"]
    patterns = totals(
        mix,
        [
            ("N", False, 50.0, 0),
            ("N", True, 20.0, 0),
            ("K", False, 10.0, 2),
            ("K", True, 8.0, 3),
            ("E", True, 4.0, 1),
        ],
    )
    fit = exp.fit_rates(patterns, mix, "main")
    assert rate_of(fit, sen_provision="N", disadvantaged=False) < 1e-8
    assert expected_total(patterns, fit) == pytest.approx(6.0, abs=1e-9)
    assert "pupils with SEN provision N" in fit.notes[0]


def test_a_level_everyone_left_is_pooled_with_the_reference() -> None:
    mix = ["sen_provision", "social_care"]
    patterns = totals(
        mix,
        [
            ("N", "none", 100.0, 4),
            ("K", "none", 30.0, 3),
            ("N", "CLA", 2.0, 2),  # both children looked after left: the level's MLE is a rate 1
        ],
    )
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.warnings == [
        "too few pupils to estimate the effect of social care CLA (all 2 at risk left), so it "
        "was pooled with 'none'"
    ]
    assert fit.terms is not None and fit.terms.pooled == (("social_care", "CLA", "none"),)
    pooled_rate = rate_of(fit, sen_provision="N", social_care="CLA")
    assert pooled_rate == pytest.approx(rate_of(fit, sen_provision="N", social_care="none"))
    assert pooled_rate == pytest.approx(6 / 102)  # SEN N's own rate, CLA counted with 'none'
    assert expected_total(patterns, fit) == pytest.approx(9.0, abs=1e-9)


def test_effects_the_data_cannot_tell_apart_are_fitted_as_one() -> None:
    """Every SEN support pupil is a child in need and vice versa: one effect for both."""
    mix = ["sen_provision", "social_care"]
    patterns = totals(mix, [("N", "none", 80.0, 4), ("K", "CIN", 20.0, 3)])
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.warnings == []
    assert fit.notes == [
        "the effect of social care CIN could not be told apart from that of SEN provision K "
        "(too few combinations of pupils to separate them), so one effect was fitted for them"
    ]
    assert rate_of(fit, sen_provision="K") == pytest.approx(3 / 20)
    assert rate_of(fit, sen_provision="N") == pytest.approx(4 / 80)


def test_no_events_gives_zero_rates_and_says_so() -> None:
    mix = ["sen_provision", "social_care"]
    patterns = totals(mix, [("N", "none", 30.0, 0), ("K", "CIN", 5.0, 0)])
    fit = exp.fit_rates(patterns, mix, "main")
    assert (fit.rates["rate"] == 0).all()
    assert fit.warnings == [exp.NO_EVENTS]


def test_every_pupil_in_one_cell_gets_that_cells_rate() -> None:
    mix = ["sen_provision", "disadvantaged", "social_care", "year_group"]
    patterns = totals(mix, [("K", True, "CIN", "9", 7.0, 2)])
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.rates["rate"].item() == pytest.approx(2 / 7)
    assert fit.warnings == []


def test_separation_by_a_combination_drops_a_factor() -> None:
    """Nobody not disadvantaged without SEN left, everybody disadvantaged with SEN support did:
    no level is empty or full, but the main-effects fit heads to infinity. The factor with most
    levels (ties: the last) is dropped and the rest fitted."""
    mix = ["sen_provision", "disadvantaged"]
    patterns = totals(
        mix,
        [("N", False, 10.0, 0), ("N", True, 10.0, 5), ("K", False, 10.0, 5), ("K", True, 10.0, 10)],
    )
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.warnings == [
        "the rates could not be fitted with disadvantage in the case mix, so it was left out"
    ]
    assert fit.terms is not None and fit.terms.factors == ("sen_provision",)
    assert rate_of(fit, sen_provision="N", disadvantaged=True) == pytest.approx(5 / 20)
    assert rate_of(fit, sen_provision="K", disadvantaged=False) == pytest.approx(15 / 20)
    assert expected_total(patterns, fit) == pytest.approx(20.0, abs=1e-9)


def test_interactions_that_cannot_be_fitted_fall_back_to_main_effects() -> None:
    mix = ["sen_provision", "social_care"]
    patterns = totals(
        mix,
        [
            ("N", "none", 20.0, 2),
            ("N", "CIN", 10.0, 3),
            ("K", "none", 10.0, 3),
            ("K", "CIN", 5.0, 5),  # everyone in this combination left: its interaction is +inf
        ],
    )
    fit = exp.fit_rates(patterns, mix, "interactions")
    assert fit.warnings == ["the interactions could not be fitted, so main effects alone were used"]
    assert fit.terms is not None and fit.terms.model == "main"
    assert expected_total(patterns, fit) == pytest.approx(13.0, abs=1e-9)


def test_one_overall_rate_is_the_last_resort(monkeypatch) -> None:
    mix = ["sen_provision", "social_care"]
    patterns = totals(mix, [("N", "none", 20.0, 2), ("K", "CIN", 10.0, 3), ("K", "none", 5.0, 1)])
    monkeypatch.setattr(exp, "_glm", lambda *args: None)  # as if no GLM would converge
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.warnings == [exp.OVERALL_RATE]
    assert fit.rates["rate"].to_list() == pytest.approx([6 / 35] * 3)
    assert fit.terms == exp.Terms(())


def test_events_beyond_trials_from_part_window_pupils_still_balance() -> None:
    """Pupils who joined late and left count for part of the window, so a cell can have more
    exits than pupils at risk; the fit solves the same score equations and still balances."""
    mix = ["sen_provision"]
    patterns = totals(mix, [("N", 50.0, 3), ("K", 0.4, 1), ("K", 12.0, 1)])
    fit = exp.fit_rates(patterns, mix, "main")
    assert fit.rates["rate"].is_finite().all()
    assert expected_total(patterns, fit) == pytest.approx(5.0, abs=1e-9)


def test_the_plain_fit_is_kept_on_ordinary_data() -> None:
    """Nothing to settle: the rates are those of the plain GLM, bit for bit."""
    rng = np.random.default_rng(3)
    mix = ["sen_provision", "social_care"]
    rows = [
        (s, c, float(n), int(rng.binomial(n, 0.05 + 0.03 * i)))
        for i, (s, c, n) in enumerate(
            (s, c, n) for s in codes.SEN_PROVISION for c in codes.SOCIAL_CARE for n in [400]
        )
    ]
    patterns = totals(mix, rows)
    plain = exp._plain_fit(
        patterns, mix, "main", patterns["trials"].to_numpy(), patterns["events"].to_numpy()
    )
    fit = exp.fit_rates(patterns, mix, "main")
    assert plain is not None
    assert fit.rates["rate"].to_list() == plain.tolist()
    assert fit.warnings == [] and fit.notes == []


# --------------------------------------------------------------------------- leave one out


def cells(mix: list[str], rows: list[tuple]) -> pl.DataFrame:
    """School-cells (urn, levels..., trials, events) with their pattern key."""
    frame = totals(mix, [row[1:] for row in rows]).with_columns(
        pl.Series("urn", [row[0] for row in rows])
    )
    return frame.with_columns(exp.pattern_key(frame.schema, mix).alias("pattern")).sort(
        "urn", "pattern"
    )


def test_leave_one_out_skips_a_school_with_every_exit() -> None:
    mix = ["sen_provision"]
    layout = exp.CellLayout.of(
        cells(mix, [("100001", "N", 30.0, 4), ("100001", "K", 5.0, 1), ("100002", "N", 40.0, 0)]),
        mix,
    )
    found = exp.leave_one_out(layout, mix, "main", ["100001"])
    assert found.judged == [] and found.rates.is_empty()
    assert found.warnings == [
        "school 100001 had every such exit in the data, so there was nothing to compare them "
        "with once their own pupils were left out; they were judged against the rates from all "
        "schools (which include their own exits)"
    ]


def test_leave_one_out_pools_a_level_only_the_school_has() -> None:
    """Only school 1 has children looked after: without it their level cannot be estimated, so
    its CLA pupils take the rate of 'none' (held at the reference, with a finite variance)."""
    mix = ["sen_provision", "social_care"]
    rows = [
        ("100001", "N", "none", 50.0, 5),
        ("100001", "N", "CLA", 6.0, 3),
        ("100002", "N", "none", 60.0, 2),
        ("100002", "K", "none", 20.0, 2),
        ("100003", "N", "none", 40.0, 1),
        ("100003", "K", "none", 10.0, 1),
    ]
    layout = exp.CellLayout.of(cells(mix, rows), mix)
    found = exp.leave_one_out(layout, mix, "main", ["100001"])
    assert found.warnings == [
        "school 100001: no other school had pupils with social care CLA, so judged without its "
        "own pupils they took the rate of pupils with social care none"
    ]
    rates = found.rates.join(layout.patterns, on="pattern")
    cla = rates.filter(social_care="CLA")["rate"].item()
    none = rates.filter(social_care="none", sen_provision="N")["rate"].item()
    assert cla == pytest.approx(none)
    assert none == pytest.approx(3 / 100, rel=1e-6)  # SEN N without school 1: 3 exits in 100
    assert 0 < found.variance["expected_variance"].item() < 1.0


def test_leave_one_out_says_when_the_schools_exits_were_the_only_ones_in_a_level() -> None:
    mix = ["sen_provision"]
    rows = [
        ("100001", "N", 50.0, 1),
        ("100001", "E", 5.0, 3),
        ("100002", "N", 60.0, 3),
        ("100002", "E", 6.0, 0),
    ]
    layout = exp.CellLayout.of(cells(mix, rows), mix)
    found = exp.leave_one_out(layout, mix, "main", ["100001"])
    assert found.judged == ["100001"] and found.warnings == []
    assert found.notes == [
        "school 100001: its own exits were the only ones among pupils with SEN provision E, so "
        "judged against the other schools their expected rate is close to 0"
    ]


def test_saturated_leave_one_out_gives_a_cell_only_the_school_has_the_others_overall_rate():
    mix = ["sen_provision"]
    rows = [("100001", "N", 50.0, 2), ("100001", "E", 4.0, 2), ("100002", "N", 50.0, 5)]
    layout = exp.CellLayout.of(cells(mix, rows), mix)
    found = exp.leave_one_out(layout, mix, "saturated", ["100001"])
    rates = found.rates.join(layout.patterns, on="pattern")
    assert rates.filter(sen_provision="E")["rate"].item() == pytest.approx(5 / 50)
    assert "had pupils of a case-mix cell no other school had" in found.warnings[0]


def test_no_refit_when_the_schools_beyond_the_limit_had_every_exit() -> None:
    """One school has all fifteen exits: beyond the limit, but without it there is nothing to
    fit, so the first-pass rates stay and a warning says why."""
    mix = ["sen_provision"]
    rows = [("100001", "N", 50.0, 15), ("100002", "N", 500.0, 0), ("100003", "N", 500.0, 0)]
    layout = exp.CellLayout.of(cells(mix, rows), mix)
    first = exp.fit_rates(layout.pattern_totals([], mix), mix, "main")
    baseline = exp.Baseline("local", "test", first.rates, "main", fit=first)
    excluded, _, stuck = refit_without_outliers(layout, baseline, mix, "main", {})
    assert excluded == [] and stuck == ["100001"]
    assert baseline.rates["rate"].item() == pytest.approx(15 / 1050)
    assert baseline.warnings == [
        "school 100001 was beyond the Poisson 99.9% limit, but no other school had such an "
        "exit, so the rates could not be refitted without them; the first-pass rates were used"
    ]
    assert refit_note(excluded, stuck).startswith("not refitted")


# --------------------------------------------------------------------------- tests of schools


def test_alpha_cannot_be_estimated_from_fewer_than_two_schools() -> None:
    one = stats.fit_overdispersion([3], [2.5])
    assert one.alpha == 0.0 and one.method == "poisson" and one.n_schools == 1
    assert one.warning is not None and one.warning.startswith("Only one school had")
    floored = stats.fit_overdispersion([3], [2.5], min_alpha=0.05)
    assert floored.alpha == 0.05 and floored.method == "poisson+floor"
    assert "the profile's minimum of 0.05 was used" in (floored.warning or "")
    two = stats.fit_overdispersion([3, 9], [5.0, 6.0])
    assert two.n_schools == 2 and np.isfinite(two.alpha)
    assert "only 2 schools" in (two.warning or "")


def test_alpha_from_no_school_says_so() -> None:
    none = stats.fit_overdispersion([0, 0], [0.0, 0.0])
    assert none.alpha == 0.0 and none.n_schools == 0
    assert (none.warning or "").startswith("No school had exits of this kind expected")


def test_infinite_funnelplotr_limits_leave_no_count_to_flag() -> None:
    series = stats._as_series("count_to_flag_95", np.array([3.0, np.inf, np.nan, 1.7321e19]))
    assert series.to_list() == [3, None, None, None]  # the last: beyond any integer (found by
    # the property test below: two schools whose every pupil left, FunnelPlotR's limits)


# --------------------------------------------------------------------------- the whole audit

VARIANTS = [  # the default run most often, and every method, baseline and profile sometimes
    [],
    [],
    [],
    ["--method", "poisson"],
    ["--method", "funnelplotr"],
    ["--baseline", "england"],
    ["--profile", "strict"],
    ["--profile", "ofsted"],
    ["--profile", "interactions"],  # written by model_profile: the other case-mix models
    ["--profile", "saturated"],
]
YEAR_SETS = [codes.YEAR_GROUPS, ["7", "8", "9", "10", "11"], ["R", "1", "2"], ["10"], ["14"]]
WINDOW = (date(2024, 9, 1), date(2024, 12, 20))


def subset(values: list[str]) -> st.SearchStrategy[list[str]]:
    """One value (degenerate), a few, or all of a code list."""
    return st.one_of(
        st.sampled_from(values).map(lambda v: [v]),
        st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True),
        st.just(values),
    )


@st.composite
def mixes(draw, levels: list[str], shares: list[float]) -> tuple[list[str], list[float]]:
    """A factor's levels and their weights: England's rough shares (most pupils in the first
    level, a few in the rare ones), even shares, or a degenerate few levels."""
    kind = draw(st.sampled_from(["realistic", "even", "subset"]))
    if kind == "realistic":
        return levels, shares
    chosen = draw(subset(levels)) if kind == "subset" else levels
    return chosen, [1.0] * len(chosen)


@st.composite
def datasets(draw, max_schools: int = 5, max_pupils: int = 200, max_exits: int = 30) -> dict:
    """A small valid dataset (tables as lists of rows) and the audit options to run it with.

    The shape (schools, pupils, exits, which levels occur and how often, where the exits fall)
    is drawn by hypothesis; the rows themselves by a seeded generator, which keeps examples
    cheap to draw even with hundreds of pupils."""
    urns = draw(
        st.lists(st.integers(100000, 999999), min_size=1, max_size=max_schools, unique=True)
    )
    urns = [str(u) for u in urns]
    sizes = draw(st.sampled_from(["even", "one big"]))
    school_weights = [1.0] * len(urns) if sizes == "even" else [10.0] + [1.0] * (len(urns) - 1)
    years = draw(st.sampled_from(YEAR_SETS).flatmap(subset))
    factors = [
        draw(mixes(codes.SEN_PROVISION, [80.0, 15.0, 5.0])),
        draw(mixes(["false", "true"], [75.0, 25.0])),
        draw(mixes(codes.SOCIAL_CARE, [94.0, 3.0, 1.5, 1.5])),
    ]
    dated = draw(st.booleans())
    rng = Random(draw(st.integers(0, 2**32 - 1)))
    pupils = []
    for i in range(draw(st.integers(5, max_pupils))):
        start = ""
        if dated and rng.random() < 0.3:
            start = (WINDOW[0] + timedelta(days=rng.randint(-30, 80))).isoformat()
        row = [f"P{i:05d}", rng.choices(urns, school_weights)[0], rng.choice(years)]
        row += [rng.choices(levels, weights)[0] for levels, weights in factors]
        pupils.append([*row, start, ""])
    where = draw(st.sampled_from(["anyone", "one school", "vulnerable"]))
    pool = {
        "anyone": pupils,
        "one school": [p for p in pupils if p[1] == pupils[0][1]],
        "vulnerable": [p for p in pupils if p[3] != "N" or p[5] != "none"] or pupils,
    }[where]
    leavers = rng.sample(pool, min(draw(st.integers(0, max_exits)), len(pool)))
    destinations = draw(st.one_of(st.just(["EHE"]), subset(codes.DESTINATIONS)))
    exits = []
    for pupil in leavers:
        first = max(date.fromisoformat(pupil[6]) if pupil[6] else WINDOW[0], WINDOW[0])
        day = first + timedelta(days=rng.randint(0, 60))
        exits.append([pupil[0], pupil[1], day.isoformat(), rng.choice(destinations)])
        if dated and rng.random() < 0.5:
            pupil[7] = day.isoformat()
    options = []
    if not exits or draw(st.booleans()):
        options += ["--from", WINDOW[0].isoformat(), "--to", WINDOW[1].isoformat()]
    options += draw(st.sampled_from(VARIANTS))
    schools = None
    if draw(st.booleans()):
        schools = [[u, f"School {u}", rng.choice(["primary", "secondary"]), "T1"] for u in urns]
    return {"pupils": pupils, "exits": exits, "schools": schools, "options": options}


def write_tables(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True)
    headers = {
        "pupils": [
            *["pupil_id", "urn", "year_group", "sen_provision", "disadvantaged"],
            *["social_care", "on_roll_from", "on_roll_to"],
        ],
        "exits": ["pupil_id", "urn", "exit_date", "destination"],
        "schools": ["urn", "name", "phase", "trust"],
    }
    for table, header in headers.items():
        if data[table] is not None:
            with (folder / f"{table}.csv").open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows([header, *data[table]])


def model_profile(options: list[str], folder: Path) -> list[str]:
    """The options with a profile named after a case-mix model replaced by a profile file that
    inherits the default and sets that model."""
    if options[-2:] not in (["--profile", "interactions"], ["--profile", "saturated"]):
        return options
    path = folder / f"{options[-1]}.toml"
    path.write_text(
        f'name = "{options[-1]}"\ninherits = "default"\n\n'
        f'[statistics]\ncase_mix_model = "{options[-1]}"\n',
        encoding="utf-8",
    )
    return [*options[:-1], str(path)]


def run_audit_command(*args: str) -> tuple[int, str]:
    """`offroll-audit audit ...` in-process: its exit code and what it wrote to stderr."""
    errors = StringIO()
    with redirect_stderr(errors), redirect_stdout(StringIO()):
        try:
            main(["audit", *args])
        except SystemExit as stop:
            return int(stop.code or 0), errors.getvalue()
    return 0, errors.getvalue()


def check_outputs(out: Path, data: dict, workbooks: bool) -> None:
    """A complete output folder; every school reported with finite expected counts; the local
    baseline's expected counts add up to the observed where nothing was set aside."""
    for name in ("results.json", "schools.csv", "exits.csv", "manifest.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {s["urn"] for s in results["schools"]} == {row[1] for row in data["pupils"]}
    for outcome in results["overdispersion"]:
        blocks = [s[outcome] for s in results["schools"] if outcome in s]
        assert all(b["expected"] is not None and b["expected"] >= 0 for b in blocks)
        robust = results["baseline"].get("robust", {}).get(outcome, {})
        untouched = not robust.get("excluded_urns") and not robust.get("left_out_urns")
        fit = results["baseline"].get("fit", {}).get(outcome, {})
        everyone_left = any("one overall rate" in text for text in fit.get("warnings", []))
        if results["baseline"]["kind"] == "local" and untouched and not everyone_left:
            observed = sum(b["observed"] for b in blocks)
            assert sum(b["expected"] for b in blocks) == pytest.approx(observed, abs=1e-4)
    if workbooks:
        assert (out / "overview.xlsx").is_file()
        selected = {s["urn"] for s in results["schools"] if s["audit"]}
        assert {p.stem for p in (out / "packs").glob("*.xlsx")} >= selected


def test_one_school_audit_says_what_it_did_in_warnings_and_the_method_sheet(tmp_path) -> None:
    """One school, a dozen pupils, three EHE exits, among them the only disadvantaged child on
    SEN support looked after: exit 0, the one-school and pooling warnings in results.json, the
    fit in the Method sheet."""
    pupils = [[f"P{i:03d}", "100001", "9", "N", "false", "none", "", ""] for i in range(11)]
    pupils.append(["P100", "100001", "9", "K", "true", "CLA", "", ""])
    exits = [[p[0], "100001", "2024-10-01", "EHE"] for p in (pupils[0], pupils[1], pupils[11])]
    data = {"pupils": pupils, "exits": exits, "schools": None, "options": []}
    write_tables(tmp_path / "data", data)
    out = str(tmp_path / "out")  # a local fit on purpose: one school would choose self
    code, errors = run_audit_command(
        str(tmp_path / "data"), "--out", out, "--no-letters", "-q", "--baseline", "local"
    )
    assert code == 0, errors
    check_outputs(tmp_path / "out", data, workbooks=True)
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert any(w.startswith("only one school") for w in results["warnings"])
    pooled = (
        "exits to elective home education: too few pupils to estimate the effects of SEN "
        "provision K (the only pupil at risk left; pooled with 'N'), disadvantage true (the only "
        "pupil at risk left; pooled with 'false') and social care CLA (the only pupil at risk "
        "left; pooled with 'none')"
    )
    assert pooled in results["warnings"]
    assert results["baseline"]["fit"]["ehe"]["model"].startswith("main effects of SEN provision")
    book = openpyxl.load_workbook(tmp_path / "out" / "overview.xlsx", read_only=True)
    lines = {row[0]: row[1] for row in book["Method"].iter_rows(values_only=True) if row[0]}
    assert "pooled with 'N'" in lines["Case-mix fit: Home education (EHE)"]


@settings(max_examples=80 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=datasets(), workbooks=st.sampled_from([False] * 7 + [True]))
def test_audit_of_any_small_valid_dataset_ends_well(data: dict, workbooks: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "data", Path(tmp) / "out"
        write_tables(folder, data)
        flags = [] if workbooks else ["--no-workbooks"]
        options = model_profile(data["options"], Path(tmp))
        code, errors = run_audit_command(
            str(folder), "--out", str(out), "--no-letters", "-q", *flags, *options
        )
        assert code == 0, errors
        check_outputs(out, data, workbooks)
