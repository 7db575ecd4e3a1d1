"""Load identity: same-named files in different folders are separate loads, a copy is not.

football-data.co.uk names every season `E0.csv` under a season folder; keyed by file name
only, the second season replaced the first (19,745 quotes lost, exit 0) and a copy under
another name became a second load that duplicated every quote key.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from odds_pipeline.defs.ingestion import football_data_odds
from odds_pipeline.defs.resources import WarehouseResource
from odds_pipeline.ingestion import sources
from odds_pipeline.ingestion.ingest import ingest_paths, parse_paths
from odds_pipeline.ingestion.sources import football_data as fd
from odds_pipeline.ingestion.store import OddsStore, legacy_load_id, load_id_for
from odds_pipeline.paths import PROJECT_ROOT, SAMPLES_DIR

SEASONS = ("2021-2022", "2022-2023")
SAMPLE = {season: SAMPLES_DIR / "football_data" / f"E0_{season}.csv" for season in SEASONS}
QUOTE_KEY = "source, event_id, bookmaker, market, outcome, point, observed_at"


@pytest.fixture(scope="module")
def season_quotes() -> dict[str, int]:
    """Quotes each bundled season yields on its own (19,745 and 19,756)."""
    return {season: len(fd.parse_file(path).quotes) for season, path in SAMPLE.items()}


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """The football-data layout: one `E0.csv` per season folder."""
    root = tmp_path / "football_data"
    for season, sample in SAMPLE.items():
        (root / season).mkdir(parents=True)
        shutil.copy(sample, root / season / "E0.csv")
    return root


def ingest(store: OddsStore, *patterns: str | Path):
    return ingest_paths(store, fd.parse_file, fd.SOURCE, [str(p) for p in patterns])


def quote_rows(store: OddsStore) -> int:
    return int(store.query("SELECT count(*) AS n FROM odds_quotes")["n"][0])


def duplicate_keys(store: OddsStore) -> int:
    """What the blocking `unique_quote_keys` check counts: quote keys stored twice."""
    sql = f"SELECT count(*) AS n FROM (SELECT 1 FROM odds_quotes GROUP BY {QUOTE_KEY} HAVING count(*) > 1)"
    return int(store.query(sql)["n"][0])


def load_ids(store: OddsStore) -> list[str]:
    return store.query("SELECT load_id FROM loads ORDER BY load_id")["load_id"].tolist()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the id -----------------------------------------------------------------------------


def test_bundled_samples_keep_readable_ids_relative_to_the_project():
    path = SAMPLE["2021-2022"]
    expected = "football_data:data/samples/football_data/E0_2021-2022.csv"
    assert load_id_for("football_data", path) == expected
    # The same file named through a relative path (as configs name it) gets the same id.
    assert load_id_for("football_data", path.relative_to(PROJECT_ROOT), root=PROJECT_ROOT) == (
        expected
    )
    assert legacy_load_id("football_data", path) == "football_data:E0_2021-2022.csv"


def test_files_outside_the_project_get_their_absolute_path(layout: Path):
    a, b = (layout / season / "E0.csv" for season in SEASONS)
    assert load_id_for("football_data", a) == f"football_data:{a.resolve().as_posix()}"
    assert load_id_for("football_data", a) != load_id_for("football_data", b)


def test_one_home_for_load_ids(layout: Path):
    """The adapters' rejected rows and `parse_paths` use the store's id, not their own."""
    assert sources.load_id_for is load_id_for
    path = layout / "2021-2022" / "E0.csv"
    result = fd.parse_file(path)
    assert set(result.rejected["load_id"]) == {load_id_for(fd.SOURCE, path)}
    assert list(parse_paths(fd.parse_file, fd.SOURCE, [str(layout / "*" / "E0.csv")])) == [
        load_id_for(fd.SOURCE, layout / season / "E0.csv") for season in SEASONS
    ]


# --- two seasons, one name ---------------------------------------------------------------


def test_same_named_files_in_season_folders_are_separate_loads(
    tmp_path: Path, layout: Path, season_quotes: dict[str, int]
):
    store = OddsStore(tmp_path / "w.duckdb")
    result = ingest(store, layout / "*" / "E0.csv")
    # Before: one load `football_data:E0.csv` holding 19,756 quotes (the 2021-22 season lost).
    assert quote_rows(store) == sum(season_quotes.values()) == 19_745 + 19_756
    assert duplicate_keys(store) == 0
    ids = [load_id_for(fd.SOURCE, layout / season / "E0.csv") for season in SEASONS]
    assert load_ids(store) == sorted(ids)
    assert result.notes["loads"] == ids and "duplicate_content" not in result.notes
    hashes = store.query("SELECT load_id, content_sha256 FROM loads ORDER BY load_id")
    assert dict(zip(hashes["load_id"], hashes["content_sha256"], strict=True)) == {
        load_id_for(fd.SOURCE, layout / s / "E0.csv"): sha256(SAMPLE[s]) for s in SEASONS
    }
    seasons = store.query("SELECT DISTINCT season FROM events ORDER BY 1")["season"].tolist()
    assert seasons == list(SEASONS)


def test_a_copy_under_another_name_in_a_later_run_is_skipped_and_reported(
    tmp_path: Path, layout: Path, season_quotes: dict[str, int]
):
    store = OddsStore(tmp_path / "w.duckdb")
    ingest(store, layout / "*" / "E0.csv")
    before = load_ids(store)
    copy = tmp_path / "elsewhere" / "E0_copy.csv"
    copy.parent.mkdir()
    shutil.copy(layout / "2022-2023" / "E0.csv", copy)
    result = ingest(store, copy)
    # Before: a second load `football_data:E0_copy.csv`, 19,756 duplicated keys.
    assert quote_rows(store) == sum(season_quotes.values())
    assert duplicate_keys(store) == 0
    assert load_ids(store) == before
    assert result.notes["duplicate_content"] == {
        str(copy.resolve()): load_id_for(fd.SOURCE, layout / "2022-2023" / "E0.csv")
    }
    assert result.notes["loads"] == [] and result.quotes_accepted == 0


def test_a_copy_in_the_same_run_is_skipped_and_the_first_file_kept(
    tmp_path: Path, layout: Path, season_quotes: dict[str, int]
):
    third = layout / "spare" / "E0_2021-2022.csv"
    third.parent.mkdir()
    shutil.copy(layout / "2021-2022" / "E0.csv", third)
    store = OddsStore(tmp_path / "w.duckdb")
    result = ingest(store, layout / "*" / "*.csv")
    assert quote_rows(store) == sum(season_quotes.values())
    assert duplicate_keys(store) == 0
    kept = load_id_for(fd.SOURCE, layout / "2021-2022" / "E0.csv")
    assert result.notes["duplicate_content"] == {str(third.resolve()): kept}
    assert third.resolve().as_posix() not in " ".join(load_ids(store))
    # The combined result counts what was written, not the skipped copy.
    assert result.quotes_accepted == sum(season_quotes.values())
    # Re-running changes nothing: the same file keeps the content, the copy stays skipped.
    again = ingest(store, layout / "*" / "*.csv")
    assert again.notes["duplicate_content"] == {str(third.resolve()): kept}
    assert quote_rows(store) == sum(season_quotes.values())


def test_changed_content_at_the_same_path_replaces_its_load(tmp_path: Path, layout: Path):
    store = OddsStore(tmp_path / "w.duckdb")
    ingest(store, layout / "*" / "E0.csv")
    path = layout / "2021-2022" / "E0.csv"
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    path.write_text("".join(lines[:11]), encoding="utf-8")  # the header and 10 matches
    result = ingest(store, path)
    load_id = load_id_for(fd.SOURCE, path)
    assert result.notes["loads"] == [load_id] and "duplicate_content" not in result.notes
    held = store.query("SELECT count(*) AS n FROM odds_quotes WHERE load_id = ?", [load_id])["n"][0]
    assert held == result.quotes_accepted > 0
    row = store.query("SELECT content_sha256 FROM loads WHERE load_id = ?", [load_id])
    assert row["content_sha256"].tolist() == [sha256(path)]
    assert duplicate_keys(store) == 0


def test_a_file_changed_into_a_copy_drops_its_stale_load(
    tmp_path: Path, layout: Path, season_quotes: dict[str, int]
):
    """Its old content no longer exists anywhere; its new content is held by the other load."""
    store = OddsStore(tmp_path / "w.duckdb")
    ingest(store, layout / "*" / "E0.csv")
    stale = layout / "2021-2022" / "E0.csv"
    shutil.copy(layout / "2022-2023" / "E0.csv", stale)
    result = ingest(store, stale)
    holder = load_id_for(fd.SOURCE, layout / "2022-2023" / "E0.csv")
    assert result.notes["duplicate_content"] == {str(stale.resolve()): holder}
    assert load_ids(store) == [holder]
    assert quote_rows(store) == season_quotes["2022-2023"]


# --- warehouses written with the old, name-only ids ---------------------------------------

OLD_LOADS_DDL = """CREATE TABLE loads (
    load_id VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, prices_read BIGINT NOT NULL,
    quotes_accepted BIGINT NOT NULL, quotes_rejected BIGINT NOT NULL)"""


def old_warehouse(path: Path, files: dict[str, Path]) -> OddsStore:
    """A warehouse as the name-keyed code left it: `loads` without a hash column."""
    con = duckdb.connect(str(path))
    con.execute(OLD_LOADS_DDL)
    con.close()
    store = OddsStore(path)
    for old_id, file in files.items():
        store.replace_load(old_id, fd.SOURCE, fd.parse_file(file))
    return store


def test_the_hash_column_is_added_to_an_old_warehouse(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute(OLD_LOADS_DDL)
    con.execute("INSERT INTO loads VALUES ('football_data:E0.csv', 'football_data', 1, 1, 0)")
    con.close()
    store = OddsStore(path)
    with store.connection():
        pass
    rows = store.query("SELECT load_id, content_sha256 FROM loads")
    assert rows.to_dict("records") == [{"load_id": "football_data:E0.csv", "content_sha256": None}]


def test_reingesting_replaces_old_style_loads_without_a_hash(
    tmp_path: Path, season_quotes: dict[str, int]
):
    """Samples ingested under `football_data:E0_2021-2022.csv` are not stored twice."""
    store = old_warehouse(
        tmp_path / "w.duckdb",
        {legacy_load_id(fd.SOURCE, p): p for p in SAMPLE.values()},
    )
    assert load_ids(store) == ["football_data:E0_2021-2022.csv", "football_data:E0_2022-2023.csv"]
    result = ingest(store, *SAMPLE.values())
    new_ids = [load_id_for(fd.SOURCE, p) for p in SAMPLE.values()]
    assert (
        load_ids(store)
        == new_ids
        == [
            "football_data:data/samples/football_data/E0_2021-2022.csv",
            "football_data:data/samples/football_data/E0_2022-2023.csv",
        ]
    )
    assert quote_rows(store) == sum(season_quotes.values())
    assert duplicate_keys(store) == 0
    assert result.notes["replaced_loads"] == {
        "football_data:E0_2021-2022.csv": new_ids[0],
        "football_data:E0_2022-2023.csv": new_ids[1],
    }


def test_old_style_copies_are_healed_by_the_next_run(tmp_path: Path, layout: Path):
    """The failing warehouse of the issue: a season and its copy, duplicated keys."""
    copy = layout / "2022-2023" / "E0_copy.csv"
    shutil.copy(layout / "2022-2023" / "E0.csv", copy)
    store = old_warehouse(
        tmp_path / "w.duckdb",
        {
            "football_data:E0.csv": layout / "2022-2023" / "E0.csv",
            "football_data:E0_copy.csv": copy,
        },
    )
    assert duplicate_keys(store) > 0
    result = ingest(store, layout / "2022-2023" / "*.csv")
    holder = load_id_for(fd.SOURCE, layout / "2022-2023" / "E0.csv")
    assert load_ids(store) == [holder]
    assert duplicate_keys(store) == 0
    assert result.notes["duplicate_content"] == {str(copy.resolve()): holder}


def test_old_style_load_with_another_hash_is_kept(tmp_path: Path, layout: Path):
    """Same file name, other content recorded: another file, not an older id of this one."""
    store = OddsStore(tmp_path / "w.duckdb")
    other = fd.parse_file(layout / "2022-2023" / "E0.csv")
    store.replace_load("football_data:E0.csv", fd.SOURCE, other)
    with store.connection() as con:
        con.execute("UPDATE loads SET content_sha256 = 'another file'")
    ingest(store, layout / "2021-2022" / "E0.csv")
    assert load_ids(store) == sorted(
        ["football_data:E0.csv", load_id_for(fd.SOURCE, layout / "2021-2022" / "E0.csv")]
    )


def test_old_style_load_with_the_same_hash_is_replaced(tmp_path: Path, layout: Path):
    store = OddsStore(tmp_path / "w.duckdb")
    path = layout / "2021-2022" / "E0.csv"
    store.replace_load("football_data:E0.csv", fd.SOURCE, fd.parse_file(path))
    with store.connection() as con:
        con.execute("UPDATE loads SET content_sha256 = ?", [sha256(path)])
    result = ingest(store, path)
    assert load_ids(store) == [load_id_for(fd.SOURCE, path)]
    assert result.notes["replaced_loads"] == {"football_data:E0.csv": load_id_for(fd.SOURCE, path)}
    assert duplicate_keys(store) == 0


# --- the asset ----------------------------------------------------------------------------


def test_football_data_asset_reports_both_seasons_and_the_copy(
    layout: Path, season_quotes: dict[str, int]
):
    copy = layout / "copies" / "E0_2022-2023.csv"
    copy.parent.mkdir()
    shutil.copy(layout / "2022-2023" / "E0.csv", copy)
    paths = [str(layout / "*" / "E0.csv"), str(copy)]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [football_data_odds],
            resources={"warehouse": WarehouseResource()},
            run_config={"ops": {"football_data_odds": {"config": {"paths": paths}}}},
            instance=instance,
        )
    assert result.success
    event = result.get_asset_materialization_events()[0]
    meta = event.step_materialization_data.materialization.metadata
    ids = [load_id_for(fd.SOURCE, layout / season / "E0.csv") for season in SEASONS]
    assert meta["loads"].value == ids
    assert meta["duplicate_content"].value == {
        str(copy.resolve()): load_id_for(fd.SOURCE, layout / "2022-2023" / "E0.csv")
    }
    assert meta["quotes_accepted"].value == sum(season_quotes.values())
    store = OddsStore(WarehouseResource().resolved_path())
    assert quote_rows(store) == sum(season_quotes.values())
    assert duplicate_keys(store) == 0
