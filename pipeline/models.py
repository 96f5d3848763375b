"""The recurrent forecaster (one network, the cell is a parameter) and the LightningModule that trains it."""

import lightning as L
import numpy as np
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.window import Batch, WindowBatches

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LOSSES = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss, "huber": nn.functional.huber_loss}


class RecurrentNetwork(nn.Module):
    """Encoder over the lookback; its last hidden state and the known-future features -> all H steps."""

    def __init__(self, cell: str, n_features: int, n_future: int, lookback: int, horizon: int,
                 hidden_size: int, num_layers: int, bidirectional: bool, dropout: float,
                 nonlinearity: str, season: int | None, n_series: int = 1, series_embedding: int = 0,
                 segment_len: int | None = None):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r}: choose one of {sorted(CELLS)}")
        if cell != "rnn" and nonlinearity != "tanh":
            raise ConfigError(f"model.nonlinearity={nonlinearity!r} applies to the vanilla RNN only; "
                              f"use model=rnn or drop the override")
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.segment_len = segment_len
        self.segment = None
        if segment_len:
            if lookback % segment_len:
                raise ConfigError(f"model.segment_len={segment_len} must divide window.lookback ({lookback})")
            # Each segment of S steps x F features becomes one recurrent input (SegRNN, Lin et al. 2023).
            self.segment = nn.Linear(segment_len * n_features, hidden_size)
        self.encoder = CELLS[cell](hidden_size if segment_len else n_features, hidden_size, num_layers,
                                   batch_first=True,
                                   dropout=dropout if num_layers > 1 else 0.0,
                                   bidirectional=bidirectional, **extra)
        self.directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(n_series, series_embedding) if series_embedding else None
        self.head = nn.Linear(self.directions * hidden_size + horizon * n_future + series_embedding, horizon)
        season_index = None
        if season is not None:
            if season > lookback:
                raise ConfigError(f"model.seasonal_skip needs data.season ({season}) <= window.lookback "
                                  f"({lookback})")
            # Step j of the horizon repeats the input step one (or more) seasons before it.
            steps = torch.arange(horizon)
            season_index = lookback + steps - season * (steps // season + 1)
            # Start exactly at seasonal naive; training learns the correction.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.register_buffer("season_index", season_index, persistent=False)

    def forward(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = x
        if self.segment is not None:
            # (B, L, F) -> (B, L / S, S * F) -> (B, L / S, hidden)
            steps = self.segment(x.reshape(x.shape[0], -1, self.segment_len * x.shape[2]))
            lengths = None if lengths is None else torch.div(lengths + self.segment_len - 1, self.segment_len,
                                                             rounding_mode="floor")
        # (B, L', F') -> (B, directions * hidden): the last layer's final state, both directions
        last = self.encode(steps) if lengths is None else self.encode_packed(steps, lengths)
        # (B, H, K) -> (B, H * K): calendar features of the steps to forecast
        parts = [last, future.flatten(1)]
        if self.embedding is not None:
            # (B,) -> (B, E)
            parts.append(self.embedding(series.long()))
        # (B, directions * hidden + H * K + E) -> (B, H)
        y = self.head(torch.cat(parts, dim=1))
        if self.season_index is not None:
            # (B, L, F) -> (B, H): the seasonal-naive forecast of the scaled target
            y = y + x[:, self.season_index, 0]
        return y

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        # h_n: (layers * directions, B, hidden); an LSTM also returns its cell state
        _, state = self.encoder(x)
        h_n = state[0] if isinstance(state, tuple) else state
        return h_n[-self.directions:].transpose(0, 1).flatten(1)

    def encode_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Left-padded windows: move each window's real steps first and pack, so padding never enters."""
        steps = torch.arange(x.shape[1], device=x.device)
        # (B, L): row b reads its real steps L - n_b .. L - 1 first
        shift = (steps.unsqueeze(0) + (x.shape[1] - lengths).unsqueeze(1)) % x.shape[1]
        real_first = x.gather(1, shift.unsqueeze(2).expand_as(x))
        packed = nn.utils.rnn.pack_padded_sequence(real_first, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        return self.encode(packed)


class Forecaster(L.LightningModule):
    """Trains RecurrentNetwork on batches of windows; the loss (MSE, MAE or Huber) is on the scaled target."""

    def __init__(self, cell: str, n_features: int, n_future: int, lookback: int, horizon: int,
                 hidden_size: int = 64, num_layers: int = 2, bidirectional: bool = False,
                 dropout: float = 0.0, nonlinearity: str = "tanh", season: int | None = None,
                 n_series: int = 1, series_embedding: int = 0, segment_len: int | None = None,
                 loss: str = "mse", lr: float = 3e-3, weight_decay: float = 0.0, cosine_schedule: bool = True):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"optim.loss={loss!r}: choose one of {sorted(LOSSES)}")
        self.loss = LOSSES[loss]
        # Plain values only, so the checkpoint loads with weights_only=True; MLflow gets the full config.
        self.save_hyperparameters(logger=False)
        self.network = RecurrentNetwork(cell, n_features, n_future, lookback, horizon, hidden_size,
                                        num_layers, bidirectional, dropout, nonlinearity, season,
                                        n_series, series_embedding, segment_len)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.network(batch.x, batch.future, batch.series, batch.lengths)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch.y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(batch.y))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.log("val_loss", self.loss(self(batch), batch.y), on_epoch=True,
                 batch_size=len(batch.y))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning calls this before it clips, so the logged norm shows gradients as they exploded.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.log("grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=True, batch_size=1)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        if not self.hparams.cosine_schedule:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def predict(network: RecurrentNetwork, dataset: WindowBatches, batch_size: int) -> np.ndarray:
    """(n, H) scaled forecasts for every window of a WindowBatches, in batched calls on the network's device."""
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
