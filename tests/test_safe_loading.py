"""Saved models load without running pickled code, and a damaged or altered artifact fails in one line."""

import pickle
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.artifacts import download_artifacts

from pipeline.config import ConfigError
from pipeline.forecast import SPEC_FILE, ModelSpec, load_module
from tests.conftest import run_stage


@pytest.fixture(scope="module")
def model_dir(store, tmp_path_factory):
    """A trained model's MLflow folder, copied locally so tests can damage it."""
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.models.get_model_info(f"runs:/{store.train()['run_id']}/model")
    return download_artifacts(artifact_uri=f"models:/{model.model_id}", dst_path=str(tmp_path_factory.mktemp("m")),
                              tracking_uri=store.uri)


def forecast_with(store, tmp_path, model):
    return run_stage("pipeline.forecast", f"model_uri={model}", f"data.path={store.folder / 'new.parquet'}",
                     f"output={tmp_path / 'out.csv'}", f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'run'}")


def damaged_copy(model_dir, tmp_path, name: str, damage) -> str:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    target = next(copy.rglob(name))
    damage(target)
    return str(copy)


class Payload:
    """What a crafted pickle would run on load: here, creating a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_the_intact_model_forecasts(store, tmp_path, model_dir):
    done = forecast_with(store, tmp_path, model_dir)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_truncated_weights_fail_in_one_line_naming_the_file(store, tmp_path, model_dir):
    model = damaged_copy(model_dir, tmp_path, "weights.pt",
                         lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]))
    done = forecast_with(store, tmp_path, model)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "weights.pt: cannot be read as model weights" in last
    assert not (tmp_path / "out.csv").exists()


def test_a_weights_file_holding_code_is_refused_without_running_it(tmp_path, model_dir):
    marker = tmp_path / "code-ran"
    model = Path(damaged_copy(model_dir, tmp_path, "weights.pt",
                              lambda path: path.write_bytes(pickle.dumps({"x": Payload(str(marker))}))))
    spec = ModelSpec.read(next(model.rglob(SPEC_FILE)))
    with pytest.raises(ConfigError, match="weights.pt: cannot be read as model weights"):
        load_module(spec, next(model.rglob("weights.pt")))
    assert not marker.exists()


def test_an_altered_spec_fails_in_one_line_naming_the_file(tmp_path, model_dir):
    model = Path(damaged_copy(model_dir, tmp_path, SPEC_FILE, lambda path: path.write_text("{not json")))
    with pytest.raises(ConfigError, match=f"{SPEC_FILE}: not a model spec"):
        ModelSpec.read(next(model.rglob(SPEC_FILE)))


def test_config_overrides_cannot_add_keys_or_import_objects(tmp_path):
    # No config group instantiates `_target_`, and keys the schema lacks are refused, even added with `+`.
    marker = tmp_path / "imported"
    done = run_stage("pipeline.train", f"+model.head={{_target_:pathlib.Path.touch,self:{marker}}}",
                     f"hydra.run.dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.returncode == 2 and not marker.exists()
    assert done.stderr.strip().splitlines()[-1].endswith("model.head is not a config key; check its spelling "
                                                         "(Lightning Trainer arguments go in with "
                                                         "++trainer.NAME=VALUE)")
