"""The store replaces a load atomically: re-writing never duplicates, a failure leaves the old state."""

import subprocess
import sys
import textwrap
import time

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


def test_query_waits_then_says_which_run_holds_the_warehouse(tmp_path, monkeypatch):
    from odds_pipeline.warehouse import READ_WAIT_ENV, WarehouseBusy

    from ..test_warehouse import RUN_ID, hold_writer

    monkeypatch.setenv(READ_WAIT_ENV, "0.5")
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:f", "test", parse_result("test:f", [2.0]))
    with hold_writer(store.path), pytest.raises(WarehouseBusy, match=RUN_ID):
        store.query("SELECT count(*) FROM odds_quotes")


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from odds_pipeline.ingestion import store as store_module
    from odds_pipeline_tests.ingestion.test_store import parse_result

    original = store_module.LoadWriter.write

    def slow_write(self, result):  # a big file: the load's transaction stays open a while
        original(self, result)
        time.sleep(float(sys.argv[3]))

    store_module.LoadWriter.write = slow_write
    n = int(sys.argv[2])
    per_load = {f"test:{i}": parse_result(f"test:{i}", [2.0], event=f"e{i}") for i in range(n)}
    print("writing", flush=True)
    store_module.OddsStore(sys.argv[1]).replace_loads("test", per_load)
    print("done", flush=True)
    """
)


def test_replace_loads_lets_a_reader_in_between_loads(tmp_path):
    """A reader waiting on a multi-file ingestion gets in after the current load, not the last."""
    from odds_pipeline.warehouse import connect

    from ..test_warehouse import REPO_ROOT

    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:seed", "test", parse_result("test:seed", [2.0], event="seed"))
    n_loads, per_load_s = 16, 0.5  # the whole ingestion (8 s) outlasts the reader's patience (4 s)
    writer = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(store.path), str(n_loads), str(per_load_s)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
        time.sleep(1.0)
        con = connect(store.path, read_only=True, timeout_s=4.0)
        try:
            loads = con.execute("SELECT count(*) FROM loads").fetchone()[0]
        finally:
            con.close()
        assert writer.poll() is None, "the reader should get in while the ingestion runs"
        assert 1 <= loads < 1 + n_loads
        assert writer.stdout.readline().strip() == "done", writer.stderr.read()
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert table_counts(store)["loads"] == 1 + n_loads


def test_replace_loads_is_atomic_per_load(tmp_path, monkeypatch):
    """A failure on one load keeps the loads before it (each complete) and that load's old state."""
    from odds_pipeline.ingestion import store as store_module

    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:b", "test", parse_result("test:b", [2.0, 3.0], event="b"))
    original = store_module.LoadWriter.write

    def failing_on_b(self, result):
        original(self, result)
        if self.load_id == "test:b":
            raise RuntimeError("disk full")

    monkeypatch.setattr(store_module.LoadWriter, "write", failing_on_b)
    per_load = {
        "test:a": parse_result("test:a", [2.0], event="a"),
        "test:b": parse_result("test:b", [9.0, 9.0, 9.0, 9.0], event="b"),
        "test:c": parse_result("test:c", [2.0], event="c"),
    }
    with pytest.raises(RuntimeError, match="disk full"):
        store.replace_loads("test", per_load)
    counts = store.query("SELECT load_id, count(*) AS n FROM odds_quotes GROUP BY 1 ORDER BY 1")
    assert dict(zip(counts["load_id"], counts["n"], strict=True)) == {"test:a": 1, "test:b": 2}


def test_loads_lists_every_load_with_its_rows_now(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:a", "test", parse_result("test:a", [2.0, 0.5, 3.0], event="a"))
    store.replace_load("test:b", "test", parse_result("test:b", [2.0], event="b"))
    frame = store.loads()
    assert frame.to_dict("records") == [
        {
            "load_id": "test:a",
            "source": "test",
            "prices_read": 3,
            "quotes_accepted": 2,
            "quotes_rejected": 1,
            "quote_rows": 2,
        },
        {
            "load_id": "test:b",
            "source": "test",
            "prices_read": 1,
            "quotes_accepted": 1,
            "quotes_rejected": 0,
            "quote_rows": 1,
        },
    ]


def test_drop_load_deletes_everything_the_load_wrote_and_nothing_else(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:a", "test", parse_result("test:a", [2.0, 0.5, 3.0], event="a"))
    store.replace_load("test:b", "test", parse_result("test:b", [2.0], event="b"))
    footprint = store.load_footprint("test:a")
    assert footprint == {
        "odds_quotes": 2,
        "rejected_quotes": 1,
        "events": 1,
        "results": 1,
        "loads": 1,
    }
    assert store.drop_load("test:a") == footprint
    assert table_counts(store) == {
        "odds_quotes": 1,
        "rejected_quotes": 0,
        "events": 1,
        "results": 1,
        "loads": 1,
    }
    assert store.load_footprint("test:a") == dict.fromkeys(footprint, 0)


def test_drop_load_also_removes_the_loads_withdrawals_when_that_table_exists(tmp_path):
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:a", "test", parse_result("test:a", [2.0], event="a"))
    with store.connection() as con:
        con.execute("CREATE TABLE quote_removals (event_id VARCHAR, load_id VARCHAR)")
        con.execute("INSERT INTO quote_removals VALUES ('a', 'test:a'), ('b', 'test:other')")
    assert store.load_footprint("test:a")["quote_removals"] == 1
    assert store.drop_load("test:a")["quote_removals"] == 1
    assert store.query("SELECT load_id FROM quote_removals")["load_id"].tolist() == ["test:other"]
