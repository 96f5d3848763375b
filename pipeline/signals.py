"""How SIGTERM stops a stage: it raises Terminated where the stage is, so the run ends KILLED with the reason
(pipeline/run_lifetime.py); inside a training fit, SIGTERM and Ctrl-C stop it once the current step is done
instead."""

import contextlib
import os
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


@contextlib.contextmanager
def signals_between_steps() -> Iterator[None]:
    """Inside Trainer.fit, SIGTERM and Ctrl-C (SIGINT) stop training once the current step is done: Lightning's
    own SIGTERM handler notes the signal and raises SIGTERMException at the next step, rather than an exception
    landing in the middle of whatever runs (a metric write to a sqlite store, a checkpoint save: a
    KeyboardInterrupt inside a write once left the store locked, so the run could not be marked KILLED). Ctrl-C is
    passed on as a SIGTERM to this process and unwinds as KeyboardInterrupt, SIGTERM as Terminated, as anywhere
    else in the stage."""
    # Imported here: the stages that never train (forecast, evaluate) import this module without Lightning.
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def interrupt(signum, frame) -> None:
        noted.append(signum)
        os.kill(os.getpid(), signal.SIGTERM)

    # Lightning composes its SIGTERM handler with the current one at fit start; this one notes a signal that
    # arrives before Lightning's is installed or after it is removed (and every Ctrl-C).
    previous = (signal.signal(signal.SIGTERM, lambda signum, frame: noted.append(signum)),
                signal.signal(signal.SIGINT, interrupt))
    try:
        yield
    except SIGTERMException as stopped:
        raise stop(noted) from stopped
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    if noted:
        raise stop(noted)


def stop(noted: list[int]) -> BaseException:
    """How a stopped training unwinds: as Ctrl-C, or as SIGTERM."""
    return KeyboardInterrupt() if signal.SIGINT in noted else Terminated("SIGTERM received")
