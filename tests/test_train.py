"""The training stage run as users run it: `python -m pipeline.train` in a subprocess, a real MLflow store."""

import fcntl
import json
import os
import pty
import re
import struct
import termios
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.host import native_bf16_cpu
from pipeline.inference.saved_model import load_model
from pipeline.training.precision import auto_precision
from tests.helpers import SMALL, artifact_paths, run_stage, start_stage


@pytest.mark.slow
def test_train_command_leaves_a_finished_run_with_params_metrics_artifacts_and_a_loadable_model(
        tmp_path, vic_elec_slice, tracking_uri):
    done = run_stage("pipeline.train", f"data.path={vic_elec_slice}", f"tracking.uri={tracking_uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout is the one JSON line; logs go to stderr
    assert summary["test"]["mase"] > 0 and summary["seasonal_naive"]["mase"] > 0
    # Not a terminal: one line per validation (every 6 of 12 steps), and none of the libraries' noise.
    assert len(re.findall(r"step (6|12) of 12: val_loss [0-9.]+ \(best [0-9.]+\), train_loss", done.stderr)) == 2
    assert not re.search(r"Tip|Downloading artifacts|LeafSpec|GPU available|Warning", done.stderr), done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == summary

    client = MlflowClient(tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    # MLflow's UI opens the experiment on its training runs, with a description.
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"].startswith("Recurrent forecasters")
    # The run's description: its test score beside seasonal naive's.
    assert run.data.tags["mlflow.note.content"].startswith(
        f"MASE {summary['test']['mase']:.3f} on the test block against seasonal naive's "
        f"{summary['seasonal_naive']['mase']:.3f}")
    assert run.data.params["model.cell"] == "lstm" and run.data.params["window.lookback"] == "96"
    assert run.data.params["trainer.gradient_clip_algorithm"] == "norm"
    assert run.data.params["data.missing"] == "error" and run.data.params["data.covariates"] == "[]"
    # trainer.precision=auto, as resolved on this machine.
    assert run.data.params["trainer.precision"] == "auto"
    assert run.data.tags["precision"] == auto_precision("lstm", on_cpu=True, native_bf16=native_bf16_cpu())[0]
    for metric in ["train_loss", "val_loss", "grad_norm", "test_mase", "test_mase_seasonal_naive",
                   "val_mase", "val_mase_seasonal_naive", "test_mase_naive", "fit_seconds", "fit_steps",
                   "test_smape", "test_rmse", "test_mae_seasonal_naive"]:
        assert metric in run.data.metrics, metric
    assert run.data.metrics["test_mase"] == pytest.approx(summary["test"]["mase"])
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 5
    artifacts = artifact_paths(client, run.info.run_id)
    assert {"config.yaml", "forecasts.png", "backtest/val.parquet", "backtest/test.parquet"} <= artifacts
    # The run page a forecaster wants: curves together, scores beside both baselines, error by step, residuals;
    # params that change the model (plumbing only in config.yaml); the data as an MLflow dataset.
    assert {"learning_curves.png", "scores.png", "scores.csv", "error_by_step.png", "residuals.png"} <= artifacts
    scores = pd.read_csv(client.download_artifacts(run.info.run_id, "scores.csv", str(tmp_path)), index_col=0)
    assert scores.loc["test", "model"] == pytest.approx(summary["test"]["mase"])
    assert scores.loc["val", "seasonal_naive"] == pytest.approx(summary["val_seasonal_naive"]["mase"])
    assert len(client.get_metric_history(run.info.run_id, "test_mase_by_step")) == 48
    # val_loss is the kept checkpoint's (the best so far), so the run list shows the number the summary, the
    # registry and the sweepers use; each validation's own loss is val_loss_raw.
    raw = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss_raw"), key=lambda m: m.step)]
    best = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)]
    assert best == list(np.minimum.accumulate(raw)) and len(raw) >= 2
    assert run.data.metrics["val_loss"] == run.data.metrics["best_val_loss"] == min(raw)
    assert min(raw) == pytest.approx(summary["val_loss"])
    assert not [key for key in run.data.params if key.startswith("tracking.") or "progress_bar" in key]
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert dataset.name == vic_elec_slice.name and '"name": "demand"' in dataset.schema and dataset.digest
    # Every test forecast is kept, and reproduces the reported MASE.
    rows = pd.read_parquet(client.download_artifacts(run.info.run_id, "backtest/test.parquet", str(tmp_path)))
    assert len(rows) == 2 * 48  # two daily origins in the 96-step test block
    mase = np.mean(np.abs(rows["forecast"] - rows["actual"]) / rows["mase_scale"])
    assert mase == pytest.approx(summary["test"]["mase"])
    assert any(p.startswith("checkpoints/") and p.endswith(".ckpt") for p in artifacts)

    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert [c.name for c in info.signature.inputs.inputs] == ["time", "demand"]

    # The saved model forecasts the next horizon from recent history, its times as the file has them.
    model = load_model(f"runs:/{run.info.run_id}/model", TrackingConfig(uri=tracking_uri))
    history = pd.read_parquet(vic_elec_slice).iloc[-200:]
    forecast = model.forecast(history)
    assert len(forecast) == 48 and forecast["forecast"].notna().all()
    assert forecast["time"].tolist() == list(
        pd.date_range(history["time"].iloc[-1] + pd.Timedelta("30min"), periods=48, freq="30min"))
    assert forecast["forecast"].between(1000, 15000).all()


