"""Chronological split, per-series scaler fitted on training rows only, zero-copy windows, batches.

All series live in one contiguous (N, F) tensor; windows are arithmetic over it (WindowRanges), and a batch
of windows is gathered in one indexing step, so memory stays proportional to the number of points.
Columns of that tensor (pipeline/data/features.py): 0 the scaled target, then scaled past covariates, then scaled
known-future covariates, then calendar features; the last two groups are also read over the horizon.
"""

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pipeline.config import ShortSeries
from pipeline.data.features import Inputs, build_inputs
from pipeline.data.scaling import Scaler, fit_scaler
from pipeline.data.series import SERIES_ID, TARGET, TIME, Series, observed_targets
from pipeline.data.vintages import Vintages, values_as_of
from pipeline.errors import DataError

log = logging.getLogger(__name__)


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
    for series_id, length in frame.groupby(SERIES_ID, sort=False, observed=True).size().items():
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


@dataclass
class WindowRanges:
    """Windows as arithmetic, never as arrays: series s has count[s] windows, the first starting at row
    first[s] and each next one `step` rows later. Memory is O(series), whatever the number of windows."""

    first: torch.Tensor   # (S,) start row of each series' first window
    count: torch.Tensor   # (S,) windows per series (may be 0)
    step: int

    def __post_init__(self) -> None:
        self.ends = torch.cumsum(self.count, 0)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def locate(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) window numbers -> (B,) start rows and (B,) series numbers."""
        series = torch.searchsorted(self.ends, index, right=True)
        within = index - (self.ends[series] - self.count[series])
        return self.first[series] + within * self.step, series

    @property
    def starts(self) -> torch.Tensor:
        """Every start row, materialised: for tests and small sets only."""
        return self.locate(torch.arange(len(self)))[0]


def ranges(lo: list[int], hi: list[int], step: int) -> WindowRanges:
    """Per series, windows starting at rows lo[s], lo[s] + step, ... up to and including hi[s]."""
    first, last = torch.tensor(lo), torch.tensor(hi)
    return WindowRanges(first=first, count=((last - first) // step + 1).clamp(min=0), step=step)


def train_windows(splits: list[Split], lookback: int, horizon: int, stride: int) -> WindowRanges:
    """Training windows: inputs and targets both end before validation begins."""
    return ranges([s.first - s.pad for s in splits],
                  [s.val_start - lookback - horizon for s in splits], stride)


def block_windows(splits: list[Split], lookback: int, horizon: int, block: str, step: int) -> WindowRanges:
    """Origins `step` apart whose whole horizon lies in the "val" or "test" block; inputs may reach back into
    earlier blocks, which are known history by then."""
    bounds = [(s.val_start, s.test_start) if block == "val" else (s.test_start, s.end) for s in splits]
    return ranges([start - lookback for start, _ in bounds], [end - horizon - lookback for _, end in bounds], step)


def series_starts(sizes: pd.Series) -> np.ndarray:
    """First row of each series in a frame stacked in `sizes` order."""
    return np.concatenate([[0], np.cumsum(sizes.to_numpy())[:-1]])


def rolling_origins(sizes: pd.Series, lookback: int, horizon: int, origins: int, step: int,
                    source: str) -> WindowRanges:
    """Per series (rows stacked in `sizes` order): up to `origins` origins `step` apart, the last one's horizon
    ending at the series' last row; each window's inputs are the `lookback` rows before its origin."""
    lengths, starts = sizes.to_numpy(), series_starts(sizes)
    fits = (lengths - lookback - horizon) // step + 1
    short = np.flatnonzero(fits < 1)
    if short.size:
        i = short[0]
        raise DataError(f"{source}: series {sizes.index[i]!r} has {lengths[i]} rows; a backtest origin needs the "
                        f"model's lookback + horizon ({lookback + horizon}) rows")
    count = np.minimum(origins, fits)
    last = starts + lengths - horizon - lookback
    return WindowRanges(first=torch.from_numpy(last - (count - 1) * step), count=torch.from_numpy(count),
                        step=step)


def last_windows(inputs: Inputs, lengths: np.ndarray, lookback: int, horizon: int, padded: bool,
                 embedding_rows: torch.Tensor) -> "WindowDataset":
    """One window per series, to forecast from: `values` holds, series after series, each one's last lengths[s]
    (at most `lookback`) rows and then its `horizon` future rows; each is left-padded with zero rows to a block of
    lookback + horizon rows (its window's inputs then count only its real rows when `padded`)."""
    n, block = len(lengths), lookback + horizon
    first_real = torch.arange(n) * block + lookback - torch.tensor(lengths, dtype=torch.long)
    rows = np.concatenate([np.arange(f, f + k + horizon) for f, k in zip(first_real.tolist(), lengths)])
    values = torch.from_numpy(scatter_rows(inputs.values.numpy(), rows, n * block, 0.0))
    one_each = WindowRanges(first=torch.arange(n) * block, count=torch.ones(n, dtype=torch.long), step=1)
    return WindowDataset(values, one_each, lookback, horizon, inputs.future_columns, first_real if padded else None,
                         embedding_rows)


class Batch(NamedTuple):
    x: torch.Tensor                 # (B, L, F) inputs over the lookback
    future: torch.Tensor            # (B, H, K) known-future features of the horizon steps
    y: torch.Tensor                 # (B, H) scaled target of the horizon steps
    series: torch.Tensor            # (B,) series number, for the series embedding
    lengths: torch.Tensor | None    # (B,) real (unpadded) input steps; None when nothing is padded
    observed: torch.Tensor | None = None  # (B, H) whether each target was observed; None when all were


class WindowDataset(Dataset):
    """Windows over one tensor; indexing with a tensor, list or slice of window numbers gathers a batch."""

    def __init__(self, values: torch.Tensor, windows: WindowRanges, lookback: int, horizon: int,
                 future_columns: list[int], first_real: torch.Tensor | None = None,
                 embedding_rows: torch.Tensor | None = None, known_ahead: torch.Tensor | None = None,
                 observed: torch.Tensor | None = None):
        self.values, self.windows = values, windows
        # (N,) whether each row's target was observed (not filled): the loss skips the others. None: all were.
        self.observed = observed
        # Forecasting maps its series to the embedding rows learned in training; training is the identity.
        self.embedding_rows = embedding_rows
        self.lookback = lookback
        self.steps = torch.arange(lookback + horizon)
        self.future_columns = torch.tensor(future_columns, dtype=torch.long)
        # With padded series: the first real row of each series, to count a window's real inputs.
        self.first_real = first_real
        # (n, H, K) per window: the known-future covariates as issued by its origin (pipeline/data/vintages.py).
        self.known_ahead = known_ahead

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def starts(self) -> torch.Tensor:
        return self.windows.starts

    def __getitem__(self, index: torch.Tensor | list[int] | slice) -> Batch:
        if isinstance(index, slice):
            index = torch.arange(*index.indices(len(self)))
        starts, series = self.windows.locate(torch.as_tensor(index, dtype=torch.long))
        # (B,) start rows -> (B, L + H) row numbers -> (B, L + H, F)
        window = self.values[starts.unsqueeze(1) + self.steps]
        lengths = None
        if self.first_real is not None:
            lengths = (starts + self.lookback - self.first_real[series]).clamp(max=self.lookback)
        future = window[:, self.lookback:].index_select(2, self.future_columns)
        if self.known_ahead is not None:
            # The known-future covariates (the first K future columns) as issued by each window's origin.
            future = torch.cat([self.known_ahead[index], future[..., self.known_ahead.shape[2]:]], dim=2)
        return Batch(x=window[:, : self.lookback],
                     future=future,
                     y=window[:, self.lookback:, 0],
                     series=series if self.embedding_rows is None else self.embedding_rows[series],
                     lengths=lengths,
                     observed=None if self.observed is None else self.observed[starts.unsqueeze(1) + self.steps[
                         self.lookback:]])


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
    first_real: torch.Tensor | None  # (S,) first real row of each series, when any series is padded
    train_windows: WindowRanges
    vintages: Vintages | None = None  # known-future values as issued (data.vintages)
    # (N,) whether each row's target was observed, False on filled and padding rows; None when all were.
    observed: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    def batches_of(self, windows: WindowRanges) -> WindowDataset:
        known_ahead = None
        if self.vintages is not None:
            starts, series = windows.locate(torch.arange(len(windows)))
            known_ahead = values_as_of(self.vintages, starts, series, self.lookback, self.horizon, self.times,
                                       [s.series_id for s in self.splits], self.scaler)
        return WindowDataset(self.values, windows, self.lookback, self.horizon, self.future_columns,
                             self.first_real, known_ahead=known_ahead,
                             observed=None if self.observed is None else torch.from_numpy(self.observed))

    @property
    def train(self) -> WindowDataset:
        return self.batches_of(self.train_windows)

    @property
    def val(self) -> WindowDataset:
        """Every origin of the validation block: the validation loss."""
        return self.batches_of(block_windows(self.splits, self.lookback, self.horizon, "val", 1))

    @property
    def test(self) -> WindowDataset:
        """Rolling origins every `horizon` steps through the test block."""
        return self.batches_of(block_windows(self.splits, self.lookback, self.horizon, "test", self.horizon))

    @property
    def val_origins(self) -> WindowDataset:
        """The test protocol applied to the validation block: what model choices are made on."""
        return self.batches_of(block_windows(self.splits, self.lookback, self.horizon, "val", self.horizon))


def make_windows(series: Series, lookback: int, horizon: int, stride: int, val_steps: int, test_steps: int,
                 calendar: bool, short_series: ShortSeries = ShortSeries.error,
                 scaler: str = "standard", vintages: Vintages | None = None, transform: str = "none") -> Windows:
    """Split every series by time, scale it with training statistics, and index its windows."""
    splits = plan_splits(series.frame, lookback, horizon, val_steps, test_steps, short_series, series.source)
    kept = series.frame
    if len(splits) < series.frame[SERIES_ID].nunique():
        kept = kept[kept[SERIES_ID].isin({s.series_id for s in splits})]
    fitted = fit_scaler(kept, [TARGET, *series.covariates, *series.future_covariates], splits, scaler, transform)
    values, future_columns = build_inputs(kept, fitted, series.freq, calendar, len(series.covariates))
    target, times, observed = kept[TARGET].to_numpy(), kept[TIME].to_numpy(), observed_targets(kept)
    first_real = None
    if any(s.pad for s in splits):
        # Padding rows sit before each padded series: zero inputs, NaN targets, NaT times.
        positions = np.concatenate([np.arange(s.first, s.end) for s in splits])
        values = torch.from_numpy(scatter_rows(values.numpy(), positions, splits[-1].end, 0.0))
        target = scatter_rows(target, positions, splits[-1].end, np.nan)
        times = scatter_rows(times, positions, splits[-1].end, np.datetime64("NaT"))
        if observed is not None:
            observed = scatter_rows(observed, positions, splits[-1].end, False)
        first_real = first_real_rows(splits)
    if observed is not None and val_steps and not any(observed[s.val_start:s.test_start].any() for s in splits):
        # Nothing could pick the checkpoint: every validation target was filled.
        raise DataError(f"{series.source}: no series has an observed target in its validation block (its last "
                        f"{val_steps + test_steps} to {test_steps + 1} steps; all filled by data.gaps/data.missing); "
                        f"change split.val_steps or split.test_steps, or give the missing values")
    return Windows(splits, fitted, values, target, times, future_columns, lookback, horizon, first_real,
                   train_windows(splits, lookback, horizon, stride), vintages, observed)


def first_real_rows(splits: list[Split]) -> torch.Tensor | None:
    """Each series' first real row, when any series is left-padded (short_series=pad); None otherwise."""
    return torch.tensor([s.first for s in splits]) if any(s.pad for s in splits) else None


def scatter_rows(dense: np.ndarray, positions: np.ndarray, rows: int, fill) -> np.ndarray:
    """`dense` placed at row `positions` of a `rows`-long array; the other rows (padding) hold `fill`."""
    out = np.full((rows, *dense.shape[1:]), fill, dtype=dense.dtype)
    out[positions] = dense
    return out
