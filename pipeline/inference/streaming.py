"""Streaming: one new observation at a time, the next forecast on demand.

A unidirectional model without per-window normalisation carries all it knows in its recurrent state, updated in
O(1) per observation (NetworkStream). The others cannot: a bidirectional encoder's backward direction reads the
window from the newest step, and per-window normalisation rescales the whole window, so every new observation
changes every state; an ensemble is several networks. They stream by keeping the window and reading it again at
each forecast (WindowStream), as batch forecasting does: the default recipe streams this way.
"""

import json
from collections import deque

import numpy as np
import pandas as pd
import torch

from pipeline.data.features import calendar_features
from pipeline.errors import ConfigError
from pipeline.inference.batch import forecast_columns, reads_series_row
from pipeline.inference.model_format import ModelSpec
from pipeline.model.ensemble import Ensemble
from pipeline.model.likelihoods import draw_paths, repeated, sample_paths
from pipeline.model.network import Forecaster


class NetworkStream:
    """Scaled input rows in, forecasts out; matches the network's forward pass over the same rows.

    With model.segment_len the state advances once per complete segment; rows wait in a buffer until then.
    With attention, every encoder state is kept as a key, so memory grows with the stream.
    """

    def __init__(self, network: Forecaster, series: int = 0):
        if isinstance(network, Ensemble):
            raise ConfigError("an ensemble (model.ensemble > 1) has no one state to carry forward: stream it with "
                              "WindowStream (SavedModel.stream picks it), or train with model.ensemble=1")
        if network.encoder.directions == 2:
            raise ConfigError("a bidirectional encoder cannot carry its state forward: its backward pass starts "
                              "from the newest step, so each new observation changes every state; stream it with "
                              "WindowStream (SavedModel.stream picks it), or train with model.bidirectional=false")
        if network.window_norm:
            raise ConfigError("model.window_norm cannot carry its state forward: every new observation changes "
                              "the window's mean and spread, so every state would have to be recomputed; stream it "
                              "with WindowStream (SavedModel.stream picks it), or train with model.window_norm=false")
        self.network = network.eval()
        self.series = torch.tensor([series])
        self.static = network.encoder_attributes(self.series)  # the series' attributes, if the encoder reads them
        self.states = network.encoder.initial(1, self.static)
        # The last `season` rows: all the seasonal skip and the rolled strategies read besides the state.
        self.recent: deque[torch.Tensor] = deque(maxlen=max(1, network.season or 1))
        self.pending: list[torch.Tensor] = []  # rows of an incomplete segment
        self.keys: list[torch.Tensor] = []
        self.seen = 0

    @torch.inference_mode()
    def update(self, row: torch.Tensor) -> None:
        """Take one (F,) input row: scaled target, scaled past covariates, calendar features."""
        row = row.to(torch.float32).reshape(-1)
        self.recent.append(row)
        self.seen += 1
        self.pending.append(row)
        if len(self.pending) < (self.network.encoder.segment_len or 1):
            return
        # (1, S, F): one more segment (or row) through the encoder's cells, from the state so far
        out, self.states = self.network.encoder.step(torch.stack(self.pending).unsqueeze(0), self.states, self.static)
        self.pending = []
        if self.network.attends:
            self.keys.append(out[:, 0])

    @torch.inference_mode()
    def forecast(self, future: torch.Tensor, horizon: int | None = None, samples: int = 0,
                 seed: int = 0) -> torch.Tensor:
        """(H, K) known-future features of the next steps -> (H,) scaled forecast, or (H, Q) quantiles; with
        `samples` (a likelihood model), (samples, H) sample paths drawn from `seed`, each rolled path fed its own
        draws as in batch forecasting (pipeline/model/likelihoods.py: sample_paths)."""
        if not self.seen or (self.network.attends and not self.keys):
            raise ValueError("no observation yet (or, with attention, no complete segment): call update() first")
        network, horizon = self.network, horizon or self.network.horizon
        x = torch.stack(list(self.recent)).unsqueeze(0)
        keys = torch.stack(self.keys, dim=1) if self.keys else None
        future = future.to(torch.float32).unsqueeze(0)
        if samples:
            def run(copies: int) -> torch.Tensor:  # states are (directions, batch, width): batch second
                states = [None if s is None else tuple(repeated(t, copies, 1) for t in s) if isinstance(s, tuple)
                          else repeated(s, copies, 1) for s in self.states]
                return network.decode(*(repeated(t, copies) for t in (x, future)), (repeated(keys, copies), states,
                                      None), repeated(self.series, copies), None, horizon)

            return seeded_paths(network, seed, lambda: draw_paths(network, 1, samples, None, run))
        forecast = network.decode(x, future, (keys, self.states, None), self.series, None, horizon)
        if network.likelihood:
            forecast = network.likelihood.quantiles(forecast, network.z)
        return network.calibrated(forecast)[0]


