"""Issue #10 part 2: explicit arbitrage inputs, rules chosen on validation, trees, transformer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odds_pipeline.datasets.sequences import PAIR_CHANNELS
from odds_pipeline.training import arbitrage_inputs as AI
from odds_pipeline.training import baselines as B
from odds_pipeline.training.evaluation import average_precision
from odds_pipeline.training.loop import TrainConfig, fit, predict_logits
from odds_pipeline.training.models import DualStreamArbTransformer

NAMES = list(PAIR_CHANNELS)
F = len(NAMES)
MIN_US = 60_000_000
COL = {name: i for i, name in enumerate(AI.EXPLICIT_NAMES)}


def _window(sums: list[float], minutes: list[float], t: int = 10) -> tuple[np.ndarray, ...]:
    """One left-aligned sample: Σ implied per step at the given minutes, padded to t."""
    n = len(sums)
    x = np.zeros((1, t, F), dtype=np.float32)
    x[0, :n, NAMES.index("implied_sum")] = sums
    x[0, :n, NAMES.index("log_gap_minutes")] = np.log1p(np.r_[0.0, np.diff(minutes)])
    x[0, :n, NAMES.index("hours_to_commence")] = 5.0 - np.asarray(minutes) / 60.0
    mask = np.zeros((1, t), dtype=bool)
    mask[0, :n] = True
    times = np.zeros((1, t), dtype=np.int64)
    times[0, :n] = (1_700_000_000_000_000 + np.asarray(minutes) * MIN_US).astype(np.int64)
    x[0, n:] = 123.0  # garbage on padding must not count
    return x, mask, times


def test_explicit_inputs_on_a_hand_made_window() -> None:
    # steps at minutes 0, 5, 10, 20, 30, 45; arbitrage (Σ < 1) at 10 and 20 (one window)
    # and at 30? no: 1.0 exactly is not an arbitrage. Last arbitrage at minute 20, cut at 45.
    sums = [1.02, 1.01, 0.99, 0.995, 1.0, 1.01]
    x, mask, times = _window(sums, [0, 5, 10, 20, 30, 45])
    out = AI.explicit_inputs(x, mask, times, feature_names=NAMES)
    row = out[0]
    assert out.shape == (1, len(AI.EXPLICIT_NAMES))
    assert row[COL["arb_count"]] == 2
    assert row[COL["arb_opens"]] == 1
    assert row[COL["arb_fraction"]] == pytest.approx(2 / 6)
    assert row[COL["minutes_since_arb"]] == pytest.approx(25.0)
    assert row[COL["never_arb"]] == 0
    assert row[COL["arb_now"]] == 0
    assert row[COL["sum_minus_1_now"]] == pytest.approx(0.01, abs=1e-6)
    assert row[COL["sum_minus_1_min"]] == pytest.approx(-0.01, abs=1e-6)
    assert row[COL["seq_len"]] == 6
    assert row[COL["log_gap_minutes_now"]] == pytest.approx(np.log1p(15.0), rel=1e-5)
    assert row[COL["hours_to_commence_now"]] == pytest.approx(5.0 - 0.75, rel=1e-5)


def test_explicit_inputs_never_flag_cap_and_two_openings() -> None:
    cfg = AI.ArbitrageInputConfig(cap_minutes=60.0)
    x1, m1, t1 = _window([1.02, 1.03, 1.01], [0, 10, 20])
    x2, m2, t2 = _window([0.98, 1.01, 0.97, 0.99], [0, 100, 200, 300])
    x = np.concatenate([x1, x2])
    out = AI.explicit_inputs(
        x, np.concatenate([m1, m2]), np.concatenate([t1, t2]), cfg, feature_names=NAMES
    )
    assert out[0, COL["never_arb"]] == 1 and out[0, COL["arb_count"]] == 0
    assert out[0, COL["minutes_since_arb"]] == 60.0  # "never" reads as the cap
    assert out[1, COL["arb_opens"]] == 2 and out[1, COL["arb_count"]] == 3
    assert out[1, COL["arb_now"]] == 1 and out[1, COL["minutes_since_arb"]] == 0.0
    # slope per hour of Σ over the window (steps 1 h apart): least squares by hand
    hours = np.array([0.0, 100, 200, 300]) / 60.0
    s = np.array([0.98, 1.01, 0.97, 0.99])
    expected = np.polyfit(hours, s, 1)[0]
    assert out[1, COL["sum_slope_per_h"]] == pytest.approx(expected, rel=1e-4)


def test_book_indices_use_the_fixed_vocabulary() -> None:
    cfg = AI.ArbitrageInputConfig()
    idx = AI.book_indices(["betmgm", "fanduel", "pinnacle"], ["williamhill_us", "betmgm", "bovada"])
    assert idx.tolist() == [
        [1, len(cfg.books)],
        [cfg.books.index("fanduel") + 1, 1],
        [0, cfg.books.index("bovada") + 1],
    ]
    assert AI.ArbitrageInputConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.n_books == len(AI.DEFAULT_BOOKS) + 1


def test_window_summaries_ignore_padding() -> None:
    x, mask, _ = _window([1.02, 0.99, 1.01], [0, 10, 20])
    summ = AI.window_summaries(x, x, mask, NAMES)
    names = AI.window_summary_names(NAMES)
    assert summ.shape == (1, len(names))
    get = dict(zip(names, summ[0], strict=True))
    assert get["implied_sum_last"] == pytest.approx(1.01)
    assert get["implied_sum_min"] == pytest.approx(0.99)
    assert get["implied_sum_max"] == pytest.approx(1.02)  # not the 123 on padding


def _explicit(sum_now: np.ndarray, slope: np.ndarray) -> np.ndarray:
    x = np.zeros((len(sum_now), len(AI.EXPLICIT_NAMES)), dtype=np.float32)
    x[:, COL["sum_minus_1_now"]] = sum_now
    x[:, COL["sum_minus_1_min"]] = 0.0
    x[:, COL["sum_slope_per_h"]] = slope
    return x


def test_best_rule_is_chosen_on_validation_not_test() -> None:
    rng = np.random.default_rng(0)
    n = 400
    # validation: low Σ now predicts an arbitrage ahead, slope is noise
    y_val = (rng.random(n) < 0.1).astype(float)
    val = _explicit(
        np.where(y_val == 1, -0.02, 0.02) + rng.normal(0, 0.001, n), rng.normal(0, 1, n)
    )
    # test: the other way round (slope predicts, Σ now is noise)
    y_test = (rng.random(n) < 0.1).astype(float)
    test = _explicit(
        rng.normal(0, 0.01, n), np.where(y_test == 1, 5.0, 0.0) + rng.normal(0, 0.1, n)
    )
    choice = B.choose_rule(val, y_val)
    assert choice.name == "sum_now" and choice.sign == -1.0
    assert choice.table["sum_now"]["-1"] > choice.table["sum_now"]["+1"]
    # on test the slope rule would have won; the choice does not look at test
    on_test = B.choose_rule(test, y_test)
    assert on_test.name == "slope" and on_test.sign == 1.0
    scored = choice.score(test)
    assert scored.min() >= 0 and scored.max() <= 1
    assert average_precision(y_test, scored) < average_precision(y_test, on_test.score(test))


def test_choose_rule_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        B.choose_rule(_explicit(np.zeros(5), np.zeros(5)), np.zeros(5))


def test_trees_baseline_runs_and_stops_on_validation() -> None:
    rng = np.random.default_rng(1)
    n = 800
    X = rng.normal(size=(3 * n, 4)).astype(np.float32)
    X[rng.random(3 * n) < 0.05, 2] = np.nan  # missing values are allowed
    y = (X[:, 0] + 0.5 * rng.normal(size=3 * n) > 1.6).astype(float)
    trees = B.fit_trees(X[:n], y[:n], X[n : 2 * n], y[n : 2 * n], max_iter=25, patience=10)
    assert 1 <= trees.n_iter <= 25
    assert trees.val_auc_pr == pytest.approx(max(trees.val_curve))
    p = trees.score(X[2 * n :])
    assert p.shape == (n,) and np.all((p >= 0) & (p <= 1))
    assert average_precision(y[2 * n :], p) > 2 * y[2 * n :].mean()  # far above chance


def _pair_batch(n: int = 64, t: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((n, t), dtype=bool)
    mask[: n // 2, t // 2 :] = False
    static = rng.normal(size=(n, 5)).astype(np.float32)
    y = (static[:, 0] > 0.5).astype(np.float32)  # learnable from the static inputs only
    return {
        "x_a": rng.normal(size=(n, t, 4)).astype(np.float32),
        "x_b": rng.normal(size=(n, t, 4)).astype(np.float32),
        "mask": mask,
        "market_type": rng.integers(0, 3, n),
        "static": static,
        "books": rng.integers(0, 12, (n, 2)),
        "y": y,
    }


# What DualStreamArbTransformer(4, d_model=16, n_heads=2, n_layers=1) was before the static
# inputs existed (commit 15af961): models logged then must still load and score the same.
OLD_HPARAMS = {
    "n_features_per_book": 4,
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 1,
    "cross_from_layer": 1,
    "n_market_types": 3,
    "dropout": 0.1,
    "mlp_hidden": 64,
    "attn_dropout": 0.0,
    "ff_mult": 4,
}
OLD_STATE = {"keys": 43, "head.0.weight": (64, 48), "head.3.weight": (1, 64)}


def test_transformer_default_behaviour_is_unchanged_without_extra_inputs() -> None:
    torch.manual_seed(0)
    plain = DualStreamArbTransformer(4, d_model=16, n_heads=2, n_layers=1)
    torch.manual_seed(0)
    again = DualStreamArbTransformer(4, d_model=16, n_heads=2, n_layers=1, n_static=0)
    assert plain.hparams == again.hparams == OLD_HPARAMS
    state = plain.state_dict()
    assert len(state) == OLD_STATE["keys"]
    assert not any("static" in k or "book" in k for k in state)
    assert tuple(state["head.0.weight"].shape) == OLD_STATE["head.0.weight"]
    assert tuple(state["head.3.weight"].shape) == OLD_STATE["head.3.weight"]
    d = _pair_batch()
    args = [torch.as_tensor(d[k]) for k in ("x_a", "x_b", "mask", "market_type")]
    plain.eval(), again.eval()
    assert torch.equal(plain(*args), again(*args))
    with pytest.raises(ValueError, match="static inputs"):
        plain(*args, torch.as_tensor(d["static"]), None)


def test_transformer_with_static_inputs_trains_and_requires_them() -> None:
    d = _pair_batch(n=128)
    model = DualStreamArbTransformer(4, d_model=16, n_heads=2, n_layers=1, n_static=5, n_books=12)
    assert model.hparams["n_static"] == 5 and model.hparams["n_books"] == 12
    rebuilt = DualStreamArbTransformer(**model.hparams)  # hparams rebuild the same network
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    keys = ("x_a", "x_b", "mask", "market_type", "static", "books")
    before = predict_logits(model, d, keys)
    res = fit(
        model,
        d,
        d,
        input_keys=keys,
        config=TrainConfig(
            epochs=3, batch_size=64, lr=5e-3, device="cpu", patience=5, torch_threads=1
        ),
        select_metric="auc_pr",
    )
    after = predict_logits(res.model, d, keys)
    assert not np.allclose(before, after)
    assert all("val_auc_pr" in h for h in res.history)
    best = max(range(len(res.history)), key=lambda i: res.history[i]["val_auc_pr"])
    assert res.best_epoch == best + 1  # the epoch with the best validation AUC-PR is kept
    with pytest.raises(ValueError, match="static inputs"):
        model(*(torch.as_tensor(d[k]) for k in keys[:4]))


def test_fit_rejects_an_unknown_selection_metric() -> None:
    d = _pair_batch(n=16)
    model = DualStreamArbTransformer(4, d_model=8, n_heads=2, n_layers=1)
    with pytest.raises(ValueError, match="select_metric"):
        fit(
            model,
            d,
            d,
            input_keys=("x_a", "x_b", "mask", "market_type"),
            config=TrainConfig(epochs=1, device="cpu"),
            select_metric="accuracy",
        )
