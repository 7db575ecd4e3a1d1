"""The Odds API v4: replay of saved responses and a live HTTP client, one parser behind both.

What `parse_file` reads
    The bare `/v4/sports/{sport}/odds` list (a JSON array of events, what the live endpoint
    returns) and the historical endpoint's envelope `{timestamp, previous_timestamp,
    next_timestamp, data: [events]}`; as `.json` (one document), `.jsonl`/`.ndjson` (one
    document a line) or gzip of either (detected by magic bytes, whatever the suffix; an
    unknown suffix holding several documents is read as lines). A file that is not valid
    JSON, or whose structure is not a response (an API error object, `data` that is not a
    list), raises `SourceFormatError` with the line number; nothing is returned from it.
    Every decoder failure is one (nesting too deep for json.loads' recursion, a number
    too long for Python's int included). In a `.json` holding one document, an error in the
    document itself names the line where it starts; one inside it names its JSON path and
    says that no line is known (json.loads keeps no positions).

Two readers, one result
    `.jsonl` files go through pyarrow's JSON reader with an explicit schema (C++: no Python
    object per price; json.loads alone costs more than all of it). Anything it does not
    take exactly (a type change such as a string price, a bare list, `data: null`, a syntax
    error) sends the file to the Python reader, which handles every case and names the bad
    line. Both fill the same per-level columns (`_Levels`), and the tests check that they
    give identical frames. Everything after is vectorized: each distinct timestamp string is
    parsed once, outcome names are matched as codes, and string columns reach the validator
    as Categoricals.

Times (all tz-aware UTC)
    observed_at  the envelope `timestamp`: the moment the whole book was photographed, so the
                 price held then. A bare list has no snapshot time, so the market's
                 `last_update` is used (the bookmaker's when the market has none).
    ingested_at  replay of an envelope: the snapshot `timestamp` (the earliest we could have
                 learned the price); a bare list: observed_at; the live client: the time the
                 response was received, passed by the caller (`ingested_at=`).
    last_update  the market's `last_update`, kept as a column.
    commence_time  read per record (it moves between snapshots); the events table keeps the
                 value of the last record of the event in file order (the latest snapshot).
    A timestamp string without a zone ("2025-11-18T11:59:05") in the snapshot time, the
    commence_time or the market's last_update is refused as `timestamp_without_zone`
    (guessing UTC would shift it silently), an unreadable one as `unparseable_timestamp`, a
    missing observation time as `missing_timestamp` (generic) and a missing commence_time
    as `missing_commence_time` (in-play cannot be told without it). Numbers
    (`dateFormat=unix`) are epoch seconds, UTC by definition.

Prices (`odds_format`)
    "american" or "decimal" when the request said so (the live client always knows);
    None = decide per payload (per JSON document, i.e. per line of a `.jsonl`): American if
    any price is negative, or if every price has |x| >= 100; decimal otherwise. (A decimal
    payload never has negatives, and always has prices below 100; an American one always
    has favourites below zero. The rule "any |x| >= 100 means American" would turn a
    decimal payload holding one 101.0 long shot into garbage.) Sentinels (-2147483648)
    are left out of the decision and rejected as `sentinel_price` by the generic validator,
    which reads `price_raw`. American values with |x| < 100 are refused as
    `invalid_american_price`; missing prices as `missing_price`, non-numbers as
    `unparseable_price`.

Outcomes and markets
    name == home_team -> home, == away_team -> away, "Draw" -> draw, "Over"/"Under" ->
    over/under (totals and spreads keep `point`). A name that matches none in a known market
    -> `unknown_outcome_name`; spreads/totals without a point -> `missing_point`; a record
    without event id or bookmaker key -> `missing_event_id` / `missing_bookmaker`. Unknown
    market keys (`h2h_lay`, `to_qualify`, player props) stay as candidates with the raw key,
    so the validator counts them as `unknown_market` instead of dropping them.

Ids
    event_id = the API's `id`, bookmaker = the bookmaker `key`; events: sport = `sport_key`,
    league = `sport_title`, season = None (a season does not follow from one date: NFL
    2025 runs into January 2026); `event_id_of` is that rule, shared with the scores
    endpoint (`odds_api_scores`), which alone gives results. `source_record` is a
    JSON path, e.g. "line 17: data[3].bookmakers[2].markets[0].outcomes[1]". Fields the v4
    documentation does not list are reported in `unknown_columns` ("event.status", ...).

Live client
    `OddsFeed.fetch_odds(sport) -> FeedResponse` is implemented by `OddsApiClient` (HTTPS,
    retries 429/5xx with exponential backoff honouring Retry-After, raises `FeedAuthError`
    at once on 401/403) and by `ReplayFeed` (saved files, no network), so tests and
    Dagster swap one for the other. `OddsApiClient.scores(sport, days_from)` calls the
    scores endpoint the same way (`odds_api_scores.ReplayScoresFeed` replays saved ones).
    `base_url` (default The Odds API v4 host) points the client elsewhere (a local server
    in tests). The API key travels only in the query string of the request itself: it is
    never kept in a URL, message, repr or response, and creating a client installs
    `KeyScrubber` (root handlers, urllib3 and requests loggers), which masks the key and
    any `apiKey=` value in every log record, so urllib3's DEBUG request lines are clean.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import os
import re
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
import pandas as pd
import requests

from odds_pipeline.ingestion.sources import load_id_for
from odds_pipeline.market.odds_math import SENTINEL_PRICES, american_to_decimal_array
from odds_pipeline.market.quotes import (
    EVENT_COLUMNS,
    MARKETS,
    RESULT_COLUMNS,
    ParseResult,
    SourceFormatError,
    empty_frame,
    validate_candidates,
)

SOURCE = "odds_api"
DEFAULT_BASE_URL = "https://api.the-odds-api.com/v4"
# Sport keys polled when nothing else is configured (the sports in ../shared/data/odds-api).
DEFAULT_SPORTS: tuple[str, ...] = (
    "americanfootball_nfl",
    "americanfootball_ncaaf",
    "baseball_mlb",
    "basketball_wnba",
)
ODDS_FORMATS = ("american", "decimal")
QUOTA_HEADERS = ("x-requests-remaining", "x-requests-used", "x-requests-last")
MAX_SCORES_DAYS_FROM = 3  # the scores endpoint's daysFrom: completed games of the last 1-3 days

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_LINE_SUFFIXES = (".jsonl", ".ndjson")
# Documented fields of the v4 responses (links, sids, bet limits are opt-in); anything else
# is reported in `unknown_columns` so a format change shows up in the asset's metadata.
# "sport" is added by the live asset when it saves a response inside an envelope.
_ENVELOPE_KEYS = frozenset({"timestamp", "previous_timestamp", "next_timestamp", "data", "sport"})
_EVENT_KEYS = frozenset(
    {"id", "sport_key", "sport_title", "commence_time", "home_team", "away_team", "bookmakers"}
)
_BOOKMAKER_KEYS = frozenset({"key", "title", "last_update", "markets", "link", "sid"})
_MARKET_KEYS = frozenset({"key", "last_update", "outcomes", "link", "sid"})
_OUTCOME_KEYS = frozenset({"name", "price", "point", "description", "link", "sid", "bet_limit"})
_FIXED_SIDES = {"Draw": "draw", "Over": "over", "Under": "under"}
_POINT_MARKETS = ("spreads", "totals")
_SENTINELS = np.array(sorted(SENTINEL_PRICES), dtype="float64")
_ZONED = re.compile(r"[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")

# Timestamp states.
_OK, _MISSING, _ZONELESS, _UNPARSEABLE = 0, 1, 2, 3


class _Malformed(Exception):
    """A payload whose structure is not an Odds API response (mapped to SourceFormatError).

    `top_level`: the document itself is wrong (an error object, no `data`), so the line
    where it starts is the line to name; `line`: the line, when the error found it.
    """

    def __init__(self, message: str, *, top_level: bool = False, line: int | None = None):
        super().__init__(message)
        self.top_level = top_level
        self.line = line


_LINE_ROOT = re.compile(r"^line (\d+): ")
# Nesting deeper than this is no Odds API response (an envelope's outcome sits 9 deep).
_NESTING_SHOWN = 100
_JSON_TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"|[\[\]{}\n]')
_LONG_NUMBER = re.compile(rb"\d{4301,}")  # beyond Python's int-from-string digit limit


# --------------------------------------------------------------------------------------
# Flattening: nested JSON -> per-level columns (payloads, events, markets, outcomes).
# Two readers produce the same `_Levels`: pyarrow's JSON reader for `.jsonl` files of
# well-formed envelopes (C++, no Python object per price) and a Python walk over
# json.loads output for everything else, which also decides what is malformed.
# --------------------------------------------------------------------------------------

# A column of strings (or any scalars) as (codes, categories); code -1 = missing.
_Coded = tuple[np.ndarray, np.ndarray]


@dataclass
class _Levels:
    """Flattened payloads: each level's values once, with the index of its parent."""

    p_root: list[str]  # path root of each payload, e.g. "line 17: data"
    p_snapshot: _Coded  # envelope `timestamp` (missing for bare lists)
    p_envelope: np.ndarray  # bool
    e_payload: np.ndarray  # int64, parent payload
    e_pos: np.ndarray  # position in the payload's event list
    e_id: _Coded
    e_sport: _Coded
    e_title: _Coded
    e_commence: _Coded
    e_home: _Coded
    e_away: _Coded
    m_event: np.ndarray  # parent event
    m_book_pos: np.ndarray  # bookmaker position in the event
    m_pos: np.ndarray  # market position in the bookmaker
    m_count: np.ndarray  # outcomes in the market
    m_book: _Coded
    m_book_lu: _Coded
    m_key: _Coded
    m_lu: _Coded
    o_name: _Coded
    o_value: np.ndarray  # float64 price, NaN when missing or not a number
    o_missing: np.ndarray  # bool: no price at all
    o_raw: np.ndarray | None  # raw values, kept only when some are not numbers
    o_point: np.ndarray  # float64
    unknown: set[str]


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array even when elements are lists (np.array would nest them)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _code(values: Sequence[Any], where: Callable[[int], str] | None = None) -> _Coded:
    """Factorize one field; `where(i)` names the i-th value ("line 3: data[0].id")."""
    try:
        codes, uniques = pd.factorize(_objects(values), use_na_sentinel=True)
    except TypeError:  # a JSON object or array where a scalar belongs
        bad = next(i for i, v in enumerate(values) if isinstance(v, (dict, list)))
        path = where(bad) if where is not None else ""
        found = _LINE_ROOT.match(path)
        raise _Malformed(
            f"{path}: a JSON {type(values[bad]).__name__} where a string or number belongs",
            line=int(found[1]) if found else None,
        ) from None
    return codes.astype(np.int64, copy=False), np.asarray(uniques, dtype=object)


