"""Group `ingestion`: one asset per odds source, the canonical tables they feed, their checks.

Each asset is a thin wrapper: parse with the source's pure adapter
(`odds_pipeline.ingestion.sources.<source>`), write through `WarehouseResource`, report metadata.
"""

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from odds_pipeline.ingestion.ingest import ingest_paths, relative_to_project
from odds_pipeline.market.quotes import ParseResult, SourceFormatError, combine
from odds_pipeline.paths import state_home

from .metadata import DAILY, WRITER_POOL, markdown_table
from .resources import OddsFeedResource, WarehouseResource

GROUP = "ingestion"
OWNERS = ["team:odds-data"]
PREVIEW_ROWS = 10
# Reject reasons that are policy, not bad data: they do not count against the reject ratio.
POLICY_REJECTS = ("in_play",)


@contextmanager
def failing_clearly(source: str) -> Iterator[None]:
    """Turn data problems into a non-retried Failure an on-call engineer can act on."""
    try:
        yield
    except SourceFormatError as exc:
        raise dg.Failure(
            description=(
                f"{source}: malformed file {exc.path}"
                + (f" at line {exc.line}" if exc.line is not None else "")
                + f": {exc.reason}. Nothing from this run was written; fix or remove the file and re-run."
            ),
            metadata={
                "file": exc.path,
                "line": exc.line if exc.line is not None else -1,
                "reason": exc.reason,
            },
            allow_retries=False,
        ) from exc
    except FileNotFoundError as exc:
        raise dg.Failure(
            description=f"{source}: {exc}. Check the `paths` config of this asset.",
            metadata={"reason": str(exc)},
            allow_retries=False,
        ) from exc


def ingestion_metadata(result: ParseResult) -> dict[str, object]:
    summary = result.summary()
    extra: dict[str, object] = {}
    if result.warnings:  # e.g. a last row cut short, a cp1252 fallback
        extra["warnings"] = dg.MetadataValue.json(list(result.warnings))
    encodings = result.notes.get("file_encodings")
    if encodings:
        extra["file_encodings"] = dg.MetadataValue.json(encodings)
    # File assets (`ingest_paths`): the loads written, copies skipped, old ids replaced.
    for key in ("loads", "duplicate_content", "replaced_loads"):
        if key in result.notes:
            extra[key] = dg.MetadataValue.json(result.notes[key])
    return extra | {
        "dagster/row_count": dg.MetadataValue.int(summary["quotes_accepted"]),
        "prices_read": dg.MetadataValue.int(summary["prices_read"]),
        "quotes_accepted": dg.MetadataValue.int(summary["quotes_accepted"]),
        "quotes_rejected": dg.MetadataValue.int(summary["quotes_rejected"]),
        "rejected_reasons": dg.MetadataValue.json(summary["rejected_reasons"]),
        "events": dg.MetadataValue.int(summary["events"]),
        "bookmakers": dg.MetadataValue.json(summary["bookmakers"]),
        "markets": dg.MetadataValue.json(summary["markets"]),
        "observed_from": dg.MetadataValue.text(str(summary["observed_from"])),
        "observed_to": dg.MetadataValue.text(str(summary["observed_to"])),
        "unknown_columns": dg.MetadataValue.json(result.unknown_columns),
        "files": dg.MetadataValue.json([relative_to_project(f) for f in result.files]),
        "preview": dg.MetadataValue.md(
            markdown_table(
                result.quotes,
                ["event_id", "bookmaker", "market", "outcome", "point", "price", "observed_at"],
            )
        ),
    }


class FileSourceConfig(dg.Config):
    keep_in_play: bool = Field(
        default=False,
        description="Store in-play prices (flagged in_play) instead of rejecting them.",
    )


