"""Figures logged to MLflow: forecasts against actuals, error by horizon step, learning curves, scores beside the
baselines, residuals."""

import matplotlib

matplotlib.use("Agg")  # no display on servers and in cron jobs
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.evaluation.metrics import Backtest  # noqa: E402


def forecast_picks(origins: int, n_plots: int = 4) -> np.ndarray:
    """The backtest rows plot_forecasts shows: `n_plots` origins spread over it."""
    return np.linspace(0, origins - 1, min(n_plots, origins)).round().astype(int)


def plot_forecasts(result: Backtest, target: np.ndarray, times: np.ndarray, n_plots: int = 4,
                   unit: str = "target", paths: np.ndarray | None = None) -> plt.Figure:
    """Forecast, its interval fan, seasonal naive and actuals for `n_plots` origins (forecast_picks), against their
    times, with a likelihood model's `paths` (picks, S, H) drawn from each; the y axis is `unit` (the target
    column's name)."""
    picks = forecast_picks(len(result.origins), n_plots)
    horizon = result.actual.shape[1]
    figure, axes = plt.subplots(len(picks), 1, figsize=(10, 2.6 * len(picks)), squeeze=False)
    for axis, i in zip(axes[:, 0], picks):
        origin = result.origins[i]
        history, ahead = times[origin - horizon:origin], times[origin:origin + horizon]
        axis.plot(history, target[origin - horizon:origin], color="0.5", label="history")
        axis.plot(ahead, result.actual[i], color="black", label="actual")
        levels = result.levels if result.quantiles is not None else []
        for lo in range(len(levels) // 2):  # a fan: each central interval, the outermost palest
            hi = len(levels) - 1 - lo
            axis.fill_between(ahead, result.quantiles[i, :, lo], result.quantiles[i, :, hi], color="tab:blue",
                              alpha=0.15, lw=0, label=f"{100 * (levels[hi] - levels[lo]):.4g}% interval")
        for n, path in enumerate([] if paths is None else paths[list(picks).index(i)]):
            axis.plot(ahead, path, color="tab:purple", lw=0.7, alpha=0.6, label=None if n else "sample paths")
        axis.plot(ahead, result.forecast[i], color="tab:blue", label="forecast")
        axis.plot(ahead, result.seasonal_naive[i], color="tab:orange", ls="--",
                  label=f"seasonal naive ({result.season} steps)" if result.season else "seasonal naive")
        axis.set_title(f"{result.series_ids[i]}: forecast from {pd.Timestamp(times[origin])}", fontsize=9)
        axis.set_ylabel(unit)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
    for axis in axes[:, 0]:  # each its own dates (autofmt_xdate would label the bottom axis alone)
        axis.tick_params(axis="x", labelrotation=20, labelsize=8)
    figure.tight_layout()
    return figure


def plot_learning_curves(history: dict[str, list[tuple[int, float]]]) -> plt.Figure:
    """Training loss, each validation's loss and the best so far (the kept checkpoint's) against the optimizer
    step, on one axis (the loss is on the scaled target)."""
    figure, axis = plt.subplots(figsize=(8, 3.5))
    for name, label, style in (("train_loss", "train_loss", {"color": "tab:blue", "alpha": 0.6}),
                               ("val_loss_raw", "val_loss_raw (each validation)", {"color": "black", "marker": "o"}),
                               ("val_loss", "val_loss (best so far)", {"color": "tab:red", "drawstyle": "steps-post"})):
        if history.get(name):
            steps, values = zip(*history[name])
            axis.plot(steps, values, label=label, **style)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (scaled target)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_scores(scores: pd.DataFrame) -> plt.Figure:
    """MASE of the model beside the baselines (naive, the strongest seasonal naive, then each period's), on the
    validation and test blocks (rows: block; columns: model, then the baselines)."""
    figure, axis = plt.subplots(figsize=(8, 3.5))
    width, blocks = 0.8 / len(scores.columns), np.arange(len(scores))
    # Each period's own seasonal naive in colours of its own: never the model's blue or the strongest's orange.
    periods = iter(["tab:brown", "tab:olive", "tab:purple", "tab:cyan", "tab:pink"] * 4)
    colors = {"model": "tab:blue", "seasonal_naive": "tab:orange", "naive": "0.6"}
    for offset, column in enumerate(scores.columns):
        label = column.replace("seasonal_naive_", "seasonal naive, period ").replace("_", " ")
        if column == "seasonal_naive" and len(scores.columns) > 3:
            label = "seasonal naive (the strongest period)"
        bars = axis.bar(blocks + (offset - (len(scores.columns) - 1) / 2) * width, scores[column], width,
                        label=label, color=colors.get(column) or next(periods))
        axis.bar_label(bars, fmt="%.3f", fontsize=7)
    axis.set_xticks(blocks, scores.index)
    axis.set_ylabel("MASE (lower is better)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_residuals(result: Backtest, times: np.ndarray, scored: np.ndarray, unit: str = "target") -> plt.Figure:
    """Forecast errors (actual - forecast) of the scored points: their distribution, and against time."""
    residual = (result.actual - result.forecast)[scored]
    when = times[result.origins[:, None] + np.arange(result.actual.shape[1])][scored]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5), gridspec_kw={"width_ratios": [1, 2]})
    left.hist(residual, bins=40, color="tab:blue")
    left.set_xlabel(f"actual - forecast ({unit})")
    left.set_ylabel("points")
    right.scatter(when, residual, s=3, color="tab:blue")
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel(f"actual - forecast ({unit})")
    right.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    return figure


