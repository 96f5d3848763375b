"""Shared fixtures: slices of the shipped data, real MLflow sqlite stores and a real `mlflow server`. What tests
import lives in tests/helpers.py."""

import contextlib
import os
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import DataConfig
from pipeline.data.load import validate_frame
from pipeline.data.windows import Windows, make_windows
from tests.helpers import PROCESSES, SHIPPED_DATA, Store, free_port, start_mlflow_server


# A test that starts a process (a stage, a server, an interpreter) is marked `slow` by hand, so `make test-fast`
# starts none; one that starts a process unmarked (in its body or in a fixture it uses) fails, saying so.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with processes_allowed(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with processes_allowed(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    with processes_allowed(item):
        return (yield)


@contextlib.contextmanager
def processes_allowed(item: pytest.Item):
    PROCESSES.test, PROCESSES.allowed = item.nodeid, item.get_closest_marker("slow") is not None
    try:
        yield
    finally:
        PROCESSES.allowed = True


if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core (pytest-xdist): each worker, and each stage process it starts, computes
    # on one thread, so workers do not fight over the cores (two threads each ran the suite slower than one worker).
    import torch

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def vic_elec() -> pd.DataFrame:
    return pd.read_parquet(SHIPPED_DATA)


@pytest.fixture
def vic_elec_slice(tmp_path: Path, vic_elec: pd.DataFrame) -> Path:
    """Three weeks of the shipped series (1008 half-hours) as a Parquet file of its own."""
    path = tmp_path / "vic_elec_slice.parquet"
    vic_elec.iloc[:1008].to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def windows(request: pytest.FixtureRequest, vic_elec: pd.DataFrame) -> Windows:
    """Windows over the first ROWS rows of the shipped data (1200 unless the test module says), shaped by the test
    module's LOOKBACK, HORIZON and STRIDE (8 unless it says), with validation and test blocks of 96 steps."""
    module = request.module
    series = validate_frame(vic_elec.iloc[:getattr(module, "ROWS", 1200)], DataConfig(), source="vic_elec slice")
    return make_windows(series, module.LOOKBACK, module.HORIZON, getattr(module, "STRIDE", 8), 96, 96, calendar=True)


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


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, vic_elec: pd.DataFrame, migrated_store: Path):
    folder = tmp_path_factory.mktemp("store")
    vic_elec.iloc[:1008].to_parquet(folder / "train.parquet", index=False)
    vic_elec.iloc[:1200].to_parquet(folder / "new.parquet", index=False)
    shutil.copy(migrated_store, folder / "mlflow.db")
    previous = mlflow.get_tracking_uri()
    yield Store(folder, f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.set_tracking_uri(previous)


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
