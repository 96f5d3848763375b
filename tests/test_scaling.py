"""Per-series scaling: fitted on each series' training rows only, every scaler inverted exactly, log1p."""

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from pipeline.data.load import validate_frame
from pipeline.data.windows import make_windows
from pipeline.errors import DataError
from tests.helpers import hourly, hourly_config, step_series

LOOKBACK, HORIZON, VAL, TEST = 12, 4, 8, 8


def test_constant_series_scale_without_dividing_by_zero():
    frame = pd.concat([hourly(40, "a"), hourly(40, "flat").assign(load=7.0)])
    series = validate_frame(frame, hourly_config(), source="test")
    assert series.report["constant_series"] == 1
    windows = make_windows(series, 8, 4, 1, 4, 4, calendar=False)
    assert windows.scaler.scale["flat"] == [1.0]
    assert np.isfinite(windows.values.numpy()).all()


@pytest.mark.parametrize("kind", ["standard", "robust", "minmax", "none"])
def test_every_scaler_is_fitted_on_training_rows_and_inverts_exactly(kind):
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    series = validate_frame(hourly(40).assign(load=lambda f: f["load"] ** 1.5), hourly_config(), source="test")
    windows = make_windows(series, 8, 4, 1, 4, 4, calendar=False, scaler=kind)
    train = series.frame["target"].to_numpy()[:32, None]
    reference = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}.get(kind)
    expected = reference().fit(train).transform(series.frame[["target"]].to_numpy()) if reference else train
    assert np.allclose(windows.values[:, 0].numpy(), expected[:, 0] if reference else
                       series.frame["target"].to_numpy(), rtol=1e-5, atol=1e-4)
    restored = windows.scaler.inverse_target(windows.values[None, :, 0].double().numpy(), ["a"])
    assert np.allclose(restored[0], series.frame["target"].to_numpy(), rtol=1e-5)


def test_log1p_scales_the_log_of_the_target_inverts_exactly_and_refuses_a_negative_value():
    from sklearn.preprocessing import StandardScaler

    series = validate_frame(hourly(40).assign(load=lambda f: f["load"] ** 1.5), hourly_config(), source="test")
    windows = make_windows(series, 8, 4, 1, 4, 4, calendar=False, transform="log1p")
    target = series.frame["target"].to_numpy()
    expected = StandardScaler().fit(np.log1p(target[:32, None])).transform(np.log1p(target[:, None]))[:, 0]
    assert np.allclose(windows.values[:, 0].numpy(), expected, rtol=1e-5, atol=1e-4)
    assert windows.scaler.target_transform == "log1p"
    restored = windows.scaler.inverse_target(windows.values[None, :, 0].double().numpy(), ["a"])
    assert np.allclose(restored[0], target, rtol=1e-5)
    negative = validate_frame(hourly(40).assign(load=lambda f: f["load"] - 1e6), hourly_config(), source="test")
    with pytest.raises(DataError, match="series 'a' has a negative target .*data.transform=log1p needs values >= 0"):
        make_windows(negative, 8, 4, 1, 4, 4, calendar=False, transform="log1p")


def test_scaler_is_fitted_on_the_training_part_only():
    series = step_series({"a": 60, "b": 45})
    before = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False).scaler
    held_out = series.frame.groupby("series_id").cumcount(ascending=False) < VAL + TEST
    series.frame.loc[held_out, "target"] *= 1000
    after = make_windows(series, LOOKBACK, HORIZON, 1, VAL, TEST, calendar=False).scaler
    assert after.center == before.center and after.scale == before.scale
    train_a = series.frame["target"].to_numpy()[:60 - VAL - TEST, None]
    assert after.center["a"][0] == pytest.approx(StandardScaler().fit(train_a).mean_[0])
