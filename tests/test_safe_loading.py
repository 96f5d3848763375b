"""Saved models are data: loading runs nothing stored with them, every file is checked against the digests the
tracking database recorded, and a damaged or altered model fails in one line naming the file and the model."""

import json
import os
import pickle
import re
import resource
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config import ForecastConfig, ForecastDataConfig, RegisterConfig, TrackingConfig
from pipeline.errors import ConfigError
from pipeline.forecast import run_forecast
from pipeline.inference.model_format import SPEC_FILE, WEIGHTS_FILE, ModelSpec, read_model
from pipeline.inference.saved_model import DIGESTS_TAG, SavedModel, load_model
from pipeline.register import register
from tests.helpers import run_stage


@pytest.fixture(scope="module")
def trained(store):
    """A model trained by the real command, registered as `safe` version 1, and its folder in the store."""
    run_id = store.train()["run_id"]
    mlflow.set_tracking_uri(store.uri)
    register(RegisterConfig(run_id=run_id, name="safe", tracking=TrackingConfig(uri=store.uri)))
    model_id = MlflowClient(store.uri).get_run(run_id).outputs.model_outputs[0].model_id
    folder = Path(MlflowClient(store.uri).get_logged_model(model_id).artifact_location.removeprefix("file://"))
    return run_id, folder


@contextmanager
def altered(path: Path, content: bytes):
    """`path` in the artifact store replaced by `content` for the duration, as someone with write access could."""
    original = path.read_bytes()
    path.write_bytes(content)
    try:
        yield
    finally:
        path.write_bytes(original)


def forecast_in_process(store, tmp_path, model_uri: str):
    output = tmp_path / "out.csv"
    data = ForecastDataConfig(path=str(store.folder / "new.parquet"))
    return run_forecast(ForecastConfig(model_uri=model_uri, data=data, output=str(output),
                                       tracking=TrackingConfig(uri=store.uri)))


