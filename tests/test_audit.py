"""End-to-end: the audit pipeline and the CLI on generated data with planted answers."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import REPOSITORY

from offroll_audit.audit import AuditOptions, run_audit
from offroll_audit.cli import app
from offroll_audit.console.errors import run_guarded
from offroll_audit.load import load_dataset
from offroll_audit.profile import Profile, load_profile

EXAMPLE = REPOSITORY / "fixtures" / "example-la"
PLANTED_YEAR = "2024-25"  # the example LA's one-year plants are in its latest school year
# One window of the example LA, without its history: for tests of what does not depend on
# history (a rerun, a failed write, pseudonymising, the test method), at a fifth of the time.
ONE_WINDOW = ("--from", "2024-09-01", "--to", "2025-07-31")


def run_cli(*args: str) -> int:
    return run_guarded(app, [str(a) for a in args], {"debug": False})


def planted_urns(truth: dict, kind: str) -> list[str]:
    planted = truth["planted"][kind]
    if isinstance(planted, dict):
        return list(planted["urns"])
    return [entry["urn"] for entry in planted]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> tuple[dict, dict, Path]:
    """The CLI audit of the committed example LA (JSON and CSV outputs)."""
    out = tmp_path_factory.mktemp("run") / "out"
    before = tree_hashes(EXAMPLE)
    assert run_cli("audit", EXAMPLE, "--out", out, "--no-workbooks", "--quiet") == 0
    assert tree_hashes(EXAMPLE) == before, "the dataset folder must never be modified"
    results = json.loads((out / "results.json").read_text())
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    return results, truth, out


@pytest.fixture(scope="module")
def year_run(tmp_path_factory) -> tuple[dict, dict]:
    """The CLI audit of the example LA's planted school year, judged as one window."""
    out = tmp_path_factory.mktemp("year") / "out"
    args = ("audit", EXAMPLE, "--out", out, "--term", PLANTED_YEAR, "--no-workbooks", "-q")
    assert run_cli(*args) == 0
    truth = json.loads((EXAMPLE / "truth.json").read_text())
    return json.loads((out / "results.json").read_text()), truth


def school(results: dict, urn: str) -> dict:
    return next(s for s in results["schools"] if s["urn"] == urn)


def test_planted_schools_are_selected_and_the_innocent_one_is_not(year_run) -> None:
    results, truth = year_run
    assert results["window"]["source"] == f"school year {PLANTED_YEAR}"
    (off_roller,) = planted_urns(truth, "offroll_ehe")
    assert school(results, off_roller)["ehe"]["band"] == "high_998"
    assert {"EHE_HIGH", "TEMPLATED_LETTERS"} <= set(school(results, off_roller)["audit_reasons"])
    (mover,) = planted_urns(truth, "offroll_moves")
    assert school(results, mover)["unexplained"]["band"] == "high_998"
    assert school(results, mover)["ehe"]["band"] == "expected"
    (special,) = planted_urns(truth, "special_no_consent")
    assert "STATUTORY_BREACH" in school(results, special)["audit_reasons"]
    for urn in planted_urns(truth, "trust_template"):
        assert "TEMPLATED_LETTERS" in school(results, urn)["audit_reasons"]
    (innocent,) = planted_urns(truth, "innocent_high")
    highest = max(results["schools"], key=lambda s: s["ehe"]["observed"])
    assert highest["urn"] == innocent, "the innocent school has the LA's highest raw EHE count"
    assert not school(results, innocent)["audit"]
    for urn in planted_urns(truth, "stopped_excess"):
        assert not school(results, urn)["audit"], "its excess stopped two years ago"


