"""Batch forecasting: a frame of recent history in, the next `horizon` steps of every series out, from a model's
spec and network. The history is checked as training checked its file, the last window of each series goes
through the network in batched calls, and the result comes back in the user's units, ids and time zone. What the
forecast stage, the pyfunc, the training's input example and the benchmarks call (SavedModel.forecast);
streaming.py forecasts one series observation by observation instead."""

import logging

import numpy as np
import pandas as pd
import torch

from pipeline.config import DataConfig, ShortSeries
from pipeline.data.features import build_inputs
from pipeline.data.ids import id_columns_of, series_keys
from pipeline.data.load import validate_frame
from pipeline.data.scaling import Scaler
from pipeline.data.series import SERIES_ID, TARGET, TIME, Series
from pipeline.data.static import encode_attributes, given_attributes, side_file_columns
from pipeline.data.windows import last_windows
from pipeline.errors import ConfigError, DataError
from pipeline.inference.model_format import ModelSpec
from pipeline.inference.range_checks import check_forecast, check_inputs, quoted_id
from pipeline.model.likelihoods import coherent_paths
from pipeline.model.network import Forecaster
from pipeline.model.predict import predict
from pipeline.model.static import with_attributes


log = logging.getLogger(__name__)


def forecast(spec: ModelSpec, network: Forecaster, frame: pd.DataFrame, source: str = "input frame",
             time_zone: str | None = None, samples: int = 0, seed: int = 0) -> pd.DataFrame:
    """The next `horizon` steps after the last observed target of every series in `frame`, in the user's units,
    id columns and time zone. `frame` holds each series' recent history, then (for a model that reads
    known-future covariates, necessarily) its `horizon` future rows: the target empty, every known-future value
    given. `time_zone` overrides the model's data.time_zone (the zone of times without an offset). `samples`
    (a model.likelihood model): that many sample paths per series drawn from `seed`, in long form."""
    data = spec.data_config()
    if time_zone is not None:
        data.time_zone = time_zone
    series = validate_frame(frame, data, source=source, future_steps=spec.horizon)
    return forecast_series(spec, with_given_attributes(spec, network, frame, data, source), series, source,
                           samples, seed)


def with_given_attributes(spec: ModelSpec, network: Forecaster, frame: pd.DataFrame, data: DataConfig,
                          source: str) -> Forecaster:
    """The network, reading the side-file attributes `frame` gives as columns (pipeline/data/static.py) for its
    series instead of training's; the network itself when it gives none."""
    static = spec.network.get("static")
    columns = [c for c in side_file_columns(static, data) if c in frame.columns] if static else []
    if not columns:
        return network
    frame = frame.reset_index(drop=True)
    keys = pd.Series(series_keys(frame, data.id_column, data.target_column, source))
    attributes = given_attributes(frame, keys, columns, source)
    rows = embedding_rows(spec, [str(s) for s in attributes.index], source)
    codes, values = encode_attributes(static, attributes, source)
    return with_attributes(network, rows, {i: torch.tensor(c) for i, c in codes.items()},
                           {i: torch.tensor(v) for i, v in values.items()})


def future_frame(spec: ModelSpec, history: pd.DataFrame, source: str = "input frame",
                 time_zone: str | None = None) -> pd.DataFrame:
    """The rows to append to `history` for a forecast: the next `horizon` steps of every series, with its id
    column(s), the time (in the history's zone), and the target and every covariate empty, for the known-future
    ones to be filled in (like NeuralForecast's make_future_dataframe)."""
    data = spec.data_config()
    if time_zone is not None:
        data.time_zone = time_zone
    series = validate_frame(history, data, source=source)
    future = future_rows(series.frame.groupby(SERIES_ID, sort=False, observed=True).tail(1), data.freq,
                         spec.horizon)
    times = future[TIME] if series.time_zone is None else future[TIME].dt.tz_convert(series.time_zone)
    empty = dict.fromkeys([data.target_column, *data.covariates, *data.future_covariates], np.nan)
    return pd.concat([id_columns_of(future[SERIES_ID], data.id_column),
                      pd.DataFrame({data.time_column: times.to_numpy()} | empty)], axis=1)


