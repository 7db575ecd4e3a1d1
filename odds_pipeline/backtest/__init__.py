"""Backtests: staking (Kelly for decimal odds), walk-forward bet simulation, strategy reports.

Nothing here imports Dagster; the `backtest_report` asset in `defs/serving.py` calls it.
"""
