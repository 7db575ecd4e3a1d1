"""Sequence datasets for the two learned models, built only through the point-in-time store.

Why this module exists: the seed notebooks built their tensors with pandas joins that could
read prices from the future and split at random across time. Here every feature value a
model sees comes from ``FeatureStore.get_historical_features`` (DESIGN §3: latest row with
``observed_at <= t - source_delay``, within the TTL, and ``ingested_at <= t`` in "as known"
mode), labels come from results or from data strictly after the sequence, splits follow
commence time, and a content hash names what was built. Pure numpy / DuckDB: torch tensors
are made later by the training code from these arrays (``SequenceDataset.to_arrays``).

**lstm_sequences** (`build_lstm_sequences`): one sample per (event, side) of h2h — sides
``home`` and ``away`` by default (``draw`` can be added for 3-way markets; a side nobody
quoted has no data and is dropped). ``steps`` times equally spaced over the lookback end at
the decision time ``commence - decision_offset``: step j asks at
``decision - (steps-1-j) * lookback/steps``, so the steps partition the lookback into
intervals of ``lookback/steps``. One ``get_historical_features`` call answers every step of
every sample, with entity rows (event_id, bookmaker, market='h2h', outcome=side, point NULL,
as_of). Channels are the 15 columns of ``features.LSTM_FEATURES`` (the 14 inputs, time of
day as sin and cos) under their LSTM names, then ``extra_features`` (default: consensus
probability, best price and ``sharp_source``, a source indicator: 1 when the sharp_*
channels come from sharp books, 0 when from the consensus fallback, e.g. EPL before
Pinnacle's columns). Time of day is NaN (no value) for events whose kickoff time is
imputed: a (source, league, season) of at least 20 events all at one local time (EPL files
before 2019/20 carry no time and get 15:00); meta ``kickoff_time_known`` says which. Market channels (n_books, odds_std, sharp_*, ...) come from
``market_features``; the per-quote channels (the side's "odds" and their changes) from
``quote_features`` of one *reference book* per event: the first of ``reference_books``
(sharp books first) that quoted the event's h2h in the lookback before the decision time,
else the book with most such quotes (ties alphabetical). So a channel keeps its
feature-store definition (a change since the book's opening is that book's), and the
market's best price is a channel of its own. Chosen with data <= decision time only.

A step is *real* (mask True) when the market row it reads was observed within the step's
own interval ``(t - lookback/steps, t]`` (the first step's interval is closed, so the
lookback ``[decision - lookback, decision]`` is covered exactly once; ``fresh_only=False``:
real when any value is within the TTL). Values of real steps are the latest known within ``ttl_hours`` (NaN when a channel has
none, e.g. the reference book did not quote yet); padded steps hold 0. Intraday feeds (the
simulator) fill most steps; football-data and SBR, observed only pre-match (kickoff - 72 h)
and at close (kickoff), give one or two real steps. SBR's closing line is observed at
tip-off: use ``decision_offset_hours=0`` there, otherwise its samples have no data.
Samples with no real step are dropped and counted, as are events without a result.
Label: that side won (home: home_score > away_score; draw: equal). Per sample meta holds
the market baseline = ``sharp_prob`` (de-vigged sharp book, else consensus: the feature's
own fallback) of the last real step, and with a simulator ``truth`` frame the oracle true
probability at the decision time.

**arbitrage_pair_sequences** (`build_arbitrage_pair_sequences`): one sample per (event,
market, line, unordered pair of books, direction, cut time). Direction: book_a (the
alphabetically first of the pair) on ``outcome_a``, book_b on the complementary outcome,
so both arbitrage directions of a pair are samples and no pair is counted twice. Steps are
the pair's own instants (rows of ``arbitrage_pair_features``), values fetched through the
store at each instant; the sequence is the last ``max_len`` instants within
``window_hours`` up to the cut, left-aligned, trailing padding. Cuts are the key's instants
number ``min_len, min_len + cut_stride, ...`` whose horizon ends before kickoff (pre-match
life, so the label is never censored). Streams x_a / x_b hold each book's price, implied
probability and changes, plus the pair's shared channels (Σ implied, ...). Labels:

* ``arb_now`` — Σ implied < 1 at some real step of the input (the seed's label); it equals
  the classical rule on the stored float32 channel exactly.
* ``arb_ahead`` (target) — an arbitrage window *opens* (Σ implied < 1 where the pair's
  previous instant had none) at an instant in ``(cut, cut + horizon]``. Only rows after
  the cut decide it; inputs never contain them.

"Arbitrage" everywhere is ``float32(Σ implied) < 1``: float32 rounding absorbs the 1e-16
noise of 1/p1 + 1/p2 on two-decimal prices. Classical baselines per sample in meta:
Σ implied at the last step, its minimum over the window, its slope (per hour) over the
last ``slope_steps`` steps.

Splits (`assign_splits`, `split_by_time`) are by event commence time (fractions of events
or explicit cut dates); an event never straddles splits. `scaling.fit_scaler` uses real steps of
the train split only; `apply_scaler` standardises, then NaN and padding become 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from odds_pipeline.features.compute import (
    LSTM_FEATURES,
    MARKET_TABLE,
    PAIR_TABLE,
    QUOTE_TABLE,
    SHARP_BOOKS,
    view_specs,
)
from odds_pipeline.features.feature_store import FeatureStore, Knowledge
from odds_pipeline.paths import state_home
from odds_pipeline.warehouse import connect, sql_string

__all__ = [
    "MARKET_TYPE_IDS",
    "PAIR_CHANNELS",
    "SPLITS",
    "LstmSequenceConfig",
    "PairSequenceConfig",
    "SequenceDataset",
    "assign_splits",
    "build_arbitrage_pair_sequences",
    "build_lstm_sequences",
    "config_from_mapping",
    "datasets_dir",
    "load_dataset",
    "split_by_time",
]

LSTM_NAME = "lstm_sequences"
PAIR_NAME = "arbitrage_pair_sequences"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
MARKET_TYPE_IDS: dict[str, int] = {"h2h": 0, "spreads": 1, "totals": 2}
_US_PER_HOUR = 3_600_000_000

# Per-book stream channels of a pair sample -> where the value comes from. "{s}" is a or b;
# "1/odds_{s}" is derived here from the store's odds_{s}; "gap" is the time since the
# pair's previous instant (log1p minutes), known at the step.
PAIR_CHANNELS: dict[str, str] = {
    "odds": f"{PAIR_TABLE}:odds_{{s}}",
    "implied": "1/odds_{s}",
    "delta": f"{PAIR_TABLE}:delta_{{s}}",
    "rel_delta": f"{PAIR_TABLE}:rel_delta_{{s}}",
    "implied_sum": f"{PAIR_TABLE}:implied_sum",
    "implied_diff": f"{PAIR_TABLE}:implied_diff",
    "odds_spread": f"{PAIR_TABLE}:odds_spread",
    "time_position": f"{PAIR_TABLE}:time_position",
    "hours_to_commence": f"{PAIR_TABLE}:pair_hours_to_commence",
    "stalest_age_h": f"{PAIR_TABLE}:pair_stalest_age_s / 3600",
    "log_gap_minutes": "log1p(minutes since the pair's previous instant)",
}
_PAIR_COLUMNS = (
    "odds_a",
    "odds_b",
    "delta_a",
    "delta_b",
    "rel_delta_a",
    "rel_delta_b",
    "implied_sum",
    "implied_diff",
    "odds_spread",
    "time_position",
    "pair_hours_to_commence",
    "pair_stalest_age_s",
)


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class LstmSequenceConfig:
    """How win-probability sequences are sampled (see the module docstring)."""

    lookback_hours: float = 72.0
    steps: int = 24
    decision_offset_hours: float = 1.0
    ttl_hours: float | None = 24.0  # values older than this are NULL (None: no limit)
    fresh_only: bool = True  # real step = market data observed within the step's interval
    knowledge: Knowledge = "observed"
    source_delay_seconds: float = 0.0
    sides: tuple[str, ...] = ("home", "away")
    reference_books: tuple[str, ...] = SHARP_BOOKS
    extra_features: tuple[str, ...] = (
        f"{MARKET_TABLE}:consensus_prob",
        f"{MARKET_TABLE}:best_price",
        f"{MARKET_TABLE}:sharp_source",  # 1 = sharp books, 0 = consensus fallback
    )
    leagues: tuple[str, ...] | None = None  # None: every league

    def __post_init__(self) -> None:
        problems = []
        if not self.lookback_hours > 0:
            problems.append("lookback_hours must be > 0")
        if self.steps < 1:
            problems.append("steps must be >= 1")
        if self.ttl_hours is not None and self.ttl_hours < 0:
            problems.append("ttl_hours must be >= 0 or None")
        if self.source_delay_seconds < 0:
            problems.append("source_delay_seconds must be >= 0")
        if self.knowledge not in ("observed", "ingested"):
            problems.append("knowledge must be 'observed' or 'ingested'")
        bad = [s for s in self.sides if s not in ("home", "away", "draw")]
        if bad or not self.sides:
            problems.append(f"sides must be some of home/away/draw, got {self.sides}")
        if problems:
            raise ValueError("invalid LstmSequenceConfig: " + "; ".join(problems))

    @property
    def step_us(self) -> int:
        return int(round(self.lookback_hours * _US_PER_HOUR / self.steps))

    def channels(self) -> dict[str, str]:
        """Channel name -> feature reference ("view:column"), in channel order."""
        out = dict(LSTM_FEATURES)
        for ref in self.extra_features:
            name = ref.partition(":")[2]
            if name not in out:
                out[name] = ref
        return out


@dataclass(frozen=True)
class PairSequenceConfig:
    """How arbitrage pair sequences are cut and labelled (see the module docstring)."""

    max_len: int = 64
    horizon_minutes: float = 30.0
    window_hours: float | None = 24.0  # steps older than this before the cut are dropped
    min_len: int = 8
    cut_stride: int = 32  # instants between consecutive cuts of one pair key
    markets: tuple[str, ...] = ("h2h", "spreads", "totals")
    book_pairs: tuple[tuple[str, str], ...] | None = None  # None: the most quoted pairs
    max_book_pairs: int = 10
    slope_steps: int = 8
    knowledge: Knowledge = "observed"

    def __post_init__(self) -> None:
        problems = []
        if self.max_len < 1 or self.min_len < 1 or self.min_len > self.max_len:
            problems.append("need 1 <= min_len <= max_len")
        if not self.horizon_minutes > 0:
            problems.append("horizon_minutes must be > 0")
        if self.window_hours is not None and not self.window_hours > 0:
            problems.append("window_hours must be > 0 or None")
        if self.cut_stride < 1 or self.max_book_pairs < 1 or self.slope_steps < 2:
            problems.append("cut_stride and max_book_pairs must be >= 1, slope_steps >= 2")
        bad = [m for m in self.markets if m not in MARKET_TYPE_IDS]
        if bad or not self.markets:
            problems.append(f"markets must be some of {list(MARKET_TYPE_IDS)}, got {bad}")
        if self.knowledge not in ("observed", "ingested"):
            problems.append("knowledge must be 'observed' or 'ingested'")
        if problems:
            raise ValueError("invalid PairSequenceConfig: " + "; ".join(problems))


def config_from_mapping(cls: type, values: Mapping[str, Any]) -> Any:
    """A config dataclass from run config / JSON (lists become tuples, unknown keys refused)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")

    def tup(v: Any) -> Any:
        return tuple(tup(i) for i in v) if isinstance(v, list | tuple) else v

    return cls(**{k: tup(v) for k, v in values.items()})


