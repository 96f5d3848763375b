"""hparams_search=optuna: Optuna proposes, each trial is a training run, the best by validation loss is tagged."""

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import SearchConfig
from pipeline.errors import ConfigError, TrainingDiverged
from pipeline.training.search import BEST, search, search_space
from tests.helpers import SMALL, compose_config, run_stage


def test_the_search_space_reads_hydras_sweep_syntax():
    space = search_space({"model.hidden_size": "choice(8, 16)", "model.num_layers": "range(1, 4)",
                          "model.dropout": "interval(0.0, 0.3)", "optim.lr": "tag(log, interval(1e-4, 1e-2))",
                          "window.stride": "int(interval(1, 8))"})
    assert space["model.hidden_size"].choices == (8, 16)
    assert (space["model.num_layers"].low, space["model.num_layers"].high) == (1, 3)
    assert (space["model.dropout"].low, space["model.dropout"].high, space["model.dropout"].log) == (0.0, 0.3, False)
    assert space["optim.lr"].log and space["optim.lr"].low == 1e-4
    assert type(space["window.stride"]).__name__ == "IntDistribution"


@pytest.mark.parametrize("params, named", [({"model.hiden_size": "choice(8, 16)"}, "model.hiden_size"),
                                           ({"optim.lr": "0.01"}, "optim.lr=0.01 is not a search range"),
                                           ({"optim.lr": "interval(0.1"}, "hparams_search.params.optim.lr")])
def test_a_bad_search_space_fails_before_any_trial_naming_the_key(params, named, tmp_path):
    cfg = compose_config("hparams_search=optuna")
    trained = []
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        search(cfg, SearchConfig(n_trials=2, params=params), tmp_path, {}, lambda *args: trained.append(args))
    assert not trained


def test_failed_trials_are_recorded_and_the_search_goes_on_to_tag_the_best(tracking_uri, tmp_path):
    cfg = compose_config("hparams_search=optuna", f"tracking.uri={tracking_uri}")
    space = SearchConfig(n_trials=6, params={"optim.lr": "interval(0.0, 1.0)"})

    def train(trial_cfg, folder: Path, tags: dict) -> dict:
        # A real run per trial; its "validation loss" is known, and high learning rates diverge.
        assert trial_cfg.hparams_search is None and str(folder.parent) == str(tmp_path)
        if trial_cfg.optim.lr > 0.6:
            raise TrainingDiverged("training step 1: the loss or gradient is not finite")
        with mlflow.start_run(tags=tags) as run:
            mlflow.log_metric("val_loss", abs(trial_cfg.optim.lr - 0.3))
        return {"run_id": run.info.run_id, "tracking_uri": tracking_uri, "val_loss": abs(trial_cfg.optim.lr - 0.3)}

    result = search(cfg, space, tmp_path, {}, train)
    runs = MlflowClient(tracking_uri).search_runs([mlflow.get_run(result["run_id"]).info.experiment_id])
    assert result["failed_trials"] == 6 - len(runs) > 0
    best = min(runs, key=lambda r: r.data.metrics["val_loss"])
    assert best.info.run_id == result["run_id"] and best.data.tags[BEST] == "true"
    assert [r.data.tags.get(BEST) for r in runs].count("true") == 1
    assert json.loads((tmp_path / "search.json").read_text())["best_trial"] == result["best_trial"]


@pytest.mark.slow
def test_an_optuna_search_trains_each_trial_as_a_run_and_tags_the_best(store, tmp_path):
    done = run_stage("pipeline.train", "hparams_search=optuna", "hparams_search.n_trials=3",
                     f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'search'}", *SMALL, "trainer.max_steps=6")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    client = MlflowClient(store.uri)
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id],
                              f"tags.sweep = '{(tmp_path / 'search').resolve()}'")
    # One parent run of the search, its three trials nested under it.
    parents = [r for r in runs if r.data.tags.get("stage") == "search"]
    runs = [r for r in runs if r.data.tags.get("stage") != "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and summary["search_run_id"] == parents[0].info.run_id
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.tags["sweep.trial"] for r in runs) == ["0", "1", "2"]
    # Trials differ in what the search varies, within its ranges; the rest is the command's.
    assert len({r.data.params["optim.lr"] for r in runs}) == 3
    assert all(3e-4 <= float(r.data.params["optim.lr"]) <= 1e-2 for r in runs)
    assert {r.data.params["window.lookback"] for r in runs} == {"96"}
    # The best is chosen on validation loss: the lowest of every run's validations.
    best_val = {r.info.run_id: min(m.value for m in client.get_metric_history(r.info.run_id, "val_loss"))
                for r in runs}
    assert summary["run_id"] == min(best_val, key=best_val.get)
    assert summary["val_loss"] == pytest.approx(min(best_val.values()))
    assert [r.info.run_id for r in runs if r.data.tags.get(BEST) == "true"] == [summary["run_id"]]


def test_a_search_stopped_during_its_second_trial_resumes_there_from_its_storage(tracking_uri, tmp_path):
    cfg = compose_config("hparams_search=optuna", f"tracking.uri={tracking_uri}")
    space = SearchConfig(n_trials=3, params={"optim.lr": "interval(0.0, 1.0)"}, storage=f"sqlite:///{tmp_path}/s.db")
    trained = []

    def train(trial_cfg, folder: Path, tags: dict) -> dict:
        trained.append(trial_cfg.optim.lr)
        if len(trained) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second trial
        with mlflow.start_run(tags=tags) as run:
            mlflow.log_metric("val_loss", trial_cfg.optim.lr)
        return {"run_id": run.info.run_id, "tracking_uri": tracking_uri, "val_loss": trial_cfg.optim.lr}

    with pytest.raises(KeyboardInterrupt):
        search(cfg, space, tmp_path / "first", {}, train)
    stopped = MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()], "tags.stage = 'search'")
    assert [r.info.status for r in stopped] == ["KILLED"]
    result = search(cfg, space, tmp_path / "again", {}, train)
    # The first trial is not trained again; the cut-short one is, with the same values; then the third.
    assert len(trained) == 4 and trained[2] == trained[1]
    assert result["trials"] == 3 and result["failed_trials"] == 0  # the cut-short trial does not count
    assert result["val_loss"] == min(trained[0], *trained[2:])
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result["search_run_id"])
    assert parent.info.status == "FINISHED"
    trials = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 3