def _decode(coded: _Coded, rows: np.ndarray | None = None) -> np.ndarray:
    """Object values (None where missing), optionally for given rows."""
    codes, cats = coded
    if rows is not None:
        codes = codes[rows]
    return np.append(cats, None)[codes]  # code -1 picks the trailing None


def _floats(values: list[Any]) -> np.ndarray:
    try:
        return np.array(values, dtype="float64")
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(_objects(values)), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )


class _Flattener:
    """The Python reader: appends per level (three appends per price), nothing per row after."""

    def __init__(self) -> None:
        self.p_root: list[str] = []
        self.p_snapshot: list[Any] = []
        self.p_envelope: list[bool] = []
        self.e_payload: list[int] = []
        self.e_pos: list[int] = []
        self.e_id: list[Any] = []
        self.e_sport: list[Any] = []
        self.e_title: list[Any] = []
        self.e_commence: list[Any] = []
        self.e_home: list[Any] = []
        self.e_away: list[Any] = []
        self.m_event: list[int] = []
        self.m_book_pos: list[int] = []
        self.m_pos: list[int] = []
        self.m_count: list[int] = []
        self.m_book: list[Any] = []
        self.m_book_lu: list[Any] = []
        self.m_key: list[Any] = []
        self.m_lu: list[Any] = []
        self.o_name: list[Any] = []
        self.o_price: list[Any] = []
        self.o_point: list[Any] = []
        self.unknown: set[str] = set()

    def add(self, payload: Any, prefix: str, snapshot_time: str | None = None) -> None:
        if isinstance(payload, dict):
            if "data" not in payload:
                if "message" in payload:
                    raise _Malformed(
                        f"an error response, not odds: {str(payload['message'])[:200]!r}",
                        top_level=True,
                    )
                raise _Malformed(
                    "a JSON object without `data`: neither a list of events nor an envelope",
                    top_level=True,
                )
            self.unknown.update(f"envelope.{k}" for k in payload.keys() - _ENVELOPE_KEYS)
            events = payload["data"]
            if events is None:
                events = []
            elif isinstance(events, dict):  # the historical *event* endpoint: one event
                events = [events]
            snapshot: Any = payload.get("timestamp")
            envelope = True
            root = f"{prefix}data"
        elif isinstance(payload, list):
            events, snapshot, envelope, root = payload, None, False, prefix
        else:
            raise _Malformed(
                f"expected a list of events or an envelope, got a JSON {type(payload).__name__}",
                top_level=True,
            )
        if not isinstance(events, list):
            raise _Malformed(f"`data` is a JSON {type(events).__name__}, expected a list of events")
        if snapshot_time is not None:
            snapshot, envelope = snapshot_time, True
        self.p_root.append(root)
        self.p_snapshot.append(snapshot)
        self.p_envelope.append(envelope)
        try:
            self._add_events(events, root)
        except (AttributeError, TypeError) as exc:
            raise _Malformed(f"unexpected structure in {root or 'the list'}: {exc}") from None

    def _add_events(self, events: list[Any], root: str) -> None:
        p = len(self.p_root) - 1
        m_event, m_book_pos, m_pos, m_count = (
            self.m_event.append,
            self.m_book_pos.append,
            self.m_pos.append,
            self.m_count.append,
        )
        m_book, m_book_lu, m_key, m_lu = (
            self.m_book.append,
            self.m_book_lu.append,
            self.m_key.append,
            self.m_lu.append,
        )
        o_name, o_price, o_point = self.o_name.append, self.o_price.append, self.o_point.append
        unknown = self.unknown
        for i, ev in enumerate(events):
            if not isinstance(ev, dict):
                raise _Malformed(
                    f"{root}[{i}] is a JSON {type(ev).__name__}, expected an event object"
                )
            if ev.keys() - _EVENT_KEYS:
                unknown.update(f"event.{k}" for k in ev.keys() - _EVENT_KEYS)
            e = len(self.e_id)
            self.e_payload.append(p)
            self.e_pos.append(i)
            self.e_id.append(ev.get("id"))
            self.e_sport.append(ev.get("sport_key"))
            self.e_title.append(ev.get("sport_title"))
            self.e_commence.append(ev.get("commence_time"))
            self.e_home.append(ev.get("home_team"))
            self.e_away.append(ev.get("away_team"))
            for b, bk in enumerate(ev.get("bookmakers") or ()):
                if bk.keys() - _BOOKMAKER_KEYS:
                    unknown.update(f"bookmaker.{k}" for k in bk.keys() - _BOOKMAKER_KEYS)
                book = bk.get("key")
                book_lu = bk.get("last_update")
                for k, mk in enumerate(bk.get("markets") or ()):
                    if mk.keys() - _MARKET_KEYS:
                        unknown.update(f"market.{x}" for x in mk.keys() - _MARKET_KEYS)
                    outcomes = mk.get("outcomes") or ()
                    if not outcomes:
                        continue
                    m_event(e)
                    m_book_pos(b)
                    m_pos(k)
                    m_count(len(outcomes))
                    m_book(book)
                    m_book_lu(book_lu)
                    m_key(mk.get("key"))
                    m_lu(mk.get("last_update"))
                    for o in outcomes:
                        if o.keys() - _OUTCOME_KEYS:
                            unknown.update(f"outcome.{x}" for x in o.keys() - _OUTCOME_KEYS)
                        o_name(o.get("name"))
                        o_price(o.get("price"))
                        o_point(o.get("point"))

    def levels(self) -> _Levels:
        values = _floats(self.o_price)
        nan_rows = np.flatnonzero(np.isnan(values))
        missing = np.zeros(len(values), dtype=bool)
        raw = None
        if len(nan_rows):
            missing[nan_rows] = np.fromiter(
                (self.o_price[i] is None for i in nan_rows), dtype=bool, count=len(nan_rows)
            )
            if not missing[nan_rows].all():
                raw = _objects(self.o_price)
        ints = partial(np.asarray, dtype=np.int64)
        at_event, at_book, at_market, at_outcome = self._paths()
        return _Levels(
            p_root=self.p_root,
            p_snapshot=_code(self.p_snapshot, lambda i: f"{self._root(i)}timestamp"),
            p_envelope=np.asarray(self.p_envelope, dtype=bool),
            e_payload=ints(self.e_payload),
            e_pos=ints(self.e_pos),
            e_id=_code(self.e_id, at_event("id")),
            e_sport=_code(self.e_sport, at_event("sport_key")),
            e_title=_code(self.e_title, at_event("sport_title")),
            e_commence=_code(self.e_commence, at_event("commence_time")),
            e_home=_code(self.e_home, at_event("home_team")),
            e_away=_code(self.e_away, at_event("away_team")),
            m_event=ints(self.m_event),
            m_book_pos=ints(self.m_book_pos),
            m_pos=ints(self.m_pos),
            m_count=ints(self.m_count),
            m_book=_code(self.m_book, at_book("key")),
            m_book_lu=_code(self.m_book_lu, at_book("last_update")),
            m_key=_code(self.m_key, at_market("key")),
            m_lu=_code(self.m_lu, at_market("last_update")),
            o_name=_code(self.o_name, at_outcome("name")),
            o_value=values,
            o_missing=missing,
            o_raw=raw,
            o_point=_floats(self.o_point),
            unknown=self.unknown,
        )

    def _root(self, payload: int) -> str:
        """The payload's path root without its `data` ("line 3: " for line 3's envelope)."""
        root = self.p_root[payload]
        return root.removesuffix("data") if self.p_envelope[payload] else root

    def _paths(self) -> tuple[Callable[[str], Callable[[int], str]], ...]:
        """Builders of `where(i)` for `_code`, per level: only called when a value is bad."""

        def event(i: int) -> str:
            return f"{self.p_root[self.e_payload[i]]}[{self.e_pos[i]}]"

        def book(i: int) -> str:
            return f"{event(self.m_event[i])}.bookmakers[{self.m_book_pos[i]}]"

        def market(i: int) -> str:
            return f"{book(i)}.markets[{self.m_pos[i]}]"

        def outcome(i: int) -> str:
            ends = np.cumsum(self.m_count)
            m = int(np.searchsorted(ends, i, side="right"))
            return f"{market(m)}.outcomes[{i - (ends[m] - self.m_count[m])}]"

        def at(level: Callable[[int], str]) -> Callable[[str], Callable[[int], str]]:
            return lambda name: lambda i: f"{level(i)}.{name}"

        return at(event), at(book), at(market), at(outcome)


