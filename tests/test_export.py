"""Quantile models end to end, and their export to ONNX and TorchScript, run without the pipeline."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.inference.saved_model import load_model
from tests.helpers import artifact_paths, run_stage

# Runs the exported file with the pipeline made unimportable: only numpy and the format's runtime.
RUN_WITHOUT_PIPELINE = """
import sys; sys.modules["pipeline"] = None
import numpy as np
fmt, path, inputs, out = sys.argv[1:]
arrays = np.load(inputs)
if fmt == "onnx":
    import onnxruntime
    got = onnxruntime.InferenceSession(path).run(None, {"x": arrays["x"], "future": arrays["future"]})[0]
else:
    import torch
    got = torch.jit.load(path)(torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["future"])).numpy()
np.save(out, got)
"""


@pytest.fixture(scope="module")
def quantile_run(store):
    """One small seq2seq model with attention and quantiles, trained by the real command (shared by the tests)."""
    summary = store.train("model.strategy=seq2seq", "model.attention=true", "model.quantiles=[0.1,0.5,0.9]",
                          "model.hidden_size=[8,6]")
    return summary["run_id"], store.uri


@pytest.mark.slow
def test_a_quantile_model_logs_proper_scores_beside_seasonal_naive_and_forecasts_quantile_columns(quantile_run,
                                                                                                 vic_elec):
    run_id, uri = quantile_run
    client = MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    for block in ("val", "test"):
        for name in ("crps", "wql", "coverage_80", "width_80"):
            assert np.isfinite(metrics[f"{block}_{name}"]) and np.isfinite(metrics[f"{block}_{name}_seasonal_naive"])
    assert 0 <= metrics["test_coverage_80"] <= 1
    assert metrics["test_crps"] == pytest.approx(2 * metrics["test_quantile_loss"])
    assert len(client.get_metric_history(run_id, "test_crps_by_step")) == 48
    assert "calibration.png" in {a.path for a in client.list_artifacts(run_id)}
    model = load_model(f"runs:/{run_id}/model", TrackingConfig(uri=uri))
    out = model.forecast(vic_elec.iloc[:200][["time", "demand"]])
    assert list(out.columns) == ["time", "forecast", "q10", "q50", "q90"] and len(out) == 48
    assert (out["q10"] <= out["q50"]).all() and (out["q50"] <= out["q90"]).all()
    assert np.allclose(out["forecast"], out["q50"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt, file", [("onnx", "model.onnx"), ("torchscript", "model.pt")])
def test_export_runs_without_the_pipeline_and_matches_pytorch(quantile_run, tmp_path, fmt, file):
    run_id, uri = quantile_run
    done = run_stage("pipeline.export", f"run_id={run_id}", f"format={fmt}", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'export'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["max_abs_diff"] < 1e-4 and summary["size_bytes"] > 0 and summary["latency_ms"] > 0

    network = load_model(f"runs:/{run_id}/model", TrackingConfig(uri=uri)).network
    x, future = torch.randn(7, 96, network.n_features), torch.randn(7, 48, network.n_future)
    np.savez(tmp_path / "inputs.npz", x=x.numpy(), future=future.numpy())
    subprocess.run([sys.executable, "-c", RUN_WITHOUT_PIPELINE, fmt, str(tmp_path / "export" / file),
                    str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")], check=True, timeout=120)
    with torch.no_grad():
        expected = network.eval()(x, future).numpy()
    assert np.abs(np.load(tmp_path / "out.npy") - expected).max() < 1e-4

    client = MlflowClient(uri)
    assert {f"export/{fmt}/{file}", f"export/{fmt}/model_spec.json", f"export/{fmt}/inputs.json"} == {
        p for p in artifact_paths(client, run_id) if p.startswith(f"export/{fmt}/")}
    assert f"export_{fmt}_latency_ms" in client.get_run(run_id).data.metrics


@pytest.mark.slow
def test_export_without_a_model_is_refused_in_one_line(tmp_path, tracking_uri):
    done = run_stage("pipeline.export", f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and "give run_id=" in done.stderr


def cyclic(times: pd.DatetimeIndex, name: str) -> np.ndarray:
    """A calendar feature from its name in inputs.json (sin_time_of_day, cos_day_of_year, ...): README's recipe."""
    function, cycle = name.split("_", 1)
    phase = {"time_of_day": (times.hour * 3600 + times.minute * 60 + times.second) / 86400,
             "day_of_week": times.dayofweek / 7, "day_of_year": (times.dayofyear - 1) / 365.25}[cycle]
    return getattr(np, function)(2 * np.pi * np.asarray(phase, dtype=np.float64))


@pytest.mark.slow
def test_the_onnx_file_and_its_inputs_json_reproduce_the_models_forecast_without_the_pipeline(
        quantile_run, tmp_path, vic_elec):
    import onnxruntime

    run_id, uri = quantile_run
    done = run_stage("pipeline.export", f"run_id={run_id}", "format=onnx", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'export'}")
    assert done.returncode == 0, done.stderr[-3000:]
    inputs = json.loads((tmp_path / "export" / "inputs.json").read_text())
    scaler = json.loads((tmp_path / "export" / "model_spec.json").read_text())["scaler"]
    assert inputs["x"][0] == "demand" and inputs["x"][1:] == inputs["future"]
    assert inputs["future"] == ["sin_time_of_day", "sin_day_of_week", "sin_day_of_year", "cos_time_of_day",
                                "cos_day_of_week", "cos_day_of_year"]
    history = vic_elec.iloc[:300][["time", "demand"]].tail(inputs["lookback"])
    times = pd.DatetimeIndex(history["time"])
    ahead = pd.date_range(times[-1], periods=inputs["horizon"] + 1, freq="30min")[1:]
    center, scale = scaler["center"]["demand"][0], scaler["scale"]["demand"][0]
    x = np.stack([(history["demand"].to_numpy() - center) / scale if name == "demand" else cyclic(times, name)
                  for name in inputs["x"]], axis=-1)[None].astype(np.float32)
    future = np.stack([cyclic(ahead, name) for name in inputs["future"]], axis=-1)[None].astype(np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"))
    got = session.run(None, {"x": x, "future": future})[0][0] * scale + center  # (H, Q) in MW
    model = load_model(f"runs:/{run_id}/model", TrackingConfig(uri=uri))
    expected = model.forecast(history)[["q10", "q50", "q90"]].to_numpy()
    assert np.abs(got - expected).max() < 1e-2  # MW, float32 against the pipeline's float64 scaling


@pytest.mark.slow
def test_the_model_api_names_its_features_and_streams_a_series(quantile_run, vic_elec):
    import pipeline

    run_id, uri = quantile_run
    model = pipeline.load_model(f"runs:/{run_id}/model", tracking_uri=uri)
    assert model.features["x"][0] == "demand" and len(model.features["x"]) == model.network.n_features
    assert len(model.features["future"]) == model.network.n_future
    # A stream of one series; this model normalises each window, so its stream reads the window again at each
    # forecast, as the forecast stage does.
    history = vic_elec.tail(model.spec.lookback)
    stream = model.stream("demand")
    for row in history.itertuples():
        stream.update(row.time, row.demand)
    pd.testing.assert_frame_equal(stream.forecast(), model.forecast(history)[["time", "forecast", "q10", "q50", "q90"]],
                                  rtol=1e-5)
