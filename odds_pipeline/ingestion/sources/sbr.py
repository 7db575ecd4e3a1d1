"""sportsbookreviewsonline (SBR) NBA odds files -> closing moneyline quotes, events, results.

Layout (one row per team, UTF-8 with or without BOM, else cp1252)::

    Date,Rot,VH,Team,1st,2nd,3rd,4th,Final,Open,Close,ML,2H[,Month,Day,Year]

Decisions a reviewer needs:

- **Pairing.** A game is two consecutive rows whose rotation numbers are (odd, odd + 1);
  the odd row is the visitor and the even row the home team (`VH` = V/H). When `VH` is
  `N` (neutral site) the first row of the pair is treated as away and the second as home,
  and the event id is listed in `notes["neutral_site"]` (EVENT_COLUMNS has no column for
  it). A row in no such pair has its price rejected as `unpaired_row`.
- **Dates.** `Date` is MMDD without a year (the leading zero is often dropped: `114` is
  14 January). An NBA season runs October..June, so a row whose month is >= 8 belongs to
  the season's start year Y and a row whose month is < 8 to Y + 1. Y comes from the first
  row with a usable `Year` column value when that column exists (Y = Year if that row's
  month >= 8, else Year - 1), otherwise from the file name (`nba_odds_2014-15.csv` ->
  2014); if neither gives it the file is refused with `SourceFormatError`. Rows whose
  `Year` disagrees with the derived year are counted in `notes["year_column_mismatches"]`.
  A pair in which a row's Date does not parse -> both prices rejected `bad_date`; a pair
  whose two rows carry different dates -> both prices rejected `pair_date_mismatch`.
  Such pairs give no event, result or lines (an event needs its date).
- **Times.** SBR has no time of day: tip-off = date + `default_tipoff_time` in
  `tipoff_timezone`, converted to UTC (non-existent local times shift forward, ambiguous
  ones are read as standard time). `ML` is the closing moneyline, so
  `observed_at = commence_time = tip-off`; this is a historical bulk load read in "as
  observed" mode, so `ingested_at = observed_at`. Results: `Final` scores, with
  `resolved_at = tip-off + 3 hours` (an NBA game lasts about 2.5 hours).
- **Prices.** Only `ML` carries prices (American odds -> decimal) and becomes `h2h`
  quotes for outcomes home/away (`outcome_name` = the team as SBR spells it). `NL`, an
  empty cell or `-` -> `no_line`; any other non-number -> `unparseable_price`. Every ML
  cell of every row is one price read.
- **Lines, no prices.** `Open`/`Close` hold the spread on the favourite's row and the
  total on the other row; within a pair the larger number is the total (`pk` = spread 0).
  This layout has no prices for them, and we do not invent -110 juice: the lines go to
  `notes["event_lines"]`, a DataFrame with columns event_id, market (spreads/totals),
  line_open, line_close, favourite (home/away, from the closing line, else the opening
  one; None for pick'em and totals), open_observed_at (tip-off - `open_offset_hours`)
  and close_observed_at (tip-off). Spreads are from the home side's point of view
  (negative when home is favourite). A pair whose values are equal, missing or `NL` gets
  NaN for that column. The `2H` (second-half line) column is not parsed.
- **File shape.** As for football-data (`read_csv_table`): a row whose field count
  differs from the header's, or a duplicated column name, fails the file with the line
  and both counts; a last row cut short is rejected `truncated_row` (its partner then
  `unpaired_row`, no event) with a warning in `ParseResult.warnings`; the encoding used
  is in `notes["file_encodings"]`.
- **Ids.** `event_id = sbr:<league lower>:<YYYY-MM-DD>:<odd rot>-<even rot>`, e.g.
  `sbr:nba:2014-10-28:501-502`; `source_record = "line N, column ML"` (N counts the header
  as line 1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from odds_pipeline.ingestion.sources import CsvTable, read_csv_table
from odds_pipeline.ingestion.store import load_id_for  # the one home of load ids
from odds_pipeline.market.odds_math import american_to_decimal_array
from odds_pipeline.market.quotes import (
    CANDIDATE_COLUMNS,
    EVENT_COLUMNS,
    RESULT_COLUMNS,
    ParseResult,
    SourceFormatError,
    validate_candidates,
)

SOURCE = "sbr"
SPORT = "basketball"

KEY_COLUMNS = ["Date", "Rot", "VH", "Team", "Final", "ML"]
KNOWN_COLUMNS = frozenset(
    KEY_COLUMNS + ["1st", "2nd", "3rd", "4th", "Open", "Close", "2H", "Month", "Day", "Year"]
)
NO_LINE = frozenset({"NL", "", "-"})
EVENT_LINE_COLUMNS = [
    "event_id",
    "market",
    "line_open",
    "line_close",
    "favourite",
    "open_observed_at",
    "close_observed_at",
]
RESOLVE_AFTER = pd.Timedelta(hours=3)
_SEASON_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_](\d{2}|\d{4})(?!\d)")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _read_csv(path: Path) -> tuple[pd.DataFrame, CsvTable]:
    """All cells as stripped strings; rows whose field count is off fail the file.

    Without that check a comma inside the first row's team name made pandas take the first
    column as the index, shifting every row so that none paired.
    """
    table = read_csv_table(path, skip_initial_space=True)
    missing = [c for c in KEY_COLUMNS if c not in table.header]
    if missing:
        raise SourceFormatError(
            str(path),
            table.header_line,
            f"not an SBR odds file: missing key column(s) {missing} (header: {table.header})",
        )
    rows = [[cell.strip() for cell in row] for row in table.rows]
    return pd.DataFrame(rows, columns=table.header, dtype=object), table


def _month_day(date: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """MMDD (leading zero optional) -> (month, day) float arrays; NaN where it is not MMDD."""
    ok = date.str.fullmatch(r"\d{3,4}").fillna(False).to_numpy(dtype=bool)
    padded = date.where(ok, "").str.zfill(4)
    month = pd.to_numeric(padded.str[:2], errors="coerce").to_numpy(dtype="float64")
    day = pd.to_numeric(padded.str[2:], errors="coerce").to_numpy(dtype="float64")
    month[~ok] = np.nan
    day[~ok] = np.nan
    return month, day


def _season_start_year(path: Path, frame: pd.DataFrame, month: np.ndarray) -> int:
    """Y of season Y-(Y+1): from the Year column when present, else the file name."""
    if "Year" in frame.columns:
        year = pd.to_numeric(frame["Year"], errors="coerce").to_numpy(dtype="float64")
        usable = np.flatnonzero(np.isfinite(year) & np.isfinite(month))
        if len(usable):
            i = usable[0]
            return int(year[i]) if month[i] >= 8 else int(year[i]) - 1
    match = _SEASON_IN_NAME.search(path.name)
    if match:
        return int(match.group(1))
    raise SourceFormatError(
        str(path),
        None,
        "cannot tell the season: SBR dates are MMDD without a year, the file has no usable "
        "Year column and its name holds no season like 'nba_odds_2014-15.csv'",
    )


def _tipoffs(dates: pd.Series, tipoff_time: str, tz: str) -> pd.Series:
    """ISO dates (None where unknown) + local time of day -> UTC timestamps (NaT where unknown)."""
    local = pd.to_datetime(dates + " " + tipoff_time, format="%Y-%m-%d %H:%M", errors="coerce")
    standard_time = np.zeros(len(local), dtype=bool)
    localized = local.dt.tz_localize(tz, ambiguous=standard_time, nonexistent="shift_forward")
    return localized.dt.tz_convert("UTC")


def _line_values(cells: pd.Series) -> np.ndarray:
    """Open/Close cells -> floats: pk -> 0 (pick'em), NL/empty/garbage -> NaN."""
    pick = cells.str.lower().eq("pk").to_numpy(dtype=bool)
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype="float64")
    values[pick] = 0.0
    return values


