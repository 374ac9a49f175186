"""Self-review (--baseline self), the automatic choice of baseline, LA-rate anchoring and the
trust roll-up (issue 14).

A trust's own data are judged against relative risks from a baseline file and a level
estimated robustly from its own schools; these tests build small trusts whose answers are
known (two blatant off-rollers among eight schools, a one-school review, a slice of a
synthetic LA) and check the statistics, the choice, the bad-input errors and the outputs.
"""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import openpyxl
import polars as pl
import pytest
from conftest import REPOSITORY, Table, base_tables, write_dataset

from offroll_audit import AuditOptions, codes, load_dataset, run_audit
from offroll_audit import expected as exp
from offroll_audit import self_review as sr
from offroll_audit import significance as stats
from offroll_audit.cli import app
from offroll_audit.console.errors import run_guarded
from offroll_audit.profile import load_profile
from offroll_audit.synthetic import generate_dataset
from offroll_audit.workbooks.trust import self_review_cautions

EXAMPLE = REPOSITORY / "fixtures" / "example-la"
ENGLAND = REPOSITORY / "thresholds" / "baselines" / "england.toml"
PUPIL_HEADER = ["pupil_id", "urn", "year_group", "sen_provision", "disadvantaged", "social_care"]


def run_cli(*args: object) -> int:
    return run_guarded(app, [str(a) for a in args], {"debug": False})


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def trust_tables(exits_per_school: list[int], trust: str | None = "Harbour Trust") -> dict:
    """Secondary schools of 500 pupils (100 in each of Years 7-11, no SEN, not disadvantaged,
    no social care) with the given numbers of exits to home education spread over the year."""
    pupils: Table = [PUPIL_HEADER]
    exits: Table = [["pupil_id", "urn", "exit_date", "destination"]]
    schools: Table = [["urn", "name", "phase", "type", "trust", "la_code"]]
    for index, count in enumerate(exits_per_school):
        urn = f"{200001 + index}"
        schools.append([urn, f"School {index + 1}", "secondary", "academy", trust or "", "852"])
        ids = [f"S{index}P{p:03d}" for p in range(500)]
        pupils += [[pid, urn, str(7 + p % 5), "N", "false", "none"] for p, pid in enumerate(ids)]
        for k in range(count):
            day = date(2024, 9, 10) + timedelta(days=(k * 97) % 300)
            exits.append([ids[(k * 7) % 500], urn, day.isoformat(), "EHE"])
    return {"pupils": pupils, "exits": exits, "schools": schools, "letters": None}


def write_trust(folder: Path, exits_per_school: list[int], trust: str | None = "Harbour Trust"):
    return write_dataset(folder, trust_tables(exits_per_school, trust), letter_files={})


# --------------------------------------------------------------------------- the level


