"""As-of honesty: a known-future value issued after a window's origin never reaches that window."""

import pandas as pd
import pytest
import torch

from pipeline.config import BacktestConfig, DataConfig, EvaluateConfig, TrackingConfig
from pipeline.data.load import validate_frame
from pipeline.data.vintages import load_vintages
from pipeline.data.windows import make_windows
from pipeline.errors import DataError
from pipeline.evaluate import evaluate
from pipeline.train import train
from tests.helpers import SMALL, compose_config, network_for

LOOKBACK, HORIZON, SEASON = 48, 12, 48
STEP = pd.Timedelta("30min")


def issued(frame: pd.DataFrame, ahead: pd.Timedelta) -> pd.DataFrame:
    """Every holiday flag issued `ahead` before the time it is for: a forecast of the flag, right in each case."""
    return frame[["time", "holiday"]].assign(issued=frame["time"] - ahead)


@pytest.fixture(scope="module")
def frame(vic_elec):
    return vic_elec.iloc[:1200]


def windows_with(frame, vintages, tmp_path):
    path = tmp_path / "vintages.parquet"
    vintages.to_parquet(path, index=False)
    data = DataConfig(future_covariates=["holiday"], vintages=str(path), future_covariates_known_at="issued")
    series = validate_frame(frame, data, source="vic_elec slice")
    return make_windows(series, LOOKBACK, HORIZON, 8, 96, 96, calendar=True, vintages=load_vintages(data))


def test_a_value_issued_after_an_origin_never_reaches_its_window_and_would_change_the_forecast(frame, tmp_path):
    base = issued(frame, pd.Timedelta("10D"))
    plain = windows_with(frame, base, tmp_path)
    # Validation windows start at every step: window 0's origin, and a step of its horizon.
    origin = pd.Timestamp(plain.times[int(plain.val.starts[0]) + LOOKBACK])
    target = origin + 5 * STEP
    # A revision of that step's flag, issued one step after the origin: far from 0 and 1, so a leak shows.
    late = pd.concat([base, pd.DataFrame({"time": [target], "holiday": [40.0], "issued": [origin + STEP]})])
    revised = windows_with(frame, late, tmp_path)
    first, third = revised.val[[0]], revised.val[[2]]
    assert torch.equal(first.future, plain.val[[0]].future)  # not in the window whose origin came before it
    assert third.future[0, 3, 0] > 10 * plain.val[[2]].future[0, 3, 0].abs() + 1  # read once it was issued
    # Had it leaked into the first window, the forecast would differ: the network reads the flag ahead.
    torch.manual_seed(0)
    network = network_for(revised, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                          "model.hidden_size=8", season=SEASON).eval()
    torch.nn.init.normal_(network.decoder.head[-1].weight)  # away from the seasonal skip's zero start
    leaked = first.future.clone()
    leaked[0, 5, 0] = third.future[0, 3, 0]
    with torch.no_grad():
        assert not torch.allclose(network(first.x, first.future), network(first.x, leaked))


def test_training_windows_read_issued_values_and_a_step_with_none_issued_is_named(frame, tmp_path):
    windows = windows_with(frame, issued(frame, pd.Timedelta("2h")), tmp_path)
    # Issued 2 hours ahead: a step further than 4 steps past its origin has no value yet.
    with pytest.raises(DataError, match=r"vintages.parquet: series 'demand' has no value issued by .* for .*, a step "
                                        r"that origin forecasts"):
        windows.train[[0]]
    flags = issued(frame, pd.Timedelta("30D"))
    flags["holiday"] = 1 - flags["holiday"]  # the forecasts of the flag all wrong: windows must read them
    windows = windows_with(frame, flags, tmp_path)
    batch = windows.train[[0, 1]]
    realised = windows.values[windows.train.starts[[0, 1]].unsqueeze(1) + LOOKBACK + torch.arange(HORIZON)][..., 1]
    assert not torch.allclose(batch.future[..., 0], realised)


def test_a_model_trained_and_evaluated_with_vintages_reads_them_in_both(frame, tmp_path, tracking_uri):
    data = tmp_path / "demand.parquet"
    frame.to_parquet(data, index=False)
    flags = issued(frame, pd.Timedelta("30D"))
    flags["holiday"] = 1 - flags["holiday"]
    flags.to_parquet(tmp_path / "vintages.parquet", index=False)
    cfg = compose_config(f"data.path={data}", f"tracking.uri={tracking_uri}", *SMALL,
                         "data.future_covariates=[holiday]", f"data.vintages={tmp_path / 'vintages.parquet'}",
                         "data.future_covariates_known_at=issued")
    summary = train(cfg, tmp_path / "run")
    evaluated = evaluate(EvaluateConfig(run_id=summary["run_id"], evaluate=BacktestConfig(origins=2),
                                        tracking=TrackingConfig(uri=tracking_uri)))
    # The evaluate stage's last origins are training's test block: the same forecasts, from the same vintages.
    assert evaluated["model"]["mae"] == pytest.approx(summary["test"]["mae"], rel=1e-6)
