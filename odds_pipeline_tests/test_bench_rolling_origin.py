"""Rolling-origin folds of benchmarks/bench_arbitrage_scorer.py: windows by event commence time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_arbitrage_scorer as bench  # noqa: E402


def _meta(n_events: int = 100, rows_per_event: int = 3) -> pd.DataFrame:
    """Events with increasing commence times (shuffled rows); each event has several rows."""
    start = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [
        {"event_id": f"e{i:03d}", "commence_time": start + pd.Timedelta(hours=i)}
        for i in range(n_events)
        for _ in range(rows_per_event)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def _events(meta: pd.DataFrame, split: np.ndarray, name: str) -> set[int]:
    return {int(e[1:]) for e in meta.loc[split == name, "event_id"]}


def test_fold_shifts() -> None:
    assert bench._fold_shifts(1) == [0.0]
    assert bench._fold_shifts(3) == pytest.approx([0.3, 0.15, 0.0])
    with pytest.raises(ValueError):
        bench._fold_shifts(0)
    with pytest.raises(ValueError):
        bench._fold_shifts(6)  # the first fold would have no train events


def test_last_fold_is_the_plain_split() -> None:
    meta = _meta()
    plain = bench._split(meta)
    assert set(plain) == {"train", "validation", "test"}  # shift 0 leaves nothing unused
    assert _events(meta, plain, "train") == set(range(70))
    assert _events(meta, plain, "test") == set(range(85, 100))


def test_rolling_windows_are_consecutive_and_expanding() -> None:
    meta = _meta()
    splits = [bench._split(meta, shift=s) for s in bench._fold_shifts(3)]
    tests = [_events(meta, s, "test") for s in splits]
    assert tests == [set(range(55, 70)), set(range(70, 85)), set(range(85, 100))]
    for i, split in enumerate(splits):
        val = _events(meta, split, "validation")
        train = _events(meta, split, "train")
        # validation: the same-size slice just before the test window; train: all before it
        assert val == set(range(min(tests[i]) - 15, min(tests[i])))
        assert train == set(range(min(val)))
        assert _events(meta, split, "unused") == set(range(max(tests[i]) + 1, 100))
        # a fold's validation window is the previous fold's test window
        if i:
            assert val == tests[i - 1]
    # every row of an event lands in one split (pair samples never cross events)
    for split in splits:
        per_event = pd.Series(split).groupby(meta["event_id"].to_numpy()).nunique()
        assert (per_event == 1).all()


def test_select_drops_events_after_the_test_window_and_keeps_every_train_positive() -> None:
    """A fold never trains or tests on events after its test window; positives all stay."""
    import argparse

    meta = _meta(n_events=100, rows_per_event=4)
    meta["league"] = "mlb"
    for col in ("market", "line", "book_a", "book_b", "outcome_a"):
        meta[col] = "k"
    meta["y"] = (meta["event_id"].str[1:].astype(int) % 10 == 0).astype(int)
    args = argparse.Namespace(eval_every="*=1", max_train_rows=60, seed=7)
    shift = bench._fold_shifts(3)[0]  # test window at 55-70% of the events
    sel = bench._select(meta, args, shift=shift)
    events = sel["event_id"].str[1:].astype(int)
    assert events.max() < 70 and set(sel["split"]) == {"train", "validation", "test"}
    train = sel[sel["split"] == "train"]
    assert len(train) == 60  # the subsample is drawn from train rows only
    all_train_positives = meta[(meta["event_id"].str[1:].astype(int) < 40) & (meta["y"] == 1)]
    assert int(train["y"].sum()) == len(all_train_positives)
