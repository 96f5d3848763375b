"""experiment=auto (pipeline/training/auto.py): recipes trained on the file without its test block, scored on its
validation block, halved within the budget, each an MLflow run nested under one parent that names the winner;
the winner then trained on all the training data."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.config import AutoConfig
from pipeline.training.auto import Score, halve, verdict
from tests.helpers import run_stage

SMALL_AUTO = ["experiment=auto", "window.lookback=96", "window.horizon=48", "window.stride=4", "window.batch_size=16",
              "split.val_steps=96", "split.test_steps=96", "model.hidden_size=8", "trainer.max_steps=12",
              "trainer.val_check_interval=6", "trainer=cpu", "~auto.recipes.lookback_x2", "~auto.recipes.mse"]


@pytest.mark.slow
def test_auto_chooses_on_the_validation_block_never_reads_the_test_block_and_nests_every_run(tmp_path, vic_elec,
                                                                                            migrated_store):
    import shutil

    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    vic_elec.iloc[:1200].to_parquet(tmp_path / "train.parquet", index=False)
    done = run_stage("pipeline.train", f"data.path={tmp_path / 'train.parquet'}", *SMALL_AUTO,
                     f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    choice = summary["auto"]
    assert choice["minutes"] < 10  # auto.budget_minutes
    client = MlflowClient(uri)
    parent = client.get_run(choice["parent_run_id"])
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    candidates = [r for r in runs if "auto.recipe" in r.data.tags]
    # Three recipes, one round (eta 3) of 12 / 3 steps each; then the winner on all the data.
    assert sorted(r.data.tags["auto.recipe"] for r in candidates) == ["default", "no_seasonal_skip", "one_lstm_mse"]
    assert {r.data.params["trainer.max_steps"] for r in candidates} == {"4"}
    assert parent.data.tags["auto.winner"] == choice["winner"] and parent.info.status == "FINISHED"
    best = min(candidates, key=lambda r: r.data.metrics["test_mase"])
    assert best.data.tags["auto.recipe"] == choice["winner"]
    assert choice["val_mase"] == pytest.approx(best.data.metrics["test_mase"])
    # The candidates trained on the file without its test block: their test block is its validation block.
    held_out = Path(candidates[0].data.params["data.path"])
    assert len(pd.read_parquet(held_out)) == 1200 - 96
    assert pd.read_parquet(held_out)["time"].max() < vic_elec["time"].iloc[1200 - 96]
    final = client.get_run(summary["run_id"])
    assert final.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert final.data.tags["auto.winner"] == choice["winner"]
    assert final.data.params["data.path"] == str(tmp_path / "train.parquet")
    assert final.data.params["trainer.max_steps"] == "12" and parent.data.tags["auto.final_run_id"] == final.info.run_id


def test_halving_keeps_the_best_third_with_three_times_the_steps_and_stops_at_the_budget(tmp_path):
    mase = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.8, "e": 0.6}
    trained = []

    def train(config, folder, tags):  # what a training would report: its recipe's score on the validation block
        name = tags["auto.recipe"]
        trained.append((name, config.trainer.max_steps))
        return {"run_id": f"{name}-{len(trained)}", "test": {"mase": mase[name] - 0.01 * config.trainer.max_steps}}

    cfg = OmegaConf.create({"trainer": {"max_steps": 90, "val_check_interval": 30}, "auto": {}})
    auto = AutoConfig(budget_minutes=60, eta=3, recipes={name: {} for name in mase})
    scores = halve(cfg, auto, 96, 90, __import__("time").monotonic(), tmp_path, {}, train)
    # ceil(log3(5)) = 2 rounds: five at 90 / 9 steps, then the best two (b, e) at 90 / 3.
    assert trained == [("a", 10), ("b", 10), ("c", 10), ("d", 10), ("e", 10), ("b", 30), ("e", 30)]
    winner, margin = verdict(scores)
    assert winner.recipe == "b" and margin.startswith("0.1000 below e (round 2)")
    trained.clear()
    spent = __import__("time").monotonic() - 3600  # the whole budget already gone: one recipe, then stop
    scores = halve(cfg, auto, 96, 90, spent, tmp_path, {}, train)
    assert trained == [("a", 10)] and verdict(scores) == (scores[0], "the only recipe trained")
    assert isinstance(scores[0], Score)