def test_the_latest_term_is_judged_with_its_history(example_run) -> None:
    """What the demo shows: the latest complete term, judged with every earlier term. The
    one-year plants (before the January census) are seen over the last year, the off-roller
    rising against its own past; the innocent, stopped and sibling schools are not selected."""
    results, truth, _ = example_run
    assert results["window"]["source"] == f"term {truth['terms'][-1]}, the latest complete term"
    assert results["monitoring"]["terms"] == truth["terms"]
    selected = {s["urn"] for s in results["schools"] if s["audit"]}
    assert set(truth["selection"]["selected"]) <= selected
    assert not set(truth["selection"]["not_selected"]) & selected
    (off_roller,) = planted_urns(truth, "offroll_ehe")
    entry = school(results, off_roller)
    assert entry["monitoring"]["ehe"]["year"]["band"] == "high_998"
    assert {"EHE_YEAR_HIGH", "EHE_RISING", "TEMPLATED_LETTERS"} <= set(entry["audit_reasons"])
    bands = {term["term"]: term["ehe"]["band"] for term in entry["history"]}
    started = truth["planted"]["offroll_ehe"][0]["excess_from"]
    assert bands[started] == "high_998", "the history shows the rise"
    assert all(bands[t] != "high_998" for t in truth["terms"][: truth["terms"].index(started)])
    (mover,) = planted_urns(truth, "offroll_moves")
    assert school(results, mover)["monitoring"]["unexplained"]["year"]["band"] == "high_998"
    assert "UNEXPLAINED_YEAR_HIGH" in school(results, mover)["audit_reasons"]
    (special,) = planted_urns(truth, "special_no_consent")
    assert "STATUTORY_BREACH" in school(results, special)["audit_reasons"]
    for urn in planted_urns(truth, "trust_template"):
        assert "TEMPLATED_LETTERS" in school(results, urn)["audit_reasons"]
    (innocent,) = planted_urns(truth, "innocent_high")
    highest = max(results["schools"], key=lambda s: s["ehe"]["observed"])
    assert highest["urn"] == innocent, "the LA's highest raw EHE count this term too"
    (stopped,) = truth["planted"]["stopped_excess"]
    history = {term["term"]: term["ehe"] for term in school(results, stopped["urn"])["history"]}
    during = sum(history[t]["observed"] for t in stopped["terms"])
    assert during > 2 * sum(history[t]["expected"] for t in stopped["terms"])


def test_the_targeted_pupils_exits_are_judged_on_their_own(example_run) -> None:
    """ehe_vulnerable counts, per school, the exits to home education in the window of
    vulnerable pupils (SEN support or EHC plan, social care, disadvantaged) in Years 9-11,
    as the exits themselves show; schools without such pupils have no block. The example
    LA's off-roller targets them, and their own count selects it where the whole school's
    is diluted by its other pupils' ordinary exits."""
    results, truth, _ = example_run
    counted: dict[str, set[str]] = {}
    for e in results["exits"]:
        vulnerable = (
            e["sen_provision"] in ("K", "E") or e["social_care"] != "none" or e["disadvantaged"]
        )
        targeted = vulnerable and e["year_group"] in ("9", "10", "11")
        if e["in_window"] and e["destination"] == "EHE" and targeted:
            counted.setdefault(e["urn"], set()).add(e["pupil_id"])
    tested = [s for s in results["schools"] if s.get("ehe_vulnerable")]
    assert tested and all(s["phase"] != "primary" for s in tested)
    for entry in tested:
        assert entry["ehe_vulnerable"]["observed"] == len(counted.get(entry["urn"], ()))
        assert entry["ehe_vulnerable"]["observed"] <= entry["ehe"]["observed"]
    (off_roller,) = planted_urns(truth, "offroll_ehe")
    entry = school(results, off_roller)
    year = entry["monitoring"]["ehe_vulnerable"]["year"]
    assert year["band"] == "high_998" and year["observed"] > 4 * year["expected"]
    assert "EHE_VULNERABLE_YEAR" in entry["audit_reasons"]
    assert all(t.get("ehe_vulnerable") for t in entry["history"])