def against_the_others(
    level: sr.Level, per_school: sr.SchoolLevels, o: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """Each school's p-value against the level of the others, with that level's variance
    added to alpha (as the audit's test does)."""
    expected = per_school.expected(s)
    alpha = level.alpha + per_school.expected_variance(s) / expected**2
    return stats.nb_p_upper(o, expected, alpha)


def test_two_offrollers_in_a_trust_of_eight_do_not_raise_the_level() -> None:
    """Six schools at twice the national rate, two at six times: both off-rollers are set
    aside, the level stays at the six's, and each is beyond the 99.8% limit against it."""
    s = np.full(8, 10.0)
    o = np.array([20, 18, 22, 19, 21, 20, 60, 60], dtype=float)
    urns = [str(i) for i in range(1, 9)]
    level, per_school = sr.estimate_level(o, s, urns, {})
    assert level.how == "estimated" and sorted(level.set_aside) == ["7", "8"]
    assert level.value == pytest.approx(120 / 60, rel=0.06)  # the prior (4 exits at 1) pulls
    assert level.ci95[0] < level.value < level.ci95[1]
    p = against_the_others(level, per_school, o, s)
    assert (p[6:] < 0.001).all() and (p[:6] > 0.01).all()
    # without setting them aside each would be judged against a level the other raised
    raised = (o.sum() - o[6]) / (s.sum() - s[6])
    assert raised > 1.25 * per_school.level[6, 0]


# Four primaries at 1.2 times the shape's national level, and secondaries whose pupils leave
# 2.8 times as often as the shape's ratio between the phases says (england.toml's against the
# synthetic LAs'): (primary years, secondary years) per school.
PRIMARIES_S = [[4.0, 0.0]] * 4
PRIMARIES_O = [[5.0, 0.0], [4.0, 0.0], [5.0, 0.0], [6.0, 0.0]]


def test_a_lone_secondary_among_primaries_allows_for_the_shapes_ratio_between_phases() -> None:
    """Judged against one level, a secondary at 2.8 times the shape's ratio is beyond the
    99.8% limit (p 0.0007): the trust's level comes from its primaries, and the file's ratio
    between the phases is taken as known. With a level per stage, tied to the other by that
    ratio give or take self_stage_sd, it is within chance (p 0.008); a secondary losing six
    times the primaries' rate still stands out."""
    s = np.array([*PRIMARIES_S, [0.0, 10.0]])
    urns = list("abcde")
    for secondary, beyond in ((34.0, False), (60.0, True)):
        o = np.array([*PRIMARIES_O, [0.0, secondary]])
        level, per_school = sr.estimate_level(o, s, urns, {})
        p = against_the_others(level, per_school, o.sum(axis=1), s)[-1]
        assert (p < 0.001) == beyond, (secondary, p)
        assert set(level.stages) == {"primary years", "secondary years"}
    o = np.array([*PRIMARIES_O, [0.0, 34.0]])
    one, per_school = sr.estimate_level(o.sum(axis=1), s.sum(axis=1), urns, {})
    assert against_the_others(one, per_school, o.sum(axis=1), s.sum(axis=1))[-1] < 0.001


def test_a_trusts_secondaries_are_judged_against_its_other_secondaries() -> None:
    """Three secondaries, all at 2.8 times the shape's ratio: against one level all three
    were set aside and two selected; by stage the secondaries' level is theirs (about three
    times the primaries'), nothing is set aside and none is beyond the 95% limit."""
    s = np.array([*PRIMARIES_S, *[[0.0, 10.0]] * 3])
    o = np.array([*PRIMARIES_O, [0.0, 34.0], [0.0, 30.0], [0.0, 38.0]])
    urns = list("abcdefg")
    level, per_school = sr.estimate_level(o, s, urns, {})
    assert level.set_aside == []
    assert level.stages["secondary years"]["value"] > 2 * level.stages["primary years"]["value"]
    assert (against_the_others(level, per_school, o.sum(axis=1), s) > 0.025).all()
    one, one_school = sr.estimate_level(o.sum(axis=1), s.sum(axis=1), urns, {})
    assert one.set_aside == ["e", "f", "g"]
    p = against_the_others(one, one_school, o.sum(axis=1), s.sum(axis=1))
    assert (p[4:] < 0.001).sum() == 2


def test_stages_split_exits_and_expectations_by_primary_and_secondary_years() -> None:
    """Reception to Year 6 are the first stage, Year 7 on the second; self_stage_sd 0 takes
    the file's ratio as known and keeps one stage."""
    cells = pl.DataFrame(
        {
            "urn": ["1", "1", "2", "2"],
            "year_group": ["R", "6", "7", "11"],
            "trials": [100.0, 100.0, 200.0, 100.0],
            "events": [1.0, 2.0, 3.0, 4.0],
        }
    )
    years = pl.Enum(codes.YEAR_GROUPS)
    cells = cells.with_columns(pl.col("year_group").cast(years))
    cells = cells.with_columns(exp.pattern_key(cells.schema, ["year_group"]).alias("pattern"))
    layout = exp.CellLayout.of(cells, ["year_group"])
    rates = pl.DataFrame(
        {"year_group": ["R", "6", "7", "11"], "rate": [0.01, 0.02, 0.03, 0.04]},
        schema={"year_group": years, "rate": pl.Float64},
    )
    observed, expected = sr.stage_split(layout, rates, ["year_group"], {})
    assert observed.tolist() == [[3.0, 0.0], [0.0, 7.0]]
    assert expected == pytest.approx(np.array([[3.0, 0.0], [0.0, 10.0]]))
    observed, expected = sr.stage_split(layout, rates, ["year_group"], {"self_stage_sd": 0})
    assert observed.tolist() == [[3.0], [7.0]]
    assert expected == pytest.approx(np.array([[3.0], [10.0]]))


def test_with_one_stage_the_level_is_the_credibility_weighted_one() -> None:
    """The stage posterior with a single stage is weight x log(O / S) / (weight + prior)
    with variance 1 / (weight + prior), as before stages."""
    level, covariance = sr._stage_posterior(
        np.array([30.0]), np.array([10.0]), np.array([50.0]), 0.0, np.array([[0.25]])
    )
    assert level[0] == pytest.approx(math.exp(30 * math.log(3) / 34))
    assert covariance[0, 0] == pytest.approx(1 / 34)


def test_a_school_unlike_the_others_gets_the_shapes_doubt_in_its_limits() -> None:
    """composition_variance: nothing for a school whose pupils are like those the level rests
    on; for the trust's deprived school, the doubt about disadvantage times how far its
    share of expected exits among disadvantaged pupils lies from theirs, squared; judged
    against the prior alone, its own share squared."""
    layout, rates = own_risk_layout([(9e3, 1e3, 1.0), (9e3, 1e3, 1.0), (2e3, 8e3, 1.0)])
    doubt = sr.ShapeDoubt([("disadvantaged", "true")], np.eye(1) * 0.16)
    kept = np.array([True, True, False])
    spread = sr.composition_variance(layout, rates, ["disadvantaged"], doubt, kept)
    assert spread[:2] == pytest.approx([0.0, 0.0], abs=1e-12)
    gap = 8e3 / 10e3 - 1e3 / 10e3  # shares of the shape's expectation (one rate for all)
    assert spread[2] == pytest.approx(0.16 * gap**2)
    alone = sr.composition_variance(layout, rates, ["disadvantaged"], doubt, kept, np.ones(3))
    assert alone == pytest.approx(0.16 * np.array([0.1, 0.1, 0.8]) ** 2)


def test_a_shape_files_doubt_must_be_a_number(tmp_path) -> None:
    """A --shape file whose relative_risk_sd is not a non-negative number: exit 2, naming
    the file and the key, nothing written."""
    shape = tmp_path / "shape.toml"
    text = (REPOSITORY / "thresholds" / "baselines" / "england.toml").read_text()
    shape.write_text(text.replace("social_care = 0.5", 'social_care = "wide"', 1))
    data = write_trust(tmp_path / "trust", [3, 4, 5])
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--shape", shape, "--quiet") == 2
    assert not out.exists()


def test_a_school_is_set_aside_only_beyond_chance_against_a_level_with_its_uncertainty() -> None:
    """Two primaries with two exits between them and two secondaries well above a shape whose
    year-group rise is too shallow (england.toml's against the synthetic LAs'). Judged by a
    plain Poisson test against the primaries' barely known level, both secondaries were set
    aside, the level rested on two exits and both were then selected: half a trust set
    aside by a test that ignored the uncertainty the audit's own test allows for. Set aside
    only what is beyond chance with that uncertainty (and self_alpha), the level is theirs
    and neither is beyond the 99.8% limit."""
    s = np.array([2.0, 2.0, 8.0, 8.0])
    o = np.array([1.0, 1.0, 30.0, 26.0])
    level, per_school = sr.estimate_level(o, s, ["a", "b", "c", "d"], {})
    assert level.set_aside == [] and level.how == "estimated"
    assert (against_the_others(level, per_school, o, s)[2:] > 0.001).all()
    # a blatant one is still set aside: 40 where its neighbours say about 8
    o = np.array([1.0, 1.0, 8.0, 40.0])
    level, _ = sr.estimate_level(o, s, ["a", "b", "c", "d"], {})
    assert level.set_aside == ["d"]


def test_two_moderate_offrollers_in_a_trust_of_ten_from_a_synthetic_la() -> None:
    """Exits to home education in a trust of ten cut from a synthetic LA (bench_trusts.py,
    seed 1017; shape expectations from the synthetic nation): two planted off-rollers (53
    against 14.1, 42 against 11.1) among eight ordinary schools. Setting aside only what
    is beyond chance even allowing for differences between schools (self_alpha) kept both,
    each within chance against the level the other raised, and neither was selected; the
    level's uncertainty alone is allowed for, so both are set aside and both stand out."""
    o = np.array([8.0, 53.0, 0.0, 42.0, 0.0, 13.0, 0.0, 0.0, 14.0, 2.0])
    s = np.array([6.681, 14.071, 0.618, 11.083, 0.92, 6.717, 0.822, 0.304, 7.818, 0.761])
    level, per_school = sr.estimate_level(o, s, [str(i) for i in range(10)], {})
    assert level.how == "estimated" and level.set_aside == ["1", "3"]
    p = against_the_others(level, per_school, o, s)
    assert (p[[1, 3]] < 0.001).all() and (np.delete(p, [1, 3]) > 0.05).all()


def test_each_school_is_judged_against_the_others_with_the_level_uncertainty() -> None:
    """Leave-one-out levels exclude the school itself; fewer exits elsewhere, more variance;
    a school set aside is judged against all the schools kept."""
    s = np.array([5.0, 5.0, 5.0, 20.0])
    o = np.array([5.0, 6.0, 4.0, 21.0])
    level, per_school = sr.estimate_level(o, s, ["a", "b", "c", "d"], {"self_national_cv": 1e6})
    assert level.set_aside == []
    others = (o.sum() - o) / (s.sum() - s)
    assert per_school.level[:, 0] == pytest.approx(others, rel=1e-6)
    log_variance = per_school.covariance[:, 0, 0]
    assert log_variance[3] > log_variance[0]  # d's level rests on 15 exits


def test_too_few_exits_lean_on_the_national_level_with_its_uncertainty() -> None:
    level, per_school = sr.estimate_level(np.array([1.0, 0.0]), np.array([2.0, 3.0]), ["a", "b"])
    assert level.how == "national"
    assert 1 / 5 < level.value < 1  # between the data's and the national level it leans on
    assert level.ci95[1] / level.ci95[0] > 4  # an area's level is barely known
    assert (per_school.covariance[:, 0, 0] > 0.2).all()  # the level's log variance


# --------------------------------------------------------------------------- whole audits


def test_a_trust_of_eight_with_two_offrollers_selects_both_and_nothing_else(tmp_path) -> None:
    data = write_trust(tmp_path / "trust", [8, 7, 9, 8, 7, 9, 30, 30])
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--quiet") == 0
    results = results_of(out)
    assert results["baseline"]["kind"] == "self" and results["baseline"]["chosen"] == "automatic"
    level = results["baseline"]["level"]["ehe"]
    assert sorted(level["set_aside"]) == ["200007", "200008"]
    innocents = [s for s in results["schools"] if s["urn"] not in ("200007", "200008")]
    innocent_ratio = sum(s["ehe"]["observed"] for s in innocents) / sum(
        s["ehe"]["expected"] for s in innocents
    )
    assert innocent_ratio == pytest.approx(1.0, abs=0.1)  # the level is the innocents'
    selected = {s["urn"] for s in results["schools"] if s["audit"]}
    assert selected == {"200007", "200008"}
    for urn in selected:
        school = next(s for s in results["schools"] if s["urn"] == urn)
        assert school["ehe"]["band"] == "high_998" and "EHE_HIGH" in school["audit_reasons"]
    cover = openpyxl.load_workbook(out / "packs" / "200007.xlsx", read_only=True)["Cover"]
    texts = [str(v) for row in cover.iter_rows(values_only=True) for v in row if v]
    assert sr.CANNOT_TELL in texts


def test_a_trust_slice_and_the_la_wide_audit_agree_on_the_planted_schools(tmp_path) -> None:
    """Seed 7's off-roller belongs to a trust of eight: cut out as the trust would export it
    and audited on its own (automatically a self-review), its planted schools are selected
    as the LA-wide audit selects them, and none of its other schools is."""
    la = tmp_path / "la"
    truth = generate_dataset(la, seed=7, letters=False)
    schools = pl.read_csv(la / "schools.csv", infer_schema_length=0)
    offroller = truth["planted"]["offroll_ehe"][0]["urn"]
    trust = schools.filter(pl.col("urn") == offroller)["trust"][0]
    urns = schools.filter(pl.col("trust") == trust)["urn"].to_list()
    assert len(urns) == 8
    own = tmp_path / "trust"
    own.mkdir()
    for table in ("pupils", "exits", "schools"):
        frame = pl.read_csv(la / f"{table}.csv", infer_schema_length=0)
        frame.filter(pl.col("urn").is_in(urns)).write_csv(own / f"{table}.csv")
    whole = run_audit(load_dataset(la)[0], AuditOptions(letters=False))
    alone = run_audit(load_dataset(own)[0], AuditOptions(letters=False))
    assert whole.options.baseline == "local" and alone.options.baseline == "self"
    assert trust in (alone.options.baseline_why or "")
    la_selected = dict(zip(whole.schools["urn"], whole.schools["audit"], strict=True))
    own_selected = dict(zip(alone.schools["urn"], alone.schools["audit"], strict=True))
    planted = {
        p["urn"]
        for kind in ("offroll_ehe", "offroll_moves", "special_no_consent", "innocent_high")
        for p in truth["planted"][kind]
    } | set(truth["planted"]["trust_template"]["urns"])
    for urn in urns:
        if urn in planted:
            assert own_selected[urn] == la_selected[urn], urn
        else:
            assert not own_selected[urn], urn
    band = dict(zip(alone.schools["urn"], alone.schools["ehe_band"], strict=True))
    assert own_selected[offroller] and band[offroller] == "high_998"
    stages = alone.outcomes["ehe"].baseline.self_review.level.stages
    assert set(stages) == {"primary years", "secondary years"}  # the trust has both
    # a one-year export's window is the year: the targeted pupils' rule reads it, in both
    assert whole.window.days >= 300
    for result in (whole, alone):
        reasons = dict(zip(result.schools["urn"], result.schools["audit_reasons"], strict=True))
        assert "EHE_VULNERABLE_YEAR" in reasons[offroller]


def test_one_school_leans_on_the_national_level_and_the_cover_says_so(tmp_path) -> None:
    data = write_trust(tmp_path / "one", [30], trust=None)
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--quiet") == 0
    results = results_of(out)
    level = results["baseline"]["level"]["ehe"]
    assert level["how"] == "national" and level["warning"].startswith("too few")
    assert any("too few to estimate this data's own level" in w for w in results["warnings"])
    assert results["schools"][0]["audit"]  # 30 against about 3: beyond any area's level
    cover = openpyxl.load_workbook(out / "packs" / "200001.xlsx", read_only=True)["Cover"]
    labels = {row[0]: row[1] for row in cover.iter_rows(values_only=True) if row[0]}
    assert labels["Level: Home education (EHE)"].startswith("Too few to estimate")
    assert labels["Self-review"] == sr.CANNOT_TELL
    assert self_review_cautions(results)[0][0] == "Level: Home education (EHE)"


def test_a_trust_too_small_for_its_own_level_says_so_in_its_roll_up(tmp_path) -> None:
    """Three schools with two exits between them: the self-review's level leans on the
    national one, and the trust roll-up (whose own level is the audit's) says so too."""
    data = write_trust(tmp_path / "trust", [1, 0, 1])
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "-q", "--no-workbooks") == 0
    results = results_of(out)
    assert results["baseline"]["level"]["ehe"]["how"] == "national"
    (trust,) = results["trusts"]
    assert trust["ehe"]["own_level"]["how"] == "national"
    assert trust["ehe"]["own_level_note"].startswith("too few schools or exits")


