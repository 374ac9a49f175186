"""The command line: help on everything, fast start, friendly failures."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from conftest import REPOSITORY

from offroll_audit import __version__
from offroll_audit.cli import app
from offroll_audit.console.errors import run_guarded

HEAVY = ("polars", "numpy", "scipy", "statsmodels", "openpyxl", "datasketch", "docx", "pypdf")


def click_command():
    return typer.main.get_command(app)


def all_commands() -> list:
    group = click_command()
    return [(name, group.get_command(None, name)) for name in group.list_commands(None)]


def test_the_contract_commands_exist() -> None:
    names = {name for name, _ in all_commands()}
    assert {"demo", "validate", "audit", "letters", "model", "fixtures"} <= names


@pytest.mark.parametrize("name", [name for name, _ in all_commands()])
def test_every_command_and_option_has_help(name: str) -> None:
    command = dict(all_commands())[name]
    assert command.help and len(command.help) > 20, f"{name} has no help text"
    for parameter in command.params:
        kind = parameter.param_type_name  # typer may vendor click: compare by kind, not class
        if kind == "option":
            assert parameter.help, f"{name} {parameter.opts} has no help text"
        elif kind == "argument":
            assert getattr(parameter, "help", None), f"{name} argument {parameter.name} has no help"


def test_readme_documents_every_command() -> None:

    readme = (REPOSITORY / "README.md").read_text()
    for name, _ in all_commands():
        assert f"offroll-audit {name}" in readme


def test_version(capsys) -> None:
    assert run_guarded(app, ["--version"], {}) == 0
    assert capsys.readouterr().out.strip() == f"offroll-audit {__version__}"


def test_help_imports_no_heavy_library() -> None:
    """`--help` must stay fast: the heavy libraries are imported inside the commands."""
    code = (
        "import sys\n"
        "from offroll_audit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "LOADED:", run.stdout[-300:]


def test_unknown_option_is_exit_2(capsys) -> None:
    assert run_guarded(app, ["audit", "--no-such-option"], {}) == 2


def test_internal_error_is_one_line_without_locals(monkeypatch, capsys, tmp_path) -> None:
    import offroll_audit.load as load

    def boom(*args, **kwargs):
        secret = "PUPIL-RECORD-A123456789012"  # noqa: F841 - a local a traceback would show
        raise ValueError("unexpected")

    monkeypatch.setattr(load, "load_dataset", boom)
    assert run_guarded(app, ["validate", str(tmp_path)], {"debug": False}) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError" in err
    assert "Traceback" not in err and "PUPIL-RECORD" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]])
def test_code_is_ruff_clean(check: list[str]) -> None:

    run = subprocess.run(
        [sys.executable, "-m", "ruff", *check, str(REPOSITORY)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:]


def test_debug_is_accepted_after_the_command(monkeypatch, capsys, tmp_path) -> None:
    """The error message says 'run with --debug'; users add it at the end of their line."""
    import offroll_audit.load as load

    def boom(*args, **kwargs):
        raise ValueError("unexpected")

    monkeypatch.setattr(load, "load_dataset", boom)
    state = {"debug": False}
    assert run_guarded(app, ["validate", str(tmp_path), "--debug"], state) == 1
    assert state["debug"] is True
    assert "Traceback" in capsys.readouterr().err


def test_debug_after_a_double_dash_is_left_alone() -> None:
    from offroll_audit.console.errors import take_debug

    assert take_debug(["audit", "D", "--debug", "--", "--debug"]) == (
        ["audit", "D", "--", "--debug"],
        True,
    )
    assert take_debug(["audit", "D"]) == (["audit", "D"], False)


def test_profiles_lists_what_ships_and_copies_one_out(tmp_path, capsys) -> None:
    import json

    assert run_guarded(app, ["profiles", "--json"], {}) == 0
    listed = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert {"default", "strict", "ofsted", "england"} <= set(listed)
    assert listed["england"]["kind"] == "baseline" and listed["strict"]["description"]
    target = tmp_path / "mine.toml"
    assert run_guarded(app, ["profiles", "--copy", "strict", "--to", str(target)], {}) == 0
    assert target.read_bytes() == __import__("pathlib").Path(listed["strict"]["path"]).read_bytes()
    from offroll_audit.profile import load_profile

    assert load_profile(str(target)).settings == load_profile("strict").settings
    assert run_guarded(app, ["profiles", "--copy", "strict", "--to", str(target)], {}) == 2
    assert "already exists" in capsys.readouterr().err
    assert run_guarded(app, ["profiles", "--copy", "no-such"], {}) == 2
