"""De-vig methods: hand-computed references, longshot ordering, properties, SQL == numpy."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odds_pipeline.market import devig

METHODS = devig.METHODS


def market(*prices: float) -> np.ndarray:
    return 1.0 / np.array(prices)


@st.composite
def markets(draw) -> np.ndarray:
    """Implied probabilities of a 2- or 3-way market: true probabilities times a margin."""
    n = draw(st.integers(2, 3))
    weights = draw(st.lists(st.floats(0.02, 1.0), min_size=n, max_size=n))
    true = np.array(weights) / sum(weights)
    margin = draw(st.floats(-0.04, 0.35))
    return np.clip(true * (1 + margin), 1e-4, 0.9999)


@pytest.mark.parametrize("method", METHODS)
def test_no_margin_comes_back_unchanged(method):
    fair = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(devig.devig(fair, method), fair, atol=1e-12)


def test_multiplicative_is_normalisation():
    p = market(1.90, 2.00)
    s = 1 / 1.90 + 1 / 2.00
    np.testing.assert_allclose(devig.devig_multiplicative(p), [1 / 1.90 / s, 1 / 2.00 / s])


def test_shin_two_way_matches_hand_computation():
    # prices 1.5 / 2.7: pi = (2/3, 10/27), S = 28/27.
    pi1, pi2 = 2 / 3, 10 / 27
    s = pi1 + pi2
    big_a = (pi1**2 + pi2**2) / s
    d = pi1 - pi2
    z = 1 - 2 * (1 - big_a) / (1 - d**2)  # derived from s_1 + s_2 = 2
    assert z == pytest.approx(0.0371643394, abs=1e-9)
    assert devig.shin_z(market(1.5, 2.7)) == pytest.approx(z, abs=1e-12)
    expected = [(math.sqrt(z**2 + 4 * (1 - z) * p**2 / s) - z) / (2 * (1 - z)) for p in (pi1, pi2)]
    assert sum(expected) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(devig.devig_shin(market(1.5, 2.7)), expected, atol=1e-12)


def test_power_exponent_hand_check():
    p = market(1.5, 2.7)
    k = devig.power_exponent(p)
    assert k > 1
    assert np.sum(p**k) == pytest.approx(1.0, abs=1e-12)
    assert devig.power_exponent(np.array([0.45, 0.5])) < 1  # sum below one: k < 1


@pytest.mark.parametrize("method", ["power", "shin"])
def test_power_and_shin_move_probability_away_from_longshots(method):
    p = market(1.20, 6.50, 15.0)  # favourite, outsider, longshot
    m = devig.devig_multiplicative(p)
    other = devig.devig(p, method)
    assert other[0] > m[0]  # the favourite gains
    assert other[2] < m[2]  # the longshot loses
    # relative to its implied probability, the longshot is cut the most
    assert np.argmin(other / p) == 2


def test_invalid_rows_are_nan_and_padding_is_kept():
    rows = np.array([[0.6, 0.5, np.nan], [1.2, 0.1, np.nan], [0.5, np.nan, np.nan]])
    for method in METHODS:
        out = devig.devig(rows, method)
        assert np.isfinite(out[0, :2]).all() and np.isnan(out[0, 2])
        assert np.isnan(out[1]).all()  # an implied probability above 1 is not a price
        assert np.isnan(out[2]).all()  # one outcome is not a market
    with pytest.raises(ValueError):
        devig.devig(rows, "additive")


@settings(max_examples=60, deadline=None)
@given(markets())
def test_every_method_sums_to_one_and_keeps_order(p):
    for method in METHODS:
        out = devig.devig(p, method)
        assert out.sum() == pytest.approx(1.0, abs=1e-9)
        assert (out > 0).all() and (out < 1).all()
        # de-vigging never reorders outcomes
        assert (np.argsort(out, kind="stable") == np.argsort(p, kind="stable")).all() or len(
            set(np.round(p, 12))
        ) < len(p)


@settings(max_examples=60, deadline=None)
@given(markets())
def test_shin_and_power_solutions_satisfy_their_equations(p):
    k = devig.power_exponent(p)
    assert np.sum(p**k) == pytest.approx(1.0, abs=1e-10)
    z = devig.shin_z(p)
    assert -1 < z < 1
    if p.sum() > 1 + 1e-9:
        assert z > 0 and k > 1
    if len(p) == 2:
        assert z == pytest.approx(devig.shin_z_two_way(p[0], p[1]), abs=1e-9)


_CON = duckdb.connect()
_SQL = devig.devig_sql("SELECT * FROM m") + " ORDER BY id"


def _sql_results(rows: list[np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame({"id": range(len(rows)), "probs": [list(r) for r in rows]})
    _CON.register("m", frame)
    try:
        return _CON.execute(_SQL).df()
    finally:
        _CON.unregister("m")


def test_sql_matches_numpy_on_many_markets():
    rng = np.random.default_rng(1)
    rows = []
    for n in (2, 3):
        for _ in range(400):
            true = rng.dirichlet(np.ones(n) * rng.uniform(0.3, 3))
            rows.append(np.clip(true * (1 + rng.uniform(-0.04, 0.5)), 1e-4, 0.9999))
    rows.append(market(1.01, 101.0))  # extreme favourite / longshot
    rows.append(market(1.0526, 12.0, 41.0))
    got = _sql_results(rows)
    padded = np.full((len(rows), 3), np.nan)
    for i, p in enumerate(rows):
        padded[i, : len(p)] = p
    for method in METHODS:
        sql = np.full_like(padded, np.nan)
        for i, values in enumerate(got[f"p_{method}"]):
            sql[i, : len(values)] = values
        np.testing.assert_allclose(sql, devig.devig(padded, method), atol=1e-9, err_msg=method)
    np.testing.assert_allclose(got["k_power"], devig.power_exponent(padded), rtol=1e-9)
    np.testing.assert_allclose(got["z_shin"], devig.shin_z(padded), atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.lists(markets(), min_size=1, max_size=8))
def test_sql_matches_numpy_property(rows):
    got = _sql_results(rows)
    for i, p in enumerate(rows):
        for method in METHODS:
            np.testing.assert_allclose(got.loc[i, f"p_{method}"], devig.devig(p, method), atol=1e-9)


def test_overround_and_implied_probabilities():
    assert devig.overround(market(1.90, 1.90)) == pytest.approx(2 / 1.9 - 1)
    np.testing.assert_allclose(devig.implied_probabilities([2.0, 1.0, 4.0]), [0.5, np.nan, 0.25])


def test_score_methods_on_a_toy_sample():
    probs = np.array([market(1.5, 2.7), market(2.7, 1.5), market(1.9, 1.9)])
    scores = devig.score_methods(probs, [0, 1, 1])
    assert set(scores) == set(METHODS)
    m = scores["multiplicative"]
    fair = devig.devig_multiplicative(probs)
    assert m["markets"] == 3
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([fair[0, 0], fair[1, 1], fair[2, 1]])))
    assert m["brier_outcome0"] == pytest.approx(
        np.mean((fair[:, 0] - np.array([1.0, 0.0, 0.0])) ** 2)
    )