# --------------------------------------------------------------------------- the choice


def test_too_few_schools_choose_self_and_say_so_everywhere(tmp_path, capsys) -> None:
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "Baseline self chosen automatically" in " ".join(printed.split())
    results = results_of(out)
    assert results["baseline"]["kind"] == "self"
    assert "fewer than the 20" in results["baseline"]["why"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["baseline"] == "self"
    assert manifest["baseline_choice"]["chosen"] == "automatic"
    method = openpyxl.load_workbook(out / "overview.xlsx", read_only=True)["Method"]
    lines = {row[0]: row[1] for row in method.iter_rows(values_only=True) if row[0]}
    assert "fewer than the 20" in lines["Baseline chosen automatically"]
    assert lines["What a self-review cannot tell"] == sr.CANNOT_TELL
    local = tmp_path / "local"
    assert run_cli("audit", data, "--out", local, "--baseline", "local", "--quiet") == 0
    assert results_of(local)["baseline"]["kind"] == "local"
    assert results_of(local)["baseline"]["chosen"] == "given"


def test_one_trusts_data_choose_self_and_an_la_chooses_local(tmp_path) -> None:
    one = tmp_path / "one-trust"
    shutil.copytree(EXAMPLE, one)
    schools = pl.read_csv(one / "schools.csv", infer_schema_length=0)
    schools.with_columns(pl.lit("Big Trust").alias("trust")).write_csv(one / "schools.csv")
    dataset, _ = load_dataset(one)
    one_year = {"letters": False, "start": date(2024, 9, 1), "end": date(2025, 7, 31)}
    chosen = run_audit(dataset, AuditOptions(**one_year))
    assert chosen.options.baseline == "self"
    assert "only the schools of one trust (Big Trust)" in chosen.options.baseline_why
    example, _ = load_dataset(EXAMPLE)
    assert example.schools.height == 40
    la = run_audit(example, AuditOptions(**one_year))
    assert la.options.baseline == "local" and "40 schools" in la.options.baseline_why


def test_self_review_options_need_the_self_baseline(tmp_path, capsys) -> None:
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--baseline", "local", "--shape", "england") == 2
    assert "--shape and --la-rates are for --baseline self" in capsys.readouterr().err
    assert not out.exists()
    assert run_cli("audit", data, "--out", out, "--baseline", "self", "--shape", "mars") == 2
    assert "--shape 'mars'" in capsys.readouterr().err


def test_england_is_unchanged_when_asked_for(tmp_path) -> None:
    """--baseline england: a file baseline, every school's expected count the sum over its
    pupils of the file's annual rate x relative risks x window days / 365, worked out here
    independently of the pipeline; nothing of the self-review is applied."""
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    window = ["--from", "2024-09-01", "--to", "2025-07-31"]
    assert run_cli("audit", data, "--out", out, "--baseline", "england", *window, "-q") == 0
    results = results_of(out)
    baseline = results["baseline"]
    assert baseline["kind"] == "file" and baseline["chosen"] == "given"
    assert "level" not in baseline and "England" in baseline["source"]
    spec = tomllib.loads(ENGLAND.read_text(encoding="utf-8"))
    days = (date(2025, 7, 31) - date(2024, 9, 1)).days + 1
    pupils = pl.read_csv(data / "pupils.csv", infer_schema_length=0)
    for outcome in ("ehe", "unexplained"):
        rules = spec["outcomes"][outcome]
        risks = rules.get("relative_risk", {})
        expected: dict[str, float] = {}
        for row in pupils.iter_rows(named=True):
            rate = rules["annual_rate"] * days / 365
            for factor in ("sen_provision", "social_care", "year_group"):
                rate *= risks.get(factor, {}).get(row[factor], 1.0)
            expected[row["urn"]] = expected.get(row["urn"], 0.0) + rate
        for school in results["schools"]:
            assert school[outcome]["expected"] == pytest.approx(expected[school["urn"]], abs=2e-6)


# ------------------------------------------------- factors the shape file does not give


def own_risk_layout(schools: list[tuple[float, float, float]], risk: float = 2.0):
    """Cells of one factor (disadvantaged) at a shape rate of 1% per pupil: per school
    (pupils not disadvantaged, disadvantaged pupils, the school's own level); exits are what
    that level and a within-school relative risk `risk` expect (fractions are fine here)."""
    rows = []
    for index, (plain, poor, level) in enumerate(schools):
        urn = f"{300001 + index}"
        rows.append((urn, False, plain, plain * 0.01 * level))
        rows.append((urn, True, poor, poor * 0.01 * level * risk))
    cells = pl.DataFrame(
        rows,
        schema={
            "urn": pl.String,
            "disadvantaged": pl.Boolean,
            "trials": pl.Float64,
            "events": pl.Float64,
        },
        orient="row",
    )
    cells = cells.with_columns(exp.pattern_key(cells.schema, ["disadvantaged"]).alias("pattern"))
    rates = pl.DataFrame({"disadvantaged": [False, True], "rate": [0.01, 0.01]})
    return exp.CellLayout.of(cells, ["disadvantaged"]), rates


def test_a_factor_the_shape_lacks_is_estimated_within_schools() -> None:
    """Disadvantaged pupils leave twice as often as others at the same school, and the
    schools with more of them also leave more overall (their level: 1 to 3). Compared within
    schools the estimate is 2; pooled across schools (what a crude rate would say) it is
    well above, because the school levels would enter. The schools' total expected count is
    the shape's, and a level of 1 per school then gives each school its own exits."""
    schools = [(9e3, 1e3, 1.0), (8e3, 2e3, 1.0), (5e3, 5e3, 2.0), (3e3, 7e3, 3.0)]
    layout, rates = own_risk_layout(schools)
    kept = np.ones(4, dtype=bool)
    shaped, risks, _ = sr.own_risk_rates(layout, rates, ["disadvantaged"], ["disadvantaged"], kept)
    (risk,) = risks
    assert risk.reference == "false"
    value, low, high = risk.risks["true"]
    assert value == pytest.approx(2.0, rel=0.03) and low < 2.0 < high
    crude = (sum(p * 0.02 * lv for _, p, lv in schools) / sum(p for _, p, _ in schools)) / (
        sum(n * 0.01 * lv for n, _, lv in schools) / sum(n for n, _, _ in schools)
    )
    assert crude > 2.5
    shape_total = layout.expected(rates, ["disadvantaged"]).sum()
    assert layout.expected(shaped, ["disadvantaged"]).sum() == pytest.approx(shape_total)
    assert "disadvantaged pupils 1.99 times as often (95% interval" in risk.sentence()
    # a tenth of the pupils: the same data say less, and the prior (no difference) pulls
    small = [(n / 10, p / 10, lv) for n, p, lv in schools]
    layout, rates = own_risk_layout(small)
    (fewer,) = sr.own_risk_rates(layout, rates, ["disadvantaged"], ["disadvantaged"], kept)[1]
    assert 1.0 < fewer.risks["true"][0] < value and fewer.risks["true"][1] < low


def test_an_estimated_factor_ignores_a_school_wide_excess_and_the_schools_set_aside() -> None:
    """A school losing five times as many pupils across the board leaves the within-school
    estimate where it was; one whose excess lies among disadvantaged pupils is what `kept`
    is for: left out, it cannot raise the estimate."""
    ordinary = [(8e3, 2e3, 1.0)] * 5
    kept = np.ones(6, dtype=bool)
    mix = ["disadvantaged"]
    layout, rates = own_risk_layout([*ordinary, (8e3, 2e3, 5.0)])
    (risk,) = sr.own_risk_rates(layout, rates, mix, mix, kept)[1]
    assert risk.risks["true"][0] == pytest.approx(2.0, rel=0.03)
    layout, rates = own_risk_layout([*ordinary, (8e3, 2e3, 1.0)])
    target = layout.events.copy()
    target[-1] *= 6  # the last school's disadvantaged pupils leave six times as often
    layout = replace(layout, events=target)
    raised = sr.own_risk_rates(layout, rates, mix, mix, kept)[1][0].risks["true"][0]
    kept[-1] = False
    left_out = sr.own_risk_rates(layout, rates, mix, mix, kept)[1][0].risks["true"][0]
    assert raised > 2.5 and left_out == pytest.approx(2.0, rel=0.03)


def test_without_exits_an_estimated_factor_is_no_adjustment() -> None:
    layout, rates = own_risk_layout([(800.0, 200.0, 0.0), (500.0, 500.0, 0.0)])
    shaped, (risk,), _ = sr.own_risk_rates(
        layout, rates, ["disadvantaged"], ["disadvantaged"], np.ones(2, dtype=bool)
    )
    assert risk.risks["true"][0] == pytest.approx(1.0) and risk.weak
    assert shaped.get_column("rate").to_list() == pytest.approx([0.01, 0.01])


def deprived_trust_tables() -> dict:
    """Six secondaries where disadvantaged pupils leave for home education four times as
    often as others at the same school: school 1 (1,000 pupils, 80% disadvantaged) and four
    others (500 pupils, 10%) leave at that rate and are innocent; school 6 (500 pupils, 10%)
    loses four times as many across the board."""
    pupils: Table = [PUPIL_HEADER]
    exits: Table = [["pupil_id", "urn", "exit_date", "destination"]]
    schools: Table = [["urn", "name", "phase", "type", "trust", "la_code"]]
    plan = [(1000, 0.8, 1.0)] + [(500, 0.1, 1.0)] * 4 + [(500, 0.1, 4.0)]
    for index, (size, share, excess) in enumerate(plan):
        urn = f"{400001 + index}"
        schools.append([urn, f"School {index + 1}", "secondary", "academy", "Vale Trust", "852"])
        poor = round(size * share)
        ids = [f"D{index}P{p:04d}" for p in range(size)]
        pupils += [
            [pid, urn, str(7 + p % 5), "N", "true" if p < poor else "false", "none"]
            for p, pid in enumerate(ids)
        ]
        leaving = [*ids[: round(poor * 0.04 * excess)]]
        leaving += ids[poor : poor + round((size - poor) * 0.01 * excess)]
        for k, pid in enumerate(leaving):
            day = date(2024, 9, 10) + timedelta(days=(k * 97) % 300)
            exits.append([pid, urn, day.isoformat(), "EHE"])
    return {"pupils": pupils, "exits": exits, "schools": schools, "letters": None}


def test_a_deprived_innocent_is_not_selected_against_a_shape_without_disadvantage(
    tmp_path,
) -> None:
    """england.toml gives no relative risk for disadvantage. Against it unadjusted, the
    deprived school (34 exits where its neighbours' rate says about 11) was selected; with
    disadvantage estimated within the trust's schools (4 in truth, about 3 after the prior's
    pull) it is expected, while the school with a four-fold excess across the board is
    still selected. (A three-fold one is no longer: its limits allow for how unsure the
    trust's few exits leave the disadvantage estimate, since its pupils are unlike those of
    the deprived school that sets most of the level; p 0.0009, q 0.005.) The estimate is in
    results.json and on the Method sheet."""
    data = write_dataset(tmp_path / "trust", deprived_trust_tables(), letter_files={})
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--baseline", "self", "--quiet") == 0
    results = results_of(out)
    (risk,) = results["baseline"]["own_risks"]["ehe"]
    assert risk["factor"] == "disadvantaged" and risk["reference"] == "false"
    assert 2.5 < risk["relative_risk"]["true"]["value"] < 6
    # england.toml's doubt about the factors it gives (disadvantage is estimated instead)
    assert results["baseline"]["shape_sd"]["ehe"] == {"sen_provision": 0.25, "social_care": 0.5}
    selected = {s["urn"] for s in results["schools"] if s["audit"]}
    assert selected == {"400006"}
    deprived = next(s for s in results["schools"] if s["urn"] == "400001")
    assert deprived["ehe"]["observed"] == 34 and deprived["ehe"]["expected"] > 20
    # as it was before: no adjustment (a prior that allows no difference) selects it
    profile = load_profile("default")
    settings = {**profile.settings, "statistics": {**profile.statistics, "self_own_risk_sd": 1e-6}}
    unadjusted = AuditOptions(
        letters=False, baseline="self", profile=replace(profile, settings=settings)
    )
    before = run_audit(load_dataset(data)[0], unadjusted)
    chosen = dict(zip(before.schools["urn"], before.schools["audit"], strict=True))
    assert chosen["400001"] and chosen["400006"]
    method = openpyxl.load_workbook(out / "overview.xlsx", read_only=True)["Method"]
    texts = " ".join(str(v) for row in method.iter_rows(values_only=True) for v in row if v)
    assert "Estimated from your pupils: Home education (EHE)" in texts
    assert "disadvantaged pupils" in texts and "at the same school" in texts


# --------------------------------------------------------------------------- LA rates


def with_la_codes(codes: list[str]) -> dict:
    tables = base_tables()
    tables["schools"] = [
        [*row, code] for row, code in zip(tables["schools"], ["la_code", *codes], strict=True)
    ]
    return tables


BAD_RATES = [
    ("la_code,annual_rate\n85,0.01\n", 2, "la_code", "not a 3-digit DfE LA code"),
    ("la_code,annual_rate\nE06000045,0.01\n", 2, "la_code", "not a 3-digit DfE LA code"),
    ("la_code,annual_rate\n852,1.4\n", 2, "annual_rate", "outside 0 to 0.2"),
    ("la_code,annual_rate\n852,-0.01\n", 2, "annual_rate", "outside 0 to 0.2"),
    ("la_code,annual_rate\n852,1.4%\n", 2, "annual_rate", "is not a number"),
    ("la_code,annual_rate\n852,0.01\n852,0.02\n", 3, "la_code", "already on row 2"),
    ("# notes\nla_code,rate\n852,0.01\n", 2, "annual_rate", "no annual_rate column"),
]


@pytest.mark.parametrize(("text", "row", "column", "message"), BAD_RATES)
def test_bad_la_rates_exit_2_naming_file_row_and_column(
    tmp_path, capsys, text: str, row: int, column: str, message: str
) -> None:
    data = write_dataset(tmp_path / "data", with_la_codes(["852", "852"]))
    rates = tmp_path / "rates.csv"
    rates.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--la-rates", rates) == 2
    err = capsys.readouterr().err
    assert f"error: {rates}:{row} [{column}]: " in err and message in err
    assert not out.exists()


def test_schools_whose_la_has_no_rate_exit_2(tmp_path, capsys) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("la_code,annual_rate\n852,0.01\n", encoding="utf-8")
    data = write_dataset(tmp_path / "data", with_la_codes(["852", "931"]))
    assert run_cli("audit", data, "--out", tmp_path / "o", "--la-rates", rates) == 2
    err = capsys.readouterr().err
    assert f"error: {rates} [la_code]: no rate for LA 931 (school 100002, schools.csv row 3)" in err
    assert not (tmp_path / "o").exists()
    blank = write_dataset(tmp_path / "blank", with_la_codes(["852", ""]))
    assert run_cli("audit", blank, "--out", tmp_path / "o", "--la-rates", rates) == 2
    assert "error: schools.csv:3 [la_code]: school 100002 has no la_code" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_la_rates_anchor_the_level_of_exits_to_home_education(tmp_path) -> None:
    data = write_trust(tmp_path / "trust", [12, 11, 13, 12, 10, 12, 36, 36])
    rates = tmp_path / "rates.csv"
    rates.write_text("la_code,la_name,annual_rate\n852,Southampton,0.0225\n", encoding="utf-8")
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "--la-rates", rates, "-q") == 0
    results = results_of(out)
    levels = results["baseline"]["level"]
    assert levels["ehe"]["how"] == "anchored" and levels["ehe"]["value"] == pytest.approx(3.0)
    assert levels["unexplained"]["how"] == "estimated"  # no published rate to anchor to
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["baseline_choice"]["la_rates"]["sha256"]) == 64
    trust = results["trusts"][0]
    assert trust["ehe"]["reference"]["kind"] == "anchored"


