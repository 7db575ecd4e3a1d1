"""`odds-pipeline loads` and `drop-load`: find the load behind bad rows, then remove it."""

from __future__ import annotations

import json

import pytest

from odds_pipeline.cli import main
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.paths import warehouse_path

from .test_store import parse_result, table_counts


@pytest.fixture
def store() -> OddsStore:
    store = OddsStore(warehouse_path())
    store.replace_load("test:a.csv", "test", parse_result("test:a.csv", [2.0, 0.5, 3.0], "a"))
    store.replace_load("test:b.csv", "test", parse_result("test:b.csv", [2.0], "b"))
    return store


def test_loads_json_lists_every_load_with_its_rows(store, capsys):
    assert main(["loads", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["load_id"] for row in rows] == ["test:a.csv", "test:b.csv"]
    assert rows[0] == {
        "load_id": "test:a.csv",
        "source": "test",
        "prices_read": 3,
        "quotes_accepted": 2,
        "quotes_rejected": 1,
        "quote_rows": 2,
    }


def test_loads_table_has_a_header_and_a_line_per_load(store, capsys):
    assert main(["loads"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == [
        "load_id",
        "source",
        "prices_read",
        "quotes_accepted",
        "quotes_rejected",
        "quote_rows",
    ]
    assert lines[1].split() == ["test:a.csv", "test", "3", "2", "1", "2"]
    assert lines[2].split() == ["test:b.csv", "test", "1", "1", "0", "1"]


def test_loads_on_a_missing_warehouse_exits_1(capsys):
    assert main(["loads"]) == 1
    assert "no warehouse" in capsys.readouterr().err


def test_drop_load_without_yes_only_says_what_it_would_delete(store, capsys):
    before = table_counts(store)
    assert main(["drop-load", "test:a.csv"]) == 1
    out = capsys.readouterr().out
    assert "would delete" in out and "--yes" in out
    assert "odds_quotes: 2" in out and "rejected_quotes: 1" in out and "loads: 1" in out
    assert table_counts(store) == before


def test_drop_load_with_yes_deletes_the_load(store, capsys):
    assert main(["drop-load", "test:a.csv", "--yes"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert table_counts(store) == {
        "odds_quotes": 1,
        "rejected_quotes": 0,
        "events": 1,
        "results": 1,
        "loads": 1,
    }
    assert store.query("SELECT load_id FROM loads")["load_id"].tolist() == ["test:b.csv"]


def test_drop_load_of_an_unknown_load_exits_2(store, capsys):
    assert main(["drop-load", "test:nope.csv", "--yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "test:nope.csv" in err and "odds-pipeline loads" in err
