"""Forecast metrics and the baselines every model is reported beside: naive and seasonal naive."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.window import Split


@dataclass
class Backtest:
    """Forecasts from rolling origins, in original units: one row per (series, origin), H columns."""

    series_ids: list[str]
    origins: np.ndarray       # (n,) row of the first forecast step in the stacked frame
    actual: np.ndarray        # (n, H)
    forecast: np.ndarray      # (n, H)
    seasonal_naive: np.ndarray  # (n, H)
    naive: np.ndarray         # (n, H)
    mase_scale: np.ndarray    # (n,) in-sample seasonal-naive MAE of the row's series, training part
    levels: list[float] = field(default_factory=list)  # quantile levels, when the model forecasts quantiles
    quantiles: np.ndarray | None = None  # (n, H, Q); `forecast` is then the median (or the level nearest it)

    def rows(self, picks: np.ndarray | list[int]) -> "Backtest":
        """The same backtest restricted to some of its rows."""
        picks = np.asarray(picks)
        return Backtest(series_ids=[self.series_ids[i] for i in picks], origins=self.origins[picks],
                        actual=self.actual[picks], forecast=self.forecast[picks],
                        seasonal_naive=self.seasonal_naive[picks], naive=self.naive[picks],
                        mase_scale=self.mase_scale[picks], levels=self.levels,
                        quantiles=None if self.quantiles is None else self.quantiles[picks])

    def rows_by_series(self) -> dict[str, np.ndarray]:
        """Each series' row numbers, in order of first appearance (one pass, however many series)."""
        return dict(pd.Series(self.series_ids).groupby(self.series_ids, sort=False).indices)


def point_metrics(actual: np.ndarray, forecast: np.ndarray, mase_scale: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, sMAPE (percent, 0-200) and MASE over every (row, step); rows are (n, H)."""
    error = forecast - actual
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(np.abs(error), denominator, out=np.zeros_like(error), where=denominator > 0)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "smape": float(200 * np.mean(ratio)),
        "mase": float(np.mean(np.abs(error) / mase_scale[:, None])),
    }


def interval_name(levels: list[float], lo: int) -> str:
    """The central interval of levels[lo] and its mirror, by percent: "10_90" for 0.1 and 0.9."""
    return f"{100 * levels[lo]:g}_{100 * levels[len(levels) - 1 - lo]:g}"


def quantile_metrics(actual: np.ndarray, quantiles: np.ndarray, levels: list[float]) -> dict[str, float]:
    """Mean pinball loss over every level, and the empirical coverage of each central interval: levels q and
    1 - q paired from the outside in (0.1 with 0.9 gives coverage_10_90, expected 0.8)."""
    error = actual[..., None] - quantiles
    q = np.asarray(levels)
    metrics = {"quantile_loss": float(np.mean(np.maximum(q * error, (q - 1) * error)))}
    for i in range(len(levels) // 2):
        lo, hi = quantiles[..., i], quantiles[..., len(levels) - 1 - i]
        metrics[f"coverage_{interval_name(levels, i)}"] = float(np.mean((actual >= lo) & (actual <= hi)))
    return metrics


def naive(target: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n,) origins -> (n, H): the last observed value, repeated."""
    return np.repeat(target[origins - 1][:, None], horizon, axis=1)


def seasonal_naive(target: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(n,) origins -> (n, H): each step repeats the value one (or more) seasons before it."""
    steps = np.arange(horizon)
    return target[origins[:, None] + steps - season * (steps // season + 1)]


def mase_scales(target: np.ndarray, splits: list[Split], season: int) -> dict[str, float]:
    """Per series: the MASE denominator over its training rows."""
    return {s.series_id: mase_scale(target[s.first:s.val_start], season) for s in splits}


def mase_scale(history: np.ndarray, season: int) -> float:
    """Mean |y_t - y_(t - season)| over a series' history: its in-sample seasonal-naive error."""
    scale = float(np.mean(np.abs(history[season:] - history[:-season]))) if len(history) > season else 0.0
    # A series that repeats exactly has no in-sample error; fall back to 1 rather than divide by zero.
    return scale if scale > 0 else 1.0


def backtest_metrics(result: Backtest) -> dict[str, dict[str, float]]:
    """The model's metrics beside naive's and seasonal naive's, on the same origins."""
    model = point_metrics(result.actual, result.forecast, result.mase_scale)
    if result.quantiles is not None:
        model |= quantile_metrics(result.actual, result.quantiles, result.levels)
    return {
        "model": model,
        "naive": point_metrics(result.actual, result.naive, result.mase_scale),
        "seasonal_naive": point_metrics(result.actual, result.seasonal_naive, result.mase_scale),
    }
