"""Forecast metrics and the baselines every model is reported beside: naive and seasonal naive.

Only observed actuals are scored: a target filled by data.gaps=fill or data.missing counts in no metric, and a
series with too few observed actuals in a backtest is left out of its averages (scored on fill it would flatter
the model). A series without a usable MASE scale gets no MASE rather than 0 or 1e12.
"""

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from pipeline.data.windows import Split

log = logging.getLogger(__name__)

# A series is scored in a backtest when at least this share of its actuals there were observed.
MIN_OBSERVED_SHARE = 0.5
# A MASE scale below this share of the series' mean absolute level is rounding error, not seasonal change (an
# exactly periodic series has ~1e-15): such a series gets no MASE.
SCALE_FLOOR = 1e-8


@dataclass
class Backtest:
    """Forecasts from rolling origins, in original units: one row per (series, origin), H columns."""

    series_ids: list[str]
    origins: np.ndarray       # (n,) row of the first forecast step in the stacked frame
    actual: np.ndarray        # (n, H)
    forecast: np.ndarray      # (n, H)
    seasonal_naive: np.ndarray  # (n, H) of the period `season`: the strongest here (see strongest_seasonal_naive)
    naive: np.ndarray         # (n, H)
    mase_scale: np.ndarray    # (n,) in-sample seasonal-naive MAE of the row's series before the block
    levels: list[float] = field(default_factory=list)  # quantile levels, when the model forecasts quantiles
    quantiles: np.ndarray | None = None  # (n, H, Q); `forecast` is then the median (or the level nearest it)
    # (n, H, Q) seasonal naive plus its series' in-sample error quantiles at `levels` (see residual_quantiles)
    seasonal_naive_quantiles: np.ndarray | None = None
    observed: np.ndarray | None = None  # (n, H) whether each actual was observed, not filled; None: all were
    season: int = 0           # the period of `seasonal_naive`
    seasonal_naives: dict[int, np.ndarray] = field(default_factory=dict)  # every period's (n, H), when several

    def rows(self, picks: np.ndarray | list[int]) -> "Backtest":
        """The same backtest restricted to some of its rows."""
        picks = np.asarray(picks)
        return Backtest(series_ids=[self.series_ids[i] for i in picks], origins=self.origins[picks],
                        actual=self.actual[picks], forecast=self.forecast[picks],
                        seasonal_naive=self.seasonal_naive[picks], naive=self.naive[picks],
                        mase_scale=self.mase_scale[picks], levels=self.levels,
                        quantiles=None if self.quantiles is None else self.quantiles[picks],
                        seasonal_naive_quantiles=None if self.seasonal_naive_quantiles is None
                        else self.seasonal_naive_quantiles[picks],
                        observed=None if self.observed is None else self.observed[picks], season=self.season,
                        seasonal_naives={p: f[picks] for p, f in self.seasonal_naives.items()})

    def strongest_seasonal_naive(self) -> "Backtest":
        """The same backtest whose `seasonal_naive` is the period scoring the lowest MASE on these very points
        (the first on a tie): chosen in hindsight, the hardest comparison for the model; hourly counts can repeat
        last week better than yesterday, and a model beside the weaker naive would look better than it is."""
        if not self.seasonal_naives:
            return self
        scored = self.scored()
        mase = {period: point_metrics(self.actual, forecast, self.mase_scale, scored)["mase"]
                for period, forecast in self.seasonal_naives.items()}
        best = min(mase, key=lambda period: np.nan_to_num(mase[period], nan=np.inf))
        return replace(self, seasonal_naive=self.seasonal_naives[best], season=best)

    def rows_by_series(self) -> dict[str, np.ndarray]:
        """Each series' row numbers, in order of first appearance (one pass, however many series)."""
        return dict(pd.Series(self.series_ids).groupby(self.series_ids, sort=False).indices)

    def thin_series(self) -> list[str]:
        """Series with under MIN_OBSERVED_SHARE of their actuals here observed: left out of every average."""
        if self.observed is None:
            return []
        share = pd.Series(self.observed.mean(axis=1)).groupby(self.series_ids, sort=False).mean()
        return [str(s) for s in share.index[share < MIN_OBSERVED_SHARE]]

    def unscaled_series(self) -> list[str]:
        """Series without a MASE scale (see mase_scale)."""
        return list(dict.fromkeys(np.asarray(self.series_ids)[~np.isfinite(self.mase_scale)].tolist()))

    def scored(self) -> np.ndarray:
        """(n, H) the points every metric counts: observed actuals of the series that are not thin."""
        scored = np.ones(self.actual.shape, bool) if self.observed is None else self.observed.copy()
        thin = self.thin_series()
        if thin:
            scored[np.isin(self.series_ids, thin)] = False
        return scored


