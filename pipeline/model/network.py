"""The recurrent forecaster: an encoder over the lookback, then a decoder chosen once by model.strategy. No training
code here (pipeline/model/training_module.py holds the LightningModule), so forecasting from a saved model does not
import Lightning; nothing of the pipeline but its errors.

- direct: the encoder's final state -> all H steps at once (DirectHead);
- recursive: a one-step model; after the lookback it is rolled forward, each prediction fed back as the next
  input with that step's known-future features (past covariates are unknown there and enter as 0, their
  training mean) (RolledDecoder);
- seq2seq: a causal decoder unrolled over the horizon from the encoder's final state, reading the previous
  value and the step's known-future features, optionally attending over every encoder state (RolledDecoder).
With model.seasonal_skip the decoders predict a correction to the seasonal-naive forecast.
"""

from typing import Protocol

import numpy as np
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.model import likelihoods
from pipeline.model.encoder import Encoder
from pipeline.model.layers import (Attention, Bridge, Stack, layer_widths, mlp, monotone, seasonal_lag, skip_onto,
                                   top_state, window_statistics)
from pipeline.model.static import StaticInputs, conditioning


class Forecaster(Protocol):
    """What the forecast, backtest, calibration and export paths read of a network: a RecurrentNetwork, or an
    Ensemble of them (pipeline/model/ensemble.py). Called as RecurrentNetwork.forward: (B, L, F) inputs and
    (B, H, K) known-future features -> (B, H) forecasts or (B, H, Q) quantiles, in the target's scaled units."""

    horizon: int
    n_features: int          # F: columns of x (pipeline/data/features.py)
    n_future: int            # K: columns of future
    quantiles: list[float]   # [] for a point forecast
    likelihood: type | None  # pipeline/model/likelihoods.py, or None
    median: int              # the level reported as the point forecast
    interval_offsets: torch.Tensor | None  # conformal offsets, added to the quantiles (None without intervals)
    embedding: nn.Embedding | None         # the series embedding, when there is one
    static: nn.Module | None               # the series' static attributes, when there are any
    training: bool

    def __call__(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, target: torch.Tensor | None = None,
                 horizon: int | None = None) -> torch.Tensor: ...

    def parameters(self): ...

    def eval(self): ...

    def train(self, mode: bool = True): ...


class DirectHead(nn.Module):
    """The encoder's final state (both directions), the horizon's known-future features and the series
    embedding -> all H steps at once."""

    def __init__(self, *, encoder: Encoder, horizon: int, n_future: int, n_outputs: int, skip: torch.Tensor | None,
                 head: dict,
                 season: int | None):
        super().__init__()
        self.horizon, self.n_outputs, self.season = horizon, n_outputs, season
        self.register_buffer("skip", skip, persistent=False)
        self.directions = encoder.directions
        self.head = mlp(encoder.output_size + horizon * n_future + head.pop("embedding"), horizon * n_outputs,
                        **head)

    def forward(self, x: torch.Tensor, future: torch.Tensor, encoded: tuple, embedded: torch.Tensor | None,
                target: torch.Tensor | None, horizon: int) -> torch.Tensor:
        """-> (B, H, Q) raw outputs; `target` and `horizon` are the rolled decoders' (a direct head has one)."""
        outputs, states, mask = encoded
        parts = [top_state(states, self.directions), future.flatten(1)] + ([embedded] if embedded is not None else [])
        # (B, directions * width + H * K [+ E]) -> (B, H, Q)
        raw = self.head(torch.cat(parts, dim=1)).view(x.shape[0], self.horizon, self.n_outputs)
        if self.season is not None:
            raw = raw + skip_onto(seasonal_lag(x[:, :, 0], self.horizon, self.season).unsqueeze(2), self.skip)
        return raw


