"""Point-in-time join: FeatureStore vs pandas.merge_asof vs per-row SQLite, side by side.

Generates a feature view (default 10M rows, ~300k keys, 60 days, 1% late rows) in a
temporary DuckDB file and an entity frame (default 1M rows, random keys and times), then
runs each method in its own subprocess so that peak RSS figures do not mix:

* store_observed / store_ingested: ``FeatureStore.get_historical_features`` on all entity rows
* merge_asof: the same join in pandas (inputs loaded beforehand; sorting is timed, since
  merge_asof needs sorted inputs and the store sorts too)
* store_subset vs sqlite_subset: the seed chapter's lookup (one indexed
  ``SELECT ... WHERE key = ? AND observed_at <= ? ORDER BY observed_at DESC LIMIT 1`` per
  entity row) on a 10k-row subset, and the store on the same rows

Every method returns a checksum of its answers; the parent asserts they agree.

Run:   .venv/bin/python benchmarks/bench_pit_join.py
Quick: .venv/bin/python benchmarks/bench_pit_join.py --feature-rows 1000000 --entity-rows 100000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, peak_rss_mb

HERE = Path(__file__).resolve()
FEATURES = ["quote_features:price", "quote_features:implied_prob"]
KEYS = ["event_id", "bookmaker", "market", "outcome", "point"]
DAYS = 60
BOOKS = 10
OUTCOMES = 6  # h2h home/away, spreads home/away, totals over/under


def own_peak_rss_mb() -> float:
    """Peak RSS of this process alone.

    ``getrusage`` maxrss survives fork+exec, so a child would report its parent's peak;
    the kernel's VmHWM belongs to the new address space. Falls back to ``peak_rss_mb``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