def _arrow_schema() -> Any:
    import pyarrow as pa

    text = pa.string()
    outcome = pa.struct([("name", text), ("price", pa.float64()), ("point", pa.float64())])
    market = pa.struct([("key", text), ("last_update", text), ("outcomes", pa.list_(outcome))])
    book = pa.struct(
        [("key", text), ("title", text), ("last_update", text), ("markets", pa.list_(market))]
    )
    event = pa.struct(
        [
            ("id", text),
            ("sport_key", text),
            ("sport_title", text),
            ("commence_time", text),
            ("home_team", text),
            ("away_team", text),
            ("bookmakers", pa.list_(book)),
        ]
    )
    return pa.schema(
        [
            ("timestamp", text),
            ("previous_timestamp", text),
            ("next_timestamp", text),
            ("data", pa.list_(event)),
        ]
    )


def _arrow_levels(data: bytes) -> _Levels | None:
    """The fast reader for `.jsonl` envelopes; None whenever anything is unusual.

    Types are fixed by an explicit schema (timestamps stay strings so their zone can be
    checked); a type change, a bare list, a null where an object belongs or a syntax error
    makes it give up, and the Python reader then parses the file (or names the bad line).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    line_numbers = [
        number for number, line in enumerate(data.split(b"\n"), start=1) if line.strip()
    ]
    try:
        table = pj.read_json(
            pa.BufferReader(data),
            read_options=pj.ReadOptions(block_size=4 << 20),
            parse_options=pj.ParseOptions(
                explicit_schema=_arrow_schema(), unexpected_field_behavior="infer"
            ),
        )
        if table.num_rows != len(line_numbers):
            return None
        unknown = {f"envelope.{name}" for name in set(table.schema.names) - _ENVELOPE_KEYS}
        data_col = table.column("data").combine_chunks()
        if data_col.null_count:  # `data: null` or no `data`: the Python reader tells them apart
            return None

        def level(
            lists: Any, what: str, known: frozenset[str]
        ) -> tuple[Any, np.ndarray, np.ndarray] | None:
            children = lists.flatten()
            if children.null_count:
                return None
            unknown.update(f"{what}.{f.name}" for f in children.type if f.name not in known)
            parent = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
            position = np.arange(len(parent)) - np.searchsorted(parent, parent, side="left")
            return children, parent, position

        def coded(arr: Any) -> _Coded:
            enc = pc.dictionary_encode(arr)
            codes = pc.fill_null(enc.indices, -1).to_numpy().astype(np.int64)
            return codes, enc.dictionary.to_numpy(zero_copy_only=False).astype(object)

        ev = level(data_col, "event", _EVENT_KEYS)
        if ev is None:
            return None
        events, e_payload, e_pos = ev
        bk = level(events.field("bookmakers"), "bookmaker", _BOOKMAKER_KEYS)
        if bk is None:
            return None
        books, b_event, b_pos = bk
        mk = level(books.field("markets"), "market", _MARKET_KEYS)
        if mk is None:
            return None
        markets, m_book, m_pos = mk
        oc = level(markets.field("outcomes"), "outcome", _OUTCOME_KEYS)
        if oc is None:
            return None
        outcomes, _, _ = oc
        book_codes = coded(books.field("key"))
        book_lu = coded(books.field("last_update"))
        price = outcomes.field("price")
        return _Levels(
            p_root=[f"line {number}: data" for number in line_numbers],
            p_snapshot=coded(table.column("timestamp").combine_chunks()),
            p_envelope=np.ones(table.num_rows, dtype=bool),
            e_payload=e_payload,
            e_pos=e_pos,
            e_id=coded(events.field("id")),
            e_sport=coded(events.field("sport_key")),
            e_title=coded(events.field("sport_title")),
            e_commence=coded(events.field("commence_time")),
            e_home=coded(events.field("home_team")),
            e_away=coded(events.field("away_team")),
            m_event=b_event[m_book],
            m_book_pos=b_pos[m_book],
            m_pos=m_pos,
            m_count=pc.fill_null(pc.list_value_length(markets.field("outcomes")), 0)
            .to_numpy()
            .astype(np.int64),
            m_book=(book_codes[0][m_book], book_codes[1]),
            m_book_lu=(book_lu[0][m_book], book_lu[1]),
            m_key=coded(markets.field("key")),
            m_lu=coded(markets.field("last_update")),
            o_name=coded(outcomes.field("name")),
            o_value=price.to_numpy(zero_copy_only=False).astype("float64"),
            o_missing=price.is_null().to_numpy(zero_copy_only=False),
            o_raw=None,
            o_point=outcomes.field("point").to_numpy(zero_copy_only=False).astype("float64"),
            unknown=unknown,
        )
    except (pa.ArrowException, UnicodeDecodeError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------
# Levels -> candidates -> validated ParseResult.
# --------------------------------------------------------------------------------------


def _category(coded: _Coded, rows: np.ndarray | None = None) -> pd.Categorical:
    """Strings as a Categorical (code -1 = missing) for the given rows."""
    codes, cats = coded
    if rows is not None:
        codes = codes[rows]
    names = cats.astype(str)
    if len(set(names)) != len(names):  # 1 and "1" would collide as categories
        return pd.Categorical(_decode((codes, names.astype(object))))
    return pd.Categorical.from_codes(
        codes, categories=pd.Index(names, dtype=object), validate=False
    )


def _constant(value: str, n: int) -> pd.Categorical:
    return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[value], validate=False)


def _utc_series(values: np.ndarray) -> pd.Series:
    return pd.Series(values.astype("datetime64[ns]"), copy=False).dt.tz_localize("UTC")


def _american_payloads(
    values: np.ndarray, row_payload: np.ndarray, n_payloads: int, odds_format: str | None
) -> np.ndarray:
    """Per payload: True when its prices are American (see the module docstring for the rule)."""
    if odds_format is not None:
        if odds_format not in ODDS_FORMATS:
            raise ValueError(
                f"odds_format must be one of {ODDS_FORMATS} or None (auto), not {odds_format!r}"
            )
        return np.full(n_payloads, odds_format == "american", dtype=bool)
    valid = np.isfinite(values) & ~np.isin(values, _SENTINELS)
    with np.errstate(invalid="ignore"):
        negative = valid & (values < 0)
        big = valid & (np.abs(values) >= 100)
    n_valid = np.bincount(row_payload[valid], minlength=n_payloads)
    n_negative = np.bincount(row_payload[negative], minlength=n_payloads)
    n_big = np.bincount(row_payload[big], minlength=n_payloads)
    return (n_negative > 0) | (n_big == n_valid)  # a payload without prices counts as American


def _parse_times(coded: _Coded) -> tuple[np.ndarray, np.ndarray]:
    """(naive UTC datetime64[ns], state) per value; each distinct value is parsed once."""
    codes, uniq = coded
    u = len(uniq)
    parsed = np.full(u + 1, np.datetime64("NaT"), dtype="datetime64[ns]")
    state = np.full(u + 1, _MISSING, dtype=np.int8)  # slot u (code -1): missing
    if u:
        is_str = np.fromiter((isinstance(x, str) for x in uniq), dtype=bool, count=u)
        is_num = np.fromiter(
            (isinstance(x, int | float) and not isinstance(x, bool) for x in uniq),
            dtype=bool,
            count=u,
        )
        state[:u][~is_str & ~is_num] = _UNPARSEABLE
        if is_str.any():
            idx = np.flatnonzero(is_str)
            text = pd.Series(uniq[idx], dtype=object)
            zoned = text.str.contains(_ZONED).to_numpy(dtype=bool)
            stamps = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            ok = stamps.notna().to_numpy()
            state[idx] = np.where(~ok, _UNPARSEABLE, np.where(zoned, _OK, _ZONELESS))
            good = ok & zoned
            parsed[idx[good]] = stamps[good].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        if is_num.any():  # dateFormat=unix: epoch seconds
            idx = np.flatnonzero(is_num)
            stamps = pd.to_datetime(
                pd.Series(uniq[idx], dtype="float64"), unit="s", errors="coerce"
            )
            ok = stamps.notna().to_numpy()
            state[idx] = np.where(ok, _OK, _UNPARSEABLE)
            parsed[idx[ok]] = stamps[ok].to_numpy(dtype="datetime64[ns]")
    return parsed[codes], state[codes]


def _price_raw(values: np.ndarray, raw: np.ndarray | None) -> np.ndarray:
    """What the feed sent: ints when every price is a whole number (American files)."""
    if raw is not None:
        return raw
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (np.abs(values) < 2**62) & (values == np.round(values))
    if whole.all():
        return values.astype(np.int64)
    if not whole.any():
        return values
    # Mixed (e.g. a missing price among American ints): ints stay ints, NaN stays NaN.
    out = values.astype(object)
    out[whole] = values[whole].astype(np.int64).astype(object)
    return out


def _source_records(
    lv: _Levels,
    row_payload: np.ndarray,
    row_event: np.ndarray,
    row_market: np.ndarray,
    outcome_pos: np.ndarray,
) -> np.ndarray:
    """'line 17: data[3].bookmakers[2].markets[0].outcomes[1]' per row, built in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def text(ints: np.ndarray) -> Any:
        return pa.array(ints).cast(pa.string())

    roots = pa.DictionaryArray.from_arrays(
        pa.array(row_payload.astype(np.int32)), pa.array(lv.p_root, type=pa.string())
    )
    parts = [
        roots.cast(pa.string()),
        "[",
        text(lv.e_pos[row_event]),
        "].bookmakers[",
        text(lv.m_book_pos[row_market]),
        "].markets[",
        text(lv.m_pos[row_market]),
        "].outcomes[",
        text(outcome_pos),
        "]",
    ]
    joined = pc.binary_join_element_wise(
        *[pa.scalar(p) if isinstance(p, str) else p for p in parts], ""
    )
    return joined.to_numpy(zero_copy_only=False)


