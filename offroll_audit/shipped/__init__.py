"""What ships inside the package: thresholds profiles, baselines and the example LA.

The repository keeps one copy of each, at the top level (`thresholds/`,
`fixtures/example-la/`); pyproject.toml maps those folders into this package
(`offroll_audit.shipped.thresholds`, `offroll_audit.shipped.example_la`) when the wheel
is built, so an installed tool reads them with importlib.resources wherever it is
installed (pip, pipx, uv tool, a wheel from an internal index). The functions are named
`..._folder` because importing a subpackage sets an attribute of its own name here.

An editable install (`pip install -e .`, the developers' and CI's) maps only folders
holding an __init__.py, and these are data folders; there the package is the checkout's
`offroll_audit/`, and the same single copy is found next to it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def _folder(package: str, in_checkout: str) -> Path:
    """A shipped folder as a real path: package data in a wheel, else the checkout's copy.

    The folders have no __init__.py (they are data), so in a wheel they are namespace
    packages, for which importlib.resources gives a MultiplexedPath; every file in one has
    a real path, and its parent is the folder.
    """
    try:
        root = resources.files(package)
    except ModuleNotFoundError:  # an editable install of a checkout
        return CHECKOUT / in_checkout
    if isinstance(root, Path):
        return root
    return Path(str(next(child for child in root.iterdir() if child.is_file()).parent))


def thresholds_folder() -> Path:
    """The shipped thresholds profiles (`*.toml`) with the baselines in `baselines/`."""
    return _folder(f"{__name__}.thresholds", "thresholds")


def baselines_folder() -> Path:
    return thresholds_folder() / "baselines"


def example_la_folder() -> Path:
    """The bundled synthetic LA that `offroll-audit demo` audits."""
    return _folder(f"{__name__}.example_la", "fixtures/example-la")
