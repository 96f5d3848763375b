"""Accuracy benchmark: test MASE and sMAPE of the pipeline's models beside seasonal naive, MSTL and AutoETS.

    make bench-accuracy                                   # every row, then bench/ACCURACY.md
    .venv-bench/bin/python bench/accuracy.py --rows tourism   # rows whose name starts with "tourism"
    .venv-bench/bin/python bench/accuracy.py --render         # only rewrite ACCURACY.md from stored results

Every model row is the printed `python -m pipeline.train ...` command, run as it is in a subprocess (plus a
private MLflow store and run folder): its validation and test metrics come from the stage's own backtest, the
same origins the baselines below are scored on. The classical baselines (statsforecast, the `bench` extra) are
fitted, for each origin, on the series' history before it, and scored with the pipeline's metric functions.
Choices are made on the validation block (`val MASE`); the test block is read once per row.

Results are kept per row in outputs/bench/accuracy.jsonl, so rows can be (re)run in parts; the table shows
the latest result of each row.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import to_config  # noqa: E402
from pipeline.evaluate import mase_scales, point_metrics  # noqa: E402
from pipeline.load import load_series  # noqa: E402
from pipeline.window import make_windows  # noqa: E402

CLASSICAL_NAMES = {"mstl": "MSTL", "autoets": "AutoETS"}
RESULTS = ROOT / "outputs" / "bench" / "accuracy.jsonl"
TABLE = ROOT / "bench" / "ACCURACY.md"


@dataclass
class Protocol:
    """A data set and its blocks: the overrides every row on it shares."""

    overrides: list[str]
    description: str
    classical: list[str]


PROTOCOLS = {
    "vic_elec": Protocol(
        [], "half-hourly demand, one series; lookback 336 (a week), horizon 48 (a day); validation and test "
            "are the last 28 days each, forecast from 28 daily origins", ["mstl"]),
    "tourism": Protocol(
        ["experiment=tourism"],
        "quarterly trips, 304 series, one global model; lookback 8 (2 years), horizon 8 (2 years); validation "
        "and test are the last 8 quarters each, one origin per series (conf/experiment/tourism.yaml)",
        ["autoets"]),
}


@dataclass
class Row:
    protocol: str
    name: str
    overrides: list[str] = field(default_factory=list)
    # An ensemble row trains nothing: it averages the stored forecasts of these rows (same protocol).
    members: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.protocol}/{self.name}"

    @property
    def command(self) -> str:
        if self.members:
            return "the mean forecast of the rows: " + ", ".join(self.members)
        return " ".join(["python -m pipeline.train", *PROTOCOLS[self.protocol].overrides, *self.overrides])


# The default row of each protocol first; every other row changes one thing against it (an ablation).
ROWS = [
    Row("vic_elec", "default"),
    Row("vic_elec", "default, seed 1", ["seed=1"]),
    Row("vic_elec", "no seasonal skip", ["model.seasonal_skip=false"]),
    Row("vic_elec", "per-window normalisation", ["model.window_norm=true"]),
    Row("vic_elec", "no calendar features", ["data.calendar=false"]),
    Row("vic_elec", "temperature (past covariate)", ["data.covariates=[temperature]"]),
    Row("vic_elec", "holiday flag (known-future input)", ["data.future_covariates=[holiday]"]),
    Row("vic_elec", "MSE loss", ["optim.loss=mse"]),
    Row("vic_elec", "Huber loss", ["optim.loss=huber"]),
    Row("vic_elec", "constant learning rate", ["optim.cosine_schedule=false"]),
    Row("vic_elec", "GRU", ["model=gru"]),
    Row("vic_elec", "segments of 12, 3000 steps", ["model.segment_len=12", "trainer.max_steps=3000"]),
    Row("vic_elec", "batches of 512, 300 steps", ["window.batch_size=512", "trainer.max_steps=300",
                                                 "trainer.val_check_interval=50"]),
    Row("vic_elec", "early stopping (patience 2)", ["optim.patience=2"]),
    Row("tourism", "default"),
    Row("tourism", "default, seed 1", ["seed=1"]),
    Row("tourism", "default, seed 2", ["seed=2"]),
    Row("tourism", "ensemble of seeds 0, 1, 2", members=["default", "default, seed 1", "default, seed 2"]),
    Row("tourism", "lookback 16", ["window.lookback=16"]),
    Row("tourism", "no per-window normalisation", ["model.window_norm=false"]),
    Row("tourism", "no seasonal skip", ["model.seasonal_skip=false"]),
    Row("tourism", "no calendar features", ["data.calendar=false"]),
    Row("tourism", "MAE loss", ["optim.loss=mae"]),
    Row("tourism", "Huber loss", ["optim.loss=huber"]),
    Row("tourism", "600 steps", ["trainer.max_steps=600"]),
    Row("tourism", "constant learning rate", ["optim.cosine_schedule=false"]),
    Row("tourism", "GRU", ["model=gru"]),
]


def run_row(row: Row, workdir: Path) -> dict:
    """Train with the row's command; returns the stage's summary, wall time included. Its backtest forecasts
    are kept under outputs/bench/forecasts/ for ensemble rows."""
    private = [f"tracking.uri=sqlite:///{workdir}/mlflow.db", f"hydra.run.dir={workdir}/run",
               "tracking.log_model=false"]
    argv = [sys.executable, "-m", "pipeline.train", *PROTOCOLS[row.protocol].overrides, *row.overrides, *private]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{row.key}: the training stage failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - started
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    folder = Path(client.download_artifacts(summary["run_id"], "backtest", str(workdir)))
    for block in ("val", "test"):
        forecasts_path(row.key, block).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f"{block}.parquet", forecasts_path(row.key, block))
    return summary | {"wall_seconds": round(wall, 1)}


def forecasts_path(key: str, block: str) -> Path:
    return RESULTS.parent / "forecasts" / f"{key.replace('/', '__').replace(' ', '_')}.{block}.parquet"


def ensemble(row: Row, results: dict[str, dict]) -> dict:
    """Scores of the mean forecast of the member rows, on both blocks; the budget is the members' sum."""
    keys = [f"{row.protocol}/{name}" for name in row.members]
    missing = [k for k in keys if k not in results or not forecasts_path(k, "test").exists()]
    if missing:
        raise SystemExit(f"{row.key}: run its member rows first: {missing}")
    out: dict = {"fit_steps": sum(results[k]["fit_steps"] for k in keys),
                 "fit_seconds": round(sum(results[k]["fit_seconds"] for k in keys), 1),
                 "wall_seconds": round(sum(results[k]["wall_seconds"] for k in keys), 1)}
    for block, name in (("val", "val"), ("test", "test")):
        frames = [pd.read_parquet(forecasts_path(k, block)) for k in keys]
        first = frames[0]
        mean = np.mean([f["forecast"].to_numpy() for f in frames], axis=0)
        horizon = int(first["step"].max())
        actual = first["actual"].to_numpy().reshape(-1, horizon)
        scale = first["mase_scale"].to_numpy().reshape(-1, horizon)[:, 0]
        out[name] = point_metrics(actual, mean.reshape(-1, horizon), scale)
        baseline = point_metrics(actual, first["seasonal_naive"].to_numpy().reshape(-1, horizon), scale)
        out["val_seasonal_naive" if block == "val" else "seasonal_naive"] = baseline
    return out


