"""`mlflow models serve -m models:/odds-lstm@champion --env-manager local` answers on loopback."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from odds_pipeline.registry import promotion
from odds_pipeline.training import tracking
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _champion_lstm() -> tuple[np.ndarray, np.ndarray]:
    import torch

    from odds_pipeline.training.models import MaskedLSTM

    torch.manual_seed(0)
    model = MaskedLSTM(3, hidden=4, num_layers=1, dropout=0.0)
    spec = tracking.ServingSpec(
        kind="lstm",
        hparams=dict(model.hparams),
        seq_len=5,
        feature_names=["a", "b", "c"],
        label="won",
        scaler={"mean": {"x": [0.0, 0.1, 0.2]}, "std": {"x": [1.0, 2.0, 0.5]}},
    )
    x = np.random.default_rng(0).normal(size=(3, 5, 3)).astype(np.float32)
    packed = tracking.pack_lstm_input(x, np.ones((3, 5), bool))
    with tracking.tracked_run("serving-test"):
        info = tracking.log_sequence_model(model, spec, packed)
    version = tracking.register_challenger(info.model_uri, tracking.LSTM_MODEL_NAME)
    promotion.promote(tracking.LSTM_MODEL_NAME, version.version)
    expected = tracking.SequenceScorer(model, spec).predict(packed)
    return packed, expected


def test_the_champion_serves_one_request_on_loopback(tmp_path: Path):
    packed, expected = _champion_lstm()
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(),
        # mlflow starts uvicorn by name: the venv's bin must be on PATH (as in `make` shells).
        "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            f"models:/{tracking.LSTM_MODEL_NAME}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not come up in 120 s"
            time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": packed.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answer = json.loads(r.read())
        np.testing.assert_allclose(
            np.asarray(answer["predictions"], np.float32), expected, atol=1e-5
        )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
        server.wait(timeout=30)
