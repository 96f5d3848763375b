"""Timestamps as the user's file writes them: parsed (fpp3 quarters, UTC offsets, strftime formats), their zone
recorded and converted to UTC, and the seasonal period of a frequency."""

import re

import pandas as pd

from pipeline.bounds import EPOCH_FORMATS
from pipeline.errors import DataError, first_line

# Seasonal period of calendar frequencies (offsets of no fixed length), by the first letter of their alias.
_SEASON_OF_CALENDAR_UNIT = {"B": 5, "W": 52, "M": 12, "S": 24, "Q": 4, "Y": 1, "A": 1}
_YEAR_QUARTER = re.compile(r"^\s*(\d{4})\s*-?\s*Q([1-4])\s*$")
_UTC_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")


def parse_times(column: pd.Series, time_format: str | None, time_zone: str | None, source: str, name: str
                ) -> tuple[pd.Series, str | None]:
    """Timestamps, and the zone they were given in. Zoned times (a zoned column, UTC offsets in the text, or
    times without offsets in `time_zone`) become UTC: one regular grid across daylight-saving changes. Times
    without a zone, and no `time_zone`, stay wall-clock times (zone None)."""
    try:
        return _parse_times(column, time_format, time_zone, source, name)
    except pd.errors.OutOfBoundsDatetime as error:
        row = next((i for i, value in enumerate(column) if not _within_range(value)), None)
        where = f"row {row}: {column.iloc[row]!r}" if row is not None else first_line(error)
        raise DataError(f"{source}: column {name!r} {where} lies outside the times pandas holds "
                        f"({pd.Timestamp.min:%Y-%m-%d} to {pd.Timestamp.max:%Y-%m-%d}); fix the value") from error


def _within_range(value) -> bool:
    try:
        pd.Timestamp(value).as_unit("ns")
    except (ValueError, OverflowError):  # OutOfBoundsDatetime is a ValueError; text that is no time at all too
        return str(value).strip() == "" or not any(ch.isdigit() for ch in str(value))
    return True


def _parse_times(column: pd.Series, time_format: str | None, time_zone: str | None, source: str, name: str
                 ) -> tuple[pd.Series, str | None]:
    if time_zone is not None:
        check_time_zone_name(time_zone)
    if time_format in EPOCH_FORMATS:
        return _epoch_times(column, EPOCH_FORMATS[time_format], source, name), time_zone or "UTC"
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC"), time_zone or str(column.dt.tz)
    if pd.api.types.is_datetime64_any_dtype(column):
        return _localize(column, time_zone, source, name), time_zone
    text = column.astype("string")
    quarters = text.str.extract(_YEAR_QUARTER)
    if quarters.notna().all(axis=None):
        # fpp3's "1998 Q1": the first day of the quarter.
        times = pd.to_datetime(quarters[0] + "-" + (quarters[1].astype(int) * 3 - 2).astype(str) + "-01")
        return _localize(times, time_zone, source, name), time_zone
    with_offset = text.str.contains(_UTC_OFFSET, na=False)
    if with_offset.any() and not with_offset.all():
        row = int((~with_offset).to_numpy().nonzero()[0][0])
        if pd.isna(pd.to_datetime(text.iloc[row], format=time_format, errors="coerce")):  # no time at all
            raise DataError(f"{source}: column {name!r} row {row}: cannot parse timestamp {column.iloc[row]!r}; fix "
                            f"the value, or set data.time_format (e.g. '%d/%m/%Y %H:%M')")
        raise DataError(f"{source}: column {name!r} row {row}: {column.iloc[row]!r} has no UTC offset while "
                        f"other rows do (mixed time zones); give every timestamp an offset, or none")
    times = pd.to_datetime(text, format=time_format, errors="coerce", utc=bool(with_offset.any()))
    bad = times.isna()
    if time_format is not None and bad.any():
        # ISO 8601 text too: what a saved model's input example and MLflow's tools send for the file's times.
        times = times.where(~bad, pd.to_datetime(text.where(bad), format="ISO8601", errors="coerce",
                                                 utc=bool(with_offset.any())))
        bad = times.isna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        epoch = pd.to_numeric(text, errors="coerce").notna().all()
        hint = ("epoch seconds or milliseconds? set data.time_format=unix or unix_ms" if epoch else
                "fix the value, or set data.time_format (e.g. '%d/%m/%Y %H:%M')")
        raise DataError(f"{source}: column {name!r} row {row}: cannot parse timestamp {column.iloc[row]!r}; {hint}")
    if with_offset.any():
        return times.astype("datetime64[ns, UTC]"), time_zone or "UTC"
    return _localize(times.astype("datetime64[ns]"), time_zone, source, name), time_zone


def _epoch_times(column: pd.Series, unit: str, source: str, name: str) -> pd.Series:
    """Epoch seconds or milliseconds (data.time_format=unix, unix_ms): instants, so UTC."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise DataError(f"{source}: column {name!r} row {row}: {column.iloc[row]!r} is not an epoch timestamp; fix "
                        f"the value, or unset data.time_format")
    return pd.to_datetime(numbers, unit=unit, utc=True).astype("datetime64[ns, UTC]")


def check_time_zone_name(time_zone: str) -> None:
    try:
        pd.Timestamp(0).tz_localize(time_zone)
    except Exception as error:  # zoneinfo's and pytz's errors for an unknown name differ
        raise DataError(f"data.time_zone={time_zone!r} is not a time zone name; use an IANA name such as "
                        f"Australia/Melbourne or UTC") from error


def _localize(times: pd.Series, time_zone: str | None, source: str, name: str) -> pd.Series:
    """Wall-clock times read as times in `time_zone`, then UTC; unchanged without a zone."""
    if time_zone is None:
        return times
    try:
        return times.dt.tz_localize(time_zone, ambiguous="raise", nonexistent="raise").dt.tz_convert("UTC")
    except Exception as error:  # pandas raises pytz's or its own errors for a repeated or skipped hour
        raise DataError(f"{source}: column {name!r}: {str(error).splitlines()[0]} in data.time_zone={time_zone} "
                        f"(an hour repeated or skipped at a daylight-saving change); give times with UTC "
                        f"offsets instead") from error


def seasons_of(freq: str) -> list[int]:
    """The seasonal periods a frequency has, in steps: a day and a week for sub-daily data (hourly demand repeats
    both), else one natural cycle: a week for daily data, a year for weekly, monthly and up."""
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        step = pd.Timedelta(offset)
    except ValueError:
        return [_SEASON_OF_CALENDAR_UNIT.get(offset.name[0], 1)]
    day = pd.Timedelta("1D")
    if step < day:
        return [max(1, day // step), max(1, 7 * day // step)]
    return [{day: 7, 7 * day: 52}.get(step, 1)]
