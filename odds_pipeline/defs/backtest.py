"""`backtest_report` (group `serving`): walk-forward backtests of what the pipeline produces.

Value betting with fractional Kelly on the LSTM champion's predictions (and on the market's
own probability, which should lose about the margin), flat stakes on the favourite, and
arbitrage execution on the scanner's windows with latency and rejections; settled on
`results`, no peeking. Logic: `odds_pipeline.backtest` (simulate, metrics, staking, plots).
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from .datasets import simulator_truth
from .metadata import WRITER_POOL, markdown_table
from .resources import MlflowResource, WarehouseResource

BACKTEST_EXPERIMENT = "odds-backtest"
BETS_TABLE = "backtest_bets"


class BacktestReportConfig(dg.Config):
    bankroll: float = Field(default=1000.0, description="Starting bankroll.")
    kelly_fraction: float = Field(default=0.25, description="Fraction of full Kelly staked.")
    min_edge: float = Field(default=0.02, description="Bet only when p * price - 1 >= this.")
    max_stake_share: float = Field(default=0.05, description="Largest stake as a bankroll share.")
    book_limits: dict[str, float] = Field(
        default={}, description="Per-book maximum stake (none: unlimited)."
    )
    arb_latency_seconds: float = Field(
        default=30.0, description="An arbitrage window must survive this long to be taken."
    )
    arb_rejection_probability: float = Field(
        default=0.1, description="Chance a book refuses one arbitrage leg."
    )
    n_boot: int = Field(default=2000, description="Bootstrap and permutation resamples.")
    seed: int = Field(default=7, description="Seed of the resamples and rejections.")


@dg.asset(
    group_name="serving",
    owners=["team:odds-ml"],
    kinds={"duckdb", "mlflow"},
    pool=WRITER_POOL,
    deps=["win_probability_predictions", "arbitrage_opportunities", "results"],
    description="Walk-forward backtests (no peeking) of value betting on the LSTM champion and on the "
    "market's own probability with fractional Kelly, flat stakes on the favourite and arbitrage "
    "execution on the scanner's windows: bets, turnover, ROI with a bootstrap CI, a permutation "
    "p-value against random picks, hit rate, Sharpe, drawdown, Calmar, closing-line value. Table "
    "`backtest_bets`; an equity and drawdown plot logged to MLflow; says plainly when a strategy's "
    "ROI is not significantly above zero.",
)
def backtest_report(
    context: dg.AssetExecutionContext,
    config: BacktestReportConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from odds_pipeline.backtest.plots import equity_and_drawdown_png
    from odds_pipeline.backtest.simulate import BacktestConfig, predictions_frame, run_backtest
    from odds_pipeline.paths import reports_dir
    from odds_pipeline.scoring.arbitrage import stored_windows
    from odds_pipeline.training import tracking
    from odds_pipeline.warehouse import table_exists, transaction

    bt_config = BacktestConfig(
        bankroll=config.bankroll,
        kelly_fraction=config.kelly_fraction,
        min_edge=config.min_edge,
        max_stake_share=config.max_stake_share,
        book_limits=dict(config.book_limits),
        arb_latency_seconds=config.arb_latency_seconds,
        arb_rejection_probability=config.arb_rejection_probability,
        seed=config.seed,
        n_boot=config.n_boot,
    )
    with warehouse.store().connection() as con:
        probabilities: dict[str, Any] = {}
        if table_exists(con, "predictions"):
            champion = predictions_frame(con, "model_probability", source="champion")
            if len(champion):
                probabilities["lstm_champion"] = champion
            probabilities["market"] = predictions_frame(con, "market_probability")
        if "market" in probabilities:
            # On the simulator: the true probability at the same decision times (the best a
            # model could do), as a strategy beside the others.
            truth = simulator_truth(context)
            if truth is not None:
                from odds_pipeline.datasets.sequences import oracle_probability

                base = probabilities["market"]
                oracle = base.assign(probability=oracle_probability(base, truth))
                oracle = oracle[oracle["probability"].notna()]
                if len(oracle):
                    probabilities["oracle"] = oracle
        windows = stored_windows(con)
        if not probabilities and windows is None:
            return dg.MaterializeResult(
                metadata={"status": dg.MetadataValue.text("nothing scored or scanned yet")}
            )
        result = run_backtest(con, probabilities, windows, bt_config)
        bets = result.bets
        incoming = bets  # noqa: F841  (read by DuckDB's replacement scan)
        with transaction(con):
            con.execute(f"CREATE OR REPLACE TABLE {BETS_TABLE} AS SELECT * FROM incoming")
    png = equity_and_drawdown_png(bets, reports_dir() / "backtest_equity.png", config.bankroll)
    summary = result.summary()
    with tracking.tracked_run(
        BACKTEST_EXPERIMENT,
        f"backtest {datetime.now(UTC):%Y-%m-%d %H:%M}",
        tags={tracking.DAGSTER_RUN_TAG: context.run.run_id, "dagster.asset": "backtest_report"},
        uri=mlflow.uri(),
    ) as run:
        tracking.log_params(config.model_dump())
        for strategy, figures in summary.items():
            tracking.log_metrics({f"{strategy}.{k}": v for k, v in figures.items()})
        import mlflow as mlflow_module

        mlflow_module.log_artifact(str(png), artifact_path="plots")
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(len(bets)),
        "verdicts": dg.MetadataValue.md(
            "\n".join(f"- **{s}**: {v}" for s, v in result.verdicts.items())
        ),
        "equity_plot": dg.MetadataValue.path(str(png)),
        "mlflow_run": dg.MetadataValue.url(mlflow.run_url(run)),
    }
    rows = []
    for strategy, report in result.reports.items():
        figures = report.to_dict()
        rows.append({"strategy": strategy, **figures})
        for key in ("roi", "roi_ci_low", "roi_ci_high", "sharpe_per_bet", "max_drawdown"):
            value = figures.get(key)
            if value is not None:
                metadata[f"{strategy}_{key}"] = dg.MetadataValue.float(round(float(value), 4))
        metadata[f"{strategy}_bets"] = dg.MetadataValue.int(int(figures.get("bets") or 0))
    import pandas as pd

    metadata["strategies"] = dg.MetadataValue.md(
        markdown_table(
            pd.DataFrame(rows),
            ["strategy", "bets", "turnover", "roi", "roi_ci_low", "roi_ci_high",
             "p_value_vs_random", "hit_rate", "sharpe_per_bet", "max_drawdown", "calmar",
             "mean_clv", "significant"],
            rows=10,
        )
    )  # fmt: skip
    return dg.MaterializeResult(metadata=metadata)


BACKTEST_ASSETS = [backtest_report]
