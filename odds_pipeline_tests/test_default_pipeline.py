"""The job `make run` executes, end to end on the bundled samples, with tiny training settings."""

import json

import dagster as dg

from odds_pipeline.cli import main
from odds_pipeline.definitions import defs
from odds_pipeline.registry import promotion
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


def test_default_pipeline_runs_end_to_end_and_the_gates_decide(capsys):
    job = defs.resolve_job_def("default_pipeline")
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {
        "lstm_candidate",
        "transformer_candidate",
        "lstm_champion",
        "transformer_champion",
        "quote_features",
        "pair_features",
        "odds_quotes",
    } <= selected
    assert (
        not {"lstm_tuning", "transformer_tuning", "odds_api_live"} & selected
    )  # opt-in / partitioned
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, run_config=TINY, raise_on_error=False)
    checks = result.get_asset_check_evaluations()
    gate_assets = {"lstm_candidate", "transformer_candidate"}
    data_failures = [
        (c.asset_key.to_user_string(), c.check_name)
        for c in checks
        if not c.passed and c.asset_key.to_user_string() not in gate_assets
    ]
    assert data_failures == []
    refused = {c.asset_key.to_user_string() for c in checks if not c.passed} & gate_assets
    # A refusal stops the run at its gate; nothing else may fail.
    assert result.success == (not refused)
    assert tracking.running_runs() == []
    status = promotion.model_status()
    for prefix, name in (
        ("lstm", tracking.LSTM_MODEL_NAME),
        ("transformer", tracking.TRANSFORMER_MODEL_NAME),
    ):
        challenger = status[name]["challenger"]
        assert challenger is not None and challenger["gates"] in ("passed", "refused")
        if f"{prefix}_candidate" in refused:
            assert challenger["gates"] == "refused" and challenger["failed"]
            assert status[name]["champion"] is None  # nothing ever passed here
        else:
            assert status[name]["champion"]["version"] == challenger["version"]
    # `make run` ends with the decisions and the summary.
    capsys.readouterr()
    assert main(["models", "--require-judged"]) == 0
    printed = capsys.readouterr().out
    for name in (tracking.LSTM_MODEL_NAME, tracking.TRANSFORMER_MODEL_NAME):
        assert name in printed
    if refused:
        assert "refused" in printed and "no champion" in printed
    assert main(["summary"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["odds_quotes"]) == {"football_data", "odds_api", "sbr", "simulator"}