class WindowStream:
    """For a model whose state cannot be carried from one observation to the next (per-window normalisation, an
    ensemble, a bidirectional encoder): the last `lookback` input rows, and at each forecast a forward pass over
    them, as batch forecasting makes it. O(1) per update, O(lookback) per forecast."""

    def __init__(self, network: Forecaster, lookback: int, series: int = 0):
        self.network = network.eval()
        self.series = torch.tensor([series])
        self.lookback = lookback
        self.rows: deque[torch.Tensor] = deque(maxlen=lookback)

    def update(self, row: torch.Tensor) -> None:
        """Take one (F,) input row: scaled target, scaled past covariates, calendar features."""
        self.rows.append(row.to(torch.float32).reshape(-1))

    @torch.inference_mode()
    def forecast(self, future: torch.Tensor, horizon: int | None = None, samples: int = 0,
                 seed: int = 0) -> torch.Tensor:
        """As NetworkStream.forecast, once `lookback` rows have been seen."""
        if len(self.rows) < self.lookback:
            raise ValueError(f"{len(self.rows)} observations of the {self.lookback} this model reads before each "
                             f"forecast: call update() with more")
        network = self.network
        x, future = torch.stack(list(self.rows)).unsqueeze(0), future.to(torch.float32).unsqueeze(0)
        if samples:
            return seeded_paths(network, seed, lambda: sample_paths(network, x, future, self.series, None, samples))
        return network(x, future, self.series, None, horizon=horizon)[0]


def seeded_paths(network: Forecaster, seed: int, draw) -> torch.Tensor:
    """One window's (samples, H) paths from `draw()`, drawn from `seed` alone (the caller's random state kept);
    refused for a model that forecasts no distribution."""
    if not network.likelihood:
        raise ValueError("sample paths need a model trained with model.likelihood (this one forecasts points or "
                         "quantiles); ask without samples")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return draw()[0]


def stream_for(network: Forecaster, lookback: int, series: int = 0) -> NetworkStream | WindowStream:
    """A stream that carries the recurrent state when the model allows it (O(1) a forecast), else the window."""
    stateless = (isinstance(network, Ensemble) or network.encoder.directions == 2 or network.window_norm)
    return WindowStream(network, lookback, series) if stateless else NetworkStream(network, series)


