"""The store replaces a load atomically: re-writing never duplicates, a failure leaves the old state."""

import pandas as pd
import pytest

from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.market.quotes import (
    CANDIDATE_COLUMNS,
    EVENT_COLUMNS,
    RESULT_COLUMNS,
    ParseResult,
    validate_candidates,
)

T0 = pd.Timestamp("2024-01-01T12:00:00Z")


def parse_result(load_id: str, prices: list[float], event: str = "e1") -> ParseResult:
    rows = [
        {
            "source": "test",
            "event_id": event,
            "bookmaker": f"book{i}",
            "market": "h2h",
            "outcome": "home",
            "outcome_name": "Home",
            "point": None,
            "price": p,
            "price_raw": str(p),
            "observed_at": T0,
            "commence_time": T0 + pd.Timedelta(days=1),
            "source_file": "f",
            "source_record": f"line {i}",
            "reason": None,
        }
        for i, p in enumerate(prices)
    ]
    quotes, rejected = validate_candidates(
        pd.DataFrame(rows, columns=CANDIDATE_COLUMNS), load_id=load_id, ingested_at=T0
    )
    events = pd.DataFrame(
        [[event, "test", "soccer", "L", "2024", T0 + pd.Timedelta(days=1), "A", "B"]],
        columns=EVENT_COLUMNS,
    )
    results = pd.DataFrame(
        [[event, "test", 1.0, 0.0, T0 + pd.Timedelta(days=2)]], columns=RESULT_COLUMNS
    )
    return ParseResult(
        quotes=quotes, rejected=rejected, events=events, results=results, prices_read=len(prices)
    )


def table_counts(store: OddsStore) -> dict[str, int]:
    with store.connection(read_only=True) as con:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("odds_quotes", "rejected_quotes", "events", "results", "loads")
        }


def test_rewriting_a_load_replaces_it(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:f", "test", parse_result("test:f", [2.0, 0.5, 3.0]))
    first = table_counts(store)
    store.replace_load("test:f", "test", parse_result("test:f", [2.0, 0.5, 3.0]))
    assert (
        table_counts(store)
        == first
        == {"odds_quotes": 2, "rejected_quotes": 1, "events": 1, "results": 1, "loads": 1}
    )


def test_a_smaller_new_version_removes_what_the_old_one_wrote(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:f", "test", parse_result("test:f", [2.0, 0.5, 3.0]))
    store.replace_load("test:f", "test", parse_result("test:f", [2.0]))
    assert table_counts(store)["odds_quotes"] == 1
    assert table_counts(store)["rejected_quotes"] == 0


def test_other_loads_are_untouched(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:a", "test", parse_result("test:a", [2.0], event="a"))
    store.replace_load("test:b", "test", parse_result("test:b", [2.0, 4.0], event="b"))
    store.replace_load("test:a", "test", parse_result("test:a", [2.5], event="a"))
    counts = store.query("SELECT load_id, count(*) AS n FROM odds_quotes GROUP BY 1 ORDER BY 1")
    assert counts["n"].tolist() == [1, 2]
    assert table_counts(store)["events"] == 2


def test_failure_mid_load_rolls_back_to_the_previous_state(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:f", "test", parse_result("test:f", [2.0, 3.0]))
    before = store.query("SELECT * FROM odds_quotes ORDER BY bookmaker")
    with pytest.raises(RuntimeError, match="boom"), store.load("test:f", "test") as writer:
        writer.write(parse_result("test:f", [9.0, 9.0, 9.0]))
        raise RuntimeError("boom")
    pd.testing.assert_frame_equal(
        store.query("SELECT * FROM odds_quotes ORDER BY bookmaker"), before
    )


def test_connection_is_utc(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    with store.connection() as con:
        assert con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"


def test_readers_can_open_an_empty_path(tmp_path):
    store = OddsStore(tmp_path / "new" / "w.duckdb")
    assert store.query("SELECT count(*) AS n FROM odds_quotes")["n"].tolist() == [0]
