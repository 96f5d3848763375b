"""Filled targets (data.gaps=fill, data.missing) are read as inputs but never scored: not by the loss, the
validation loss, the backtests or the baselines; and a series without a usable MASE scale gets none."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data.load import validate_frame
from pipeline.data.windows import make_windows
from pipeline.evaluation.backtest import backtest, backtest_frame
from pipeline.evaluation.metrics import backtest_metrics, exclusions, mase_scale, point_metrics
from tests.helpers import forecaster_for, network_for

LOOKBACK, HORIZON, VAL, TEST = 28, 7, 112, 56
GAP = slice(-VAL - TEST + 20, -VAL - TEST + 50)  # 30 days inside the validation block


@pytest.fixture(scope="module")
def daily(vic_elec: pd.DataFrame) -> pd.DataFrame:
    """The shipped data as daily demand: 1,096 days of one real series."""
    frame = vic_elec.set_index("time")["demand"].resample("D").sum().reset_index()
    return frame.rename(columns={"time": "day"})


def windows_of(frame: pd.DataFrame, **data):
    config = DataConfig(path="daily", time_column="day", target_column="demand", gaps="fill",
                        missing="interpolate", **data)
    series = validate_frame(frame, config, source="daily")
    return series, make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=True)


@pytest.fixture(scope="module")
def gap(daily: pd.DataFrame):
    """The series with 30 days deleted from its validation block (filled back by interpolation), and a network."""
    with_gap = daily.drop(index=daily.index[GAP])
    series, windows = windows_of(with_gap)
    torch.manual_seed(0)
    return series, windows, network_for(windows, "window.lookback=28", "window.horizon=7", "model.hidden_size=8",
                                        season=7)


def test_filled_rows_are_marked_from_load_to_windows(gap):
    series, windows, _ = gap
    assert series.report["gap_rows_filled"] == 30
    assert (~windows.observed).sum() == 30
    split = windows.splits[0]
    assert (~windows.observed[split.val_start:split.test_start]).sum() == 30


def test_a_filled_gap_in_the_validation_block_scores_like_the_rows_deleted(gap):
    _, windows, network = gap
    result = backtest(network, windows, [7], block="val")
    scores = backtest_metrics(result)
    # The same forecasts with the filled rows deleted, read back from the backtest artifact.
    frame = backtest_frame(result, windows.times, None)
    assert (~frame["observed"]).sum() > 0
    kept = frame[frame["observed"]]
    assert scores["model"]["mase"] == pytest.approx(np.mean(np.abs(kept.forecast - kept.actual) / kept.mase_scale))
    assert scores["model"]["mae"] == pytest.approx(np.mean(np.abs(kept.forecast - kept.actual)))
    assert scores["seasonal_naive"]["mase"] == pytest.approx(
        np.mean(np.abs(kept.seasonal_naive - kept.actual) / kept.mase_scale))
    # Scored on the straight line as well, the figure would differ.
    every = point_metrics(result.actual, result.forecast, result.mase_scale)["mase"]
    assert every != pytest.approx(scores["model"]["mase"], rel=1e-3)
    # Whatever the filled actuals hold, the scores stay.
    result.actual[~result.observed] = 1e9
    assert backtest_metrics(result) == scores


def test_the_loss_and_validation_loss_skip_filled_targets(gap):
    _, windows, _ = gap
    module = forecaster_for(windows, "window.lookback=28", "window.horizon=7", "model.hidden_size=8", season=7)
    batch = windows.val[:]
    assert batch.observed is not None and not batch.observed.all()
    with torch.no_grad():
        forecast = module(batch)
    loss = module.loss(forecast, batch.y, batch.observed)
    expected = (forecast - batch.y).abs()[batch.observed].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    garbage = torch.where(batch.observed, batch.y, torch.full_like(batch.y, 1e6))
    assert module.loss(forecast, garbage, batch.observed).item() == pytest.approx(loss.item(), rel=1e-6)
    # A batch of filled targets alone adds nothing, rather than a NaN.
    assert module.loss(forecast, batch.y, torch.zeros_like(batch.observed)).item() == 0.0


def test_a_series_mostly_filled_in_a_block_is_reported_and_left_out(daily: pd.DataFrame):
    two = pd.concat([daily.assign(site="a"), daily.assign(site="b")], ignore_index=True)
    # b loses 100 of its 112 validation days.
    b_val = two.index[two.site.eq("b")][-VAL - TEST:-TEST]
    _, windows = windows_of(two.drop(index=b_val[:100]), id_column="site")
    torch.manual_seed(0)
    network = network_for(windows, "window.lookback=28", "window.horizon=7", "model.hidden_size=8", season=7)
    result = backtest(network, windows, [7], block="val")
    assert result.thin_series() == ["b"]
    a_only = result.rows(result.rows_by_series()["a"])
    assert backtest_metrics(result) == backtest_metrics(a_only)
    tags = exclusions(result, "val")
    assert tags["val.series_too_filled"] == 1
    assert tags["val.points_excluded"] == len(result.rows_by_series()["b"]) * HORIZON


def test_series_without_seasonal_change_get_no_mase(daily: pd.DataFrame):
    week = daily["demand"].to_numpy()[:7]
    periodic = np.tile(week, 40) * (1 + 1e-16)  # exactly periodic up to rounding
    assert np.isnan(mase_scale(np.zeros(280), 7))
    assert np.isnan(mase_scale(periodic, 7))
    assert mase_scale(daily["demand"].to_numpy(), 7) > 0
    actual = np.stack([daily["demand"].to_numpy()[280:287], np.zeros(7)])
    forecast = actual + 1.0
    scales = np.array([mase_scale(daily["demand"].to_numpy()[:280], 7), mase_scale(np.zeros(280), 7)])
    metrics = point_metrics(actual, forecast, scales)
    # The zero series counts in MAE, not in MASE (never 0/0 read as perfect, nor rounding error as 1e12).
    assert metrics["mae"] == pytest.approx(1.0)
    assert metrics["mase"] == pytest.approx(1.0 / scales[0])
    assert np.isnan(point_metrics(actual[1:], forecast[1:], scales[1:])["mase"])


def test_a_validation_block_wholly_filled_is_refused_before_training(daily: pd.DataFrame):
    from pipeline.errors import DataError

    with pytest.raises(DataError, match="no series has an observed target in its validation block"):
        windows_of(daily.drop(index=daily.index[-VAL - TEST:-TEST]))