def _split_lines(away: np.ndarray, home: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Open or Close column of a pair -> (home spread, total, favourite).

    The larger number is the total, the smaller the favourite's spread; equal or missing
    values cannot be told apart and give NaN.
    """
    known = np.isfinite(away) & np.isfinite(home) & (away != home)
    home_fav = known & (home < away)
    away_fav = known & (away < home)
    spread = np.full(len(away), np.nan)
    total = np.full(len(away), np.nan)
    spread[home_fav] = -home[home_fav]
    total[home_fav] = away[home_fav]
    spread[away_fav] = away[away_fav]
    total[away_fav] = home[away_fav]
    spread = spread + 0.0  # -0.0 (home pick'em) -> 0.0
    favourite = np.full(len(away), None, dtype=object)
    favourite[home_fav & (spread != 0)] = "home"
    favourite[away_fav & (spread != 0)] = "away"
    return spread, total, favourite


def parse_file(
    path: str | Path,
    *,
    keep_in_play: bool = False,
    bookmaker: str = "sbr_consensus",
    default_tipoff_time: str = "19:00",
    tipoff_timezone: str = "America/New_York",
    open_offset_hours: float = 24.0,
    league: str = "NBA",
) -> ParseResult:
    """Parse one SBR season file; see the module docstring for every mapping decision."""
    path = Path(path)
    if not _TIME_OF_DAY.match(default_tipoff_time):
        raise ValueError(f"default_tipoff_time must be HH:MM, got {default_tipoff_time!r}")
    frame, table = _read_csv(path)
    n = len(frame)
    name = path.name
    # A last row cut short (truncated download) is rejected and takes part in nothing else.
    cut = np.zeros(n, dtype=bool)
    if table.truncated is not None:
        cut[table.truncated] = True

    # --- per-row dates -----------------------------------------------------------------
    month, day = _month_day(frame["Date"])
    month[cut] = np.nan
    day[cut] = np.nan
    start_year = _season_start_year(path, frame, month)
    season = f"{start_year}-{(start_year + 1) % 100:02d}"
    year = np.where(month >= 8, start_year, start_year + 1).astype("float64")
    year[~np.isfinite(month)] = np.nan
    parts = pd.DataFrame({"year": year, "month": month, "day": day})
    row_date = pd.to_datetime(parts, errors="coerce")  # NaT for 0231, 1301, ...
    iso = row_date.dt.strftime("%Y-%m-%d")  # NaN where NaT
    date_ok = row_date.notna().to_numpy()
    year_mismatches = 0
    if "Year" in frame.columns:
        given = pd.to_numeric(frame["Year"], errors="coerce").to_numpy(dtype="float64")
        year_mismatches = int((date_ok & np.isfinite(given) & (given != year)).sum())
    tipoff = _tipoffs(iso, default_tipoff_time, tipoff_timezone)

    # --- pairing by rotation number ----------------------------------------------------
    rot = pd.to_numeric(frame["Rot"], errors="coerce").to_numpy(dtype="float64")
    rot[cut] = np.nan  # its partner becomes `unpaired_row`
    next_rot = np.append(rot[1:], np.nan)
    with np.errstate(invalid="ignore"):
        first = (np.mod(rot, 2) == 1) & (next_rot == rot + 1)
    i1 = np.flatnonzero(first)  # first (odd) row of each pair
    i2 = i1 + 1
    paired = np.zeros(n, dtype=bool)
    paired[i1] = True
    paired[i2] = True

    vh = frame["VH"].str.upper().to_numpy(dtype=object)
    swap = (vh[i1] == "H") & (vh[i2] == "V")  # explicit H-then-V order wins over parity
    away_i = np.where(swap, i2, i1)
    home_i = np.where(swap, i1, i2)
    neutral = (vh[i1] == "N") | (vh[i2] == "N")

    pair_dates_known = date_ok[i1] & date_ok[i2]
    pair_date_clash = pair_dates_known & (iso.to_numpy()[i1] != iso.to_numpy()[i2])
    pair_ok = pair_dates_known & ~pair_date_clash
    rot_text = (
        pd.Series(rot[i1]).astype("Int64").astype(str)
        + "-"
        + pd.Series(rot[i2]).astype("Int64").astype(str)
    ).to_numpy(dtype=object)
    pair_event = np.full(len(i1), None, dtype=object)
    prefix = f"{SOURCE}:{league.lower()}:"
    pair_event[pair_ok] = prefix + iso.to_numpy()[i1][pair_ok] + ":" + rot_text[pair_ok]

    row_event = np.full(n, None, dtype=object)
    row_outcome = np.full(n, None, dtype=object)
    row_event[away_i] = pair_event
    row_event[home_i] = pair_event
    row_outcome[away_i] = "away"
    row_outcome[home_i] = "home"
    row_pair_clash = np.zeros(n, dtype=bool)
    row_pair_clash[i1] = pair_date_clash
    row_pair_clash[i2] = pair_date_clash
    row_dates_known = date_ok.copy()  # a pair is dated only when both of its rows are
    row_dates_known[i1] = pair_dates_known
    row_dates_known[i2] = pair_dates_known
    row_ok = np.zeros(n, dtype=bool)
    row_ok[i1] = pair_ok
    row_ok[i2] = pair_ok

    # --- moneyline prices --------------------------------------------------------------
    ml_raw = frame["ML"]
    ml_value = pd.to_numeric(ml_raw, errors="coerce").to_numpy(dtype="float64")
    reason = np.full(n, None, dtype=object)
    ordered = [
        (cut, "truncated_row"),
        (~paired, "unpaired_row"),
        (~row_dates_known, "bad_date"),
        (row_pair_clash, "pair_date_mismatch"),
        (ml_raw.str.upper().isin(list(NO_LINE)).to_numpy(dtype=bool), "no_line"),
        (~np.isfinite(ml_value), "unparseable_price"),
    ]
    for mask, why in ordered:
        reason[pd.isna(reason) & mask] = why

    raw = [json.dumps(r) for r in frame.to_dict("records")]
    if table.truncated is not None:
        raw[table.truncated] = table.truncated_text  # as it stands in the file
    observed = tipoff.where(row_ok)
    candidates = pd.DataFrame(
        {
            "source": SOURCE,
            "event_id": row_event,
            "bookmaker": bookmaker,
            "market": "h2h",
            "outcome": row_outcome,
            "outcome_name": frame["Team"].to_numpy(dtype=object),
            "point": np.nan,
            "price": american_to_decimal_array(ml_value),
            "price_raw": ml_raw.to_numpy(dtype=object),
            "observed_at": observed,
            "commence_time": observed,
            "source_file": name,
            "source_record": [f"line {k}, column ML" for k in table.lines],
            "reason": reason,
            "ingested_at": observed,  # "as observed" historical load
            "raw": raw,
        }
    )[CANDIDATE_COLUMNS + ["ingested_at", "raw"]]
    quotes, rejected = validate_candidates(
        candidates, load_id=load_id_for(SOURCE, path), keep_in_play=keep_in_play
    )

    # --- events, results, lines (only games with a usable date) ------------------------
    ok_away, ok_home = away_i[pair_ok], home_i[pair_ok]
    ok_event = pair_event[pair_ok]
    commence = tipoff.to_numpy()[ok_home]
    team = frame["Team"].to_numpy(dtype=object)
    events = pd.DataFrame(
        {
            "event_id": ok_event,
            "source": SOURCE,
            "sport": SPORT,
            "league": league,
            "season": season,
            "commence_time": pd.to_datetime(commence, utc=True),
            "home_team": team[ok_home],
            "away_team": team[ok_away],
        },
        columns=EVENT_COLUMNS,
    ).drop_duplicates("event_id", keep="first")

    final = pd.to_numeric(frame["Final"], errors="coerce").to_numpy(dtype="float64")
    results = pd.DataFrame(
        {
            "event_id": ok_event,
            "source": SOURCE,
            "home_score": final[ok_home],
            "away_score": final[ok_away],
            "resolved_at": pd.to_datetime(commence, utc=True) + RESOLVE_AFTER,
        },
        columns=RESULT_COLUMNS,
    )
    results = results[results["home_score"].notna() & results["away_score"].notna()]
    results = results.drop_duplicates("event_id", keep="first").reset_index(drop=True)

    event_lines = _event_lines(frame, ok_event, ok_away, ok_home, commence, open_offset_hours)
    neutral_ids = sorted(set(pair_event[pair_ok & neutral]))
    unknown = [c for c in frame.columns if c not in KNOWN_COLUMNS]
    return ParseResult(
        quotes=quotes,
        rejected=rejected,
        events=events.reset_index(drop=True),
        results=results,
        prices_read=n,
        files=[str(path)],
        unknown_columns={name: unknown} if unknown else {},
        notes={
            "season": season,
            "neutral_site": neutral_ids,
            "event_lines": event_lines,
            "year_column_mismatches": year_mismatches,
            "file_encodings": [f"{name}: {table.encoding}"],
        },
        warnings=table.warnings,
    )


def _event_lines(
    frame: pd.DataFrame,
    event_ids: np.ndarray,
    away_i: np.ndarray,
    home_i: np.ndarray,
    commence: np.ndarray,
    open_offset_hours: float,
) -> pd.DataFrame:
    """Opening/closing spread and total of each game (two rows per event), prices unknown."""
    if "Open" not in frame.columns or "Close" not in frame.columns or not len(event_ids):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_LINE_COLUMNS})
    open_v = _line_values(frame["Open"])
    close_v = _line_values(frame["Close"])
    spread_open, total_open, fav_open = _split_lines(open_v[away_i], open_v[home_i])
    spread_close, total_close, fav_close = _split_lines(close_v[away_i], close_v[home_i])
    # The closing line names the favourite unless it is unknown; pick'em (0) has none.
    favourite = np.where(np.isfinite(spread_close), fav_close, fav_open)
    close_at = pd.to_datetime(commence, utc=True)
    open_at = close_at - pd.Timedelta(hours=open_offset_hours)
    m = len(event_ids)
    spreads = pd.DataFrame(
        {
            "event_id": event_ids,
            "market": "spreads",
            "line_open": spread_open,
            "line_close": spread_close,
            "favourite": favourite,
            "open_observed_at": open_at,
            "close_observed_at": close_at,
        }
    )
    totals = pd.DataFrame(
        {
            "event_id": event_ids,
            "market": "totals",
            "line_open": total_open,
            "line_close": total_close,
            "favourite": np.full(m, None, dtype=object),
            "open_observed_at": open_at,
            "close_observed_at": close_at,
        }
    )
    lines = pd.concat([spreads, totals], ignore_index=True)
    return lines.sort_values(["event_id", "market"], kind="stable").reset_index(drop=True)
