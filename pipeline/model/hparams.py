"""The network's hyperparameters: one plain dict built from the config, what checkpoints and saved models carry."""

from pipeline.config import DataConfig, Likelihood, ModelConfig, Scaling, Transform, WindowConfig
from pipeline.errors import ConfigError


def network_args(model: ModelConfig, window: WindowConfig, *, n_features: int, n_future: int, n_series: int,
                 season: int | None, static: dict | None = None) -> dict:
    """RecurrentNetwork's keyword arguments (and `members`, for pipeline.model.ensemble.build_network): the model
    config plus what the data decided. Written once here; checkpoints and the saved model's spec carry this dict,
    so nothing rebuilds a network any other way."""
    return dict(cell=model.cell.value, n_features=n_features, n_future=n_future, lookback=window.lookback,
                horizon=window.horizon, hidden_size=model.hidden_size, num_layers=model.num_layers,
                bidirectional=model.bidirectional, dropout=model.dropout, nonlinearity=model.nonlinearity.value,
                season=season if model.seasonal_skip else None, n_series=n_series,
                series_embedding=model.series_embedding, segment_len=model.segment_len,
                strategy=model.strategy.value, attention=model.attention,
                attention_score=model.attention_score.value, teacher_forcing=model.teacher_forcing,
                head_layers=list(model.head_layers), head_activation=model.head_activation.value,
                head_dropout=model.head_dropout, init_state=model.init_state.value,
                quantiles=list(model.quantiles), window_norm=model.window_norm, members=model.ensemble,
                likelihood=model.likelihood.value if model.likelihood else None, static=static,
                static_embedding=model.static_embedding, static_into=model.static_into.value)


def check_likelihood(model: ModelConfig, data: DataConfig) -> None:
    """A count distribution scores the counts themselves: the target the network sees must not be rescaled."""
    if model.likelihood == Likelihood.negative_binomial and (data.scaler != Scaling.none
                                                             or data.transform != Transform.none):
        raise ConfigError("model.likelihood=negative_binomial models the counts themselves: set data.scaler=none "
                          "and data.transform=none (it scales each window by its level on its own)")
