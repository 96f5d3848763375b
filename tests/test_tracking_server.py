"""Every stage against a real MLflow tracking server over HTTP, as a team shares one, and jobs running at once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, SMALL, run_stage


@pytest.mark.slow
def test_a_sweep_through_the_team_server_preset_records_every_run_on_the_server(server_store, tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_stage("pipeline.train", "-m", "tracking=server", f"data.path={server_store.folder / 'train.parquet'}",
                     f"hydra.sweep.dir={sweep_dir}", *SMALL, "trainer.max_steps=6", "seed=0,1,2",
                     env={"MLFLOW_TRACKING_URI": server_store.uri})  # how the preset finds the server
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(server_store.uri)
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id],
                              f"tags.sweep = '{sweep_dir.resolve()}'")
    assert len(runs) == 3 and {r.data.params["seed"] for r in runs} == {"0", "1", "2"}
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["tracking.uri"] == server_store.uri
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # stored by the server, not beside us
        assert "forecasts.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.fixture(scope="module")
def trained(server_store) -> dict:
    return server_store.train()


@pytest.mark.slow
def test_train_register_and_forecast_through_a_tracking_server(server_store, trained, tmp_path):
    done = run_stage("pipeline.register", f"run_id={trained['run_id']}", "name=demand",
                     f"tracking.uri={server_store.uri}", f"hydra.run.dir={tmp_path / 'register'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["champion"]

    output = tmp_path / "forecast.csv"
    done = run_stage("pipeline.forecast", "model_uri=models:/demand@champion",
                     f"data.path={server_store.folder / 'new.parquet'}", f"output={output}",
                     f"tracking.uri={server_store.uri}", f"hydra.run.dir={tmp_path / 'forecast'}")
    assert done.returncode == 0, done.stderr[-3000:]
    forecast = pd.read_csv(output, parse_dates=["time"])
    last = pd.read_parquet(server_store.folder / "new.parquet")["time"].max()
    assert len(forecast) == 48 and forecast["time"].iloc[0] == last + pd.Timedelta("30min")

    # Everything was recorded by the server: the training run with its model, the version, the forecast run.
    client = MlflowClient(server_store.uri)
    summary = json.loads(done.stdout)
    assert client.get_run(trained["run_id"]).info.status == "FINISHED"
    assert client.get_model_version_by_alias("demand", "champion").run_id == trained["run_id"]
    forecast_run = client.get_run(summary["run_id"])
    assert forecast_run.data.tags["model_run_id"] == trained["run_id"]
    assert [a.path for a in client.list_artifacts(summary["run_id"], "forecast")] == ["forecast/forecast.csv"]
    assert (server_store.folder / "artifacts").is_dir()  # artifacts went through the server, not beside us


def start(module: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_four_trainings_and_two_forecasts_at_once_share_one_server_and_outputs_folder(server_store, trained,
                                                                                      tmp_path):
    outputs = tmp_path / "outputs"
    # The default output folders' pattern, in one outputs folder of the test's own.
    run_dir = "hydra.run.dir=" + str(outputs / "runs" / "${now:%Y-%m-%d}" / "${now:%H-%M-%S-%f}")
    forecast = outputs / "forecast.csv"  # both forecast jobs write here
    uri = f"tracking.uri={server_store.uri}"
    jobs = [start("pipeline.train", f"data.path={server_store.folder / 'train.parquet'}", uri, run_dir, *SMALL,
                  f"seed={seed}") for seed in range(4)]
    jobs += [start("pipeline.forecast", f"model_uri=runs:/{trained['run_id']}/model", f"output={forecast}",
                   f"data.path={server_store.folder / 'new.parquet'}", uri, run_dir) for _ in range(2)]
    finished = [job.communicate(timeout=600) for job in jobs]
    for job, (_, err) in zip(jobs, finished):
        assert job.returncode == 0, err[-3000:]
    summaries = [json.loads(out) for out, _ in finished]

    client = MlflowClient(server_store.uri)
    trained = [s["run_id"] for s in summaries[:4]]
    assert len(set(trained)) == 4
    folders = set()
    for run_id in trained:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "test_mase" in run.data.metrics
        folder = Path(run.data.tags["output_dir"])
        folders.add(folder)
        # Each folder holds its own run's files, whole: no job wrote into another's.
        assert json.loads((folder / "metrics.json").read_text())["run_id"] == run_id
        log = (folder / "train.log").read_text()
        assert run_id in log and not any(other in log for other in set(trained) - {run_id})
        assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert len(folders) == 4 and all(folder.parent.parent == outputs / "runs" for folder in folders)

    # One complete file from the two forecasts (they forecast the same thing), and no temporary left behind.
    written = pd.read_csv(forecast)
    assert len(written) == 48 and written.notna().all().all()
    assert sorted(p.name for p in outputs.iterdir() if p.is_file()) == ["forecast.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert forecast.stat().st_mode & 0o777 == 0o666 & ~umask  # readable as any file the job writes, not 0600
    for summary in summaries[4:]:
        assert client.get_run(summary["run_id"]).info.status == "FINISHED"
