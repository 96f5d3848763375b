"""The recurrent forecaster: one network, the cell is a parameter. No training code here (pipeline/models.py
holds the LightningModule), so forecasting from a saved model (pipeline/saved_model.py) does not import Lightning.

Three strategies share one encoder (pipeline/window.py explains the input columns):
- direct: the encoder's final state -> all H steps at once;
- recursive: a one-step model; after the lookback it is rolled forward, each prediction fed back as the next
  input with that step's known-future features (past covariates are unknown there and enter as 0, their
  training mean);
- seq2seq: a causal decoder unrolled over the horizon from the encoder's final state, reading the previous
  value and the step's known-future features, optionally attending over every encoder state.
"""

import numpy as np
import torch
from torch import nn

from pipeline.config import ConfigError
from pipeline.window import Batch, WindowBatches

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LOSSES = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss, "huber": nn.functional.huber_loss}
STRATEGIES = ("direct", "recursive", "seq2seq")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
ATTENTION_SCORES = ("dot", "additive")

# A layer's state: h of shape (directions, B, width), and for an LSTM also the cell state c.
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def layer_widths(hidden_size: int | list[int], num_layers: int) -> list[int]:
    """model.hidden_size as one width per stacked layer."""
    if isinstance(hidden_size, int) and not isinstance(hidden_size, bool) and hidden_size > 0:
        return [hidden_size] * num_layers
    if not isinstance(hidden_size, (list, tuple)) or not all(isinstance(w, int) and w > 0 for w in hidden_size):
        raise ConfigError(f"model.hidden_size={hidden_size!r}: give a positive width, or a list of them "
                          f"(one per layer), e.g. [64, 32]")
    widths = list(hidden_size)
    if len(widths) != num_layers:
        raise ConfigError(f"model.hidden_size lists {len(widths)} widths but model.num_layers is {num_layers}; "
                          f"set model.num_layers={len(widths)}")
    return widths


class Stack(nn.Module):
    """Recurrent layers of any widths, one cell type, dropout between layers, zero or learned initial state.

    Each layer is its own cuDNN/MKL-fused module, so widths may differ from layer to layer.
    """

    def __init__(self, cell: str, input_size: int, widths: list[int], bidirectional: bool, dropout: float,
                 nonlinearity: str, learned_init: bool):
        super().__init__()
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.directions = 2 if bidirectional else 1
        self.is_lstm = cell == "lstm"
        sizes = [input_size] + [self.directions * w for w in widths[:-1]]
        self.layers = nn.ModuleList(CELLS[cell](n, w, batch_first=True, bidirectional=bidirectional, **extra)
                                    for n, w in zip(sizes, widths))
        self.dropout = nn.Dropout(dropout)
        self.widths = widths
        # Learned initial state: one vector per layer and direction (two for an LSTM: h and c).
        self.init = nn.ParameterList(
            nn.Parameter(torch.zeros((2 if self.is_lstm else 1), self.directions, 1, w)) for w in widths
        ) if learned_init else None

    @property
    def output_size(self) -> int:
        return self.directions * self.widths[-1]

    def initial(self, batch: int) -> list[State | None]:
        if self.init is None:
            return [None] * len(self.layers)
        states = [p.expand(-1, -1, batch, -1).contiguous() for p in self.init]
        return [(s[0], s[1]) if self.is_lstm else s[0] for s in states]

    def forward(self, x: torch.Tensor | nn.utils.rnn.PackedSequence,
                states: list[State | None] | None = None) -> tuple[torch.Tensor, list[State]]:
        """(B, T, in) or packed -> outputs of the last layer (same form) and each layer's final state."""
        batch = x.batch_sizes[0] if isinstance(x, nn.utils.rnn.PackedSequence) else x.shape[0]
        states = self.initial(int(batch)) if states is None else states
        finals = []
        for i, (layer, state) in enumerate(zip(self.layers, states)):
            if i:
                x = (x._replace(data=self.dropout(x.data)) if isinstance(x, nn.utils.rnn.PackedSequence)
                     else self.dropout(x))
            x, final = layer(x, state)
            finals.append(final)
        return x, finals


