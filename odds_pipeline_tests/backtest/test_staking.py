"""Kelly staking: hand-computed cases, brute-force optimality, properties and input errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from odds_pipeline.backtest.staking import (
    StakingError,
    expected_log_growth,
    kelly_fraction,
    kelly_stakes,
    simultaneous_kelly,
)

probability = st.floats(0.0, 1.0)
price = st.floats(1.01, 50.0)


@st.composite
def bets(draw, max_size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_size))
    p = np.array(draw(st.lists(probability, min_size=n, max_size=n)))
    prices = np.array(draw(st.lists(price, min_size=n, max_size=n)))
    return p, prices


@st.composite
def events(draw) -> tuple[np.ndarray, np.ndarray]:
    """One event with 2-4 outcomes: probabilities summing to 1 (or less), prices near fair."""
    n = draw(st.integers(2, 4))
    weights = np.array(draw(st.lists(st.floats(0.02, 1.0), min_size=n, max_size=n)))
    probs = weights / weights.sum() * draw(st.sampled_from([1.0, 1.0, 0.97]))
    tweaks = np.array(draw(st.lists(st.floats(0.8, 1.25), min_size=n, max_size=n)))
    prices = np.maximum(tweaks / probs, 1.01)
    return probs, prices


def grid_argmax_growth(
    probs: np.ndarray, prices: np.ndarray, step: float
) -> tuple[np.ndarray, float]:
    """Brute force: the best fractions on a grid over the simplex sum(f) <= 1."""
    ticks = round(1 / step)
    best, best_growth = np.zeros(len(probs)), -math.inf
    for counts in itertools.product(range(ticks + 1), repeat=len(probs)):
        if sum(counts) > ticks:
            continue
        f = np.array(counts) / ticks
        g = expected_log_growth(f, probs, prices)
        if g > best_growth:
            best, best_growth = f, g
    return best, best_growth


# --- kelly_fraction ------------------------------------------------------------------------


def test_kelly_fraction_hand_computed():
    # p = 0.6 at evens: f* = (1.2 - 1) / 1 = 0.2
    assert kelly_fraction(0.6, 2.0) == pytest.approx(0.2)
    # p = 0.3 at 4.0: f* = (1.2 - 1) / 3 = 1/15
    assert kelly_fraction(0.3, 4.0) == pytest.approx(1 / 15)
    assert kelly_fraction(1.0, 1.5) == pytest.approx(1.0)


def test_kelly_fraction_is_zero_without_edge():
    assert kelly_fraction(0.5, 2.0) == 0.0  # fair
    assert kelly_fraction(0.4, 2.0) == 0.0  # negative edge: never a negative stake
    assert kelly_fraction(0.0, 10.0) == 0.0


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.01, 0.99), price=st.floats(1.05, 20.0))
def test_full_kelly_maximises_single_bet_log_growth_on_grid(p, price):
    fractions = np.arange(0, 1001) / 1000
    growth = np.array([expected_log_growth([f], [p], [price]) for f in fractions])
    kelly = kelly_fraction(p, price)
    assert expected_log_growth([kelly], [p], [price]) >= growth.max() - 1e-12
    assert abs(fractions[np.argmax(growth)] - kelly) <= 0.001 + 1e-9


# --- kelly_stakes --------------------------------------------------------------------------


def test_kelly_stakes_hand_computed_with_caps_limits_and_increment():
    p = np.array([0.6, 0.3, 0.5, 0.55, 0.9])
    prices = np.array([2.0, 4.0, 2.0, 2.0, 2.0])
    # full Kelly: 0.2, 1/15, 0 (fair), 0.1, 0.8; quarter: 0.05, 1/60, 0, 0.025, 0.2
    stakes = kelly_stakes(p, prices, 1000.0, fraction=0.25, max_stake_share=0.1)
    np.testing.assert_allclose(stakes, [50.0, 1000 / 60, 0.0, 25.0, 100.0])  # last one capped

    limited = kelly_stakes(
        p, prices, 1000.0, max_stake_share=0.1, limits=[np.inf, 10.0, 5.0, np.inf, 80.0]
    )
    np.testing.assert_allclose(limited, [50.0, 10.0, 0.0, 25.0, 80.0])

    rounded = kelly_stakes(p, prices, 1000.0, max_stake_share=0.1, increment=5.0)
    np.testing.assert_allclose(rounded, [50.0, 15.0, 0.0, 25.0, 100.0])


def test_kelly_stakes_min_edge_skips_thin_edges():
    p = np.array([0.52, 0.6])
    stakes = kelly_stakes(p, [2.0, 2.0], 100.0, min_edge=0.05)
    assert stakes[0] == 0.0  # edge 0.04 < 0.05
    assert stakes[1] > 0.0


def test_kelly_stakes_scale_down_to_bankroll():
    p = np.full(4, 0.9)
    stakes = kelly_stakes(p, np.full(4, 2.0), 100.0, fraction=1.0, max_stake_share=1.0)
    # each wants 80; four of them are scaled to 25 each
    np.testing.assert_allclose(stakes, [25.0] * 4)
    assert stakes.sum() <= 100.0


def test_kelly_stakes_rounding_keeps_exact_multiples():
    # 0.3 / 0.1 < 3 in floating point; the stake must not drop to 0.2
    unrounded = kelly_stakes([0.9], [2.0], 1.5, fraction=0.25, max_stake_share=0.2)
    stakes = kelly_stakes([0.9], [2.0], 1.5, fraction=0.25, max_stake_share=0.2, increment=0.1)
    assert unrounded[0] == pytest.approx(0.3)
    assert stakes[0] == pytest.approx(0.3)
    assert stakes[0] <= unrounded[0]


def test_kelly_stakes_scalar_inputs_give_1d_array():
    stakes = kelly_stakes(0.6, 2.0, 100.0)
    assert stakes.shape == (1,)
    assert stakes[0] == pytest.approx(5.0)  # quarter Kelly 0.05 hits the 5% cap exactly


@settings(max_examples=150, deadline=None)
@given(
    data=bets(),
    bankroll=st.floats(0.01, 1e7),
    fraction=st.floats(0.01, 1.0),
    share=st.floats(0.01, 1.0),
    min_edge=st.floats(-0.5, 0.5),
    with_increment=st.booleans(),
)
def test_kelly_stakes_properties(data, bankroll, fraction, share, min_edge, with_increment):
    p, prices = data
    increment = bankroll / 137 if with_increment else None
    stakes = kelly_stakes(
        p,
        prices,
        bankroll,
        fraction=fraction,
        max_stake_share=share,
        min_edge=min_edge,
        increment=increment,
    )
    edge = p * prices - 1
    assert stakes.shape == p.shape
    assert np.all(np.isfinite(stakes))
    assert np.all(stakes >= 0)
    assert np.all(stakes[edge <= 0] == 0)  # never a stake on a non-positive edge
    assert np.all(stakes[edge < min_edge] == 0)
    assert stakes.sum() <= bankroll
    assert np.all(stakes <= share * bankroll)


@settings(max_examples=150, deadline=None)
@given(
    data=bets(max_size=19),
    bankroll=st.floats(1.0, 1e6),
    fractions=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)),
    with_increment=st.booleans(),
)
def test_kelly_stakes_monotone_in_fraction(data, bankroll, fractions, with_increment):
    # with the default 5% cap and < 20 bets the bankroll never forces a proportional cut,
    # so each stake on its own must grow with the Kelly fraction
    p, prices = data
    low, high = sorted(fractions)
    increment = 0.01 if with_increment else None
    small = kelly_stakes(p, prices, bankroll, fraction=low, increment=increment)
    large = kelly_stakes(p, prices, bankroll, fraction=high, increment=increment)
    assert np.all(small <= large)


@settings(max_examples=100, deadline=None)
@given(data=bets(), fractions=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)))
def test_total_stake_monotone_in_fraction_even_when_scaled(data, fractions):
    p, prices = data
    low, high = sorted(fractions)
    small = kelly_stakes(p, prices, 100.0, fraction=low, max_stake_share=1.0)
    large = kelly_stakes(p, prices, 100.0, fraction=high, max_stake_share=1.0)
    assert small.sum() <= large.sum() + 1e-9


# --- simultaneous_kelly --------------------------------------------------------------------


def test_simultaneous_kelly_single_outcome_is_plain_kelly():
    np.testing.assert_allclose(simultaneous_kelly([0.6], [2.0]), [0.2])
    np.testing.assert_allclose(simultaneous_kelly([0.3], [4.0]), [1 / 15])
    np.testing.assert_allclose(simultaneous_kelly([0.4], [2.0]), [0.0])


def test_simultaneous_kelly_hand_computed_three_way():
    # home/draw/away, true probabilities 0.5/0.3/0.2 at 2.2/3.5/4.5:
    # expected returns 1.1, 1.05, 0.9. Take home: R = 0.5 / (1 - 1/2.2) = 0.9167 < 1.05, so
    # take the draw: R = 0.2 / (1 - 1/2.2 - 1/3.5) = 0.7568 < 0.9 as well, so take away:
    # R = 0 / (1 - 1/2.2 - 1/3.5 - 1/4.5) = 0 (the book is under-round: an arbitrage).
    probs = np.array([0.5, 0.3, 0.2])
    prices = np.array([2.2, 3.5, 4.5])
    assert 1 / 2.2 + 1 / 3.5 + 1 / 4.5 < 1
    np.testing.assert_allclose(simultaneous_kelly(probs, prices), probs, atol=1e-12)

    # with an overround the away side is dropped: 1.9 / 3.5 / 4.0 -> e = 0.95, 1.05, 0.8
    prices = np.array([1.9, 3.5, 4.0])
    r = (1 - 0.3) / (1 - 1 / 3.5)  # 0.98 after taking the draw; home's 0.95 is below it
    assert r == pytest.approx(0.98)
    np.testing.assert_allclose(simultaneous_kelly(probs, prices), [0.0, 0.3 - r / 3.5, 0.0])


def test_simultaneous_kelly_no_edge_stakes_nothing():
    probs = np.array([0.45, 0.30, 0.25])
    prices = 1 / (probs * 1.05)  # 5% margin on the fair prices
    np.testing.assert_array_equal(simultaneous_kelly(probs, prices), [0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("probs", "prices"),
    [
        ([0.55, 0.45], [2.0, 2.3]),  # both sides positive: a two-way arbitrage-ish market
        ([0.6, 0.4], [1.9, 2.2]),  # one side positive
        ([0.45, 0.28, 0.27], [2.4, 3.4, 3.3]),  # 1X2, two sides with edge
        ([0.5, 0.3, 0.15], [2.3, 3.2, 5.0]),  # probabilities sum to 0.95: mass left to lose
    ],
)
def test_simultaneous_kelly_matches_brute_force_grid(probs, prices):
    probs, prices = np.array(probs), np.array(prices)
    step = 0.01 if len(probs) == 2 else 0.02
    best, best_growth = grid_argmax_growth(probs, prices, step)
    fractions = simultaneous_kelly(probs, prices)
    growth = expected_log_growth(fractions, probs, prices)
    assert growth >= best_growth - 1e-12  # never worse than any grid point
    assert growth - best_growth < 1e-3  # and the grid gets close to it
    np.testing.assert_allclose(fractions, best, atol=2 * step)


@settings(max_examples=150, deadline=None)
@given(event=events(), raw=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_simultaneous_kelly_beats_any_other_fractions(event, raw):
    probs, prices = event
    fractions = simultaneous_kelly(probs, prices)
    assert np.all(fractions >= 0)
    assert fractions.sum() <= 1 + 1e-12
    expected_return = probs * prices
    if np.all(expected_return <= 1):
        assert np.all(fractions == 0)  # no edge anywhere: no bet at all
    # an outcome without edge may be backed only as a hedge, when its expected return beats
    # the reserve rate R = 1 - sum(f) (e.g. in an under-round book)
    reserve = 1 - fractions.sum()
    assert np.all(fractions[expected_return <= reserve - 1e-12] == 0)
    other = np.array(raw[: len(probs)])
    total = other.sum()
    if total > 1:
        other = other / total * (1 - 1e-9)
    best = expected_log_growth(fractions, probs, prices)
    assert best >= expected_log_growth(other, probs, prices) - 1e-9


# --- expected_log_growth -------------------------------------------------------------------


def test_expected_log_growth_hand_computed():
    # 0.2 of bankroll at 2.0 with p = 0.6: 0.6 log 1.2 + 0.4 log 0.8
    assert expected_log_growth([0.2], [0.6], [2.0]) == pytest.approx(
        0.6 * math.log(1.2) + 0.4 * math.log(0.8)
    )
    # two outcomes covering everything: kept 0.5, wins 0.5 + 0.3*2.5 or 0.5 + 0.2*4
    assert expected_log_growth([0.3, 0.2], [0.6, 0.4], [2.5, 4.0]) == pytest.approx(
        0.6 * math.log(1.25) + 0.4 * math.log(1.3)
    )
    assert expected_log_growth([0.0, 0.0], [0.5, 0.3], [2.0, 3.0]) == 0.0
    assert expected_log_growth([1.0], [0.6], [2.0]) == -math.inf  # losing leaves nothing


def test_expected_log_growth_all_in_on_every_outcome_is_finite():
    probs = np.array([0.1, 0.2, 0.7])  # sums to 1 only up to float noise
    assert expected_log_growth(probs, probs, [12.0, 6.0, 1.5]) > -math.inf


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: kelly_fraction(0.5, 1.0), "1.0"),
        (lambda: kelly_fraction(0.5, 0.95), "0.95"),
        (lambda: kelly_fraction(1.2, 2.0), "1.2"),
        (lambda: kelly_fraction(-0.1, 2.0), "-0.1"),
        (lambda: kelly_fraction(math.nan, 2.0), "nan"),
        (lambda: kelly_fraction(0.5, math.nan), "nan"),
        (lambda: kelly_stakes([0.5, 0.6], [2.0, 0.9], 100.0), "0.9 at index 1"),
        (lambda: kelly_stakes([0.5, math.nan], [2.0, 2.0], 100.0), "nan at index 1"),
        (lambda: kelly_stakes([0.6], [2.0], 0.0), "0.0"),
        (lambda: kelly_stakes([0.6], [2.0], -50.0), "-50.0"),
        (lambda: kelly_stakes([0.6], [2.0], math.nan), "nan"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, fraction=0.0), "0.0"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, fraction=1.5), "1.5"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, fraction=math.nan), "nan"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, max_stake_share=2.0), "2.0"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, min_edge=math.nan), "nan"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, limits=[-3.0]), "-3.0"),
        (lambda: kelly_stakes([0.6], [2.0], 100.0, increment=0.0), "0.0"),
        (lambda: kelly_stakes([0.6, 0.5, 0.4], [2.0, 2.0], 100.0), "shapes"),
        (lambda: simultaneous_kelly([0.6, 0.5], [2.0, 2.0]), "1.1"),
        (lambda: simultaneous_kelly([0.6, 0.4], [2.0, 1.0]), "1.0 at index 1"),
        (lambda: expected_log_growth([0.6, 0.5], [0.5, 0.5], [2.0, 2.0]), "1.1"),
        (lambda: expected_log_growth([-0.1], [0.5], [2.0]), "-0.1"),
    ],
)
def test_bad_inputs_raise_staking_error_naming_the_value(call, fragment):
    with pytest.raises(StakingError) as info:
        call()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


@settings(max_examples=50, deadline=None)
@given(bad_price=st.floats(-10.0, 1.0))
def test_any_price_at_or_below_one_is_rejected(bad_price):
    assume(not math.isnan(bad_price))
    with pytest.raises(StakingError, match="decimal odds > 1") as info:
        kelly_stakes([0.6], [bad_price], 100.0)
    assert repr(float(bad_price)) in str(info.value)
