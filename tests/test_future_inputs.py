"""Known-future inputs at forecast time: history rows, then each series' `horizon` future rows with the target empty
and the known-future values given; the same numbers through every path, and one line for each bad input."""

import json
import re
import subprocess
import sys
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.config import BacktestConfig, EvaluateConfig, ForecastConfig, ForecastDataConfig, TrackingConfig
from pipeline.errors import DataError
from pipeline.evaluate import evaluate
from pipeline.forecast import run_forecast
from pipeline.inference.saved_model import load_model
from tests.helpers import SMALL, free_port, run_stage, venv_path, wait_until_up

HORIZON, HISTORY = 48, 144


@pytest.fixture(scope="module")
def trained(store, vic_elec, tmp_path_factory):
    """A model reading the holiday flag ahead, trained by the real command on two sites (so an unknown one can
    be tried), per-window normalisation off so that it also streams, gaps filled by interpolation as the docs' "Your
    data" suggests; and a forecast input of both sites."""
    folder = tmp_path_factory.mktemp("future")
    sites = pd.concat([vic_elec.iloc[:1200].assign(site=name, demand=lambda f: f["demand"] * factor)
                       for name, factor in [("north", 1.0), ("south", 0.5)]], ignore_index=True)
    sites.groupby("site").head(1008).to_parquet(folder / "train.parquet", index=False)
    done = run_stage("pipeline.train", f"data.path={folder / 'train.parquet'}", "data.id_column=site",
                     "data.future_covariates=[holiday]", "model.window_norm=false", "data.gaps=fill",
                     "data.missing=interpolate", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={folder / 'run'}", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    # Each site: HISTORY observed rows, then HORIZON future rows (demand empty, holiday given).
    frame = sites.groupby("site").tail(HISTORY + HORIZON).reset_index(drop=True)
    frame.loc[frame.groupby("site").cumcount() >= HISTORY, ["demand", "temperature"]] = np.nan
    frame[["site", "time", "demand", "holiday"]].to_csv(folder / "input.csv", index=False)
    return f"runs:/{json.loads(done.stdout)['run_id']}/model", folder, frame


@pytest.mark.slow
def test_a_model_reading_the_future_forecasts_alike_through_the_stage_the_pyfunc_a_server_and_a_stream(
        store, trained, tmp_path):
    uri, folder, frame = trained
    done = run_stage("pipeline.forecast", f"model_uri={uri}", f"data.path={folder / 'input.csv'}",
                     f"output={tmp_path / 'stage.csv'}", f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'h'}")
    assert done.returncode == 0, done.stderr[-3000:]
    stage = pd.read_csv(tmp_path / "stage.csv")
    assert len(stage) == 2 * HORIZON and list(stage.columns) == ["site", "time", "forecast"]
    expected = stage["forecast"].to_numpy()
    # The logged model's example request holds future rows, and its signature the forecast's columns.
    mlflow.set_tracking_uri(store.uri)
    info = mlflow.models.get_model_info(uri)
    assert info.signature.outputs is not None and "holiday" in info.signature.inputs.input_names()

    env = venv_path() | {"MLFLOW_TRACKING_URI": store.uri}
    predicted = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", uri, "-i",
                                str(folder / "input.csv"), "-t", "csv", "-o", str(tmp_path / "p.json"),
                                "--env-manager", "local"], env=env, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    pyfunc = pd.DataFrame(json.loads((tmp_path / "p.json").read_text())["predictions"])
    np.testing.assert_allclose(pyfunc["forecast"], expected, rtol=1e-5)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "-h", "127.0.0.1",
                               "-p", str(port), "--env-manager", "local"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server)
        request = pd.read_csv(folder / "input.csv", dtype={"time": str, "site": str})
        body = json.dumps({"dataframe_split": json.loads(request.to_json(orient="split", index=False))}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                                           {"Content-Type": "application/json"}), timeout=60) as reply:
            served = pd.DataFrame(json.loads(reply.read())["predictions"])
        np.testing.assert_allclose(served["forecast"], expected, rtol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)

    model = load_model(uri, store.uri)
    for site in ("north", "south"):
        rows = frame[frame["site"] == site]
        stream = model.stream(site)
        for row in rows.iloc[:HISTORY].itertuples():
            stream.update(row.time, row.demand, row.holiday)
        streamed = stream.forecast(future={"holiday": rows["holiday"].iloc[HISTORY:].to_numpy()})
        np.testing.assert_allclose(streamed["forecast"], stage.loc[stage["site"] == site, "forecast"], rtol=1e-5)
        with pytest.raises(ValueError, match=r"give future=\{'holiday': 48 values\}"):
            stream.forecast()