class FootballDataConfig(FileSourceConfig):
    paths: list[str] = Field(
        default=["data/samples/football_data/*.csv"],
        description="football-data.co.uk CSVs: files or globs, relative to the project or absolute.",
    )
    prematch_offset_hours: float = Field(
        default=72.0, description="Pre-match prices are observed this long before kickoff."
    )
    # Any, not str: the Launchpad writes `15:00` unquoted and YAML 1.1 reads it as the
    # sexagesimal integer 900 (minutes); the validator turns that back into "15:00".
    default_kickoff_time: Any = Field(
        default="15:00", description="UK kickoff time (HH:MM) for seasons without a Time column."
    )

    @field_validator("default_kickoff_time", mode="before")
    @classmethod
    def _kickoff_as_text(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return f"{value // 60:02d}:{value % 60:02d}"
        if not isinstance(value, str):
            raise ValueError(f"default_kickoff_time must be HH:MM, got {value!r}")
        return value


class SbrConfig(FileSourceConfig):
    paths: list[str] = Field(
        default=["data/samples/sbr/*.csv"],
        description="sportsbookreviewsonline NBA CSVs: files or globs.",
    )


class OddsApiReplayConfig(FileSourceConfig):
    paths: list[str] = Field(
        default=["data/samples/odds_api/*.json*"],
        description="Saved Odds API v4 responses (.json, .jsonl, .gz; bare lists or historical envelopes).",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "duckdb", "csv"},
    pool=WRITER_POOL,
    description="EPL (and any football-data.co.uk league) odds: 1X2, over/under 2.5 and Asian handicap, "
    "pre-match and closing, from CSVs; results from full-time scores.",
)
def football_data_odds(
    config: FootballDataConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.ingestion.sources import football_data

    with failing_clearly("football_data_odds"):
        result = ingest_paths(
            warehouse.store(),
            football_data.parse_file,
            football_data.SOURCE,
            config.paths,
            keep_in_play=config.keep_in_play,
            prematch_offset_hours=config.prematch_offset_hours,
            default_kickoff_time=config.default_kickoff_time,
        )
    return dg.MaterializeResult(metadata=ingestion_metadata(result))


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "duckdb", "csv"},
    pool=WRITER_POOL,
    description="NBA closing moneylines and results from sportsbookreviewsonline CSVs (rows paired by rotation number).",
)
def sbr_odds(config: SbrConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from odds_pipeline.ingestion.sources import sbr

    with failing_clearly("sbr_odds"):
        result = ingest_paths(
            warehouse.store(),
            sbr.parse_file,
            sbr.SOURCE,
            config.paths,
            keep_in_play=config.keep_in_play,
        )
    return dg.MaterializeResult(metadata=ingestion_metadata(result))


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "duckdb", "json"},
    pool=WRITER_POOL,
    description="Replay of saved The Odds API v4 responses (bare /odds lists and historical snapshots).",
)
def odds_api_snapshots(
    config: OddsApiReplayConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.ingestion.sources import odds_api

    with failing_clearly("odds_api_snapshots"):
        result = ingest_paths(
            warehouse.store(),
            odds_api.parse_file,
            odds_api.SOURCE,
            config.paths,
            keep_in_play=config.keep_in_play,
        )
    return dg.MaterializeResult(metadata=ingestion_metadata(result))


LIVE_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date="2025-01-01", timezone="UTC", end_offset=1
)
LIVE_LOAD_PREFIX = "odds_api_live"


def live_raw_dir(partition_key: str):
    path = state_home() / "raw" / "odds_api" / partition_key
    path.mkdir(parents=True, exist_ok=True)
    return path


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "duckdb", "api"},
    pool=WRITER_POOL,
    partitions_def=LIVE_PARTITIONS,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    description="Live The Odds API feed, one daily partition (UTC). A run of today's partition polls every "
    "configured sport and keeps the raw response under $ODDS_PIPELINE_HOME/raw/odds_api/YYYY-MM-DD/; every run "
    "reloads the day's saved responses as one load (idempotent per day). A backfill of past days polls nothing.",
)
def odds_api_live(
    context: dg.AssetExecutionContext,
    config: FileSourceConfig,
    warehouse: WarehouseResource,
    odds_feed: OddsFeedResource,
) -> dg.MaterializeResult:
    from odds_pipeline.ingestion.sources import load_id_for, odds_api

    day = context.partition_key
    raw_dir = live_raw_dir(day)
    polled, quota = _poll_day(context, odds_feed, raw_dir, odds_feed.get_feed().fetch_odds)

    files = sorted(raw_dir.glob("*.json.gz"))
    with failing_clearly("odds_api_live"):
        parsed = [odds_api.parse_file(f, keep_in_play=config.keep_in_play) for f in files]
    load_id = f"{LIVE_LOAD_PREFIX}:{day}"
    per_file_ids = [load_id_for(f"{LIVE_LOAD_PREFIX}:{day}", f) for f in files]
    result = combine(parsed)
    warehouse.store().replace_loads(odds_api.SOURCE, {load_id: result})
    metadata = ingestion_metadata(result)
    metadata["quota"] = dg.MetadataValue.json(quota)
    metadata["polled"] = dg.MetadataValue.bool(polled)
    metadata["raw_responses"] = dg.MetadataValue.int(len(per_file_ids))
    metadata["load_id"] = dg.MetadataValue.text(load_id)
    return dg.MaterializeResult(metadata=metadata)


