"""Distribution heads (model.likelihood): the network outputs a distribution's parameters per horizon step, is
trained by its negative log-likelihood, and forecasts quantiles of it at the model's levels.

Parameters are in the units the network computes in (the scaled target, or the window's own when
model.window_norm, mapped back by each kind's `rescale`) and live in the last axis: (..., P). The location comes
first, so the seasonal skip moves it alone and the rolled decoders feed back params[..., 0]. The normal's and
Student's t's quantiles are arithmetic on constants fixed at the levels (no inverse CDF at run time), so exported
graphs need nothing more; the negative binomial's are read from draws.
"""

from collections.abc import Callable
from statistics import NormalDist

import torch
from torch import distributions
from torch.nn.functional import softplus

from pipeline.errors import ConfigError
from pipeline.model.layers import window_statistics

# Scales below this (in scaled units) would let the likelihood grow without bound on a flat stretch.
MIN_SCALE = 1e-3
# Student's t with fewer degrees of freedom has tails too heavy for its variance to exist, and for the quantile
# expansion below to hold within 1%.
MIN_DF = 3.0
# Draws the quantiles of a distribution without an inverse CDF in torch (the negative binomial, an ensemble's
# mixture) are read from: the 2.5% quantile then moves by about a tenth of a standard deviation between seeds.
DRAWS = 1000
# The levels a likelihood model forecasts when model.quantiles is empty: the 80% and 95% central intervals and
# the median, the intervals every probabilistic score here reports.
DEFAULT_LEVELS = [0.025, 0.1, 0.5, 0.9, 0.975]


