"""The cron job's last mile: nothing silently wrong. A forecast that is not finite, or of an input nobody could mean,
a file cut off mid-copy, an empty id, an output folder that cannot be written, a time pandas cannot hold, a
misspelt option: each is one line naming what is wrong, exit 2, and nothing written or left half-done."""

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc import scoring_server
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.errors import DataError
from pipeline.inference.saved_model import load_model
from tests.helpers import SMALL, run_stage

LOOKBACK = 96  # SMALL's


@pytest.fixture(scope="module")
def model_uri(store) -> str:
    return f"runs:/{store.train()['run_id']}/model"


def history(vic_elec: pd.DataFrame, rows: int = 2 * LOOKBACK) -> pd.DataFrame:
    return vic_elec.iloc[1000:1000 + rows][["time", "demand"]].reset_index(drop=True)


def forecast(store, model_uri: str, data: Path, output: Path, *more: str):
    return run_stage("pipeline.forecast", f"model_uri={model_uri}", f"data.path={data}", f"output={output}",
                     f"tracking.uri={store.uri}", f"hydra.run.dir={data.parent / 'run'}", *more)


def one_error_line(done) -> str:
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line or line.startswith("pipeline.")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return errors[0]


def runs_of(uri: str) -> list:
    client = MlflowClient(uri)
    return [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]


@pytest.mark.slow
@pytest.mark.parametrize("value", [1e200, 1e20])
def test_an_absurd_value_is_refused_naming_series_and_time_and_the_previous_forecast_stands(
        store, model_uri, vic_elec, tmp_path, value):
    frame = history(vic_elec)
    frame.loc[len(frame) - 5, "demand"] = value
    frame.to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / "forecast.csv"
    output.write_text("yesterday's forecast\n")
    runs = len(runs_of(store.uri))
    line = one_error_line(forecast(store, model_uri, tmp_path / "new.csv", output))
    when = frame["time"].iloc[-5]
    assert f"series 'demand' has demand {value:g} at {when}" in line and "times its training scale" in line, line
    assert output.read_text() == "yesterday's forecast\n" and len(runs_of(store.uri)) == runs
    # The same through the Python API, and through MLflow's scoring server: HTTP 400 with the line.
    with pytest.raises(DataError, match=re.escape(f"series 'demand' has demand {value:g} at ")):
        load_model(model_uri, TrackingConfig(uri=store.uri)).forecast(frame)
    mlflow.set_tracking_uri(store.uri)
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    request = json.dumps({"dataframe_split": json.loads(frame.astype({"time": str}).to_json(orient="split",
                                                                                           index=False))})
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        scoring_server.invocations(request, "application/json", pyfunc, pyfunc.metadata.get_input_schema())
    assert refused.value.get_http_status_code() == 400 and "times its training scale" in refused.value.message


@pytest.mark.slow
@pytest.mark.parametrize("cut, end, message", [(4, "", "does not end with a newline"),
                                               (14, "", "does not end with a newline"),
                                               (14, "\n", "has 1 fields, the header 2")])
def test_a_csv_cut_off_while_being_copied_is_refused_by_the_forecast_naming_its_last_line(
        store, model_uri, vic_elec, tmp_path, cut, end, message):
    # The cron case: a copy in progress, cut mid-number ("...,40" of 4019.5) or mid-line.
    frame = history(vic_elec).assign(demand=4019.5)
    text = frame.to_csv(index=False)
    (tmp_path / "new.csv").write_text(text[:-cut] + end)
    line = one_error_line(forecast(store, model_uri, tmp_path / "new.csv", tmp_path / "forecast.csv"))
    assert f"new.csv: its last line (line {len(frame) + 1}, " in line and message in line and "cut off" in line
    assert not (tmp_path / "forecast.csv").exists()


@pytest.mark.slow
def test_an_empty_series_id_is_refused_in_training_and_forecasting(store, model_uri, vic_elec, tmp_path):
    frame = pd.concat([vic_elec.iloc[:1008].assign(site=name) for name in ("", "007", "7")])
    frame[["site", "time", "demand"]].to_csv(tmp_path / "sites.csv", index=False)
    done = run_stage("pipeline.train", f"data.path={tmp_path / 'sites.csv'}", "data.id_column=site",
                     f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'run'}", *SMALL)
    assert "column 'site' row 0 has no series id; give every row its id" in one_error_line(done)
    with pytest.raises(DataError, match="column 'site' row 0 has no series id"):
        from pipeline.data.ids import series_keys
        series_keys(frame.iloc[:3], ["site"], "demand", "input frame")


