"""The training stage: load -> window -> fit -> backtest on the test block -> MLflow.

    python -m pipeline.train model=gru trainer.max_steps=200
"""

import contextlib
import inspect
import json
import logging
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from pipeline import tracking
from pipeline.cli import finish
from pipeline.config import Config, ConfigError, ModelConfig, WindowConfig, to_config, trainer_kwargs
from pipeline.distributed import ShardWindows, check_distributed, is_rank_zero
from pipeline.evaluate import backtest, backtest_frame, calibrate_intervals
from pipeline.metrics import backtest_metrics
from pipeline.models import Forecaster
from pipeline.parquet_folder import load_windows
from pipeline.plots import plot_forecasts
from pipeline.resume import OUTPUT_DIR, STAGE, ExactResume, Resume, refuse_other_overrides
from pipeline.resume import plan as plan_resume
from pipeline.run_lifetime import Terminated, TrainingDiverged
from pipeline.saved_model import SavedModel, input_example, log_model, model_spec, write_model
from pipeline.search import search
from pipeline.training_logger import lightning_logger
from pipeline.window import Windows, batches

log = logging.getLogger(__name__)


def train(cfg: Config, trainer_args: dict[str, Any], resolved: dict[str, Any], output_dir: Path,
          extra_callbacks: Sequence[L.Callback] = (), resume: Resume | None = None,
          run_tags: dict[str, str] | None = None) -> dict:
    """Train, keep the best checkpoint by validation loss, backtest it; returns the run's summary.

    `resume` continues an interrupted run from its last checkpoint, in its MLflow run and output folder
    (pipeline/resume.py). `run_tags` go on a new run (a sweep's, from sweep_tags). `extra_callbacks` join the
    stage's own (the speed benchmark times steps with one)."""
    check_trainer_args(trainer_args)
    trainer_args = trainer_args | {"precision": resolve_precision(trainer_args, cfg.model.cell)}
    L.seed_everything(cfg.seed, workers=True)
    # Tiny gradients through long recurrences turn denormal and slow CPU kernels several-fold.
    torch.set_flush_denormal(True)
    series, windows = load_windows(cfg.data, cfg.window, cfg.split, output_dir)
    module = build_module(cfg, windows, series.season)
    train_batches = batches(windows.train, cfg.window.batch_size, shuffle=True, seed=cfg.seed)
    val_batches = batches(windows.val, cfg.window.batch_size, shuffle=False)
    checkpoints = ModelCheckpoint(dirpath=output_dir / "checkpoints", monitor="val_loss", mode="min",
                                  save_top_k=1, filename="best-{step}")
    rank_zero = is_rank_zero()
    callbacks = [checkpoints, ExactResume(train_batches.sampler),
                 ShardWindows(train_batches.sampler, val_batches.sampler), *extra_callbacks]
    if rank_zero:  # the only process with a logger
        callbacks.append(LearningRateMonitor("step"))
    if cfg.optim.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.optim.patience))
    trainer = build_trainer(trainer_args, callbacks, output_dir)
    run_tags = run_tags or {}
    shares = check_distributed(trainer, cfg.window.batch_size, in_sweep="sweep" in run_tags,
                               in_search="sweep.trial" in run_tags)
    trainer.callbacks += resume_checkpoints(output_dir / "checkpoints", trainer_args,
                                            train_batches.sampler.batches_per_epoch(trainer.world_size))
    if not rank_zero:
        # Another process of a distributed training: it trains its share of each batch; rank zero tracks,
        # evaluates and writes everything.
        fit(trainer, module, train_batches, val_batches, resume)
        return {}
    with tracking.start_run(cfg.tracking, resume.run_id if resume else None) as run:
        if resume is None:
            tracking.log_config(resolved, OmegaConf.to_yaml(resolved))
            mlflow.log_params(shares)
            # What trainer.precision=auto resolved to on this machine; where resume finds the checkpoints.
            mlflow.set_tags({"precision": trainer_args["precision"], STAGE: "train",
                             OUTPUT_DIR: str(output_dir.resolve())} | run_tags)
            tracking.log_data_report(series, windows)
        else:
            mlflow.set_tag("resumed", int(run.data.tags.get("resumed", 0)) + 1)
        trainer.loggers = [lightning_logger(cfg.tracking, run, resume.logged_until if resume else None)]
        started = time.perf_counter()
        try:
            fit(trainer, module, train_batches, val_batches, resume)
        except TrainingDiverged:
            # The run ends FAILED with the reason; what was learnt before the divergence is kept.
            if checkpoints.best_model_path:
                mlflow.log_artifact(checkpoints.best_model_path, "checkpoints")
            raise
        fit_seconds = time.perf_counter() - started
        mlflow.log_metrics({"fit_seconds": fit_seconds, "fit_steps": trainer.global_step})
        best = torch.load(checkpoints.best_model_path, map_location=module.device, weights_only=True)
        module.load_state_dict(best["state_dict"])
        if module.network.interval_offsets is not None and cfg.model.conformal:
            offsets = calibrate_intervals(module.network, windows)
            mlflow.log_metrics({f"conformal_offset_{name}": value for name, value in offsets.items()})
        scores = evaluate_and_log(module, windows, series.season, cfg.data.id_column)
        mlflow.log_artifact(checkpoints.best_model_path, "checkpoints")
        if cfg.tracking.log_model:
            spec = model_spec(cfg.data, cfg.window, series, windows, dict(module.hparams.network))
            model = SavedModel(spec, module.network)
            artifacts = write_model(output_dir / "model", model.spec, model.network)
            history = input_example(series, windows.splits[0], cfg.data, cfg.window.lookback)
            log_model(artifacts, history, model)
        summary = {"run_id": run.info.run_id, "tracking_uri": mlflow.get_tracking_uri(),
                   "val_loss": float(checkpoints.best_model_score),
                   "fit_seconds": round(fit_seconds, 1), "fit_steps": trainer.global_step,
                   "val": scores["val"]["model"], "val_seasonal_naive": scores["val"]["seasonal_naive"],
                   "test": scores["test"]["model"], "seasonal_naive": scores["test"]["seasonal_naive"]}
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def fit(trainer: L.Trainer, module: Forecaster, train_batches: DataLoader, val_batches: DataLoader,
        resume: Resume | None) -> None:
    with warnings.catch_warnings(), sigterm_between_steps():
        # ExactResume replays the interrupted epoch's batch order, which Lightning cannot see: its warning that
        # a mid-epoch resume may give other results does not apply.
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before the epoch")
        # weights_only: a checkpoint is data; loading it runs no pickled code.
        trainer.fit(module, train_batches, val_batches, ckpt_path=resume.checkpoint if resume else None,
                    weights_only=True)


