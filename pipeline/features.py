"""The input tensor of the recurrent network: scaled values and cyclic calendar features."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from pipeline.load import TIME
from pipeline.scaling import Scaler


def calendar_features(times: pd.Series, freq: str) -> np.ndarray:
    """Cyclic (sin, cos) encodings of time of day, day of week and day of year, as fit the step."""
    anchor = pd.Timestamp("2000-01-01")
    step = (anchor + pd.tseries.frequencies.to_offset(freq)) - anchor
    times = pd.DatetimeIndex(times)
    phases = []
    if step < pd.Timedelta("1D"):
        phases.append((times.hour * 3600 + times.minute * 60 + times.second) / 86400)
    if step < pd.Timedelta("7D"):
        phases.append(times.dayofweek / 7)
    if step < pd.Timedelta("365D"):
        phases.append((times.dayofyear - 1) / 365.25)
    if not phases:
        return np.zeros((len(times), 0))
    angle = 2 * np.pi * np.stack([np.asarray(p, dtype=np.float64) for p in phases], axis=1)
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)


class Inputs(NamedTuple):
    values: torch.Tensor        # (N, F): scaled target, past covariates, known-future covariates, calendar
    future_columns: list[int]   # the columns also known over the horizon: known-future covariates, calendar


def build_inputs(frame: pd.DataFrame, scaler: Scaler, freq: str, calendar: bool, n_past_covariates: int,
                 chunk_rows: int = 1 << 20) -> Inputs:
    """The (N, F) float32 input tensor of a sorted long frame, and which of its columns are known ahead.

    Built a chunk of rows at a time, so float64 temporaries stay bounded however long the file.
    """
    n_calendar = calendar_features(frame[TIME].iloc[:1], freq).shape[1] if calendar else 0
    values = torch.empty(len(frame), len(scaler.columns) + n_calendar)
    for first in range(0, len(frame), chunk_rows):
        rows = frame.iloc[first:first + chunk_rows]
        values[first:first + len(rows), :len(scaler.columns)] = torch.from_numpy(scaler.transform(rows))
        if calendar:
            values[first:first + len(rows), len(scaler.columns):] = torch.from_numpy(
                calendar_features(rows[TIME], freq))
    return Inputs(values, list(range(1 + n_past_covariates, values.shape[1])))
