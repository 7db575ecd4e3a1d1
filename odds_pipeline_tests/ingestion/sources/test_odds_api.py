"""The Odds API adapter: saved responses in every shape, every quirk, and the live client.

No test touches the network: the client gets a fake session whose `get` returns canned
responses, and `ReplayFeed` serves files written to tmp_path.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from odds_pipeline.ingestion.sources import load_id_for, odds_api
from odds_pipeline.ingestion.sources.odds_api import (
    FeedAuthError,
    FeedError,
    FeedResponse,
    OddsApiClient,
    OddsFeed,
    ReplayFeed,
    TransientFeedError,
    parse_file,
    parse_payload,
    parse_response,
)
from odds_pipeline.market.quotes import (
    EVENT_COLUMNS,
    QUOTE_COLUMNS,
    REJECT_COLUMNS,
    SourceFormatError,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_ODDS_API = REPO_ROOT / ".." / "shared" / "data" / "odds-api"
SAMPLES = REPO_ROOT / "data" / "samples" / "odds_api"
needs_shared_data = pytest.mark.skipif(
    not SHARED_ODDS_API.is_dir(),
    reason=f"real Odds API data not found at {SHARED_ODDS_API} (CI always has it)",
)

KICKOFF = "2030-01-06T18:00:00Z"
SNAP1 = "2030-01-05T12:00:00Z"
SNAP2 = "2030-01-05T12:15:00Z"
UPDATED = "2030-01-05T11:59:30Z"
API_KEY = "sekrit-key-0123456789abcdef"


# --------------------------------------------------------------------------- builders


def outcome(name: str, price: Any, point: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "price": price}
    if point is not None:
        out["point"] = point
    return out


def market(
    key: str, outcomes: list[dict[str, Any]], last_update: str | None = UPDATED
) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "outcomes": outcomes}
    if last_update is not None:
        out["last_update"] = last_update
    return out


def book(
    markets: list[dict[str, Any]], key: str = "draftkings", last_update: str | None = UPDATED
) -> dict[str, Any]:
    return {"key": key, "title": key.title(), "last_update": last_update, "markets": markets}


def event(
    bookmakers: list[dict[str, Any]] | None = None,
    *,
    event_id: str = "ev1",
    home: str = "Kansas City Chiefs",
    away: str = "Buffalo Bills",
    commence: str | None = KICKOFF,
) -> dict[str, Any]:
    if bookmakers is None:
        bookmakers = [
            book(
                [
                    market("h2h", [outcome(away, 150), outcome(home, -200)]),
                    market("spreads", [outcome(away, -110, 3.5), outcome(home, -110, -3.5)]),
                    market("totals", [outcome("Over", -105, 47.5), outcome("Under", -115, 47.5)]),
                ]
            )
        ]
    return {
        "id": event_id,
        "sport_key": "americanfootball_nfl",
        "sport_title": "NFL",
        "commence_time": commence,
        "home_team": home,
        "away_team": away,
        "bookmakers": bookmakers,
    }


def envelope(events: list[dict[str, Any]], timestamp: str | None = SNAP1) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "previous_timestamp": None,
        "next_timestamp": None,
        "data": events,
    }


def write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


def write_jsonl(path: Path, docs: list[Any], *, gz: bool = False) -> Path:
    body = "".join(json.dumps(d) + "\n" for d in docs).encode()
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def reasons(result) -> dict[str, int]:
    return result.rejected_reasons()


def only_price(result, **where: Any) -> float:
    rows = result.quotes
    for col, value in where.items():
        rows = rows[rows[col] == value]
    assert len(rows) == 1, rows
    return float(rows["price"].iloc[0])


def assert_counts_add_up(result) -> None:
    assert result.prices_read == result.quotes_accepted + result.quotes_rejected
    assert list(result.quotes.columns) == QUOTE_COLUMNS
    assert list(result.rejected.columns) == REJECT_COLUMNS
    assert list(result.events.columns) == EVENT_COLUMNS


# --------------------------------------------------------------------------- file shapes


def test_bare_list_uses_market_last_update_as_observed_at(tmp_path: Path) -> None:
    ev = event()
    ev["bookmakers"][0]["markets"][1].pop("last_update")  # spreads: falls back to the bookmaker
    ev["bookmakers"][0]["last_update"] = "2030-01-05T11:58:00Z"
    result = parse_file(write_json(tmp_path / "nfl.json", [ev]))

    assert_counts_add_up(result)
    assert result.prices_read == 6 and result.quotes_accepted == 6
    q = result.quotes.set_index(["market", "outcome"])
    assert q.loc[("h2h", "home"), "observed_at"] == pd.Timestamp(UPDATED)
    assert q.loc[("spreads", "home"), "observed_at"] == pd.Timestamp("2030-01-05T11:58:00Z")
    assert pd.isna(q.loc[("spreads", "home"), "last_update"])  # the market's own, none here
    assert q.loc[("h2h", "home"), "last_update"] == pd.Timestamp(UPDATED)
    assert (result.quotes["ingested_at"] == result.quotes["observed_at"]).all()
    assert str(result.quotes["observed_at"].dt.tz) == "UTC"
    assert q.loc[("spreads", "home"), "point"] == -3.5
    assert q.loc[("h2h", "away"), "source_record"] == "[0].bookmakers[0].markets[0].outcomes[0]"
    assert set(result.quotes["source_file"]) == {"nfl.json"}
    assert set(result.quotes["load_id"]) == {load_id_for(odds_api.SOURCE, tmp_path / "nfl.json")}
    events = result.events
    assert events.to_dict("records") == [
        {
            "event_id": "ev1",
            "source": "odds_api",
            "sport": "americanfootball_nfl",
            "league": "NFL",
            "season": None,
            "commence_time": pd.Timestamp(KICKOFF),
            "home_team": "Kansas City Chiefs",
            "away_team": "Buffalo Bills",
        }
    ]
    assert result.results.empty  # the feed has no scores


def test_envelope_uses_snapshot_timestamp(tmp_path: Path) -> None:
    result = parse_file(write_json(tmp_path / "snap.json", envelope([event()])))
    assert_counts_add_up(result)
    assert result.quotes_accepted == 6
    assert (result.quotes["observed_at"] == pd.Timestamp(SNAP1)).all()
    assert (result.quotes["ingested_at"] == pd.Timestamp(SNAP1)).all()
    assert (result.quotes["last_update"] == pd.Timestamp(UPDATED)).all()
    assert result.quotes["source_record"].iloc[0] == "data[0].bookmakers[0].markets[0].outcomes[0]"
    assert result.notes["snapshot_from"] == "2030-01-05T12:00:00Z"


@pytest.mark.parametrize("fast", [True, False])
def test_jsonl_envelopes_and_moving_commence_time(tmp_path: Path, fast: bool) -> None:
    first = envelope([event(commence=KICKOFF)], SNAP1)
    moved = "2030-01-06T21:25:00Z"
    second = envelope([event(commence=moved)], SNAP2)
    second["data"][0]["bookmakers"][0]["markets"][0]["outcomes"][0]["price"] = 160
    path = write_jsonl(tmp_path / "nfl.jsonl", [first, second])
    result = parse_file(path, fast=fast)

    assert_counts_add_up(result)
    assert result.prices_read == 12 and result.quotes_accepted == 12
    away_h2h = result.quotes[
        (result.quotes["market"] == "h2h") & (result.quotes["outcome"] == "away")
    ]
    assert away_h2h["price"].tolist() == [2.5, 2.6]
    assert away_h2h["observed_at"].tolist() == [pd.Timestamp(SNAP1), pd.Timestamp(SNAP2)]
    assert away_h2h["source_record"].tolist() == [
        "line 1: data[0].bookmakers[0].markets[0].outcomes[0]",
        "line 2: data[0].bookmakers[0].markets[0].outcomes[0]",
    ]
    assert result.events["commence_time"].tolist() == [pd.Timestamp(moved)]  # the latest snapshot's


def test_gzipped_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "nfl.jsonl.gz", [envelope([event()], SNAP1), envelope([event()], SNAP2)], gz=True
    )
    result = parse_file(path)
    assert_counts_add_up(result)
    assert result.quotes_accepted == 12
    assert result.notes["payloads"] == 2


def test_gzip_detected_by_magic_bytes_not_suffix(tmp_path: Path) -> None:
    bare = tmp_path / "latest.json"  # gzip inside, no .gz suffix
    bare.write_bytes(gzip.compress(json.dumps([event()]).encode()))
    lines = write_jsonl(tmp_path / "snapshots.jsonl", [envelope([event()])], gz=True)
    unknown_suffix = write_jsonl(
        tmp_path / "dump.bin", [envelope([event()], SNAP1), envelope([event()], SNAP2)], gz=True
    )
    assert parse_file(bare).quotes_accepted == 6
    assert parse_file(lines).quotes_accepted == 6
    assert parse_file(unknown_suffix).quotes_accepted == 12  # several documents: read as lines


def test_fast_and_python_readers_agree_on_real_sample() -> None:
    path = SAMPLES / "nfl_sample_20_snapshots.jsonl.gz"
    fast = parse_file(path, fast=True)
    slow = parse_file(path, fast=False)
    assert fast.prices_read == slow.prices_read > 20_000
    pd.testing.assert_frame_equal(fast.quotes, slow.quotes)
    pd.testing.assert_frame_equal(fast.rejected, slow.rejected)
    pd.testing.assert_frame_equal(fast.events, slow.events)
    assert fast.notes == slow.notes


def test_samples_show_price_movement() -> None:
    result = parse_file(SAMPLES / "nfl_sample_20_snapshots.jsonl.gz")
    assert_counts_add_up(result)
    assert result.notes["payloads"] == 20
    per_key = result.quotes.groupby(["event_id", "bookmaker", "market", "outcome"])[
        "price"
    ].nunique()
    assert (per_key > 1).sum() > 100
    wnba = parse_file(SAMPLES / "wnba.json")
    assert wnba.prices_read == 242
    assert_counts_add_up(wnba)


# --------------------------------------------------------------------------- prices


def test_american_prices_converted_to_decimal(tmp_path: Path) -> None:
    result = parse_file(write_json(tmp_path / "a.json", [event()]))
    assert only_price(result, market="h2h", outcome="away") == 2.5  # +150
    assert only_price(result, market="h2h", outcome="home") == 1.5  # -200
    assert only_price(result, market="totals", outcome="over") == pytest.approx(1 + 100 / 105)
    assert result.notes["odds_format"] == {"american": 1, "decimal": 0}


def test_all_positive_american_payload_is_still_american(tmp_path: Path) -> None:
    home, away = "France", "England"
    three_way = event(
        [book([market("h2h", [outcome(away, 275), outcome(home, 105), outcome("Draw", 280)])])],
        home=home,
        away=away,
    )
    result = parse_file(write_json(tmp_path / "wc.json", [three_way]))
    assert only_price(result, outcome="home") == pytest.approx(2.05)
    assert only_price(result, outcome="draw") == pytest.approx(3.8)


def test_decimal_prices_auto_detected_and_explicit(tmp_path: Path) -> None:
    decimal = event(
        [
            book(
                [
                    market(
                        "h2h", [outcome("Buffalo Bills", 2.45), outcome("Kansas City Chiefs", 1.57)]
                    ),
                    market("totals", [outcome("Over", 151.0, 47.5), outcome("Under", 1.01, 47.5)]),
                ]
            )
        ]
    )
    path = write_json(tmp_path / "dec.json", [decimal])
    auto = parse_file(path)
    assert auto.notes["odds_format"] == {"american": 0, "decimal": 1}
    assert only_price(auto, market="h2h", outcome="away") == 2.45
    assert only_price(auto, market="totals", outcome="over") == 151.0  # a long shot, not +151
    explicit = parse_file(path, odds_format="decimal")
    pd.testing.assert_frame_equal(auto.quotes, explicit.quotes)
    # Told American, the same file is mostly invalid American prices.
    as_american = parse_file(path, odds_format="american")
    assert reasons(as_american) == {"invalid_american_price": 3}
    with pytest.raises(ValueError, match="odds_format"):
        parse_file(path, odds_format="fractional")


@pytest.mark.parametrize("fast", [True, False])
def test_sentinel_price_rejected(tmp_path: Path, fast: bool) -> None:
    ev = event()
    ev["bookmakers"][0]["markets"][0]["outcomes"][0]["price"] = -2147483648
    ev["bookmakers"][0]["markets"][0]["outcomes"][1]["price"] = None
    result = parse_file(write_jsonl(tmp_path / "s.jsonl", [envelope([ev])]), fast=fast)
    assert_counts_add_up(result)
    assert reasons(result) == {"sentinel_price": 1, "missing_price": 1}
    assert sorted(result.rejected["price_raw"], key=str) == ["-2147483648", None]
    assert result.notes["odds_format"] == {"american": 1, "decimal": 0}


def test_american_price_below_100_rejected(tmp_path: Path) -> None:
    ev = event()
    ev["bookmakers"][0]["markets"][0]["outcomes"][0]["price"] = 50
    ev["bookmakers"][0]["markets"][0]["outcomes"][1]["price"] = -99
    result = parse_file(write_json(tmp_path / "bad.json", [ev]))
    assert_counts_add_up(result)
    assert reasons(result) == {"invalid_american_price": 2}
    assert sorted(result.rejected["price_raw"]) == ["-99", "50"]


def test_missing_and_unparseable_prices(tmp_path: Path) -> None:
    ev = event()
    ev["bookmakers"][0]["markets"][0]["outcomes"][0]["price"] = None
    ev["bookmakers"][0]["markets"][0]["outcomes"][1]["price"] = "n/a"
    for fast in (True, False):  # a string price makes the fast reader hand over
        result = parse_file(write_jsonl(tmp_path / "p.jsonl", [envelope([ev])]), fast=fast)
        assert_counts_add_up(result)
        assert reasons(result) == {"missing_price": 1, "unparseable_price": 1}
        assert sorted(result.rejected["price_raw"], key=str) == [None, "n/a"]


# --------------------------------------------------------------------------- outcomes and markets


def test_draw_in_three_way_market(tmp_path: Path) -> None:
    home, away = "France", "England"
    ev = event(
        [book([market("h2h", [outcome(away, 275), outcome(home, -109), outcome("Draw", 280)])])],
        home=home,
        away=away,
    )
    result = parse_file(write_json(tmp_path / "wc.json", [ev]))
    assert result.quotes.set_index("outcome")["outcome_name"].to_dict() == {
        "away": "England",
        "home": "France",
        "draw": "Draw",
    }
    assert only_price(result, outcome="draw") == pytest.approx(3.8)


def test_unknown_markets_counted_as_rejected(tmp_path: Path) -> None:
    ev = event()
    ev["bookmakers"][0]["markets"] += [
        market("h2h_lay", [outcome("Buffalo Bills", 160), outcome("Kansas City Chiefs", -190)]),
        market("to_qualify", [outcome("Buffalo Bills", 120), outcome("Kansas City Chiefs", -140)]),
        market("player_pass_tds", [outcome("Over", -120, 1.5) | {"description": "Josh Allen"}]),
    ]
    result = parse_file(write_json(tmp_path / "m.json", [ev]))
    assert_counts_add_up(result)
    assert result.prices_read == 11
    assert reasons(result) == {"unknown_market": 5}
    assert sorted(set(result.rejected["market"])) == ["h2h_lay", "player_pass_tds", "to_qualify"]


def test_unknown_outcome_name_and_missing_point(tmp_path: Path) -> None:
    ev = event()
    ev["bookmakers"][0]["markets"][0]["outcomes"][0]["name"] = "Buffalo"  # not the away team's name
    ev["bookmakers"][0]["markets"][1]["outcomes"][0].pop("point")
    result = parse_file(write_json(tmp_path / "o.json", [ev]))
    assert_counts_add_up(result)
    assert reasons(result) == {"unknown_outcome_name": 1, "missing_point": 1}
    rejected = result.rejected.set_index("reason")
    assert (
        rejected.loc["unknown_outcome_name", "source_record"]
        == "[0].bookmakers[0].markets[0].outcomes[0]"
    )
    assert "Buffalo" in rejected.loc["unknown_outcome_name", "raw"]


def test_totals_name_in_wrong_market_is_unknown_outcome(tmp_path: Path) -> None:
    ev = event([book([market("h2h", [outcome("Over", 150), outcome("Kansas City Chiefs", -200)])])])
    result = parse_file(write_json(tmp_path / "w.json", [ev]))
    assert reasons(result) == {"unknown_outcome": 1}  # generic: "over" is no h2h side


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize("fast", [True, False])
def test_zone_less_timestamps_rejected(tmp_path: Path, fast: bool) -> None:
    ok = envelope([event()], SNAP1)
    zoneless_snapshot = envelope([event()], "2030-01-05T12:15:00")
    ev = event(event_id="ev2")
    ev["bookmakers"][0]["markets"][0]["last_update"] = "2030-01-05T11:59:05"
    zoneless_market = envelope([ev], SNAP2)
    path = write_jsonl(tmp_path / "z.jsonl", [ok, zoneless_snapshot, zoneless_market])
    result = parse_file(path, fast=fast)
    assert_counts_add_up(result)
    assert result.quotes_accepted == 6 + 4
    assert reasons(result) == {"timestamp_without_zone": 6 + 2}


def test_zone_less_commence_and_bare_list_last_update(tmp_path: Path) -> None:
    ev = event(commence="2030-01-06T18:00:00")
    other = event(event_id="ev2")
    other["bookmakers"][0]["markets"][2]["last_update"] = "2030-01-05 11:59:05"
    result = parse_file(write_json(tmp_path / "z.json", [ev, other]))
    assert reasons(result) == {"timestamp_without_zone": 6 + 2}
    assert result.events.set_index("event_id")["commence_time"].isna().to_dict() == {
        "ev1": True,
        "ev2": False,
    }


def test_missing_and_unparseable_timestamps(tmp_path: Path) -> None:
    no_time = event(event_id="ev1")
    no_time["bookmakers"][0]["last_update"] = None
    for m in no_time["bookmakers"][0]["markets"]:
        m.pop("last_update")
    no_commence = event(event_id="ev2", commence=None)
    garbage = event(event_id="ev3")
    garbage["bookmakers"][0]["markets"][0]["last_update"] = "yesterday at noon"
    result = parse_file(write_json(tmp_path / "t.json", [no_time, no_commence, garbage]))
    assert_counts_add_up(result)
    assert reasons(result) == {
        "missing_timestamp": 6,
        "missing_commence_time": 6,
        "unparseable_timestamp": 2,
    }


def test_unix_timestamps_read_as_utc(tmp_path: Path) -> None:
    ev = event(commence=1893952800)  # 2030-01-06T18:00:00Z
    ev["bookmakers"][0]["markets"][0]["last_update"] = 1893844770  # 2030-01-05T11:59:30Z
    result = parse_file(write_json(tmp_path / "u.json", [ev]))
    q = result.quotes[result.quotes["market"] == "h2h"]
    assert (q["observed_at"] == pd.Timestamp(UPDATED)).all()
    assert result.events["commence_time"].tolist() == [pd.Timestamp(KICKOFF)]


def test_in_play_rejected_unless_kept(tmp_path: Path) -> None:
    after_kickoff = "2030-01-06T18:30:00Z"
    path = write_jsonl(
        tmp_path / "ip.jsonl", [envelope([event()], SNAP1), envelope([event()], after_kickoff)]
    )
    default = parse_file(path)
    assert default.quotes_accepted == 6
    assert reasons(default) == {"in_play": 6}
    assert not default.quotes["in_play"].any()
    kept = parse_file(path, keep_in_play=True)
    assert kept.quotes_accepted == 12 and kept.quotes_rejected == 0
    assert kept.quotes["in_play"].sum() == 6


def test_duplicate_envelope_line_rejected_as_duplicates(tmp_path: Path) -> None:
    snap = envelope([event()], SNAP1)
    changed = copy.deepcopy(snap)
    changed["data"][0]["bookmakers"][0]["markets"][0]["outcomes"][0]["price"] = 170
    path = write_jsonl(tmp_path / "dup.jsonl", [snap, snap, changed])
    result = parse_file(path)
    assert_counts_add_up(result)
    assert result.quotes_accepted == 6
    assert reasons(result) == {"duplicate": 11, "conflicting_duplicate": 1}
    assert result.rejected["source_record"].str.startswith(("line 2:", "line 3:")).all()


def test_explicit_ingested_at_overrides(tmp_path: Path) -> None:
    received = pd.Timestamp("2030-01-05T12:00:07Z")
    result = parse_file(write_json(tmp_path / "l.json", [event()]), ingested_at=received)
    assert (result.quotes["ingested_at"] == received).all()
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_file(tmp_path / "l.json", ingested_at="2030-01-05T12:00:07")


# --------------------------------------------------------------------------- malformed files


def test_truncated_jsonl_line_names_the_line(tmp_path: Path) -> None:
    good = json.dumps(envelope([event()]))
    path = tmp_path / "t.jsonl"
    path.write_text(good + "\n" + good + "\n" + good[: len(good) // 2] + "\n")
    with pytest.raises(SourceFormatError) as err:
        parse_file(path)
    assert err.value.line == 3
    assert "invalid JSON" in err.value.reason
    assert err.value.path == str(path)


def test_truncated_json_document_names_the_line(tmp_path: Path) -> None:
    text = json.dumps([event()], indent=2)
    path = tmp_path / "t.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(SourceFormatError) as err:
        parse_file(path)
    assert err.value.line == text[: len(text) // 2].count("\n") + 1


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    blob = gzip.compress(json.dumps([event()] * 50).encode())
    path = tmp_path / "t.json.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SourceFormatError, match="gzip"):
        parse_file(path)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"message": "Invalid sport key"}, "error response"),
        ({"timestamp": SNAP1}, "without `data`"),
        ({"timestamp": SNAP1, "data": "nope"}, "`data` is a JSON str"),
        (42, "got a JSON int"),
        ([1, 2], r"\[0\] is a JSON int"),
        ([{"id": "x", "bookmakers": [["not", "a", "book"]]}], "unexpected structure"),
    ],
)
def test_wrong_structure_is_a_format_error(tmp_path: Path, doc: Any, match: str) -> None:
    path = write_jsonl(tmp_path / "w.jsonl", [envelope([event()]), doc])
    with pytest.raises(SourceFormatError, match=match) as err:
        parse_file(path)
    assert err.value.line == 2


def test_empty_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(SourceFormatError, match="empty"):
        parse_file(path)


def test_unknown_fields_reported(tmp_path: Path) -> None:
    ev = event()
    ev["status"] = "live"
    ev["bookmakers"][0]["markets"][0]["outcomes"][0]["multiplier"] = 2
    for fast in (True, False):
        result = parse_file(write_jsonl(tmp_path / "u.jsonl", [envelope([ev])]), fast=fast)
        assert result.unknown_columns == {"u.jsonl": ["event.status", "outcome.multiplier"]}
        assert result.quotes_accepted == 6


def test_empty_data_and_event_without_bookmakers(tmp_path: Path) -> None:
    no_books = event(event_id="quiet", bookmakers=[])
    path = write_jsonl(tmp_path / "e.jsonl", [envelope([], SNAP1), envelope([no_books], SNAP2)])
    result = parse_file(path)
    assert result.prices_read == 0 and result.quotes.empty and result.rejected.empty
    assert result.events["event_id"].tolist() == ["quiet"]


# --------------------------------------------------------------------------- parse_payload


def test_parse_payload_for_live_response() -> None:
    received = pd.Timestamp("2030-01-05T12:00:09Z")
    result = parse_payload(
        [event()],
        source_file="live",
        source_record_prefix="americanfootball_nfl 20300105T120009Z",
        ingested_at=received,
        load_id="odds_api_live:2030-01-05",
    )
    assert_counts_add_up(result)
    assert (result.quotes["observed_at"] == pd.Timestamp(UPDATED)).all()
    assert (result.quotes["ingested_at"] == received).all()
    assert set(result.quotes["load_id"]) == {"odds_api_live:2030-01-05"}
    assert result.quotes["source_record"].iloc[0] == (
        "americanfootball_nfl 20300105T120009Z: [0].bookmakers[0].markets[0].outcomes[0]"
    )
    snap = parse_payload([event()], source_file="live", snapshot_time=SNAP1, load_id="x")
    assert (snap.quotes["observed_at"] == pd.Timestamp(SNAP1)).all()
    with pytest.raises(SourceFormatError, match="error response"):
        parse_payload({"message": "quota exceeded"}, source_file="live", load_id="x")


# --------------------------------------------------------------------------- live client


class FakeResponse:
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status_code = status
        self._body = body
        self.headers = headers or {}
        self.text = json.dumps(body) if body is not None else ""

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("no JSON")
        return self._body


class FakeSession:
    """Replays canned responses (or raises canned exceptions) and records each call."""

    def __init__(self, *answers: Any):
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get(
        self, url: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> FakeResponse:
        self.calls.append((url, dict(params or {})))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


QUOTA = {"x-requests-remaining": "487", "x-requests-used": "13", "x-requests-last": "3"}
RECEIVED = pd.Timestamp("2030-01-05T12:00:09Z")


def client(session: FakeSession, sleeps: list[float], **kwargs: Any) -> OddsApiClient:
    return OddsApiClient(
        API_KEY, session=session, sleep=sleeps.append, clock=lambda: RECEIVED, **kwargs
    )


def assert_no_key(*texts: object) -> None:
    for text in texts:
        assert API_KEY not in str(text)


def test_client_fetches_and_records_quota() -> None:
    session = FakeSession(FakeResponse(200, [event()], {"X-Requests-Remaining": "487", **QUOTA}))
    sleeps: list[float] = []
    feed = client(session, sleeps, bookmakers="draftkings,fanduel")
    response = feed.fetch_odds("americanfootball_nfl")

    assert response.quota == {
        "x-requests-remaining": 487,
        "x-requests-used": 13,
        "x-requests-last": 3,
    }
    assert response.received_at == RECEIVED
    assert response.odds_format == "american"
    assert response.payload == [event()]
    url, params = session.calls[0]
    assert url == "https://api.the-odds-api.com/v4/sports/americanfootball_nfl/odds"
    assert params["apiKey"] == API_KEY
    assert params["regions"] == "us" and params["markets"] == "h2h,spreads,totals"
    assert params["bookmakers"] == "draftkings,fanduel" and params["oddsFormat"] == "american"
    assert response.request.startswith(
        "GET https://api.the-odds-api.com/v4/sports/americanfootball_nfl/odds?"
    )
    assert "regions=us" in response.request
    assert_no_key(response, response.request, repr(feed), feed.describe("americanfootball_nfl"))
    assert sleeps == []

    result = parse_response(response)
    assert_counts_add_up(result)
    assert (result.quotes["ingested_at"] == RECEIVED).all()
    assert (result.quotes["observed_at"] == pd.Timestamp(UPDATED)).all()


def test_client_retries_429_honouring_retry_after() -> None:
    session = FakeSession(
        FakeResponse(429, {"message": "Too many requests"}, {"Retry-After": "3"}),
        FakeResponse(200, [event()], QUOTA),
    )
    sleeps: list[float] = []
    response = client(session, sleeps).fetch_odds("americanfootball_nfl")
    assert sleeps == [3.0]
    assert len(session.calls) == 2
    assert response.quota["x-requests-remaining"] == 487


def test_client_gives_up_after_repeated_5xx_with_exponential_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = FakeSession(FakeResponse(500, {"message": f"boom apiKey={API_KEY}"}))
    sleeps: list[float] = []
    feed = client(session, sleeps, max_retries=4, backoff_s=1.0)
    with caplog.at_level(logging.WARNING), pytest.raises(TransientFeedError) as err:
        feed.fetch_odds("americanfootball_nfl")
    assert len(session.calls) == 5
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert "HTTP 500" in str(err.value)
    assert_no_key(err.value, caplog.text)
    assert "apiKey=***" in str(err.value)


def test_client_network_errors_are_transient_and_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    import requests

    url = f"https://api.the-odds-api.com/v4/sports/x/odds?apiKey={API_KEY}&regions=us"
    session = FakeSession(requests.ConnectionError(f"Max retries exceeded with url: {url}"))
    sleeps: list[float] = []
    with caplog.at_level(logging.WARNING), pytest.raises(TransientFeedError) as err:
        client(session, sleeps, max_retries=2).fetch_odds("x")
    assert len(sleeps) == 2
    assert "ConnectionError" in str(err.value)
    assert err.value.__cause__ is None and err.value.__context__ is None
    assert_no_key(err.value, caplog.text)


@pytest.mark.parametrize("status", [401, 403])
def test_client_auth_error_at_once_without_the_key(status: int) -> None:
    session = FakeSession(FakeResponse(status, {"message": f"API key {API_KEY} is not valid"}))
    sleeps: list[float] = []
    feed = client(session, sleeps)
    with pytest.raises(FeedAuthError) as err:
        feed.fetch_odds("americanfootball_nfl")
    assert len(session.calls) == 1 and sleeps == []
    assert f"The Odds API refused the key (HTTP {status}): check ODDS_API_KEY" in str(err.value)
    assert_no_key(err.value, repr(feed), repr(err.value))


def test_client_other_4xx_not_retried() -> None:
    session = FakeSession(FakeResponse(422, {"message": "Invalid markets"}))
    sleeps: list[float] = []
    with pytest.raises(FeedError, match="HTTP 422.*Invalid markets") as err:
        client(session, sleeps).fetch_odds("americanfootball_nfl")
    assert not isinstance(err.value, TransientFeedError | FeedAuthError)
    assert len(session.calls) == 1 and sleeps == []


def test_client_refuses_empty_key_and_hides_key_in_repr() -> None:
    with pytest.raises(FeedAuthError, match="ODDS_API_KEY"):
        OddsApiClient("", session=FakeSession(FakeResponse(200, [])))
    feed = OddsApiClient(API_KEY, session=FakeSession(FakeResponse(200, [])))
    assert "api_key='***'" in repr(feed)
    assert_no_key(repr(feed), str(feed))


# --------------------------------------------------------------------------- secrets: DEBUG logging, a real socket


class LocalApi:
    """An HTTP server on 127.0.0.1 answering from a script, so the real `requests`/urllib3
    stack (and its DEBUG request lines) runs without the network.

    `answers` are (status, body, headers) taken in order; the last one repeats. `paths`
    records every request line's target (key included: only the test reads it).
    """

    def __init__(self) -> None:
        import http.server
        import threading

        self.answers: list[tuple[int, Any, dict[str, str]]] = [(200, [], {})]
        self.paths: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                api.paths.append(self.path)
                status, body, headers = (
                    api.answers.pop(0) if len(api.answers) > 1 else api.answers[0]
                )
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # the server stays quiet
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v4"

    def answer(self, *answers: tuple[int, Any, dict[str, str]]) -> None:
        self.answers = list(answers)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def local_api() -> Any:
    api = LocalApi()
    yield api
    api.close()


def local_session() -> Any:
    """A real requests session that ignores proxy settings (127.0.0.1 must stay local)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    return session


def debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    """What an engineer debugging the feed turns on: DEBUG for everything, urllib3 included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")


def assert_no_key_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert API_KEY not in caplog.text
    for record in caplog.records:
        assert API_KEY not in str(record.msg)
        assert API_KEY not in repr(record.args)
        assert API_KEY not in record.getMessage()
        assert API_KEY not in str(record.exc_text or "")


def test_key_never_logged_with_debug_logging_against_a_local_server(
    local_api: LocalApi, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logging(caplog)
    local_api.answer((200, (SAMPLES / "wnba.json").read_bytes(), QUOTA))
    feed = OddsApiClient(API_KEY, base_url=local_api.base_url, session=local_session())
    response = feed.fetch_odds("basketball_wnba")

    assert local_api.paths[0].startswith("/v4/sports/basketball_wnba/odds?")
    assert f"apiKey={API_KEY}" in local_api.paths[0]  # the key did travel, in the request only
    assert "GET /v4/sports/basketball_wnba/odds?" in caplog.text  # urllib3's DEBUG request line
    assert "apiKey=***" in caplog.text
    assert_no_key_in_logs(caplog)
    result = parse_response(response)
    assert result.quotes_accepted > 0
    assert_no_key(
        repr(response),
        response.request,
        response.quota,
        response.source_file,
        result.summary(),
        result.quotes.to_csv(),
        result.events.to_csv(),
        repr(feed),
    )


def test_any_logger_and_level_is_scrubbed_once_a_client_exists(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import requests

    debug_logging(caplog)
    OddsApiClient(API_KEY, session=FakeSession(FakeResponse(200, [])))
    other = logging.getLogger("some.library")
    other.debug("GET %s", f"https://example.invalid/v4/sports/x/odds?apiKey={API_KEY}&regions=us")
    other.info("a mapping %(url)s", {"url": f"/odds?APIKEY={API_KEY}"})
    other.warning(f"the key itself: {API_KEY}")
    other.error("as an argument: %s", API_KEY)
    other.debug("someone else's key: %s", "https://h/x?apiKey=not-ours-0000")
    try:
        requests.get(f"http://127.0.0.1:1/v4/sports/x/odds?apiKey={API_KEY}", timeout=2)
    except requests.RequestException:
        other.exception("the request failed")
    assert_no_key_in_logs(caplog)
    assert "not-ours-0000" not in caplog.text  # any apiKey= parameter, not only ours
    assert caplog.text.count("***") >= 5


def test_scrubber_cleans_every_part_of_a_record() -> None:
    scrubber = odds_api.KeyScrubber()
    scrubber.add(API_KEY)

    def record(
        msg: object, args: Any, exc_info: Any = None, sinfo: Any = None
    ) -> logging.LogRecord:
        rec = logging.LogRecord("x", logging.DEBUG, __file__, 1, msg, args, exc_info, sinfo=sinfo)
        assert scrubber.filter(rec) is True  # never dropped
        return rec

    bad_format = record("bad %d", (API_KEY,))  # would fail to format: what logging prints
    assert API_KEY not in str(bad_format.msg) + repr(bad_format.args)
    mapping = record("%(k)s", ({"k": f"?apiKey={API_KEY}"},))
    assert mapping.getMessage() == "?apiKey=***"
    harmless = record("%d events, %r", (3, ["a"]))
    assert harmless.args == (3, ["a"]) and harmless.getMessage() == "3 events, ['a']"
    try:
        raise RuntimeError(f"url ?apiKey={API_KEY}")
    except RuntimeError:
        import sys

        with_exc = record("failed", None, exc_info=sys.exc_info(), sinfo=f"stack {API_KEY}")
    assert API_KEY not in str(with_exc.exc_text) and "apiKey=***" in str(with_exc.exc_text)
    assert with_exc.stack_info == "stack ***"
    assert (
        odds_api.scrub_key(f"a {API_KEY} b api_key=zz&x=1", [API_KEY]) == "a *** b api_key=***&x=1"
    )


def test_scrubbing_filter_is_installed_once(caplog: pytest.LogCaptureFixture) -> None:
    debug_logging(caplog)
    for _ in range(3):
        OddsApiClient(API_KEY, session=FakeSession(FakeResponse(200, [])))
    for name in ("urllib3", "requests"):
        filters = [
            f for f in logging.getLogger(name).filters if isinstance(f, odds_api.KeyScrubber)
        ]
        assert len(filters) == 1, name
    for handler in logging.getLogger().handlers:
        filters = [f for f in handler.filters if isinstance(f, odds_api.KeyScrubber)]
        assert len(filters) == 1, handler


@pytest.mark.parametrize("status", [401, 500])
def test_errors_from_a_local_server_never_carry_the_key(
    local_api: LocalApi, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    debug_logging(caplog)
    local_api.answer((status, {"message": f"bad key {API_KEY} in /odds?apiKey={API_KEY}"}, {}))
    feed = OddsApiClient(
        API_KEY, base_url=local_api.base_url, session=local_session(), sleep=lambda s: None
    )
    expected = FeedAuthError if status == 401 else TransientFeedError
    with pytest.raises(expected) as err:
        feed.fetch_odds("basketball_wnba")
    assert len(local_api.paths) == (1 if status == 401 else feed.max_retries + 1)
    assert_no_key(err.value, repr(err.value), err.value.__cause__, err.value.__context__)
    assert_no_key_in_logs(caplog)


def test_connection_refused_never_carries_the_key(caplog: pytest.LogCaptureFixture) -> None:
    import socket

    debug_logging(caplog)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    feed = OddsApiClient(
        API_KEY,
        base_url=f"http://127.0.0.1:{port}/v4",
        session=local_session(),
        sleep=lambda s: None,
        max_retries=1,
        timeout_s=2,
    )
    with pytest.raises(TransientFeedError) as err:
        feed.fetch_odds("basketball_wnba")
    assert "ConnectionError" in str(err.value) and "apiKey=***" in str(err.value)
    assert_no_key(err.value, repr(err.value), err.value.__cause__, err.value.__context__)
    assert_no_key_in_logs(caplog)


def test_key_never_reaches_the_dagster_event_log_with_urllib3_debug_logs(
    local_api: LocalApi, isolated_state_home: Path
) -> None:
    """The reported leak: urllib3 managed by Dagster at DEBUG put the request line in the run."""
    import dagster as dg

    from odds_pipeline.defs.ingestion import odds_api_live
    from odds_pipeline.defs.resources import LiveOddsApiResource, WarehouseResource

    local_api.answer((200, (SAMPLES / "wnba.json").read_bytes(), QUOTA))
    feed = LiveOddsApiResource(
        api_key=API_KEY, base_url=local_api.base_url, sports=["basketball_wnba"]
    )
    logs = {"python_logs": {"managed_python_loggers": ["urllib3"], "python_log_level": "DEBUG"}}
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")  # only today's partition polls
    with dg.instance_for_test(overrides=logs) as instance:
        result = dg.materialize(
            [odds_api_live],
            resources={"warehouse": WarehouseResource(), "odds_feed": feed},
            partition_key=today,
            instance=instance,
            run_config={"ops": {"odds_api_live": {"config": {"keep_in_play": True}}}},
        )
        assert result.success
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert f"apiKey={API_KEY}" in local_api.paths[0]
    urllib3_lines = [m for m in messages if "GET /v4/sports/basketball_wnba/odds?" in m]
    assert urllib3_lines and all("apiKey=***" in m for m in urllib3_lines)
    assert_no_key(*messages)
    raw = isolated_state_home / "raw" / "odds_api" / today
    assert_no_key(*(gzip.decompress(f.read_bytes()) for f in raw.glob("*.json.gz")))


def test_base_url_is_configurable_on_client_and_resource() -> None:
    from odds_pipeline.defs.resources import LiveOddsApiResource

    assert OddsApiClient(API_KEY, session=FakeSession()).base_url == odds_api.DEFAULT_BASE_URL
    assert odds_api.DEFAULT_BASE_URL == "https://api.the-odds-api.com/v4"
    resource = LiveOddsApiResource(api_key=API_KEY)
    assert resource.base_url == odds_api.DEFAULT_BASE_URL
    feed = LiveOddsApiResource(api_key=API_KEY, base_url="http://127.0.0.1:8080/v4/").get_feed()
    assert feed.base_url == "http://127.0.0.1:8080/v4"
    assert feed.describe("x").startswith("GET http://127.0.0.1:8080/v4/sports/x/odds?")
    with pytest.raises(ValueError, match="base_url"):
        OddsApiClient(API_KEY, base_url="api.the-odds-api.com/v4", session=FakeSession())


# --------------------------------------------------------------------------- replay feed


def test_replay_and_live_share_the_interface(tmp_path: Path) -> None:
    replay = ReplayFeed([write_json(tmp_path / "nfl.json", [event()])])
    live = client(FakeSession(FakeResponse(200, [event()], QUOTA)), [])
    for feed in (replay, live):
        assert isinstance(feed, OddsFeed)
        response = feed.fetch_odds("americanfootball_nfl")
        assert isinstance(response, FeedResponse)
        assert isinstance(response.payload, list)
        assert response.received_at.tzinfo is not None
        assert parse_response(response).quotes_accepted == 6


def test_replay_serves_snapshots_in_order_then_stays_on_the_last(tmp_path: Path) -> None:
    mlb = event(event_id="m1", home="New York Yankees", away="Boston Red Sox")
    mlb["sport_key"] = "baseball_mlb"
    path = write_jsonl(
        tmp_path / "snaps.jsonl.gz",
        [envelope([event(), mlb], SNAP1), envelope([event()], SNAP2)],
        gz=True,
    )
    feed = ReplayFeed([path])
    assert feed.sports == ("americanfootball_nfl", "baseball_mlb")
    first, second, third = (feed.fetch_odds("americanfootball_nfl") for _ in range(3))
    assert [r.received_at for r in (first, second, third)] == [
        pd.Timestamp(SNAP1),
        pd.Timestamp(SNAP2),
        pd.Timestamp(SNAP2),
    ]
    assert first.snapshot_time == pd.Timestamp(SNAP1)
    assert first.source_file == "snaps.jsonl.gz" and first.quota == {}
    assert [e["id"] for e in feed.fetch_odds("baseball_mlb").payload] == ["m1"]
    assert feed.fetch_odds("basketball_wnba").payload == []
    parsed = parse_response(first)
    assert (parsed.quotes["observed_at"] == pd.Timestamp(SNAP1)).all()
    assert set(parsed.quotes["source_file"]) == {"snaps.jsonl.gz"}
    assert [r.quota for r in feed.fetch_all()] == [{}, {}]


def test_replay_of_bare_list_received_at_newest_update(tmp_path: Path) -> None:
    ev = event()
    ev["bookmakers"].append(
        book([market("h2h", [outcome("Buffalo Bills", 140)])], key="fanduel", last_update=SNAP2)
    )
    feed = ReplayFeed(write_json(tmp_path / "wnba.json", [ev]))
    response = feed.fetch_odds("americanfootball_nfl")
    assert response.received_at == pd.Timestamp(SNAP2)
    assert response.snapshot_time is None


def test_replay_of_samples_like_the_dagster_resource() -> None:
    feed = ReplayFeed(sorted(SAMPLES.glob("*.json*")))
    assert set(feed.sports) == {"americanfootball_nfl", "basketball_wnba"}
    nfl = feed.fetch_odds("americanfootball_nfl")
    assert nfl.received_at == pd.Timestamp("2025-11-13T01:49:18Z")
    assert len(nfl.payload) > 10


# --------------------------------------------------------------------------- real data


def _real_files() -> list[Path]:
    if not SHARED_ODDS_API.is_dir():
        return []
    return sorted((SHARED_ODDS_API / "snapshots").glob("*")) + sorted(
        (SHARED_ODDS_API / "latest").glob("*")
    )


@needs_shared_data
@pytest.mark.shared_data
@pytest.mark.parametrize("path", _real_files(), ids=lambda p: p.name)
def test_every_real_file_parses_and_adds_up(path: Path) -> None:
    result = parse_file(path)
    assert_counts_add_up(result)
    assert result.prices_read > 200
    assert result.quotes_accepted > 0.9 * result.prices_read
    # The only refusals in the real files are in-play prices (the feed keeps quoting them).
    assert set(reasons(result)) <= {"in_play"}
    assert result.unknown_columns == {}
    assert result.notes["odds_format"]["decimal"] == 0
    assert set(result.quotes["market"]) <= {"h2h", "spreads", "totals"}
    assert result.quotes["price"].between(1.0, 1001.0, inclusive="right").all()
    assert result.quotes["observed_at"].notna().all()
    assert result.events["event_id"].is_unique
    assert set(result.quotes["event_id"]) <= set(result.events["event_id"])
    if path.name.startswith("nfl_"):
        assert result.prices_read == 404_770
        assert result.notes["payloads"] == 321


@needs_shared_data
@pytest.mark.shared_data
def test_real_world_cup_has_draws_and_no_to_qualify_in_snapshots() -> None:
    result = parse_file(SHARED_ODDS_API / "snapshots" / "worldcup_2026-07-17_to_19_all.jsonl.gz")
    draws = result.quotes[result.quotes["outcome"] == "draw"]
    assert len(draws) > 1000
    assert set(draws["market"]) == {"h2h"} and set(draws["outcome_name"]) == {"Draw"}
    # `to_qualify` appears only in changes/worldcup_changes.parquet, not in these snapshots.
    assert "unknown_market" not in reasons(result)
    assert set(result.quotes["market"]) == {"h2h", "totals"}


@needs_shared_data
@pytest.mark.shared_data
def test_real_prices_beyond_10000_american_are_kept() -> None:
    result = parse_file(SHARED_ODDS_API / "latest" / "ncaaf.json")
    assert result.quotes_rejected == 0
    assert math.isclose(result.quotes["price"].min(), 1.001)  # -100000
    assert result.quotes["price"].max() == pytest.approx(201.0)  # +20000


def test_module_surface() -> None:
    assert odds_api.SOURCE == "odds_api"
    assert "americanfootball_nfl" in odds_api.DEFAULT_SPORTS
    assert odds_api.QUOTA_HEADERS == ("x-requests-remaining", "x-requests-used", "x-requests-last")


# --------------------------------------------------------------------------- every error names a line or why none


@pytest.mark.parametrize("fast", [True, False])
def test_deeply_nested_json_is_a_format_error_not_a_recursion_error(
    tmp_path: Path, fast: bool
) -> None:
    single = tmp_path / "deep.json"
    single.write_text("[" * 100_000)
    with pytest.raises(SourceFormatError, match="nested") as err:
        parse_file(single, fast=fast)
    assert err.value.line == 1 and err.value.path == str(single)
    lines = tmp_path / "deep.jsonl"
    lines.write_text(json.dumps(envelope([event()])) + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(SourceFormatError, match="nested") as err:
        parse_file(lines, fast=fast)
    assert err.value.line == 2


def test_deep_nesting_names_the_line_where_it_starts_in_a_pretty_printed_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{\n  "data": [\n' + "[" * 100_000 + "\n")
    with pytest.raises(SourceFormatError, match="nested") as err:
        parse_file(path)
    assert err.value.line == 3


def test_number_too_long_for_python_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text(
        json.dumps(envelope([event()])) + '\n{"data": [], "timestamp": ' + "9" * 5000 + "}\n"
    )
    with pytest.raises(SourceFormatError) as err:
        parse_file(path)
    assert err.value.line == 2 and err.value.path == str(path)


def test_zero_byte_file_says_why_no_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "zero.json"
    path.write_bytes(b"")
    with pytest.raises(SourceFormatError, match="empty") as err:
        parse_file(path)
    assert err.value.line is None and "0 bytes" in err.value.reason
    assert "no line" in err.value.reason


@pytest.mark.parametrize(
    ("text", "match", "line"),
    [
        ('{"message": "Invalid API key"}', "error response", 1),
        ('\n\n{\n "timestamp": "2030-01-05T12:00:00Z"\n}', "without `data`", 3),
        ("42", "got a JSON int", 1),
    ],
)
def test_top_level_errors_of_a_single_document_name_its_line(
    tmp_path: Path, text: str, match: str, line: int
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SourceFormatError, match=match) as err:
        parse_file(path)
    assert err.value.line == line


def test_nested_error_in_a_single_document_says_why_no_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([event(), 7], indent=2))
    with pytest.raises(SourceFormatError, match=r"\[1\] is a JSON int") as err:
        parse_file(path)
    assert err.value.line is None and "no line" in err.value.reason


def test_cli_prints_one_line_for_deep_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from odds_pipeline.cli import main

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000)
    assert main(["inspect", "odds-api", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}, line 1: ")


@pytest.mark.parametrize("fast", [True, False])
def test_object_where_a_string_belongs_names_its_own_line_not_the_last(
    tmp_path: Path, fast: bool
) -> None:
    bad = event()
    bad["home_team"] = {"name": "Bills"}
    path = write_jsonl(tmp_path / "o.jsonl", [envelope([bad]), envelope([event()]), envelope([])])
    with pytest.raises(SourceFormatError, match=r"data\[0\]\.home_team: a JSON dict") as err:
        parse_file(path, fast=fast)
    assert err.value.line == 1
    single = write_json(tmp_path / "o.json", [event(), bad])
    with pytest.raises(SourceFormatError, match=r"\[1\]\.home_team") as err:
        parse_file(single)
    assert err.value.line is None and "no line" in err.value.reason


def test_replay_of_a_single_bad_document_names_where_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('\n{"data": "nope"}')
    with pytest.raises(SourceFormatError) as err:
        ReplayFeed([path]).fetch_odds("americanfootball_nfl")
    assert err.value.line == 2


def test_a_replay_with_a_position_file_moves_on_across_feeds(tmp_path: Path) -> None:
    """Each run builds a new feed: without the file every run replayed the first snapshot."""
    sample = SAMPLES / "nfl_sample_20_snapshots.jsonl.gz"
    sport = "americanfootball_nfl"
    positions = tmp_path / "positions.json"
    seen = [
        odds_api.ReplayFeed(sample, position_file=positions).fetch_odds(sport).received_at
        for _ in range(3)
    ]
    assert seen[0] < seen[1] < seen[2]
    fresh = odds_api.ReplayFeed(sample).fetch_odds(sport).received_at
    assert fresh == seen[0]
    positions.write_text("{not json")  # damaged: the replay starts over instead of failing
    assert (
        odds_api.ReplayFeed(sample, position_file=positions).fetch_odds(sport).received_at
        == seen[0]
    )
    positions.write_text(json.dumps({sport: 10_000}))  # past the end: the last snapshot again
    last = odds_api.ReplayFeed(sample, position_file=positions).fetch_odds(sport)
    assert last.received_at == pd.Timestamp("2025-11-18T05:54:42Z")
