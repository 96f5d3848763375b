"""Figures logged to MLflow: forecasts against actuals, and error by horizon step."""

import matplotlib

matplotlib.use("Agg")  # no display on servers and in cron jobs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.metrics import Backtest  # noqa: E402


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


def plot_error_by_step(per_step: pd.DataFrame) -> plt.Figure:
    """MASE at each horizon step: the model beside naive and seasonal naive."""
    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.plot(per_step["step"], per_step["mase"], marker=".", label="model")
    axis.plot(per_step["step"], per_step["naive_mase"], ls=":", color="0.4", label="naive")
    axis.plot(per_step["step"], per_step["seasonal_naive_mase"], ls="--", color="tab:orange", label="seasonal naive")
    axis.set_xlabel("steps after the origin")
    axis.set_ylabel("MASE")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_best_and_worst(result: Backtest, target: np.ndarray, times: np.ndarray, per_series: pd.DataFrame,
                        n_each: int = 2) -> plt.Figure:
    """Forecasts against actuals at the last origin of the best and the worst series by MASE (per_series is
    sorted best first); with one series, its best and worst origins."""
    if len(per_series) > 1:
        names = list(per_series["series_id"].iloc[:n_each]) + list(per_series["series_id"].iloc[-n_each:])
        rows = result.rows_by_series()
        picks = [int(rows[name][-1]) for name in dict.fromkeys(names)]
    else:
        error = np.mean(np.abs(result.forecast - result.actual), axis=1)
        order = np.argsort(error, kind="stable")
        picks = list(dict.fromkeys([*order[:n_each].tolist(), *order[-n_each:].tolist()]))
    return plot_forecasts(result.rows(picks), target, times, n_plots=len(picks))
