"""Metrics, the seasonal-naive baseline and the rolling-origin backtest over the test block."""

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # no display on servers and in cron jobs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.models import RecurrentNetwork, predict  # noqa: E402
from pipeline.window import Split, Windows  # noqa: E402


@dataclass
class Backtest:
    """Forecasts from rolling origins, in original units: one row per (series, origin), H columns."""

    series_ids: list[str]
    origins: np.ndarray       # (n,) row of the first forecast step in the stacked frame
    actual: np.ndarray        # (n, H)
    forecast: np.ndarray      # (n, H)
    seasonal_naive: np.ndarray  # (n, H)
    mase_scale: np.ndarray    # (n,) in-sample seasonal-naive MAE of the row's series, training part
    levels: list[float] = field(default_factory=list)  # quantile levels, when the model forecasts quantiles
    quantiles: np.ndarray | None = None  # (n, H, Q); `forecast` is then the median (or the level nearest it)


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


def calibrate_intervals(network: RecurrentNetwork, windows: Windows, batch_size: int = 1024) -> dict[str, float]:
    """Conformalized quantile regression (Romano et al., 2019) on the validation block.

    Quantile heads fitted on training windows give intervals that are too narrow out of sample. For each central
    interval (levels q and 1 - q), the conformity score of a validation (origin, step) is how far the actual lies
    outside it (negative inside); the interval is widened by the scores' quantile at its nominal coverage, or
    narrowed when that is negative. The offsets, in scaled units, are stored in the network; returns them by name.
    """
    network.interval_offsets.zero_()
    dataset = windows.val_origins
    forecast = predict(network, dataset, batch_size)
    starts, _ = dataset.windows.locate(torch.arange(len(dataset)))
    actual = windows.values[(starts + windows.lookback).unsqueeze(1) + torch.arange(windows.horizon), 0].numpy()
    levels, offsets, named = network.quantiles, np.zeros(len(network.quantiles)), {}
    for lo in range(len(levels) // 2):
        hi = len(levels) - 1 - lo
        scores = np.maximum(forecast[..., lo] - actual, actual - forecast[..., hi]).ravel()
        coverage = min(1.0, (levels[hi] - levels[lo]) * (1 + 1 / scores.size))
        offsets[hi] = float(np.quantile(scores, coverage, method="higher"))
        offsets[lo] = -offsets[hi]
        named[interval_name(levels, lo)] = offsets[hi]
    network.interval_offsets.copy_(torch.from_numpy(offsets))
    return named


def seasonal_naive(target: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(n,) origins -> (n, H): each step repeats the value one (or more) seasons before it."""
    steps = np.arange(horizon)
    return target[origins[:, None] + steps - season * (steps // season + 1)]


def mase_scales(target: np.ndarray, splits: list[Split], season: int) -> dict[str, float]:
    """Per series: mean |y_t - y_(t - season)| over its training rows (the MASE denominator)."""
    scales = {}
    for s in splits:
        train = target[s.first:s.val_start]
        scale = float(np.mean(np.abs(train[season:] - train[:-season]))) if len(train) > season else 0.0
        # A series that repeats exactly has no in-sample error; fall back to 1 rather than divide by zero.
        scales[s.series_id] = scale if scale > 0 else 1.0
    return scales


def backtest(network: RecurrentNetwork, windows: Windows, season: int, block: str = "test",
             batch_size: int = 1024) -> Backtest:
    """Forecast every origin of the "test" (or "val") block of every series in batched calls, each from data
    before its origin."""
    dataset = windows.test if block == "test" else windows.val_origins
    starts, series = dataset.windows.locate(torch.arange(len(dataset)))
    origins = (starts + windows.lookback).numpy()
    series_ids = [windows.splits[i].series_id for i in series.tolist()]
    target = windows.target
    forecast = windows.scaler.inverse_target(predict(network, dataset, batch_size), series_ids)
    quantiles = forecast if forecast.ndim == 3 else None
    scales = mase_scales(target, windows.splits, season)
    return Backtest(
        series_ids=series_ids,
        origins=origins,
        actual=target[origins[:, None] + np.arange(windows.horizon)],
        forecast=forecast[..., network.median] if quantiles is not None else forecast,
        seasonal_naive=seasonal_naive(target, origins, windows.horizon, season),
        mase_scale=np.array([scales[s] for s in series_ids]),
        levels=network.quantiles,
        quantiles=quantiles,
    )


def backtest_metrics(result: Backtest) -> dict[str, dict[str, float]]:
    """The model's metrics beside seasonal naive's, on the same origins."""
    model = point_metrics(result.actual, result.forecast, result.mase_scale)
    if result.quantiles is not None:
        model |= quantile_metrics(result.actual, result.quantiles, result.levels)
    return {
        "model": model,
        "seasonal_naive": point_metrics(result.actual, result.seasonal_naive, result.mase_scale),
    }


def plot_forecasts(result: Backtest, target: np.ndarray, times: np.ndarray, n_plots: int = 4) -> plt.Figure:
    """Forecast, seasonal naive and actuals for a few test origins spread over the test block."""
    picks = np.linspace(0, len(result.origins) - 1, min(n_plots, len(result.origins))).round().astype(int)
    horizon = result.actual.shape[1]
    figure, axes = plt.subplots(len(picks), 1, figsize=(10, 2.6 * len(picks)), squeeze=False)
    for axis, i in zip(axes[:, 0], picks):
        origin = result.origins[i]
        history = np.arange(origin - horizon, origin)
        ahead = np.arange(origin, origin + horizon)
        axis.plot(history - origin, target[history], color="0.5", label="history")
        axis.plot(ahead - origin, result.actual[i], color="black", label="actual")
        if result.quantiles is not None and len(result.levels) > 1:
            axis.fill_between(ahead - origin, result.quantiles[i, :, 0], result.quantiles[i, :, -1],
                              color="tab:blue", alpha=0.2,
                              label=f"{100 * result.levels[0]:g}-{100 * result.levels[-1]:g}% band")
        axis.plot(ahead - origin, result.forecast[i], color="tab:blue", label="forecast")
        axis.plot(ahead - origin, result.seasonal_naive[i], color="tab:orange", ls="--", label="seasonal naive")
        axis.set_title(f"series {result.series_ids[i]}, forecast from {times[origin]}", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
    axes[-1, 0].set_xlabel("steps from forecast origin")
    figure.tight_layout()
    return figure
