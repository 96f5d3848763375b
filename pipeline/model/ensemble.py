"""Several networks of one configuration forecasting as one (model.ensemble), and the one function that builds
whatever network a spec or checkpoint describes."""

import torch
from torch import nn

from pipeline.model.likelihoods import drawn_quantiles
from pipeline.model.network import RecurrentNetwork, calibrated


class Ensemble(nn.Module):
    """`members` networks of one configuration (model.ensemble), from different initial weights, trained side by
    side, each on its own batches and its own loss (pipeline/model/training_module.py); the forecast is their
    mean. Averaging members removes part of what a seed changes (bench/ACCURACY.md, "The ensemble option").

    A Forecaster, like each of its members: what the forecast, backtest, calibration and export paths read of a
    network is the members' (their shared configuration), except the conformal offsets, which are the
    ensemble's own."""

    def __init__(self, *, members: int, **network):
        super().__init__()
        self.members = nn.ModuleList(RecurrentNetwork(**network) for _ in range(members))
        first = self.members[0]
        self.horizon, self.n_features, self.n_future = first.horizon, first.n_features, first.n_future
        self.quantiles, self.median, self.likelihood = first.quantiles, first.median, first.likelihood
        # The conformal offsets of the ensemble's forecast (the members' own stay zero).
        self.register_buffer("interval_offsets", torch.zeros(len(self.quantiles)) if len(self.quantiles) > 1
                             else None)

    @property
    def embedding(self) -> nn.Embedding | None:
        """Whether (and how) the members read a series id: each has its own table."""
        return self.members[0].embedding

    @property
    def static(self) -> nn.Module | None:
        """Whether the members read static attributes: each has its own embeddings of them."""
        return self.members[0].static

    def each(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None = None,
             lengths: torch.Tensor | None = None, target: torch.Tensor | None = None,
             horizon: int | None = None) -> torch.Tensor:
        """(members, B, H) or (members, B, H, Q): every member's forecast."""
        return torch.stack([member(x, future, series, lengths, target, horizon) for member in self.members])

    def forward(self, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None, target: torch.Tensor | None = None,
                horizon: int | None = None) -> torch.Tensor:
        """RecurrentNetwork's forward, averaged over the members (a mean of monotone quantiles stays monotone);
        with a likelihood, the quantiles of the members' mixture (read from draws: likelihoods.drawn_quantiles)."""
        if self.likelihood:
            params = torch.stack([member(x, future, series, lengths, target, horizon, params=True)
                                  for member in self.members])
            levels = torch.tensor(self.quantiles, dtype=torch.float64)
            return calibrated(drawn_quantiles(self.likelihood, params, levels), self.interval_offsets)
        return calibrated(self.each(x, future, series, lengths, target, horizon).mean(0), self.interval_offsets)


def build_network(*, members: int = 1, **network) -> RecurrentNetwork | Ensemble:
    """The network a spec or checkpoint describes: RecurrentNetwork's keyword arguments, and how many members
    (model.ensemble; absent in models saved before ensembles: one)."""
    return RecurrentNetwork(**network) if members == 1 else Ensemble(members=members, **network)
