"""Read a CSV or Parquet series file into a validated long frame: series_id, time, target, covariates.

Every problem either stops the run with one line naming the source, column, series and row or time, or is
handled by an explicit `data.*` policy whose effect is counted in `Series.report`.
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import DataConfig

log = logging.getLogger(__name__)

SERIES_ID, TIME, TARGET = "series_id", "time", "target"
ID_SEPARATOR = " / "

# Seasonal period of calendar frequencies (offsets of no fixed length), by the first letter of their alias.
_SEASON_OF_CALENDAR_UNIT = {"B": 5, "W": 52, "M": 12, "S": 24, "Q": 4, "Y": 1, "A": 1}
_YEAR_QUARTER = re.compile(r"^\s*(\d{4})\s*-?\s*Q([1-4])\s*$")
_UTC_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


class DataError(ValueError):
    """A problem with the input data; the message names the source, column or series and what to do."""


@dataclass
class Series:
    """Validated long frame, sorted by series and time, on one regular grid per series."""

    frame: pd.DataFrame
    freq: str
    season: int
    covariates: list[str]
    source: str
    # What the data.* policies did, by name: rows sorted, gaps filled, values filled, ...
    report: dict[str, int] = field(default_factory=dict)

    @property
    def series_ids(self) -> list[str]:
        return list(self.frame[SERIES_ID].unique())


def read_table(path: Path) -> pd.DataFrame:
    """Read by extension: .parquet, or .csv (optionally .gz/.bz2/.zip/.xz/.zst compressed)."""
    if not path.exists():
        raise DataError(f"{path}: file not found; set data.path to a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes[-1:] == [".parquet"]:
            return pd.read_parquet(path)
        if ".csv" in suffixes[-2:]:
            return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be read ({error}); check that it is a valid file") from error
    raise DataError(f"{path}: unknown extension {''.join(path.suffixes)!r}; use .csv, .csv.gz or .parquet")


def load_series(cfg: DataConfig) -> Series:
    """Load `cfg.path` and check it (see validate_frame)."""
    path = Path(cfg.path)
    series = validate_frame(read_table(path), cfg, source=str(path))
    log.info("loaded %s: %d rows, %d series, freq %s, season %d; %s", path, len(series.frame),
             len(series.series_ids), series.freq, series.season, series.report or "no fixes needed")
    return series


def validate_frame(raw: pd.DataFrame, cfg: DataConfig, source: str) -> Series:
    """Turn a user's table into the long frame; every error names `source` (a file or "input frame")."""
    if raw.empty:
        raise DataError(f"{source}: the file has no rows; point data.path at a file with data")
    # Row numbers in messages and in sorting are positions in the file, whatever index the frame had.
    raw = raw.reset_index(drop=True)
    id_columns = id_column_list(cfg.id_column)
    missing = [c for c in [cfg.time_column, cfg.target_column, *cfg.covariates, *id_columns]
               if c not in raw.columns]
    if missing:
        raise DataError(f"{source}: column {missing[0]!r} not found (columns: {list(raw.columns)}); "
                        f"set data.* to the file's column names")
    report: dict[str, int] = {}
    frame = pd.DataFrame({
        SERIES_ID: _joined_ids(raw, id_columns),
        TIME: parse_times(raw[cfg.time_column], cfg.time_format, source, cfg.time_column),
    })
    for name, column in [(TARGET, cfg.target_column), *[(c, c) for c in cfg.covariates]]:
        frame[name] = _numeric(raw[column], source, column)
    order = frame.sort_values([SERIES_ID, TIME], kind="stable").index
    moved = int((order != frame.index).sum())
    if moved:
        report["rows_out_of_order"] = moved
        frame = frame.loc[order].reset_index(drop=True)
    _check_duplicates(frame, source)
    freq = cfg.freq or infer_freq(frame, source)
    frame = _regular_grid(frame, freq, cfg.gaps, source, report)
    frame = _fill_missing(frame, cfg.missing, source, report,
                          names={TARGET: cfg.target_column} | {c: c for c in cfg.covariates})
    constant = frame.groupby(SERIES_ID)[TARGET].nunique().eq(1).sum()
    if constant:
        report["constant_series"] = int(constant)
    return Series(frame=frame, freq=freq, season=cfg.season or season_of(freq),
                  covariates=list(cfg.covariates), source=source, report=report)


def _joined_ids(raw: pd.DataFrame, id_columns: list[str]) -> pd.Series | str:
    """One string id per row: vectorised, since files may hold millions of rows."""
    if not id_columns:
        return "0"
    joined = raw[id_columns[0]].astype(str)
    for column in id_columns[1:]:
        joined = joined.str.cat(raw[column].astype(str), sep=ID_SEPARATOR)
    return joined


def id_column_list(id_column: str | list[str] | None) -> list[str]:
    """data.id_column may name one column or several (joined with " / " into one series id)."""
    if id_column is None:
        return []
    return [id_column] if isinstance(id_column, str) else [str(c) for c in id_column]


