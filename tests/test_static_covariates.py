"""Static covariates (pipeline/data/static.py, pipeline/model/static.py): attributes of each series from its id
columns or a side file, fed to the network, carried in the saved model, and the reason two series with the same
history get different forecasts."""

import json
import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.config import DataConfig, TrackingConfig
from pipeline.data.static import fit_static, static_attributes, static_table
from pipeline.errors import ConfigError, DataError
from pipeline.inference.saved_model import load_model
from tests.helpers import free_port, post, run_stage, start_stage, wait_until_up

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


def test_attributes_given_at_forecast_time_are_encoded_with_trainings_vocabulary_and_spread(caplog):
    from pipeline.data.static import encode_attributes

    spec = {"categories": {"kind": ["down", "up"], "region": ["north", "south"]}, "numeric": {"size": [20.0, 5.0]}}
    given = pd.DataFrame({"region": ["south", "east"], "size": [30, 20]}, index=['["up", "1"]', '["up", "2"]'])
    with caplog.at_level("WARNING"):
        codes, values = encode_attributes(spec, given, "new.csv")
    # kind is not given: it stays training's; east is new: code 0, named in one warning.
    assert list(codes) == [1] and codes[1].tolist() == [2, 0] and values[0].tolist() == [2.0, 0.0]
    assert "new.csv: attribute 'region' of series '[\"up\", \"2\"]' is 'east', a value training never saw" in (
        caplog.text)
    expected = """new.csv: attribute 'size' of series '["up", "2"]' is 'big', not a number; give a number (training's"""
    with pytest.raises(DataError, match=re.escape(expected + " mean was 20)")):
        encode_attributes(spec, given.assign(size=[1, "big"]), "new.csv")


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


def patterns(swapped: bool = False, unseen: str | None = None) -> pd.DataFrame:
    """The side file: each series' pattern ("ar+" for the "up" kind, "ar-" for "down"), or the other one, or for the
    series `unseen` a value training never saw."""
    rows = [json.loads(i) for i in IDS]
    pattern = [("ar-" if kind == "up" else "ar+") if swapped else ("ar+" if kind == "up" else "ar-")
               for kind, _ in rows]
    pattern = [("ar0" if unit == unseen and kind == "up" else p) for (kind, unit), p in zip(rows, pattern)]
    return pd.DataFrame({"kind": [k for k, _ in rows], "unit": [u for _, u in rows], "pattern": pattern})


