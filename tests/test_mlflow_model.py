"""The logged MLflow model stands alone: MLflow's own CLI predicts with it and serves it (JSON and CSV requests),
it loads where the pipeline is not installed, and a bad request gets HTTP 400 with the one-line cause."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from pipeline.config import TrackingConfig
from pipeline.inference.saved_model import load_model
from tests.helpers import ROOT, free_port, venv_path, wait_until_up


@pytest.fixture(scope="module")
def logged(store, tmp_path_factory):
    """A small model trained by the real command, its URI, recent history as a CSV file, and the forecast the
    pipeline's own loader makes of it (times as the pyfunc gives them: ISO 8601 text)."""
    model_uri = f"runs:/{store.train()['run_id']}/model"
    history = pd.read_parquet(store.folder / "new.parquet").iloc[-200:]
    path = tmp_path_factory.mktemp("input") / "history.csv"
    history.to_csv(path, index=False)  # times as text, as any CSV carries them
    expected = load_model(model_uri, TrackingConfig(uri=store.uri)).forecast(history)
    return model_uri, path, expected.assign(time=expected["time"].map(pd.Timestamp.isoformat))


def mlflow_cli(*args: str) -> list[str]:
    """`mlflow models ...` in this environment, as a user of the installed package runs it."""
    return [sys.executable, "-m", "mlflow", "models", *args, "--env-manager", "local"]


def cli_env(store) -> dict[str, str]:
    return venv_path() | {"MLFLOW_TRACKING_URI": store.uri}


def same_forecast(predictions: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert predictions["time"].tolist() == expected["time"].tolist()
    np.testing.assert_allclose(predictions["forecast"], expected["forecast"], rtol=1e-6)


@pytest.mark.slow
def test_mlflow_models_predict_forecasts_a_csv_file_as_the_pipeline_does(store, logged, tmp_path):
    model_uri, history, expected = logged
    output = tmp_path / "predictions.json"
    done = subprocess.run(mlflow_cli("predict", "-m", model_uri, "-i", str(history), "-t", "csv",
                                     "-o", str(output)),
                          env=cli_env(store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    same_forecast(pd.DataFrame(json.loads(output.read_text())["predictions"]), expected)


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_json_and_csv_requests_and_a_bad_one_with_400_and_its_cause(store, logged):
    model_uri, history, expected = logged
    port = free_port()
    server = subprocess.Popen(mlflow_cli("serve", "-m", model_uri, "-h", "127.0.0.1", "-p", str(port)),
                              env=cli_env(store), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/ping", server)
        frame = pd.read_csv(history, dtype={"time": str})
        for body, content_type in [
            (json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}), "application/json"),
            (json.dumps({"dataframe_records": frame.to_dict(orient="records")}), "application/json"),
            (history.read_text(), "text/csv"),
        ]:
            status, answer = post(url, body.encode(), content_type)
            assert status == 200, answer
            same_forecast(pd.DataFrame(answer["predictions"]), expected)
        # Too little history: refused with the pipeline's one line, not a stack trace.
        status, answer = post(url, frame.iloc[-50:].to_csv(index=False).encode(), "text/csv")
        assert status == 400 and "stack_trace" not in answer
        assert answer["message"] == ("the request: series 'demand' has 50 rows; the model needs the last 96 of each "
                                     "series")
    finally:
        server.terminate()
        server.wait(timeout=30)


# Runs in a Python that cannot import the project: its editable-install finder and its folder are taken away, so
# `pipeline` can come only from the code stored with the model.
WITHOUT_THE_PROJECT = """
import json, sys
root = sys.argv[1]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
sys.path[:] = [p for p in sys.path if p not in (root, "") and "__editable__" not in p]
try:
    import pipeline
    raise SystemExit(f"pipeline is importable from {pipeline.__file__}")
except ModuleNotFoundError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(pd.read_csv(sys.argv[3], dtype={"time": str}))
import pipeline
print(json.dumps({"pipeline": pipeline.__file__, "forecast": out.to_dict(orient="list")}))
"""


@pytest.mark.slow
def test_the_pyfunc_loads_and_predicts_where_the_pipeline_is_not_installed(store, logged, tmp_path):
    model_uri, history, expected = logged
    done = subprocess.run([sys.executable, "-c", WITHOUT_THE_PROJECT, str(ROOT), model_uri, str(history)],
                          cwd=tmp_path, env=cli_env(store), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["pipeline"].startswith(str(ROOT)) and "/code/pipeline/" in result["pipeline"]
    same_forecast(pd.DataFrame(result["forecast"]), expected)
