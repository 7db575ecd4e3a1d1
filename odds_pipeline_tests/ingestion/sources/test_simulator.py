"""The simulated market: contract, determinism, market microstructure and the kept truth."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from odds_pipeline.ingestion.sources import simulator
from odds_pipeline.ingestion.sources.simulator import (
    SimulatorConfig,
    config_from_mapping,
    generate,
    iter_batches,
    simulate_truth,
)
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.market.quotes import EVENT_COLUMNS, QUOTE_COLUMNS, RESULT_COLUMNS, combine

SMALL = SimulatorConfig(seed=11, n_events=40, batch_events=16)
STRING_COLUMNS = [
    c
    for c in QUOTE_COLUMNS
    if c not in {"point", "price", "observed_at", "ingested_at", "in_play", "last_update"}
]


@pytest.fixture(scope="module")
def small() -> simulator.ParseResult:
    return generate(SMALL)


@pytest.fixture(scope="module")
def market() -> simulator.ParseResult:
    """Enough events for the statistical microstructure tests (sharp lead, margins)."""
    return generate(SimulatorConfig(seed=5, n_events=150), trusted=True)


def _as_object(frame: pd.DataFrame) -> pd.DataFrame:
    """Trusted frames hold pyarrow strings; compare values as Python objects (NA -> None)."""
    out = frame.copy()
    for col in STRING_COLUMNS:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _h2h_home_prob(quotes: pd.DataFrame) -> pd.DataFrame:
    """De-vigged home probability of each h2h quote moment (2-way markets)."""
    h2h = quotes[quotes["market"] == "h2h"]
    wide = h2h.pivot_table(
        index=["event_id", "bookmaker", "observed_at"],
        columns="outcome",
        values="price",
        observed=True,
    )
    inv_home, inv_away = 1.0 / wide["home"], 1.0 / wide["away"]
    return (inv_home / (inv_home + inv_away)).rename("implied").reset_index()


def _arbitrage_windows(quotes: pd.DataFrame) -> int:
    """Times the best h2h prices across books (each book's latest quote) turned into an arb."""
    h2h = _as_object(quotes[quotes["market"] == "h2h"])
    wide = h2h.pivot_table(
        index=["event_id", "observed_at"], columns=["bookmaker", "outcome"], values="price"
    )
    wide = wide.groupby(level=0).ffill()
    best_home = wide.xs("home", axis=1, level=1).max(axis=1)
    best_away = wide.xs("away", axis=1, level=1).max(axis=1)
    arb = (1.0 / best_home + 1.0 / best_away) < 1.0
    previous = arb.groupby(level=0).shift(fill_value=False).astype(bool)
    return int((arb & ~previous).sum())


# --------------------------------------------------------------------------- contract


def test_every_price_is_an_accepted_clean_quote(small: simulator.ParseResult) -> None:
    q = small.quotes
    assert small.prices_read == small.quotes_accepted + small.quotes_rejected
    assert small.quotes_rejected == 0 and small.rejected.empty
    assert list(q.columns) == QUOTE_COLUMNS
    assert (
        list(small.events.columns) == EVENT_COLUMNS
        and list(small.results.columns) == RESULT_COLUMNS
    )
    assert small.files == ["simulator:seed-11"]
    assert set(q["load_id"]) == {"simulator:seed-11"} and set(q["source_file"]) == {
        "simulator:seed-11"
    }
    assert set(q["source"]) == {"simulator"} and q["source_record"].isna().all()
    assert set(q["bookmaker"]) == set(SMALL.books)
    assert set(q["market"]) == {"h2h", "spreads", "totals"}
    assert q.groupby("market")["outcome"].unique().map(set).to_dict() == {
        "h2h": {"home", "away"},
        "spreads": {"home", "away"},
        "totals": {"over", "under"},
    }
    assert (q["price"] > 1.0).all() and (q["price"] <= 1000.0).all()
    assert np.allclose(q["price"], q["price"].round(2))
    assert q.loc[q["market"] == "h2h", "point"].isna().all()
    assert q.loc[q["market"] != "h2h", "point"].notna().all()
    assert str(q["observed_at"].dtype) == "datetime64[ns, UTC]"


def test_never_in_play_and_ingested_shortly_after(small: simulator.ParseResult) -> None:
    q = small.quotes.merge(small.events[["event_id", "commence_time"]], on="event_id")
    assert (q["observed_at"] < q["commence_time"]).all()
    assert (q["observed_at"] >= q["commence_time"] - pd.Timedelta(days=SMALL.days_before)).all()
    assert not q["in_play"].any()
    delay = q["ingested_at"] - q["observed_at"]
    assert delay.min() >= pd.Timedelta(0) and delay.max() <= pd.Timedelta(seconds=30)
    assert (
        delay.nunique() > 100
    )  # not one constant shift: "as known" joins have something to bite on


def test_quotes_of_one_moment_cover_every_outcome(small: simulator.ParseResult) -> None:
    q = small.quotes
    per_moment = q.groupby(["event_id", "bookmaker", "observed_at"]).size()
    assert (per_moment == 6).all()
    per_side = q.groupby(["event_id", "bookmaker", "observed_at", "market"])["point"].agg(
        ["first", "last"]
    )
    spreads = per_side.xs("spreads", level="market")
    assert (spreads["first"] == -spreads["last"]).all()  # home -0.5 / away +0.5 and so on
    totals = per_side.xs("totals", level="market")
    assert (totals["first"] == totals["last"]).all()


def test_events_and_results(small: simulator.ParseResult) -> None:
    ev, res = small.events, small.results
    assert ev["event_id"].tolist() == [f"sim:11:{i}" for i in range(40)]
    assert set(ev["league"]) == {"SIM"} and set(ev["sport"]) == {"simulated_football"}
    assert (ev["home_team"] != ev["away_team"]).all() and ev["home_team"].str.match(
        r"Team \d+$"
    ).all()
    kickoffs = ev["commence_time"].diff().dropna()
    assert (kickoffs == pd.Timedelta(hours=3)).all()  # 8 kickoffs a day
    assert ev["commence_time"].iloc[0] == pd.Timestamp("2024-01-04T00:00:00Z")
    assert ev["season"].tolist() == ev["commence_time"].dt.year.astype(str).tolist()
    merged = res.merge(ev, on="event_id")
    assert (merged["resolved_at"] == merged["commence_time"] + pd.Timedelta(hours=2)).all()
    scores = res[["home_score", "away_score"]]
    assert (scores >= 0).all().all() and (scores == scores.round()).all().all()
    assert (res["home_score"] != res["away_score"]).all()  # 2-way market: no draws


def test_config_is_validated_and_builds_from_run_config() -> None:
    with pytest.raises(ValueError, match="time zone"):
        SimulatorConfig(start="2024-01-01 00:00:00")
    with pytest.raises(ValueError, match="unique"):
        SimulatorConfig(sharp_books=("pinnacle",), retail_books=("pinnacle",))
    with pytest.raises(ValueError, match="retail_lag_minutes"):
        SimulatorConfig(retail_lag_minutes=(10, 2))
    cfg = config_from_mapping(
        {"seed": 3, "retail_books": ["a", "b"], "retail_margin": [0.05, 0.06]}
    )
    assert cfg.retail_books == ("a", "b") and cfg.retail_margin == (0.05, 0.06)
    with pytest.raises(ValueError, match="unknown"):
        config_from_mapping({"n_event": 3})


def test_no_events_gives_empty_frames() -> None:
    result = generate(SimulatorConfig(n_events=0))
    assert result.prices_read == 0 and result.quotes.empty and result.events.empty
    assert list(result.quotes.columns) == QUOTE_COLUMNS
    assert result.notes["truth"].empty and "true_home_prob" in result.notes["truth"]


# --------------------------------------------------------------------------- determinism and batches


def test_same_seed_same_frames_other_seed_differs(small: simulator.ParseResult) -> None:
    again = generate(SMALL)
    for name in ("quotes", "events", "results"):
        pd.testing.assert_frame_equal(getattr(small, name), getattr(again, name), check_exact=True)
    pd.testing.assert_frame_equal(small.notes["truth"], again.notes["truth"], check_exact=True)
    other = generate(replace(SMALL, seed=12))
    assert not other.quotes["price"].equals(small.quotes["price"])
    assert set(other.quotes["event_id"]).isdisjoint(small.quotes["event_id"])


def test_content_does_not_depend_on_batch_size_or_event_count(small: simulator.ParseResult) -> None:
    rebatched = generate(replace(SMALL, batch_events=7))
    pd.testing.assert_frame_equal(small.quotes, rebatched.quotes, check_exact=True)
    pd.testing.assert_frame_equal(small.notes["truth"], rebatched.notes["truth"], check_exact=True)
    prefix = generate(replace(SMALL, n_events=10))
    head = small.quotes[small.quotes["event_id"].isin(prefix.events["event_id"])].reset_index(
        drop=True
    )
    pd.testing.assert_frame_equal(prefix.quotes, head, check_exact=True)


def test_books_do_not_change_truth_or_results(small: simulator.ParseResult) -> None:
    fewer_books = generate(replace(SMALL, retail_books=("bet365",), arbitrage_rate=2.0))
    pd.testing.assert_frame_equal(small.results, fewer_books.results)
    pd.testing.assert_frame_equal(small.notes["truth"], fewer_books.notes["truth"])


def test_batches_are_bounded_and_add_up(small: simulator.ParseResult) -> None:
    batches = list(iter_batches(SMALL))
    assert len(batches) == 3  # 40 events in batches of 16
    bound = 16 * simulator.expected_quotes_per_event(SMALL) * 2
    for batch in batches:
        assert batch.events["event_id"].nunique() <= 16
        assert len(batch.quotes) <= bound
        assert batch.prices_read == len(batch.quotes)
        assert set(batch.notes["truth"]["event_id"]) == set(batch.events["event_id"])
    pd.testing.assert_frame_equal(combine(batches).quotes, small.quotes)
    prefetched = list(iter_batches(SMALL, prefetch=True))
    pd.testing.assert_frame_equal(combine(prefetched).quotes, small.quotes)


def test_trusted_path_is_identical_to_validated_path() -> None:
    for draw in (False, True):
        cfg = replace(SMALL, n_events=20, draw=draw)
        validated, trusted = generate(cfg), generate(cfg, trusted=True)
        assert str(trusted.quotes["event_id"].dtype) == "string"
        pd.testing.assert_frame_equal(
            _as_object(trusted.quotes), validated.quotes, check_exact=True
        )
        assert trusted.prices_read == validated.prices_read and trusted.rejected.empty
        pd.testing.assert_frame_equal(trusted.events, validated.events)
        pd.testing.assert_frame_equal(trusted.results, validated.results)


def test_streams_into_one_store_load_and_replaces_it(tmp_path) -> None:
    store = OddsStore(tmp_path / "sim.duckdb")
    cfg = replace(SMALL, n_events=20, batch_events=8)
    expected = 0
    for _ in range(2):  # the second load replaces the first
        expected = 0
        with store.load(cfg.load_id, simulator.SOURCE) as writer:
            for batch in iter_batches(cfg, trusted=True):
                writer.write(batch)
                expected += len(batch.quotes)
    counts = store.query(
        "SELECT (SELECT count(*) FROM odds_quotes) AS q, (SELECT count(*) FROM events) AS e, "
        "(SELECT count(*) FROM results) AS r, (SELECT count(*) FROM odds_quotes WHERE source_record IS NULL) AS nulls"
    ).iloc[0]
    assert counts.tolist() == [expected, 20, 20, expected]
    loads = store.query("SELECT load_id, prices_read, quotes_accepted, quotes_rejected FROM loads")
    assert loads.values.tolist() == [["simulator:seed-11", expected, expected, 0]]


def test_expected_quotes_per_event_predicts_volume(small: simulator.ParseResult) -> None:
    cfg = replace(SMALL, n_events=400)
    actual = sum(len(b.quotes) for b in iter_batches(cfg, trusted=True)) / cfg.n_events
    assert actual == pytest.approx(simulator.expected_quotes_per_event(cfg), rel=0.05)


# --------------------------------------------------------------------------- the truth


def test_truth_is_a_step_function_the_sharp_book_prices(small: simulator.ParseResult) -> None:
    truth = small.notes["truth"]
    pd.testing.assert_frame_equal(truth, simulate_truth(SMALL))
    assert truth.groupby("event_id")["observed_at"].is_monotonic_increasing.all()
    assert not truth.duplicated(["event_id", "observed_at"]).any()
    probs = truth[["true_home_prob", "true_draw_prob", "true_away_prob"]]
    assert np.allclose(probs.sum(axis=1), 1.0) and (truth["true_draw_prob"] == 0).all()
    assert truth["is_shock"].any() and (~truth["is_shock"]).any()
    assert ((truth["true_over_prob"] > 0) & (truth["true_over_prob"] < 1)).all()

    # The sharp book quotes the truth as of its quote time, with its margin, to 2 decimals.
    sharp = small.quotes[
        (small.quotes["bookmaker"] == "pinnacle")
        & (small.quotes["market"] == "h2h")
        & (small.quotes["outcome"] == "home")
    ]
    joined = pd.merge_asof(
        sharp.sort_values("observed_at"),
        truth.sort_values("observed_at")[["event_id", "observed_at", "true_home_prob"]],
        on="observed_at",
        by="event_id",
    )
    fair = 1.0 / (joined["true_home_prob"] * (1 + SMALL.sharp_margin))
    assert (np.abs(joined["price"] - fair.clip(1.01, 1000).round(2)) < 1e-9).all()


def test_outcomes_are_calibrated_to_the_final_truth() -> None:
    cfg = SimulatorConfig(
        seed=21,
        n_events=4000,
        batch_events=2048,
        retail_books=(),
        mean_quotes_per_book_per_day=0.0,
        shock_rate_per_day=0.0,
    )
    result = generate(cfg, trusted=True)
    final = (
        result.notes["truth"].groupby("event_id").tail(1).set_index("event_id")["true_home_prob"]
    )
    res = result.results.set_index("event_id")
    home_win = (res["home_score"] > res["away_score"]).astype(float).reindex(final.index)
    se = np.sqrt((final * (1 - final)).sum()) / len(final)
    assert abs(home_win.mean() - final.mean()) < 4 * se
    for _, group in final.groupby(
        pd.qcut(final, 4), observed=True
    ):  # calibrated within quartiles too
        se_bin = np.sqrt((group * (1 - group)).sum()) / len(group)
        assert abs(home_win[group.index].mean() - group.mean()) < 4 * se_bin


def test_three_way_market_has_draws_at_the_true_rate() -> None:
    cfg = SimulatorConfig(
        seed=4,
        n_events=3000,
        batch_events=1500,
        draw=True,
        retail_books=("bet365",),
        mean_quotes_per_book_per_day=0.5,
    )
    result = generate(cfg, trusted=True)
    h2h = result.quotes[result.quotes["market"] == "h2h"]
    assert set(h2h["outcome"]) == {"home", "draw", "away"}
    assert set(h2h.loc[h2h["outcome"] == "draw", "outcome_name"]) == {"Draw"}
    overround = (
        (1.0 / h2h["price"]).groupby([h2h["event_id"], h2h["bookmaker"], h2h["observed_at"]]).sum()
    )
    assert overround.xs("pinnacle", level="bookmaker").median() == pytest.approx(1.025, abs=0.01)
    final = (
        result.notes["truth"].groupby("event_id").tail(1).set_index("event_id")["true_draw_prob"]
    )
    res = result.results.set_index("event_id").reindex(final.index)
    draws = (res["home_score"] == res["away_score"]).astype(float)
    se = np.sqrt((final * (1 - final)).sum()) / len(final)
    assert 0.15 < final.mean() < 0.35
    assert abs(draws.mean() - final.mean()) < 4 * se


# --------------------------------------------------------------------------- microstructure


def test_retail_margins_are_larger_than_the_sharp_margin(market: simulator.ParseResult) -> None:
    h2h = market.quotes[market.quotes["market"] == "h2h"]
    overround = (
        (1.0 / h2h["price"])
        .groupby([h2h["bookmaker"].astype(object), h2h["event_id"], h2h["observed_at"]])
        .sum()
    )
    median = overround.groupby(level=0).median()
    assert median["pinnacle"] == pytest.approx(1.025, abs=0.005)
    expected = dict(zip(SimulatorConfig().retail_books, np.linspace(0.04, 0.08, 4), strict=True))
    for book, margin in expected.items():
        assert median[book] == pytest.approx(1 + margin, abs=0.005)
        assert median[book] > median["pinnacle"]


def test_sharp_book_moves_first_after_a_shock(market: simulator.ParseResult) -> None:
    truth = market.notes["truth"].copy()
    truth["before"] = truth.groupby("event_id")["true_home_prob"].shift()
    shocks = truth[truth["is_shock"]].copy()
    gap_prev = shocks.groupby("event_id")["observed_at"].diff().fillna(pd.Timedelta(days=9))
    gap_next = (-shocks.groupby("event_id")["observed_at"].diff(-1)).fillna(pd.Timedelta(days=9))
    big = (shocks["true_home_prob"] - shocks["before"]).abs() > 0.06
    isolated = (gap_prev > pd.Timedelta(hours=3)) & (gap_next > pd.Timedelta(hours=3))
    shocks = shocks.loc[big & isolated, ["event_id", "observed_at", "true_home_prob", "before"]]
    shocks = shocks.rename(columns={"observed_at": "shock_at"})
    assert len(shocks) >= 40

    implied = _h2h_home_prob(_as_object(market.quotes))
    after = implied.merge(shocks, on="event_id")
    after = after[
        (after["observed_at"] > after["shock_at"])
        & (after["observed_at"] <= after["shock_at"] + pd.Timedelta(hours=3))
    ]
    moved = after[
        (after["implied"] - after["true_home_prob"]).abs()
        < (after["implied"] - after["before"]).abs()
    ]
    delay = moved.groupby(["event_id", "shock_at", "bookmaker"])["observed_at"].min().reset_index()
    delay["minutes"] = (delay["observed_at"] - delay["shock_at"]).dt.total_seconds() / 60
    per_book = delay.groupby("bookmaker")["minutes"].median()
    sharp, retail = per_book.pop("pinnacle"), per_book
    assert sharp < 5
    assert (retail > sharp + 5).all()
    # Per shock, the sharp book is the first to move in most cases.
    first = delay.loc[delay.groupby(["event_id", "shock_at"])["minutes"].idxmin(), "bookmaker"]
    assert (first == "pinnacle").mean() > 0.8


def test_arbitrage_dial_controls_arbitrage_windows() -> None:
    base = SimulatorConfig(seed=9, n_events=60)
    counts = [
        _arbitrage_windows(generate(replace(base, arbitrage_rate=rate), trusted=True).quotes)
        for rate in (0.0, 1.0, 3.0)
    ]
    assert counts[0] < counts[1] < counts[2]
    assert counts[0] < 0.7 * counts[1] and counts[2] > 1.3 * counts[1]
    assert counts[1] >= 20  # the default market does have windows to find


# --------------------------------------------------------------------------- regime change

# Digests of SMALL's frames, computed before the regime change existed: a config that does
# not use it must keep producing exactly these (a change here changes every stored market).
GOLDEN_SMALL = {
    "quotes": "53ba7d0da15e9971",
    "events": "de71dd082c4c8682",
    "results": "2e00ce8bb27d2558",
    "truth": "fbd56eb3386ff0d0",
}
DRILL_EVENTS = 1600
DRILL_CHANGE = DRILL_EVENTS // 2  # first event of the new regime: inside block 3 (768-1023)
DRILL_BASE = SimulatorConfig(seed=17, n_events=DRILL_EVENTS)


def _opening_of(event: int) -> str:
    """When event `event`'s market opens (every 3 hours from start): a change "at" it."""
    return (pd.Timestamp(DRILL_BASE.start) + pd.Timedelta(hours=3 * event)).isoformat()


DRILL = replace(
    DRILL_BASE,
    regime_change_at=_opening_of(DRILL_CHANGE),
    regime_home_advantage=1.3,
    regime_retail_margin=(0.10, 0.16),
    regime_drift_scale=0.09,
    regime_shock_rate_per_day=1.5,
)


def _digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:16]


