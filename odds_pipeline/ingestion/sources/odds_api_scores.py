"""The Odds API v4 scores endpoint: outcomes of the events the odds feed prices.

What it reads
    `/v4/sports/{sport}/scores/?daysFrom=N` answers a JSON list of events: `id`,
    `sport_key`, `sport_title`, `commence_time`, `completed` (false while live or not
    started), `home_team`, `away_team`, `scores` (null before the start, else a list of
    `{"name": team, "score": "27"}`) and `last_update` (null before the start). Saved files
    hold that bare list, or the envelope the `odds_api_scores` asset writes
    (`{"timestamp": when fetched, "sport": ..., "data": [events]}`), one document or one a
    line, gzipped or not (read like the odds files: `odds_api.read_documents`).

What it writes (`parse_scores` -> `ParseResult`, no quotes)
    events   one row per record with an `id` (the same `event_id_of` rule as the odds
             parser, so results join the events and quotes of the odds feed); sport =
             `sport_key`, league = `sport_title`, season None. A record whose commence_time
             cannot be read gives no events row (it would blank the odds feed's one).
    results  one row per *completed* event whose two scores both read as finite numbers
             >= 0 and whose score names are exactly its home and away team:
             home_score, away_score, resolved_at = `last_update` (when the final score was
             known; the fetch time when missing, as the score was known by then).

Bad data: decided per kind
    A response that is not one (an error object such as `{"message": ...}`, `data` that is
    not a list), a record that is not a JSON object, `completed` that is not true/false,
    `scores` that is neither null nor a list of objects, or an object where a text belongs
    is a format change: `SourceFormatError` naming the file, line when known and the record
    (`data[3]`), and nothing from the file is written. A record of the right shape with
    unusable *values* is skipped, counted by reason and named in one warning line each:
    `missing_event_id` (any record), and for completed events `missing_score`,
    `unparseable_score` ("", "N/A", "-1", "nan"), `unmatched_score_name` (names that are not
    the home and away team once each), `missing_last_update` (no last_update and no fetch
    time). Live and not-started events are not skipped: they are counted as `in_progress`
    / `not_started` (they have no result yet). Skips never go to `rejected_quotes` (a table
    of prices, whose reject ratio they would distort); they are in `result.notes["scores"]`
    (one row per record read) and `summarize_scores` counts them.

Live and replay
    `OddsApiClient.scores(sport, days_from)` (odds_api.py: same retries, 401/429 handling and
    key scrubbing as `fetch_odds`) and `ReplayScoresFeed` (saved files) both answer a
    `FeedResponse` holding the bare list: anything with `scores(sport, days_from)` is a
    `ScoresFeed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from odds_pipeline.ingestion.sources.odds_api import (
    MAX_SCORES_DAYS_FROM,
    FeedResponse,
    ReplayCursor,
    check_days_from,
    event_id_of,
    read_documents,
)
from odds_pipeline.market.quotes import (
    EVENT_COLUMNS,
    QUOTE_COLUMNS,
    REJECT_COLUMNS,
    RESULT_COLUMNS,
    ParseResult,
    SourceFormatError,
    combine,
    empty_frame,
)

SOURCE = "odds_api"  # the same source as the odds feed: one event, one id, both endpoints
LOAD_PREFIX = "odds_api_scores"
# One row per record read, in `ParseResult.notes["scores"]`.
RECORD_COLUMNS = ["source_file", "source_record", "event_id", "status", "reason"]
COMPLETED, IN_PROGRESS, NOT_STARTED = "completed", "in_progress", "not_started"

_EVENT_KEYS = frozenset(
    {
        "id",
        "sport_key",
        "sport_title",
        "commence_time",
        "completed",
        "home_team",
        "away_team",
        "scores",
        "last_update",
    }
)
_ENVELOPE_KEYS = frozenset({"timestamp", "sport", "data"})
_SCORE_KEYS = frozenset({"name", "score"})


@runtime_checkable
class ScoresFeed(Protocol):
    """Where scores responses come from: `OddsApiClient` (live) or `ReplayScoresFeed`."""

    def scores(self, sport: str, days_from: int = MAX_SCORES_DAYS_FROM) -> FeedResponse:
        """Live, upcoming and (last `days_from` days) completed events of one sport."""
        ...


# --------------------------------------------------------------------------- parsing


def _utc(value: Any) -> pd.Timestamp | None:
    """A zoned ISO string or epoch seconds (`dateFormat=unix`) as UTC; None when unreadable.

    A string without a zone is unreadable: guessing UTC would shift it silently.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return pd.Timestamp(value, unit="s", tz="UTC") if math.isfinite(value) else None
        if not isinstance(value, str):
            return None
        stamp = pd.Timestamp(value)
    except (ValueError, OverflowError):
        return None
    if stamp is pd.NaT or stamp.tzinfo is None:
        return None
    return stamp.tz_convert("UTC")


