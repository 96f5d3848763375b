"""How every stage's command ends: one JSON summary line on stdout, or one line on stderr and a non-zero exit:
2 for anything the user can fix (data, config, store, a diverged training), 1 for an unexpected error, whose
full traceback goes to the run folder's log file alone."""

import contextlib
import json
import logging
import sys
from collections.abc import Callable

from pipeline.errors import (
    ConfigError,
    DataError,
    Terminated,
    TrainingDiverged,
    first_line,
    record_traceback,
    store_failure,
)

log = logging.getLogger(__name__)


def finish(stage: Callable[[], dict], store: str, in_sweep: bool = False, reports: bool = True) -> dict:
    """Run the stage; a problem with the user's data or config, or a diverged training, becomes one line naming
    it, and exit 2; so does a tracking store (`store`, the stage's tracking.uri) that fails. In a sweep (-m) the
    error is raised on instead, so Hydra records the job as failed and runs the others (the command then fails
    once they are done).

    Whatever libraries print meanwhile (MLflow prints run links when tracking to a server) goes to stderr, so
    stdout carries the summary line alone.

    `reports=False` (the other processes of a distributed training) prints no summary, and leaves errors that
    every process meets together (a diverged training, SIGTERM) to rank zero: exiting non-zero here would make
    Lightning's launcher kill rank zero before it records them.
    """
    try:
        with contextlib.redirect_stdout(sys.stderr):
            summary = stage()
    except (DataError, ConfigError, TrainingDiverged, Terminated) as error:
        if not reports:
            log.info("stopped with rank zero: %s", error)
            sys.exit(0)
        if isinstance(error, Terminated):
            raise
        log.error("%s", error)
        if in_sweep:
            raise
        sys.exit(2)
    except Exception as error:
        if in_sweep or not reports:
            raise
        damaged = store_failure(error)
        if damaged:
            log.error("tracking.uri=%s failed: %s; if the store is damaged, restore it from a backup or set "
                      "tracking.uri to another store", store, damaged)
            sys.exit(2)
        where = record_traceback(error)
        log.error("unexpected %s: %s; %s", type(error).__name__, first_line(error),
                  f"the full traceback is in {where}" if where else "rerun with HYDRA_FULL_ERROR=1 to see it")
        sys.exit(1)
    if reports:
        print(json.dumps(summary))
    return summary
