"""Read a CSV or Parquet series file into a validated long frame: series_id, time, target, covariates."""

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.config import DataConfig

log = logging.getLogger(__name__)

SERIES_ID, TIME, TARGET = "series_id", "time", "target"

# Seasonal period of calendar frequencies (offsets of no fixed length), by the first letter of their alias.
_SEASON_OF_CALENDAR_UNIT = {"B": 5, "W": 52, "M": 12, "S": 24, "Q": 4, "Y": 1, "A": 1}


class DataError(ValueError):
    """A problem with the input file; the message names the file, column or series and what to do."""


@dataclass
class Series:
    """Validated long frame, sorted by series and time, with its regular frequency and season."""

    frame: pd.DataFrame
    freq: str
    season: int
    covariates: list[str]

    @property
    def series_ids(self) -> list[str]:
        return list(self.frame[SERIES_ID].unique())


def read_table(path: Path) -> pd.DataFrame:
    """Read by extension: .parquet, or .csv (optionally .gz/.bz2/.zip/.xz/.zst compressed)."""
    if not path.exists():
        raise DataError(f"{path}: file not found; set data.path to a CSV or Parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".parquet"]:
        return pd.read_parquet(path)
    if ".csv" in suffixes[-2:]:
        return pd.read_csv(path)
    raise DataError(f"{path}: unknown extension {''.join(path.suffixes)!r}; use .csv, .csv.gz or .parquet")


def load_series(cfg: DataConfig) -> Series:
    """Load `cfg.path` and check it: columns present, timestamps parse, target numeric, one regular grid."""
    path = Path(cfg.path)
    series = validate_frame(read_table(path), cfg, source=str(path))
    log.info("loaded %s: %d rows, %d series, freq %s, season %d",
             path, len(series.frame), len(series.series_ids), series.freq, series.season)
    return series


def validate_frame(raw: pd.DataFrame, cfg: DataConfig, source: str) -> Series:
    """Turn a user's table into the long frame; every error names `source` (a file or "input frame")."""
    if raw.empty:
        raise DataError(f"{source}: no rows")
    columns = [cfg.time_column, cfg.target_column, *cfg.covariates]
    if cfg.id_column:
        columns.append(cfg.id_column)
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise DataError(f"{source}: column {missing[0]!r} not found (columns: {list(raw.columns)}); "
                        f"set data.* to the file's column names")
    frame = pd.DataFrame({
        SERIES_ID: raw[cfg.id_column].astype(str) if cfg.id_column else "0",
        TIME: _parse_times(raw[cfg.time_column], source, cfg.time_column),
    })
    for name, column in [(TARGET, cfg.target_column), *[(c, c) for c in cfg.covariates]]:
        frame[name] = _numeric(raw[column], source, column)
    frame = frame.sort_values([SERIES_ID, TIME], kind="stable").reset_index(drop=True)
    _check_duplicates(frame, source)
    freq = cfg.freq or _infer_freq(frame, source)
    _check_regular(frame, freq, source)
    return Series(frame=frame, freq=freq, season=cfg.season or season_of(freq),
                  covariates=list(cfg.covariates))


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


def _parse_times(column: pd.Series, source: str, name: str) -> pd.Series:
    times = pd.to_datetime(column, errors="coerce", utc=_has_offsets(column))
    bad = times.isna() & column.notna() | column.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: cannot parse timestamp {column.iloc[row]!r}; "
                        f"fix the value or set data.time_column")
    return times


def _has_offsets(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column) and column.astype(str).str.contains(r"(?:Z|[+-]\d\d:?\d\d)$").any()


def _numeric(column: pd.Series, source: str, name: str) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce").astype("float64")
    bad = values.isna() | ~values.abs().lt(float("inf"))
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: value {column.iloc[row]!r} is missing or not a "
                        f"finite number; clean the file")
    return values


def _check_duplicates(frame: pd.DataFrame, source: str) -> None:
    duplicated = frame.duplicated([SERIES_ID, TIME])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise DataError(f"{source}: series {row[SERIES_ID]!r} has two rows at {row[TIME]}; keep one row per "
                        f"series and time")


def _infer_freq(frame: pd.DataFrame, source: str) -> str:
    first = frame[frame[SERIES_ID] == frame[SERIES_ID].iloc[0]][TIME]
    freq = pd.infer_freq(first.iloc[:1000]) if len(first) >= 3 else None
    if freq is None:
        raise DataError(f"{source}: cannot infer the time step from {first.iloc[:3].tolist()}; set data.freq "
                        f"(a pandas alias such as 30min, h, D, MS)")
    return freq


def _check_regular(frame: pd.DataFrame, freq: str, source: str) -> None:
    """Every series must sit on one regular grid: windows count steps, not timestamps."""
    for series_id, times in frame.groupby(SERIES_ID, sort=False)[TIME]:
        expected = pd.date_range(times.iloc[0], periods=len(times), freq=freq)
        off = times.to_numpy() != expected.to_numpy()
        if off.any():
            first = int(off.nonzero()[0][0])
            raise DataError(f"{source}: series {series_id!r} is not on a regular {freq} grid at "
                            f"{times.iloc[first]} (expected {expected[first]}); fill the gap or set data.freq")