# --------------------------------------------------------------------------- the roll-up


def test_trust_roll_up_on_la_data(tmp_path, capsys) -> None:
    dataset, _ = load_dataset(EXAMPLE)
    sizes = dataset.schools.group_by("trust").len().filter(pl.col("trust").is_not_null())
    name = sizes.sort("len", "trust", descending=[True, False])["trust"][0]
    out = tmp_path / "out"
    one_year = ("--from", "2024-09-01", "--to", "2025-07-31")  # the roll-up needs no history
    assert (
        run_cli("audit", EXAMPLE, "--out", out, "--trust", name.upper(), *one_year, "--no-letters")
        == 0
    )
    assert f"{name} against the LA's own rates" in " ".join(capsys.readouterr().out.split())
    results = results_of(out)
    (trust,) = results["trusts"]
    assert trust["trust"] == name and trust["reference"]["kind"] == "la"
    members = {s["urn"]: s for s in results["schools"]}
    assert trust["schools"] == len(members) >= 3
    for outcome in ("ehe", "unexplained"):
        line = trust[outcome]["all"]
        assert line["observed"] == sum(s[outcome]["observed"] for s in members.values())
        assert line["expected"] == pytest.approx(
            sum(s[outcome]["expected"] for s in members.values()), abs=1e-4
        )
        assert line["ratio"] == pytest.approx(line["observed"] / line["expected"], abs=1e-5)
        low, high = stats.garwood_interval(line["observed"], line["expected"])
        assert line["ci95"] == pytest.approx([float(low), float(high)], abs=1e-5)
        phases = trust[outcome]["by_phase"].values()
        assert sum(p["observed"] for p in phases) == line["observed"]
        assert trust[outcome]["own_level"]["how"] in ("estimated", "too_few")
    ranking = trust["ranking"]
    assert {s["urn"] for s in ranking} == set(members)
    reference_ranks = sorted(s["ehe"]["reference"]["rank"] for s in ranking)
    assert reference_ranks == list(range(1, len(members) + 1))
    for school in ranking:  # against the LA: the audit's own numbers
        assert school["ehe"]["reference"]["band"] == members[school["urn"]]["ehe"]["band"]
    book = openpyxl.load_workbook(out / "overview.xlsx")
    assert "Trust" in book.sheetnames and book["Trust"]._charts
    assert book["Trust"]["A1"].value == f"Trust: {name}"


