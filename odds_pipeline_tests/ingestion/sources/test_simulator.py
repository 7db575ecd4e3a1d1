"""The simulated market: contract, determinism, market microstructure and the kept truth."""

from __future__ import annotations

from dataclasses import replace

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
