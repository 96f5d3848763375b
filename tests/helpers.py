"""What tests share besides fixtures: the real composed config, the stage commands as users run them, a real
MLflow server, and models built from the composed config exactly as `python -m pipeline.train` builds them (so no
test trains a model the command never trains)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from pipeline.config import plain, to_config
from pipeline.network import RecurrentNetwork

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHIPPED_DATA = ROOT / "data" / "vic_elec.parquet"


def compose_config(*overrides: str):
    """conf/config.yaml composed exactly as `python -m pipeline.train` would, plus overrides."""
    import pipeline.config  # noqa: F401  registers the schema

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# A model that trains in seconds on three weeks of half-hours.
SMALL = ["window.lookback=96", "window.horizon=48", "window.stride=4", "window.batch_size=32",
         "split.val_steps=96", "split.test_steps=96", "model.hidden_size=8", "trainer.max_steps=12",
         "trainer.val_check_interval=6", "trainer=cpu", "trainer.log_every_n_steps=2"]


def run_stage(module: str, *overrides: str, cwd: Path = ROOT, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    """`python -m MODULE overrides...` as users run it, in its own process (with `env` added to its environment)."""
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=os.environ | (env or {}))


@dataclass
class Store:
    """A test module's MLflow store, with train.parquet (the first 1008 half-hours of the shipped data) and
    new.parquet (the same plus 192 steps past the training end)."""

    folder: Path
    uri: str

    def train(self, *overrides: str) -> dict:
        """Train a SMALL model with the real command; its one-line JSON summary."""
        run_dir = tempfile.mkdtemp(prefix="run-", dir=self.folder)
        done = run_stage("pipeline.train", f"data.path={self.folder / 'train.parquet'}", f"tracking.uri={self.uri}",
                         f"hydra.run.dir={run_dir}", *SMALL, *overrides)
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


def start_mlflow_server(folder: Path, url: str, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`mlflow server` at `url` (http://127.0.0.1:PORT) on folder/server.db, artifacts served from
    folder/artifacts, with more `options` and `env`; returns once it answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1],
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
         str(folder / "artifacts"), "--workers", "1", *options],
        env=venv_path() | (env or {}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_up(f"{url}/health", server)
    return server


def network_args(*overrides: str, n_features: int, n_future: int, n_series: int = 1,
                 season: int | None = None) -> dict:
    """RecurrentNetwork's keyword arguments from conf/ plus `overrides` (e.g. "model.cell=gru")."""
    from pipeline.train import network_args as from_config  # imports Lightning: only when a test builds

    cfg = to_config(compose_config(*overrides))
    return from_config(cfg.model, cfg.window, n_features=n_features, n_future=n_future, n_series=n_series,
                       season=season)


def network_for(windows, *overrides: str, season: int | None = None, **changes) -> RecurrentNetwork:
    """A network for `windows` from conf/ plus `overrides`, with keyword arguments changed by `changes`."""
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    return RecurrentNetwork(**(args | changes))


def forecaster_for(windows, *overrides: str, season: int | None = None, **changes):
    """The LightningModule the training stage builds for `windows`, from conf/ plus `overrides`; `changes`
    replace network keyword arguments."""
    from pipeline.lit_module import TrainingModule

    cfg = to_config(compose_config(*overrides))
    args = network_args(*overrides, n_features=windows.n_features, n_future=len(windows.future_columns),
                        n_series=len(windows.splits), season=season)
    return TrainingModule(network=args | changes, optim=plain(cfg.optim))
