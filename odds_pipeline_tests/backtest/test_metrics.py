"""Strategy report: hand-computed figures, bootstrap and permutation sanity, edge cases, JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from odds_pipeline.backtest.metrics import (
    StrategyReport,
    drawdown,
    equity_curve,
    strategy_report,
)


def hours(*offsets: float) -> np.ndarray:
    """Bet times as datetime64, `offsets` hours after midnight of 2024-03-01 (UTC)."""
    base = np.datetime64("2024-03-01T00:00:00", "s")
    return base + (np.array(offsets) * 3600).astype("timedelta64[s]")


def three_bets(**kwargs) -> StrategyReport:
    # profits +10, -10, +10: equity 100, 110, 100, 110; two bets on day one, one on day two
    return strategy_report(
        np.array([10.0, 10.0, 20.0]),
        np.array([2.0, 3.0, 1.5]),
        np.array([True, False, True]),
        hours(10, 15, 30),
        bankroll0=100.0,
        **kwargs,
    )


def test_equity_curve_and_drawdown_hand_computed():
    equity = equity_curve(np.array([10.0, -11.0, 21.0]), 100.0)
    np.testing.assert_allclose(equity, [100.0, 110.0, 99.0, 120.0])
    np.testing.assert_allclose(drawdown(equity), [0.0, 0.0, 0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(drawdown([50.0, 40.0, 30.0, 60.0, 45.0]), [0, 0.2, 0.4, 0, 0.25])
    assert equity_curve(np.array([]), 100.0).tolist() == [100.0]


def test_roi_hit_rate_and_sharpe_hand_computed():
    report = three_bets()
    assert report.bets == 3
    assert report.turnover == pytest.approx(40.0)
    assert report.profit == pytest.approx(10.0)
    assert report.roi == pytest.approx(0.25)
    assert report.hit_rate == pytest.approx(2 / 3)
    # per-bet returns 1, -1, 0.5: mean 1/6, sample variance 13/12
    assert report.sharpe_per_bet == pytest.approx((1 / 6) / math.sqrt(13 / 12))
    # day one nets 0 on 100, day two +10 on 100: returns 0, 0.1 -> 0.05 / 0.0707
    assert report.sharpe_daily == pytest.approx(1 / math.sqrt(2))
    assert report.max_drawdown == pytest.approx(10 / 110)
    assert report.calmar == pytest.approx(0.1 / (10 / 110))
    assert math.isnan(report.mean_clv)
    assert math.isnan(report.p_value_vs_random)
    assert report.roi_ci_low <= report.roi <= report.roi_ci_high


def test_drawdown_and_calmar_from_bets():
    report = strategy_report(
        [10.0, 11.0, 21.0], [2.0, 2.0, 2.0], [True, False, True], hours(1, 2, 3), bankroll0=100.0
    )
    # equity 100, 110, 99, 120
    assert report.max_drawdown == pytest.approx(0.1)
    assert report.calmar == pytest.approx(0.2 / 0.1)


def test_no_drawdown_gives_nan_calmar():
    report = strategy_report([5.0, 5.0], [2.0, 3.0], [True, True], hours(1, 2), bankroll0=100.0)
    assert report.max_drawdown == 0.0
    assert math.isnan(report.calmar)


def test_bets_are_ordered_by_time():
    ordered = three_bets()
    shuffled = strategy_report(
        np.array([20.0, 10.0, 10.0]),
        np.array([1.5, 2.0, 3.0]),
        np.array([True, True, False]),
        hours(30, 10, 15),
        bankroll0=100.0,
    )
    assert shuffled.max_drawdown == pytest.approx(ordered.max_drawdown)
    assert shuffled.sharpe_daily == pytest.approx(ordered.sharpe_daily)


def test_mean_clv_uses_only_bets_with_a_closing_price():
    report = three_bets(closing_fair_prices=np.array([1.9, 3.3, np.nan]))
    assert report.mean_clv == pytest.approx(((2.0 / 1.9 - 1) + (3.0 / 3.3 - 1)) / 2)
    no_close = three_bets(closing_fair_prices=np.full(3, np.nan))
    assert math.isnan(no_close.mean_clv)


def test_fair_coins_at_fair_odds_are_not_significant():
    rng = np.random.default_rng(2024)
    n = 1000
    won = rng.random(n) < 0.5
    report = strategy_report(
        np.ones(n), np.full(n, 2.0), won, hours(*np.arange(n) * 6.0), bankroll0=100.0
    )
    assert report.roi_ci_low < 0 < report.roi_ci_high
    assert report.significant is False
    # 1000 bets at evens: ROI standard error is about 1 / sqrt(1000) = 0.032
    assert 0.08 < report.roi_ci_high - report.roi_ci_low < 0.16


def test_a_real_edge_is_significant():
    rng = np.random.default_rng(5)
    n = 2000
    won = rng.random(n) < 0.6  # 60% at evens: ROI 0.2
    report = strategy_report(
        np.ones(n), np.full(n, 2.0), won, hours(*np.arange(n)), bankroll0=1000.0
    )
    assert report.roi_ci_low > 0
    assert report.significant is True


def test_bootstrap_is_seeded():
    a = three_bets(seed=11)
    b = three_bets(seed=11)
    assert a == b


def pool_of_coins(n: int = 400) -> dict[str, np.ndarray]:
    return {"prices": np.full(n, 2.0), "won": np.arange(n) % 2 == 0}


def test_picking_only_winners_has_small_p_value():
    pool = pool_of_coins()
    picked = np.flatnonzero(pool["won"])[:40]
    report = strategy_report(
        np.ones(40),
        pool["prices"][picked],
        pool["won"][picked],
        hours(*range(40)),
        bankroll0=100.0,
        n_boot=500,
        random_selection_pool=pool,
    )
    assert report.p_value_vs_random == pytest.approx(1 / 501)  # no random pick does as well
    assert report.p_value_vs_random < 0.01


def test_picking_at_random_has_unremarkable_p_value():
    pool = pool_of_coins()
    picked = np.random.default_rng(3).choice(400, size=40, replace=False)
    report = strategy_report(
        np.ones(40),
        pool["prices"][picked],
        pool["won"][picked],
        hours(*range(40)),
        bankroll0=100.0,
        n_boot=500,
        random_selection_pool=pool,
    )
    assert 0.05 < report.p_value_vs_random <= 1.0


def test_pool_smaller_than_strategy_is_an_error():
    with pytest.raises(ValueError, match="fewer"):
        three_bets(random_selection_pool={"prices": [2.0, 2.0], "won": [True, False]})


@pytest.mark.parametrize("stakes", [np.array([]), np.zeros(3)], ids=["no rows", "all stakes zero"])
def test_zero_bets_give_an_empty_report(stakes):
    n = stakes.size
    report = strategy_report(
        stakes,
        np.full(n, 2.0),
        np.zeros(n, dtype=bool),
        hours(*range(n)),
        bankroll0=100.0,
        closing_fair_prices=np.full(n, 2.0),
        random_selection_pool=pool_of_coins(),
    )
    assert report.bets == 0
    assert report.turnover == 0.0
    for name in ("roi", "roi_ci_low", "roi_ci_high", "p_value_vs_random", "hit_rate"):
        assert math.isnan(getattr(report, name)), name
    assert math.isnan(report.sharpe_per_bet)
    assert math.isnan(report.calmar)
    assert report.significant is False
    json.dumps(report.to_dict(), allow_nan=False)


def test_single_bet_has_undefined_spreads():
    report = strategy_report([10.0], [2.5], [True], hours(1), bankroll0=100.0)
    assert report.roi == pytest.approx(1.5)
    assert report.roi_ci_low == report.roi_ci_high == pytest.approx(1.5)
    assert math.isnan(report.sharpe_per_bet)
    assert math.isnan(report.sharpe_daily)


def test_to_dict_is_json_safe():
    report = three_bets(closing_fair_prices=np.array([1.9, np.nan, np.nan]))
    as_dict = report.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    loaded = json.loads(text)
    assert loaded["bets"] == 3
    assert loaded["p_value_vs_random"] is None  # NaN -> None
    assert loaded["calmar"] == pytest.approx(report.calmar)
    assert isinstance(as_dict["significant"], bool)
    assert isinstance(as_dict["bets"], int)
    assert set(as_dict) == set(StrategyReport.__dataclass_fields__)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prices": [2.0, 1.0]}, "1.0"),
        ({"stakes": [1.0, -2.0]}, "-2.0"),
        ({"stakes": [1.0, np.nan]}, "nan"),
        ({"won": [1, 2]}, "2.0"),
        ({"prices": [2.0, 2.0, 2.0]}, "equal length"),
        ({"bankroll0": 0.0}, "bankroll0"),
        ({"closing_fair_prices": [2.0, 0.5]}, "0.5"),
        ({"times": np.array(["2024-01-01", "NaT"], dtype="datetime64[s]")}, "NaT"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, fragment):
    args = {
        "stakes": [1.0, 1.0],
        "prices": [2.0, 2.0],
        "won": [True, False],
        "times": hours(1, 2),
        "bankroll0": 100.0,
    }
    args.update(kwargs)
    positional = [args.pop(name) for name in ("stakes", "prices", "won", "times")]
    with pytest.raises(ValueError) as info:
        strategy_report(*positional, **args)
    assert fragment in str(info.value)