def in_a_terminal(module: str, *overrides: str) -> tuple[str, str]:
    """`python -m MODULE overrides` with stderr on a pseudo-terminal, as a user at a shell sees it; its stdout and
    stderr."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal has a size
    process = start_stage(module, *overrides, stderr=secondary)
    os.close(secondary)
    seen = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the process has closed the terminal
            break
        if not chunk:
            break
        seen.append(chunk)
    os.close(primary)
    stdout = process.stdout.read()
    assert process.wait(timeout=300) == 0, b"".join(seen)[-3000:]
    return stdout, b"".join(seen).decode(errors="replace")


@pytest.mark.slow
def test_in_a_terminal_training_shows_lightnings_progress_bar_with_its_losses_on_stderr(
        tmp_path, vic_elec_slice, tracking_uri):
    stdout, terminal = in_a_terminal("pipeline.train", f"data.path={vic_elec_slice}", f"tracking.uri={tracking_uri}",
                                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL)
    assert json.loads(stdout)["run_id"]  # stdout stays the one JSON line
    assert re.search(r"Epoch \d+: .*train_loss=[0-9.]+.*val_loss=[0-9.]+", terminal), terminal[-3000:]
    assert "step 12 of 12: val_loss" not in terminal and "v_num" not in terminal  # the bar replaces those lines


@pytest.mark.slow
def test_bad_data_path_exits_non_zero_with_one_line_and_leaves_no_run(tmp_path, tracking_uri):
    missing = tmp_path / "nowhere.csv"
    done = run_stage("pipeline.train", f"data.path={missing}", f"tracking.uri={tracking_uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL)
    assert done.returncode == 2
    assert f"{missing}: file not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert MlflowClient(tracking_uri).search_runs(experiment_ids=["0"], max_results=5) == []
    assert not MlflowClient(tracking_uri).get_experiment_by_name("pipeline")


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("++trainer.max_epoch=3", "trainer.max_epoch is not a Lightning Trainer argument"),
], ids=["unknown_trainer_argument"])
def test_unusable_trainer_config_is_refused_before_any_run_starts(tmp_path, vic_elec_slice, tracking_uri,
                                                                  override, message):
    done = run_stage("pipeline.train", f"data.path={vic_elec_slice}", f"tracking.uri={tracking_uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, override)
    assert done.returncode == 2
    assert message in done.stderr
    assert not MlflowClient(tracking_uri).get_experiment_by_name("pipeline")


@pytest.mark.slow
def test_early_stopping_ends_training_when_the_validation_loss_stops_improving(tmp_path, vic_elec_slice,
                                                                              tracking_uri):
    # lr 1e-30 (lr must be > 0): updates vanish in float32 rounding, so the validation loss never improves after
    # the first check (step 2); patience 1 stops at the next.
    done = run_stage("pipeline.train", f"data.path={vic_elec_slice}", f"tracking.uri={tracking_uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, "optim.lr=1e-30", "optim.patience=1",
                     "trainer.val_check_interval=2", "tracking.log_model=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["fit_steps"] == 4  # of trainer.max_steps=12


@pytest.mark.slow
def test_a_run_shorter_than_the_validation_interval_validates_at_its_end(tmp_path, vic_elec_slice, tracking_uri):
    done = run_stage("pipeline.train", f"data.path={vic_elec_slice}", f"tracking.uri={tracking_uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, "trainer.val_check_interval=50",
                     "tracking.log_model=false")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["fit_steps"] == 12 and np.isfinite(summary["val_loss"])
    steps = [m.step for m in MlflowClient(tracking_uri).get_metric_history(summary["run_id"], "val_loss")]
    assert steps == [11]  # one validation, after the last of the 12 steps (Lightning counts from 0)
    assert "validating at step 12" in done.stderr


def messy_long_file(path: Path) -> None:
    """Three hourly series of different lengths and starts, with gaps, holes, shuffled rows and a short one."""
    rng = np.random.default_rng(0)
    frames = []
    shapes = [("north", "2024-01-01", 400), ("south", "2024-01-03 05:00", 330), ("tiny", "2024-01-05", 130)]
    for name, start, n in shapes:
        t = np.arange(n)
        frames.append(pd.DataFrame({
            "site": name, "kind": "power", "stamp": pd.date_range(start, periods=n, freq="h"),
            "mw": 50 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n), "temp": 15 + rng.normal(0, 3, n)}))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.drop(index=[50, 51, 52, 500])          # gaps in training rows
    frame = frame.drop(index=range(320, 325))             # and in north's validation block
    frame.loc[[100, 600], "mw"] = np.nan                  # missing values (none in the last 100 rows)
    frame.sample(frac=1, random_state=0).to_csv(path, index=False)


@pytest.mark.slow
@pytest.mark.parametrize("short_series", ["drop", "pad"])
def test_messy_long_file_trains_one_global_model_with_every_policy_counted(tmp_path, tracking_uri, short_series):
    path = tmp_path / "sites.csv.gz"
    messy_long_file(path)
    done = run_stage(
        "pipeline.train", f"data.path={path}", "data.time_column=stamp", "data.target_column=mw",
        "data.id_column=[site,kind]", "data.covariates=[temp]", "data.gaps=fill", "data.missing=interpolate",
        f"data.short_series={short_series}", "data.scaler=robust", "model.series_embedding=3", "model=gru",
        f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path / 'run'}", "window.lookback=48",
        "window.horizon=24", "split.val_steps=48", "split.test_steps=48", "window.batch_size=32",
        "model.hidden_size=8", "trainer.max_steps=10", "trainer.val_check_interval=5")
    assert done.returncode == 0, done.stderr[-3000:]
    trained = {"drop": {"north", "south"}, "pad": {"north", "south", "tiny"}}[short_series]
    if short_series == "drop":
        assert "dropped 1 series too short to train on: [\"tiny\", \"power\"]" in done.stderr
    run = MlflowClient(tracking_uri).get_run(json.loads(done.stdout)["run_id"])
    tags = run.data.tags
    assert tags["data.series_trained"] == str(len(trained)) and tags["data.gap_rows_filled"] == "9"
    # 9 gap rows x (mw, temp) + 2 missing mw cells
    assert tags["data.values_filled"] == "20" and int(tags["data.rows_out_of_order"]) > 0
    # Filled targets are marked, and no block scores them.
    assert (tags["data.train_targets_filled"], tags["data.val_targets_filled"]) == ("6", "5")
    assert tags["data.test_targets_filled"] == "0" and tags["val.points_excluded"] == "5"
    val = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                              artifact_path="backtest/val.parquet",
                                                              tracking_uri=tracking_uri))
    assert val.loc[~val["observed"], "site"].tolist() == ["north"] * 5

    # Recent history of every trained series: 100 rows, but only 30 (< lookback 48) for tiny when padded.
    history = pd.read_csv(path).query("site in @trained")
    history["stamp"] = pd.to_datetime(history["stamp"])
    history = history.sort_values("stamp").groupby("site").tail(100).dropna()
    history = history.drop(history.query("site == 'tiny'").index[:-30])
    model = load_model(f"runs:/{run.info.run_id}/model", TrackingConfig(uri=tracking_uri))
    forecast = model.forecast(history[["site", "kind", "stamp", "mw", "temp"]])
    assert list(forecast.columns) == ["site", "kind", "stamp", "forecast"]
    assert forecast.groupby("site").size().to_dict() == {site: 24 for site in trained}
    assert forecast["forecast"].between(0, 100).all()