def classical(protocol: str) -> dict:
    """Seasonal naive's companions from statsforecast, on the pipeline's own origins of both blocks.

    Each is fitted per origin on a trailing history; where a protocol offers several history lengths, the one
    with the best validation MASE is scored on the test block.
    """
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = to_config(compose("config", overrides=PROTOCOLS[protocol].overrides))
    series = load_series(cfg.data)
    windows = make_windows(series, cfg.window.lookback, cfg.window.horizon, cfg.window.stride,
                           cfg.split.val_steps, cfg.split.test_steps, cfg.data.calendar)
    result: dict = {"val": {}, "test": {}, "history": {}}
    for name in PROTOCOLS[protocol].classical:
        histories = HISTORIES.get(name, [None])
        val = {h: fit_classical(name, windows, series, "val", h) for h in histories}
        best = min(histories, key=lambda h: val[h]["mase"])
        result["val"][name], result["history"][name] = val[best], best
        result["test"][name] = fit_classical(name, windows, series, "test", best)
        result["val_by_history"] = {name: {str(h): v["mase"] for h, v in val.items()}}
    return result


# MSTL on vic_elec: trailing histories of 4, 8 and 16 weeks (the whole series takes ~10 min per block of 28
# origins, and older years add little to a daily and weekly pattern); chosen on the validation block.
HISTORIES = {"mstl": [4 * 336, 8 * 336, 16 * 336]}


