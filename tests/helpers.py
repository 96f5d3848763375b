"""What tests build models with: the network and the LightningModule from the composed config, exactly as
`python -m pipeline.train` builds them, so no test trains a model the command never trains."""

from dataclasses import asdict

from pipeline.config import to_config
from pipeline.network import RecurrentNetwork
from tests.conftest import compose_config


def network_args(*overrides: str, n_features: int, n_future: int, n_series: int = 1,
                 season: int | None = None) -> dict:
    """RecurrentNetwork's keyword arguments from conf/ plus `overrides` (e.g. "model.cell=gru")."""
    from pipeline.train import network_args as from_config

    cfg = to_config(compose_config(*overrides))
    return from_config(cfg.model, cfg.window, n_features=n_features, n_future=n_future, n_series=n_series,
                       season=season)


def network_for(windows, *overrides: str, season: int | None = None, **changes) -> RecurrentNetwork:
    """A network for `windows` from conf/ plus `overrides`, with keyword arguments changed by `changes`."""
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    return RecurrentNetwork(**(args | changes))


def forecaster_for(windows, *overrides: str, season: int | None = None, **changes):
    """The LightningModule the training stage builds for `windows`, from conf/ plus `overrides`; `changes`
    replace network keyword arguments."""
    from pipeline.models import Forecaster

    cfg = to_config(compose_config(*overrides))
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    return Forecaster(network=args | changes, optim=asdict(cfg.optim))
