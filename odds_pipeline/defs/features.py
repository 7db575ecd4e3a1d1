"""Group `features`: quote and market features computed in DuckDB, the registry, the online view.

Logic lives in `odds_pipeline.features.compute` (SQL) and `odds_pipeline.features.feature_store`
(point-in-time and online retrieval); these assets only run it and report.
"""

from datetime import timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from odds_pipeline.features.compute import SHARP_BOOKS

from .metadata import WRITER_POOL, markdown_table
from .resources import WarehouseResource

GROUP = "features"
OWNERS = ["team:odds-features"]
CANONICAL = ["odds_quotes", "events"]


def _freshness_metadata(con, table: str) -> dict[str, object]:
    rows, lo, hi, events = con.execute(
        f"SELECT count(*), min(observed_at), max(observed_at), count(DISTINCT event_id) FROM {table}"
    ).fetchall()[0]
    return {
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "events": dg.MetadataValue.int(int(events)),
        "observed_from": dg.MetadataValue.text(str(lo)),
        "observed_to": dg.MetadataValue.text(str(hi)),
    }


def _column_schema(group: str) -> dg.TableSchema:
    from odds_pipeline.features.compute import definitions_for

    return dg.TableSchema(
        columns=[
            dg.TableColumn(d.name, d.dtype, description=f"{d.description} (v{d.version})")
            for d in definitions_for(group)
        ]
    )


