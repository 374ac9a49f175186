"""results.json: everything an audit found, machine-readable (data contract section 4).

Built once from the AuditResult; the CSVs and workbooks are views of the
same numbers, so they can never disagree with it.
"""

from __future__ import annotations

import gc
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np
import orjson
import polars as pl

from offroll_audit import monitoring, tool_block
from offroll_audit.audit import OUTCOME_LABEL, AuditResult
from offroll_audit.classify import FLAG_TEXT, FLAGS
from offroll_audit.expected import RATES_OF
from offroll_audit.select import rule_text
from offroll_audit.trusts import trusts_block

STAT_FIELDS = {
    "observed": "observed",
    "expected": "expected",
    "ratio": "ratio",
    "z": "z",
    "p": "p",
    "p_poisson": "p_poisson",
    "q": "q",
    "band": "band",
    "shrunken_ratio": "shrunken_ratio",
    "flag_count_95": "count_to_flag_95",
    "flag_count_998": "count_to_flag_998",
}


def clean_number(value: Any, digits: int = 6) -> Any:
    """JSON has no NaN or infinity: they become null; floats are rounded for stable diffs."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return round(value, digits)
    return value


def json_ready(frame: pl.DataFrame, digits: int = 6) -> pl.DataFrame:
    """Float columns rounded, NaN and infinity as null, in one vectorised pass (clean_number
    per value cost seconds at national scale)."""
    floats = [c for c, dtype in frame.schema.items() if dtype.is_float()]
    return frame.with_columns(
        [pl.when(pl.col(c).is_finite()).then(pl.col(c).round(digits)).alias(c) for c in floats]
    )


def outcome_block(row: dict[str, Any], outcome: str) -> dict[str, Any] | None:
    """One outcome's statistics for a school (row already through json_ready)."""
    if f"{outcome}_observed" not in row or row[f"{outcome}_observed"] is None:
        return None
    block = {name: row.get(f"{outcome}_{column}") for name, column in STAT_FIELDS.items()}
    for name in ("ci95", "limit95", "limit998"):
        block[name] = [row.get(f"{outcome}_{name}_low"), row.get(f"{outcome}_{name}_high")]
    block["cohort"] = row.get(f"{outcome}_cohort")
    return block


def groups_blocks(result: AuditResult, urns: set[str]) -> dict[str, dict[str, Any]]:
    """Per school, observed against expected by SEN, disadvantage, social care and key stage
    (EHE at the top level, unexplained exits under "unexplained"), built in one pass over
    plain column lists (a national audit has over half a million of these rows)."""
    blocks: dict[str, dict[str, Any]] = {urn: {} for urn in urns}
    for outcome, outcome_result in result.outcomes.items():
        if outcome == "y10_loss" or outcome in RATES_OF:  # a subgroup's is its outcome's
            continue
        groups = json_ready(outcome_result.groups)
        if len(urns) < groups.get_column("urn").n_unique():
            groups = groups.filter(pl.col("urn").is_in(list(urns)))
        columns = ("urn", "grouping", "level", "observed", "expected", "pupils")
        for urn, grouping, level, observed, expected, pupils in zip(
            *(groups.get_column(c).to_list() for c in columns), strict=True
        ):
            block = blocks[urn]
            target = block if outcome == "ehe" else block.setdefault("unexplained", {})
            target.setdefault(grouping, {})[level] = {
                "observed": observed,
                "expected": expected,
                "pupils": pupils,
            }
    return blocks


def school_flags(row: dict[str, Any], result: AuditResult) -> list[dict[str, str]]:
    """Flags a school carries: its bands beyond expectation and its child-level flags."""
    flags = []
    for outcome in result.outcomes:
        band = row.get(f"{outcome}_band")
        if band in ("high_998", "high_95"):
            code = f"{outcome.upper()}_{'HIGH' if band == 'high_998' else 'HIGH_95'}"
            observed, expected = row.get(f"{outcome}_observed"), row.get(f"{outcome}_expected")
            detail = plain_band(outcome, observed, expected, row.get(f"{outcome}_p"))
            flags.append({"code": code, "detail": detail})
    for code in FLAGS:
        count = row.get(f"flag_{code}") or 0
        if count:
            flags.append({"code": code, "detail": f"{count} exit(s): {FLAG_TEXT[code]}"})
    return flags


