"""What tests share besides fixtures: the real composed config, the stage commands as users run them, a real
MLflow server, and models built from the composed config exactly as `python -m pipeline.train` builds them (so no
test trains a model the command never trains)."""

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipeline.config import DataConfig, plain, to_config
from pipeline.data.load import validate_frame
from pipeline.model.ensemble import build_network
from pipeline.model.network import RecurrentNetwork

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Processes:
    """Whether the running test may start processes (it is marked slow: tests/conftest.py), and its name."""

    allowed: bool = True
    test: str = ""

    def check(self, what: object) -> None:
        assert self.allowed, f"{self.test} starts a process ({str(what)[:100]}) but is not marked slow: mark it " \
                             f"@pytest.mark.slow, so that `make test-fast` starts none"


PROCESSES = Processes()
_popen_init = subprocess.Popen.__init__


def _checked_popen_init(self, args, *more, **options) -> None:
    # git is what MLflow asks for a run's source commit (GitPython): part of opening a run, not a process a test
    # starts.
    program = args if isinstance(args, str) else (args[0] if args else "")
    if Path(str(program)).name != "git":
        PROCESSES.check(args)
    _popen_init(self, args, *more, **options)


subprocess.Popen.__init__ = _checked_popen_init
CONF_DIR = ROOT / "conf"
SHIPPED_DATA = ROOT / "data" / "vic_elec.parquet"


def compose_config(*overrides: str):
    """conf/config.yaml composed exactly as `python -m pipeline.train` would, plus overrides."""
    import pipeline.config  # noqa: F401  registers the schema

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# A model that trains in seconds on three weeks of half-hours: one network reading step by step (the schema's
# plain recipe, without the default experiment's ensemble and segments), so each test pins what it names;
# DEFAULT_RECIPE is the same size with the default experiment's recipe.
SMALL = ["~experiment", "window.lookback=96", "window.horizon=48", "window.stride=4", "window.batch_size=32",
         "split.val_steps=96", "split.test_steps=96", "model.hidden_size=8", "trainer.max_steps=12",
         "trainer.val_check_interval=6", "trainer=cpu", "trainer.log_every_n_steps=2"]
DEFAULT_RECIPE = [o for o in SMALL if o != "~experiment"]


