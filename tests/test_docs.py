"""The documentation cannot drift from the code: the configuration reference is what the schema writes, the site
builds with every link checked, and every Python snippet of the README and the docs runs as written, against a real
store holding the models the snippets name."""

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config
from tests.helpers import DEFAULT_RECIPE, ROOT, run_stage

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def reference_generator():
    spec = importlib.util.spec_from_file_location("make_reference", DOCS / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snippets(page: Path) -> list[str]:
    return SNIPPET.findall(page.read_text())


def test_the_configuration_reference_is_what_the_schema_writes():
    written = (DOCS / "reference" / "configuration.md").read_text()
    assert written == reference_generator().render(), "the schema changed: run .venv/bin/python docs/make_reference.py"


def test_the_configuration_reference_names_every_key_of_every_stage_with_a_comment():
    page = (DOCS / "reference" / "configuration.md").read_text()

    def keys(kind: type, prefix: str = "") -> list[str]:
        found = []
        for f in dataclasses.fields(kind):
            inner = [k for k in (f.type, *getattr(f.type, "__args__", ())) if dataclasses.is_dataclass(k)]
            found += keys(inner[0], f"{prefix}{f.name}.") if inner else [f"{prefix}{f.name}"]
        return found

    for schema in (config.Config, config.ForecastConfig, config.EvaluateConfig, config.RegisterConfig,
                   config.ExportConfig, config.ServeConfig):
        for key in keys(schema):
            row = next((line for line in page.splitlines() if line.startswith(f"| `{key}` |")), None)
            assert row is not None and not row.endswith("|  |"), f"{key}: not in the reference, or without a comment"


@pytest.mark.slow
def test_the_site_builds_with_every_link_and_page_checked(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "reference" / "configuration" / "index.html").exists()


@pytest.fixture(scope="module")
def docs_folder(tmp_path_factory, vic_elec, migrated_store) -> Path:
    """What the snippets expect to find, made as the docs say: the shipped data, and in the local store the model
    `demand` (the default recipe, small) as champion, exported to ONNX into outputs/exports/demand, and the model
    `demand-stream` (one network, no per-window normalisation) as champion."""
    folder = tmp_path_factory.mktemp("docs")
    (folder / "data").symlink_to(ROOT / "data")
    (folder / "outputs").mkdir()
    shutil.copy(migrated_store, folder / "outputs" / "mlflow.db")
    vic_elec.iloc[:1008].to_parquet(folder / "train.parquet", index=False)
    store = ["tracking.uri=sqlite:///outputs/mlflow.db"]

    def stage(name: str, *overrides: str, run: str = "run") -> dict:
        done = run_stage(f"pipeline.{name}", *overrides, *store, f"hydra.run.dir={folder / run}", cwd=folder)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    for name, recipe in (("demand", []), ("demand-stream", ["model.window_norm=false", "model.ensemble=1"])):
        trained = stage("train", "data.path=train.parquet", *DEFAULT_RECIPE, *recipe, "trainer.max_steps=4",
                        run=f"runs/{name}")
        stage("register", f"run_id={trained['run_id']}", f"name={name}", run=f"registrations/{name}")
    stage("export", "model_uri=models:/demand@champion", "format=onnx", run="outputs/exports/demand")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_snippet_of_a_page_runs_as_written(docs_folder, page):
    code = "\n".join(snippets(page))
    done = subprocess.run([sys.executable, "-c", code], cwd=docs_folder, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"MLFLOW_TRACKING_URI": "sqlite:///outputs/mlflow.db"})
    assert done.returncode == 0, f"{page.name}:\n{done.stderr[-3000:]}"
