"""How an MLflow run ends: FINISHED only when the stage completed, FAILED (an error) or KILLED (Ctrl-C, SIGTERM)
with the reason as the `failure.reason` tag, and runs left RUNNING by a killed process marked KILLED later."""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import mlflow
import requests
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from pipeline.errors import Terminated, first_line, record_traceback, store_failure, unexpected
from pipeline.host import process_alive, start_time
from pipeline.tracking.signals import sigterm_raises

log = logging.getLogger(__name__)

REASON = "failure.reason"


def ending(error: BaseException | None) -> tuple[str, str | None]:
    """The status a run ends with, and why, given what ended the stage (None: it completed)."""
    if error is None or (isinstance(error, SystemExit) and error.code in (0, None)):
        return RunStatus.to_string(RunStatus.FINISHED), None
    # Lightning turns Ctrl-C into a graceful shutdown and sys.exit(1); the KeyboardInterrupt is its context.
    if isinstance(error, KeyboardInterrupt) or isinstance(error.__context__, KeyboardInterrupt):
        return RunStatus.to_string(RunStatus.KILLED), "interrupted (Ctrl-C or SIGINT)"
    if isinstance(error, Terminated):
        return RunStatus.to_string(RunStatus.KILLED), str(error)
    return RunStatus.to_string(RunStatus.FAILED), f"{type(error).__name__}: {first_line(error, 450)}"


def process_tags() -> dict[str, str]:
    """Which process holds the run, so a later start can tell whether it is still alive."""
    return {"process.host": socket.gethostname(), "process.pid": str(os.getpid()),
            "process.started": start_time(os.getpid()) or ""}


def holder_alive(run: Run) -> bool:
    """Whether the process that opened `run` (process_tags) still runs; a run of another host counts as alive,
    since it cannot be judged from here."""
    tags = run.data.tags
    if tags.get("process.host") != socket.gethostname() or "process.pid" not in tags:
        return True
    return process_alive(int(tags["process.pid"]), tags.get("process.started", ""))


def mark_abandoned_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Runs of this experiment left RUNNING by a process of this host that no longer exists (SIGKILL, out of
    memory) become KILLED, with the reason; returns their ids. Runs of other hosts cannot be judged here."""
    host = socket.gethostname()
    running = client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and "
                                                                 f"tags.`process.host` = '{host}'")
    abandoned = [run for run in running if not holder_alive(run)]
    for run in abandoned:
        client.set_tag(run.info.run_id, REASON, f"its process (pid {run.data.tags['process.pid']} on {host}) "
                                                f"ended without closing the run: killed (SIGKILL or out of memory)")
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    return [run.info.run_id for run in abandoned]


@contextlib.contextmanager
def run_until_end(experiment_id: str, run_id: str | None = None) -> Iterator[Run]:
    """mlflow.start_run (a new run, or `run_id` reopened to resume it), ended with the status `ending` gives: a
    plain `with mlflow.start_run()` would mark a Ctrl-C or SIGTERM FAILED, and a process killed outright leaves
    it RUNNING (mark_abandoned_runs)."""
    run = mlflow.start_run(experiment_id=experiment_id, run_id=run_id, tags=process_tags())
    if run_id and REASON in run.data.tags:
        # Why it stopped last time no longer describes it.
        MlflowClient().delete_tag(run_id, REASON)
    error = None
    try:
        with sigterm_raises():
            yield run
    except BaseException as raised:
        error = raised
        if unexpected(raised) and not store_failure(raised) and (path := record_traceback(raised)):
            with contextlib.suppress(Exception):  # the traceback stays in the run folder's log regardless
                mlflow.log_artifact(path, "logs")
        raise
    finally:
        status, reason = ending(error)
        if lost_connection(error):
            # The server is gone for longer than tracking.outage_seconds: recording the ending would wait as long
            # again. The run stays RUNNING until the next start on this host marks it KILLED (or it is resumed).
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        try:
            try:
                if reason:
                    mlflow.set_tag(REASON, reason)
            finally:
                mlflow.end_run(status)
        except Exception as failed:
            if error is None:
                raise
            log.warning("could not mark MLflow run %s %s: %s", run.info.run_id, status, first_line(failed))


def lost_connection(error: BaseException | None) -> bool:
    """Whether `error` is the tracking server not answering (MLflow raises it without a cause, as context)."""
    while error is not None:
        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return True
        error = error.__cause__ or error.__context__
    return False