def run_stage(module: str, *overrides: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
              fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m MODULE overrides...` as users run it, in its own process (with `env` added to its environment):
    forked by tests/stage_server.py, or with `fresh` a new interpreter (for what depends on a fresh one)."""
    if fresh:
        return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, capture_output=True, text=True,
                              timeout=300, env=os.environ | (env or {}))
    process = start_stage(module, *overrides, cwd=cwd, env=env)
    try:
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    return subprocess.CompletedProcess([module, *overrides], process.returncode, out, err)


def start_stage(module: str, *overrides: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
                stdout: int = subprocess.PIPE, stderr: int = subprocess.PIPE) -> "StageProcess":
    """Start `python -m MODULE overrides...` (forked by tests/stage_server.py) and return at once, as
    subprocess.Popen(..., text=True) would; stdout and stderr: PIPE, DEVNULL or a file descriptor."""
    return StageProcess(module, list(overrides), cwd, os.environ | (env or {}), stdout, stderr)


class StageServer:
    """tests/stage_server.py for this test process, started on first use, stopped when the process exits."""

    started: "StageServer | None" = None

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="stages-")
        self.path = os.path.join(self.folder, "socket")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stage_server.py"), self.path],
                                        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        assert ready == "ready\n", f"tests/stage_server.py did not start (exit {self.process.poll()})"
        atexit.register(self.stop)

    @classmethod
    def get(cls) -> "StageServer":
        if cls.started is None or cls.started.process.poll() is not None:
            cls.started = cls()
        return cls.started

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self.folder)


class StageProcess:
    """A stage command forked by tests/stage_server.py: the part of subprocess.Popen (text mode) tests use."""

    def __init__(self, module: str, args: list[str], cwd: Path, env: dict[str, str], stdout: int, stderr: int):
        PROCESSES.check(f"python -m {module}")
        self.args, self.returncode, self.stdout, self.stderr = [module, *args], None, None, None
        fds = [os.open(os.devnull, os.O_RDONLY)]
        for name, kind in (("stdout", stdout), ("stderr", stderr)):
            if kind == subprocess.PIPE:
                read, write = os.pipe()
                setattr(self, name, open(read, encoding="utf-8", errors="replace"))
                fds.append(write)
            elif kind == subprocess.DEVNULL:
                fds.append(os.open(os.devnull, os.O_WRONLY))
            else:
                fds.append(os.dup(kind))
        self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.connection.connect(StageServer.get().path)
            request = {"module": module, "args": args, "cwd": str(cwd), "env": dict(env)}
            socket.send_fds(self.connection, [json.dumps(request).encode()], fds)
        finally:
            for fd in fds:
                os.close(fd)
        self.replies = b""
        self.pid = int(self.reply(None))

    def reply(self, timeout: float | None) -> str | None:
        """The server's next line, or None if none came within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.replies:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.connection.settimeout(left)
            try:
                chunk = self.connection.recv(64)
            except (TimeoutError, BlockingIOError):  # BlockingIOError: a timeout of 0 makes the socket non-blocking
                return None
            assert chunk, "tests/stage_server.py closed the connection"
            self.replies += chunk
        line, _, self.replies = self.replies.partition(b"\n")
        return line.decode()

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self.reply(0)
            self.returncode = None if code is None else int(code)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.reply(timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = int(code)
            self.connection.close()
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Read stdout and stderr to their end, then wait for the exit, as Popen.communicate does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = {stream: [] for stream in (self.stdout, self.stderr) if stream is not None}
        with selectors.DefaultSelector() as selector:
            for stream in streams:
                selector.register(stream.fileno(), selectors.EVENT_READ, stream)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        streams[key.data].append(chunk)
                    else:
                        selector.unregister(key.fd)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        text = {stream: b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
                for stream, chunks in streams.items()}
        for stream in streams:
            stream.close()
        return text.get(self.stdout), text.get(self.stderr)

    def send_signal(self, sent: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sent)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Store:
    """A test module's MLflow store, with train.parquet (the first 1008 half-hours of the shipped data) and
    new.parquet (the same plus 192 steps past the training end)."""

    folder: Path
    uri: str

    def train(self, *overrides: str, fresh: bool = False, default_recipe: bool = False) -> dict:
        """Train a SMALL model with the real command (`fresh`: in a new interpreter; `default_recipe`: the default
        experiment's recipe at SMALL's size); its one-line JSON summary."""
        run_dir = tempfile.mkdtemp(prefix="run-", dir=self.folder)
        done = run_stage("pipeline.train", f"data.path={self.folder / 'train.parquet'}", f"tracking.uri={self.uri}",
                         f"hydra.run.dir={run_dir}", *(DEFAULT_RECIPE if default_recipe else SMALL), *overrides,
                         fresh=fresh)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_path() -> dict[str, str]:
    """The environment with this interpreter's bin folder on PATH, as an activated venv has it (MLflow starts
    `uvicorn` from PATH)."""
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else "exited"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds} s"
            time.sleep(0.5)


def post(url: str, body: bytes, content_type: str = "text/csv") -> tuple[int, bytes]:
    """POST `body` to a scoring server: its status and answer, an HTTP error's included."""
    request = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_mlflow_server(folder: Path, url: str, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`mlflow server` at `url` (http://127.0.0.1:PORT) on folder/server.db, artifacts served from
    folder/artifacts, with more `options` and `env`; returns once it answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
         str(folder / "artifacts"), "--workers", "1", *options],
        # MLflow's job runner (GenAI evaluation jobs, none of ours) starts 8 more processes at ~280% CPU for seconds:
        # on CI's 2 cores every other test waited on it.
        env=venv_path() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | (env or {}), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    wait_until_up(f"{url}/health", server)
    return server


def network_args(*overrides: str, n_features: int, n_future: int, n_series: int = 1,
                 season: int | None = None) -> dict:
    """RecurrentNetwork's keyword arguments from conf/'s plain recipe (no default experiment: one network, step by
    step) plus `overrides` (e.g. "model.cell=gru")."""
    from pipeline.model.hparams import network_args as from_config  # imports Lightning: only when a test builds

    cfg = to_config(compose_config("~experiment", *overrides))
    return from_config(cfg.model, default_lengths(cfg.window), n_features=n_features, n_future=n_future,
                       n_series=n_series, season=season)


def default_lengths(window):
    """`window` with an unset lookback or horizon as the default data derives them (a week and a day of
    half-hours), for tests that build a network without loading data."""
    from dataclasses import replace

    return replace(window, lookback=window.lookback or 336, horizon=window.horizon or 48)


def network_for(windows, *overrides: str, season: int | None = None, **changes) -> RecurrentNetwork:
    """A network for `windows` from conf/ plus `overrides`, with keyword arguments changed by `changes`."""
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    return build_network(**(args | changes))


def forecaster_for(windows, *overrides: str, season: int | None = None, **changes):
    """The LightningModule the training stage builds for `windows`, from conf/ plus `overrides`; `changes`
    replace network keyword arguments."""
    from pipeline.model.training_module import TrainingModule

    cfg = to_config(compose_config("~experiment", *overrides))
    cfg.window = default_lengths(cfg.window)
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    return TrainingModule(network=args | changes, optim=plain(cfg.optim))


def latest_run(uri: str, experiment: str = "pipeline"):
    """The run of `experiment` that started last."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


def hourly(n: int = 30, series: str = "a", start: str = "2024-03-01") -> pd.DataFrame:
    """An hourly series `series` of n rows (columns id, when, load), rising by one each hour from 100."""
    return pd.DataFrame({"id": series, "when": pd.date_range(start, periods=n, freq="h"),
                         "load": np.arange(n, dtype=float) + 100})


def hourly_config(**changes) -> DataConfig:
    """The data settings that read `hourly` frames, with `changes`."""
    return DataConfig(**{"path": "in-memory", "time_column": "when", "target_column": "load", "id_column": "id"}
                      | changes)


def step_series(lengths: dict[str, int]):
    """Series whose target is its own row number in the stacked frame, so windows can be read by eye."""
    frames, row = [], 0
    for series_id, n in lengths.items():
        frames.append(pd.DataFrame({"id": series_id, "time": pd.date_range("2024-01-01", periods=n, freq="h"),
                                    "y": np.arange(row, row + n, dtype=float)}))
        row += n
    data = DataConfig(path="in-memory", time_column="time", target_column="y", id_column="id", calendar=False)
    return validate_frame(pd.concat(frames), data, source="test")


def saved_model_for(windows, *overrides: str, data: DataConfig | None = None, season: int | None = None):
    """network_for(windows, *overrides) as an untrained saved model of the shipped data's single series (ids
    "demand"), for tests of what forecasting does with a model rather than of what training makes."""
    from dataclasses import asdict

    from pipeline.inference.model_format import FORMAT, ModelSpec
    from pipeline.inference.saved_model import SavedModel

    cfg = to_config(compose_config("~experiment", *overrides))
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    spec = ModelSpec(format=FORMAT, data=asdict(data or DataConfig()) | {"freq": "30min", "season": [48]},
                     lookback=cfg.window.lookback, horizon=cfg.window.horizon, network=args,
                     scaler=asdict(windows.scaler), series_ids=[s.series_id for s in windows.splits], time_zone="UTC")
    return SavedModel(spec, build_network(**args).eval())


def daily_stores(vic_elec: pd.DataFrame, days: int) -> pd.DataFrame:
    """Five "stores": daily totals of the shipped demand (MWh), each store a different stretch of `days` days,
    relabelled onto the same calendar, as a sales file of five stores has them."""
    daily = vic_elec.set_index("time")["demand"].resample("D").sum().iloc[:-1]
    calendar = pd.date_range("2021-01-01", periods=days, freq="D")
    return pd.concat([pd.DataFrame({"date": calendar.strftime("%Y-%m-%d"), "store": f"store {k + 1}",
                                    "sales": daily.iloc[150 * k:150 * k + days].round(1).to_numpy()})
                      for k in range(5)], ignore_index=True)
