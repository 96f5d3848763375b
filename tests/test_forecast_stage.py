"""The forecast stage as a scheduled job runs it: a separate process, a saved model, a file in, a file out."""

import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import ForecastConfig, ForecastDataConfig, TrackingConfig
from pipeline.errors import ConfigError, DataError
from pipeline.forecast import run_forecast
from pipeline.inference.batch import check_time_zone
from tests.helpers import SMALL, run_stage


@pytest.fixture(scope="module")
def trained(store):
    """A small model trained by the real command on train.parquet."""
    return f"runs:/{store.train()['run_id']}/model", store.uri


def read_output(path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, parse_dates=["time"])


def forecast(tmp_path, model_uri, tracking_uri, data, output):
    return run_stage("pipeline.forecast", f"model_uri={model_uri}", f"data.path={data}", f"output={output}",
                     f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path / 'hydra'}")


@pytest.mark.slow
def test_forecast_stage_writes_each_series_steps_after_its_last_time_as_csv_or_parquet(trained, tmp_path, vic_elec):
    model_uri, tracking_uri = trained
    new = tmp_path / "new.parquet"
    vic_elec.iloc[:1200].to_parquet(new, index=False)  # 192 steps past the training data's end
    output = tmp_path / "forecast.csv"
    done = forecast(tmp_path, model_uri, tracking_uri, new, output)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = read_output(output)
    assert list(frame.columns) == ["time", "forecast"] and len(frame) == 48
    last = vic_elec["time"].iloc[1199]
    assert str(frame["time"].iloc[0]) == str(last + vic_elec["time"].diff().iloc[1])
    assert frame["time"].is_monotonic_increasing and frame["forecast"].notna().all()

    summary = json.loads(done.stdout)
    run = MlflowClient(tracking_uri).get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "forecast"
    assert run.data.tags["model_run_id"] == model_uri.split("/")[1]
    assert run.data.params["input_end"] == str(last) and run.data.params["rows"] == "48"

    again = forecast(tmp_path, model_uri, tracking_uri, new, tmp_path / "forecast.parquet")
    assert again.returncode == 0, again.stderr[-3000:]
    parquet = read_output(tmp_path / "forecast.parquet")
    assert str(parquet["time"].dtype) == str(frame["time"].dtype) and parquet["time"].equals(frame["time"])
    assert parquet["forecast"].to_numpy() == pytest.approx(frame["forecast"].to_numpy(), rel=1e-9)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.slow
def test_bad_forecast_input_exits_non_zero_in_one_line_and_leaves_the_previous_output(trained, tmp_path, vic_elec):
    model_uri, tracking_uri = trained
    new = tmp_path / "new.parquet"
    vic_elec.iloc[:1200].drop(columns=["demand"]).to_parquet(new, index=False)
    output = tmp_path / "forecast.csv"
    output.write_text("yesterday's forecast\n")
    done = forecast(tmp_path, model_uri, tracking_uri, new, output)
    assert done.returncode == 2 and done.stdout == ""
    assert "column 'demand' not found" in done.stderr.strip().splitlines()[-1]
    assert output.read_text() == "yesterday's forecast\n"


@pytest.mark.slow
@pytest.mark.parametrize("case, change, message", [
    ("wrong frequency", lambda f: f.iloc[::2], "gap in its 30min grid"),
    ("too little history", lambda f: f.iloc[:50], "needs the last 96"),
    ("unknown model", None, "cannot load model runs:/0123456789abcdef/model"),
])
def test_bad_forecast_input_is_refused_naming_the_problem_before_anything_is_written(
        trained, tmp_path, vic_elec, case, change, message):
    # The stage itself, in this process (the command's one-line exit is pinned above).
    model_uri, tracking_uri = trained
    new = tmp_path / "new.parquet"
    (change or (lambda f: f))(vic_elec.iloc[:1200]).to_parquet(new, index=False)
    output = tmp_path / "forecast.csv"
    output.write_text("yesterday's forecast\n")
    cfg = ForecastConfig(model_uri="runs:/0123456789abcdef/model" if change is None else model_uri,
                         data=ForecastDataConfig(path=str(new)), output=str(output),
                         tracking=TrackingConfig(uri=tracking_uri))
    with pytest.raises((DataError, ConfigError), match=re.escape(message)):
        run_forecast(cfg)
    assert output.read_text() == "yesterday's forecast\n"


@pytest.mark.slow
def test_sample_paths_are_refused_for_a_point_model_on_a_file_and_a_folder_before_anything_is_written(
        trained, tmp_path, vic_elec):
    model_uri, tracking_uri = trained
    folder = tmp_path / "in"
    folder.mkdir()
    vic_elec.iloc[:1200].to_parquet(folder / "new.parquet", index=False)
    for path, output in ((folder / "new.parquet", tmp_path / "forecast.csv"), (folder, tmp_path / "forecasts")):
        cfg = ForecastConfig(model_uri=model_uri, data=ForecastDataConfig(path=str(path)), output=str(output),
                             samples=10, tracking=TrackingConfig(uri=tracking_uri))
        with pytest.raises(ConfigError, match=re.escape("samples=10 needs a model trained with model.likelihood")):
            run_forecast(cfg)
        assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def run_in_process(model_uri, tracking_uri, data, output, time_zone=None) -> dict:
    data = ForecastDataConfig(path=str(data), time_zone=time_zone)
    return run_forecast(ForecastConfig(model_uri=model_uri, data=data, output=str(output),
                                       tracking=TrackingConfig(uri=tracking_uri)))


