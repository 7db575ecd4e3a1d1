"""Arbitrage scanner: hand-computed combinations, stakes and windows on tiny quotes, a
brute-force reference on random ones, bad input, and the real WNBA change log."""

from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from odds_pipeline import warehouse
from odds_pipeline.features.compute import load_odds_api_change_log
from odds_pipeline.ingestion import store
from odds_pipeline.market.quotes import QUOTE_COLUMNS
from odds_pipeline.scoring.arbitrage import (
    QUOTE_REMOVALS_SQL,
    REASONS,
    ScanConfig,
    ScanResult,
    legs_of,
    scan,
    scan_frame,
)
from odds_pipeline_tests.conftest import SHARED_DATA, needs_shared_data

T0 = pd.Timestamp("2026-07-01 18:00", tz="UTC")
E1, E2 = "e1", "e2"


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def q(book, outcome, price, t=0, *, market="h2h", point=None, event=E1, last_update=None):
    return {
        "event_id": event,
        "bookmaker": book,
        "market": market,
        "outcome": outcome,
        "point": point,
        "price": price,
        "observed_at": at(t),
        "last_update": None if last_update is None else at(last_update),
    }


def two_way(t=0, event=E1) -> list[dict]:
    """A 2-way h2h arbitrage: home 2.10 at A, away 2.05 at B (margin ~3.6%)."""
    return [
        q("A", "home", 2.10, t, event=event),
        q("A", "away", 1.70, t, event=event),
        q("B", "home", 1.75, t, event=event),
        q("B", "away", 2.05, t, event=event),
    ]


def run(rows: list[dict], config: ScanConfig | None = None, **kwargs) -> ScanResult:
    return scan_frame(pd.DataFrame(rows), config or ScanConfig(), **kwargs)


def only(windows: pd.DataFrame) -> pd.Series:
    assert len(windows) == 1, windows
    return windows.iloc[0]


def paired(windows: pd.DataFrame) -> pd.DataFrame:
    """Windows of two legs or more (a lone leg left behind forms its own one_leg window)."""
    return windows[windows["n_legs"] >= 2]


def insert_quotes(con: duckdb.DuckDBPyConnection, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows).assign(
        source="test",
        load_id="test:1",
        outcome_name=None,
        in_play=False,
        source_file=None,
        source_record=None,
    )
    frame["ingested_at"] = frame["observed_at"]
    frame = frame[QUOTE_COLUMNS]  # read by DuckDB below
    con.execute(f"INSERT INTO odds_quotes ({', '.join(QUOTE_COLUMNS)}) SELECT * FROM frame")


def remove(con, book, outcome, t, *, market="h2h", point=None, event=E1) -> None:
    con.execute(QUOTE_REMOVALS_SQL)
    con.execute(
        "INSERT INTO quote_removals (event_id, bookmaker, market, outcome, point, removed_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [event, book, market, outcome, point, at(t).to_pydatetime()],
    )


# --------------------------------------------------------------------------- combinations


def test_two_way_h2h_margin_and_stakes_by_hand():
    result = run(two_way())
    w = only(result.windows)
    assert w["status"] == "actionable" and w["reason"] is None
    assert w["market"] == "h2h" and pd.isna(w["line"])
    assert w["best_margin"] == pytest.approx(1 - (1 / 2.10 + 1 / 2.05))  # 0.036005
    legs = {leg["outcome"]: leg for leg in legs_of(w)}
    assert (legs["home"]["bookmaker"], legs["home"]["price"]) == ("A", 2.10)
    assert (legs["away"]["bookmaker"], legs["away"]["price"]) == ("B", 2.05)
    # equal-profit stakes 493.98 / 506.02, rounded down to whole units
    assert json.loads(w["stakes"]) == {"A": 493.0, "B": 506.0}
    assert w["total_stake"] == 999.0
    assert w["guaranteed_profit"] == pytest.approx(min(493 * 2.10, 506 * 2.05) - 999)  # 36.3
    assert result.counts["actionable"] == 1 and result.counts["quotes_read"] == 4


