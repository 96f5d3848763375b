import pytest
import torch

from pipeline.config import DataConfig
from pipeline.data.load import validate_frame
from pipeline.data.windows import make_windows
from pipeline.errors import DataError
from tests.helpers import step_series

LOOKBACK, HORIZON, VAL, TEST = 12, 4, 8, 8


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


def test_windows_are_arithmetic_over_one_shared_tensor():
    series = step_series({"a": 60, "b": 45})
    windows = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
    for dataset in (windows.train, windows.val, windows.test):
        assert dataset.values.data_ptr() == windows.values.data_ptr()
        # Two numbers per series describe every window: nothing grows with the number of windows.
        assert dataset.windows.first.shape == dataset.windows.count.shape == (2,)


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
