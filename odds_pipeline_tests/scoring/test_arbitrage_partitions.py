"""Arbitrage windows by day: each window in exactly one partition, as a whole-history scan finds it."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from odds_pipeline import warehouse
from odds_pipeline.features.compute import load_odds_api_change_log
from odds_pipeline.ingestion import store
from odds_pipeline.scoring.arbitrage import (
    ScanConfig,
    days_to_scan,
    feed_now,
    new_actionable_windows,
    scan,
    scan_day,
    window_keys,
    write_windows,
)
from odds_pipeline_tests.conftest import SHARED_DATA, needs_shared_data
from odds_pipeline_tests.scoring.test_arbitrage import insert_quotes, q, two_way

KEY = ["event_id", "market", "line", "opened_at", "n_legs"]
COMPARED = [*KEY, "closed_at", "n_instants", "best_at", "best_margin", "stakes", "status", "reason"]


def _days(con: duckdb.DuckDBPyConnection) -> list[str]:
    first, last = con.execute(
        "SELECT min(observed_at), max(observed_at) FROM odds_quotes"
    ).fetchone()
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(first.date(), last.date(), freq="D")]


def _by_day(con: duckdb.DuckDBPyConnection, config: ScanConfig) -> pd.DataFrame:
    parts = [scan_day(con, config, day).windows for day in _days(con)]
    return pd.concat(parts, ignore_index=True)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a = a[COMPARED].sort_values(KEY, na_position="first").reset_index(drop=True)
    b = b[COMPARED].sort_values(KEY, na_position="first").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def _at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_a_window_open_across_midnight_belongs_to_the_day_it_opened(con):
    rows = [
        {**r, "observed_at": _at("2026-07-01 23:55")}
        for r in [q("A", "home", 2.10), q("A", "away", 1.70), q("B", "home", 1.75),
                  q("B", "away", 2.05)]
    ] + [{**q("A", "home", 1.80), "observed_at": _at("2026-07-02 00:10")}]  # fmt: skip
    insert_quotes(con, rows)
    config = ScanConfig(staleness_seconds=3600)
    first = scan_day(con, config, "2026-07-01").windows
    second = scan_day(con, config, "2026-07-02").windows
    paired = first[first["n_legs"] >= 2]
    assert len(paired) == 1
    assert paired["opened_at"].iloc[0] == _at("2026-07-01 23:55")
    assert paired["closed_at"].iloc[0] == _at("2026-07-02 00:10")  # followed past midnight
    assert second[second["n_legs"] >= 2].empty  # not again as "opened at 00:00"


def test_writing_a_day_replaces_that_day_only_and_twice_is_the_same(con):
    days = {"2026-07-01": _at("2026-07-01 12:00"), "2026-07-02": _at("2026-07-02 12:00")}
    rows = [
        {**r, "observed_at": t, "event_id": f"e-{day}"}
        for day, t in days.items()
        for r in [q("A", "home", 2.10), q("A", "away", 1.70), q("B", "home", 1.75),
                  q("B", "away", 2.05)]
    ]  # fmt: skip
    insert_quotes(con, rows)
    config = ScanConfig(staleness_seconds=3600)
    # A first day without windows (all-NULL columns) must not fix the table's types.
    assert write_windows(con, scan_day(con, config, "2026-06-30").windows, day="2026-06-30").empty
    for day in days:
        write_windows(con, scan_day(con, config, day).windows, day=day)
    table = con.execute("SELECT * FROM arbitrage_windows ORDER BY opened_at").df()
    again = write_windows(con, scan_day(con, config, "2026-07-01").windows, day="2026-07-01")
    after = con.execute("SELECT * FROM arbitrage_windows ORDER BY opened_at").df()
    pd.testing.assert_frame_equal(table, after)
    assert set(table["opened_day"]) == set(days) and set(again["opened_day"]) == {"2026-07-01"}
    assert window_keys(con, "2026-07-02") == {
        ("e-2026-07-02", "h2h", None, str(_at("2026-07-02 12:00")))
    }
    with pytest.raises(ValueError, match="another day"):
        write_windows(con, scan_day(con, config, "2026-07-02").windows, day="2026-07-01")


def test_only_new_recent_actionable_windows_are_alerted(con):
    rows = [
        {**r, "observed_at": t}
        for t in (_at("2026-07-01 10:00"), _at("2026-07-01 10:30"))
        for r in [q("A", "home", 2.10), q("A", "away", 1.70), q("B", "home", 1.75),
                  q("B", "away", 2.05)]
    ] + [{**q("A", "home", 1.80), "observed_at": _at("2026-07-01 10:05")}]  # fmt: skip
    insert_quotes(con, rows)
    written = write_windows(
        con,
        scan_day(con, ScanConfig(staleness_seconds=600), "2026-07-01").windows,
        day="2026-07-01",
    )
    actionable = written[written["status"] == "actionable"]
    assert len(actionable) == 2  # 10:00-10:05 and from 10:30
    now = feed_now(con)  # the newest quote: 10:30
    recent = new_actionable_windows(written, set(), pd.Timedelta(minutes=15), now)
    assert [str(r["opened_at"]) for r in recent] == [str(_at("2026-07-01 10:30"))]
    seen = window_keys(con, "2026-07-01")
    assert new_actionable_windows(written, seen, pd.Timedelta(days=1), now) == []
    # A backfill long after: measured against the newest data, not the day's own windows.
    later = now + pd.Timedelta(days=3)
    assert new_actionable_windows(written, set(), pd.Timedelta(hours=1), later) == []


def test_a_window_open_at_midnight_is_closed_by_the_next_days_first_live_run(con):
    """Before: the live run of the new day scanned only that day, and yesterday's window
    stayed `still_open` with duration 0 for good (the backtest then dropped it)."""
    rows = [
        {**r, "observed_at": _at("2026-07-01 23:45")}
        for r in [q("A", "home", 2.10), q("A", "away", 1.70), q("B", "home", 1.75),
                  q("B", "away", 2.05)]
    ] + [{**q("A", "home", 1.80), "observed_at": _at("2026-07-02 00:15")}]  # fmt: skip
    insert_quotes(con, rows)
    config = ScanConfig(staleness_seconds=3600)
    live_run = _at("2026-07-01 23:46")  # the last live run of the day
    for day in days_to_scan("2026-07-01", live_run):
        write_windows(con, scan_day(con, config, day, now=live_run).windows, day=day)
    next_run = _at("2026-07-02 00:40")  # the first live run of the next day
    assert days_to_scan("2026-07-02", next_run) == ["2026-07-01", "2026-07-02"]
    assert days_to_scan("2026-07-02", _at("2026-07-02 07:00")) == ["2026-07-02"]
    for day in days_to_scan("2026-07-02", next_run):
        write_windows(con, scan_day(con, config, day, now=next_run).windows, day=day)
    stored = con.execute(
        "SELECT * FROM arbitrage_windows WHERE n_legs >= 2 ORDER BY opened_at"
    ).df()
    assert len(stored) == 1 and not stored["still_open"].iloc[0]
    assert stored["closed_at"].iloc[0] == _at("2026-07-02 00:15")
    assert stored["duration_seconds"].iloc[0] == 1800


def test_a_window_carries_only_a_score_known_before_it_opened(con):
    """The champion's arb_ahead score from after the opening is hindsight, not a prediction."""
    from odds_pipeline.scoring.predictions import ARBITRAGE_SCORES_SQL, ARBITRAGE_SCORES_TABLE

    insert_quotes(con, [{**r, "observed_at": _at("2026-07-01 12:00")} for r in two_way()])
    con.execute(ARBITRAGE_SCORES_SQL)
    for instant, score, version in (("11:50", 0.3, "1"), ("12:10", 0.9, "2")):
        con.execute(
            f"INSERT INTO {ARBITRAGE_SCORES_TABLE} VALUES ('2026-07-01', 'e1', 'h2h', NULL, 'A', "
            "'B', 'home', ?, ?, 0.0, 'champion', 'arb', ?, NULL, 'h', now(), NULL)",
            [_at(f"2026-07-01 {instant}").to_pydatetime(), score, version],
        )
    windows = scan_day(con, ScanConfig(staleness_seconds=3600), "2026-07-01").windows
    written = write_windows(con, windows, ARBITRAGE_SCORES_TABLE, day="2026-07-01")
    paired = written[written["n_legs"] >= 2]
    assert list(paired["arb_ahead_score"]) == [0.3]
    assert list(paired["arb_ahead_model_version"]) == ["1"]


