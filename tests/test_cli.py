"""The command line: help on everything, fast start, friendly failures."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

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
    from offroll_audit.profile import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
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
    from offroll_audit.profile import PROJECT_ROOT

    run = subprocess.run(
        [sys.executable, "-m", "ruff", *check, str(PROJECT_ROOT)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:]
