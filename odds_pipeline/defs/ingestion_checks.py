"""Checks on the ingestion outputs: nothing lost, valid prices, unique keys, reject ratio, live freshness."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb
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


QUOTE_KEY = ["source", "event_id", "bookmaker", "market", "outcome", "point", "observed_at"]
SAMPLE_KEYS = 5
FILES_PER_LOAD = 5


def _duplicate_report(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Which loads and files hold the duplicated keys, a few keys, and the load to drop.

    The load to drop first is the one whose rows are most often duplicates (a copy of a
    file ingested under another name is duplicated entirely), then the latest ingested.
    """
    key = ", ".join(QUOTE_KEY)
    on = " AND ".join(f"q.{c} IS NOT DISTINCT FROM d.{c}" for c in QUOTE_KEY)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE dup_rows AS
            WITH d AS (SELECT {key} FROM odds_quotes GROUP BY ALL HAVING count(*) > 1)
            SELECT q.* FROM odds_quotes AS q SEMI JOIN d ON {on}"""
    )
    loads = con.execute(
        f"""WITH per_load AS (
                SELECT load_id, any_value(source) AS source, count(*) AS duplicate_rows,
                       max(ingested_at) AS ingested_at,
                       list(DISTINCT source_file ORDER BY source_file)[1:{FILES_PER_LOAD}] AS files
                FROM dup_rows GROUP BY load_id)
            SELECT p.load_id, p.source, p.files, p.duplicate_rows, t.quote_rows,
                   p.duplicate_rows / t.quote_rows AS duplicated_share, p.ingested_at
            FROM per_load AS p JOIN (
                SELECT load_id, count(*) AS quote_rows FROM odds_quotes
                WHERE load_id IN (SELECT load_id FROM per_load) GROUP BY load_id) AS t
              USING (load_id)
            ORDER BY duplicated_share DESC, ingested_at DESC, load_id DESC"""
    ).fetchall()
    samples = con.execute(
        f"""SELECT {key}, count(*) AS rows, list(DISTINCT load_id ORDER BY load_id) AS load_ids
            FROM dup_rows GROUP BY ALL ORDER BY {key} LIMIT {SAMPLE_KEYS}"""
    ).fetchall()
    within, across = con.execute(
        f"""SELECT count(*) FILTER (WHERE n_loads = 1), count(*) FILTER (WHERE n_loads > 1)
            FROM (SELECT count(DISTINCT load_id) AS n_loads FROM dup_rows GROUP BY {key})"""
    ).fetchone()
    con.execute("DROP TABLE dup_rows")
    return {
        "loads": [
            {
                "load_id": load_id,
                "source": source,
                "files": [f for f in files if f is not None],
                "duplicate_rows": int(dup),
                "quote_rows": int(total),
                "duplicated_share": round(float(share), 4),
                "latest_ingested_at": str(ingested),
            }
            for load_id, source, files, dup, total, share, ingested in loads
        ],
        "samples": [
            {
                **{
                    c: (v if c != "observed_at" else str(v))
                    for c, v in zip(QUOTE_KEY, row[: len(QUOTE_KEY)], strict=True)
                },
                "rows": int(row[len(QUOTE_KEY)]),
                "load_ids": list(row[len(QUOTE_KEY) + 1]),
            }
            for row in samples
        ],
        "within_load_keys": int(within),
        "across_load_keys": int(across),
    }


def _duplicate_advice(report: dict[str, Any], dupes: int) -> tuple[str, str]:
    """(one-paragraph description, the fix): what an on-call engineer runs next."""
    loads = report["loads"]
    named = "; ".join(
        f"{row['load_id']} ({', '.join(row['files']) or 'no file'}: "
        f"{row['duplicate_rows']} of {row['quote_rows']} rows duplicated)"
        for row in loads[:SAMPLE_KEYS]
    )
    more = f" and {len(loads) - SAMPLE_KEYS} more loads" if len(loads) > SAMPLE_KEYS else ""
    description = f"{dupes} quote keys are stored more than once, in loads {named}{more}."
    fixes = []
    if report["across_load_keys"]:
        target = next(row["load_id"] for row in loads)
        fixes.append(
            f"{report['across_load_keys']} keys are in several loads (the same data ingested "
            f"twice, e.g. a file copied under another name): remove the redundant load with "
            f"`odds-pipeline drop-load {target} --yes` (or the `drop_load` job with config "
            f"load_id: {target}); `odds-pipeline loads` lists them all. Then re-run this check."
        )
    if report["within_load_keys"]:
        fixes.append(
            f"{report['within_load_keys']} keys repeat inside a single load: the source file "
            "itself repeats prices; fix the file or its adapter and re-materialize that load."
        )
    fix = " ".join(fixes)
    return f"{description} {fix}", fix


@dg.asset_check(
    asset="odds_quotes",
    blocking=True,
    description="At most one price per (source, event, bookmaker, market, outcome, point, "
    "observed_at). On failure its metadata names the loads and files behind the duplicates, "
    "sample keys, and the fix: `odds-pipeline drop-load <load_id> --yes` for a load ingested "
    "twice.",
)
def unique_quote_keys(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.store().connection(read_only=True) as con:
        dupes = con.execute(
            f"""SELECT count(*) FROM (
                   SELECT 1 FROM odds_quotes GROUP BY {", ".join(QUOTE_KEY)}
                   HAVING count(*) > 1)"""
        ).fetchone()[0]
        if not dupes:
            return dg.AssetCheckResult(passed=True, metadata={"duplicated_keys": 0})
        report = _duplicate_report(con)
    description, fix = _duplicate_advice(report, int(dupes))
    return dg.AssetCheckResult(
        passed=False,
        description=description,
        metadata={
            "duplicated_keys": int(dupes),
            "keys_across_loads": report["across_load_keys"],
            "keys_within_one_load": report["within_load_keys"],
            "loads_with_duplicates": dg.MetadataValue.json(report["loads"]),
            "sample_keys": dg.MetadataValue.json(report["samples"]),
            "fix": dg.MetadataValue.md(fix),
        },
    )


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