def forecast_series(spec: ModelSpec, network: Forecaster, series: Series, source: str, samples: int = 0,
                    seed: int = 0) -> pd.DataFrame:
    """forecast() after validation: `series` is what validate_frame made of the history."""
    data = spec.data_config()
    if samples and not network.likelihood:
        raise ConfigError(f"samples={samples} needs a model trained with model.likelihood (normal, student_t or "
                          f"negative_binomial); this one forecasts {'quantiles' if network.quantiles else 'a point'}"
                          f": set samples=0")
    if samples and not coherent_paths(network):
        log.warning("model.strategy=direct draws each step of a path on its own: every step has its distribution, "
                    "but sums and peaks over a path are too narrow; train with model.strategy=recursive or seq2seq "
                    "for paths coherent across the horizon")
    check_time_zone(spec, series.time_zone, data.time_column, source)
    if data.future_covariates and series.future is None:
        raise DataError(f"{source}: no future rows; this model reads the known-future values of "
                        f"{data.future_covariates} over the {spec.horizon} steps it forecasts: append them to each "
                        f"series (future_frame makes the rows)")
    lookback, horizon = spec.lookback, spec.horizon
    recent = series.frame.groupby(SERIES_ID, sort=False, observed=True).tail(lookback)
    lengths = recent.groupby(SERIES_ID, sort=False, observed=True).size()
    padded = data.short_series == ShortSeries.pad
    if not padded and (lengths < lookback).any():
        short = lengths[lengths < lookback]
        raise DataError(f"{source}: series {short.index[0]!r} has {short.iloc[0]} rows; the model needs the "
                        f"last {lookback} of each series")
    # Each series' horizon rows: the given future rows, whose known-future values are read (a future row's target
    # and past covariates are not), or rows made after its last one.
    if data.future_covariates:
        # A history with filled gaps has an `observed` column its future rows lack: they are never scored anyway.
        future = series.future.reindex(columns=recent.columns)
        future = future.fillna(dict.fromkeys(future.columns.difference([SERIES_ID, TIME]), 0.0))
    else:
        future = future_rows(recent, data.freq, horizon)
    extended = pd.concat([recent, future]).sort_values([SERIES_ID, TIME], kind="stable").reset_index(drop=True)
    scaler = Scaler(**spec.scaler)
    series_ids = [str(s) for s in lengths.index]
    unseen = [s for s in series_ids if s not in scaler.center]
    if unseen:
        raise DataError(f"{source}: series {quoted_id(unseen[0])} was not in the model's training data, so the "
                        f"model has no scaling for it; forecast only the {len(scaler.center)} series it was trained "
                        f"on, or train a model on data that includes it")
    names = {TARGET: data.target_column} | {c: c for c in [*data.covariates, *data.future_covariates]}
    check_inputs(recent, scaler.reference(), scaler.columns, names, source)
    if data.future_covariates:  # the future rows' target and past covariates are never read
        check_inputs(future, scaler.reference(), list(data.future_covariates), names, source)
    inputs = build_inputs(extended, scaler, data.freq, data.calendar, len(data.covariates))
    dataset = last_windows(inputs, lengths.to_numpy(), lookback, horizon, padded,
                           embedding_rows(spec, series_ids, source))
    # (series, H) or (series, H, Q); sample paths (series, samples, H) as (series, H, samples)
    scaled = predict(network, dataset, 1024, samples, seed)
    scaled = scaled.transpose(0, 2, 1) if samples else scaled
    values = scaler.inverse_target(scaled, series_ids)
    reach = scaled if scaler.reference() is scaler else scaler.reference().target_units(values, series_ids)
    check_forecast(reach, series_ids, future[TIME].to_numpy(), data.target_column, source)
    times = future[TIME] if series.time_zone is None else future[TIME].dt.tz_convert(series.time_zone)
    if samples:  # one row per (series, sample, step): each path's steps together
        paths = values.transpose(0, 2, 1).reshape(-1)
        rows = np.arange(len(series_ids) * horizon).reshape(len(series_ids), 1, horizon).repeat(samples, axis=1)
        out = pd.DataFrame({TIME: times.to_numpy()[rows.reshape(-1)],
                            "sample": np.tile(np.arange(samples).repeat(horizon), len(series_ids)),
                            "forecast": paths})
        ids = id_columns_of(pd.Series(future[SERIES_ID].to_numpy()[rows.reshape(-1)]), data.id_column)
    else:
        columns = forecast_columns(network, values)
        out = pd.DataFrame({TIME: times.to_numpy()} | {k: v.reshape(-1) for k, v in columns.items()})
        ids = id_columns_of(pd.Series(future[SERIES_ID].to_numpy()), data.id_column)
    return pd.concat([ids, out], axis=1).rename(columns={TIME: data.time_column})


