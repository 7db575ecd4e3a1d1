"""Out-of-core retrieval: ``write_historical_features`` streams parquet entities in chunks.

The in-memory ``get_historical_features`` is proven against a brute-force reference in
``test_feature_store_pit``; here the streamed path must give the very same frame, in
input order, leave nothing behind when it fails, and never hold the entity set in Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from odds_pipeline.features.feature_store import FeatureStore

FEATURES = ["fv:price", "fv:note"]
QUERY = {"ttl": timedelta(minutes=90), "source_delay": timedelta(minutes=2)}


def _store(con: duckdb.DuckDBPyConnection, rows: int = 60_000) -> FeatureStore:
    """A feature view with exact ties, late and never-ingested rows, NULL values and points."""
    con.execute("SET TimeZone='UTC'")
    con.execute(
        f"""
        CREATE TABLE fv_rows AS SELECT
            'e' || (i % 40) AS event_id,
            'b' || (i % 3) AS bookmaker,
            'spreads' AS market,
            CASE WHEN (i // 40) % 2 = 0 THEN 'home' ELSE 'away' END AS outcome,
            CASE WHEN (i // 80) % 5 = 0 THEN NULL ELSE 1.5 END AS point,
            TIMESTAMPTZ '2024-01-01' + INTERVAL 1 MINUTE * (hash(i) % 2000) AS observed_at,
            CASE WHEN i % 17 = 0 THEN NULL
                 ELSE TIMESTAMPTZ '2024-01-01' + INTERVAL 1 MINUTE * (hash(i) % 2000)
                      + INTERVAL 1 MINUTE * (CASE WHEN i % 7 = 0 THEN 300 ELSE i % 3 END)
            END AS ingested_at,
            CASE WHEN i % 11 = 0 THEN NULL ELSE (i % 97) / 10.0 END AS price,
            CASE WHEN i % 13 = 0 THEN NULL ELSE 'n' || (i % 4) END AS note
        FROM range({rows}) t(i)
        """
    )
    store = FeatureStore(con)
    store.register_view("fv", "fv_rows", features=["price", "note"])
    return store


def _entities(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    minutes = rng.integers(-10, 2100, n).astype("float64")
    minutes[rng.random(n) < 0.01] = np.nan  # a NULL as_of asks nothing
    point = np.where(rng.random(n) < 0.2, np.nan, 1.5)
    return pd.DataFrame(
        {
            "event_id": np.array([f"e{i}" for i in range(45)])[rng.integers(0, 45, n)],
            "bookmaker": np.array(["b0", "b1", "b2"])[rng.integers(0, 3, n)],
            "market": "spreads",
            "outcome": np.array(["home", "away"])[rng.integers(0, 2, n)],
            "point": point,
            "as_of": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(minutes, unit="min"),
            "probe": np.arange(n, dtype=np.int64),
        }
    )


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal values and columns; time units/zone names of the parquet round trip aside."""
    assert list(got.columns) == list(want.columns)

    def norm(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        for col in frame.columns:
            if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
                frame[col] = frame[col].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        return frame

    pd.testing.assert_frame_equal(norm(got), norm(want), check_dtype=False)


@pytest.fixture()
def store() -> FeatureStore:
    return _store(duckdb.connect())


@pytest.mark.parametrize("knowledge", ["observed", "ingested"])
def test_streamed_chunks_equal_the_in_memory_answer(store, tmp_path, knowledge):
    frame = _entities(50_000)
    source = tmp_path / "entities.parquet"
    frame.to_parquet(source, row_group_size=12_345)  # row groups cut across the chunks
    out = tmp_path / "features.parquet"
    summary = store.write_historical_features(
        source,
        FEATURES,
        out,
        knowledge=knowledge,
        chunk_rows=7_000,
        include_timestamps=True,
        **QUERY,
    )
    assert summary["rows"] == 50_000 and summary["chunks"] == 8
    assert summary["path"] == str(out) and summary["seconds"] >= 0
    want = store.get_historical_features(
        pd.read_parquet(source), FEATURES, knowledge=knowledge, include_timestamps=True, **QUERY
    )
    got = pd.read_parquet(out)
    _same(got, want)
    assert got["probe"].tolist() == list(range(50_000))  # input order kept
    assert 0.5 < got["price"].notna().mean() < 0.95  # neither empty nor trivially full
    assert not list(tmp_path.glob(".*.tmp"))


def test_files_are_read_in_name_order_and_relations_in_scan_order(store, tmp_path):
    frame = _entities(3_000, seed=1)
    parts = tmp_path / "parts"
    parts.mkdir()
    # written in another order than their names sort
    for name, lo, hi in (
        ("b.parquet", 1_000, 2_500),
        ("a.parquet", 0, 1_000),
        ("c.parquet", 2_500, 3_000),
    ):
        frame.iloc[lo:hi].to_parquet(parts / name)
    want = store.get_historical_features(frame, FEATURES, **QUERY)
    for entities in (
        parts,
        str(parts / "*.parquet"),
        [parts / "a.parquet", str(parts / "[bc].parquet")],
    ):
        out = tmp_path / "out.parquet"
        store.write_historical_features(entities, FEATURES, out, chunk_rows=700, **QUERY)
        _same(pd.read_parquet(out), want)
    con = store._con
    assert con is not None
    con.register("incoming", frame)
    con.execute("CREATE TABLE entity_rows AS SELECT * FROM incoming")
    con.unregister("incoming")
    out = tmp_path / "from_table.parquet"
    summary = store.write_historical_features("entity_rows", FEATURES, out, chunk_rows=999, **QUERY)
    assert summary["chunks"] == 4
    _same(pd.read_parquet(out), want)


def test_file_backed_store_and_empty_entities(tmp_path):
    db = tmp_path / "store.duckdb"
    con = duckdb.connect(str(db))
    _store(con, rows=2_000)
    con.close()
    store = FeatureStore(db)
    store.register_view("fv", "fv_rows", features=["price", "note"])
    source = tmp_path / "empty.parquet"
    _entities(10).iloc[:0].to_parquet(source)
    out = tmp_path / "out.parquet"
    summary = store.write_historical_features(source, "fv:*", out, include_timestamps=True)
    assert summary["rows"] == 0 and summary["chunks"] == 1
    want = store.get_historical_features(_entities(10).iloc[:0], "fv:*", include_timestamps=True)
    assert list(pd.read_parquet(out).columns) == list(want.columns)
    assert pq.read_metadata(out).num_rows == 0


def test_failure_mid_way_leaves_no_output_and_keeps_an_old_one(store, tmp_path, monkeypatch):
    source = tmp_path / "entities.parquet"
    _entities(20_000).to_parquet(source)
    out = tmp_path / "out" / "features.parquet"
    with pytest.raises(ValueError, match="no feature"):
        store.write_historical_features(source, ["fv:nope"], out)
    assert not out.exists()

    calls = {"n": 0}
    real = FeatureStore._chunk_arrow

    def third_chunk_fails(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FeatureStore, "_chunk_arrow", third_chunk_fails)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write_historical_features(source, FEATURES, out, chunk_rows=5_000)
    assert calls["n"] == 3
    assert list(out.parent.iterdir()) == []  # neither the output nor a temporary file

    out.write_bytes(b"previous run")
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.write_historical_features(source, FEATURES, out, chunk_rows=5_000)
    assert out.read_bytes() == b"previous run"
    assert [p.name for p in out.parent.iterdir()] == ["features.parquet"]
    # and the same call without the fault replaces it
    monkeypatch.setattr(FeatureStore, "_chunk_arrow", real)
    store.write_historical_features(source, FEATURES, out, chunk_rows=5_000)
    assert pq.read_metadata(out).num_rows == 20_000


def test_bad_entity_sources_are_clear(store, tmp_path):
    out = tmp_path / "out.parquet"
    with pytest.raises(FileNotFoundError, match="no parquet file"):
        store.write_historical_features(tmp_path / "missing.parquet", FEATURES, out)
    with pytest.raises(KeyError, match="cannot read"):
        store.write_historical_features("no_such_relation", FEATURES, out)
    text = tmp_path / "text_as_of.parquet"
    frame = _entities(5)
    frame["as_of"] = frame["as_of"].astype(str)
    frame.to_parquet(text)
    with pytest.raises(ValueError, match="TIMESTAMPTZ"):
        store.write_historical_features(text, FEATURES, out)
    no_as_of = tmp_path / "no_as_of.parquet"
    _entities(5).drop(columns="as_of").to_parquet(no_as_of)
    with pytest.raises(ValueError, match="as_of"):
        store.write_historical_features(no_as_of, FEATURES, out)
    with pytest.raises(ValueError, match="chunk_rows"):
        store.write_historical_features(no_as_of, FEATURES, out, chunk_rows=0)
    assert not out.exists()


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, tracemalloc
    import duckdb
    from odds_pipeline_tests.features.test_feature_store_out_of_core import _store

    def peak_bytes():
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    store = _store(duckdb.connect(), rows=20_000)
    before = peak_bytes()
    tracemalloc.start()
    summary = store.write_historical_features(
        sys.argv[1], ["fv:price", "fv:note"], sys.argv[2], chunk_rows=50_000
    )
    traced = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"rss_growth": peak_bytes() - before, "traced": traced, **summary}))
    """
)


def test_the_entity_frame_is_never_materialized(tmp_path):
    """A 2M-row entity parquet goes through while the process grows by a fraction of it."""
    n = 2_000_000
    source = tmp_path / "entities.parquet"
    with duckdb.connect() as con:  # written by DuckDB: the test process holds none of it
        con.execute(
            f"""
            COPY (SELECT 'e' || (i % 45) AS event_id, 'b' || (i % 3) AS bookmaker,
                         'spreads' AS market, CASE WHEN i % 2 = 0 THEN 'home' ELSE 'away' END
                         AS outcome, 1.5 AS point,
                         TIMESTAMPTZ '2024-01-01' + INTERVAL 1 MINUTE * (hash(i) % 2100) AS as_of,
                         'row-' || i AS label
                  FROM range({n}) t(i)) TO '{source}' (FORMAT parquet)
            """
        )
    sample = pq.ParquetFile(source).read_row_group(0).to_pandas()
    frame_bytes = sample.memory_usage(deep=True).sum() * n / len(sample)
    assert frame_bytes > 500e6  # what loading the entities into pandas would cost
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(source), str(tmp_path / "out.parquet")],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["rows"] == n and report["chunks"] == 40
    assert pq.read_metadata(tmp_path / "out.parquet").num_rows == n
    # Python objects: a chunk's worth at most, never the frame's millions of strings
    assert report["traced"] < frame_bytes / 20, (report, frame_bytes)
    # the whole process (Arrow, DuckDB): well under what the frame alone would take
    assert report["rss_growth"] < frame_bytes / 4, (report, frame_bytes)
