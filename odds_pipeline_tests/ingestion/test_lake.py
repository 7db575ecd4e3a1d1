"""Day-partitioned Parquet of the canonical tables: read in place, idempotent, atomic per day."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from odds_pipeline.ingestion import lake
from odds_pipeline.ingestion.sources import simulator
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.warehouse import table_exists


@pytest.fixture
def warehouse(tmp_path: Path) -> OddsStore:
    odds = OddsStore(tmp_path / "odds.duckdb")
    generated = simulator.generate(simulator.SimulatorConfig(n_events=12, seed=3), trusted=True)
    odds.replace_load("sim", simulator.SOURCE, generated)
    return odds


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def test_every_day_exported_reads_back_in_place_as_the_warehouse_table(warehouse, tmp_path):
    root = tmp_path / "lake"
    with warehouse.connection() as con:
        for table in lake.LAKE_TABLES:
            if not table_exists(con, table):
                continue
            days = lake.days_in(con, table)
            written = lake.export_days(con, root, days, [table])
            assert (
                sum(written[table].values())
                == con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            )
            view = lake.read_lake(con, root, table)
            in_lake = con.execute(f"SELECT * EXCLUDE (day) FROM {view}").df()
            in_warehouse = con.execute(f"SELECT * FROM {table}").df()
            pd.testing.assert_frame_equal(_sorted(in_lake), _sorted(in_warehouse))
            one_day = con.execute(
                f"SELECT count(*) FROM {view} WHERE day = ?", [days[0]]
            ).fetchone()[0]
            assert one_day == written[table][days[0]] > 0
    # Any Parquet engine reads the same files: here pyarrow, with the hive `day` column.
    import pyarrow.dataset as ds

    quotes = ds.dataset(root / "odds_quotes", format="parquet", partitioning="hive").to_table()
    with warehouse.connection(read_only=True) as con:
        assert quotes.num_rows == con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
    assert "day" in quotes.column_names


def test_exporting_a_day_again_gives_the_same_files_and_a_vanished_day_is_removed(
    warehouse, tmp_path
):
    root = tmp_path / "lake"
    with warehouse.connection() as con:
        days = lake.days_in(con, "odds_quotes")
        lake.export_days(con, root, days, ["odds_quotes"])
        before = _digest(root)
        lake.export_days(con, root, days, ["odds_quotes"])
        assert _digest(root) == before
        con.execute(
            "DELETE FROM odds_quotes WHERE strftime(timezone('UTC', observed_at), '%Y-%m-%d') = ?",
            [days[0]],
        )
        written = lake.export_days(con, root, [days[0]], ["odds_quotes"])
    assert written["odds_quotes"][days[0]] == 0
    assert not lake.day_file(root, "odds_quotes", days[0]).exists()
    assert lake.day_file(root, "odds_quotes", days[1]).exists()


def test_a_failed_export_leaves_the_previous_day_whole_and_no_temporary_file(
    warehouse, tmp_path, monkeypatch
):
    root = tmp_path / "lake"
    with warehouse.connection() as con:
        day = lake.days_in(con, "odds_quotes")[0]
        lake.export_days(con, root, [day], ["odds_quotes"])
        before = _digest(root)
        con.execute("UPDATE odds_quotes SET price = price + 1")

        def killed(src, dst):
            raise OSError("killed mid-export")

        monkeypatch.setattr(lake.os, "replace", killed)
        with pytest.raises(OSError, match="killed"):
            lake.export_days(con, root, [day], ["odds_quotes"])
    assert _digest(root) == before
    assert [p.name for p in lake.day_file(root, "odds_quotes", day).parent.iterdir()] == [
        lake.FILE_NAME
    ]


def test_an_unknown_table_is_refused_by_name(tmp_path):
    con = duckdb.connect()
    with pytest.raises(ValueError, match="'loads' has no day partitioning"):
        lake.export_days(con, tmp_path, ["2024-01-01"], ["loads"])


def test_the_asset_and_the_cli_write_the_same_lake(isolated_state_home, capsys):
    """`canonical_parquet` for a range of days (one run) and `odds-pipeline export-lake`."""
    import json

    import dagster as dg

    from odds_pipeline.cli import main
    from odds_pipeline.defs.ingestion import canonical_parquet
    from odds_pipeline.defs.resources import WarehouseResource
    from odds_pipeline.paths import lake_dir, warehouse_path

    odds = OddsStore(warehouse_path())
    generated = simulator.generate(simulator.SimulatorConfig(n_events=12, seed=3), trusted=True)
    odds.replace_load("sim", simulator.SOURCE, generated)
    with odds.connection(read_only=True) as con:
        days = lake.days_in(con, "odds_quotes")
    with dg.instance_for_test() as instance:
        from dagster._core.storage.tags import (
            ASSET_PARTITION_RANGE_END_TAG,
            ASSET_PARTITION_RANGE_START_TAG,
        )

        job = dg.Definitions(
            assets=[canonical_parquet], resources={"warehouse": WarehouseResource()}
        ).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            instance=instance,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: days[0],
                ASSET_PARTITION_RANGE_END_TAG: days[-1],
            },
        )
    assert result.success
    md = result.asset_materializations_for_node("canonical_parquet")[0].metadata
    assert md["days"].value == len(days) and md["dagster/row_count"].value == len(generated.quotes)
    by_asset = _digest(lake_dir())
    assert main(["export-lake", "--root", str(isolated_state_home / "cli_lake")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"]["odds_quotes"] == len(generated.quotes)
    assert _digest(isolated_state_home / "cli_lake") == by_asset


def test_rows_without_a_timestamp_are_counted_not_lost_silently(
    warehouse, tmp_path, capsys, monkeypatch
):
    from odds_pipeline.cli import main

    with warehouse.connection() as con:
        con.execute("UPDATE results SET resolved_at = NULL WHERE event_id IN "
                    "(SELECT event_id FROM results ORDER BY event_id LIMIT 2)")  # fmt: skip
        assert lake.undated_rows(con, "results") == 2
        assert lake.undated_rows(con, "odds_quotes") == 0
    assert main(["export-lake", "--from", "2024-01-03", "--to", "2024-01-01"]) == 2
    assert "after --to" in capsys.readouterr().err
    # the CLI says how many rows no day file holds
    monkeypatch.setattr("odds_pipeline.paths.warehouse_path", lambda: tmp_path / "odds.duckdb")
    assert main(["export-lake", "--root", str(tmp_path / "lake")]) == 0
    assert json.loads(capsys.readouterr().out)["rows_without_day"] == {"results": 2}
