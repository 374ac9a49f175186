"""The report stage: write everything an audit found into OUT, all or nothing.

Outputs (data contract section 3): results.json, schools.csv, exits.csv,
letters.csv, manifest.json, overview.xlsx and packs/URN.xlsx. They are
written into a temporary folder next to OUT and renamed into place only
when every file is complete, so a failed run leaves no partial output and
an earlier good run is replaced in one step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from offroll_audit import tool_block
from offroll_audit.audit import AuditResult
from offroll_audit.problems import Report, UsageError
from offroll_audit.progress import SILENT, Progress
from offroll_audit.results import (
    build_results,
    cluster_records,
    exit_records,
    with_exit_dicts,
    write_results_json,
)
from offroll_audit.schema import Dataset

KEY_ENVIRONMENT = "OFFROLL_AUDIT_KEY"
MANIFEST = "manifest.json"
LETTER_FIELDS = ["letter_id", "urn", "cluster_id", "verdict", "similarity", "words", "warning"]


@dataclass(frozen=True)
class OutputOptions:
    pseudonymise_key: bytes | None = None  # HMAC key; never written anywhere
    suppress: int = 0  # counts below this show as "<N" in shareable sheets (0: off)
    workbooks: bool = True


# --------------------------------------------------------------------------- inputs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(dataset: Dataset) -> dict[str, str]:
    """sha256 of every input file the run read (tables and letter files), by relative path."""
    files = list(dataset.files.values())
    if dataset.has_letters:
        files += [Path(p) for p in dataset.letters.get_column("path").drop_nulls().to_list()]
    root = dataset.root.resolve()
    resolved = sorted({Path(p).resolve() for p in files})
    return {path.relative_to(root).as_posix(): sha256_file(path) for path in resolved}


def read_key(key_file: Path | None) -> bytes:
    """The pseudonymisation key from --key-file or OFFROLL_AUDIT_KEY (never from the command line,
    where it would land in shell history)."""
    if key_file is not None:
        try:
            key = key_file.read_bytes().strip()
        except OSError as error:
            raise UsageError(f"--key-file {key_file}: cannot read it ({error.strerror})") from None
    else:
        key = os.environ.get(KEY_ENVIRONMENT, "").encode()
    if len(key) < 16:
        raise UsageError(
            f"--pseudonymise needs a key of at least 16 characters in {KEY_ENVIRONMENT} or "
            "--key-file; keep the same key to link runs, keep it secret"
        )
    return key


def pseudonyms(ids: pl.Series, key: bytes) -> pl.Series:
    """HMAC-SHA256 of each id under the key, shortened to 20 hex digits (80 bits); each
    distinct id is hashed once (a pupil has many rows), nulls stay null."""
    distinct = ids.drop_nulls().unique()
    hashed = [
        "H" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:20]
        for value in distinct.to_list()
    ]
    return ids.replace_strict(distinct, pl.Series(hashed, dtype=pl.String), default=None)


def pseudonymise(result: AuditResult, key: bytes) -> AuditResult:
    """A copy of the result with every pupil and family id replaced by its keyed hash."""
    columns = [c for c in ("pupil_id", "family_id") if c in result.exits.columns]
    exits = result.exits.with_columns([pseudonyms(result.exits[c], key) for c in columns])
    return dataclasses.replace(result, exits=exits)


# --------------------------------------------------------------------------- tables


def schools_csv_frame(result: AuditResult, suppress: int) -> pl.DataFrame:
    """One flat row per school: identity, each outcome's numbers, flag counts, selection."""
    frame = result.schools
    scalar = [c for c in frame.columns if not isinstance(frame.schema[c], pl.List | pl.Struct)]
    flat = frame.select(
        *[
            pl.col(c).cast(pl.String) if isinstance(frame.schema[c], pl.Enum) else pl.col(c)
            for c in scalar
        ],
        pl.col("audit_reasons").list.join(";"),
    )
    return suppress_counts(flat, count_columns(flat), suppress)


def count_columns(frame: pl.DataFrame) -> list[str]:
    """Integer columns that count pupils, exits or flags (what suppression applies to); the
    count that would have flagged a school is a threshold, not a count of pupils."""
    return [
        c for c, dtype in frame.schema.items() if dtype.is_integer() and "count_to_flag" not in c
    ]


def suppress_counts(frame: pl.DataFrame, columns: list[str], suppress: int) -> pl.DataFrame:
    """Counts from 1 to suppress-1 become the text `<N` (zero stays zero: it discloses no one)."""
    if suppress <= 1:
        return frame
    small = f"<{suppress}"
    return frame.with_columns(
        [
            pl.when(pl.col(c).is_between(1, suppress - 1))
            .then(pl.lit(small))
            .otherwise(pl.col(c).cast(pl.String))
            .alias(c)
            for c in columns
        ]
    )


def exits_csv_frame(result: AuditResult) -> pl.DataFrame:
    """results.json's exits of the reported schools, with the flags as one cell."""
    exits = result.exits.filter(pl.col("urn").is_in(result.schools["urn"].implode()))
    return exit_records(exits).with_columns(pl.col("flags").list.join(";"))