def _split(frame: pd.DataFrame, first_new: int = DRILL_CHANGE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(old regime rows, new regime rows) by event number (ids are sim:<seed>:<n>)."""
    codes, ids = pd.factorize(frame["event_id"])
    new = np.array([int(i.rsplit(":", 1)[1]) >= first_new for i in ids], dtype=bool)[codes]
    return frame[~new].reset_index(drop=True), frame[new].reset_index(drop=True)


def _h2h_moments(quotes: pd.DataFrame) -> pd.DataFrame:
    """Per h2h quote moment: overround and logit of the de-vigged home probability."""
    wide = _as_object(quotes[quotes["market"] == "h2h"]).pivot_table(
        index=["event_id", "bookmaker", "observed_at"], columns="outcome", values="price"
    )
    out = pd.DataFrame(
        {
            "overround": 1.0 / wide["home"] + 1.0 / wide["away"],
            "logit": np.log(wide["away"] / wide["home"]),
        }
    ).reset_index()
    out["change"] = out.groupby(["event_id", "bookmaker"])["logit"].diff()
    return out


@pytest.fixture(scope="module")
def drill() -> tuple[simulator.ParseResult, simulator.ParseResult]:
    """(without, with) the regime change: same seed, the change at the window's middle."""
    return generate(DRILL_BASE, trusted=True), generate(DRILL, trusted=True)


def test_without_a_regime_change_the_output_is_unchanged(small: simulator.ParseResult) -> None:
    frames = {n: getattr(small, n) for n in ("quotes", "events", "results")}
    digests = {n: _digest(f) for n, f in frames.items()}
    assert {**digests, "truth": _digest(small.notes["truth"])} == GOLDEN_SMALL
    # A change after the last market opens changes nothing either (the regime-free path).
    late = generate(
        replace(
            SMALL,
            regime_change_at="2030-01-01T00:00:00Z",
            regime_home_advantage=2.0,
            regime_retail_margin=(0.2, 0.3),
            regime_shock_rate_per_day=0.0,
            regime_drift_scale=1.0,
        )
    )
    for name in ("quotes", "events", "results"):
        pd.testing.assert_frame_equal(getattr(late, name), frames[name], check_exact=True)
    pd.testing.assert_frame_equal(late.notes["truth"], small.notes["truth"], check_exact=True)


@pytest.mark.parametrize(
    "regime",
    [
        {f: v for f in simulator._REGIME_FIELDS if (v := getattr(DRILL, f)) is not None},
        {"regime_shock_rate_per_day": 0.1, "regime_retail_lag_minutes": (0.0, 1.0)},  # thins
        {"regime_base_total": 3.4, "regime_shock_scale": 0.1, "regime_home_advantage": -0.5},
    ],
)
def test_events_before_the_change_are_bit_identical(regime: dict) -> None:
    """Even in the block that straddles the change (events 256-511, change at 300)."""
    base_cfg = replace(DRILL_BASE, n_events=600)
    base = generate(base_cfg, trusted=True)
    changed = generate(replace(base_cfg, regime_change_at=_opening_of(300), **regime), trusted=True)
    for name in ("quotes", "events", "results"):
        old, new = _split(getattr(changed, name), 300)
        base_old, base_new = _split(getattr(base, name), 300)
        pd.testing.assert_frame_equal(old, base_old, check_exact=True)
        assert len(old) > 0 and len(new) > 0
    old, new = _split(changed.notes["truth"], 300)
    base_old, base_new = _split(base.notes["truth"], 300)
    pd.testing.assert_frame_equal(old, base_old, check_exact=True)
    assert not new.equals(base_new)  # the new regime did change something
    shocks = new["is_shock"].sum(), base_new["is_shock"].sum()
    if "regime_shock_rate_per_day" in regime:  # thinned or added: the new rate either way
        rate = regime["regime_shock_rate_per_day"] / DRILL.shock_rate_per_day
        assert shocks[0] / shocks[1] == pytest.approx(rate, rel=0.25)
    if "regime_shock_scale" in regime:
        assert shocks[0] == shocks[1]


def test_a_regime_change_is_deterministic_and_batch_independent() -> None:
    """Its extra draws are per block too, so batch size still does not matter."""
    cfg = replace(DRILL, n_events=900, batch_events=300, regime_change_at=_opening_of(400))
    once = generate(cfg, trusted=True)
    pd.testing.assert_frame_equal(
        once.quotes, generate(replace(cfg, batch_events=100), trusted=True).quotes, check_exact=True
    )
    pd.testing.assert_frame_equal(
        once.notes["truth"], simulate_truth(replace(cfg, batch_events=64)), check_exact=True
    )


def test_new_home_advantage_moves_the_truth_and_the_results(
    drill: tuple[simulator.ParseResult, simulator.ParseResult],
) -> None:
    base, changed = drill
    first = [r.notes["truth"].groupby("event_id", sort=False).head(1) for r in (base, changed)]
    logit = [np.log(f["true_home_prob"] / f["true_away_prob"]).to_numpy() for f in first]
    shift = logit[1] - logit[0]  # same draws: exactly the change of home advantage
    assert np.allclose(shift[:DRILL_CHANGE], 0.0, atol=0.0)
    assert np.allclose(shift[DRILL_CHANGE:], 1.3 - 0.3, atol=1e-9)

    home_win = {}
    for label, result in (("base", base), ("changed", changed)):
        res = result.results
        win = pd.Series(
            (res["home_score"] > res["away_score"]).to_numpy(float), index=res["event_id"]
        )
        final = result.notes["truth"].groupby("event_id").tail(1).set_index("event_id")
        for part, ids in zip(("old", "new"), _split(res[["event_id"]]), strict=True):
            p = final.loc[ids["event_id"], "true_home_prob"]
            rate = win[ids["event_id"]].mean()
            home_win[label, part] = rate
            # Results follow the (new) truth: calibrated within 4 standard errors.
            assert abs(rate - p.mean()) < 4 * np.sqrt((p * (1 - p)).sum()) / len(p)
    assert home_win["base", "old"] == home_win["changed", "old"]
    assert home_win["changed", "new"] - home_win["base", "new"] > 0.08  # measured: 0.551 -> 0.724
    assert home_win["changed", "new"] - home_win["changed", "old"] > 0.08


def test_new_retail_margins_move_the_overround(
    drill: tuple[simulator.ParseResult, simulator.ParseResult],
) -> None:
    moments = _h2h_moments(drill[1].quotes)
    old, new = _split(moments)
    median_old, median_new = (m.groupby("bookmaker")["overround"].median() for m in (old, new))
    books = DRILL.retail_books
    for book, m_old, m_new in zip(
        books, np.linspace(0.04, 0.08, 4), np.linspace(0.10, 0.16, 4), strict=True
    ):
        assert median_old[book] == pytest.approx(1 + m_old, abs=0.005)
        assert median_new[book] == pytest.approx(1 + m_new, abs=0.005)
    for median in (median_old, median_new):  # the sharp margin is not part of the regime
        assert median["pinnacle"] == pytest.approx(1.025, abs=0.003)
    # Pooled over retail books (medians: clamped prices at 1.01 bend the mean).
    retail_old = old.loc[old["bookmaker"] != "pinnacle", "overround"].median()
    retail_new = new.loc[new["bookmaker"] != "pinnacle", "overround"].median()
    assert 0.05 < retail_new - retail_old < 0.09  # mean margin 0.06 -> 0.13; measured +0.063


def test_larger_drift_and_more_shocks_move_prices_more(
    drill: tuple[simulator.ParseResult, simulator.ParseResult],
) -> None:
    stats = {}
    for label, result in zip(("base", "changed"), drill, strict=True):
        sharp = _h2h_moments(result.quotes)
        sharp = sharp[sharp["bookmaker"] == "pinnacle"]
        for part, frame in zip(("old", "new"), _split(sharp), strict=True):
            stats[label, part] = (
                frame["change"].abs().mean(),  # mean |change| of the implied logit per re-quote
                frame.groupby("event_id").size().mean(),  # sharp re-quotes per event
            )
    assert stats["changed", "old"] == stats["base", "old"]
    base_ratio = stats["base", "new"][0] / stats["base", "old"][0]
    assert 0.8 < base_ratio < 1.25  # without a change both halves move alike
    assert stats["changed", "new"][0] > 1.8 * stats["base", "new"][0]  # measured: 0.063 -> 0.156
    # A shock a book reacts to is one more re-quote: (1.5 - 0.5) a day * 3 days more.
    assert stats["changed", "new"][1] - stats["base", "new"][1] == pytest.approx(3.0, abs=0.5)


def test_regime_fields_are_validated_by_name_and_build_from_run_config() -> None:
    at = "2024-02-01T00:00:00Z"
    cases = {
        "regime_home_advantage needs regime_change_at": {
            "regime_change_at": None,
            "regime_home_advantage": 1.0,
        },
        "regime_change_at is set but none": {"regime_change_at": at},
        "regime_change_at '2024-02-01' needs a time zone": {
            "regime_change_at": "2024-02-01",
            "regime_base_total": 3.0,
        },
        "regime_change_at 'soon' is not a timestamp": {
            "regime_change_at": "soon",
            "regime_base_total": 3.0,
        },
        "regime_base_total must be a finite number > 0": {"regime_base_total": 0.0},
        "regime_drift_scale must be a finite number >= 0": {"regime_drift_scale": -0.1},
        "regime_shock_rate_per_day must be a finite number >= 0": {
            "regime_shock_rate_per_day": float("nan")
        },
        "regime_shock_scale must be a finite number >= 0": {"regime_shock_scale": "big"},
        "regime_home_advantage must be a finite number": {"regime_home_advantage": float("inf")},
        "regime_retail_margin must be \\(low, high\\)": {"regime_retail_margin": (0.2, 0.1)},
        "regime_retail_lag_minutes must be \\(low, high\\)": {
            "regime_retail_lag_minutes": (1.0, 2.0, 3.0)
        },
    }
    for message, values in cases.items():
        with pytest.raises(ValueError, match=message):
            SimulatorConfig(**{"regime_change_at": at, **values})
    cfg = config_from_mapping(
        {
            "regime_change_at": datetime(2024, 2, 1, tzinfo=UTC),  # how YAML reads a timestamp
            "regime_retail_margin": [0.1, 0.16],
            "regime_retail_lag_minutes": [5, 60],
            "regime_home_advantage": 1,
        }
    )
    assert cfg.regime_change_at == "2024-02-01T00:00:00+00:00"
    assert cfg.regime_retail_margin == (0.1, 0.16) and cfg.regime_retail_lag_minutes == (5, 60)
    assert np.allclose(cfg.margins(regime=True)[1:], np.linspace(0.1, 0.16, 4))
    assert np.allclose(cfg.margins()[1:], np.linspace(0.04, 0.08, 4))
