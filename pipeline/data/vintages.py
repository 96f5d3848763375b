"""Known-future values as they were known: a weather forecast issued at 06:00 for the next 48 hours is what a
window whose origin is after 06:00 may read over its horizon, not the weather that happened. Off unless
data.vintages names a file.

That file (CSV or Parquet) holds one row per value issued: the main file's id column(s) and time column (the
time the value is for), the issue time in data.future_covariates_known_at, and the known-future columns. For
each window, each horizon step reads the latest value issued at or before the window's origin (the time of its
first forecast step); the main file's own values, realised, are read over the lookback only. A step with no
value issued by then stops the run in one line."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config import DataConfig
from pipeline.data.ids import series_keys
from pipeline.data.load import numeric_column, read_table
from pipeline.data.scaling import Scaler
from pipeline.data.series import SERIES_ID, TIME
from pipeline.data.times import parse_times
from pipeline.errors import ConfigError, DataError

KNOWN_AT = "known_at"


@dataclass
class Vintages:
    """Every issued value, by series key, target time (UTC, or wall-clock) and issue time."""

    frame: pd.DataFrame   # series_id (str), time, known_at, then one column per known-future covariate
    columns: list[str]
    source: str


def load_vintages(data: DataConfig) -> Vintages | None:
    """data.vintages read and checked like the main file; None when not set."""
    if data.vintages is None:
        return None
    if not data.future_covariates_known_at or not data.future_covariates:
        raise ConfigError("data.vintages needs data.future_covariates_known_at (its issue-time column) and "
                          "data.future_covariates (the columns it issues)")
    path, ids = Path(data.vintages), data.id_column
    wanted = [data.time_column, data.future_covariates_known_at, *data.future_covariates, *ids]
    raw = read_table(path, wanted, ids, key="data.vintages")
    absent = [c for c in wanted if c not in raw.columns]
    if raw.empty or absent:
        raise DataError(f"{path}: column {(absent or wanted)[0]!r} not found or no rows (columns: "
                        f"{list(raw.columns)}); data.vintages needs {wanted}")
    times, _ = parse_times(raw[data.time_column], data.time_format, data.time_zone, str(path), data.time_column)
    issued, _ = parse_times(raw[data.future_covariates_known_at], data.time_format, data.time_zone, str(path),
                            data.future_covariates_known_at)
    frame = pd.DataFrame({SERIES_ID: np.asarray(series_keys(raw, ids, data.target_column, str(path)), dtype=object),
                          TIME: _naive(times), KNOWN_AT: _naive(issued)})
    for column in data.future_covariates:
        frame[column] = numeric_column(raw[column], str(path), column)
        if frame[column].isna().any():
            row = int(np.flatnonzero(frame[column].isna().to_numpy())[0])
            raise DataError(f"{path}: column {column!r} row {row} is empty; every issued value must be given")
    return Vintages(frame.sort_values(KNOWN_AT, kind="stable"), list(data.future_covariates), str(path))


def _naive(times) -> np.ndarray:
    """Times of either side of the lookup (zoned or wall-clock; a window array may hold Timestamps) as plain
    datetime64: zoned ones in UTC."""
    times = pd.Series(pd.to_datetime(times))
    return (times.dt.tz_convert("UTC").dt.tz_localize(None) if times.dt.tz is not None else times).to_numpy()


def values_as_of(vintages: Vintages, starts: torch.Tensor, series: torch.Tensor, lookback: int, horizon: int,
                 times: np.ndarray, series_ids: list[str], scaler: Scaler) -> torch.Tensor:
    """(n, H, K) scaled known-future values over the horizon of n windows (start rows, series numbers), each the
    latest issued at or before its window's origin."""
    origins = (starts + lookback).numpy()
    targets = origins[:, None] + np.arange(horizon)
    keys = np.asarray(series_ids, dtype=object)[series.numpy()]
    queries = pd.DataFrame({SERIES_ID: np.repeat(keys, horizon), TIME: _naive(times[targets].ravel()),
                            "origin": np.repeat(_naive(times[origins]), horizon), "slot": np.arange(targets.size)})
    found = pd.merge_asof(queries.sort_values("origin", kind="stable"), vintages.frame, left_on="origin",
                          right_on=KNOWN_AT, by=[SERIES_ID, TIME], direction="backward").sort_values("slot")
    missing = found[vintages.columns[0]].isna().to_numpy()
    if missing.any():
        row = found.iloc[int(np.flatnonzero(missing)[0])]
        raise DataError(f"{vintages.source}: series {row[SERIES_ID]!r} has no value issued by {row['origin']} for "
                        f"{row[TIME]}, a step that origin forecasts; issue one, or start the blocks later")
    # Scaled like the main file's columns: (value - center) / scale of the row's series.
    index = [scaler.columns.index(c) for c in vintages.columns]
    center = np.array([[scaler.center[k][i] for i in index] for k in keys]).repeat(horizon, axis=0)
    scale = np.array([[scaler.scale[k][i] for i in index] for k in keys]).repeat(horizon, axis=0)
    values = (found[vintages.columns].to_numpy(np.float64) - center) / scale
    return torch.from_numpy(values.reshape(len(origins), horizon, len(vintages.columns)).astype(np.float32))
