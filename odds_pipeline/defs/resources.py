"""Resources: the DuckDB warehouse, the odds feed (live client or saved-response replay), MLflow.

MLflow resource: ours (`MlflowResource`), not dagster-mlflow's `mlflow_tracking` and
`end_mlflow_on_run_finished` hook. That resource keeps one MLflow run open across a whole
Dagster run and relies on the hook to end it when the job's *last op* succeeds or a step
fails; an asset materialized from the UI, a sensor or `materialize()` outside a job that
carries the hook, or a run whose last step is skipped, leaves it RUNNING, and it imports
mlflow when the code location loads. Ours scopes each MLflow run to the asset body
(try/finally: FINISHED or FAILED, also on a Dagster termination), ends anything left
open at resource teardown, and at setup marks KILLED the runs of Dagster runs that have
finished (a process killed hard).
"""

import os
import sys
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.decorators.hook_decorator import event_list_hook
from pydantic import Field, PrivateAttr

from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.paths import PROJECT_ROOT, SAMPLES_DIR, state_home, warehouse_path
from odds_pipeline.training import tracking


class WarehouseResource(dg.ConfigurableResource):
    """The canonical odds store (DuckDB). Empty path = `<state home>/warehouse/odds.duckdb`."""

    database_path: str = Field(
        default="", description="DuckDB file; empty means the state home's warehouse."
    )

    def resolved_path(self) -> Path:
        return (
            Path(self.database_path).expanduser().resolve()
            if self.database_path
            else warehouse_path()
        )

    _holder: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Name the run in the writer sidecar, so a blocked reader says who holds the file."""
        run = getattr(context, "run", None)
        if run is not None:
            self._holder = f"Dagster run {run.run_id}"

    def store(self) -> OddsStore:
        return OddsStore(self.resolved_path(), holder=self._holder)


class OddsFeedResource(dg.ConfigurableResource):
    """Where live Odds API responses come from; the live client and the replay share one interface."""

    sports: list[str] = Field(
        default=["americanfootball_nfl"], description="Odds API sport keys to poll."
    )

    @abstractmethod
    def get_feed(self):  # -> odds_pipeline.ingestion.sources.odds_api.OddsFeed
        ...

    def polls_day(self, day: str) -> bool:
        """Whether a run of the `day` partition asks the feed now (else it reloads the day's
        saved responses). A replay serves saved responses whatever the day."""
        return True

    @abstractmethod
    def get_scores_feed(self):  # -> odds_pipeline.ingestion.sources.odds_api_scores.ScoresFeed
        """Where `/scores` responses come from (outcomes of the events the odds feed prices)."""


class LiveOddsApiResource(OddsFeedResource):
    """The Odds API v4 over HTTPS. The key comes from the ODDS_API_KEY environment variable."""

    api_key: str = Field(
        description="Odds API key; set it with EnvVar('ODDS_API_KEY'), never inline."
    )
    regions: str = "us"
    markets: str = "h2h,spreads,totals"
    bookmakers: str | None = None
    odds_format: str = "american"
    base_url: str = Field(
        default="https://api.the-odds-api.com/v4",
        description="Root of the v4 API (a proxy, a mirror or a local test server); "
        "the client adds /sports/<sport>/odds.",
    )

    def get_feed(self):
        from odds_pipeline.ingestion.sources.odds_api import OddsApiClient

        return OddsApiClient(
            api_key=self.api_key,
            regions=self.regions,
            markets=self.markets,
            bookmakers=self.bookmakers,
            odds_format=self.odds_format,
            base_url=self.base_url,
        )

    def get_scores_feed(self):
        """The same client: it also calls `/scores` (same key, retries and scrubbing)."""
        return self.get_feed()

    def polls_day(self, day: str) -> bool:
        """Only today's partition (UTC) polls: what the API answers now belongs to today, so a
        backfill of past days reloads their saved responses and spends no quota."""
        from datetime import UTC, datetime

        return day == datetime.now(UTC).strftime("%Y-%m-%d")


class ReplayOddsFeedResource(OddsFeedResource):
    """Serves saved responses as if they were live: for tests, demos and machines without a key."""

    paths: list[str] = Field(
        default=[str((SAMPLES_DIR / "odds_api" / "*.json*").relative_to(PROJECT_ROOT))],
        description="Saved /odds responses (files or globs, relative to the project).",
    )

    advance_across_runs: bool = Field(
        default=True,
        description="Each run's poll (odds and scores) gets the next saved snapshot, as a live "
        "feed moves on; the position is kept in $ODDS_PIPELINE_HOME/raw/replay_positions.json. "
        "Off: every run starts from the first snapshot.",
    )

    def get_feed(self):
        from odds_pipeline.ingestion.sources import expand_paths
        from odds_pipeline.ingestion.sources.odds_api import ReplayFeed

        return ReplayFeed(
            expand_paths(self.paths, base=PROJECT_ROOT), position_file=self._positions()
        )

    scores_paths: list[str] = Field(
        default=[str((SAMPLES_DIR / "odds_api_scores" / "*.json*").relative_to(PROJECT_ROOT))],
        description="Saved /scores responses (files or globs, relative to the project).",
    )

    def get_scores_feed(self):
        from odds_pipeline.ingestion.sources import expand_paths
        from odds_pipeline.ingestion.sources.odds_api_scores import ReplayScoresFeed

        return ReplayScoresFeed(
            expand_paths(self.scores_paths, base=PROJECT_ROOT), position_file=self._positions()
        )

    def _positions(self):
        """Where the replays keep their place across runs (None: every run starts over)."""
        return state_home() / "raw" / "replay_positions.json" if self.advance_across_runs else None


def default_odds_feed() -> OddsFeedResource:
    """Live when ODDS_API_KEY is set (or ODDS_FEED=live), replay of the samples otherwise."""
    mode = os.environ.get("ODDS_FEED", "live" if os.environ.get("ODDS_API_KEY") else "replay")
    if mode == "live":
        return LiveOddsApiResource(api_key=dg.EnvVar("ODDS_API_KEY"))
    return ReplayOddsFeedResource()


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking for the training assets: runs that always end, links for the UI.

    See the module docstring for why this is ours rather than dagster-mlflow's.
    """

    tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty = sqlite:///$ODDS_PIPELINE_HOME/mlflow/mlflow.db (absolute).",
    )
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI (`make mlflow`) for links in asset metadata.",
    )

    def uri(self) -> str:
        return self.tracking_uri or tracking.tracking_uri()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Close MLflow runs that a hard-killed Dagster run left RUNNING (never fails a run)."""
        instance = context.instance
        if instance is None:
            return

        def is_finished(run_id: str) -> bool:
            run = instance.get_run_by_id(run_id)
            return run is not None and run.is_finished

        try:
            closed = tracking.close_orphaned_runs(is_finished, self.uri())
        except Exception as exc:  # tracking store trouble surfaces in the asset itself
            context.log.warning(f"could not check for orphaned MLflow runs: {exc}")
            return
        if closed:
            context.log.warning(f"closed {len(closed)} orphaned MLflow run(s): {closed}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Safety net: nothing this process started stays RUNNING after the step."""
        if "mlflow" not in sys.modules:
            return
        ended = tracking.end_active_runs("FAILED")
        if ended:
            context.log.warning(f"ended MLflow run(s) left open: {ended}")

    @contextmanager
    def start_run(
        self,
        context: dg.AssetExecutionContext,
        experiment: str,
        run_name: str | None = None,
        *,
        nested: bool = False,
        tags: dict[str, Any] | None = None,
        finished_on: tuple[type[BaseException], ...] = (),
    ) -> Iterator[Any]:
        """A tracked run tagged with the Dagster run, job and asset that started it."""
        dagster_tags = {
            tracking.DAGSTER_RUN_TAG: context.run.run_id,
            "dagster.job": context.run.job_name,
            "dagster.asset": context.asset_key.to_user_string(),
        }
        with tracking.tracked_run(
            experiment,
            run_name or context.asset_key.to_user_string(),
            nested=nested,
            tags={**dagster_tags, **(tags or {})},
            description=f"Dagster run {context.run.run_id} ({context.run.job_name})",
            finished_on=finished_on,
            uri=self.uri(),
        ) as run:
            yield run

    def run_url(self, run: Any) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    def model_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"


