"""A poll recomputes only the events it touched, and the result equals a full recompute."""

import pandas as pd

from odds_pipeline import warehouse
from odds_pipeline.features import compute as F
from odds_pipeline.ingestion import store
from odds_pipeline_tests.conftest import SHARED_DATA, needs_shared_data

TABLES = {
    F.QUOTE_TABLE: [*F.QUOTE_KEYS, "observed_at"],
    F.MARKET_TABLE: [*F.MARKET_KEYS, "observed_at"],
    F.PAIR_TABLE: [*F.PAIR_KEYS, "observed_at"],
}


def _frame(con, table: str) -> pd.DataFrame:
    keys = ", ".join(f"{k} NULLS FIRST" for k in TABLES[table])
    return con.execute(f"SELECT * FROM {table} ORDER BY {keys}").df()


def _compute(con, **scope) -> None:
    F.compute_quote_features(con, **scope)
    F.compute_market_features(con, **scope)
    F.compute_pair_features(con, **scope)


@needs_shared_data
def test_incremental_features_of_a_new_poll_equal_a_full_recompute(tmp_path):
    path = sorted((SHARED_DATA / "odds-api" / "changes").glob("*wnba*"))[0]
    full = warehouse.connect(tmp_path / "full.duckdb")
    store.ensure_schema(full)
    F.load_odds_api_change_log(full, [path])
    _compute(full)

    inc = warehouse.connect(tmp_path / "inc.duckdb")
    store.ensure_schema(inc)
    F.load_odds_api_change_log(inc, [path])
    cut = inc.execute("SELECT quantile_disc(observed_at, 0.9) FROM odds_quotes").fetchone()[0]
    # History up to the cut, computed in full; then "a poll" lands the rest as a new load.
    inc.execute("CREATE TEMP TABLE later AS SELECT * FROM odds_quotes WHERE observed_at > ?", [cut])
    inc.execute("DELETE FROM odds_quotes WHERE observed_at > ?", [cut])
    _compute(inc)
    inc.execute("UPDATE later SET load_id = 'odds_api_live:poll'")
    inc.execute("INSERT INTO odds_quotes SELECT * FROM later")
    touched = inc.execute("SELECT count(DISTINCT event_id) FROM later").fetchone()[0]
    events = inc.execute("SELECT count(DISTINCT event_id) FROM odds_quotes").fetchone()[0]
    assert 0 < touched < events  # the poll touches some events, not all
    _compute(inc, where="load_id = 'odds_api_live:poll'")

    for table in TABLES:
        expected, got = _frame(full, table), _frame(inc, table)
        assert len(got) == len(expected) > 0, table
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, obj=table)
