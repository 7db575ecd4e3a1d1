"""Resources: the DuckDB warehouse and the odds feed (live client or saved-response replay)."""

import os
from abc import abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import Field

from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.paths import PROJECT_ROOT, SAMPLES_DIR, warehouse_path


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

    def store(self) -> OddsStore:
        return OddsStore(self.resolved_path())


class OddsFeedResource(dg.ConfigurableResource):
    """Where live Odds API responses come from; the live client and the replay share one interface."""

    sports: list[str] = Field(
        default_factory=lambda: ["americanfootball_nfl"], description="Odds API sport keys to poll."
    )

    @abstractmethod
    def get_feed(self):  # -> odds_pipeline.ingestion.sources.odds_api.OddsFeed
        ...


class LiveOddsApiResource(OddsFeedResource):
    """The Odds API v4 over HTTPS. The key comes from the ODDS_API_KEY environment variable."""

    api_key: str = Field(
        description="Odds API key; set it with EnvVar('ODDS_API_KEY'), never inline."
    )
    regions: str = "us"
    markets: str = "h2h,spreads,totals"
    bookmakers: str | None = None
    odds_format: str = "american"

    def get_feed(self):
        from odds_pipeline.ingestion.sources.odds_api import OddsApiClient

        return OddsApiClient(
            api_key=self.api_key,
            regions=self.regions,
            markets=self.markets,
            bookmakers=self.bookmakers,
            odds_format=self.odds_format,
        )


class ReplayOddsFeedResource(OddsFeedResource):
    """Serves saved responses as if they were live: for tests, demos and machines without a key."""

    paths: list[str] = Field(
        default_factory=lambda: [
            str((SAMPLES_DIR / "odds_api" / "*.json*").relative_to(PROJECT_ROOT))
        ],
        description="Saved /odds responses (files or globs, relative to the project).",
    )

    def get_feed(self):
        from odds_pipeline.ingestion.sources import expand_paths
        from odds_pipeline.ingestion.sources.odds_api import ReplayFeed

        return ReplayFeed(expand_paths(self.paths, base=PROJECT_ROOT))


def default_odds_feed() -> OddsFeedResource:
    """Live when ODDS_API_KEY is set (or ODDS_FEED=live), replay of the samples otherwise."""
    mode = os.environ.get("ODDS_FEED", "live" if os.environ.get("ODDS_API_KEY") else "replay")
    if mode == "live":
        return LiveOddsApiResource(api_key=dg.EnvVar("ODDS_API_KEY"))
    return ReplayOddsFeedResource()
