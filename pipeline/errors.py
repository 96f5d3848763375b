"""The errors a user can cause, and the one-line form every stage reports them in (pipeline/cli.py)."""


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