def point_metrics(actual: np.ndarray, forecast: np.ndarray, mase_scale: np.ndarray,
                  scored: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE, sMAPE (percent, 0-200) and MASE over every scored (row, step) (all when `scored` is None);
    rows are (n, H). MASE skips rows whose series has no scale (NaN); a metric with nothing to count is NaN."""
    scored = np.ones(actual.shape, bool) if scored is None else scored
    error = np.abs(forecast - actual)
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(error, denominator, out=np.zeros_like(error), where=denominator > 0)
    scaled = scored & np.isfinite(mase_scale)[:, None]
    return {
        "mae": _mean(error[scored]),
        "rmse": float(np.sqrt(_mean(error[scored] ** 2))),
        "smape": 200 * _mean(ratio[scored]),
        "mase": _mean(error[scaled] / np.broadcast_to(mase_scale[:, None], error.shape)[scaled]),
    }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def interval_name(levels: list[float], lo: int) -> str:
    """The central interval of levels[lo] and its mirror, by percent: "10_90" for 0.1 and 0.9."""
    return f"{100 * levels[lo]:g}_{100 * levels[len(levels) - 1 - lo]:g}"


def nominal_name(levels: list[float], lo: int) -> str:
    """The central interval of levels[lo] and its mirror by its nominal coverage: "80" for 0.1 and 0.9."""
    return f"{100 * (levels[len(levels) - 1 - lo] - levels[lo]):.4g}"


def pinball(actual: np.ndarray, quantiles: np.ndarray, levels: list[float]) -> np.ndarray:
    """(...,) actuals and (..., Q) quantiles -> (..., Q) pinball losses."""
    error = actual[..., None] - quantiles
    q = np.asarray(levels)
    return np.maximum(q * error, (q - 1) * error)


def quantile_metrics(actual: np.ndarray, quantiles: np.ndarray, levels: list[float],
                     scored: np.ndarray | None = None) -> dict[str, float]:
    """Proper scores of quantile forecasts over the scored points (all when `scored` is None):

    - quantile_loss: the mean pinball loss over every point and level;
    - crps: CRPS by its quantile decomposition, CRPS = 2 * integral over q of the pinball loss, estimated by twice
      the mean pinball loss over the levels (exact as the levels fill (0, 1) evenly; with 0.1, 0.5, 0.9 an estimate
      that weighs the tails as those levels do), in the target's units;
    - wql: the weighted quantile loss of GluonTS and M5, 2 * sum of pinball losses / sum of |actual| per level,
      averaged over the levels (scale-free; NaN when every actual is 0);
    - coverage_80, width_80 (each central interval, levels q and 1 - q paired from the outside in, named by its
      nominal coverage): the share of actuals inside it, and its mean width in the target's units.
    """
    scored = np.ones(actual.shape, bool) if scored is None else scored
    actual, quantiles = actual[scored], quantiles[scored]
    loss = pinball(actual, quantiles, levels)
    total = np.abs(actual).sum()
    metrics = {"quantile_loss": _mean(loss), "crps": 2 * _mean(loss),
               "wql": float(np.mean(2 * loss.sum(axis=0) / total)) if total > 0 and loss.size else float("nan")}
    for i in range(len(levels) // 2):
        lo, hi = quantiles[..., i], quantiles[..., len(levels) - 1 - i]
        name = nominal_name(levels, i)
        metrics[f"coverage_{name}"] = _mean((actual >= lo) & (actual <= hi))
        metrics[f"width_{name}"] = _mean(hi - lo)
    return metrics


def crps_from_samples(actual: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """(...,) actuals and (..., S) samples -> (...,) CRPS by the energy form E|X - y| - E|X - X'| / 2 (Gneiting &
    Raftery, 2007) over the empirical distribution of the samples, in O(S log S) per point through the sorted
    samples: E|X - X'| = 2 / S^2 * sum_i (2i - S - 1) x_(i)."""
    s = samples.shape[-1]
    ordered = np.sort(samples, axis=-1)
    spread = 2 / s**2 * (ordered * (2 * np.arange(1, s + 1) - s - 1)).sum(axis=-1)
    return np.abs(samples - actual[..., None]).mean(axis=-1) - spread / 2


