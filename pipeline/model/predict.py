"""A network's forecasts for every window of a dataset, in batched calls without gradients: what backtests,
calibration and batch forecasting all run."""

import numpy as np
import torch

from pipeline.data.windows import Batch, WindowDataset
from pipeline.model.network import Forecaster


def predict(network: Forecaster, dataset: WindowDataset, batch_size: int) -> np.ndarray:
    """(n, H) scaled forecasts, or (n, H, Q) quantiles, for every window of a WindowDataset, in batched calls on
    the network's device."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    outputs = []
    with torch.inference_mode():
        for first in range(0, len(dataset), batch_size):
            batch = Batch(*(part if part is None else part.to(device) for part in dataset[first:first + batch_size]))
            outputs.append(network(batch.x, batch.future, batch.series, batch.lengths).float().cpu())
    network.train(was_training)
    return torch.cat(outputs).numpy().astype("float64")