def plot_error_by_step(per_step: pd.DataFrame) -> plt.Figure:
    """MASE at each horizon step: the model beside naive and seasonal naive."""
    figure, axis = plt.subplots(figsize=(8, 3.5))
    by_step_lines(axis, per_step, "mase", "MASE", ["naive", "seasonal_naive"])
    figure.tight_layout()
    return figure


def by_step_lines(axis: plt.Axes, per_step: pd.DataFrame, metric: str, label: str, baselines: list[str]) -> None:
    """A per-step table's `metric` of the model, then of each baseline (its column `metric`_baseline)."""
    styles = {"naive": {"ls": ":", "color": "0.4"}, "seasonal_naive": {"ls": "--", "color": "tab:orange"}}
    axis.plot(per_step["step"], per_step[metric], marker=".", label="model")
    for baseline in baselines:
        axis.plot(per_step["step"], per_step[f"{metric}_{baseline}"], label=baseline.replace("_", " "),
                  **styles[baseline])
    axis.set_xlabel("steps after the origin")
    axis.set_ylabel(label)
    axis.legend(fontsize=8)


def plot_best_and_worst(result: Backtest, target: np.ndarray, times: np.ndarray, per_series: pd.DataFrame,
                        n_each: int = 2, unit: str = "target") -> plt.Figure:
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
    return plot_forecasts(result.rows(picks), target, times, n_plots=len(picks), unit=unit)


def plot_calibration(result: Backtest, per_step: pd.DataFrame) -> plt.Figure:
    """A quantile model's intervals: each central interval's observed coverage against its nominal one (the
    diagonal is perfect calibration), and CRPS at each horizon step; beside seasonal naive's interval from its
    in-sample errors. Over the scored points."""
    scored, levels = result.scored(), result.levels
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    nominal = [levels[len(levels) - 1 - i] - levels[i] for i in range(len(levels) // 2)]
    for quantiles, label, color in ((result.quantiles, "model", "tab:blue"),
                                    (result.seasonal_naive_quantiles, "seasonal naive", "tab:orange")):
        actual, bands = result.actual[scored], quantiles[scored]
        observed = [np.mean((actual >= bands[:, i]) & (actual <= bands[:, len(levels) - 1 - i]))
                    for i in range(len(nominal))]
        left.plot(nominal, observed, marker="o", color=color, label=label)
    left.plot([0, 1], [0, 1], color="0.6", lw=0.8)
    left.set_xlabel("nominal coverage of the central interval")
    left.set_ylabel("observed coverage")
    left.legend(fontsize=8)
    by_step_lines(right, per_step, "crps", "CRPS (target units)", ["seasonal_naive"])
    figure.tight_layout()
    return figure
