"""Building blocks of the recurrent network (pipeline/model/network.py): stacked cells, the bridge from a bidirectional
encoder to a causal decoder, attention, the MLP head, monotone quantiles."""

import torch
from torch import nn

from pipeline.errors import ConfigError

# model.cell and model.head_activation (Enums of the schema, pipeline/config.py) -> the torch module.
CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

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
    parts: list[nn.Module] = []
    for width in layers:
        parts += [nn.Linear(in_size, width), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        in_size = width
    return nn.Sequential(*parts, nn.Linear(in_size, out_size))


def monotone(raw: torch.Tensor, n_quantiles: int) -> torch.Tensor:
    """(..., Q) raw outputs -> (...) a point forecast, or (..., Q) quantiles kept monotone: the lowest plus
    non-negative increments."""
    if not n_quantiles:
        return raw[..., 0]
    if n_quantiles == 1:
        return raw
    return torch.cat([raw[..., :1], raw[..., :1] + nn.functional.softplus(raw[..., 1:]).cumsum(-1)], dim=-1)


def window_statistics(history: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each window's target over its real (unpadded) steps: (B, 1) each.

    Per-window normalisation (RevIN, Kim et al. 2022) removes the window's level and spread before the network
    reads it and restores them at output, so a level shift since training needs no extrapolation.
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


def skip_onto(lag: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The seasonal lag to add to every output (`mask` None), or to the outputs `mask` marks with 1."""
    return lag if mask is None else lag * mask


def seasonal_lag(history: torch.Tensor, steps: int, season: int) -> torch.Tensor:
    """(B, T) scaled target so far -> (B, steps): the value one (or more) seasons before each next step, which
    the seasonal skip corrects (the baseline of the same name is pipeline.evaluation.metrics.seasonal_naive)."""
    ahead = torch.arange(steps, device=history.device)
    return history[:, history.shape[1] + ahead - season * (ahead // season + 1)]
