"""How SIGTERM stops a stage: it raises Terminated where the stage is, so the run ends KILLED with the reason
(run_lifetime.py). Inside a training fit, SIGTERM and Ctrl-C stop it once the current step is done instead
(pipeline/training/fitting.py: signals_between_steps)."""

import contextlib
import signal
import threading
from collections.abc import Iterator

from pipeline.errors import Terminated


def _raise_terminated(signum, frame) -> None:
    raise Terminated("SIGTERM received")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (Lightning's own handler, installed during fit, calls it too)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
