"""football-data.co.uk CSVs (one file a season, one row a match) -> canonical candidate quotes.

The site's header changes from era to era and new bookmakers appear, so odds columns are
discovered by *pattern*, never from a hard-coded list (see `discover_columns`):

- 1X2 ``<P>H, <P>D, <P>A``               -> market ``h2h``, outcomes home/draw/away
- over/under ``<P>>2.5, <P><2.5``         -> market ``totals``, over/under, point 2.5
- Asian handicap ``<P>AHH, <P>AHA``       -> market ``spreads``, home/away; the home point is
  the line (``<P>AH`` per book in 2003-05, else ``AHh``, older ``BbAHh``; closing ``AHCh``),
  the away point its negation.

A prefix ``<P>`` is a bookmaker only when its FULL set of outcome columns is present
(prefixes may themselves end in an outcome letter: ``ZZH, ZZD`` without ``ZZA`` is reported
as unknown columns, not guessed). ``<BOOK>C`` is the closing price of ``<BOOK>`` when
``<BOOK>`` is a prefix of the same file (or a known bookmaker): ``PSCH`` is Pinnacle
closing, ``VCCH`` VC Bet closing, but ``VCH`` is VC Bet pre-match because ``V`` is no
bookmaker. An unmapped prefix with a full set is still ingested (bookmaker key = the
lowercased prefix) and listed in ``notes["unmapped_bookmaker_prefixes"]``.

Choices a reader of the store must know:

- ``Max*``, ``Avg*``, ``Bb*`` (BetBrain max/average/counts) are aggregates across books
  and times, not a bookmaker: they yield no quotes and are not counted in ``prices_read``
  (they are known columns, so they are not reported as unknown either). Arbitrage and
  models must not read them as one book's price.
- Kickoff = ``Date`` + ``Time`` in UK local time (Europe/London) converted to UTC; files
  before 2019/20 have no ``Time`` and get ``default_kickoff_time``. Pre-match prices are
  observed at kickoff - ``prematch_offset_hours`` (the site collects them a few days before
  the match; the exact moment is unknown), closing prices at kickoff (not in-play).
- Historical bulk load in "as observed" mode: ``ingested_at = observed_at``.
- An empty cell is "no price": it is not a price read and yields no candidate. A
  non-empty cell that is not a number is a price read, rejected ``unparseable_price``.
- Results: ``FTHG``/``FTAG``, ``resolved_at`` = kickoff + 2 hours (a match's length incl.
  half-time; the file carries no full-time timestamp).
- File shape (``read_csv_table``): a row whose field count differs from the header's, a
  duplicated column name or a quoted cell spanning lines fails the file with
  ``SourceFormatError`` (file, line, both counts) -- a comma in a team name must not shift
  a row's prices into the wrong columns. A last row cut short (a truncated download) is
  the exception: its prices are rejected ``truncated_row`` (``raw`` = the line as it
  stands; one row-level record when it holds no price), it gives no event or result, and
  ``warnings`` says so. UTF-8 (BOM optional) is tried first, then cp1252 (with a
  warning); the encoding used is in ``notes["file_encodings"]``.
- ``event_id`` = ``fd:<league>:<local match date>:<home slug>:<away slug>``; ``season`` is
  derived once per file from its first match date (a season starts in July), so the
  2019/20 games played in July 2020 after the COVID pause stay in "2019-2020".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from odds_pipeline.ingestion.sources import CsvTable, read_csv_table
from odds_pipeline.ingestion.store import load_id_for  # the one home of load ids
from odds_pipeline.market.quotes import (
    CANDIDATE_COLUMNS,
    EVENT_COLUMNS,
    RESULT_COLUMNS,
    ParseResult,
    SourceFormatError,
    validate_candidates,
)

SOURCE = "football_data"
SPORT = "soccer"
LOCAL_TZ = "Europe/London"
MATCH_DURATION = pd.Timedelta(hours=2)

# Column prefix -> bookmaker key (football-data.co.uk notes.txt). Pinnacle is `PS` in 1X2
# and `P` in over/under and Asian handicap. Unmapped prefixes still ingest (lowercased).
BOOKMAKER_KEYS: dict[str, str] = {
    "B365": "bet365",
    "BW": "bwin",
    "IW": "interwetten",
    "PS": "pinnacle",
    "P": "pinnacle",
    "WH": "williamhill",
    "VC": "vcbet",
    "GB": "gamebookers",
    "LB": "ladbrokes",
    "SB": "sportingbet",
    "SJ": "stanjames",
    "SO": "sportingodds",
    "SY": "stanleybet",
    "BS": "bluesquare",
    "CL": "coral",
    "BV": "betvictor",
    "BFD": "betfred",
    "BMGM": "betmgm",
    "1XB": "1xbet",
    "BF": "betfair",
    "BFE": "betfair_ex",
}

KEY_COLUMNS = ("Date", "HomeTeam", "AwayTeam")
# Some older football-data files (other divisions) name the teams HT/AT.
COLUMN_ALIASES = {"HT": "HomeTeam", "AT": "AwayTeam"}
# Match facts and statistics: known, never odds, never reported as unknown.
STAT_COLUMNS = frozenset(
    {
        "Div", "Date", "Time", "HomeTeam", "AwayTeam", "Country", "League", "Season",
        "FTHG", "FTAG", "FTR", "HG", "AG", "Res", "HTHG", "HTAG", "HTR",
        "Attendance", "Referee", "HS", "AS", "HST", "AST", "HHW", "AHW", "HC", "AC",
        "HF", "AF", "HFKC", "AFKC", "HO", "AO", "HY", "AY", "HR", "AR", "HBP", "ABP",
    }
)  # fmt: skip
# Cross-book aggregates (BetBrain `Bb*`, later `Max*`/`Avg*`), incl. closing `MaxC*`.
_AGGREGATE_RE = re.compile(r"^(?:Max|Avg|BbMx|BbAv)C?(?:H|D|A|AHH|AHA|[<>]\d+(?:\.\d+)?)$")
AGGREGATE_EXTRA = frozenset({"Bb1X2", "BbOU", "BbAH", "BbAHh"})  # BetBrain counts and line
PREMATCH_LINE_COLUMNS = ("AHh", "BbAHh")  # first present wins
CLOSING_LINE_COLUMNS = ("AHCh",)
_TOTALS_RE = re.compile(r"^(?P<prefix>.+?)(?P<side>[<>])(?P<point>\d+(?:\.\d+)?)$")

H2H_OUTCOMES = {"H": "home", "D": "draw", "A": "away"}
SPREAD_OUTCOMES = {"AHH": "home", "AHA": "away"}
TOTAL_OUTCOMES = {">": "over", "<": "under"}


@dataclass(frozen=True)
class OddsColumn:
    """One price column: whose price, of which outcome, pre-match or closing."""

    column: str
    prefix: str  # the group's prefix as written, e.g. "B365C"
    book_prefix: str  # the bookmaker part, e.g. "B365"
    bookmaker: str
    closing: bool
    market: str
    outcome: str
    point: float = float("nan")  # totals: from the column name
    line_column: str | None = None  # spreads: where the home line is read
    line_sign: float = 1.0  # spreads: +1 home, -1 away


@dataclass
class ColumnPlan:
    """What `discover_columns` made of a header."""

    odds: list[OddsColumn] = field(default_factory=list)
    line_columns: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    unmapped_prefixes: list[str] = field(default_factory=list)


def _is_aggregate(column: str) -> bool:
    return column in AGGREGATE_EXTRA or _AGGREGATE_RE.match(column) is not None


def discover_columns(columns: Sequence[str]) -> ColumnPlan:
    """Classify a header by pattern: odds groups with full outcome sets, lines, unknowns.

    Groups are claimed 1X2 first (three columns incl. a draw are the strongest evidence),
    then Asian handicap, then totals; a column belongs to at most one group.
    """
    present = set(columns)
    known = {c for c in columns if c in STAT_COLUMNS or _is_aggregate(c)}
    candidates = [c for c in columns if c not in known]
    claimed: set[str] = set()
    # (prefix, market, point) -> {outcome: column}
    groups: dict[tuple[str, str, float | None], dict[str, str]] = {}

    def collect(market: str) -> dict[tuple[str, str, float | None], dict[str, str]]:
        found: dict[tuple[str, str, float | None], dict[str, str]] = {}
        for col in candidates:
            if col in claimed:
                continue
            if market == "h2h" and len(col) > 1 and col[-1] in H2H_OUTCOMES:
                found.setdefault((col[:-1], market, None), {})[H2H_OUTCOMES[col[-1]]] = col
            elif market == "spreads" and len(col) > 3 and col[-3:] in SPREAD_OUTCOMES:
                found.setdefault((col[:-3], market, None), {})[SPREAD_OUTCOMES[col[-3:]]] = col
            elif market == "totals" and (m := _TOTALS_RE.match(col)):
                key = (m["prefix"], market, float(m["point"]))
                found.setdefault(key, {})[TOTAL_OUTCOMES[m["side"]]] = col
        return found

    full_sets = {
        "h2h": set(H2H_OUTCOMES.values()),
        "spreads": {"home", "away"},
        "totals": {"over", "under"},
    }
    for market in ("h2h", "spreads", "totals"):
        for key, outcomes in collect(market).items():
            if set(outcomes) == full_sets[market]:
                groups[key] = outcomes
                claimed.update(outcomes.values())

    prefixes = {prefix for prefix, _, _ in groups}

    def resolve(prefix: str) -> tuple[str, bool]:
        """(bookmaker prefix, closing?): `XC` is closing of `X` when `X` is a book here."""
        base = prefix[:-1]
        if prefix.endswith("C") and base and base in prefixes:
            return base, True
        if prefix in BOOKMAKER_KEYS:
            return prefix, False
        if prefix.endswith("C") and base in BOOKMAKER_KEYS:
            return base, True
        return prefix, False

    plan = ColumnPlan()
    line_columns: set[str] = set()
    unmapped: set[str] = set()
    for (prefix, market, point), outcomes in groups.items():
        book_prefix, closing = resolve(prefix)
        bookmaker = BOOKMAKER_KEYS.get(book_prefix)
        if bookmaker is None:
            bookmaker = book_prefix.lower()
            unmapped.add(book_prefix)
        line_column: str | None = None
        if market == "spreads":
            own = f"{prefix}AH"  # per-book line, 2003/04-2004/05
            shared = CLOSING_LINE_COLUMNS if closing else PREMATCH_LINE_COLUMNS
            for name in (own, *shared):
                if name in present:
                    line_column = name
                    break
            if line_column is not None:
                line_columns.add(line_column)
        for outcome, column in outcomes.items():
            plan.odds.append(
                OddsColumn(
                    column=column,
                    prefix=prefix,
                    book_prefix=book_prefix,
                    bookmaker=bookmaker,
                    closing=closing,
                    market=market,
                    outcome=outcome,
                    point=float("nan") if point is None else point,
                    line_column=line_column,
                    line_sign=-1.0 if (market == "spreads" and outcome == "away") else 1.0,
                )
            )
    # Shared line columns are known even when no book quotes Asian handicap that season.
    known.update(c for c in (*PREMATCH_LINE_COLUMNS, *CLOSING_LINE_COLUMNS) if c in present)
    known.update(line_columns)
    plan.line_columns = sorted(line_columns)
    plan.unknown = [c for c in columns if c not in known and c not in claimed]
    plan.unmapped_prefixes = sorted(unmapped)
    plan.odds.sort(key=lambda o: list(columns).index(o.column))
    return plan


_EDGE_SPACE = re.compile(r"(?:^|,)[ \t]|[ \t](?:,|$)")  # a cell with padding, in a joined row


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[str], CsvTable]:
    """All cells as stripped strings, one row per record, plus the table's shape facts.

    `read_csv_table` has checked every row's field count and the header's names, so a
    comma inside a team name fails the file instead of shifting the row by one column.
    """
    table = read_csv_table(path)
    # HT/AT are the team columns only in files that lack HomeTeam/AwayTeam.
    header = [
        COLUMN_ALIASES[c] if c in COLUMN_ALIASES and COLUMN_ALIASES[c] not in table.header else c
        for c in table.header
    ]
    frame = pd.DataFrame(table.rows, columns=header, dtype=object)
    if len(frame) and any(_EDGE_SPACE.search(",".join(row)) for row in table.rows):
        # Some cell has padding: strip every cell in one vectorized pass.
        cells = np.strings.strip(frame.to_numpy(dtype=str)).astype(object)
        frame = pd.DataFrame(cells, columns=header)
    return frame, header, table


def _parse_dates(text: pd.Series) -> pd.Series:
    """`dd/mm/yyyy` or `dd/mm/yy` (older seasons) per cell; anything else -> NaT."""
    long = pd.to_datetime(text, format="%d/%m/%Y", errors="coerce")
    short = pd.to_datetime(text, format="%d/%m/%y", errors="coerce")
    return long.fillna(short)


def _parse_clock(value: str) -> pd.Timedelta:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"default_kickoff_time must be HH:MM, got {value!r}")
    return pd.Timedelta(hours=int(match[1]), minutes=int(match[2]))


def _parse_times(
    text: pd.Series, default: pd.Timedelta
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Clock times as offsets from midnight; (offsets, defaulted?, unparseable?)."""
    empty = (text == "").to_numpy()
    parts = text.str.extract(r"^(\d{1,2}):(\d{2})(?::\d{2})?$")
    hours = pd.to_numeric(parts[0], errors="coerce")
    minutes = pd.to_numeric(parts[1], errors="coerce")
    ok = (hours <= 23) & (minutes <= 59)
    offsets = pd.to_timedelta(hours * 60 + minutes, unit="m").where(ok)
    bad = (~empty) & offsets.isna().to_numpy()
    offsets = offsets.where(~empty, default)
    return offsets, empty, bad


