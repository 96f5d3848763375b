"""The docs' pictures: screenshots of the MLflow UI as a user opens it (the experiment's landing page, a training
run's overview, its metrics and its artifacts), by headless Chromium against a real `mlflow ui` on 127.0.0.1, and
the run's own figures (forecasts, learning curves, scores).

    apt-get install chromium                 # once (Debian's package; any Chromium or Chrome will do)
    python bench/ui_screenshots.py           # trains a small model into a fresh store, then screenshots
    python bench/ui_screenshots.py --store sqlite:///outputs/mlflow.db --run RUN_ID   # an existing run

Writes outputs/bench/ui/*.png at full size, and docs/images/*.png scaled down to a palette of 128 colours (a few
hundred kB in all: they are committed).
"""

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench" / "ui"
DOCS = ROOT / "docs" / "images"
# The run's own figures shown in the docs.
FIGURES = ["forecasts.png", "learning_curves.png", "scores.png"]
WIDTH = 900  # of the docs' copies, in pixels
SMALL = ["window.lookback=336", "window.horizon=48", "window.stride=4", "split.val_steps=336", "split.test_steps=336",
         "trainer.max_steps=200", "trainer.val_check_interval=25"]
# MLflow 3.17's UI opens in its GenAI mode until a user picks "Model training" (kept in the browser); the link
# carries the choice, as README's does.
MODE = "?workflowType=machine_learning"
# Page -> (address, window height): the run's overview is tall (params and tags below its header).
PAGES = {"landing": ("#/experiments/{experiment}" + MODE, 1000),
         "run": ("#/experiments/{experiment}/runs/{run}" + MODE, 2400),
         "metrics": ("#/experiments/{experiment}/runs/{run}/model-metrics" + MODE, 1600),
         "artifacts": ("#/experiments/{experiment}/runs/{run}/artifacts/scores.png" + MODE, 1000)}


def train(folder: Path) -> tuple[str, str]:
    """A small model on four weeks of the shipped data, trained by the real command into a fresh store."""
    import pandas as pd

    pd.read_parquet(ROOT / "data" / "vic_elec.parquet").iloc[:4 * 1344].to_parquet(folder / "vic_elec_4w.parquet")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "pipeline.train", f"data.path={folder / 'vic_elec_4w.parquet'}",
                           f"tracking.uri={store}", f"hydra.run.dir={folder / 'run'}", *SMALL],
                          capture_output=True, text=True, check=True)
    return store, json.loads(done.stdout)["run_id"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt-get install chromium (or put chrome on PATH)")


def screenshot(chrome: str, url: str, path: Path, height: int) -> None:
    # The UI is a single-page app: give its scripts virtual time to fetch and draw before the capture.
    subprocess.run([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1500,{height}", "--virtual-time-budget=60000", f"--screenshot={path}", url],
                   capture_output=True, check=True, timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="tracking URI of an existing store (with --run)")
    parser.add_argument("--run", help="training run to show")
    args = parser.parse_args()
    chrome = browser()
    with tempfile.TemporaryDirectory() as folder:
        store, run_id = (args.store, args.run) if args.store else train(Path(folder))
        experiment = MlflowClient(store).get_run(run_id).info.experiment_id
        port = free_port()
        ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host",
                               "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            OUT.mkdir(parents=True, exist_ok=True)
            for name, (page, height) in PAGES.items():
                url = f"http://127.0.0.1:{port}/" + page.format(experiment=experiment, run=run_id)
                screenshot(chrome, url, OUT / f"{name}.png", height)
                print(OUT / f"{name}.png", url)
        finally:
            ui.terminate()
            ui.wait(timeout=30)
        for figure in FIGURES:
            MlflowClient(store).download_artifacts(run_id, figure, str(OUT))
    DOCS.mkdir(parents=True, exist_ok=True)
    for path in [*(OUT / f"{name}.png" for name in PAGES), *(OUT / f for f in FIGURES)]:
        shrink(path, DOCS / path.name)
        print(DOCS / path.name, (DOCS / path.name).stat().st_size // 1024, "kB")


def shrink(source: Path, target: Path) -> None:
    """`source` at WIDTH pixels wide, in 128 colours: small enough to commit, sharp enough to read."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(source) as image:
        image = image.convert("RGB")
        if image.width > WIDTH:
            image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
        image.quantize(colors=128).save(target, optimize=True)


if __name__ == "__main__":
    main()
