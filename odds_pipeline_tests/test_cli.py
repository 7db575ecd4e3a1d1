"""`odds-pipeline inspect`: the on-call view of a file, without writing anything."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from odds_pipeline.cli import main

from .conftest import SAMPLES

SUMMARY_KEYS = {
    "prices_read",
    "quotes_accepted",
    "quotes_rejected",
    "rejected_reasons",
    "events",
    "bookmakers",
    "markets",
    "observed_from",
    "observed_to",
    "unknown_columns",
}


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("football-data", "football_data/*.csv"),
        ("sbr", "sbr/*.csv"),
        ("odds-api", "odds_api/*"),
    ],
)
def test_inspect_prints_one_json_summary(source, pattern, capsys, isolated_state_home):
    assert main(["inspect", source, str(SAMPLES / pattern)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == SUMMARY_KEYS
    assert out["prices_read"] == out["quotes_accepted"] + out["quotes_rejected"] > 0
    assert sum(out["rejected_reasons"].values()) == out["quotes_rejected"]
    assert out["bookmakers"] == sorted(out["bookmakers"])
    assert not (isolated_state_home / "warehouse").exists(), "inspect must not write"


def test_inspect_malformed_file_exits_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"id": "x", "bookmakers": [')
    assert main(["inspect", "odds-api", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.json" in err


def test_inspect_missing_file_exits_2(tmp_path, capsys):
    assert main(["inspect", "sbr", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "odds-pipeline"
    out = subprocess.run(
        [str(exe), "inspect", "sbr", str(SAMPLES / "sbr" / "nba_odds_2017-18.csv"), "--compact"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["events"] > 1000


def test_summary_while_another_process_writes_exits_3_with_one_line(capsys, monkeypatch):
    """No traceback after a few seconds: one line naming the warehouse and the run writing it."""
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import warehouse_path
    from odds_pipeline.warehouse import READ_WAIT_ENV

    from .test_warehouse import RUN_ID, hold_writer

    monkeypatch.setenv(READ_WAIT_ENV, "0.5")
    path = warehouse_path()
    OddsStore(path).query("SELECT 1")  # creates the tables
    with hold_writer(path):
        assert main(["summary"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and str(path) in err and RUN_ID in err
    assert "being written" in err and "Traceback" not in err


def test_scan_prints_arbitrage_windows_of_saved_files_as_json(capsys):
    assert main(["scan", str(SAMPLES / "odds_api" / "*.jsonl.gz"), "--compact"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quotes"] > 0 and out["counts"]["quotes_read"] == out["quotes"]
    assert len(out["windows"]) == out["counts"]["windows"]
    for window in out["windows"]:
        assert window["status"] in ("actionable", "suspicious")
        if window["status"] == "actionable":
            assert window["guaranteed_profit"] > 0
    assert main(["scan", "/nonexistent/odds.json"]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_backtest_without_predictions_says_what_to_do(capsys):
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import warehouse_path

    with OddsStore(warehouse_path()).connection():
        pass
    assert main(["backtest"]) == 1
    assert "materialize win_probability_predictions" in capsys.readouterr().err