def test_three_way_uses_the_draw_and_a_missing_draw_is_kept_apart():
    rows = [
        q("A", "home", 2.50), q("A", "draw", 3.00), q("A", "away", 2.90),
        q("B", "home", 2.30), q("B", "draw", 3.50), q("B", "away", 3.00),
        q("C", "home", 2.20), q("C", "draw", 3.20), q("C", "away", 3.40),
        # later only home/away are quoted: 2 legs of a 3-way market are not an arbitrage
        q("A", "home", 2.50, 600), q("C", "away", 3.40, 600),
    ]  # fmt: skip
    result = run(rows)
    full, partial = result.windows.iloc[0], result.windows.iloc[1]
    assert full["status"] == "actionable" and full["n_legs"] == 3
    assert {(leg["outcome"], leg["bookmaker"]) for leg in legs_of(full)} == {
        ("home", "A"), ("draw", "B"), ("away", "C"),
    }  # fmt: skip
    assert full["best_margin"] == pytest.approx(1 - (1 / 2.5 + 1 / 3.5 + 1 / 3.4))  # 0.0202
    assert json.loads(full["stakes"]) == {"A": 408.0, "B": 291.0, "C": 300.0}
    assert full["guaranteed_profit"] == pytest.approx(291 * 3.5 - 999)  # 19.5
    assert (partial["status"], partial["reason"], partial["n_legs"]) == (
        "suspicious", "missing_leg", 2,
    )  # fmt: skip
    assert partial["opened_at"] == at(600)


def test_spreads_pair_home_p_with_away_minus_p_only():
    rows = [
        q("A", "home", 2.10, market="spreads", point=-3.5),
        q("A", "away", 1.70, market="spreads", point=3.5),
        q("B", "home", 1.75, market="spreads", point=-3.5),
        q("B", "away", 2.05, market="spreads", point=3.5),
        q("C", "home", 2.60, market="spreads", point=-4.5),
        q("C", "away", 1.45, market="spreads", point=4.5),
        # away at -3.5 is the other line (home +3.5): never paired with home -3.5
        q("D", "away", 3.00, market="spreads", point=-3.5),
    ]
    result = run(rows)
    w = only(result.actionable)
    assert w["line"] == -3.5
    assert {(leg["bookmaker"], leg["outcome"], leg["point"]) for leg in legs_of(w)} == {
        ("A", "home", -3.5), ("B", "away", 3.5),
    }  # fmt: skip
    lone = only(result.suspicious)
    assert (lone["line"], lone["reason"]) == (3.5, "one_leg")


def test_totals_pair_over_and_under_at_the_same_point_only():
    rows = [
        q("A", "over", 2.10, market="totals", point=2.5),
        q("A", "under", 1.70, market="totals", point=2.5),
        q("B", "over", 1.75, market="totals", point=2.5),
        q("B", "under", 2.05, market="totals", point=2.5),
        q("C", "over", 1.50, market="totals", point=3.5),
        q("C", "under", 2.50, market="totals", point=3.5),  # with over 2.5 would be 12%
    ]
    result = run(rows)
    assert len(result.windows) == 1
    w = only(result.actionable)
    assert w["line"] == 2.5 and w["market"] == "totals"
    assert {leg["point"] for leg in legs_of(w)} == {2.5}


def test_a_book_of_exactly_one_is_no_arbitrage_despite_float_error():
    assert 1 / 1.04 + 1 / 26.0 < 1  # 0.9999999999999999 in floating point
    assert run([q("A", "home", 1.04), q("B", "away", 26.0)]).windows.empty


def test_ties_go_to_the_first_bookmaker_by_name():
    rows = [q("B", "home", 2.10), q("A", "home", 2.10), q("C", "away", 2.05)]
    w = only(run(rows).actionable)
    assert {leg["outcome"]: leg["bookmaker"] for leg in legs_of(w)} == {"home": "A", "away": "C"}