def check_time_zone(spec: ModelSpec, given: str | None, column: str, source: str) -> None:
    """A model trained on zoned times takes zoned times (any zone: converted), one trained on wall-clock times
    takes wall-clock times; anything else would shift every calendar feature without a word."""
    if spec.time_zone is not None and given is None:
        raise DataError(f"{source}: column {column!r} holds times without a zone, but the model was trained on "
                        f"times in {spec.time_zone}; give times with UTC offsets, or name the zone they are in with "
                        f"data.time_zone (an IANA name such as UTC or Australia/Melbourne)")
    if spec.time_zone is None and given is not None:
        raise DataError(f"{source}: column {column!r} holds times in {given}, but the model was trained on "
                        f"wall-clock times without a zone; give times without offsets, on the clock the training "
                        f"file used")


def forecast_columns(network: Forecaster, forecast: np.ndarray) -> dict[str, np.ndarray]:
    """(..., H) point forecasts or (..., H, Q) quantiles -> output columns: "forecast" (the median, or the
    level nearest it), then one per level, named "q10" for 0.1 and "q2.5" for 0.025."""
    if not network.quantiles:
        return {"forecast": forecast}
    return {"forecast": forecast[..., network.median]} | {
        f"q{100 * level:g}": forecast[..., i] for i, level in enumerate(network.quantiles)}


def reads_series_row(network: dict) -> bool:
    """Whether a network (its spec's arguments) looks its series up by training row: a series embedding, or
    static attributes."""
    return bool(network["series_embedding"] or network.get("static"))


def embedding_rows(spec: ModelSpec, series_ids: list[str], source: str) -> torch.Tensor:
    """(S,) row of each series in the model's series embedding and static attributes; all 0 for a model with
    neither."""
    if not reads_series_row(spec.network):
        return torch.zeros(len(series_ids), dtype=torch.long)
    row = {series_id: i for i, series_id in enumerate(spec.series_ids)}
    unknown = [s for s in series_ids if s not in row]
    if unknown:
        raise DataError(f"{source}: series {unknown[0]!r} was not in training, and this model looks each series "
                        f"up (a series embedding or static attributes); forecast it with a model trained without")
    return torch.tensor([row[s] for s in series_ids])


def future_rows(recent: pd.DataFrame, freq: str, horizon: int) -> pd.DataFrame:
    """`horizon` rows after each series' last timestamp; only their times (calendar features) are used."""
    last = recent.groupby(SERIES_ID, sort=False, observed=True)[TIME].last()
    offset = pd.tseries.frequencies.to_offset(freq)
    # One date range per distinct last timestamp (series usually end together), not one per series.
    ends, distinct = pd.factorize(last)
    ranges = [pd.date_range(t + offset, periods=horizon, freq=freq) for t in distinct]
    positions = (ends[:, None] * horizon + np.arange(horizon)).reshape(-1)
    future = pd.DataFrame({SERIES_ID: last.index.repeat(horizon),
                           TIME: ranges[0].append(ranges[1:])[positions]})
    for column in recent.columns.difference([SERIES_ID, TIME]):
        future[column] = 0.0
    return future[recent.columns]
