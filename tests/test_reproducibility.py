"""Any run can be traced to its code, libraries and data, and rerun to the same numbers."""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="module")
def same_seed(store) -> tuple[dict, dict]:
    # Each in a new interpreter, as a user reruns a command (forked ones would share one string-hash seed); both
    # at once.
    with ThreadPoolExecutor(2) as pool:
        return tuple(pool.map(lambda _: store.train("seed=3", fresh=True), range(2)))


@pytest.mark.slow
def test_same_config_and_seed_on_cpu_give_identical_metrics(store, same_seed):
    first, second = same_seed
    client = MlflowClient(store.uri)
    metrics = [{k: v for k, v in client.get_run(s["run_id"]).data.metrics.items() if k != "fit_seconds"}
               for s in (first, second)]
    assert first["run_id"] != second["run_id"]
    # Seeding resets the random module MLflow draws run names from; ours are unique and say what was set.
    names = [client.get_run(s["run_id"]).info.run_name for s in (first, second)]
    assert names[0] != names[1] and all(name.startswith("lstm ") and "seed=3" in name for name in names)
    assert not any("tracking." in name or "hydra." in name for name in names)
    assert metrics[0] == metrics[1] and "test_mase" in metrics[0] and "val_loss" in metrics[0]
    losses = [[m.value for m in client.get_metric_history(s["run_id"], "train_loss")] for s in (first, second)]
    assert losses[0] == losses[1] and len(losses[0]) >= 5
    # A different seed is a different run: the check above can fail.
    assert store.train("seed=4")["val_loss"] != first["val_loss"]


@pytest.mark.slow
def test_a_run_records_library_versions_the_git_commit_and_the_data_files_hash(store, same_seed):
    tags = MlflowClient(store.uri).get_run(same_seed[0]["run_id"]).data.tags
    assert tags["versions.torch"] == torch.__version__
    assert {"versions.lightning", "versions.mlflow", "versions.pandas", "versions.python"} <= set(tags)
    assert tags["data.sha256"] == hashlib.sha256((store.folder / "train.parquet").read_bytes()).hexdigest()
    # MLflow's own tag, from the checkout the code runs from.
    assert len(tags["mlflow.source.git.commit"]) == 40