def letters_table(letters: pl.DataFrame) -> pl.DataFrame:
    """letters.csv's columns, the verdict as text."""
    return letters.select(
        [pl.col(c).cast(pl.String) if c == "verdict" else pl.col(c) for c in LETTER_FIELDS]
    )


def letters_csv_frame(result: AuditResult) -> pl.DataFrame:
    letters = result.letters.letters
    return letters_table(letters.filter(pl.col("urn").is_in(result.schools["urn"].implode())))


# --------------------------------------------------------------------------- the folder


def check_out_folder(out: Path, data: Path) -> None:
    """OUT must not be inside DATA (a run never writes there) and, if it exists, must be an
    earlier offroll-audit output: we never replace a folder we did not write."""
    out, data = out.resolve(), data.resolve()
    if out == data or data in out.parents:
        raise UsageError(f"--out {out} is inside the dataset folder; choose a folder outside it")
    if out in data.parents:
        raise UsageError(f"--out {out} contains the dataset; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        manifest = out / MANIFEST
        try:
            ours = json.loads(manifest.read_text())["tool"]["name"] == "offroll-audit"
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise UsageError(
                f"--out {out} is not empty and was not written by offroll-audit; "
                "give a new or empty folder"
            )


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def manifest_document(result: AuditResult, dataset: Dataset, options: OutputOptions) -> dict:
    profile = result.options.profile
    return {
        "tool": tool_block(),
        "profile": {"name": profile.name, "source": profile.source},
        "baseline": result.options.baseline,
        "baseline_choice": baseline_manifest(result),
        "method": result.options.method,
        "window": result.window.as_dict(),
        "restricted_to": {"urns": result.options.urns, "trust": result.options.trust},
        "pseudonymised": options.pseudonymise_key is not None,
        "suppress_below": options.suppress,
        "inputs": input_hashes(dataset),
    }


def baseline_manifest(result: AuditResult) -> dict[str, Any]:
    """Whether the baseline was given or chosen (and why); for a self-review its shape and
    the LA-rates table it read, with the table's sha256 (an input like the data's files)."""
    options = result.options
    block: dict[str, Any] = {
        "chosen": "automatic" if options.baseline_why else "given",
        "why": options.baseline_why,
    }
    if options.baseline == "self":
        block["shape"] = options.shape
        rates = options.la_rates
        block["la_rates"] = {"file": str(rates), "sha256": sha256_file(rates)} if rates else None
    return block


def write_outputs(
    result: AuditResult,
    dataset: Dataset,
    out: Path,
    options: OutputOptions = OutputOptions(),
    load_report: Report | None = None,
    progress: Progress = SILENT,
) -> dict:
    """Write OUT atomically and return the results.json document."""
    check_out_folder(out, dataset.root)
    if options.pseudonymise_key is not None:
        result = pseudonymise(result, options.pseudonymise_key)
    manifest = manifest_document(result, dataset, options)
    issues = [asdict(p) for p in load_report.warnings] if load_report else []
    results = build_results(result, manifest, issues)
    with staged_folder(out) as staging:
        with (
            progress.step("Writing results.json"),
            (staging / "results.json").open("wb") as out_file,
        ):
            write_results_json(results, out_file)
        schools_csv_frame(result, options.suppress).write_csv(staging / "schools.csv")
        exits_csv_frame(result).write_csv(staging / "exits.csv")
        if result.letters is not None:
            letters_csv_frame(result).write_csv(staging / "letters.csv")
        if options.workbooks:
            from offroll_audit.workbooks import write_workbooks

            write_workbooks(
                with_exit_dicts(results), staging, suppress=options.suppress, progress=progress
            )
        write_json(staging / MANIFEST, manifest)
    return results


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A private temporary folder next to OUT that becomes OUT only if the block succeeds;
    on any failure it is removed and OUT is left as it was."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield staging
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging: Path, out: Path) -> None:
    """Move the finished staging folder to OUT; an earlier output is removed only after."""
    # mkdtemp made it private (0700); it holds pupil-level data, so it stays that way
    if not out.exists():
        staging.rename(out)
        return
    previous = out.with_name(f".{out.name}-previous")
    shutil.rmtree(previous, ignore_errors=True)
    out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)


def write_letter_outputs(letters, dataset: Dataset, out: Path) -> dict:
    """`letters` command output: letters.csv, clusters.json and manifest.json, atomically."""
    check_out_folder(out, dataset.root)
    reported = set(dataset.letters.get_column("urn").to_list())
    clusters = {"letter_clusters": cluster_records(letters, reported), "warnings": letters.warnings}
    manifest = {
        "tool": tool_block(),
        "command": "letters",
        "inputs": input_hashes(dataset),
    }
    with staged_folder(out) as staging:
        letters_table(letters.letters).write_csv(staging / "letters.csv")
        write_json(staging / "clusters.json", clusters)
        write_json(staging / MANIFEST, manifest)
    return clusters
