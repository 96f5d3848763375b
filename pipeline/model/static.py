"""Static covariates in the network: each series' attributes (pipeline/data/static.py), looked up by its series row
and read where model.static_into says: the encoder's initial state (pipeline/model/encoder.py), every row it reads,
or the head beside the series embedding.

A categorical attribute becomes a learned embedding of `width` numbers, row 0 of which is the fallback for a value
training never saw: zeros, held there (padding_idx), so an unseen value reads as "no attribute" rather than as some
other value. A numeric attribute is fed as it is (standardised over the training series). The table of each
series' attributes is a buffer: it is saved with the weights and checked against their digests like them.
"""

import copy

import torch
from torch import nn


class StaticInputs(nn.Module):
    def __init__(self, static: dict, n_series: int, width: int):
        """`static`: {"categories": {column: [values, ...]}, "numeric": {column: [mean, std]}}, as
        pipeline.data.static.StaticTable.spec writes it."""
        super().__init__()
        sizes = [len(values) for values in static["categories"].values()]
        self.embeddings = nn.ModuleList(nn.Embedding(size + 1, width, padding_idx=0) for size in sizes)
        self.register_buffer("codes", torch.zeros(n_series, len(sizes), dtype=torch.long))
        self.register_buffer("values", torch.zeros(n_series, len(static["numeric"])))
        self.width = width * len(sizes) + len(static["numeric"])

    def set_table(self, codes: torch.Tensor, values: torch.Tensor) -> None:
        """Each training series' (C,) category codes (0: unseen) and (N,) standardised numbers, by series row."""
        self.codes.copy_(codes)
        self.values.copy_(values)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) series rows -> (B, width): the attributes' embeddings, then the numbers."""
        parts = [embedding(self.codes[rows, i]) for i, embedding in enumerate(self.embeddings)]
        return torch.cat([*parts, self.values[rows].to(self.embeddings[0].weight.dtype if parts else torch.float32)],
                         dim=-1)


def conditioning(embedding: nn.Embedding | None, static: StaticInputs | None,
                 series: torch.Tensor | None) -> torch.Tensor | None:
    """(B, E) what the head reads of a window's series besides its values: the series embedding and the static
    attributes, or None without either."""
    parts = [] if series is None else [module(series.long()) for module in (embedding, static) if module is not None]
    return torch.cat(parts, dim=-1) if parts else None


def with_attributes(network: nn.Module, rows: torch.Tensor, codes: dict[int, torch.Tensor],
                    values: dict[int, torch.Tensor]) -> nn.Module:
    """A copy of `network` in which the series at `rows` read the attributes a forecast gave: {attribute index:
    (S,) codes} and {numeric index: (S,) standardised values}; every other attribute stays training's. A copy, so
    that a loaded model serving several requests at once is never changed by one of them."""
    changed = copy.deepcopy(network)
    for module in changed.modules():
        if isinstance(module, StaticInputs):
            for i, column in codes.items():
                module.codes[rows, i] = column.to(module.codes.device)
            for i, column in values.items():
                module.values[rows, i] = column.to(module.values)
    return changed