@pytest.mark.slow
def test_ordinary_faults_end_in_one_line_before_anything_is_written(store, model_uri, vic_elec, tmp_path):
    frame = history(vic_elec)
    frame.to_csv(tmp_path / "new.csv", index=False)
    runs = len(runs_of(store.uri))
    # An output folder this user cannot write (root writes anywhere but in such a one): refused before the model
    # loads.
    try:
        Path("/sys/pipeline-probe").write_text("")
    except OSError:
        line = one_error_line(forecast(store, model_uri, tmp_path / "new.csv", Path("/sys/forecast.csv")))
        assert "output=/sys/forecast.csv: /sys cannot be written" in line, line
    # A time past what pandas holds.
    far = frame.astype({"time": str})
    far.loc[len(far) - 1, "time"] = "9999-01-01 00:00:00+00:00"
    far.to_csv(tmp_path / "far.csv", index=False)
    line = one_error_line(forecast(store, model_uri, tmp_path / "far.csv", tmp_path / "out.csv"))
    assert f"column 'time' row {len(far) - 1}: '9999-01-01 00:00:00+00:00' lies outside the times pandas" in line
    # A folder of CSV files: refused before a run opens.
    (tmp_path / "csvs").mkdir()
    frame.to_csv(tmp_path / "csvs" / "a.csv", index=False)
    line = one_error_line(forecast(store, model_uri, tmp_path / "csvs", tmp_path / "outs"))
    assert "a folder without .parquet files" in line
    # Values Hydra cannot take: one line, the key and what it allows, no Hydra block.
    line = one_error_line(forecast(store, model_uri, tmp_path / "new.csv", tmp_path / "out.csv", "engine=spark"))
    assert "engine=spark" in line and "expected one of [local, dask]" in line and "HYDRA_FULL_ERROR" not in line
    assert len(runs_of(store.uri)) == runs and not (tmp_path / "out.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("experiment=tourissm",
     "Could not find 'experiment/tourissm'; choose one of: auto, default, pbs, quick, tourism, us_gasoline"),
    ("hparams_search=optuan", "Could not find 'hparams_search/optuan'; choose one of: optuna"),
    ("window.lookback=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("experiment=null", "'~GROUP' (e.g. '~experiment') drops it")])
def test_a_misspelt_option_or_a_value_of_the_wrong_type_is_one_line_before_anything_runs(override, message):
    done = run_stage("pipeline.train", override)
    line = one_error_line(done)
    assert line.startswith("pipeline.train: ") and message in line and "HYDRA_FULL_ERROR" not in done.stderr, line


@pytest.mark.slow
def test_a_series_the_model_never_saw_is_named_with_what_to_do(store, model_uri, vic_elec, tmp_path):
    frame = history(vic_elec).assign(site="x" * 100_000)
    frame.to_csv(tmp_path / "new.csv", index=False)
    model = load_model(model_uri, TrackingConfig(uri=store.uri))
    model.spec.data["id_column"] = ["site"]  # as if trained with one, so the new series is unseen
    with pytest.raises(DataError) as refused:
        model.forecast(frame, source=str(tmp_path / "new.csv"))
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'new.csv'}: series 'xxxx") and "(100000 characters)" in message
    assert "was not in the model's training data" in message and "forecast only the 1 series" in message
    assert len(message) < 400


def test_a_missing_vintages_file_names_its_own_key(tmp_path):
    from pipeline.config import DataConfig
    from pipeline.data.vintages import load_vintages

    with pytest.raises(DataError, match="issued.csv: file not found; set data.vintages to a CSV or Parquet file"):
        load_vintages(DataConfig(vintages=str(tmp_path / "issued.csv"), future_covariates_known_at="issued",
                                 future_covariates=["holiday"]))


def test_a_word_among_zoned_times_is_an_unparsable_time_not_a_zone_mix():
    from pipeline.data.times import parse_times

    with pytest.raises(DataError, match="row 1: cannot parse timestamp 'yesterday'"):
        parse_times(pd.Series(["2014-01-01 00:00:00+00:00", "yesterday"]), None, None, "f.csv", "time")


def test_range_checks_let_a_level_shift_pass_and_stop_a_wrong_value():
    from pipeline.data.scaling import Scaler
    from pipeline.inference.range_checks import FAR, check_forecast, check_inputs

    scaler = Scaler(columns=["target"], center={"a": [100.0]}, scale={"a": [10.0]})
    frame = pd.DataFrame({"series_id": "a", "time": pd.date_range("2024", periods=3, freq="h"),
                          "target": [100.0, 400.0, 100.0 + 10 * FAR]})  # a level shift of 30 scales, then the edge
    check_inputs(frame, scaler, ["target"], {"target": "load"}, "f.csv")
    with pytest.raises(DataError, match="has load 10110 at 2024-01-01 02:00:00"):
        check_inputs(frame.assign(target=frame["target"] + 10), scaler, ["target"], {"target": "load"}, "f.csv")
    times = pd.date_range("2024", periods=2, freq="h").to_numpy()
    check_forecast(np.array([[0.5, -3.0]]), ["a"], times, "load", "f.csv")
    with pytest.raises(DataError, match="the forecast of load for series 'a' at 2024-01-01 01:00:00 is not finite"):
        check_forecast(np.array([[0.5, np.nan]]), ["a"], times, "load", "f.csv")


def test_a_model_that_computes_in_the_files_units_checks_range_in_each_series_own_spread():
    from types import SimpleNamespace

    from pipeline.data.scaling import fit_scaler
    from pipeline.inference.range_checks import check_inputs

    # data.scaler=none (what a count likelihood needs): counts in the hundred thousands are ordinary.
    frame = pd.DataFrame({"series_id": "a", "time": pd.date_range("2024", periods=6, freq="MS"),
                          "target": [200_000.0, 210_000.0, 190_000.0, 205_000.0, 600_000.0, 195_000.0]})
    scaler = fit_scaler(frame, ["target"], [SimpleNamespace(series_id="a", length=6, train_length=4)], "none")
    assert scaler.center == {"a": [0.0]} and scaler.scale == {"a": [1.0]}  # the model's units: the file's
    check_inputs(frame, scaler.reference(), ["target"], {"target": "scripts"}, "f.csv")
    wrong = frame.assign(target=frame["target"].where(frame.index != 5, 2e10))  # typed with extra zeros
    with pytest.raises(DataError, match="has scripts 2e\\+10 at 2024-06-01"):
        check_inputs(wrong, scaler.reference(), ["target"], {"target": "scripts"}, "f.csv")
    forecast = np.array([[205_000.0, 2e10]])
    assert np.allclose(scaler.reference().target_units(forecast, ["a"])[0, 0], (205_000 - 201_250) / 7395.44, 1e-3)