def _poll_day(
    context: dg.AssetExecutionContext,
    odds_feed: OddsFeedResource,
    raw_dir: Path,
    fetch: Callable[[str], Any],
) -> tuple[bool, dict[str, object]]:
    """Today's partition asks `fetch` once per configured sport and keeps each raw response
    in `raw_dir`; another day's polls nothing (its saved responses are reloaded). Returns
    (polled, quota per sport). A rate limit or outage is raised for the retry policy; any
    other feed error (refused key, unknown sport) fails the run without retries."""
    from odds_pipeline.ingestion.sources import odds_api

    day = context.partition_key
    if not odds_feed.polls_day(day):
        context.log.info(f"{day} is not today (UTC): reloading its saved responses, no poll")
        return False, {}
    quota: dict[str, object] = {}
    for sport in odds_feed.sports:
        try:
            response = fetch(sport)
        except odds_api.TransientFeedError:
            raise  # rate limit or outage: the retry policy tries again later
        except odds_api.FeedError as exc:  # retrying cannot help
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        save_raw_response(raw_dir, sport, response)
        quota[sport] = dict(response.quota)
        context.log.info(f"polled {sport}: {len(response.payload)} events, quota {response.quota}")
    return True, quota


def save_raw_response(raw_dir: Path, sport: str, response: Any) -> Path:
    """Keep a feed response as a gzipped envelope, atomically, named by time and content, so
    a day can be replayed and the same response saved twice is one file."""
    received = response.received_at.astimezone(UTC)
    envelope = {
        "timestamp": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sport": sport,
        "data": response.payload,
    }
    body = json.dumps(envelope, sort_keys=True).encode()
    name = f"{sport}-{received:%Y%m%dT%H%M%SZ}-{hashlib.sha1(body).hexdigest()[:10]}.json.gz"
    target = raw_dir / name
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(gzip.compress(body, mtime=0))
        tmp.replace(target)
    return target


class OddsApiScoresConfig(dg.Config):
    days_from: int = Field(
        default=3,
        ge=1,
        le=3,
        description="Completed games of the last N days (1-3, the endpoint's daysFrom).",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "duckdb", "api"},
    pool=WRITER_POOL,
    partitions_def=LIVE_PARTITIONS,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL),
    description="Outcomes of live-feed events from The Odds API `/scores` endpoint, one daily partition: "
    "results (final scores, resolved_at = the API's last_update) of completed games, joined to the odds "
    "feed's events by id. Each run polls every configured sport, keeps the raw response under "
    "$ODDS_PIPELINE_HOME/raw/odds_api_scores/YYYY-MM-DD/ and reloads the day's responses as one load.",
)
def odds_api_scores(
    context: dg.AssetExecutionContext,
    config: OddsApiScoresConfig,
    warehouse: WarehouseResource,
    odds_feed: OddsFeedResource,
) -> dg.MaterializeResult:
    from odds_pipeline.ingestion.sources import odds_api_scores

    day = context.partition_key
    raw_dir = state_home() / "raw" / "odds_api_scores" / day
    raw_dir.mkdir(parents=True, exist_ok=True)
    feed = odds_feed.get_scores_feed()
    polled, quota = _poll_day(
        context, odds_feed, raw_dir, lambda sport: feed.scores(sport, config.days_from)
    )

    # Every response of the day, oldest first per sport: a later snapshot's result wins, and
    # a result stays when it has left the daysFrom window of later polls.
    files = sorted(raw_dir.glob("*.json.gz"))
    with failing_clearly("odds_api_scores"):
        result = combine([odds_api_scores.parse_scores_file(f) for f in files])
    load_id = odds_api_scores.load_id_of(day)
    warehouse.store().replace_loads(odds_api_scores.SOURCE, {load_id: result})
    summary = odds_api_scores.summarize_scores(result)
    metadata: dict[str, object] = {
        "dagster/row_count": dg.MetadataValue.int(summary["written"]),
        "events": dg.MetadataValue.int(summary["events"]),
        "completed": dg.MetadataValue.int(summary["completed"]),
        "written": dg.MetadataValue.int(summary["written"]),
        "skipped": dg.MetadataValue.int(summary["skipped"]),
        "skipped_reasons": dg.MetadataValue.json(summary["skipped_reasons"]),
        "in_progress": dg.MetadataValue.int(summary["in_progress"]),
        "not_started": dg.MetadataValue.int(summary["not_started"]),
        "unknown_columns": dg.MetadataValue.json(result.unknown_columns),
        "quota": dg.MetadataValue.json(quota),
        "polled": dg.MetadataValue.bool(polled),
        "raw_responses": dg.MetadataValue.int(len(files)),
        "load_id": dg.MetadataValue.text(load_id),
        "preview": dg.MetadataValue.md(
            markdown_table(result.results, ["event_id", "home_score", "away_score", "resolved_at"])
        ),
    }
    if result.warnings:
        metadata["warnings"] = dg.MetadataValue.json(result.warnings[:50])
    return dg.MaterializeResult(metadata=metadata)


