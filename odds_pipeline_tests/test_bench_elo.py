"""The Elo reference of benchmarks/bench_model_targets.py uses only results known at the decision."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_model_targets as bench  # noqa: E402


def test_elo_counts_only_results_resolved_before_the_decision() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE events (event_id VARCHAR, commence_time TIMESTAMPTZ,"
        " home_team VARCHAR, away_team VARCHAR)"
    )
    con.execute(
        "CREATE TABLE results (event_id VARCHAR, home_score DOUBLE, away_score DOUBLE,"
        " resolved_at TIMESTAMPTZ)"
    )
    con.execute(
        """INSERT INTO events VALUES
        ('a', '2024-01-01 15:00+00', 'x', 'y'),   -- x beats y, resolved 17:00
        ('b', '2024-01-01 17:30+00', 'x', 'z'),   -- decision 16:30: a is not known yet
        ('c', '2024-01-01 18:30+00', 'x', 'z'),   -- decision 17:30: a is known
        ('d', '2024-01-02 15:00+00', 'y', 'z')"""
    )
    con.execute("INSERT INTO results VALUES ('a', 3, 0, '2024-01-01 17:00+00')")
    elo = bench._elo_difference(con, decision_offset_hours=1.0)
    assert elo["a"] == elo["b"] == 0.0
    assert elo["c"] > 0.0  # x gained from a
    assert elo["d"] < 0.0  # y lost it