# --------------------------------------------------------------------------- dagster-mlflow

REGISTRY_EXPERIMENT = "odds-registry"


@dg.resource(
    config_schema={
        "experiment_name": dg.Field(str, default_value=REGISTRY_EXPERIMENT),
        "mlflow_tracking_uri": dg.Field(
            dg.Noneable(str),
            default_value=None,
            description="Empty = the state home's store (sqlite:///$ODDS_PIPELINE_HOME/mlflow/mlflow.db).",
        ),
    },
    description="dagster-mlflow's `mlflow_tracking`: one MLflow run per Dagster run of an op job "
    "(ended by the `end_mlflow_on_run_finished` hook). Loaded when a run starts, not when the "
    "code location loads (dagster_mlflow imports mlflow at import).",
)
def dagster_mlflow_tracking(init_context: dg.InitResourceContext) -> Any:
    from types import SimpleNamespace

    from dagster_mlflow.resources import MlFlow

    config = dict(init_context.resource_config)
    config["mlflow_tracking_uri"] = config.get("mlflow_tracking_uri") or tracking.tracking_uri()
    tracking.get_or_create_experiment(config["experiment_name"], config["mlflow_tracking_uri"])
    # MlFlow reads only these attributes of its init context.
    shim = SimpleNamespace(
        log=init_context.log,
        dagster_run=init_context.run,
        run_id=init_context.run.run_id,
        resource_config=config,
    )
    return MlFlow(shim)


@event_list_hook(name="end_mlflow_on_run_finished", required_resource_keys={"mlflow"})
def end_mlflow_on_run_finished(context: Any, event_list: list[Any]) -> Any:
    """dagster-mlflow's hook (imported when it fires): ends the run FINISHED or FAILED."""
    from dagster_mlflow import end_mlflow_on_run_finished as hook

    return hook.decorated_fn(context, event_list)
