"""Resuming a training run: `python -m pipeline.train resume=<run id | last>` continues the same MLflow run from
its last checkpoint, with its own config, as if it had never stopped.

Lightning's checkpoints hold the weights, optimizer, scheduler, loop counters and callbacks; ExactResume
(pipeline/training/callbacks.py) adds what they lack (the random state, and where the epoch's batch order stood), so the
resumed training takes the very steps the interrupted one would have.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from pipeline.config import CONF_DIR, Config, TrackingConfig, to_config
from pipeline.errors import ConfigError, first_line, redact
from pipeline.tracking.records import file_sha256
from pipeline.tracking.run_lifetime import holder_alive
from pipeline.tracking.store import reachable
from pipeline.training.distributed import is_rank_zero

# Tags a training run carries so it can be found and resumed.
STAGE, OUTPUT_DIR = "stage", "output_dir"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
# What a resume may change: where the run is recorded and how many threads compute it. Anything else would make
# it a different training.
RESUME_MAY_CHANGE = ("tracking", "resume", "threads")


@dataclass
class Resume:
    """A training run to continue: its id, its output folder and last checkpoint, and the last step each of
    its metrics was logged at (the resumed training replays steps after the checkpoint; those are not logged
    twice)."""

    run_id: str
    output_dir: Path
    checkpoint: Path
    logged_until: dict[str, int]


def refuse_changes(command: DictConfig, overrides: list[str], recorded: DictConfig, which: str) -> None:
    """A resume continues the run's own config: the interrupted command may be repeated with resume= added, but
    a value it sets (a key it overrides, or one its groups change from what the plain command composes) that
    differs from the run's is refused, naming it. Where the run is tracked may change."""
    now, then, default = (flatten(OmegaConf.to_container(c, resolve=True, enum_to_str=True))
                          for c in (command, recorded, plain_command()))
    said = {override.lstrip("+").partition("=")[0] for override in overrides}
    for key in sorted(now):
        set_here = key in said or now[key] != default.get(key)
        if set_here and not key.startswith(RESUME_MAY_CHANGE) and now[key] != then.get(key):
            raise ConfigError(f"resume={which}: {key}={now[key]} differs from the run's {key}={then.get(key)}; a "
                              f"resume continues a run with the config it started with (to train with a different "
                              f"config, start a new run without resume=)")


def plain_command() -> DictConfig:
    """What `python -m pipeline.train` composes with no arguments (the schema and the default experiment): values
    equal to these were not set by the command."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside the stage's @hydra.main: its own conf/
        return compose("config")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config")


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"model": {"cell": "gru"}} -> {"model.cell": "gru"}; lists stay values."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def find_run(cfg: TrackingConfig, which: str) -> Run:
    """The training run `which` names (a run id, or `last`: the latest training run of cfg.experiment), if it
    can be resumed: not finished, and not still held by a live process."""
    # The run lives in that store: no offline fallback when reading.
    mlflow.set_tracking_uri(reachable(cfg, may_fall_back=False).uri)
    client = MlflowClient(cfg.uri)
    if which == "last":
        experiment = client.get_experiment_by_name(cfg.experiment)
        runs = client.search_runs([experiment.experiment_id], f"tags.{STAGE} = 'train'",
                                  order_by=["attributes.start_time DESC"], max_results=1) if experiment else []
        if not runs:
            raise ConfigError(f"resume=last: experiment {cfg.experiment!r} at {redact(cfg.uri)} has no training run to "
                              f"resume; check tracking.uri and tracking.experiment")
        run = runs[0]
    else:
        try:
            run = client.get_run(which)
        except mlflow.exceptions.MlflowException as error:
            raise ConfigError(f"resume={which}: no such run at {redact(cfg.uri)}; give a training run id from the "
                              f"MLflow UI, or resume=last") from error
        if run.data.tags.get(STAGE) != "train":
            raise ConfigError(f"resume={which}: run {which} is not a training run")
    status = run.info.status
    if status == RunStatus.to_string(RunStatus.FINISHED):
        raise ConfigError(f"resume={which}: run {run.info.run_id} finished; there is nothing to resume")
    # The other processes of a distributed training find the run already reopened by rank zero.
    if status == RunStatus.to_string(RunStatus.RUNNING) and holder_alive(run) and is_rank_zero():
        raise ConfigError(f"resume={which}: run {run.info.run_id} is still being trained by process "
                          f"{run.data.tags.get('process.pid')} on {run.data.tags.get('process.host')}")
    return run


def check_checkpoint(checkpoint: Path, which: str) -> None:
    """A checkpoint is a zip archive (torch.save's format): every member's CRC is checked, so a truncated or
    damaged file is refused here, before the run is reopened, rather than failing it mid-restore."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            bad_member = archive.testzip()
        damaged = None if bad_member is None else f"{bad_member} fails its checksum"
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        damaged = first_line(error)
    if damaged is not None:
        raise ConfigError(f"resume={which}: checkpoint {checkpoint} is damaged ({damaged}); restore it from a backup, "
                          f"or start a new run")


def plan(command: DictConfig, which: str, overrides: list[str] = ()) -> tuple[DictConfig, Resume]:
    """The config `which` was started with (its tracking settings replaced by the command's) and what to resume it
    from; a ConfigError when the run cannot be resumed, or when the command (with its `overrides`) sets a value
    the run did not have."""
    cfg = to_config(command).tracking
    run = find_run(cfg, which)
    run_id = run.info.run_id
    output_dir = Path(run.data.tags.get(OUTPUT_DIR, ""))
    checkpoint = output_dir / CHECKPOINT
    if not run.data.tags.get(OUTPUT_DIR) or not checkpoint.is_file():
        raise ConfigError(f"resume={which}: run {run_id} has no checkpoint at {checkpoint} (stopped before its "
                          f"first validation, or trained on another machine); start a new run instead")
    logged = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    config = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(logged),
                             {"tracking": OmegaConf.structured(cfg), "resume": which})
    refuse_changes(command, list(overrides), config, which)
    # The resumed steps must train on the data the run started on.
    recorded, path = run.data.tags.get("data.sha256"), Path(config.data.path)
    if recorded and path.is_file() and file_sha256(path) != recorded:
        raise ConfigError(f"resume={which}: {path} changed since run {run_id} started (its sha256 differs from "
                          f"the run's data.sha256 tag); restore the file, or start a new run")
    check_checkpoint(checkpoint, which)
    client = MlflowClient(cfg.uri)
    logged_until = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    return config, Resume(run_id, output_dir, checkpoint, logged_until)