def event_id_of(raw_id: Any) -> str | None:
    """The canonical event_id of an Odds API event: its `id` as text (None when missing).

    One definition for every endpoint (odds, historical odds, scores), so results join events.
    """
    return None if raw_id is None else str(raw_id)


def _events_frame(lv: _Levels) -> pd.DataFrame:
    ids = _decode(lv.e_id)
    if not len(ids):
        return empty_frame(EVENT_COLUMNS)
    commence, _ = _parse_times(lv.e_commence)
    events = pd.DataFrame(
        {
            "event_id": ids,
            "source": SOURCE,
            "sport": _decode(lv.e_sport),
            "league": _decode(lv.e_title),
            "season": None,
            "commence_time": _utc_series(commence),
            "home_team": _decode(lv.e_home),
            "away_team": _decode(lv.e_away),
        }
    )
    events = events[events["event_id"].notna()].copy()
    events["event_id"] = events["event_id"].map(event_id_of)
    # File order = snapshot order: the last record carries the latest commence_time.
    return events.drop_duplicates("event_id", keep="last").reset_index(drop=True)[EVENT_COLUMNS]


def _finish(
    lv: _Levels,
    *,
    source_file: str,
    load_id: str,
    ingested_at: pd.Timestamp | None,
    keep_in_play: bool,
    odds_format: str | None,
) -> ParseResult:
    n = len(lv.o_value)
    n_payloads = len(lv.p_root)
    counts = lv.m_count
    row_market = np.repeat(np.arange(len(counts)), counts)
    row_event = lv.m_event[row_market]
    row_payload = lv.e_payload[row_event]

    # Prices.
    values = lv.o_value
    american_payload = _american_payloads(values, row_payload, n_payloads, odds_format)
    american = american_payload[row_payload]
    with np.errstate(invalid="ignore"):
        price = np.where(american, american_to_decimal_array(values), values)
        invalid_american = american & np.isfinite(values) & (np.abs(values) < 100)
    unparseable_price = np.isnan(values) & ~lv.o_missing

    # Outcome names -> sides; unknown markets keep their raw key.
    # Compared as codes: each team name is looked up once among the distinct outcome names.
    name_codes, name_cats = lv.o_name
    name_index = pd.Index(name_cats, dtype=object)
    home_code = np.append(name_index.get_indexer(lv.e_home[1]), -2)[lv.e_home[0][row_event]]
    away_code = np.append(name_index.get_indexer(lv.e_away[1]), -2)[lv.e_away[0][row_event]]
    fixed = np.append(
        pd.Series(name_cats, dtype=object).map(_FIXED_SIDES).to_numpy(dtype=object), None
    )
    # [side per distinct name..., None, "home", "away"]
    sides = np.append(fixed, ["home", "away"]).astype(object)
    named = name_codes >= 0
    pick = np.where(
        named & (name_codes == home_code),
        len(fixed),
        np.where(named & (name_codes == away_code), len(fixed) + 1, name_codes),
    )
    pick[~named] = len(fixed) - 1  # no name: the trailing None
    side = sides[pick]
    side[pd.isna(side)] = None
    market_codes = lv.m_key[0][row_market]
    market_cats = lv.m_key[1]
    known_market = np.append(np.isin(market_cats.astype(str), list(MARKETS)), False)[market_codes]
    point_market = np.append(np.isin(market_cats.astype(str), _POINT_MARKETS), False)[market_codes]

    # Times: parsed once per distinct value, then spread to rows.
    snap_t, snap_s = _parse_times(lv.p_snapshot)
    com_t, com_s = _parse_times(lv.e_commence)
    mlu_t, mlu_s = _parse_times(lv.m_lu)
    blu_t, blu_s = _parse_times(lv.m_book_lu)
    envelope = lv.p_envelope[row_payload]
    use_book = mlu_s == _MISSING
    observed_t = np.where(
        envelope, snap_t[row_payload], np.where(use_book, blu_t, mlu_t)[row_market]
    )
    observed_s = np.where(
        envelope, snap_s[row_payload], np.where(use_book, blu_s, mlu_s)[row_market]
    )
    commence_s = com_s[row_event]
    ts_states = (observed_s, commence_s, mlu_s[row_market])

    event_codes = lv.e_id[0][row_event]
    book_codes = lv.m_book[0][row_market]
    reason = np.full(n, None, dtype=object)
    open_ = np.ones(n, dtype=bool)
    for mask, why in (
        (event_codes < 0, "missing_event_id"),
        (book_codes < 0, "missing_bookmaker"),
        (np.logical_or.reduce([s == _ZONELESS for s in ts_states]), "timestamp_without_zone"),
        (np.logical_or.reduce([s == _UNPARSEABLE for s in ts_states]), "unparseable_timestamp"),
        (commence_s == _MISSING, "missing_commence_time"),
        (lv.o_missing, "missing_price"),
        (unparseable_price, "unparseable_price"),
        (invalid_american, "invalid_american_price"),
        (known_market & pd.isna(side), "unknown_outcome_name"),
        (point_market & np.isnan(lv.o_point), "missing_point"),
    ):
        hit = open_ & mask
        if hit.any():
            reason[hit] = why
            open_ &= ~hit

    outcome_pos = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    observed = _utc_series(observed_t)
    # Categoricals keep the validator's key and string work on codes instead of objects.
    candidates = pd.DataFrame(
        {
            "source": _constant(SOURCE, n),
            "event_id": _category(lv.e_id, row_event),
            "bookmaker": _category(lv.m_book, row_market),
            "market": _category(lv.m_key, row_market),
            "outcome": side,
            "outcome_name": _category(lv.o_name),
            "point": lv.o_point,
            "price": price,
            "price_raw": _price_raw(values, lv.o_raw),
            "observed_at": observed,
            "commence_time": _utc_series(com_t[row_event]),
            "source_file": _constant(source_file, n),
            "source_record": _source_records(lv, row_payload, row_event, row_market, outcome_pos)
            if n
            else np.empty(0, dtype=object),
            "reason": reason,
            "last_update": _utc_series(mlu_t[row_market]),
        }
    )
    if ingested_at is None:
        candidates["ingested_at"] = observed
    quotes, rejected = validate_candidates(
        candidates,
        load_id=load_id,
        ingested_at=ingested_at,
        keep_in_play=keep_in_play,
    )
    with_prices = np.bincount(row_payload, minlength=n_payloads) > 0
    snapshots = snap_t[(snap_s == _OK)]
    return ParseResult(
        quotes=quotes,
        rejected=rejected,
        events=_events_frame(lv),
        results=empty_frame(RESULT_COLUMNS),
        prices_read=n,
        files=[source_file],
        unknown_columns={source_file: sorted(lv.unknown)} if lv.unknown else {},
        notes={
            "payloads": n_payloads,
            "odds_format": {
                "american": int((american_payload & with_prices).sum()),
                "decimal": int((~american_payload & with_prices).sum()),
            },
            "snapshot_from": f"{pd.Timestamp(snapshots.min()).isoformat()}Z"
            if len(snapshots)
            else None,
            "snapshot_to": f"{pd.Timestamp(snapshots.max()).isoformat()}Z"
            if len(snapshots)
            else None,
        },
    )


