"""What a backtest records in the open MLflow run: metrics beside the baselines, every forecast, tables by step
and by series, and figures; for the training stage's blocks (backtest_and_log) and the evaluate stage's file
(log_evaluation)."""

import mlflow
import pandas as pd

from pipeline.data.ids import series_columns
from pipeline.data.series import SERIES_ID, TARGET, TIME, Series
from pipeline.data.windows import Windows
from pipeline.evaluation.backtest import backtest, backtest_frame, by_series, by_step, sample_paths_at
from pipeline.evaluation.metrics import Backtest, backtest_metrics, exclusions
from pipeline.evaluation.plots import (
    forecast_picks,
    plot_best_and_worst,
    plot_calibration,
    plot_error_by_step,
    plot_forecasts,
    plot_residuals,
    plot_scores,
)
from pipeline.inference.saved_model import SavedModel
from pipeline.model.network import Forecaster
from pipeline.tracking.records import log_frame

SHOWN_PATHS = 5  # sample paths drawn in the forecast plot of a likelihood model


def backtest_and_log(network: Forecaster, windows: Windows, seasons: list[int], id_columns: list[str],
                     unit: str = "target") -> dict[str, dict]:
    """Rolling-origin backtests on the validation and test blocks, beside naive and seasonal naive (the strongest
    of `seasons` on each block, with every metric; each period's MASE as `*_mase_seasonal_naive_PERIOD`), into the
    open MLflow run: metrics, every forecast (backtest/val.parquet, backtest/test.parquet), the scores table and
    figure, and the test block's forecasts, MASE by horizon step (also as the `test_mase_by_step` history) and
    residuals. `unit` labels the figures' values (the target column's name)."""
    scores, results = {}, {}
    for block in ("val", "test"):
        result = results[block] = backtest(network, windows, seasons, block=block)
        scores[block] = backtest_metrics(result)
        mlflow.set_tags(exclusions(result, block))
        log_frame(backtest_frame(result, windows.times, id_columns), f"backtest/{block}.parquet")
        mlflow.log_metrics({f"{block}_{k}": v for k, v in scores[block]["model"].items()})
        for baseline in ("naive", "seasonal_naive"):
            mlflow.log_metrics({f"{block}_{k}_{baseline}": v for k, v in scores[block][baseline].items()})
        mlflow.log_metrics({f"{block}_mase_{name}": scores[block][name]["mase"] for name in scores[block]
                            if name.startswith("seasonal_naive_")})
    mlflow.set_tags({f"{block}.seasonal_naive_season": results[block].season for block in results})
    names = ["model", "seasonal_naive", "naive", *(n for n in scores["test"] if n.startswith("seasonal_naive_"))]
    table = pd.DataFrame({name: {block: scores[block][name]["mase"] for block in scores} for name in names})
    mlflow.log_text(table.rename_axis("block (MASE)").to_csv(), "scores.csv")
    mlflow.log_figure(plot_scores(table), "scores.png")
    test = results["test"]
    per_step = by_step(test)
    for row in per_step.itertuples():
        mlflow.log_metrics({f"test_{name}_by_step": getattr(row, name) for name in ("mase", "crps")
                            if name in per_step}, step=int(row.step))
    mlflow.log_figure(plot_error_by_step(per_step), "error_by_step.png")
    if test.quantiles is not None and len(test.levels) > 1:
        mlflow.log_figure(plot_calibration(test, per_step), "calibration.png")
    mlflow.log_figure(plot_residuals(test, windows.times, test.scored(), unit), "residuals.png")
    # A few sample paths beside the fan: whether the draws move together across the horizon, as actuals do.
    paths = (sample_paths_at(network, windows, forecast_picks(len(test.origins)), SHOWN_PATHS)
             if network.likelihood else None)
    mlflow.log_figure(plot_forecasts(test, windows.target, windows.times, unit=unit, paths=paths), "forecasts.png")
    # The run page's description, the first thing it shows: the scores beside seasonal naive.
    mase = {block: (scores[block]["model"]["mase"], scores[block]["seasonal_naive"]["mase"]) for block in scores}
    mlflow.set_tag("mlflow.note.content", "MASE {:.3f} on the test block against seasonal naive's {:.3f} (validation: "
                   "{:.3f} against {:.3f}; seasonal naive of the strongest period on each block); scores.png and "
                   "learning_curves.png under Artifacts".format(*mase["test"], *mase["val"]))
    return scores


def log_evaluation(experiment_name: str, model: SavedModel, model_uri: str, summary: dict, scores: dict,
                   result: Backtest, series: Series) -> None:
    """Into the open run: tags linking the model (nested under its training run when in the same experiment),
    the summary as params, metrics beside both baselines, MASE by step, per-series and per-step tables, every
    forecast, and two figures."""
    experiment = mlflow.get_experiment_by_name(experiment_name)
    model_run = mlflow.get_run(model.run_id) if model.run_id else None
    tags = {"stage": "evaluate", "model_uri": model_uri, "model_run_id": model.run_id or ""}
    if model_run is not None and experiment is not None and model_run.info.experiment_id == experiment.experiment_id:
        tags["mlflow.parentRunId"] = model.run_id  # shown nested under the training run in the MLflow UI
    mlflow.set_tags(tags | exclusions(result, "evaluate"))
    mlflow.log_params({k: v for k, v in summary.items() if k not in ("model_uri", "model_run_id")})
    for name, metrics in scores.items():  # named as the training run names them: the baseline a suffix
        suffix = "" if name == "model" else f"_{name}"
        each_period = name.startswith("seasonal_naive_")  # MASE only, as in training
        mlflow.log_metrics({f"{k}{suffix}": v for k, v in metrics.items() if k == "mase" or not each_period})
    per_step, per_series = by_step(result), by_series(result)
    for row in per_step.itertuples():
        mlflow.log_metrics({f"{name}_by_step": getattr(row, name) for name in
                            ("mase", "mase_seasonal_naive", "crps", "crps_seasonal_naive") if name in per_step},
                           step=int(row.step))
    id_column, target, times = model.data.id_column, series.frame[TARGET].to_numpy(), series.frame[TIME].to_numpy()
    table = pd.concat([series_columns(per_series[SERIES_ID], id_column), per_series.drop(columns=[SERIES_ID])], axis=1)
    mlflow.log_text(table.to_csv(index=False), "evaluation/per_series.csv")
    mlflow.log_text(per_step.to_csv(index=False), "evaluation/per_step.csv")
    log_frame(backtest_frame(result, times, id_column), "evaluation/forecasts.parquet")
    mlflow.log_figure(plot_error_by_step(per_step), "evaluation/error_by_step.png")
    if result.quantiles is not None and len(result.levels) > 1:
        mlflow.log_figure(plot_calibration(result, per_step), "evaluation/calibration.png")
    mlflow.log_figure(plot_best_and_worst(result, target, times, per_series, unit=model.data.target_column),
                      "evaluation/best_and_worst.png")
