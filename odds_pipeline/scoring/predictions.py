"""Batch scoring of win probabilities with the LSTM champion, or the market when there is none.

Inputs are rebuilt through the point-in-time feature store at each event's decision time
(the champion's own dataset config: lookback, steps, decision offset), so a prediction
never reads a quote observed after its decision time. With no champion, or one whose
inputs cannot be rebuilt, each row carries the de-vigged market probability with
``source = 'market_fallback'`` and the reason: never a silent default.

Rows land in `predictions`, one partition (a commence day) at a time, replaced whole in one
transaction: scoring a day twice leaves the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from odds_pipeline.warehouse import transaction

PREDICTIONS_TABLE = "predictions"
PREDICTIONS_SQL = f"""
CREATE TABLE IF NOT EXISTS {PREDICTIONS_TABLE} (
    partition_key VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    side VARCHAR NOT NULL,
    commence_time TIMESTAMPTZ,
    decision_time TIMESTAMPTZ NOT NULL,
    model_probability DOUBLE,
    market_probability DOUBLE,
    source VARCHAR NOT NULL,          -- champion | market_fallback
    model_name VARCHAR NOT NULL,
    model_version VARCHAR,            -- NULL only for market_fallback
    fallback_reason VARCHAR,
    feature_snapshot_hash VARCHAR NOT NULL,
    last_step_at TIMESTAMPTZ,         -- the latest feature time read (<= decision_time)
    scored_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR
)
"""
MARKET_FALLBACK = "market_fallback"
CHAMPION_SOURCE = "champion"


@dataclass
class Scorer:
    """What scores: a loaded champion (pyfunc, spec) or nothing (market fallback)."""

    model_name: str
    version: str | None
    predict: Any = None  # callable(packed float32 array) -> probabilities
    feature_names: list[str] | None = None
    seq_len: int | None = None
    dataset_config: dict[str, Any] | None = None
    fallback_reason: str = ""


def _inputs_config(scorer: Scorer, default_config: Any) -> Any:
    """The champion's own dataset config over the default (lookback, steps, ...), so its
    inputs are rebuilt as it was trained; the default when there is no champion."""
    from dataclasses import asdict

    from odds_pipeline.datasets.sequences import config_from_mapping

    if scorer.predict is None or not scorer.dataset_config:
        return default_config
    known = asdict(default_config)
    wanted = {k: v for k, v in scorer.dataset_config.items() if k in known}
    return config_from_mapping(type(default_config), {**known, **wanted})


def snapshot_hash(packed: np.ndarray) -> np.ndarray:
    """Per row: sha256 of exactly the inputs scored (16 hex chars), to audit a prediction."""
    rows = np.ascontiguousarray(packed, dtype=np.float32)
    return np.array(
        [hashlib.sha256(r.tobytes()).hexdigest()[:16] for r in rows.reshape(len(rows), -1)],
        dtype=object,
    )


def score_window(
    con: duckdb.DuckDBPyConnection,
    scorer: Scorer,
    *,
    commence_from: datetime,
    commence_to: datetime,
    default_config: Any,
    knowledge: str = "observed",
    pack: Any,
    partition_key: str,
    run_id: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions for every h2h side of events commencing in [from, to); and build stats."""
    from dataclasses import replace

    from odds_pipeline.datasets.sequences import build_lstm_sequences

    reason = scorer.fallback_reason
    config = replace(_inputs_config(scorer, default_config), knowledge=knowledge, leagues=None)
    dataset = build_lstm_sequences(
        con,
        config,
        include_unresolved=True,
        commence_from=commence_from,
        commence_to=commence_to,
    )
    stats = dict(dataset.stats)
    if len(dataset) == 0:
        return _frame([], partition_key), stats
    packed = pack(dataset)
    meta = dataset.meta
    market = meta["market_prob"].to_numpy(np.float64)
    use_model = scorer.predict is not None
    if use_model and (
        list(scorer.feature_names or []) != list(dataset.feature_names)
        or scorer.seq_len != dataset.mask.shape[1]
    ):
        use_model = False
        reason = (
            f"champion v{scorer.version} reads other inputs than these sequences "
            f"({scorer.seq_len} steps x {len(scorer.feature_names or [])} features vs "
            f"{dataset.mask.shape[1]} x {len(dataset.feature_names)})"
        )
    if use_model:
        probability = np.asarray(scorer.predict(packed), dtype=np.float64)
        source, version = CHAMPION_SOURCE, scorer.version
    else:
        probability, source, version = market, MARKET_FALLBACK, None
    last_us = np.where(dataset.mask, dataset.times, np.iinfo(np.int64).min).max(axis=1)
    rows = pd.DataFrame(
        {
            "partition_key": partition_key,
            "event_id": meta["event_id"].astype(str).to_numpy(),
            "side": meta["side"].astype(str).to_numpy(),
            "commence_time": pd.to_datetime(meta["commence_time"], utc=True),
            "decision_time": pd.to_datetime(meta["decision_time"], utc=True),
            "model_probability": probability,
            "market_probability": market,
            "source": source,
            "model_name": scorer.model_name,
            "model_version": version,
            "fallback_reason": None if use_model else (reason or "no champion"),
            "feature_snapshot_hash": snapshot_hash(packed),
            "last_step_at": pd.to_datetime(last_us, unit="us", utc=True),
            "scored_at": datetime.now(UTC),
            "run_id": run_id,
        }
    )
    stats["source"] = source
    return rows, stats


