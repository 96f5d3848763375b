"""Rolling-origin backtests: the training stage's on its validation and test blocks, and the evaluate stage's
on any file, both in batched calls over every series and origin. Conformal calibration of intervals.

    python -m pipeline.evaluate run_id=<training run> [data.path=new.parquet] [evaluate.origins=28]
"""

import logging

import hydra
import mlflow
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from pipeline import tracking
from pipeline.cli import finish
from pipeline.config import CONF_DIR, EvaluateConfig, to_config
from pipeline.errors import ConfigError
from pipeline.features import build_inputs
from pipeline.forecasting import check_time_zone, embedding_rows, predict
from pipeline.ids import SERIES_ID, series_columns
from pipeline.load import TARGET, TIME, Series, load_series, observed_targets
from pipeline.metrics import (
    Backtest,
    backtest_metrics,
    exclusions,
    interval_name,
    mase_scale,
    mase_scales,
    naive,
    point_metrics,
    seasonal_naive,
)
from pipeline.network import RecurrentNetwork
from pipeline.plots import plot_best_and_worst, plot_error_by_step, plot_forecasts, plot_residuals, plot_scores
from pipeline.saved_model import SavedModel, load_model
from pipeline.scaling import Scaler
from pipeline.times import season_list
from pipeline.vintages import load_vintages, values_as_of
from pipeline.window import WindowBatches, Windows, rolling_origins, series_starts

