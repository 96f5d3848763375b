"""The registry loop a team runs: train, register, the better model becomes champion, forecast through it."""

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import RegisterConfig, TrackingConfig
from pipeline.register import register as register_stage
from pipeline.register import same_form
from tests.helpers import run_stage


def register(store, run_id, *overrides, name="demand"):
    done = run_stage("pipeline.register", f"run_id={run_id}", f"name={name}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={store.folder / 'reg'}", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def register_here(store, run_id, name="demand") -> dict:
    """The register stage in this process (the command itself runs in the test below)."""
    return register_stage(RegisterConfig(run_id=run_id, name=name, tracking=TrackingConfig(uri=store.uri)))


@pytest.fixture(scope="module")
def two_runs(store):
    """The same data and split, so their validation backtests are the same; one trains far less."""
    return store.train("trainer.max_steps=6", "trainer.val_check_interval=6"), store.train()


@pytest.mark.slow
def test_the_better_model_becomes_champion_and_scheduled_forecasts_use_it(store, two_runs, tmp_path):
    weak, strong = two_runs
    assert strong["val"]["mase"] != weak["val"]["mase"]
    better, worse = sorted([weak, strong], key=lambda s: s["val"]["mase"])

    first = register_here(store, worse["run_id"])
    assert first["champion"] and first["reason"] == "no champion yet"
    second = register_here(store, better["run_id"])
    assert second["champion"] and second["champion_version"] == first["version"]
    third = register_here(store, worse["run_id"])
    assert not third["champion"] and "does not beat" in third["reason"]

    client = MlflowClient(store.uri)
    champion = client.get_model_version_by_alias("demand", "champion")
    assert champion.version == second["version"] and champion.run_id == better["run_id"]
    assert float(champion.tags["val_mase"]) == pytest.approx(better["val"]["mase"])
    assert json.loads(client.get_model_version("demand", third["version"]).tags["registration"])["champion"] is False

    outputs = []
    for attempt in range(2):
        done = run_stage("pipeline.forecast", "model_uri=models:/demand@champion",
                         f"data.path={store.folder / 'new.parquet'}", f"output={tmp_path / 'forecast.parquet'}",
                         f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / str(attempt)}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["model_version"] == second["version"]
        outputs.append((tmp_path / "forecast.parquet").read_bytes())
    assert outputs[0] == outputs[1]
    frame = pd.read_parquet(tmp_path / "forecast.parquet")
    assert len(frame) == 48 and frame["time"].iloc[0] > pd.read_parquet(store.folder / "new.parquet")["time"].max()


@pytest.mark.slow
def test_a_run_on_another_split_is_not_compared_unless_forced(store, two_runs):
    register(store, two_runs[1]["run_id"], name="other")
    different = store.train("split.val_steps=144")
    refused = register(store, different["run_id"], name="other")
    assert not refused["champion"] and "split.val_steps" in refused["reason"]
    forced = register(store, different["run_id"], "force=true", name="other")
    assert forced["champion"] and "force=true" in forced["reason"]


def test_a_champion_logged_before_ids_became_lists_counts_as_the_same_backtest():
    # data.id_column was logged as written (None, a name) before 2026-12-03, as a list since.
    assert same_form("data.id_column", "None") == same_form("data.id_column", "[]")
    assert same_form("data.id_column", "store") == same_form("data.id_column", "['store']")
    assert same_form("data.id_column", "store") != same_form("data.id_column", "['region']")
    assert same_form("data.path", "None") == "None"