class IncrementalConfig(dg.Config):
    only_load_ids: list[str] = Field(
        default=[],
        description="Recompute only the events these loads touched (a live poll's load, e.g. "
        "odds_api_live:2026-11-30); empty = every event. Identical to a full recompute for them.",
    )

    def scope(self) -> dict[str, object]:
        """`where` for the compute functions: the events of these loads, or everything."""
        if not self.only_load_ids:
            return {}
        from odds_pipeline.warehouse import sql_string

        ids = ", ".join(sql_string(i) for i in self.only_load_ids)
        return {"where": f"load_id IN ({ids})"}


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    pool=WRITER_POOL,
    deps=CANONICAL,
    description="Per quote: implied and de-vigged probabilities (multiplicative, power, Shin), changes from "
    "the previous and the opening quote, time since the last change, hours to commence, time of day.",
)
def quote_features(config: IncrementalConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from odds_pipeline.features.compute import QUOTE_TABLE, compute_quote_features

    with warehouse.store().connection() as con:
        compute_quote_features(con, **config.scope())
        metadata = _freshness_metadata(con, QUOTE_TABLE)
        sample = con.execute(
            f"SELECT event_id, bookmaker, market, outcome, observed_at, implied_prob, fair_prob "
            f"FROM {QUOTE_TABLE} ORDER BY observed_at DESC LIMIT 8"
        ).df()
    metadata["dagster/column_schema"] = _column_schema(QUOTE_TABLE)
    metadata["preview"] = dg.MetadataValue.md(markdown_table(sample, rows=8))
    return dg.MaterializeResult(metadata=metadata)


class MarketFeaturesConfig(IncrementalConfig):
    ttl_hours: float = Field(
        default=24.0, description="A book's quote older than this is not used at t."
    )
    sharp_books: list[str] = Field(
        default=list(SHARP_BOOKS),
        description="Books whose de-vigged price is the sharp probability (consensus when none quotes).",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    pool=WRITER_POOL,
    deps=[quote_features],
    description="Per market and outcome at every instant any book quoted, over every book's latest fresh quote: "
    "books, consensus mean/std, best price and book, arbitrage margin, sharp probability, retail-sharp, "
    "stalest quote age.",
)
def market_features(
    config: MarketFeaturesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.features.compute import MARKET_TABLE, compute_market_features

    with warehouse.store().connection() as con:
        compute_market_features(
            con,
            ttl=timedelta(hours=config.ttl_hours),
            sharp_books=config.sharp_books,
            **config.scope(),
        )
        metadata = _freshness_metadata(con, MARKET_TABLE)
        arbs = con.execute(
            f"SELECT count(*) FILTER (WHERE arb_margin > 0), count(*) FROM {MARKET_TABLE}"
        ).fetchall()[0]
        sample = con.execute(f"SELECT * FROM {MARKET_TABLE} ORDER BY observed_at DESC LIMIT 8").df()
    metadata["rows_with_arbitrage"] = dg.MetadataValue.int(int(arbs[0]))
    metadata["dagster/column_schema"] = _column_schema(MARKET_TABLE)
    metadata["preview"] = dg.MetadataValue.md(
        markdown_table(sample, list(sample.columns[:9]), rows=8)
    )
    return dg.MaterializeResult(metadata=metadata)


class PairFeaturesConfig(IncrementalConfig):
    ttl_hours: float = Field(
        default=24.0, description="A book's quote older than this is not used at t."
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    pool=WRITER_POOL,
    deps=[quote_features, market_features],
    description="Table `arbitrage_pair_features`: for every ordered pair of books on a 2-way market, at "
    "each instant either quoted, book A's price on one side and book B's on the other, their Σ implied "
    "and whether it is below 1. Read by the arbitrage dataset and the scanner.",
)
def pair_features(config: PairFeaturesConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from odds_pipeline.features.compute import PAIR_TABLE, compute_pair_features

    with warehouse.store().connection() as con:
        compute_pair_features(con, ttl=timedelta(hours=config.ttl_hours), **config.scope())
        metadata = _freshness_metadata(con, PAIR_TABLE)
        pairs = con.execute(
            f"SELECT count(DISTINCT (book_a, book_b)) FROM {PAIR_TABLE}"
        ).fetchone()[0]
        sample = con.execute(f"SELECT * FROM {PAIR_TABLE} ORDER BY observed_at DESC LIMIT 8").df()
    metadata["book_pairs"] = dg.MetadataValue.int(int(pairs))
    metadata["dagster/column_schema"] = _column_schema(PAIR_TABLE)
    metadata["preview"] = dg.MetadataValue.md(
        markdown_table(sample, list(sample.columns[:9]), rows=8)
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WRITER_POOL,  # reads, but must not race a writer for DuckDB's file lock
    deps=[quote_features, market_features],
    description="Every feature's name, description, dtype, entity, group, version and owner, with freshness "
    "(latest observed_at, rows, null rate). A changed definition is a new version, never an edit in place.",
)
def feature_registry(warehouse: WarehouseResource) -> dg.MaterializeResult:
    from odds_pipeline.features.compute import feature_registry_frame

    with warehouse.store().connection(read_only=True) as con:
        registry = feature_registry_frame(con)
    shown = registry[
        [
            "name",
            "group",
            "dtype",
            "version",
            "owner",
            "row_count",
            "latest_observed_at",
            "null_rate",
        ]
    ].copy()
    shown["null_rate"] = shown["null_rate"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return dg.MaterializeResult(
        metadata={
            "features": dg.MetadataValue.int(len(registry)),
            "registry": dg.MetadataValue.md(markdown_table(shown, rows=len(shown))),
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(
                        r.name, r.dtype, description=f"[{r.group} v{r.version}] {r.description}"
                    )
                    for r in registry.itertuples()
                ]
            ),
        }
    )


@dg.asset_check(
    asset=feature_registry,
    blocking=True,
    description="No feature definition changed in place: changed SQL needs a version bump recorded in FEATURE_VERSIONS.",
)
def feature_versions_recorded() -> dg.AssetCheckResult:
    from odds_pipeline.features.compute import check_feature_versions

    problems = check_feature_versions()
    return dg.AssetCheckResult(
        passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)}
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WRITER_POOL,
    deps=[quote_features, market_features],
    description="Latest value per entity key of every feature view, for serving "
    "(read with FeatureStore.get_online_features).",
)
def online_features(warehouse: WarehouseResource) -> dg.MaterializeResult:
    from odds_pipeline.features.compute import MARKET_TABLE, QUOTE_TABLE, view_specs
    from odds_pipeline.features.feature_store import FeatureStore

    specs = view_specs()
    rows: dict[str, int] = {}
    with warehouse.store().connection() as con:
        store = FeatureStore(con)
        for name in (QUOTE_TABLE, MARKET_TABLE):
            spec = specs[name]
            store.register_view(
                name,
                spec["table"],
                keys=spec["keys"],
                timestamp=spec["timestamp"],
                ingested=spec["ingested"],
                sequence=spec["sequence"],
                features=spec["features"],
            )
            rows[name] = store.materialize_online(name)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(sum(rows.values())),
            "keys_per_view": dg.MetadataValue.json(rows),
        }
    )


FEATURE_ASSETS = [
    quote_features,
    market_features,
    pair_features,
    feature_registry,
    online_features,
]
FEATURE_CHECKS = [feature_versions_recorded]