# ----------------------------------------------------------------------------- data
def generate(
    workdir: Path, feature_rows: int, entity_rows: int, subset_rows: int, rows_per_key: int
) -> dict:
    """Feature table in DuckDB (insertion ordered by time, like a live feed) + entities."""
    import duckdb

    events = max(1, feature_rows // (rows_per_key * BOOKS * OUTCOMES))
    n_keys = events * BOOKS * OUTCOMES
    con = duckdb.connect(str(workdir / "features.duckdb"))
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar=false")
    con.execute(
        f"""
        CREATE TABLE keys AS
        SELECT row_number() OVER () - 1 AS k, md5(e::VARCHAR) AS event_id,
               'book' || b AS bookmaker,
               ['h2h', 'spreads', 'totals'][o // 2 + 1] AS market,
               CASE WHEN o // 2 = 2 THEN ['over', 'under'][o % 2 + 1]
                    ELSE ['home', 'away'][o % 2 + 1] END AS outcome,
               CASE WHEN o // 2 = 0 THEN NULL
                    WHEN o // 2 = 1 THEN (o % 2 * 2 - 1) * 1.5
                    ELSE 220.5 END::DOUBLE AS point
        FROM range({events}) t(e), range({BOOKS}) u(b), range({OUTCOMES}) v(o)
        """
    )
    span_us = DAYS * 86_400_000_000
    con.execute(
        f"""
        CREATE TABLE quote_features AS
        WITH r AS (
            SELECT i, hash(i, 'k') % {n_keys} AS k,
                   TIMESTAMPTZ '2025-01-01' + to_microseconds((hash(i, 't') % {span_us})::BIGINT)
                       AS observed_at,
                   CASE WHEN hash(i, 'late') % 100 = 0
                        THEN to_microseconds((hash(i, 'lag') % 21_600_000_000)::BIGINT)
                        ELSE to_microseconds((hash(i, 'lag') % 60_000_000)::BIGINT) END AS lag,
                   1.01 + (hash(i, 'p') % 1000) / 100.0 AS price
            FROM range({feature_rows}) t(i)
        )
        SELECT keys.event_id, keys.bookmaker, keys.market, keys.outcome, keys.point,
               r.observed_at, r.observed_at + r.lag AS ingested_at,
               r.price, 1.0 / r.price AS implied_prob
        FROM r JOIN keys USING (k)
        ORDER BY r.observed_at
        """
    )
    con.execute(
        f"""
        COPY (
            SELECT keys.event_id || CASE WHEN hash(j, 'u') % 50 = 0 THEN '-unknown' ELSE '' END
                       AS event_id,
                   keys.bookmaker, keys.market, keys.outcome, keys.point,
                   TIMESTAMPTZ '2025-01-01'
                       + to_microseconds((hash(j, 'a') % {span_us + 86_400_000_000})::BIGINT)
                       AS as_of
            FROM range({entity_rows}) t(j) JOIN keys ON keys.k = hash(j, 'ek') % {n_keys}
            ORDER BY hash(j, 'order')
        ) TO '{workdir / "entities.parquet"}' (FORMAT parquet)
        """
    )
    con.execute(
        f"""COPY (SELECT * FROM read_parquet('{workdir / "entities.parquet"}')
                  LIMIT {subset_rows}) TO '{workdir / "subset.parquet"}' (FORMAT parquet)"""
    )
    stored = con.execute(
        "SELECT count(*), count(DISTINCT (event_id, bookmaker, market, outcome, point)) FROM quote_features"
    ).fetchall()[0]
    con.execute("DROP TABLE keys")
    con.close()
    return {"feature_rows": stored[0], "keys": stored[1]}


def build_sqlite(workdir: Path) -> float:
    """The seed chapter's store: one SQLite table, indexed on the key and observed_at."""
    import duckdb

    start = time.perf_counter()
    path = workdir / "features.sqlite"
    lite = sqlite3.connect(path)
    lite.execute(
        "CREATE TABLE quotes (event_id TEXT, bookmaker TEXT, market TEXT, outcome TEXT, "
        "point REAL, observed_at INTEGER, ingested_at INTEGER, price REAL, implied_prob REAL)"
    )
    con = duckdb.connect(str(workdir / "features.duckdb"), read_only=True)
    cur = con.execute(
        "SELECT event_id, bookmaker, market, outcome, point, epoch_us(observed_at), "
        "epoch_us(ingested_at), price, implied_prob FROM quote_features"
    )
    while batch := cur.fetchmany(200_000):
        lite.executemany("INSERT INTO quotes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    con.close()
    lite.execute(
        "CREATE INDEX quotes_pit ON quotes "
        "(event_id, bookmaker, market, outcome, point, observed_at, ingested_at)"
    )
    lite.commit()
    lite.close()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- methods
def _checksum(price, implied) -> dict:
    import numpy as np

    price = np.asarray(price, dtype="float64")
    implied = np.asarray(implied, dtype="float64")
    return {
        "found": int(np.count_nonzero(~np.isnan(price))),
        "price_sum": round(float(np.nansum(price)), 6),
        "implied_sum": round(float(np.nansum(implied)), 6),
    }


def run_store(workdir: Path, entities: str, knowledge: str) -> dict:
    import pandas as pd

    from odds_pipeline.features.feature_store import FeatureStore

    frame = pd.read_parquet(workdir / entities)
    rss_before = own_peak_rss_mb()
    store = FeatureStore(workdir / "features.duckdb")
    start = time.perf_counter()
    out = store.get_historical_features(frame, FEATURES, knowledge=knowledge)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": len(frame),
        "rss_before_mb": rss_before,
        **_checksum(out["price"], out["implied_prob"]),
    }


def run_store_out_of_core(workdir: Path, entities: str, chunk_rows: int = 250_000) -> dict:
    """Parquet in, parquet out, in chunks: the entity frame is never whole in Python."""
    import pyarrow.parquet as pq

    from odds_pipeline.features.feature_store import FeatureStore

    rss_before = own_peak_rss_mb()
    store = FeatureStore(workdir / "features.duckdb")
    out_path = workdir / "out_of_core.parquet"
    start = time.perf_counter()
    summary = store.write_historical_features(
        str(workdir / entities), FEATURES, out_path, chunk_rows=chunk_rows
    )
    seconds = time.perf_counter() - start
    table = pq.read_table(out_path, columns=["price", "implied_prob"])
    return {
        "seconds": seconds,
        "rows": summary["rows"],
        "chunks": summary["chunks"],
        "rss_before_mb": rss_before,
        **_checksum(table.column("price").to_pandas(), table.column("implied_prob").to_pandas()),
    }


def run_merge_asof(workdir: Path, entities: str) -> dict:
    """pandas' best case: categorical keys, µs integer times, inputs already in memory."""
    import duckdb
    import numpy as np
    import pandas as pd

    con = duckdb.connect(str(workdir / "features.duckdb"), read_only=True)
    feats = (
        con.execute(
            "SELECT event_id, bookmaker, market, outcome, coalesce(point, -1e300) AS point, "
            "epoch_us(observed_at) AS observed_us, epoch_us(ingested_at) AS ingested_us, "
            "price, implied_prob FROM quote_features"
        )
        .to_arrow_table()
        .to_pandas(strings_to_categorical=True)
    )
    con.close()
    frame = pd.read_parquet(workdir / entities)
    rss_before = own_peak_rss_mb()
    start = time.perf_counter()
    left = pd.DataFrame(
        {
            "event_id": frame["event_id"],
            "bookmaker": frame["bookmaker"],
            "market": frame["market"],
            "outcome": frame["outcome"],
            "point": frame["point"].fillna(-1e300),
            "t": pd.to_datetime(frame["as_of"], utc=True)
            .to_numpy()
            .astype("datetime64[us]")
            .astype("int64"),
            "row": np.arange(len(frame)),
        }
    )
    for k in ("event_id", "bookmaker", "market", "outcome"):
        left[k] = pd.Categorical(left[k], categories=feats[k].cat.categories)
    left = left.sort_values("t", kind="stable")
    # ties on observed_at: the last row of a stable (observed, ingested, position) sort wins
    right = feats.sort_values(["observed_us", "ingested_us"], kind="stable")
    merged = pd.merge_asof(
        left,
        right,
        left_on="t",
        right_on="observed_us",
        by=["event_id", "bookmaker", "market", "outcome", "point"],
        direction="backward",
        allow_exact_matches=True,
    )
    merged = merged.sort_values("row")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": len(frame),
        "rss_before_mb": rss_before,
        **_checksum(merged["price"], merged["implied_prob"]),
    }


