"""The inputs a rule-maker would use, per pair sample, for the arbitrage scorers (issue #10).

From a pair ``SequenceDataset``'s arrays (``x_a``, ``x_b``, ``mask``, ``times``,
``market_type`` and the meta's two books) this computes, vectorised over samples:

- ``explicit_inputs``: a fixed, named vector per sample (``EXPLICIT_NAMES``): how many
  arbitrage instants (float32 Σ implied < 1, the datasets' own definition) the window
  holds and how many windows opened in it, the minutes since the last one (capped at
  ``cap_minutes``, with a ``never`` flag when the window holds none), Σ − 1 now, its
  window minimum and mean, its slope per hour over the last ``slope_steps`` steps, the
  last gap between updates, hours to kickoff and the stalest quote's age.
- ``book_indices``: each sample's two books as indices into a fixed vocabulary
  (``ArbitrageInputConfig.books``; 0 = a book outside it), so a model can embed them.
- ``window_summaries``: last / mean / min / max / std over the real steps of every
  distinct channel (book A's and B's own channels, the pair channels once), the trees'
  inputs with the explicit ones.

Rows are left-aligned (real steps ``0 .. seq_len - 1``, as the dataset builds them); the
cut is the last real step. Numpy only; no Dagster, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BOOKS",
    "EXPLICIT_NAMES",
    "ArbitrageInputConfig",
    "book_indices",
    "explicit_inputs",
    "fit_standardiser",
    "standardise",
    "static_inputs",
    "window_summaries",
    "window_summary_names",
]

# The Odds API's US books in the collection (data/README); index 0 is "another book".
DEFAULT_BOOKS: tuple[str, ...] = (
    "betmgm",
    "betonlineag",
    "betrivers",
    "betus",
    "bovada",
    "draftkings",
    "fanatics",
    "fanduel",
    "lowvig",
    "mybookieag",
    "williamhill_us",
)

EXPLICIT_NAMES: tuple[str, ...] = (
    "arb_count",  # arbitrage instants (Σ < 1) among the window's real steps
    "arb_fraction",  # arb_count / real steps
    "arb_opens",  # instants where an arbitrage opened (previous step in the window had none)
    "minutes_since_arb",  # cut time - last arbitrage instant, capped; cap when never
    "never_arb",  # 1 when the window holds no arbitrage instant
    "arb_now",  # the cut's own step is an arbitrage
    "sum_minus_1_now",
    "sum_minus_1_min",
    "sum_minus_1_mean",
    "sum_slope_per_h",  # least-squares slope over the last slope_steps steps; 0 when < 2
    "log_gap_minutes_now",  # log1p(minutes) since the previous step at the cut
    "hours_to_commence_now",
    "stalest_age_h_now",
    "seq_len",
)

_SHARED = (
    "implied_sum",
    "implied_diff",
    "odds_spread",
    "time_position",
    "hours_to_commence",
    "stalest_age_h",
    "log_gap_minutes",
)
_OWN = ("odds", "implied", "delta", "rel_delta")
_STATS = ("last", "mean", "min", "max", "std")
_US_PER_MINUTE = 60_000_000.0


@dataclass(frozen=True)
class ArbitrageInputConfig:
    """What the inputs depend on; stored with a model so scoring computes the same."""

    books: tuple[str, ...] = DEFAULT_BOOKS
    cap_minutes: float = 24 * 60.0
    slope_steps: int = 8
    feature_names: tuple[str, ...] = field(default=())  # the dataset's channels; () = default

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ArbitrageInputConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in dict(values).items()})

    @property
    def n_books(self) -> int:
        """Vocabulary size including index 0 (a book outside the list)."""
        return len(self.books) + 1


def _channel(names: Sequence[str], name: str) -> int:
    try:
        return list(names).index(name)
    except ValueError:
        raise ValueError(f"pair dataset has no channel {name!r} (has {list(names)})") from None


def _names(config: ArbitrageInputConfig, feature_names: Sequence[str] | None) -> list[str]:
    if feature_names is not None:
        return list(feature_names)
    if config.feature_names:
        return list(config.feature_names)
    from odds_pipeline.datasets.sequences import PAIR_CHANNELS

    return list(PAIR_CHANNELS)


def _last_index(mask: np.ndarray) -> np.ndarray:
    """Index of each row's last real step (0 for a row without any)."""
    steps = np.arange(1, mask.shape[1] + 1)
    return np.maximum((mask * steps).max(axis=1) - 1, 0)