log = logging.getLogger(__name__)


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
    targets = (starts + windows.lookback).unsqueeze(1) + torch.arange(windows.horizon)
    actual = windows.values[targets, 0].numpy()
    observed = np.ones(actual.shape, bool) if windows.observed is None else windows.observed[targets.numpy()]
    levels, offsets, named = network.quantiles, np.zeros(len(network.quantiles)), {}
    for lo in range(len(levels) // 2):
        hi = len(levels) - 1 - lo
        scores = np.maximum(forecast[..., lo] - actual, actual - forecast[..., hi])[observed]
        coverage = min(1.0, (levels[hi] - levels[lo]) * (1 + 1 / scores.size))
        offsets[hi] = float(np.quantile(scores, coverage, method="higher"))
        offsets[lo] = -offsets[hi]
        named[interval_name(levels, lo)] = offsets[hi]
    network.interval_offsets.copy_(torch.from_numpy(offsets))
    return named


def backtest(network: RecurrentNetwork, windows: Windows, seasons: list[int], block: str = "test",
             batch_size: int = 1024) -> Backtest:
    """Forecast every origin of the "test" (or "val") block of every series, each from data before its origin,
    beside seasonal naive of every period in `seasons`."""
    dataset = windows.test if block == "test" else windows.val_origins
    series_ids = [s.series_id for s in windows.splits]
    return score_windows(network, dataset, windows.target, windows.scaler, series_ids, seasons,
                         mase_scales(windows.target, windows.splits, min(seasons), windows.observed, block),
                         batch_size, windows.observed)


def score_windows(network: RecurrentNetwork, dataset: WindowBatches, target: np.ndarray, scaler: Scaler,
                  series_ids: list[str], seasons: list[int], scales: dict[str, float], batch_size: int = 1024,
                  observed: np.ndarray | None = None) -> Backtest:
    """Forecasts of every window of `dataset` in original units, beside its actuals and the baselines: naive,
    and seasonal naive of each period in `seasons` (`seasonal_naive`: the strongest of them on these points).

    `target` is the original-unit target of the rows `dataset` indexes (`observed`: whether each was observed,
    None when all were); `series_ids` names its series numbers; MASE scales by `scales[series]`.
    """
    starts, series = dataset.windows.locate(torch.arange(len(dataset)))
    origins = (starts + dataset.lookback).numpy()
    row_ids = [series_ids[i] for i in series.tolist()]
    horizon = len(dataset.steps) - dataset.lookback
    forecast = scaler.inverse_target(predict(network, dataset, batch_size), row_ids)
    quantiles = forecast if forecast.ndim == 3 else None
    targets = origins[:, None] + np.arange(horizon)
    each = {period: seasonal_naive(target, origins, horizon, period) for period in seasons}
    return Backtest(
        series_ids=row_ids,
        origins=origins,
        actual=target[targets],
        forecast=forecast[..., network.median] if quantiles is not None else forecast,
        seasonal_naive=each[seasons[0]],
        naive=naive(target, origins, horizon),
        mase_scale=np.array([scales[s] for s in row_ids]),
        levels=network.quantiles,
        quantiles=quantiles,
        observed=None if observed is None else observed[targets],
        season=seasons[0],
        seasonal_naives=each if len(seasons) > 1 else {},
    ).strongest_seasonal_naive()


def backtest_frame(result: Backtest, times: np.ndarray, id_column: str | list[str] | None) -> pd.DataFrame:
    """Every forecast of a backtest in long form, one row per (series, origin, step), in original units: what
    ensembles and later analyses read back (quantile columns q10, ... when the model has them). `observed` says
    whether the actual was in the file (false: filled, and not scored). Series are named by the user's id
    column(s), as the file wrote them."""
    rows, horizon = result.actual.shape
    ids = series_columns(pd.Series(np.repeat(result.series_ids, horizon)), id_column)
    columns = {"origin": np.repeat(times[result.origins], horizon),
               "step": np.tile(np.arange(1, horizon + 1), rows),
               "actual": result.actual.ravel(),
               "observed": np.ones(result.actual.size, bool) if result.observed is None else result.observed.ravel(),
               "forecast": result.forecast.ravel(),
               "naive": result.naive.ravel(), "seasonal_naive": result.seasonal_naive.ravel(),
               "mase_scale": np.repeat(result.mase_scale, horizon)}
    if result.quantiles is not None:
        columns |= {f"q{100 * level:g}": result.quantiles[..., i].ravel() for i, level in enumerate(result.levels)}
    return pd.concat([ids, pd.DataFrame(columns)], axis=1)


def backtest_and_log(network: RecurrentNetwork, windows: Windows, seasons: list[int],
                     id_column: str | list[str] | None, unit: str = "target") -> dict[str, dict]:
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
        tracking.log_frame(backtest_frame(result, windows.times, id_column), f"backtest/{block}.parquet")
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
        mlflow.log_metrics({"test_mase_by_step": row.mase}, step=int(row.step))
    mlflow.log_figure(plot_error_by_step(per_step), "error_by_step.png")
    mlflow.log_figure(plot_residuals(test, windows.times, test.scored(), unit), "residuals.png")
    mlflow.log_figure(plot_forecasts(test, windows.target, windows.times, unit=unit), "forecasts.png")
    # The run page's description, the first thing it shows: the scores beside seasonal naive.
    mase = {block: (scores[block]["model"]["mase"], scores[block]["seasonal_naive"]["mase"]) for block in scores}
    mlflow.set_tag("mlflow.note.content", "MASE {:.3f} on the test block against seasonal naive's {:.3f} (validation: "
                   "{:.3f} against {:.3f}; seasonal naive of the strongest period on each block); scores.png and "
                   "learning_curves.png under Artifacts".format(*mase["test"], *mase["val"]))
    return scores


# -- the evaluate stage ----------------------------------------------------------------------------------------


def evaluate(cfg: EvaluateConfig) -> dict:
    """Backtest a tracked model on a file (no refit) and log the result as a run linked to the model's run."""
    if not cfg.run_id and not cfg.model_uri:
        raise ConfigError("give run_id=<training run> or model_uri=<MLflow model URI> to evaluate")
    model_uri = cfg.model_uri or f"runs:/{cfg.run_id}/model"
    model = load_model(model_uri, cfg.tracking)
    data = model.data
    data.path, data.time_zone = cfg.data.path or data.path, cfg.data.time_zone or data.time_zone
    series = load_series(data)
    check_time_zone(model.spec, series.time_zone, data.time_column, data.path)
    step = cfg.evaluate.step or model.spec.horizon
    result = backtest_file(model, series, cfg.evaluate.origins, step)
    times = series.frame[TIME].to_numpy()
    summary = {"model_uri": model_uri, "model_run_id": model.run_id, "data": data.path,
               "origins": int(len(result.origins)), "series": len(result.rows_by_series()), "step": step,
               "first_origin": str(pd.Timestamp(times[result.origins.min()])),
               "last_origin": str(pd.Timestamp(times[result.origins.max()]))}
    scores = backtest_metrics(result)
    with tracking.start_run(cfg.tracking) as run:
        log_evaluation(cfg.tracking.experiment, model, model_uri, summary, scores, result, series)
    log.info("MASE %.4f (naive %.4f, seasonal naive %.4f) over %d origins of %d series",
             scores["model"]["mase"], scores["naive"]["mase"], scores["seasonal_naive"]["mase"],
             summary["origins"], summary["series"])
    return summary | {"run_id": run.info.run_id} | {name: scores[name] for name in scores}


def backtest_file(model: SavedModel, series: Series, origins: int, step: int) -> Backtest:
    """Up to `origins` origins per series, `step` apart and ending with the file, each forecast from the
    `lookback` rows before it; MASE scaled by each series' in-sample seasonal-naive error before its first
    origin (no peeking ahead)."""
    spec, data, frame = model.spec, model.data, series.frame
    sizes = frame.groupby(SERIES_ID, sort=False, observed=True).size()
    series_ids = [str(s) for s in sizes.index]
    windows = rolling_origins(sizes, spec.lookback, spec.horizon, origins, step, series.source)
    scaler = Scaler(**spec.scaler)
    inputs = build_inputs(frame, scaler, data.freq, data.calendar, len(data.covariates))
    known_ahead = None
    if data.vintages:  # the known-future values each origin had, from the model's data.vintages file
        starts, numbers = windows.locate(torch.arange(len(windows)))
        known_ahead = values_as_of(load_vintages(data), starts, numbers, spec.lookback, spec.horizon,
                                   frame[TIME].to_numpy(), series_ids, scaler)
    dataset = WindowBatches(inputs.values, windows, spec.lookback, spec.horizon, inputs.future_columns, None,
                            embedding_rows(spec, series_ids, series.source), known_ahead)
    target, observed = frame[TARGET].to_numpy(np.float64), observed_targets(frame)
    seasons = season_list(data.season)
    firsts = windows.first.numpy() + spec.lookback
    scales = {s: mase_scale(target[a:b], min(seasons), None if observed is None else observed[a:b])
              for s, a, b in zip(series_ids, series_starts(sizes), firsts)}
    return score_windows(model.network, dataset, target, scaler, series_ids, seasons, scales, observed=observed)


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
        mlflow.log_metrics({"mase_by_step": row.mase, "mase_seasonal_naive_by_step": row.mase_seasonal_naive},
                           step=int(row.step))
    id_column, target, times = model.data.id_column, series.frame[TARGET].to_numpy(), series.frame[TIME].to_numpy()
    table = pd.concat([series_columns(per_series[SERIES_ID], id_column), per_series.drop(columns=[SERIES_ID])], axis=1)
    mlflow.log_text(table.to_csv(index=False), "evaluation/per_series.csv")
    mlflow.log_text(per_step.to_csv(index=False), "evaluation/per_step.csv")
    tracking.log_frame(backtest_frame(result, times, id_column), "evaluation/forecasts.parquet")
    mlflow.log_figure(plot_error_by_step(per_step), "evaluation/error_by_step.png")
    mlflow.log_figure(plot_best_and_worst(result, target, times, per_series, unit=model.data.target_column),
                      "evaluation/best_and_worst.png")


BASELINES = ("naive", "seasonal_naive")


def _columns(result: Backtest, scored: np.ndarray, rows: np.ndarray | slice, steps: slice) -> dict[str, float]:
    """Model metrics and the baselines' MASE for some rows and steps of a backtest, over its scored points."""
    scale, scored = result.mase_scale[rows], scored[rows, steps]
    metrics = point_metrics(result.actual[rows, steps], result.forecast[rows, steps], scale, scored)
    for name in BASELINES:
        metrics[f"mase_{name}"] = point_metrics(result.actual[rows, steps], getattr(result, name)[rows, steps],
                                                scale, scored)["mase"]
    return metrics


def by_step(result: Backtest) -> pd.DataFrame:
    """One row per horizon step (1 = the first step after the origin)."""
    horizon, scored = result.actual.shape[1], result.scored()
    return pd.DataFrame([{"step": h + 1} | _columns(result, scored, slice(None), slice(h, h + 1))
                         for h in range(horizon)])


def by_series(result: Backtest) -> pd.DataFrame:
    """One row per series, best MASE first (series left out of the scores last, with NaN)."""
    scored = result.scored()
    rows = [{"series_id": s, "origins": len(picks)} | _columns(result, scored, picks, slice(None))
            for s, picks in result.rows_by_series().items()]
    return pd.DataFrame(rows).sort_values("mase", kind="stable").reset_index(drop=True)


@hydra.main(config_path=CONF_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    finish(lambda: evaluate(to_config(cfg)), cfg.tracking.uri)


if __name__ == "__main__":
    main()
