"""Jobs started at once: on one fresh sqlite store, and four trainings beside two forecasts on one tracking server
and one outputs folder."""

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.config import TrackingConfig
from tests.conftest import ROOT, SMALL


def open_a_run(uri: str) -> str:
    with tracking.start_run(TrackingConfig(uri=uri, experiment="together")) as run:
        mlflow.log_metric("x", 1.0)
    return run.info.run_id


def test_jobs_starting_together_on_a_fresh_sqlite_store_all_get_their_run(tmp_path):
    # Without a lock around creating the schema, most of these fail inside MLflow's migration.
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        run_ids = pool.map(open_a_run, [uri] * 4)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(run.info.run_id for run in runs) == sorted(set(run_ids)) and len(runs) == 4
    assert all(run.info.status == "FINISHED" for run in runs)


def start(module: str, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_four_trainings_and_two_forecasts_at_once_share_one_server_and_outputs_folder(server_store, tmp_path):
    model = server_store.train()
    outputs = tmp_path / "outputs"
    # The default output folders' pattern, in one outputs folder of the test's own.
    run_dir = "hydra.run.dir=" + str(outputs / "runs" / "${now:%Y-%m-%d}" / "${now:%H-%M-%S-%f}")
    forecast = outputs / "forecast.csv"  # both forecast jobs write here
    uri = f"tracking.uri={server_store.uri}"
    jobs = [start("pipeline.train", f"data.path={server_store.folder / 'train.parquet'}", uri, run_dir, *SMALL,
                  f"seed={seed}") for seed in range(4)]
    jobs += [start("pipeline.forecast", f"model_uri=runs:/{model['run_id']}/model", f"output={forecast}",
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