@contextlib.contextmanager
def sigterm_between_steps() -> Iterator[None]:
    """Inside Trainer.fit, SIGTERM stops training once the current step is done: Lightning's own handler notes it
    and raises SIGTERMException there, rather than ours raising in the middle of whatever runs (an MLflow write,
    a checkpoint save). It then unwinds as Terminated, like a SIGTERM anywhere else in the stage."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    before_lightning: list[int] = []
    # Lightning composes its handler with the current one at fit start; this one only notes a SIGTERM that
    # arrives before Lightning's is installed or after it is removed.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: before_lightning.append(signum))
    try:
        yield
    except SIGTERMException as stopped:
        raise Terminated("SIGTERM received") from stopped
    finally:
        signal.signal(signal.SIGTERM, previous)
    if before_lightning:
        raise Terminated("SIGTERM received")


def evaluate_and_log(module: Forecaster, windows: Windows, season: int, id_column: str | list[str] | None
                     ) -> dict[str, dict]:
    """Rolling-origin backtests on the validation and test blocks, beside naive and seasonal naive; metrics, every
    forecast (backtest/val.parquet, backtest/test.parquet) and the test block's forecast plot go to the open
    MLflow run."""
    scores = {}
    for block in ("val", "test"):
        result = backtest(module.network, windows, season, block=block)
        scores[block] = backtest_metrics(result)
        tracking.log_frame(backtest_frame(result, windows.times, id_column), f"backtest/{block}.parquet")
        mlflow.log_metrics({f"{block}_{k}": v for k, v in scores[block]["model"].items()})
        for baseline in ("naive", "seasonal_naive"):
            mlflow.log_metrics({f"{block}_{k}_{baseline}": v for k, v in scores[block][baseline].items()})
    mlflow.log_figure(plot_forecasts(result, windows.target, windows.times), "forecasts.png")
    return scores


def build_module(cfg: Config, windows: Windows, season: int) -> Forecaster:
    return Forecaster(network=network_args(cfg.model, cfg.window, n_features=windows.n_features,
                                           n_future=len(windows.future_columns), n_series=len(windows.splits),
                                           season=season),
                      optim=asdict(cfg.optim))


def network_args(model: ModelConfig, window: WindowConfig, *, n_features: int, n_future: int, n_series: int,
                 season: int | None) -> dict:
    """RecurrentNetwork's keyword arguments: the model config plus what the data decided. Written once here;
    checkpoints and the saved model's spec carry this dict, so nothing rebuilds a network any other way."""
    return dict(cell=model.cell, n_features=n_features, n_future=n_future, lookback=window.lookback,
                horizon=window.horizon, hidden_size=model.hidden_size, num_layers=model.num_layers,
                bidirectional=model.bidirectional, dropout=model.dropout, nonlinearity=model.nonlinearity,
                season=season if model.seasonal_skip else None, n_series=n_series,
                series_embedding=model.series_embedding, segment_len=model.segment_len,
                strategy=model.strategy.value, attention=model.attention,
                attention_score=model.attention_score.value, teacher_forcing=model.teacher_forcing,
                head_layers=list(model.head_layers), head_activation=model.head_activation,
                head_dropout=model.head_dropout, init_state=model.init_state.value,
                quantiles=list(model.quantiles), window_norm=model.window_norm)