# --------------------------------------------------------------------------------------
# Files and payloads.
# --------------------------------------------------------------------------------------


def _file_bytes(path: Path) -> tuple[bytes, bool]:
    """(decompressed content, one document a line?) for a saved response file.

    Errors found before any line is read say why they name none.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(
            str(path), None, f"cannot read the file, so no line to name: {exc.strerror or exc}"
        ) from exc
    if not data:
        raise SourceFormatError(
            str(path), None, "empty file (0 bytes), so no line to name: no response in it"
        )
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceFormatError(
                str(path),
                None,
                f"corrupt or truncated gzip stream (compressed bytes have no lines): {exc}",
            ) from None
    if not data.strip():
        lines = data.count(b"\n") + (not data.endswith(b"\n"))
        raise SourceFormatError(
            str(path),
            None,
            f"empty file: {len(data)} byte(s) of whitespace on {lines} line(s), no line with "
            "a response in it",
        )
    return data, path.name.lower().removesuffix(".gz").endswith(_LINE_SUFFIXES)


def _first_line(data: bytes) -> int:
    """The line where a single JSON document starts (its first non-blank byte)."""
    stripped = data.lstrip()
    return _line_at(data, len(data) - len(stripped))


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _too_deep(path: Path, data: bytes, number: int | None) -> SourceFormatError:
    """RecursionError from json.loads -> the line where the nesting passes any response's."""
    line = number
    if line is None:
        depth, line_no = 0, 1
        for token in _JSON_TOKEN.finditer(data):
            char = token.group()
            if char == b"\n":
                line_no += 1
            elif char in (b"[", b"{"):
                depth += 1
                if depth > _NESTING_SHOWN:
                    line = line_no
                    break
            elif char in (b"]", b"}"):
                depth -= 1
    return SourceFormatError(
        str(path),
        line,
        f"JSON nested too deeply to decode (more than {_NESTING_SHOWN} levels from here; an "
        "Odds API response nests 9)"
        + ("" if line is not None else " - no line found: the decoder gives no position"),
    )


