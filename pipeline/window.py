"""Chronological split, per-series scaler fitted on training rows only, zero-copy windows, batches.

All series live in one contiguous (N, F) tensor; a window is only its start row. A batch of windows is
gathered in one indexing step, so memory stays proportional to the number of points, not of windows.
Columns of that tensor: 0 the scaled target, then scaled past covariates, then calendar features.
"""

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from pipeline.config import ShortSeries
from pipeline.load import SERIES_ID, TARGET, TIME, DataError, Series

log = logging.getLogger(__name__)

SCALERS = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}


@dataclass
class Scaler:
    """Per-series affine scaling (x - center) / scale of the target and covariates, as plain numbers."""

    columns: list[str]
    center: dict[str, list[float]]
    scale: dict[str, list[float]]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        unknown = set(frame[SERIES_ID].unique()) - self.center.keys()
        if unknown:
            raise DataError(f"series {sorted(unknown)[0]!r} was not seen in training; the scaler has no "
                            f"statistics for it")
        center = np.stack(frame[SERIES_ID].map(self.center).to_list())
        scale = np.stack(frame[SERIES_ID].map(self.scale).to_list())
        return (frame[self.columns].to_numpy(np.float64) - center) / scale

    def inverse_target(self, values: np.ndarray, series_ids: list[str]) -> np.ndarray:
        """(B, H) scaled target of the given series -> original units."""
        center = np.array([self.center[s][0] for s in series_ids])[:, None]
        scale = np.array([self.scale[s][0] for s in series_ids])[:, None]
        return values * scale + center


def fit_scaler(frame: pd.DataFrame, columns: list[str], splits: list["Split"], kind: str) -> Scaler:
    """One scikit-learn scaler per series, fitted on that series' training rows only.

    `frame` holds exactly the series of `splits`, in their order, without padding rows.
    """
    center, scale = {}, {}
    ones = np.ones((1, len(columns)))
    values = frame[columns].to_numpy(np.float64)
    starts = np.cumsum([0] + [split.length for split in splits])
    for split, row in zip(splits, starts):
        if kind == "none":
            center[split.series_id], scale[split.series_id] = [0.0] * len(columns), [1.0] * len(columns)
            continue
        # scikit-learn gives a constant series scale 1, so nothing divides by zero.
        fitted = SCALERS[kind]().fit(values[row:row + split.train_length])
        # Every scaler here is affine per column: read its intercept and slope back as center and scale.
        intercept = fitted.transform(0 * ones)[0]
        slope = fitted.transform(ones)[0] - intercept
        center[split.series_id] = (-intercept / slope).tolist()
        scale[split.series_id] = (1 / slope).tolist()
    return Scaler(columns=columns, center=center, scale=scale)


@dataclass
class Split:
    """Rows of one series in the stacked frame: [first, val_start) trains, [val_start, test_start) validates,
    [test_start, end) tests. With short_series=pad, `pad` zero rows before `first` hold its left padding."""

    series_id: str
    first: int
    val_start: int
    test_start: int
    end: int
    pad: int = 0

    @property
    def length(self) -> int:
        return self.end - self.first

    @property
    def train_length(self) -> int:
        return self.val_start - self.first


def plan_splits(frame: pd.DataFrame, lookback: int, horizon: int, val_steps: int, test_steps: int,
                policy: ShortSeries, source: str) -> list[Split]:
    """The last test_steps of each series are test, the val_steps before them validation, the rest train.

    Row numbers count the padding rows that short series get under short_series=pad.
    """
    splits, row, dropped = [], 0, []
    for series_id, length in frame.groupby(SERIES_ID, sort=False).size().items():
        train = length - val_steps - test_steps
        pad = 0
        if train < lookback + horizon:
            if policy == ShortSeries.drop:
                dropped.append(str(series_id))
                continue
            if policy == ShortSeries.error or train < horizon + 1:
                raise DataError(f"{source}: series {series_id!r} has {length} steps: too short for lookback "
                                f"+ horizon ({lookback + horizon}) of training plus {val_steps + test_steps} "
                                f"held-out steps; set data.short_series=drop or pad, or shorten "
                                f"window.lookback or split.*_steps")
            pad = lookback - 1
        first = row + pad
        splits.append(Split(str(series_id), first, first + train, first + train + val_steps,
                            first + length, pad))
        row = first + length
    if dropped:
        log.warning("data.short_series=drop: dropped %d series too short to train on: %s", len(dropped),
                    ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""))
    if not splits:
        raise DataError(f"{source}: no series is long enough for lookback + horizon + the held-out blocks; "
                        f"shorten window.lookback or split.*_steps")
    return splits


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
    return torch.cat([torch.arange(s.first - s.pad, s.val_start - lookback - horizon + 1, stride)
                      for s in splits])


def val_starts(splits: list[Split], lookback: int, horizon: int) -> torch.Tensor:
    """Every origin whose whole horizon lies in the validation block; inputs may reach back into training."""
    return torch.cat([torch.arange(s.val_start, s.test_start - horizon + 1) - lookback for s in splits])


