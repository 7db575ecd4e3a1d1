"""Walk-forward backtest: no peeking, edge and caps, baselines, oracle, arbitrage, verdicts, PNG.

Every case builds its own tiny in-memory DuckDB: a `market_features`-like table (only the
columns the backtest reads), `results` and sometimes `events`.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import duckdb
import numpy as np
import pandas as pd
import pytest

from odds_pipeline.backtest.metrics import StrategyReport
from odds_pipeline.backtest.plots import equity_and_drawdown_png
from odds_pipeline.backtest.simulate import (
    BET_COLUMNS,
    BacktestConfig,
    arbitrage_bets,
    favourite_flat,
    market_proportional,
    run_backtest,
    value_bets,
    verdict,
)
from odds_pipeline.backtest.staking import StakingError, kelly_stakes
from odds_pipeline.scoring.arbitrage import ScanConfig, scan_frame

T0 = pd.Timestamp("2024-03-01 12:00", tz="UTC")


def at(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def make_con(
    features: list[dict] | pd.DataFrame,
    results: list[dict] | pd.DataFrame = (),
    events: list[dict] | pd.DataFrame | None = None,
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE market_features (event_id VARCHAR, market VARCHAR, outcome VARCHAR, "
        "point DOUBLE, observed_at TIMESTAMPTZ, best_price DOUBLE, best_book VARCHAR, "
        "sharp_prob DOUBLE)"
    )
    con.execute(
        "CREATE TABLE results (event_id VARCHAR, home_score DOUBLE, away_score DOUBLE, "
        "resolved_at TIMESTAMPTZ)"
    )
    mf = pd.DataFrame(features)
    if len(mf):
        mf = mf.assign(market=mf.get("market", "h2h"), point=None)
        mf["sharp_prob"] = mf.get("sharp_prob")
        con.register("mf_in", mf)
        con.execute(
            "INSERT INTO market_features SELECT event_id, market, outcome, point, observed_at, "
            "best_price, best_book, sharp_prob FROM mf_in"
        )
    if len(results):
        con.register("res_in", pd.DataFrame(results))
        con.execute(
            "INSERT INTO results SELECT event_id, home_score, away_score, resolved_at FROM res_in"
        )
    if events is not None:
        con.register("ev_in", pd.DataFrame(events))
        con.execute("CREATE TABLE events (event_id VARCHAR, commence_time TIMESTAMPTZ)")
        con.execute("INSERT INTO events SELECT event_id, commence_time FROM ev_in")
    return con


def quote(event, outcome, price, t, book="b1", sharp_prob=None) -> dict:
    return {
        "event_id": event,
        "outcome": outcome,
        "observed_at": at(t),
        "best_price": price,
        "best_book": book,
        "sharp_prob": sharp_prob,
    }


def result(event, winner, t) -> dict:
    home, away = {"home": (2.0, 0.0), "away": (0.0, 1.0), "draw": (1.0, 1.0)}[winner]
    return {"event_id": event, "home_score": home, "away_score": away, "resolved_at": at(t)}


def scored(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    """(event, side, decision hour, probability) rows."""
    return pd.DataFrame(
        [
            {"event_id": e, "side": s, "decision_time": at(h), "probability": p}
            for e, s, h, p in rows
        ]
    )


FULL_SHARE = BacktestConfig(max_stake_share=1.0, n_boot=50)


# --------------------------------------------------------------------------- no peeking


def two_bets(first_settles_at: float) -> pd.DataFrame:
    """A (decided at h1) wins big, settling at `first_settles_at`; B is decided at h3."""
    con = make_con(
        [quote("A", "home", 3.0, 0), quote("A", "away", 1.4, 0)]
        + [quote("B", "home", 3.0, 0), quote("B", "away", 1.4, 0)],
        [result("A", "home", first_settles_at), result("B", "away", 10)],
    )
    return value_bets(con, scored(("A", "home", 1, 0.5), ("B", "home", 3, 0.5)), FULL_SHARE)


def test_a_stake_uses_only_bets_settled_before_its_decision():
    # quarter Kelly at p=0.5, price 3: 0.0625 of 1000 = 62.5 -> 62 (increment 1)
    first_stake = kelly_stakes([0.5], [3.0], 1000.0, max_stake_share=1.0, increment=1.0)[0]
    assert first_stake == 62.0

    late = two_bets(first_settles_at=5)  # A's +124 lands after B's decision at h3
    assert late["stake"].tolist() == [62.0, 62.0]
    assert late["profit"].tolist() == [124.0, -62.0]

    early = two_bets(first_settles_at=2)  # A settled before B: B is sized on 1124
    assert early["stake"].tolist() == [62.0, math.floor(0.0625 * 1124.0)]


def test_open_stakes_tie_up_cash_and_a_known_result_is_never_bet():
    con = make_con(
        [quote(e, "home", 3.0, 0) for e in ("A", "B", "C")],
        [result("A", "home", 10), result("C", "home", 0.5)],
    )
    config = BacktestConfig(max_stake_share=1.0, kelly_fraction=1.0, n_boot=50)
    # full Kelly at p=0.9, price 3 is 0.85: A takes 850, B gets only the 150 left
    bets = value_bets(con, scored(("A", "home", 1, 0.9), ("B", "home", 2, 0.9)), config)
    assert bets["stake"].tolist() == [850.0, 150.0]
    assert bets["settled"].tolist() == [True, False]  # B has no result: open, counted
    assert math.isnan(bets["profit"].iloc[1])
    assert bets.attrs["counts"]["open"] == 1

    known = value_bets(con, scored(("C", "home", 1, 0.9)), config)  # C resolved at h0.5
    assert known.empty and known.attrs["counts"]["result_known_at_decision"] == 1


def test_price_is_the_point_in_time_best_and_a_side_gone_stale_is_not_priced():
    con = make_con(
        [
            quote("A", "home", 2.5, 0, "b1"),
            quote("A", "away", 1.6, 0, "b1"),
            quote("A", "home", 2.2, 2, "b2"),  # after the h1 decision: unseen by it
            quote("A", "away", 1.7, 2, "b2"),
            quote("A", "away", 1.7, 4, "b2"),  # at h4 home has no fresh quote left
        ],
        [result("A", "home", 10)],
    )
    bets = value_bets(con, scored(("A", "home", 1, 0.6), ("A", "home", 3, 0.6)), FULL_SHARE)
    assert bets[["book", "price"]].values.tolist() == [["b1", 2.5], ["b2", 2.2]]
    stale = value_bets(con, scored(("A", "home", 5, 0.6)), FULL_SHARE)
    assert stale.empty and stale.attrs["counts"]["no_price"] == 1


def test_closing_fair_price_is_the_last_sharp_probability_before_commence():
    con = make_con(
        [
            quote("A", "home", 2.5, 0, sharp_prob=0.40),
            quote("A", "home", 2.4, 2, sharp_prob=0.50),
            quote("A", "home", 1.2, 4, sharp_prob=0.90),  # in play: not the close
        ],
        [result("A", "home", 6)],
        [{"event_id": "A", "commence_time": at(3)}],
    )
    bets = value_bets(con, scored(("A", "home", 1, 0.6)), FULL_SHARE)
    assert bets["closing_fair_price"].tolist() == [2.0]
    report = run_backtest(con, {"model": scored(("A", "home", 1, 0.6))}, config=FULL_SHARE)
    assert report.reports["model"].mean_clv == pytest.approx(2.5 / 2.0 - 1)


# --------------------------------------------------------------------------- edge and caps


def test_never_a_stake_without_the_minimum_edge():
    rng = np.random.default_rng(3)
    n = 300
    prices = rng.uniform(1.3, 5.0, size=(n, 2))
    probs = np.clip(1.0 / prices + rng.normal(0, 0.05, size=(n, 2)), 0.01, 0.99)
    features, rows = [], []
    for i in range(n):
        for j, side in enumerate(("home", "away")):
            features.append(quote(f"e{i}", side, prices[i, j], 0))
            rows.append((f"e{i}", side, 1 + i * 0.01, probs[i, j]))
    con = make_con(features, [result(f"e{i}", "home", 100) for i in range(n)])
    config = BacktestConfig(bankroll=1e6, max_stake_share=0.001, min_edge=0.03, n_boot=50)
    bets = value_bets(con, scored(*rows), config)

    edge = probs * prices - 1
    wanted = {(f"e{i}", s) for i in range(n) for j, s in enumerate(("home", "away"))
              if edge[i, j] >= 0.03}  # fmt: skip
    assert 0 < len(wanted) < 2 * n  # both kinds are present
    assert set(zip(bets["event_id"], bets["side"], strict=True)) == wanted
    assert (bets["edge"] >= 0.03).all() and (bets["stake"] > 0).all()


def test_stakes_respect_book_limits_max_share_and_increment():
    con = make_con(
        [quote("A", "home", 3.0, 0, "capped"), quote("B", "home", 3.0, 0, "open")],
        [result("A", "home", 10), result("B", "home", 10)],
    )
    probs = scored(("A", "home", 1, 0.6), ("B", "home", 1, 0.6))  # quarter Kelly 0.1 > 0.05
    bets = value_bets(con, probs, BacktestConfig(book_limits={"capped": 20.0}, n_boot=50))
    assert bets.set_index("book")["stake"].to_dict() == {"capped": 20.0, "open": 50.0}

    coarse = value_bets(con, probs, BacktestConfig(book_limits={"capped": 20.0}, increment=7.0))
    assert coarse.set_index("book")["stake"].to_dict() == {"capped": 14.0, "open": 49.0}

    with pytest.raises(StakingError, match="probability"):
        value_bets(con, scored(("A", "home", 1, 1.5)))


# --------------------------------------------------------------------------- baselines


def simulated(n: int, margin: float, noise: float, seed: int):
    """n two-way events: truth p, the market's belief q (logit noise), prices q + margin."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.25, 0.75, n)
    q = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + rng.normal(0, noise, n))))
    home_wins = rng.random(n) < p
    ids = np.array([f"e{i:05d}" for i in range(n)])
    decision = T0 + pd.to_timedelta(np.arange(n), unit="h")
    both = np.concatenate
    features = pd.DataFrame(
        {
            "event_id": both([ids, ids]),
            "outcome": ["home"] * n + ["away"] * n,
            "observed_at": both([decision, decision]) - pd.Timedelta(minutes=30),
            "best_price": both([1 / (q * (1 + margin)), 1 / ((1 - q) * (1 + margin))]),
            "best_book": "b1",
            "sharp_prob": both([q, 1 - q]),
        }
    )
    results = pd.DataFrame(
        {
            "event_id": ids,
            "home_score": home_wins.astype(float),
            "away_score": (~home_wins).astype(float),
            "resolved_at": decision + pd.Timedelta(hours=2),
        }
    )
    con = make_con(features, results)

    def frame(prob_home: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "event_id": both([ids, ids]),
                "side": ["home"] * n + ["away"] * n,
                "decision_time": both([decision, decision]),
                "probability": both([prob_home, 1 - prob_home]),
            }
        )

    return con, frame(p), frame(q), p