def _bad_value(path: Path, data: bytes, number: int | None, exc: ValueError) -> SourceFormatError:
    """A ValueError that is no JSONDecodeError (a number too long for Python's int)."""
    line = number
    if line is None and (found := _LONG_NUMBER.search(data)):
        line = _line_at(data, found.start())
    return SourceFormatError(
        str(path),
        line,
        f"unreadable JSON value: {str(exc).split(';')[0]}"
        + ("" if line is not None else " - no line: the decoder gives no position"),
    )


def _documents(path: Path, data: bytes, lines: bool) -> Iterator[tuple[int | None, Any]]:
    """(line number or None, parsed JSON) per document; malformed JSON -> SourceFormatError."""
    if not lines:
        try:
            yield None, json.loads(data)
            return
        except json.JSONDecodeError as exc:
            if not exc.msg.startswith("Extra data"):  # several documents: read them as lines
                raise SourceFormatError(
                    str(path), exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})"
                ) from None
        except UnicodeDecodeError as exc:
            raise SourceFormatError(
                str(path), _line_at(data, exc.start), f"not UTF-8 text: {exc.reason}"
            ) from None
        except RecursionError:
            raise _too_deep(path, data, None) from None
        except ValueError as exc:
            raise _bad_value(path, data, None, exc) from None
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceFormatError(
                str(path), number, f"invalid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        except UnicodeDecodeError as exc:
            raise SourceFormatError(str(path), number, f"not UTF-8 text: {exc.reason}") from None
        except RecursionError:
            raise _too_deep(path, line, number) from None
        except ValueError as exc:
            raise _bad_value(path, line, number, exc) from None
        yield number, doc


def read_documents(path: str | Path) -> Iterator[tuple[int | None, Any]]:
    """(line or None, parsed JSON) per document of a saved response file, any endpoint.

    Same reading rules as `parse_file` (.json/.jsonl, gzip by magic bytes); unreadable
    files and invalid JSON raise `SourceFormatError` naming the line.
    """
    path = Path(path)
    data, lines = _file_bytes(path)
    yield from _documents(path, data, lines)


def _python_levels(path: Path, data: bytes, lines: bool) -> _Levels:
    flat = _Flattener()
    number: int | None = None
    try:
        for number, doc in _documents(path, data, lines):
            flat.add(doc, f"line {number}: " if number is not None else "")
    except _Malformed as exc:
        raise _located(path, data, number, exc) from None
    try:
        return flat.levels()
    except _Malformed as exc:  # a bad value somewhere in the file: it carries its own line
        raise _located(path, data, exc.line, exc) from None


def _located(path: Path, data: bytes, line: int | None, exc: _Malformed) -> SourceFormatError:
    """Name the line: a document's own, where a single document starts, or say why none."""
    if line is not None:  # the JSON path's own "line N: " would repeat the line
        return SourceFormatError(str(path), line, str(exc).removeprefix(f"line {line}: "))
    if exc.top_level:
        return SourceFormatError(str(path), _first_line(data), str(exc))
    return SourceFormatError(
        str(path),
        None,
        f"{exc} - no line: the file is one JSON document, decoded whole; the JSON path "
        "locates the value",
    )


def _as_utc(value: Any, what: str) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware, got {value!r}")
    return stamp.tz_convert("UTC")


def parse_file(
    path: str | Path,
    *,
    keep_in_play: bool = False,
    ingested_at: Any = None,
    odds_format: str | None = None,
    fast: bool = True,
) -> ParseResult:
    """Parse one saved response file (list or envelopes; .json/.jsonl, gzipped or not).

    `fast=False` forces the Python reader (the Arrow one gives the same result, faster).
    """
    path = Path(path)
    ingested = _as_utc(ingested_at, "ingested_at")
    data, lines = _file_bytes(path)
    levels = _arrow_levels(data) if fast and lines else None
    if levels is None:
        levels = _python_levels(path, data, lines)
    del data  # the decompressed text is not needed past this point
    return _finish(
        levels,
        source_file=path.name,
        load_id=load_id_for(SOURCE, path),
        ingested_at=ingested,
        keep_in_play=keep_in_play,
        odds_format=odds_format,
    )


def parse_payload(
    payload: Any,
    *,
    source_file: str,
    source_record_prefix: str = "",
    snapshot_time: Any = None,
    ingested_at: Any = None,
    keep_in_play: bool = False,
    load_id: str,
    odds_format: str | None = None,
) -> ParseResult:
    """Parse one decoded response (bare list or envelope); shared by replay and the live client.

    `snapshot_time` makes a bare list behave like an envelope taken then (observed_at =
    snapshot_time); `ingested_at` overrides the ingestion time (the live client passes the
    time the response arrived).
    """
    snapshot = _as_utc(snapshot_time, "snapshot_time")
    flat = _Flattener()
    try:
        flat.add(
            payload,
            f"{source_record_prefix}: " if source_record_prefix else "",
            snapshot.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if snapshot is not None else None,
        )
        levels = flat.levels()
    except _Malformed as exc:
        raise SourceFormatError(
            source_file, None, f"{exc} - a response in memory, not a file: no line to name"
        ) from None
    return _finish(
        levels,
        source_file=source_file,
        load_id=load_id,
        ingested_at=_as_utc(ingested_at, "ingested_at"),
        keep_in_play=keep_in_play,
        odds_format=odds_format,
    )


# --------------------------------------------------------------------------------------
# Feeds: one interface, a live HTTP client and a replay of saved files.
# --------------------------------------------------------------------------------------


class FeedError(RuntimeError):
    """The feed answered something unusable (bad request, unknown sport); not retried."""


class FeedAuthError(FeedError):
    """The API refused the key (401/403): retrying cannot help, a person must act."""


class TransientFeedError(FeedError):
    """Rate limit, server or network errors that outlasted the retries; a later run may succeed."""


@dataclass(frozen=True)
class FeedResponse:
    """One `/odds` answer: the bare list of events, when it arrived, and the quota it cost.

    `request` describes the call without the key; `snapshot_time` is set by replays of
    historical envelopes (the moment the book was photographed), None for live answers.
    """

    sport: str
    payload: list[dict[str, Any]] = field(repr=False)
    received_at: pd.Timestamp
    quota: dict[str, Any] = field(default_factory=dict)
    request: str = ""
    odds_format: str | None = None
    snapshot_time: pd.Timestamp | None = None
    source_file: str | None = None


class OddsFeed(ABC):
    """Where `/odds` responses come from: the live API or saved files (same calls)."""

    sports: tuple[str, ...] = DEFAULT_SPORTS

    @abstractmethod
    def fetch_odds(self, sport: str) -> FeedResponse:
        """The current odds for one sport key (e.g. "americanfootball_nfl")."""

    def fetch_all(self, sports: Iterable[str] | None = None) -> list[FeedResponse]:
        return [self.fetch_odds(sport) for sport in (self.sports if sports is None else sports)]


def parse_response(
    response: FeedResponse, *, keep_in_play: bool = False, load_id: str | None = None
) -> ParseResult:
    """Canonical quotes from a feed response; ingested_at = when it was received."""
    received = pd.Timestamp(response.received_at).tz_convert("UTC")
    stamp = received.strftime("%Y%m%dT%H%M%SZ")
    return parse_payload(
        response.payload,
        source_file=response.source_file or f"{response.sport}-{stamp}",
        source_record_prefix=f"{response.sport} {stamp}",
        snapshot_time=response.snapshot_time,
        ingested_at=received,
        keep_in_play=keep_in_play,
        load_id=load_id or f"{SOURCE}_live:{response.sport}:{stamp}",
        odds_format=response.odds_format,
    )


def _utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _header_value(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except (TypeError, ValueError):
            continue
    return value


# --------------------------------------------------------------------------------------
# Keeping the key out of logs. The client never logs it, but urllib3 logs every request
# line, query string included ("GET /v4/sports/x/odds?apiKey=... HTTP/1.1" 200), at DEBUG:
# the natural first step when debugging the feed put the key into the event log.
# --------------------------------------------------------------------------------------

MASK = "***"
_KEY_PARAM = re.compile(r"(?i)(api[_-]?key=)[^&\s'\"<>]+")
# Logger filters run only for records created on that very logger (not for records that
# propagate up from children), so urllib3's modules are named one by one.
SCRUBBED_LOGGERS: tuple[str, ...] = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    __name__,
)


def scrub_key(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secrets (pass URL-encoded forms too) and any `apiKey=` value."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return _KEY_PARAM.sub(lambda m: m.group(1) + MASK, text)


class KeyScrubber(logging.Filter):
    """Masks API keys in every record it sees: message, arguments, traceback, stack.

    Installed on the root logger's handlers (every record that reaches them, whatever the
    logger and level) and on urllib3's and requests' loggers (their records are clean before
    any handler, also one added later). It never drops a record.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Also mask this key wherever it appears (raw or URL-encoded), not only after apiKey=."""
        with self._lock:
            variants = {*self._secrets, secret, quote(secret, safe="")} - {""}
            self._secrets = tuple(sorted(variants, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        return scrub_key(text, self._secrets)

    def _clean_arg(self, value: Any, *, render: bool) -> Any:
        """Text is scrubbed; other objects only when `render` (then shown as clean text)."""
        if isinstance(value, str):
            return self.scrub(value)
        if not render or value is None or isinstance(value, int | float):
            return value
        text = str(value)
        clean = self.scrub(text)
        return clean if clean != text else value  # keep the object (and %d/%r) when harmless

    def _clean_args(self, record: logging.LogRecord, *, render: bool) -> None:
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean_arg(a, render=render) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: self._clean_arg(v, render=render) for k, v in record.args.items()}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # badly formed: clean what logging's error report prints (msg, args)
            message = None
        if message is None:
            text = record.msg if isinstance(record.msg, str) else str(record.msg)
            if self.scrub(text) != text:
                record.msg = self.scrub(text)
            self._clean_args(record, render=True)
        elif self.scrub(message) != message:
            record.msg, record.args = self.scrub(message), None  # the clean text, formatted once
        else:  # nothing shown holds a key; text arguments are cleaned for handlers reading them
            self._clean_args(record, render=False)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


_KEY_SCRUBBER = KeyScrubber()


def install_key_scrubber(secret: str | None = None) -> KeyScrubber:
    """Mask `secret` (and every apiKey= value) in logs from now on; safe to call repeatedly.

    Handlers attached to the root logger later are not covered, but urllib3's and requests'
    own loggers are, so their request lines are clean whatever handler prints them.
    """
    if secret:
        _KEY_SCRUBBER.add(secret)
    names = set(SCRUBBED_LOGGERS)
    names.update(
        name
        for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.startswith(("urllib3.", "requests."))
    )
    for name in sorted(names):
        logging.getLogger(name).addFilter(_KEY_SCRUBBER)  # addFilter ignores one already there
    for handler in list(logging.getLogger().handlers):
        handler.addFilter(_KEY_SCRUBBER)
    return _KEY_SCRUBBER


def check_days_from(days_from: int) -> int:
    """The scores endpoint takes 1-3; outside that it answers 422 (after costing a request)."""
    if isinstance(days_from, bool) or not isinstance(days_from, int):
        raise ValueError(f"days_from must be an int from 1 to 3, not {days_from!r}")
    if not 1 <= days_from <= MAX_SCORES_DAYS_FROM:
        raise ValueError(f"days_from must be from 1 to {MAX_SCORES_DAYS_FROM}, not {days_from}")
    return days_from


def _checked_base_url(base_url: str) -> str:
    """`scheme://host[:port][/path]` without a trailing slash; anything else is a config error."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError(
            f"base_url must look like {DEFAULT_BASE_URL!r} (http(s), a host, no query), "
            f"not {scrub_key(base_url)!r}"
        )
    return base_url.strip().rstrip("/")


class OddsApiClient(OddsFeed):
    """The Odds API v4 `/sports/{sport}/odds` over HTTPS with retries; the key stays secret.

    `base_url` (default The Odds API v4 host) points it at a proxy, a mirror or a local test
    server. Creating a client installs the log scrubber (`install_key_scrubber`) for its key.
    """

    def __init__(
        self,
        api_key: str,
        regions: str = "us",
        markets: str = "h2h,spreads,totals",
        bookmakers: str | None = None,
        odds_format: str = "american",
        base_url: str = DEFAULT_BASE_URL,
        session: Any = None,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        sports: Sequence[str] = DEFAULT_SPORTS,
        timeout_s: float = 30.0,
        max_backoff_s: float = 120.0,
        clock: Callable[[], pd.Timestamp] = _utc_now,
    ):
        if not api_key:
            raise FeedAuthError("No Odds API key: set ODDS_API_KEY")
        if odds_format not in ODDS_FORMATS:
            raise ValueError(f"odds_format must be one of {ODDS_FORMATS}, not {odds_format!r}")
        self._api_key = api_key
        install_key_scrubber(api_key)
        self.regions = regions
        self.markets = markets
        self.bookmakers = bookmakers
        self.odds_format = odds_format
        self.base_url = _checked_base_url(base_url)
        self._session = session if session is not None else requests.Session()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.sports = tuple(sports)
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"OddsApiClient(base_url={self.base_url!r}, regions={self.regions!r}, markets={self.markets!r}, "
            f"bookmakers={self.bookmakers!r}, odds_format={self.odds_format!r}, api_key='***')"
        )

    def _params(self) -> dict[str, str]:
        params = {
            "regions": self.regions,
            "markets": self.markets,
            "oddsFormat": self.odds_format,
            "dateFormat": "iso",
        }
        if self.bookmakers:
            params["bookmakers"] = self.bookmakers
        return params

    def _url(self, sport: str) -> str:
        return f"{self.base_url}/sports/{quote(sport, safe='')}/odds"

    def describe(self, sport: str) -> str:
        """The request as it may be logged: everything but the key."""
        return f"GET {self._url(sport)}?{urlencode(self._params())}"

    def _scrub(self, text: str) -> str:
        return scrub_key(text, (self._api_key, quote(self._api_key, safe="")))

    def _retry_after(self, headers: dict[str, str]) -> float | None:
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, (pd.Timestamp(when) - self._clock()).total_seconds())

    def fetch_odds(self, sport: str) -> FeedResponse:
        request = self.describe(sport)
        payload, quota = self._get_list(self._url(sport), self._params(), request)
        return FeedResponse(
            sport=sport,
            payload=payload,
            received_at=self._clock(),
            quota=quota,
            request=request,
            odds_format=self.odds_format,
        )

    def _scores_url(self, sport: str) -> str:
        return f"{self.base_url}/sports/{quote(sport, safe='')}/scores/"

    def scores(self, sport: str, days_from: int = MAX_SCORES_DAYS_FROM) -> FeedResponse:
        """`/v4/sports/{sport}/scores/?daysFrom=N`: live and upcoming events, and those
        completed in the last `days_from` days (1-3) with their scores.

        Same retries, 401/403 handling and key scrubbing as `fetch_odds`; the payload is the
        bare list of events (`odds_api_scores.parse_scores` reads it).
        """
        params = {"daysFrom": str(check_days_from(days_from)), "dateFormat": "iso"}
        request = f"GET {self._scores_url(sport)}?{urlencode(params)}"
        payload, quota = self._get_list(self._scores_url(sport), params, request)
        return FeedResponse(
            sport=sport, payload=payload, received_at=self._clock(), quota=quota, request=request
        )

    def _get_list(
        self, url: str, query: dict[str, str], request: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One GET answered by a JSON list, with the quota headers; the key added here only.

        Retries 429/5xx/network errors/unreadable bodies with exponential backoff (honouring
        Retry-After), raises `FeedAuthError` at once on 401/403 and `FeedError` on other 4xx.
        """
        params = {"apiKey": self._api_key, **query}
        problem = "no attempt"
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = self._session.get(url, params=params, timeout=self.timeout_s)
            except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors too
                problem = f"network error {type(exc).__name__}: {self._scrub(str(exc))[:300]}"
            else:
                status = int(response.status_code)
                headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
                if status in (401, 403):
                    raise FeedAuthError(
                        f"The Odds API refused the key (HTTP {status}): check ODDS_API_KEY. "
                        f"{request}: {self._body_message(response)}"
                    )
                if status == 429 or status >= 500:
                    problem = f"HTTP {status}: {self._body_message(response)}"
                    retry_after = self._retry_after(headers)
                elif not 200 <= status < 300:
                    raise FeedError(
                        f"The Odds API answered HTTP {status} to {request}: "
                        f"{self._body_message(response)}"
                    )
                else:
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = None
                        problem = "the response body is not JSON (truncated?)"
                    if payload is not None:
                        if not isinstance(payload, list):
                            raise FeedError(
                                f"The Odds API answered {type(payload).__name__}, "
                                f"not a list of events, to {request}"
                            )
                        quota = {
                            h: _header_value(headers[h]) for h in QUOTA_HEADERS if h in headers
                        }
                        return payload, quota
            if attempt == self.max_retries:
                break
            delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt
            delay = min(delay, self.max_backoff_s)
            log.warning(
                "The Odds API: %s for %s; retry %d/%d in %.1fs",
                problem,
                request,
                attempt + 1,
                self.max_retries,
                delay,
            )
            self._sleep(delay)
        raise TransientFeedError(
            f"The Odds API failed {self.max_retries + 1} times for {request}; last: {problem}"
        )

    def _body_message(self, response: Any) -> str:
        """The API's error message (JSON `message`, else the start of the body), key scrubbed."""
        try:
            body = response.json()
            text = str(body.get("message", body)) if isinstance(body, dict) else str(body)
        except ValueError:  # not JSON (requests' JSONDecodeError is a ValueError)
            text = str(getattr(response, "text", "") or "")
        return self._scrub(text[:300]) or "(empty body)"


class ReplayFeed(OddsFeed):
    """Serves saved responses as if live: each `fetch_odds(sport)` returns the next snapshot.

    Every document of the files (a bare list, or one envelope a line) is split by
    `sport_key` and ordered by time; after the last one the feed keeps answering it (a
    book that stopped moving). A sport the files do not hold answers an empty list, as the
    live endpoint does out of season. `received_at` is the snapshot time, or for a bare list
    the newest `last_update` in it (when it could have been fetched at the earliest). Files
    are read on the first fetch and kept in memory: meant for samples and tests.
    """

    def __init__(
        self,
        paths: Iterable[str | Path] | str | Path,
        *,
        odds_format: str | None = None,
        sports: Sequence[str] | None = None,
        clock: Callable[[], pd.Timestamp] = _utc_now,
        position_file: str | Path | None = None,
    ):
        self.paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
        self.odds_format = odds_format
        self._clock = clock
        self._responses: dict[str, list[FeedResponse]] | None = None
        # With a position file the replay moves on across processes (each run's poll gets
        # the next snapshot, as a live feed would); without, every new feed starts over.
        self._cursor = ReplayCursor(position_file)
        self._sports = tuple(sports) if sports is not None else None

    def __repr__(self) -> str:
        return f"ReplayFeed(paths={[str(p) for p in self.paths]!r})"

    @property
    def sports(self) -> tuple[str, ...]:  # type: ignore[override]
        return self._sports if self._sports is not None else tuple(sorted(self._index()))

    def _index(self) -> dict[str, list[FeedResponse]]:
        if self._responses is not None:
            return self._responses
        responses: dict[str, list[FeedResponse]] = {}
        for path in self.paths:
            data, lines = _file_bytes(path)
            for number, doc in _documents(path, data, lines):
                if isinstance(doc, dict):
                    events = doc.get("data") or []
                    events = [events] if isinstance(events, dict) else events
                    snapshot = _timestamp_or_none(doc.get("timestamp"))
                else:
                    events, snapshot = doc, None
                if not isinstance(events, list):
                    raise SourceFormatError(
                        str(path),
                        number if number is not None else _first_line(data),
                        "expected a list of events or an envelope"
                        + ("" if number is not None else " (the file's one JSON document)"),
                    )
                by_sport: dict[str, list[dict[str, Any]]] = {}
                for ev in events:
                    if isinstance(ev, dict):
                        by_sport.setdefault(str(ev.get("sport_key")), []).append(ev)
                where = f"replay {path.name}" + (f" line {number}" if number is not None else "")
                for sport, sport_events in by_sport.items():
                    received = snapshot if snapshot is not None else _newest_update(sport_events)
                    responses.setdefault(sport, []).append(
                        FeedResponse(
                            sport=sport,
                            payload=sport_events,
                            received_at=received if received is not None else self._clock(),
                            request=where,
                            odds_format=self.odds_format,
                            snapshot_time=snapshot,
                            source_file=path.name,
                        )
                    )
        for items in responses.values():
            items.sort(key=lambda r: r.received_at)
        self._responses = responses
        return responses

    def fetch_odds(self, sport: str) -> FeedResponse:
        items = self._index().get(sport)
        if not items:
            return FeedResponse(
                sport=sport,
                payload=[],
                received_at=self._clock(),
                request=f"replay: no saved {sport}",
                odds_format=self.odds_format,
            )
        return items[self._cursor.take(sport, len(items))]


class ReplayCursor:
    """Which saved response a replay serves next, per key (a sport). With a position file
    the replay moves on across processes (each run's poll gets the next snapshot, as a live
    feed would); without, every new feed starts over. Past the last response it stays there
    (a book that stopped moving)."""

    def __init__(self, position_file: str | Path | None = None) -> None:
        self._file = Path(position_file) if position_file is not None else None
        self._next = _read_positions(self._file)

    def take(self, key: str, n: int) -> int:
        """The index to serve now out of `n` saved responses (n >= 1)."""
        pos = min(self._next.get(key, 0), n - 1)
        self._next[key] = min(pos + 1, n - 1)
        if self._file is not None:
            _write_positions(self._file, self._next)
        return pos


def _read_positions(path: Path | None) -> dict[str, int]:
    if path is None or not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):  # a damaged position file: start the replay over
        return {}
    return (
        {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}
        if isinstance(raw, dict)
        else {}
    )


def _write_positions(path: Path, positions: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(positions, sort_keys=True))
    os.replace(tmp, path)


def _timestamp_or_none(value: Any) -> pd.Timestamp | None:
    if not isinstance(value, str) or not _ZONED.search(value):
        return None
    try:
        return pd.Timestamp(value).tz_convert("UTC")
    except ValueError:
        return None


def _newest_update(events: list[dict[str, Any]]) -> pd.Timestamp | None:
    stamps = [
        stamp
        for ev in events
        for bk in ev.get("bookmakers") or ()
        if (stamp := _timestamp_or_none(bk.get("last_update"))) is not None
    ]
    return max(stamps) if stamps else None
