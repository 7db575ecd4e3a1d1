"""Promotion in the MLflow registry: aliases only, every decision a row a person can read.

`champion` moves to a candidate's version only when every gate passed; the version that
held it gets `previous_champion`. A refusal leaves the aliases alone. Every decision
(promoted, refused, rollback) is a row of `model_promotions` in the warehouse, and each
judged version carries its gate verdicts as MLflow tags (`gate.<name>` = pass | fail);
a promoted version gets a model card as its description. No Dagster here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pandas as pd

from odds_pipeline.registry.gates import GateResult
from odds_pipeline.training import tracking

PROMOTIONS_TABLE = "model_promotions"
PROMOTIONS_SQL = f"""
CREATE TABLE IF NOT EXISTS {PROMOTIONS_TABLE} (
    decided_at TIMESTAMPTZ NOT NULL,
    model VARCHAR NOT NULL,
    from_version VARCHAR,
    to_version VARCHAR,
    decision VARCHAR NOT NULL,      -- promoted | refused | rollback | kept
    failed_gates VARCHAR,           -- JSON: name -> one-line summary with the numbers
    gates VARCHAR,                  -- JSON: every gate's result
    reason VARCHAR,
    dagster_run_id VARCHAR
)
"""
GATES_PASSED_TAG = "gates.passed"
GATE_TAG_PREFIX = "gate."


class PromotionError(RuntimeError):
    """A registry action that cannot be done as asked (e.g. nothing to roll back to)."""


@dataclass
class Decision:
    """What happened to one model version, ready to be recorded and shown."""

    model: str
    decision: str
    from_version: str | None
    to_version: str | None
    reason: str
    failed: dict[str, str]
    gates: dict[str, Any]
    dagster_run_id: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "decided_at": datetime.now(UTC),
            "model": self.model,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "decision": self.decision,
            "failed_gates": json.dumps(self.failed),
            "gates": json.dumps(self.gates, allow_nan=False),
            "reason": self.reason,
            "dagster_run_id": self.dagster_run_id,
        }


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(PROMOTIONS_SQL)


def record(con: duckdb.DuckDBPyConnection, decision: Decision) -> None:
    """Append one decision (its own short transaction)."""
    ensure_table(con)
    row = decision.row()
    cols = list(row)
    con.execute(
        f"INSERT INTO {PROMOTIONS_TABLE} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [row[c] for c in cols],
    )


def history(
    con: duckdb.DuckDBPyConnection, model: str | None = None, limit: int = 20
) -> pd.DataFrame:
    """The latest decisions, newest first (empty when nothing was ever decided)."""
    where, params = ("WHERE model = ?", [model]) if model else ("", [])
    try:
        return con.execute(
            f"SELECT * FROM {PROMOTIONS_TABLE} {where} ORDER BY decided_at DESC LIMIT {int(limit)}",
            params,
        ).df()
    except duckdb.CatalogException:  # nothing decided yet (a read-only reader cannot create it)
        return pd.DataFrame(columns=[*Decision(**_EMPTY).row()])


_EMPTY = dict(
    model="", decision="", from_version=None, to_version=None, reason="", failed={}, gates={}
)


# --------------------------------------------------------------------------- verdicts


def verdict_tags(results: Mapping[str, GateResult]) -> dict[str, str]:
    """MLflow tags of a judged version: one per gate and the overall verdict."""
    tags = {
        f"{GATE_TAG_PREFIX}{name}": "pass" if r.passed else "fail" for name, r in results.items()
    }
    tags[GATES_PASSED_TAG] = str(all(r.passed for r in results.values())).lower()
    for name, r in results.items():
        tags[f"{GATE_TAG_PREFIX}{name}.summary"] = r.summary[:500]
        if r.value == r.value:  # not NaN: the number monitoring compares with later
            tags[f"{GATE_TAG_PREFIX}{name}.value"] = f"{r.value:.6g}"
    return tags


def failed_gates(results: Mapping[str, GateResult]) -> dict[str, str]:
    return {name: r.summary for name, r in results.items() if not r.passed}


def tag_version(name: str, version: str, tags: Mapping[str, str], uri: str | None = None) -> None:
    client = tracking.client(uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def gates_from_tags(tags: Mapping[str, str]) -> dict[str, GateResult]:
    """The verdicts `verdict_tags` wrote, read back (value, summary; no interval)."""
    nan = float("nan")
    out = {}
    for key, verdict in tags.items():
        name = key[len(GATE_TAG_PREFIX) :]
        if not key.startswith(GATE_TAG_PREFIX) or "." in name:
            continue
        value = tags.get(f"{key}.value")
        out[name] = GateResult(
            name=name,
            passed=verdict == "pass",
            value=nan if value is None else float(value),
            threshold=nan,
            ci_low=nan,
            ci_high=nan,
            n=0,
            summary=tags.get(f"{key}.summary", ""),
        )
    return out


def failed_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return failed_gates(gates_from_tags(tags))


def version_verdict(
    name: str, version: str, uri: str | None = None
) -> tuple[bool | None, dict[str, str]]:
    """(all gates passed?, failed gates' summaries) from the version's tags; None = never judged."""
    tags = dict(tracking.client(uri).get_model_version(name, str(version)).tags)
    if GATES_PASSED_TAG not in tags:
        return None, {}
    return tags[GATES_PASSED_TAG] == "true", failed_from_tags(tags)


# --------------------------------------------------------------------------- aliases


def alias_version(name: str, alias: str, uri: str | None = None) -> str | None:
    """The version an alias points at, or None (no such alias, or no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(tracking.client(uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(name: str, version: str, uri: str | None = None) -> str | None:
    """Move `champion` to ``version``; the old champion becomes `previous_champion`.

    Returns the version that held `champion` before (None when there was none). Promoting
    the version that is already champion changes nothing.
    """
    client = tracking.client(uri)
    current = alias_version(name, tracking.CHAMPION, uri)
    if current == str(version):
        return current
    if current is not None:
        client.set_registered_model_alias(name, tracking.PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(name, tracking.CHAMPION, str(version))
    return current


def rollback(name: str, uri: str | None = None) -> tuple[str, str]:
    """Move `champion` back to `previous_champion`; returns (from, to).

    The alias `previous_champion` is removed afterwards and the rolled-back version tagged
    `rolled_back`, so a second rollback fails clearly instead of re-promoting it.
    """
    client = tracking.client(uri)
    current = alias_version(name, tracking.CHAMPION, uri)
    previous = alias_version(name, tracking.PREVIOUS_CHAMPION, uri)
    if previous is None:
        raise PromotionError(
            f"{name}: no version holds alias {tracking.PREVIOUS_CHAMPION!r}; nothing to roll back to"
        )
    client.set_registered_model_alias(name, tracking.CHAMPION, previous)
    client.delete_registered_model_alias(name, tracking.PREVIOUS_CHAMPION)
    if current is not None:
        client.set_model_version_tag(name, current, "rolled_back", "true")
    return str(current), previous


# --------------------------------------------------------------------------- model card


def model_card(
    name: str,
    version: str,
    info: Mapping[str, Any],
    results: Mapping[str, GateResult],
    run_params: Mapping[str, Any],
) -> str:
    """Markdown for the version's MLflow description: data, provenance, metrics, gates."""
    lines = [
        f"# {name} v{version}",
        "",
        f"- kind: `{info.get('kind')}`, label: `{info.get('label')}`",
        f"- dataset: `{info.get('dataset_hash')}` ({info.get('dataset_path')})",
        f"- data window (commence): {run_params.get('commence_from', '?')} to "
        f"{run_params.get('commence_to', '?')}",
        f"- git commit: `{run_params.get('git_commit', 'unknown')}`",
        f"- trained by Dagster run `{run_params.get('dagster_run_id', '?')}`",
        "",
        f"## Against the baseline ({info.get('baseline_name')}, metric {info.get('metric')})",
        "",
        "| gate | verdict | value | threshold | 95% CI | n | summary |",
        "|---|---|---|---|---|---|---|",
    ]
    for gate_name, r in results.items():
        ci = "" if r.ci_low != r.ci_low else f"{r.ci_low:.4f}-{r.ci_high:.4f}"
        value = "" if r.value != r.value else f"{r.value:.4f}"
        lines.append(
            f"| {gate_name} | {'pass' if r.passed else 'FAIL'} | {value} | {r.threshold:g} | {ci} "
            f"| {r.n} | {r.summary} |"
        )
    return "\n".join(lines)


def describe_version(name: str, version: str, text: str, uri: str | None = None) -> None:
    tracking.client(uri).update_model_version(name, str(version), description=text)


def model_status(uri: str | None = None) -> dict[str, dict[str, Any]]:
    """Per registered model: champion, challenger and previous champion with gate verdicts."""
    from odds_pipeline.training.kinds import KINDS

    client = tracking.client(uri)
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS.values():
        name = kind.registered_model
        entry: dict[str, Any] = {}
        for alias in (tracking.CHAMPION, tracking.CHALLENGER, tracking.PREVIOUS_CHAMPION):
            version = alias_version(name, alias, uri)
            if version is None:
                entry[alias] = None
                continue
            tags = dict(client.get_model_version(name, version).tags)
            passed = tags.get(GATES_PASSED_TAG)
            entry[alias] = {
                "version": version,
                "gates": "not judged"
                if passed is None
                else ("passed" if passed == "true" else "refused"),
                "failed": failed_from_tags(tags),
            }
        out[name] = entry
    return out
