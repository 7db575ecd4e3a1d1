"""Jobs and schedules: the default pipeline, and the live feed poll (stopped until an engineer starts it)."""

import dagster as dg

from .ingestion import CANONICAL_TABLES, SOURCE_ASSETS, odds_api_live

# Everything `make run` materializes: the bundled samples, the simulator, the canonical tables, features.
default_pipeline_job = dg.define_asset_job(
    name="default_pipeline",
    selection=dg.AssetSelection.assets(*SOURCE_ASSETS)
    | dg.AssetSelection.assets(*CANONICAL_TABLES)
    | dg.AssetSelection.groups("features"),
    description="Ingest the bundled samples and the simulator, then compute features.",
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
