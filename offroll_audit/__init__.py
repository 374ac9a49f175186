"""offroll-audit: find schools whose exits to home education their intake does not explain.

The library is what the command line runs; in a notebook:

    from offroll_audit import AuditOptions, load_dataset, run_audit, write_outputs

    dataset, report = load_dataset("DATA")          # polars frames, and the problems found
    result = run_audit(dataset, AuditOptions(profile="default", term="2024-25"))
    result.schools                                  # polars: one row per school
    write_outputs(result, dataset, Path("OUT"))     # results.json, CSVs, workbooks

The names are imported on first use, so `import offroll_audit` (and `--help`) stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
API = {
    "load_dataset": "offroll_audit.load",
    "Dataset": "offroll_audit.schema",
    "DataError": "offroll_audit.problems",
    "UsageError": "offroll_audit.problems",
    "AuditOptions": "offroll_audit.audit",
    "AuditResult": "offroll_audit.audit",
    "run_audit": "offroll_audit.audit",
    "load_profile": "offroll_audit.profile",
    "OutputOptions": "offroll_audit.report",
    "write_outputs": "offroll_audit.report",
    "example_la_folder": "offroll_audit.shipped",
}
__all__ = [  # the names of API, spelled out for linters (tests/test_api.py checks they agree)
    "AuditOptions",
    "AuditResult",
    "DataError",
    "Dataset",
    "OutputOptions",
    "UsageError",
    "__version__",
    "example_la_folder",
    "load_dataset",
    "load_profile",
    "run_audit",
    "tool_block",
    "write_outputs",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports lazily
    from offroll_audit.audit import AuditOptions, AuditResult, run_audit
    from offroll_audit.load import load_dataset
    from offroll_audit.problems import DataError, UsageError
    from offroll_audit.profile import load_profile
    from offroll_audit.report import OutputOptions, write_outputs
    from offroll_audit.schema import Dataset
    from offroll_audit.shipped import example_la_folder


def __getattr__(name: str) -> Any:
    if name in API:
        return getattr(import_module(API[name]), name)
    raise AttributeError(f"module 'offroll_audit' has no attribute {name!r}")


def tool_block(**extra: str) -> dict[str, str]:
    """Who wrote an output, for manifests and results.json."""
    return {"name": "offroll-audit", "version": __version__, **extra}
