"""What drift is measured against, and where it is kept: the champion's training window.

A reference is frozen once per model version (bin edges from the training window's
quantiles, a bounded sample for KS and Wasserstein), saved as JSON under
``<state>/monitoring/reference/<model>/v<version>.json`` and logged to the version's MLflow
run, so every later window of that champion is compared with the same bins. Inputs are the
raw (unscaled) feature values at real steps; the output is the model's score per sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from odds_pipeline.monitoring.drift import DriftConfig, FrozenBins, drift_table, freeze_reference
from odds_pipeline.paths import state_home
from odds_pipeline.warehouse import transaction

SCORE = "score"
MAX_STEP_ROWS = 200_000
DRIFT_TABLE = "drift_metrics"
DRIFT_SQL = f"""
CREATE TABLE IF NOT EXISTS {DRIFT_TABLE} (
    report_id VARCHAR NOT NULL,
    computed_at TIMESTAMPTZ NOT NULL,
    model VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    feature VARCHAR NOT NULL,
    role VARCHAR NOT NULL,            -- input | output
    n_reference BIGINT,
    n_current BIGINT,
    psi DOUBLE,
    ks_statistic DOUBLE,
    ks_pvalue DOUBLE,
    ks_pvalue_bh DOUBLE,
    wasserstein DOUBLE,
    severity VARCHAR,
    drifted BOOLEAN,
    reason VARCHAR
)
"""


def step_frame(dataset: Any, max_rows: int = MAX_STEP_ROWS, seed: int = 7) -> pd.DataFrame:
    """Raw feature values at real steps, one column per channel (``a.``/``b.`` for pairs)."""
    arrays = dataset.feature_arrays
    prefix = len(arrays) > 1
    mask = np.asarray(dataset.mask, dtype=bool)
    columns: dict[str, np.ndarray] = {}
    for key, values in arrays.items():
        real = np.asarray(values)[mask].astype(np.float64)  # [n_real, F]
        for j, name in enumerate(dataset.feature_names):
            columns[f"{key[-1]}.{name}" if prefix else name] = real[:, j]
    frame = pd.DataFrame(columns)
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    return frame


def reference_path(model: str, version: str) -> Path:
    folder = state_home() / "monitoring" / "reference" / model
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"v{version}.json"


def freeze(
    steps: pd.DataFrame, scores: np.ndarray, config: DriftConfig, info: dict[str, Any]
) -> dict[str, Any]:
    """Frozen bins of every input channel and of the output score."""
    inputs = freeze_reference(steps, list(steps.columns), config)
    output = freeze_reference(pd.DataFrame({SCORE: np.asarray(scores, float)}), [SCORE], config)
    return {
        "info": info,
        "config": config.__dict__,
        "inputs": {k: v.to_dict() for k, v in inputs.items()},
        "output": {k: v.to_dict() for k, v in output.items()},
    }


def save(reference: dict[str, Any], path: Path) -> Path:
    """Atomic write: a reader never sees half a reference."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(reference, default=float))
    os.replace(tmp, path)
    return path


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _bins(section: dict[str, Any]) -> dict[str, FrozenBins]:
    return {k: FrozenBins.from_dict(v) for k, v in section.items()}


def compare(
    reference: dict[str, Any], steps: pd.DataFrame, scores: np.ndarray, config: DriftConfig
) -> pd.DataFrame:
    """The drift table of the inputs and of the output, one row per feature with its role."""
    inputs = drift_table(_bins(reference["inputs"]), steps, config).assign(role="input")
    output = drift_table(
        _bins(reference["output"]), pd.DataFrame({SCORE: np.asarray(scores, float)}), config
    ).assign(role="output")
    return pd.concat([inputs, output], ignore_index=True)


def write(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> None:
    """Append one report's rows in one transaction."""
    con.execute(DRIFT_SQL)
    cols = [
        "report_id", "computed_at", "model", "version", "window_start", "window_end",
        "feature", "role", "n_reference", "n_current", "psi", "ks_statistic", "ks_pvalue",
        "ks_pvalue_bh", "wasserstein", "severity", "drifted", "reason",
    ]  # fmt: skip
    incoming = rows[cols]  # noqa: F841  (read by DuckDB's replacement scan)
    with transaction(con):
        con.execute(f"INSERT INTO {DRIFT_TABLE} ({', '.join(cols)}) SELECT * FROM incoming")


def recent_reports(con: duckdb.DuckDBPyConnection, model: str, limit: int = 20) -> pd.DataFrame:
    """Per report (newest first): when, version, window, features drifted and the worst PSI."""
    try:
        return con.execute(
            f"""
            SELECT report_id, min(computed_at) AS computed_at, any_value(version) AS version,
                   min(window_end) AS window_end,
                   count(*) FILTER (WHERE drifted) AS drifted,
                   count(*) FILTER (WHERE severity <> 'not_enough_data') AS judged,
                   max(psi) AS max_psi,
                   string_agg(feature, ', ' ORDER BY psi DESC) FILTER (WHERE drifted)
                       AS drifted_features
            FROM {DRIFT_TABLE} WHERE model = ?
            GROUP BY report_id ORDER BY computed_at DESC LIMIT {int(limit)}
            """,
            [model],
        ).df()
    except duckdb.CatalogException:
        return pd.DataFrame(
            columns=["report_id", "computed_at", "version", "window_end", "drifted", "judged",
                     "max_psi", "drifted_features"]
        )  # fmt: skip
