"""SBR NBA adapter: pairing, lines, dates, refusals, and every real season file."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odds_pipeline.ingestion.sources import sbr
from odds_pipeline.market.quotes import EVENT_COLUMNS, RESULT_COLUMNS, SourceFormatError

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_SBR = REPO_ROOT.parent / "shared" / "data" / "sbr" / "nba"
SAMPLE = REPO_ROOT / "data" / "samples" / "sbr" / "nba_odds_2017-18.csv"

HEADER = "Date,Rot,VH,Team,1st,2nd,3rd,4th,Final,Open,Close,ML,2H"
HEADER_YEAR = HEADER + ",Month,Day,Year"
BOM = "\ufeff"


def write(
    tmp_path: Path,
    rows: list[str],
    *,
    name: str = "nba_odds_2017-18.csv",
    header: str = HEADER,
    bom: bool = True,
) -> Path:
    path = tmp_path / name
    path.write_text((BOM if bom else "") + "\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def row(
    date: str, rot: int, vh: str, team: str, final: int, open_: str, close: str, ml: str
) -> str:
    return f"{date},{rot},{vh},{team},25,25,25,25,{final},{open_},{close},{ml},1.5"


# Two games on 17 Oct 2017: home favourite (Cleveland -4.5) and visitor favourite (Miami -3.5).
TWO_GAMES = [
    row("1017", 501, "V", "Boston", 99, "214.5", "216", "166"),
    row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
    row("1017", 503, "V", "Miami", 109, "3", "3.5", "-170"),
    row("1017", 504, "H", "Orlando", 116, "207", "205.5", "145"),
]


def by_outcome(result, event_id: str) -> dict[str, pd.Series]:
    quotes = result.quotes[result.quotes["event_id"] == event_id]
    return {q["outcome"]: q for _, q in quotes.iterrows()}


def lines(result, event_id: str, market: str) -> pd.Series:
    frame = result.notes["event_lines"]
    hit = frame[(frame["event_id"] == event_id) & (frame["market"] == market)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_rows_pair_by_rotation_into_events_quotes_and_results(tmp_path: Path) -> None:
    result = sbr.parse_file(write(tmp_path, TWO_GAMES))
    assert result.prices_read == 4 and len(result.quotes) == 4 and result.rejected.empty
    assert list(result.events.columns) == EVENT_COLUMNS
    assert list(result.results.columns) == RESULT_COLUMNS
    events = result.events.set_index("event_id")
    assert list(events.index) == ["sbr:nba:2017-10-17:501-502", "sbr:nba:2017-10-17:503-504"]
    first = events.loc["sbr:nba:2017-10-17:501-502"]
    assert (first["home_team"], first["away_team"]) == ("Cleveland", "Boston")
    assert (first["sport"], first["league"], first["season"], first["source"]) == (
        "basketball",
        "NBA",
        "2017-18",
        "sbr",
    )
    quotes = by_outcome(result, "sbr:nba:2017-10-17:501-502")
    assert (
        quotes["home"]["outcome_name"] == "Cleveland" and quotes["away"]["outcome_name"] == "Boston"
    )
    assert set(result.quotes["market"]) == {"h2h"} and set(result.quotes["bookmaker"]) == {
        "sbr_consensus"
    }
    assert result.quotes["point"].isna().all()
    assert quotes["home"]["source_record"] == "line 3, column ML"
    assert quotes["home"]["source_file"] == "nba_odds_2017-18.csv"
    res = result.results.set_index("event_id").loc["sbr:nba:2017-10-17:501-502"]
    assert (res["home_score"], res["away_score"]) == (102, 99)


def test_american_moneyline_becomes_decimal(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "214.5", "216", "+166"),
        row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
        row("1017", 503, "V", "Miami", 109, "3", "3.5", "-100"),
        row("1017", 504, "H", "Orlando", 116, "207", "205.5", "100"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    first = by_outcome(result, "sbr:nba:2017-10-17:501-502")
    assert first["away"]["price"] == pytest.approx(2.66)
    assert first["home"]["price"] == pytest.approx(1 + 100 / 195)
    second = by_outcome(result, "sbr:nba:2017-10-17:503-504")
    assert second["away"]["price"] == pytest.approx(2.0) and second["home"][
        "price"
    ] == pytest.approx(2.0)


def test_tipoff_is_local_evening_in_utc_and_ml_is_closing(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "214.5", "216", "166"),  # EDT: 19:00 -> 23:00Z
        row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
        row("1205", 503, "V", "Miami", 109, "3", "3.5", "-170"),  # EST: 19:00 -> 00:00Z next day
        row("1205", 504, "H", "Orlando", 116, "207", "205.5", "145"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    events = result.events.set_index("event_id")["commence_time"]
    assert events["sbr:nba:2017-10-17:501-502"] == pd.Timestamp("2017-10-17 23:00", tz="UTC")
    assert events["sbr:nba:2017-12-05:503-504"] == pd.Timestamp("2017-12-06 00:00", tz="UTC")
    q = result.quotes
    assert str(q["observed_at"].dt.tz) == "UTC"
    assert (q["observed_at"] == q["event_id"].map(events)).all()  # closing price = tip-off
    assert (q["ingested_at"] == q["observed_at"]).all()  # "as observed" historical load
    assert not q["in_play"].any()
    res = result.results.set_index("event_id")["resolved_at"]
    assert (res - events[res.index]).eq(pd.Timedelta(hours=3)).all()

    other = sbr.parse_file(
        write(tmp_path, rows), default_tipoff_time="20:30", tipoff_timezone="America/Los_Angeles"
    )
    assert other.events["commence_time"].iloc[0] == pd.Timestamp("2017-10-18 03:30", tz="UTC")
    with pytest.raises(ValueError, match="HH:MM"):
        sbr.parse_file(write(tmp_path, rows), default_tipoff_time="7pm")


def test_neutral_site_first_row_is_away_and_is_noted(tmp_path: Path) -> None:
    rows = [
        row("111", 901, "N", "Boston", 114, "1.5", "1.5", "-130"),
        row("111", 902, "N", "Philadelphia", 103, "205.5", "211.5", "110"),
        *TWO_GAMES,
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    event_id = "sbr:nba:2018-01-11:901-902"
    event = result.events.set_index("event_id").loc[event_id]
    assert (event["away_team"], event["home_team"]) == ("Boston", "Philadelphia")
    assert result.notes["neutral_site"] == [event_id]
    assert by_outcome(result, event_id)["away"]["outcome_name"] == "Boston"
    # Boston (the "away" row) is the favourite: spread +1.5 from the home side's view.
    spread = lines(result, event_id, "spreads")
    assert spread["line_close"] == 1.5 and spread["favourite"] == "away"


def test_home_then_visitor_order_is_honoured(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "H", "Cleveland", 102, "4", "4.5", "-195"),
        row("1017", 502, "V", "Boston", 99, "214.5", "216", "166"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    event = result.events.iloc[0]
    assert (event["home_team"], event["away_team"]) == ("Cleveland", "Boston")
    assert result.notes["neutral_site"] == []


def test_spread_and_total_told_apart_by_magnitude(tmp_path: Path) -> None:
    result = sbr.parse_file(write(tmp_path, TWO_GAMES))
    # Favourite on the home row: spread -4 / -4.5 for home, total on the visitor row.
    home_fav = "sbr:nba:2017-10-17:501-502"
    spread = lines(result, home_fav, "spreads")
    total = lines(result, home_fav, "totals")
    assert (spread["line_open"], spread["line_close"], spread["favourite"]) == (-4.0, -4.5, "home")
    assert (total["line_open"], total["line_close"]) == (214.5, 216.0) and total[
        "favourite"
    ] is None
    # Favourite on the visitor row: spread +3 / +3.5 for home, total on the home row.
    away_fav = "sbr:nba:2017-10-17:503-504"
    spread = lines(result, away_fav, "spreads")
    total = lines(result, away_fav, "totals")
    assert (spread["line_open"], spread["line_close"], spread["favourite"]) == (3.0, 3.5, "away")
    assert (total["line_open"], total["line_close"]) == (207.0, 205.5)
    assert spread["open_observed_at"] == spread["close_observed_at"] - pd.Timedelta(hours=24)
    assert len(result.notes["event_lines"]) == 4


def test_favourite_flip_between_open_and_close(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "1", "211", "-110"),  # open: Boston -1
        row("1017", 502, "H", "Cleveland", 102, "210", "1.5", "-110"),  # close: Cleveland -1.5
    ]
    result = sbr.parse_file(write(tmp_path, rows), open_offset_hours=6)
    spread = lines(result, "sbr:nba:2017-10-17:501-502", "spreads")
    total = lines(result, "sbr:nba:2017-10-17:501-502", "totals")
    assert (spread["line_open"], spread["line_close"], spread["favourite"]) == (1.0, -1.5, "home")
    assert (total["line_open"], total["line_close"]) == (210.0, 211.0)
    assert spread["close_observed_at"] - spread["open_observed_at"] == pd.Timedelta(hours=6)


@pytest.mark.parametrize("pk", ["pk", "PK"])
def test_pickem_is_spread_zero_without_favourite(tmp_path: Path, pk: str) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "2", pk, "-105"),
        row("1017", 502, "H", "Cleveland", 102, "205", "206", "-115"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    spread = lines(result, "sbr:nba:2017-10-17:501-502", "spreads")
    assert spread["line_close"] == 0.0 and not math.copysign(1, spread["line_close"]) < 0
    assert spread["line_open"] == 2.0
    assert spread["favourite"] is None  # pick'em at the close: nobody is favourite
    assert lines(result, "sbr:nba:2017-10-17:501-502", "totals")["line_close"] == 206.0


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("NL", "no_line"),
        ("nl", "no_line"),
        ("", "no_line"),
        ("-", "no_line"),
        ("abc", "unparseable_price"),
        ("pk", "unparseable_price"),
    ],
)
def test_moneyline_without_price_is_rejected(tmp_path: Path, cell: str, reason: str) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "214.5", "216", cell),
        row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    assert result.prices_read == 2 and len(result.quotes) == 1
    rejected = result.rejected.iloc[0]
    assert rejected["reason"] == reason
    assert rejected["source_record"] == "line 2, column ML"
    assert rejected["event_id"] == "sbr:nba:2017-10-17:501-502" and rejected["outcome"] == "away"
    assert "Boston" in rejected["raw"]
    assert len(result.events) == 1 and len(result.results) == 1  # the game itself is kept


def test_too_small_american_price_is_refused_by_validation(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "214.5", "216", "50"),
        row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    assert result.rejected_reasons() == {"non_finite_price": 1}


def test_nl_line_gives_no_spread_or_total(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "NL", "216", "166"),
        row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    spread = lines(result, "sbr:nba:2017-10-17:501-502", "spreads")
    total = lines(result, "sbr:nba:2017-10-17:501-502", "totals")
    assert np.isnan(spread["line_open"]) and np.isnan(total["line_open"])
    assert (spread["line_close"], total["line_close"]) == (-4.5, 216.0)
    assert result.rejected.empty  # lines are not prices


def test_season_year_rolls_over_from_december_to_january(tmp_path: Path) -> None:
    rows = [
        row("1231", 501, "V", "Boston", 99, "214.5", "216", "166"),
        row("1231", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
        row("101", 503, "V", "Miami", 109, "3", "3.5", "-170"),  # leading zero dropped
        row("101", 504, "H", "Atlanta", 100, "207", "205.5", "145"),
        row("0615", 505, "V", "Orlando", 116, "207", "205.5", "145"),
        row("0615", 506, "H", "Dallas", 116, "207", "205.5", "145"),
    ]
    result = sbr.parse_file(write(tmp_path, rows, name="nba_odds_2014-15.csv"))
    assert list(result.events["event_id"]) == [
        "sbr:nba:2014-12-31:501-502",
        "sbr:nba:2015-01-01:503-504",
        "sbr:nba:2015-06-15:505-506",
    ]
    assert set(result.events["season"]) == {"2014-15"} and result.notes["season"] == "2014-15"


def test_year_column_wins_over_file_name(tmp_path: Path) -> None:
    rows = [
        row("101", 501, "V", "Boston", 99, "214.5", "216", "166") + ",1,01,2017",
        row("101", 502, "H", "Cleveland", 102, "4", "4.5", "-195") + ",1,01,2017",
        row("1101", 503, "V", "Miami", 109, "3", "3.5", "-170") + ",11,01,2016",
        row("1101", 504, "H", "Orlando", 116, "207", "205.5", "145") + ",11,01,2017",  # wrong Year
    ]
    result = sbr.parse_file(write(tmp_path, rows, name="odds.csv", header=HEADER_YEAR))
    assert list(result.events["event_id"]) == [
        "sbr:nba:2017-01-01:501-502",
        "sbr:nba:2016-11-01:503-504",
    ]
    assert result.notes["season"] == "2016-17"
    assert result.notes["year_column_mismatches"] == 1


def test_unknown_season_is_a_format_error(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_GAMES, name="odds.csv")
    with pytest.raises(SourceFormatError, match="season") as info:
        sbr.parse_file(path)
    assert info.value.path == str(path)


def test_bom_is_optional(tmp_path: Path) -> None:
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain").mkdir()
    with_bom_path = write(tmp_path / "bom", TWO_GAMES)
    assert with_bom_path.read_bytes().startswith(b"\xef\xbb\xbfDate,")
    with_bom = sbr.parse_file(with_bom_path)
    without = sbr.parse_file(write(tmp_path / "plain", TWO_GAMES, bom=False))
    assert with_bom.prices_read == without.prices_read == 4 and with_bom.rejected.empty
    pd.testing.assert_frame_equal(with_bom.events, without.events)
    assert with_bom.unknown_columns == {} and list(with_bom.events["home_team"]) == [
        "Cleveland",
        "Orlando",
    ]


def test_unpaired_rows_are_rejected(tmp_path: Path) -> None:
    rows = [
        row("1017", 501, "V", "Boston", 99, "214.5", "216", "166"),
        row("1017", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
        row("1017", 505, "V", "Lonely", 99, "214.5", "216", "120"),  # partner missing
        row("1017", 507, "V", "Miami", 109, "3", "3.5", "-170"),  # 507 + 509 is no pair
        row("1017", 509, "H", "Orlando", 116, "207", "205.5", "145"),
        row("1017", 512, "H", "Even", 116, "207", "205.5", "145"),  # even without odd before
        row("1017", "x", "V", "NoRot", 116, "207", "205.5", "145"),
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    assert result.prices_read == 7 and len(result.quotes) == 2
    assert result.rejected_reasons() == {"unpaired_row": 5}
    assert list(result.events["event_id"]) == ["sbr:nba:2017-10-17:501-502"]
    assert result.rejected["event_id"].isna().all()


def test_bad_dates_are_rejected(tmp_path: Path) -> None:
    rows = [
        row("1340", 501, "V", "Boston", 99, "214.5", "216", "166"),  # month 13
        row("1340", 502, "H", "Cleveland", 102, "4", "4.5", "-195"),
        row("abc", 503, "V", "Miami", 109, "3", "3.5", "-170"),
        row("1017", 504, "H", "Orlando", 116, "207", "205.5", "145"),
        row("1017", 505, "V", "Utah", 109, "3", "3.5", "-170"),
        row("1018", 506, "H", "Dallas", 116, "207", "205.5", "145"),  # dates of the pair clash
        *[r.replace("50", "60", 1) for r in TWO_GAMES[:2]],
    ]
    result = sbr.parse_file(write(tmp_path, rows))
    assert result.prices_read == 8
    assert result.rejected_reasons() == {"bad_date": 4, "pair_date_mismatch": 2}
    reasons = result.rejected.set_index("source_record")["reason"].to_dict()
    assert reasons == {
        "line 2, column ML": "bad_date",
        "line 3, column ML": "bad_date",
        "line 4, column ML": "bad_date",
        "line 5, column ML": "bad_date",  # its partner's date is unknown
        "line 6, column ML": "pair_date_mismatch",
        "line 7, column ML": "pair_date_mismatch",
    }
    assert list(result.events["event_id"]) == ["sbr:nba:2017-10-17:601-602"]
    assert list(result.quotes["event_id"]) == ["sbr:nba:2017-10-17:601-602"] * 2
    assert len(result.notes["event_lines"]) == 2


@pytest.mark.parametrize("missing", ["Date", "Rot", "VH", "Team", "Final", "ML"])
def test_missing_key_column_is_a_format_error(tmp_path: Path, missing: str) -> None:
    columns = HEADER.split(",")
    keep = [i for i, c in enumerate(columns) if c != missing]
    header = ",".join(columns[i] for i in keep)
    rows = [",".join(r.split(",")[i] for i in keep) for r in TWO_GAMES]
    path = write(tmp_path, rows, header=header)
    with pytest.raises(SourceFormatError, match=missing) as info:
        sbr.parse_file(path)
    assert info.value.path == str(path) and "nba_odds_2017-18.csv" in str(info.value)


def test_unreadable_files_are_format_errors(tmp_path: Path) -> None:
    empty = tmp_path / "nba_odds_2017-18.csv"
    empty.write_bytes(b"")
    with pytest.raises(SourceFormatError, match="empty"):
        sbr.parse_file(empty)
    garbage = tmp_path / "nba_odds_2016-17.csv"
    garbage.write_bytes(b"Date,Rot\n\xff\xfe\x00\x81garbage\n")
    with pytest.raises(SourceFormatError, match="UTF-8"):
        sbr.parse_file(garbage)


def test_extra_columns_are_reported(tmp_path: Path) -> None:
    rows = [r + ",x" for r in TWO_GAMES]
    result = sbr.parse_file(write(tmp_path, rows, header=HEADER + ",SpreadPrice"))
    assert result.unknown_columns == {"nba_odds_2017-18.csv": ["SpreadPrice"]}
    assert len(result.quotes) == 4


def test_options_set_bookmaker_league_and_ids(tmp_path: Path) -> None:
    result = sbr.parse_file(write(tmp_path, TWO_GAMES), bookmaker="sbr_pinnacle", league="WNBA")
    assert set(result.quotes["bookmaker"]) == {"sbr_pinnacle"}
    assert result.events["event_id"].iloc[0] == "sbr:wnba:2017-10-17:501-502"
    assert set(result.events["league"]) == {"WNBA"}
    # Load ids are the file's path (relative to the project, else absolute), not its name.
    path = (tmp_path / "nba_odds_2017-18.csv").resolve()
    assert set(result.quotes["load_id"]) == {f"sbr:{path.as_posix()}"}


def test_vendored_sample_parses_completely() -> None:
    result = sbr.parse_file(SAMPLE)
    assert result.prices_read == 2624 == len(result.quotes)
    assert len(result.events) == 1312 == len(result.results)
    assert result.notes["neutral_site"] == ["sbr:nba:2018-01-11:901-902"]


# Regular season (1230 games) plus playoffs; neutral-site games are the NBA's London/Mexico City games.
REAL_SEASONS = {
    "nba_odds_2014-15.csv": (1311, ["sbr:nba:2014-11-12:717-718"]),
    "nba_odds_2015-16.csv": (1316, ["sbr:nba:2015-12-03:709-710", "sbr:nba:2016-01-14:701-702"]),
    "nba_odds_2016-17.csv": (1309, []),
    "nba_odds_2017-18.csv": (1312, ["sbr:nba:2018-01-11:901-902"]),
}


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_SBR.is_dir(), reason=f"real SBR data not found at {SHARED_SBR}")
def test_every_real_season_parses() -> None:
    files = sorted(SHARED_SBR.glob("*.csv"))
    assert [f.name for f in files] == sorted(REAL_SEASONS)
    for path in files:
        n_events, neutral = REAL_SEASONS[path.name]
        result = sbr.parse_file(path)
        assert result.prices_read == len(result.quotes) + len(result.rejected) == 2 * n_events
        assert result.rejected.empty, result.rejected_reasons()
        assert len(result.events) == result.events["event_id"].nunique() == n_events
        assert set(result.results["event_id"]) == set(result.events["event_id"])
        assert result.results[["home_score", "away_score"]].notna().all().all()
        assert (
            result.results["home_score"] != result.results["away_score"]
        ).all()  # no ties in the NBA
        assert result.notes["neutral_site"] == neutral
        assert result.notes["year_column_mismatches"] == 0
        start = int(path.name[9:13])
        assert result.events["commence_time"].min() >= pd.Timestamp(f"{start}-10-01", tz="UTC")
        assert result.events["commence_time"].max() <= pd.Timestamp(f"{start + 1}-06-30", tz="UTC")
        assert result.quotes["price"].gt(1.0).all()
        lines_ = result.notes["event_lines"]
        totals = lines_[lines_["market"] == "totals"]["line_close"]
        spreads = lines_[lines_["market"] == "spreads"]["line_close"]
        assert totals.between(150, 280).all() and spreads.abs().le(25).all()
        # The closing moneyline favourite is the closing spread favourite (a few pick'em-ish games aside).
        h2h = result.quotes.pivot(index="event_id", columns="outcome", values="price")
        fav = lines_[lines_["market"] == "spreads"].set_index("event_id")["favourite"]
        agree = fav.dropna() == np.where(
            h2h.loc[fav.dropna().index, "home"] < h2h.loc[fav.dropna().index, "away"],
            "home",
            "away",
        )
        assert agree.mean() > 0.99


def test_header_only_file_is_an_empty_load(tmp_path: Path) -> None:
    result = sbr.parse_file(write(tmp_path, []))
    assert result.prices_read == 0 and result.quotes.empty and result.events.empty
    assert result.notes["season"] == "2017-18" and result.notes["event_lines"].empty


# --- bad input: one clear error naming file, line and reason; nothing lost ---------------


def test_extra_field_on_the_first_row_fails_the_file(tmp_path: Path) -> None:
    rows = [TWO_GAMES[0].replace("Boston", "Boston, MA"), *TWO_GAMES[1:]]
    path = write(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pandas warning may print before the error
        with pytest.raises(SourceFormatError) as info:
            sbr.parse_file(path)
    assert (info.value.path, info.value.line) == (str(path), 2)
    assert "14 fields" in info.value.reason and "13" in info.value.reason


def test_short_row_before_the_end_fails_the_file(tmp_path: Path) -> None:
    rows = [TWO_GAMES[0], TWO_GAMES[1][:20], *TWO_GAMES[2:]]
    with pytest.raises(SourceFormatError) as info:
        sbr.parse_file(write(tmp_path, rows))
    assert info.value.line == 3 and "fields" in info.value.reason


def test_duplicated_column_names_fail_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, [r + ",100" for r in TWO_GAMES], header=HEADER + ",ML")
    with pytest.raises(SourceFormatError) as info:
        sbr.parse_file(path)
    assert info.value.line == 1 and "duplicate" in info.value.reason
    assert "'ML'" in info.value.reason and "ML.1" not in info.value.reason


def test_cut_short_last_row_is_rejected_as_truncated_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "nba_odds_2017-18.csv"
    cut = TWO_GAMES[3][:30]  # "1017,504,H,Orlando,25,25,25,25"
    path.write_text(BOM + "\n".join([HEADER, *TWO_GAMES[:3], cut]), encoding="utf-8")
    result = sbr.parse_file(path)
    assert result.prices_read == 4 and result.quotes_accepted == 2
    assert result.rejected_reasons() == {"truncated_row": 1, "unpaired_row": 1}
    cut_row = result.rejected.set_index("reason").loc["truncated_row"]
    assert (cut_row["source_record"], cut_row["raw"]) == ("line 5, column ML", cut)
    assert list(result.events["event_id"]) == ["sbr:nba:2017-10-17:501-502"]
    assert len(result.warnings) == 1 and "line 5" in result.warnings[0]


def test_read_errors_name_a_line_or_say_why_none_applies(tmp_path: Path) -> None:
    empty = tmp_path / "nba_odds_2017-18.csv"
    empty.write_bytes(b"")
    with pytest.raises(SourceFormatError) as info:
        sbr.parse_file(empty)
    assert info.value.line is None and "0 bytes" in info.value.reason
    assert "no line" in info.value.reason
    garbage = tmp_path / "nba_odds_2016-17.csv"
    garbage.write_bytes(b"Date,Rot\n\xff\xfe\x00\x81garbage\n")
    with pytest.raises(SourceFormatError) as info:
        sbr.parse_file(garbage)
    assert info.value.line == 2
    quote = write(tmp_path, [TWO_GAMES[0].replace("Boston", '"Boston'), *TWO_GAMES[1:]])
    with pytest.raises(SourceFormatError) as info:
        sbr.parse_file(quote)
    assert info.value.line == 2 and "quote" in info.value.reason


def test_cp1252_file_falls_back_and_records_the_encoding(tmp_path: Path) -> None:
    path = tmp_path / "nba_odds_2017-18.csv"
    text = "\n".join([HEADER, *TWO_GAMES]).replace("Miami", "Montréal") + "\n"
    path.write_bytes(text.encode("cp1252"))
    result = sbr.parse_file(path)
    assert "Montréal" in set(result.events["away_team"])
    assert result.notes["file_encodings"] == ["nba_odds_2017-18.csv: cp1252"]
    assert any("cp1252" in w for w in result.warnings)
