"""Lean training (issue #10, part 3): the pair dataset built chunk by chunk and streamed to
memory-mapped ``.npy`` files holds the same values as the one-piece in-memory build; saved
datasets load memory-mapped with the same content hash, older ``arrays.npz`` folders still
load, scaling and training read mapped arrays block by block with the same results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from odds_pipeline.datasets import scaling as S
from odds_pipeline.datasets import sequences as D
from odds_pipeline.features.compute import compute_pair_features, compute_quote_features
from odds_pipeline.ingestion.sources.simulator import SimulatorConfig, generate
from odds_pipeline.ingestion.store import OddsStore, connect
from odds_pipeline.training.kinds import KINDS
from odds_pipeline.training.loop import TrainConfig, _batches, fit, predict_proba, to_tensors

SIM = SimulatorConfig(n_events=10, seed=5, arbitrage_rate=2.0, kickoffs_per_day=6.0)
PAIRS = D.PairSequenceConfig(
    cut_stride=16, min_len=4, max_len=16, max_book_pairs=3, horizon_minutes=120
)
WHOLE = 10**9  # one chunk: the build as it was before chunking


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lean") / "sim.duckdb"
    store = OddsStore(path)
    result = generate(SIM)
    store.replace_load(SIM.load_id, "simulator", result)
    with store.connection() as con:
        compute_quote_features(con)
        compute_pair_features(con)
    return path


@pytest.fixture(scope="module")
def in_memory(store_path: Path) -> D.SequenceDataset:
    con = connect(store_path, read_only=True)
    try:
        return D.build_arbitrage_pair_sequences(con, PAIRS, chunk_samples=WHOLE)
    finally:
        con.close()


@pytest.fixture(scope="module")
def mapped(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> D.SequenceDataset:
    out = tmp_path_factory.mktemp("mapped")
    con = connect(store_path, read_only=True)
    try:
        return D.build_arbitrage_pair_sequences(con, PAIRS, chunk_samples=400, out_dir=out)
    finally:
        con.close()


def _assert_same(a: D.SequenceDataset, b: D.SequenceDataset) -> None:
    assert a.arrays().keys() == b.arrays().keys()
    for key, arr in a.arrays().items():
        other = b.arrays()[key]
        assert arr.dtype == other.dtype and arr.shape == other.shape, key
        np.testing.assert_array_equal(np.asarray(arr), np.asarray(other), err_msg=key)
    pd.testing.assert_frame_equal(a.meta, b.meta)
    assert a.content_hash() == b.content_hash()


def test_chunked_and_streamed_builds_equal_the_in_memory_build(store_path, in_memory, mapped):
    assert len(in_memory) > 900  # several chunks of 400 and 300 below
    assert in_memory.y["arb_ahead"].sum() > 0 and in_memory.y["arb_now"].sum() > 0
    con = connect(store_path, read_only=True)
    try:
        chunked = D.build_arbitrage_pair_sequences(con, PAIRS, chunk_samples=300)
    finally:
        con.close()
    _assert_same(chunked, in_memory)
    _assert_same(mapped, in_memory)
    for key in ("x_a", "x_b", "mask", "times"):
        arr = getattr(mapped, key)
        assert isinstance(arr, np.memmap) and arr.mode == "r", key
        assert not isinstance(getattr(in_memory, key), np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        mapped.x_a[0, 0, 0] = 1.0


def test_save_writes_npy_and_loads_memory_mapped_with_the_same_hash(in_memory, mapped, tmp_path):
    path = in_memory.save(tmp_path / "a")
    manifest_hash = in_memory.manifest()["content_hash"]
    assert path.name.endswith(manifest_hash[:12])
    files = sorted(p.name for p in (path / D.ARRAYS_DIR).glob("*.npy"))
    assert files == sorted(f"{k}.npy" for k in in_memory.arrays())
    assert not (path / "arrays.npz").exists()
    loaded = D.load_dataset(path, mmap=True)
    assert isinstance(loaded.x_a, np.memmap) and isinstance(loaded.mask, np.memmap)
    assert loaded.content_hash() == manifest_hash
    _assert_same(loaded, in_memory)
    eager = D.SequenceDataset.load(path)
    assert not isinstance(eager.x_a, np.memmap) and eager.content_hash() == manifest_hash
    # a memory-mapped dataset saves (block by block) to the same folder name and bytes
    again = mapped.save(tmp_path / "b")
    assert again.name == path.name
    for f in files:
        assert (again / D.ARRAYS_DIR / f).read_bytes() == (path / D.ARRAYS_DIR / f).read_bytes()
    # the hash is checked on mapped arrays too
    x = path / D.ARRAYS_DIR / "x_a.npy"
    raw = bytearray(x.read_bytes())
    raw[-1] ^= 0xFF
    x.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match"):
        D.load_dataset(path, mmap=True)


def test_old_npz_folders_still_load(in_memory, tmp_path):
    path = in_memory.save(tmp_path, compress=True)
    assert (path / "arrays.npz").exists() and not (path / D.ARRAYS_DIR).exists()
    for mmap in (False, True):  # an npz cannot be mapped: read into memory either way
        loaded = D.load_dataset(path, mmap=mmap)
        assert not isinstance(loaded.x_a, np.memmap)
        _assert_same(loaded, in_memory)


def test_row_blocks_hash_like_one_piece(in_memory, mapped, monkeypatch):
    monkeypatch.setattr(D, "_BLOCK_BYTES", 5000)  # a few rows a block
    assert len(list(D._row_blocks(mapped.x_a))) > 10
    assert mapped.content_hash() == in_memory.content_hash()


def test_subsets_and_splits_of_a_mapped_dataset(in_memory, mapped, monkeypatch):
    monkeypatch.setattr(D, "_BLOCK_BYTES", 5000)
    n = len(mapped)
    view = mapped.subset(np.arange(10, n - 10))
    assert isinstance(view.x_a, np.memmap)  # a contiguous range stays mapped
    np.testing.assert_array_equal(view.x_a, in_memory.x_a[10 : n - 10])
    rows = np.random.default_rng(0).choice(n, size=n // 2, replace=False)
    gathered = mapped.subset(rows)
    assert not isinstance(gathered.x_a, np.memmap)
    _assert_same(gathered, in_memory.subset(rows))
    empty = mapped.subset(np.zeros(0, dtype=np.int64))
    assert len(empty) == 0 and empty.x_a.shape == (0, *in_memory.x_a.shape[1:])
    mapped_splits = D.split_by_time(mapped)
    memory_splits = D.split_by_time(in_memory)
    for name in D.SPLITS:
        assert len(memory_splits[name]) > 0
        assert isinstance(mapped_splits[name].x_b, np.memmap)  # splits are commence ranges
        _assert_same(mapped_splits[name], memory_splits[name])


def test_chunked_and_mapped_scaling_equal_one_piece(in_memory, mapped, tmp_path):
    scaler = S.fit_scaler(in_memory)
    for key in ("x_a", "x_b"):
        expected = S.zscore(
            getattr(in_memory, key), scaler.mean[key], scaler.std[key], in_memory.mask
        )
        for ds, kwargs in (
            (in_memory, {"chunk_rows": 7}),
            (mapped, {"chunk_rows": 13, "out_dir": tmp_path / "scaled"}),
        ):
            scaled = S.apply_scaler(ds, scaler, **kwargs)
            np.testing.assert_array_equal(getattr(scaled, key), expected)
            assert isinstance(getattr(scaled, key), np.memmap) == ("out_dir" in kwargs)
    with pytest.raises(ValueError):
        S.apply_scaler(in_memory, scaler, chunk_rows=0)


def _train(arrays: dict, tmp: Path | None = None):
    kind = KINDS["pair"]
    params = {
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "cross_from_layer": 1,
        "dropout": 0.1,
        "mlp_hidden": 16,
        "ff_mult": 2,
    }

    def factory():
        return kind.network(len(D.PAIR_CHANNELS), params)

    cfg = TrainConfig(
        epochs=2,
        batch_size=50,
        patience=5,
        seed=3,
        device="cpu",
        pos_weight="auto",
        torch_threads=1,
    )
    res = fit(
        factory, arrays["train"], arrays["validation"], input_keys=kind.input_keys, config=cfg
    )
    p = predict_proba(res.model, arrays["test"], input_keys=kind.input_keys)
    return res, p


def test_training_from_memory_mapped_arrays_equals_in_memory(in_memory, mapped, tmp_path):
    def arrays(ds: D.SequenceDataset, out: Path | None) -> dict:
        splits = {s: d.subset(np.arange(min(len(d), 200))) for s, d in D.split_by_time(ds).items()}
        scaler = S.fit_scaler(splits["train"])
        return {
            s: S.apply_scaler(d, scaler, out_dir=None if out is None else out / s).to_arrays()
            for s, d in splits.items()
        }

    eager = arrays(in_memory, None)
    lazy = arrays(mapped, tmp_path)
    assert isinstance(lazy["train"]["x_a"], np.memmap)
    assert not isinstance(eager["train"]["x_a"], np.memmap)
    held = to_tensors(lazy["train"], ["x_a", "mask", "y"])
    assert isinstance(held["x_a"], np.memmap)  # read batch by batch, never as a whole
    assert isinstance(held["y"], torch.Tensor)
    batch = next(_batches(held, 7, torch.device("cpu"), torch.Generator().manual_seed(1)))
    assert batch["x_a"].dtype == torch.float32 and batch["x_a"].shape[0] == 7
    res_a, p_a = _train(eager)
    res_b, p_b = _train(lazy)
    assert [h["val_loss"] for h in res_a.history] == [h["val_loss"] for h in res_b.history]
    assert [h["train_loss"] for h in res_a.history] == [h["train_loss"] for h in res_b.history]
    state_a, state_b = res_a.model.state_dict(), res_b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k
    np.testing.assert_array_equal(p_a, p_b)
    assert res_a.best_epoch == res_b.best_epoch


def test_a_failed_streamed_build_raises_its_own_error_and_leaves_no_partial_files(
    store_path, tmp_path, monkeypatch
):
    """Before: closing the writers in `finally` replaced the error with "k of N rows written"
    and left .npy files whose headers claimed the full shape."""
    real = D._pair_chunk
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("out of memory in chunk 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(D, "_pair_chunk", failing)
    out = tmp_path / "arrays"
    con = connect(store_path, read_only=True)
    try:
        with pytest.raises(MemoryError, match="chunk 2"):
            D.build_arbitrage_pair_sequences(con, PAIRS, chunk_samples=400, out_dir=out)
    finally:
        con.close()
    assert calls["n"] == 2
    assert sorted(p.name for p in out.rglob("*.npy")) == []
