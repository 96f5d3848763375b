"""Chronological split, per-series scaler fitted on training rows only, zero-copy windows, batches.

All series live in one contiguous (N, F) tensor; a window is only its start row. A batch of windows is
gathered in one indexing step, so memory stays proportional to the number of points, not of windows.
Columns of that tensor: 0 the scaled target, then scaled past covariates, then calendar features.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from pipeline.load import SERIES_ID, TARGET, TIME, DataError, Series


@dataclass
class Scaler:
    """Per-series standard scaling of the target and covariates, stored as plain numbers."""

    columns: list[str]
    mean: dict[str, list[float]]
    scale: dict[str, list[float]]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        mean, scale = self._per_row(frame[SERIES_ID])
        return (frame[self.columns].to_numpy(np.float64) - mean) / scale

    def inverse_target(self, values: np.ndarray, series_ids: list[str]) -> np.ndarray:
        """(B, H) scaled target of the given series -> original units."""
        mean = np.array([self.mean[s][0] for s in series_ids])[:, None]
        scale = np.array([self.scale[s][0] for s in series_ids])[:, None]
        return values * scale + mean

    def _per_row(self, series_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        unknown = set(series_ids.unique()) - self.mean.keys()
        if unknown:
            raise DataError(f"series {sorted(unknown)[0]!r} was not seen in training; the scaler has no "
                            f"statistics for it")
        mean = np.stack(series_ids.map(self.mean).to_list())
        scale = np.stack(series_ids.map(self.scale).to_list())
        return mean, scale


@dataclass
class Split:
    """Row ranges of one series inside the stacked tensor: [start, val_start) trains, and so on."""

    series_id: str
    start: int
    val_start: int
    test_start: int
    end: int


def split_series(series: Series, lookback: int, horizon: int, val_steps: int, test_steps: int) -> list[Split]:
    """The last test_steps of each series are test, the val_steps before them validation, the rest train."""
    splits, start = [], 0
    for series_id, length in series.frame.groupby(SERIES_ID, sort=False).size().items():
        end = start + length
        test_start, val_start = end - test_steps, end - test_steps - val_steps
        if val_start - start < lookback + horizon:
            raise DataError(f"series {series_id!r} has {length} steps: too short for lookback + horizon "
                            f"({lookback + horizon}) of training plus {val_steps + test_steps} held-out steps; "
                            f"shorten window.lookback or split.*_steps")
        splits.append(Split(str(series_id), start, val_start, test_start, end))
        start = end
    return splits


def fit_scaler(series: Series, splits: list[Split]) -> Scaler:
    """One scikit-learn StandardScaler per series, fitted on that series' training rows only."""
    columns = [TARGET, *series.covariates]
    values = series.frame[columns].to_numpy(np.float64)
    mean, scale = {}, {}
    for split in splits:
        # A constant series gets scale 1 from scikit-learn, so nothing divides by zero.
        fitted = StandardScaler().fit(values[split.start:split.val_start])
        mean[split.series_id] = fitted.mean_.tolist()
        scale[split.series_id] = fitted.scale_.tolist()
    return Scaler(columns=columns, mean=mean, scale=scale)


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


def build_values(frame: pd.DataFrame, scaler: Scaler, freq: str, calendar: bool) -> torch.Tensor:
    """The (N, F) float32 input tensor of a sorted long frame: scaled target, covariates, calendar."""
    parts = [scaler.transform(frame)]
    if calendar:
        parts.append(calendar_features(frame[TIME], freq))
    return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))


def train_starts(splits: list[Split], lookback: int, horizon: int, stride: int) -> torch.Tensor:
    """Start rows of training windows: inputs and targets both end before validation begins."""
    return torch.cat([torch.arange(s.start, s.val_start - lookback - horizon + 1, stride) for s in splits])


def val_starts(splits: list[Split], lookback: int, horizon: int) -> torch.Tensor:
    """Every origin whose whole horizon lies in the validation block; inputs may reach back into training."""
    return torch.cat([torch.arange(s.val_start, s.test_start - horizon + 1) - lookback for s in splits])


def rolling_origins(split: Split, horizon: int) -> list[int]:
    """Rolling origins every `horizon` steps through the test block."""
    return list(range(split.test_start, split.end - horizon + 1, horizon))


class WindowBatches(Dataset):
    """Windows as start rows into one tensor; indexing with a list of windows gathers a whole batch."""

    def __init__(self, values: torch.Tensor, starts: torch.Tensor, lookback: int, horizon: int,
                 future_columns: list[int]):
        self.values, self.starts = values, starts
        self.lookback = lookback
        self.steps = torch.arange(lookback + horizon)
        self.future_columns = torch.tensor(future_columns, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # (B,) start rows -> (B, L + H) row numbers -> (B, L + H, F)
        window = self.values[self.starts[index].unsqueeze(1) + self.steps]
        x = window[:, : self.lookback]
        # (B, H, K): known-future features of the horizon steps; (B, H): their target
        future = window[:, self.lookback:].index_select(2, self.future_columns)
        y = window[:, self.lookback:, 0]
        return x, future, y


def batches(dataset: WindowBatches, batch_size: int, shuffle: bool) -> DataLoader:
    """A DataLoader that hands the dataset whole batches of window indices (no per-window __getitem__)."""
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


@dataclass
class Windows:
    """Everything the training stage needs from the window stage."""

    splits: list[Split]
    scaler: Scaler
    values: torch.Tensor
    future_columns: list[int]
    lookback: int
    horizon: int
    train: WindowBatches
    val: WindowBatches

    @property
    def n_features(self) -> int:
        return self.values.shape[1]


def make_windows(series: Series, lookback: int, horizon: int, stride: int, val_steps: int, test_steps: int,
                 calendar: bool) -> Windows:
    """Split every series by time, scale it with training statistics, and index its windows."""
    splits = split_series(series, lookback, horizon, val_steps, test_steps)
    scaler = fit_scaler(series, splits)
    values = build_values(series.frame, scaler, series.freq, calendar)
    future_columns = list(range(len(scaler.columns), values.shape[1]))

    def index(starts: torch.Tensor) -> WindowBatches:
        return WindowBatches(values, starts, lookback, horizon, future_columns)

    return Windows(splits, scaler, values, future_columns, lookback, horizon,
                   train=index(train_starts(splits, lookback, horizon, stride)),
                   val=index(val_starts(splits, lookback, horizon)))