def test_every_selected_school_says_why_with_the_rule_text(example_run) -> None:
    results, _, _ = example_run
    rules = {r["code"]: r for r in results["profile_settings"]["select"]["rules"]}
    for entry in results["schools"]:
        assert entry["audit"] == bool(entry["audit_reasons"])
        for code, text in zip(entry["audit_reasons"], entry["audit_reasons_text"], strict=True):
            assert text == rules[code]["explain"]


def test_results_follow_the_data_contract(example_run) -> None:
    results, _, out = example_run
    assert results["tool"]["name"] == "offroll-audit"
    assert set(results["overdispersion"]["ehe"]) >= {"alpha", "alpha_ci95", "method"}
    bands = {"high_998", "high_95", "expected", "low_95", "low_998", "too_few"}
    for entry in results["schools"]:
        for outcome in ("ehe", "unexplained"):
            block = entry[outcome]
            assert block["band"] in bands
            assert set(block) >= {
                "observed",
                "expected",
                "ratio",
                "ci95",
                "limit95",
                "limit998",
                "z",
                "p",
                "q",
            }
        assert set(entry["groups"]) >= {
            "sen_provision",
            "disadvantaged",
            "social_care",
            "key_stage",
        }
        assert set(entry["letters"]) >= {"letters", "clusters", "templated"}
    exits = pl.read_csv(EXAMPLE / "exits.csv", infer_schema_length=0)
    assert len(results["exits"]) == exits.height
    assert pl.read_csv(out / "exits.csv").height == exits.height
    for cluster in results["letter_clusters"]:
        assert cluster["verdict"] in {"school_template", "shared_public_template", "unique"}
        assert cluster["families"] >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    expected_hash = hashlib.sha256((EXAMPLE / "pupils.csv").read_bytes()).hexdigest()
    assert manifest["inputs"]["pupils.csv"] == expected_hash
    assert set(pl.read_csv(out / "schools.csv").columns) >= {
        "urn",
        "ehe_observed",
        "ehe_band",
        "audit",
        "audit_reasons",
    }


def _profile_without_refit() -> Profile:
    base = load_profile("default")
    settings = json.loads(json.dumps(base.settings))
    settings["statistics"]["robust_baseline"] = "none"
    return Profile(base.name, base.source, settings)


@pytest.fixture(scope="module")
def example_dataset():
    dataset, _ = load_dataset(EXAMPLE)
    return dataset


def test_results_json_holds_what_the_standard_library_would_write(example_dataset) -> None:
    """orjson and the NDJSON exits splice are speed only: the parsed document is the same."""
    from offroll_audit.results import build_results, with_exit_dicts, write_results_json

    options = AuditOptions(profile=load_profile("default"))
    results = build_results(run_audit(example_dataset, options), {"inputs": {}}, [])
    assert results["exits"].height > 100
    written = io.BytesIO()
    write_results_json(results, written)
    parsed = json.loads(written.getvalue())
    assert parsed == json.loads(json.dumps(with_exit_dicts(results), ensure_ascii=False))
    assert list(parsed)[-1] == "exits"


def test_local_glm_observed_equals_expected_overall_and_by_sen(example_dataset) -> None:
    """The GLM's score equations: sum O = sum E overall and within each level of a main effect."""
    one_year = {"start": date(2024, 9, 1), "end": date(2025, 7, 31)}  # no history needed
    options = AuditOptions(profile=_profile_without_refit(), letters=False, **one_year)
    result = run_audit(example_dataset, options)
    for outcome in ("ehe", "unexplained", "ehe_vulnerable"):
        totals = result.outcomes[outcome].schools
        assert totals["observed"].sum() == pytest.approx(totals["expected"].sum(), abs=1e-6)
        groups = result.outcomes[outcome].groups.filter(pl.col("grouping") == "sen_provision")
        by_level = groups.group_by("level").agg(pl.col("observed").sum(), pl.col("expected").sum())
        np.testing.assert_allclose(by_level["observed"], by_level["expected"], atol=1e-6)


