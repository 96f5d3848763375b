"""Read a CSV or Parquet series file into a validated long frame: series_id, time, target, covariates.

Every problem either stops the run with one line naming the source, column, series and row or time, or is
handled by an explicit `data.*` policy whose effect is counted in `Series.report`.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES  # the cells read_csv takes as missing by default

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.ids import SERIES_ID, id_column_list, series_keys
from pipeline.times import parse_times, season_list, seasons_of

log = logging.getLogger(__name__)

TIME, TARGET = "time", "target"
# Present when some target value was filled (data.gaps=fill, data.missing): whether each row's target is one the
# file gave. Filled targets may be read as inputs, but no loss or score counts them.
OBSERVED = "observed"


@dataclass
class Series:
    """Validated long frame, sorted by series and time, on one regular grid per series."""

    frame: pd.DataFrame
    freq: str
    seasons: list[int]  # seasonal periods in steps (data.season, or derived from freq)
    covariates: list[str]
    source: str
    future_covariates: list[str] = field(default_factory=list)
    # What the data.* policies did, by name: rows sorted, gaps filled, values filled, ...
    report: dict[str, int] = field(default_factory=dict)
    # Rows of every file, where `frame` holds only the first's (a folder of files: pipeline/parquet_folder.py).
    rows: int | None = None
    # The zone the file's times were given in ("UTC" for offsets, a zoned column's zone, or data.time_zone);
    # the frame then holds them in UTC. None: wall-clock times without a zone, kept as they are.
    time_zone: str | None = None
    # A forecast input's future rows (validate_frame's future_steps): each series' rows after its last observed
    # target, with the known-future values to forecast with; None when the input has none.
    future: pd.DataFrame | None = None

    @property
    def series_ids(self) -> list[str]:
        return list(self.frame[SERIES_ID].unique())

    @property
    def season(self) -> int:
        """The period MASE scales by: the shortest (M4's choice for data with several, e.g. 24 for hourly)."""
        return min(self.seasons)


def read_table(path: Path, columns: list[str] | None = None, text_columns: list[str] = ()) -> pd.DataFrame:
    """Read by extension: .parquet, or .csv (optionally .gz/.bz2/.zip/.xz/.zst compressed).

    With `columns`, only those are read when the file has them all (wide files cost what the model uses);
    otherwise every column, so that the missing one can be reported beside what the file holds. A CSV file's
    `text_columns` (the series ids) are read as the text they hold: "007" stays "007", and "NA" is an id.
    """
    if not path.exists():
        raise DataError(f"{path}: file not found; set data.path to a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes[-1:] == [".parquet"]:
            names = pq.read_schema(path).names
            wanted = columns if columns and set(columns) <= set(names) else None
            return _read_parquet(path, wanted)
        if ".csv" in suffixes[-2:]:
            names = list(pd.read_csv(path, nrows=0).columns)
            wanted = columns if columns and set(columns) <= set(names) else None
            text = [c for c in text_columns if c in names]
            missing = {c: list(STR_NA_VALUES) for c in wanted or names if c not in text}
            return pd.read_csv(path, usecols=wanted, dtype=dict.fromkeys(text, str), keep_default_na=False,
                               na_values=missing)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, EOFError, ValueError, pa.ArrowException) as error:  # EOFError: a truncated .gz/.bz2/.xz
        raise DataError(f"{path}: cannot be read ({error}); check that it is a valid file") from error
    raise DataError(f"{path}: unknown extension {''.join(path.suffixes)!r}; use .csv, .csv.gz or .parquet")


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


def load_series(cfg: DataConfig, future_steps: int = 0) -> Series:
    """Load `cfg.path` and check it (see validate_frame; `future_steps` for a forecast input)."""
    path = Path(cfg.path)
    series = validate_frame(read_table(path, data_columns(cfg), id_column_list(cfg.id_column)), cfg,
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
    id_columns = id_column_list(cfg.id_column)
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
    if not _is_sorted(frame):
        order = frame.sort_values([SERIES_ID, TIME], kind="stable").index
        report["rows_out_of_order"] = int((order != frame.index).sum())
        frame = frame.loc[order].reset_index(drop=True)
    _check_duplicates(frame, source)
    freq = cfg.freq or infer_freq(frame, source)
    frame = _regular_grid(frame, freq, cfg.gaps, source, report)
    frame, future = split_future(frame, future_steps, cfg, freq, source) if future_steps else (frame, None)
    if frame[TARGET].isna().any():
        frame[OBSERVED] = frame[TARGET].notna()
    frame = _fill_missing(frame, cfg.missing, source, report,
                          names={TARGET: cfg.target_column} | {c: c for c in inputs})
    extremes = frame.groupby(SERIES_ID, observed=True)[TARGET].agg(["min", "max"])
    constant = int((extremes["min"] == extremes["max"]).sum())
    if constant:
        report["constant_series"] = constant
    return Series(frame=frame, freq=freq, seasons=season_list(cfg.season) or seasons_of(freq),
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


def observed_targets(frame: pd.DataFrame) -> np.ndarray | None:
    """(rows,) whether each row's target was observed rather than filled; None when none was filled."""
    return frame[OBSERVED].to_numpy(bool, copy=True) if OBSERVED in frame else None


def data_columns(cfg: DataConfig) -> list[str]:
    """The file's columns the configuration uses: time, target, covariates, id column(s)."""
    return [cfg.time_column, cfg.target_column, *cfg.covariates, *cfg.future_covariates,
            *id_column_list(cfg.id_column)]


def infer_freq(frame: pd.DataFrame, source: str) -> str:
    """The frequency pandas infers for most series, else the most common step if every step is a multiple."""
    same, step = _neighbours(frame)
    bounds = np.concatenate([[0], np.flatnonzero(~same) + 1, [len(frame)]])
    votes = []
    for first, end in zip(bounds[:-1], bounds[1:]):
        # A prefix is enough to vote with, and keeps this cheap on long series.
        if end - first >= 3 and (vote := pd.infer_freq(frame[TIME].iloc[first:min(end, first + 10_000)])):
            votes.append(vote)
        if len(votes) == 50:
            break
    if votes:
        return max(set(votes), key=votes.count)
    steps = pd.Series(step[same])
    if len(steps):
        common = steps.mode().iloc[0]
        if common > pd.Timedelta(0) and (steps % common == pd.Timedelta(0)).all():
            return pd.tseries.frequencies.to_offset(common).freqstr
    first = frame[TIME].iloc[:3].tolist()
    raise DataError(f"{source}: cannot infer the time step (first times {first}); set data.freq to a pandas "
                    f"alias such as 30min, h, D, MS")


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


def _neighbours(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each row after the first: whether it belongs to the previous row's series, and its time step from
    that row (timedelta64). Plain arrays, so checks over millions of rows stay cheap."""
    codes = frame[SERIES_ID].cat.codes.to_numpy()
    times = frame[TIME].array.asi8
    return codes[1:] == codes[:-1], (times[1:] - times[:-1]).view(f"m8[{frame[TIME].dt.unit}]")


def _is_sorted(frame: pd.DataFrame) -> bool:
    codes = frame[SERIES_ID].cat.codes.to_numpy()
    same, step = _neighbours(frame)
    return bool(((codes[1:] > codes[:-1]) | (same & (step >= np.timedelta64(0)))).all())


def _check_duplicates(frame: pd.DataFrame, source: str) -> None:
    """`frame` is sorted, so a duplicate (series, time) row follows its twin."""
    same, step = _neighbours(frame)
    duplicated = np.flatnonzero(same & (step == np.timedelta64(0)))
    if len(duplicated):
        row = frame.iloc[duplicated[0] + 1]
        hint = (" (a repeated local hour at a daylight-saving change? give timestamps with UTC offsets)"
                if row[TIME].tzinfo is None else "")
        raise DataError(f"{source}: series {row[SERIES_ID]!r} has two rows at {row[TIME]}{hint}; keep one row "
                        f"per series and time")


def _regular_grid(frame: pd.DataFrame, freq: str, gaps: str, source: str, report: dict[str, int]) -> pd.DataFrame:
    """Check every series sits on its regular grid; with data.gaps=fill, add the missing steps as NaN rows."""
    # Vectorised first: each row must be its predecessor plus one step. Only series that fail get a closer look.
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        fixed_step = pd.Timedelta(offset).to_timedelta64()
    except ValueError:  # a calendar step (month, quarter) has no fixed length
        fixed_step = None
    if fixed_step is not None:
        same, step = _neighbours(frame)
        irregular = np.flatnonzero(same & (step != fixed_step)) + 1
    else:
        previous = frame.groupby(SERIES_ID, sort=False, observed=True)[TIME].shift(1)
        irregular = np.flatnonzero(previous.notna() & (frame[TIME] != previous + offset))
    if not len(irregular):
        return frame
    suspects = set(frame[SERIES_ID].iloc[irregular])
    pieces, filled = [], 0
    for series_id, group in frame.groupby(SERIES_ID, sort=False, observed=True):
        if series_id not in suspects:
            pieces.append(group)
            continue
        times = group[TIME]
        grid = pd.date_range(times.iloc[0], times.iloc[-1], freq=freq)
        off_grid = ~times.isin(grid)
        if off_grid.any():
            raise DataError(f"{source}: series {series_id!r} has a timestamp {times[off_grid].iloc[0]} off its "
                            f"{freq} grid (which starts {times.iloc[0]}); fix it or set data.freq")
        if len(grid) == len(times):
            pieces.append(group)
            continue
        if gaps == "error":
            first = grid[~grid.isin(times)][0]
            hint = (" (a skipped local hour at a daylight-saving change? give timestamps with UTC offsets)"
                    if first.tzinfo is None and first.hour in (1, 2, 3) else "")
            raise DataError(f"{source}: series {series_id!r} has a gap in its {freq} grid at {first}{hint}; "
                            f"fill it, or set data.gaps=fill (filled by data.missing)")
        filled += len(grid) - len(times)
        full = group.set_index(TIME).reindex(grid).rename_axis(TIME).reset_index()
        full[SERIES_ID] = series_id
        pieces.append(full[group.columns])
    if filled:
        report["gap_rows_filled"] = filled
    if not filled:
        return frame
    return pd.concat(pieces, ignore_index=True).astype({SERIES_ID: frame[SERIES_ID].dtype})


def _fill_missing(frame: pd.DataFrame, policy: str, source: str, report: dict[str, int],
                  names: dict[str, str]) -> pd.DataFrame:
    """data.missing: error | interpolate (linear, per series) | ffill (then back-fill the start) | zero."""
    columns = list(names)
    missing = frame[columns].isna()
    if not missing.any(axis=None):
        return frame
    if policy == "error":
        column = missing.any().idxmax()
        row = frame[missing[column]].iloc[0]
        raise DataError(f"{source}: column {names[column]!r} of series "
                        f"{row[SERIES_ID]!r} is missing at {row[TIME]}; fill it, or set data.missing to "
                        f"interpolate, ffill or zero")
    report["values_filled"] = int(missing.to_numpy().sum())
    grouped = frame.groupby(SERIES_ID, sort=False, observed=True)[columns]
    if policy == "interpolate":
        filled = grouped.transform(lambda s: s.interpolate(limit_direction="both"))
    elif policy == "ffill":
        filled = grouped.transform(lambda s: s.ffill().bfill())
    else:
        filled = frame[columns].fillna(0.0)
    frame = frame.copy()
    frame[columns] = filled
    if frame[columns].isna().any(axis=None):
        series_id = frame.loc[frame[columns].isna().any(axis=1), SERIES_ID].iloc[0]
        raise DataError(f"{source}: series {series_id!r} has no values to fill from; drop it from the file")
    return frame
