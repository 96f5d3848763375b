"""Streaming one observation at a time gives the forward pass's forecast over the same observations."""

from dataclasses import asdict

import pandas as pd
import pytest
import torch

from pipeline.config import ConfigError, DataConfig
from pipeline.forecast import ModelSpec, forecast_frame
from pipeline.load import validate_frame
from pipeline.models import Forecaster
from pipeline.streaming import SeriesStream, StreamingForecaster
from pipeline.window import make_windows

LOOKBACK, HORIZON, SEASON = 48, 12, 48


@pytest.fixture(scope="module")
def windows(vic_elec):
    series = validate_frame(vic_elec.iloc[:1200], DataConfig(), source="vic_elec slice")
    return make_windows(series, LOOKBACK, HORIZON, 8, 96, 96, calendar=True)


def module(windows, **changes) -> Forecaster:
    torch.manual_seed(0)
    kwargs = dict(cell="lstm", n_features=windows.n_features, n_future=len(windows.future_columns),
                  lookback=LOOKBACK, horizon=HORIZON, hidden_size=[12, 8], num_layers=2, season=SEASON)
    forecaster = Forecaster(**(kwargs | changes)).eval()
    # Seasonal skip starts the head at zero; move it so that the forecast depends on the state.
    with torch.no_grad():
        forecaster.network.head[-1].weight.normal_(0, 0.1)
    return forecaster


@pytest.mark.parametrize("changes", [
    {}, {"cell": "gru", "init_state": "learned"}, {"cell": "rnn", "quantiles": [0.1, 0.5, 0.9]},
    {"strategy": "recursive"}, {"strategy": "seq2seq", "attention": True},
    {"strategy": "seq2seq", "attention": True, "attention_score": "additive", "segment_len": 12},
    {"strategy": "recursive", "segment_len": 12},
], ids=["direct", "learned-init", "quantiles", "recursive", "seq2seq-attention", "segments-additive",
        "recursive-segments"])
@pytest.mark.parametrize("observations", [LOOKBACK, 2 * LOOKBACK])
def test_streaming_matches_a_forward_pass_over_the_same_observations(windows, changes, observations):
    network = module(windows, **changes).network
    rows = windows.values[:observations]
    future = windows.values[observations:observations + HORIZON][:, windows.future_columns]
    stream = StreamingForecaster(network)
    for row in rows:
        stream.update(row)
    with torch.no_grad():
        expected = network(rows.unsqueeze(0), future.unsqueeze(0))[0]
    assert torch.allclose(stream.forecast(future), expected, atol=1e-5)


def test_a_bidirectional_model_refuses_to_stream_and_says_why(windows):
    with pytest.raises(ConfigError, match="bidirectional.*backward"):
        StreamingForecaster(module(windows, bidirectional=True).network)


def test_a_series_stream_in_original_units_matches_the_forecast_stage(windows, vic_elec):
    forecaster = module(windows, strategy="recursive", quantiles=[0.1, 0.5, 0.9])
    data = asdict(DataConfig()) | {"freq": "30min", "season": SEASON}
    spec = ModelSpec(data=data, lookback=LOOKBACK, horizon=HORIZON, hparams=dict(forecaster.hparams),
                     scaler=asdict(windows.scaler), series_ids=["0"])
    history = vic_elec.iloc[:LOOKBACK]
    stream = SeriesStream(forecaster, spec, "0")
    for row in history.itertuples():
        stream.update(row.time, row.demand)
    streamed = stream.forecast()
    batch = forecast_frame(forecaster, spec, history)
    pd.testing.assert_series_equal(streamed["time"], batch["time"], check_names=False)
    for column in ["forecast", "q10", "q50", "q90"]:
        pd.testing.assert_series_equal(streamed[column], batch[column], rtol=1e-5)
    with pytest.raises(ValueError, match="expected the step after"):
        stream.update(history["time"].iloc[-1], 1.0)


def test_models_that_need_what_a_stream_or_history_cannot_give_refuse_and_name_the_key(windows, vic_elec):
    with pytest.raises(ConfigError, match="model.window_norm cannot stream"):
        StreamingForecaster(module(windows, window_norm=True).network)
    forecaster = module(windows, n_future=len(windows.future_columns) + 1)
    data = asdict(DataConfig(future_covariates=["holiday"])) | {"freq": "30min", "season": SEASON}
    spec = ModelSpec(data=data, lookback=LOOKBACK, horizon=HORIZON, hparams=dict(forecaster.hparams),
                     scaler=asdict(windows.scaler), series_ids=["0"])
    with pytest.raises(ConfigError, match=r"future values of data.future_covariates \['holiday'\]"):
        forecast_frame(forecaster, spec, vic_elec.iloc[:LOOKBACK])
    with pytest.raises(ConfigError, match="future values of data.future_covariates"):
        SeriesStream(forecaster, spec, "0")