def test_markets_and_events_and_time_filters():
    rows = two_way() + two_way(event=E2) + [
        q("A", "over", 2.10, market="totals", point=2.5),
        q("B", "under", 2.05, market="totals", point=2.5),
    ]  # fmt: skip
    assert set(run(rows).windows["market"]) == {"h2h", "totals"}
    assert set(run(rows, ScanConfig(markets=("totals",))).windows["market"]) == {"totals"}
    assert set(run(rows, event_ids=[E2]).windows["event_id"]) == {E2}
    assert run(rows, until=at(-1)).windows.empty
    late = run(two_way(), since=at(60))  # quotes from before `since` still count while live
    w = only(late.windows)
    assert (w["opened_at"], w["closed_at"], w["duration_seconds"]) == (at(60), at(120), 60.0)
    assert run(two_way(), since=at(120)).windows.empty


# --------------------------------------------------------------------------- time


def test_a_stale_leg_does_not_create_an_arbitrage():
    rows = [
        q("A", "home", 2.10, 0), q("A", "away", 1.70, 0),
        q("B", "home", 1.75, 300), q("B", "away", 2.05, 300),
    ]  # fmt: skip
    assert run(rows).windows.empty  # A is 300 s old when B quotes: past the 120 s window
    w = only(run(rows, ScanConfig(staleness_seconds=600)).windows)
    # opens when B quotes, closes when A's quotes lapse (600 s after they were seen)
    assert (w["opened_at"], w["closed_at"], w["duration_seconds"]) == (at(300), at(600), 300.0)
    assert w["status"] == "actionable"


def test_a_leg_whose_own_last_update_is_old_is_kept_apart():
    rows = two_way()
    rows[0] = q("A", "home", 2.10, 0, last_update=-500)  # the feed re-served an old price
    w = only(run(rows).windows)
    assert (w["status"], w["reason"]) == ("suspicious", "stale_leg")
    assert only(run(rows, ScanConfig(staleness_seconds=None)).windows)["status"] == "actionable"


def test_windows_merge_consecutive_instants():
    config = ScanConfig(staleness_seconds=600)
    rows = two_way() + [
        q("B", "away", 2.10, 60),  # a better arbitrage: same window, best instant moves
        q("B", "away", 1.80, 90),  # gone
        q("B", "away", 2.05, 200),  # back: a second window
    ]
    result = run(rows, config)
    assert len(result.windows) == 3
    first, second, last = (result.windows.iloc[i] for i in range(3))
    assert (first["opened_at"], first["closed_at"], first["duration_seconds"]) == (
        at(0), at(90), 90.0,
    )  # fmt: skip
    assert first["n_instants"] == 2 and first["best_at"] == at(60)
    assert first["best_margin"] == pytest.approx(1 - 2 / 2.10)
    assert {leg["outcome"]: leg["price"] for leg in legs_of(first)} == {"home": 2.1, "away": 2.1}
    # the second closes when A's quotes (seen at 0) lapse at 600
    assert (second["opened_at"], second["closed_at"], second["n_instants"]) == (at(200), at(600), 1)
    assert not first["still_open"]
    # then only B's away (seen at 200) is left until it lapses: one leg, kept apart
    assert (last["opened_at"], last["closed_at"], last["reason"]) == (at(600), at(800), "one_leg")


def test_a_window_still_open_at_the_end_of_the_data():
    result = run(two_way(), ScanConfig(staleness_seconds=None))
    w = only(result.windows)
    assert pd.isna(w["closed_at"]) and w["still_open"] and w["duration_seconds"] == 0.0