def _slug(text: pd.Series) -> pd.Series:
    """`Nott'm Forest` -> `nott-m-forest`; computed once per distinct name (a few dozen)."""
    names = pd.Series(text.unique())
    ascii_ = names.str.normalize("NFKD").str.encode("ascii", "ignore").str.decode("ascii")
    slugs = ascii_.str.lower().str.replace(r"[^a-z0-9]+", "-", regex=True).str.strip("-")
    return text.map(dict(zip(names, slugs, strict=True)))


def _season_of(dates: pd.Series) -> str | None:
    first = dates.min()
    if pd.isna(first):
        return None
    start = first.year if first.month >= 7 else first.year - 1
    return f"{start}-{start + 1}"


def parse_file(
    path: str | Path,
    *,
    keep_in_play: bool = False,
    prematch_offset_hours: float = 72.0,
    default_kickoff_time: str = "15:00",
    league: str | None = None,
) -> ParseResult:
    """Parse one football-data.co.uk CSV into quotes, rejects, events and results.

    `league` overrides the `Div` column (needed for files without one; otherwise the
    league code falls back to the file name up to its first `_`, e.g. `E0_2021-2022.csv`).
    """
    path = Path(path)
    name = path.name
    default_time = _parse_clock(default_kickoff_time)
    offset = pd.Timedelta(hours=float(prematch_offset_hours))

    raw, header, table = _read_csv(path)
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        raise SourceFormatError(
            str(path),
            table.header_line,
            f"missing key column(s) {missing}; header starts {header[:6]}",
        )

    line_numbers = np.asarray(table.lines, dtype=np.int64)
    # A last row cut short (truncated download): its prices are rejected, it gives no match.
    cut = np.zeros(len(raw), dtype=bool)
    if table.truncated is not None:
        cut[table.truncated] = True
    # Fully-empty rows (trailing ',,,,') are no match: dropped, not counted.
    keep = (raw != "").any(axis=1).to_numpy()
    frame = raw.loc[keep].reset_index(drop=True)
    line_numbers = line_numbers[keep]
    cut = cut[keep]
    n = len(frame)

    # Header-less filler columns (`,,,,,` at the end of a header) are ignored when empty.
    unnamed = [c for c in header if c.startswith("Unnamed: ") or c == ""]
    empty_unnamed = {c for c in unnamed if not (frame[c] != "").any()}
    columns = [c for c in header if c not in empty_unnamed]
    plan = discover_columns(columns)

    # --- per match ----------------------------------------------------------------
    dates = _parse_dates(frame["Date"])
    bad_date = dates.isna().to_numpy()
    if "Time" in frame:
        clock, defaulted, bad_time = _parse_times(frame["Time"], default_time)
    else:
        clock = pd.Series(default_time, index=frame.index)
        defaulted = np.ones(n, dtype=bool)
        bad_time = np.zeros(n, dtype=bool)
    local = dates + clock
    kickoff = local.dt.tz_localize(
        LOCAL_TZ, ambiguous=np.zeros(n, dtype=bool), nonexistent="shift_forward"
    ).dt.tz_convert("UTC")
    kickoff = kickoff.where(~bad_time)

    if league is not None:
        leagues = pd.Series(league, index=frame.index, dtype=object)
    else:
        fallback = re.split(r"[_.]", name, maxsplit=1)[0] or "unknown"
        div = frame["Div"] if "Div" in frame else pd.Series("", index=frame.index)
        leagues = div.where(div != "", fallback)
    home = frame["HomeTeam"]
    away = frame["AwayTeam"]
    missing_team = ((home == "") | (away == "")).to_numpy()
    day = dates.dt.strftime("%Y-%m-%d").where(~bad_date, "invalid-date")
    event_id = "fd:" + leagues + ":" + day + ":" + _slug(home) + ":" + _slug(away)
    season = _season_of(dates)

    valid = ~(bad_date | bad_time | missing_team | cut)
    events = pd.DataFrame(
        {
            "event_id": event_id,
            "source": SOURCE,
            "sport": SPORT,
            "league": leagues,
            "season": season,
            "commence_time": kickoff,
            "home_team": home,
            "away_team": away,
        }
    ).loc[valid, EVENT_COLUMNS]
    events = events.drop_duplicates("event_id", keep="first").reset_index(drop=True)

    if "FTHG" in frame and "FTAG" in frame:
        home_score = pd.to_numeric(frame["FTHG"], errors="coerce")
        away_score = pd.to_numeric(frame["FTAG"], errors="coerce")
        scored = valid & home_score.notna().to_numpy() & away_score.notna().to_numpy()
        results = pd.DataFrame(
            {
                "event_id": event_id,
                "source": SOURCE,
                "home_score": home_score.astype("float64"),
                "away_score": away_score.astype("float64"),
                "resolved_at": kickoff + MATCH_DURATION,
            }
        ).loc[scored, RESULT_COLUMNS]
        results = results.drop_duplicates("event_id", keep="first").reset_index(drop=True)
    else:
        results = pd.DataFrame({c: pd.Series(dtype="object") for c in RESULT_COLUMNS})

    # --- per price: melt the wide odds block to one row per non-empty cell -------------
    odds_cols = [o.column for o in plan.odds]
    long = (
        frame[odds_cols]
        .assign(_row=np.arange(n))
        .melt(id_vars="_row", var_name="column", value_name="price_raw")
    )
    long = long.loc[long["price_raw"] != ""]  # an empty cell is no price: not a price read
    prices_read = len(long)
    row = long["_row"].to_numpy()
    spec_idx = pd.Categorical(long["column"], categories=odds_cols).codes
    spec = pd.DataFrame(
        [asdict(o) for o in plan.odds], columns=[f.name for f in fields(OddsColumn)]
    )

    def per_price(name: str) -> np.ndarray:
        return spec[name].to_numpy()[spec_idx]

    price_raw = long["price_raw"].to_numpy()
    price = pd.to_numeric(long["price_raw"], errors="coerce").to_numpy(dtype="float64")
    ko = pd.Series(kickoff.array.take(row))
    closing = per_price("closing").astype(bool)
    observed = ko.where(closing, ko - offset)

    # Handicap lines: the home line from the price's line column, same row; away negated.
    market = per_price("market")
    point = per_price("point").astype("float64")
    is_spread = market == "spreads"
    line_raw = np.full(len(long), "", dtype=object)
    line_of = per_price("line_column")
    for line_col in plan.line_columns:
        hit = is_spread & (line_of == line_col)
        line_raw[hit] = frame[line_col].to_numpy()[row[hit]]
    line_value = pd.to_numeric(pd.Series(line_raw), errors="coerce").to_numpy(dtype="float64")
    # `+ 0.0` turns the away side of a level line (-0.0) into 0.0.
    point = np.where(is_spread, line_value * per_price("line_sign").astype("float64") + 0.0, point)
    no_line = is_spread & (line_raw == "")
    bad_line = is_spread & ~no_line & np.isnan(line_value)

    reason = np.full(len(long), None, dtype=object)
    for mask, why in (
        (cut[row], "truncated_row"),
        (bad_date[row], "bad_date"),
        (bad_time[row], "bad_kickoff_time"),
        (missing_team[row], "missing_team"),
        (np.isnan(price), "unparseable_price"),
        (no_line, "missing_handicap_line"),
        (bad_line, "unparseable_handicap_line"),
    ):
        reason[mask & pd.isna(reason)] = why

    column = long["column"].to_numpy(dtype=object)
    candidates = pd.DataFrame(
        {
            "source": SOURCE,
            "event_id": event_id.to_numpy(dtype=object)[row],
            "bookmaker": per_price("bookmaker"),
            "market": market,
            "outcome": per_price("outcome"),
            "outcome_name": column,
            "point": point,
            "price": price,
            "price_raw": price_raw,
            "observed_at": observed,
            "commence_time": ko,
            "source_file": name,
            "source_record": "line "
            + line_numbers[row].astype(str).astype(object)
            + ", column "
            + column,
            "reason": reason,
            "ingested_at": observed,  # historical bulk load: "as observed" mode
        },
        columns=[*CANDIDATE_COLUMNS, "ingested_at"],
    )
    if cut.any() and not cut[row].any():
        # A cut row without a price cell still shows in the rejects, as one record read.
        candidates = pd.concat(
            [candidates, _row_reject(name, event_id, line_numbers, cut)], ignore_index=True
        )
        prices_read += 1
    quotes, rejected = validate_candidates(
        candidates, load_id=load_id_for(SOURCE, path), keep_in_play=keep_in_play
    )
    if table.truncated_text is not None:
        rejected.loc[rejected["reason"] == "truncated_row", "raw"] = table.truncated_text

    # List-valued notes, so `combine` concatenates them across files.
    notes: dict[str, object] = {"file_encodings": [f"{name}: {table.encoding}"]}
    if plan.unmapped_prefixes:
        notes["unmapped_bookmaker_prefixes"] = plan.unmapped_prefixes
    if defaulted.any():
        notes["default_kickoff_time_files"] = [f"{name}: {int(defaulted.sum())} rows"]
    return ParseResult(
        quotes=quotes,
        rejected=rejected,
        events=events,
        results=results,
        prices_read=prices_read,
        files=[str(path)],
        unknown_columns={name: plan.unknown} if plan.unknown else {},
        notes=notes,
        warnings=table.warnings,
    )


def _row_reject(
    name: str, event_id: pd.Series, line_numbers: np.ndarray, cut: np.ndarray
) -> pd.DataFrame:
    """One candidate standing for the cut-short row itself (it had no price cell)."""
    i = int(np.flatnonzero(cut)[0])
    missing_time = pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")
    return pd.DataFrame(
        {
            "source": SOURCE,
            "event_id": [event_id.iloc[i]],
            "bookmaker": None,
            "market": None,
            "outcome": None,
            "outcome_name": None,
            "point": np.nan,
            "price": np.nan,
            "price_raw": None,
            "observed_at": missing_time,
            "commence_time": missing_time,
            "source_file": name,
            "source_record": f"line {line_numbers[i]}",
            "reason": "truncated_row",
            "ingested_at": missing_time,
        }
    )
