"""The MLflow store: reachable (or fallen back from), created, signed in; the experiment; a run opened with what
every run records. What runs record is pipeline/tracking/records.py's, how they end run_lifetime.py's; the logged
model is pipeline/inference/saved_model.py's."""

import fcntl
import importlib.metadata
import logging
import os
import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.errors import ConfigError, first_line, redact
from pipeline.tracking.run_lifetime import lost_connection, mark_abandoned_runs, run_until_end

log = logging.getLogger(__name__)

# Where MLflow clients read a server's credentials (its basic-auth app); never config keys or logged params.
USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
# Libraries whose versions every run records as `versions.NAME` tags.
VERSIONED = ["torch", "lightning", "pandas", "numpy", "pyarrow", "scikit-learn", "hydra-core", "mlflow"]


@contextmanager
def start_run(cfg: TrackingConfig, resume_run_id: str | None = None) -> Iterator[Run]:
    """Open a run in `cfg.experiment` (or reopen `resume_run_id`), ended FINISHED only when the stage completes:
    FAILED on an error, KILLED on Ctrl-C or SIGTERM, with the reason as a tag (run_lifetime.py). Runs
    that killed processes of this host left RUNNING are marked KILLED first."""
    # A resumed run lives in that store: no offline fallback.
    cfg = reachable(cfg, may_fall_back=resume_run_id is None)
    mlflow.set_tracking_uri(cfg.uri)
    experiment = experiment_id(cfg)
    for run_id in mark_abandoned_runs(MlflowClient(cfg.uri), experiment):
        log.warning("MLflow run %s was left RUNNING by a killed process; marked KILLED", run_id)
    # MLflow prints a server's run link with the tracking URI as given, credentials and all; ours is logged below.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    # From here on a server that goes away is waited for (training pauses), not given up on after `retries`.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries_to_outlast(cfg.outage_seconds))
    run_id = resume_run_id
    try:
        with run_until_end(experiment, resume_run_id) as run:
            run_id = run.info.run_id
            log.info("MLflow run %s in experiment %r at %s", run_id, cfg.experiment, redact(cfg.uri))
            if cfg.uri.startswith(("http://", "https://")):
                address = re.sub(r"//[^/@]+@", "//", cfg.uri).rstrip("/")  # without user info, to click
                log.info("open it at %s/#/experiments/%s/runs/%s", address, experiment, run_id)
            # With MLflow's own mlflow.source.git.commit, what any run needs to be traced back and rerun.
            mlflow.set_tags({f"versions.{name}": library_version(name) for name in VERSIONED}
                            | {"versions.python": platform.python_version(),
                               "versions.pipeline": library_version("pipeline")})
            yield run
    except mlflow.exceptions.MlflowException as error:
        if not lost_connection(error):
            raise
        raise TrackingUnavailable(
            f"tracking.uri={redact(cfg.uri)} stopped answering during run {run_id} for longer than "
            f"tracking.outage_seconds={cfg.outage_seconds} ({first_line(error, 200)}); once it is back, run the "
            f"stage again (a training run continues from its last checkpoint with resume={run_id})") from error


def reachable(cfg: TrackingConfig, may_fall_back: bool = True) -> TrackingConfig:
    """`cfg`, once its tracking server answers within cfg.retries retries of cfg.timeout seconds; otherwise a
    one-line error naming it, or with cfg.offline_fallback (for stages that only write) the same config pointed
    at cfg.offline_uri."""
    # MLflow reads its HTTP limits from these variables at every request; its defaults wait minutes.
    os.environ |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(cfg.retries), "MLFLOW_HTTP_REQUEST_TIMEOUT":
                   str(cfg.timeout), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    if cfg.uri.startswith("sqlite:///"):
        create_sqlite_store(Path(cfg.uri.removeprefix("sqlite:///")))
    if not cfg.uri.startswith(("http://", "https://")):
        return cfg
    try:
        MlflowClient(cfg.uri).search_experiments(max_results=1)
        return cfg
    except Exception as error:  # requests' connection errors and MLflow's own, whichever the transport raised
        reason = first_line(error, 200)
        if "error code 401" in reason or "error code 403" in reason:
            raise ConfigError(f"tracking.uri={redact(cfg.uri)} refused the request ({reason}): {credentials_hint()}"
                              ) from error
        if cfg.offline_fallback and may_fall_back:
            log.warning("tracking server %s does not answer (%s); recording this run into %s instead",
                        redact(cfg.uri), reason, redact(cfg.offline_uri))
            return replace(cfg, uri=cfg.offline_uri)
        raise TrackingUnavailable(
            f"tracking.uri={redact(cfg.uri)} does not answer ({reason}) after {cfg.retries} retries of "
            f"{cfg.timeout} s; "
            f"start the server or fix tracking.uri, or set tracking.offline_fallback=true to record into "
            f"{cfg.offline_uri}") from error


def retries_to_outlast(seconds: int) -> int:
    """The fewest MLflow retries whose waits add up to `seconds`: urllib3 waits 0, 2, 4, 8 ... s between tries
    (backoff factor 1, each wait capped at 120 s), and MLflow allows at most 10 retries (486 s of waits)."""
    waited = 0.0
    for retries in range(1, 11):
        waited += 0 if retries == 1 else min(120.0, 2.0 ** (retries - 1))
        if waited >= seconds:
            return retries
    raise ConfigError(f"tracking.outage_seconds={seconds}: MLflow retries a request at most 10 times, "
                      f"486 s of waits; set at most 480")


def credentials_hint() -> str:
    """What to do about a server that wants credentials: MLflow clients read them from the environment."""
    given = [name for name in (USERNAME, PASSWORD) if os.environ.get(name)]
    if len(given) < 2:
        missing = " and ".join(name for name in (USERNAME, PASSWORD) if name not in given)
        return f"the server requires sign-in and {missing} is not set; export both (never put them in conf/)"
    return (f"the credentials in {USERNAME} / {PASSWORD} were refused, or that user may not do this; check them "
            f"with the server's administrator")


class TrackingUnavailable(ConfigError):
    """The tracking server did not answer; the message names it and what to do."""


def library_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def create_sqlite_store(path: Path) -> None:
    """The sqlite store at `path` with MLflow's schema, created (or migrated) by one process at a time: jobs
    starting together on a fresh store would otherwise race in the migration, and most would fail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)


# MLflow 3's UI opens an experiment of this kind on its training runs, not on the GenAI overview (traces).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   "mlflow.note.content": "Recurrent forecasters trained by pipeline (python -m pipeline.train): "
                                          "each training run's test scores sit beside seasonal naive; evaluate, "
                                          "forecast and search runs carry a `stage` tag."}


def experiment_id(cfg: TrackingConfig) -> str:
    """cfg.experiment's id, creating it if needed (a job starting alongside may create it first), with
    EXPERIMENT_TAGS: an experiment made elsewhere gains those it lacks."""
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        try:
            return mlflow.create_experiment(cfg.experiment, artifact_location=_artifact_location(cfg),
                                            tags=EXPERIMENT_TAGS)
        except mlflow.exceptions.MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = mlflow.get_experiment_by_name(cfg.experiment)
    for key, value in EXPERIMENT_TAGS.items():
        if key not in experiment.tags:
            MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def _artifact_location(cfg: TrackingConfig) -> str | None:
    """Beside a local store (sqlite or file); a server picks its own when this is None."""
    if cfg.artifact_location:
        return cfg.artifact_location
    if cfg.uri.startswith("sqlite:///"):
        return (Path(cfg.uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None
