"""Checks on the ingestion outputs: nothing lost, valid prices, unique keys, reject ratio, live freshness."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from .ingestion import (
    LIVE_LOAD_PREFIX,
    POLICY_REJECTS,
    football_data_odds,
    odds_api_live,
    odds_api_snapshots,
    sbr_odds,
    simulated_market,
)
from .resources import WarehouseResource

# Which loads (by load_id prefix) each source asset owns in the shared tables.
LOAD_PREFIX = {
    football_data_odds: "football_data:",
    sbr_odds: "sbr:",
    odds_api_snapshots: "odds_api:",
    simulated_market: "simulator:",
    odds_api_live: f"{LIVE_LOAD_PREFIX}:",
}


class RejectRatioConfig(dg.Config):
    max_reject_ratio: float = Field(
        default=0.05,
        description="Largest share of prices read that may be rejected for data problems (policy rejects such as in-play excluded).",
    )


def _reject_ratio_check(asset: dg.AssetsDefinition, prefix: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="reject_ratio_below_threshold",
        blocking=True,
        description="Blocks downstream assets when too many prices were refused for data problems.",
    )
    def check(config: RejectRatioConfig, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.store().connection(read_only=True) as con:
            read = con.execute(
                "SELECT coalesce(sum(prices_read), 0) FROM loads WHERE starts_with(load_id, ?)",
                [prefix],
            ).fetchone()[0]
            reasons = dict(
                con.execute(
                    "SELECT reason, count(*) FROM rejected_quotes WHERE starts_with(load_id, ?) GROUP BY 1",
                    [prefix],
                ).fetchall()
            )
        data_rejects = sum(n for r, n in reasons.items() if r not in POLICY_REJECTS)
        ratio = data_rejects / read if read else 0.0
        return dg.AssetCheckResult(
            passed=ratio <= config.max_reject_ratio,
            metadata={
                "reject_ratio": float(ratio),
                "max_reject_ratio": config.max_reject_ratio,
                "prices_read": int(read),
                "data_rejects": int(data_rejects),
                "rejected_reasons": dg.MetadataValue.json(
                    {k: int(v) for k, v in sorted(reasons.items())}
                ),
            },
        )

    return check


def _accounted_check(asset: dg.AssetsDefinition, prefix: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="every_price_accounted",
        blocking=True,
        description="prices read = quotes stored + rejects stored, for every load this asset owns.",
    )
    def check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.store().connection(read_only=True) as con:
            read, accepted, rejected = con.execute(
                "SELECT coalesce(sum(prices_read),0), coalesce(sum(quotes_accepted),0), coalesce(sum(quotes_rejected),0) "
                "FROM loads WHERE starts_with(load_id, ?)",
                [prefix],
            ).fetchone()
            stored = con.execute(
                "SELECT count(*) FROM odds_quotes WHERE starts_with(load_id, ?)", [prefix]
            ).fetchone()[0]
            stored_rejects = con.execute(
                "SELECT count(*) FROM rejected_quotes WHERE starts_with(load_id, ?)", [prefix]
            ).fetchone()[0]
        passed = read == accepted + rejected and stored == accepted and stored_rejects == rejected
        return dg.AssetCheckResult(
            passed=bool(passed),
            metadata={
                "prices_read": int(read),
                "quotes_stored": int(stored),
                "rejects_stored": int(stored_rejects),
                "loads_accepted": int(accepted),
                "loads_rejected": int(rejected),
            },
        )

    return check


@dg.asset_check(
    asset="odds_quotes",
    blocking=True,
    description="Every stored price is a finite decimal price above 1.0 with a timestamp.",
)
def valid_prices(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.store().connection(read_only=True) as con:
        bad = con.execute(
            "SELECT count(*) FROM odds_quotes WHERE NOT isfinite(price) OR price <= 1.0 OR observed_at IS NULL"
        ).fetchone()[0]
    return dg.AssetCheckResult(passed=bad == 0, metadata={"invalid_rows": int(bad)})


@dg.asset_check(
    asset="odds_quotes",
    blocking=True,
    description="At most one price per (source, event, bookmaker, market, outcome, point, observed_at).",
)
def unique_quote_keys(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.store().connection(read_only=True) as con:
        dupes = con.execute(
            """SELECT count(*) FROM (
                   SELECT 1 FROM odds_quotes
                   GROUP BY source, event_id, bookmaker, market, outcome, point, observed_at
                   HAVING count(*) > 1)"""
        ).fetchone()[0]
    return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicated_keys": int(dupes)})


class FreshnessConfig(dg.Config):
    max_age_minutes: float = Field(
        default=60.0, description="Live prices older than this mean the feed is stale."
    )


@dg.asset_check(
    asset=odds_api_live,
    description="The newest live price is recent (warns when the feed has gone quiet).",
)
def live_feed_fresh(config: FreshnessConfig, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.store().connection(read_only=True) as con:
        latest = con.execute(
            "SELECT max(ingested_at) FROM odds_quotes WHERE starts_with(load_id, ?)",
            [f"{LIVE_LOAD_PREFIX}:"],
        ).fetchone()[0]
    if latest is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"latest_ingested_at": "none"},
        )
    age_min = (datetime.now(UTC) - latest.astimezone(UTC)).total_seconds() / 60.0
    return dg.AssetCheckResult(
        passed=age_min <= config.max_age_minutes,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "latest_ingested_at": str(latest),
            "age_minutes": float(age_min),
            "max_age_minutes": config.max_age_minutes,
        },
    )


INGESTION_CHECKS = [
    *[_reject_ratio_check(asset, prefix) for asset, prefix in LOAD_PREFIX.items()],
    *[_accounted_check(asset, prefix) for asset, prefix in LOAD_PREFIX.items()],
    valid_prices,
    unique_quote_keys,
    live_feed_fresh,
]
