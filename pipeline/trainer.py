"""The Lightning side of training: the Trainer's arguments checked, precision resolved for this machine, the
callbacks (best and last checkpoints, exact resume, sharding, learning-rate monitor, early stopping), and fit."""

import inspect
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from pipeline.distributed import check_distributed, is_rank_zero
from pipeline.errors import ConfigError
from pipeline.lit_module import TrainingModule
from pipeline.resume import Resume
from pipeline.sampler import WindowSampler, batches
from pipeline.signals import signals_between_steps
from pipeline.window import Windows

log = logging.getLogger(__name__)


@dataclass
class Fitting:
    """A Trainer ready to fit: the batches it reads, the checkpoint keeping the best model by validation loss,
    the precision it trains in, and how each global batch is split among processes (params to log)."""

    trainer: L.Trainer
    train_batches: DataLoader
    val_batches: DataLoader
    best: ModelCheckpoint
    precision: str
    shares: dict[str, int]


def prepare(trainer_args: dict[str, Any], windows: Windows, cell: str, *, batch_size: int, seed: int,
            patience: int | None, output_dir: Path, run_tags: dict[str, str],
            extra_callbacks: Sequence[L.Callback] = (), members: int = 1) -> Fitting:
    """The Trainer for `trainer_args` (a misspelled one fails first, in one line). An ensemble of `members`
    networks draws `members` batches a step, one for each (TrainingModule.ensemble_loss)."""
    check_trainer_args(trainer_args)
    trainer_args = validate_by_the_end(trainer_args) | {"precision": resolve_precision(trainer_args, cell)}
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(LIGHTNING_NOISE)  # once: the same filter
    if trainer_args.get("enable_progress_bar") is None:
        trainer_args["enable_progress_bar"] = sys.stderr.isatty()
    train_batches = batches(windows.train, batch_size * members, shuffle=True, seed=seed)
    val_batches = batches(windows.val, batch_size, shuffle=False)
    best = ModelCheckpoint(dirpath=output_dir / "checkpoints", monitor="val_loss", mode="min", save_top_k=1,
                           filename="best-{step}")
    callbacks = [best, ExactResume(train_batches.sampler), ShardWindows(train_batches.sampler, val_batches.sampler),
                 *extra_callbacks]
    if is_rank_zero():  # the only process with a logger
        callbacks.append(LearningRateMonitor("step"))
        callbacks.append(StderrProgressBar() if trainer_args["enable_progress_bar"] else ValidationLines(best))
    if patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=patience))
    # Our window samplers shard batches among processes themselves (pipeline.distributed): Lightning must not
    # wrap them. The logger comes once rank zero's run is open.
    trainer = L.Trainer(**trainer_args, logger=False, callbacks=callbacks, default_root_dir=output_dir,
                        use_distributed_sampler=False)
    shares = check_distributed(trainer, batch_size, in_sweep="sweep" in run_tags, in_search="sweep.trial" in run_tags)
    trainer.callbacks += resume_checkpoints(output_dir / "checkpoints", trainer_args,
                                            train_batches.sampler.batches_per_epoch(trainer.world_size))
    return Fitting(trainer, train_batches, val_batches, best, trainer_args["precision"], shares)


