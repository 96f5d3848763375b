"""The encoder over the lookback (pipeline/model/network.py builds it): stacked cells reading it step by step or a
segment at a time, and, with model.static_into, the series' static attributes as its initial state or as part of
each step's input."""

import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.model.layers import Stack, State


class Encoder(nn.Module):
    """The lookback, step by step or a segment of steps at a time (SegRNN), through stacked cells; left-padded
    windows are packed so padding never reaches the state."""

    def __init__(self, *, stack: dict, n_features: int, lookback: int, segment_len: int | None,
                 bidirectional: bool, learned_init: bool, static_into: str = "head", static_width: int = 0):
        """`static_width`: the width of the series' attributes (pipeline/model/static.py) when `static_into` is
        "state" (mapped to each layer's initial state, in place of zeros or a learned one) or "input" (appended to
        every row read); 0 when the head reads them."""
        super().__init__()
        self.segment_len = segment_len
        self.segment = None
        self.static_into = static_into if static_width else "head"
        n_in = n_features + (static_width if self.static_into == "input" else 0)
        if segment_len:
            if lookback % segment_len:
                raise ConfigError(f"model.segment_len={segment_len} must divide window.lookback ({lookback}): set "
                                  f"model.segment_len to a divisor of it, or null to read step by step")
            # Each segment of S steps x F features becomes one recurrent input (SegRNN, Lin et al. 2023).
            self.segment = nn.Linear(segment_len * n_in, stack["widths"][0])
        self.stack = Stack(input_size=stack["widths"][0] if segment_len else n_in,
                           bidirectional=bidirectional, learned_init=learned_init, **stack)
        self.directions, self.output_size = self.stack.directions, self.stack.output_size
        # One map per layer: attributes -> its (directions, width) hidden state, and an LSTM's cell state too.
        self.widths, self.kinds = list(stack["widths"]), 2 if self.stack.is_lstm else 1
        self.static_state = nn.ModuleList(
            nn.Linear(static_width, self.kinds * self.directions * w) for w in self.widths
        ) if self.static_into == "state" else None

    def embed(self, x: torch.Tensor, static: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) rows -> (B, T / S, width) segment embeddings, or the rows themselves without segments;
        (B, W) attributes appended to every row first, when the encoder reads them there."""
        if self.static_into == "input" and static is not None:
            x = torch.cat([x, static.to(x.dtype).unsqueeze(1).expand(-1, x.shape[1], -1)], dim=2)
        if self.segment is None:
            return x
        # (B, T, F) -> (B, T / S, S * F) -> (B, T / S, width)
        return self.segment(x.reshape(x.shape[0], -1, self.segment_len * x.shape[2]))

    def initial(self, batch: int, static: torch.Tensor | None = None) -> list[State | None]:
        """The state before the first step: zeros, the learned initial state, or one made of (B, W) attributes."""
        if self.static_state is None or static is None:
            return self.stack.initial(batch)
        states = []
        for layer, width in zip(self.static_state, self.widths):
            # (B, kinds * directions * width) -> (kinds, directions, B, width)
            h = torch.tanh(layer(static)).view(batch, self.kinds, self.directions, width).permute(1, 2, 0, 3)
            states.append((h[0].contiguous(), h[1].contiguous()) if self.kinds == 2 else h[0].contiguous())
        return states

    def step(self, x: torch.Tensor, states: list[State | None], static: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, list[State]]:
        """(B, S, F): one more segment (or one row) read from `states` -> outputs (B, 1, directions * width) and
        the new states. What streaming advances the state with."""
        return self.stack(self.embed(x, static), states)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None, static: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[State], torch.Tensor | None]:
        """(B, L, F) -> outputs (B, T, directions * width), each layer's final state, and a (B, T) mask of real
        steps when windows are padded (outputs then hold each window's real steps first). `static`: (B, W)
        attributes, read as model.static_into says (None when the head reads them)."""
        steps = self.embed(x, static)
        first = self.initial(x.shape[0], static) if self.static_state is not None else None
        if lengths is not None and self.segment_len:
            lengths = torch.div(lengths + self.segment_len - 1, self.segment_len, rounding_mode="floor")
        if lengths is None:
            outputs, states = self.stack(steps, first)
            return outputs, states, None
        # Left-padded windows: move each window's real steps first and pack, so padding never enters.
        time = torch.arange(steps.shape[1], device=steps.device)
        shift = (time.unsqueeze(0) + (steps.shape[1] - lengths).unsqueeze(1)) % steps.shape[1]
        real_first = steps.gather(1, shift.unsqueeze(2).expand_as(steps))
        packed = nn.utils.rnn.pack_padded_sequence(real_first, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        outputs, states = self.stack(packed, first)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=steps.shape[1])
        return outputs, states, time.unsqueeze(0) < lengths.unsqueeze(1)
