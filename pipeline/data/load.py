"""Read a CSV or Parquet series file into a validated long frame: series_id, time, target, covariates.

Every problem either stops the run with one line naming the source, column, series and row or time, or is
handled by an explicit `data.*` policy whose effect is counted in `Series.report`.
"""

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES  # the cells read_csv takes as missing by default

from pipeline.config import DataConfig
from pipeline.data.grid import check_duplicates, fill_missing, infer_freq, is_sorted, regular_grid
from pipeline.data.ids import series_keys
from pipeline.data.series import OBSERVED, SERIES_ID, TARGET, TIME, Series
from pipeline.data.times import parse_times, seasons_of
from pipeline.errors import DataError

log = logging.getLogger(__name__)


def read_table(path: Path, columns: list[str] | None = None, text_columns: list[str] = (), key: str = "data.path",
               optional: list[str] = ()) -> pd.DataFrame:
    """Read by extension: .parquet, or .csv (optionally .gz/.bz2/.zip/.xz/.zst compressed).

    With `columns`, only those (and those of `optional` the file has) are read when the file has them all (wide
    files cost what the model uses); otherwise every column, so that the missing one can be reported beside what
    the file holds. A CSV file's
    `text_columns` (the series ids) are read as the text they hold: "007" stays "007", and "NA" is an id. `key`
    names the config key that gave `path`, for the message when it is missing.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found; set {key} to a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes[-1:] == [".parquet"]:
            names = pq.read_schema(path).names
            wanted = wanted_columns(columns, optional, names)
            return _read_parquet(path, wanted)
        if ".csv" in suffixes[-2:]:
            names = list(pd.read_csv(path, nrows=0).columns)
            wanted = wanted_columns(columns, optional, names)
            text = [c for c in text_columns if c in names]
            missing = {c: list(STR_NA_VALUES) for c in wanted or names if c not in text}
            frame = pd.read_csv(path, usecols=wanted, dtype=dict.fromkeys(text, str), keep_default_na=False,
                                na_values=missing)
            if suffixes[-1:] == [".csv"]:  # a cut-off compressed file fails to decompress instead
                check_complete(path, len(names), len(frame))
            return frame
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except DataError:
        raise
    except (OSError, EOFError, ValueError, pa.ArrowException) as error:  # EOFError: a truncated .gz/.bz2/.xz
        raise DataError(f"{path}: cannot be read ({error}); check that it is a valid file") from error
    raise DataError(f"{path}: unknown extension {''.join(path.suffixes)!r}; use .csv, .csv.gz or .parquet")


def check_complete(path: Path, fields: int, rows: int) -> None:
    """A CSV file cut off mid-write (a copy still in progress, the cron case) is refused: pandas would read its
    last line, cut mid-number or mid-line, as a short row. Its last line does not end with a newline, or has fewer
    fields than the header."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - (1 << 16)))
        tail = f.read()
    if not tail or rows == 0:
        return
    last = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    found = len(next(csv.reader([last]), []))
    if not tail.endswith(b"\n") or found < fields:
        why = "does not end with a newline" if not tail.endswith(b"\n") else f"has {found} fields, the header {fields}"
        raise DataError(f"{path}: its last line (line {rows + 1}, {last[:40]!r}) {why}: the file seems cut off, "
                        f"perhaps still being copied; wait for the whole file, or complete its last line")


def _read_parquet(path: Path, columns: list[str] | None) -> pd.DataFrame:
    """Parquet into pandas without holding the data twice: the file is memory-mapped rather than read into
    buffers, arrow buffers are handed over column by column (self_destruct), and decoding uses the C allocator,
    which returns scratch memory to the OS where pyarrow's default mimalloc pool kept it resident. For 10^7
    points (bench/windows.py), the C allocator took the pipeline's peak from 4.7x to 3.5x the raw data, and the
    memory map to 2.6x."""
    default = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        return pq.read_table(path, columns=columns, memory_map=True).to_pandas(self_destruct=True, split_blocks=True)
    finally:
        pa.set_memory_pool(default)


def wanted_columns(columns: list[str] | None, optional: list[str], names: list[str]) -> list[str] | None:
    if not columns or not set(columns) <= set(names):
        return None
    return [*columns, *(c for c in optional if c in names and c not in columns)]


def load_series(cfg: DataConfig, future_steps: int = 0) -> Series:
    """Load `cfg.path` and check it (see validate_frame; `future_steps` for a forecast input)."""
    path = Path(cfg.path)
    series = validate_frame(read_table(path, data_columns(cfg), cfg.id_column), cfg,
                            source=str(path), future_steps=future_steps)
    log.info("loaded %s: %d rows, %d series, freq %s, seasons %s; %s", path, len(series.frame),
             len(series.series_ids), series.freq, series.seasons, series.report or "no fixes needed")
    return series


