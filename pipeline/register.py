"""Register a training run's model and move the `champion` alias to it when it beats the current champion.

    python -m pipeline.register run_id=<training run> name=<registered model> [force=true]

Both are scored on the same backtest: the rolling-origin protocol on the validation block (`val_mase`, logged
by every training run), which is the same backtest only when both runs used the same data file, series, split
and horizon; otherwise the comparison is refused (force=true still moves the alias). The test block is never
used to choose.
"""

import json
import logging

import hydra
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from pipeline.cli import command, finish
from pipeline.config import CONF_DIR, RegisterConfig, to_config
from pipeline.errors import ConfigError, redact
from pipeline.inference.saved_model import DIGESTS_TAG
from pipeline.tracking.store import reachable

log = logging.getLogger(__name__)

ALIAS, SCORE = "champion", "val_mase"
# Params that must agree for two runs' validation scores to come from the same backtest.
SAME_BACKTEST = ["data.path", "data.id_column", "data.target_column", "split.val_steps", "split.test_steps",
                 "window.horizon"]


def register(cfg: RegisterConfig) -> dict:
    if not cfg.run_id or not cfg.name:
        raise ConfigError("give run_id=<training run> and name=<registered model name>")
    mlflow.set_tracking_uri(reachable(cfg.tracking, may_fall_back=False).uri)
    client = MlflowClient()
    try:
        run = client.get_run(cfg.run_id)
    except MlflowException as error:
        raise ConfigError(f"run {cfg.run_id} not found in {redact(cfg.tracking.uri)}; check run_id and tracking.uri"
                          ) from error
    if SCORE not in run.data.metrics:
        raise ConfigError(f"run {cfg.run_id} has no {SCORE} metric: it did not finish training; register a "
                          f"finished training run")
    if DIGESTS_TAG not in run.data.tags:
        raise ConfigError(f"run {cfg.run_id} has no model this pipeline can load (no {DIGESTS_TAG} tag: trained "
                          f"with tracking.log_model=false, or by an older version); train it again")
    champion = _champion(client, cfg.name)
    # MLflow 3 keeps a run's model as a logged model (models:/m-...): registering that is what runs:/ resolves to,
    # without MLflow's warning about it on every registration.
    logged = [output.model_id for output in (run.outputs.model_outputs if run.outputs else [])]
    version = mlflow.register_model(f"models:/{logged[-1]}" if logged else f"runs:/{cfg.run_id}/model", cfg.name)
    validation = {k: v for k, v in run.data.metrics.items() if k.startswith("val_")}
    if "best_val_loss" in run.data.metrics:  # the checkpoint's, not the last validation's
        validation["val_loss"] = run.data.metrics["best_val_loss"]
    for key, value in validation.items():
        client.set_model_version_tag(cfg.name, version.version, key, str(value))
    # The digests every load checks the model's files against (pipeline/saved_model.py), kept with the version.
    client.set_model_version_tag(cfg.name, version.version, DIGESTS_TAG, run.data.tags[DIGESTS_TAG])
    score = run.data.metrics[SCORE]
    decision = {"name": cfg.name, "version": version.version, "run_id": cfg.run_id, SCORE: score,
                "champion_version": None, f"champion_{SCORE}": None}
    if champion is None:
        promote, reason = True, "no champion yet"
    else:
        champion_run = client.get_run(champion.run_id)
        decision |= {"champion_version": champion.version,
                     f"champion_{SCORE}": champion_run.data.metrics.get(SCORE)}
        differing = [k for k in SAME_BACKTEST
                     if same_form(k, run.data.params.get(k)) != same_form(k, champion_run.data.params.get(k))]
        if differing:
            promote = cfg.force
            reason = (f"not the same backtest as champion v{champion.version} ({', '.join(differing)} differ)"
                      + ("; moved anyway: force=true" if cfg.force else "; set force=true to move anyway"))
        elif decision[f"champion_{SCORE}"] is None or score < decision[f"champion_{SCORE}"]:
            promote, reason = True, f"beats champion v{champion.version} on {SCORE}"
        else:
            promote = cfg.force
            reason = (f"does not beat champion v{champion.version} on {SCORE}"
                      + ("; moved anyway: force=true" if cfg.force else ""))
    if promote:
        client.set_registered_model_alias(cfg.name, ALIAS, version.version)
    decision |= {"champion": promote, "reason": reason}
    client.set_model_version_tag(cfg.name, version.version, "registration", json.dumps(decision))
    log.info("%s v%s: %s (%s %.4f%s)", cfg.name, version.version,
             f"now {ALIAS}" if promote else f"{ALIAS} unchanged", SCORE, score,
             "" if decision[f"champion_{SCORE}"] is None else f" against {decision[f'champion_{SCORE}']:.4f}")
    return decision


def same_form(key: str, value: str | None) -> str | None:
    """A logged param as runs of every version log it: data.id_column was logged as written (None, a name) before
    2026-12-03 and as a list since ([], ['name'])."""
    if key != "data.id_column" or value is None or value.startswith("["):
        return value
    return "[]" if value == "None" else str([value])


def _champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None  # no such model or no alias yet


@hydra.main(config_path=CONF_DIR, config_name="register", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    finish(lambda: register(to_config(cfg)), cfg.tracking.uri, experiment=cfg.tracking.experiment, model=cfg.name)


def main() -> None:
    command("register", hydra_main)


if __name__ == "__main__":
    main()
