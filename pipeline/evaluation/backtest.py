"""Rolling-origin backtests, in batched calls over every series and origin, scored beside naive and seasonal
naive: the training stage's on its validation and test blocks, and the evaluate stage's on any file; their
forecasts as a long table, and their scores by horizon step and by series."""

import numpy as np
import pandas as pd
import torch

from pipeline.data.features import build_inputs
from pipeline.data.ids import series_columns
from pipeline.data.scaling import Scaler
from pipeline.data.series import SERIES_ID, TARGET, TIME, Series, observed_targets
from pipeline.data.vintages import load_vintages, values_as_of
from pipeline.data.windows import WindowDataset, Windows, rolling_origins, series_starts
from pipeline.evaluation.metrics import (
    Backtest,
    history_rows,
    mase_scale,
    naive,
    point_metrics,
    quantile_metrics,
    residual_quantiles,
    seasonal_naive,
)
from pipeline.inference.batch import embedding_rows
from pipeline.inference.saved_model import SavedModel
from pipeline.model.network import Forecaster
from pipeline.model.predict import predict


def backtest(network: Forecaster, windows: Windows, seasons: list[int], block: str = "test",
             batch_size: int = 1024) -> Backtest:
    """Forecast every origin of the "test" (or "val") block of every series, each from data before its origin,
    beside seasonal naive of every period in `seasons`."""
    dataset = windows.test if block == "test" else windows.val_origins
    series_ids = [s.series_id for s in windows.splits]
    return score_windows(network, dataset, windows.target, windows.scaler, series_ids, seasons,
                         history_rows(windows.splits, block), batch_size, windows.observed)


def sample_paths_at(network: Forecaster, windows: Windows, rows: np.ndarray, samples: int, block: str = "test",
                    seed: int = 0) -> np.ndarray:
    """(len(rows), samples, H) sample paths, in original units, of a likelihood model from some origins of a
    block (rows of its backtest, in the backtest's order)."""
    dataset = windows.test if block == "test" else windows.val_origins
    _, series = dataset.windows.locate(torch.as_tensor(rows, dtype=torch.long))
    paths = predict(network, dataset, 1024, samples, seed, rows)
    return windows.scaler.inverse_target(paths, [windows.splits[i].series_id for i in series.tolist()])


def score_windows(network: Forecaster, dataset: WindowDataset, target: np.ndarray, scaler: Scaler,
                  series_ids: list[str], seasons: list[int], history: dict[str, slice], batch_size: int = 1024,
                  observed: np.ndarray | None = None) -> Backtest:
    """Forecasts of every window of `dataset` in original units, beside its actuals and the baselines: naive,
    and seasonal naive of each period in `seasons` (`seasonal_naive`: the strongest of them on these points).

    `target` is the original-unit target of the rows `dataset` indexes (`observed`: whether each was observed,
    None when all were); `series_ids` names its series numbers; `history[series]` are its rows before the block,
    which give its MASE scale and, for a quantile model, seasonal naive's interval at the model's levels.
    """
    starts, series = dataset.windows.locate(torch.arange(len(dataset)))
    origins = (starts + dataset.lookback).numpy()
    row_ids = [series_ids[i] for i in series.tolist()]
    horizon = len(dataset.steps) - dataset.lookback
    forecast = scaler.inverse_target(predict(network, dataset, batch_size), row_ids)
    quantiles = forecast if forecast.ndim == 3 else None
    targets = origins[:, None] + np.arange(horizon)
    each = {period: seasonal_naive(target, origins, horizon, period) for period in seasons}
    scales = {s: mase_scale(target[rows], min(seasons), None if observed is None else observed[rows])
              for s, rows in history.items()}
    result = Backtest(
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
    if quantiles is None:
        return result
    errors = {s: residual_quantiles(target[rows], result.season, horizon, network.quantiles,
                                    None if observed is None else observed[rows]) for s, rows in history.items()}
    result.seasonal_naive_quantiles = result.seasonal_naive[..., None] + np.stack([errors[s] for s in row_ids])
    return result


def backtest_frame(result: Backtest, times: np.ndarray, id_columns: list[str]) -> pd.DataFrame:
    """Every forecast of a backtest in long form, one row per (series, origin, step), in original units: what
    ensembles and later analyses read back (quantile columns q10, ... when the model has them). `observed` says
    whether the actual was in the file (false: filled, and not scored). Series are named by the user's id
    column(s), as the file wrote them."""
    rows, horizon = result.actual.shape
    ids = series_columns(pd.Series(np.repeat(result.series_ids, horizon)), id_columns)
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
    dataset = WindowDataset(inputs.values, windows, spec.lookback, spec.horizon, inputs.future_columns, None,
                            embedding_rows(spec, series_ids, series.source), known_ahead)
    target, observed = frame[TARGET].to_numpy(np.float64), observed_targets(frame)
    seasons = data.season
    firsts = windows.first.numpy() + spec.lookback
    history = {s: slice(a, b) for s, a, b in zip(series_ids, series_starts(sizes), firsts)}
    return score_windows(model.network, dataset, target, scaler, series_ids, seasons, history, observed=observed)


BASELINES = ("naive", "seasonal_naive")


def _columns(result: Backtest, scored: np.ndarray, rows: np.ndarray | slice, steps: slice) -> dict[str, float]:
    """Model metrics and the baselines' MASE for some rows and steps of a backtest, over its scored points."""
    scale, scored = result.mase_scale[rows], scored[rows, steps]
    metrics = point_metrics(result.actual[rows, steps], result.forecast[rows, steps], scale, scored)
    for name in BASELINES:
        metrics[f"mase_{name}"] = point_metrics(result.actual[rows, steps], getattr(result, name)[rows, steps],
                                                scale, scored)["mase"]
    if result.quantiles is not None:  # a quantile model's CRPS, beside seasonal naive's interval's
        metrics["crps"] = quantile_metrics(result.actual[rows, steps], result.quantiles[rows, steps],
                                           result.levels, scored)["crps"]
        metrics["crps_seasonal_naive"] = quantile_metrics(
            result.actual[rows, steps], result.seasonal_naive_quantiles[rows, steps], result.levels, scored)["crps"]
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