def top_state(states: list[State], directions: int) -> torch.Tensor:
    """The last layer's final hidden state, both directions: (B, directions * width)."""
    h = states[-1][0] if isinstance(states[-1], tuple) else states[-1]
    return h[-directions:].transpose(0, 1).flatten(1)


class Bridge(nn.Module):
    """A bidirectional encoder's final states -> the initial states of a causal decoder of the same widths."""

    def __init__(self, widths: list[int], is_lstm: bool):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(2 * w, w) for w in widths for _ in range(2 if is_lstm else 1))
        self.is_lstm = is_lstm

    def forward(self, states: list[State]) -> list[State]:
        maps = iter(self.maps)

        def merge(h: torch.Tensor) -> torch.Tensor:
            # (2, B, w) -> (1, B, 2w) -> (1, B, w)
            return torch.tanh(next(maps)(torch.cat([h[0], h[1]], dim=1))).unsqueeze(0)

        return [(merge(s[0]), merge(s[1])) if self.is_lstm else merge(s) for s in states]


class Attention(nn.Module):
    """Each decoder step attends over all encoder states: dot-product (Luong, general) or additive (Bahdanau)."""

    def __init__(self, query_size: int, key_size: int, score: str):
        super().__init__()
        if score not in ATTENTION_SCORES:
            raise ConfigError(f"model.attention_score={score!r}: choose one of {list(ATTENTION_SCORES)}")
        self.score = score
        if score == "dot":
            self.query = nn.Linear(query_size, key_size, bias=False)
        else:
            self.query = nn.Linear(query_size, query_size, bias=False)
            self.key = nn.Linear(key_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)

    def prepare(self, keys: torch.Tensor) -> torch.Tensor | None:
        """Once per sequence: the keys' projection (additive attention)."""
        return self.key(keys) if self.score == "additive" else None

    def forward(self, query: torch.Tensor, keys: torch.Tensor, projected: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        """(B, q), (B, T, k) -> (B, k): the weighted sum of the encoder states."""
        if self.score == "dot":
            scores = torch.bmm(keys, self.query(query).unsqueeze(2)).squeeze(2)
        else:
            scores = self.v(torch.tanh(projected + self.query(query).unsqueeze(1))).squeeze(2)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.bmm(scores.softmax(dim=1).unsqueeze(1), keys).squeeze(1)


def mlp(in_size: int, out_size: int, layers: list[int], activation: str, dropout: float) -> nn.Sequential:
    """The output head: one linear map, or hidden layers with activation and dropout before it."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"model.head_activation={activation!r}: choose one of {sorted(ACTIVATIONS)}")
    parts: list[nn.Module] = []
    for width in layers:
        parts += [nn.Linear(in_size, width), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        in_size = width
    return nn.Sequential(*parts, nn.Linear(in_size, out_size))


class RecurrentNetwork(nn.Module):
    """Encoder over the lookback, then the configured strategy -> (B, H) forecasts, or (B, H, Q) quantiles."""

    def __init__(self, *, cell: str, n_features: int, n_future: int, lookback: int, horizon: int,
                 hidden_size: int | list[int], num_layers: int, bidirectional: bool, dropout: float,
                 nonlinearity: str, season: int | None, n_series: int, series_embedding: int,
                 segment_len: int | None, strategy: str, attention: bool, attention_score: str,
                 teacher_forcing: float, head_layers: list[int], head_activation: str, head_dropout: float,
                 init_state: str, quantiles: list[float], window_norm: bool):
        """Keyword-only and without defaults: every value comes from one dict built from the config
        (pipeline.train.network_args), saved with checkpoints and in the saved model's spec."""
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r}: choose one of {sorted(CELLS)}")
        if cell != "rnn" and nonlinearity != "tanh":
            raise ConfigError(f"model.nonlinearity={nonlinearity!r} applies to the vanilla RNN only; "
                              f"use model=rnn or drop the override")
        if strategy not in STRATEGIES:
            raise ConfigError(f"model.strategy={strategy!r}: choose one of {list(STRATEGIES)}")
        if attention and strategy != "seq2seq":
            raise ConfigError("model.attention needs a decoder to attend from; set model.strategy=seq2seq")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ConfigError(f"model.teacher_forcing={teacher_forcing}: a share of steps, between 0 and 1")
        if init_state not in ("zeros", "learned"):
            raise ConfigError(f"model.init_state={init_state!r}: choose zeros or learned")
        self.quantiles = sorted(float(q) for q in quantiles or [])
        if any(not 0 < q < 1 for q in self.quantiles):
            raise ConfigError(f"model.quantiles={quantiles}: each must lie strictly between 0 and 1")
        widths = layer_widths(hidden_size, num_layers)
        self.strategy, self.horizon, self.teacher_forcing = strategy, horizon, teacher_forcing
        self.window_norm = window_norm
        self.n_features, self.n_future = n_features, n_future
        self.n_outputs = max(1, len(self.quantiles))
        # The value fed back when rolling forward: the median, or the quantile nearest it.
        self.median = int(np.argmin([abs(q - 0.5) for q in self.quantiles])) if self.quantiles else 0
        # Added to the quantiles at output (scaled units): zero in training; set after it by conformal
        # calibration on the validation block (pipeline/evaluate.py), and saved with the weights.
        self.register_buffer("interval_offsets", torch.zeros(len(self.quantiles)) if len(self.quantiles) > 1
                             else None)
        self.segment_len = segment_len
        self.segment = None
        if segment_len:
            if lookback % segment_len:
                raise ConfigError(f"model.segment_len={segment_len} must divide window.lookback ({lookback})")
            # Each segment of S steps x F features becomes one recurrent input (SegRNN, Lin et al. 2023).
            self.segment = nn.Linear(segment_len * n_features, widths[0])
        stack = dict(cell=cell, widths=widths, dropout=dropout if len(widths) > 1 else 0.0,
                     nonlinearity=nonlinearity)
        self.encoder = Stack(input_size=widths[0] if segment_len else n_features, bidirectional=bidirectional,
                             learned_init=init_state == "learned", **stack)
        self.embedding = nn.Embedding(n_series, series_embedding) if series_embedding else None
        self.decoder = self.bridge = self.attention = None
        if strategy == "direct":
            head_in = self.encoder.output_size + horizon * n_future
            head_out = horizon * self.n_outputs
        else:
            # recursive rolls the encoder itself on when it can (causal, reading steps: decoder None);
            # otherwise a causal decoder of its own.
            if strategy == "seq2seq" or bidirectional or segment_len:
                step_size = n_features if strategy == "recursive" else 1 + n_future
                self.decoder = Stack(input_size=step_size, bidirectional=False, learned_init=False, **stack)
            self.bridge = Bridge(widths, cell == "lstm") if bidirectional else None
            head_in = widths[-1] + (n_future if strategy == "recursive" else 0)
            if attention:
                self.attention = Attention(widths[-1], self.encoder.output_size, attention_score)
                head_in += self.encoder.output_size
            head_out = self.n_outputs
        self.head = mlp(head_in + series_embedding, head_out, list(head_layers or []), head_activation,
                        head_dropout)
        self.season = season
        if season is not None:
            if season > lookback:
                raise ConfigError(f"model.seasonal_skip needs data.season ({season}) <= window.lookback "
                                  f"({lookback})")
            # Start exactly at seasonal naive; training learns the correction.
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    # -- encoder -------------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None
               ) -> tuple[torch.Tensor, list[State], torch.Tensor | None]:
        """(B, L, F) -> encoder outputs (B, T, directions * width), final states, and a (B, T) mask of real
        steps when windows are padded (outputs then hold each window's real steps first)."""
        steps = x
        if self.segment is not None:
            # (B, L, F) -> (B, L / S, S * F) -> (B, L / S, width)
            steps = self.segment(x.reshape(x.shape[0], -1, self.segment_len * x.shape[2]))
            lengths = None if lengths is None else torch.div(lengths + self.segment_len - 1, self.segment_len,
                                                             rounding_mode="floor")
        if lengths is None:
            outputs, states = self.encoder(steps)
            return outputs, states, None
        # Left-padded windows: move each window's real steps first and pack, so padding never enters.
        time = torch.arange(steps.shape[1], device=steps.device)
        shift = (time.unsqueeze(0) + (steps.shape[1] - lengths).unsqueeze(1)) % steps.shape[1]
        real_first = steps.gather(1, shift.unsqueeze(2).expand_as(steps))
        packed = nn.utils.rnn.pack_padded_sequence(real_first, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        outputs, states = self.encoder(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=steps.shape[1])
        return outputs, states, time.unsqueeze(0) < lengths.unsqueeze(1)

    # -- strategies ----------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None, target: torch.Tensor | None = None,
                horizon: int | None = None) -> torch.Tensor:
        """(B, L, F) inputs, (B, H, K) known-future features -> (B, H) or (B, H, Q).

        `target` (B, H), in training only, is fed back instead of predictions at a model.teacher_forcing share
        of steps (1.0 trains a pure one-step model). `horizon` may exceed the trained one for rolled
        strategies, given that many steps of `future`.
        """
        target = target if self.training else None
        if self.window_norm:
            level, spread = self.window_statistics(x[:, :, 0], lengths)
            x = torch.cat([((x[:, :, 0] - level) / spread).unsqueeze(2), x[:, :, 1:]], dim=2)
            target = None if target is None else (target - level) / spread
        outputs, states, mask = self.encode(x, lengths)
        forecast = self.decode(x, future, outputs, states, mask, series, target, horizon or self.horizon)
        if self.window_norm:
            shape = (-1,) + (1,) * (forecast.dim() - 1)
            forecast = forecast * spread.view(shape) + level.view(shape)
        return self.calibrated(forecast)

    def calibrated(self, forecast: torch.Tensor) -> torch.Tensor:
        """Quantiles widened (or narrowed) by the conformal offsets, in the scaled units of the target."""
        if self.interval_offsets is None:
            return forecast
        # Calibration may narrow an interval past its neighbour; sorting keeps the levels monotone.
        return (forecast + self.interval_offsets).sort(dim=-1).values

    @staticmethod
    def window_statistics(history: torch.Tensor, lengths: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each window's target over its real (unpadded) steps: (B, 1) each.

        Per-window normalisation (RevIN, Kim et al. 2022) removes the window's level and spread before the
        network reads it and restores them at output, so a level shift since training needs no extrapolation.
        """
        if lengths is None:
            level = history.mean(dim=1, keepdim=True)
            spread = history.std(dim=1, keepdim=True, correction=0)
        else:
            real = (torch.arange(history.shape[1], device=history.device).unsqueeze(0)
                    >= (history.shape[1] - lengths).unsqueeze(1)).to(history.dtype)
            count = real.sum(dim=1, keepdim=True)
            level = (history * real).sum(dim=1, keepdim=True) / count
            spread = (((history - level) * real) ** 2).sum(dim=1, keepdim=True).div(count).sqrt()
        # A flat window would divide by zero; it keeps its level and unit spread (already scaled units).
        return level, spread.clamp_min(1e-3)

    def decode(self, x: torch.Tensor, future: torch.Tensor, outputs: torch.Tensor, states: list[State],
               mask: torch.Tensor | None, series: torch.Tensor | None, target: torch.Tensor | None,
               horizon: int) -> torch.Tensor:
        """From the encoder's outputs and final states to the forecast. `x` needs only its last `season` steps
        (at least one): the seasonal skip and the rolled strategies read nothing older."""
        embedded = self.embedding(series.long()) if self.embedding is not None else None
        if self.strategy == "direct":
            # (B, directions * width + H * K [+ E]) -> (B, H, Q)
            parts = [top_state(states, self.encoder.directions), future.flatten(1)]
            raw = self.head(torch.cat(parts + ([embedded] if embedded is not None else []), dim=1))
            raw = raw.view(x.shape[0], self.horizon, self.n_outputs)
            if self.season is not None:
                raw = raw + self.seasonal_naive(x[:, :, 0], self.horizon).unsqueeze(2)
            return self.output(raw)
        return self.output(self.unroll(x, future, outputs, states, mask, embedded, target, horizon))

    def seasonal_naive(self, history: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, T) scaled target so far -> (B, steps): the value one (or more) seasons before each next step."""
        ahead = torch.arange(steps, device=history.device)
        return history[:, history.shape[1] + ahead - self.season * (ahead // self.season + 1)]

    def unroll(self, x: torch.Tensor, future: torch.Tensor, outputs: torch.Tensor, states: list[State],
               mask: torch.Tensor | None, embedded: torch.Tensor | None, target: torch.Tensor | None,
               horizon: int) -> torch.Tensor:
        """Roll the decoder over `horizon` steps -> (B, H, Q) raw quantiles."""
        batch = x.shape[0]
        if self.bridge is not None:
            states = self.bridge(states)
        projected = self.attention.prepare(outputs) if self.attention is not None else None
        history = x[:, :, 0]
        previous = x[:, -1, 0:1]
        steps = []
        top = None
        decoder = self.encoder if self.decoder is None else self.decoder
        if decoder is self.encoder:
            # The encoder has read the last lookback step already: its top output predicts the first step.
            top = top_state(states, 1)
        for j in range(horizon):
            if top is None or j:
                row = self.decoder_input(j, x, future, previous)
                out, states = decoder(row.unsqueeze(1), states)
                top = out[:, 0]
            parts = [top]
            if self.strategy == "recursive":
                parts.append(future[:, j])
            if self.attention is not None:
                parts.append(self.attention(top, outputs, projected, mask))
            if embedded is not None:
                parts.append(embedded)
            raw = self.head(torch.cat(parts, dim=1))  # (B, Q)
            if self.season is not None:
                raw = raw + history[:, history.shape[1] - self.season].unsqueeze(1)
            steps.append(raw)
            fed = self.output(raw.unsqueeze(1))[:, 0]
            fed = fed[:, self.median] if fed.dim() == 2 else fed
            fed = fed.detach().unsqueeze(1)
            if target is not None:
                # Teacher forcing: the true value, for a random share of windows at each step (no host sync).
                keep = torch.rand(batch, 1, device=x.device) < self.teacher_forcing
                fed = torch.where(keep, target[:, j:j + 1], fed)
            history = torch.cat([history, fed], dim=1)
            previous = fed
        return torch.stack(steps, dim=1)

    def decoder_input(self, j: int, x: torch.Tensor, future: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The decoder's input at horizon step j.

        seq2seq: (previous value, known-future features of step j). recursive: a full input row of the step
        before j (its value, past covariates as 0 once unknown, its known-future features), whose successor
        the head predicts.
        """
        if self.strategy == "seq2seq":
            return torch.cat([previous, future[:, j]], dim=1)
        if j == 0:
            return x[:, -1]
        unknown = previous.new_zeros(x.shape[0], self.n_features - 1 - self.n_future)
        return torch.cat([previous, unknown, future[:, j - 1]], dim=1)

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, H, Q) raw -> (B, H) point forecasts, or (B, H, Q) quantiles kept monotone (the lowest plus
        non-negative increments)."""
        if not self.quantiles:
            return raw[..., 0]
        if len(self.quantiles) == 1:
            return raw
        # Calibration offsets are added in forward, in the scaled units of the target.
        return torch.cat([raw[..., :1], raw[..., :1] + nn.functional.softplus(raw[..., 1:]).cumsum(-1)], dim=-1)


def predict(network: RecurrentNetwork, dataset: WindowBatches, batch_size: int) -> np.ndarray:
    """(n, H) scaled forecasts, or (n, H, Q) quantiles, for every window of a WindowBatches, in batched calls on
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
