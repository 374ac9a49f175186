"""The generators' phrase tables, read from the TOML files in `phrases/` (package data).

Names, places and letter grammars are data, not code: they are long, they are edited
by people who want to change wording rather than logic, and they ship in the wheel.
Arrays become tuples, so a table cannot be changed by accident at run time.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


@cache
def phrases(name: str) -> dict[str, Any]:
    """The tables of `phrases/<name>.toml`, lists as tuples."""
    text = resources.files(__package__).joinpath("phrases", f"{name}.toml").read_text("utf-8")
    return _frozen(tomllib.loads(text))