def validate_frame(raw: pd.DataFrame, cfg: DataConfig, source: str, future_steps: int = 0) -> Series:
    """Turn a user's table into the long frame; every error names `source` (a file or "input frame").

    A forecast input (`future_steps`: the model's horizon) may end each series with its future rows: the steps
    after its last observed target, the target empty and every known-future covariate given. They come back as
    `Series.future`, checked (see split_future), and never reach the data.missing policies."""
    if raw.empty:
        raise DataError(f"{source}: the file has no rows; point data.path at a file with data")
    # Row numbers in messages and in sorting are positions in the file, whatever index the frame had.
    raw = raw.reset_index(drop=True)
    id_columns = cfg.id_column
    missing = [c for c in data_columns(cfg) if c not in raw.columns]
    if missing:
        hint = _separator_hint(raw.columns) or "set data.* to the file's column names"
        raise DataError(f"{source}: column {missing[0]!r} not found (columns: {list(raw.columns)}); {hint}")
    report: dict[str, int] = {}
    times, time_zone = parse_times(raw[cfg.time_column], cfg.time_format, cfg.time_zone, source, cfg.time_column)
    frame = pd.DataFrame({SERIES_ID: series_keys(raw, id_columns, cfg.target_column, source), TIME: times},
                         copy=False)
    inputs = [*cfg.covariates, *cfg.future_covariates]
    for name, column in [(TARGET, cfg.target_column), *[(c, c) for c in inputs]]:
        frame[name] = numeric_column(raw[column], source, column)
    if not is_sorted(frame):
        order = frame.sort_values([SERIES_ID, TIME], kind="stable").index
        report["rows_out_of_order"] = int((order != frame.index).sum())
        frame = frame.loc[order].reset_index(drop=True)
    check_duplicates(frame, source)
    freq = cfg.freq or infer_freq(frame, source)
    frame = regular_grid(frame, freq, cfg.gaps, source, report)
    frame, future = split_future(frame, future_steps, cfg, freq, source) if future_steps else (frame, None)
    if frame[TARGET].isna().any():
        frame[OBSERVED] = frame[TARGET].notna()
    frame = fill_missing(frame, cfg.missing, source, report,
                          names={TARGET: cfg.target_column} | {c: c for c in inputs})
    extremes = frame.groupby(SERIES_ID, observed=True)[TARGET].agg(["min", "max"])
    constant = int((extremes["min"] == extremes["max"]).sum())
    if constant:
        report["constant_series"] = constant
    return Series(frame=frame, freq=freq, seasons=cfg.season or seasons_of(freq),
                  covariates=list(cfg.covariates), source=source, report=report,
                  future_covariates=list(cfg.future_covariates), time_zone=time_zone, future=future)


def split_future(frame: pd.DataFrame, steps: int, cfg: DataConfig, freq: str, source: str
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A forecast input's history and future rows. Every series has either no future rows or exactly `steps` of
    them (exactly `steps` when the model reads known-future covariates), each with every known-future value;
    otherwise one line naming the series, the first time at fault and the column."""
    codes = frame[SERIES_ID].cat.codes.to_numpy()
    observed = frame[TARGET].notna().to_numpy()
    positions = np.arange(len(frame))
    # Each row's series' last observed row (-1: none), by a running maximum within the sorted series.
    last_seen = pd.Series(np.where(observed, positions, -1)).groupby(codes).transform("max").to_numpy()
    future = positions > last_seen
    counts = pd.Series(future).groupby(codes).agg(["sum", "size"])
    allowed = counts["sum"] == steps if cfg.future_covariates else counts["sum"].isin([0, steps])
    # Only a series at fault is looked at row by row (10^4 series end together in a daily job).
    for code in counts.index[~allowed | (counts["sum"] == counts["size"])][:1]:
        rows = np.flatnonzero(codes == code)
        series_id, times, count = frame[SERIES_ID].iloc[rows[0]], frame[TIME].iloc[rows], int(counts["sum"][code])
        offset = pd.tseries.frequencies.to_offset(freq)
        if count == len(rows):
            raise DataError(f"{source}: series {series_id!r} has no observed {cfg.target_column!r}; give its history "
                            f"before its future rows")
        last = times.iloc[len(rows) - count - 1]
        if count < steps:
            fault = f"the rows from {last + (count + 1) * offset} on are missing"
        else:
            fault = f"the rows from {times.iloc[len(rows) - count + steps]} on are too many"
        columns = f", each with {', '.join(repr(c) for c in cfg.future_covariates)}" if cfg.future_covariates else ""
        raise DataError(f"{source}: series {series_id!r} has {count} future rows after its last observed "
                        f"{cfg.target_column!r} at {last}, and {fault}; give exactly the {steps} steps the model "
                        f"forecasts{columns} (future_frame makes them)")
    if not future.any():
        return frame, None
    ahead = frame[future].reset_index(drop=True)
    for column in cfg.future_covariates:
        absent = ahead[column].isna().to_numpy()
        if absent.any():
            row = ahead.iloc[int(np.flatnonzero(absent)[0])]
            raise DataError(f"{source}: series {row[SERIES_ID]!r} has no {column!r} at {row[TIME]}, one of its future "
                            f"rows; give every known-future value of the {steps} steps ahead")
    return frame[~future].reset_index(drop=True), ahead


def _separator_hint(columns: pd.Index) -> str | None:
    """What to do about a CSV file read as one column because another character separates its fields."""
    if len(columns) != 1:
        return None
    found = [name for char, name in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")) if char in str(columns[0])]
    return (f"the file seems separated by {found[0]} (perhaps with ',' decimals): save it comma-separated with "
            f"'.' decimals" if found else None)


def data_columns(cfg: DataConfig) -> list[str]:
    """The file's columns the configuration uses: time, target, covariates, id column(s)."""
    return [cfg.time_column, cfg.target_column, *cfg.covariates, *cfg.future_covariates,
            *cfg.id_column]


def numeric_column(column: pd.Series, source: str, name: str) -> pd.Series:
    """Floats, with NaN where a value is missing (left to data.missing); text or infinity stops the run."""
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = np.isinf(values.to_numpy())
    # Only cells that became NaN without being empty can be text; look at those alone (files are long).
    suspects = np.flatnonzero(values.isna().to_numpy() & column.notna().to_numpy())
    if len(suspects):
        text = column.iloc[suspects].astype("string").str.strip()
        bad[suspects[text.ne("").to_numpy(dtype=bool, na_value=False)]] = True
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: value {str(column.iloc[row])!r} is not a finite number; "
                        f"clean the file (missing values may be left empty)")
    return values


