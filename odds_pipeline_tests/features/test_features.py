"""Feature computation: every feature against hand-computed values on tiny hand-made quotes,
point-in-time and TTL rules, incremental recompute, the registry, and the real WNBA log."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odds_pipeline import warehouse
from odds_pipeline.features import compute as F
from odds_pipeline.ingestion import store
from odds_pipeline_tests.conftest import SHARED_DATA, needs_shared_data

E1, E2, E3 = "e1", "e2", "e3"
COMMENCE = datetime(2024, 1, 1, 20, 0, tzinfo=UTC)


def at(hour: float) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=hour)


def q(event, book, market, outcome, price, hour, point=None, ingested_hour=None):
    return {
        "source": "test",
        "load_id": "test:1",
        "event_id": event,
        "bookmaker": book,
        "market": market,
        "outcome": outcome,
        "outcome_name": outcome,
        "point": point,
        "price": price,
        "observed_at": at(hour),
        "ingested_at": at(hour if ingested_hour is None else ingested_hour),
        "in_play": False,
        "last_update": None,
        "source_file": None,
        "source_record": None,
    }


QUOTES = [
    # E1, 2-way h2h. pinnacle (sharp) and draftkings at 12:00.
    q(E1, "pinnacle", "h2h", "home", 1.90, 12),
    q(E1, "pinnacle", "h2h", "away", 2.00, 12),
    q(E1, "draftkings", "h2h", "home", 1.80, 12),
    q(E1, "draftkings", "h2h", "away", 2.10, 12),
    # 13:00: only draftkings' home side changes (change-log style: away carries forward).
    q(E1, "draftkings", "h2h", "home", 1.85, 13),
    # 14:00: fanduel appears with a home price that makes an arbitrage with draftkings away.
    q(E1, "fanduel", "h2h", "home", 2.20, 14),
    q(E1, "fanduel", "h2h", "away", 1.70, 14),
    # 16:00: draftkings repeats 1.85 (snapshot style, no change).
    q(E1, "draftkings", "h2h", "home", 1.85, 16),
    # E1 spreads: home -3.5 pairs with away +3.5; totals pair over/under on the total.
    q(E1, "draftkings", "spreads", "home", 1.91, 12, point=-3.5),
    q(E1, "draftkings", "spreads", "away", 1.91, 12, point=3.5),
    q(E1, "draftkings", "totals", "over", 1.80, 12, point=200.5),
    q(E1, "draftkings", "totals", "under", 2.00, 12, point=200.5),
    # a book with only one side quoted: incomplete, no de-vigged values.
    q(E1, "betmgm", "totals", "over", 1.95, 12, point=200.5),
    # E2: soccer 3-way h2h; bet365 complete, williamhill misses the draw. No sharp book.
    q(E2, "bet365", "h2h", "home", 2.50, 10),
    q(E2, "bet365", "h2h", "draw", 3.20, 10),
    q(E2, "bet365", "h2h", "away", 3.00, 10),
    q(E2, "williamhill", "h2h", "home", 2.40, 10),
    q(E2, "williamhill", "h2h", "away", 3.10, 10),
    # E3: a tie on observed_at; the row ingested later wins the book's state.
    q(E3, "draftkings", "h2h", "home", 1.50, 12, ingested_hour=12),
    q(E3, "draftkings", "h2h", "home", 1.55, 12, ingested_hour=13),
    q(E3, "draftkings", "h2h", "away", 2.60, 12),
]
EVENTS = [
    {"event_id": e, "source": "test", "sport": s, "commence_time": COMMENCE}
    for e, s in ((E1, "basketball"), (E2, "soccer"), (E3, "basketball"))
]


def insert(con, quotes, events=()) -> None:
    frame = pd.DataFrame(quotes)
    con.register("_new_quotes", frame)
    cols = ", ".join(frame.columns)
    con.execute(f"INSERT INTO odds_quotes ({cols}) SELECT {cols} FROM _new_quotes")
    con.unregister("_new_quotes")
    if events:
        ev = pd.DataFrame(events).assign(load_id="test:1")
        con.register("_new_events", ev)
        cols = ", ".join(ev.columns)
        con.execute(f"INSERT OR REPLACE INTO events ({cols}) SELECT {cols} FROM _new_events")
        con.unregister("_new_events")


@pytest.fixture()
def con(tmp_path: Path):
    connection = warehouse.connect(tmp_path / "features.duckdb")
    store.ensure_schema(connection)
    insert(connection, QUOTES, EVENTS)
    F.compute_quote_features(connection)
    F.compute_market_features(connection)
    yield connection
    connection.close()


def quote_row(con, event, book, market, outcome, hour, point=None) -> dict:
    frame = con.execute(
        "SELECT * FROM quote_features WHERE event_id = ? AND bookmaker = ? AND market = ? "
        "AND outcome = ? AND observed_at = ? AND point IS NOT DISTINCT FROM ? ORDER BY seq",
        [event, book, market, outcome, at(hour), point],
    ).df()
    assert len(frame) >= 1, (event, book, market, outcome, hour)
    return frame.iloc[-1].to_dict()


def market_row(con, event, market, outcome, hour, point=None) -> dict:
    frame = con.execute(
        "SELECT * FROM market_features WHERE event_id = ? AND market = ? AND outcome = ? "
        "AND observed_at = ? AND point IS NOT DISTINCT FROM ?",
        [event, market, outcome, at(hour), point],
    ).df()
    assert len(frame) == 1, (event, market, outcome, hour, len(frame))
    return frame.iloc[0].to_dict()


def mult(*prices: float) -> list[float]:
    inv = [1 / p for p in prices]
    return [x / sum(inv) for x in inv]


# ---------------------------------------------------------------- quote features


def test_one_row_per_quote_with_keys(con):
    n_quotes = con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
    assert con.execute("SELECT count(*) FROM quote_features").fetchone()[0] == n_quotes
    cols = set(con.execute("SELECT * FROM quote_features LIMIT 0").df().columns)
    assert set(F.QUOTE_KEYS) | {"observed_at", "ingested_at"} <= cols
    assert {d.name for d in F.definitions_for(F.QUOTE_TABLE)} <= cols


def test_price_conversions_and_implied_probability(con):
    r = quote_row(con, E1, "draftkings", "h2h", "home", 12)
    assert r["decimal_odds"] == pytest.approx(1.80)
    assert r["implied_prob"] == pytest.approx(1 / 1.80)
    assert r["american_odds"] == pytest.approx(-125.0)
    r = quote_row(con, E1, "draftkings", "h2h", "away", 12)
    assert r["american_odds"] == pytest.approx(110.0)


def test_changes_from_previous_and_first_quote(con):
    first = quote_row(con, E1, "draftkings", "h2h", "home", 12)
    assert math.isnan(first["price_change_prev"]) and math.isnan(first["prob_change_prev"])
    assert first["price_change_open"] == 0.0 and first["prob_change_open"] == 0.0
    r = quote_row(con, E1, "draftkings", "h2h", "home", 13)
    assert r["price_change_prev"] == pytest.approx(0.05)
    assert r["prob_change_prev"] == pytest.approx(1 / 1.85 - 1 / 1.80)
    assert r["price_change_open"] == pytest.approx(0.05)
    r = quote_row(con, E1, "draftkings", "h2h", "home", 16)
    assert r["price_change_prev"] == pytest.approx(0.0)
    assert r["price_change_open"] == pytest.approx(0.05)
    assert r["prob_change_open"] == pytest.approx(1 / 1.85 - 1 / 1.80)


def test_seconds_since_previous_change(con):
    assert math.isnan(quote_row(con, E1, "draftkings", "h2h", "home", 12)["seconds_since_change"])
    # 13:00 is a change; the change before it is the first quote at 12:00.
    assert quote_row(con, E1, "draftkings", "h2h", "home", 13)["seconds_since_change"] == 3600
    # 16:00 repeats the price: the latest change before it was at 13:00.
    assert quote_row(con, E1, "draftkings", "h2h", "home", 16)["seconds_since_change"] == 3 * 3600


def test_hours_to_commence_and_time_of_day(con):
    r = quote_row(con, E1, "draftkings", "h2h", "home", 12)
    assert r["hours_to_commence"] == pytest.approx(8.0)
    assert r["tod_sin"] == pytest.approx(0.0, abs=1e-12)  # noon UTC: angle pi
    assert r["tod_cos"] == pytest.approx(-1.0)
    r = quote_row(con, E2, "bet365", "h2h", "home", 10)
    assert r["tod_sin"] == pytest.approx(math.sin(2 * math.pi * 10 / 24))
    assert r["tod_cos"] == pytest.approx(math.cos(2 * math.pi * 10 / 24))


def test_devig_on_the_books_complete_market(con):
    r = quote_row(con, E1, "pinnacle", "h2h", "home", 12)
    assert r["devig_multiplicative"] == pytest.approx(mult(1.90, 2.00)[0])
    assert r["book_overround"] == pytest.approx(1 / 1.90 + 1 / 2.00 - 1)
    assert r["fair_prob"] == pytest.approx(r[f"devig_{F.DEFAULT_METHOD}"])
    # a favourite gains under power and Shin relative to multiplicative
    assert r["devig_power"] > r["devig_multiplicative"]
    assert r["devig_shin"] > r["devig_multiplicative"]


def test_devig_carries_the_unchanged_side_forward(con):
    # at 13:00 draftkings sent only home; its away price of 12:00 still stands.
    r = quote_row(con, E1, "draftkings", "h2h", "home", 13)
    assert r["devig_multiplicative"] == pytest.approx(mult(1.85, 2.10)[0])


def test_devig_sums_to_one_per_complete_market(con):
    sums = con.execute(
        "SELECT sum(devig_multiplicative), sum(devig_power), sum(devig_shin) "
        "FROM book_market_state WHERE complete GROUP BY event_id, bookmaker, market, line, "
        "observed_at"
    ).fetchall()
    assert sums
    for row in sums:
        assert row == pytest.approx((1.0, 1.0, 1.0), abs=1e-9)


def test_spreads_pair_home_and_away_lines_and_totals_share_the_point(con):
    home = quote_row(con, E1, "draftkings", "spreads", "home", 12, point=-3.5)
    away = quote_row(con, E1, "draftkings", "spreads", "away", 12, point=3.5)
    assert home["line"] == away["line"] == -3.5
    assert home["devig_multiplicative"] == pytest.approx(0.5)
    assert away["devig_shin"] == pytest.approx(0.5)
    over = quote_row(con, E1, "draftkings", "totals", "over", 12, point=200.5)
    assert over["devig_multiplicative"] == pytest.approx(mult(1.80, 2.00)[0])


def test_incomplete_market_has_null_devig(con):
    r = quote_row(con, E1, "betmgm", "totals", "over", 12, point=200.5)
    assert r["implied_prob"] == pytest.approx(1 / 1.95)
    for col in ("devig_multiplicative", "devig_power", "devig_shin", "book_overround"):
        assert r[col] is None or math.isnan(r[col])
    # soccer h2h is 3-way: williamhill without a draw price is incomplete.
    r = quote_row(con, E2, "williamhill", "h2h", "home", 10)
    assert math.isnan(r["devig_multiplicative"])
    r = quote_row(con, E2, "bet365", "h2h", "draw", 10)
    assert r["devig_multiplicative"] == pytest.approx(mult(2.50, 3.20, 3.00)[1])


def test_tie_on_observed_at_latest_ingested_wins_and_is_known_only_then(con):
    rows = con.execute(
        "SELECT decimal_odds, devig_multiplicative, ingested_at FROM quote_features "
        "WHERE event_id = ? AND outcome = 'home' ORDER BY seq",
        [E3],
    ).fetchall()
    assert [r[0] for r in rows] == [1.50, 1.55]
    expected = mult(1.55, 2.60)[0]
    assert all(r[1] == pytest.approx(expected) for r in rows)
    # the de-vigged value uses the 13:00-ingested price, so it is known from 13:00 only
    assert all(r[2] == at(13) for r in rows)


# ---------------------------------------------------------------- market features


def test_market_consensus_best_price_and_point_in_time(con):
    r = market_row(con, E1, "h2h", "home", 13)
    # at 13:00: pinnacle (12:00) and draftkings (home 13:00, away 12:00); fanduel not yet.
    assert r["n_books"] == 2
    assert r["n_devig_books"] == 2
    pin, dk = mult(1.90, 2.00)[0], mult(1.85, 2.10)[0]
    assert r["consensus_prob"] == pytest.approx((pin + dk) / 2)
    assert r["consensus_prob_std"] == pytest.approx(np.std([pin, dk], ddof=1))
    assert r["mean_price"] == pytest.approx((1.90 + 1.85) / 2)
    assert r["price_std"] == pytest.approx(np.std([1.90, 1.85], ddof=1))
    assert r["best_price"] == pytest.approx(1.90)
    assert r["best_book"] == "pinnacle"
    assert r["best_price_age_s"] == 3600
    assert r["best_implied_sum"] == pytest.approx(1 / 1.90 + 1 / 2.10)
    assert r["arb_margin"] == pytest.approx(1 - 1 / 1.90 - 1 / 2.10)
    assert r["stalest_quote_age_s"] == 3600
    assert r["ingested_at"] == at(13)


def test_constructed_arbitrage_has_positive_margin(con):
    home = market_row(con, E1, "h2h", "home", 14)
    away = market_row(con, E1, "h2h", "away", 14)
    assert home["best_book"] == "fanduel" and home["best_price"] == pytest.approx(2.20)
    assert away["best_book"] == "draftkings" and away["best_price"] == pytest.approx(2.10)
    margin = 1 - (1 / 2.20 + 1 / 2.10)
    assert margin > 0
    assert home["arb_margin"] == pytest.approx(margin)
    assert away["arb_margin"] == pytest.approx(margin)
    assert home["n_books"] == 3
    assert home["stalest_quote_age_s"] == 2 * 3600  # pinnacle's and draftkings' 12:00 quotes


def test_sharp_probability_and_retail_minus_sharp(con):
    r = market_row(con, E1, "h2h", "home", 14)
    pin = mult(1.90, 2.00)[0]
    retail = (mult(1.85, 2.10)[0] + mult(2.20, 1.70)[0]) / 2
    assert r["sharp_source"] == "sharp"
    assert r["n_sharp_books"] == 1
    assert r["sharp_prob"] == pytest.approx(pin)
    assert r["sharp_price"] == pytest.approx(1.90)
    assert r["retail_prob"] == pytest.approx(retail)
    assert r["retail_minus_sharp"] == pytest.approx(retail - pin)


def test_sharp_falls_back_to_consensus(con):
    r = market_row(con, E2, "h2h", "home", 10)
    assert r["sharp_source"] == "consensus"
    assert r["n_sharp_books"] == 0
    assert r["n_books"] == 2 and r["n_devig_books"] == 1  # williamhill is incomplete
    assert r["sharp_prob"] == pytest.approx(r["consensus_prob"])
    assert r["sharp_prob"] == pytest.approx(mult(2.50, 3.20, 3.00)[0])
    assert r["best_price"] == pytest.approx(2.50) and r["best_book"] == "bet365"
    draw = market_row(con, E2, "h2h", "draw", 10)
    assert draw["arb_margin"] == pytest.approx(1 - (1 / 2.50 + 1 / 3.20 + 1 / 3.10))


def test_market_rows_are_keyed_by_the_outcomes_point(con):
    home = market_row(con, E1, "spreads", "home", 12, point=-3.5)
    away = market_row(con, E1, "spreads", "away", 12, point=3.5)
    assert home["line"] == away["line"] == -3.5
    assert home["arb_margin"] == pytest.approx(1 - 2 / 1.91)
    over = market_row(con, E1, "totals", "over", 12, point=200.5)
    assert over["n_books"] == 2 and over["n_devig_books"] == 1  # betmgm has no under
    assert over["best_book"] == "betmgm"


def test_ttl_drops_stale_quotes(con):
    F.compute_market_features(con, ttl=timedelta(minutes=90))
    r = market_row(con, E1, "h2h", "home", 14)
    # pinnacle's 12:00 quotes are 2 h old; draftkings keeps home (13:00) but its away is stale
    assert r["n_books"] == 2  # draftkings home, fanduel home
    assert r["n_devig_books"] == 1  # only fanduel is complete and fresh
    assert r["sharp_source"] == "consensus"
    away = market_row(con, E1, "h2h", "away", 14)
    assert away["best_book"] == "fanduel"
    assert away["stalest_quote_age_s"] == 3600


def test_market_row_waits_for_late_inputs(tmp_path):
    con = warehouse.connect(tmp_path / "late.duckdb")
    store.ensure_schema(con)
    late = [
        q(E1, "pinnacle", "h2h", "home", 1.90, 12),
        q(E1, "pinnacle", "h2h", "away", 2.00, 12, ingested_hour=15),
        q(E1, "draftkings", "h2h", "home", 1.80, 13),
        q(E1, "draftkings", "h2h", "away", 2.10, 13),
    ]
    insert(con, late, EVENTS[:1])
    F.compute_quote_features(con)
    F.compute_market_features(con)
    assert market_row(con, E1, "h2h", "home", 13)["ingested_at"] == at(15)
    assert quote_row(con, E1, "pinnacle", "h2h", "home", 12)["ingested_at"] == at(15)


def test_empty_store_gives_empty_tables(tmp_path):
    con = warehouse.connect(tmp_path / "empty.duckdb")
    store.ensure_schema(con)
    assert F.compute_quote_features(con) == 0
    assert F.compute_market_features(con) == 0
    assert F.compute_pair_features(con) == 0
    frame = F.feature_registry_frame(con)
    assert (frame["row_count"] == 0).all() and frame["null_rate"].isna().all()


# ---------------------------------------------------------------- pairs


def test_pair_features_for_a_named_pair(con):
    n = F.compute_pair_features(con, "fanduel", "draftkings")
    assert n > 0
    rows = con.execute(
        "SELECT * FROM arbitrage_pair_features WHERE book_a = 'fanduel' AND outcome_a = 'home' "
        "ORDER BY observed_at"
    ).df()
    assert set(rows["book_b"]) == {"draftkings"}
    first = rows.iloc[0]
    assert first["observed_at"] == at(14)
    assert first["odds_a"] == pytest.approx(2.20) and first["odds_b"] == pytest.approx(2.10)
    assert first["odds_spread"] == pytest.approx(0.10)
    assert first["implied_diff"] == pytest.approx(1 / 2.20 - 1 / 2.10)
    assert first["implied_sum"] == pytest.approx(1 / 2.20 + 1 / 2.10)
    assert first["implied_sum"] < 1  # the constructed arbitrage
    assert first["time_position"] == pytest.approx(0.0)
    assert math.isnan(first["delta_a"])
    later = rows.iloc[1]  # 16:00: draftkings re-quotes home; the pair series moves on
    assert later["observed_at"] == at(16)
    assert later["delta_a"] == pytest.approx(0.0) and later["rel_delta_b"] == pytest.approx(0.0)
    assert later["time_position"] == pytest.approx(2 / 6)
    assert set(F.ARBITRAGE_FEATURES.values()) <= {f"{F.PAIR_TABLE}:{c}" for c in rows.columns}


def test_all_pairs_both_orientations(con):
    F.compute_pair_features(con)
    pairs = con.execute(
        "SELECT DISTINCT book_a, book_b, outcome_a FROM arbitrage_pair_features "
        "WHERE event_id = ? AND market = 'h2h' AND observed_at = ?",
        [E1, at(14)],
    ).fetchall()
    assert len(pairs) == 3 * 2 * 2  # ordered pairs of 3 books x 2 sides
    # 3-way markets have no complementary pair
    assert (
        con.execute(
            "SELECT count(*) FROM arbitrage_pair_features WHERE event_id = ?", [E2]
        ).fetchone()[0]
        == 0
    )


# ---------------------------------------------------------------- incremental, registry


def test_incremental_recompute_matches_full(con):
    before_e2 = con.execute(
        "SELECT * FROM market_features WHERE event_id = ? ORDER BY ALL", [E2]
    ).df()
    insert(con, [q(E1, "fanduel", "h2h", "home", 2.30, 15, ingested_hour=15)])
    F.compute_quote_features(con, where="ingested_at >= TIMESTAMPTZ '2024-01-01 15:00:00+00'")
    F.compute_market_features(con, event_ids=[E1])
    incremental_q = con.execute("SELECT * FROM quote_features ORDER BY ALL").df()
    incremental_m = con.execute("SELECT * FROM market_features ORDER BY ALL").df()
    assert market_row(con, E1, "h2h", "home", 15)["best_price"] == pytest.approx(2.30)
    after_e2 = con.execute(
        "SELECT * FROM market_features WHERE event_id = ? ORDER BY ALL", [E2]
    ).df()
    pd.testing.assert_frame_equal(before_e2, after_e2)
    F.compute_quote_features(con)
    F.compute_market_features(con)
    pd.testing.assert_frame_equal(
        incremental_q.drop(columns="seq"),
        con.execute("SELECT * FROM quote_features ORDER BY ALL").df().drop(columns="seq"),
    )
    pd.testing.assert_frame_equal(
        incremental_m, con.execute("SELECT * FROM market_features ORDER BY ALL").df()
    )


def test_lstm_and_arbitrage_features_are_columns(con):
    F.compute_pair_features(con)
    assert len(F.LSTM_FEATURES) == 15  # 14 inputs; time of day is a sin/cos pair
    assert len(F.ARBITRAGE_FEATURES) == 10
    for ref in [*F.LSTM_FEATURES.values(), *F.ARBITRAGE_FEATURES.values()]:
        table, column = ref.split(":")
        assert column in con.execute(f"SELECT * FROM {table} LIMIT 0").df().columns, ref


def test_registry_frame_has_freshness_for_every_feature(con):
    frame = F.feature_registry_frame(con)
    assert list(frame["name"]) == [d.name for d in F.FEATURE_DEFINITIONS]
    assert frame["name"].is_unique
    qf = frame[frame["group"] == F.QUOTE_TABLE]
    assert (qf["row_count"] == len(QUOTES)).all()
    assert (qf["latest_observed_at"] == at(16)).all()
    implied = frame.set_index("name").loc["implied_prob"]
    assert implied["null_rate"] == 0.0
    devig_nulls = frame.set_index("name").loc["devig_multiplicative", "null_rate"]
    assert devig_nulls == pytest.approx(3 / len(QUOTES))  # betmgm over, williamhill x2
    pairs = frame[frame["group"] == F.PAIR_TABLE]
    assert (pairs["row_count"] == 0).all()  # not computed in this fixture
    for col in ("description", "dtype", "entity", "version", "owner", "sql_hash"):
        assert frame[col].notna().all()


def test_committed_feature_versions_match_definitions():
    assert F.check_feature_versions() == []


def test_changing_sql_without_a_version_bump_is_detected():
    d = F.FEATURE_DEFINITIONS[0]
    edited = dataclasses.replace(d, sql=d.sql + " * 1.0")
    problems = F.check_feature_versions([edited])
    assert any("without a version bump" in p for p in problems)
    bumped = dataclasses.replace(edited, version=d.version + 1)
    problems = F.check_feature_versions([bumped])
    assert problems and not any("without a version bump" in p for p in problems)
    committed = {**F.FEATURE_VERSIONS, d.name: (bumped.version, bumped.sql_hash)}
    definitions = [bumped if x.name == d.name else x for x in F.FEATURE_DEFINITIONS]
    assert F.check_feature_versions(definitions, committed) == []


def test_changing_a_shared_fragment_changes_the_hash(monkeypatch):
    d = next(x for x in F.FEATURE_DEFINITIONS if x.name == "devig_shin")
    before = d.sql_hash
    monkeypatch.setitem(F._FRAGMENTS, "devig", F._FRAGMENTS["devig"] + " -- edited")
    assert d.sql_hash != before


# ---------------------------------------------------------------- real data


def brute_force_market(quotes: pd.DataFrame, t: pd.Timestamp, ttl: timedelta) -> pd.DataFrame:
    """Plain-pandas reference: each book's latest quote per (outcome, point) at or before t
    (one line per book and outcome at a time), within the TTL; best price per outcome."""
    seen = quotes[quotes["observed_at"] <= t]
    latest_instant = seen.groupby(["bookmaker", "outcome"])["observed_at"].transform("max")
    state = seen[(seen["observed_at"] == latest_instant) & (seen["observed_at"] >= t - ttl)]
    return (
        state.groupby(["outcome", "point"], dropna=False)
        .agg(n_books=("bookmaker", "nunique"), best_price=("price", "max"))
        .reset_index()
    )


@pytest.fixture(scope="module")
def wnba(tmp_path_factory):
    path = SHARED_DATA / "odds-api" / "changes" / "wnba_changes.parquet"
    if not path.exists():
        pytest.skip(f"real change log not found at {path}")
    con = warehouse.connect(tmp_path_factory.mktemp("wnba") / "wnba.duckdb")
    store.ensure_schema(con)
    F.load_odds_api_change_log(con, [path])
    F.compute_quote_features(con)
    F.compute_market_features(con)
    yield con
    con.close()


@needs_shared_data
def test_real_wnba_quote_features_are_sane(wnba):
    n_quotes = wnba.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
    assert n_quotes > 50_000
    stats = wnba.execute(
        """
        SELECT count(*), min(implied_prob), max(implied_prob),
            min(devig_multiplicative), max(devig_multiplicative),
            min(devig_power), max(devig_power), min(devig_shin), max(devig_shin),
            avg((devig_multiplicative IS NOT NULL)::INT), min(book_overround),
            max(book_overround), min(tod_sin), max(tod_cos), count(hours_to_commence)
        FROM quote_features
        """
    ).fetchone()
    assert stats[0] == n_quotes
    for lo, hi in zip(stats[1:9:2], stats[2:9:2], strict=True):
        assert 0 < lo < hi < 1
    assert stats[9] > 0.9  # nearly every quote sits in a complete book market
    assert stats[10] > -0.1 and stats[11] < 0.5
    assert stats[12] >= -1 and stats[13] <= 1
    assert stats[14] == n_quotes  # every event has a commence time
    worst = wnba.execute(
        """
        SELECT max(abs(s - 1)) FROM (
            SELECT sum(devig_multiplicative) + sum(devig_power) + sum(devig_shin) - 2 AS s
            FROM book_market_state WHERE complete
            GROUP BY event_id, bookmaker, market, line, observed_at)
        """
    ).fetchone()[0]
    assert worst < 1e-9


@needs_shared_data
def test_real_wnba_market_features_are_sane(wnba):
    row = wnba.execute(
        """
        SELECT count(*), min(consensus_prob), max(consensus_prob), max(n_books),
            min(stalest_quote_age_s), max(stalest_quote_age_s), min(best_price_age_s),
            min(arb_margin), max(arb_margin), avg((sharp_source = 'sharp')::INT),
            min(observed_at - ingested_at)
        FROM market_features
        """
    ).fetchone()
    n, lo, hi, max_books, min_age, max_age, min_best_age, min_arb, max_arb, sharp, lag = row
    assert n > 10_000
    assert 0 < lo < hi < 1
    n_books = wnba.execute("SELECT count(DISTINCT bookmaker) FROM odds_quotes").fetchone()[0]
    assert 2 <= max_books <= n_books
    assert min_age >= 0 and min_best_age >= 0  # no quote from after t is ever used
    assert max_age <= F.DEFAULT_TTL.total_seconds()
    assert -0.5 < min_arb < max_arb < 1  # in play, stale quotes make false arbitrage
    pre_match = wnba.execute(
        "SELECT min(arb_margin), max(arb_margin) FROM market_features m "
        "JOIN events e USING (event_id) WHERE m.observed_at < e.commence_time "
        "AND m.stalest_quote_age_s < 3600"
    ).fetchone()
    assert -0.2 < pre_match[0] < 0 < pre_match[1] < 0.05  # rare, small real arbitrages
    assert 0 < sharp < 1  # lowvig quotes WNBA: sharp where present, consensus elsewhere
    assert lag >= timedelta(0)  # historical load: inputs known by t
    dupes = wnba.execute(
        "SELECT count(*) FROM (SELECT event_id, market, outcome, point, observed_at "
        "FROM market_features GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    assert dupes == 0


@needs_shared_data
def test_real_wnba_market_features_match_brute_force(wnba):
    quotes = wnba.execute(
        "SELECT event_id, bookmaker, market, outcome, point, price, observed_at FROM odds_quotes"
    ).df()
    rng = np.random.default_rng(7)
    probes = wnba.execute("SELECT DISTINCT event_id, market, observed_at FROM market_features").df()
    for _, probe in probes.sample(25, random_state=rng.integers(1 << 31)).iterrows():
        sub = quotes[
            (quotes["event_id"] == probe["event_id"]) & (quotes["market"] == probe["market"])
        ]
        expected = brute_force_market(sub, probe["observed_at"], F.DEFAULT_TTL)
        got = wnba.execute(
            "SELECT outcome, point, n_books, best_price FROM market_features "
            "WHERE event_id = ? AND market = ? AND observed_at = ?",
            [probe["event_id"], probe["market"], probe["observed_at"]],
        ).df()
        merged = expected.merge(got, on=["outcome", "point"], how="outer", suffixes=("", "_got"))
        assert len(merged) == len(expected) == len(got), probe.to_dict()
        np.testing.assert_array_equal(merged["n_books"], merged["n_books_got"])
        np.testing.assert_allclose(merged["best_price"], merged["best_price_got"])


def test_view_specs_name_unique_rows_per_key_and_time(con):
    F.compute_pair_features(con)
    for group, spec in F.view_specs().items():
        keys = ", ".join(
            [*spec["keys"], spec["timestamp"], *([spec["sequence"]] if spec["sequence"] else [])]
        )
        dupes = con.execute(
            f"SELECT count(*) FROM (SELECT {keys} FROM {group} GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()[0]
        assert dupes == 0, group
        cols = set(con.execute(f"SELECT * FROM {group} LIMIT 0").df().columns)
        assert set(spec["features"]) <= cols
