"""Per-series scaling of the target and covariates, fitted on each series' training rows only."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from pipeline.data.series import SERIES_ID
from pipeline.errors import DataError


class SeriesRows(Protocol):
    """Where a series' rows are: what fit_scaler needs of a window Split."""

    series_id: str
    length: int
    train_length: int


def scaler_class(kind: str) -> type:
    """scikit-learn's scaler for data.scaler (imported here: forecasting with stored scales never needs it, and
    it costs every stage process most of a second)."""
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    return {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}[kind]


@dataclass
class Scaler:
    """Per-series affine scaling (x - center) / scale of the target and covariates, as plain numbers; with
    target_transform "log1p" the target is log(1 + y) before it (a positive series whose swings grow with its
    level), and forecasts come back through exp(.) - 1."""

    columns: list[str]
    center: dict[str, list[float]]
    scale: dict[str, list[float]]
    target_transform: str = "none"
    # Scaling `none` computes in the file's units; the range checks (pipeline/inference/range_checks.py) still
    # measure in each series' training standard deviations: these, fitted on the same rows. None otherwise.
    reference_center: dict[str, list[float]] | None = None
    reference_scale: dict[str, list[float]] | None = None

    def reference(self) -> "Scaler":
        """The scaling the range checks measure in: this one, or the standard one beside an identity."""
        if self.reference_center is None:
            return self
        return Scaler(self.columns, self.reference_center, self.reference_scale, self.target_transform)

    def target_units(self, values: np.ndarray, series_ids: list[str]) -> np.ndarray:
        """inverse_target's inverse: (B, H) or (B, H, Q) targets in original units -> this scaling's."""
        shape = (len(series_ids),) + (1,) * (values.ndim - 1)
        center = np.array([self.center[s][0] for s in series_ids]).reshape(shape)
        scale = np.array([self.scale[s][0] for s in series_ids]).reshape(shape)
        values = np.log1p(values) if self.target_transform == "log1p" else values
        return (values - center) / scale

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        codes, ids = pd.factorize(frame[SERIES_ID])
        unknown = [i for i in ids if i not in self.center]
        if unknown:
            raise DataError(f"series {str(unknown[0])[:60]!r} was not in the training data, so the scaler has no "
                            f"statistics for it; give only series the model was trained on")
        center = np.array([self.center[i] for i in ids])[codes]
        scale = np.array([self.scale[i] for i in ids])[codes]
        return (transformed(frame[self.columns].to_numpy(np.float64), self.target_transform, frame) - center) / scale

    def inverse_target(self, values: np.ndarray, series_ids: list[str]) -> np.ndarray:
        """(B, H) or (B, H, Q) scaled target of the given series -> original units."""
        shape = (len(series_ids),) + (1,) * (values.ndim - 1)
        center = np.array([self.center[s][0] for s in series_ids]).reshape(shape)
        scale = np.array([self.scale[s][0] for s in series_ids]).reshape(shape)
        values = values * scale + center
        return np.expm1(values) if self.target_transform == "log1p" else values


def transformed(values: np.ndarray, transform: str, frame: pd.DataFrame) -> np.ndarray:
    """`values` (rows, columns; the target first) with the target transformed; a negative target under log1p is
    refused naming its series (NaN, a filled gap's target before filling, passes through)."""
    if transform != "log1p":
        return values
    negative = values[:, 0] < 0
    if negative.any():
        series = frame[SERIES_ID].to_numpy()[negative.argmax()]
        raise DataError(f"series {series!r} has a negative target ({values[negative.argmax(), 0]:g}): "
                        f"data.transform=log1p needs values >= 0; set data.transform=none")
    values = values.copy()
    values[:, 0] = np.log1p(values[:, 0])
    return values


def fit_scaler(frame: pd.DataFrame, columns: list[str], splits: Sequence[SeriesRows], kind: str,
               target_transform: str = "none") -> Scaler:
    """One scikit-learn scaler per series, fitted on that series' training rows only (after target_transform).

    `frame` holds exactly the series of `splits`, in their order, without padding rows.
    """
    center, scale = {}, {}
    ones = np.ones((1, len(columns)))
    values = transformed(frame[columns].to_numpy(np.float64), target_transform, frame)
    starts = np.cumsum([0] + [split.length for split in splits])
    for split, row in zip(splits, starts):
        # scikit-learn gives a constant series scale 1, so nothing divides by zero.
        fitted = scaler_class("standard" if kind == "none" else kind)().fit(values[row:row + split.train_length])
        # Every scaler here is affine per column: read its intercept and slope back as center and scale.
        intercept = fitted.transform(0 * ones)[0]
        slope = fitted.transform(ones)[0] - intercept
        center[split.series_id] = (-intercept / slope).tolist()
        scale[split.series_id] = (1 / slope).tolist()
    if kind == "none":
        identity = {split.series_id: [0.0] * len(columns) for split in splits}
        return Scaler(columns, identity, {key: [1.0] * len(columns) for key in identity}, target_transform,
                      reference_center=center, reference_scale=scale)
    return Scaler(columns=columns, center=center, scale=scale, target_transform=target_transform)
