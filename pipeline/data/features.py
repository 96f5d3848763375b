"""The input tensor of the recurrent network: scaled values and cyclic calendar features."""

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from pipeline.data.scaling import Scaler
from pipeline.data.series import TIME

# Each cycle: its name, the steps it is read for (shorter than its period), and a time's phase in [0, 1).
CYCLES = [("time_of_day", pd.Timedelta("1D"),
           lambda t: (t.hour * 3600 + t.minute * 60 + t.second) / 86400),
          ("day_of_week", pd.Timedelta("7D"), lambda t: t.dayofweek / 7),
          ("day_of_year", pd.Timedelta("365D"), lambda t: (t.dayofyear - 1) / 365.25)]


def calendar_cycles(freq: str) -> list[tuple]:
    """The cycles longer than the step: all three for sub-daily data, a week and a year for daily, ..."""
    anchor = pd.Timestamp("2000-01-01")
    step = (anchor + pd.tseries.frequencies.to_offset(freq)) - anchor
    return [cycle for cycle in CYCLES if step < cycle[1]]


def calendar_names(freq: str) -> list[str]:
    """The calendar feature columns in order: every cycle's sine, then every cycle's cosine."""
    names = [name for name, _, _ in calendar_cycles(freq)]
    return [f"sin_{name}" for name in names] + [f"cos_{name}" for name in names]


def calendar_features(times: pd.Series, freq: str) -> np.ndarray:
    """Cyclic (sin, cos) encodings of time of day, day of week and day of year, as fit the step (calendar_names:
    their order)."""
    times, cycles = pd.DatetimeIndex(times), calendar_cycles(freq)
    if not cycles:
        return np.zeros((len(times), 0))
    angle = 2 * np.pi * np.stack([np.asarray(phase(times), dtype=np.float64) for _, _, phase in cycles], axis=1)
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
