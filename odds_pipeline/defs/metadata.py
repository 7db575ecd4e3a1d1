"""Helpers for what assets show in the Dagster UI."""

import warnings
from typing import Any

import dagster as dg
import pandas as pd


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None, rows: int = 10) -> str:
    """The first `rows` rows as a markdown table (a preview in asset metadata)."""
    if frame.empty:
        return "_no rows_"
    columns = list(frame.columns) if columns is None else columns
    head = frame[columns].head(rows).astype(str)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in head.itertuples(index=False)]
    return "\n".join(lines)


# Days (UTC), from the oldest bundled history to tomorrow (upcoming events of the live
# feed): the serving assets and the Parquet lake.
DAILY = dg.DailyPartitionsDefinition(start_date="2015-01-01", end_offset=2)
# A range backfill of DAILY assets runs as one run (BackfillPolicy.single_run, which
# `dagster asset materialize --partition-range` needs); its beta notice is not for users.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

# One DuckDB writer at a time (the committed dagster.yaml sets this pool's limit to 1).
WRITER_POOL = "duckdb_writer"


def data_failure(description: str, **metadata: Any) -> dg.Failure:
    """A data or ordering problem an engineer must fix: fails the run, never retried."""
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any] | None:
    """The raw values of ``key``'s latest materialization metadata (None if never materialized)."""
    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