def _ehe_cells(dataset):
    """The EHE cells of the planted school year, as the audit of --term 2024-25 builds them."""
    from offroll_audit import expected as exp
    from offroll_audit.audit import outcome_cells, outcome_filters
    from offroll_audit.classify import classify_exits
    from offroll_audit.window import Calendar, choose_window, pick_term_census

    profile = load_profile("default")
    calendar = Calendar.of(dataset.pupils, dataset.exits)
    window = choose_window(dataset.exits, PLANTED_YEAR, None, None, calendar)
    pupils = pick_term_census(dataset.pupils, dataset.exits, window)
    exits = classify_exits(dataset.exits, pupils, dataset.schools, window, profile)
    roll = exp.roll_cells(pupils, exits, window, outcome_filters(), exp.DEFAULT_CASE_MIX)
    return outcome_cells(roll, exp.DEFAULT_CASE_MIX)["ehe"]


def test_robust_refit_balances_on_the_schools_it_kept(example_dataset) -> None:
    from offroll_audit import expected as exp

    result = run_audit(
        example_dataset,
        AuditOptions(profile=load_profile("default"), letters=False, term=PLANTED_YEAR),
    )
    baseline = result.outcomes["ehe"].baseline
    assert baseline.excluded_urns, "the planted off-roller is beyond the Poisson limit"
    cells, case_mix = _ehe_cells(example_dataset)
    totals = exp.school_totals(exp.expected_by_cell(cells, baseline.rates, case_mix))
    kept = totals.filter(~pl.col("urn").is_in(baseline.excluded_urns))
    assert kept["observed"].sum() == pytest.approx(kept["expected"].sum(), abs=1e-6)


def test_leave_one_out_matches_a_full_refit_without_the_school(example_dataset) -> None:
    """The batched Newton leave-one-out equals a statsmodels GLM fitted without the school."""
    from offroll_audit import expected as exp

    cells, case_mix = _ehe_cells(example_dataset)
    busiest = cells.group_by("urn").agg(pl.col("events").sum()).sort("events", "urn")["urn"]
    chosen = busiest.tail(3).to_list()
    layout = exp.CellLayout.of(cells, case_mix)
    own, variance = exp.leave_one_out_rates(layout, case_mix, "main", chosen)
    assert (variance["expected_variance"] > 0).all()
    for urn in chosen:
        refit = exp.fit_local_rates(cells, case_mix, "main", exclude=[urn])
        expected_refit = exp.expected_by_cell(cells.filter(pl.col("urn") == urn), refit, case_mix)
        expected_own = exp.expected_by_cell(
            cells.filter(pl.col("urn") == urn), refit, case_mix, own.filter(pl.col("urn") == urn)
        )
        assert expected_own["expected"].sum() == pytest.approx(
            expected_refit["expected"].sum(), rel=1e-6
        )


def test_urn_restricts_the_report_not_the_baseline(example_run, tmp_path: Path) -> None:
    results, _, _ = example_run
    urn = results["schools"][5]["urn"]
    out = tmp_path / "one"
    assert run_cli("audit", EXAMPLE, "--out", out, "--urn", urn, "--no-workbooks", "-q") == 0
    restricted = json.loads((out / "results.json").read_text())
    assert [s["urn"] for s in restricted["schools"]] == [urn]
    assert restricted["schools"][0]["ehe"] == school(results, urn)["ehe"]
    assert {e["urn"] for e in restricted["exits"]} <= {urn}


