"""Thresholds profiles: every number that bands, flags or selects a school.

Profiles are TOML files in `thresholds/`; one may `inherits = "default"` and
override only what differs. The merged profile is recorded in results.json so
an audit can always say which rules were in force.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offroll_audit import shipped
from offroll_audit.problems import UsageError

THRESHOLDS = shipped.thresholds_folder()  # the shipped profiles (package data)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    settings: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return self.settings.get(name, {})

    @property
    def statistics(self) -> dict[str, Any]:
        return self.section("statistics")

    @property
    def classification(self) -> dict[str, Any]:
        return self.section("classification")

    @property
    def flags(self) -> dict[str, Any]:
        return self.section("flags")

    @property
    def rag(self) -> dict[str, Any]:
        return self.section("rag")

    @property
    def select(self) -> dict[str, Any]:
        return self.section("select")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge tables; lists and values in `override` replace those in `base`."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _without_stale_measures(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """The parent's settings, less its measured error rates (`[select.measured]`) when the
    child replaces the rules: those figures describe the parent's rules, not the child's."""
    child_select = child.get("select", {})
    if "rules" not in child_select or "select" not in parent:
        return parent
    select = {k: v for k, v in parent["select"].items() if k != "measured"}
    return {**parent, "select": select}


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"profile {path}: {exc}") from None


def resolve(name_or_file: str, folders: tuple[Path, ...] = (THRESHOLDS,)) -> Path:
    """A profile name (`default`, `strict`, `ofsted`), looked up in `folders` in order, or a
    path to a TOML file."""
    candidate = Path(name_or_file)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    for folder in folders:
        named = folder / f"{name_or_file}.toml"
        if named.is_file():
            return named
    known = ", ".join(sorted(p.stem for p in THRESHOLDS.glob("*.toml")))
    raise UsageError(f"--profile {name_or_file!r}: no such profile or file (profiles: {known})")


def load_profile(name_or_file: str = "default") -> Profile:
    """A profile with everything it inherits merged in; a parent named without a path is
    looked up next to the file that names it, then among the shipped profiles."""
    first = path = resolve(name_or_file)
    settings = _read(path)
    seen = {path.resolve()}
    while parent := settings.pop("inherits", None):
        parent_path = resolve(parent, (path.parent, THRESHOLDS))
        if parent_path.resolve() in seen:
            raise UsageError(f"profile {path}: inherits from itself")
        seen.add(parent_path.resolve())
        settings = merge(_without_stale_measures(_read(parent_path), settings), settings)
        path = parent_path
    return Profile(name=settings.get("name", first.stem), source=str(first), settings=settings)


@dataclass(frozen=True)
class Shipped:
    """A profile or baseline that ships with the tool."""

    kind: str  # profile | baseline
    name: str
    description: str
    path: Path


def shipped_files() -> list[Shipped]:
    """Every shipped profile and baseline, with the description its file gives."""
    found = []
    for kind, folder, key in (
        ("profile", THRESHOLDS, "description"),
        ("baseline", THRESHOLDS / "baselines", "title"),
    ):
        for path in sorted(folder.glob("*.toml")):
            about = _read(path).get(key, "")
            found.append(Shipped(kind, path.stem, " ".join(str(about).split()), path))
    return found


def copy_shipped(name: str, destination: Path) -> tuple[Shipped, Path]:
    """Copy a shipped profile or baseline out for editing; never overwrite a file.

    A copied profile keeps its `inherits` line, which still finds the shipped parent, so the
    copy only needs the numbers the user changes.
    """
    chosen = [item for item in shipped_files() if item.name == name]
    if not chosen:
        known = ", ".join(item.name for item in shipped_files())
        raise UsageError(f"--copy {name!r}: no such profile or baseline (shipped: {known})")
    target = destination / chosen[0].path.name if destination.is_dir() else destination
    if target.exists():
        raise UsageError(f"--to {target}: already exists; give a new file name")
    if not target.parent.is_dir():
        raise UsageError(f"--to {target}: the folder {target.parent} does not exist")
    target.write_bytes(chosen[0].path.read_bytes())
    return chosen[0], target
