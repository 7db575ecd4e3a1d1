import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from odds_pipeline.market import odds_math


@pytest.mark.parametrize(
    ("american", "decimal"),
    [(150, 2.5), (-200, 1.5), (100, 2.0), (-100, 2.0), (-110, 1 + 100 / 110), (10000, 101.0)],
)
def test_american_to_decimal_known_values(american, decimal):
    assert odds_math.american_to_decimal(american) == pytest.approx(decimal)


@pytest.mark.parametrize("bad", [0, 50, -99.5, float("nan"), float("inf")])
def test_american_inside_minus100_plus100_is_not_a_price(bad):
    assert math.isnan(odds_math.american_to_decimal(bad))


@given(st.floats(min_value=1.001, max_value=1000.0))
def test_decimal_american_round_trip(decimal):
    assert odds_math.american_to_decimal(odds_math.decimal_to_american(decimal)) == pytest.approx(
        decimal, rel=1e-9
    )


@given(st.lists(st.integers(min_value=-100000, max_value=100000), min_size=1, max_size=50))
def test_vectorised_american_matches_scalar(values):
    vec = odds_math.american_to_decimal_array(np.array(values, dtype=float))
    scalar = [odds_math.american_to_decimal(v) for v in values]
    np.testing.assert_allclose(vec, scalar, equal_nan=True)


@pytest.mark.parametrize(
    ("frac", "decimal"), [("5/2", 3.5), ("1/4", 1.25), ("evs", 2.0), ("11/10", 2.1)]
)
def test_fractional_to_decimal(frac, decimal):
    assert odds_math.fractional_to_decimal(frac) == pytest.approx(decimal)


@pytest.mark.parametrize("bad", ["", "abc", "0/1", "1/0", "-5/2"])
def test_fractional_garbage_is_nan(bad):
    assert math.isnan(odds_math.fractional_to_decimal(bad))


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=50))
def test_fractional_round_trip(num, den):
    decimal = 1 + num / den
    assert odds_math.fractional_to_decimal(
        odds_math.decimal_to_fractional(decimal)
    ) == pytest.approx(decimal)


def test_implied_probability():
    assert odds_math.implied_probability(2.5) == pytest.approx(0.4)
    assert math.isnan(odds_math.implied_probability(1.0))
