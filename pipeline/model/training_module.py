"""The LightningModule that trains the recurrent network (pipeline/model/network.py) on batches of windows. The
only module of pipeline/model that imports Lightning: forecasting never imports it."""

import lightning as L
import torch
from torch import nn

from pipeline.data.windows import Batch
from pipeline.errors import TrainingDiverged
from pipeline.model.ensemble import Ensemble, build_network
from pipeline.model.likelihoods import negative_log_likelihood

LOSSES = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss, "huber": nn.functional.huber_loss}


def pinball_loss(forecast: torch.Tensor, actual: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """(B, H) quantile (pinball) loss of (B, H, Q) forecasts against (B, H) actuals, the mean over levels."""
    error = actual.unsqueeze(-1) - forecast
    return torch.maximum(quantiles * error, (quantiles - 1) * error).mean(-1)


class TrainingModule(L.LightningModule):
    """Trains RecurrentNetwork on batches of windows; the loss (MSE, MAE, Huber, pinball with quantiles, or the
    negative log-likelihood with model.likelihood) is on the scaled target."""

    def __init__(self, network: dict, optim: dict):
        """`network`: RecurrentNetwork's keyword arguments (pipeline.model.hparams.network_args); `optim`: the
        OptimConfig fields. Saved as the checkpoint's hyperparameters, so a checkpoint rebuilds the network."""
        super().__init__()
        # Plain values only, so the checkpoint loads with weights_only=True; MLflow gets the full config.
        self.save_hyperparameters(logger=False)
        self.network = build_network(**network)
        self.register_buffer("quantiles", torch.tensor(self.network.quantiles), persistent=False)
        self.likelihood = self.network.likelihood
        # A likelihood's networks are asked for its parameters, which the loss scores.
        self.outputs = {"params": True} if self.likelihood else {}
        self.point_loss = LOSSES[optim["loss"]]
        self.skipped = 0          # batches skipped for a non-finite loss or gradient
        self.last_loss: torch.Tensor | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_batches"] = self.skipped

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped = checkpoint.get("skipped_batches", 0)

    def loss(self, forecast: torch.Tensor, actual: torch.Tensor, observed: torch.Tensor | None = None
             ) -> torch.Tensor:
        """The mean loss over the observed targets (all of them when `observed` is None)."""
        total, count = self.loss_sum(forecast, actual, observed)
        # A batch of filled targets alone gives a zero loss (and no gradient), not a NaN.
        return total / (count if observed is None else count.clamp(min=1))

    def loss_sum(self, forecast: torch.Tensor, actual: torch.Tensor, observed: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """The loss summed over the observed (B, H) targets, and their number: filled targets count for nothing."""
        if self.likelihood:  # (B, H, P) parameters, or (members, B, H, P): the members' mean
            losses = negative_log_likelihood(self.likelihood, forecast, actual)
            losses = losses.mean(0) if losses.dim() == 3 else losses
        elif self.network.quantiles:
            losses = pinball_loss(forecast, actual, self.quantiles)
        else:
            losses = self.point_loss(forecast, actual, reduction="none")
        if observed is None:
            return losses.sum(), losses.numel()
        return (losses * observed).sum(), observed.sum()

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.likelihood and isinstance(self.network, Ensemble):  # each member's parameters
            return torch.stack([member(batch.x, batch.future, batch.series, batch.lengths, target=batch.y,
                                       params=True) for member in self.network.members])
        return self.network(batch.x, batch.future, batch.series, batch.lengths, target=batch.y, **self.outputs)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if isinstance(self.network, Ensemble):
            loss = self.ensemble_loss(batch)
        else:
            loss = self.loss(self(batch), batch.y, batch.observed)
        # Per step only: training is counted in steps, and an epoch's mean would be partial after a resume.
        # sync_dist: under DDP the mean over every process's share, the global batch's loss.
        self.log("train_loss", loss, on_step=True, on_epoch=False, batch_size=len(batch.y), sync_dist=True,
                 prog_bar=True)
        self.last_loss = loss.detach()
        return loss

    def ensemble_loss(self, batch: Batch) -> torch.Tensor:
        """The mean of the members' own losses, each on its own share of the batch.

        Each member on its own loss: members trained on the ensemble's forecast would learn to make up for one
        another rather than each to forecast. Each on its own windows (the training batch holds `members` batches,
        pipeline.training.fitting.prepare): members that also see different data are as far apart as separately seeded
        trainings, whose average is where an ensemble's gain lies (bench/ACCURACY.md, "The ensemble option")."""
        members = len(self.network.members)
        if len(batch.y) < members:  # an epoch's last, smaller batch: too few windows to share, so all read it
            shares = [batch] * members
        else:
            shares = [Batch(*parts) for parts in zip(*(
                [None] * members if part is None else part.tensor_split(members) for part in batch))]
        losses = [self.loss(member(share.x, share.future, share.series, share.lengths, target=share.y,
                                   **self.outputs), share.y, share.observed)
                  for member, share in zip(self.network.members, shares)]
        return torch.stack(losses).mean()

    def on_validation_epoch_start(self) -> None:
        self.val_totals = torch.zeros(2, device=self.device)  # loss summed over observed targets, their number

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        total, count = self.loss_sum(self(batch), batch.y, batch.observed)
        self.val_totals[0] += total.detach().float()
        self.val_totals[1] += count

    def on_validation_epoch_end(self) -> None:
        # The mean over every observed validation target, also under DDP where processes hold shares of unequal size:
        # sums are added across processes first (Lightning's sync_dist mean would divide by this process's
        # count; torchmetrics' MeanMetric drops either the weights or the NaNs). Identical on every process.
        loss_sum, targets = self.trainer.strategy.reduce(self.val_totals, reduce_op="sum")
        self.log("val_loss", loss_sum / targets, sync_dist=True, prog_bar=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this before it clips, so the logged norm shows gradients as they exploded.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        self.log("grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)
        # One host sync a step (free on CPU): a NaN must stop or skip this very update, not a later one.
        finite = bool(torch.isfinite(norm) & torch.isfinite(self.last_loss))
        if self.trainer.world_size > 1:  # every process must skip or stop together, or the others would hang
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            self.skip_or_stop()

    def skip_or_stop(self) -> None:
        """Skip this update (the optimizer passes over parameters without a gradient), or stop training once
        more than optim.skip_nonfinite batches were skipped."""
        self.skipped += 1
        limit = self.hparams.optim["skip_nonfinite"]
        if self.skipped > limit:
            raise TrainingDiverged(
                f"training step {self.global_step}: the loss or gradient is not finite"
                + (f" (after {limit} such batches skipped, optim.skip_nonfinite={limit})" if limit else "")
                + "; training stopped. Lower optim.lr, clip gradients (trainer.gradient_clip_val), look for "
                  "extreme values in the data, or set optim.skip_nonfinite=N to skip up to N such batches")
        for p in self.parameters():
            p.grad = None
        self.log("skipped_batches", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer = torch.optim.AdamW(self.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
        if not optim["cosine_schedule"]:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