def resume_checkpoints(folder: Path, trainer_args: dict[str, Any], epoch_batches: int) -> list[ModelCheckpoint]:
    """What writes last.ckpt, for resume: after every validation, and also after each epoch's last batch when
    validations are further apart than an epoch. (Not on the epoch's end: Lightning resumes a max_steps
    training saved there with one batch too many.)"""
    last = dict(dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False)
    every = trainer_args.get("val_check_interval")
    if isinstance(every, int) and every > epoch_batches:
        return [ModelCheckpoint(**last), ModelCheckpoint(**last, every_n_train_steps=epoch_batches)]
    return [ModelCheckpoint(**last)]


def check_trainer_args(trainer_args: dict[str, Any]) -> None:
    """Fail on a misspelled ++trainer.NAME, or a budget with no validation, before any run is opened."""
    known = inspect.signature(L.Trainer).parameters
    unknown = sorted(set(trainer_args) - set(known))
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]} is not a Lightning Trainer argument; see "
                          f"lightning.pytorch.Trainer for the names")
    steps, every = trainer_args.get("max_steps", -1), trainer_args.get("val_check_interval")
    if isinstance(every, int) and 0 < steps < every:
        # No validation would run, so there would be no best checkpoint to evaluate.
        raise ConfigError(f"trainer.max_steps={steps} ends before the first validation "
                          f"(trainer.val_check_interval={every}); lower val_check_interval")


def resolve_precision(trainer_args: dict[str, Any], cell: str) -> Any:
    """trainer.precision, with `auto` resolved for this machine: see auto_precision."""
    if trainer_args.get("precision") != "auto":
        return trainer_args.get("precision", "32-true")
    accelerator = trainer_args.get("accelerator", "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not (CUDAAccelerator.is_available()
                                                                     or MPSAccelerator.is_available()))
    return auto_precision(cell, on_cpu, native_bf16_cpu())


def auto_precision(cell: str, on_cpu: bool, native_bf16: bool) -> str:
    """bf16-mixed for an LSTM on a CPU with native bfloat16 (oneDNN's fused LSTM: 1.6x faster steps at equal
    validation MASE on the default data, bench/RESULTS.md); 32-true otherwise: the vanilla RNN and the GRU
    step slower in bf16 on CPU, and no GPU was measured."""
    return "bf16-mixed" if cell == "lstm" and on_cpu and native_bf16 else "32-true"


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); emulated bf16 would be slower."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_trainer(trainer_args: dict[str, Any], callbacks: list, output_dir: Path) -> L.Trainer:
    """The Trainer, without a logger yet (rank zero adds ours once its run is open). The window samplers shard
    batches among processes themselves (pipeline.distributed), so Lightning must not wrap them."""
    return L.Trainer(**trainer_args, logger=False, callbacks=callbacks, default_root_dir=output_dir,
                     use_distributed_sampler=False)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    tags = sweep_tags(hydra_cfg)
    summary = finish(lambda: run_training(cfg, hydra_cfg.overrides.task, Path(hydra_cfg.runtime.output_dir), tags),
                     in_sweep=bool(tags), reports=is_rank_zero())
    # Sweepers minimise this: the validation loss, so no choice is ever made on the test block.
    return summary.get("val_loss", float("nan"))


def sweep_tags(hydra_cfg: DictConfig) -> dict[str, str]:
    """In a multirun (-m), what groups its jobs' runs in MLflow: `sweep` (the sweep's folder, one per -m
    command: filter on tags.sweep) and `sweep.job`; the run is named by the job's overrides."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    return {"sweep": str(Path(hydra_cfg.sweep.dir).resolve()), "sweep.job": str(hydra_cfg.job.num),
            "mlflow.runName": hydra_cfg.job.override_dirname or f"job {hydra_cfg.job.num}"}


def run_training(cfg: DictConfig, overrides: list[str], output_dir: Path, run_tags: dict[str, str]) -> dict:
    """The command: train with `cfg`; with resume= continue a run with the config it started with; with
    hparams_search= run a search whose trials each train (pipeline/search.py)."""
    resume = None
    if cfg.resume:
        refuse_other_overrides(overrides)
        cfg, resume = plan_resume(to_config(cfg).tracking, cfg.resume)
        output_dir = resume.output_dir
    elif cfg.hparams_search is not None:
        return search(cfg, to_config(cfg).hparams_search, output_dir, run_tags, train_once)
    return train_once(cfg, output_dir, run_tags, resume)


def train_once(cfg: DictConfig, output_dir: Path, run_tags: dict[str, str], resume: Resume | None = None) -> dict:
    # Enums as their values ("error", not "Missing.error") in the logged params and config.yaml.
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return train(to_config(cfg), trainer_kwargs(cfg), resolved, output_dir, resume=resume, run_tags=run_tags)


if __name__ == "__main__":
    main()
