"""The Python API: what a notebook imports, and the README's example, run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPOSITORY

import offroll_audit


def test_every_public_name_resolves_and_all_lists_exactly_them() -> None:
    assert set(offroll_audit.__all__) == {*offroll_audit.API, "__version__", "tool_block"}
    for name in offroll_audit.API:
        assert getattr(offroll_audit, name) is not None


def test_importing_the_package_imports_no_heavy_library() -> None:
    code = "import sys, offroll_audit; print(sorted({'polars', 'numpy'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def readme_python_example() -> str:
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_returns_polars_frames(tmp_path: Path) -> None:
    """The example in the README is run as written (from an empty folder, as a user would)."""
    code = readme_python_example() + (
        "\nassert isinstance(selected, pl.DataFrame) and selected.height >= 1"
        "\nimport json"
        "\ntruth = json.loads((example_la_folder() / 'truth.json').read_text())"
        "\noff_roller = truth['planted']['offroll_ehe'][0]['urn']"
        "\nassert off_roller in selected['urn'].to_list()"  # selected without its letters
        "\nassert (Path('notebook-out') / 'results.json').is_file()"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ehe_band" in run.stdout


def test_options_take_a_profile_by_name_or_as_a_profile() -> None:
    from offroll_audit import AuditOptions, load_profile

    assert AuditOptions(profile="strict").profile == load_profile("strict")
    assert AuditOptions().profile.name == "default"