def _slope(values: np.ndarray, hours: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Least-squares slope per hour over each row's last ``k`` real steps (0 when < 2)."""
    last = _last_index(mask)
    idx = np.arange(mask.shape[1])[None, :]
    w = (mask & (idx > (last - k)[:, None]) & np.isfinite(values)).astype(np.float64)
    v = np.nan_to_num(values)
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mt = (w * hours).sum(axis=1) / n
        mv = (w * v).sum(axis=1) / n
        dt = hours - mt[:, None]
        var = (w * dt * dt).sum(axis=1)
        slope = (w * dt * (v - mv[:, None])).sum(axis=1) / var
    return np.where((n >= 2) & (var > 0), slope, 0.0)


def explicit_inputs(
    x_a: np.ndarray,
    mask: np.ndarray,
    times: np.ndarray,
    config: ArbitrageInputConfig | None = None,
    feature_names: Sequence[str] | None = None,
) -> np.ndarray:
    """[N, len(EXPLICIT_NAMES)] float32 (module docstring); NaN-free.

    The pair channels (Σ implied, gap, hours to kickoff, stalest age) are the same in
    both streams, so book A's array is enough.
    """
    config = config or ArbitrageInputConfig()
    names = _names(config, feature_names)
    mask = np.asarray(mask, dtype=bool)
    n, t = mask.shape
    out = np.zeros((n, len(EXPLICIT_NAMES)), dtype=np.float32)
    if n == 0:
        return out
    x_a = np.asarray(x_a)
    rows = np.arange(n)
    last = _last_index(mask)
    seq_len = mask.sum(axis=1)
    # the datasets' definition of an arbitrage: float32(Σ implied) < 1 on a real step
    isum = x_a[..., _channel(names, "implied_sum")].astype(np.float32)
    arb = mask & np.isfinite(isum) & (isum < np.float32(1.0))
    prev = np.concatenate([np.zeros((n, 1), dtype=bool), arb[:, :-1]], axis=1)
    opens = arb & ~prev
    count = arb.sum(axis=1)
    steps = np.arange(1, t + 1)
    last_arb = (arb * steps).max(axis=1) - 1  # -1 = never
    never = last_arb < 0
    t_us = np.asarray(times, dtype=np.int64)
    cut_us = t_us[rows, last]
    since = (cut_us - t_us[rows, np.maximum(last_arb, 0)]) / _US_PER_MINUTE
    since = np.where(never, config.cap_minutes, np.clip(since, 0.0, config.cap_minutes))
    s64 = np.where(mask & np.isfinite(isum), isum.astype(np.float64), np.nan)
    finite_any = np.isfinite(s64).any(axis=1)
    with np.errstate(invalid="ignore"):
        s_min = np.where(finite_any, np.nanmin(np.where(finite_any[:, None], s64, 0.0), 1), 1.0)
        s_mean = np.where(finite_any, np.nanmean(np.where(finite_any[:, None], s64, 0.0), 1), 1.0)
    s_now = np.nan_to_num(s64[rows, last], nan=1.0)
    hours = (t_us - t_us[:, :1]) / (60.0 * _US_PER_MINUTE)
    slope = _slope(s64, hours, mask, config.slope_steps)

    def now(name: str) -> np.ndarray:
        col = x_a[..., _channel(names, name)].astype(np.float64)
        return np.nan_to_num(col[rows, last])

    columns = {
        "arb_count": count,
        "arb_fraction": count / np.maximum(seq_len, 1),
        "arb_opens": opens.sum(axis=1),
        "minutes_since_arb": since,
        "never_arb": never,
        "arb_now": arb[rows, last],
        "sum_minus_1_now": s_now - 1.0,
        "sum_minus_1_min": s_min - 1.0,
        "sum_minus_1_mean": s_mean - 1.0,
        "sum_slope_per_h": slope,
        "log_gap_minutes_now": now("log_gap_minutes"),
        "hours_to_commence_now": now("hours_to_commence"),
        "stalest_age_h_now": now("stalest_age_h"),
        "seq_len": seq_len,
    }
    for j, name in enumerate(EXPLICIT_NAMES):
        out[:, j] = np.asarray(columns[name], dtype=np.float64)
    out[seq_len == 0] = 0.0
    return out


def book_indices(
    book_a: Sequence[str] | np.ndarray,
    book_b: Sequence[str] | np.ndarray,
    config: ArbitrageInputConfig | None = None,
) -> np.ndarray:
    """[N, 2] int64 indices into ``config.books`` (+1; 0 = a book outside the vocabulary)."""
    config = config or ArbitrageInputConfig()
    vocab = np.asarray(config.books, dtype=object)
    order = np.argsort(vocab)
    sorted_vocab = vocab[order]

    def lookup(books: Any) -> np.ndarray:
        b = np.asarray(books, dtype=object)
        if b.size == 0 or sorted_vocab.size == 0:
            return np.zeros(b.shape, dtype=np.int64)
        pos = np.clip(np.searchsorted(sorted_vocab, b), 0, len(sorted_vocab) - 1)
        hit = sorted_vocab[pos] == b
        return np.where(hit, order[pos] + 1, 0).astype(np.int64)

    return np.stack([lookup(book_a), lookup(book_b)], axis=1)


def window_summary_names(feature_names: Sequence[str] | None = None) -> list[str]:
    names = list(feature_names) if feature_names is not None else None
    own = [c for c in _OWN if names is None or c in names]
    shared = [c for c in _SHARED if names is None or c in names]
    chans = [f"{c}_a" for c in own] + [f"{c}_b" for c in own] + shared
    return [f"{c}_{s}" for c in chans for s in _STATS]


def window_summaries(
    x_a: np.ndarray,
    x_b: np.ndarray,
    mask: np.ndarray,
    feature_names: Sequence[str] | None = None,
) -> np.ndarray:
    """[N, channels * 5] float32: last, mean, min, max, std over real steps; NaN when none.

    The trees handle NaN natively (a channel never known in the window stays NaN).
    """
    names = (
        list(feature_names) if feature_names is not None else _names(ArbitrageInputConfig(), None)
    )
    mask = np.asarray(mask, dtype=bool)
    n = mask.shape[0]
    rows = np.arange(n)
    last = _last_index(mask)
    own = [c for c in _OWN if c in names]
    shared = [c for c in _SHARED if c in names]
    picks = [(x_a, c) for c in own] + [(x_b, c) for c in own] + [(x_a, c) for c in shared]
    out = np.full((n, len(picks) * len(_STATS)), np.nan, dtype=np.float32)
    for j, (arr, c) in enumerate(picks):  # a fixed handful of channels, not samples
        v = arr[..., names.index(c)].astype(np.float64)
        v = np.where(mask & np.isfinite(v), v, np.nan)
        known = np.isfinite(v).any(axis=1)
        filled = np.where(known[:, None], v, 0.0)
        with np.errstate(invalid="ignore"):
            stats = [
                v[rows, last],
                np.nanmean(filled, axis=1),
                np.nanmin(filled, axis=1),
                np.nanmax(filled, axis=1),
                np.nanstd(filled, axis=1),
            ]
        for k, s in enumerate(stats):
            out[:, j * len(_STATS) + k] = np.where(known, s, np.nan)
    return out


def static_inputs(
    dataset: Any, config: ArbitrageInputConfig | None = None
) -> dict[str, np.ndarray]:
    """``{"static": explicit inputs [N, K], "books": [N, 2]}`` for a pair SequenceDataset."""
    config = config or ArbitrageInputConfig()
    return {
        "static": explicit_inputs(
            dataset.x_a, dataset.mask, dataset.times, config, dataset.feature_names
        ),
        "books": book_indices(
            dataset.meta["book_a"].to_numpy(dtype=object),
            dataset.meta["book_b"].to_numpy(dtype=object),
            config,
        ),
    }


def fit_standardiser(values: np.ndarray) -> dict[str, list[float]]:
    """Per-column mean and std of the train rows (std 1 where constant), JSON-able."""
    v = np.asarray(values, dtype=np.float64)
    mean = np.nanmean(v, axis=0) if len(v) else np.zeros(v.shape[1])
    std = np.nanstd(v, axis=0) if len(v) else np.ones(v.shape[1])
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return {"mean": np.nan_to_num(mean).tolist(), "std": std.tolist()}


def standardise(
    values: np.ndarray, scaler: Mapping[str, Sequence[float]], clip: float = 10.0
) -> np.ndarray:
    """(values - mean) / std clipped to ±``clip`` (heavy tails: slopes), NaN -> 0, float32."""
    v = (np.asarray(values, dtype=np.float64) - np.asarray(scaler["mean"])) / np.asarray(
        scaler["std"]
    )
    v = np.nan_to_num(v, nan=0.0, posinf=clip, neginf=-clip)
    return np.clip(v, -clip, clip).astype(np.float32)