def test_simulated_days_scanned_one_by_one_equal_one_scan_of_everything(tmp_path):
    from odds_pipeline.ingestion.sources import simulator

    generated = simulator.generate(
        simulator.SimulatorConfig(n_events=24, seed=3, arbitrage_rate=4.0), trusted=True
    )
    odds = store.OddsStore(tmp_path / "sim.duckdb")
    odds.replace_load("sim", simulator.SOURCE, generated)
    config = ScanConfig(staleness_seconds=900)
    with odds.connection() as con:
        whole = scan(con, config).windows
        assert len(_days(con)) >= 3 and len(whole[whole["status"] == "actionable"]) > 5
        _same(_by_day(con, config), whole)


@needs_shared_data
@pytest.mark.shared_data
def test_real_wnba_days_scanned_one_by_one_equal_one_scan_of_everything(tmp_path):
    path = SHARED_DATA / "odds-api" / "changes" / "wnba_changes.parquet"
    if not path.exists():
        pytest.skip(f"real change log not found at {path}")
    con = warehouse.connect(tmp_path / "wnba.duckdb")
    try:
        store.ensure_schema(con)
        load_odds_api_change_log(con, [path])
        config = ScanConfig()
        whole = scan(con, config).windows
        assert len(whole) > 100
        _same(_by_day(con, config), whole)
    finally:
        con.close()
