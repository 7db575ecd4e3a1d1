"""Equity and drawdown of every strategy in one PNG, for the backtest report.

Why a picture: two strategies with the same ROI can differ wildly in how the money got
there (one long losing run, or steady growth); the curve shows it at a glance. Matplotlib's
object API only (`Figure` + `FigureCanvasAgg`): no pyplot global state, so it is safe in
threads and in a Dagster process, and needs no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from odds_pipeline.backtest.metrics import drawdown, equity_curve

__all__ = ["equity_and_drawdown_png"]


def _settled(bets: pd.DataFrame) -> pd.DataFrame:
    """Settled bets with a profit, times as naive UTC (matplotlib's dates need no zone)."""
    if bets.empty:
        return bets
    done = bets[bets["settled"].astype(bool) & bets["profit"].notna() & bets["settled_at"].notna()]
    times = pd.DatetimeIndex(pd.to_datetime(done["settled_at"], utc=True)).tz_localize(None)
    return done.assign(settled_at=times.to_numpy())


def equity_and_drawdown_png(bets: pd.DataFrame, path: str | Path, bankroll0: float) -> Path:
    """Write a PNG: equity per strategy over settlement time (top), its drawdown (bottom).

    `bets` is the backtest's bets table (strategy, settled_at, profit, settled); open bets
    are left out. Each curve starts at `bankroll0` at the first settlement of any strategy
    and steps at each of its own settlements. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _settled(bets)

    fig = Figure(figsize=(11, 7.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    fig.suptitle("Backtest: bankroll and drawdown by strategy (settled bets)")

    if done.empty:
        for ax in (ax_eq, ax_dd):
            ax.text(0.5, 0.5, "no settled bets", ha="center", va="center", transform=ax.transAxes)
    else:
        start = done["settled_at"].min()
        for strategy, rows in done.groupby("strategy", sort=True):
            rows = rows.sort_values("settled_at", kind="stable")
            equity = equity_curve(rows["profit"].to_numpy(dtype="float64"), bankroll0)
            times = np.concatenate([[start.to_datetime64()], rows["settled_at"].to_numpy()])
            label = f"{strategy} ({len(rows)} bets)"
            ax_eq.step(times, equity, where="post", label=label, linewidth=1.4)
            ax_dd.step(times, -100.0 * drawdown(equity), where="post", label=label, linewidth=1.2)
        ax_eq.axhline(bankroll0, color="grey", linewidth=0.8, linestyle="--", label="start")
        ax_eq.legend(loc="best", fontsize="small")
        ax_dd.legend(loc="lower left", fontsize="small")
        fig.autofmt_xdate()

    ax_eq.set_ylabel("bankroll")
    ax_eq.grid(True, alpha=0.3)
    ax_dd.set_ylabel("drawdown from peak (%)")
    ax_dd.set_xlabel("settled at (UTC)")
    ax_dd.grid(True, alpha=0.3)
    fig.savefig(path, format="png")
    return path
