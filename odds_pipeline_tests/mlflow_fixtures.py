"""MLflow test fixtures shared by the tracking and training tests (import them into a test module)."""

import shutil
from pathlib import Path

import pytest

from odds_pipeline.training import tracking


@pytest.fixture(scope="module")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow DB: creating one costs ~3 s, copying it ~0."""
    root = tmp_path_factory.mktemp("mlflow_template")
    tracking.client(tracking.tracking_uri(root)).search_experiments()
    return root / tracking.TRACKING_DB


@pytest.fixture(autouse=True)
def mlflow_store(isolated_state_home: Path, mlflow_db_template: Path) -> Path:
    target = isolated_state_home / "mlflow"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_db_template, target / tracking.TRACKING_DB)
    return target
