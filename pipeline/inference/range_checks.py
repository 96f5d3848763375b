"""The last checks before a forecast leaves the pipeline: every input within reach of what the model was trained on,
and every forecast finite and within reach of its inputs. Otherwise one line naming the series, the time and the
value, and nothing is written: a cron job never publishes NaN, nor 1e20 read from a value typed with extra zeros.

The rule, in the units the model computes in (each series' training centre and scale, pipeline/data/scaling.py): an
input may lie at most FAR training scales from its series' training centre (a thousand standard deviations, or
interquartile ranges, is no level shift but a wrong value or a unit mix-up), a forecast at most FORECAST_FAR of them.
"""

import numpy as np
import pandas as pd

from pipeline.data.scaling import Scaler
from pipeline.data.series import SERIES_ID, TIME
from pipeline.errors import DataError

FAR = 1e3
FORECAST_FAR = 1e4


def check_inputs(frame: pd.DataFrame, scaler: Scaler, columns: list[str], names: dict[str, str], source: str) -> None:
    """`frame`'s `columns` (the long frame's names; `names` gives the user's) within FAR training scales of each
    row's series' training centre."""
    index = [scaler.columns.index(c) for c in columns]
    scaled = scaler.transform(frame)[:, index]
    far = ~(np.abs(scaled) <= FAR)
    if far.any():
        row, column = (int(i) for i in np.argwhere(far)[0])
        record = frame.iloc[row]
        raise DataError(f"{source}: series {quoted_id(record[SERIES_ID])} has {names[columns[column]]} "
                        f"{record[columns[column]]:g} at {record[TIME]}, {abs(scaled[row, column]):.3g} times its "
                        f"training scale away from its training level (the model takes at most {FAR:g}); check the "
                        f"value, or train a model on data like it")


def check_forecast(scaled: np.ndarray, series_ids: list[str], times: np.ndarray, target: str, source: str) -> None:
    """(n, H) or (n, H, Q) scaled forecasts of n series, whose (n * H,) times are `times`: each finite and within
    FORECAST_FAR training scales of its series' training centre."""
    bad = ~(np.abs(scaled) <= FORECAST_FAR)
    if bad.any():
        series, step = (int(i) for i in np.argwhere(bad)[0][:2])
        when = times.reshape(len(series_ids), -1)[series, step]
        value = scaled[series, step].max() if scaled.ndim == 3 else scaled[series, step]
        what = "is not finite" if not np.isfinite(value) else f"lies {abs(value):.3g} training scales from its level"
        raise DataError(f"{source}: the forecast of {target} for series {quoted_id(series_ids[series])} at "
                        f"{pd.Timestamp(when)} {what}: the model cannot forecast this input; nothing was written. "
                        f"Check the series' recent values")


def quoted_id(series_id: str, limit: int = 60) -> str:
    """A series id for a message: quoted, and cut at `limit` characters (an id can be a whole line of text)."""
    text = repr(str(series_id))
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(str(series_id))} characters)"

