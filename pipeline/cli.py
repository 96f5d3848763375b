"""How every stage's command ends: one JSON summary line on stdout, or one line on stderr and a non-zero exit:
2 for anything the user can fix (data, config, store, a diverged training), 1 for an unexpected error, whose
full traceback goes to the run folder's log file alone, 143 or 130 when SIGTERM or Ctrl-C stopped it."""

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import (
    ConfigError,
    DataError,
    Terminated,
    TrainingDiverged,
    first_line,
    permission_failure,
    record_traceback,
    redact,
    store_failure,
)

log = logging.getLogger(__name__)

# Exit codes a scheduler reads as "stopped by this signal" (128 + its number).
STOPPED = {"Terminated": 143, "KeyboardInterrupt": 130}


def command(stage: str, hydra_main: Callable[[], Any]) -> None:
    """A stage's command: its @hydra.main function, with what Hydra itself reports also in one line. A config Hydra
    cannot compose (a misspelt group option or key, a value of the wrong type) exits 2 naming the key and what it
    allows, rather than Hydra's block and its HYDRA_FULL_ERROR hint; a stop by SIGTERM or Ctrl-C prints where it
    stopped and exits 143 or 130, rather than a traceback. HYDRA_FULL_ERROR=1 still shows Hydra's own report."""
    if os.environ.get("HYDRA_FULL_ERROR"):
        return hydra_main()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises what it would print
    try:
        hydra_main()
    except (Terminated, KeyboardInterrupt) as stopped:
        reason = str(stopped) or "interrupted (Ctrl-C)"
        print(f"pipeline.{stage}: stopped: {reason}", file=sys.stderr)
        sys.exit(STOPPED[type(stopped).__name__])
    except (HydraException, OmegaConfBaseException) as error:
        print(f"pipeline.{stage}: {composition_error(error)}; python -m pipeline.{stage} --help lists the keys",
              file=sys.stderr)
        sys.exit(2)
    except (DataError, ConfigError, TrainingDiverged):
        sys.exit(2)  # a job of a sweep (-m), which logged its line; the others ran
    except OSError as error:  # Hydra's own: the run folder (hydra.run.dir) cannot be made
        print(f"pipeline.{stage}: cannot create the run folder: {error}; set hydra.run.dir to a folder this user "
              f"can write to", file=sys.stderr)
        sys.exit(2)
    except ValueError as error:
        if "Config group override must be" not in str(error):
            raise
        print(f"pipeline.{stage}: {first_line(error)}: a group takes one of its options; '~GROUP' (e.g. "
              f"'~experiment') drops it", file=sys.stderr)
        sys.exit(2)


def composition_error(error: Exception) -> str:
    """Hydra's report of a config it cannot compose, in one line: what failed, why, and the options there are."""
    parts = [first_line(error).rstrip(".")]
    cause = error.__cause__
    if cause is not None and first_line(cause) not in parts[0]:
        parts.append(first_line(cause).rstrip("."))
    options = getattr(error, "options", None)
    if options:
        parts.append("choose one of: " + ", ".join(options))
    return "; ".join(parts)


def finish(stage: Callable[[], dict], store: str, in_sweep: bool = False, reports: bool = True,
           experiment: str | None = None, model: str | None = None) -> dict:
    """Run the stage; a problem with the user's data or config, or a diverged training, becomes one line naming
    it, and exit 2; so does a tracking store (`store`, the stage's tracking.uri) that fails or refuses the user a
    permission (on `experiment` or the registered `model`, what the stage writes to). In a sweep (-m) the
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
        log.error("%s", redact(str(error)))
        if in_sweep:
            raise
        sys.exit(2)
    except Exception as error:
        if in_sweep or not reports:
            raise
        damaged, denied = store_failure(error), permission_failure(error, store, experiment, model)
        if damaged:
            log.error("tracking.uri=%s failed: %s; if the store is damaged, restore it from a backup or set "
                      "tracking.uri to another store", redact(store), damaged)
            sys.exit(2)
        if denied:
            log.error("%s", denied)
            sys.exit(2)
        where = record_traceback(error)
        log.error("unexpected %s: %s; %s", type(error).__name__, first_line(error),
                  f"the full traceback is in {where}" if where else "rerun with HYDRA_FULL_ERROR=1 to see it")
        sys.exit(1)
    if reports:
        print(json.dumps(summary))
    return summary
