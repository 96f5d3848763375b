"""A process that imports the stages' libraries once, then forks a child for each stage command a test runs.

A stage command pays 5-8 s of imports (torch, Lightning, MLflow, scikit-learn) before its first line of work, and
the suite runs about a hundred of them. Each child here is still a process of its own, started as `python -m
MODULE ARGS` starts one (runpy runs the module as __main__ with that argv, in the test's working folder and
environment, with the test's pipes as stdin, stdout and stderr), so exit codes, signals, stdout and stderr are the
command's; only the imports were done before the fork. Tests that pin how a fresh interpreter behaves (what a
stage imports, console scripts, DDP's launcher, run-to-run reproducibility) start one (tests/helpers.py).

    python tests/stage_server.py SOCKET_PATH     # stdin: a pipe from the test process; it ends when that closes

Protocol, on a Unix socket: the client sends one JSON message {"module", "args", "cwd", "env"} with three file
descriptors (stdin, stdout, stderr); the server answers with the child's pid, then its exit code (as
subprocess.Popen.returncode reads it: -N for signal N), one line each.
"""

import atexit
import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import traceback

PRELOAD = ["pipeline.train", "pipeline.forecast", "pipeline.evaluate", "pipeline.register", "pipeline.export",
           "pipeline.training.fitting", "pipeline.model.training_module", "pipeline.evaluation.plots",
           "pipeline.inference.saved_model", "pipeline.training.search",
           "lightning.pytorch", "sklearn.preprocessing", "mlflow.pyfunc", "mlflow.store.tracking.sqlalchemy_store",
           "matplotlib.pyplot", "alembic.command"]


def serve(path: str) -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    gc.freeze()  # the preloaded objects are never collected: the children's collections skip them
    print("ready", flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the supervisors below are reaped by the kernel
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in ready and not sys.stdin.read(1):  # the test process is gone (its end of our stdin closed)
            return
        if listener not in ready:
            continue
        connection, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        if os.fork() == 0:
            listener.close()
            supervise(connection, json.loads(message), fds)  # the command's child never returns from here
            os._exit(0)
        connection.close()
        for fd in fds:
            os.close(fd)


def supervise(connection: socket.socket, request: dict, fds: list[int]) -> None:
    """Fork the command's process, report its pid, wait for it, report its exit code."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        connection.close()
        run_command(request, fds)
    for fd in fds:
        os.close(fd)
    connection.sendall(f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())


def run_command(request: dict, fds: list[int]) -> None:
    """Become `python -m MODULE ARGS`, and end as the interpreter would (exit code, uncaught exception, Ctrl-C)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path[0] = request["cwd"]  # as `python -m` puts the working folder first
    sys.argv = ["-m", *request["args"]]
    # Preloaded as a module; run as __main__ from its source, as `python -m` runs it (runpy warns otherwise).
    sys.modules.pop(request["module"], None)
    code, interrupted = 0, False
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) or stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:
        traceback.print_exc()
        code = 1
    # What the interpreter does at exit, less tearing down every module: in a forked child that touches (and so
    # copies) the whole shared heap, which took longer than most commands' own work.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupted:  # as Python ends on an uncaught KeyboardInterrupt: killed by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code or 0)


if __name__ == "__main__":
    serve(sys.argv[1])
