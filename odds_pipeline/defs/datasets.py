"""Group `datasets`: the two models' sequence datasets, built through the feature store.

Logic lives in `odds_pipeline.datasets.sequences`; these assets build, split by commence time, save
under ``$ODDS_PIPELINE_HOME/datasets/NAME-HASH/`` (named by content, so a rebuild of the same data
is a no-op and a changed dataset never overwrites an older one) and report the manifest.
The training assets read the exact folder the latest materialization recorded.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from .metadata import WRITER_POOL, data_failure
from .resources import WarehouseResource

GROUP = "datasets"
OWNERS = ["team:odds-ml"]
# Everything the builders read in SQL, so lineage and staleness are right.
FEATURE_DEPS = ["quote_features", "market_features", "events", "results"]
SPLIT_FIELDS = {"split_fractions", "split_cuts", "split_by"}


class _SplitConfig(dg.Config):
    split_fractions: list[float] = Field(
        default=[0.7, 0.15, 0.15],
        description="Train / validation / test shares of the events, in commence-time order.",
    )
    split_cuts: list[str] = Field(
        default=[],
        description="Instead of fractions: one date (train | test) or two (train | validation | "
        "test), e.g. ['2021-07-01', '2021-08-01'] to train up to 2020/21.",
    )
    split_by: str = Field(
        default="league",
        description="league: each league split by its own commence order (every window holds "
        "every league); global: one commence order over all samples.",
    )


class LstmSequencesConfig(_SplitConfig):
    lookback_hours: float = Field(default=72.0, description="Window before the decision time.")
    steps: int = Field(default=24, description="Equally spaced steps over the lookback.")
    decision_offset_hours: float = Field(
        default=1.0, description="Decision time = commence - this (use 0 for SBR closing lines)."
    )
    ttl_hours: float | None = Field(
        default=24.0, description="Values older than this are missing (None: no limit)."
    )
    fresh_only: bool = Field(
        default=True, description="A step is real only if the market moved within its interval."
    )
    knowledge: str = Field(
        default="observed", description="observed (bulk history) or ingested (as known then)."
    )
    sides: list[str] = Field(default=["home", "away"], description="h2h sides to sample.")
    leagues: list[str] = Field(default=[], description="Only these leagues (empty: all).")
    oracle: bool = Field(
        default=True,
        description="Add the simulator's true probability (oracle baseline) to the meta.",
    )


class PairSequencesConfig(_SplitConfig):
    # max_len and cut_stride are sized for `make run` on a 2-core CPU (the library's defaults
    # are 64 and 32: about 1.6x the samples, each twice as long); raise them in the Launchpad.
    max_len: int = Field(default=32, description="Longest sequence (most recent instants).")
    horizon_minutes: float = Field(
        default=30.0, description="arb_ahead: a window opens within this after the cut."
    )
    window_hours: float | None = Field(
        default=24.0, description="Instants older than this before the cut are dropped."
    )
    min_len: int = Field(default=8, description="Fewest instants in a sample.")
    cut_stride: int = Field(default=64, description="Instants between two cuts of a pair.")
    markets: list[str] = Field(default=["h2h", "spreads", "totals"], description="Markets to pair.")
    max_book_pairs: int = Field(default=10, description="Most-quoted book pairs to keep.")
    slope_steps: int = Field(default=8, description="Steps in the Σ-implied slope rule.")
    knowledge: str = Field(default="observed", description="observed or ingested.")


@contextmanager
def _needs_features(name: str) -> Iterator[None]:
    """A warehouse without feature tables is an ordering problem an engineer can fix."""
    import duckdb

    try:
        yield
    except duckdb.CatalogException as exc:
        raise data_failure(
            f"{name}: a table is missing ({exc}); materialize the ingestion and features groups "
            "(quote_features, market_features, pair_features) first"
        ) from exc


def _dataclass_config(cls: type, values: dict[str, Any]) -> Any:
    from odds_pipeline.datasets.sequences import config_from_mapping

    try:
        return config_from_mapping(cls, values)
    except ValueError as exc:
        raise data_failure(f"invalid dataset config: {exc}") from exc


def simulator_truth(context: dg.AssetExecutionContext) -> Any:
    """The latent truth of the simulated market in the store, regenerated from its config.

    The simulator is deterministic for a config, so the config of the latest
    `simulated_market` materialization reproduces exactly the truth behind those quotes.
    """
    from odds_pipeline.ingestion.sources import simulator

    event = context.instance.get_latest_materialization_event(dg.AssetKey("simulated_market"))
    if event is None:
        return None
    run = context.instance.get_run_by_id(event.run_id)
    ops = (run.run_config or {}).get("ops", {}) if run is not None else {}
    values = dict((ops.get("simulated_market") or {}).get("config") or {})
    try:
        from .ingestion import SimulatedMarketConfig

        config = simulator.config_from_mapping(SimulatedMarketConfig(**values).simulator_values())
        return simulator.simulate_truth(config)
    except Exception as exc:  # an oracle is a bonus, never a reason to fail the dataset
        context.log.warning(f"no oracle: could not regenerate the simulator truth ({exc})")
        return None


def _split(dataset: Any, config: _SplitConfig, leagues: Any = None) -> Any:
    """Time-ordered train/validation/test, per league by default (see ``split_by``).

    Sources cover different years (EPL 2021-23, the simulator 2024, ...): one global order
    would train on one league and test on another. Within a league the order is strict.
    """
    import numpy as np

    from odds_pipeline.datasets.sequences import assign_splits

    if config.split_by not in ("league", "global"):
        raise data_failure(f"split_by must be 'league' or 'global', got {config.split_by!r}")
    try:
        if config.split_by == "global" or leagues is None or len(dataset) == 0:
            return assign_splits(dataset, config.split_fractions, cuts=config.split_cuts or None)
        labels = np.asarray(leagues, dtype=object)
        split = np.empty(len(dataset), dtype=object)
        for league in sorted({str(v) for v in labels}):
            rows = np.flatnonzero(labels.astype(str) == league)
            part = assign_splits(
                dataset.subset(rows), config.split_fractions, cuts=config.split_cuts or None
            )
            split[rows] = part.meta["split"].to_numpy(dtype=object)
    except ValueError as exc:
        raise data_failure(f"invalid split config: {exc}") from exc
    out = dataset.subset(np.arange(len(dataset)))
    out.meta["split"] = split
    return out


def _event_leagues(con: Any, event_ids: Any) -> Any:
    """League of each sample's event (pair samples carry no league of their own)."""
    import pandas as pd

    leagues = con.execute("SELECT event_id, league FROM events").df()
    mapping = dict(zip(leagues["event_id"], leagues["league"].fillna("unknown"), strict=True))
    return pd.Series(event_ids, dtype=object).map(mapping).fillna("unknown").to_numpy(object)


