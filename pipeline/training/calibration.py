"""Intervals calibrated after training: conformalized quantile regression on the validation block."""

import numpy as np
import torch

from pipeline.data.windows import Windows
from pipeline.evaluation.metrics import interval_name
from pipeline.model.network import Forecaster
from pipeline.model.predict import predict


def calibrate_intervals(network: Forecaster, windows: Windows, batch_size: int = 1024) -> dict[str, float]:
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
