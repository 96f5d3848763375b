import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.load import validate_frame
from pipeline.sampler import batches
from pipeline.window import make_windows

LOOKBACK, HORIZON, VAL, TEST = 12, 4, 8, 8


def step_series(lengths: dict[str, int]):
    """Series whose target is its own row number in the stacked frame, so windows can be read by eye."""
    frames, row = [], 0
    for series_id, n in lengths.items():
        frames.append(pd.DataFrame({"id": series_id, "time": pd.date_range("2024-01-01", periods=n, freq="h"),
                                    "y": np.arange(row, row + n, dtype=float)}))
        row += n
    data = DataConfig(path="in-memory", time_column="time", target_column="y", id_column="id", calendar=False)
    return validate_frame(pd.concat(frames), data, source="test")




def test_windows_never_put_target_steps_in_inputs():
    series = step_series({"a": 60, "b": 45})
    windows = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
    target = torch.tensor(series.frame["target"].to_numpy())
    for dataset in (windows.train, windows.val):
        rows = dataset.starts.unsqueeze(1) + torch.arange(LOOKBACK + HORIZON)
        inputs, horizon = rows[:, :LOOKBACK], rows[:, LOOKBACK:]
        assert (inputs.max(1).values < horizon.min(1).values).all()
        # The gathered tensors are exactly those rows: inputs then the steps right after them.
        batch = dataset[:]
        center = torch.tensor([windows.scaler.center[s][0] for s in series.frame["series_id"]])
        scale = torch.tensor([windows.scaler.scale[s][0] for s in series.frame["series_id"]])
        assert torch.allclose((batch.y * scale[horizon] + center[horizon]).double(), target[horizon], atol=1e-3)
        assert torch.allclose((batch.x[..., 0] * scale[inputs] + center[inputs]).double(), target[inputs],
                              atol=1e-3)


def test_windows_stay_inside_their_series_and_split():
    series = step_series({"a": 60, "b": 45})
    windows = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
    for split in windows.splits:
        mine = lambda starts: starts[(starts >= split.first) & (starts < split.end)]  # noqa: E731
        train = mine(windows.train.starts)
        assert train.min() == split.first and train.max() + LOOKBACK + HORIZON == split.val_start
        origins = mine(windows.val.starts) + LOOKBACK
        assert origins.min() == split.val_start and origins.max() + HORIZON == split.test_start
        origins = mine(windows.test.starts) + LOOKBACK
        assert origins.tolist() == list(range(split.test_start, split.end - HORIZON + 1, HORIZON))
    # 60 - 16 held out = 44 training rows -> 44 - 16 + 1 windows; 45 -> 29 -> 14
    assert len(windows.train) == 29 + 14


def test_stride_spaces_training_windows():
    series = step_series({"a": 60})
    windows = make_windows(series, LOOKBACK, HORIZON, 5, VAL, TEST, calendar=False)
    assert torch.equal(windows.train.starts, torch.arange(0, 29, 5))


def test_scaler_is_fitted_on_the_training_part_only():
    series = step_series({"a": 60, "b": 45})
    before = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False).scaler
    held_out = series.frame.groupby("series_id").cumcount(ascending=False) < VAL + TEST
    series.frame.loc[held_out, "target"] *= 1000
    after = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False).scaler
    assert after.center == before.center and after.scale == before.scale
    train_a = series.frame["target"].to_numpy()[:60 - VAL - TEST, None]
    assert after.center["a"][0] == pytest.approx(StandardScaler().fit(train_a).mean_[0])


def test_windows_are_arithmetic_over_one_shared_tensor():
    series = step_series({"a": 60, "b": 45})
    windows = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
    for dataset in (windows.train, windows.val, windows.test):
        assert dataset.values.data_ptr() == windows.values.data_ptr()
        # Two numbers per series describe every window: nothing grows with the number of windows.
        assert dataset.windows.first.shape == dataset.windows.count.shape == (2,)


def test_sampler_visits_every_window_once_per_epoch_in_tensor_batches():
    series = step_series({"a": 60, "b": 45})
    windows = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
    loader = batches(windows.train, 10, shuffle=True)
    seen = torch.cat([batch.x[:, 0, 0] for batch in loader])
    assert len(seen) == len(windows.train) and len(loader) == 5
    assert torch.equal(seen.sort().values, windows.train[:].x[:, 0, 0].sort().values)


def test_calendar_features_are_cyclic_and_known_for_the_horizon(vic_elec):
    series = validate_frame(vic_elec.iloc[:2000], DataConfig(), source="slice")
    windows = make_windows(series, 96, 48, 1, 96, 96, calendar=True)
    # time of day, day of week, day of year: sin and cos each
    assert len(windows.future_columns) == 6
    calendar = windows.values[:, windows.future_columns]
    assert torch.allclose(calendar[:, :3] ** 2 + calendar[:, 3:] ** 2, torch.ones(len(calendar), 3), atol=1e-5)
    assert windows.train[[0]].future.shape == (1, 48, 6)


def test_future_covariates_are_read_over_the_horizon_and_past_ones_are_not(vic_elec):
    data = DataConfig(covariates=["temperature"], future_covariates=["holiday"])
    series = validate_frame(vic_elec.iloc[:2000], data, source="slice")
    windows = make_windows(series, 96, 48, 1, 96, 96, calendar=True)
    # columns: target, temperature (past), holiday (known future), 6 calendar features
    assert windows.future_columns == [2, 3, 4, 5, 6, 7, 8]
    holiday = torch.tensor(vic_elec["holiday"].iloc[:2000].to_numpy(), dtype=torch.float32)
    # A window whose horizon begins 10 steps before the first holiday after the first lookback, and another.
    picks = [int(torch.nonzero(holiday[96:])[0]) - 10, 500]
    batch = windows.train[picks]
    starts = windows.train.starts[picks]
    expected = holiday[starts.unsqueeze(1) + 96 + torch.arange(48)]
    scaler = windows.scaler
    center, scale = scaler.center["demand"][2], scaler.scale["demand"][2]  # named after the target
    assert torch.allclose(batch.future[..., 0] * scale + center, expected, atol=1e-5)
    assert expected.sum() > 0


def test_series_too_short_for_the_held_out_blocks_names_the_series():
    series = step_series({"long": 60, "short": 30})
    with pytest.raises(DataError, match="series 'short' has 30 steps.*short_series=drop or pad"):
        make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
