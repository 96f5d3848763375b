"""The long frame every stage works on, one row per (series, time): its column names, and the validated frame
with what was learned reading it (frequency, seasonal periods, time zone, what the data.* policies did)."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The long frame's columns, whatever the user's file calls them: the series key (pipeline/data/ids.py), the time,
# the target; covariates keep their own names.
SERIES_ID, TIME, TARGET = "series_id", "time", "target"
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
    # Rows of every file, where `frame` holds only the first's (a folder of files: pipeline/data/sources.py).
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


def observed_targets(frame: pd.DataFrame) -> np.ndarray | None:
    """(rows,) whether each row's target was observed rather than filled; None when none was filled."""
    return frame[OBSERVED].to_numpy(bool, copy=True) if OBSERVED in frame else None
