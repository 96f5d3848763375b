"""Where training data comes from: one file (CSV or Parquet), read into memory; or a folder of Parquet files, one
group of series per file, read one file at a time.

    python -m pipeline.train data.path=data/groups/ data.id_column=series

From a folder, each file is loaded, checked and windowed on its own (scaling is per series, fitted on its training
rows, so nothing needs the other files), and its rows are appended to arrays in files on disk. Training then reads
the windows it needs from those arrays through memory maps: the operating system pages them in and out, so the
number of series is bounded by disk, not by memory. Peak memory is about one file's frame plus the pages in use
(bench/many_files.py measures it). Times are kept as UTC wall-clock times (the backtest artifacts of such a run
show origins in UTC).
"""

import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config import DataConfig, SplitConfig, WindowConfig
from pipeline.data.defaults import resolve_windowing
from pipeline.data.load import load_series
from pipeline.data.scaling import Scaler
from pipeline.data.series import Series
from pipeline.data.vintages import load_vintages
from pipeline.data.windows import Split, Windows, first_real_rows, make_windows, train_windows
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)


Loaded = tuple[Series, Windows, WindowConfig, SplitConfig]


def load_windows(data: DataConfig, window: WindowConfig, split: SplitConfig, scratch: Path) -> Loaded:
    """The series, their windows, and the window and split settings they were made with (the unset ones derived
    from the data, pipeline/data/defaults.py): from one file, in memory; or from a folder of Parquet files, file by
    file, into arrays on disk under `scratch` (stack_folder)."""
    if Path(data.path).is_dir():
        if data.vintages:
            raise ConfigError(f"data.vintages reads with one data file, not a folder ({data.path}); drop it")
        return stack_folder(data, window, split, scratch)
    series = load_series(data)
    window, split = resolve_windowing(window, split, series)
    return series, make_windows(series, window.lookback, window.horizon, window.stride, split.val_steps,
                                split.test_steps, data.calendar, data.short_series, data.scaler.value,
                                load_vintages(data), data.transform.value), window, split


def stack_folder(data: DataConfig, window: WindowConfig, split: SplitConfig, scratch: Path) -> Loaded:
    """Every file's windows stacked into arrays on disk under `scratch`, removed before returning: the memory maps
    keep them open."""
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".windows-", dir=scratch))
    try:
        return stack_files(data, window, split, folder)
    finally:
        shutil.rmtree(folder)


def parquet_files(folder: Path) -> list[Path]:
    """The folder's Parquet files in name order (training stacks them, the forecast stage forecasts each)."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"{folder}: a folder without .parquet files; data.path takes a CSV or Parquet file, or a "
                        f"folder of Parquet files (one group of series each)")
    return files


def stack_files(data: DataConfig, window: WindowConfig, split: SplitConfig, folder: Path) -> Loaded:
    files = parquet_files(Path(data.path))
    arrays = {name: (folder / name).open("wb") for name in ("values", "target", "times", "observed")}
    first, splits, center, scale, seen, report = None, [], {}, {}, {}, {"files": len(files)}
    reference = ({}, {})  # data.scaler=none's standard scaling, for the range checks
    rows = width = read = 0
    filled = False
    for path in files:
        # Every file on the first file's grid: a file on another fails with load_series's message naming it.
        series = load_series(replace(data, path=str(path), freq=data.freq or (first and first.freq)))
        if first is None:  # the first file's data gives the unset lengths for every file
            window, split = resolve_windowing(window, split, series)
        part = make_windows(series, window.lookback, window.horizon, window.stride, split.val_steps,
                            split.test_steps, data.calendar, data.short_series, data.scaler.value,
                            transform=data.transform.value)
        for s in part.splits:
            if s.series_id in seen:
                raise DataError(f"{path}: series {s.series_id!r} is also in {seen[s.series_id]}; each series must "
                                f"live in one file of {data.path}")
            seen[s.series_id] = path
            splits.append(Split(s.series_id, s.first + rows, s.val_start + rows, s.test_start + rows, s.end + rows,
                                s.pad))
        center |= part.scaler.center
        scale |= part.scaler.scale
        if part.scaler.reference_center is not None:
            reference[0] |= part.scaler.reference_center
            reference[1] |= part.scaler.reference_scale
        for name, count in series.report.items():
            report[name] = report.get(name, 0) + count
        arrays["values"].write(part.values.numpy().tobytes())
        arrays["target"].write(np.ascontiguousarray(part.target, np.float64).tobytes())
        observed = part.observed if part.observed is not None else np.ones(len(part.target), bool)
        arrays["observed"].write(observed.tobytes())
        filled |= part.observed is not None
        # As UTC wall-clock times: a tz-aware column would be an array of Python objects.
        utc = pd.to_datetime(pd.Series(part.times), utc=True).dt.tz_localize(None)
        arrays["times"].write(utc.to_numpy("datetime64[ns]").tobytes())
        rows, width, read = rows + len(part.values), part.n_features, read + len(series.frame)
        if first is None:  # its frame is kept: the logged model's input example comes from it
            first, future_columns, columns = series, part.future_columns, part.scaler.columns
        del series, part  # before the next file is read
    for file in arrays.values():
        file.close()
    log.info("stacked %d files of %s: %d series, %d rows, on disk", len(files), data.path, len(splits), rows)
    # Copy-on-write maps: writable tensors for torch, while the files themselves never change.
    values = torch.from_numpy(np.memmap(folder / "values", np.float32, "c", shape=(rows, width)))
    target = np.memmap(folder / "target", np.float64, "c", shape=(rows,))
    times = np.memmap(folder / "times", "datetime64[ns]", "c", shape=(rows,))
    observed = np.memmap(folder / "observed", bool, "c", shape=(rows,)) if filled else None
    stacked = Series(frame=first.frame, freq=first.freq, seasons=first.seasons, covariates=first.covariates,
                     source=str(data.path), future_covariates=first.future_covariates, report=report, rows=read,
                     time_zone=first.time_zone)
    scaler = Scaler(columns, center, scale, data.transform.value, *(reference if reference[0] else (None, None)))
    return stacked, Windows(splits, scaler, values, target, times, future_columns,
                            window.lookback, window.horizon, first_real_rows(splits),
                            train_windows(splits, window.lookback, window.horizon, window.stride),
                            observed=observed), window, split
