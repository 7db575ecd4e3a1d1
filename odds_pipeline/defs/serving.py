"""Group `serving`: champion scores for upcoming events and book pairs, one commence day a time.

`win_probability_predictions` scores each h2h side with the LSTM champion at its decision
time through the point-in-time feature store (or writes the de-vigged market probability
with source `market_fallback` when there is no champion); `arbitrage_scores` scores each
book pair's latest state with the transformer champion (or the Σ-implied rule). Logic:
`odds_pipeline.scoring.predictions`. Partitions are days (UTC); re-running a day replaces it.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from odds_pipeline.training.kinds import KINDS

from .metadata import WRITER_POOL, markdown_table
from .resources import MlflowResource, WarehouseResource

GROUP = "serving"
OWNERS = ["team:odds-ml"]
# From the oldest bundled history to tomorrow (upcoming events of the live feed).
DAILY = dg.DailyPartitionsDefinition(start_date="2015-01-01", end_offset=2)


class PredictionsConfig(dg.Config):
    knowledge: str = Field(
        default="observed",
        description="observed (history: as the prices were) or ingested (live: as we knew them).",
    )
    decision_offset_hours: float = Field(
        default=1.0,
        description="Without a champion: decision time = commence - this (a champion uses its own).",
    )


def _day(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    """The partition's [start, end) in UTC."""
    start = datetime.fromisoformat(context.partition_key).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def _summary(rows: Any, score_column: str) -> dict[str, Any]:
    import numpy as np

    if rows.empty:
        return {"dagster/row_count": dg.MetadataValue.int(0)}
    values = rows[score_column].to_numpy(np.float64)
    out: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(len(rows)),
        "events": dg.MetadataValue.int(int(rows["event_id"].nunique())),
        "source": dg.MetadataValue.text(str(rows["source"].iloc[0])),
        "model_version": dg.MetadataValue.text(str(rows["model_version"].iloc[0])),
    }
    if np.isfinite(values).any():
        out[f"mean_{score_column}"] = dg.MetadataValue.float(round(float(np.nanmean(values)), 4))
    reason = rows["fallback_reason"].dropna()
    if len(reason):
        out["fallback_reason"] = dg.MetadataValue.text(str(reason.iloc[0]))
    return out


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "mlflow"},
    partitions_def=DAILY,
    pool=WRITER_POOL,
    deps=["quote_features", "market_features", "lstm_champion"],
    description="Table `predictions`: P(side wins) for every h2h side of the day's events, scored by the "
    "`odds-lstm` champion at each event's decision time (point in time: no later quote is read), "
    "beside the de-vigged market probability; source `market_fallback` with the reason when there is "
    "no champion. One row per (event, side) with model version and feature snapshot hash.",
)
def win_probability_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionsConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from dataclasses import replace

    import numpy as np

    from odds_pipeline.datasets.sequences import LstmSequenceConfig
    from odds_pipeline.scoring.predictions import champion_scorer, score_window, write_partition

    kind = KINDS["lstm"]
    start, end = _day(context)
    scorer = champion_scorer(kind.registered_model, mlflow.uri())
    default = replace(LstmSequenceConfig(), decision_offset_hours=config.decision_offset_hours)
    with warehouse.store().connection() as con:
        rows, stats = score_window(
            con,
            scorer,
            commence_from=start,
            commence_to=end,
            default_config=default,
            knowledge=config.knowledge,
            pack=kind.pack,
            partition_key=context.partition_key,
            run_id=context.run.run_id,
        )
        write_partition(con, rows, context.partition_key)
    metadata = _summary(rows, "model_probability")
    if not rows.empty:
        gap = (rows["model_probability"] - rows["market_probability"]).abs().to_numpy(np.float64)
        if np.isfinite(gap).any():
            metadata["mean_abs_model_minus_market"] = dg.MetadataValue.float(
                round(float(np.nanmean(gap)), 4)
            )
        metadata["preview"] = dg.MetadataValue.md(
            markdown_table(
                rows,
                [
                    "event_id",
                    "side",
                    "decision_time",
                    "model_probability",
                    "market_probability",
                    "source",
                    "model_version",
                ],
            )
        )
    metadata["build_stats"] = dg.MetadataValue.json(stats)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "mlflow"},
    partitions_def=DAILY,
    pool=WRITER_POOL,
    deps=["pair_features", "transformer_champion"],
    description="Table `arbitrage_scores`: for every book pair of events not yet started at the end of the "
    "day (or now, for today), the `arb-transformer` champion's P(an arbitrage window opens within the "
    "horizon) at the pair's latest instant, beside the Σ-implied rule; source `rule_fallback` when "
    "there is no champion.",
)
def arbitrage_scores(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from odds_pipeline.datasets.sequences import PairSequenceConfig
    from odds_pipeline.scoring.predictions import (
        ARBITRAGE_SCORES_SQL,
        ARBITRAGE_SCORES_TABLE,
        champion_scorer,
        score_pairs,
        write_partition,
    )

    kind = KINDS["pair"]
    _, end = _day(context)
    score_at = min(end, datetime.now(UTC))
    scorer = champion_scorer(kind.registered_model, mlflow.uri())
    with warehouse.store().connection() as con:
        rows, stats = score_pairs(
            con,
            scorer,
            score_at=score_at,
            default_config=PairSequenceConfig(max_len=32, cut_stride=64),
            pack=kind.pack,
            partition_key=context.partition_key,
            run_id=context.run.run_id,
        )
        write_partition(
            con, rows, context.partition_key, table=ARBITRAGE_SCORES_TABLE, ddl=ARBITRAGE_SCORES_SQL
        )
    metadata = _summary(rows, "score")
    metadata["scored_at_or_before"] = dg.MetadataValue.text(score_at.isoformat())
    if not rows.empty:
        metadata["pairs_with_arbitrage_now"] = dg.MetadataValue.int(
            int((rows["rule_score"] > 0).sum())
        )
        top = rows.sort_values("score", ascending=False)
        metadata["preview"] = dg.MetadataValue.md(
            markdown_table(
                top,
                ["event_id", "market", "line", "book_a", "book_b", "score", "rule_score", "source"],
            )
        )
    metadata["build_stats"] = dg.MetadataValue.json(stats)
    return dg.MaterializeResult(metadata=metadata)


SERVING_ASSETS = [win_probability_predictions, arbitrage_scores]

serving_job = dg.define_asset_job(
    name="serving",
    selection=dg.AssetSelection.assets(*SERVING_ASSETS),
    description="Score one day with the champions (or their fallbacks): predictions and arbitrage scores.",
)
