"""The change-log loader keeps withdrawals, so a withdrawn price ends at once (not at its TTL)."""

from odds_pipeline import warehouse
from odds_pipeline.features.compute import load_odds_api_change_log
from odds_pipeline.ingestion import store
from odds_pipeline.scoring.arbitrage import ScanConfig, scan
from odds_pipeline_tests.conftest import SHARED_DATA, needs_shared_data


@needs_shared_data
def test_change_log_removals_are_stored_and_end_quotes_in_the_scanner(tmp_path):
    path = sorted((SHARED_DATA / "odds-api" / "changes").glob("*wnba*"))[0]
    con = warehouse.connect(tmp_path / "w.duckdb")
    store.ensure_schema(con)
    load_odds_api_change_log(con, [path])
    expected = con.execute(
        f"SELECT count(*) FROM read_parquet('{path}') WHERE coalesce(removed, false) "
        "AND market IN ('h2h', 'spreads', 'totals')"
    ).fetchone()[0]
    stored = con.execute("SELECT count(*) FROM quote_removals").fetchone()[0]
    assert expected > 0 and 0 < stored <= expected  # rows whose outcome maps to a side
    # Until-replaced quotes: with removals a withdrawn leg no longer opens windows silently.
    result = scan(con, ScanConfig(staleness_seconds=None))
    con.execute("DROP TABLE quote_removals")
    without = scan(con, ScanConfig(staleness_seconds=None))
    assert len(result.actionable) < len(without.actionable)
