"""A tracking server that does not answer: the stage fails fast in one line before any training, or records
into a local store when told to fall back; one that restarts during training loses nothing."""

import json
import shutil
import time

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from pipeline.errors import ConfigError
from pipeline.tracking import store as tracking
from tests.helpers import SMALL, free_port, run_stage, start_mlflow_server, start_stage


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


@pytest.mark.slow
def test_a_server_restarting_during_training_loses_no_metric_and_no_model(store, migrated_store, tmp_path):
    shutil.copy(migrated_store, tmp_path / "server.db")
    url = f"http://127.0.0.1:{free_port()}"
    server = start_mlflow_server(tmp_path, url)
    steps = 40
    training = start_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={url}",
                           f"hydra.run.dir={tmp_path / 'run'}", *SMALL, f"trainer.max_steps={steps}",
                           "trainer.log_every_n_steps=1", "trainer.val_check_interval=10",
                           "tracking.outage_seconds=60")
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists():
            assert training.poll() is None and time.monotonic() < deadline, training.stderr.read()[-3000:]
            time.sleep(0.1)
        server.terminate()  # the server goes away mid-training ...
        server.wait(timeout=30)
        time.sleep(0.5)
        server = start_mlflow_server(tmp_path, url)  # ... and comes back on the same address
        out, err = training.communicate(timeout=240)
        assert training.returncode == 0, err[-3000:]
        run_id = json.loads(out)["run_id"]
        client = MlflowClient(url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "test_mase" in run.data.metrics
        # Every step's loss, including those logged while the server was away.
        assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(steps))
        (model,) = client.search_logged_models([run.info.experiment_id],
                                               filter_string=f"source_run_id = '{run_id}'")
        assert model.status == LoggedModelStatus.READY
    finally:
        training.kill()
        server.terminate()
        server.wait(timeout=30)


def test_outage_seconds_become_enough_mlflow_retries_and_beyond_what_mlflow_allows_is_refused():
    # urllib3 waits 0, 2, 4, 8, 16, 32, 64 s between tries: 7 retries outlast 120 s, 6 do not (62 s).
    assert tracking.retries_to_outlast(120) == 7 and tracking.retries_to_outlast(62) == 6
    with pytest.raises(ConfigError, match="tracking.outage_seconds=600"):
        tracking.retries_to_outlast(600)


@pytest.mark.slow
def test_a_damaged_sqlite_store_is_named_in_one_line(store, migrated_store, tmp_path):
    damaged = tmp_path / "damaged.db"
    shutil.copy(migrated_store, damaged)
    data = bytearray(damaged.read_bytes())
    for page in range(2, len(data) // 4096):  # every page after the first holds garbage now
        data[page * 4096:page * 4096 + 2048] = b"\x13" * 2048
    damaged.write_bytes(bytes(data))
    uri = f"sqlite:///{damaged}"
    done = run_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and f"tracking.uri={uri} failed: database disk image is malformed" in errors[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