def roi(bets: pd.DataFrame) -> float:
    done = bets[bets["settled"]]
    return float(done["profit"].sum() / done["stake"].sum())


def test_betting_the_market_loses_about_the_margin():
    margin = 0.05
    con, _, market, _ = simulated(3000, margin, noise=0.0, seed=11)
    config = BacktestConfig(bankroll=100_000.0, increment=0.01, n_boot=100)

    # against its own prices the market's probability has no edge: value betting stays out
    assert value_bets(con, market, config).empty
    # staking in proportion to it pays the overround back on every event
    # (every event is open at once here: stakes small enough that the cash covers them all)
    proportional = market_proportional(con, market, config, stake_share=0.0003)
    assert len(proportional) == 6000
    assert roi(proportional) == pytest.approx(-margin / (1 + margin), abs=0.002)
    # the favourite at flat stakes loses about the margin too (noisy: loose bound)
    favourite = favourite_flat(con, market, config, stake_share=0.0003)
    assert len(favourite) == 3000
    assert -margin - 0.04 < roi(favourite) < 0


def test_the_oracle_has_positive_expected_and_realised_roi():
    con, truth, market, p = simulated(3000, margin=0.03, noise=0.4, seed=5)
    config = BacktestConfig(n_boot=100)
    oracle = value_bets(con, truth, config, strategy="oracle")
    assert len(oracle) > 300
    p_home = p[oracle["event_id"].str[1:].astype(int)]
    p_true = np.where(oracle["side"] == "home", p_home, 1 - p_home)  # each bet's true chance
    stake = oracle["stake"].to_numpy()
    expected = float((stake * (p_true * oracle["price"] - 1)).sum() / stake.sum())
    assert expected > 0.05
    assert roi(oracle) > 0
    assert value_bets(con, market, config).empty  # the market's own belief sees no edge


