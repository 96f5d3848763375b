"""The errors a user can cause, and the one-line form every stage reports them in (pipeline/cli.py); the full
traceback of anything else goes to the run folder's log file, never to the terminal or a cron log."""

import logging
import sqlite3


class ConfigError(ValueError):
    """A config value, model or store the stage cannot use; the message names the key, file or URI and what to do."""


class DataError(ValueError):
    """A problem with the input data; the message names the source, column or series and what to do."""


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN or infinite; the message names the step and what to change."""


class Terminated(BaseException):
    """SIGTERM, raised where the stage is, so it unwinds like Ctrl-C (a BaseException: nothing swallows it)."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """What an error says, in one line for a one-line message: its first line, or its type when it says nothing."""
    text = str(getattr(error, "message", error)).strip()  # MLflow's exceptions keep the bare text in .message
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


def record_traceback(error: BaseException) -> str | None:
    """Write `error`'s traceback to the stage's log file in its run folder (Hydra's file handler) and to nothing
    else, once; returns that file's path (None without one)."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if files and not getattr(error, "traceback_recorded", False):
        record = logging.LogRecord("pipeline", logging.ERROR, __file__, 0, "unexpected error, in full:", None,
                                   (type(error), error, error.__traceback__))
        for handler in files:
            handler.handle(record)
            handler.flush()
        error.traceback_recorded = True
    return files[0].baseFilename if files else None