def run_sqlite(workdir: Path, entities: str) -> dict:
    import pandas as pd

    frame = pd.read_parquet(workdir / entities)
    t_us = (
        pd.to_datetime(frame["as_of"], utc=True).to_numpy().astype("datetime64[us]").astype("int64")
    )
    params = list(
        zip(
            frame["event_id"],
            frame["bookmaker"],
            frame["market"],
            frame["outcome"],
            [None if p != p else float(p) for p in frame["point"]],
            t_us.tolist(),
            strict=True,
        )
    )
    lite = sqlite3.connect(workdir / "features.sqlite")
    sql = (
        "SELECT price, implied_prob FROM quotes WHERE event_id = ? AND bookmaker = ? "
        "AND market = ? AND outcome = ? AND point IS ? AND observed_at <= ? "
        "ORDER BY observed_at DESC, ingested_at DESC, rowid DESC LIMIT 1"
    )
    rss_before = own_peak_rss_mb()
    start = time.perf_counter()
    price, implied = [], []
    for row in params:
        hit = lite.execute(sql, row).fetchone()
        price.append(None if hit is None else hit[0])
        implied.append(None if hit is None else hit[1])
    seconds = time.perf_counter() - start
    plan = lite.execute("EXPLAIN QUERY PLAN " + sql, params[0]).fetchall()
    lite.close()
    return {
        "seconds": seconds,
        "rows": len(frame),
        "rss_before_mb": rss_before,
        "plan": " | ".join(str(p[-1]) for p in plan),
        **_checksum(
            [float("nan") if p is None else p for p in price],
            [float("nan") if p is None else p for p in implied],
        ),
    }


def child(method: str, workdir: Path, options: dict | None = None) -> None:
    if method == "generate":
        figures = generate(workdir, **(options or {}))
    elif method == "sqlite_build":
        figures = {"sqlite_build_seconds": round(build_sqlite(workdir), 1)}
    elif method == "store_observed":
        figures = run_store(workdir, "entities.parquet", "observed")
    elif method == "store_ingested":
        figures = run_store(workdir, "entities.parquet", "ingested")
    elif method == "merge_asof":
        figures = run_merge_asof(workdir, "entities.parquet")
    elif method == "store_out_of_core":
        figures = run_store_out_of_core(workdir, "entities.parquet")
    elif method == "store_subset":
        figures = run_store(workdir, "subset.parquet", "observed")
    elif method == "sqlite_subset":
        figures = run_sqlite(workdir, "subset.parquet")
    else:
        raise SystemExit(f"unknown method {method}")
    figures["peak_rss_mb"] = own_peak_rss_mb()
    print(json.dumps(figures))


