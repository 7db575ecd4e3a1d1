"""Where the pipeline keeps its state: one directory, overridable by $ODDS_PIPELINE_HOME."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "data" / "samples"
HOME_ENV_VAR = "ODDS_PIPELINE_HOME"


def state_home() -> Path:
    """Root of everything the pipeline writes: `$ODDS_PIPELINE_HOME`, else the project's data/."""
    configured = os.environ.get(HOME_ENV_VAR)
    home = Path(configured).expanduser().resolve() if configured else PROJECT_ROOT / "data"
    home.mkdir(parents=True, exist_ok=True)
    return home


def warehouse_path() -> Path:
    path = state_home() / "warehouse"
    path.mkdir(parents=True, exist_ok=True)
    return path / "odds.duckdb"


def reports_dir() -> Path:
    path = state_home() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlflow_dir() -> Path:
    path = state_home() / "mlflow"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lake_dir() -> Path:
    """Day-partitioned Parquet of the canonical tables (odds_pipeline.ingestion.lake)."""
    path = state_home() / "lake"
    path.mkdir(parents=True, exist_ok=True)
    return path
