"""What the market-residual LSTM reads from an lstm_sequences dataset: the market channel,
no imputed time of day (an era whose kickoff times are imputed), the sharp-source indicator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from odds_pipeline.datasets import sequences as D
from odds_pipeline.features.compute import compute_market_features, compute_quote_features
from odds_pipeline.ingestion.sources import football_data
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.training.kinds import LSTM_MARKET_FEATURE, lstm_market_channel

N_MATCHES = 24  # >= the 20 events a season needs before one kickoff time reads as imputed


def _season(first_day: str, *, with_time: bool, with_pinnacle: bool) -> str:
    """A football-data CSV of N_MATCHES matches on consecutive days."""
    books = ["B365", "WH"] + (["PS"] if with_pinnacle else [])
    header = ["Div", "Date"] + (["Time"] if with_time else []) + ["HomeTeam", "AwayTeam"]
    header += ["FTHG", "FTAG", "FTR"] + [f"{b}{o}" for b in books for o in "HDA"]
    clock = ["12:30", "15:00", "17:30", "20:00"]
    rows = []
    for i, day in enumerate(pd.date_range(first_day, periods=N_MATCHES, freq="D")):
        home, away = 2 + i % 3, i % 2
        row = ["E0", day.strftime("%d/%m/%Y")] + ([clock[i % 4]] if with_time else [])
        row += [f"Home{i}", f"Away{i}", str(home), str(away), "H"]
        for j in range(len(books)):
            row += [f"{1.8 + 0.01 * i + 0.02 * j:.2f}", "3.5", f"{4.2 - 0.01 * i:.2f}"]
        rows.append(",".join(row))
    return "\n".join([",".join(header), *rows]) + "\n"


@pytest.fixture(scope="module")
def two_eras(tmp_path_factory: pytest.TempPathFactory) -> D.SequenceDataset:
    """2005/06 without kickoff times or Pinnacle, 2021/22 with both."""
    root = tmp_path_factory.mktemp("eras")
    store = OddsStore(root / "fd.duckdb")
    loads = {}
    for name, text in (
        ("E0_2005-2006.csv", _season("2005-08-13", with_time=False, with_pinnacle=False)),
        ("E0_2021-2022.csv", _season("2021-08-13", with_time=True, with_pinnacle=True)),
    ):
        path = root / name
        path.write_text(text)
        loads[f"football_data:{name}"] = football_data.parse_file(path)
    store.replace_loads("football_data", loads)
    with store.connection() as con:
        compute_quote_features(con)
        compute_market_features(con)
        return D.build_lstm_sequences(con)


def test_time_of_day_is_no_value_where_the_kickoff_time_is_imputed(two_eras):
    ds = two_eras
    old = (ds.meta["season"] == "2005-2006").to_numpy()
    assert old.sum() == ds.stats["samples_kickoff_time_imputed"] == 2 * N_MATCHES
    assert (~ds.meta["kickoff_time_known"].to_numpy() == old).all()
    for name in ("tod_sin", "tod_cos"):
        k = ds.feature_names.index(name)
        real = ds.mask
        assert np.isnan(ds.x[old][real[old]][:, k]).all()  # imputed era: no value
        assert np.isfinite(ds.x[~old][real[~old]][:, k]).all()  # real kickoff times
    assert (ds.x[~ds.mask] == 0).all()  # padding stays 0


def test_sharp_source_indicator_marks_the_consensus_era(two_eras):
    ds = two_eras
    k = ds.feature_names.index("sharp_source")
    last = ds.x[
        np.arange(len(ds)), ds.meta["seq_len"].to_numpy() - 1, k
    ]  # one real step: the first
    old = (ds.meta["season"] == "2005-2006").to_numpy()
    assert (last[old] == 0.0).all() and (last[~old] == 1.0).all()
    assert set(ds.meta.loc[old, "market_prob_source"]) == {"consensus"}


def test_the_market_channel_at_the_last_real_step_is_the_decision_time_market(two_eras):
    ds = two_eras
    k = lstm_market_channel(len(ds.feature_names))
    assert k == ds.feature_names.index(LSTM_MARKET_FEATURE)
    last = len(ds.mask[0]) - 1 - np.argmax(ds.mask[:, ::-1], axis=1)
    np.testing.assert_allclose(
        ds.x[np.arange(len(ds)), last, k], ds.meta["market_prob"].to_numpy(), rtol=1e-6
    )
    assert lstm_market_channel(3) is None  # not an lstm_sequences dataset: no market


def test_a_pinned_old_config_keeps_its_channels():
    """A champion's stored dataset config names its extra features: no new channel appears."""
    old = D.config_from_mapping(
        D.LstmSequenceConfig,
        {"extra_features": ["market_features:consensus_prob", "market_features:best_price"]},
    )
    assert (
        "sharp_source" not in old.channels() and "sharp_source" in D.LstmSequenceConfig().channels()
    )