@pytest.mark.slow
def test_ids_come_back_exactly_as_the_file_wrote_them_through_train_and_forecast(store, tmp_path, vic_elec):
    # "007" and "7" are two series; values hold the " / " a join would use, and two ids would even join to the
    # same text ("North" + "East / x", "North / East" + "x").
    ids = [("007", "a"), ("7", "a"), ("ä / b", "c"), ("North", "East / x"), ("North / East", "x")]
    frame = pd.concat([vic_elec.iloc[:1008].assign(region=region, zone=zone, demand=lambda f: f["demand"] * (i + 1))
                       for i, (region, zone) in enumerate(ids)])
    path = tmp_path / "sites.csv"
    frame[["region", "zone", "time", "demand"]].to_csv(path, index=False)
    done = run_stage("pipeline.train", f"data.path={path}", "data.id_column=[region,zone]",
                     f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'run'}", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    output = tmp_path / "forecast.csv"
    run_in_process(f"runs:/{json.loads(done.stdout)['run_id']}/model", store.uri, path, output)
    text = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert list(text.columns) == ["region", "zone", "time", "forecast"]
    assert sorted(set(zip(text["region"], text["zone"]))) == sorted(ids)
    assert text.groupby(["region", "zone"]).size().tolist() == [48] * len(ids)
    levels = text.astype({"forecast": float}).groupby(["region", "zone"])["forecast"].mean()
    assert levels[("7", "a")] > 1.5 * levels[("007", "a")]  # each id kept its own series


@pytest.mark.slow
def test_times_in_another_zone_are_converted_and_times_without_one_are_refused_or_read_in_the_zone_given(
        trained, tmp_path, vic_elec):
    model_uri, tracking_uri = trained  # trained on the shipped file's UTC times
    history = vic_elec.iloc[:1200]
    utc, melbourne, wall_clock = (tmp_path / f"{name}.parquet" for name in ("utc", "melbourne", "wall_clock"))
    history.to_parquet(utc)
    local = history.assign(time=history["time"].dt.tz_convert("Australia/Melbourne"))
    local.to_parquet(melbourne)
    local.assign(time=local["time"].dt.tz_localize(None)).to_parquet(wall_clock)

    run_in_process(model_uri, tracking_uri, utc, tmp_path / "utc.csv")
    reference = pd.read_csv(tmp_path / "utc.csv")
    for data, time_zone in [(melbourne, None), (wall_clock, "Australia/Melbourne")]:
        output = tmp_path / f"{data.stem}.csv"
        run_in_process(model_uri, tracking_uri, data, output, time_zone)
        got = pd.read_csv(output)
        # The same instants and forecasts, written in the zone the input used.
        assert got["time"].iloc[0].endswith("+11:00") and pd.to_datetime(got["time"], utc=True).equals(
            pd.to_datetime(reference["time"], utc=True))
        assert got["forecast"].to_numpy() == pytest.approx(reference["forecast"].to_numpy(), rel=1e-9)
    with pytest.raises(DataError, match="column 'time' holds times without a zone, but the model was trained on "
                                        "times in UTC; give times with UTC offsets, or name the zone"):
        run_in_process(model_uri, tracking_uri, wall_clock, tmp_path / "refused.csv")
    assert not (tmp_path / "refused.csv").exists()


def test_a_model_of_wall_clock_times_refuses_zoned_times():
    spec = SimpleNamespace(time_zone=None)
    with pytest.raises(DataError, match="holds times in UTC, but the model was trained on wall-clock times"):
        check_time_zone(spec, "UTC", "time", "new.csv")
    check_time_zone(spec, None, "time", "new.csv")


@pytest.mark.slow
def test_an_unusable_output_path_or_input_is_refused_before_a_forecast_run_opens(trained, tmp_path, vic_elec):
    model_uri, tracking_uri = trained
    client = MlflowClient(tracking_uri)
    runs = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    new = tmp_path / "new.parquet"
    vic_elec.iloc[:1200].to_parquet(new, index=False)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("")
    truncated = tmp_path / "cut.csv.gz"
    vic_elec.iloc[:1200].to_csv(truncated, index=False)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    for data, output, message in [(new, tmp_path / "folder", "is a folder; give a file name inside it"),
                                  (new, tmp_path / "a_file" / "f.csv", "a_file is a file, not a folder"),
                                  (truncated, tmp_path / "f.csv", "cut.csv.gz: cannot be read")]:
        with pytest.raises((ConfigError, DataError), match=re.escape(message)):
            run_in_process(model_uri, tracking_uri, data, output)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs
