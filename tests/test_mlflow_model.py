"""The logged MLflow model stands alone: MLflow's own CLI predicts with it and serves it, no pipeline command."""

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pandas as pd
import pytest

from pipeline import tracking
from pipeline.config import TrackingConfig
from tests.conftest import free_port, venv_path, wait_until_up


@pytest.fixture(scope="module")
def logged(store, tmp_path_factory):
    """A small model trained by the real command, its URI, and three weeks of history as a CSV file."""
    model_uri = f"runs:/{store.train()['run_id']}/model"
    history = pd.read_parquet(store.folder / "new.parquet").iloc[-200:]
    path = tmp_path_factory.mktemp("input") / "history.csv"
    history.to_csv(path, index=False)  # times as text, as any CSV carries them
    forecaster, _ = tracking.load_model(TrackingConfig(uri=store.uri), model_uri)
    expected = forecaster.predict(None, history)
    return model_uri, path, expected


def mlflow_cli(*args: str) -> list[str]:
    """`mlflow models ...` in this environment, as a user of the installed package runs it."""
    return [sys.executable, "-m", "mlflow", "models", *args, "--env-manager", "local"]


def cli_env(store) -> dict[str, str]:
    return venv_path() | {"MLFLOW_TRACKING_URI": store.uri}


@pytest.mark.slow
def test_mlflow_models_predict_forecasts_a_csv_file_as_the_pipeline_does(store, logged, tmp_path):
    model_uri, history, expected = logged
    output = tmp_path / "predictions.json"
    done = subprocess.run(mlflow_cli("predict", "-m", model_uri, "-i", str(history), "-t", "csv",
                                     "-o", str(output)),
                          env=cli_env(store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = pd.DataFrame(json.loads(output.read_text())["predictions"])
    assert len(predictions) == 48
    np.testing.assert_allclose(predictions["forecast"], expected["forecast"], rtol=1e-6)
    assert pd.to_datetime(predictions["time"]).tolist() == expected["time"].tolist()


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_json_request_with_the_forecast(store, logged):
    model_uri, history, expected = logged
    port = free_port()
    server = subprocess.Popen(mlflow_cli("serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port)),
                              env=cli_env(store), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/ping", server)
        frame = pd.read_csv(history)
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = pd.DataFrame(json.loads(response.read())["predictions"])
        np.testing.assert_allclose(predictions["forecast"], expected["forecast"], rtol=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)