def rolling_origins(split: Split, horizon: int) -> list[int]:
    """Rolling origins every `horizon` steps through the test block."""
    return list(range(split.test_start, split.end - horizon + 1, horizon))


class Batch(NamedTuple):
    x: torch.Tensor                 # (B, L, F) inputs over the lookback
    future: torch.Tensor            # (B, H, K) known-future features of the horizon steps
    y: torch.Tensor                 # (B, H) scaled target of the horizon steps
    series: torch.Tensor            # (B,) series index, for the series embedding
    lengths: torch.Tensor | None    # (B,) real (unpadded) input steps; None when nothing is padded


class WindowBatches(Dataset):
    """Windows as start rows into one tensor; indexing with a list or slice of windows gathers a batch."""

    def __init__(self, values: torch.Tensor, starts: torch.Tensor, lookback: int, horizon: int,
                 future_columns: list[int], row_series: torch.Tensor, first_real: torch.Tensor | None = None):
        self.values, self.starts, self.row_series = values, starts, row_series
        self.lookback = lookback
        self.steps = torch.arange(lookback + horizon)
        self.future_columns = torch.tensor(future_columns, dtype=torch.long)
        # With padded series: the first real row of each row's series, to count a window's real inputs.
        self.first_real = first_real

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: list[int] | slice) -> Batch:
        starts = self.starts[index]
        # (B,) start rows -> (B, L + H) row numbers -> (B, L + H, F)
        window = self.values[starts.unsqueeze(1) + self.steps]
        origins = starts + self.lookback
        lengths = None
        if self.first_real is not None:
            lengths = (origins - self.first_real[origins]).clamp(max=self.lookback)
        return Batch(x=window[:, : self.lookback],
                     future=window[:, self.lookback:].index_select(2, self.future_columns),
                     y=window[:, self.lookback:, 0],
                     series=self.row_series[origins],
                     lengths=lengths)


def batches(dataset: WindowBatches, batch_size: int, shuffle: bool) -> DataLoader:
    """A DataLoader that hands the dataset whole batches of window indices (no per-window __getitem__)."""
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None)


@dataclass
class Windows:
    """Everything the training stage needs from the window stage; rows align with `values`."""

    splits: list[Split]
    scaler: Scaler
    values: torch.Tensor         # (N, F) inputs, padding rows zero
    target: np.ndarray           # (N,) target in original units, NaN on padding rows
    times: np.ndarray            # (N,) timestamps, NaT on padding rows
    future_columns: list[int]
    lookback: int
    horizon: int
    train: WindowBatches
    val: WindowBatches

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    def index(self, starts: torch.Tensor) -> WindowBatches:
        """Windows starting at `starts`, over the same tensor."""
        return WindowBatches(self.values, starts, self.lookback, self.horizon, self.future_columns,
                             self.train.row_series, self.train.first_real)


def make_windows(series: Series, lookback: int, horizon: int, stride: int, val_steps: int, test_steps: int,
                 calendar: bool, short_series: ShortSeries = ShortSeries.error,
                 scaler: str = "standard") -> Windows:
    """Split every series by time, scale it with training statistics, and index its windows."""
    splits = plan_splits(series.frame, lookback, horizon, val_steps, test_steps, short_series, series.source)
    kept = series.frame[series.frame[SERIES_ID].isin({s.series_id for s in splits})]
    fitted = fit_scaler(kept, [TARGET, *series.covariates], splits, scaler)
    # Rows of the kept frame in the stacked tensor: padding rows (if any) stay zero / NaN / NaT.
    positions = np.concatenate([np.arange(s.first, s.end) for s in splits])
    rows = splits[-1].end
    dense = build_values(kept, fitted, series.freq, calendar)
    values = dense.new_zeros(rows, dense.shape[1])
    values[torch.from_numpy(positions)] = dense
    target = np.full(rows, np.nan)
    target[positions] = kept[TARGET].to_numpy()
    times = np.full(rows, np.datetime64("NaT"), dtype=kept[TIME].to_numpy().dtype)
    times[positions] = kept[TIME].to_numpy()
    row_series = torch.zeros(rows, dtype=torch.int32)
    first_real = torch.zeros(rows, dtype=torch.long) if any(s.pad for s in splits) else None
    for number, s in enumerate(splits):
        row_series[s.first - s.pad:s.end] = number
        if first_real is not None:
            first_real[s.first - s.pad:s.end] = s.first
    future_columns = list(range(len(fitted.columns), values.shape[1]))

    def index(starts: torch.Tensor) -> WindowBatches:
        return WindowBatches(values, starts, lookback, horizon, future_columns, row_series, first_real)

    return Windows(splits, fitted, values, target, times, future_columns, lookback, horizon,
                   train=index(train_starts(splits, lookback, horizon, stride)),
                   val=index(val_starts(splits, lookback, horizon)))