def residual_quantiles(history: np.ndarray, season: int, horizon: int, levels: list[float],
                       observed: np.ndarray | None = None) -> np.ndarray:
    """(H, Q) empirical quantiles of a series' in-sample seasonal-naive errors at each horizon step: the interval
    every probabilistic paper puts beside its model (step h repeats the value k = h // season + 1 seasons back, so
    its errors are y_t - y_(t - k * season) over the history; pairs of observed values only). NaN where the
    history holds no such pair."""
    history = np.asarray(history, np.float64)
    out = np.full((horizon, len(levels)), np.nan)
    for k in range(1, (horizon - 1) // season + 2):
        lag = k * season
        errors = history[lag:] - history[:-lag]
        if observed is not None:
            errors = errors[observed[lag:] & observed[:-lag]]
        if errors.size:
            out[(k - 1) * season:k * season] = np.quantile(errors, levels)
    return out


def naive(target: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n,) origins -> (n, H): the last observed value, repeated."""
    return np.repeat(target[origins - 1][:, None], horizon, axis=1)


def seasonal_naive(target: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(n,) origins -> (n, H): each step repeats the value one (or more) seasons before it."""
    steps = np.arange(horizon)
    return target[origins[:, None] + steps - season * (steps // season + 1)]


def history_rows(splits: list[Split], block: str = "test") -> dict[str, slice]:
    """Per series: its rows before the "val" or "test" block's first origin, from which the MASE scale and the
    seasonal-naive residual quantiles are read, as the evaluate stage reads a file's history: one definition, so
    the same forecasts score the same in both stages."""
    return {s.series_id: slice(s.first, s.val_start if block == "val" else s.test_start) for s in splits}


def mase_scale(history: np.ndarray, season: int, observed: np.ndarray | None = None) -> float:
    """Mean |y_t - y_(t - season)| over a series' history, pairs of observed values only: its in-sample
    seasonal-naive error. NaN (no MASE) when that is zero or below SCALE_FLOOR of the series' level: an all-zero
    or exactly periodic series, whose MASE would read 0/0 as perfect or rounding error as a 1e12 failure."""
    history = np.asarray(history, np.float64)
    pairs = np.abs(history[season:] - history[:-season])
    level = np.abs(history)
    if observed is not None:
        pairs, level = pairs[observed[season:] & observed[:-season]], level[observed]
    scale = _mean(pairs)
    return scale if scale > SCALE_FLOOR * _mean(level) else float("nan")


def backtest_metrics(result: Backtest) -> dict[str, dict[str, float]]:
    """The model's metrics beside naive's and seasonal naive's, on the same origins and scored points."""
    scored = result.scored()
    model = point_metrics(result.actual, result.forecast, result.mase_scale, scored)
    baseline = point_metrics(result.actual, result.seasonal_naive, result.mase_scale, scored)
    if result.quantiles is not None:
        model |= quantile_metrics(result.actual, result.quantiles, result.levels, scored)
    if result.seasonal_naive_quantiles is not None:
        baseline |= quantile_metrics(result.actual, result.seasonal_naive_quantiles, result.levels, scored)
    return {
        "model": model,
        "naive": point_metrics(result.actual, result.naive, result.mase_scale, scored),
        "seasonal_naive": baseline,
    } | {f"seasonal_naive_{period}": point_metrics(result.actual, forecast, result.mase_scale, scored)
         for period, forecast in result.seasonal_naives.items()}


def exclusions(result: Backtest, block: str) -> dict[str, int]:
    """What a backtest left out of its scores, as tags (`val.points_excluded`, ...), each series named in a
    warning: filled actuals, series with too few observed actuals, series without a MASE scale."""
    thin, unscaled = result.thin_series(), result.unscaled_series()
    too_filled = (f"under {MIN_OBSERVED_SHARE:.0%} of their actuals observed (the rest filled by "
                  f"data.gaps/data.missing): left out of the {block} scores")
    flat = f"no in-sample seasonal change to scale by (constant or exactly periodic): no {block} MASE"
    for series, why in ((thin, too_filled), (unscaled, flat)):
        if series:
            log.warning("%d series with %s: %s", len(series), why,
                        ", ".join(map(repr, series[:10])) + (" ..." if len(series) > 10 else ""))
    return {f"{block}.points_excluded": int((~result.scored()).sum()), f"{block}.series_too_filled": len(thin),
            f"{block}.series_without_mase": len(unscaled)}
