"""Jobs and schedules: the default pipeline, and the live feed poll (stopped until an engineer starts it)."""

import dagster as dg

from .datasets import DATASET_ASSETS
from .ingestion import CANONICAL_TABLES, SOURCE_ASSETS, odds_api_live, odds_api_scores
from .training import CANDIDATE_ASSETS

# Everything `make run` materializes: samples, simulator, canonical tables, features, datasets, candidates.
default_pipeline_job = dg.define_asset_job(
    name="default_pipeline",
    selection=dg.AssetSelection.assets(*SOURCE_ASSETS)
    | dg.AssetSelection.assets(*CANONICAL_TABLES)
    | dg.AssetSelection.groups("features")
    | dg.AssetSelection.assets(*DATASET_ASSETS, *CANDIDATE_ASSETS)
    | dg.AssetSelection.groups("registry"),
    description="Ingest the bundled samples and the simulator, compute features, build datasets, "
    "train both candidates (alias `challenger`), judge them with the quality gates and promote "
    "those that pass (alias `champion`). A refused candidate fails the run at its gate, with the "
    "numbers. Tuning is opt-in.",
)

# Narrower jobs for engineers (and tests): refresh the store, or the store and its features.
ingestion_job = dg.define_asset_job(
    name="ingestion",
    selection=dg.AssetSelection.assets(*SOURCE_ASSETS)
    | dg.AssetSelection.assets(*CANONICAL_TABLES),
    description="Ingest the configured files and the simulator into the canonical store.",
)

features_job = dg.define_asset_job(
    name="ingestion_and_features",
    selection=dg.AssetSelection.assets(*SOURCE_ASSETS)
    | dg.AssetSelection.assets(*CANONICAL_TABLES)
    | dg.AssetSelection.groups("features"),
    description="Ingest, then recompute features, the registry and the online view.",
)

odds_api_live_job = dg.define_asset_job(
    name="odds_api_live_poll",
    selection=dg.AssetSelection.assets(odds_api_live),
    description="Poll The Odds API once into today's partition.",
)


@dg.schedule(
    job=odds_api_live_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Polls the live feed every 15 minutes into the day's partition. Stopped by default: each poll "
    "costs API quota (one request per sport and market set). Start it in the UI once ODDS_API_KEY is set.",
)
def odds_api_live_poll_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(partition_key=day, tags={"odds_pipeline/trigger": "live_poll"})


odds_api_scores_job = dg.define_asset_job(
    name="odds_api_scores_poll",
    selection=dg.AssetSelection.assets(odds_api_scores),
    description="Fetch The Odds API /scores (daysFrom) into today's partition: results of live events.",
)


@dg.schedule(
    job=odds_api_scores_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Hourly: outcomes of the live feed's events (The Odds API /scores), which the "
    "performance report and the backtests settle on. Stopped by default: each call costs quota "
    "(2 per sport with daysFrom). Start it with the live poll once ODDS_API_KEY is set.",
)
def odds_api_scores_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(partition_key=day, tags={"odds_pipeline/trigger": "scores_poll"})
