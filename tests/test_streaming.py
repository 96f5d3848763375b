"""Streaming one observation at a time gives the forward pass's forecast over the same observations."""

from dataclasses import asdict

import pandas as pd
import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data.load import validate_frame
from pipeline.data.windows import make_windows
from pipeline.errors import ConfigError, DataError
from pipeline.inference.model_format import FORMAT, ModelSpec
from pipeline.inference.saved_model import SavedModel
from pipeline.inference.streaming import NetworkStream
from pipeline.model.ensemble import build_network
from pipeline.model.network import RecurrentNetwork
from tests.helpers import network_args, saved_model_for

LOOKBACK, HORIZON, SEASON = 48, 12, 48


def arguments(windows, **changes) -> dict:
    """An LSTM's arguments from the composed config, as streaming takes it (model.window_norm=false)."""
    return network_args(f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.hidden_size=[12,8]",
                        "model.window_norm=false", n_features=windows.n_features,
                        n_future=len(windows.future_columns), season=SEASON) | changes


def network_of(windows, **changes) -> RecurrentNetwork:
    torch.manual_seed(0)
    network = build_network(**arguments(windows, **changes)).eval()
    # Seasonal skip starts the head at zero; move it so that the forecast depends on the state.
    with torch.no_grad():
        network.decoder.head[-1].weight.normal_(0, 0.1)
    return network


def saved(windows, changes: dict, time_zone="UTC", **data) -> SavedModel:
    """network_of(windows, **changes) as a saved model of the shipped data's single series."""
    spec = ModelSpec(format=FORMAT, data=asdict(DataConfig(**data)) | {"freq": "30min", "season": SEASON},
                     lookback=LOOKBACK, horizon=HORIZON, network=arguments(windows, **changes),
                     scaler=asdict(windows.scaler), series_ids=["demand"], time_zone=time_zone)
    return SavedModel(spec, network_of(windows, **changes))


@pytest.mark.parametrize("changes", [
    {}, {"cell": "gru", "init_state": "learned"}, {"cell": "rnn", "quantiles": [0.1, 0.5, 0.9]},
    {"strategy": "recursive"}, {"strategy": "seq2seq", "attention": True},
    {"strategy": "seq2seq", "attention": True, "attention_score": "additive", "segment_len": 12},
    {"strategy": "recursive", "segment_len": 12}, {"likelihood": "normal"},
    {"likelihood": "student_t", "strategy": "seq2seq", "attention": True},
], ids=["direct", "learned-init", "quantiles", "recursive", "seq2seq-attention", "segments-additive",
        "recursive-segments", "normal", "student_t-seq2seq"])
@pytest.mark.parametrize("observations", [LOOKBACK, 2 * LOOKBACK])
def test_streaming_matches_a_forward_pass_over_the_same_observations(windows, changes, observations):
    network = network_of(windows, **changes)
    rows = windows.values[:observations]
    future = windows.values[observations:observations + HORIZON][:, windows.future_columns]
    stream = NetworkStream(network)
    for row in rows:
        stream.update(row)
    with torch.no_grad():
        expected = network(rows.unsqueeze(0), future.unsqueeze(0))[0]
    assert torch.allclose(stream.forecast(future), expected, atol=1e-5)


def test_a_bidirectional_model_refuses_to_stream_and_says_why(windows):
    with pytest.raises(ConfigError, match="bidirectional.*backward.*WindowStream"):
        NetworkStream(network_of(windows, bidirectional=True))


def test_a_series_stream_in_original_units_matches_the_forecast_stage(windows, vic_elec):
    model = saved(windows, {"strategy": "recursive", "quantiles": [0.1, 0.5, 0.9]})
    # Times in the zone of the user's clock: converted, and the forecast comes back in that zone.
    history = vic_elec.iloc[:LOOKBACK].assign(time=lambda f: f["time"].dt.tz_convert("Australia/Melbourne"))
    stream = model.stream("demand")
    for row in history.itertuples():
        stream.update(row.time, row.demand)
    streamed = stream.forecast()
    batch = model.forecast(history)
    assert str(streamed["time"].dt.tz) == "Australia/Melbourne"
    pd.testing.assert_series_equal(streamed["time"], batch["time"], check_names=False)
    for column in ["forecast", "q10", "q50", "q90"]:
        pd.testing.assert_series_equal(streamed[column], batch[column], rtol=1e-5)
    with pytest.raises(ValueError, match="expected the step after"):
        stream.update(history["time"].iloc[-1], 1.0)
    with pytest.raises(ValueError, match="has no zone, but the model was trained on zoned times"):
        stream.update(history["time"].iloc[-1].tz_localize(None), 1.0)


