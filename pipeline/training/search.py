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
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import SearchConfig, TrackingConfig, to_config
from pipeline.errors import ConfigError, DataError, TrainingDiverged, first_line
from pipeline.tracking.run_lifetime import ending
from pipeline.tracking.store import experiment_id

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
    """Run trainings (`train(config, folder, tags)` -> its summary) on values Optuna's TPE sampler (seeded with
    cfg.seed) proposes from the validation losses so far, until the study holds `n_trials` finished trials; tag
    the best trial's run `sweep.best`. Trials are nested under one parent run of the search.

    The study lives in `hparams_search.storage` (by default optuna.db in the run folder): run the command again
    with that storage and the search resumes where it stopped; a trial cut short is trained again first.

    A trial whose config cannot train or whose training diverges is recorded as failed, and the search goes
    on. Returns the best trial's summary, with the search's own figures added."""
    optuna = import_optuna()
    space = search_space(dict(search_cfg.params))
    trial_config(cfg, {key: _any_value(space[key]) for key in space})  # a misspelled key fails before any trial
    output_dir.mkdir(parents=True, exist_ok=True)
    storage = search_cfg.storage or f"sqlite:///{(output_dir / 'optuna.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its own line per trial repeats ours
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                storage=storage, study_name=search_cfg.study_name, load_if_exists=True)
    retry_cut_short(study)
    client, parent = parent_run(study, to_config(cfg).tracking, search_cfg, output_dir, run_tags)
    tags = run_tags | {"sweep": study.user_attrs["sweep"], "mlflow.parentRunId": parent}
    try:
        while len(finished(study)) < search_cfg.n_trials:
            run_trial(study, space, cfg, output_dir, tags, train)
    except BaseException as error:  # resumable: run the command again with the same storage
        client.set_terminated(parent, ending(error)[0])
        raise
    if not study.best_trials:
        client.set_terminated(parent, "FAILED")
        raise ConfigError(f"hparams_search: all {search_cfg.n_trials} trials failed; see the log above")
    best = json.loads(study.best_trial.user_attrs["summary"])
    MlflowClient(best["tracking_uri"]).set_tag(best["run_id"], BEST, "true")
    result = best | {"best_trial": study.best_trial.number, "best_params": study.best_params,
                     "trials": len(finished(study)), "failed_trials": len(finished(study)) - len(completed(study)),
                     "search_run_id": parent, "storage": storage}
    client.log_metric(parent, "best_val_loss", study.best_value)
    client.log_param(parent, "best_trial", study.best_trial.number)
    client.set_terminated(parent, "FINISHED")
    (output_dir / "search.json").write_text(json.dumps(result, indent=1))
    return result


def run_trial(study, space: dict[str, Any], cfg: DictConfig, output_dir: Path, tags: dict[str, str],
              train: Callable[[DictConfig, Path, dict[str, str]], dict]) -> None:
    """One trial: Optuna's values trained as a run of their own, its validation loss told back."""
    optuna = import_optuna()
    trial = study.ask(space)
    number = trial.number
    name = ",".join(f"{key}={_short(value)}" for key, value in trial.params.items())
    trial_tags = tags | {"sweep.trial": str(number), "mlflow.runName": f"trial {number}: {name}"}
    try:
        summary = train(trial_config(cfg, trial.params), output_dir / f"trial_{number}", trial_tags)
    except (ConfigError, DataError, TrainingDiverged) as error:
        log.warning("trial %d (%s) failed: %s", number, name, first_line(error))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_user_attr("summary", json.dumps(summary))
    study.tell(trial, summary["val_loss"])
    log.info("trial %d (%s): val_loss %.5f; best so far %.5f (trial %d)", number, name, summary["val_loss"],
             study.best_value, study.best_trial.number)


def finished(study) -> list:
    """Trials that ran to their end: trained, or failed by their own values (not cut short by a stop)."""
    states, cut_short = import_optuna().trial.TrialState, set(study.user_attrs.get("cut_short", []))
    return [t for t in study.trials if t.state in (states.COMPLETE, states.FAIL) and t.number not in cut_short]


def completed(study) -> list:
    return [t for t in study.trials if t.state == import_optuna().trial.TrialState.COMPLETE]


def retry_cut_short(study) -> None:
    """Trials a killed search left running: their values are queued to be trained first, and they are failed
    (a study's trials never run again under the same number)."""
    optuna = import_optuna()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        log.warning("trial %d was cut short (the search was stopped); training its values again", trial.number)
        study.enqueue_trial(trial.params)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.set_user_attr("cut_short", [*study.user_attrs.get("cut_short", []), trial.number])


def parent_run(study, tracking: TrackingConfig, search_cfg: SearchConfig, output_dir: Path,
               run_tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """The search's own MLflow run, which its trials are nested under: created with the study, reopened when it
    resumes."""
    client = MlflowClient(tracking.uri)
    if "parent_run_id" in study.user_attrs:
        parent = study.user_attrs["parent_run_id"]
        client.update_run(parent, status="RUNNING")
        return client, parent
    mlflow.set_tracking_uri(tracking.uri)
    name = f"search {', '.join(search_cfg.params)} {secrets.token_hex(2)}"
    sweep = run_tags.get("sweep", str(output_dir.resolve()))
    run = client.create_run(experiment_id(tracking), run_name=name, tags=run_tags | {
        "sweep": sweep, "stage": "search", "hparams_search.storage": search_cfg.storage or ""})
    client.log_param(run.info.run_id, "n_trials", search_cfg.n_trials)
    for key, text in search_cfg.params.items():
        client.log_param(run.info.run_id, f"search.{key}", text)
    study.set_user_attr("parent_run_id", run.info.run_id)
    study.set_user_attr("sweep", sweep)
    return client, run.info.run_id


def _any_value(distribution) -> Any:
    return distribution.choices[0] if hasattr(distribution, "choices") else distribution.low


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