class Normal:
    name, n_params = "normal", 2  # location, scale

    @staticmethod
    def constrain(raw: torch.Tensor) -> torch.Tensor:
        return torch.stack([raw[..., 0], softplus(raw[..., 1]) + MIN_SCALE], dim=-1)

    @staticmethod
    def rescale(params: torch.Tensor, level: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        return affine(params, level, spread)

    @staticmethod
    def distribution(params: torch.Tensor) -> distributions.Distribution:
        return distributions.Normal(params[..., 0], params[..., 1])

    @staticmethod
    def quantiles(params: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(..., P) parameters and (Q,) standard normal quantiles of the levels -> (..., Q)."""
        return params[..., :1] + params[..., 1:2] * z


class StudentT:
    name, n_params = "student_t", 3  # location, scale, degrees of freedom

    @staticmethod
    def constrain(raw: torch.Tensor) -> torch.Tensor:
        return torch.stack([raw[..., 0], softplus(raw[..., 1]) + MIN_SCALE, softplus(raw[..., 2]) + MIN_DF], dim=-1)

    @staticmethod
    def rescale(params: torch.Tensor, level: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        return affine(params, level, spread)

    @staticmethod
    def distribution(params: torch.Tensor) -> distributions.Distribution:
        return distributions.StudentT(params[..., 2], params[..., 0], params[..., 1])

    @staticmethod
    def quantiles(params: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The t quantile by its Cornish-Fisher expansion in the normal quantile z (Abramowitz & Stegun 26.7.5,
        three terms): within 1% of the exact value at 2.5% and 97.5% for df >= 3, closer as df grows; torch has no
        t inverse CDF."""
        df = params[..., 2:3]
        t = (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
             + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))
        return params[..., :1] + params[..., 1:2] * t


class NegativeBinomial:
    """Counts, as DeepAR models them: mean mu > 0 and dispersion alpha > 0, variance mu + alpha * mu^2. In a
    window's own units the head gives the mean's location (unconstrained like the others, so the seasonal skip
    and the rolled decoders read it as they do a normal's) and the dispersion; mapped back to counts, mu =
    softplus(location * spread + level) and alpha is divided by sqrt(1 + level) (DeepAR's scale: the network learns
    a dispersion free of the series' size). Needs the scaled target to be the count itself (data.scaler=none)
    and the window's statistics (model.window_norm)."""

    name, n_params = "negative_binomial", 2  # location, dispersion
    constrain = staticmethod(Normal.constrain)  # a free location, a positive second parameter

    @staticmethod
    def rescale(params: torch.Tensor, level: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        mean = softplus(params[..., 0] * spread + level) + 1e-6
        return torch.stack([mean, params[..., 1] / (1 + level.clamp_min(0)).sqrt()], dim=-1)

    @staticmethod
    def distribution(params: torch.Tensor) -> distributions.Distribution:
        # torch's parameters: total_count r = 1 / alpha and logits log(mu / r), so that the mean is mu.
        return distributions.NegativeBinomial(total_count=1 / params[..., 1],
                                              logits=params[..., 0].log() + params[..., 1].log(), validate_args=False)

    @staticmethod
    def quantiles(params: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Read from DRAWS draws (drawn_quantiles): counts, so each quantile is a drawn value."""
        return drawn_quantiles(NegativeBinomial, params.unsqueeze(0), torch.special.ndtr(z.double()))


LIKELIHOODS = {kind.name: kind for kind in (Normal, StudentT, NegativeBinomial)}


def likelihood(name: str | None) -> type[Normal] | type[StudentT] | type[NegativeBinomial] | None:
    if name is None:
        return None
    if name not in LIKELIHOODS:
        raise ConfigError(f"model.likelihood={name!r}: choose one of {', '.join(LIKELIHOODS)} or null")
    return LIKELIHOODS[name]


def normal_quantiles(levels: list[float]) -> torch.Tensor:
    """(Q,) the standard normal's quantiles at `levels`, computed once."""
    return torch.tensor([NormalDist().inv_cdf(q) for q in levels])


def affine(params: torch.Tensor, level: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """A location-scale family's parameters in a window's own units -> the scaled target's: the location shifted
    and stretched, the scale stretched, the shape (degrees of freedom) kept. `level` and `spread` are (B, 1)."""
    level, spread = level.unsqueeze(-1), spread.unsqueeze(-1)
    return torch.cat([params[..., :1] * spread + level, params[..., 1:2] * spread, params[..., 2:]], dim=-1)


def drawn_quantiles(kind, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(M, ..., P) parameters of M equally weighted components -> (..., Q) quantiles of their mixture at `levels`,
    read from DRAWS draws shared among the components, from seed 0 (the caller's random state kept), so the
    same inputs forecast the same quantiles. Counts keep drawn values (the lower of two neighbours)."""
    cuda = [params.device.index or 0] if params.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        draws = kind.distribution(params.float()).sample((-(-DRAWS // params.shape[0]),)).flatten(0, 1)
    interpolation = "lower" if kind is NegativeBinomial else "linear"
    return torch.quantile(draws, levels.to(draws), dim=0, interpolation=interpolation).movedim(0, -1).to(params.dtype)


def negative_log_likelihood(kind, params: torch.Tensor, actual: torch.Tensor) -> torch.Tensor:
    """(B, H) negative log-likelihood of the actuals, in float32 whatever the training precision."""
    return -kind.distribution(params.float()).log_prob(actual.float())


def coherent_paths(network) -> bool:
    """Whether a network's sample paths feed each path its own draws (the rolled decoders), rather than draw each
    step on its own (a direct head)."""
    return all(hasattr(member.decoder, "draw") for member in getattr(network, "members", [network]))


def sample_paths(network, x: torch.Tensor, future: torch.Tensor, series: torch.Tensor | None,
                 lengths: torch.Tensor | None, n: int) -> torch.Tensor:
    """(B, n, H) sample paths in the scaled target's units, from torch's current random state.

    The rolled strategies (recursive, seq2seq) feed each path its own drawn value at every step, so a path is
    coherent across the horizon (a day's total, its peak). A direct head draws each step on its own: its paths
    have the right distribution at every step but no dependence between steps. An ensemble's paths come from
    its members in turn, n / members each: samples of their mixture.
    """
    members = list(getattr(network, "members", [network]))
    if len(members) > 1:
        per = -(-n // len(members))
        paths = [sample_paths(member, x, future, series, lengths, per) for member in members]
        return torch.cat(paths, dim=1)[:, :n]
    statistics = window_statistics(x[:, :, 0], lengths) if network.window_norm else None
    return draw_paths(network, x.shape[0], n, statistics, lambda copies: network(
        *(repeated(t, copies) for t in (x, future, series, lengths)), params=True))


def repeated(t: torch.Tensor | None, copies: int, dim: int = 0) -> torch.Tensor | None:
    """Each row (along `dim`) `copies` times in place: a batch of windows as the batch of their paths."""
    return t if t is None or copies == 1 else t.repeat_interleave(copies, dim=dim)


def draw_paths(network, batch: int, n: int, statistics: tuple[torch.Tensor, torch.Tensor] | None,
               run: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """(batch, n, H) paths of one network: `run(copies)` runs it on its inputs with each row repeated `copies`
    times (n for the rolled strategies, 1 for a direct head) and returns the (rows, H, P) parameters;
    `statistics`, the windows' (level, spread) with model.window_norm, else None."""
    kind = network.likelihood
    if not coherent_paths(network):  # direct: independent draws at each step
        params = run(1)
        return kind.distribution(params.float()).sample((n,)).transpose(0, 1).to(params.dtype)
    # Each step's distribution in the scaled target's units; the value drawn from it is fed back in the
    # decoder's (the window's own, with model.window_norm).
    weights = next(network.parameters())
    level, spread = ((repeated(t, n) for t in statistics) if statistics is not None else
                     (weights.new_zeros(batch * n, 1), weights.new_ones(batch * n, 1)))
    drawn = []

    def draw(raw: torch.Tensor) -> torch.Tensor:
        params = kind.rescale(kind.constrain(raw).unsqueeze(1), level, spread)[:, 0]
        value = kind.distribution(params.float()).sample().to(raw.dtype).unsqueeze(1)
        drawn.append(value)
        return (value - level) / spread

    network.decoder.draw = draw
    try:
        run(n)
    finally:
        network.decoder.draw = None
    return torch.cat(drawn, dim=1).view(batch, n, -1)  # (B * n, H): a value drawn at each step