def test_own_level_against_the_national_one_shows_what_the_self_review_cannot(tmp_path) -> None:
    """Every school off-rolls at three times its neighbours: against its own level nothing
    stands out, against the national level the whole trust does (the check the pack names)."""
    data = write_trust(tmp_path / "trust", [36] * 8)
    out = tmp_path / "out"
    assert run_cli("audit", data, "--out", out, "-q", "--no-workbooks") == 0
    results = results_of(out)
    assert not any(s["audit"] for s in results["schools"])
    (trust,) = results["trusts"]
    line = trust["ehe"]["all"]
    assert trust["ehe"]["reference"]["kind"] == "national" and line["ci95"][0] > 5
    assert "above the reference beyond chance" in trust["summary"]
    assert trust["cannot_tell"] == sr.CANNOT_TELL
    assert all(s["ehe"]["reference"]["band"] == "high_998" for s in trust["ranking"])


# --------------------------------------------------------------------------- the generator


def test_one_year_fixtures_take_an_ehe_rate_factor(tmp_path) -> None:
    plain = generate_dataset(tmp_path / "a", seed=3, letters=False)
    busy = generate_dataset(tmp_path / "b", seed=3, letters=False, ehe_rate_factor=2.0)
    assert "ehe_rate_factor" not in plain["arguments"]  # default files stay as they were
    assert busy["arguments"]["ehe_rate_factor"] == 2.0
    assert busy["ehe_model"]["target_rate"] == pytest.approx(0.015)
    ratio = busy["counts"]["ehe_exits"] / plain["counts"]["ehe_exits"]
    assert 1.6 < ratio < 2.4
    assert run_cli("fixtures", tmp_path / "c", "--ehe-rate-factor", "3", "--no-letters", "-q") == 0
    assert run_cli("fixtures", tmp_path / "d", "--ehe-rate-factor", "9", "-q") == 2
    assert math.isclose(
        json.loads((tmp_path / "c" / "truth.json").read_text())["ehe_model"]["target_rate"],
        0.0225,
    )
