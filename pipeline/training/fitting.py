"""The Lightning side of training: the Trainer's arguments checked, its callbacks (best and last checkpoints,
exact resume, sharding, learning-rate monitor, early stopping, progress), and fit, which SIGTERM and Ctrl-C stop
between steps."""

import contextlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from pipeline.data.sampler import batches
from pipeline.data.windows import Windows
from pipeline.errors import ConfigError, Terminated
from pipeline.model.training_module import TrainingModule
from pipeline.training.callbacks import (
    LIGHTNING_NOISE,
    AdaptThreads,
    ExactResume,
    ShardWindows,
    StderrProgressBar,
    ValidationLines,
)
from pipeline.training.distributed import check_distributed, is_rank_zero
from pipeline.training.resume import Resume

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


def prepare(trainer_args: dict[str, Any], windows: Windows, *, batch_size: int, seed: int,
            patience: int | None, output_dir: Path, run_tags: dict[str, str],
            extra_callbacks: Sequence[L.Callback] = (), members: int = 1, adapt_threads: bool = False) -> Fitting:
    """The Trainer for `trainer_args`, whose precision is resolved (pipeline/training/precision.py); a misspelled
    argument fails first, in one line. An ensemble of `members` networks draws `members` batches a step, one for
    each (TrainingModule.ensemble_loss). With `adapt_threads` the threads follow the cores left free (AdaptThreads)."""
    check_trainer_args(trainer_args)
    trainer_args = validate_by_the_end(trainer_args)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(LIGHTNING_NOISE)  # once: the same filter
    if trainer_args.get("enable_progress_bar") is None:
        trainer_args["enable_progress_bar"] = sys.stderr.isatty()
    train_batches = batches(windows.train, batch_size * members, shuffle=True, seed=seed)
    val_batches = batches(windows.val, batch_size, shuffle=False)
    best = ModelCheckpoint(dirpath=output_dir / "checkpoints", monitor="val_loss", mode="min", save_top_k=1,
                           filename="best-{step}")
    callbacks = [best, ExactResume(train_batches.sampler), ShardWindows(train_batches.sampler, val_batches.sampler),
                 *([AdaptThreads()] if adapt_threads else []), *extra_callbacks]
    if is_rank_zero():  # the only process with a logger
        callbacks.append(LearningRateMonitor("step"))
        callbacks.append(StderrProgressBar() if trainer_args["enable_progress_bar"] else ValidationLines(best))
    if patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=patience))
    # Our window samplers shard batches among processes themselves (pipeline.training.distributed): Lightning must not
    # wrap them. The logger comes once rank zero's run is open.
    trainer = L.Trainer(**trainer_args, logger=False, callbacks=callbacks, default_root_dir=output_dir,
                        use_distributed_sampler=False)
    shares = check_distributed(trainer, batch_size, in_sweep="sweep" in run_tags, in_search="sweep.trial" in run_tags)
    trainer.callbacks += resume_checkpoints(output_dir / "checkpoints", trainer_args,
                                            train_batches.sampler.batches_per_epoch(trainer.world_size))
    return Fitting(trainer, train_batches, val_batches, best, trainer_args["precision"], shares)


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


@contextlib.contextmanager
def signals_between_steps() -> Iterator[None]:
    """Inside Trainer.fit, SIGTERM and Ctrl-C (SIGINT) stop training once the current step is done: Lightning's
    own SIGTERM handler notes the signal and raises SIGTERMException at the next step, rather than an exception
    landing in the middle of whatever runs (a metric write to a sqlite store, a checkpoint save: a
    KeyboardInterrupt inside a write once left the store locked, so the run could not be marked KILLED). Ctrl-C is
    passed on as a SIGTERM to this process and unwinds as KeyboardInterrupt, SIGTERM as Terminated, as anywhere
    else in the stage."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def interrupt(signum, frame) -> None:
        noted.append(signum)
        os.kill(os.getpid(), signal.SIGTERM)

    # Lightning composes its SIGTERM handler with the current one at fit start; this one notes a signal that
    # arrives before Lightning's is installed or after it is removed (and every Ctrl-C).
    previous = (signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum)),
                signal.signal(signal.SIGINT, interrupt))
    try:
        yield
    except SIGTERMException as stopped:
        raise stop(noted) from stopped
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    if noted:
        raise stop(noted)


def stop(noted: list[int]) -> BaseException:
    """How a stopped training unwinds: as Ctrl-C, or as SIGTERM."""
    return KeyboardInterrupt() if signal.SIGINT in noted else Terminated("SIGTERM received")