def test_a_removal_ends_a_quote_at_once(con):
    insert_quotes(con, two_way())
    kept = only(scan(con).windows)
    assert (kept["closed_at"], kept["status"]) == (at(120), "actionable")  # no removals table
    remove(con, "B", "away", 30)
    remove(con, "A", "home", -10)  # before the quote: the quote that follows still counts
    w = only(paired(scan(con).windows))
    assert (w["closed_at"], w["duration_seconds"]) == (at(30), 30.0)
    assert (w["status"], w["reason"]) == ("suspicious", "leg_withdrawn")
    insert_quotes(con, [q("B", "away", 2.05, 60)])  # quoted again after the removal
    again = paired(scan(con).windows)
    assert list(again["opened_at"]) == [at(0), at(60)]
    assert again.iloc[1]["status"] == "actionable"
    assert scan(con).removals_read == 2


def test_scan_frame_takes_removals_too():
    removals = pd.DataFrame(
        [{"event_id": E1, "bookmaker": "B", "market": "h2h", "outcome": "away",
          "removed_at": at(45)}]
    )  # fmt: skip
    result = run(two_way(), removals=removals)
    assert only(paired(result.windows))["closed_at"] == at(45)
    assert result.removals_read == 1


def test_a_removal_at_a_point_ends_only_that_line(con):
    rows = [
        q("A", "home", 2.10, market="spreads", point=-3.5),
        q("B", "away", 2.05, market="spreads", point=3.5),
    ]
    insert_quotes(con, rows)
    remove(con, "B", "away", 30, market="spreads", point=4.5)  # another line
    assert only(scan(con).windows)["closed_at"] == at(120)
    remove(con, "B", "away", 40, market="spreads", point=3.5)
    assert only(paired(scan(con).windows))["closed_at"] == at(40)


def test_a_moved_line_replaces_the_old_one():
    rows = [
        q("A", "home", 2.10, 0, market="spreads", point=-3.5),
        q("A", "away", 1.70, 0, market="spreads", point=3.5),
        q("A", "home", 1.90, 30, market="spreads", point=-4.5),  # A moved its line
        q("A", "away", 1.90, 30, market="spreads", point=4.5),
        q("B", "home", 1.75, 30, market="spreads", point=-3.5),
        q("B", "away", 2.05, 30, market="spreads", point=3.5),
    ]
    assert run(rows).actionable.empty
    lingering = run(rows, ScanConfig(latest_line_only=False)).actionable
    assert only(lingering)["opened_at"] == at(30)  # A's old -3.5 pairs with B's +3.5


# --------------------------------------------------------------------------- money


def test_commission_can_turn_an_arbitrage_into_none():
    rows = [
        q("betfair_ex_uk", "home", 2.02), q("betfair_ex_uk", "away", 1.80),
        q("B", "home", 1.80), q("B", "away", 2.02),
    ]  # fmt: skip
    assert only(run(rows).windows)["best_margin"] == pytest.approx(1 - 2 / 2.02)  # ~1%
    config = ScanConfig(commission={"betfair_ex_uk": 0.05})  # 2.02 -> 1.969 effective
    assert run(rows, config).windows.empty
    mild = only(run(rows, ScanConfig(commission={"betfair_ex_uk": 0.005})).windows)
    leg = {leg["bookmaker"]: leg for leg in legs_of(mild)}["betfair_ex_uk"]
    assert leg["effective_price"] == pytest.approx(1 + 1.02 * 0.995)
    assert mild["best_margin"] == pytest.approx(1 - 1 / (1 + 1.02 * 0.995) - 1 / 2.02)


def test_stakes_round_down_to_increments_and_respect_limits():
    config = ScanConfig(stake_increment={"A": 5.0, "B": 0.5}, stake_limits={"A": 200.0})
    w = only(run(two_way(), config).windows)
    stakes = json.loads(w["stakes"])
    # A's equal-profit stake (494) is over its 200 limit: both legs scale by 200/494
    assert stakes == {"A": 200.0, "B": 204.5}
    for leg in legs_of(w):
        inc = config.stake_increment[leg["bookmaker"]]
        assert leg["stake"] / inc == pytest.approx(round(leg["stake"] / inc), abs=1e-9)
        assert leg["stake"] <= config.stake_limits.get(leg["bookmaker"], math.inf)
    payout = min(leg["stake"] * leg["effective_price"] for leg in legs_of(w))
    assert w["guaranteed_profit"] == pytest.approx(payout - sum(stakes.values()))  # 14.725
    assert w["guaranteed_profit"] == pytest.approx(14.725)
    assert w["status"] == "actionable"


