"""Report figures for a strategy's settled bets: ROI with uncertainty, risk, and market-beating.

A backtest's ROI alone says little: a few hundred bets at odds around 2 give an ROI whose
noise is several percent, so the report carries a bootstrap interval (is it distinguishable
from zero?), a permutation p-value against picking bets at random from the same candidates
(is the selection, not the market, making money?), drawdown (could the bankroll survive it?)
and closing-line value (did we beat the price the market settled on, a less noisy signal
than results?). Inputs are numpy arrays, one entry per bet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

CI_LEVEL = 0.95
# Bootstrap index matrices are drawn in chunks of about this many entries to bound memory.
_BOOT_CHUNK_ENTRIES = 2_000_000
# Random ROIs this close to the strategy's count as ties (same bets summed in another order).
_TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class StrategyReport:
    """Headline figures of one strategy's bets; NaN where a figure is undefined.

    `sharpe_daily` is the mean over the standard deviation of daily returns (a day's profit
    over the equity at the start of that day, days with at least one bet), NOT annualised:
    multiply by sqrt(betting days per year) for an annual figure.
    """

    bets: int
    turnover: float
    profit: float
    roi: float
    roi_ci_low: float
    roi_ci_high: float
    p_value_vs_random: float
    hit_rate: float
    sharpe_per_bet: float
    sharpe_daily: float
    max_drawdown: float
    calmar: float
    mean_clv: float
    significant: bool

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """Plain Python values, NaN/inf as None, so `json.dumps(..., allow_nan=False)` works."""
        out: dict[str, float | int | bool | None] = {}
        for key, value in asdict(self).items():
            if isinstance(value, bool | np.bool_):
                out[key] = bool(value)
            elif isinstance(value, int | np.integer):
                out[key] = int(value)
            else:
                number = float(value)
                out[key] = number if math.isfinite(number) else None
        return out


def equity_curve(profit: ArrayLike, bankroll0: float) -> np.ndarray:
    """Bankroll before any bet and after each one: ``[bankroll0, bankroll0 + cumsum(profit)]``."""
    profit_arr = np.asarray(profit, dtype="float64").reshape(-1)
    return np.concatenate([[float(bankroll0)], float(bankroll0) + np.cumsum(profit_arr)])


def drawdown(equity: ArrayLike) -> np.ndarray:
    """Share of the running peak lost at each point (0 at a new high); NaN while the peak <= 0."""
    equity_arr = np.asarray(equity, dtype="float64").reshape(-1)
    if equity_arr.size == 0:
        return equity_arr.copy()
    peak = np.maximum.accumulate(equity_arr)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (peak - equity_arr) / peak, np.nan)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when undefined (no data, zero or NaN spread)."""
    if not math.isfinite(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def _sharpe(values: np.ndarray) -> float:
    if values.size < 2:
        return math.nan
    return _ratio(float(values.mean()), float(values.std(ddof=1)))


def _bet_arrays(
    stakes: ArrayLike,
    prices: ArrayLike,
    won: ArrayLike,
    name: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated 1-D stakes (>= 0), prices (> 1) and outcomes (bool) of equal length."""
    stake_arr = np.asarray(stakes, dtype="float64").reshape(-1)
    price_arr = np.asarray(prices, dtype="float64").reshape(-1)
    won_raw = np.asarray(won).reshape(-1)
    if not (stake_arr.size == price_arr.size == won_raw.size):
        raise ValueError(
            f"{name}: stakes, prices and won must have equal length, got "
            f"{stake_arr.size}, {price_arr.size}, {won_raw.size}"
        )
    bad = ~np.isfinite(stake_arr) | (stake_arr < 0)
    if bad.any():
        raise ValueError(f"{name}: stakes must be finite and >= 0, got {stake_arr[bad][0]!r}")
    bad = ~np.isfinite(price_arr) | (price_arr <= 1)
    if bad.any():
        raise ValueError(f"{name}: prices must be decimal odds > 1, got {price_arr[bad][0]!r}")
    if won_raw.dtype != bool:
        won_num = won_raw.astype("float64")
        bad = (won_num != 0) & (won_num != 1)
        if bad.any():
            raise ValueError(f"{name}: won must be boolean (or 0/1), got {won_num[bad][0]!r}")
    return stake_arr, price_arr, won_raw.astype(bool)


def _bootstrap_roi_ci(
    stakes: np.ndarray, profit: np.ndarray, n_boot: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of ROI over bets resampled with replacement."""
    n = stakes.size
    rois = np.empty(n_boot)
    chunk = max(1, _BOOT_CHUNK_ENTRIES // n)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(size, n))
        rois[start : start + size] = profit[idx].sum(axis=1) / stakes[idx].sum(axis=1)
    tail = (1 - CI_LEVEL) / 2
    low, high = np.quantile(rois, [tail, 1 - tail])
    return float(low), float(high)


def _p_value_vs_random(
    stakes: np.ndarray,
    roi: float,
    pool: Mapping[str, ArrayLike],
    n_draws: int,
    rng: np.random.Generator,
) -> float:
    """Share of random same-size picks from the pool, staked alike, with ROI >= the strategy's."""
    missing = {"prices", "won"} - set(pool)
    if missing:
        raise ValueError(f"random_selection_pool needs arrays {sorted(missing)}")
    pool_prices = np.asarray(pool["prices"], dtype="float64").reshape(-1)
    _, pool_prices, pool_won = _bet_arrays(
        np.ones_like(pool_prices), pool_prices, pool["won"], "random_selection_pool"
    )
    size = stakes.size
    if pool_prices.size < size:
        raise ValueError(
            f"random_selection_pool has {pool_prices.size} bets, fewer than the strategy's {size}"
        )
    pool_return = np.where(pool_won, pool_prices - 1.0, -1.0)
    turnover = stakes.sum()
    at_least = 0
    for _ in range(n_draws):
        picked = rng.choice(pool_prices.size, size=size, replace=False)  # random order too
        random_roi = float(stakes @ pool_return[picked]) / turnover
        at_least += random_roi >= roi - _TIE_TOLERANCE
    return (at_least + 1) / (n_draws + 1)


def _sharpe_daily(profit: np.ndarray, times: pd.DatetimeIndex, equity: np.ndarray) -> float:
    """Sharpe of daily returns: a day's profit over the equity at its first bet (UTC days)."""
    days = np.asarray(times.floor("D").asi8)
    first = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    day_profit = np.add.reduceat(profit, first)
    start_equity = equity[first]
    alive = start_equity > 0  # after ruin a return on the bankroll is undefined
    return _sharpe(day_profit[alive] / start_equity[alive])


def _empty_report() -> StrategyReport:
    nan = math.nan
    return StrategyReport(
        bets=0,
        turnover=0.0,
        profit=0.0,
        roi=nan,
        roi_ci_low=nan,
        roi_ci_high=nan,
        p_value_vs_random=nan,
        hit_rate=nan,
        sharpe_per_bet=nan,
        sharpe_daily=nan,
        max_drawdown=0.0,
        calmar=nan,
        mean_clv=nan,
        significant=False,
    )


def strategy_report(
    stakes: ArrayLike,
    prices: ArrayLike,
    won: ArrayLike,
    times: ArrayLike,
    *,
    bankroll0: float,
    closing_fair_prices: ArrayLike | None = None,
    n_boot: int = 2000,
    seed: int = 7,
    random_selection_pool: Mapping[str, ArrayLike] | None = None,
) -> StrategyReport:
    """Figures for settled bets (stake, decimal price, won?, time), deterministic given `seed`.

    Rows with a zero stake are not bets and are dropped; bets are ordered by `times` (stable,
    naive times read as UTC) for the equity curve. `closing_fair_prices` (NaN where unknown)
    gives closing-line value ``price / closing_fair_price - 1``. `random_selection_pool`
    (``{"prices": ..., "won": ...}`` of every candidate the strategy could have picked) gives
    a permutation p-value from `n_boot` random picks; without it the p-value is NaN.
    """
    bankroll0 = float(bankroll0)
    if not (math.isfinite(bankroll0) and bankroll0 > 0):
        raise ValueError(f"bankroll0 must be finite and > 0, got {bankroll0!r}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    n_boot = int(n_boot)
    stake_arr, price_arr, won_arr = _bet_arrays(stakes, prices, won, "strategy_report")
    time_index = pd.DatetimeIndex(pd.to_datetime(np.asarray(times).reshape(-1), utc=True))
    if time_index.size != stake_arr.size:
        raise ValueError(f"times has {time_index.size} entries for {stake_arr.size} bets")
    if time_index.isna().any():
        raise ValueError("times must not contain missing values (NaT)")
    if closing_fair_prices is None:
        closing = np.full(stake_arr.size, np.nan)
    else:
        closing = np.asarray(closing_fair_prices, dtype="float64").reshape(-1)
        if closing.size != stake_arr.size:
            raise ValueError(f"closing_fair_prices has {closing.size} entries for {stake_arr.size}")
        bad = ~np.isnan(closing) & ~(closing > 1)
        if bad.any():
            raise ValueError(f"closing_fair_prices must be > 1 or NaN, got {closing[bad][0]!r}")

    placed = stake_arr > 0
    order = np.argsort(time_index.asi8[placed], kind="stable")
    stake_arr = stake_arr[placed][order]
    price_arr = price_arr[placed][order]
    won_arr = won_arr[placed][order]
    closing = closing[placed][order]
    time_index = time_index[placed][order]
    if stake_arr.size == 0:
        return _empty_report()

    profit = np.where(won_arr, stake_arr * (price_arr - 1.0), -stake_arr)
    turnover = float(stake_arr.sum())
    total_profit = float(profit.sum())
    roi = total_profit / turnover

    boot_rng, pool_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    ci_low, ci_high = _bootstrap_roi_ci(stake_arr, profit, n_boot, boot_rng)
    p_value = (
        math.nan
        if random_selection_pool is None
        else _p_value_vs_random(stake_arr, roi, random_selection_pool, n_boot, pool_rng)
    )

    equity = equity_curve(profit, bankroll0)
    max_dd = float(np.nanmax(drawdown(equity)))
    total_return = total_profit / bankroll0
    calmar = total_return / max_dd if max_dd > 0 else math.nan

    known_close = ~np.isnan(closing)
    clv = price_arr[known_close] / closing[known_close] - 1.0
    mean_clv = float(clv.mean()) if clv.size else math.nan

    return StrategyReport(
        bets=int(stake_arr.size),
        turnover=turnover,
        profit=total_profit,
        roi=roi,
        roi_ci_low=ci_low,
        roi_ci_high=ci_high,
        p_value_vs_random=p_value,
        hit_rate=float(won_arr.mean()),
        sharpe_per_bet=_sharpe(profit / stake_arr),
        sharpe_daily=_sharpe_daily(profit, time_index, equity),
        max_drawdown=max_dd,
        calmar=calmar,
        mean_clv=mean_clv,
        significant=bool(ci_low > 0),
    )
