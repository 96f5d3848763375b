"""Shared fixtures: the real composed config, slices of the shipped data, a real MLflow sqlite store."""

import shutil
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
