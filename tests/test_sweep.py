"""Hydra multirun (-m): every combination its own MLflow run and folder, grouped by one tag; a failing job
leaves the others to finish."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import SMALL, run_stage


def sweep(store, sweep_dir: Path, *overrides: str):
    """`python -m pipeline.train -m ...` of SMALL six-step models on the store's data."""
    return run_stage("pipeline.train", "-m", f"data.path={store.folder / 'train.parquet'}",
                     f"tracking.uri={store.uri}", f"hydra.sweep.dir={sweep_dir}", *SMALL, "trainer.max_steps=6",
                     *overrides)


def sweep_runs(uri: str, sweep_dir: Path):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("pipeline")
    return client.search_runs([experiment.experiment_id], f"tags.sweep = '{sweep_dir.resolve()}'",
                              order_by=["tags.`sweep.job` ASC"])


@pytest.mark.slow
def test_a_sweep_runs_every_combination_as_its_own_run_and_folder_grouped_by_one_tag(store, tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = sweep(store, sweep_dir, "model=rnn,gru", "model.bidirectional=false,true")
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines()]
    runs = sweep_runs(store.uri, sweep_dir)
    assert sorted(r.info.run_id for r in runs) == sorted(s["run_id"] for s in summaries) and len(runs) == 4
    combinations = {(r.data.params["model.cell"], r.data.params["model.bidirectional"]) for r in runs}
    assert combinations == {("rnn", "False"), ("rnn", "True"), ("gru", "False"), ("gru", "True")}
    for job, run in enumerate(runs):
        assert run.info.status == "FINISHED" and run.data.tags["sweep.job"] == str(job)
        assert Path(run.data.tags["output_dir"]) == (sweep_dir / str(job)).resolve()
        assert json.loads((sweep_dir / str(job) / "metrics.json").read_text())["run_id"] == run.info.run_id
        assert "model=" in run.info.run_name and "model.bidirectional=" in run.info.run_name


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep_or_leave_its_run_open(store, tmp_path):
    # The first job diverges at its first step; the second trains normally in the same process.
    sweep_dir = tmp_path / "sweep"
    done = sweep(store, sweep_dir, "trainer.gradient_clip_val=null", "optim.lr=1e20,3e-3")
    assert done.returncode != 0
    assert "training step 1: the loss or gradient is not finite" in done.stderr
    failed, finished = sweep_runs(store.uri, sweep_dir)
    assert failed.info.status == "FAILED" and "not finite" in failed.data.tags["failure.reason"]
    assert finished.info.status == "FINISHED" and "test_mase" in finished.data.metrics
