"""The wheel users install: every module and every shipped file is in it, and it works
from outside the checkout (CI also installs it into a fresh environment: .ci/run)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import REPOSITORY

SHIPPED = {  # folder in the repository -> where it lives in the package
    "thresholds": "offroll_audit/shipped/thresholds",
    "fixtures/example-la": "offroll_audit/shipped/example_la",
}


def source_files() -> set[str]:
    """What the wheel must hold: the package's code and data, and the shipped folders."""
    package = REPOSITORY / "offroll_audit"
    expected = {
        str(path.relative_to(REPOSITORY))
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for folder, inside in SHIPPED.items():
        root = REPOSITORY / folder
        expected |= {
            f"{inside}/{path.relative_to(root).as_posix()}"
            for path in root.rglob("*")
            if path.is_file()
        }
    return expected


def test_pyproject_lists_every_package_of_the_source_tree() -> None:
    settings = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(REPOSITORY).parts)
        for init in (REPOSITORY / "offroll_audit").rglob("__init__.py")
    }
    mapped = set(settings["package-dir"])
    assert set(settings["packages"]) == on_disk | mapped
    assert {settings["package-dir"][name] for name in mapped} == set(SHIPPED)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built the way users' installers build it (isolated build environment)."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), "."],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    )
    (built,) = folder.glob("offroll_audit-*.whl")
    return built


def test_the_wheel_holds_every_module_and_shipped_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        inside = {name for name in archive.namelist() if ".dist-info/" not in name}
    missing = source_files() - inside
    assert not missing, f"missing from the wheel: {sorted(missing)[:20]}"
    assert not {name for name in inside if "__pycache__" in name}


def test_the_wheel_works_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Unpacked on its own (as site-packages holds it), from an unrelated folder: the demo
    finds the profiles and the example LA inside the package, not in a checkout."""
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "from offroll_audit import shipped; print(shipped.thresholds_folder()); "
            "print(shipped.example_la_folder())",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in where.stdout.split():
        assert Path(line).is_relative_to(unpacked), line
    demo = subprocess.run(
        [sys.executable, "-m", "offroll_audit", "demo", str(tmp_path / "out"), "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (tmp_path / "out" / "overview.xlsx").is_file()
    listing = subprocess.run(
        [sys.executable, "-m", "offroll_audit", "profiles", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert {"default", "strict", "ofsted", "england"} <= {
        line.split('"')[3] for line in listing.stdout.splitlines() if '"name"' in line
    }
