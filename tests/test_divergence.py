"""A NaN or infinite loss or gradient stops training at once (or skips the batch, when allowed), names the step,
fails the run with the reason and keeps the best checkpoint so far."""

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.errors import TrainingDiverged
from pipeline.train import train
from tests.helpers import SMALL, compose_config, latest_run, run_stage


class PoisonGradients(L.Callback):
    """At training step `at` (and after it, unless `once`), one gradient turns NaN, as an exploding update's
    would; records whether the weights moved during step `at`."""

    def __init__(self, at: int, once: bool):
        self.at, self.once = at, once
        self.before: list[torch.Tensor] = []
        self.moved_at_poisoned_step: bool | None = None

    def poisoned(self, step: int) -> bool:
        return step == self.at or (not self.once and step > self.at)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.poisoned(trainer.global_step):
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at + 1:  # the step counter has moved past the poisoned batch
            self.moved_at_poisoned_step = any(not torch.equal(a, p) for a, p in zip(self.before,
                                                                                   pl_module.parameters()))


def train_in_process(store, tmp_path, callback: L.Callback, *overrides: str) -> dict:
    cfg = compose_config(f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={store.uri}", *SMALL,
                         "trainer.val_check_interval=2", *overrides)
    return train(cfg, tmp_path, extra_callbacks=[callback])


def test_a_nonfinite_gradient_stops_training_fails_the_run_and_keeps_the_best_checkpoint(store, tmp_path):
    with pytest.raises(TrainingDiverged, match="training step 5: the loss or gradient is not finite"):
        train_in_process(store, tmp_path, PoisonGradients(at=5, once=False))
    run = latest_run(store.uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure.reason"].startswith("TrainingDiverged: training step 5")
    # Validated at steps 2 and 4: the best of those is on disk and in the run.
    kept = [a.path for a in MlflowClient(store.uri).list_artifacts(run.info.run_id, "checkpoints")]
    assert kept and all(p.startswith("checkpoints/best-step=") for p in kept)
    best = torch.load(next((tmp_path / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    assert all(torch.isfinite(t).all() for t in best["state_dict"].values())


def test_skip_nonfinite_skips_the_poisoned_update_and_trains_on(store, tmp_path):
    poison = PoisonGradients(at=3, once=True)
    summary = train_in_process(store, tmp_path, poison, "optim.skip_nonfinite=1")
    assert poison.moved_at_poisoned_step is False
    run = MlflowClient(store.uri).get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["skipped_batches"] == 1
    assert summary["fit_steps"] == 12


@pytest.mark.slow
def test_a_diverging_learning_rate_ends_the_command_with_one_line_naming_the_step(store, tmp_path):
    # No clipping and an absurd learning rate: the first update sends the weights to ~1e20.
    done = run_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", *SMALL, "optim.lr=1e20", "trainer.gradient_clip_val=null")
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert "training step 1: the loss or gradient is not finite" in last and "optim.lr" in last
    assert latest_run(store.uri).info.status == "FAILED"
