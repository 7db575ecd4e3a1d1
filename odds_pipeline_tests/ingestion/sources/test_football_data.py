"""football-data.co.uk adapter: column discovery, closing prices, times, refusals, real seasons."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from odds_pipeline.cli import main
from odds_pipeline.ingestion.sources import football_data as fd
from odds_pipeline.ingestion.sources import load_id_for
from odds_pipeline.market.quotes import (
    EVENT_COLUMNS,
    QUOTE_COLUMNS,
    RESULT_COLUMNS,
    SourceFormatError,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_E0 = REPO_ROOT.parent / "shared" / "data" / "football-data" / "E0"
SAMPLES = REPO_ROOT / "data" / "samples" / "football_data"
REAL_FILES = sorted(SHARED_E0.glob("E0_*.csv")) if SHARED_E0.is_dir() else []

needs_shared_e0 = pytest.mark.skipif(
    not REAL_FILES, reason=f"real football-data EPL files not found at {SHARED_E0} (CI has them)"
)

BOM = "\ufeff"
UTC = "UTC"


def write(
    tmp_path: Path,
    header: str,
    rows: list[str],
    *,
    name: str = "E0_2022-2023.csv",
    bom: bool = True,
) -> Path:
    path = tmp_path / name
    path.write_text((BOM if bom else "") + "\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def quote(result, column: str, event_id: str | None = None) -> pd.Series:
    q = result.quotes
    hit = q[q["outcome_name"] == column]
    if event_id is not None:
        hit = hit[hit["event_id"] == event_id]
    assert len(hit) == 1, f"expected one quote from {column}, got {len(hit)}"
    return hit.iloc[0]


def assert_counts_add_up(result) -> None:
    assert result.prices_read == len(result.quotes) + len(result.rejected)


# --- column discovery ------------------------------------------------------------------


def test_new_bookmaker_prefix_with_a_full_set_is_ingested_without_code_change(tmp_path):
    path = write(
        tmp_path,
        "Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,B365H,B365D,B365A,ZZH,ZZD,ZZA",
        ["E0,05/08/2022,Crystal Palace,Arsenal,0,2,4.2,3.6,1.85,4.0,3.5,1.9"],
    )
    result = fd.parse_file(path)
    zz = result.quotes[result.quotes["bookmaker"] == "zz"]
    assert sorted(zz["outcome"]) == ["away", "draw", "home"]
    assert sorted(zz["outcome_name"]) == ["ZZA", "ZZD", "ZZH"]
    assert result.notes["unmapped_bookmaker_prefixes"] == ["ZZ"]
    assert result.unknown_columns == {}
    assert result.prices_read == 6
    assert_counts_add_up(result)


def test_prefix_without_its_full_outcome_set_is_reported_unknown_not_guessed(tmp_path):
    path = write(
        tmp_path,
        "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A,ZZH,ZZD,Foo",
        ["E0,05/08/2022,Crystal Palace,Arsenal,4.2,3.6,1.85,4.0,3.5,x"],
    )
    result = fd.parse_file(path)
    assert result.unknown_columns == {path.name: ["ZZH", "ZZD", "Foo"]}
    assert set(result.quotes["bookmaker"]) == {"bet365"}
    assert result.prices_read == 3  # unknown columns are not prices read
    assert "unmapped_bookmaker_prefixes" not in result.notes


def test_stats_columns_and_empty_header_filler_are_known_not_reported(tmp_path):
    header = (
        "Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR,HTHG,HTAG,HTR,Attendance,Referee,HS,AS,HST,AST,"
        "HHW,AHW,HC,AC,HF,AF,HO,AO,HY,AY,HR,AR,HBP,ABP,B365H,B365D,B365A,,,"
    )
    row = 'E0,19/08/00,Charlton,Man City,4,0,H,2,0,H,20043,"Barry, N. S.",' + ",".join(["1"] * 18)
    path = write(tmp_path, header, [row + ",2.1,3.2,3.3,,,"])
    result = fd.parse_file(path)
    assert result.unknown_columns == {}
    assert len(result.quotes) == 3


def test_discover_columns_disambiguates_vc_vcc_psc_and_pinnacle_p():
    plan = fd.discover_columns(
        [
            "Div", "Date", "HomeTeam", "AwayTeam",
            "VCH", "VCD", "VCA", "VCCH", "VCCD", "VCCA",
            "PSH", "PSD", "PSA", "PSCH", "PSCD", "PSCA",
            "P>2.5", "P<2.5", "PC>2.5", "PC<2.5", "AHh", "PAHH", "PAHA", "AHCh", "PCAHH", "PCAHA",
        ]
    )  # fmt: skip
    by_col = {o.column: o for o in plan.odds}
    assert (by_col["VCH"].bookmaker, by_col["VCH"].closing) == ("vcbet", False)
    assert (by_col["VCCH"].bookmaker, by_col["VCCH"].closing) == ("vcbet", True)
    assert (by_col["PSH"].bookmaker, by_col["PSH"].closing) == ("pinnacle", False)
    assert (by_col["PSCA"].bookmaker, by_col["PSCA"].closing) == ("pinnacle", True)
    assert (by_col["P>2.5"].bookmaker, by_col["PC<2.5"].closing) == ("pinnacle", True)
    assert by_col["PAHH"].line_column == "AHh" and by_col["PCAHA"].line_column == "AHCh"
    assert plan.unknown == [] and plan.unmapped_prefixes == []


def test_closing_is_recognised_without_its_pre_match_columns():
    """A file with only `PSC*` (no `PS*`) still reads them as Pinnacle closing."""
    plan = fd.discover_columns(
        ["Date", "HomeTeam", "AwayTeam", "PSCH", "PSCD", "PSCA", "VCH", "VCD", "VCA"]
    )
    by_col = {o.column: o for o in plan.odds}
    assert (by_col["PSCH"].bookmaker, by_col["PSCH"].closing) == ("pinnacle", True)
    assert (by_col["VCH"].bookmaker, by_col["VCH"].closing) == ("vcbet", False)


def test_aggregates_max_avg_betbrain_are_not_bookmakers_nor_prices_read(tmp_path):
    header = (
        "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A,Bb1X2,BbMxH,BbAvH,BbMxD,BbAvD,BbMxA,BbAvA,"
        "BbOU,BbMx>2.5,BbAv>2.5,BbMx<2.5,BbAv<2.5,BbAH,BbAHh,BbMxAHH,BbAvAHH,BbMxAHA,BbAvAHA,"
        "MaxH,MaxD,MaxA,AvgH,AvgD,AvgA,Max>2.5,Max<2.5,Avg>2.5,Avg<2.5,MaxAHH,MaxAHA,AvgAHH,AvgAHA,"
        "MaxCH,MaxCD,MaxCA,AvgCH,AvgCD,AvgCA,MaxC>2.5,MaxC<2.5,AvgCAHH,AvgCAHA"
    )
    n_agg = header.count(",") + 1 - 7
    path = write(
        tmp_path,
        header,
        ["E0,05/08/2022,Crystal Palace,Arsenal,4.2,3.6,1.85," + ",".join(["2.5"] * n_agg)],
    )
    result = fd.parse_file(path)
    assert set(result.quotes["bookmaker"]) == {"bet365"}
    assert result.prices_read == 3
    assert result.unknown_columns == {}
    assert "unmapped_bookmaker_prefixes" not in result.notes


# --- times -----------------------------------------------------------------------------


CLOSING_HEADER = "Div,Date,Time,HomeTeam,AwayTeam,FTHG,FTAG,VCH,VCD,VCA,VCCH,VCCD,VCCA,PSH,PSD,PSA,PSCH,PSCD,PSCA"
CLOSING_ROW = "E0,05/08/2022,20:00,Crystal Palace,Arsenal,0,2,4.6,3.5,1.87,4.75,3.5,1.85,4.6,3.78,1.95,5.01,3.7,1.91"


def test_closing_observed_at_kickoff_and_pre_match_at_kickoff_minus_offset(tmp_path):
    path = write(tmp_path, CLOSING_HEADER, [CLOSING_ROW])
    result = fd.parse_file(path)
    kickoff = ts("2022-08-05 19:00")  # 20:00 BST
    assert quote(result, "VCH")["observed_at"] == kickoff - pd.Timedelta(hours=72)
    assert quote(result, "VCH")["price"] == 4.6
    assert quote(result, "VCCH")["observed_at"] == kickoff
    assert quote(result, "VCCH")["price"] == 4.75
    assert quote(result, "PSCA")["observed_at"] == kickoff
    assert quote(result, "PSCA")["bookmaker"] == "pinnacle"
    assert not result.quotes["in_play"].any()
    # historical bulk load: "as observed"
    assert (result.quotes["ingested_at"] == result.quotes["observed_at"]).all()

    later = fd.parse_file(path, prematch_offset_hours=24)
    assert quote(later, "PSH")["observed_at"] == kickoff - pd.Timedelta(hours=24)


def test_negative_offset_makes_pre_match_in_play_unless_kept(tmp_path):
    path = write(tmp_path, CLOSING_HEADER, [CLOSING_ROW])
    result = fd.parse_file(path, prematch_offset_hours=-1)
    assert result.rejected_reasons() == {"in_play": 6}
    kept = fd.parse_file(path, prematch_offset_hours=-1, keep_in_play=True)
    assert int(kept.quotes["in_play"].sum()) == 6 and len(kept.quotes) == 12


def test_both_date_formats_give_the_same_event(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
    short = fd.parse_file(
        write(tmp_path, header, ["E0,16/08/03,Arsenal,Everton,1.4,3.8,8"], name="a.csv")
    )
    long = fd.parse_file(
        write(tmp_path, header, ["E0,16/08/2003,Arsenal,Everton,1.4,3.8,8"], name="b.csv")
    )
    assert short.events["event_id"].tolist() == ["fd:E0:2003-08-16:arsenal:everton"]
    assert long.events["event_id"].tolist() == short.events["event_id"].tolist()
    assert long.events["commence_time"].tolist() == short.events["commence_time"].tolist()


def test_missing_time_column_uses_default_kickoff_in_uk_local_time(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
    rows = ["E0,16/08/03,Arsenal,Everton,1.4,3.8,8", "E0,20/12/03,Everton,Arsenal,4,3.4,1.9"]
    result = fd.parse_file(write(tmp_path, header, rows))
    commence = result.events.set_index("home_team")["commence_time"]
    assert commence["Arsenal"] == ts("2003-08-16 14:00")  # 15:00 BST
    assert commence["Everton"] == ts("2003-12-20 15:00")  # 15:00 GMT
    assert result.notes["default_kickoff_time_files"] == ["E0_2022-2023.csv: 2 rows"]

    early = fd.parse_file(write(tmp_path, header, rows), default_kickoff_time="12:30")
    assert early.events.set_index("home_team")["commence_time"]["Everton"] == ts("2003-12-20 12:30")
    with pytest.raises(ValueError, match="HH:MM"):
        fd.parse_file(write(tmp_path, header, rows), default_kickoff_time="3pm")


def test_time_column_empty_cell_defaults_and_garbage_is_refused(tmp_path):
    header = "Div,Date,Time,HomeTeam,AwayTeam,B365H,B365D,B365A"
    rows = [
        "E0,05/08/2022,,Crystal Palace,Arsenal,4.2,3.6,1.85",
        "E0,06/08/2022,TBC,Fulham,Liverpool,11,6,1.25",
    ]
    result = fd.parse_file(write(tmp_path, header, rows))
    assert result.events["commence_time"].tolist() == [ts("2022-08-05 14:00")]
    assert result.rejected_reasons() == {"bad_kickoff_time": 3}
    assert_counts_add_up(result)


# --- file-level quirks ------------------------------------------------------------------


def test_bom_and_no_bom_parse_alike(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
    row = ["E0,16/08/03,Arsenal,Everton,1.4,3.8,8"]
    with_bom = fd.parse_file(write(tmp_path, header, row, name="a.csv", bom=True))
    without = fd.parse_file(write(tmp_path, header, row, name="b.csv", bom=False))
    assert with_bom.events["league"].tolist() == ["E0"] == without.events["league"].tolist()
    assert with_bom.unknown_columns == {} and len(with_bom.quotes) == len(without.quotes) == 3


def test_missing_key_columns_raise_source_format_error_naming_the_file(tmp_path):
    path = write(tmp_path, "Div,Date,HomeTeam,B365H,B365D,B365A", ["E0,16/08/03,Arsenal,1.4,3.8,8"])
    with pytest.raises(SourceFormatError) as info:
        fd.parse_file(path)
    assert info.value.path == str(path) and info.value.line == 1
    assert "AwayTeam" in info.value.reason


def test_unparseable_files_raise_source_format_error(tmp_path):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"Div,Date,HomeTeam,AwayTeam\nE0,16/08/03,\xff\xfe\x81,Everton\n")
    with pytest.raises(SourceFormatError, match="UTF-8"):
        fd.parse_file(garbage)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceFormatError):
        fd.parse_file(empty)
    ragged = write(
        tmp_path, "Div,Date,HomeTeam,AwayTeam", ["E0,16/08/03,Arsenal,Everton", "E0,1,2,3,4,5"]
    )
    with pytest.raises(SourceFormatError) as info:
        fd.parse_file(ragged)
    assert info.value.line == 3


def test_trailing_and_blank_rows_are_ignored_and_line_numbers_stay_true(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
    rows = [
        "E0,16/08/03,Arsenal,Everton,1.4,3.8,8",
        "",
        "E0,17/08/03,Leeds,Newcastle,2.5,3.2,2.7",
        ",,,,,,",
        ",,,,,,",
    ]
    result = fd.parse_file(write(tmp_path, header, rows))
    assert len(result.events) == 2 and result.prices_read == 6
    assert (
        quote(result, "B365A", "fd:E0:2003-08-17:leeds:newcastle")["source_record"]
        == "line 4, column B365A"
    )


def test_padded_cells_short_rows_and_accented_names(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
    rows = ["E0, 16/08/03 , Málaga ,Everton , 1.4 ,3.8,8", "E0,17/08/03,Leeds,Newcastle,2.5"]
    result = fd.parse_file(write(tmp_path, header, rows))
    # The short row ends the file: read as a truncated download, its price is rejected.
    assert result.events["event_id"].tolist() == ["fd:E0:2003-08-16:malaga:everton"]
    assert result.events["home_team"].iloc[0] == "Málaga"
    assert quote(result, "B365H", "fd:E0:2003-08-16:malaga:everton")["price"] == 1.4
    assert result.prices_read == 4 and result.rejected_reasons() == {"truncated_row": 1}


def test_empty_cell_is_no_price_and_non_numeric_cell_is_rejected(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A,WHH,WHD,WHA"
    result = fd.parse_file(
        write(tmp_path, header, ["E0,16/08/03,Arsenal,Everton,1.4,,8,1.5,n/a,7"])
    )
    assert result.prices_read == 5  # the empty B365D is not a price read
    assert result.rejected_reasons() == {"unparseable_price": 1}
    rejected = result.rejected.iloc[0]
    assert (rejected["price_raw"], rejected["source_record"]) == ("n/a", "line 2, column WHD")
    assert_counts_add_up(result)


def test_price_not_above_one_is_rejected(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
    result = fd.parse_file(write(tmp_path, header, ["E0,16/08/03,Arsenal,Everton,1.0,0,8"]))
    assert result.rejected_reasons() == {"price_not_above_one": 2}
    assert quote(result, "B365A")["price"] == 8.0
    assert_counts_add_up(result)


def test_bad_date_and_missing_team_reject_the_rows_prices(tmp_path):
    header = "Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,B365H,B365D,B365A"
    rows = [
        "E0,31/02/2003,Arsenal,Everton,1,0,1.4,3.8,8",
        "E0,2003-08-16,Leeds,Newcastle,1,0,1.4,3.8,8",
        "E0,17/08/03,,Newcastle,1,0,1.4,3.8,8",
        "E0,18/08/03,Leeds,Chelsea,1,0,1.4,3.8,8",
    ]
    result = fd.parse_file(write(tmp_path, header, rows))
    assert result.rejected_reasons() == {"bad_date": 6, "missing_team": 3}
    assert result.events["event_id"].tolist() == ["fd:E0:2003-08-18:leeds:chelsea"]
    assert result.results["event_id"].tolist() == ["fd:E0:2003-08-18:leeds:chelsea"]
    assert_counts_add_up(result)


# --- markets ----------------------------------------------------------------------------


def test_asian_handicap_point_home_is_the_line_and_away_its_negation(tmp_path):
    header = "Div,Date,Time,HomeTeam,AwayTeam,B365>2.5,B365<2.5,AHh,B365AHH,B365AHA,AHCh,B365CAHH,B365CAHA"
    rows = [
        "E0,05/08/2022,20:00,Crystal Palace,Arsenal,2.1,1.72,0.5,2.04,1.89,0.25,2.09,1.84",
        "E0,06/08/2022,12:30,Fulham,Liverpool,1.5,2.62,1.75,1.9,2.03,0,1.9,2.03",
    ]
    result = fd.parse_file(write(tmp_path, header, rows))
    palace = "fd:E0:2022-08-05:crystal-palace:arsenal"
    assert (
        quote(result, "B365AHH", palace)["point"],
        quote(result, "B365AHA", palace)["point"],
    ) == (0.5, -0.5)
    assert (
        quote(result, "B365CAHH", palace)["point"],
        quote(result, "B365CAHA", palace)["point"],
    ) == (0.25, -0.25)
    home = quote(result, "B365AHH", palace)
    assert (home["market"], home["outcome"], home["bookmaker"]) == ("spreads", "home", "bet365")
    level = quote(result, "B365CAHA", "fd:E0:2022-08-06:fulham:liverpool")["point"]
    assert level == 0.0 and str(level) == "0.0"  # no -0.0
    over = quote(result, "B365>2.5", palace)
    assert (over["market"], over["outcome"], over["point"]) == ("totals", "over", 2.5)
    assert quote(result, "B365<2.5", palace)["outcome"] == "under"


def test_asian_handicap_older_line_columns(tmp_path):
    """2005-2019 put the line in `BbAHh`; 2003-05 give each book its own `<BOOK>AH`."""
    header = "Div,Date,HomeTeam,AwayTeam,BbAH,BbAHh,B365AHH,B365AHA,GBAHH,GBAHA,GBAH"
    rows = [
        "E0,16/08/03,Arsenal,Everton,20,-1.25,1.9,1.95,1.975,1.925,-1.5",
        "E0,17/08/03,Leeds,Newcastle,20,,1.9,1.95,1.9,1.9,",
    ]
    result = fd.parse_file(write(tmp_path, header, rows))
    arsenal = "fd:E0:2003-08-16:arsenal:everton"
    assert quote(result, "B365AHH", arsenal)["point"] == -1.25
    assert quote(result, "B365AHA", arsenal)["point"] == 1.25
    assert quote(result, "GBAHH", arsenal)["point"] == -1.5
    assert quote(result, "GBAHA", arsenal)["point"] == 1.5
    assert result.rejected_reasons() == {"missing_handicap_line": 4}
    assert result.unknown_columns == {}


# --- events and results -------------------------------------------------------------------


def test_events_results_and_quote_columns(tmp_path):
    path = write(
        tmp_path,
        CLOSING_HEADER,
        [CLOSING_ROW, CLOSING_ROW.replace("Crystal Palace,Arsenal", "Nott'm Forest,Man City")],
    )
    result = fd.parse_file(path)
    assert list(result.events.columns) == EVENT_COLUMNS
    assert list(result.results.columns) == RESULT_COLUMNS
    assert list(result.quotes.columns) == QUOTE_COLUMNS
    event = result.events.set_index("event_id").loc["fd:E0:2022-08-05:crystal-palace:arsenal"]
    assert (event["sport"], event["league"], event["season"], event["source"]) == (
        "soccer",
        "E0",
        "2022-2023",
        "football_data",
    )
    assert event["commence_time"] == ts("2022-08-05 19:00")
    assert "fd:E0:2022-08-05:nott-m-forest:man-city" in set(result.events["event_id"])
    res = result.results.set_index("event_id").loc["fd:E0:2022-08-05:crystal-palace:arsenal"]
    assert (res["home_score"], res["away_score"]) == (0, 2)
    assert res["resolved_at"] == ts("2022-08-05 21:00")
    assert set(result.quotes["load_id"]) == {load_id_for(fd.SOURCE, path)}
    assert set(result.quotes["source_file"]) == {path.name}
    assert result.files == [str(path)]

    override = fd.parse_file(path, league="EPL")
    assert override.events["event_id"].iloc[0] == "fd:EPL:2022-08-05:crystal-palace:arsenal"


# --- real files -------------------------------------------------------------------------


def test_committed_samples_parse():
    samples = sorted(SAMPLES.glob("E0_*.csv"))
    assert [p.name for p in samples] == ["E0_2021-2022.csv", "E0_2022-2023.csv"]
    for path in samples:
        result = fd.parse_file(path)
        assert_counts_add_up(result)
        assert len(result.events) == 380 and result.unknown_columns == {}


@needs_shared_e0
@pytest.mark.shared_data
def test_every_real_epl_season_parses():
    assert len(REAL_FILES) == 23
    for path in REAL_FILES:
        result = fd.parse_file(path)
        season = path.stem.split("_", 1)[1]
        start = int(season[:4])
        summary = result.summary()
        assert_counts_add_up(result)
        assert result.prices_read > 5000, path.name
        assert len(result.events) == 380 and len(result.results) == 380, path.name
        assert set(result.events["season"]) == {season}, (
            path.name
        )  # incl. July 2020 games of 2019/20
        assert result.unknown_columns == {} and "unmapped_bookmaker_prefixes" not in result.notes, (
            path.name
        )
        rejected = sum(summary["rejected_reasons"].values())
        assert rejected < 0.01 * result.prices_read, (path.name, summary["rejected_reasons"])
        books = set(summary["bookmakers"])
        # bet365 columns start in 2002/03: the 2000/01 and 2001/02 files have none.
        assert ("bet365" in books) == (start >= 2002), path.name
        assert ("pinnacle" in books) == (start >= 2012), path.name
        if start >= 2012:
            closing = result.quotes[result.quotes["outcome_name"] == "PSCH"]
            assert len(closing) > 370, path.name
            commence = result.events.set_index("event_id")["commence_time"]
            assert (
                closing["observed_at"].to_numpy() == commence.loc[closing["event_id"]].to_numpy()
            ).all()
        if start >= 2019:
            assert set(summary["markets"]) == {"h2h", "spreads", "totals"}
            assert "default_kickoff_time_files" not in result.notes, path.name
        else:
            assert result.notes["default_kickoff_time_files"] == [f"{path.name}: 380 rows"]


# --- bad input: one clear error naming file, line and reason; nothing lost ---------------

H7 = "Div,Date,HomeTeam,AwayTeam,B365H,B365D,B365A"
ARSENAL = "E0,16/08/03,Arsenal,Everton,1.4,3.8,8"
BRIGHTON_COMMA = "E0,17/08/03,Brighton, Hove,Everton,1.4,3.8,8"  # unquoted comma: 8 fields


@pytest.mark.parametrize(
    ("rows", "line"), [([BRIGHTON_COMMA, ARSENAL], 2), ([ARSENAL, BRIGHTON_COMMA], 3)]
)
def test_row_with_an_extra_field_fails_the_file_first_row_included(tmp_path, rows, line):
    path = write(tmp_path, H7, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pandas ParserWarning may print before the error
        with pytest.raises(SourceFormatError) as info:
            fd.parse_file(path)
    assert (info.value.path, info.value.line) == (str(path), line)
    assert "8 fields" in info.value.reason and "header" in info.value.reason
    assert "7" in info.value.reason


def test_short_row_before_the_end_fails_the_file(tmp_path):
    path = write(tmp_path, H7, ["E0,17/08/03,Leeds,Newcastle,2.5", ARSENAL])
    with pytest.raises(SourceFormatError) as info:
        fd.parse_file(path)
    assert info.value.line == 2 and "5 fields" in info.value.reason and "7" in info.value.reason


def test_cut_short_last_row_is_rejected_as_truncated_with_a_warning(tmp_path):
    path = tmp_path / "E0_2003-2004.csv"
    cut = "E0,17/08/03,Leeds,Newcastle,2.5,3."
    path.write_text(f"{H7}\n{ARSENAL}\n{cut}", encoding="utf-8")  # a download cut mid-row
    result = fd.parse_file(path)
    assert result.prices_read == 5 and result.quotes_accepted == 3
    assert result.rejected_reasons() == {"truncated_row": 2}
    assert set(result.rejected["source_record"]) == {"line 3, column B365H", "line 3, column B365D"}
    assert set(result.rejected["raw"]) == {cut}
    assert result.events["home_team"].tolist() == ["Arsenal"]  # the cut row gives no event
    assert len(result.warnings) == 1 and "line 3" in result.warnings[0]
    assert "E0_2003-2004.csv" in result.warnings[0] and "truncated_row" in result.warnings[0]
    assert_counts_add_up(result)


def test_cut_short_last_row_without_a_price_is_still_kept_as_a_reject(tmp_path):
    path = tmp_path / "E0_2003-2004.csv"
    path.write_text(f"{H7}\n{ARSENAL}\nE0,17/08/03,Lee", encoding="utf-8")
    result = fd.parse_file(path)
    assert result.prices_read == 4 and result.quotes_accepted == 3
    rejected = result.rejected.iloc[0]
    assert (rejected["reason"], rejected["source_record"], rejected["raw"]) == (
        "truncated_row",
        "line 3",
        "E0,17/08/03,Lee",
    )
    assert_counts_add_up(result)


def test_duplicated_column_names_fail_the_file(tmp_path):
    path = write(tmp_path, H7 + ",WHH,B365H", [ARSENAL + ",1.5,1.45"])
    with pytest.raises(SourceFormatError) as info:
        fd.parse_file(path)
    assert info.value.line == 1 and "duplicate" in info.value.reason
    assert "B365H" in info.value.reason and "B365H.1" not in info.value.reason


def test_cp1252_file_falls_back_and_records_the_encoding(tmp_path):
    path = tmp_path / "SP1_2003-2004.csv"
    path.write_bytes(f"{H7}\nSP1,16/08/03,Atlético,Everton,1.4,3.8,8\n".encode("cp1252"))
    result = fd.parse_file(path)
    assert result.events["home_team"].tolist() == ["Atlético"]
    assert result.events["event_id"].tolist() == ["fd:SP1:2003-08-16:atletico:everton"]
    assert result.notes["file_encodings"] == ["SP1_2003-2004.csv: cp1252"]
    assert any("cp1252" in w for w in result.warnings)
    utf8 = fd.parse_file(write(tmp_path, H7, [ARSENAL]))
    assert utf8.notes["file_encodings"] == ["E0_2022-2023.csv: utf-8 with BOM"]
    assert utf8.warnings == []


def test_zero_byte_file_says_why_no_line_is_named(tmp_path):
    path = tmp_path / "E0_2003-2004.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceFormatError) as info:
        fd.parse_file(path)
    assert info.value.line is None and "0 bytes" in info.value.reason
    assert "no line" in info.value.reason


def test_stray_quote_fails_the_file_instead_of_swallowing_rows(tmp_path):
    rows = ['E0,16/08/03,"Arsenal,Everton,1.4,3.8,8', ARSENAL, ARSENAL]
    with pytest.raises(SourceFormatError) as info:
        fd.parse_file(write(tmp_path, H7, rows))
    assert info.value.line == 2 and "quote" in info.value.reason


def test_cli_prints_one_line_naming_file_line_and_counts(tmp_path, capsys):
    path = write(tmp_path, H7, [BRIGHTON_COMMA, ARSENAL])
    assert main(["inspect", "football-data", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}, line 2: ")
