"""The training's callbacks besides Lightning's own: exact resume, window sharding among processes, and how
progress shows (a progress bar on stderr in a terminal, one log line per validation in a cron log)."""

import logging
import sys
from contextlib import redirect_stdout

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from pipeline.data.sampler import WindowSampler
from pipeline.errors import ConfigError
from pipeline.host import choose_threads

log = logging.getLogger(__name__)


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


class AdaptThreads(L.Callback):
    """Every `every` steps, compute on the cores other processes leave free (pipeline.host.choose_threads): a job
    that started alone steps aside when another starts beside it, and takes the cores back when it ends."""

    def __init__(self, every: int = 25):
        self.every = every

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
                           ) -> None:
        if trainer.global_step % self.every:
            return
        chosen, now = choose_threads(), torch.get_num_threads()
        if chosen != now:
            log.info("step %d: computing on %d threads instead of %d (%s)", trainer.global_step, chosen, now,
                     "other processes are busy on the cores" if chosen < now else "cores came free")
            torch.set_num_threads(chosen)
