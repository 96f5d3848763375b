"""The forecast stage on a folder of Parquet files: in this process, or on a real local Dask cluster, with the
forecasts of one process forecasting the whole file."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.inference.saved_model import load_model
from tests.helpers import SMALL, run_stage

pytestmark = pytest.mark.slow  # every test here starts the stage


@pytest.fixture(scope="module")
def folder_model(store, vic_elec) -> tuple[Path, str]:
    """Three files of two series each (ids with spaces and accents, as users write them), and a SMALL model
    trained on the folder; its runs:/ URI."""
    folder = store.folder / "groups"
    folder.mkdir()
    names = ["Nord 1", "Nord 2", "Süd 1", "Süd 2", "Ost", "West"]
    for number in range(3):
        pieces = [vic_elec.iloc[300 * k:300 * k + 1008].assign(store=names[k]) for k in (2 * number, 2 * number + 1)]
        pd.concat(pieces).to_parquet(folder / f"group-{number}.parquet", index=False)
    done = run_stage("pipeline.train", f"data.path={folder}", "data.id_column=store", *SMALL,
                     f"tracking.uri={store.uri}", f"hydra.run.dir={store.folder / 'folder-run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, f"runs:/{json.loads(done.stdout)['run_id']}/model"


def forecast_folder(store, folder: Path, model_uri: str, output: Path, *overrides: str):
    return run_stage("pipeline.forecast", f"model_uri={model_uri}", f"data.path={folder}", f"output={output}",
                     f"tracking.uri={store.uri}", f"hydra.run.dir={output.parent / 'run'}", *overrides)


def read_folder(output: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in sorted(output.glob("*.parquet"))], ignore_index=True)


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_a_folder_is_forecast_file_by_file_as_one_process_forecasts_the_whole(store, folder_model, tmp_path,
                                                                               engine):
    folder, model_uri = folder_model
    model = load_model(model_uri, TrackingConfig(uri=store.uri))
    whole = model.forecast(pd.concat([pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))]))

    output = tmp_path / "forecasts"
    output.mkdir()
    (output / "yesterday.parquet").write_text("the previous job's output")  # replaced whole
    done = forecast_folder(store, folder, model_uri, output, f"engine={engine}", "dask.workers=2")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["files"], summary["series"], summary["rows"], summary["engine"]) == (3, 6, 6 * 48, engine)
    assert ("forecasting 3 files on Dask (tcp://127.0.0.1:" in done.stderr) == (engine == "dask"), done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert sorted(p.name for p in output.iterdir()) == ["group-0.parquet", "group-1.parquet", "group-2.parquet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".forecasts~")]  # no staging left

    got = read_folder(output)
    assert list(got.columns) == list(whole.columns)
    # Each file's series in its order; the whole file's forecast orders them by id.
    got, whole = (frame.sort_values(["store", "time"], ignore_index=True) for frame in (got, whole))
    assert got["store"].tolist() == whole["store"].tolist()  # ids byte for byte
    assert got["time"].tolist() == whole["time"].tolist()
    pd.testing.assert_series_equal(got["forecast"], whole["forecast"], rtol=1e-5, atol=0)
    run = MlflowClient(store.uri).get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["engine"] == engine
    assert run.data.params["series"] == "6"


def test_a_folder_refuses_an_output_named_like_a_file_before_any_run(store, folder_model, tmp_path):
    folder, model_uri = folder_model
    done = forecast_folder(store, folder, model_uri, tmp_path / "forecast.csv", "engine=dask")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].endswith(
        "data.path is a folder of Parquet files, so the forecasts are a folder too (one file per input file); "
        "give a folder name without an extension")
    assert not (tmp_path / "forecast.csv").exists()
