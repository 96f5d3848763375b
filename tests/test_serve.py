"""pipeline.serve: MLflow's scoring server over a copy of the model whose every file matched its recorded digests,
with a limit on a request's size; a model whose files were altered is refused and never served."""

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import RegisterConfig, TrackingConfig
from pipeline.inference.saved_model import load_model
from pipeline.register import register
from tests.helpers import free_port, post, run_stage, start_stage, wait_until_up

pytestmark = pytest.mark.slow  # every test here starts the stage


@pytest.fixture(scope="module")
def served(store):
    """A model trained by the real command (a distribution, rolled: it forecasts quantiles and draws coherent
    sample paths), registered as `served` version 1, and its folder in the store."""
    run_id = store.train("model.likelihood=normal", "model.strategy=recursive")["run_id"]
    register(RegisterConfig(run_id=run_id, name="served", tracking=TrackingConfig(uri=store.uri)))
    model_id = MlflowClient(store.uri).get_run(run_id).outputs.model_outputs[0].model_id
    return Path(MlflowClient(store.uri).get_logged_model(model_id).artifact_location.removeprefix("file://"))


def test_the_checked_model_is_served_and_a_request_over_the_limit_gets_413(store, served, vic_elec, tmp_path):
    port = free_port()
    process = start_stage("pipeline.serve", "model_uri=models:/served@champion", f"port={port}",
                          "max_request_bytes=100000", f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'run'}")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", process)
        history = vic_elec.iloc[1000:1200][["time", "demand"]]
        status, body = post(f"http://127.0.0.1:{port}/invocations", history.to_csv(index=False).encode())
        assert status == 200, body[-2000:]
        served_forecast = pd.DataFrame(json.loads(body)["predictions"])
        model = load_model("models:/served@champion", TrackingConfig(uri=store.uri))
        expected = model.forecast(history)
        for column in ["forecast", "q2.5", "q97.5"]:
            assert served_forecast[column].to_numpy() == pytest.approx(expected[column].to_numpy(), rel=1e-9)
        # Sample paths, asked for with params as MLflow's scoring protocol passes them.
        request = {"dataframe_split": json.loads(history.assign(time=history["time"].astype(str)).to_json(
            orient="split", index=False)), "params": {"samples": 50, "seed": 1}}
        status, body = post(f"http://127.0.0.1:{port}/invocations", json.dumps(request).encode(), "application/json")
        assert status == 200, body[-2000:]
        paths = pd.DataFrame(json.loads(body)["predictions"])
        assert list(paths.columns) == ["time", "sample", "forecast"] and len(paths) == 50 * 48
        expected = model.forecast(history, samples=50, seed=1)
        assert paths["forecast"].to_numpy() == pytest.approx(expected["forecast"].to_numpy(), rel=1e-9)
        buffer = io.StringIO()
        pd.concat([history] * 40).to_csv(buffer, index=False)  # about 200 kB
        status, body = post(f"http://127.0.0.1:{port}/invocations", buffer.getvalue().encode())
        assert status == 413 and b"max_request_bytes=100000" in body
        status, _ = post(f"http://127.0.0.1:{port}/invocations", b"time,demand\n2012-01-01,oops\n")
        assert status == 400  # the pipeline's one line, as `mlflow models serve` answers it
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_a_model_whose_code_was_altered_is_refused_in_one_line_and_never_served(store, served, tmp_path):
    canary = tmp_path / "canary"
    code = served / "code" / "pipeline" / "inference" / "pyfunc.py"
    original = code.read_bytes()
    code.write_bytes(original + f"\nopen({str(canary)!r}, 'w').write('ran')\n".encode())
    try:
        done = run_stage("pipeline.serve", "model_uri=models:/served@champion", f"port={free_port()}",
                         f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'run'}")
    finally:
        code.write_bytes(original)
    assert done.returncode == 2 and not canary.exists()
    assert done.stderr.strip().splitlines()[-1].endswith(
        "file code/pipeline/inference/pyfunc.py differs from the SHA-256 recorded when it was logged; the model "
        "store was altered: log the model again, and let only trusted people write to the store")