def _score(value: Any) -> tuple[float | None, str | None]:
    """(score, None) or (None, reason): "27" and 27 read, "", "N/A", "-1", "nan" do not."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "missing_score"
    if isinstance(value, bool):
        return None, "unparseable_score"
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, "unparseable_score"
    if not math.isfinite(number) or number < 0:
        return None, "unparseable_score"
    return number, None


class _Parser:
    """Walks one response; structural problems raise, value problems are counted."""

    def __init__(self, source_file: str, line: int | None, root: str) -> None:
        self.source_file = source_file
        self.line = line
        self.root = root
        self.events: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.unknown: set[str] = set()

    def fail(self, where: str, reason: str) -> SourceFormatError:
        return SourceFormatError(self.source_file, self.line, f"{where}: {reason}")

    def text(self, record: dict[str, Any], key: str, where: str) -> str | None:
        value = record.get(key)
        if isinstance(value, dict | list):
            raise self.fail(where, f"`{key}` is a JSON {type(value).__name__}, expected text")
        return None if value is None else str(value)

    def add(self, index: int, record: Any, fetched_at: pd.Timestamp | None) -> None:
        where = f"{self.root}[{index}]"
        if not isinstance(record, dict):
            raise self.fail(where, f"a JSON {type(record).__name__}, expected an event object")
        self.unknown.update(f"event.{k}" for k in record.keys() - _EVENT_KEYS)
        raw_id = record.get("id")
        if isinstance(raw_id, dict | list):
            raise self.fail(where, f"`id` is a JSON {type(raw_id).__name__}, expected text")
        event_id = event_id_of(raw_id)
        home = self.text(record, "home_team", where)
        away = self.text(record, "away_team", where)
        sport = self.text(record, "sport_key", where)
        league = self.text(record, "sport_title", where)
        completed = record.get("completed")
        if not isinstance(completed, bool):
            raise self.fail(where, f"`completed` is {completed!r}, expected true or false")
        scores = record.get("scores")
        if scores is not None and not isinstance(scores, list):
            raise self.fail(where, f"`scores` is a JSON {type(scores).__name__}, expected a list")
        named: list[tuple[str | None, Any]] = []
        for j, entry in enumerate(scores or []):
            if not isinstance(entry, dict):
                raise self.fail(
                    f"{where}.scores[{j}]",
                    f"a JSON {type(entry).__name__}, expected {{name, score}}",
                )
            self.unknown.update(f"scores.{k}" for k in entry.keys() - _SCORE_KEYS)
            named.append((self.text(entry, "name", f"{where}.scores[{j}]"), entry.get("score")))
        for stamp_key in ("commence_time", "last_update"):
            if isinstance(record.get(stamp_key), dict | list):
                raise self.fail(where, f"`{stamp_key}` is a JSON object/array, expected a time")

        status = COMPLETED if completed else (IN_PROGRESS if scores is not None else NOT_STARTED)
        reason: str | None = None
        if event_id is None:
            reason = "missing_event_id"
        else:
            commence = _utc(record.get("commence_time"))
            if commence is not None:
                self.events.append(
                    {
                        "event_id": event_id,
                        "source": SOURCE,
                        "sport": sport,
                        "league": league,
                        "season": None,
                        "commence_time": commence,
                        "home_team": home,
                        "away_team": away,
                    }
                )
            else:
                self.warn(where, event_id, "commence_time unreadable: no events row written")
            if completed:
                reason = self.result(event_id, home, away, named, record, fetched_at)
        if reason is not None:
            self.warn(where, event_id, f"skipped ({reason})")
        self.records.append(
            {
                "source_file": self.source_file,
                "source_record": self.where(where),
                "event_id": event_id,
                "status": status,
                "reason": reason,
            }
        )

    def result(
        self,
        event_id: str,
        home: str | None,
        away: str | None,
        named: list[tuple[str | None, Any]],
        record: dict[str, Any],
        fetched_at: pd.Timestamp | None,
    ) -> str | None:
        """Appends the result of a completed event; the skip reason when there is none."""
        if not named:
            return "missing_score"
        by_name = dict(named)
        if home is None or home == away or len(named) != 2 or set(by_name) != {home, away}:
            return "unmatched_score_name"
        home_score, why = _score(by_name[home])
        away_score, why_away = _score(by_name[away])
        if why or why_away:
            return why or why_away
        resolved = _utc(record.get("last_update"))
        if resolved is None:
            resolved = fetched_at
        if resolved is None:
            return "missing_last_update"
        self.results.append(
            {
                "event_id": event_id,
                "source": SOURCE,
                "home_score": home_score,
                "away_score": away_score,
                "resolved_at": resolved,
            }
        )
        return None

    def where(self, where: str) -> str:
        return f"line {self.line}: {where}" if self.line is not None else where

    def warn(self, where: str, event_id: str | None, what: str) -> None:
        self.warnings.append(f"{self.source_file}: {self.where(where)} (event {event_id}): {what}")


def parse_scores(
    payload: Any,
    *,
    source_file: str,
    fetched_at: Any,
    line: int | None = None,
) -> ParseResult:
    """Events and results from one scores response (see the module docstring for the rules).

    `payload`: the bare list the endpoint answers, or a saved envelope `{timestamp, sport,
    data}` (its timestamp is the fetch time when `fetched_at` is None). `fetched_at`: when
    the response was received (tz-aware; None when unknown, e.g. a saved bare list); it
    stands in for a completed event's missing last_update. `line` names the file's line in
    errors and records (a `.jsonl` of responses).
    """
    fetched: pd.Timestamp | None = None
    if fetched_at is not None:
        fetched = pd.Timestamp(fetched_at)
        if fetched.tzinfo is None:
            raise ValueError(f"fetched_at must be timezone-aware, got {fetched_at!r}")
        fetched = fetched.tz_convert("UTC")
    unknown: set[str] = set()
    root = ""
    if isinstance(payload, dict):
        if "data" not in payload:
            message = payload.get("message")
            raise SourceFormatError(
                source_file,
                line,
                f"an error response, not scores: {str(message)[:200]!r}"
                if message is not None
                else "a JSON object without `data`: neither a list of events nor an envelope",
            )
        unknown.update(f"envelope.{k}" for k in payload.keys() - _ENVELOPE_KEYS)
        if fetched is None:
            fetched = _utc(payload.get("timestamp"))
        events, root = payload["data"], "data"
    else:
        events = payload
    if not isinstance(events, list):
        raise SourceFormatError(
            source_file,
            line,
            f"{root or 'the response'} is a JSON {type(events).__name__}, expected a list of events",
        )
    parser = _Parser(source_file, line, root)
    for index, record in enumerate(events):
        parser.add(index, record, fetched)
    unknown |= parser.unknown
    return ParseResult(
        quotes=empty_frame(QUOTE_COLUMNS),
        rejected=empty_frame(REJECT_COLUMNS),
        events=_frame(parser.events, EVENT_COLUMNS, ("commence_time",)),
        results=_frame(parser.results, RESULT_COLUMNS, ("resolved_at",)),
        prices_read=0,
        files=[source_file],
        unknown_columns={source_file: sorted(unknown)} if unknown else {},
        notes={"scores": pd.DataFrame(parser.records, columns=RECORD_COLUMNS)},
        warnings=parser.warnings,
    )


def _frame(rows: list[dict[str, Any]], columns: list[str], times: Sequence[str]) -> pd.DataFrame:
    """Rows as the contract's columns; the last row of an event wins (latest snapshot)."""
    if not rows:
        return empty_frame(columns)
    frame = pd.DataFrame(rows, columns=columns)
    for col in times:
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in ("home_score", "away_score"):
        if col in frame:
            frame[col] = frame[col].astype("float64")
    return frame.drop_duplicates("event_id", keep="last").reset_index(drop=True)


