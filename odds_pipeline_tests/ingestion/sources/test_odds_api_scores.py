"""The Odds API scores endpoint: parsing, the replay, the live client and the Dagster asset.

No test touches the network: the live client talks to a server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from odds_pipeline.ingestion.sources import odds_api
from odds_pipeline.ingestion.sources.odds_api import (
    FeedAuthError,
    FeedResponse,
    OddsApiClient,
    TransientFeedError,
)
from odds_pipeline.ingestion.sources.odds_api_scores import (
    ReplayScoresFeed,
    ScoresFeed,
    parse_scores,
    parse_scores_file,
    summarize_scores,
)
from odds_pipeline.market.quotes import EVENT_COLUMNS, RESULT_COLUMNS, SourceFormatError
from odds_pipeline_tests.ingestion.sources.test_odds_api import (  # the local server
    API_KEY,
    LocalApi,
    assert_no_key,
    assert_no_key_in_logs,
    debug_logging,
    local_session,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE = REPO_ROOT / "data" / "samples" / "odds_api_scores" / "nfl_scores.json"
ODDS_SAMPLE = REPO_ROOT / "data" / "samples" / "odds_api" / "nfl_sample_20_snapshots.jsonl.gz"
NFL = "americanfootball_nfl"
FETCHED = pd.Timestamp("2024-09-06T04:00:00Z")


def game(
    event_id: str | None = "ev1",
    *,
    completed: bool = True,
    home: str = "Kansas City Chiefs",
    away: str = "Baltimore Ravens",
    scores: Any = ("27", "20"),
    last_update: str | None = "2024-09-06T03:30:00Z",
    commence: str = "2024-09-06T00:20:00Z",
) -> dict[str, Any]:
    """One record in the documented shape; `scores` = (home, away) texts, a list, or None."""
    if isinstance(scores, tuple):
        scores = [{"name": home, "score": scores[0]}, {"name": away, "score": scores[1]}]
    return {
        "id": event_id,
        "sport_key": NFL,
        "sport_title": "NFL",
        "commence_time": commence,
        "completed": completed,
        "home_team": home,
        "away_team": away,
        "scores": scores,
        "last_update": last_update,
    }


def parse(payload: Any, fetched_at: Any = FETCHED):
    return parse_scores(payload, source_file="scores.json", fetched_at=fetched_at)


# --------------------------------------------------------------------------- parsing


def test_completed_event_gives_a_result_and_an_event() -> None:
    result = parse([game()])
    assert list(result.results.columns) == RESULT_COLUMNS
    assert list(result.events.columns) == EVENT_COLUMNS
    row = result.results.iloc[0]
    assert (row.event_id, row.source, row.home_score, row.away_score) == (
        "ev1",
        "odds_api",
        27.0,
        20.0,
    )
    assert row.resolved_at == pd.Timestamp("2024-09-06T03:30:00Z")
    assert str(result.results["resolved_at"].dtype) == "datetime64[ns, UTC]"
    event = result.events.iloc[0]
    assert (event.sport, event.league, event.home_team, event.away_team) == (
        NFL,
        "NFL",
        "Kansas City Chiefs",
        "Baltimore Ravens",
    )
    assert event.commence_time == pd.Timestamp("2024-09-06T00:20:00Z")
    assert result.quotes.empty and result.rejected.empty and result.prices_read == 0
    assert summarize_scores(result) == {
        "events": 1,
        "completed": 1,
        "written": 1,
        "skipped": 0,
        "skipped_reasons": {},
        "in_progress": 0,
        "not_started": 0,
    }


def test_live_and_not_started_events_have_no_result_but_an_event() -> None:
    live = game("live", completed=False, scores=("7", "3"), last_update="2024-09-06T01:00:00Z")
    upcoming = game("next", completed=False, scores=None, last_update=None)
    result = parse([live, upcoming])
    assert result.results.empty
    assert set(result.events["event_id"]) == {"live", "next"}
    summary = summarize_scores(result)
    assert summary["in_progress"] == 1 and summary["not_started"] == 1
    assert summary["completed"] == 0 and summary["skipped"] == 0
    assert result.warnings == []


@pytest.mark.parametrize(
    ("scores", "reason"),
    [
        (("", "20"), "missing_score"),
        ((None, "20"), "missing_score"),
        (None, "missing_score"),
        ([], "missing_score"),
        (("N/A", "20"), "unparseable_score"),
        (("27", "twenty"), "unparseable_score"),
        (("-3", "20"), "unparseable_score"),
        (("nan", "20"), "unparseable_score"),
        (("inf", "20"), "unparseable_score"),
        ([{"name": "Kansas City Chiefs", "score": "27"}], "unmatched_score_name"),
        (
            [{"name": "Chiefs", "score": "27"}, {"name": "Baltimore Ravens", "score": "20"}],
            "unmatched_score_name",
        ),
    ],
)
def test_completed_event_with_bad_scores_is_skipped_with_a_reason(scores: Any, reason: str) -> None:
    result = parse([game(scores=scores), game("ok")])
    assert result.results["event_id"].tolist() == ["ok"]
    assert set(result.events["event_id"]) == {"ev1", "ok"}  # the fixture is still known
    summary = summarize_scores(result)
    assert summary["completed"] == 2 and summary["written"] == 1
    assert summary["skipped_reasons"] == {reason: 1}
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("scores.json: [0] (event ev1): skipped")
    assert reason in result.warnings[0]


def test_numbers_and_padded_text_read_as_scores() -> None:
    result = parse([game(scores=(27, " 20 ")), game("b", scores=("3.5", "0"))])
    assert result.results[["home_score", "away_score"]].values.tolist() == [[27, 20], [3.5, 0]]


def test_missing_last_update_falls_back_to_the_fetch_time_or_is_skipped() -> None:
    assert parse([game(last_update=None)]).results["resolved_at"].iloc[0] == FETCHED
    unknown = parse([game(last_update="2024-09-06T03:30:00")], fetched_at=None)  # no zone
    assert unknown.results.empty
    assert summarize_scores(unknown)["skipped_reasons"] == {"missing_last_update": 1}


def test_record_without_id_is_skipped_and_unreadable_kickoff_writes_no_event() -> None:
    result = parse([game(None), game("x", commence="soon")])
    assert summarize_scores(result)["skipped_reasons"] == {"missing_event_id": 1}
    assert result.results["event_id"].tolist() == ["x"]
    assert result.events.empty  # no events row that would blank the odds feed's kickoff
    assert any("commence_time unreadable" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"message": "Invalid sport"}, "an error response, not scores: 'Invalid sport'"),
        ({"data": {"id": "x"}}, "data is a JSON dict, expected a list of events"),
        ("nope", "the response is a JSON str, expected a list of events"),
        ([game(), "a string"], r"\[1\]: a JSON str, expected an event object"),
        ([{**game(), "completed": "yes"}], r"\[0\]: `completed` is 'yes', expected true or false"),
        ([{**game(), "scores": {"home": 1}}], r"\[0\]: `scores` is a JSON dict, expected a list"),
        ([game(scores=["27", "20"])], r"\[0\]\.scores\[0\]: a JSON str, expected \{name, score\}"),
        ([{**game(), "id": {"x": 1}}], r"\[0\]: `id` is a JSON dict"),
        ([{**game(), "home_team": ["a"]}], r"\[0\]: `home_team` is a JSON list"),
    ],
)
def test_malformed_response_is_one_line_naming_file_and_record(payload: Any, match: str) -> None:
    with pytest.raises(SourceFormatError, match=match) as err:
        parse(payload)
    assert str(err.value).startswith("scores.json")
    assert "\n" not in str(err.value)


def test_unknown_fields_reported() -> None:
    result = parse({"timestamp": "2024-09-06T04:00:00Z", "data": [{**game(), "venue": "x"}]})
    assert result.unknown_columns == {"scores.json": ["event.venue"]}


def test_fetched_at_must_be_zoned() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse([game()], fetched_at=pd.Timestamp("2024-09-06T04:00:00"))


def test_sample_results_join_the_odds_sample_events_and_quotes() -> None:
    scores = parse_scores_file(SAMPLE)
    odds = odds_api.parse_file(ODDS_SAMPLE)
    assert len(scores.results) == 13
    assert set(scores.results["event_id"]) <= set(odds.events["event_id"])
    assert set(scores.results["event_id"]) <= set(odds.quotes["event_id"])
    merged = scores.events.merge(odds.events, on="event_id", suffixes=("", "_odds"))
    assert len(merged) == len(scores.events) == 15
    for col in ("sport", "league", "home_team", "away_team", "commence_time"):
        assert (merged[col] == merged[f"{col}_odds"]).all(), col
    assert summarize_scores(scores) == {
        "events": 15,
        "completed": 13,
        "written": 13,
        "skipped": 0,
        "skipped_reasons": {},
        "in_progress": 1,
        "not_started": 1,
    }
    assert odds_api.event_id_of(12345) == "12345" and odds_api.event_id_of(None) is None


def test_file_of_envelopes_later_snapshot_wins_and_errors_name_the_line(tmp_path: Path) -> None:
    first = {"timestamp": "2024-09-06T02:00:00Z", "data": [game(completed=False)]}
    second = {"timestamp": "2024-09-06T04:00:00Z", "data": [game(last_update=None)]}
    path = tmp_path / "scores.jsonl.gz"
    path.write_bytes(gzip.compress(f"{json.dumps(first)}\n{json.dumps(second)}\n".encode()))
    result = parse_scores_file(path)
    assert result.results["resolved_at"].tolist() == [pd.Timestamp("2024-09-06T04:00:00Z")]
    assert summarize_scores(result)["completed"] == 1
    assert result.files == ["scores.jsonl.gz"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{json.dumps(first)}\n{json.dumps({'data': [game(), 7]})}\n")
    with pytest.raises(SourceFormatError, match=r"^bad\.jsonl, line 2: data\[1\]: a JSON int"):
        parse_scores_file(bad)
    truncated = tmp_path / "cut.json"
    truncated.write_text(json.dumps([game()])[:-5])
    with pytest.raises(SourceFormatError, match=r"cut\.json, line \d+: invalid JSON"):
        parse_scores_file(truncated)


# --------------------------------------------------------------------------- replay


def test_replay_serves_the_sample_like_the_endpoint() -> None:
    feed = ReplayScoresFeed([SAMPLE])
    assert isinstance(feed, ScoresFeed)
    assert feed.sports == (NFL,)
    response = feed.scores(NFL, 3)
    assert isinstance(response, FeedResponse)
    assert response.received_at == pd.Timestamp("2025-11-18T03:40:00Z")  # newest last_update
    assert len(response.payload) == 15 and response.source_file == SAMPLE.name
    # daysFrom=1: completed games that kicked off over a day before the fetch are left out.
    recent = ReplayScoresFeed([SAMPLE]).scores(NFL, 1)
    assert {ev["completed"] for ev in recent.payload} == {False}
    assert len(recent.payload) == 2
    assert feed.scores("basketball_wnba").payload == []
    with pytest.raises(ValueError, match="days_from"):
        feed.scores(NFL, 4)


def test_replay_serves_snapshots_in_order_then_stays_on_the_last(tmp_path: Path) -> None:
    late = tmp_path / "b.json"
    late.write_text(json.dumps({"timestamp": "2024-09-06T04:00:00Z", "data": [game()]}))
    early = tmp_path / "a.json"
    early.write_text(
        json.dumps({"timestamp": "2024-09-06T01:00:00Z", "data": [game(completed=False)]})
    )
    feed = ReplayScoresFeed([late, early])
    seen = [feed.scores(NFL).payload[0]["completed"] for _ in range(3)]
    assert seen == [False, True, True]
    # With a position file each new feed (each run) moves on, sharing the odds replay's file.
    positions = tmp_path / "positions.json"
    positions.write_text(json.dumps({NFL: 7}))  # the odds replay's place: a separate key
    runs = [
        ReplayScoresFeed([late, early], position_file=positions).scores(NFL).payload[0]
        for _ in range(2)
    ]
    assert [r["completed"] for r in runs] == [False, True]
    assert json.loads(positions.read_text())[NFL] == 7


# --------------------------------------------------------------------------- live client


@pytest.fixture
def local_api() -> Iterator[LocalApi]:
    api = LocalApi()
    yield api
    api.close()


def live(api: LocalApi, **kwargs: Any) -> OddsApiClient:
    return OddsApiClient(
        API_KEY, base_url=api.base_url, session=local_session(), sleep=lambda s: None, **kwargs
    )


def test_live_client_one_request_with_days_from(
    local_api: LocalApi, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logging(caplog)
    local_api.answer((200, SAMPLE.read_bytes(), {"x-requests-remaining": "499"}))
    feed = live(local_api)
    assert isinstance(feed, ScoresFeed)
    response = feed.scores(NFL, days_from=2)
    assert len(local_api.paths) == 1
    path, _, query = local_api.paths[0].partition("?")
    assert path == f"/v4/sports/{NFL}/scores/"
    assert "daysFrom=2" in query.split("&") and f"apiKey={API_KEY}" in query
    assert response.quota == {"x-requests-remaining": 499}
    assert response.request.startswith(f"GET {local_api.base_url}/sports/{NFL}/scores/?")
    result = parse_scores(response.payload, source_file="live", fetched_at=response.received_at)
    assert len(result.results) == 13
    assert "apiKey=***" in caplog.text  # urllib3's request line, masked
    assert_no_key_in_logs(caplog)
    assert_no_key(repr(response), response.request, response.quota, result.warnings)


def test_live_client_retries_429(local_api: LocalApi, caplog: pytest.LogCaptureFixture) -> None:
    debug_logging(caplog)
    local_api.answer(
        (429, {"message": f"slow down {API_KEY}"}, {"Retry-After": "0"}),
        (200, [game()], {}),
    )
    response = live(local_api).scores(NFL, 1)
    assert len(local_api.paths) == 2
    assert response.payload == [game()]
    assert "HTTP 429" in caplog.text
    assert_no_key_in_logs(caplog)


def test_live_client_gives_up_on_repeated_429(local_api: LocalApi) -> None:
    local_api.answer((429, {"message": "Too many requests"}, {"Retry-After": "0"}))
    with pytest.raises(TransientFeedError, match="HTTP 429"):
        live(local_api, max_retries=2).scores(NFL)
    assert len(local_api.paths) == 3


def test_live_client_401_fails_at_once_without_the_key(
    local_api: LocalApi, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logging(caplog)
    local_api.answer((401, {"message": f"API key {API_KEY} is not valid"}, {}))
    with pytest.raises(FeedAuthError, match="refused the key") as err:
        live(local_api).scores(NFL)
    assert len(local_api.paths) == 1
    assert_no_key(err.value, repr(err.value), err.value.__context__)
    assert_no_key_in_logs(caplog)


def test_live_client_refuses_days_from_outside_1_to_3() -> None:
    feed = OddsApiClient(API_KEY, base_url="http://127.0.0.1:9/v4")
    for bad in (0, 4, "3", True):
        with pytest.raises(ValueError, match="days_from"):
            feed.scores(NFL, bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the asset


@pytest.fixture
def instance() -> Any:
    with dg.instance_for_test() as inst:
        yield inst


def materialize_scores(instance: dg.DagsterInstance, feed: Any, day: str = "2025-11-18"):
    from odds_pipeline.defs.ingestion import odds_api_scores as asset
    from odds_pipeline.defs.resources import WarehouseResource

    return dg.materialize(
        [asset],
        resources={"warehouse": WarehouseResource(), "odds_feed": feed},
        partition_key=day,
        instance=instance,
        raise_on_error=False,
    )


def metadata_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}


def test_asset_writes_results_that_join_the_odds_feeds_events(
    instance: dg.DagsterInstance, isolated_state_home: Path
) -> None:
    from odds_pipeline.defs.resources import ReplayOddsFeedResource, WarehouseResource

    store = WarehouseResource().store()
    store.replace_load("odds_api:sample", "odds_api", odds_api.parse_file(ODDS_SAMPLE))
    feed = ReplayOddsFeedResource(sports=[NFL])  # the bundled scores sample by default

    first = materialize_scores(instance, feed)
    assert first.success
    meta = metadata_of(first)
    assert (meta["completed"], meta["written"], meta["skipped"]) == (13, 13, 0)
    assert meta["skipped_reasons"] == {} and meta["dagster/row_count"] == 13
    assert (meta["in_progress"], meta["not_started"]) == (1, 1)
    assert meta["load_id"] == "odds_api_scores:2025-11-18" and meta["raw_responses"] == 1
    joined = store.query(
        """SELECT count(DISTINCT r.event_id) AS n FROM results r
           JOIN events e USING (event_id)
           JOIN odds_quotes q USING (event_id)
           WHERE r.load_id = 'odds_api_scores:2025-11-18'"""
    )
    assert int(joined["n"].iloc[0]) == 13
    loads = store.loads().set_index("load_id")
    assert "odds_api_scores:2025-11-18" in loads.index
    raw = list((isolated_state_home / "raw" / "odds_api_scores" / "2025-11-18").glob("*.json.gz"))
    assert len(raw) == 1

    before = store.query("SELECT * FROM results ORDER BY event_id")
    again = materialize_scores(instance, feed)
    assert again.success and metadata_of(again)["raw_responses"] == 1  # same response, same file
    pd.testing.assert_frame_equal(store.query("SELECT * FROM results ORDER BY event_id"), before)


def test_asset_reports_skips_and_fails_clearly_on_a_malformed_response(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    from odds_pipeline.defs.resources import ReplayOddsFeedResource

    saved = tmp_path / "scores.json"
    saved.write_text(json.dumps([game(), game("b", scores=("N/A", "3"))]))
    feed = ReplayOddsFeedResource(sports=[NFL], scores_paths=[str(saved)])
    result = materialize_scores(instance, feed, day="2025-11-19")
    assert result.success
    meta = metadata_of(result)
    assert (meta["completed"], meta["written"], meta["skipped"]) == (2, 1, 1)
    assert meta["skipped_reasons"] == {"unparseable_score": 1}
    assert "(event b): skipped (unparseable_score)" in meta["warnings"][0]

    saved.write_text(json.dumps([{**game(), "completed": "yes"}]))
    feed = ReplayOddsFeedResource(sports=[NFL], scores_paths=[str(saved)])
    failed = materialize_scores(instance, feed, day="2025-11-20")
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "odds_api_scores: malformed file" in message
    assert "`completed` is 'yes'" in message