def test_a_missing_increment_uses_the_default():
    config = ScanConfig(stake_increment={"A": 5.0}, default_increment=4.0)
    w = only(run(two_way(), config).windows)
    assert json.loads(w["stakes"]) == {"A": 490.0, "B": 504.0}
    assert w["guaranteed_profit"] == pytest.approx(490 * 2.10 - 994)  # 35.0


def test_rounding_can_eat_the_profit():
    w = only(run(two_way(), ScanConfig(bankroll=10, default_increment=5)).windows)
    assert json.loads(w["stakes"]) == {"A": 0.0, "B": 5.0}
    assert w["guaranteed_profit"] == pytest.approx(-5.0)
    assert (w["status"], w["reason"]) == ("suspicious", "unprofitable_after_rounding")


def test_a_margin_above_the_cap_is_suspicious():
    rows = [q("A", "home", 3.0), q("A", "away", 1.2), q("B", "home", 1.2), q("B", "away", 3.0)]
    w = only(run(rows).windows)
    assert (w["status"], w["reason"]) == ("suspicious", "margin_above_cap")
    assert w["best_margin"] == pytest.approx(1 / 3)
    assert json.loads(w["reasons"]) == ["margin_above_cap"]
    assert only(run(rows, ScanConfig(max_margin=0.5)).windows)["status"] == "actionable"
    assert run(rows, ScanConfig(min_margin=0.4, max_margin=0.5)).windows.empty


def test_a_single_leg_is_kept_apart():
    result = run([q("A", "home", 2.10)])
    w = only(result.windows)
    assert (w["status"], w["reason"], w["n_legs"]) == ("suspicious", "one_leg", 1)
    assert result.counts["suspicious_by_reason"] == {"one_leg": 1}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bankroll", [0, -100.0, float("nan")])
def test_a_bankroll_that_is_not_positive_raises(bankroll):
    with pytest.raises(ValueError, match="bankroll") as info:
        ScanConfig(bankroll=bankroll)
    assert "\n" not in str(info.value)


def test_other_bad_config_raises():
    for kwargs in (
        {"commission": {"A": 1.0}},
        {"stake_increment": {"A": 0.0}},
        {"stake_limits": {"A": -1.0}},
        {"staleness_seconds": 0},
        {"markets": ("h2h", "corners")},
        {"min_margin": 0.1, "max_margin": 0.05},
    ):
        with pytest.raises(ValueError):
            ScanConfig(**kwargs)


def test_prices_at_or_below_one_or_not_finite_are_ignored_and_counted():
    rows = [
        q("A", "home", 2.10), q("A", "away", 1.70),
        q("B", "away", 1.0), q("C", "away", float("nan")), q("D", "away", 0.5),
        q("E", "away", float("inf")),
    ]  # fmt: skip
    result = run(rows)
    assert result.windows.empty
    assert result.quotes_ignored_bad_price == 4 and result.quotes_read == 6
    assert result.quotes_used == 2
    # a bad price ends the book's previous quote (it no longer shows a usable one)
    ended = run(two_way() + [q("B", "away", 0.0, 30)])
    w = only(ended.windows)
    assert w["closed_at"] == at(30)
    assert all(leg["stake"] >= 0 for leg in legs_of(w))


def test_nan_and_low_prices_in_the_table_are_ignored(con):
    insert_quotes(con, two_way())
    con.execute(
        "INSERT INTO odds_quotes SELECT * REPLACE ('nan'::DOUBLE AS price, bookmaker || '2' "
        "AS bookmaker) FROM odds_quotes UNION ALL SELECT * REPLACE (1.0 AS price, "
        "bookmaker || '3' AS bookmaker) FROM odds_quotes"
    )
    result = scan(con)
    assert result.quotes_read == 12 and result.quotes_ignored_bad_price == 8
    w = only(result.windows)
    assert {leg["bookmaker"] for leg in legs_of(w)} == {"A", "B"}
    assert w["guaranteed_profit"] == pytest.approx(36.3)