def _frame(rows: list, partition_key: str) -> pd.DataFrame:
    columns = [
        "partition_key",
        "event_id",
        "side",
        "commence_time",
        "decision_time",
        "model_probability",
        "market_probability",
        "source",
        "model_name",
        "model_version",
        "fallback_reason",
        "feature_snapshot_hash",
        "last_step_at",
        "scored_at",
        "run_id",
    ]
    return pd.DataFrame(rows, columns=columns)


def write_partition(
    con: duckdb.DuckDBPyConnection,
    rows: pd.DataFrame,
    partition_key: str,
    *,
    table: str = PREDICTIONS_TABLE,
    ddl: str = PREDICTIONS_SQL,
) -> int:
    """Replace one partition of a scores table atomically; returns rows written."""
    con.execute(ddl)
    incoming = rows  # noqa: F841  (read by DuckDB's replacement scan)
    with transaction(con):
        con.execute(f"DELETE FROM {table} WHERE partition_key = ?", [partition_key])
        if len(rows):
            cols = ", ".join(rows.columns)
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM incoming")
    return len(rows)


# --------------------------------------------------------------------------- book pairs

ARBITRAGE_SCORES_TABLE = "arbitrage_scores"
ARBITRAGE_SCORES_SQL = f"""
CREATE TABLE IF NOT EXISTS {ARBITRAGE_SCORES_TABLE} (
    partition_key VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    market VARCHAR NOT NULL,
    line DOUBLE,
    book_a VARCHAR NOT NULL,
    book_b VARCHAR NOT NULL,
    outcome_a VARCHAR NOT NULL,
    scored_instant TIMESTAMPTZ NOT NULL,   -- the pair's latest instant <= the scoring time
    score DOUBLE,        -- champion: P(an arbitrage window opens within the horizon)
    rule_score DOUBLE,   -- 1 - Σ implied at that instant (> 0 = arbitrage now), always set
    source VARCHAR NOT NULL,               -- champion | rule_fallback (score = rule_score)
    model_name VARCHAR NOT NULL,
    model_version VARCHAR,
    fallback_reason VARCHAR,
    feature_snapshot_hash VARCHAR NOT NULL,
    scored_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR
)
"""
RULE_FALLBACK = "rule_fallback"


def score_pairs(
    con: duckdb.DuckDBPyConnection,
    scorer: Scorer,
    *,
    score_at: datetime,
    default_config: Any,
    pack: Any,
    partition_key: str,
    run_id: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One score per book-pair key at its latest instant <= ``score_at`` (events not started)."""
    from odds_pipeline.datasets.sequences import build_arbitrage_pair_sequences

    reason = scorer.fallback_reason
    config = _inputs_config(scorer, default_config)
    dataset = build_arbitrage_pair_sequences(con, config, score_at=score_at)
    stats = dict(dataset.stats)
    if len(dataset) == 0:
        return pd.DataFrame(), stats
    packed = pack(dataset)
    meta = dataset.meta
    rule = 1.0 - meta["implied_sum_last"].to_numpy(np.float64)
    use_model = scorer.predict is not None and (
        list(scorer.feature_names or []) == list(dataset.feature_names)
        and scorer.seq_len == dataset.mask.shape[1]
    )
    if scorer.predict is not None and not use_model:
        reason = f"champion v{scorer.version} reads other inputs than these sequences"
    score = np.asarray(scorer.predict(packed), dtype=np.float64) if use_model else rule
    rows = pd.DataFrame(
        {
            "partition_key": partition_key,
            "event_id": meta["event_id"].astype(str).to_numpy(),
            "market": meta["market"].astype(str).to_numpy(),
            "line": pd.to_numeric(meta["line"], errors="coerce").to_numpy(np.float64),
            "book_a": meta["book_a"].astype(str).to_numpy(),
            "book_b": meta["book_b"].astype(str).to_numpy(),
            "outcome_a": meta["outcome_a"].astype(str).to_numpy(),
            "scored_instant": pd.to_datetime(meta["cut_time"], utc=True),
            "score": score,
            "rule_score": rule,
            "source": CHAMPION_SOURCE if use_model else RULE_FALLBACK,
            "model_name": scorer.model_name,
            "model_version": scorer.version if use_model else None,
            "fallback_reason": None if use_model else (reason or "no champion"),
            "feature_snapshot_hash": snapshot_hash(packed),
            "scored_at": datetime.now(UTC),
            "run_id": run_id,
        }
    )
    stats["source"] = rows["source"].iloc[0]
    return rows, stats


def champion_scorer(model_name: str, uri: str | None = None) -> Scorer:
    """The champion of ``model_name`` ready to score, or a fallback scorer saying why not."""
    from odds_pipeline.registry.champion import load_alias

    try:
        loaded = load_alias(model_name, uri=uri)
    except Exception as exc:  # a deleted version or unreadable artifacts: fall back, say so
        return Scorer(model_name, None, fallback_reason=f"champion could not be loaded: {exc}")
    if loaded is None:
        return Scorer(
            model_name,
            None,
            fallback_reason=f"no champion: no version of {model_name} has passed the gates",
        )
    return Scorer(
        model_name=model_name,
        version=loaded.version,
        predict=loaded.model.predict,
        feature_names=list(loaded.spec.feature_names),
        seq_len=int(loaded.spec.seq_len),
        dataset_config=dict(loaded.spec.extra.get("dataset_config") or {}),
    )