class SeriesStream:
    """A saved model streaming one series in its own units: (time, value, covariates) in, a frame out; a model
    that reads known-future covariates takes their values for the steps ahead at each forecast."""

    def __init__(self, spec: ModelSpec, network: Forecaster, series_id: str | list[str]):
        """`series_id`: the series' id as the file wrote it, or the list of its ids for several id columns."""
        series_id = series_id if isinstance(series_id, str) else json.dumps(list(series_id), ensure_ascii=False)
        self.spec, self.series_id = spec, series_id
        center, scale = spec.scaler["center"], spec.scaler["scale"]
        if series_id not in center:
            raise ConfigError(f"series {series_id!r} was not in training; the model has no scaling for it")
        self.center, self.scale = np.array(center[series_id]), np.array(scale[series_id])
        self.log1p = spec.scaler.get("target_transform", "none") == "log1p"
        self.known_ahead = list(spec.data["future_covariates"])
        row = spec.series_ids.index(series_id) if reads_series_row(spec.network) else 0
        self.stream = stream_for(network, spec.lookback, series=row)
        self.offset = pd.tseries.frequencies.to_offset(spec.data["freq"])
        self.last: pd.Timestamp | None = None
        self.zone = None  # the zone of the observations' times, when zoned

    def _calendar(self, times: pd.DatetimeIndex) -> np.ndarray:
        if not self.spec.data["calendar"]:
            return np.zeros((len(times), 0))
        return calendar_features(pd.Series(times), self.spec.data["freq"])

    def update(self, time, value: float, *covariates: float) -> None:
        """One observation at `time`, the next step of the series' grid: the target, then every covariate in the
        model's order (past ones, then known-future ones)."""
        time = pd.Timestamp(time)
        if (time.tzinfo is None) != (self.spec.time_zone is None):
            raise ValueError(f"series {self.series_id!r}: {time} " + (
                "has no zone, but the model was trained on zoned times; give times with a zone" if time.tzinfo is None
                else "has a zone, but the model was trained on wall-clock times; give times without one"))
        if time.tzinfo is not None:
            # Calendar features are computed in UTC, as in training; forecasts come back in this zone.
            self.zone, time = time.tzinfo, time.tz_convert("UTC")
        if self.last is not None and time != self.last + self.offset:
            raise ValueError(f"series {self.series_id!r}: expected the step after {self.last}, got {time}")
        if self.log1p and not value >= 0:
            raise ValueError(f"series {self.series_id!r}: {value} at {time}: the model reads log(1 + value) "
                             f"(data.transform=log1p), which needs values >= 0")
        scaled = (np.array([np.log1p(value) if self.log1p else value, *covariates], dtype=np.float64)
                  - self.center) / self.scale
        row = np.concatenate([scaled, self._calendar(pd.DatetimeIndex([time]))[0]])
        self.stream.update(torch.from_numpy(row))
        self.last = time

    def forecast(self, future: pd.DataFrame | dict | None = None, samples: int = 0, seed: int = 0) -> pd.DataFrame:
        """The next `horizon` steps after the last observation, in the series' units. `future`: the known-future
        covariates' values over those steps, by column name (a frame or a dict of sequences), for a model that
        reads them. With `samples` (a likelihood model), that many sample paths drawn from `seed` instead: one
        row per (sample, step), as the forecast stage writes them."""
        horizon = self.spec.horizon
        if self.last is None:
            raise ValueError(f"series {self.series_id!r}: no observation yet; call update() first")
        times = pd.date_range(self.last + self.offset, periods=horizon, freq=self.offset)
        ahead = np.zeros((horizon, 0))
        if self.known_ahead:
            given = pd.DataFrame(future if future is not None else {})
            absent = [c for c in self.known_ahead if c not in given or given[c].isna().any() or len(given) != horizon]
            if absent:
                raise ValueError(f"series {self.series_id!r}: give future={{{absent[0]!r}: {horizon} values}} for the "
                                 f"steps from {times[0]} on (the model reads {self.known_ahead} ahead)")
            width = len(self.known_ahead)
            ahead = (given[self.known_ahead].to_numpy(np.float64) - self.center[-width:]) / self.scale[-width:]
        features = np.concatenate([ahead, self._calendar(times)], axis=1)
        scaled = self.stream.forecast(torch.from_numpy(features), samples=samples, seed=seed)
        values = scaled.numpy().astype(np.float64) * self.scale[0] + self.center[0]
        values = np.expm1(values) if self.log1p else values
        times = times if self.zone is None else times.tz_convert(self.zone)
        if samples:  # (samples, H): each path's steps together
            return pd.DataFrame({"time": np.tile(times, samples), "sample": np.repeat(np.arange(samples), horizon),
                                 "forecast": values.ravel()})
        return pd.DataFrame({"time": times} | forecast_columns(self.stream.network, values))