def test_copies_keep_the_latest_ingested_and_bad_shapes_are_counted(con):
    insert_quotes(con, two_way())
    con.execute(  # a re-ingested copy of B's away at a worse price, learned later
        "INSERT INTO odds_quotes SELECT * REPLACE (1.5 AS price, ingested_at + INTERVAL 1 HOUR "
        "AS ingested_at) FROM odds_quotes WHERE bookmaker = 'B' AND outcome = 'away'"
    )
    insert_quotes(con, [q("C", "over", 3.0), q("C", "away", 5.0, market="spreads")])
    result = scan(con)
    assert (result.quotes_read, result.quotes_duplicate) == (7, 1)
    assert (result.quotes_ignored_bad_shape, result.quotes_used) == (2, 4)
    assert result.windows.empty  # the later copy (1.5) is B's price: no arbitrage


def test_an_empty_table_gives_no_windows_with_the_columns(con):
    result = scan(con)
    assert result.windows.empty
    for col in ("event_id", "market", "line", "opened_at", "closed_at", "duration_seconds",
                "n_instants", "best_margin", "legs", "stakes", "guaranteed_profit", "status",
                "reason"):  # fmt: skip
        assert col in result.windows.columns
    assert result.counts["quotes_read"] == 0


def test_scan_inside_a_callers_transaction_leaves_no_temp_tables(con):
    insert_quotes(con, two_way())
    with warehouse.transaction(con):
        assert len(scan(con).windows) == 1
    temp = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
    assert temp == 0


# --------------------------------------------------------------------------- reference


def brute_force(quotes: list[dict], removals: list[tuple], staleness: float) -> list[tuple]:
    """Plain-Python reference for one 2-way h2h market: every start/end is an instant."""
    keys = {(r["bookmaker"], r["outcome"]) for r in quotes}
    live = []
    for key in keys:
        rows = sorted((r for r in quotes if (r["bookmaker"], r["outcome"]) == key),
                      key=lambda r: r["observed_at"])  # fmt: skip
        for i, r in enumerate(rows):
            start = r["observed_at"]
            ends = [start + pd.Timedelta(seconds=staleness)]
            if i + 1 < len(rows):
                ends.append(rows[i + 1]["observed_at"])
            ends += [at(t) for b, o, t in removals if (b, o) == key and at(t) >= start]
            live.append((start, min(ends), r))
    instants = sorted({s for s, _, _ in live} | {e for _, e, _ in live})
    states = []
    for t in instants:
        best: dict[str, dict] = {}
        for s, e, r in live:
            if s <= t < e:
                cur = best.get(r["outcome"])
                if cur is None or (-r["price"], r["bookmaker"]) < (-cur["price"], cur["bookmaker"]):
                    best[r["outcome"]] = r
        margin = 1 - sum(1 / r["price"] for r in best.values())
        states.append((t, bool(best) and margin > 0, len(best) == 2, margin, len(best)))
    windows, i = [], 0
    while i < len(states):
        t, arb, complete, _, _ = states[i]
        if not arb:
            i += 1
            continue
        j = i
        while j + 1 < len(states) and states[j + 1][1] and states[j + 1][2] == complete:
            j += 1
        run_ = states[i : j + 1]
        best_margin = max(s[3] for s in run_)
        n_legs = next(s[4] for s in run_ if s[3] == best_margin)
        closed = states[j + 1][0] if j + 1 < len(states) else None
        windows.append((t, closed, j - i + 1, round(best_margin, 12), n_legs))
        i = j + 1
    return windows