def run_child(method: str, workdir: Path, options: dict | None = None) -> dict:
    """One method in a fresh interpreter, so its peak RSS is its own."""
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE),
            "--child",
            method,
            "--workdir",
            str(workdir),
            "--options",
            json.dumps(options or {}),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feature-rows", type=int, default=10_000_000)
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--subset-rows", type=int, default=10_000)
    parser.add_argument("--rows-per-key", type=int, default=33)
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; best kept")
    parser.add_argument("--skip", nargs="*", default=[], help="methods to leave out")
    parser.add_argument("--child")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, json.loads(args.options))
        return

    methods = [
        "store_observed",
        "store_ingested",
        "store_out_of_core",
        "merge_asof",
        "store_subset",
        "sqlite_subset",
    ]
    methods = [m for m in methods if m not in args.skip]
    with tempfile.TemporaryDirectory(prefix="bench_pit_") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        # data are built in children too, so that this process stays small
        data = run_child(
            "generate",
            workdir,
            {
                "feature_rows": args.feature_rows,
                "entity_rows": args.entity_rows,
                "subset_rows": args.subset_rows,
                "rows_per_key": args.rows_per_key,
            },
        )
        data.pop("peak_rss_mb", None)
        data["generate_seconds"] = round(time.perf_counter() - start, 1)
        if "sqlite_subset" in methods:
            built = run_child("sqlite_build", workdir)
            data["sqlite_build_seconds"] = built["sqlite_build_seconds"]
        results: dict[str, dict] = {}
        for method in methods:
            runs = [run_child(method, workdir) for _ in range(max(1, args.repeat))]
            best = min(runs, key=lambda r: r["seconds"])
            best["all_seconds"] = [round(r["seconds"], 3) for r in runs]
            results[method] = best

    def per_row_us(method: str) -> float | None:
        r = results.get(method)
        return None if r is None else r["seconds"] / max(r["rows"], 1) * 1e6

    for r in results.values():
        r["seconds"] = round(r["seconds"], 3)
        r["us_per_entity_row"] = round(r["seconds"] / max(r["rows"], 1) * 1e6, 3)
        r["peak_rss_mb"] = round(r["peak_rss_mb"], 1)
        r["rss_before_mb"] = round(r["rss_before_mb"], 1)
    ratios: dict[str, float] = {}
    if "store_observed" in results and "merge_asof" in results:
        ratios["merge_asof_over_store"] = round(
            results["merge_asof"]["seconds"] / results["store_observed"]["seconds"], 2
        )
    if "store_observed" in results and "store_ingested" in results:
        ratios["ingested_over_observed"] = round(
            results["store_ingested"]["seconds"] / results["store_observed"]["seconds"], 2
        )
    if "sqlite_subset" in results:
        for ours in ("store_subset", "store_observed"):
            if ours in results:
                ratios[f"sqlite_per_row_over_{ours}_per_row"] = round(
                    per_row_us("sqlite_subset") / per_row_us(ours), 1
                )
    agree = {}
    if "store_observed" in results and "merge_asof" in results:
        keys = ("found", "price_sum", "implied_sum")
        agree["store_vs_merge_asof"] = all(
            abs(results["store_observed"][k] - results["merge_asof"][k])
            <= 1e-6 * max(1, abs(results["merge_asof"][k]))
            for k in keys
        )
    if "store_observed" in results and "store_out_of_core" in results:
        keys = ("found", "price_sum", "implied_sum")
        agree["store_vs_out_of_core"] = all(
            abs(results["store_observed"][k] - results["store_out_of_core"][k])
            <= 1e-6 * max(1, abs(results["store_observed"][k]))
            for k in keys
        )
    if "store_subset" in results and "sqlite_subset" in results:
        keys = ("found", "price_sum", "implied_sum")
        agree["store_vs_sqlite"] = all(
            abs(results["store_subset"][k] - results["sqlite_subset"][k])
            <= 1e-6 * max(1, abs(results["sqlite_subset"][k]))
            for k in keys
        )
    goals = {}
    if "store_observed" in results:
        goals["store_le_5s"] = results["store_observed"]["seconds"] <= 5.0
        goals["store_peak_rss_le_3gb"] = results["store_observed"]["peak_rss_mb"] <= 3072
    if "merge_asof_over_store" in ratios:
        goals["ge_3x_merge_asof"] = ratios["merge_asof_over_store"] >= 3
    if "sqlite_per_row_over_store_subset_per_row" in ratios:
        goals["ge_1000x_sqlite_per_row_same_10k"] = (
            ratios["sqlite_per_row_over_store_subset_per_row"] >= 1000
        )
    emit(
        {
            "benchmark": "pit_join",
            "command": " ".join(["benchmarks/bench_pit_join.py", *sys.argv[1:]]),
            "data": data,
            "entity_rows": args.entity_rows,
            "subset_rows": args.subset_rows,
            "results": results,
            "ratios": ratios,
            "answers_agree": agree,
            "goals_met": goals,
        }
    )


if __name__ == "__main__":
    main()
