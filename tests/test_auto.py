"""experiment=auto (pipeline/training/auto.py): recipes trained on the file without its test block, scored on its
validation block, halved within the budget, each an MLflow run nested under one parent that names the winner;
the winner then trained on all the training data."""

import json
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.config import AutoConfig
from pipeline.errors import DataError
from pipeline.training.auto import Score, halve, verdict
from tests.helpers import daily_stores, run_stage

SMALL_AUTO = ["experiment=auto", "model.hidden_size=8", "trainer.max_steps=12", "trainer.val_check_interval=6",
              "trainer=cpu", "~auto.recipes.lookback_x2", "~auto.recipes.tourism",
              "~auto.recipes.tourism_static"]


@pytest.mark.slow
def test_auto_on_a_daily_file_of_stores_given_no_lengths_never_reads_the_test_block_and_nests_every_run(
        tmp_path, vic_elec, migrated_store):
    import shutil

    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    daily_stores(vic_elec, 400).to_csv(tmp_path / "stores.csv", index=False)
    done = run_stage("pipeline.train", f"data.path={tmp_path / 'stores.csv'}", "data.time_column=date",
                     "data.target_column=sales", "data.id_column=store", *SMALL_AUTO, f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    # No length given: daily data reads 28 days, forecasts 14, and holds out two blocks of 112 (stated in the log).
    assert "window.lookback=28, window.horizon=14, split.val_steps=112, split.test_steps=112" in done.stderr
    summary = json.loads(done.stdout)
    choice = summary["auto"]
    assert choice["minutes"] < 10  # auto.budget_minutes
    client = MlflowClient(uri)
    parent = client.get_run(choice["parent_run_id"])
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    candidates = [r for r in runs if "auto.recipe" in r.data.tags]
    # Three recipes, one round (eta 3), so each trains its full 12 steps; then the winner on all the data.
    assert sorted(r.data.tags["auto.recipe"] for r in candidates) == ["default", "no_seasonal_skip", "us_gasoline"]
    assert {r.data.params["trainer.max_steps"] for r in candidates} == {"12"}
    assert parent.data.tags["auto.winner"] == choice["winner"] and parent.info.status == "FINISHED"
    best = min(candidates, key=lambda r: r.data.metrics["test_mase"])
    assert best.data.tags["auto.recipe"] == choice["winner"]
    assert choice["val_mase"] == pytest.approx(best.data.metrics["test_mase"])
    # The candidates trained on the file without its test block: their test block is its validation block.
    held_out = pd.read_parquet(candidates[0].data.params["data.path"])
    assert len(held_out) == 5 * (400 - 112) and held_out["date"].max() == "2021-10-15"  # day 288 of 2021
    assert candidates[0].data.params["split.test_steps"] == "112"
    final = client.get_run(summary["run_id"])
    assert final.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert final.data.tags["auto.winner"] == choice["winner"]
    assert final.data.params["data.path"] == str(tmp_path / "stores.csv")
    assert (final.data.params["trainer.max_steps"], final.data.params["window.lookback"]) == ("12", "28")
    assert parent.data.tags["auto.final_run_id"] == final.info.run_id


def test_halving_keeps_the_best_third_and_trains_them_in_full_in_the_last_round(tmp_path):
    mase = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.8, "e": 0.6}
    trained = []

    def train(config, folder, tags):  # what a training would report: its recipe's score on the validation block
        name = tags["auto.recipe"]
        trained.append((name, config.trainer.max_steps))
        if name == "x":
            raise DataError("stores.csv: series 'x' has 48 steps: too short")  # not a budget stop: the round goes on
        return {"run_id": f"{name}-{len(trained)}", "test": {"mase": mase[name] - 0.001 * config.trainer.max_steps}}

    cfg = OmegaConf.create({"trainer": {"max_steps": 90, "val_check_interval": 30}, "auto": {}})
    auto = AutoConfig(budget_minutes=60, eta=3, recipes={name: {} for name in ["x", *mase]})
    scores, left_out = halve(cfg, auto, 96, time.monotonic(), tmp_path, {}, train)
    # ceil(log3(6)) = 2 rounds: six at 90 / 3 steps (x cannot train), then the best two of five (b, e) at all 90.
    assert trained == [("x", 30), ("a", 30), ("b", 30), ("c", 30), ("d", 30), ("e", 30), ("b", 90), ("e", 90)]
    winner, margin = verdict(scores)
    assert winner.recipe == "b" and margin.startswith("0.1000 below e (round 2)") and left_out == []
    trained.clear()
    spent = time.monotonic() - 3600  # the whole budget already gone: one recipe, then nothing more fits
    scores, left_out = halve(cfg, auto, 96, spent, tmp_path, {}, train)
    assert trained == [("x", 30), ("a", 30)] and verdict(scores) == (scores[0], "the only recipe trained")
    assert isinstance(scores[0], Score) and [name.split()[0] for name in left_out] == ["b", "c", "d", "e"]


def test_a_recipe_whose_full_training_the_budget_cannot_hold_sits_the_last_round_out_and_cannot_win(tmp_path):
    """vic_elec's case: a long recipe led after a third of its steps; trained in full it would overrun the budget
    (and lose), so the next two in rank after round one are trained in full in its place, and the better wins."""
    mase = {"long": 0.5, "short": 0.6, "c": 0.7, "d": 0.8}

    def train(config, folder, tags):
        time.sleep(0.002 * config.trainer.max_steps)  # the long recipe's steps take as long as the others'
        name = tags["auto.recipe"]
        return {"run_id": name, "test": {"mase": mase[name]}}

    cfg = OmegaConf.create({"trainer": {"max_steps": 90, "val_check_interval": 30}, "auto": {}})
    recipes = {name: {} for name in mase} | {"long": {"trainer.max_steps": 900}}
    auto = AutoConfig(budget_minutes=2.5 / 60, eta=3, recipes=recipes)
    # Round one: long 300 steps (0.6 s), the others 30 (0.06 s each). In full, long would need ~3.6 s more with
    # its final training: over the 2.5 s budget; short needs ~0.36 s.
    scores, left_out = halve(cfg, auto, 96, time.monotonic(), tmp_path, {}, train)
    assert [(s.recipe, s.round, s.steps) for s in scores] == [
        ("long", 1, 300), ("short", 1, 30), ("c", 1, 30), ("d", 1, 30), ("short", 2, 90), ("c", 2, 90)]
    assert [name.split(" (")[0] for name in left_out] == ["long"] and left_out[0].startswith("long (round 2")
    assert verdict(scores) == (scores[-2], "0.1000 below c (round 2)")