class RolledDecoder(nn.Module):
    """recursive or seq2seq: one step at a time over the horizon, each step's prediction (the median) fed back,
    or in training the true value at a model.teacher_forcing share of steps."""

    def __init__(self, *, strategy: str, stack: dict, encoder: Encoder, n_features: int, n_future: int,
                 n_quantiles: int, n_outputs: int, skip: torch.Tensor | None, median: int, head: dict,
                 season: int | None,
                 bidirectional: bool, attention: bool, attention_score: str, teacher_forcing: float):
        super().__init__()
        self.register_buffer("skip", skip, persistent=False)
        self.draw = None  # set while sample paths are drawn (likelihoods.sample_paths)
        self.strategy, self.n_features, self.n_future = strategy, n_features, n_future
        self.n_quantiles, self.median, self.season, self.teacher_forcing = n_quantiles, median, season, teacher_forcing
        widths = stack["widths"]
        # recursive rolls the encoder itself on when it can (causal, reading steps: cells None); otherwise a
        # causal stack of its own.
        self.cells = None
        if strategy == "seq2seq" or bidirectional or encoder.segment is not None:
            step_size = n_features if strategy == "recursive" else 1 + n_future
            self.cells = Stack(input_size=step_size, bidirectional=False, learned_init=False, **stack)
        # The encoder's cells, to roll on with when there is no stack of our own: referenced, not registered,
        # so their weights are saved once, under the encoder.
        self.__dict__["encoder_cells"] = encoder.stack
        self.bridge = Bridge(widths, stack["cell"] == "lstm") if bidirectional else None
        head_in = widths[-1] + (n_future if strategy == "recursive" else 0) + head.pop("embedding")
        self.attention = None
        if attention:
            self.attention = Attention(widths[-1], encoder.output_size, attention_score)
            head_in += encoder.output_size
        self.head = mlp(head_in, n_outputs, **head)

    def forward(self, x: torch.Tensor, future: torch.Tensor, encoded: tuple, embedded: torch.Tensor | None,
                target: torch.Tensor | None, horizon: int) -> torch.Tensor:
        """-> (B, H, Q) raw outputs over `horizon` steps (any number, given that many steps of `future`)."""
        outputs, states, mask = encoded
        if self.bridge is not None:
            states = self.bridge(states)
        projected = self.attention.prepare(outputs) if self.attention is not None else None
        history, previous = x[:, :, 0], x[:, -1, 0:1]
        cells = self.cells or self.encoder_cells
        # Rolling the encoder on: it has read the last lookback step already, its top output predicts step one.
        top = top_state(states, 1) if self.cells is None else None
        steps = []
        for j in range(horizon):
            if top is None or j:
                out, states = cells(self.step_input(j, x, future, previous).unsqueeze(1), states)
                top = out[:, 0]
            parts = [top] + ([future[:, j]] if self.strategy == "recursive" else [])
            if self.attention is not None:
                parts.append(self.attention(top, outputs, projected, mask))
            # (B, width [+ K] [+ attended] [+ E]) -> (B, Q)
            raw = self.head(torch.cat(parts + ([embedded] if embedded is not None else []), dim=1))
            if self.season is not None:
                raw = raw + skip_onto(history[:, history.shape[1] - self.season].unsqueeze(1), self.skip)
            steps.append(raw)
            previous = self.fed_back(raw, target, j)
            history = torch.cat([history, previous], dim=1)
        return torch.stack(steps, dim=1)

    def fed_back(self, raw: torch.Tensor, target: torch.Tensor | None, j: int) -> torch.Tensor:
        """(B, Q) raw outputs of step j -> (B, 1) the value the next step reads: the median forecast, or with
        teacher forcing the true value for a random share of windows (drawn on the device: no host sync)."""
        if self.draw is not None:  # a sample path: the value drawn from this step's distribution
            return self.draw(raw)
        fed = monotone(raw.unsqueeze(1), self.n_quantiles)[:, 0]
        fed = (fed[:, self.median] if fed.dim() == 2 else fed).detach().unsqueeze(1)
        if target is None:
            return fed
        keep = torch.rand(raw.shape[0], 1, device=raw.device) < self.teacher_forcing
        return torch.where(keep, target[:, j:j + 1], fed)

    def step_input(self, j: int, x: torch.Tensor, future: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
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


class RecurrentNetwork(nn.Module):
    """Encoder over the lookback, then the strategy's decoder -> (B, H) forecasts, or (B, H, Q) quantiles."""

    def __init__(self, *, cell: str, n_features: int, n_future: int, lookback: int, horizon: int,
                 hidden_size: int | list[int], num_layers: int, bidirectional: bool, dropout: float,
                 nonlinearity: str, season: int | None, n_series: int, series_embedding: int,
                 segment_len: int | None, strategy: str, attention: bool, attention_score: str,
                 teacher_forcing: float, head_layers: list[int], head_activation: str, head_dropout: float,
                 init_state: str, quantiles: list[float], window_norm: bool, likelihood: str | None = None,
                 static: dict | None = None, static_embedding: int = 4, static_into: str = "head"):
        """Keyword-only: every value comes from one dict built from the config (pipeline.model.hparams.network_args),
        saved with checkpoints and in the saved model's spec (the defaults are for models saved before the key)."""
        super().__init__()
        check_combination(cell, nonlinearity, strategy, attention, quantiles, season, lookback)
        # With a likelihood the head outputs its parameters, and the forecast is its quantiles at the levels.
        self.likelihood = likelihoods.likelihood(likelihood)
        if likelihood == "negative_binomial" and not window_norm:
            raise ConfigError("model.likelihood=negative_binomial scales each window by its level, as DeepAR does: "
                              "keep model.window_norm=true")
        quantiles = (quantiles or likelihoods.DEFAULT_LEVELS) if self.likelihood else quantiles
        widths = layer_widths(hidden_size, num_layers)
        self.horizon, self.window_norm, self.season = horizon, window_norm, season
        self.n_features, self.n_future = n_features, n_future
        self.quantiles = sorted(float(q) for q in quantiles)
        # The value fed back when rolling forward: the median, or the quantile nearest it.
        self.median = int(np.argmin([abs(q - 0.5) for q in self.quantiles])) if self.quantiles else 0
        # Added to the quantiles at output (scaled units): zero in training; set after it by conformal
        # calibration on the validation block (pipeline/training/calibration.py), and saved with the weights.
        self.register_buffer("interval_offsets", torch.zeros(len(self.quantiles)) if len(self.quantiles) > 1
                             else None)
        self.register_buffer("z", likelihoods.normal_quantiles(self.quantiles) if self.likelihood else None,
                             persistent=False)
        n_outputs = self.likelihood.n_params if self.likelihood else max(1, len(self.quantiles))
        # The seasonal skip moves a likelihood's location alone (a mask of the outputs), all of a quantile head's.
        skip = (torch.arange(n_outputs) == 0).float() if self.likelihood else None
        stack = dict(cell=cell, widths=widths, dropout=dropout if len(widths) > 1 else 0.0, nonlinearity=nonlinearity)
        self.static = StaticInputs(static, n_series, static_embedding) if static else None
        # Where the attributes enter: the head (beside the series embedding), the encoder's initial state, or
        # every row the encoder reads (bench/ACCURACY.md, "Static covariates": the initial state won). Models saved
        # before the key had them in the head: its default.
        self.static_into = static_into if self.static else "head"
        if self.static_into == "input" and strategy == "recursive":
            raise ConfigError("model.static_into=input: the recursive strategy rolls the encoder on rows without the "
                              "attributes; use model.static_into=head or state, or another model.strategy")
        in_head = self.static.width if self.static and self.static_into == "head" else 0
        self.encoder = Encoder(stack=stack, n_features=n_features, lookback=lookback, segment_len=segment_len,
                               bidirectional=bidirectional, learned_init=init_state == "learned",
                               static_into=self.static_into, static_width=self.static.width - in_head if self.static
                               else 0)
        self.embedding = nn.Embedding(n_series, series_embedding) if series_embedding else None
        head = dict(layers=list(head_layers), activation=head_activation, dropout=head_dropout,
                    embedding=series_embedding + in_head)
        if strategy == "direct":
            self.decoder = DirectHead(encoder=self.encoder, horizon=horizon, n_future=n_future,
                                      n_outputs=n_outputs, skip=skip, head=head, season=season)
        else:
            self.decoder = RolledDecoder(strategy=strategy, stack=stack, encoder=self.encoder, n_features=n_features,
                                         n_future=n_future, n_outputs=n_outputs, skip=skip, median=self.median,
                                         n_quantiles=0 if self.likelihood else len(self.quantiles),
                                         head=head, season=season, bidirectional=bidirectional, attention=attention,
                                         attention_score=attention_score, teacher_forcing=teacher_forcing)
        if season is not None:
            # Start exactly at seasonal naive; training learns the correction.
            nn.init.zeros_(self.decoder.head[-1].weight)
            nn.init.zeros_(self.decoder.head[-1].bias)

    def forward(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None, target: torch.Tensor | None = None,
                horizon: int | None = None, params: bool = False) -> torch.Tensor:
        """(B, L, F) inputs, (B, H, K) known-future features -> (B, H) or (B, H, Q); with a likelihood and
        `params`, its (B, H, P) parameters instead (what training scores).

        `target` (B, H), in training only, is fed back instead of predictions at a model.teacher_forcing share
        of steps (1.0 trains a pure one-step model). `horizon` may exceed the trained one for rolled
        strategies, given that many steps of `future`.
        """
        target = target if self.training else None
        level = spread = None
        if self.window_norm:
            # (B, L, F) -> (B, L, F): the target column centred and scaled by the window's own statistics
            level, spread = window_statistics(x[:, :, 0], lengths)
            x = torch.cat([((x[:, :, 0] - level) / spread).unsqueeze(2), x[:, :, 1:]], dim=2)
            target = None if target is None else (target - level) / spread
        # (B, L, F) -> outputs (B, T, directions * width), each layer's final state, (B, T) mask of real steps
        encoded = self.encoder(x, lengths, self.encoder_attributes(series))
        # -> (B, H) or (B, H, Q) in the window's normalised units
        forecast = self.decode(x, future, encoded, series, target, horizon or self.horizon)
        if self.window_norm and self.likelihood:
            forecast = self.likelihood.rescale(forecast, level, spread)
        elif self.window_norm:
            # (B, 1) -> (B, 1) or (B, 1, 1): back to the scaled units of the target
            shape = (-1,) + (1,) * (forecast.dim() - 1)
            forecast = forecast * spread.view(shape) + level.view(shape)
        if self.likelihood:
            if params:
                return forecast
            forecast = self.likelihood.quantiles(forecast, self.z)
        return self.calibrated(forecast)

    def decode(self, x: torch.Tensor, future: torch.Tensor, encoded: tuple, series: torch.Tensor | None,
               target: torch.Tensor | None, horizon: int) -> torch.Tensor:
        """From the encoder's (outputs, final states, mask) to the forecast: (B, H) or monotone (B, H, Q). `x`
        needs only its last `season` steps (at least one): the seasonal skip and the rolled strategies read
        nothing older. What streaming forecasts with."""
        embedded = conditioning(self.embedding, self.static if self.static_into == "head" else None, series)
        # -> (B, H, Q) raw -> (B, H) or (B, H, Q) monotone, or (B, H, P) a likelihood's parameters
        raw = self.decoder(x, future, encoded, embedded, target, horizon)
        return self.likelihood.constrain(raw) if self.likelihood else monotone(raw, len(self.quantiles))

    def encoder_attributes(self, series: torch.Tensor | None) -> torch.Tensor | None:
        """(B, W) the attributes of each window's series when the encoder reads them (model.static_into)."""
        reads = self.static is not None and self.static_into != "head" and series is not None
        return self.static(series.long()) if reads else None

    @property
    def attends(self) -> bool:
        """Whether the decoder attends over every encoder state (seq2seq with model.attention)."""
        return getattr(self.decoder, "attention", None) is not None

    def calibrated(self, forecast: torch.Tensor) -> torch.Tensor:
        """Quantiles widened (or narrowed) by the conformal offsets, in the scaled units of the target."""
        return calibrated(forecast, self.interval_offsets)


def calibrated(forecast: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    if offsets is None:
        return forecast
    # Calibration may narrow an interval past its neighbour; sorting keeps the levels monotone.
    return (forecast + offsets).sort(dim=-1).values


def check_combination(cell: str, nonlinearity: str, strategy: str, attention: bool, quantiles: list[float],
                      season: int | None, lookback: int) -> None:
    """What the schema's per-key checks cannot see: values that do not fit together."""
    if cell != "rnn" and nonlinearity != "tanh":
        raise ConfigError(f"model.nonlinearity={nonlinearity!r} applies to the vanilla RNN only; "
                          f"use model=rnn or drop the override")
    if attention and strategy != "seq2seq":
        raise ConfigError("model.attention needs a decoder to attend from; set model.strategy=seq2seq")
    if any(not 0 < q < 1 for q in quantiles):
        raise ConfigError(f"model.quantiles={quantiles}: each must lie strictly between 0 and 1")
    if season is not None and season > lookback:
        raise ConfigError(f"model.seasonal_skip needs data.season ({season}) <= window.lookback ({lookback})")