def parse_scores_file(path: str | Path, *, fetched_at: Any = None) -> ParseResult:
    """Every response saved in one file (bare lists or envelopes, one or one a line).

    A bare list carries no fetch time: `fetched_at` if given, else its newest last_update
    (the earliest moment it could have been fetched).
    """
    path = Path(path)
    parsed = []
    for line, doc in read_documents(path):
        when = fetched_at
        if when is None and isinstance(doc, list):
            when = _newest_update(doc)
        result = parse_scores(doc, source_file=path.name, fetched_at=when, line=line)
        parsed.append(result)
    result = combine(parsed)
    result.files = [path.name]
    return result


def summarize_scores(result: ParseResult) -> dict[str, Any]:
    """The asset's figures: events read, completed, written, skipped (with reasons), pending.

    Counted per event on its latest record (files in time order), so an event seen in
    several snapshots counts once.
    """
    records = result.notes.get("scores")
    if not isinstance(records, pd.DataFrame) or records.empty:
        records = pd.DataFrame(columns=RECORD_COLUMNS)
    no_id = records[records["event_id"].isna()]
    latest = records[records["event_id"].notna()].drop_duplicates("event_id", keep="last")
    written = set(result.results["event_id"]) if not result.results.empty else set()
    completed = latest[latest["status"] == COMPLETED]
    skipped = completed[~completed["event_id"].isin(written)]
    reasons = pd.concat([skipped["reason"], no_id["reason"]]).fillna("unknown").value_counts()
    return {
        "events": int(len(latest)),
        "completed": int(len(completed)),
        "written": int(len(result.results)),
        "skipped": int(reasons.sum()),
        "skipped_reasons": {str(k): int(v) for k, v in sorted(reasons.items())},
        "in_progress": int((latest["status"] == IN_PROGRESS).sum()),
        "not_started": int((latest["status"] == NOT_STARTED).sum()),
    }


