"""Drift statistics: PSI/KS/Wasserstein verdicts, BH adjustment, frozen bins that never re-fit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from odds_pipeline.monitoring import drift
from odds_pipeline.monitoring.drift import (
    DRIFT_TABLE_COLUMNS,
    DriftConfig,
    FrozenBins,
    benjamini_hochberg,
    bin_counts,
    drift_table,
    freeze_reference,
    psi,
)

N = 20_000
CONFIG = DriftConfig()


def normal(seed: int, n: int = N, loc: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, 1.0, n)


def one_feature(
    reference: np.ndarray, current: np.ndarray, config: DriftConfig = CONFIG
) -> pd.Series:
    frozen = freeze_reference(pd.DataFrame({"x": reference}), ["x"], config)
    table = drift_table(frozen, pd.DataFrame({"x": current}), config)
    assert len(table) == 1
    return table.iloc[0]


# --------------------------------------------------------------------------- verdicts
def test_identical_distributions_do_not_drift() -> None:
    row = one_feature(normal(1), normal(2))
    assert row["psi"] < 0.01
    assert row["severity"] == "none"
    assert not row["drifted"]
    assert row["ks_statistic"] < 0.03
    assert row["wasserstein"] < 0.05
    assert row["reason"].startswith("PSI ") and row["reason"].endswith("< 0.1")


def test_half_std_mean_shift_is_drift() -> None:
    # Decile-binned PSI of a 0.5 std normal shift is 0.238 in the population: just under the
    # 0.25 "major" band, so the verdict comes from "moderate" plus a significant KS test.
    row = one_feature(normal(1), normal(2, loc=0.5))
    assert 0.2 < row["psi"] < 0.28
    assert row["severity"] in {"moderate", "major"}
    assert row["ks_pvalue_bh"] < 1e-12
    assert row["drifted"]
    assert 0.4 < row["wasserstein"] < 0.6  # in reference stds


def test_larger_mean_shift_is_major() -> None:
    row = one_feature(normal(1), normal(2, loc=0.75))
    assert row["psi"] >= 0.25
    assert row["severity"] == "major"
    assert row["drifted"]
    assert row["reason"] == f"PSI {row['psi']:.3g} >= 0.25"


def test_moderate_psi_without_significant_ks_is_not_drifted() -> None:
    # Bands moved so that identical data is "moderate": the KS guard must then say no.
    config = DriftConfig(psi_bands=(0.0, 0.25))
    row = one_feature(normal(1), normal(2), config)
    assert row["severity"] == "moderate"
    assert row["ks_pvalue_bh"] >= config.fdr_alpha
    assert not row["drifted"]
    assert "but KS q" in row["reason"]


def test_constant_feature() -> None:
    reference = np.full(1_000, 3.0)
    frozen = freeze_reference(pd.DataFrame({"x": reference}), ["x"], CONFIG)["x"]
    assert frozen.edges == [3.0, float(np.nextafter(3.0, np.inf))]
    assert frozen.reference_counts == [0, 1_000, 0, 0]

    same = one_feature(reference, np.full(500, 3.0))
    assert same["psi"] == pytest.approx(0.0, abs=1e-12)
    assert same["severity"] == "none" and not same["drifted"]
    assert same["wasserstein"] == 0.0  # scale falls back to 1, no division by zero

    for moved in (2.0, 4.0):  # below and above the constant both leave its bin
        row = one_feature(reference, np.full(500, moved))
        assert row["severity"] == "major" and row["drifted"], moved
        assert row["ks_statistic"] == 1.0
        assert row["wasserstein"] == pytest.approx(1.0)


def test_missing_share_increase_raises_psi() -> None:
    reference = normal(1)
    previous = -1.0
    for share in (0.0, 0.05, 0.2, 0.5):
        current = normal(2)
        current[: int(share * N)] = np.nan
        row = one_feature(reference, current)
        assert row["missing_share_current"] == pytest.approx(share)
        assert row["psi"] > previous
        previous = row["psi"]
    assert row["severity"] == "major" and row["drifted"]


def test_infinities_count_as_missing() -> None:
    reference = normal(1)
    reference[:100] = np.inf
    current = normal(2)
    current[:2_000] = -np.inf
    current[2_000:3_000] = np.nan
    frozen = freeze_reference(pd.DataFrame({"x": reference}), ["x"], CONFIG)["x"]
    assert frozen.reference_counts[-1] == 100
    assert all(np.isfinite(frozen.reference_sample))
    row = one_feature(reference, current)
    assert row["missing_share_reference"] == pytest.approx(100 / N)
    assert row["missing_share_current"] == pytest.approx(3_000 / N)


def test_nullable_dtype_missing_is_missing() -> None:
    reference = pd.DataFrame({"x": pd.array(np.arange(1_000) % 7, dtype="Int64")})
    current = reference.copy()
    current.loc[:499, "x"] = pd.NA
    frozen = freeze_reference(reference, ["x"], CONFIG)
    row = drift_table(frozen, current, CONFIG).iloc[0]
    assert row["missing_share_current"] == 0.5
    assert row["severity"] == "major"


def test_below_min_samples_is_not_enough_data() -> None:
    row = one_feature(normal(1), normal(2, n=57, loc=3.0))
    assert row["severity"] == "not_enough_data"
    assert not row["drifted"]
    assert row["reason"] == "n_current 57 < min_samples 200"
    assert np.isnan(row["ks_pvalue_bh"])
    assert row["psi"] > 0.25  # the statistics are still reported, just no verdict

    small_reference = one_feature(normal(1, n=150), normal(2))
    assert small_reference["severity"] == "not_enough_data"
    assert small_reference["reason"] == "n_reference 150 < min_samples 200"
    assert not small_reference["drifted"]


def test_empty_current_window_and_missing_column() -> None:
    frozen = freeze_reference(pd.DataFrame({"a": normal(1), "b": normal(2)}), ["a", "b"], CONFIG)
    empty = drift_table(frozen, pd.DataFrame({"a": np.array([], dtype=float)}), CONFIG)
    assert list(empty["severity"]) == ["not_enough_data", "not_enough_data"]
    assert list(empty["reason"]) == ["n_current 0 < min_samples 200", "column missing"]
    assert not empty["drifted"].any()
    assert empty["n_current"].tolist() == [0, 0]


def test_bh_only_counts_features_with_a_verdict() -> None:
    reference = pd.DataFrame({"a": normal(1), "b": normal(2), "c": normal(3)})
    frozen = freeze_reference(reference, ["a", "b", "c"], CONFIG)
    current = pd.DataFrame(
        {
            "a": normal(4, loc=0.3),
            "b": normal(5),
            "c": np.concatenate([normal(6, n=50), np.full(N - 50, np.nan)]),
        }
    )
    table = drift_table(frozen, current, CONFIG).set_index("feature")
    assert table.loc["c", "severity"] == "major"  # 99.75% missing is a verdict, not thin data

    # With n_current 100 < 200 nobody has a verdict: every adjusted p-value is NaN.
    thin_table = drift_table(frozen, current.iloc[:100], CONFIG)
    assert (thin_table["severity"] == "not_enough_data").all()
    assert thin_table["ks_pvalue_bh"].isna().all()
    assert thin_table["ks_pvalue"].notna().all()

    verdicts = table["severity"] != "not_enough_data"
    expected = benjamini_hochberg(table.loc[verdicts, "ks_pvalue"].to_numpy())
    np.testing.assert_allclose(table.loc[verdicts, "ks_pvalue_bh"].to_numpy(), expected)


def test_table_columns_and_types() -> None:
    frozen = freeze_reference(pd.DataFrame({"x": normal(1)}), ["x"], CONFIG)
    table = drift_table(frozen, pd.DataFrame({"x": normal(2)}), CONFIG)
    assert list(table.columns) == list(DRIFT_TABLE_COLUMNS)
    assert table["drifted"].dtype == bool
    assert table["n_current"].dtype == np.int64
    assert drift_table({}, pd.DataFrame(), CONFIG).columns.tolist() == list(DRIFT_TABLE_COLUMNS)


def test_non_numeric_column_is_refused() -> None:
    with pytest.raises(TypeError, match="non-numeric"):
        freeze_reference(pd.DataFrame({"x": ["a", "b"]}), ["x"], CONFIG)


# --------------------------------------------------------------------------- frozen bins
def test_current_window_never_refits_edges() -> None:
    reference = normal(1)
    frozen = freeze_reference(pd.DataFrame({"x": reference}), ["x"], CONFIG)
    edges_before = list(frozen["x"].edges)
    above = reference.max() + 1.0 + np.random.default_rng(3).random(5_000)

    counts = bin_counts(above, frozen["x"].edges)
    assert counts.tolist() == [0] * len(edges_before) + [5_000, 0]

    row = drift_table(frozen, pd.DataFrame({"x": above}), CONFIG).iloc[0]
    assert frozen["x"].edges == edges_before
    assert row["psi"] == pytest.approx(psi(frozen["x"].reference_counts, counts, 0.5))
    assert row["psi"] > 1.0  # a re-fitted decile binning would give ~0 here
    assert row["severity"] == "major" and row["drifted"]


def test_bin_counts_boundaries_and_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.nan, np.inf, -np.inf])
    # bins (-inf, 0), [0, 1), [1, inf), missing: an edge value belongs to the bin above it
    assert bin_counts(values, [0.0, 1.0]).tolist() == [1, 2, 2, 3]
    assert bin_counts(values, []).tolist() == [5, 3]

    rng = np.random.default_rng(5)
    many = rng.normal(size=10_000)
    many[::97] = np.nan
    many[::89] = np.inf
    edges = np.linspace(-3.0, 3.0, 61)
    many[:61] = edges  # values on the edges on purpose
    searched = bin_counts(many, edges)  # > 32 edges: searchsorted path
    monkeypatch.setattr(drift, "_COMPARE_MAX_EDGES", 1_000)
    compared = bin_counts(many, edges)
    assert searched.tolist() == compared.tolist()
    assert searched.sum() == many.size
    assert searched[-1] == np.count_nonzero(~np.isfinite(many))


def test_freeze_reference_bins_and_sample() -> None:
    reference = normal(1, n=100_000)
    reference[:1_000] = np.nan
    frozen = freeze_reference(pd.DataFrame({"x": reference}), ["x"], CONFIG)["x"]
    assert len(frozen.edges) == CONFIG.bins - 1
    assert frozen.edges == sorted(frozen.edges)
    assert frozen.reference_n == 100_000
    assert sum(frozen.reference_counts) == 100_000
    assert frozen.reference_counts[-1] == 1_000
    # the two outer bins are open-ended deciles like the others
    np.testing.assert_allclose(frozen.reference_counts[:-1], 9_900, rtol=0.01)
    assert len(frozen.reference_sample) == drift.REFERENCE_SAMPLE_SIZE
    assert len(set(frozen.reference_sample)) == drift.REFERENCE_SAMPLE_SIZE  # no replacement
    again = freeze_reference(pd.DataFrame({"x": reference}), ["x"], CONFIG)["x"]
    assert again == frozen  # seeded
    other = freeze_reference(pd.DataFrame({"x": reference}), ["x"], CONFIG, seed=8)["x"]
    assert other.reference_sample != frozen.reference_sample
    assert other.edges == frozen.edges


def test_frozen_bins_round_trip_through_json() -> None:
    frame = pd.DataFrame({"x": normal(1), "c": np.full(N, 0.1)})
    frozen = freeze_reference(frame, ["x", "c"], CONFIG)
    text = json.dumps({k: v.to_dict() for k, v in frozen.items()})
    restored = {k: FrozenBins.from_dict(v) for k, v in json.loads(text).items()}
    assert restored == frozen
    current = pd.DataFrame({"x": normal(2, loc=0.2), "c": np.full(N, 0.1)})
    pd.testing.assert_frame_equal(
        drift_table(restored, current, CONFIG), drift_table(frozen, current, CONFIG)
    )


def test_frozen_bins_validate() -> None:
    good = {
        "feature": "x",
        "edges": [0.0, 1.0],
        "reference_counts": [1, 2, 3, 4],
        "reference_n": 10,
        "reference_sample": [0.5],
    }
    FrozenBins.from_dict(good)
    with pytest.raises(ValueError, match="counts"):
        FrozenBins.from_dict({**good, "reference_counts": [1, 2, 3]})
    with pytest.raises(ValueError, match="sum to reference_n"):
        FrozenBins.from_dict({**good, "reference_n": 11})
    with pytest.raises(ValueError, match="increasing"):
        FrozenBins.from_dict({**good, "edges": [1.0, 0.0]})


def test_kept_current_sample_is_bounded_and_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "MAX_CURRENT_SAMPLE", 1_000)
    frozen = freeze_reference(pd.DataFrame({"x": normal(1)}), ["x"], CONFIG)
    current = pd.DataFrame({"x": normal(2, loc=0.1)})
    first = drift_table(frozen, current, CONFIG)
    pd.testing.assert_frame_equal(first, drift_table(frozen, current, CONFIG))
    full = stats.ks_2samp(frozen["x"].reference_sample, current["x"])
    assert first.loc[0, "ks_statistic"] != full.statistic  # the subsample was used
    assert first.loc[0, "n_current"] == N  # PSI and counts still see every row


# --------------------------------------------------------------------------- psi / BH
def test_psi_basics() -> None:
    assert psi([10, 20, 30, 0], [10, 20, 30, 0], 0.5) == pytest.approx(0.0)
    assert psi([10, 20, 30, 0], [20, 40, 60, 0], 0.0) == pytest.approx(0.0)  # shares, not counts
    p, q = np.array([0.5, 0.5]), np.array([0.8, 0.2])
    expected = float(((q - p) * np.log(q / p)).sum())
    assert psi([50, 50], [80, 20], 0.0) == pytest.approx(expected)
    assert psi([50, 50], [80, 20], 0.0) == pytest.approx(psi([80, 20], [50, 50], 0.0))
    assert psi([50, 50, 0], [50, 40, 10], 0.0) == np.inf
    assert np.isfinite(psi([50, 50, 0], [50, 40, 10], 0.5))
    # a bin empty in both windows adds nothing, whatever the window sizes
    assert psi([500_000, 500_000, 0], [100, 100, 0], 0.5) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3], 0.5)
    with pytest.raises(ValueError):
        psi([0, 0], [1, 2], 0.5)


def test_benjamini_hochberg_hand_computed() -> None:
    # m = 8, sorted: p_(i) * 8 / i = .008 .032 .104 .082 .0672 .08 .08457 .205,
    # then the running minimum from the top enforces monotonicity (.104 and .082 -> .0672).
    p = np.array([0.042, 0.001, 0.074, 0.039, 0.205, 0.008, 0.06, 0.041])
    expected = np.array([0.0672, 0.008, 0.074 * 8 / 7, 0.0672, 0.205, 0.032, 0.08, 0.0672])
    np.testing.assert_allclose(benjamini_hochberg(p), expected)
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))


def test_benjamini_hochberg_nan_ties_and_cap() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(
        benjamini_hochberg(p), [0.02, np.nan, 0.04, 0.04, 0.02, np.nan], equal_nan=True
    )
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.5, 0.9, 0.99])), [0.99] * 3)
    assert benjamini_hochberg(np.array([0.7])).tolist() == [0.7]
    assert np.isnan(benjamini_hochberg(np.array([np.nan, np.nan]))).all()
    assert benjamini_hochberg(np.array([])).shape == (0,)
    raw = np.random.default_rng(0).random(50)
    adjusted = benjamini_hochberg(raw)
    order = np.argsort(raw)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert (adjusted >= raw).all() and (adjusted <= 1).all()


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DriftConfig(fdr_alpha=0.0)
    with pytest.raises(ValueError):
        DriftConfig(psi_bands=(0.3, 0.1))
    with pytest.raises(ValueError):
        DriftConfig(psi_smoothing=-1.0)