# --------------------------------------------------------------------------- arbitrage


def quotes_frame(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    """(event, book, outcome, price, seconds) quotes for the scanner."""
    return pd.DataFrame(
        [
            {
                "event_id": e,
                "bookmaker": b,
                "market": "h2h",
                "outcome": o,
                "price": price,
                "observed_at": T0 + pd.Timedelta(seconds=s),
            }
            for e, b, o, price, s in rows
        ]
    )


def test_latency_drops_windows_shorter_than_it():
    rows = []
    for event, closes in (("short", 10), ("long", 120)):
        rows += [
            (event, "A", "home", 2.10, 0),
            (event, "A", "away", 1.70, 0),
            (event, "B", "home", 1.75, 0),
            (event, "B", "away", 2.05, 0),
            (event, "A", "home", 1.80, closes),  # the window ends when A moves
        ]
    windows = scan_frame(quotes_frame(rows), ScanConfig(staleness_seconds=None)).windows
    arbs = windows[windows["status"] == "actionable"]
    assert sorted(arbs["duration_seconds"]) == [10.0, 120.0]

    config = BacktestConfig(arb_latency_seconds=30, arb_rejection_probability=0.0)
    bets = arbitrage_bets(windows, config, np.random.default_rng(0))
    assert bets["event_id"].tolist() == ["long"]
    window = arbs.set_index("event_id").loc["long"]
    assert bets["profit"].iloc[0] == pytest.approx(window["guaranteed_profit"])
    assert bets["stake"].iloc[0] == pytest.approx(window["total_stake"])
    assert bets["decision_time"].iloc[0] == T0 + pd.Timedelta(seconds=30)
    assert bets.attrs["counts"]["too_short"] == 1

    fast = arbitrage_bets(windows, BacktestConfig(arb_latency_seconds=5), FixedRng([0.5]))
    assert sorted(fast["event_id"]) == ["long", "short"]


class FixedRng:
    """Stands in for a Generator: `random(n)` repeats the given draws."""

    def __init__(self, draws: list[float]):
        self.draws = draws

    def random(self, n: int) -> np.ndarray:
        return np.resize(np.array(self.draws), n)


def window(event: str) -> dict:
    legs = [
        {"bookmaker": "A", "outcome": "home", "point": None, "price": 2.1,
         "effective_price": 2.1, "stake": 490.0},
        {"bookmaker": "B", "outcome": "away", "point": None, "price": 2.05,
         "effective_price": 2.05, "stake": 502.0},
    ]  # fmt: skip
    return {
        "event_id": event,
        "market": "h2h",
        "line": None,
        "opened_at": T0,
        "closed_at": T0 + pd.Timedelta(minutes=5),
        "duration_seconds": 300.0,
        "legs": json.dumps(legs),
        "stakes": json.dumps({"A": 490.0, "B": 502.0}),
        "total_stake": 992.0,
        "guaranteed_profit": 1029.0 - 992.0,
        "status": "actionable",
    }


def test_a_rejected_leg_leaves_the_other_as_a_naked_bet_settled_on_the_result():
    windows = pd.DataFrame([window("lost"), window("won"), window("unknown")])
    results = pd.DataFrame([result("lost", "away", 3), result("won", "home", 3)])
    config = BacktestConfig(arb_rejection_probability=0.1)

    naked = arbitrage_bets(windows, config, FixedRng([0.9, 0.05]), results)  # B refuses
    assert naked["book"].tolist() == ["A"] * 3 and naked["side"].tolist() == ["home"] * 3
    by_event = naked.set_index("event_id")
    assert by_event.loc["lost", "profit"] == -490.0
    assert by_event.loc["won", "profit"] == pytest.approx(490.0 * 1.1)
    assert by_event.loc["won", "settled_at"] == at(3)
    assert not by_event.loc["unknown", "settled"] and pd.isna(by_event.loc["unknown", "won"])
    assert naked.attrs["counts"]["some_legs_rejected"] == 3

    whole = arbitrage_bets(windows, config, FixedRng([0.9, 0.9]), results)
    assert whole["profit"].tolist() == pytest.approx([37.0] * 3)  # min(490*2.1, 502*2.05) - 992
    assert whole["won"].all() and whole["side"].iloc[0] == "home+away"

    none = arbitrage_bets(windows, BacktestConfig(arb_rejection_probability=1.0), None, results)
    assert none.empty and none.attrs["counts"]["all_legs_rejected"] == 3


def test_book_limits_scale_an_arbitrage_down():
    windows = pd.DataFrame([window("won")])
    config = BacktestConfig(book_limits={"A": 245.0}, arb_rejection_probability=0.0)
    bets = arbitrage_bets(windows, config)
    assert bets["stake"].iloc[0] == 245.0 + 251.0
    assert bets["profit"].iloc[0] == pytest.approx(min(245 * 2.1, 251 * 2.05) - 496.0)


# --------------------------------------------------------------------------- reports


def fake_report(low: float, high: float, roi_value: float = 0.0) -> StrategyReport:
    nan = math.nan
    return StrategyReport(
        bets=120, turnover=1200.0, profit=roi_value * 1200.0, roi=roi_value, roi_ci_low=low,
        roi_ci_high=high, p_value_vs_random=0.4, hit_rate=0.5, sharpe_per_bet=nan,
        sharpe_daily=nan, max_drawdown=0.1, calmar=nan, mean_clv=nan, significant=low > 0,
    )  # fmt: skip


def test_verdicts_say_plainly_whether_roi_is_above_zero():
    unsure = verdict(fake_report(-0.053, 0.010, -0.021))
    assert unsure.startswith("ROI -2.1% (95% CI -5.3% to +1.0%)")
    assert "not significantly different from zero" in unsure
    assert "no better than random" in unsure
    above = verdict(fake_report(0.01, 0.05, 0.03))
    assert "significantly above zero" in above and "not significantly" not in above
    below = verdict(fake_report(-0.09, -0.01, -0.05), open_bets=2)
    assert "significantly below zero: it loses money" in below and "2 open bet(s)" in below
    assert verdict(replace(fake_report(0.0, 0.0), bets=0)).startswith("no settled bets")


def test_run_backtest_reports_every_strategy_with_verdicts(tmp_path):
    con, truth, market, _ = simulated(400, margin=0.03, noise=0.4, seed=9)
    windows = pd.DataFrame([window("e00001"), window("e00002")])
    config = BacktestConfig(n_boot=200)
    result = run_backtest(con, {"oracle": truth, "market": market}, windows, config)

    assert list(result.reports) == [
        "oracle", "market", "market_proportional", "favourite", "arbitrage",
    ]  # fmt: skip
    assert list(result.bets.columns) == list(BET_COLUMNS)
    assert set(result.bets["strategy"]) == {"oracle", "market_proportional", "favourite",
                                            "arbitrage"}  # fmt: skip
    assert result.reports["market"].bets == 0
    assert result.verdicts["market"].startswith("no settled bets")
    for name, report in result.reports.items():
        text = result.verdicts[name]
        if report.bets and report.roi_ci_low <= 0 <= report.roi_ci_high:
            assert "not significantly" in text, (name, text)
    fav = result.reports["favourite"]
    assert fav.roi_ci_low <= 0 <= fav.roi_ci_high  # 400 flat bets: noise hides the margin
    assert math.isfinite(result.reports["oracle"].p_value_vs_random)
    json.dumps(result.summary(), allow_nan=False)

    png = equity_and_drawdown_png(result.bets, tmp_path / "plots" / "equity.png", 1000.0)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

    empty = equity_and_drawdown_png(result.bets.iloc[:0], tmp_path / "empty.png", 1000.0)
    assert empty.stat().st_size > 0


def test_config_is_validated():
    with pytest.raises(ValueError, match="kelly_fraction"):
        BacktestConfig(kelly_fraction=0)
    with pytest.raises(ValueError, match="arb_rejection_probability"):
        BacktestConfig(arb_rejection_probability=1.5)
    with pytest.raises(ValueError, match="missing"):
        value_bets(make_con([]), pd.DataFrame({"event_id": ["A"]}))


def test_flat_stakes_stop_when_the_bankroll_is_gone():
    """Flat baselines used to keep betting after ruin (a drawdown above 100% on real data)."""
    from odds_pipeline.backtest.metrics import strategy_report

    margin = 0.08  # a heavy overround: flat stakes of 5% of a small bankroll go broke
    con, _, market, _ = simulated(3000, margin, noise=0.0, seed=13)
    config = BacktestConfig(bankroll=200.0, increment=0.01, n_boot=50)
    for bets in (
        market_proportional(con, market, config, stake_share=0.05),
        favourite_flat(con, market, config, stake_share=0.05),
    ):
        assert bets.attrs["counts"]["not_affordable"] > 0
        settled = bets[bets["settled"]]
        report = strategy_report(
            settled["stake"].to_numpy(),
            settled["price"].to_numpy(),
            settled["won"].to_numpy(bool),
            settled["settled_at"],
            bankroll0=config.bankroll,
            n_boot=50,
        )
        assert report.max_drawdown <= 1.0 + 1e-9
        assert config.bankroll + settled["profit"].sum() >= -1e-6  # never below zero cash