def _newest_update(events: Iterable[Any]) -> pd.Timestamp | None:
    stamps = [
        stamp
        for ev in events
        if isinstance(ev, dict) and (stamp := _utc(ev.get("last_update"))) is not None
    ]
    return max(stamps) if stamps else None


def load_id_of(day: str) -> str:
    """The asset's one load per daily partition, e.g. `odds_api_scores:2025-11-18`."""
    return f"{LOAD_PREFIX}:{day}"


# --------------------------------------------------------------------------- replay


def _utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class ReplayScoresFeed:
    """Serves saved scores responses as if live: each `scores(sport)` returns the next one.

    Documents are split by `sport_key` and ordered by fetch time (an envelope's timestamp,
    else the newest last_update); after the last one the feed keeps answering it. Like the
    endpoint, completed events that kicked off more than `days_from` days before the fetch
    are left out; a sport with no saved response answers an empty list. Files are read on
    the first call and kept in memory: meant for samples and tests.
    """

    def __init__(
        self,
        paths: Iterable[str | Path] | str | Path,
        *,
        sports: Sequence[str] | None = None,
        clock: Callable[[], pd.Timestamp] = _utc_now,
        position_file: str | Path | None = None,
    ) -> None:
        self.paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
        self._clock = clock
        self._sports = tuple(sports) if sports is not None else None
        self._responses: dict[str, list[FeedResponse]] | None = None
        self._cursor = ReplayCursor(position_file)

    def __repr__(self) -> str:
        return f"ReplayScoresFeed(paths={[str(p) for p in self.paths]!r})"

    @property
    def sports(self) -> tuple[str, ...]:
        return self._sports if self._sports is not None else tuple(sorted(self._index()))

    def _index(self) -> dict[str, list[FeedResponse]]:
        if self._responses is not None:
            return self._responses
        responses: dict[str, list[FeedResponse]] = {}
        for path in self.paths:
            for line, doc in read_documents(path):
                if isinstance(doc, dict) and isinstance(doc.get("data"), list):
                    events, fetched = doc["data"], _utc(doc.get("timestamp"))
                elif isinstance(doc, list):
                    events, fetched = doc, None
                else:
                    raise SourceFormatError(
                        str(path), line, "expected a list of events or an envelope with `data`"
                    )
                if fetched is None:
                    fetched = _newest_update(events)
                by_sport: dict[str, list[dict[str, Any]]] = {}
                for ev in events:
                    if isinstance(ev, dict):
                        by_sport.setdefault(str(ev.get("sport_key")), []).append(ev)
                where = f"replay {path.name}" + (f" line {line}" if line is not None else "")
                for sport, sport_events in by_sport.items():
                    responses.setdefault(sport, []).append(
                        FeedResponse(
                            sport=sport,
                            payload=sport_events,
                            received_at=fetched if fetched is not None else self._clock(),
                            request=where,
                            source_file=path.name,
                        )
                    )
        for items in responses.values():
            items.sort(key=lambda r: r.received_at)
        self._responses = responses
        return responses

    def scores(self, sport: str, days_from: int = MAX_SCORES_DAYS_FROM) -> FeedResponse:
        days = check_days_from(days_from)
        items = self._index().get(sport)
        if not items:
            return FeedResponse(
                sport=sport, payload=[], received_at=self._clock(), request=f"replay: no {sport}"
            )
        saved = items[self._cursor.take(f"scores:{sport}", len(items))]
        oldest = pd.Timestamp(saved.received_at) - pd.Timedelta(days=days)

        def within(ev: dict[str, Any]) -> bool:
            commence = _utc(ev.get("commence_time"))
            return ev.get("completed") is not True or commence is None or commence >= oldest

        return FeedResponse(
            sport=sport,
            payload=[ev for ev in saved.payload if within(ev)],
            received_at=saved.received_at,
            request=f"{saved.request} (daysFrom={days})",
            source_file=saved.source_file,
        )
