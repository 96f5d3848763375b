"""Each data set shipped in data/ loads under its conf/data file and fits its experiment's window and split: the
commands the README and bench/ACCURACY.md print run on a fresh clone."""

import pytest

from pipeline.config import to_config
from pipeline.data.defaults import resolve_windowing
from pipeline.data.load import load_series
from pipeline.data.series import SERIES_ID
from pipeline.data.windows import make_windows
from tests.helpers import compose_config

SHIPPED = {
    # experiment: (series, rows, frequency, seasonal periods)
    None: (1, 52608, "30min", [48, 336]),
    "tourism": (304, 24320, "QS-JAN", [4]),
    "us_gasoline": (1, 1355, "W-MON", [52]),
    "pbs": (336, 67596, "MS", [12]),
}


@pytest.mark.parametrize("experiment", list(SHIPPED), ids=lambda e: e or "default")
def test_a_shipped_data_set_loads_and_windows_under_its_experiment(experiment):
    config = to_config(compose_config(*([f"experiment={experiment}"] if experiment else [])))
    series = load_series(config.data)
    count, rows, freq, seasons = SHIPPED[experiment]
    assert (series.frame[SERIES_ID].nunique(), len(series.frame)) == (count, rows)
    assert (series.freq, series.seasons) == (freq, seasons)
    window, split = resolve_windowing(config.window, config.split, series)
    windows = make_windows(series, window.lookback, window.horizon, window.stride,
                           split.val_steps, split.test_steps, config.data.calendar)
    assert len(windows.train) > 0 and len(windows.test) > 0
