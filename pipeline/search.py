"""Hyperparameter search: Optuna proposes, each trial is an ordinary training run, validation loss decides.

    python -m pipeline.train hparams_search=optuna hparams_search.n_trials=30

Optuna (current release) is driven directly rather than through Hydra's Optuna sweeper plugin: the plugin's
last release (1.2.0) requires optuna<3, and Hydra only loads sweepers from the `hydra_plugins` namespace, which
this package does not ship. The search space is written in the plugin's syntax (Hydra's sweep grammar), so its
configs carry over. Trials run one after another in this process.
"""

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import SearchConfig
from pipeline.errors import ConfigError, DataError, TrainingDiverged, first_line

log = logging.getLogger(__name__)

BEST = "sweep.best"


def import_optuna():
    try:
        import optuna
    except ImportError as missing:
        raise ConfigError("hparams_search needs Optuna: pip install -e '.[search]'") from missing
    return optuna


def search_space(params: dict[str, str]) -> dict[str, Any]:
    """`{"optim.lr": "tag(log, interval(1e-4, 1e-2))", ...}` -> Optuna distributions, one per config key:
    choice(...) categorical, range(a, b[, step]) integers from a up to b (exclusive), interval(a, b) uniform
    (int(interval(a, b)): integers), tag(log, ...) on a log scale."""
    distributions = import_optuna().distributions
    space = {}
    for key, text in params.items():
        try:
            override = OverridesParser.create().parse_override(f"{key}={text}")
        except HydraException as error:
            raise ConfigError(f"hparams_search.params.{key}: {first_line(error)}") from error
        sweep, log_scale = override.value(), "log" in getattr(override.value(), "tags", ())
        if isinstance(sweep, ChoiceSweep):
            space[key] = distributions.CategoricalDistribution(list(sweep.list))
        elif isinstance(sweep, RangeSweep):
            space[key] = distributions.IntDistribution(int(sweep.start), int(sweep.stop) - 1, log=log_scale,
                                                       step=int(sweep.step))
        elif isinstance(sweep, IntervalSweep) and isinstance(sweep.start, int) and isinstance(sweep.end, int):
            space[key] = distributions.IntDistribution(sweep.start, sweep.end, log=log_scale)
        elif isinstance(sweep, IntervalSweep):
            space[key] = distributions.FloatDistribution(sweep.start, sweep.end, log=log_scale)
        else:
            raise ConfigError(f"hparams_search.params.{key}={text} is not a search range; write choice(a, b, ...), "
                              f"range(a, b), interval(a, b) or tag(log, interval(a, b))")
    return space


def trial_config(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """The search's config with one trial's values, and no search of its own (so resuming it trains)."""
    trial = copy.deepcopy(cfg)
    for key, value in values.items():
        try:
            OmegaConf.update(trial, key, value, merge=False)
        except OmegaConfBaseException as error:
            raise ConfigError(f"hparams_search.params.{key}: {first_line(error)}; name a config key such as "
                              f"model.hidden_size or optim.lr") from error
    trial.hparams_search = None
    return trial


def search(cfg: DictConfig, search_cfg: SearchConfig, output_dir: Path, run_tags: dict[str, str],
           train: Callable[[DictConfig, Path, dict[str, str]], dict]) -> dict:
    """Run `n_trials` trainings (`train(config, folder, tags)` -> its summary) on values Optuna's TPE sampler
    (seeded with cfg.seed) proposes from the validation losses so far; tag the best trial's run `sweep.best`.

    A trial whose config cannot train or whose training diverges is recorded as failed, and the search goes
    on. Returns the best trial's summary, with the search's own figures added."""
    optuna = import_optuna()
    space = search_space(dict(search_cfg.params))
    trial_config(cfg, {key: _any_value(space[key]) for key in space})  # a misspelled key fails before any trial
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    tags = run_tags | {"sweep": run_tags.get("sweep", str(output_dir.resolve()))}
    summaries: dict[int, dict] = {}
    for number in range(search_cfg.n_trials):
        trial = study.ask(space)
        name = ",".join(f"{key}={_short(value)}" for key, value in trial.params.items())
        trial_tags = tags | {"sweep.trial": str(number), "mlflow.runName": f"trial {number}: {name}"}
        try:
            summaries[number] = train(trial_config(cfg, trial.params), output_dir / f"trial_{number}", trial_tags)
        except (ConfigError, DataError, TrainingDiverged) as error:
            log.warning("trial %d (%s) failed: %s", number, name, first_line(error))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, summaries[number]["val_loss"])
        log.info("trial %d (%s): val_loss %.5f; best so far %.5f (trial %d)", number, name,
                 summaries[number]["val_loss"], study.best_value, study.best_trial.number)
    if not summaries:
        raise ConfigError(f"hparams_search: all {search_cfg.n_trials} trials failed; see the log above")
    best = summaries[study.best_trial.number]
    MlflowClient(best["tracking_uri"]).set_tag(best["run_id"], BEST, "true")
    result = best | {"best_trial": study.best_trial.number, "best_params": study.best_params,
                     "trials": search_cfg.n_trials, "failed_trials": search_cfg.n_trials - len(summaries)}
    (output_dir / "search.json").write_text(json.dumps(result, indent=1))
    return result


def _any_value(distribution) -> Any:
    return distribution.choices[0] if hasattr(distribution, "choices") else distribution.low


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
