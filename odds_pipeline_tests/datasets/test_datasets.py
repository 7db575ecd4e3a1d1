"""Sequence datasets: shapes, masks and labels, point-in-time inputs (against odds_quotes and
by truncating the future away), the future-only arb_ahead label, time-ordered splits, a
train-only scaler, content hashes, and football-data's short, mostly masked sequences."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odds_pipeline.datasets import scaling as S
from odds_pipeline.datasets import sequences as D
from odds_pipeline.features.compute import (
    LSTM_FEATURES,
    compute_market_features,
    compute_pair_features,
    compute_quote_features,
)
from odds_pipeline.ingestion.sources import football_data
from odds_pipeline.ingestion.sources.simulator import SimulatorConfig, generate
from odds_pipeline.ingestion.store import OddsStore, connect

SIM = SimulatorConfig(n_events=14, seed=11, arbitrage_rate=2.0, kickoffs_per_day=6.0)
PAIRS = D.PairSequenceConfig(cut_stride=4, min_len=4)
HOUR_US = 3_600_000_000


def _fill(path: Path, result, load_id: str, source: str) -> Path:
    store = OddsStore(path)
    store.replace_load(load_id, source, result)
    with store.connection() as con:
        compute_quote_features(con)
        compute_market_features(con)
        compute_pair_features(con)
    return path


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory):
    """A simulated market in DuckDB with features, plus a copy whose quotes stop at `cut`."""
    root = tmp_path_factory.mktemp("sim")
    result = generate(SIM)
    truth = result.notes["truth"]
    full = _fill(root / "full.duckdb", result, SIM.load_id, "simulator")
    observed = pd.to_datetime(result.quotes["observed_at"], utc=True)
    cut = observed.min() + (observed.max() - observed.min()) * 0.55
    truncated = dataclasses.replace(result, quotes=result.quotes.loc[observed <= cut])
    short = _fill(root / "truncated.duckdb", truncated, SIM.load_id, "simulator")
    con = connect(full, read_only=True)
    lstm = D.build_lstm_sequences(con, truth=truth)
    pairs = D.build_arbitrage_pair_sequences(con, PAIRS)
    quotes = con.execute("SELECT * FROM odds_quotes").df()
    pair_rows = con.execute("SELECT * FROM arbitrage_pair_features").df()
    results = con.execute("SELECT * FROM results").df()
    con.close()
    return {
        "path": full,
        "truncated": short,
        "cut": cut,
        "truth": truth,
        "lstm": lstm,
        "pairs": pairs,
        "quotes": quotes,
        "pair_rows": pair_rows,
        "results": results,
    }


def _us(values) -> np.ndarray:
    return D._to_us(pd.Series(values))


# --------------------------------------------------------------------------- LSTM


def test_lstm_shapes_masks_and_labels(sim):
    ds = sim["lstm"]
    n_events = sim["results"]["event_id"].nunique()
    cfg = D.LstmSequenceConfig()
    assert len(ds) == 2 * n_events  # home and away of every event
    assert ds.x.shape == (len(ds), cfg.steps, len(ds.feature_names)) and ds.x.dtype == np.float32
    assert ds.mask.shape == (len(ds), cfg.steps) and ds.mask.dtype == bool
    assert ds.feature_names[: len(LSTM_FEATURES)] == list(LSTM_FEATURES)  # all 15 channels
    assert (ds.x[~ds.mask] == 0).all()
    assert (ds.meta["seq_len"].to_numpy() == ds.mask.sum(axis=1)).all()
    assert ds.mask.mean() > 0.8  # intraday: most steps have data
    # step times: equally spaced, ending at the decision time = commence - 1 h
    decision = _us(ds.meta["decision_time"])
    assert (decision == _us(ds.meta["commence_time"]) - HOUR_US).all()
    expected = decision[:, None] - (cfg.steps - 1 - np.arange(cfg.steps)) * cfg.step_us
    assert (ds.times[ds.mask] == expected[ds.mask]).all()
    # labels: that side won, from results
    scores = sim["results"].set_index("event_id")
    hs = scores.loc[ds.meta["event_id"], "home_score"].to_numpy()
    as_ = scores.loc[ds.meta["event_id"], "away_score"].to_numpy()
    side = ds.meta["side"].to_numpy()
    assert (ds.y == np.where(side == "home", hs > as_, as_ > hs)).all()
    # baselines: the market's sharp probability at the last real step, and the oracle
    k = ds.feature_names.index("sharp_prob")
    assert ds.mask[:, -1].mean() > 0.5
    tail = np.flatnonzero(ds.mask[:, -1])
    np.testing.assert_allclose(
        ds.meta["market_prob"].to_numpy()[tail], ds.x[tail, -1, k], rtol=1e-6
    )
    assert set(ds.meta["market_prob_source"]) == {"sharp"}
    pair_sum = ds.meta.groupby("event_id")["true_prob"].sum()
    np.testing.assert_allclose(pair_sum, 1.0, atol=1e-9)
    market_sum = ds.meta.groupby("event_id")["market_prob"].sum()
    np.testing.assert_allclose(market_sum, 1.0, atol=1e-6)
    assert set(ds.meta["reference_book"]) == {"pinnacle"}


@pytest.mark.parametrize("knowledge", ["observed", "ingested"])
def test_lstm_values_are_point_in_time_against_odds_quotes(sim, knowledge):
    """The reference book's price at each real step = its latest quote at or before the step
    (and, as known, ingested by then)."""
    quotes = sim["quotes"]
    if knowledge == "observed":
        ds = sim["lstm"]
    else:
        ds = D.build_lstm_sequences(sim["path"], D.LstmSequenceConfig(knowledge="ingested"))
    q = quotes[quotes["market"] == "h2h"].copy()
    q["t"] = _us(q["observed_at"])
    q["i"] = _us(q["ingested_at"])
    k = ds.feature_names.index("decimal_odds")
    h = ds.feature_names.index("hours_to_game")
    ttl_us = 24 * HOUR_US
    checked = 0
    for row in range(0, len(ds), 3):  # a third of the samples, every real step
        m = ds.meta.iloc[row]
        own = q[
            (q["event_id"] == m["event_id"])
            & (q["bookmaker"] == m["reference_book"])
            & (q["outcome"] == m["side"])
        ].sort_values(["t", "i"])
        for step in np.flatnonzero(ds.mask[row]):
            t = ds.times[row, step]
            seen = own[(own["t"] <= t) & (own["t"] >= t - ttl_us)]
            if knowledge == "ingested":
                seen = seen[seen["i"] <= t]
            expected = seen["price"].iloc[-1] if len(seen) else np.nan
            np.testing.assert_allclose(ds.x[row, step, k], expected, rtol=1e-6)
            checked += 1
    assert checked > 100
    # no value at a step was observed after it: hours_to_game of the quote >= commence - t
    commence = _us(ds.meta["commence_time"])[:, None]
    hours = np.where(ds.mask, ds.x[..., h], np.inf)
    gap = (commence - ds.times) / HOUR_US
    assert (hours[ds.mask] >= gap[ds.mask] - 1e-3).all()


def test_lstm_steps_do_not_change_when_the_future_is_removed(sim):
    """Truncating every quote after `cut` leaves every step at or before `cut` identical."""
    full = sim["lstm"]
    short = D.build_lstm_sequences(sim["truncated"], truth=sim["truth"])
    cut = _us([sim["cut"]])[0]
    m = full.meta.reset_index().merge(
        short.meta.reset_index(), on=["event_id", "side"], suffixes=("_f", "_s")
    )
    i, j = m["index_f"].to_numpy(), m["index_s"].to_numpy()
    cfg = D.LstmSequenceConfig()
    steps = (
        _us(m["decision_time_f"])[:, None] - (cfg.steps - 1 - np.arange(cfg.steps)) * cfg.step_us
    )
    past = steps <= cut
    assert past.sum() > 100 and (~past).sum() > 100
    np.testing.assert_array_equal(full.mask[i][past], short.mask[j][past])
    np.testing.assert_array_equal(full.x[i][past], short.x[j][past])  # NaN == NaN here
    assert full.content_hash() != short.content_hash()


# --------------------------------------------------------------------------- pairs


def test_pair_shapes_mask_and_cuts(sim):
    ds, cfg = sim["pairs"], PAIRS
    n = len(ds)
    assert n > 100
    assert ds.x_a.shape == ds.x_b.shape == (n, cfg.max_len, len(D.PAIR_CHANNELS))
    seq_len = ds.meta["seq_len"].to_numpy()
    assert (ds.mask == (np.arange(cfg.max_len)[None, :] < seq_len[:, None])).all()  # left-aligned
    assert seq_len.min() >= cfg.min_len and seq_len.max() <= cfg.max_len
    assert (ds.x_a[~ds.mask] == 0).all() and (ds.x_b[~ds.mask] == 0).all()
    times = np.where(ds.mask, ds.times, np.iinfo(np.int64).max)
    assert (np.diff(times, axis=1)[ds.mask[:, 1:]] > 0).all()  # strictly increasing steps
    cut = _us(ds.meta["cut_time"])
    assert (ds.times[np.arange(n), seq_len - 1] == cut).all()  # sequence ends at the cut
    horizon = int(cfg.horizon_minutes * 60_000_000)
    assert (cut + horizon <= _us(ds.meta["commence_time"])).all()  # pre-match, not censored
    assert (ds.meta["book_a"] < ds.meta["book_b"]).all()
    assert (ds.market_type == ds.meta["market"].map(D.MARKET_TYPE_IDS).to_numpy()).all()
    assert set(ds.meta["market"]) == {"h2h", "spreads", "totals"}
    # several cuts per pair key, spread over the pre-match life
    per_key = ds.meta.groupby(["event_id", "market", "book_a", "book_b", "outcome_a"]).size()
    assert per_key.max() > 2
    k = ds.feature_names.index("implied_sum")
    np.testing.assert_array_equal(ds.x_a[..., k], ds.x_b[..., k])


def test_pair_prices_are_the_books_latest_quotes(sim):
    ds, quotes = sim["pairs"], sim["quotes"]
    q = quotes[quotes["market"] == "h2h"].copy()
    q["t"] = _us(q["observed_at"])
    h2h = np.flatnonzero(ds.meta["market"].to_numpy() == "h2h")[::15]
    k = ds.feature_names.index("odds")
    checked = 0
    for row in h2h:
        m = ds.meta.iloc[row]
        for book, outcome, x in (
            (m["book_a"], m["outcome_a"], ds.x_a),
            (m["book_b"], m["outcome_b"], ds.x_b),
        ):
            own = q[
                (q["event_id"] == m["event_id"])
                & (q["bookmaker"] == book)
                & (q["outcome"] == outcome)
            ].sort_values("t")
            steps = ds.times[row, : m["seq_len"]]
            idx = np.searchsorted(own["t"].to_numpy(), steps, side="right") - 1
            assert (idx >= 0).all()
            np.testing.assert_allclose(
                x[row, : m["seq_len"], k], own["price"].to_numpy()[idx], rtol=1e-6
            )
            checked += 1
    assert checked > 10


def test_arb_now_is_the_classical_rule_on_the_inputs(sim):
    ds = sim["pairs"]
    k = ds.feature_names.index("implied_sum")
    rule = (ds.mask & (ds.x_a[..., k] < 1.0)).any(axis=1)
    assert (ds.y["arb_now"].astype(bool) == rule).all()
    assert (ds.y["arb_now"].astype(bool) == (ds.meta["implied_sum_min"].to_numpy() < 1.0)).all()
    last = ds.x_a[np.arange(len(ds)), ds.meta["seq_len"].to_numpy() - 1, k]
    np.testing.assert_array_equal(ds.meta["implied_sum_last"].to_numpy(), last.astype(np.float64))
    assert 0 < ds.y["arb_now"].sum() < len(ds)


def test_arb_ahead_is_a_window_opening_strictly_after_the_cut(sim):
    """Brute force from the pair table: a Σ implied < 1 instant in (cut, cut + H] whose
    previous instant of the same pair and direction had none."""
    ds, rows = sim["pairs"], sim["pair_rows"].copy()
    keys = ["event_id", "market", "line", "book_a", "book_b", "outcome_a"]
    rows["line"] = rows["line"].fillna(-999.0)
    rows["t"] = _us(rows["observed_at"])
    rows = rows.sort_values([*keys, "t"])
    rows["arb"] = rows["implied_sum"].astype(np.float32) < 1.0
    prev = rows.groupby(keys, sort=False)["arb"].shift(1, fill_value=False)
    opens = rows.loc[rows["arb"] & ~prev.astype(bool), [*keys, "t"]]
    opens = {k: g["t"].to_numpy() for k, g in opens.groupby(keys)}
    horizon = int(PAIRS.horizon_minutes * 60_000_000)
    meta = ds.meta.assign(line=ds.meta["line"].fillna(-999.0))
    cut = _us(meta["cut_time"])
    expected = np.array(
        [
            bool(((o > c) & (o <= c + horizon)).any())
            if (o := opens.get(tuple(r))) is not None
            else False
            for r, c in zip(meta[keys].itertuples(index=False), cut, strict=True)
        ]
    )
    assert (ds.y["arb_ahead"].astype(bool) == expected).all()
    assert ds.y["arb_ahead"].sum() > 0


def test_pair_inputs_ignore_the_future_and_labels_need_it(sim):
    """With quotes after `cut` removed, every sample cut before it has the same inputs;
    its label is the same when its horizon ended before `cut`."""
    full = sim["pairs"]
    short = D.build_arbitrage_pair_sequences(sim["truncated"], PAIRS)
    cut = _us([sim["cut"]])[0]
    keys = ["event_id", "market", "line", "book_a", "book_b", "outcome_a", "cut_time"]
    a = full.meta.assign(line=full.meta["line"].fillna(-999.0)).reset_index()
    b = short.meta.assign(line=short.meta["line"].fillna(-999.0)).reset_index()
    m = a.merge(b, on=keys, suffixes=("_f", "_s"))
    early = _us(m["cut_time"]) <= cut
    i, j = m.loc[early, "index_f"].to_numpy(), m.loc[early, "index_s"].to_numpy()
    assert len(i) > 50
    # every early-cut sample of the full data exists in the truncated data
    assert early.sum() == (_us(full.meta["cut_time"]) <= cut).sum()
    np.testing.assert_array_equal(full.x_a[i], short.x_a[j])
    np.testing.assert_array_equal(full.x_b[i], short.x_b[j])
    np.testing.assert_array_equal(full.mask[i], short.mask[j])
    np.testing.assert_array_equal(full.y["arb_now"][i], short.y["arb_now"][j])
    horizon = int(PAIRS.horizon_minutes * 60_000_000)
    settled = _us(m.loc[early, "cut_time"]) + horizon <= cut
    np.testing.assert_array_equal(full.y["arb_ahead"][i[settled]], short.y["arb_ahead"][j[settled]])


def test_pairs_as_known(sim):
    """knowledge="ingested": steps are when a pair row became known; the rules still hold."""
    ds = D.build_arbitrage_pair_sequences(
        sim["path"], dataclasses.replace(PAIRS, knowledge="ingested")
    )
    assert len(ds) > 100
    k = ds.feature_names.index("implied_sum")
    rule = (ds.mask & (ds.x_a[..., k] < 1.0)).any(axis=1)
    assert (ds.y["arb_now"].astype(bool) == rule).all()
    n = ds.meta["seq_len"].to_numpy()
    assert (ds.times[np.arange(len(ds)), n - 1] == _us(ds.meta["cut_time"])).all()
    assert ds.content_hash() != sim["pairs"].content_hash()


def test_pair_baselines(sim):
    ds = sim["pairs"]
    k = ds.feature_names.index("implied_sum")
    row = int(np.argmax(ds.meta["seq_len"].to_numpy()))
    n = int(ds.meta["seq_len"].iloc[row])
    kk = PAIRS.slope_steps
    t = (ds.times[row, n - kk : n] - ds.times[row, 0]) / HOUR_US
    v = ds.x_a[row, n - kk : n, k].astype(np.float64)
    np.testing.assert_allclose(
        ds.meta["implied_sum_slope"].iloc[row], np.polyfit(t, v, 1)[0], rtol=1e-6, atol=1e-12
    )
    all_steps = ds.x_a[row, :n, k].astype(np.float64)
    assert ds.meta["implied_sum_min"].iloc[row] == all_steps.min()


# --------------------------------------------------------------------------- splits, scaler


def test_splits_are_time_ordered_and_disjoint_by_event(sim):
    for ds in (sim["lstm"], sim["pairs"]):
        parts = D.split_by_time(ds, (0.6, 0.2, 0.2))
        assert sum(len(p) for p in parts.values()) == len(ds)
        events = [set(parts[s].meta["event_id"]) for s in D.SPLITS]
        assert all(events) and not (
            events[0] & events[1] or events[1] & events[2] or events[0] & events[2]
        )
        c = [pd.to_datetime(parts[s].meta["commence_time"], utc=True) for s in D.SPLITS]
        assert c[0].max() < c[1].min() and c[1].max() < c[2].min()
    ds = sim["lstm"]
    commence = pd.to_datetime(ds.meta["commence_time"], utc=True).sort_values()
    c1, c2 = commence.iloc[len(ds) // 2], commence.iloc[3 * len(ds) // 4]
    parts = D.split_by_time(ds, cuts=[c1, c2])
    assert (pd.to_datetime(parts["train"].meta["commence_time"], utc=True) < c1).all()
    assert (pd.to_datetime(parts["test"].meta["commence_time"], utc=True) >= c2).all()
    manifest = D.assign_splits(ds, cuts=[c1, c2]).manifest()
    assert manifest["splits"]["train"]["rows"] == len(parts["train"])
    assert manifest["splits"]["test"]["commence_min"] == c2.isoformat()


def test_scaler_fits_real_train_steps_and_round_trips(sim):
    for ds in (sim["lstm"], sim["pairs"]):
        parts = D.split_by_time(ds)
        scaler = S.fit_scaler(parts["train"])
        key, arr = next(iter(parts["train"].feature_arrays.items()))
        real = arr[parts["train"].mask].astype(np.float64)
        np.testing.assert_allclose(scaler.mean[key], np.nanmean(real, axis=0), rtol=1e-6)
        again = S.Scaler.from_json(scaler.to_json())
        assert again == scaler and json.loads(scaler.to_json())["fit_steps"] > 0
        scaled = S.apply_scaler(parts["test"], again)
        for z in scaled.feature_arrays.values():
            assert np.isfinite(z).all() and (z[~scaled.mask] == 0).all()
        z = S.apply_scaler(parts["train"], scaler).feature_arrays[key][parts["train"].mask]
        finite = np.isfinite(real)
        means = [z[finite[:, f], f].mean() for f in range(z.shape[1]) if finite[:, f].any()]
        np.testing.assert_allclose(means, 0.0, atol=1e-4)


def test_changing_test_data_does_not_change_the_scaler(sim):
    ds = D.assign_splits(sim["lstm"])
    test = (ds.meta["split"] == "test").to_numpy()
    assert test.any()
    edited = ds.subset(np.arange(len(ds)))
    edited.x = ds.x.copy()
    edited.x[test] = edited.x[test] * 3.0 + 7.0
    assert S.fit_scaler(edited.splits()["train"]) == S.fit_scaler(ds.splits()["train"])
    assert S.fit_scaler(edited.splits()["test"]) != S.fit_scaler(ds.splits()["test"])


# --------------------------------------------------------------------------- identity, files


def test_manifest_hash_is_stable_and_save_load_round_trips(sim, tmp_path):
    first = D.build_lstm_sequences(sim["path"], truth=sim["truth"])
    second = D.build_lstm_sequences(sim["path"], truth=sim["truth"])
    assert first.content_hash() == second.content_hash() == sim["lstm"].content_hash()
    flipped = first.subset(np.arange(len(first)))
    flipped.y = 1.0 - flipped.y
    assert flipped.content_hash() != first.content_hash()

    ds = D.assign_splits(sim["pairs"])
    manifest = ds.manifest()
    assert manifest["rows"] == len(ds)
    assert manifest["positives"]["arb_ahead"] == int(ds.y["arb_ahead"].sum())
    assert set(manifest["splits"]) == set(D.SPLITS)
    assert manifest["feature_names"] == list(D.PAIR_CHANNELS)
    assert manifest["config"]["max_len"] == PAIRS.max_len
    path = ds.save(tmp_path)
    assert path.name == f"arbitrage_pair_sequences-{manifest['content_hash'][:12]}"
    assert ds.save(tmp_path) == path  # same content, same folder
    loaded = D.load_dataset(path)
    assert loaded.content_hash() == manifest["content_hash"]
    np.testing.assert_array_equal(loaded.x_a, ds.x_a)
    assert loaded.y.keys() == ds.y.keys() and loaded.target == "arb_ahead"
    arrays = loaded.to_arrays()
    assert set(arrays) == {"x_a", "x_b", "mask", "market_type", "y"}

    lstm_path = first.save()  # default: under the state home
    assert lstm_path.parent == D.datasets_dir()
    back = D.SequenceDataset.load(lstm_path)
    np.testing.assert_array_equal(back.y, first.y)
    assert json.loads((lstm_path / "manifest.json").read_text())["rows"] == len(first)


# --------------------------------------------------------------------------- football-data

FOOTBALL_CSV = """Div,Date,Time,HomeTeam,AwayTeam,FTHG,FTAG,FTR,B365H,B365D,B365A,PSH,PSD,PSA,B365>2.5,B365<2.5,P>2.5,P<2.5,B365CH,B365CD,B365CA,PSCH,PSCD,PSCA,B365C>2.5,B365C<2.5,PC>2.5,PC<2.5
E0,13/08/2021,20:00,Brentford,Arsenal,2,0,H,4,3.4,1.95,4.05,3.46,2.05,2.1,1.72,2.16,1.77,3.8,3.25,2.05,3.94,3.33,2.13,2.37,1.57,2.44,1.62
E0,14/08/2021,12:30,Man United,Leeds,5,1,H,1.53,4.5,5.75,1.56,4.57,5.96,1.61,2.3,1.65,2.4,1.61,4.2,5.25,1.67,4.2,5.4,1.66,2.2,1.7,2.27
E0,14/08/2021,15:00,Burnley,Brighton,1,2,A,3.1,3.1,2.45,3.2,3.17,2.5,2.2,1.66,2.3,1.69,3.4,3.2,2.3,3.45,3.27,2.35,2.2,1.66,2.3,1.67
E0,14/08/2021,15:00,Chelsea,Crystal Palace,3,3,D,1.25,6,13,1.27,6.25,13.5,1.6,2.37,1.64,2.45,1.22,6.5,15,1.24,6.65,15.5,1.55,2.5,1.6,2.55
E0,15/08/2021,16:30,Tottenham,Man City,,,,5,4,1.66,5.3,4.15,1.7,1.8,2.05,1.84,2.1,4.8,4,1.7,5.1,4.1,1.72,1.8,2.05,1.85,2.08
"""


@pytest.fixture(scope="module")
def football(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("football")
    csv = root / "E0_2021-2022.csv"
    csv.write_text(FOOTBALL_CSV)
    result = football_data.parse_file(csv)
    return _fill(root / "fd.duckdb", result, f"football_data:{csv.name}", "football_data")


def test_football_data_short_mostly_masked_sequences(football):
    ds = D.build_lstm_sequences(football)
    assert ds.stats["events_without_result"] == 1  # Tottenham - Man City has no score
    assert len(ds) == 8 and ds.x.shape == (8, 24, len(ds.feature_names))
    # pre-match prices (kickoff - 72 h) only before the decision time: one real step
    assert (ds.meta["seq_len"] == 1).all() and ds.mask.mean() < 0.1
    assert ds.mask[:, 0].all()  # kickoff - 72 h lies in the first step's interval
    assert set(ds.meta["reference_book"]) == {"pinnacle"}
    k = ds.feature_names.index("decimal_odds")
    first = ds.meta["event_id"].str.contains("brentford")
    np.testing.assert_allclose(ds.x[first.to_numpy(), 0, k], [4.05, 2.05], rtol=1e-6)
    won = {("brentford", "home"): 1, ("brentford", "away"): 0, ("chelsea", "home"): 0}
    for (team, side), label in won.items():
        row = ds.meta["event_id"].str.contains(team) & (ds.meta["side"] == side)
        assert ds.y[row.to_numpy()].item() == label
    assert np.isfinite(ds.meta["market_prob"]).all()
    assert (ds.meta["market_prob_age_hours"] == 71.0).all()
    # decision at kickoff: the closing prices become the second real step
    at_kickoff = D.build_lstm_sequences(football, D.LstmSequenceConfig(decision_offset_hours=0))
    assert (at_kickoff.meta["seq_len"] == 2).all()
    assert (at_kickoff.mask[:, 0] & at_kickoff.mask[:, -1]).all()
    np.testing.assert_allclose(
        at_kickoff.x[first.to_numpy(), -1, k], [3.94, 2.13], rtol=1e-6
    )  # Pinnacle closing
    # without freshness or TTL the pre-match value carries through every later step
    carried = D.build_lstm_sequences(
        football, D.LstmSequenceConfig(ttl_hours=None, fresh_only=False)
    )
    assert (carried.meta["seq_len"] == 24).all()
    np.testing.assert_allclose(carried.x[first.to_numpy(), -1, k], [4.05, 2.05], rtol=1e-6)
    # scaling works with mostly masked data
    parts = D.split_by_time(ds, (0.5, 0.25, 0.25))
    scaled = S.apply_scaler(ds, S.fit_scaler(parts["train"]))
    assert np.isfinite(scaled.x).all()


def test_no_matching_events_gives_an_empty_dataset(football):
    ds = D.build_lstm_sequences(football, D.LstmSequenceConfig(leagues=("E1",)))
    assert len(ds) == 0 and ds.x.shape == (0, 24, len(ds.feature_names))
    assert ds.manifest()["rows"] == 0
    assert D.load_dataset(ds.save()).content_hash() == ds.content_hash()


def test_football_data_pairs_are_short_and_never_crash(football):
    empty = D.build_arbitrage_pair_sequences(football)  # two instants per key < min_len
    assert len(empty) == 0 and empty.x_a.shape == (0, 64, len(D.PAIR_CHANNELS))
    assert empty.manifest()["rows"] == 0
    short = D.build_arbitrage_pair_sequences(
        football, D.PairSequenceConfig(min_len=1, cut_stride=1, horizon_minutes=1)
    )
    assert len(short) > 0 and short.meta["seq_len"].max() <= 2
    assert set(short.meta["market"]) <= {"totals", "spreads"}  # h2h is 3-way here
    assert short.mask.mean() < 0.05


def test_configs_validate():
    with pytest.raises(ValueError, match="steps"):
        D.LstmSequenceConfig(steps=0)
    with pytest.raises(ValueError, match="min_len"):
        D.PairSequenceConfig(min_len=80)
    with pytest.raises(ValueError, match="markets"):
        D.PairSequenceConfig(markets=("corners",))
    cfg = D.config_from_mapping(D.PairSequenceConfig, {"book_pairs": [["b", "a"]], "max_len": 16})
    assert cfg.book_pairs == (("b", "a"),) and cfg.max_len == 16
    with pytest.raises(ValueError, match="unknown"):
        D.config_from_mapping(D.LstmSequenceConfig, {"nope": 1})


def test_lstm_sequences_build_on_a_300_event_simulator(tmp_path):
    """Regression: timestamps of rows without a feature value (Int64 with NA, many repeats)
    made pandas' to_datetime cache raise "'indices' contains values less than allowed"."""
    from odds_pipeline.datasets import sequences as datasets
    from odds_pipeline.features import compute as features
    from odds_pipeline.ingestion.sources import simulator
    from odds_pipeline.ingestion.store import OddsStore

    store = OddsStore(tmp_path / "w.duckdb")
    cfg = simulator.SimulatorConfig(n_events=300, seed=7)
    with store.load(cfg.load_id, simulator.SOURCE) as writer:
        for batch in simulator.iter_batches(cfg, trusted=True):
            writer.write(batch)
    with store.connection() as con:
        features.compute_quote_features(con)
        features.compute_market_features(con)
        ds = datasets.build_lstm_sequences(con, datasets.LstmSequenceConfig())
    assert ds.x.shape[0] == 600 and ds.mask.any()