def id_columns_of(series_ids: pd.Series, id_column: str | list[str] | None) -> pd.DataFrame:
    """The user's id column(s) back from joined series ids (inverse of how validate_frame joins them)."""
    columns = id_column_list(id_column)
    if len(columns) == 1:
        return pd.DataFrame({columns[0]: series_ids.to_numpy()}, index=series_ids.index)
    parts = series_ids.str.split(ID_SEPARATOR, n=len(columns) - 1, regex=False, expand=True) if columns else None
    return pd.DataFrame({c: parts[i] for i, c in enumerate(columns)}, index=series_ids.index)


def season_of(freq: str) -> int:
    """Steps per natural cycle: a day for sub-daily data, a week for daily, a year for monthly and up."""
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return _SEASON_OF_CALENDAR_UNIT.get(offset.name[0], 1)
    day = pd.Timedelta("1D")
    if step < day:
        return max(1, day // step)
    return {day: 7, 7 * day: 52}.get(step, 1)


def parse_times(column: pd.Series, time_format: str | None, source: str, name: str) -> pd.Series:
    """Timestamps, tz-aware ones converted to UTC (a regular grid across daylight-saving changes)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    text = column.astype("string")
    quarters = text.str.extract(_YEAR_QUARTER)
    if quarters.notna().all(axis=None):
        # fpp3's "1998 Q1": the first day of the quarter.
        return pd.to_datetime(quarters[0] + "-" + (quarters[1].astype(int) * 3 - 2).astype(str) + "-01")
    with_offset = text.str.contains(_UTC_OFFSET, na=False)
    if with_offset.any() and not with_offset.all():
        row = int((~with_offset).to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: {column.iloc[row]!r} has no UTC offset while "
                        f"other rows do (mixed time zones); give every timestamp an offset, or none")
    times = pd.to_datetime(text, format=time_format, errors="coerce", utc=bool(with_offset.any()))
    bad = times.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: cannot parse timestamp {column.iloc[row]!r}; "
                        f"fix the value, or set data.time_format (e.g. '%d/%m/%Y %H:%M')")
    return times.astype("datetime64[ns, UTC]" if with_offset.any() else "datetime64[ns]")


def infer_freq(frame: pd.DataFrame, source: str) -> str:
    """The frequency pandas infers for most series, else the most common step if every step is a multiple."""
    votes = []
    for _, times in frame.groupby(SERIES_ID, sort=False)[TIME]:
        if len(times) >= 3 and (vote := pd.infer_freq(times)):
            votes.append(vote)
        if len(votes) == 50:
            break
    if votes:
        return max(set(votes), key=votes.count)
    steps = frame.groupby(SERIES_ID, sort=False)[TIME].diff().dropna()
    if len(steps):
        common = steps.mode().iloc[0]
        if common > pd.Timedelta(0) and (steps % common == pd.Timedelta(0)).all():
            return pd.tseries.frequencies.to_offset(common).freqstr
    first = frame[TIME].iloc[:3].tolist()
    raise DataError(f"{source}: cannot infer the time step (first times {first}); set data.freq to a pandas "
                    f"alias such as 30min, h, D, MS")


def _numeric(column: pd.Series, source: str, name: str) -> pd.Series:
    """Floats, with NaN where a value is missing (left to data.missing); text or infinity stops the run."""
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    not_number = values.isna() & column.notna() & column.astype("string").str.strip().ne("")
    infinite = np.isinf(values)
    bad = not_number | infinite
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: value {str(column.iloc[row])!r} is not a finite number; "
                        f"clean the file (missing values may be left empty)")
    return values


def _check_duplicates(frame: pd.DataFrame, source: str) -> None:
    duplicated = frame.duplicated([SERIES_ID, TIME])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        hint = (" (a repeated local hour at a daylight-saving change? give timestamps with UTC offsets)"
                if row[TIME].tzinfo is None else "")
        raise DataError(f"{source}: series {row[SERIES_ID]!r} has two rows at {row[TIME]}{hint}; keep one row "
                        f"per series and time")


def _regular_grid(frame: pd.DataFrame, freq: str, gaps: str, source: str, report: dict[str, int]) -> pd.DataFrame:
    """Check every series sits on its regular grid; with data.gaps=fill, add the missing steps as NaN rows."""
    # Vectorised first: each row must be its predecessor plus one step. Only series that fail get a closer look.
    previous = frame.groupby(SERIES_ID, sort=False)[TIME].shift(1)
    irregular = previous.notna() & (frame[TIME] != previous + pd.tseries.frequencies.to_offset(freq))
    if not irregular.any():
        return frame
    suspects = set(frame.loc[irregular, SERIES_ID])
    pieces, filled = [], 0
    for series_id, group in frame.groupby(SERIES_ID, sort=False):
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
    return pd.concat(pieces, ignore_index=True) if filled else frame


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
    grouped = frame.groupby(SERIES_ID, sort=False)[columns]
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