@pytest.mark.parametrize("seed", range(12))
def test_windows_match_a_brute_force_reference(seed, con):
    rng = np.random.default_rng(seed)
    rows = []
    for book in ("A", "B", "C"):
        for outcome in ("home", "away"):
            times = rng.choice(np.arange(0, 900, 15), size=rng.integers(2, 8), replace=False)
            rows += [q(book, outcome, round(float(rng.uniform(1.75, 2.3)), 2), float(t))
                     for t in times]  # fmt: skip
    removals = [
        (str(rng.choice(["A", "B", "C"])), str(rng.choice(["home", "away"])), float(t))
        for t in rng.choice(np.arange(5, 900, 15), size=3, replace=False)
    ]
    insert_quotes(con, rows)
    for book, outcome, t in removals:
        remove(con, book, outcome, t)
    got = scan(con, ScanConfig(staleness_seconds=120, max_margin=0.5)).windows
    got_tuples = [
        (r.opened_at, None if pd.isna(r.closed_at) else r.closed_at, r.n_instants,
         round(r.best_margin, 12), r.n_legs)
        for r in got.sort_values(["opened_at", "n_legs"]).itertuples()
    ]  # fmt: skip
    assert got_tuples == sorted(brute_force(rows, removals, 120), key=lambda w: (w[0], w[4]))


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def wnba(tmp_path_factory):
    path = SHARED_DATA / "odds-api" / "changes" / "wnba_changes.parquet"
    if not path.exists():
        pytest.skip(f"real change log not found at {path}")
    con = warehouse.connect(tmp_path_factory.mktemp("wnba_arb") / "wnba.duckdb")
    store.ensure_schema(con)
    load_odds_api_change_log(con, [path])
    yield con
    con.close()


@needs_shared_data
@pytest.mark.shared_data
def test_real_wnba_change_log_scan_is_sane(wnba):
    config = ScanConfig()
    result = scan(wnba, config)
    n_quotes = wnba.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
    assert result.quotes_read == n_quotes > 50_000
    w = result.windows
    assert len(w) > 0 and result.instants_scanned > 0
    assert (w["duration_seconds"] >= 0).all()
    assert set(w["status"]) <= {"actionable", "suspicious"}
    assert set(result.suspicious["reason"]) <= set(REASONS)
    assert w["reason"].isna().eq(w["status"] == "actionable").all()
    act = result.actionable
    assert len(act) > 0
    assert (act["guaranteed_profit"] > 0).all()
    assert (act["best_margin"] > 0).all() and (act["best_margin"] <= config.max_margin).all()
    for window in act.itertuples():
        legs = json.loads(window.legs)
        assert len(legs) == window.n_legs >= 2
        assert len({leg["outcome"] for leg in legs}) == len(legs)
        stakes = json.loads(window.stakes)
        assert all(s >= 0 and s % config.default_increment == 0 for s in stakes.values())
        assert sum(stakes.values()) == pytest.approx(window.total_stake)
        assert sum(stakes.values()) <= config.bankroll
    # reading a change log the way it was sampled: live until replaced or withdrawn
    carried = scan(wnba, ScanConfig(staleness_seconds=None))
    assert (carried.windows["duration_seconds"] >= 0).all()
    assert (carried.actionable["guaranteed_profit"] > 0).all()


@needs_shared_data
@pytest.mark.shared_data
def test_real_odds_api_snapshot_file_scans_from_a_frame():
    from odds_pipeline.ingestion.sources.odds_api import parse_file

    path = SHARED_DATA / "odds-api" / "snapshots" / "mlb_2026-07-20_all.jsonl.gz"
    if not path.exists():
        pytest.skip(f"real snapshot file not found at {path}")
    quotes = parse_file(path).quotes
    result = scan_frame(quotes, ScanConfig())
    assert result.quotes_read == len(quotes) == result.quotes_used
    assert (result.windows["duration_seconds"] >= 0).all()
    act = result.actionable
    assert (act["guaranteed_profit"] > 0).all() and (act["best_margin"] <= 0.05).all()
    assert not act["in_play"].any()  # parse_file drops in-play prices by default