def test_term_window_and_json_output(tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    code = run_cli(
        "audit",
        EXAMPLE,
        "--out",
        tmp_path / "aut",
        "--term",
        "2024-AUT",
        "--no-workbooks",
        "--no-letters",
        "--json",
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["window"] == {
        "from": "2024-09-01",
        "to": "2024-12-31",
        "source": "term 2024-AUT",
    }
    in_window = [e for e in printed["exits"] if e["in_window"]]
    assert in_window and all("2024-09-01" <= e["exit_date"] <= "2024-12-31" for e in in_window)


def test_pseudonymise_replaces_every_pupil_id_and_never_writes_the_key(
    tmp_path: Path, monkeypatch
) -> None:
    key = "a-secret-key-for-tests-only"
    monkeypatch.setenv("OFFROLL_AUDIT_KEY", key)
    out = tmp_path / "pseudo"
    assert (
        run_cli(
            "audit", EXAMPLE, "--out", out, "--pseudonymise", *ONE_WINDOW, "--no-workbooks", "-q"
        )
        == 0
    )
    real_ids = set(pl.read_csv(EXAMPLE / "pupils.csv", columns=["pupil_id"])["pupil_id"])
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert key not in text
            assert not any(pid in text for pid in list(real_ids)[:2000]), path.name
    ids = pl.read_csv(out / "exits.csv")["pupil_id"]
    assert ids.str.starts_with("H").all() and ids.n_unique() > 100


def test_pseudonymise_without_a_key_is_a_usage_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("OFFROLL_AUDIT_KEY", raising=False)
    code = run_cli("audit", EXAMPLE, "--out", tmp_path / "x", "--pseudonymise", "--no-workbooks")
    assert code == 2
    assert "OFFROLL_AUDIT_KEY" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_out_folder_that_is_not_ours_is_refused(tmp_path: Path, capsys) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.docx").write_text("do not delete")
    assert run_cli("audit", EXAMPLE, "--out", precious, "--no-workbooks", "--no-letters") == 2
    assert "not written by offroll-audit" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["thesis.docx"]


def test_out_inside_the_dataset_is_refused(tmp_path: Path) -> None:
    assert run_cli("audit", EXAMPLE, "--out", EXAMPLE / "out", "--no-workbooks") == 2
    assert not (EXAMPLE / "out").exists()


def test_a_failed_run_leaves_no_partial_output(tmp_path: Path, monkeypatch) -> None:
    """A crash while writing leaves neither OUT nor a staging folder behind."""
    import offroll_audit.report as report

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "exits_csv_frame", broken)
    assert run_cli("audit", EXAMPLE, "--out", tmp_path / "out", *ONE_WINDOW, "--no-letters") == 1
    assert list(tmp_path.iterdir()) == []


def test_rerun_replaces_an_earlier_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        assert (
            run_cli(
                "audit", EXAMPLE, "--out", out, *ONE_WINDOW, "--no-letters", "--no-workbooks", "-q"
            )
            == 0
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_options_exit_2(tmp_path: Path, capsys) -> None:
    assert run_cli("audit", EXAMPLE, "--out", tmp_path / "o", "--term", "2024-WINTER") == 2
    assert run_cli("audit", EXAMPLE, "--out", tmp_path / "o", "--method", "magic") == 2
    assert run_cli("audit", EXAMPLE, "--out", tmp_path / "o", "--baseline", "mars") == 2
    assert run_cli("audit", EXAMPLE, "--out", tmp_path / "o", "--profile", "nope") == 2
    assert run_cli("audit", tmp_path / "missing", "--out", tmp_path / "o") == 2
    missing = tmp_path / "no-templates"
    assert run_cli("audit", EXAMPLE, "--out", tmp_path / "o", "--known-templates", missing) == 2
    assert run_cli("letters", EXAMPLE, "--out", tmp_path / "o", "--known-templates", missing) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_england_baseline_runs_and_says_what_it_left_out(tmp_path: Path) -> None:
    out = tmp_path / "eng"
    assert (
        run_cli(
            "audit",
            EXAMPLE,
            "--out",
            out,
            "--baseline",
            "england",
            "--no-workbooks",
            "--no-letters",
            "-q",
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["baseline"]["kind"] == "file"
    assert "England" in results["baseline"]["source"]
    assert any("y10" in w.lower() or "year 10" in w.lower() for w in results["warnings"])


def test_letters_command_writes_clusters(tmp_path: Path, capsys) -> None:
    out = tmp_path / "letters"
    assert run_cli("letters", EXAMPLE, "--out", out, "--json") == 0
    clusters = json.loads(capsys.readouterr().out)["letter_clusters"]
    assert any(c["verdict"] == "school_template" for c in clusters)
    assert pl.read_csv(out / "letters.csv").height == pl.read_csv(EXAMPLE / "letters.csv").height


def test_fixtures_command_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        args = ("fixtures", tmp_path / name, "--seed", "9", "--schools", "12", "--pupils", "3000")
        assert run_cli(*args, "--no-letters", "-q") == 0
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")


@pytest.mark.parametrize("method", ["poisson", "funnelplotr"])
def test_other_methods(method: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(EXAMPLE.parent)  # a relative DATA path, as users type it
    out = tmp_path / method
    assert (
        run_cli(
            "audit",
            EXAMPLE.name,
            "--out",
            out,
            "--method",
            method,
            *ONE_WINDOW,
            "--no-workbooks",
            "--no-letters",
            "-q",
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == method
    block = results["overdispersion"]["ehe"]
    if method == "poisson":
        assert block["alpha"] == 0 and block["method"] == "poisson"
    else:
        assert block["funnelplotr"]["phi"] > 0 and block["funnelplotr"]["tau2"] >= 0


def test_demo_twice_gives_byte_identical_workbooks(tmp_path: Path) -> None:
    for name in ("first", "second"):
        assert run_cli("demo", tmp_path / name, "--quiet") == 0
    books = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").rglob("*.xlsx"))
    assert Path("overview.xlsx") in books and len(books) > 1
    for book in books:
        assert (tmp_path / "first" / book).read_bytes() == (tmp_path / "second" / book).read_bytes()


def test_audit_of_a_dataset_with_errors_prints_the_report_and_writes_nothing(
    tmp_path: Path, capsys
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data, ignore=shutil.ignore_patterns("letters*"))
    pupils = (data / "pupils.csv").read_text().splitlines()
    header = pupils[0].split(",")
    row = pupils[3].split(",")
    row[header.index("sen_provision")] = "Q"
    pupils[3] = ",".join(row)
    (data / "pupils.csv").write_text("\n".join(pupils) + "\n")
    assert run_cli("audit", data, "--out", tmp_path / "out", "--no-workbooks") == 2
    err = capsys.readouterr().err
    assert "pupils.csv:4 [sen_provision]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("width", [80, 100, 60])
def test_the_summary_fits_the_terminal_and_never_cuts_a_reason(example_run, width) -> None:
    from rich.console import Console

    from offroll_audit.console.audit import render_summary

    results, _, out = example_run
    console = Console(width=width, record=True, soft_wrap=False, highlight=False)
    render_summary(results, out, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    reasons = {r for s in results["schools"] if s["audit"] for r in s["audit_reasons"]}
    assert reasons and all(reason in text for reason in reasons)  # whole, never folded


def test_progress_is_drawn_on_a_terminal_and_silent_otherwise(monkeypatch) -> None:
    import io

    from rich.console import Console

    from offroll_audit.console import render
    from offroll_audit.progress import SILENT

    monkeypatch.setattr(render.sys.stderr, "isatty", lambda: False, raising=False)
    with render.progress_display(quiet=False) as progress:
        assert progress is SILENT
    monkeypatch.setattr(render.sys.stderr, "isatty", lambda: True, raising=False)
    with render.progress_display(quiet=True) as progress:
        assert progress is SILENT
    screen = io.StringIO()
    shown = render.RichProgress(Console(file=screen, force_terminal=True, width=100))
    with shown.display:
        assert list(shown.track(range(7), "Reading letters", 7)) == list(range(7))
        with shown.step("Writing overview.xlsx"):
            pass
    drawn = screen.getvalue()
    assert "Reading letters" in drawn and "7/7" in drawn and "Writing overview.xlsx" in drawn
