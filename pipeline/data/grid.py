"""Each series on its regular time grid: the frequency inferred, order and duplicates checked, gaps filled or
refused (data.gaps), missing values filled or refused (data.missing), every fix counted in the report."""

import numpy as np
import pandas as pd

from pipeline.data.series import SERIES_ID, TIME
from pipeline.errors import DataError


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


def _neighbours(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each row after the first: whether it belongs to the previous row's series, and its time step from
    that row (timedelta64). Plain arrays, so checks over millions of rows stay cheap."""
    codes = frame[SERIES_ID].cat.codes.to_numpy()
    times = frame[TIME].array.asi8
    return codes[1:] == codes[:-1], (times[1:] - times[:-1]).view(f"m8[{frame[TIME].dt.unit}]")


def is_sorted(frame: pd.DataFrame) -> bool:
    codes = frame[SERIES_ID].cat.codes.to_numpy()
    same, step = _neighbours(frame)
    return bool(((codes[1:] > codes[:-1]) | (same & (step >= np.timedelta64(0)))).all())


def check_duplicates(frame: pd.DataFrame, source: str) -> None:
    """`frame` is sorted, so a duplicate (series, time) row follows its twin."""
    same, step = _neighbours(frame)
    duplicated = np.flatnonzero(same & (step == np.timedelta64(0)))
    if len(duplicated):
        row = frame.iloc[duplicated[0] + 1]
        hint = (" (a repeated local hour at a daylight-saving change? give timestamps with UTC offsets)"
                if row[TIME].tzinfo is None else "")
        raise DataError(f"{source}: series {row[SERIES_ID]!r} has two rows at {row[TIME]}{hint}; keep one row "
                        f"per series and time")


def regular_grid(frame: pd.DataFrame, freq: str, gaps: str, source: str, report: dict[str, int]) -> pd.DataFrame:
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


def fill_missing(frame: pd.DataFrame, policy: str, source: str, report: dict[str, int],
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