def _config_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(config)))


# --------------------------------------------------------------------------- dataset


@dataclass
class SequenceDataset:
    """Arrays of one dataset plus per-sample meta; ``x`` (LSTM) or ``x_a``/``x_b`` (pairs).

    x / x_a / x_b: float32 [N, T, F] raw values (NaN where a real step lacks a channel, 0 on
    padding); mask: bool [N, T] (True = real step); times: int64 [N, T] µs since the epoch
    of each step (0 on padding); y: float32 [N] (LSTM, label ``won``) or a dict of labels
    (pairs); market_type: int64 [N] (pairs). ``target`` names the default label.
    """

    name: str
    mask: np.ndarray
    y: np.ndarray | dict[str, np.ndarray]
    meta: pd.DataFrame
    feature_names: list[str]
    config: dict[str, Any]
    x: np.ndarray | None = None
    x_a: np.ndarray | None = None
    x_b: np.ndarray | None = None
    market_type: np.ndarray | None = None
    times: np.ndarray | None = None
    target: str = "won"
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def labels(self) -> dict[str, np.ndarray]:
        return dict(self.y) if isinstance(self.y, dict) else {self.target: self.y}

    @property
    def feature_arrays(self) -> dict[str, np.ndarray]:
        """The value arrays a scaler standardises: {"x": ...} or {"x_a": ..., "x_b": ...}."""
        return {
            k: v for k, v in (("x", self.x), ("x_a", self.x_a), ("x_b", self.x_b)) if v is not None
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by its file name (labels as ``y__<label>``)."""
        out = dict(self.feature_arrays)
        out["mask"] = self.mask
        for k, v in (("market_type", self.market_type), ("times", self.times)):
            if v is not None:
                out[k] = v
        for label, values in self.labels.items():
            out[f"y__{label}"] = values
        return out

    def to_arrays(self, label: str | None = None) -> dict[str, np.ndarray]:
        """The dict the training loop takes: model inputs, ``mask`` and ``y`` (the label)."""
        out = dict(self.feature_arrays)
        out["mask"] = self.mask
        if self.market_type is not None:
            out["market_type"] = self.market_type
        out["y"] = self.labels[label or self.target].astype(np.float32)
        return out

    def subset(self, index: np.ndarray | Sequence[int] | Sequence[bool]) -> SequenceDataset:
        """Rows ``index`` (positions or a boolean mask) as a new dataset."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else _take_rows(a, idx)

        y = {k: v[idx] for k, v in self.y.items()} if isinstance(self.y, dict) else self.y[idx]
        return SequenceDataset(
            name=self.name,
            mask=self.mask[idx],
            y=y,
            meta=self.meta.iloc[idx].reset_index(drop=True),
            feature_names=list(self.feature_names),
            config=dict(self.config),
            x=take(self.x),
            x_a=take(self.x_a),
            x_b=take(self.x_b),
            market_type=take(self.market_type),
            times=take(self.times),
            target=self.target,
            stats=dict(self.stats),
        )

    def splits(self) -> dict[str, SequenceDataset]:
        """Partition by the meta ``split`` column (set by `assign_splits`)."""
        if "split" not in self.meta:
            raise ValueError("no split column: call assign_splits() or split_by_time() first")
        col = self.meta["split"].to_numpy()
        return {s: self.subset(col == s) for s in SPLITS}

    # ------------------------------------------------------------------ identity
    def content_hash(self) -> str:
        """sha256 of name, feature names, every array (dtype, shape, bytes) and the meta."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.target, list(self.feature_names)]).encode())
        for key, arr in sorted(self.arrays().items()):
            h.update(f"|{key}|{arr.dtype.str}|{arr.shape}|".encode())
            for block in _row_blocks(arr):  # the same bytes as one tobytes(), in pieces
                h.update(block.tobytes())
        for col in self.meta.columns:
            h.update(f"|meta:{col}|".encode())
            h.update(_column_bytes(self.meta[col]))
        return h.hexdigest()

    def manifest(self) -> dict[str, Any]:
        """Rows, positives per label, time ranges (overall and per split), hash, features."""
        meta = self.meta
        labels = self.labels

        def summary(rows: np.ndarray) -> dict[str, Any]:
            sub = meta.iloc[rows] if len(rows) else meta.iloc[0:0]
            commence = pd.to_datetime(sub["commence_time"], utc=True) if len(sub) else None
            return {
                "rows": int(len(rows)),
                "events": int(sub["event_id"].nunique()) if len(sub) else 0,
                "positives": {k: int(np.nansum(v[rows])) for k, v in labels.items()},
                "commence_min": None if commence is None else commence.min().isoformat(),
                "commence_max": None if commence is None else commence.max().isoformat(),
            }

        every = np.arange(len(self))
        seq_len = self.mask.sum(axis=1)
        out: dict[str, Any] = {
            "name": self.name,
            "content_hash": self.content_hash(),
            "target": self.target,
            **summary(every),
            "label_rates": {
                k: (float(np.nanmean(v)) if len(v) else None) for k, v in labels.items()
            },
            "shapes": {k: list(v.shape) for k, v in self.arrays().items()},
            "feature_names": list(self.feature_names),
            "seq_len": {
                "mean": float(seq_len.mean()) if len(seq_len) else 0.0,
                "min": int(seq_len.min()) if len(seq_len) else 0,
                "max": int(seq_len.max()) if len(seq_len) else 0,
                "real_step_fraction": float(self.mask.mean()) if self.mask.size else 0.0,
            },
            "config": self.config,
            "build_stats": self.stats,
        }
        if "split" in meta:
            col = meta["split"].to_numpy()
            out["splits"] = {s: summary(np.flatnonzero(col == s)) for s in SPLITS}
        return out

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path | None = None, *, compress: bool = False) -> Path:
        """Write ``<dir>/<name>-<hash[:12]>/`` (arrays, meta.parquet, manifest.json).

        The folder is named by content, so saving the same data twice is a no-op and a
        changed dataset never overwrites an older one; written to a temp folder and renamed.
        ``directory`` defaults to `datasets_dir()`. Arrays go to ``arrays/<key>.npy``,
        uncompressed, written in row blocks, so `load` can memory-map them (``mmap=True``)
        and a memory-mapped dataset is saved without being read into memory at once.
        ``compress=True`` writes the older single ``arrays.npz`` instead: compressed (padding
        makes the pair arrays ~90% zeros: 248 MB -> 21 MB for the default simulator, +1.5 s)
        but read whole, never memory-mapped.
        """
        root = Path(directory) if directory is not None else datasets_dir()
        root.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        target = root / f"{self.name}-{manifest['content_hash'][:12]}"
        if (target / "manifest.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.name}-", dir=root))
        try:
            if compress:
                np.savez_compressed(tmp / "arrays.npz", **self.arrays())
            else:
                (tmp / ARRAYS_DIR).mkdir()
                for key, arr in self.arrays().items():
                    writer = _NpyWriter(tmp / ARRAYS_DIR / f"{key}.npy", arr.shape, arr.dtype)
                    try:
                        for block in _row_blocks(arr):
                            writer.write(block)
                    finally:
                        writer.close()
            self.meta.to_parquet(tmp / "meta.parquet", index=False)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            try:
                os.replace(tmp, target)
            except OSError:  # a concurrent save of the same content won the race
                if not (target / "manifest.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True, mmap: bool = False) -> SequenceDataset:
        """Read a folder written by `save`; ``verify`` recomputes the content hash.

        ``mmap=True`` memory-maps the ``.npy`` arrays read-only instead of reading them
        (folders of the older ``arrays.npz`` format are read into memory either way).
        """
        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        if (path / ARRAYS_DIR).is_dir():
            arrays = {f.stem: _load_npy(f, mmap) for f in sorted((path / ARRAYS_DIR).glob("*.npy"))}
        else:
            with np.load(path / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        meta = pd.read_parquet(path / "meta.parquet")
        labels = {k[3:]: v for k, v in arrays.items() if k.startswith("y__")}
        target = manifest["target"]
        y: np.ndarray | dict[str, np.ndarray] = (
            labels if "x" not in arrays else labels.get(target, next(iter(labels.values())))
        )
        ds = cls(
            name=manifest["name"],
            mask=arrays["mask"],
            y=y,
            meta=meta,
            feature_names=list(manifest["feature_names"]),
            config=manifest["config"],
            x=arrays.get("x"),
            x_a=arrays.get("x_a"),
            x_b=arrays.get("x_b"),
            market_type=arrays.get("market_type"),
            times=arrays.get("times"),
            target=target,
            stats=manifest.get("build_stats", {}),
        )
        if verify and ds.content_hash() != manifest["content_hash"]:
            raise ValueError(f"{path}: content does not match its manifest's hash")
        return ds


def load_dataset(path: str | Path, *, verify: bool = True, mmap: bool = False) -> SequenceDataset:
    return SequenceDataset.load(path, verify=verify, mmap=mmap)


def datasets_dir() -> Path:
    """Where datasets are saved by default: ``<state home>/datasets``."""
    path = state_home() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _column_bytes(col: pd.Series) -> bytes:
    """Canonical bytes of a meta column, stable across a parquet round trip."""
    if pd.api.types.is_datetime64_any_dtype(col):
        ts = pd.to_datetime(col, utc=True)
        return np.asarray(_to_us(ts), dtype=np.int64).tobytes()
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return pd.to_numeric(col).astype("Float64").to_numpy(np.float64, na_value=np.nan).tobytes()
    return "\x1f".join("\x00" if pd.isna(v) else str(v) for v in col.tolist()).encode()


# --------------------------------------------------------------------------- array files

ARRAYS_DIR = "arrays"  # a saved dataset's folder of <key>.npy files
_BLOCK_BYTES = 64 * 1024 * 1024  # rows read or written at a time from a memory-mapped array


class _NpyWriter:
    """A ``.npy`` file of a known shape written by appending row blocks (C order)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.rows = 0
        self.file: Any = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"{self.path.name}: block {block.shape} does not fit {self.shape}")
        self.file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        if self.file is None:
            return
        self.file.close()
        self.file = None
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows} of {self.shape[0]} rows written")

    def discard(self) -> None:
        """After a failed build: close without the row check and delete the partial file
        (its header claims the full shape)."""
        if self.file is not None:
            self.file.close()
            self.file = None
        self.path.unlink(missing_ok=True)


