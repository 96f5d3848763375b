"""Seasonal naive for every seasonal period: sub-daily data has a daily and a weekly cycle, each backtest reports
both, and the model stands beside the stronger one on each block."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data.load import validate_frame
from pipeline.data.times import seasons_of
from pipeline.data.windows import make_windows
from pipeline.errors import ConfigError
from pipeline.evaluation.backtest import backtest
from pipeline.evaluation.metrics import backtest_metrics
from pipeline.train import usable_seasons
from tests.helpers import network_for

# The default recipe's split of the shipped half-hourly data: 28 days of validation, then 28 of test.
LOOKBACK, HORIZON, BLOCK = 336, 48, 28 * 48


def test_sub_daily_data_has_a_daily_and_a_weekly_period_and_coarser_data_one():
    assert seasons_of("30min") == [48, 336] and seasons_of("h") == [24, 168] and seasons_of("15min") == [96, 672]
    assert seasons_of("D") == [7] and seasons_of("MS") == [12] and seasons_of("QS-JAN") == [4]


def test_a_period_longer_than_the_lookback_is_left_out_when_derived_and_refused_when_given():
    assert usable_seasons([48, 336], None, lookback=96) == [48]
    assert usable_seasons([48, 336], None, lookback=336) == [48, 336]
    with pytest.raises(ConfigError, match=r"data.season=\[48, 336\]: a period of 336 steps is longer than "
                                          r"window.lookback \(96\)"):
        usable_seasons([48, 336], [48, 336], lookback=96)


@pytest.fixture(scope="module")
def default_split(vic_elec: pd.DataFrame):
    """The shipped series with the default windows: on its validation block last week's naive is the stronger
    (MASE 0.69 against yesterday's 0.92); on its test block, over Christmas, yesterday's (0.82 against 1.01)."""
    config = DataConfig(path="vic_elec", time_column="time", target_column="demand")
    series = validate_frame(vic_elec[["time", "demand"]], config, source="vic_elec")
    windows = make_windows(series, LOOKBACK, HORIZON, 1, BLOCK, BLOCK, calendar=True)
    torch.manual_seed(0)
    network = network_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                          "model.hidden_size=8").eval()
    return series, windows, network


def seasonal_naive_mase(demand: np.ndarray, block_start: int, period: int) -> float:
    """Seasonal naive's MASE from the raw series: origins a horizon apart through the block, each step repeating
    the value `period` steps before it; scaled by the daily naive's error on the history before the block."""
    origins = np.arange(block_start, block_start + BLOCK, HORIZON)
    steps = np.arange(HORIZON)
    actual = demand[origins[:, None] + steps]
    forecast = demand[origins[:, None] + steps - period * (steps // period + 1)]
    scale = np.mean(np.abs(demand[48:block_start] - demand[:block_start - 48]))
    return float(np.mean(np.abs(forecast - actual)) / scale)


def test_each_block_reports_every_periods_seasonal_naive_and_stands_the_strongest_beside_the_model(
        default_split, vic_elec):
    series, windows, network = default_split
    assert series.seasons == [48, 336]
    demand = vic_elec["demand"].to_numpy(np.float64)
    starts = {"val": len(demand) - 2 * BLOCK, "test": len(demand) - BLOCK}
    expected = {block: {period: seasonal_naive_mase(demand, start, period) for period in (48, 336)}
                for block, start in starts.items()}
    strongest = {"val": 336, "test": 48}
    for block in starts:
        result = backtest(network, windows, series.seasons, block=block)
        scores = backtest_metrics(result)
        for period in (48, 336):
            assert scores[f"seasonal_naive_{period}"]["mase"] == pytest.approx(expected[block][period], rel=1e-9)
        assert result.season == strongest[block]
        assert scores["seasonal_naive"] == scores[f"seasonal_naive_{strongest[block]}"]
        assert min(expected[block].values()) == pytest.approx(scores["seasonal_naive"]["mase"], rel=1e-9)