def test_a_log1p_model_streams_what_the_forecast_stage_forecasts_and_refuses_a_negative_value(vic_elec):
    series = validate_frame(vic_elec.iloc[:1200], DataConfig(), source="vic_elec slice")
    logged = make_windows(series, LOOKBACK, HORIZON, 8, 96, 96, calendar=True, transform="log1p")
    model = saved(logged, {"quantiles": [0.1, 0.5, 0.9]}, transform="log1p")
    history = vic_elec.iloc[:LOOKBACK]
    stream = model.stream("demand")
    for row in history.itertuples():
        stream.update(row.time, row.demand)
    streamed, batch = stream.forecast(), model.forecast(history)
    for column in ["forecast", "q10", "q90"]:
        pd.testing.assert_series_equal(streamed[column], batch[column], rtol=1e-5)
    assert batch["forecast"].between(1000, 20000).all()  # back in MW, through exp(.) - 1
    with pytest.raises(ValueError, match=r"log\(1 \+ value\) \(data.transform=log1p\), which needs values >= 0"):
        stream.update(history["time"].iloc[-1] + pd.Timedelta("30min"), -5.0)


def test_a_model_that_cannot_stream_says_why_and_one_that_reads_the_future_asks_for_it(windows, vic_elec):
    with pytest.raises(ConfigError, match="model.window_norm cannot carry its state forward"):
        NetworkStream(network_of(windows, window_norm=True))
    data = DataConfig(future_covariates=["holiday"])
    ahead = make_windows(validate_frame(vic_elec.iloc[:1200], data, source="vic_elec slice"), LOOKBACK, HORIZON, 8,
                         96, 96, calendar=True)
    model = saved(ahead, {}, future_covariates=["holiday"])
    with pytest.raises(DataError, match="has 0 future rows after its last observed 'demand'.*each with 'holiday'"):
        model.forecast(vic_elec.iloc[:LOOKBACK])
    stream = model.stream("demand")
    for row in vic_elec.iloc[:LOOKBACK].itertuples():
        stream.update(row.time, row.demand, row.holiday)
    with pytest.raises(ValueError, match=r"give future=\{'holiday': 12 values\}"):
        stream.forecast()
    assert len(stream.forecast(future={"holiday": [0] * HORIZON})) == HORIZON


@pytest.mark.parametrize("strategy", ["recursive", "direct"])
def test_a_likelihood_stream_draws_the_sample_paths_the_forecast_stage_draws_from_the_same_seed(windows, vic_elec,
                                                                                                 strategy, caplog):
    model = saved(windows, {"strategy": strategy, "likelihood": "normal"})
    history = vic_elec.iloc[:LOOKBACK]
    stream = model.stream("demand")
    for row in history.itertuples():
        stream.update(row.time, row.demand)
    streamed = stream.forecast(samples=50, seed=2)
    batch = model.forecast(history, samples=50, seed=2)
    # A direct head's paths are independent across steps, and the forecast says so.
    assert ("draws each step of a path on its own" in caplog.text) == (strategy == "direct")
    assert list(streamed.columns) == ["time", "sample", "forecast"] and len(streamed) == 50 * HORIZON
    pd.testing.assert_frame_equal(streamed, batch[streamed.columns], rtol=1e-5, check_dtype=False)
    assert not stream.forecast(samples=50, seed=3)["forecast"].equals(streamed["forecast"])
    quantiles = stream.forecast()
    pd.testing.assert_frame_equal(quantiles, model.forecast(history)[quantiles.columns], rtol=1e-5)
    points = saved(windows, {}).stream("demand")
    with pytest.raises(ValueError, match="'demand': no observation yet; call update"):
        points.forecast()
    points.update(history["time"].iloc[0], history["demand"].iloc[0])
    with pytest.raises(ValueError, match="sample paths need a model trained with model.likelihood"):
        points.forecast(samples=5)


@pytest.mark.parametrize("likelihood", [None, "normal"])
def test_the_default_recipe_streams_by_reading_its_window_again_and_forecasts_as_the_stage(windows, vic_elec,
                                                                                           likelihood):
    # Three members, per-window normalisation, segments of 4: no state carries over, the window does.
    torch.manual_seed(0)
    model = saved_model_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.ensemble=3",
                            "model.segment_len=4", "model.window_norm=true", "model.hidden_size=8",
                            *([f"model.likelihood={likelihood}", "model.strategy=recursive"] if likelihood else []),
                            season=SEASON)
    history = vic_elec.iloc[100:100 + 2 * LOOKBACK]
    stream = model.stream("demand")
    for number, row in enumerate(history.itertuples()):
        stream.update(row.time, row.demand)
        if number == LOOKBACK - 2:
            with pytest.raises(ValueError, match=f"{LOOKBACK - 1} observations of the {LOOKBACK} this model reads"):
                stream.forecast()
    streamed, batch = stream.forecast(), model.forecast(history)
    pd.testing.assert_frame_equal(streamed, batch[streamed.columns], rtol=1e-5)
    if likelihood:
        paths = stream.forecast(samples=30, seed=5)
        pd.testing.assert_frame_equal(paths, model.forecast(history, samples=30, seed=5)[paths.columns], rtol=1e-5,
                                      check_dtype=False)
