"""The errors a user can cause, and the one-line form every stage reports them in (pipeline/cli.py); the full
traceback of anything else goes to the run folder's log file, never to the terminal or a cron log."""

import logging
import os
import re
import sqlite3
import traceback


class ConfigError(ValueError):
    """A config value, model or store the stage cannot use; the message names the key, file or URI and what to do."""


class DataError(ValueError):
    """A problem with the input data; the message names the source, column or series and what to do."""


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN or infinite; the message names the step and what to change."""


class Terminated(BaseException):
    """SIGTERM, raised where the stage is, so it unwinds like Ctrl-C (a BaseException: nothing swallows it)."""


# The user name and password a URI may carry (http://alice:PW@host, postgresql://user:PW@db/...).
_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact(text: str) -> str:
    """`text` with every URI's user info replaced (http://alice:PW@host -> http://***@host): what is printed, logged
    or recorded of a URI, or of a message that may hold one (MLflow names the URL a request failed on)."""
    return _USER_INFO.sub(r"\g<scheme>***@", text)


def first_line(error: BaseException, limit: int = 300) -> str:
    """What an error says, in one line for a one-line message: its first line, or its type when it says nothing;
    without the credentials a URI in it may carry."""
    text = redact(str(getattr(error, "message", error)).strip())  # MLflow's exceptions keep the bare text in .message
    return text.splitlines()[0][:limit] if text else type(error).__name__


def unexpected(error: BaseException) -> bool:
    """An error none of the stage's checks foresaw (a bug, or a case still to be answered in one line)."""
    return isinstance(error, Exception) and not isinstance(error, (ConfigError, DataError, TrainingDiverged))


def store_failure(error: BaseException) -> str | None:
    """What a sqlite tracking store said when it failed (damaged, locked, not a database), wherever in MLflow or
    SQLAlchemy it surfaced; None for any other error."""
    while error is not None:
        if isinstance(error, sqlite3.DatabaseError):
            return first_line(error)
        error = error.__cause__ or error.__context__
    return None


# A request the tracking server's sign-in refused (MLflow's basic-auth app answers 403 "Permission denied").
_DENIED = re.compile(r"endpoint (?P<endpoint>/api/\S+) failed with error code 403")


def permission_failure(error: BaseException, store: str, experiment: str | None, model: str | None) -> str | None:
    """A 403 of the tracking server anywhere in `error`'s chain, as one line naming the user, what the request
    needed and how an admin grants it; None for any other error. `experiment` and `model` are what the stage
    writes to."""
    while error is not None:
        found = _DENIED.search(str(getattr(error, "message", error)))
        if found:
            endpoint = found["endpoint"]
            on_model = "registered-models" in endpoint or "model-versions" in endpoint
            target = f"registered model {model!r}" if on_model else f"experiment {experiment!r}"
            user = os.environ.get("MLFLOW_TRACKING_USERNAME", "(anonymous)")
            grant = (f"grant_user_permission({user!r}, 'registered_model', {model!r}, 'EDIT')" if on_model else
                     f"grant_user_permission({user!r}, 'experiment', EXPERIMENT_ID, 'EDIT')")
            return (f"tracking.uri={redact(store)} refused user {user!r} {endpoint} (HTTP 403): that user needs EDIT "
                    f"on {target}; an admin grants it with mlflow.server.get_app_client('basic-auth', "
                    f"tracking_uri=...).{grant} (docs: A shared tracking server)")
        error = error.__cause__ or error.__context__
    return None


def record_traceback(error: BaseException) -> str | None:
    """Write `error`'s traceback to the stage's log file in its run folder (Hydra's file handler) and to nothing
    else, once; returns that file's path (None without one)."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if files and not getattr(error, "traceback_recorded", False):
        text = redact("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        record = logging.LogRecord("pipeline", logging.ERROR, __file__, 0, "unexpected error, in full:\n%s", (text,),
                                   None)
        for handler in files:
            handler.handle(record)
            handler.flush()
        error.traceback_recorded = True
    return files[0].baseFilename if files else None
