"""Export a tracked model for small devices: ONNX (onnxruntime) or TorchScript (torch.jit), no pipeline needed.

    python -m pipeline.export run_id=<training run> format=onnx

The exported graph maps scaled inputs to scaled forecasts: x (B, lookback, F) rows of scaled target, scaled past
covariates and calendar features, and future (B, horizon, K) calendar features of the steps to forecast, to
(B, horizon) or (B, horizon, Q) quantiles. A model that looks each series up (static attributes, a series embedding)
takes a third input, series (B,) int64: each window's series row, its place in model_spec.json's series_ids; the
attributes of every training series are in the graph. inputs.json beside it names the features of x and future in
order, and the inputs; model_spec.json holds the scaler.
"""

import json
import logging
import statistics
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import hydra
import mlflow
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import nn

from pipeline.cli import command, finish
from pipeline.config import CONF_DIR, ExportConfig, ExportFormat, to_config
from pipeline.errors import ConfigError
from pipeline.inference.model_format import SPEC_FILE
from pipeline.inference.saved_model import load_model
from pipeline.model.network import Forecaster

log = logging.getLogger(__name__)
FILES = {ExportFormat.onnx: "model.onnx", ExportFormat.torchscript: "model.pt"}
INPUTS_FILE = "inputs.json"


class ExportedGraph(nn.Module):
    """The network as a function of (x, future) alone: what the exported graph computes."""

    def __init__(self, network: Forecaster):
        super().__init__()
        self.network = network.eval()

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.network(x, future)


class ExportedGraphBySeries(ExportedGraph):
    """The network as a function of (x, future, series rows): a model that looks each series up."""

    def forward(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor) -> torch.Tensor:
        return self.network(x, future, series)


def series_count(network: Forecaster) -> int:
    """How many training series the network looks up by row; 0 when it reads none (two inputs, not three)."""
    if network.static is not None:
        return int(network.static.codes.shape[0])
    return network.embedding.num_embeddings if network.embedding is not None else 0


def example_inputs(network: Forecaster, lookback: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    inputs = (torch.randn(batch, lookback, network.n_features, generator=generator),
              torch.randn(batch, network.horizon, network.n_future, generator=generator))
    count = series_count(network)
    return inputs + ((torch.randint(0, count, (batch,), generator=generator),) if count else ())


def export_network(network: Forecaster, lookback: int, fmt: ExportFormat, path: Path) -> None:
    """Write the graph; the batch size stays free (traced with 2, run with any)."""
    if network.likelihood is not None and (network.likelihood.name == "negative_binomial"
                                           or hasattr(network, "members")):
        raise ConfigError(f"model.likelihood={network.likelihood.name}: this model reads its quantiles from random "
                          "draws (of a negative binomial, or of an ensemble's mixture), which an exported graph "
                          "cannot take; forecast it with the pipeline, or export one normal or student_t network "
                          "(model.ensemble=1)")
    by_series = bool(series_count(network))
    wrapper = ExportedGraphBySeries(network) if by_series else ExportedGraph(network)
    inputs = example_inputs(network, lookback, batch=2)
    names = ["x", "future", "series"][:len(inputs)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the Python loops it unrolls
        if fmt == ExportFormat.torchscript:
            # Frozen: weights become constants, so users get plain tensors (no autograd) from the file.
            torch.jit.freeze(torch.jit.trace(wrapper, inputs, check_trace=False).eval()).save(str(path))
        else:
            # The TorchScript-based exporter: it maps nn.LSTM/GRU/RNN to ONNX recurrent ops with a free batch
            # axis; the dynamo exporter (torch 2.13) fixed the batch size of the recurrent layers.
            torch.onnx.export(wrapper, inputs, str(path), dynamo=False, input_names=names,
                              output_names=["forecast"],
                              dynamic_axes={name: {0: "batch"} for name in [*names, "forecast"]})


def load_runner(fmt: ExportFormat, path: Path):
    """A callable over numpy arrays (x, future[, series]), using only the runtime of the format."""
    if fmt == ExportFormat.torchscript:
        graph = torch.jit.load(str(path))
        return lambda *inputs: graph(*(torch.from_numpy(i) for i in inputs)).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *inputs: session.run(None, dict(zip(names, inputs)))[0]


def check_export(network: Forecaster, lookback: int, fmt: ExportFormat, path: Path) -> dict[str, float]:
    """Largest difference from PyTorch on a batch of 5 (not the traced size), size, and one forecast's latency."""
    run = load_runner(fmt, path)
    inputs = example_inputs(network, lookback, batch=5, seed=1)
    with torch.no_grad():
        expected = network.eval()(*inputs).numpy()
    got = run(*(i.numpy() for i in inputs))
    one = tuple(i[:1].numpy() for i in inputs)
    run(*one)
    times = []
    for _ in range(30):
        started = time.perf_counter()
        run(*one)
        times.append(time.perf_counter() - started)
    return {"max_abs_diff": float(np.max(np.abs(got - expected))), "size_bytes": path.stat().st_size,
            "latency_ms": 1000 * statistics.median(times)}


def export(cfg: ExportConfig, output_dir: Path) -> dict:
    if not cfg.run_id and not cfg.model_uri:
        raise ConfigError("give run_id=<training run> or model_uri=<MLflow model URI> to export")
    model = load_model(cfg.model_uri or f"runs:/{cfg.run_id}/model", cfg.tracking)
    spec, network = model.spec, model.network
    run_id = cfg.run_id or model.run_id
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / FILES[cfg.format]
    export_network(network, spec.lookback, cfg.format, path)
    spec_path = output_dir / SPEC_FILE
    spec_path.write_text(json.dumps(asdict(spec), indent=1))
    # What a caller without the pipeline needs to build the inputs: names in order, shapes, units.
    inputs_path = output_dir / INPUTS_FILE
    rows = {"series": f"(B,) int64: each window's series row, its index in {SPEC_FILE}'s series_ids (the series' "
                      "static attributes and embedding are in the graph)"} if series_count(network) else {}
    inputs_path.write_text(json.dumps(model.features | rows | {
        "lookback": spec.lookback, "horizon": spec.horizon, "quantiles": network.quantiles,
        "scaling": f"scaled columns are (value - center) / scale, per series: {SPEC_FILE}'s scaler (columns "
                   f"{model.spec.scaler['columns']}); the forecast is scaled like the target" + (
                       "; the target is log(1 + value) before scaling, and a forecast y comes back as exp(y) - 1"
                       if model.spec.scaler.get("target_transform") == "log1p" else "")}, indent=1))
    checks = check_export(network, spec.lookback, cfg.format, path)
    if checks["max_abs_diff"] > 1e-4:
        raise RuntimeError(f"the {cfg.format.value} export differs from PyTorch by {checks['max_abs_diff']:.2e}; "
                           f"not logged")
    with mlflow.start_run(run_id=run_id):
        for artifact in (path, spec_path, inputs_path):
            mlflow.log_artifact(str(artifact), f"export/{cfg.format.value}")
        mlflow.log_metrics({f"export_{cfg.format.value}_{k}": v for k, v in checks.items()})
    return {"run_id": run_id, "format": cfg.format.value, "path": str(path)} | checks


@hydra.main(config_path=CONF_DIR, config_name="export", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    finish(lambda: export(to_config(cfg), Path(HydraConfig.get().runtime.output_dir)), cfg.tracking.uri,
           experiment=cfg.tracking.experiment)


def main() -> None:
    command("export", hydra_main)


if __name__ == "__main__":
    main()