def _load_npy(path: Path, mmap_mode: bool) -> np.ndarray:
    """A ``.npy`` file read-only memory-mapped (``mmap_mode``; empty arrays are read)."""
    if mmap_mode:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return arr if arr.size else np.array(arr)
    return np.load(path, allow_pickle=False)


def _release(arr: np.ndarray) -> None:
    """Drop the pages of a read-only memory map from this process (they stay in the page
    cache): reading a mapped file block by block then never holds more than a block."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "mode", None) != "r":
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no madvise: a no-op
        mm.madvise(mmap.MADV_DONTNEED)


def _block_rows(arr: np.ndarray) -> int:
    row = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize if arr.ndim else 1
    return max(1, _BLOCK_BYTES // max(row, 1))


def _row_blocks(arr: np.ndarray) -> Iterator[np.ndarray]:
    """``arr`` as C-contiguous row blocks (one block when in memory), releasing mapped pages."""
    if not isinstance(arr, np.memmap) or arr.ndim == 0:
        yield np.ascontiguousarray(arr)
        return
    step = _block_rows(arr)
    for lo in range(0, max(len(arr), 1), step):
        yield np.ascontiguousarray(arr[lo : lo + step])
        _release(arr)


def _take_rows(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``arr[idx]``; for a memory map a contiguous ascending range stays mapped (a view) and
    other rows are gathered block by block into memory, releasing the mapped pages."""
    if not isinstance(arr, np.memmap):
        return arr[idx]
    if len(idx) == 0:
        return np.array(arr[0:0])
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    if hi - lo == len(idx) and (len(idx) == 1 or bool(np.all(np.diff(idx) == 1))):
        return arr[lo:hi]
    out = np.empty((len(idx), *arr.shape[1:]), dtype=arr.dtype)
    step = _block_rows(arr)
    for start in range(0, len(idx), step):
        out[start : start + step] = arr[idx[start : start + step]]
        _release(arr)
    return out


