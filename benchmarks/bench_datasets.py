"""Sequence dataset builds: wall time, sizes and label rates on the default data.

Run: .venv/bin/python benchmarks/bench_datasets.py [--events 200] [--skip-epl] [--epl-all]

Section "simulator": the default simulated market (SimulatorConfig(n_events=...)) loaded
into a temporary DuckDB, features computed, then build_lstm_sequences (with the oracle
truth) and build_arbitrage_pair_sequences with default configs; per dataset the build
time, rows, array bytes, real-step fraction, label positives, save time and size on disk;
for the LSTM also the Brier score of the market baseline and of the oracle.

Section "epl_samples": the two EPL seasons in data/samples/football_data (pre-match and
closing prices only: short, mostly masked sequences). "--epl-all" adds every EPL season
of ../shared/data/football-data/E0 when present.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, SHARED_DATA, emit, peak_rss_mb

from odds_pipeline.datasets import sequences as D
from odds_pipeline.features import compute as F
from odds_pipeline.ingestion.sources import football_data, load_id_for
from odds_pipeline.ingestion.sources.simulator import SimulatorConfig, generate
from odds_pipeline.ingestion.store import OddsStore


def _features(store: OddsStore) -> dict[str, float]:
    out = {}
    with store.connection() as con:
        for name, fn in (
            ("quote_features_s", F.compute_quote_features),
            ("market_features_s", F.compute_market_features),
            ("pair_features_s", F.compute_pair_features),
        ):
            start = time.perf_counter()
            fn(con)
            out[name] = round(time.perf_counter() - start, 2)
    return out


def _figures(ds: D.SequenceDataset, seconds: float, out_dir: Path) -> dict[str, object]:
    start = time.perf_counter()
    path = ds.save(out_dir)
    save_s = time.perf_counter() - start
    disk = sum(f.stat().st_size for f in path.iterdir())
    manifest = ds.manifest()
    fig: dict[str, object] = {
        "build_s": round(seconds, 2),
        "rows": len(ds),
        "events": manifest["events"],
        "shapes": {k: "x".join(map(str, v)) for k, v in manifest["shapes"].items()},
        "array_mb": round(sum(a.nbytes for a in ds.arrays().values()) / 1e6, 1),
        "real_step_fraction": round(manifest["seq_len"]["real_step_fraction"], 3),
        "seq_len_mean": round(manifest["seq_len"]["mean"], 2),
        "positives": manifest["positives"],
        "label_rates": {
            k: round(v, 4) for k, v in manifest["label_rates"].items() if v is not None
        },
        "save_s": round(save_s, 2),
        "disk_mb": round(disk / 1e6, 1),
        "build_stats": {k: v for k, v in ds.stats.items() if k != "book_pairs"},
    }
    if ds.x is not None and len(ds):
        y = ds.y.astype(np.float64)
        fig["brier_market"] = round(float(np.mean((ds.meta["market_prob"] - y) ** 2)), 5)
        if "true_prob" in ds.meta:
            fig["brier_oracle"] = round(float(np.mean((ds.meta["true_prob"] - y) ** 2)), 5)
    return fig


def _build_all(store: OddsStore, out_dir: Path, truth=None) -> dict[str, object]:
    figures: dict[str, object] = {}
    with store.connection(read_only=True) as con:
        start = time.perf_counter()
        lstm = D.build_lstm_sequences(con, truth=truth)
        figures["lstm_sequences"] = _figures(lstm, time.perf_counter() - start, out_dir)
        start = time.perf_counter()
        pairs = D.build_arbitrage_pair_sequences(con)
        figures["arbitrage_pair_sequences"] = _figures(pairs, time.perf_counter() - start, out_dir)
    return figures


def simulator(events: int, root: Path) -> dict[str, object]:
    start = time.perf_counter()
    result = generate(SimulatorConfig(n_events=events))
    store = OddsStore(root / "sim.duckdb")
    store.replace_load(result.notes["load_id"], "simulator", result)
    out: dict[str, object] = {
        "events": events,
        "quotes": len(result.quotes),
        "load_s": round(time.perf_counter() - start, 2),
    }
    out.update(_features(store))
    out.update(_build_all(store, root / "datasets", truth=result.notes["truth"]))
    return out


def epl(paths: list[Path], root: Path, name: str) -> dict[str, object]:
    store = OddsStore(root / f"{name}.duckdb")
    start = time.perf_counter()
    for path in paths:
        store.replace_load(
            load_id_for("football_data", path), "football_data", football_data.parse_file(path)
        )
    out: dict[str, object] = {"files": len(paths), "load_s": round(time.perf_counter() - start, 2)}
    out.update(_features(store))
    out.update(_build_all(store, root / "datasets"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--skip-epl", action="store_true")
    parser.add_argument("--epl-all", action="store_true")
    args = parser.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figures["simulator"] = simulator(args.events, root)
        if not args.skip_epl:
            samples = sorted((REPO_ROOT / "data" / "samples" / "football_data").glob("E0_*.csv"))
            figures["epl_samples"] = epl(samples, root, "epl_samples")
        shared = SHARED_DATA / "football-data" / "E0"
        if args.epl_all and shared.is_dir():
            figures["epl_all"] = epl(sorted(shared.glob("E0_*.csv")), root, "epl_all")
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(figures)


if __name__ == "__main__":
    main()
