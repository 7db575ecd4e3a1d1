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

from .metadata import DAILY, WRITER_POOL, markdown_table
from .resources import MlflowResource, WarehouseResource

GROUP = "serving"
OWNERS = ["team:odds-ml"]


class PredictionsConfig(dg.Config):
    knowledge: str = Field(
        default="observed",
        description="observed (history: as the prices were) or ingested (live: as we knew them).",
    )
    decision_offset_hours: float = Field(
        default=1.0,
        description="Without a champion: decision time = commence - this (a champion uses its own).",
    )


def _day(partition_key: str) -> tuple[datetime, datetime]:
    """The partition's [start, end) in UTC."""
    start = datetime.fromisoformat(partition_key).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)


def _combined(parts: list[Any], stats: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Rows of every day of the run together; a single day's build stats as they were."""
    import pandas as pd

    rows = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return rows, next(iter(stats.values())) if len(stats) == 1 else stats


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
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WRITER_POOL,
    deps=["quote_features", "market_features", "events", "lstm_champion"],
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
    scorer = champion_scorer(kind.registered_model, mlflow.uri())
    default = replace(LstmSequenceConfig(), decision_offset_hours=config.decision_offset_hours)
    parts, stats = [], {}
    with warehouse.store().connection() as con:
        for day in context.partition_keys:  # one day, or a backfill's range in one run
            start, end = _day(day)
            rows, stats[day] = score_window(
                con,
                scorer,
                commence_from=start,
                commence_to=end,
                default_config=default,
                knowledge=config.knowledge,
                pack=kind.pack,
                partition_key=day,
                run_id=context.run.run_id,
            )
            write_partition(con, rows, day)
            parts.append(rows)
    rows, stats = _combined(parts, stats)
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
    backfill_policy=dg.BackfillPolicy.single_run(),
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
    scorer = champion_scorer(kind.registered_model, mlflow.uri())
    parts, stats = [], {}
    with warehouse.store().connection() as con:
        for day in context.partition_keys:  # one day, or a backfill's range in one run
            score_at = min(_day(day)[1], datetime.now(UTC))
            rows, stats[day] = score_pairs(
                con,
                scorer,
                score_at=score_at,
                default_config=PairSequenceConfig(max_len=32, cut_stride=64),
                pack=kind.pack,
                partition_key=day,
                run_id=context.run.run_id,
            )
            write_partition(con, rows, day, table=ARBITRAGE_SCORES_TABLE, ddl=ARBITRAGE_SCORES_SQL)
            parts.append(rows)
    rows, stats = _combined(parts, stats)
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


class ArbitrageScanConfig(dg.Config):
    staleness_seconds: float = Field(
        default=900.0,
        description="A book's quote counts at an instant only if observed within this many seconds "
        "(set it above the feed's polling interval: change logs sample every 5-15 min).",
    )
    bankroll: float = Field(default=1000.0, description="Bankroll the stakes are sized for.")
    default_increment: float = Field(default=1.0, description="Stake rounding step of every book.")
    commission: dict[str, float] = Field(
        default={"betfair_ex": 0.02},
        description="Per-book commission on winnings (e.g. an exchange).",
    )
    stake_limits: dict[str, float] = Field(
        default={}, description="Per-book maximum stake (none: unlimited)."
    )
    max_margin: float = Field(
        default=0.05, description="Margins above this are kept apart as suspicious."
    )
    markets: list[str] = Field(default=["h2h", "spreads", "totals"], description="Markets to scan.")
    alert_new_windows: bool = Field(
        default=True,
        description="Send each new actionable window (not in the previous scan) to the alert sink.",
    )
    alert_max_age_minutes: float = Field(
        default=60.0,
        description="Only windows opened this recently (before the newest quote) are alerted.",
    )

    def scan_config(self) -> Any:
        from odds_pipeline.scoring.arbitrage import ScanConfig

        return ScanConfig(
            staleness_seconds=self.staleness_seconds,
            bankroll=self.bankroll,
            default_increment=self.default_increment,
            commission=dict(self.commission),
            stake_limits=dict(self.stake_limits),
            max_margin=self.max_margin,
            markets=tuple(self.markets),
        )


MAX_ALERTS_PER_RUN = 20


def _alert_new_windows(context: dg.AssetExecutionContext, new: list[dict[str, Any]]) -> int:
    """Each new window to the alert sink with its stakes; never fails the scan."""
    from odds_pipeline.monitoring.alerts import arbitrage_alert, sink_from_env
    from odds_pipeline.scoring.arbitrage import legs_of

    if not new:
        return 0
    try:
        sink = sink_from_env()
    except ValueError as exc:  # a malformed webhook URL: say so, do not fail the scan
        context.log.warning(f"arbitrage alerts not sent: {exc}")
        return 0
    sent = sum(
        1
        for row in new[:MAX_ALERTS_PER_RUN]
        if sink.send(arbitrage_alert(row, legs_of(row))).delivered
    )
    if len(new) > MAX_ALERTS_PER_RUN:
        context.log.warning(f"{len(new) - MAX_ALERTS_PER_RUN} more new windows not alerted")
    return sent


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WRITER_POOL,
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["odds_quotes", "arbitrage_scores"],
    description="Table `arbitrage_windows`, one partition per UTC day a window opened (today's scans "
    "up to now; a past day follows its windows 6 h past midnight): arbitrage over synchronous quotes only (every leg within the "
    "staleness window, withdrawals end a quote), 2/3-way h2h, spreads and totals at one line, after "
    "commission; stakes for the bankroll rounded and capped per book with the guaranteed profit after "
    "rounding; windows merged over time (opened, closed, duration, best margin). Suspicious ones (margin "
    "above the cap, a stale or withdrawn leg, one leg, unprofitable after rounding) are kept apart with "
    "the reason. Each window carries the transformer champion's arb_ahead score where one was scored.",
)
def arbitrage_opportunities(
    context: dg.AssetExecutionContext, config: ArbitrageScanConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from collections import Counter

    import numpy as np
    import pandas as pd

    from odds_pipeline.scoring.arbitrage import (
        days_to_scan,
        feed_now,
        new_actionable_windows,
        scan_day,
        window_keys,
        write_windows,
    )
    from odds_pipeline.scoring.predictions import ARBITRAGE_SCORES_TABLE

    try:
        scan_config = config.scan_config()
    except ValueError as exc:
        raise dg.Failure(description=f"invalid scan config: {exc}", allow_retries=False) from exc
    max_age = timedelta(minutes=config.alert_max_age_minutes)
    days = context.partition_keys  # one day, or a backfill's range in one run
    single = len(days) == 1
    now = datetime.now(UTC)
    parts, reasons, read, bad_price, new = [], Counter(), 0, 0, []
    with warehouse.store().connection() as con:
        data_now = feed_now(con)
        # A single-day run shortly after midnight also closes yesterday's open windows.
        scanned = days_to_scan(days[0], now) if single else list(days)
        for day in scanned:
            before = window_keys(con, day)
            result = scan_day(con, scan_config, day, now=now)
            written = write_windows(con, result.windows, ARBITRAGE_SCORES_TABLE, day=day)
            reasons.update(result.suspicious_by_reason())
            read += result.quotes_read
            bad_price += result.quotes_ignored_bad_price
            # A range backfill re-finds old windows: alerts are for single-day runs, and
            # only for windows opened within the max age of the newest quote.
            if config.alert_new_windows and single:
                new += new_actionable_windows(written, before, max_age, data_now)
            if day in days:
                parts.append(written)
    alerted = _alert_new_windows(context, new)
    written = pd.concat(parts, ignore_index=True)
    actionable = written[written["status"] == "actionable"]
    durations = actionable["duration_seconds"].dropna().to_numpy(np.float64)
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(len(written)),
        "actionable_windows": dg.MetadataValue.int(len(actionable)),
        "suspicious_windows": dg.MetadataValue.int(len(written) - len(actionable)),
        "suspicious_by_reason": dg.MetadataValue.json(dict(reasons)),
        "quotes_read": dg.MetadataValue.int(int(read)),
        "quotes_ignored_bad_price": dg.MetadataValue.int(int(bad_price)),
        "days": dg.MetadataValue.int(len(days)),
        "days_rescanned": dg.MetadataValue.text(", ".join(scanned)),
        "with_champion_score": dg.MetadataValue.int(int(written["arb_ahead_score"].notna().sum())),
        "alerts_sent": dg.MetadataValue.int(alerted),
    }
    if len(durations):
        metadata["duration_seconds"] = dg.MetadataValue.json(
            {q: round(float(np.quantile(durations, v)), 1)
             for q, v in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("max", 1.0))}
        )  # fmt: skip
        metadata["median_margin"] = dg.MetadataValue.float(
            round(float(actionable["best_margin"].median()), 5)
        )
        metadata["total_guaranteed_profit"] = dg.MetadataValue.float(
            round(float(actionable["guaranteed_profit"].sum()), 2)
        )
    metadata["preview"] = dg.MetadataValue.md(
        markdown_table(
            written.sort_values(["status", "best_margin"], ascending=[True, False]),
            ["event_id", "market", "line", "opened_at", "duration_seconds", "best_margin",
             "guaranteed_profit", "status", "reason", "arb_ahead_score"],
            rows=15,
        )
    )  # fmt: skip
    return dg.MaterializeResult(metadata=metadata)


SERVING_ASSETS = [win_probability_predictions, arbitrage_scores]
SCAN_ASSETS = [arbitrage_opportunities]

serving_job = dg.define_asset_job(
    name="serving",
    selection=dg.AssetSelection.assets(*SERVING_ASSETS),
    description="Score one day with the champions (or their fallbacks): predictions and arbitrage scores.",
)