class SimulatedMarketConfig(dg.Config):
    seed: int = Field(default=7, description="Same seed, same market.")
    n_events: int = Field(default=200, description="Events to simulate.")
    arbitrage_rate: float = Field(
        default=1.0, description="Dial for cross-book arbitrage windows (0 = fewest)."
    )
    start: str = Field(
        default="2024-01-01T00:00:00Z",
        description="When the first market opens (UTC); the first kickoff is days_before later.",
    )
    regime_change_at: str = Field(
        default="",
        description="Drift drill: markets opening at or after this time (ISO, UTC) follow a new "
        "regime (empty = none).",
    )
    regime_home_advantage: float | None = Field(
        default=None, description="New home advantage (logit) after the change (None = same)."
    )
    regime_retail_margin: list[float] = Field(
        default=[], description="New retail margin range [lo, hi] (empty = same)."
    )
    regime_drift_scale: float | None = Field(
        default=None, description="New logit sd of price drift steps (None = same)."
    )

    def simulator_values(self) -> dict[str, Any]:
        """The SimulatorConfig fields this config sets (the regime only when one is asked)."""
        values: dict[str, Any] = {
            "seed": self.seed,
            "n_events": self.n_events,
            "arbitrage_rate": self.arbitrage_rate,
            "start": self.start,
        }
        if self.regime_change_at:
            values["regime_change_at"] = self.regime_change_at
            for name in ("regime_home_advantage", "regime_drift_scale"):
                if getattr(self, name) is not None:
                    values[name] = getattr(self, name)
            if self.regime_retail_margin:
                values["regime_retail_margin"] = list(self.regime_retail_margin)
        return values


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "duckdb"},
    pool=WRITER_POOL,
    description="Synthetic market: a sharp book leads, retail books lag with wider margins; the latent true "
    "probability is kept for oracle comparisons. Deterministic for a seed.",
)
def simulated_market(
    config: SimulatedMarketConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.ingestion.sources import simulator

    try:
        sim_config = simulator.config_from_mapping(config.simulator_values())
    except ValueError as exc:
        raise dg.Failure(
            description=f"invalid simulator config: {exc}", allow_retries=False
        ) from exc
    load_id = f"{simulator.SOURCE}:seed-{config.seed}"
    batches: list[ParseResult] = []
    with warehouse.store().load(load_id, simulator.SOURCE) as writer:
        for batch in simulator.iter_batches(sim_config, trusted=True):
            writer.write(batch)
            batches.append(
                ParseResult(
                    quotes=batch.quotes.head(PREVIEW_ROWS)
                    if not batches
                    else batch.quotes.iloc[0:0],
                    rejected=batch.rejected,
                    events=batch.events,
                    results=batch.results,
                    prices_read=batch.prices_read,
                    files=[],
                )
            )
        accepted = writer.accepted
    with warehouse.store().connection(read_only=True) as con:
        stats = con.execute(
            """SELECT count(*), count(DISTINCT bookmaker), min(observed_at), max(observed_at)
               FROM odds_quotes WHERE load_id = ?""",
            [load_id],
        ).fetchone()
    summary = combine(batches)
    metadata = ingestion_metadata(summary)
    metadata.update(
        {
            "dagster/row_count": dg.MetadataValue.int(accepted),
            "quotes_accepted": dg.MetadataValue.int(accepted),
            "bookmakers": dg.MetadataValue.int(int(stats[1])),
            "observed_from": dg.MetadataValue.text(str(stats[2])),
            "observed_to": dg.MetadataValue.text(str(stats[3])),
            "seed": dg.MetadataValue.int(config.seed),
        }
    )
    return dg.MaterializeResult(metadata=metadata)


SOURCE_ASSETS = [football_data_odds, sbr_odds, odds_api_snapshots, simulated_market]
CANONICAL_TABLES = ("odds_quotes", "events", "results", "rejected_quotes")
TABLE_DESCRIPTIONS = {
    "odds_quotes": "One price of one outcome at one bookmaker at one moment (decimal odds, UTC times), all sources.",
    "events": "One row per event: sport, league, season, commence_time, teams.",
    "results": "Final scores per event, with when they became known.",
    "rejected_quotes": "Every price value refused at ingestion, with the raw record, its file and the reason.",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            table,
            group_name=GROUP,
            owners=OWNERS,
            kinds={"duckdb", "table"},
            description=TABLE_DESCRIPTIONS[table],
            # odds_api_live writes its day partitions into the same tables itself; as a dependency
            # (never materialized without a key) it made every Materialize ask "are you sure".
            deps=[*SOURCE_ASSETS],
            skippable=True,
        )
        for table in CANONICAL_TABLES
    ],
    can_subset=True,
)
def canonical_odds_tables(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult]:
    """The shared tables every source writes into; materializing reports their state."""
    with warehouse.store().connection(read_only=True) as con:
        for key in context.selected_asset_keys:
            table = key.path[-1]
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            by_source = con.execute(
                f"SELECT source, count(*) FROM {table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            metadata: dict[str, object] = {
                "dagster/row_count": dg.MetadataValue.int(int(rows)),
                "rows_by_source": dg.MetadataValue.json({s: int(n) for s, n in by_source}),
            }
            if table == "odds_quotes":
                lo, hi, books = con.execute(
                    "SELECT min(observed_at), max(observed_at), count(DISTINCT bookmaker) FROM odds_quotes"
                ).fetchone()
                metadata.update(
                    {"observed_from": str(lo), "observed_to": str(hi), "bookmakers": int(books)}
                )
            if table == "rejected_quotes":
                reasons = con.execute(
                    "SELECT reason, count(*) FROM rejected_quotes GROUP BY 1 ORDER BY 2 DESC"
                ).fetchall()
                metadata["rejected_reasons"] = dg.MetadataValue.json(
                    {r: int(n) for r, n in reasons}
                )
            sample = con.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}").df()
            metadata["preview"] = dg.MetadataValue.md(
                markdown_table(
                    sample, [c for c in sample.columns if c not in ("raw", "load_id")][:8]
                )
            )
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "parquet"},
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["odds_quotes", "events", "results"],
    description="The canonical tables as day-partitioned Parquet under $ODDS_PIPELINE_HOME/lake/<table>/"
    "day=YYYY-MM-DD/data.parquet (quotes and withdrawals by the day observed, events by commence day, "
    "results by the day resolved), which DuckDB and any Parquet engine query in place. Each day's "
    "file is replaced atomically; re-running a day gives the same rows. Reads the warehouse only.",
)
def canonical_parquet(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.ingestion import lake
    from odds_pipeline.paths import lake_dir

    root = lake_dir()
    with warehouse.store().connection(read_only=True) as con:
        written = lake.export_days(con, root, context.partition_keys)
        undated = {t: n for t in lake.LAKE_TABLES if (n := lake.undated_rows(con, t))}
    rows = {table: sum(days.values()) for table, days in written.items()}
    files = [
        lake.day_file(root, table, day)
        for table, days in written.items()
        for day, n in days.items()
        if n
    ]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows.get("odds_quotes", 0)),
            "rows_by_table": dg.MetadataValue.json(rows),
            # no timestamp, so no day: in the warehouse, not in the lake
            "rows_without_day": dg.MetadataValue.json(undated),
            "days": dg.MetadataValue.int(len(context.partition_keys)),
            "files": dg.MetadataValue.int(len(files)),
            "megabytes": dg.MetadataValue.float(
                round(sum(f.stat().st_size for f in files) / 1e6, 3)
            ),
            "lake": dg.MetadataValue.path(str(root)),
            "query_in_place": dg.MetadataValue.md(
                f"```sql\nSELECT * FROM read_parquet('{root}/odds_quotes/day=*/data.parquet', "
                "hive_partitioning = true) WHERE day = '...'\n```"
            ),
        }
    )
