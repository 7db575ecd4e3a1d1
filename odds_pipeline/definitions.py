"""The code location: builds Definitions from the defs/ modules. Imports nothing heavy."""

from __future__ import annotations

import dagster as dg

from odds_pipeline.defs.backtest import BACKTEST_ASSETS
from odds_pipeline.defs.datasets import DATASET_ASSETS
from odds_pipeline.defs.features import FEATURE_ASSETS, FEATURE_CHECKS
from odds_pipeline.defs.ingestion import (
    SOURCE_ASSETS,
    canonical_odds_tables,
    canonical_parquet,
    odds_api_live,
    odds_api_scores,
)
from odds_pipeline.defs.ingestion_checks import INGESTION_CHECKS
from odds_pipeline.defs.jobs import (
    default_pipeline_job,
    features_job,
    ingestion_job,
    odds_api_live_job,
    odds_api_live_poll_schedule,
    odds_api_scores_job,
    odds_api_scores_schedule,
)
from odds_pipeline.defs.maintenance import MAINTENANCE_JOBS, MAINTENANCE_SENSORS
from odds_pipeline.defs.monitoring import (
    MONITORING_ASSETS,
    monitoring_job,
    nightly_monitoring,
    nightly_retrain,
    retrain_job,
)
from odds_pipeline.defs.registry import CHAMPION_ASSETS, GATE_CHECKS, rollback_champion
from odds_pipeline.defs.resources import MlflowResource, WarehouseResource, default_odds_feed
from odds_pipeline.defs.sensors import SENSOR_JOBS, SENSORS
from odds_pipeline.defs.serving import SCAN_ASSETS, SERVING_ASSETS, serving_job
from odds_pipeline.defs.training import CANDIDATE_ASSETS
from odds_pipeline.defs.tuning import TUNING_ASSETS


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *SOURCE_ASSETS,
            odds_api_live,
            odds_api_scores,
            canonical_odds_tables,
            canonical_parquet,
            *FEATURE_ASSETS,
            *DATASET_ASSETS,
            *TUNING_ASSETS,
            *CANDIDATE_ASSETS,
            *CHAMPION_ASSETS,
            *SERVING_ASSETS,
            *SCAN_ASSETS,
            *MONITORING_ASSETS,
            *BACKTEST_ASSETS,
        ],
        asset_checks=[*INGESTION_CHECKS, *FEATURE_CHECKS, *GATE_CHECKS],
        jobs=[
            default_pipeline_job,
            ingestion_job,
            features_job,
            odds_api_live_job,
            odds_api_scores_job,
            rollback_champion,
            serving_job,
            monitoring_job,
            retrain_job,
            *SENSOR_JOBS,
            *MAINTENANCE_JOBS,
        ],
        schedules=[
            odds_api_live_poll_schedule,
            odds_api_scores_schedule,
            nightly_monitoring,
            nightly_retrain,
        ],
        sensors=[*SENSORS, *MAINTENANCE_SENSORS],
        resources={
            "warehouse": WarehouseResource(),
            "odds_feed": default_odds_feed(),
            "mlflow": MlflowResource(),
        },
    )


defs = build_definitions()
