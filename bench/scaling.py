"""Scaling: epoch time and peak memory of the training stage from 10^3 to 10^7 points and from 1 to 10^4 series,
with the growth exponents fitted; forecast throughput for 10^4 series in one batched call.

    python bench/scaling.py              # everything (about 25 minutes on 2 CPU cores, ~3 GB peak)
    python bench/scaling.py --quick      # up to 10^6 points and 10^3 series

Every training case is the stage itself, `python -m pipeline.train` with one epoch (private MLflow store), on a
synthetic hourly file (daily cycle plus noise) that the bench writes first. The model is small on purpose
(GRU, one layer of 16, lookback 48, horizon 24, batches of 1024): 10^7 windows of the default model would take
hours, and what is measured here is how the pipeline's cost grows, not the model's. Epoch time is the stage's
`fit_seconds` (one pass over every training window, plus the validation at its end); peak memory is the peak
resident set of the stage's process (VmHWM, read by the process itself as it exits). Exponents are
least-squares slopes of log(cost) against log(points); memory is fitted above the smallest case's peak (what
the libraries themselves take).

Inference: a model of the default size (LSTM 2 x 64, lookback 336, horizon 48), trained for a few steps on 10^4
synthetic series (speed does not depend on the weights; the scaler is per series, so a model forecasts the
series it was trained on), forecasts all of them from their last `lookback` rows through `SavedModel.forecast`, the
one call the forecast stage and the MLflow model make; then the whole `python -m pipeline.forecast` command on
the same file.

Results: printed, written to outputs/bench/scaling.json and logged as a run of the `benchmarks` experiment.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from record import ROOT, record

from pipeline.config import TrackingConfig

# One small network (no default experiment's ensemble): what grows here is the pipeline's cost, not the model's.
SMALL_MODEL = ["~experiment", "model=gru", "model.hidden_size=16", "model.num_layers=1", "window.lookback=48",
               "window.horizon=24", "window.batch_size=1024", "split.val_steps=48", "split.test_steps=48",
               "trainer.max_epochs=1", "trainer.max_steps=-1", "trainer.val_check_interval=null",
               "trainer.check_val_every_n_epoch=1", "trainer.accelerator=cpu", "tracking.log_model=false",
               "data.path={path}", "data.time_column=time", "data.target_column=y", "data.id_column={id}"]
POINTS = [10**3, 10**4, 10**5, 10**6, 10**7]
SERIES = [1, 10, 100, 1_000, 10_000]   # of 10^3 points each
INFERENCE_SERIES = 10_000


def write_series(path: Path, series: int, points: int, seed: int = 0, promo: bool = False) -> None:
    """`series` hourly series of `points` rows: a daily cycle with a per-series level, plus noise; with `promo`,
    also a weekly promotion flag (a known-future input)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(points)
    level = np.repeat(rng.uniform(10, 100, series), points)
    frame = pd.DataFrame({
        "id": np.repeat(np.char.add("s", np.arange(series).astype(str)), points),
        "time": np.tile(pd.date_range("2000-01-01", periods=points, freq="h").to_numpy(), series),
        "y": level * (1 + 0.3 * np.tile(np.sin(2 * np.pi * hours / 24), series))
        + rng.normal(0, 1, series * points),
    })
    if promo:
        frame["promo"] = np.tile((hours // 24) % 7 == 5, series).astype(np.float64)
    frame.to_parquet(path, index=False)


# `python -m MODULE ARGS` that, on exit, writes its own peak resident memory (VmHWM, kB) to a file. Measured from
# inside: a child's rusage maximum would also count the parent's memory at fork (Linux keeps it across exec).
PEAK_WRAPPER = """
import atexit, runpy, sys
peak_file, module = sys.argv.pop(1), sys.argv.pop(1)
def write_peak():
    with open("/proc/self/status") as status, open(peak_file, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM")))
atexit.register(write_peak)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_stage(module: str, overrides: list[str], scratch: Path, store: Path | None = None
              ) -> tuple[dict, float, float]:
    """`python -m MODULE overrides` -> its JSON summary, wall seconds and the peak RSS of its process (MB); its
    run folder under `scratch`, its MLflow store `store` (default: scratch/mlflow.db)."""
    command = [sys.executable, "-c", PEAK_WRAPPER, str(scratch / "peak_kb"), module, *overrides,
               f"hydra.run.dir={scratch}/run", f"tracking.uri=sqlite:///{store or scratch / 'mlflow.db'}"]
    started = time.perf_counter()
    with open(scratch / "stderr.log", "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{module} {' '.join(overrides)} failed; see the end of its log:\n"
                           + (scratch / "stderr.log").read_text()[-2000:])
    peak_mb = int((scratch / "peak_kb").read_text()) / 1024
    return json.loads(done.stdout.strip().splitlines()[-1]), wall, peak_mb


def train_case(series: int, points: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        path = scratch / "series.parquet"
        write_series(path, series, points)
        overrides = [o.format(path=path, id="id") for o in SMALL_MODEL]
        summary, wall, peak = run_stage("pipeline.train", overrides, scratch)
    return {"series": series, "points": series * points, "fit_steps": summary["fit_steps"],
            "epoch_seconds": summary["fit_seconds"], "stage_seconds": round(wall, 1), "peak_rss_mb": round(peak)}


def exponent(points: list[float], cost: list[float]) -> float:
    """The slope of log(cost) against log(points), least squares."""
    return float(np.polyfit(np.log(points), np.log(cost), 1)[0])


def fit_growth(rows: list[dict]) -> dict:
    """Exponents of epoch time and of peak memory above the smallest case, over the cases above it."""
    base = rows[0]["peak_rss_mb"]
    upper = [r for r in rows[1:] if r["peak_rss_mb"] > base]
    above = rows[1:]
    return {"time_exponent": round(exponent([r["points"] for r in above], [r["epoch_seconds"] for r in above]), 3),
            "memory_exponent": round(exponent([r["points"] for r in upper],
                                              [r["peak_rss_mb"] - base for r in upper]), 3),
            "memory_baseline_mb": base}


def inference_case(series: int, known_ahead: bool = False, recipe: tuple[str, ...] = ("~experiment",)) -> dict:
    """A default-size model trained on `series` series forecasts all of them: one SavedModel.forecast call (what the
    forecast stage and the MLflow model run), then the whole forecast command on the same file. `known_ahead`: the
    model reads the promotion flag as a known-future input, so the input holds each series' 48 future rows too.
    `recipe`: one LSTM reading step by step (what the tables were measured with); () for the default experiment's."""
    from pipeline.inference.model_format import SPEC_FILE, WEIGHTS_FILE, read_model
    from pipeline.inference.saved_model import SavedModel

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        path = scratch / "series.parquet"
        # The default model (LSTM 2 x 64, lookback 336, horizon 48), trained for a few steps on series just long
        # enough for its windows: speed does not depend on the weights. The scaler is per series, so a model
        # forecasts the series it was trained on.
        write_series(path, series, 336 + 48 + 2 * 48, promo=known_ahead)
        summary, _, _ = run_stage("pipeline.train", [
            *recipe, f"data.path={path}", "data.time_column=time", "data.target_column=y", "data.id_column=id",
            "split.val_steps=48", "split.test_steps=48", "trainer.max_steps=4", "trainer.val_check_interval=4",
            "trainer.accelerator=cpu", *(["data.future_covariates=[promo]"] if known_ahead else [])], scratch)
        folder = scratch / "run" / "model"
        model = SavedModel(*read_model(folder / SPEC_FILE, folder / WEIGHTS_FILE))
        spec = model.spec
        frame = pd.read_parquet(path)
        history = frame.groupby("id", sort=False).tail(spec.lookback + (spec.horizon if known_ahead else 0))
        if known_ahead:  # the last `horizon` rows of each series become its future rows
            history = history.assign(y=history["y"].mask(history.groupby("id").cumcount() >= spec.lookback))
        history.to_parquet(scratch / "history.parquet", index=False)
        model.forecast(history.head(8 * len(history) // series))   # warm-up
        started = time.perf_counter()
        out = model.forecast(history)
        call = time.perf_counter() - started
        stage, wall, peak = run_stage("pipeline.forecast", [
            f"model_uri=runs:/{summary['run_id']}/model", f"data.path={scratch / 'history.parquet'}",
            f"output={scratch / 'forecast.parquet'}"], scratch)
    assert len(out) == series * spec.horizon and stage["series"] == series
    return {"series": series, "known_ahead": known_ahead, "lookback": spec.lookback, "horizon": spec.horizon,
            "call_seconds": round(call, 2),
            "series_per_second": round(series / call), "stage_seconds": round(wall, 1),
            "stage_peak_rss_mb": round(peak)}


def table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 10^6 points and 10^3 series")
    parser.add_argument("--tracking-uri", default=TrackingConfig.uri, help="where the `benchmarks` run goes")
    args = parser.parse_args()
    points = POINTS[:-1] if args.quick else POINTS
    counts = SERIES[:-1] if args.quick else SERIES
    keys = ["series", "points", "fit_steps", "epoch_seconds", "stage_seconds", "peak_rss_mb"]
    results = {}
    for axis, cases in (("points", [(1, n) for n in points]), ("series", [(n, 1_000) for n in counts])):
        rows = []
        for n_series, length in cases:
            rows.append(train_case(n_series, length))
            print(table(rows[-1:], keys).splitlines()[-1], file=sys.stderr, flush=True)
        results[axis] = {"rows": rows, "growth": fit_growth(rows)}
        print(f"\n{axis}:\n{table(rows, keys)}\ngrowth: {results[axis]['growth']}\n", file=sys.stderr)
    results["inference"] = inference_case(INFERENCE_SERIES // (10 if args.quick else 1))
    results["inference_known_ahead"] = inference_case(INFERENCE_SERIES // (10 if args.quick else 1),
                                                      known_ahead=True)
    print(f"inference: {results['inference']}", file=sys.stderr)
    metrics = {f"{axis}_{k}": results[axis]["growth"][k] for axis in ("points", "series")
               for k in ("time_exponent", "memory_exponent")}
    metrics |= {f"inference_{k}": results["inference"][k] for k in ("series_per_second", "call_seconds")}
    path, run_id = record("scaling", results, metrics, args.tracking_uri)
    print(json.dumps({"results": str(path), "mlflow_run_id": run_id, "tracking_uri": args.tracking_uri}))


if __name__ == "__main__":
    main()