def plain_band(outcome: str, observed: Any, expected: float | None, p: float | None) -> str:
    """One sentence a head teacher can read, e.g. for the pack's cover (`observed` may be a
    suppressed count such as "<5")."""
    if observed is None or expected is None:
        return ""
    label = OUTCOME_LABEL[outcome]
    text = f"{observed} {label}; about {expected:.1f} would be expected for this school's pupils"
    if p is not None and not math.isnan(p):
        text += f"; a count this high would happen by chance at {chance_phrase(p)} schools like it"
    return text


def chance_phrase(p: float) -> str:
    """p as a frequency in words: 'fewer than 1 in 1,000', 'about 1 in 40'."""
    if p < 0.001:
        return "fewer than 1 in 1,000"
    if p >= 0.5:
        return "about half or more of"
    return f"about 1 in {round(1 / p):,}"


def build_results(
    result: AuditResult, manifest: dict[str, Any], data_issues: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The results.json document (data contract section 4, plus explanatory extras)."""
    with without_garbage_collection():
        return _build_results(result, manifest, data_issues)


@contextmanager
def without_garbage_collection() -> Iterator[None]:
    """A national document is about two million small dicts and lists; creating them sets off
    full garbage collections that took half the time. Nothing built here forms a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_results(
    result: AuditResult, manifest: dict[str, Any], data_issues: list[dict[str, Any]] | None
) -> dict[str, Any]:
    profile = result.options.profile
    reasons_text = rule_text(profile)
    schools = []
    groups = groups_blocks(result, set(result.schools.get_column("urn").to_list()))
    history = history_blocks(result) if result.history is not None else {}
    for row in json_ready(result.schools).iter_rows(named=True):
        entry = {
            "urn": row["urn"],
            "name": row.get("name"),
            "phase": _text(row.get("phase")),
            "type": _text(row.get("type")),
            "trust": row.get("trust"),
            "pupils": row["pupils"],
        }
        for outcome in result.outcomes:
            block = outcome_block(row, outcome)
            if block is not None:
                entry[outcome] = block
        entry["groups"] = groups[row["urn"]]
        entry["letters"] = {
            k: row.get(k, 0) for k in ("letters", "clusters", "templated", "template_families")
        }
        entry["flags"] = school_flags(row, result)
        entry["flag_counts"] = {code: row.get(f"flag_{code}", 0) for code in FLAGS}
        if result.history is not None:
            entry["monitoring"] = monitoring_block(row, result.history.terms)
            entry["history"] = history[row["urn"]]
        entry["audit"] = bool(row["audit"])
        entry["audit_reasons"] = list(row["audit_reasons"])
        entry["audit_reasons_text"] = [
            reasons_text.get(code, code) for code in row["audit_reasons"]
        ]
        schools.append(entry)
    reported = set(result.schools.get_column("urn").to_list())
    exits = result.exits.filter(pl.col("urn").is_in(reported))
    return {
        "tool": tool_block(),
        "window": result.window.as_dict(),
        "profile": profile.name,
        "profile_settings": profile.settings,
        "method": result.options.method,
        "baseline": baseline_block(result),
        "overdispersion": {
            o: overdispersion_block(r.overdispersion, r.funnelplotr)
            for o, r in result.outcomes.items()
        },
        "monitoring": monitoring_summary(result),
        "trusts": trusts_block(result),
        "warnings": result.warnings + (result.letters.warnings if result.letters else []),
        "data_issues": data_issues or [],
        "schools": schools,
        "exits": exit_records(exits),
        "letter_clusters": cluster_records(result.letters, reported),
        "inputs": manifest.get("inputs", {}),
    }


def history_blocks(result: AuditResult) -> dict[str, list[dict[str, Any]]]:
    """Per school, its terms oldest first: each outcome's observed, expected, ratio, band and
    95% / 99.8% upper limits (of the ratio) that term, and whether it was selected then."""
    history = result.history
    frame = json_ready(history.timeline.frame).join(
        history.selected, on=["urn", "term"], how="left"
    )
    blocks: dict[str, list[dict[str, Any]]] = {}
    for row in frame.sort("urn", "term_index").iter_rows(named=True):
        entry: dict[str, Any] = {"term": row["term"]}
        for outcome in monitoring.OUTCOMES:
            if not row.get(f"{outcome}_on_roll"):
                entry[outcome] = None
                continue
            observed, expected = row[f"{outcome}_observed"], row[f"{outcome}_expected"]
            entry[outcome] = {
                "observed": int(observed),
                "expected": expected,
                "ratio": clean_number(observed / expected) if expected else None,
                "band": row[f"{outcome}_band"],
                "decisions": int(row[f"{outcome}_decisions"]),
                "limit95_high": row[f"{outcome}_limit95_high"],
                "limit998_high": row[f"{outcome}_limit998_high"],
            }
        entry["audit"] = bool(row.get("audit"))
        entry["audit_reasons"] = list(row.get("audit_reasons") or [])
        blocks.setdefault(row["urn"], []).append(entry)
    return blocks


def monitoring_block(row: dict[str, Any], terms: list[str]) -> dict[str, Any]:
    """What has accumulated for a school by the audited term, per outcome, with a sentence."""
    block: dict[str, Any] = {
        "since_last_term": row.get("since_last_term"),
        "selected_since": row.get("selected_since"),
    }
    for outcome in monitoring.OUTCOMES:
        if row.get(f"{outcome}_year_band") is None:
            continue
        since = row.get(f"{outcome}_cusum_terms_since_signal")
        signalled = terms[len(terms) - 1 - int(since)] if since is not None else None
        pooled = {
            scope: {
                "observed": row[f"{outcome}_{scope}_observed"],
                "expected": row[f"{outcome}_{scope}_expected"],
                "p": row[f"{outcome}_{scope}_p"],
                "band": row[f"{outcome}_{scope}_band"],
            }
            for scope in ("year", "history")
        }
        block[outcome] = {
            **pooled,
            "cusum": {
                "value": row[f"{outcome}_cusum"],
                "limit": row[f"{outcome}_cusum_limit"],
                "last_signal": signalled,
            },
            "change": {
                "p": row[f"{outcome}_change_p"],
                "ratio": row[f"{outcome}_change_ratio"],
            },
            "persistence": {
                "terms_beyond_95_in_a_row": row[f"{outcome}_terms_95_run"],
                "terms_beyond_95_of_last_6": row[f"{outcome}_terms_95_of_6"],
                "terms_of_last_6_on_roll": row[f"{outcome}_terms_of_6"],
            },
            "summary": monitoring_sentence(outcome, pooled, signalled, row),
        }
    return block


def monitoring_sentence(
    outcome: str, pooled: dict[str, dict[str, Any]], signalled: str | None, row: dict[str, Any]
) -> str:
    """The accumulated evidence in words, e.g. 'above the 95% limit in 4 of the last 6 terms
    (2 in a row); over the last year 38 against about 14.2 expected, beyond the 99.8% limit;
    the running check for twice the expected rate last signalled in 2025-SUM'."""
    beyond, shown = row[f"{outcome}_terms_95_of_6"], row[f"{outcome}_terms_of_6"]
    run = row[f"{outcome}_terms_95_run"]
    parts = [
        f"above the 95% limit in {beyond} of the last {shown} term(s)"
        + (f" ({run} in a row, this one included)" if run > 1 else "")
    ]
    for scope, words in (("year", "over the last year"), ("history", "over all terms")):
        block = pooled[scope]
        if block["expected"]:
            parts.append(
                f"{words} {block['observed']} against about {block['expected']:.1f} expected"
                f"{BAND_WORDS.get(block['band'], '')}"
            )
    change, p = row.get(f"{outcome}_change_ratio"), row.get(f"{outcome}_change_p")
    if change is not None and p is not None:
        parts.append(
            f"its own rate over the last year is {change:.1f} times that of its earlier terms "
            f"(a rise this large by chance: {chance_phrase(p)} schools)"
        )
    parts.append(
        f"the running check (CUSUM) for {RATE_WORDS} last signalled in {signalled}"
        if signalled
        else f"the running check (CUSUM) for {RATE_WORDS} has not signalled"
    )
    return f"{OUTCOME_LABEL[outcome]}: " + "; ".join(parts)


BAND_WORDS = {
    "high_998": ", beyond the 99.8% limit",
    "high_95": ", beyond the 95% limit",
    "too_few": " (too few to test)",
}
RATE_WORDS = "a rise to twice the expected rate"


def monitoring_summary(result: AuditResult) -> dict[str, Any] | None:
    """results.json `monitoring`: the terms seen, how the CUSUM limits were set, the pooled
    alphas, and the "Since last term" lists (schools newly, still, no longer selected)."""
    history = result.history
    if history is None:
        return None
    timeline = history.timeline
    names = dict(zip(result.schools["urn"], result.schools["name"], strict=True))
    since = history.since_last_term().filter(
        pl.col("urn").is_in(list(names)) & pl.col("status").is_not_null()
    )
    lists: dict[str, list[dict[str, Any]]] = {"newly": [], "still": [], "no_longer": []}
    current = dict(
        zip(result.schools["urn"], result.schools["audit_reasons"].to_list(), strict=True)
    )
    for row in since.sort("urn").iter_rows(named=True):
        reasons = row["previous_reasons"] if row["status"] == "no_longer" else current[row["urn"]]
        lists[row["status"]].append(
            {
                "urn": row["urn"],
                "name": names.get(row["urn"]),
                "started": row["started"],
                "reasons": list(reasons or []),
            }
        )
    return {
        "terms": history.terms,
        "audited_term": history.terms[-1],
        "previous_term": history.terms[-2],
        "cusum": {
            outcome: {
                "rho": design.rho,
                "alpha": clean_number(design.alpha),
                "design_signals_per_school_year": design.rate,
                "terms": design.terms,
            }
            for outcome, design in timeline.designs.items()
        },
        "pooled_alpha": {
            outcome: {scope: clean_number(a) for scope, a in scopes.items()}
            for outcome, scopes in timeline.pooled_alpha.items()
        },
        "since_last_term": lists,
    }


def baseline_block(result: AuditResult) -> dict[str, Any]:
    ehe = result.outcomes.get("ehe")
    block: dict[str, Any] = {
        "kind": result.options.baseline if result.options.baseline == "local" else "file"
    }
    if ehe is not None:
        block.update(source=ehe.baseline.source, model=ehe.baseline.model)
    block.update(baseline_choice_fields(result))
    block["robust"] = {
        o: {
            "excluded_urns": r.baseline.excluded_urns,
            "left_out_urns": r.baseline.left_out_urns,
            "note": r.baseline.note,
        }
        for o, r in result.outcomes.items()
    }
    fits = {o: fit_block(r.baseline) for o, r in result.outcomes.items()}
    if any(fits.values()):
        block["fit"] = {o: fit for o, fit in fits.items() if fit}
    return block


def baseline_choice_fields(result: AuditResult) -> dict[str, Any]:
    """How the baseline was chosen (`chosen`: given or automatic, and `why`) and, for a
    self-review (`kind` self), its shape file and each outcome's level."""
    options = result.options
    fields: dict[str, Any] = {
        "chosen": "automatic" if options.baseline_why else "given",
        "why": options.baseline_why,
    }
    if options.baseline == "self":
        fields["kind"] = "self"
        fields["shape"] = options.shape
        fields["la_rates"] = str(options.la_rates) if options.la_rates else None
        reviews = {
            o: r.baseline.self_review
            for o, r in result.outcomes.items()
            if r.baseline.self_review is not None
        }
        fields["level"] = {o: review.level.as_dict() for o, review in reviews.items()}
        fields["own_risks"] = {
            o: [risk.as_dict() for risk in review.own_risks] for o, review in reviews.items()
        }
        fields["shape_sd"] = {o: review.shape_sd for o, review in reviews.items()}
    return fields


def fit_block(baseline) -> dict[str, Any]:
    """How a local baseline's rates were fitted: the model it ended up with, what could not be
    done as asked (`warnings`, also in the run's warnings) and facts worth stating (`notes`)."""
    if baseline.fit is None:
        return {}
    terms = baseline.fit.terms
    if terms is not None:
        model = terms.describe()
    elif baseline.model == "saturated":
        model = "each case-mix cell's own pooled rate (saturated)"
    else:
        model = "none (no exits of this kind)"
    return {"model": model, "warnings": baseline.all_warnings(), "notes": baseline.all_notes()}


def overdispersion_block(alpha, funnelplotr=None) -> dict[str, Any]:
    """Alpha with its interval and how it was found; with --method funnelplotr, also FunnelPlotR's
    phi and tau^2 (the bands then come from its limits)."""
    block = {
        "alpha": clean_number(alpha.alpha),
        "alpha_ci95": [clean_number(alpha.alpha_ci95[0]), clean_number(alpha.alpha_ci95[1])],
        "method": alpha.method,
        "moment_alpha": clean_number(alpha.moment_alpha),
        "n_schools": alpha.n_schools,
        "n_set_aside": alpha.n_set_aside,
        "warning": alpha.warning,
    }
    if funnelplotr is not None:
        block["funnelplotr"] = {
            "phi": clean_number(funnelplotr.phi),
            "tau2": clean_number(funnelplotr.tau2),
        }
    return block


EXIT_FIELDS = [
    "pupil_id",
    "urn",
    "exit_date",
    "destination",
    "ground",
    "explained",
    "why",
    "flags",
    "rag",
    "rag_score",
    "rag_why",
    "letter_id",
    "in_window",
    "year_group",
    "sen_provision",
    "disadvantaged",
    "social_care",
    "reason",
]


def exit_records(exits: pl.DataFrame) -> pl.DataFrame:
    """Every exit with its classification, flags and RAG, in input order. Kept as a frame:
    at national scale (700,000 exits) Python dicts would cost more than the whole audit."""
    return exits.sort("line").select(
        [
            pl.col(c).cast(pl.String)
            if exits.schema[c] in (pl.Date,) or isinstance(exits.schema[c], pl.Enum)
            else pl.col(c)
            for c in EXIT_FIELDS
        ]
    )


JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def write_results_json(results: dict[str, Any], stream: BinaryIO) -> None:
    """results.json as UTF-8, exits last: the document by orjson, its exits frame by polars as
    NDJSON turned into an array. A national document is about 300 MB; the standard library's
    encoder took 5 s of a 30 s run, these take under 1 s."""
    exits = results["exits"]
    document = {key: value for key, value in results.items() if key != "exits"}
    head = orjson.dumps({**document, "exits": None}, option=JSON_OPTIONS)
    stream.write(head[: -len(b"null}")])
    if isinstance(exits, pl.DataFrame):
        lines = io.BytesIO()
        exits.write_ndjson(lines)
        stream.write(b"[")
        if exits.height:  # one object per line; a newline inside a string is escaped as \n
            view = lines.getbuffer()
            text = np.frombuffer(view, dtype=np.uint8)
            text[text == ord("\n")] = ord(",")  # in place: copying 250 MB costs a second
            stream.write(view[:-1])  # the last newline (now a comma) closes nothing
            del text, view
        stream.write(b"]")
    else:
        stream.write(orjson.dumps(exits, option=JSON_OPTIONS))
    stream.write(b"}\n")


def with_exit_dicts(results: dict[str, Any]) -> dict[str, Any]:
    """The document with exits as a list of dicts (what the workbooks read)."""
    exits = results["exits"]
    return {**results, "exits": exits.to_dicts() if isinstance(exits, pl.DataFrame) else exits}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def cluster_records(letters, reported: set[str]) -> list[dict[str, Any]]:
    """Letter clusters (not `unique` letters) that touch a reported school."""
    if letters is None:
        return []
    return [
        {key: clean_number(value, 4) for key, value in cluster.items()}
        for cluster in letters.clusters
        if reported.intersection(cluster.get("school_families", {}) or {cluster["urn"]})
    ]