class ExactResume(L.Callback):
    """Saves into every checkpoint the random state and how many batches of the epoch's order were done, and
    restores both on resume (before Lightning builds the training iterator)."""

    def __init__(self, sampler: WindowSampler):
        self.sampler = sampler

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["exact_resume"] = {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "epoch_rng": self.sampler.epoch_rng,
            "sampler_rng": self.sampler.generator.get_state(),
            "batches_done": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        state = checkpoint.get("exact_resume")
        if state is None or "sampler_rng" not in state:
            raise ConfigError("the checkpoint holds no random state (written by an older pipeline); it cannot be "
                              "resumed exactly: start a new run")
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        # At an epoch's end the next epoch draws a new order from the restored state; mid-epoch the epoch's
        # order is drawn again.
        self.sampler.generator.set_state(state["sampler_rng"])
        if state["epoch_rng"] is not None and 0 < state["batches_done"] < len(self.sampler):
            self.sampler.replay(state["epoch_rng"], state["batches_done"])


class ShardWindows(L.Callback):
    """Tells the window samplers which share of each batch this process takes, once the processes exist."""

    def __init__(self, *samplers: WindowSampler):
        self.samplers = samplers

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sampler in self.samplers:
            sampler.shard = (trainer.global_rank, trainer.world_size)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sampler in self.samplers:
            sampler.shard = (0, 1)


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bar (with train_loss and val_loss), on stderr where our logs go: Lightning writes it
    to stdout, which carries the stage's one JSON line (`pipeline-train ... | jq` in a terminal)."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: a run id fragment, nothing to read while training
        return metrics

    def init_sanity_tqdm(self) -> Tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()


class ValidationLines(L.Callback):
    """One log line per validation, where no progress bar shows how training goes (a cron log)."""

    def __init__(self, best: ModelCheckpoint):
        self.best = best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        loss = float(metrics["val_loss"])
        # Checkpoint callbacks run after this one: the best so far may be this validation.
        best = loss if self.best.best_model_score is None else min(loss, float(self.best.best_model_score))
        log.info("step %d of %s: val_loss %.5f (best %.5f), train_loss %.5f", trainer.global_step,
                 trainer.max_steps if trainer.max_steps > 0 else "?", loss, best,
                 float(metrics.get("train_loss", float("nan"))))


class LightningNoise(logging.Filter):
    """Lightning's lines that say nothing to our users: its tip to install another product, and which
    accelerators exist (the run's `precision` tag and trainer.accelerator say what was used)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("💡 Tip") or " available: " in message)


LIGHTNING_NOISE = LightningNoise()


def fit(fitting: Fitting, module: TrainingModule, resume: Resume | None, logger: Logger | None = None) -> float:
    """Train `module` (from the resumed run's last checkpoint, if any); returns the seconds it took."""
    if logger is not None:
        fitting.trainer.loggers = [logger]
    started = time.perf_counter()
    with warnings.catch_warnings(), signals_between_steps():
        # ExactResume replays the interrupted epoch's batch order, which Lightning cannot see: its warning that
        # a mid-epoch resume may give other results does not apply.
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before the epoch")
        # Lightning's own use of a torch API it has not caught up with.
        warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated")
        # weights_only: a checkpoint is data; loading it runs no pickled code.
        fitting.trainer.fit(module, fitting.train_batches, fitting.val_batches,
                            ckpt_path=resume.checkpoint if resume else None, weights_only=True)
    return time.perf_counter() - started


def load_best(fitting: Fitting, module: TrainingModule) -> None:
    best = torch.load(fitting.best.best_model_path, map_location=module.device, weights_only=True)
    module.load_state_dict(best["state_dict"])


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
    """Fail on a misspelled ++trainer.NAME before any run is opened."""
    known = inspect.signature(L.Trainer).parameters
    unknown = sorted(set(trainer_args) - set(known))
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]} is not a Lightning Trainer argument; see "
                          f"lightning.pytorch.Trainer for the names")


def validate_by_the_end(trainer_args: dict[str, Any]) -> dict[str, Any]:
    """A budget shorter than the validation interval (trainer.max_steps=30 against every 100 steps) validates at
    its last step instead, so a short run still has a best checkpoint to evaluate."""
    steps, every = trainer_args.get("max_steps", -1), trainer_args.get("val_check_interval")
    if isinstance(every, int) and 0 < steps < every:
        log.info("trainer.max_steps=%d ends before trainer.val_check_interval=%d: validating at step %d",
                 steps, every, steps)
        return trainer_args | {"val_check_interval": steps}
    return trainer_args


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
