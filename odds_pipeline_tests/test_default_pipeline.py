"""The job `make run` executes, end to end on the bundled samples, with tiny training settings."""

import json

import dagster as dg

from odds_pipeline.cli import main
from odds_pipeline.definitions import defs
from odds_pipeline.training import tracking

TINY = {
    "ops": {
        "simulated_market": {"config": {"n_events": 24, "seed": 5, "arbitrage_rate": 3.0}},
        "arbitrage_pair_sequences": {
            "config": {"max_len": 16, "min_len": 4, "cut_stride": 64, "max_book_pairs": 3}
        },
        "lstm_candidate": {
            "config": {"epochs": 2, "hidden": 8, "num_layers": 1, "batch_size": 64, "device": "cpu"}
        },
        "transformer_candidate": {
            "config": {
                "epochs": 1,
                "d_model": 8,
                "n_heads": 2,
                "n_layers": 1,
                "ff_mult": 1,
                "mlp_hidden": 8,
                "batch_size": 64,
                "device": "cpu",
            }
        },
    }
}


def test_default_pipeline_runs_end_to_end_and_registers_both_challengers(capsys):
    job = defs.resolve_job_def("default_pipeline")
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"lstm_candidate", "transformer_candidate", "quote_features", "odds_quotes"} <= selected
    assert (
        not {"lstm_tuning", "transformer_tuning", "odds_api_live"} & selected
    )  # opt-in / partitioned
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, run_config=TINY)
    assert result.success
    failed = [
        (c.asset_key.to_user_string(), c.check_name)
        for c in result.get_asset_check_evaluations()
        if not c.passed
    ]
    assert failed == []
    assert tracking.running_runs() == []
    client = tracking._client()
    for name in (tracking.LSTM_MODEL_NAME, tracking.TRANSFORMER_MODEL_NAME):
        assert client.get_model_version_by_alias(name, tracking.CHALLENGER)
    # `make run` ends with this summary: what the warehouse holds and which versions are challengers.
    capsys.readouterr()
    assert main(["summary"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["odds_quotes"]) == {"football_data", "odds_api", "sbr", "simulator"}
    assert all(
        "challenger" in summary["models"][name]
        for name in (tracking.LSTM_MODEL_NAME, tracking.TRANSFORMER_MODEL_NAME)
    )
