"""A tracking server that does not answer: the stage fails fast in one line before any training, or records
into a local store when told to fall back."""

import json
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SMALL, free_port, run_stage


@pytest.mark.slow
def test_an_unreachable_server_fails_training_fast_in_one_line_before_any_training(store, tmp_path):
    # Nothing listens on the port: what a stopped `mlflow server` looks like to a client.
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = run_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, "tracking.retries=1", "tracking.timeout=2")
    elapsed = time.monotonic() - started
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert f"tracking.uri={uri} does not answer" in last and "offline_fallback" in last
    assert not (tmp_path / "run" / "checkpoints").exists()
    # MLflow's defaults would retry for minutes; imports and data loading take ~10 s of this.
    assert elapsed < 60, elapsed


@pytest.mark.slow
def test_offline_fallback_records_the_run_into_the_local_store_and_says_where(store, tmp_path):
    offline = f"sqlite:///{tmp_path / 'offline.db'}"
    done = run_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}",
                     f"tracking.uri=http://127.0.0.1:{free_port()}", f"hydra.run.dir={tmp_path / 'run'}", *SMALL,
                     "tracking.retries=0", "tracking.offline_fallback=true", f"tracking.offline_uri={offline}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["tracking_uri"] == offline and offline in done.stderr
    run = MlflowClient(offline).get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and "test_mase" in run.data.metrics


@pytest.mark.slow
def test_forecasting_from_an_unreachable_server_fails_in_one_line(store, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    done = run_stage("pipeline.forecast", "model_uri=models:/demand@champion",
                     f"data.path={store.folder / 'new.parquet'}", f"output={tmp_path / 'out.csv'}",
                     f"tracking.uri={uri}", "tracking.retries=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and f"tracking.uri={uri} does not answer" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out.csv").exists()
