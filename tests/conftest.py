"""Shared fixtures: the real composed config, slices of the shipped data, a real MLflow sqlite store."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHIPPED_DATA = ROOT / "data" / "vic_elec.parquet"


def compose_config(*overrides: str):
    """conf/config.yaml composed exactly as `python -m pipeline.train` would, plus overrides."""
    import pipeline.config  # noqa: F401  registers the schema

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="session")
def vic_elec() -> pd.DataFrame:
    return pd.read_parquet(SHIPPED_DATA)


@pytest.fixture
def vic_elec_slice(tmp_path: Path, vic_elec: pd.DataFrame) -> Path:
    """Three weeks of the shipped series (1008 half-hours) as a Parquet file of its own."""
    path = tmp_path / "vic_elec_slice.parquet"
    vic_elec.iloc[:1008].to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store with MLflow's schema, migrated once per session (a migration costs seconds)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, migrated_store: Path):
    """A fresh copy of the migrated store for this test, also set as MLflow's current URI (restored after)."""
    path = tmp_path / "mlflow.db"
    shutil.copy(migrated_store, path)
    uri, previous = f"sqlite:///{path}", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


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


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, vic_elec: pd.DataFrame, migrated_store: Path):
    folder = tmp_path_factory.mktemp("store")
    vic_elec.iloc[:1008].to_parquet(folder / "train.parquet", index=False)
    vic_elec.iloc[:1200].to_parquet(folder / "new.parquet", index=False)
    shutil.copy(migrated_store, folder / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    yield Store(folder, f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_tracking_uri(previous)


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


@pytest.fixture(scope="module")
def server_store(tmp_path_factory: pytest.TempPathFactory, vic_elec: pd.DataFrame, migrated_store: Path):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, artifacts served through it), with the same data
    files as `store`; stopped after the module."""
    folder = tmp_path_factory.mktemp("server")
    vic_elec.iloc[:1008].to_parquet(folder / "train.parquet", index=False)
    vic_elec.iloc[:1200].to_parquet(folder / "new.parquet", index=False)
    shutil.copy(migrated_store, folder / "server.db")
    url = f"http://127.0.0.1:{free_port()}"
    server = start_mlflow_server(folder, url)
    try:
        previous = mlflow.get_tracking_uri()
        yield Store(folder, url)
        mlflow.set_tracking_uri(previous)
    finally:
        server.terminate()
        server.wait(timeout=30)