@pytest.mark.slow
def test_a_tampered_code_file_is_refused_in_one_line_and_never_runs(store, tmp_path, trained):
    # Code that would run if anything imported the model's stored copy of the package, or its pyfunc entry.
    run_id, folder = trained
    canary = tmp_path / "canary"
    payload = f"\nopen({str(canary)!r}, 'w').write('ran')\n".encode()
    code = folder / "code" / "pipeline" / "inference" / "saved_model.py"
    with altered(code, code.read_bytes() + payload), altered(folder / "pyfunc_entry.py", payload):
        done = run_stage("pipeline.forecast", "model_uri=models:/safe@champion",
                         f"data.path={store.folder / 'new.parquet'}", f"output={tmp_path / 'out.csv'}",
                         f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'run'}")
        assert not canary.exists()
        # What the README warns of: MLflow's own loader runs the stored code (the canary proves the payload).
        pyfunc = subprocess.run([sys.executable, "-c", "import mlflow; mlflow.pyfunc.load_model("
                                 "'models:/safe@champion')"], env=os.environ | {"MLFLOW_TRACKING_URI": store.uri},
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert canary.exists(), pyfunc.stderr[-2000:]
    assert done.returncode == 2 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("model models:/safe@champion (safe version 1): file code/pipeline/inference/saved_model.py "
                         "differs from the SHA-256 recorded when it was logged; the model store was altered: log the "
                         "model again, and let only trusted people write to the store"), last
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", [SPEC_FILE, WEIGHTS_FILE, "MLmodel"])
def test_an_altered_model_file_is_refused_naming_it_and_the_model(store, tmp_path, trained, name):
    run_id, folder = trained
    path = next(p for p in folder.rglob(name))
    relative = path.relative_to(folder).as_posix()
    with altered(path, path.read_bytes() + b" "):
        for uri, where in [(f"runs:/{run_id}/model", f"the model of run {run_id}"),
                           ("models:/safe/1", "safe version 1")]:
            with pytest.raises(ConfigError, match=re.escape(f"model {uri} ({where}): file {relative} differs")):
                forecast_in_process(store, tmp_path, uri)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
def test_a_file_added_to_or_removed_from_the_model_is_refused(store, tmp_path, trained):
    run_id, folder = trained
    assert_planted_file_refused(store, run_id, folder, "code/pipeline/sitecustomize.py", "print('hello')\n")
    example = folder / "input_example.json"
    kept = example.read_bytes()
    example.unlink()
    try:
        with pytest.raises(ConfigError, match="file input_example.json is missing"):
            load_model(f"runs:/{run_id}/model", TrackingConfig(uri=store.uri))
    finally:
        example.write_bytes(kept)


@pytest.mark.slow
def test_a_model_whose_digests_were_never_recorded_is_refused(store, trained):
    run_id, _ = trained
    client = MlflowClient(store.uri)
    recorded = client.get_run(run_id).data.tags[DIGESTS_TAG]
    client.delete_tag(run_id, DIGESTS_TAG)
    try:
        with pytest.raises(ConfigError, match=f"the model of run {run_id} has no {DIGESTS_TAG} tag"):
            load_model(f"runs:/{run_id}/model", TrackingConfig(uri=store.uri))
    finally:
        client.set_tag(run_id, DIGESTS_TAG, recorded)


class Payload:
    """What a crafted pickle would run on load: here, creating a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_a_weights_file_holding_code_is_refused_without_running_it(tmp_path, trained):
    _, folder = trained
    marker = tmp_path / "code-ran"
    weights = tmp_path / WEIGHTS_FILE
    weights.write_bytes(pickle.dumps({"x": Payload(str(marker))}))
    with pytest.raises(ConfigError, match="weights.pt: cannot be read as model weights"):
        read_model(folder / "artifacts" / SPEC_FILE, weights)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    (lambda spec: "{not json", "not a model spec this pipeline wrote"),
    (lambda spec: json.dumps({k: v for k, v in spec.items() if k != "format"}),
     "model format 1, but this pipeline reads format 2; train the model again"),
    (lambda spec: json.dumps(spec | {"data": 3, "code": "print()"}), "key 'code' is not what format 2 holds"),
])
def test_an_old_or_altered_spec_is_refused_in_one_line_naming_the_file(tmp_path, trained, change, message):
    _, folder = trained
    spec = tmp_path / SPEC_FILE
    spec.write_text(change(json.loads((folder / "artifacts" / SPEC_FILE).read_text())))
    with pytest.raises(ConfigError, match=f"{re.escape(str(spec))}: .*{re.escape(message)}"):
        ModelSpec.read(spec)


@pytest.mark.slow
def test_loading_leaves_no_copy_in_the_temp_folder_and_stale_temporaries_are_removed(store, tmp_path, trained):
    run_id, _ = trained
    scratch, output = tmp_path / "tmp", tmp_path / "out" / "forecast.csv"
    scratch.mkdir()
    output.parent.mkdir()
    # What a forecast killed mid-write on this host left, and what a job writing right now holds.
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = output.parent / f".forecast.csv~{socket.gethostname()}~{dead.pid}~abc.csv"
    live = output.parent / f".forecast.csv~{socket.gethostname()}~{os.getpid()}~def.csv"
    stale.write_text("half a forecast")
    live.write_text("being written")
    done = run_stage("pipeline.forecast", f"model_uri=runs:/{run_id}/model",
                     f"data.path={store.folder / 'new.parquet'}", f"output={output}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", env={"TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in output.parent.iterdir()) == sorted([output.name, live.name])


@pytest.mark.slow
@pytest.mark.parametrize("part", ["data", "scaler"])
def test_a_spec_with_a_key_its_format_lacks_is_refused_naming_it(trained, tmp_path, part):
    _, folder = trained
    spec = json.loads((folder / "artifacts" / SPEC_FILE).read_text())
    spec[part]["extra"] = 1
    altered = tmp_path / SPEC_FILE
    altered.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=f"key '{part}.extra' is not what format"):
        ModelSpec.read(altered)


@pytest.mark.slow
def test_a_spec_written_before_the_package_moved_still_reads_and_forecasts_the_same(trained, tmp_path, vic_elec):
    # Specs hold no class paths; before 2026-12 they held data.id_column as written (null, a name or a list).
    _, folder = trained
    spec = json.loads((folder / "artifacts" / SPEC_FILE).read_text())
    assert spec["data"]["id_column"] == [] and isinstance(spec["data"]["season"], list)
    old = tmp_path / SPEC_FILE
    old.write_text(json.dumps(spec | {"data": spec["data"] | {"id_column": None}}))
    history = vic_elec.iloc[1000:1200][["time", "demand"]]
    now = SavedModel(*read_model(folder / "artifacts" / SPEC_FILE, folder / "artifacts" / WEIGHTS_FILE))
    before = SavedModel(*read_model(old, folder / "artifacts" / WEIGHTS_FILE))
    pd.testing.assert_frame_equal(before.forecast(history), now.forecast(history))


@pytest.mark.slow
def test_a_file_named_like_mlflows_download_marker_below_the_root_is_checked_like_any(store, trained):
    # MLflow's downloader writes registered_model_meta at a models:/ folder's root only; elsewhere it is the model's.
    run_id, folder = trained
    assert_planted_file_refused(store, run_id, folder, "code/pipeline/registered_model_meta", "import os\n")


def assert_planted_file_refused(store, run_id: str, folder, relative: str, text: str) -> None:
    """A file planted at `relative` in the stored model makes loading it fail, naming the file; then removed."""
    planted = folder / relative
    planted.write_text(text)
    try:
        with pytest.raises(ConfigError, match=f"file {relative} was added"):
            load_model(f"runs:/{run_id}/model", TrackingConfig(uri=store.uri))
    finally:
        planted.unlink()


@pytest.mark.slow
def test_a_spec_whose_sizes_were_changed_is_refused_before_any_of_its_size_is_allocated(trained, tmp_path):
    # hidden_size 200000 would be tens of GB of weights; the check builds the described network on the meta device.
    _, folder = trained
    spec = json.loads((folder / "artifacts" / SPEC_FILE).read_text())
    spec["network"]["hidden_size"] = 200_000
    altered_spec = tmp_path / SPEC_FILE
    altered_spec.write_text(json.dumps(spec))
    started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=r"weights.pt: the weights do not fit the network its model_spec.json "
                                          r"describes \(decoder.head.0.weight: \(48, 296\) in the weights, "
                                          r"\(48, 2002\d\d\) in the spec\)"):
        read_model(altered_spec, folder / "artifacts" / WEIGHTS_FILE)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - started < 500_000  # KiB: nothing near its size