def fit_classical(name: str, windows, series, block: str, history: int | None) -> dict:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    dataset = windows.test if block == "test" else windows.val_origins
    starts, rows = dataset.windows.locate(torch.arange(len(dataset)))
    origins = (starts + windows.lookback).numpy()
    horizon, season = windows.horizon, series.season
    ids = [windows.splits[i].series_id for i in rows.tolist()]
    scales = mase_scales(windows.target, windows.splits, season)
    actual = windows.target[origins[:, None] + np.arange(horizon)]
    # One statsforecast "series" per (series, origin): its history before the origin.
    firsts = np.array([windows.splits[i].first for i in rows.tolist()])
    if history is not None:
        firsts = np.maximum(firsts, origins - history)
    frames = [pd.DataFrame({"unique_id": n, "ds": windows.times[first:origin], "y": windows.target[first:origin]})
              for n, (first, origin) in enumerate(zip(firsts, origins))]
    # MSTL: a day and a week of half-hours, the trend by ETS without seasonality (statsforecast's default).
    model = (MSTL(season_length=[season, 7 * season], alias=name) if name == "mstl"
             else AutoETS(season_length=season, alias=name))
    started = time.perf_counter()
    fitted = StatsForecast(models=[model], freq=series.freq, n_jobs=1).forecast(
        df=pd.concat(frames, ignore_index=True), h=horizon)
    forecast = fitted.sort_values(["unique_id", "ds"])[name].to_numpy().reshape(len(origins), horizon)
    metrics = point_metrics(actual, forecast, np.array([scales[i] for i in ids]))
    return metrics | {"fit_seconds": round(time.perf_counter() - started, 1)}


def store(key: str, result: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps({"key": key, "date": datetime.date.today().isoformat()} | result) + "\n")


def stored() -> dict[str, dict]:
    """The latest result of every key."""
    if not RESULTS.exists():
        return {}
    latest = {}
    for line in RESULTS.read_text().splitlines():
        entry = json.loads(line)
        latest[entry["key"]] = entry
    return latest


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, no GPU used; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def render(results: dict[str, dict]) -> str:
    lines = ["# Accuracy benchmark", "",
             f"Written by `bench/accuracy.py` ({datetime.date.today().isoformat()}). Machine: {machine()}.", "",
             "MASE is scaled by each series' in-sample seasonal-naive error (training rows); sMAPE in percent "
             "(0-200). `val MASE` is what choices are made on; the test block is read once per row. Budget: "
             "optimizer steps of 256 windows, and the training (fit) time measured in the row's run. Each row "
             "is one run with seed 0 unless it says otherwise.", ""]
    for protocol, spec in PROTOCOLS.items():
        lines += [f"## {protocol}", "", spec.description + ".", "",
                  "| model | val MASE | test MASE | test sMAPE | budget | command |", "|---|---|---|---|---|---|"]
        baselines = results.get(f"{protocol}/classical")
        default = results.get(f"{protocol}/default")
        if default:
            lines.append(f"| seasonal naive | {default['val_seasonal_naive']['mase']:.3f} | "
                         f"{default['seasonal_naive']['mase']:.3f} | {default['seasonal_naive']['smape']:.2f} "
                         f"| - | (every row's backtest) |")
        if baselines:
            for name in spec.classical:
                val, test = baselines["val"][name], baselines["test"][name]
                history = baselines["history"][name]
                fitted_on = "whole history" if history is None else f"last {history} steps (chosen on val)"
                lines.append(f"| {CLASSICAL_NAMES[name]} (statsforecast) | "
                             f"{val['mase']:.3f} | {test['mase']:.3f} | {test['smape']:.2f} | "
                             f"{fitted_on}; {test['fit_seconds']:.0f} s for all test origins | "
                             f"`.venv-bench/bin/python bench/accuracy.py --rows {protocol}/classical` |")
        for row in (r for r in ROWS if r.protocol == protocol):
            result = results.get(row.key)
            if result is None:
                continue
            lines.append(f"| {row.name} | {result['val']['mase']:.3f} | {result['test']['mase']:.3f} | "
                         f"{result['test']['smape']:.2f} | {result['fit_steps']} steps, "
                         f"{result['fit_seconds']:.0f} s fit ({result['wall_seconds']:.0f} s wall) | "
                         f"`{row.command}` |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=[""],
                        help="run the rows whose key (protocol/name) starts with any of these; default all")
    parser.add_argument("--render", action="store_true", help="only rewrite ACCURACY.md from stored results")
    args = parser.parse_args()
    if not args.render:
        keys = [f"{p}/classical" for p in PROTOCOLS] + [r.key for r in ROWS]
        chosen = [k for k in keys if any(k.startswith(prefix) for prefix in args.rows)]
        if not chosen:
            raise SystemExit(f"no row matches {args.rows}; rows: {keys}")
        for key in chosen:
            protocol, name = key.split("/", 1)
            row = next((r for r in ROWS if r.key == key), None)
            if name == "classical":
                result = classical(protocol)
            elif row.members:
                result = ensemble(row, stored())
            else:
                with tempfile.TemporaryDirectory() as workdir:
                    result = run_row(row, Path(workdir))
            store(key, result)
            print(key, json.dumps(result), flush=True)
    TABLE.write_text(render(stored()))
    print(f"wrote {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
