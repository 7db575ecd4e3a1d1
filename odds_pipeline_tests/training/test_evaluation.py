"""Metrics against sklearn and hand-computed values; plots write real PNG files."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from odds_pipeline.training import evaluation as ev

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _forecast(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < truth).astype(int)
    p = np.clip(truth + rng.normal(0, 0.15, n), 0.001, 0.999)
    if ties:
        p = np.round(p, 1)  # many tied scores
    return y, p


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_binary_metrics_match_sklearn(seed: int, ties: bool) -> None:
    y, p = _forecast(500, seed, ties)
    m = ev.binary_metrics(y, p)
    assert m["n"] == 500 and m["positives"] == int(y.sum())
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["auc_pr"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5), abs=1e-12)
    assert m["base_rate"] == pytest.approx(y.mean()) and m["mean_p"] == pytest.approx(p.mean())


def test_curves_match_sklearn() -> None:
    y, p = _forecast(300, 3, ties=True)
    fpr, tpr = ev.roc_curve(y, p)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
    recall, precision = ev.pr_curve(y, p)
    sk_precision, sk_recall, _ = skm.precision_recall_curve(y, p)
    # sklearn lists thresholds low to high and ends at (recall 0, precision 1)
    assert np.allclose(recall, sk_recall[::-1]) and np.allclose(precision, sk_precision[::-1])


def test_hand_computed_brier_ece_log_loss() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.62, 0.68, 1.0])
    # bins: [0,.1): {0.05,y0}  [.1,.2): {0.15,y1}  [.6,.7): {0.62,y1; 0.68,y0}  [.9,1]: {1.0,y1}
    ece = (1 * 0.05 + 1 * 0.85 + 2 * abs(0.5 - 0.65) + 1 * 0.0) / 5
    assert ev.expected_calibration_error(y, p) == pytest.approx(ece)
    brier = (0.05**2 + 0.85**2 + 0.38**2 + 0.68**2 + 0.0) / 5
    assert ev.brier_score(y, p) == pytest.approx(brier)
    m = ev.binary_metrics(y, p)
    assert m["ece_10"] == pytest.approx(ece) and m["brier"] == pytest.approx(brier)
    assert m["accuracy"] == pytest.approx(3 / 5)  # 0.62 and 1.0 right, 0.05 right
    # p = 1.0 on a positive costs nothing; a confident miss is clipped, not infinite
    assert math.isfinite(ev.log_loss([0], [1.0])) and ev.log_loss([0], [1.0]) > 30
    # a perfectly calibrated constant forecast has ECE 0
    assert ev.expected_calibration_error([0, 1, 0, 1], [0.5] * 4) == 0.0


def test_calibration_table() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.62, 0.68, 1.0])
    table = ev.calibration_table(y, p, bins=10)
    assert table["count"] == [1, 1, 0, 0, 0, 0, 2, 0, 0, 1]
    assert table["bin_lower"][6] == pytest.approx(0.6) and table["bin_upper"][-1] == 1.0
    assert table["mean_predicted"][6] == pytest.approx(0.65)
    assert table["fraction_positive"][6] == pytest.approx(0.5)
    assert math.isnan(table["mean_predicted"][2]) and table["fraction_positive"][9] == 1.0
    assert sum(table["count"]) == 5


def test_one_class_and_empty_inputs_are_robust() -> None:
    for y in ([1, 1, 1], [0, 0, 0]):
        m = ev.binary_metrics(y, [0.2, 0.7, 0.9])
        assert math.isnan(m["auc_roc"]) and math.isnan(m["auc_pr"])
        assert math.isfinite(m["brier"]) and math.isfinite(m["log_loss"])
        assert math.isfinite(m["ece_10"])
    empty = ev.binary_metrics([], [])
    assert empty["n"] == 0 and math.isnan(empty["brier"]) and math.isnan(empty["auc_roc"])
    with pytest.raises(ValueError, match="only 0 and 1"):
        ev.binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite probabilities"):
        ev.binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="finite probabilities"):
        ev.binary_metrics([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="has 2 values"):
        ev.binary_metrics([0, 1], [0.1, 0.2, 0.3])


def test_metrics_by_group_and_length_buckets() -> None:
    y, p = _forecast(400, 5)
    lengths = np.random.default_rng(5).integers(0, 25, 400)
    groups = ev.length_buckets(lengths, edges=(1, 4, 8, 16))
    assert set(groups) <= {"0", "1-3", "4-7", "8-15", "16+"}
    assert groups[lengths == 0].tolist() == ["0"] * int((lengths == 0).sum())
    assert all(g == "16+" for g in groups[lengths >= 16])
    market = np.clip(p + 0.05, 0, 1)
    table = ev.metrics_by_group(y, {"model": p, "market": market}, groups)
    order = ["0", "1-3", "4-7", "8-15", "16+"]
    assert table["group"] == order * 2  # numeric order, not "16+" before "4-7"
    assert table["model"] == ["model"] * 5 + ["market"] * 5
    assert sum(table["n"][:5]) == 400
    for i, group in enumerate(order):
        sel = groups == group
        assert table["brier"][i] == pytest.approx(skm.brier_score_loss(y[sel], p[sel]))
        assert table["accuracy"][i + 5] == pytest.approx(
            skm.accuracy_score(y[sel], market[sel] >= 0.5)
        )
    single = ev.metrics_by_group(y, p, lengths % 2)
    assert single["group"] == [0, 1] and single["model"] == ["model", "model"]
    md = ev.table_to_markdown(single)
    assert md.splitlines()[0].startswith("| model | group | n |") and len(md.splitlines()) == 4


def test_plots_write_png_files(tmp_path) -> None:
    y, p = _forecast(300, 7)
    forecasts = {"model": p, "market": np.clip(p * 0.9 + 0.05, 0, 1), "constant": np.full(300, 0.5)}
    calib = ev.plot_calibration(y, forecasts, tmp_path / "plots" / "calibration.png")
    roc, pr = ev.plot_roc_pr(y, forecasts, tmp_path / "roc.png", tmp_path / "pr.png")
    groups = ev.length_buckets(np.arange(300) % 20, edges=(1, 8))
    table = ev.metrics_by_group(y, forecasts, groups)
    by_len = ev.plot_metric_by_group(table, tmp_path / "by_length.png", metric="brier")
    for path in (calib, roc, pr, by_len):
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, path
    # one-class data still plots (curves left out, no crash)
    ev.plot_roc_pr(
        np.ones(10), {"m": np.linspace(0, 1, 10)}, tmp_path / "r1.png", tmp_path / "p1.png"
    )
    assert (tmp_path / "r1.png").stat().st_size > 0


def test_module_imports_neither_torch_nor_pyplot() -> None:
    code = (
        "import sys, odds_pipeline.training.evaluation; "
        "bad = {'torch', 'matplotlib.pyplot', 'sklearn'} & set(sys.modules); print(sorted(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