@pytest.mark.slow
def test_an_attribute_that_flips_the_pattern_flips_the_forecast_through_every_path(tmp_path, migrated_store, caplog):
    import shutil

    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    opposite_kinds(600, 0).to_csv(tmp_path / "train.csv", index=False)
    patterns().to_csv(tmp_path / "patterns.csv", index=False)
    # The pattern comes from the side file alone (the unit, from the ids, tells nothing).
    done = run_stage("pipeline.train", f"data.path={tmp_path / 'train.csv'}", "data.target_column=value",
                     "data.id_column=[kind,unit]", f"data.static={tmp_path / 'patterns.csv'}",
                     "data.static_from_ids=[unit]", "data.calendar=false", "~experiment",
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
    # Given no attribute, a series keeps training's; given one as a column (the same on each of its rows), that one.
    swapped = history.merge(patterns(swapped=True), on=["kind", "unit"])
    swapped.to_csv(tmp_path / "moved.csv", index=False)
    forecasts = {}
    for name in ("new", "moved"):
        done = run_stage("pipeline.forecast", "model_uri=models:/kinds@champion", f"data.path={tmp_path / name}.csv",
                         f"output={tmp_path / name}_forecast.csv", f"tracking.uri={uri}",
                         f"hydra.run.dir={tmp_path / name}_forecast")
        assert done.returncode == 0, done.stderr[-3000:]
        forecasts[name] = pd.read_csv(tmp_path / f"{name}_forecast.csv", dtype={"unit": str})
    forecast = forecasts["new"]
    by_kind = forecast.groupby("kind")["forecast"]
    assert (by_kind.max()["down"] < -0.5) and (by_kind.min()["up"] > 0.5), forecast
    by_kind = forecasts["moved"].groupby("kind")["forecast"]
    assert (by_kind.min()["down"] > 0.5) and (by_kind.max()["up"] < -0.5), forecasts["moved"]
    # The pyfunc (what `mlflow models serve` and pipeline-serve run) and a stream give the same numbers; the
    # attribute column passes MLflow's schema check (declared optional in the signature).
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model("models:/kinds@champion")
    served = pyfunc.predict(history.astype({"time": str}))
    assert np.allclose(served["forecast"], forecast["forecast"], rtol=1e-6)
    served = pyfunc.predict(swapped.astype({"time": str}))
    assert np.allclose(served["forecast"], forecasts["moved"]["forecast"], rtol=1e-6)
    # A value training never saw: the documented fallback (no attribute), a warning that names it, no error.
    unseen = history.merge(patterns(unseen="2"), on=["kind", "unit"])
    with caplog.at_level("WARNING"):
        served = pyfunc.predict(unseen.astype({"time": str}))
    assert "attribute 'pattern' of series '[\"up\", \"2\"]' is 'ar0', a value training never saw" in caplog.text
    assert np.isfinite(served["forecast"]).all()
    assert np.allclose(served["forecast"].to_numpy()[:3], forecast["forecast"].to_numpy()[:3], rtol=1e-6)
    from pipeline.inference.pyfunc import RequestRefused

    with pytest.raises(RequestRefused, match="column 'pattern' changes within series"):
        pyfunc.predict(unseen.assign(pattern=["ar+", "ar-"] * 10).astype({"time": str}))
    # And through the scoring server itself (pipeline.serve: MLflow's, over the checked copy), as CSV requests.
    port = free_port()
    server = start_stage("pipeline.serve", "model_uri=models:/kinds@champion", f"port={port}", f"tracking.uri={uri}",
                         f"hydra.run.dir={tmp_path / 'serve'}")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server)
        for frame, expected in [(swapped, forecasts["moved"]["forecast"]), (unseen, served["forecast"])]:
            status, body = post(f"http://127.0.0.1:{port}/invocations", frame.to_csv(index=False).encode())
            assert status == 200, body[-2000:]
            answer = pd.DataFrame(json.loads(body)["predictions"])
            assert np.allclose(answer["forecast"], expected, rtol=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=60)
    model = load_model("models:/kinds@champion", TrackingConfig(uri=uri))
    stream = model.stream(["up", "2"])  # from the lookback the forecast stage read: its state then is the same
    for row in history[(history["kind"] == "up") & (history["unit"] == "2")].tail(model.spec.lookback).itertuples():
        stream.update(row.time, row.value)
    expected = forecast[(forecast["kind"] == "up") & (forecast["unit"] == "2")]["forecast"].to_numpy()
    assert np.allclose(stream.forecast()["forecast"], expected, rtol=1e-5)
    # Exported, the graph takes each window's series row as a third input, the attributes inside it.
    from pipeline.config import ExportFormat
    from pipeline.export import check_export, export_network, load_runner

    export_network(model.network, model.spec.lookback, ExportFormat.torchscript, tmp_path / "model.pt")
    assert check_export(model.network, model.spec.lookback, ExportFormat.torchscript, tmp_path / "model.pt")[
        "max_abs_diff"] < 1e-4
    run = load_runner(ExportFormat.torchscript, tmp_path / "model.pt")
    center, scale = (np.array([model.spec.scaler[part][i][0] for i in IDS]) for part in ("center", "scale"))
    x = ((2.0 - center) / scale).astype(np.float32).reshape(4, 1, 1)  # the last value 2, scaled per series
    rows = np.array([model.spec.series_ids.index(i) for i in IDS])
    exported = run(x, np.zeros((4, 1, model.network.n_future), np.float32), rows).reshape(-1) * scale + center
    assert np.allclose(exported, forecast["forecast"], rtol=1e-4, atol=1e-5), (exported, forecast)


@pytest.mark.parametrize("into", ["state", "input"])
def test_attributes_the_encoder_reads_stream_as_the_forward_pass_reads_them_and_tell_series_apart(into):
    import torch

    from pipeline.inference.streaming import NetworkStream
    from pipeline.model.network import RecurrentNetwork

    torch.manual_seed(0)
    network = RecurrentNetwork(
        cell="lstm", n_features=3, n_future=2, lookback=8, horizon=4, hidden_size=8, num_layers=2,
        bidirectional=False, dropout=0.0, nonlinearity="tanh", season=None, n_series=3, series_embedding=0,
        segment_len=2, strategy="direct", attention=False, attention_score="dot", teacher_forcing=0.0,
        head_layers=[], head_activation="relu", head_dropout=0.0, init_state="zeros", quantiles=[],
        window_norm=False, static={"categories": {"kind": ["down", "up"]}, "numeric": {"size": [0.0, 1.0]}},
        static_embedding=3, static_into=into).eval()
    network.static.set_table(torch.tensor([[1], [2], [0]]), torch.tensor([[0.5], [-0.5], [0.0]]))
    # The head reads the encoder (8) and the known-future rows (4 x 2) alone: the attributes went in before it.
    assert network.decoder.head[0].in_features == 8 + 4 * 2
    x, future = torch.randn(1, 8, 3), torch.randn(1, 4, 2)
    forecasts = []
    for row in range(3):
        with torch.no_grad():
            expected = network(x, future, torch.tensor([row]))[0]
        stream = NetworkStream(network, series=row)
        for step in x[0]:
            stream.update(step)
        assert torch.allclose(stream.forecast(future[0]), expected, atol=1e-5)
        forecasts.append(expected)
    assert not torch.allclose(forecasts[0], forecasts[1]) and not torch.allclose(forecasts[1], forecasts[2])