# --------------------------------------------------------------------------- helpers


def _to_us(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC timestamps -> int64 µs since the epoch (NaT -> INT64 min)."""
    ts = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).tz_convert("UTC").tz_localize(None)
    out = ts.to_numpy("datetime64[us]").astype(np.int64)
    return out


_NAT_US = np.iinfo(np.int64).min
_FLOOR_US = -2_208_988_800_000_000  # 1900-01-01: "no lower bound" for a timestamp filter


def _from_us(values: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(
        np.asarray(values, dtype=np.int64).astype("datetime64[us]")
    ).tz_localize("UTC")


def _float(col: pd.Series) -> np.ndarray:
    """A retrieved numeric column as float64 with NaN for NULL (whatever DuckDB returned)."""
    if col.dtype.kind in "fiub":
        return col.to_numpy(np.float64)
    return (
        pd.to_numeric(col, errors="coerce").astype("Float64").to_numpy(np.float64, na_value=np.nan)
    )


@contextmanager
def _connection(con: duckdb.DuckDBPyConnection | str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """An open connection is used as is; a path is opened read-only for the build."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        yield con
        return
    opened = connect(con, read_only=True)
    try:
        yield opened
    finally:
        opened.close()


def _feature_store(con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> FeatureStore:
    store = FeatureStore(con)
    specs = view_specs()
    for table in tables:
        spec = dict(specs[table])
        store.register_view(table, **spec)  # type: ignore[arg-type]
    return store


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> Iterator[None]:
    con.register(name, frame)
    try:
        yield
    finally:
        con.unregister(name)


def _ttl(hours: float | None):
    return None if hours is None else pd.Timedelta(hours=hours).to_pytimedelta()


# --------------------------------------------------------------------------- LSTM


_LSTM_EVENTS_SQL = """
SELECT e.event_id, e.commence_time, e.sport, e.league, e.season, e.source,
       r.home_score, r.away_score, coalesce(k.kickoff_time_known, TRUE) AS kickoff_time_known
FROM events e LEFT JOIN results r ON r.event_id = e.event_id
LEFT JOIN (
    -- a kickoff time is imputed when a whole (source, league, season) of at least
    -- {min_events} events kicks off at one local time: at most 2 UTC times of day (DST)
    SELECT source, league, season,
           NOT (count(*) >= {min_events}
                AND count(DISTINCT epoch(commence_time)::BIGINT % 86400) <= 2)
               AS kickoff_time_known
    FROM events WHERE commence_time IS NOT NULL
    GROUP BY source, league, season
) k ON k.source IS NOT DISTINCT FROM e.source AND k.league IS NOT DISTINCT FROM e.league
   AND k.season IS NOT DISTINCT FROM e.season
WHERE e.commence_time IS NOT NULL
  AND e.event_id IN (SELECT event_id FROM market_features WHERE market = 'h2h')
  {leagues}
  {window}
ORDER BY e.commence_time, e.event_id
"""

# The reference book of each event: preferred (sharp) books first, then most quotes; only
# quotes that the store could return inside the lookback at the decision time count.
_REFERENCE_BOOK_SQL = """
SELECT event_id,
    arg_min(bookmaker, (coalesce(list_position($books::VARCHAR[], bookmaker), 1000000),
                        -n, bookmaker)) AS bookmaker
FROM (
    SELECT q.event_id, q.bookmaker, count(*) AS n
    FROM quote_features q JOIN _ds_decisions d ON d.event_id = q.event_id
    WHERE q.market = 'h2h' AND q.observed_at <= d.cutoff AND q.observed_at > d.earliest
      {known}
    GROUP BY q.event_id, q.bookmaker
)
GROUP BY event_id
"""


# A group of at least this many events all at one local kickoff time has imputed times.
_IMPUTED_KICKOFF_MIN_EVENTS = 20
# Channels computed from the kickoff time's clock (time of day of a quote observed at a
# fixed offset from kickoff): NaN when the kickoff time is imputed.
_KICKOFF_TIME_CHANNELS = frozenset({f"{QUOTE_TABLE}:tod_sin", f"{QUOTE_TABLE}:tod_cos"})
# Text features turned into indicator channels: 1.0 for this value, 0.0 for any other,
# NaN for NULL. sharp_source: 1 = sharp_prob/sharp_odds come from sharp books, 0 = from
# the consensus fallback (EPL before Pinnacle's columns): the same channels mean another thing.
_INDICATOR_CHANNELS = {f"{MARKET_TABLE}:sharp_source": "sharp"}


def _channel_values(column: pd.Series, ref: str) -> np.ndarray:
    """A retrieved feature as float64 channel values (indicator features as 1/0/NaN)."""
    if ref not in _INDICATOR_CHANNELS:
        return _float(column)
    values = column.to_numpy(dtype=object)
    return np.where(pd.isna(values), np.nan, (values == _INDICATOR_CHANNELS[ref]).astype(float))


def _empty_lstm(
    config: LstmSequenceConfig, names: list[str], stats: dict[str, Any]
) -> SequenceDataset:
    t, f = config.steps, len(names)
    meta = pd.DataFrame(
        {
            "event_id": pd.Series(dtype=object),
            "side": pd.Series(dtype=object),
            "commence_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "decision_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "seq_len": pd.Series(dtype=np.int64),
        }
    )
    return SequenceDataset(
        name=LSTM_NAME,
        mask=np.zeros((0, t), dtype=bool),
        y=np.zeros(0, dtype=np.float32),
        meta=meta,
        feature_names=names,
        config=_config_dict(config),
        x=np.zeros((0, t, f), dtype=np.float32),
        times=np.zeros((0, t), dtype=np.int64),
        target="won",
        stats=stats,
    )


def build_lstm_sequences(
    con: duckdb.DuckDBPyConnection | str | Path,
    config: LstmSequenceConfig | None = None,
    *,
    truth: pd.DataFrame | None = None,
    include_unresolved: bool = False,
    commence_from: Any = None,
    commence_to: Any = None,
) -> SequenceDataset:
    """Win-probability sequences, one per (event, side) of h2h (see the module docstring).

    ``truth`` (the simulator's ``notes["truth"]``: event_id, observed_at,
    true_{home,draw,away}_prob) adds the oracle probability at the decision time.
    Scoring uses ``include_unresolved`` (events without a result; their label is NaN) and
    a commence window ``[commence_from, commence_to)``.
    Needs the tables ``events``, ``results``, ``quote_features`` and ``market_features``.
    """
    config = config or LstmSequenceConfig()
    channels = config.channels()
    names = list(channels)
    refs = list(dict.fromkeys([*channels.values(), f"{MARKET_TABLE}:sharp_source"]))
    step_us, T = config.step_us, config.steps
    delay_us = int(round(config.source_delay_seconds * 1_000_000))
    with _connection(con) as c:
        store = _feature_store(c, (QUOTE_TABLE, MARKET_TABLE))
        leagues = ""
        params: list[Any] = []
        if config.leagues is not None:
            leagues = "AND list_contains(?::VARCHAR[], e.league)"
            params.append(list(config.leagues))
        window = ""
        if commence_from is not None:
            window += "AND e.commence_time >= ?::TIMESTAMPTZ "
            params.append(pd.Timestamp(commence_from).isoformat())
        if commence_to is not None:
            window += "AND e.commence_time < ?::TIMESTAMPTZ "
            params.append(pd.Timestamp(commence_to).isoformat())
        events = c.execute(
            _LSTM_EVENTS_SQL.format(
                leagues=leagues, window=window, min_events=_IMPUTED_KICKOFF_MIN_EVENTS
            ),
            params,
        ).df()
        resolved = events["home_score"].notna() & events["away_score"].notna()
        scored = resolved | include_unresolved
        stats: dict[str, Any] = {
            "events_with_h2h": int(len(events)),
            "events_without_result": int((~resolved).sum()),
        }
        events = events.loc[scored].reset_index(drop=True)
        if events.empty:
            stats.update(samples=0, samples_without_data=0)
            return _empty_lstm(config, names, stats)

        commence_us = _to_us(events["commence_time"])
        decision_us = commence_us - int(round(config.decision_offset_hours * _US_PER_HOUR))
        if config.ttl_hours is not None:  # older quotes cannot reach any step
            ttl_us = int(round(config.ttl_hours * _US_PER_HOUR))
            earliest_us = decision_us - delay_us - T * step_us - ttl_us
        else:
            earliest_us = np.full_like(decision_us, _FLOOR_US)
        decisions = pd.DataFrame(
            {
                "event_id": events["event_id"].to_numpy(),
                "decision_time": _from_us(decision_us),
                "cutoff": _from_us(decision_us - delay_us),
                "earliest": _from_us(np.maximum(earliest_us, _FLOOR_US)),
            }
        )
        known = "AND q.ingested_at <= d.decision_time" if config.knowledge == "ingested" else ""
        with _registered(c, "_ds_decisions", decisions):
            reference = c.execute(
                _REFERENCE_BOOK_SQL.format(known=known), {"books": list(config.reference_books)}
            ).df()
        book = (
            events[["event_id"]]
            .merge(reference, on="event_id", how="left")["bookmaker"]
            .to_numpy(dtype=object)
        )

        # one entity row per (sample, step), sample-major
        n_sides = len(config.sides)
        ev = np.repeat(np.arange(len(events)), n_sides)
        side = np.tile(np.array(config.sides, dtype=object), len(events))
        S = len(ev)
        offsets = (T - 1 - np.arange(T, dtype=np.int64)) * step_us
        as_of_us = decision_us[ev][:, None] - offsets[None, :]  # [S, T]
        entity = pd.DataFrame(
            {
                "event_id": np.repeat(events["event_id"].to_numpy(dtype=object)[ev], T),
                "bookmaker": np.repeat(book[ev], T),
                "market": "h2h",
                "outcome": np.repeat(side, T),
                "point": np.full(S * T, np.nan),
                "as_of": _from_us(as_of_us.ravel()),
            }
        )
        res = store.get_historical_features(
            entity,
            refs,
            ttl=_ttl(config.ttl_hours),
            source_delay=pd.Timedelta(microseconds=delay_us).to_pytimedelta(),
            knowledge=config.knowledge,
            full_feature_names=True,
            include_timestamps=True,
        )

    def col(ref: str) -> str:
        view, _, column = ref.partition(":")
        return f"{view}__{column}"

    market_obs = res[f"{MARKET_TABLE}__observed_at"]
    present = market_obs.notna().to_numpy().reshape(S, T)
    obs_us = np.where(
        present.ravel(), _to_us(market_obs.fillna(pd.Timestamp(0, tz="UTC"))), _NAT_US
    )
    obs_us = obs_us.reshape(S, T)
    if config.fresh_only:  # step j reads (t_j - step, t_j]; the first step's interval is closed
        since = as_of_us - delay_us - step_us
        mask = present & ((obs_us > since) | ((obs_us == since) & (np.arange(T) == 0)))
    else:
        mask = present
    x = np.stack(
        [_channel_values(res[col(ref)], ref).reshape(S, T) for ref in channels.values()], axis=-1
    )
    # An imputed kickoff time makes every time-of-day value imputed: no value, not a fake one.
    kickoff_known = events["kickoff_time_known"].to_numpy(dtype=bool)[ev]
    tod = [i for i, ref in enumerate(channels.values()) if ref in _KICKOFF_TIME_CHANNELS]
    if tod:
        x[np.ix_(np.flatnonzero(~kickoff_known), np.arange(T), tod)] = np.nan
    x[~mask] = 0.0
    seq_len = mask.sum(axis=1)
    has_data = seq_len > 0
    stats["samples_without_data"] = int((~has_data).sum())

    # market baseline: sharp_prob (sharp, else consensus) at the last real step
    last = T - 1 - np.argmax(mask[:, ::-1], axis=1)
    rows = np.arange(S)
    sharp_prob = _float(res[col(f"{MARKET_TABLE}:sharp_prob")]).reshape(S, T)[rows, last]
    sharp_source = res[col(f"{MARKET_TABLE}:sharp_source")].to_numpy(dtype=object).reshape(S, T)
    baseline_obs = obs_us[rows, last]

    hs = events["home_score"].to_numpy(np.float64)[ev]
    as_ = events["away_score"].to_numpy(np.float64)[ev]
    won = np.where(side == "home", hs > as_, np.where(side == "away", as_ > hs, hs == as_))
    won = np.where(np.isfinite(hs) & np.isfinite(as_), won, np.nan)

    meta = pd.DataFrame(
        {
            "event_id": events["event_id"].to_numpy(dtype=object)[ev],
            "side": side,
            "market": "h2h",
            "reference_book": book[ev],
            "sport": events["sport"].to_numpy(dtype=object)[ev],
            "league": events["league"].to_numpy(dtype=object)[ev],
            "season": events["season"].to_numpy(dtype=object)[ev],
            "commence_time": _from_us(commence_us[ev]),
            "decision_time": _from_us(decision_us[ev]),
            "seq_len": seq_len.astype(np.int64),
            "kickoff_time_known": kickoff_known,
            "market_prob": np.where(has_data, sharp_prob, np.nan),
            "market_prob_source": np.where(has_data, sharp_source[rows, last], None),
            "market_prob_age_hours": np.where(
                has_data, (decision_us[ev] - baseline_obs) / _US_PER_HOUR, np.nan
            ),
        }
    )
    if truth is not None:
        meta["true_prob"] = oracle_probability(meta, truth)
    keep = np.flatnonzero(has_data)
    times = np.where(mask, as_of_us, 0)
    stats["samples"] = int(len(keep))
    stats["samples_kickoff_time_imputed"] = int((~kickoff_known[keep]).sum())
    stats["reference_books"] = {
        str(k): int(v) for k, v in pd.Series(book[ev][keep]).value_counts(dropna=False).items()
    }
    return SequenceDataset(
        name=LSTM_NAME,
        mask=mask[keep],
        y=won[keep].astype(np.float32),
        meta=meta.iloc[keep].reset_index(drop=True),
        feature_names=names,
        config=_config_dict(config),
        x=x[keep].astype(np.float32),
        times=times[keep].astype(np.int64),
        target="won",
        stats=stats,
    )


def oracle_probability(meta: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """True probability of each sample's side at its decision time (last truth row <= t)."""
    cols = {"home": "true_home_prob", "away": "true_away_prob", "draw": "true_draw_prob"}
    t = truth[["event_id", "observed_at", *[c for c in cols.values() if c in truth]]].copy()
    t["observed_at"] = pd.to_datetime(t["observed_at"], utc=True).astype("datetime64[ns, UTC]")
    t = t.sort_values("observed_at", kind="stable")
    left = pd.DataFrame(
        {
            "event_id": meta["event_id"].to_numpy(dtype=object),
            "decision_time": meta["decision_time"].astype("datetime64[ns, UTC]"),
            "__row": np.arange(len(meta)),
        }
    ).sort_values("decision_time", kind="stable")
    merged = pd.merge_asof(
        left,
        t,
        left_on="decision_time",
        right_on="observed_at",
        by="event_id",
        direction="backward",
        allow_exact_matches=True,
    ).sort_values("__row")
    side = meta["side"].to_numpy(dtype=object)
    out = np.full(len(meta), np.nan)
    for s, c in cols.items():  # a handful of sides, not rows
        if c in merged:
            pick = side == s
            out[pick] = merged[c].to_numpy(np.float64)[pick]
    return out


# --------------------------------------------------------------------------- pairs


def _pair_avail(config: PairSequenceConfig) -> str:
    """When a pair row counts as known: observed (bulk history) or also ingested."""
    if config.knowledge == "ingested":
        return "greatest(p.observed_at, p.ingested_at)"
    return "p.observed_at"


_PAIR_STEPS_SQL = """
CREATE OR REPLACE TEMP TABLE _ds_steps AS
WITH rows AS (
    SELECT p.event_id, p.market, p.line, p.book_a, p.book_b, p.outcome_a,
        any_value(p.outcome_b) AS outcome_b, {avail} AS t,
        arg_max(p.implied_sum, (p.observed_at, p.ingested_at)) AS implied_sum
    FROM {pair_table} p
    JOIN _ds_pairs s ON s.book_a = p.book_a AND s.book_b = p.book_b
    WHERE p.market IN ({markets})
    GROUP BY p.event_id, p.market, p.line, p.book_a, p.book_b, p.outcome_a, {avail}
),
keyed AS (
    SELECT *, dense_rank() OVER (
        ORDER BY event_id, market, line NULLS FIRST, book_a, book_b, outcome_a) AS key_id
    FROM rows
)
SELECT k.*, e.commence_time,
    row_number() OVER w AS rn,
    lag(k.t) OVER w AS prev_t,
    implied_sum::FLOAT < 1.0 AS arb,
    max(k.t) OVER (PARTITION BY k.key_id) AS last_t
FROM keyed k LEFT JOIN events e ON e.event_id = k.event_id
WINDOW w AS (PARTITION BY k.key_id ORDER BY k.t)
"""

# Cut candidates (every cut_stride-th instant from min_len, horizon before kickoff), their
# in-window steps, and the samples with at least min_len of them in a stable order.
_PAIR_SAMPLES_SQL = """
CREATE OR REPLACE TEMP TABLE _ds_samples AS
WITH cuts AS (
    SELECT key_id, t AS cut, rn AS cut_rn, event_id, market, line, book_a, book_b,
        outcome_a, outcome_b, commence_time
    FROM _ds_steps
    WHERE {cut_filter}
),
counted AS (
    SELECT c.key_id, c.cut, c.cut_rn, count(*) AS n
    FROM cuts c JOIN _ds_steps s
      ON s.key_id = c.key_id AND s.rn <= c.cut_rn AND s.rn > c.cut_rn - {max_len}
     AND s.t > c.cut - INTERVAL '{window_us} microseconds'
    GROUP BY c.key_id, c.cut, c.cut_rn
)
SELECT row_number() OVER (
        ORDER BY c.commence_time NULLS LAST, c.event_id, c.market, c.line NULLS FIRST,
                 c.book_a, c.book_b, c.outcome_a, c.cut) - 1 AS sample,
    c.*, n.n AS seq_len
FROM cuts c JOIN counted n ON n.key_id = c.key_id AND n.cut_rn = c.cut_rn
WHERE n.n >= {min_len}
"""

_PAIR_LABELS_SQL = """
WITH opens AS (
    SELECT key_id, t FROM (
        SELECT key_id, t, arb, lag(arb) OVER (PARTITION BY key_id ORDER BY t) AS prev_arb
        FROM _ds_steps
    ) WHERE arb AND NOT coalesce(prev_arb, false)
)
SELECT s.sample, count(o.t) > 0 AS arb_ahead
FROM _ds_samples s LEFT JOIN opens o
  ON o.key_id = s.key_id AND o.t > s.cut
 AND o.t <= s.cut + INTERVAL '{horizon_us} microseconds'
GROUP BY s.sample ORDER BY s.sample
"""

# The steps of samples lo <= sample < hi (one chunk of the build).
_PAIR_SEQ_SQL = """
SELECT s.sample, st.rn - (s.cut_rn - s.seq_len + 1) AS pos, st.event_id, st.market, st.line,
    st.book_a, st.book_b, st.outcome_a, st.t AS as_of, epoch_us(st.t) AS t_us,
    epoch_us(st.t) - epoch_us(st.prev_t) AS gap_us
FROM _ds_samples s JOIN _ds_steps st
  ON st.key_id = s.key_id AND st.rn <= s.cut_rn AND st.rn > s.cut_rn - s.seq_len
WHERE s.sample >= {lo} AND s.sample < {hi}
ORDER BY s.sample, pos
"""


def _selected_pairs(
    con: duckdb.DuckDBPyConnection, config: PairSequenceConfig, markets: str
) -> pd.DataFrame:
    if config.book_pairs is not None:
        pairs = sorted({tuple(sorted(p)) for p in config.book_pairs})
        return pd.DataFrame(pairs, columns=["book_a", "book_b"], dtype=object)
    return con.execute(
        f"""
        SELECT book_a, book_b FROM {PAIR_TABLE}
        WHERE book_a < book_b AND market IN ({markets})
        GROUP BY book_a, book_b ORDER BY count(*) DESC, book_a, book_b LIMIT {config.max_book_pairs}
        """
    ).df()


def _empty_pairs(
    config: PairSequenceConfig, names: list[str], stats: dict[str, Any]
) -> SequenceDataset:
    t, f = config.max_len, len(names)
    meta = pd.DataFrame(
        {
            "event_id": pd.Series(dtype=object),
            "market": pd.Series(dtype=object),
            "commence_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "cut_time": pd.Series(dtype="datetime64[ns, UTC]"),
            "seq_len": pd.Series(dtype=np.int64),
        }
    )
    empty = np.zeros((0, t, f), dtype=np.float32)
    return SequenceDataset(
        name=PAIR_NAME,
        mask=np.zeros((0, t), dtype=bool),
        y={"arb_ahead": np.zeros(0, np.float32), "arb_now": np.zeros(0, np.float32)},
        meta=meta,
        feature_names=names,
        config=_config_dict(config),
        x_a=empty,
        x_b=empty.copy(),
        market_type=np.zeros(0, dtype=np.int64),
        times=np.zeros((0, t), dtype=np.int64),
        target="arb_ahead",
        stats=stats,
    )


# Training cuts: every cut_stride-th instant, the horizon fully observed before kickoff.
_TRAINING_CUTS = """rn >= {min_len} AND (rn - {min_len}) % {stride} = 0
      AND t + INTERVAL '{horizon_us} microseconds' <= coalesce(commence_time, last_t)"""
# Scoring cuts: each key's latest instant at or before the scoring time, before kickoff.
_SCORING_CUTS = """rn >= {min_len} AND t <= {score_at}::TIMESTAMPTZ
      AND (commence_time IS NULL OR commence_time > {score_at}::TIMESTAMPTZ)
      AND t = (SELECT max(s2.t) FROM _ds_steps s2
               WHERE s2.key_id = _ds_steps.key_id AND s2.t <= {score_at}::TIMESTAMPTZ)"""


def build_arbitrage_pair_sequences(
    con: duckdb.DuckDBPyConnection | str | Path,
    config: PairSequenceConfig | None = None,
    *,
    score_at: Any = None,
    chunk_samples: int = 50_000,
    out_dir: str | Path | None = None,
) -> SequenceDataset:
    """Pair-of-books price sequences with ``arb_now`` / ``arb_ahead`` labels (module docstring).

    Needs ``events`` and ``arbitrage_pair_features`` (run ``compute_pair_features``).
    With ``score_at`` (scoring): one sample per pair key, cut at its latest instant at or
    before that time for events not yet started; ``arb_ahead`` then looks past the data
    and means nothing.

    Built ``chunk_samples`` samples at a time (their steps, their point-in-time features,
    their rows of the arrays), so the working memory is one chunk's whatever the dataset's
    size; every value is row-local, so the result does not depend on the chunk size. With
    ``out_dir`` the arrays are streamed to ``<out_dir>/<array>.npy`` chunk by chunk and the
    dataset holds them memory-mapped read-only (the same values as in memory).
    """
    config = config or PairSequenceConfig()
    if chunk_samples < 1:
        raise ValueError("chunk_samples must be >= 1")
    names = list(PAIR_CHANNELS)
    markets = ", ".join("'" + m + "'" for m in config.markets)
    horizon_us = int(round(config.horizon_minutes * 60_000_000))
    window_us = (
        int(round(config.window_hours * _US_PER_HOUR)) if config.window_hours is not None else 2**62
    )
    with _connection(con) as c:
        store = _feature_store(c, (PAIR_TABLE,))
        pairs = _selected_pairs(c, config, markets)
        stats: dict[str, Any] = {
            "book_pairs": [f"{a}|{b}" for a, b in pairs.itertuples(index=False)]
        }
        with _registered(c, "_ds_pairs", pairs):
            c.execute(
                _PAIR_STEPS_SQL.format(
                    avail=_pair_avail(config), pair_table=PAIR_TABLE, markets=markets
                )
            )
        try:
            if score_at is None:
                cut_filter = _TRAINING_CUTS.format(
                    min_len=config.min_len, stride=config.cut_stride, horizon_us=horizon_us
                )
            else:
                stamp = pd.Timestamp(score_at)
                stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
                cut_filter = _SCORING_CUTS.format(
                    min_len=config.min_len, score_at=sql_string(stamp.isoformat())
                )
            c.execute(
                _PAIR_SAMPLES_SQL.format(
                    cut_filter=cut_filter,
                    min_len=config.min_len,
                    max_len=config.max_len,
                    window_us=window_us,
                )
            )
            stats["pair_keys"] = int(
                c.execute("SELECT count(DISTINCT key_id) FROM _ds_steps").fetchone()[0]
            )
            samples = c.execute("SELECT * EXCLUDE (key_id) FROM _ds_samples ORDER BY sample").df()
            if samples.empty:
                stats["samples"] = 0
                return _empty_pairs(config, names, stats)
            labels = c.execute(_PAIR_LABELS_SQL.format(horizon_us=horizon_us)).df()
            N, T, F = len(samples), config.max_len, len(names)
            out = _PairArrays(N, T, F, out_dir)
            try:
                for lo in range(0, N, chunk_samples):
                    hi = min(lo + chunk_samples, N)
                    seq = c.execute(_PAIR_SEQ_SQL.format(lo=lo, hi=hi)).df()
                    out.add(_pair_chunk(store, seq, lo, hi, T, names, config))
                    del seq
                arrays = out.finish()
            except BaseException:
                out.discard()  # the build's own error, not "k of N rows written"
                raise
            out.close()
        finally:
            c.execute("DROP TABLE IF EXISTS _ds_steps")
            c.execute("DROP TABLE IF EXISTS _ds_samples")

    meta = samples[
        ["event_id", "market", "line", "book_a", "book_b", "outcome_a", "outcome_b"]
    ].copy()
    meta["commence_time"] = pd.to_datetime(samples["commence_time"], utc=True)
    meta["cut_time"] = pd.to_datetime(samples["cut"], utc=True)
    meta["start_time"] = _from_us(out.rules["start_us"])
    meta["seq_len"] = out.rules["seq_len"]
    meta["hours_to_commence"] = (
        _to_us(meta["commence_time"]) - _to_us(meta["cut_time"])
    ) / _US_PER_HOUR
    meta["implied_sum_last"] = out.rules["last"]
    meta["implied_sum_min"] = out.rules["min"]
    meta["implied_sum_slope"] = out.rules["slope"]
    stats["samples"] = int(N)
    return SequenceDataset(
        name=PAIR_NAME,
        mask=arrays["mask"],
        y={
            "arb_ahead": labels["arb_ahead"].to_numpy(bool).astype(np.float32),
            "arb_now": out.rules["arb_now"].astype(np.float32),
        },
        meta=meta,
        feature_names=names,
        config=_config_dict(config),
        x_a=arrays["x_a"],
        x_b=arrays["x_b"],
        market_type=samples["market"].map(MARKET_TYPE_IDS).to_numpy(np.int64),
        times=arrays["times"],
        target="arb_ahead",
        stats=stats,
    )


def _pair_chunk(
    store: FeatureStore,
    seq: pd.DataFrame,
    lo: int,
    hi: int,
    T: int,
    names: list[str],
    config: PairSequenceConfig,
) -> dict[str, np.ndarray]:
    """Rows ``lo:hi`` of the pair arrays and their classical rules, from their steps ``seq``."""
    entity = seq[["event_id", "market", "line", "book_a", "book_b", "outcome_a", "as_of"]]
    res = store.get_historical_features(
        entity,
        [f"{PAIR_TABLE}:{col}" for col in _PAIR_COLUMNS],
        ttl=None,  # each step asks at its own instant: the row is that instant's
        knowledge=config.knowledge,
        full_feature_names=True,
    )
    n = hi - lo
    si = seq["sample"].to_numpy(np.int64) - lo
    pos = seq["pos"].to_numpy(np.int64)
    v = {col: _float(res[f"{PAIR_TABLE}__{col}"]) for col in _PAIR_COLUMNS}
    del res, entity
    gap = seq["gap_us"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    shared = [
        v["implied_sum"],
        v["implied_diff"],
        v["odds_spread"],
        v["time_position"],
        v["pair_hours_to_commence"],
        v["pair_stalest_age_s"] / 3600.0,
        np.log1p(gap / 60_000_000.0),
    ]
    out: dict[str, np.ndarray] = {}
    for s in ("a", "b"):
        odds = v[f"odds_{s}"]
        values = np.stack(
            [odds, 1.0 / odds, v[f"delta_{s}"], v[f"rel_delta_{s}"], *shared], axis=-1
        )
        arr = np.zeros((n, T, len(names)), dtype=np.float32)
        arr[si, pos] = values
        out[f"x_{s}"] = arr
        del values
    mask = np.zeros((n, T), dtype=bool)
    mask[si, pos] = True
    times = np.zeros((n, T), dtype=np.int64)
    times[si, pos] = seq["t_us"].to_numpy(np.int64)
    out["mask"], out["times"] = mask, times

    # classical rules on the stored float32 Σ implied (so arb_now is exactly the rule)
    k_sum = names.index("implied_sum")
    isum = np.where(mask, out["x_a"][..., k_sum], np.nan).astype(np.float64)
    seq_len = mask.sum(axis=1)
    isum_min = np.nanmin(np.where(mask, isum, np.inf), axis=1)
    out["last"] = isum[np.arange(n), seq_len - 1]
    out["min"] = isum_min
    out["slope"] = _recent_slope(isum, times, seq_len, config.slope_steps)
    out["arb_now"] = isum_min < 1.0
    out["seq_len"] = seq_len.astype(np.int64)
    out["start_us"] = times[:, 0].copy()
    return out


_PAIR_ARRAYS = {"x_a": np.float32, "x_b": np.float32, "mask": np.bool_, "times": np.int64}
_PAIR_RULES = ("last", "min", "slope", "arb_now", "seq_len", "start_us")


class _PairArrays:
    """The pair build's output, filled chunk by chunk: in memory, or streamed to ``.npy``."""

    def __init__(self, n: int, t: int, f: int, out_dir: str | Path | None):
        self.n, self.filled = n, 0
        self.rule_parts: dict[str, list[np.ndarray]] = {k: [] for k in _PAIR_RULES}
        self.rules: dict[str, np.ndarray] = {}
        shapes = {"x_a": (n, t, f), "x_b": (n, t, f), "mask": (n, t), "times": (n, t)}
        self.dir = Path(out_dir) if out_dir is not None else None
        self.writers: dict[str, _NpyWriter] = {}
        self.memory: dict[str, np.ndarray] = {}
        if self.dir is None:
            self.memory = {k: np.zeros(shapes[k], dtype=d) for k, d in _PAIR_ARRAYS.items()}
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            for k, d in _PAIR_ARRAYS.items():
                self.writers[k] = _NpyWriter(self.dir / f"{k}.npy", shapes[k], d)

    def add(self, chunk: dict[str, np.ndarray]) -> None:
        rows = len(chunk["mask"])
        for k in _PAIR_ARRAYS:
            if self.dir is None:
                self.memory[k][self.filled : self.filled + rows] = chunk[k]
            else:
                self.writers[k].write(chunk[k])
        for k in _PAIR_RULES:
            self.rule_parts[k].append(chunk[k])
        self.filled += rows

    def finish(self) -> dict[str, np.ndarray]:
        if self.filled != self.n:  # pragma: no cover - guards the chunk loop
            raise RuntimeError(f"pair build filled {self.filled} of {self.n} rows")
        self.rules = {k: np.concatenate(v) for k, v in self.rule_parts.items()}
        self.rule_parts = {}
        if self.dir is None:
            return self.memory
        for w in self.writers.values():
            w.close()
        return {k: np.load(self.dir / f"{k}.npy", mmap_mode="r") for k in _PAIR_ARRAYS}

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def discard(self) -> None:
        for w in self.writers.values():
            w.discard()


def _recent_slope(values: np.ndarray, times: np.ndarray, seq_len: np.ndarray, k: int) -> np.ndarray:
    """Least-squares slope per hour of ``values`` over each row's last ``k`` real steps.

    Rows are left-aligned (real steps 0..seq_len-1); NaN when fewer than two steps.
    """
    T = values.shape[1]
    idx = np.arange(T)[None, :]
    w = ((idx >= (seq_len - k)[:, None]) & (idx < seq_len[:, None])).astype(np.float64)
    w = np.where(np.isfinite(values), w, 0.0)
    hours = (times - times[:, :1]) / _US_PER_HOUR
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt = (w * hours).sum(axis=1) / n
        mv = (w * np.nan_to_num(values)).sum(axis=1) / n
        dt = hours - mt[:, None]
        cov = (w * dt * (np.nan_to_num(values) - mv[:, None])).sum(axis=1)
        var = (w * dt * dt).sum(axis=1)
        slope = cov / var
    return np.where((n >= 2) & (var > 0), slope, np.nan)


# --------------------------------------------------------------------------- splits


def assign_splits(
    dataset: SequenceDataset,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    cuts: Sequence[str | pd.Timestamp] | None = None,
) -> SequenceDataset:
    """A copy with meta ``split`` (train/validation/test) ordered by event commence time.

    With ``cuts`` (one or two dates): train < cuts[0] <= validation < cuts[1] <= test (one
    date: train / test; e.g. EPL ``cuts=("2020-07-01", "2021-07-01")``: train up to
    2019/20, validation 2020/21, test 2021/22 onwards). Otherwise ``fractions`` of the *events* in commence order, the
    boundaries moved so that events at the same commence time share a split. Every sample
    of an event lands in the same split, and every train event starts strictly before
    every validation event, which starts strictly before every test event.
    """
    meta = dataset.meta
    commence = pd.to_datetime(meta["commence_time"], utc=True)
    if cuts is not None:
        if not 1 <= len(cuts) <= 2:
            raise ValueError("cuts takes one date (train/test) or two (train/validation/test)")
        bounds = [pd.Timestamp(cut) for cut in cuts]
        bounds = [b.tz_localize("UTC") if b.tzinfo is None else b.tz_convert("UTC") for b in bounds]
        if len(bounds) == 2 and bounds[1] < bounds[0]:
            raise ValueError("cuts must be in increasing order")
        if len(bounds) == 1:
            bounds = [bounds[0], bounds[0]]
    else:
        if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
            raise ValueError("fractions must be three non-negative numbers (train, val, test)")
        total = float(sum(fractions))
        events = (
            pd.DataFrame({"event_id": meta["event_id"], "commence": commence})
            .groupby("event_id", sort=False)["commence"]
            .min()
            .sort_values(kind="stable")
        )
        n = len(events)
        ordered = events.to_numpy()
        bounds = []
        for share in (fractions[0], fractions[0] + fractions[1]):
            k = int(round(n * share / total))
            bounds.append(ordered[k] if k < n else pd.Timestamp.max.tz_localize("UTC"))
        bounds = [pd.Timestamp(b) for b in bounds]
    event_commence = commence.groupby(meta["event_id"]).transform("min")
    split = np.where(
        event_commence < bounds[0],
        "train",
        np.where(event_commence < bounds[1], "validation", "test"),
    )
    out = dataset.subset(np.arange(len(dataset)))
    out.meta["split"] = split.astype(object)
    return out


def split_by_time(
    dataset: SequenceDataset,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    cuts: Sequence[str | pd.Timestamp] | None = None,
) -> dict[str, SequenceDataset]:
    """{"train", "validation", "test"} datasets ordered by commence time (`assign_splits`)."""
    return assign_splits(dataset, fractions, cuts=cuts).splits()
