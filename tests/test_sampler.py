"""Batches of window numbers: every window once an epoch, as tensors."""

import torch

from pipeline.data.sampler import batches
from pipeline.data.windows import make_windows
from tests.helpers import step_series

LOOKBACK, HORIZON, VAL, TEST = 12, 4, 8, 8


def test_sampler_visits_every_window_once_per_epoch_in_tensor_batches():
    series = step_series({"a": 60, "b": 45})
    windows = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False)
    loader = batches(windows.train, 10, shuffle=True)
    seen = torch.cat([batch.x[:, 0, 0] for batch in loader])
    assert len(seen) == len(windows.train) and len(loader) == 5
    assert torch.equal(seen.sort().values, windows.train[:].x[:, 0, 0].sort().values)
