"""Static covariates (pipeline/data/static.py, pipeline/model/static.py): attributes of each series from its id
columns or a side file, fed to the network, carried in the saved model, and the reason two series with the same
history get different forecasts."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.config import DataConfig, TrackingConfig
from pipeline.data.static import fit_static, static_attributes, static_table
from pipeline.errors import ConfigError, DataError
from pipeline.inference.saved_model import load_model
from tests.helpers import run_stage

IDS = ['["down", "1"]', '["down", "2"]', '["up", "1"]', '["up", "2"]']


def test_id_columns_and_a_side_file_become_codes_and_standardised_numbers(tmp_path):
    side = tmp_path / "shops.csv"
    pd.DataFrame({"kind": ["up", "up", "down", "down"], "unit": ["1", "2", "1", "2"], "size": [10.0, 30.0, 20, 20],
                  "region": ["north", "south", "north", "north"]}).to_csv(side, index=False)
    data = DataConfig(id_column=["kind", "unit"], static_from_ids=["kind"], static=str(side))
    table = static_table(data, IDS)
    assert table.categories == {"kind": ["down", "up"], "region": ["north", "south"]}
    assert table.codes.tolist() == [[1, 1], [1, 1], [2, 1], [2, 2]]  # 0 is kept for a value training never saw
    assert table.numeric == {"size": [20.0, pytest.approx(np.sqrt(50))]}
    assert np.allclose(table.values[:, 0], [0, 0, -10 / np.sqrt(50), 10 / np.sqrt(50)])
    assert static_table(DataConfig(id_column=["kind", "unit"]), IDS) is None
    every = static_attributes(DataConfig(id_column=["kind", "unit"], static_from_ids=True), IDS)
    assert list(every.columns) == ["kind", "unit"]


def test_a_side_file_that_misses_a_series_or_repeats_one_and_an_odd_column_are_named(tmp_path):
    side = tmp_path / "shops.csv"
    pd.DataFrame({"kind": ["up", "up", "down"], "unit": ["1", "2", "1"], "size": [1, 2, 3]}).to_csv(side, index=False)
    with pytest.raises(DataError, match=r'shops.csv: series \'\["down", "2"\]\' has no row \(1 series lack one\)'):
        static_table(DataConfig(id_column=["kind", "unit"], static=str(side)), IDS)
    pd.DataFrame({"kind": ["up", "up"], "unit": ["1", "1"], "size": [1, 2]}).to_csv(side, index=False)
    with pytest.raises(DataError, match="has more than one row; give each series one row"):
        static_table(DataConfig(id_column=["kind", "unit"], static=str(side)), IDS)
    with pytest.raises(ConfigError, match="data.static_from_ids names 'store', which is not an id column"):
        static_table(DataConfig(id_column=["kind", "unit"], static_from_ids=["store"]), IDS)
    with pytest.raises(DataError, match="attribute 'size' is empty for series row 1"):
        fit_static(pd.DataFrame({"size": [1.0, None]}), "shops.csv")


def opposite_kinds(rows: int, seed: int) -> pd.DataFrame:
    """Four hourly series, AR(1) with coefficient +0.9 ("up") or -0.9 ("down"): from one value alone, the next
    one's sign is its kind's to say."""
    rng = np.random.default_rng(seed)
    frames = []
    for kind, unit in [json.loads(i) for i in IDS]:
        x = np.zeros(rows)
        for t in range(1, rows):
            x[t] = (0.9 if kind == "up" else -0.9) * x[t - 1] + rng.normal()
        frames.append(pd.DataFrame({"time": pd.date_range("2024-01-01", periods=rows, freq="h"), "kind": kind,
                                    "unit": unit, "value": x.round(4)}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.slow
def test_an_attribute_that_flips_the_pattern_flips_the_forecast_through_every_path(tmp_path, migrated_store):
    import shutil

    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opposite_kinds(600, 0).to_csv(tmp_path / "train.csv", index=False)
    done = run_stage("pipeline.train", f"data.path={tmp_path / 'train.csv'}", "data.target_column=value",
                     "data.id_column=[kind,unit]", "data.static_from_ids=[kind]", "data.calendar=false", "~experiment",
                     "window.lookback=1", "window.horizon=1", "split.val_steps=50", "split.test_steps=50",
                     "model.seasonal_skip=false", "model.window_norm=false", "model.hidden_size=8",
                     "model.head_layers=[16]", "trainer.max_steps=300", "trainer.val_check_interval=100", "trainer=cpu",
                     f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads(done.stdout)["run_id"]
    done = run_stage("pipeline.register", f"run_id={run_id}", "name=kinds", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'register'}")
    assert done.returncode == 0, done.stderr[-3000:]
    # The same history for all four: the last value 2. Only the attribute tells them apart.
    history = opposite_kinds(5, 1).assign(value=lambda f: np.tile([0.0, 0.5, 1.0, 1.5, 2.0], 4))
    history.to_csv(tmp_path / "new.csv", index=False)
    done = run_stage("pipeline.forecast", "model_uri=models:/kinds@champion", f"data.path={tmp_path / 'new.csv'}",
                     f"output={tmp_path / 'forecast.csv'}", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'forecast'}")
    assert done.returncode == 0, done.stderr[-3000:]
    forecast = pd.read_csv(tmp_path / "forecast.csv", dtype={"unit": str})
    by_kind = forecast.groupby("kind")["forecast"]
    assert (by_kind.max()["down"] < -0.5) and (by_kind.min()["up"] > 0.5), forecast
    # The pyfunc (what `mlflow models serve` and pipeline-serve run) and a stream give the same numbers.
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model("models:/kinds@champion").predict(history.astype({"time": str}))
    assert np.allclose(served["forecast"], forecast["forecast"], rtol=1e-6)
    model = load_model("models:/kinds@champion", TrackingConfig(uri=uri))
    stream = model.stream(["up", "2"])  # from the lookback the forecast stage read: its state then is the same
    for row in history[(history["kind"] == "up") & (history["unit"] == "2")].tail(model.spec.lookback).itertuples():
        stream.update(row.time, row.value)
    expected = forecast[(forecast["kind"] == "up") & (forecast["unit"] == "2")]["forecast"].to_numpy()
    assert np.allclose(stream.forecast()["forecast"], expected, rtol=1e-5)
    from pipeline.config import ExportFormat
    from pipeline.export import export_network

    with pytest.raises(ConfigError, match="exporting a model with static attributes is not supported yet"):
        export_network(model.network, model.spec.lookback, ExportFormat.onnx, tmp_path / "model.onnx")