def _report(dataset: Any, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Save the dataset (named by hash) and describe it; an empty window fails clearly."""
    from odds_pipeline.training.evaluation import table_to_markdown

    manifest = dataset.manifest()
    splits = manifest.get("splits", {})
    empty = [s for s, v in splits.items() if v["rows"] == 0]
    if len(dataset) == 0 or empty:
        raise data_failure(
            f"{dataset.name}: no rows in {empty or 'the dataset'}; the warehouse may lack "
            "results or features for these sources, or the split config leaves a window empty",
            build_stats=dg.MetadataValue.json(manifest.get("build_stats", {})),
            splits=dg.MetadataValue.json(splits),
        )
    # Compressed, as before lean training (the pipeline trains from memory; padded pair arrays
    # are mostly zeros): memory-mapped .npy files are for the benchmarks' large builds.
    path = dataset.save(compress=True)
    table: dict[str, list[Any]] = {
        "split": [],
        "rows": [],
        "events": [],
        "commence_min": [],
        "commence_max": [],
    }
    for label in manifest["positives"]:
        table[f"{label} positives"] = []
    for split, info in splits.items():
        table["split"].append(split)
        for key in ("rows", "events", "commence_min", "commence_max"):
            table[key].append(info[key])
        for label, n in info["positives"].items():
            table[f"{label} positives"].append(n)
    context.log.info(f"saved {dataset.name} ({len(dataset)} rows) to {path}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(dataset)),
            "path": dg.MetadataValue.path(str(path)),
            "content_hash": dg.MetadataValue.text(manifest["content_hash"]),
            "positives": dg.MetadataValue.json(manifest["positives"]),
            "commence_from": dg.MetadataValue.text(str(manifest["commence_min"])),
            "commence_to": dg.MetadataValue.text(str(manifest["commence_max"])),
            "splits": dg.MetadataValue.md(table_to_markdown(table)),
            "features": dg.MetadataValue.json(manifest["feature_names"]),
            "seq_len": dg.MetadataValue.json(manifest["seq_len"]),
            "manifest": dg.MetadataValue.json(manifest),
        },
        data_version=dg.DataVersion(manifest["content_hash"][:16]),
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "numpy"},
    deps=FEATURE_DEPS,
    # A read of several seconds would block a DuckDB writer in another process past its
    # retries: the pool serialises it with the writers.
    pool=WRITER_POOL,
    description="One sample per (event, side) of h2h: feature-store values at equally spaced steps before "
    "the decision time, a mask for steps without data, label = that side won; the de-vigged market "
    "probability at decision time (and the simulator's true probability) as baselines. Split by "
    "commence time; saved under $ODDS_PIPELINE_HOME/datasets/ by content hash.",
)
def lstm_sequences(
    context: dg.AssetExecutionContext, config: LstmSequencesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.datasets.sequences import LstmSequenceConfig, build_lstm_sequences

    values = config.model_dump(exclude={*SPLIT_FIELDS, "oracle"})
    values["leagues"] = values["leagues"] or None
    ds_config = _dataclass_config(LstmSequenceConfig, values)
    truth = simulator_truth(context) if config.oracle else None
    with _needs_features("lstm_sequences"), warehouse.store().connection(read_only=True) as con:
        dataset = build_lstm_sequences(con, ds_config, truth=truth)
    return _report(_split(dataset, config, dataset.meta.get("league")), context)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "numpy", "duckdb"},
    deps=["pair_features", "events"],
    pool=WRITER_POOL,
    description="One sample per (event, market, line, pair of books, direction, cut) from "
    "`pair_features`: the two books' "
    "prices for complementary outcomes aligned in time, variable length with a mask; labels arb_now "
    "(Σ implied < 1 in the window) and arb_ahead (a window opens within the horizon after the cut, the "
    "target); classical rule baselines in the meta. Split by commence time; saved by content hash.",
)
def arbitrage_pair_sequences(
    context: dg.AssetExecutionContext, config: PairSequencesConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from odds_pipeline.datasets.sequences import PairSequenceConfig, build_arbitrage_pair_sequences

    values = config.model_dump(exclude=SPLIT_FIELDS)
    ds_config = _dataclass_config(PairSequenceConfig, values)
    with (
        _needs_features("arbitrage_pair_sequences"),
        warehouse.store().connection(read_only=True) as con,
    ):
        dataset = build_arbitrage_pair_sequences(con, ds_config)
        leagues = _event_leagues(con, dataset.meta["event_id"])
    return _report(_split(dataset, config, leagues), context)


def load_materialized_dataset(
    context: dg.AssetExecutionContext, key: dg.AssetKey
) -> tuple[Any, str]:
    """The dataset folder recorded by ``key``'s latest materialization, loaded and verified."""
    from pathlib import Path

    from odds_pipeline.datasets.sequences import load_dataset

    event = context.instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event is not None else None
    entry = materialization.metadata.get("path") if materialization is not None else None
    if entry is None:
        raise data_failure(
            f"{key.to_user_string()} has not been materialized yet: materialize it first"
        )
    path = str(entry.value)
    if not Path(path).is_dir():
        raise data_failure(
            f"{key.to_user_string()}'s files are gone ({path}); re-materialize it",
            path=dg.MetadataValue.path(path),
        )
    try:
        return load_dataset(path), path
    except (OSError, ValueError, KeyError) as exc:
        raise data_failure(
            f"{key.to_user_string()} at {path} cannot be read ({exc}); re-materialize it",
            path=dg.MetadataValue.path(path),
        ) from exc


DATASET_ASSETS = [lstm_sequences, arbitrage_pair_sequences]
