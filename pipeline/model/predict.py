"""A network's forecasts for every window of a dataset, in batched calls without gradients: what backtests,
calibration and batch forecasting all run."""

from contextlib import nullcontext

import numpy as np
import torch

from pipeline.data.windows import Batch, WindowDataset
from pipeline.model.likelihoods import sample_paths
from pipeline.model.network import Forecaster


def predict(network: Forecaster, dataset: WindowDataset, batch_size: int, samples: int = 0,
            seed: int = 0, rows: np.ndarray | None = None) -> np.ndarray:
    """(n, H) scaled forecasts, or (n, H, Q) quantiles, for every window of a WindowDataset (or its windows
    `rows`), in batched calls on the network's device; with `samples` (a likelihood model), (n, samples, H)
    sample paths drawn from `seed`."""
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    outputs = []
    if samples:  # fewer windows a call: each becomes `samples` paths
        batch_size = max(1, batch_size // samples)
    # Paths drawn from `seed` alone, leaving the caller's random state as it was.
    cuda = [device.index or 0] if device.type == "cuda" else []
    rng = torch.random.fork_rng(devices=cuda) if samples else nullcontext()
    with torch.inference_mode(), rng:
        if samples:
            torch.manual_seed(seed)
        index = torch.arange(len(dataset)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        for first in range(0, len(index), batch_size):
            batch = Batch(*(part if part is None else part.to(device)
                            for part in dataset[index[first:first + batch_size]]))
            inputs = (batch.x, batch.future, batch.series, batch.lengths)
            out = sample_paths(network, *inputs, samples) if samples else network(*inputs)
            outputs.append(out.float().cpu())
    network.train(was_training)
    return torch.cat(outputs).numpy().astype("float64")
