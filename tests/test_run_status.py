"""MLflow run statuses tell the truth: FAILED or KILLED with the reason, never FINISHED early or RUNNING forever."""

import signal
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.tracking import store as tracking
from tests.helpers import SMALL, StageProcess, latest_run, run_stage, start_stage

# Long enough that the signal lands mid-training; validation (and last.ckpt) every 6 steps.
ENDLESS = [*SMALL, "trainer.max_steps=100000"]


def start_training(store, run_dir: Path) -> StageProcess:
    return start_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={store.uri}",
                       f"hydra.run.dir={run_dir}", *ENDLESS)


def wait_for(path: Path, process: StageProcess, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear in {seconds} s"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sent, reason", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_a_signalled_training_run_is_killed_with_the_reason_and_keeps_its_checkpoint(store, tmp_path, sent,
                                                                                      reason):
    process = start_training(store, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    process.send_signal(sent)
    _, err = process.communicate(timeout=120)
    # The exit code a scheduler reads as that signal, and one line saying where it stopped and how to continue.
    assert process.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sent], err[-3000:]
    run = latest_run(store.uri)
    assert run.info.status == "KILLED" and reason in run.data.tags.get("failure.reason", ""), err[-3000:]
    assert last.exists()  # for resumption
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"pipeline.train: stopped: {reason} at step ")
    assert f"continue it with python -m pipeline.train resume={run.info.run_id}" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_run_that_raises_is_failed_with_the_reason(store, tmp_path):
    # Lightning fails on this inside the stage, after the run is open.
    done = run_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, "++trainer.accumulate_grad_batches=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    run = latest_run(store.uri)
    # The reason is the error the command ended with, in its one line; the traceback is in the run's log file,
    # in the run folder and on the run.
    assert run.info.status == "FAILED"
    errors = [line for line in done.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and run.data.tags["failure.reason"] in errors[0]
    log_file = tmp_path / "run" / "train.log"
    assert f"the full traceback is in {log_file}" in errors[0]
    assert "Traceback (most recent call last)" in log_file.read_text()
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="logs/train.log",
                                                 tracking_uri=store.uri)
    assert "Traceback (most recent call last)" in Path(logged).read_text()


@pytest.mark.slow
def test_a_run_left_running_by_a_killed_process_is_marked_killed_by_the_next_start(store, tmp_path):
    process = start_training(store, tmp_path / "run")
    wait_for(tmp_path / "run" / "checkpoints" / "last.ckpt", process)
    process.kill()
    process.communicate(timeout=60)
    orphan = latest_run(store.uri)
    assert orphan.info.status == "RUNNING"
    with tracking.start_run(TrackingConfig(uri=store.uri, experiment="pipeline")) as run:
        pass
    client = MlflowClient(store.uri)
    orphan = client.get_run(orphan.info.run_id)
    assert orphan.info.status == "KILLED" and "killed" in orphan.data.tags["failure.reason"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_finished_training_run_is_finished_only_after_its_model_is_logged(store):
    # Lightning's logger ends the run when fit ends; the stage must end it, after everything is logged.
    run = MlflowClient(store.uri).get_run(store.train()["run_id"])
    assert run.info.status == "FINISHED" and "failure.reason" not in run.data.tags
    assert run.info.end_time >= max(m.timestamp for m in MlflowClient(store.uri).get_metric_history(
        run.info.run_id, "test_mase"))
