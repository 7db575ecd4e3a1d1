"""Models registered before the package moved into domain packages still load and predict.

The fixture is a tiny LSTM logged by the code as it was before the move (commit 2c39533):
its serving module runs ``from odds_pipeline.tracking import serving_model``.
"""

import json
from pathlib import Path

import numpy as np

LEGACY_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_lstm_model"


def test_a_model_logged_with_the_old_module_path_loads_and_predicts_the_same():
    import mlflow.pyfunc

    import odds_pipeline.training.tracking  # noqa: F401  (the installed package is imported first)

    expected = json.loads((LEGACY_MODEL / "expected.json").read_text())
    model = mlflow.pyfunc.load_model(str(LEGACY_MODEL))
    got = model.predict(np.asarray(expected["input"], dtype=np.float32))
    np.testing.assert_allclose(got, np.asarray(expected["expected"], dtype=np.float32), atol=1e-6)
