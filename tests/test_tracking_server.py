"""Every stage against a real MLflow tracking server over HTTP, as a team shares one."""

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_stage


@pytest.mark.slow
def test_train_register_and_forecast_through_a_tracking_server(server_store, tmp_path):
    trained = server_store.train()
    done = run_stage("pipeline.register", f"run_id={trained['run_id']}", "name=demand",
                     f"tracking.uri={server_store.uri}", f"hydra.run.dir={tmp_path / 'register'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["champion"]

    output = tmp_path / "forecast.csv"
    done = run_stage("pipeline.forecast", "model_uri=models:/demand@champion",
                     f"data.path={server_store.folder / 'new.parquet'}", f"output={output}",
                     f"tracking.uri={server_store.uri}", f"hydra.run.dir={tmp_path / 'forecast'}")
    assert done.returncode == 0, done.stderr[-3000:]
    forecast = pd.read_csv(output, parse_dates=["time"])
    last = pd.read_parquet(server_store.folder / "new.parquet")["time"].max()
    assert len(forecast) == 48 and forecast["time"].iloc[0] == last + pd.Timedelta("30min")

    # Everything was recorded by the server: the training run with its model, the version, the forecast run.
    client = MlflowClient(server_store.uri)
    summary = json.loads(done.stdout)
    assert client.get_run(trained["run_id"]).info.status == "FINISHED"
    assert client.get_model_version_by_alias("demand", "champion").run_id == trained["run_id"]
    forecast_run = client.get_run(summary["run_id"])
    assert forecast_run.data.tags["model_run_id"] == trained["run_id"]
    assert [a.path for a in client.list_artifacts(summary["run_id"], "forecast")] == ["forecast/forecast.csv"]
    assert (server_store.folder / "artifacts").is_dir()  # artifacts went through the server, not beside us