@pytest.mark.slow
@pytest.mark.parametrize("case, change, message", [
    ("future rows missing", lambda f: f.drop(f.index[-10:]),
     "series 'south' has 38 future rows after its last observed 'demand' at 2012-01-24 12:30:00+00:00, and the "
     "rows from 2012-01-25 08:00:00+00:00 on are missing; give exactly the 48 steps the model forecasts, each "
     "with 'holiday'"),
    ("a value missing", lambda f: f.assign(holiday=f["holiday"].mask(f.index == 150)),
     "series 'north' has no 'holiday' at 2012-01-24 16:00:00+00:00, one of its future rows"),
    ("a time off the grid", lambda f: f.assign(time=f["time"].mask(f.index == 191, f["time"] + pd.Timedelta("10min"))),
     "series 'north' has a timestamp 2012-01-25 12:40:00+00:00 off its 30min grid"),
    ("a series with no history", lambda f: pd.concat([f, f.iloc[-HORIZON:].assign(site="west")]),
     "series 'west' has no observed 'demand'; give its history before its future rows"),
])
def test_a_bad_future_is_refused_in_one_line_naming_the_series_time_and_column(store, trained, tmp_path, case,
                                                                               change, message):
    uri, _, frame = trained
    data, output = tmp_path / "input.parquet", tmp_path / "forecast.csv"
    change(frame).to_parquet(data, index=False)
    output.write_text("yesterday's forecast\n")
    with pytest.raises(DataError, match=re.escape(message)):
        run_forecast(ForecastConfig(model_uri=uri, data=ForecastDataConfig(path=str(data)), output=str(output),
                                    tracking=TrackingConfig(uri=store.uri)))
    assert output.read_text() == "yesterday's forecast\n"


@pytest.mark.slow
def test_history_alone_is_refused_by_the_command_in_one_line_and_exit_2(store, trained, tmp_path):
    uri, _, frame = trained
    history = tmp_path / "history.parquet"
    frame.dropna(subset=["demand"]).to_parquet(history, index=False)
    output = tmp_path / "forecast.csv"
    output.write_text("yesterday's forecast\n")
    done = run_stage("pipeline.forecast", f"model_uri={uri}", f"data.path={history}", f"output={output}",
                     f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'h'}")
    assert done.returncode == 2 and done.stdout == ""
    assert "has 0 future rows after its last observed 'demand'" in done.stderr.strip().splitlines()[-1]
    assert output.read_text() == "yesterday's forecast\n"


@pytest.mark.slow
def test_future_frame_makes_each_series_rows_to_fill_in(store, trained):
    uri, _, frame = trained
    history = frame.dropna(subset=["demand"])
    future = load_model(uri, store.uri).future_frame(history)
    assert list(future.columns) == ["site", "time", "demand", "holiday"] and len(future) == 2 * HORIZON
    last = history.groupby("site")["time"].max()
    assert (future.groupby("site")["time"].min() == last + pd.Timedelta("30min")).all()
    assert future[["demand", "holiday"]].isna().all(axis=None)


@pytest.mark.slow
def test_the_evaluate_stage_reads_known_future_values_from_the_file_as_training_did(store, trained):
    uri, folder, _ = trained
    summary = evaluate(EvaluateConfig(model_uri=uri, data=ForecastDataConfig(path=str(folder / "train.parquet")),
                                      evaluate=BacktestConfig(origins=2), tracking=TrackingConfig(uri=store.uri)))
    assert summary["origins"] == 4 and summary["series"] == 2 and np.isfinite(summary["model"]["mase"])


@pytest.mark.slow
def test_a_history_with_a_filled_gap_forecasts_as_the_same_history_filled_by_hand(store, trained, tmp_path):
    uri, folder, frame = trained
    gap = frame[["site", "time", "demand", "holiday"]].drop(index=[50, 51, 52, 250, 251])  # inside both histories
    gap.to_csv(tmp_path / "gap.csv", index=False)
    by_hand = frame[["site", "time", "demand", "holiday"]].copy()
    history = by_hand.groupby("site").cumcount() < HISTORY
    by_hand.loc[[50, 51, 52, 250, 251], "demand"] = np.nan
    by_hand.loc[history, "demand"] = by_hand[history].groupby("site")["demand"].transform(lambda s: s.interpolate())
    model = load_model(uri, TrackingConfig(uri=store.uri))
    expected = model.forecast(by_hand)
    pd.testing.assert_frame_equal(model.forecast(gap), expected)
    done = run_stage("pipeline.forecast", f"model_uri={uri}", f"data.path={tmp_path / 'gap.csv'}",
                     f"output={tmp_path / 'out.csv'}", f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'h'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert np.allclose(pd.read_csv(tmp_path / "out.csv")["forecast"], expected["forecast"])
