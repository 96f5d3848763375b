"""Jobs started at once on one fresh sqlite store (jobs at once on a server: tests/test_tracking_server.py)."""

import multiprocessing

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.tracking import store as tracking


def open_a_run(uri: str) -> str:
    with tracking.start_run(TrackingConfig(uri=uri, experiment="together")) as run:
        mlflow.log_metric("x", 1.0)
    return run.info.run_id


@pytest.mark.slow
def test_jobs_starting_together_on_a_fresh_sqlite_store_all_get_their_run(tmp_path):
    # Without a lock around creating the schema, most of these fail inside MLflow's migration.
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        run_ids = pool.map(open_a_run, [uri] * 4)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(run.info.run_id for run in runs) == sorted(set(run_ids)) and len(runs) == 4
    assert all(run.info.status == "FINISHED" for run in runs)
