"""Accuracy benchmark: test MASE and sMAPE of the pipeline's models beside seasonal naive, MSTL and AutoETS.

    make bench-accuracy                                   # every row, then bench/ACCURACY.md
    .venv-bench/bin/python bench/accuracy.py --rows tourism   # rows whose name starts with "tourism"
    .venv-bench/bin/python bench/accuracy.py --render         # only rewrite ACCURACY.md from stored results

Every model row is the printed `python -m pipeline.train ...` command, run as it is in a subprocess (plus a
private MLflow store and run folder): its validation and test metrics come from the stage's own backtest, the
same origins the baselines below are scored on. The classical baselines (statsforecast, the `bench` extra) are
fitted, for each origin, on the series' history before it, and scored with the pipeline's metric functions.
Choices are made on the validation block (`val MASE`); the test block is read once per row. Each row's test
MASE stands beside the best classical model's on the same block, with a paired bootstrap over its forecasts.

Protocols: vic_elec (half-hourly), tourism (quarterly panel), us_gasoline (weekly), PBS (monthly count panel, given
only its data), and vic_elec_2014, a long backtest: one model trained on 2012-2013 and scored by the evaluate stage
from every day of 2014, no retraining.
Protocols with gap validation (tourism) rerun each row on the file without its test block: its test block is
then the validation block, forecast as the real test block is (8 quarters after training ends). Ensemble rows
train nothing: they average the stored forecasts of their member rows.

Results are kept per row in outputs/bench/accuracy.jsonl (forecasts under outputs/bench/forecasts/), so rows
can be (re)run in parts; each protocol's table (the latest result of each row) replaces its own marked section of
ACCURACY.md, leaving the rest of the file as it is. A full run takes about two hours on 2 CPU cores.
"""

import argparse
import datetime
import json
import os
import resource
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

import record  # noqa: E402  bench/record.py: the machine, as the speed benchmarks describe it

from pipeline.config import to_config  # noqa: E402
from pipeline.data.defaults import resolve_windowing  # noqa: E402
from pipeline.data.load import load_series, read_table  # noqa: E402
from pipeline.data.times import parse_times  # noqa: E402
from pipeline.data.windows import make_windows  # noqa: E402
from pipeline.evaluation.metrics import history_rows, mase_scale, point_metrics, quantile_metrics  # noqa: E402

CLASSICAL_NAMES = {"mstl": "MSTL", "autoets": "AutoETS"}
RESULTS = ROOT / "outputs" / "bench" / "accuracy.jsonl"
TABLE = ROOT / "bench" / "ACCURACY.md"


@dataclass
class Protocol:
    """A data set and its blocks: the overrides every row on it shares."""

    overrides: list[str]
    description: str
    classical: list[str]
    # Also score each row on the validation block as the test block is forecast: by a model whose training
    # ends a held-out block earlier (the row rerun on the file without its test block). What the tourism
    # choices are made on: its plain validation block follows training directly and cannot see level drift.
    gap_validation: bool = False
    # A long backtest: rows train on the file without the last `long_origins` horizons and are scored by the
    # evaluate stage from each of those origins, a horizon apart, without retraining (run_long_row).
    long_origins: int = 0
    # An earlier fold: rows train on the file without its last `earlier_blocks` x split.test_steps rows of each
    # series, so both its blocks lie that far back, before the real test block. Choosing among recipes on the
    # validation blocks of several folds, rather than on one 28-day block, is what these are for.
    earlier_blocks: int = 0


def earlier_fold(blocks: int) -> "Protocol":
    return Protocol([], f"an earlier fold of vic_elec: the default data without its last {blocks} x 28 days, so its "
                        f"validation block is vic_elec's moved {28 * blocks} days earlier and its test block "
                        f"{'is' if blocks == 1 else 'lies before'} vic_elec's validation block; nothing here reads "
                        "vic_elec's test block", [], earlier_blocks=blocks)


PROTOCOLS = {
    "vic_elec": Protocol(
        [], "half-hourly demand, one series; lookback 336 (a week), horizon 48 (a day); validation and test "
            "are the last 28 days each, forecast from 28 daily origins", ["mstl"]),
    "tourism": Protocol(
        ["experiment=tourism"],
        "quarterly trips, 304 series, one global model; lookback 8 (2 years), horizon 8 (2 years); validation "
        "and test are the last 8 quarters each, one origin per series (conf/experiment/tourism.yaml)",
        ["autoets"], gap_validation=True),
    "us_gasoline": Protocol(
        ["experiment=us_gasoline"],
        "weekly US finished motor gasoline supplied (million barrels a day), one series, 1991-2017; lookback 104 "
        "(2 years), horizon 13 (a quarter); validation and test are the last 104 weeks each, 8 origins each "
        "(conf/experiment/us_gasoline.yaml: data, window and split settings, and the default recipe without its "
        "seasonal skip, chosen on validation)",
        ["autoets", "mstl"]),
    "vic_elec_2014": Protocol(
        [], "the long backtest: each row's recipe trained once on 2012-2013 (the file without its last 365 days, "
            "so its own validation and test blocks are December 2013), not retrained, then scored by the evaluate "
            "stage from every day of 2014 (365 daily origins, a day ahead each, MASE scaled by the history "
            "before 2014); MSTL refitted at every origin on the same origins", ["mstl"], long_origins=365),
    "vic_elec_fold1": earlier_fold(1),
    "vic_elec_fold2": earlier_fold(2),
    "pbs": Protocol(
        ["data=pbs"],
        "monthly prescription counts, 336 series of fpp3's PBS, one global model; window and split from the data's "
        "frequency alone (lookback 24, horizon 12, validation and test the last 12 months each, one origin per "
        "series), as a new user's file gets them", ["autoets", "mstl"]),
}


@dataclass
class Row:
    protocol: str
    name: str
    overrides: list[str] = field(default_factory=list)
    # An ensemble row trains nothing: it averages the stored forecasts of these rows (same protocol).
    members: list[str] = field(default_factory=list)
    # In place of the protocol's own overrides (its experiment file): a row run as a user who names only the data.
    base: list[str] | None = None
    # Rerun on the file without its test block for the gap validation (a protocol with one): not for a row that
    # chooses on its own validation block (experiment=auto).
    gap: bool = True

    @property
    def overrides_before(self) -> list[str]:
        return PROTOCOLS[self.protocol].overrides if self.base is None else self.base

    @property
    def key(self) -> str:
        return f"{self.protocol}/{self.name}"

    @property
    def command(self) -> str:
        if self.members:
            return "mean forecast of the rows " + " + ".join(f"'{m}'" for m in self.members)
        protocol = PROTOCOLS[self.protocol]
        train = " ".join(["python -m pipeline.train", *self.overrides_before, *self.overrides])
        if protocol.long_origins:  # run_long_row
            return (f"{train} data.path=<the file without its last {protocol.long_origins} horizons>, then "
                    f"python -m pipeline.evaluate run_id=<its run> evaluate.origins={protocol.long_origins} "
                    "evaluate.step=48")
        if protocol.earlier_blocks:
            return f"{train} data.path=<the file without its last {protocol.earlier_blocks} x 1344 rows>"
        return train


# The default row of each protocol first; every other row changes one thing against it (an ablation).
# Rows run before trainer.precision=auto existed trained in float32; their commands say so, so each reproduces.
FP32 = ["trainer.precision=32-true"]
# Recipes by name, whatever the default is: reading the lookback a step at a time for 600 steps (record.PER_STEP),
# and three members reading it in segments of 4 for 300 or 600 steps.
PER_STEP = record.PER_STEP
SEG4_ENS3_300 = ["model.segment_len=4", "model.ensemble=3", "trainer.max_steps=300"]
SEG4_ENS3 = ["model.segment_len=4", "model.ensemble=3", "trainer.max_steps=600"]
# vic_elec's default (conf/experiment/default.yaml since 2026-11-28) is SEG4_ENS3; rows measured before it state
# PER_STEP, the default they were measured against, so each command still reproduces its row.
OLD = "per step, 600 steps (the default until 2026-11-28)"
ROWS = [
    # Three validation blocks in a row (vic_elec's own and two folds before it) for the default (SEG4_ENS3), the
    # previous default and the same members for 300 steps: the evidence it was chosen on (ACCURACY.md, "Choosing
    # the default"). The default's own rows on vic_elec are "segments of 4, ensemble of 3" below.
    *[Row("vic_elec", "segments of 4, ensemble of 3, 300 steps" + (f", seed {s}" if s else ""),
          SEG4_ENS3_300 + ([f"seed={s}"] if s else [])) for s in range(3)],
    *[Row(f"vic_elec_fold{k}", name, overrides) for k in (1, 2)
      for name, overrides in (("per step, 600 steps", PER_STEP), ("segments of 4, ensemble of 3, 300 steps",
                                                                   SEG4_ENS3_300),
                              ("segments of 4, ensemble of 3, 600 steps", SEG4_ENS3))],
    Row("vic_elec", OLD, PER_STEP),
    Row("vic_elec", f"{OLD}, seed 1", [*PER_STEP, "seed=1"]),
    Row("vic_elec", f"{OLD}, seed 2", [*PER_STEP, "seed=2"]),
    Row("vic_elec", "per step in float32", [*PER_STEP, *FP32]),
    Row("vic_elec", "per step in float32, seed 1", [*PER_STEP, *FP32, "seed=1"]),
    # Measured against the default before that (model.window_norm=false), before per-window normalisation won on
    # the validation block; each command states it.
    Row("vic_elec", "previous default: no window norm", [*PER_STEP, *FP32, "model.window_norm=false"]),
    Row("vic_elec", "previous default: no window norm, seed 1",
        [*PER_STEP, *FP32, "model.window_norm=false", "seed=1"]),
    Row("vic_elec", "previous default, no seasonal skip",
        [*PER_STEP, *FP32, "model.window_norm=false", "model.seasonal_skip=false"]),
    Row("vic_elec", "previous default, no calendar features",
        [*PER_STEP, *FP32, "model.window_norm=false", "data.calendar=false"]),
    Row("vic_elec", "previous default + temperature (past covariate)",
        [*PER_STEP, *FP32, "model.window_norm=false", "data.covariates=[temperature]"]),
    Row("vic_elec", "previous default + holiday flag (known-future input)",
        [*PER_STEP, *FP32, "model.window_norm=false", "data.future_covariates=[holiday]"]),
    Row("vic_elec", "previous default, MSE loss", [*PER_STEP, *FP32, "model.window_norm=false", "optim.loss=mse"]),
    Row("vic_elec", "holiday flag (known-future input)", [*PER_STEP, "data.future_covariates=[holiday]"]),
    Row("vic_elec", "holiday flag (known-future input), seed 1",
        [*PER_STEP, "data.future_covariates=[holiday]", "seed=1"]),
    # Not run yet.
    Row("vic_elec", "Huber loss", [*PER_STEP, "optim.loss=huber"]),
    Row("vic_elec", "constant learning rate", [*PER_STEP, "optim.cosine_schedule=false"]),
    Row("vic_elec", "batches of 512, 300 steps", [*PER_STEP, "window.batch_size=512", "trainer.max_steps=300",
                                                 "trainer.val_check_interval=50"]),
    Row("vic_elec", "early stopping (patience 2)", [*PER_STEP, "optim.patience=2"]),
    # The ensemble option (model.ensemble), each member on its own batches: the default since 2026-11-28.
    *[Row("vic_elec", "segments of 4, ensemble of 3" + (f", seed {s}" if s else ""),
          SEG4_ENS3 + ([f"seed={s}"] if s else [])) for s in range(3)],
    Row("vic_elec_2014", "segments of 4, ensemble of 3, 300 steps", SEG4_ENS3_300),
    Row("vic_elec_2014", "per step, 600 steps", PER_STEP),
    Row("vic_elec_2014", "segments of 4, ensemble of 3 (the default)", SEG4_ENS3),
    # conf/experiment/us_gasoline.yaml turns the seasonal skip off (it lost on validation, below); the rows
    # measured with it say `model.seasonal_skip=true`.
    *[Row("us_gasoline", "default" + (f", seed {s}" if s else ""), [f"seed={s}"] if s else []) for s in range(3)],
    *[Row("us_gasoline", "seasonal skip" + (f", seed {s}" if s else ""),
          ["model.seasonal_skip=true"] + ([f"seed={s}"] if s else [])) for s in range(3)],
    Row("us_gasoline", "seasonal skip, lookback 52", ["model.seasonal_skip=true", "window.lookback=52"]),
    *[Row("us_gasoline", "seasonal skip, lookback 156" + (f", seed {s}" if s else ""),
          ["model.seasonal_skip=true", "window.lookback=156"] + ([f"seed={s}"] if s else [])) for s in range(3)],
    *[Row("us_gasoline", "seasonal skip, ensemble of 3" + (f", seed {s}" if s else ""),
          ["model.seasonal_skip=true", "model.ensemble=3"] + ([f"seed={s}"] if s else [])) for s in range(3)],
    Row("tourism", "default"),
    Row("tourism", "default, seed 1", ["seed=1"]),
    Row("tourism", "default, seed 2", ["seed=2"]),
    *[Row("tourism", "ensemble of 3" + (f", seed {s}" if s else ""),
          ["model.ensemble=3"] + ([f"seed={s}"] if s else [])) for s in range(3)],
    Row("tourism", "ensemble of seeds 0, 1, 2", members=["default", "default, seed 1", "default, seed 2"]),
    Row("tourism", "default in float32", FP32),
    Row("tourism", "default in float32, seed 1", [*FP32, "seed=1"]),
    Row("tourism", "default in float32, seed 2", [*FP32, "seed=2"]),
    Row("tourism", "ensemble of seeds 0, 1, 2 in float32",
        members=["default in float32", "default in float32, seed 1", "default in float32, seed 2"]),
    Row("tourism", "lookback 16", [*FP32, "window.lookback=16"]),
    Row("tourism", "no per-window normalisation", [*FP32, "model.window_norm=false"]),
    Row("tourism", "no seasonal skip", [*FP32, "model.seasonal_skip=false"]),
    Row("tourism", "no seasonal skip, seed 1", [*FP32, "model.seasonal_skip=false", "seed=1"]),
    Row("tourism", "no seasonal skip, seed 2", [*FP32, "model.seasonal_skip=false", "seed=2"]),
    Row("tourism", "no calendar features", [*FP32, "data.calendar=false"]),
    Row("tourism", "MAE loss", [*FP32, "optim.loss=mae"]),
    Row("tourism", "Huber loss", [*FP32, "optim.loss=huber"]),
    Row("tourism", "600 steps", [*FP32, "trainer.max_steps=600"]),
    Row("tourism", "constant learning rate", [*FP32, "optim.cosine_schedule=false"]),
    Row("tourism", "GRU", [*FP32, "model=gru"]),
    # Static covariates (issue 36): the id columns as attributes, fed to a head with a hidden layer, beside the same
    # head without them.
    *[Row("tourism", f"{name}" + (f", seed {s}" if s else ""), overrides + ([f"seed={s}"] if s else []))
      for name, overrides in [("MLP head", ["model.head_layers=[32]"]),
                              ("static State and Purpose, MLP head",
                               ["data.static_from_ids=[State,Purpose]", "model.head_layers=[32]"]),
                              ("static Region, State and Purpose, MLP head",
                               ["data.static_from_ids=true", "model.head_layers=[32]"]),
                              # Where they enter: the head above, the encoder's initial state, or each row it reads.
                              *[(f"static Region, State and Purpose into the {place}, MLP head",
                                 ["data.static_from_ids=true", "model.head_layers=[32]", f"model.static_into={into}"])
                                for place, into in [("initial state", "state"), ("input rows", "input")]]]
      for s in range(3)],
    # Data nobody tuned for (issue 36): each shipped data set given only its data (`data=...`, window and split
    # from its frequency), with the default recipe and with experiment=auto (the recipe chosen on the file's own
    # validation block within auto.budget_minutes, then trained on all the training data); three seeds each.
    *[Row(protocol, name + (f", seed {s}" if s else ""), overrides + ([f"seed={s}"] if s else []), base=base,
          gap=name != "experiment=auto")
      for protocol, base in [("vic_elec", None), ("tourism", ["data=tourism"]), ("us_gasoline", ["data=us_gasoline"]),
                             ("pbs", None)]
      for name, overrides in [("default recipe, data only", []), ("experiment=auto", ["experiment=auto"])]
      if protocol != "vic_elec" or name != "default recipe, data only"  # vic_elec's are its default rows above
      for s in range(3)],
    *[Row("pbs", "experiment=pbs (tourism's recipe for a monthly panel)" + (f", seed {s}" if s else ""),
          ["experiment=pbs"] + ([f"seed={s}"] if s else [])) for s in range(3)],
]


def run_row(row: Row, workdir: Path) -> dict:
    """Train with the row's command; returns the stage's summary, wall time included. Its backtest forecasts
    are kept under outputs/bench/forecasts/ for ensemble rows."""
    private = [f"tracking.uri=sqlite:///{workdir}/mlflow.db", f"hydra.run.dir={workdir}/run",
               "tracking.log_model=false"]
    protocol = PROTOCOLS[row.protocol]
    argv = [sys.executable, "-m", "pipeline.train", *row.overrides_before, *row.overrides]
    if protocol.earlier_blocks:
        argv.append(f"data.path={without_last_blocks(row.protocol, workdir, protocol.earlier_blocks)}")
    started, cpu = time.perf_counter(), child_cpu_seconds()
    summary = train(row, argv + private)
    wall, cpu = time.perf_counter() - started, child_cpu_seconds() - cpu
    if protocol.gap_validation and row.gap:
        shifted = without_last_blocks(row.protocol, workdir, 1)
        gap = train(row, argv + [f"data.path={shifted}", f"tracking.uri=sqlite:///{workdir}/gap.db",
                                 f"hydra.run.dir={workdir}/gap", "tracking.log_model=false"])
        summary["val_gap"] = gap["test"]
        keep_forecasts(workdir / "gap.db", gap["run_id"], {"test": "val_gap"}, row.key, workdir / "gap_artifacts")
    keep_forecasts(workdir / "mlflow.db", summary["run_id"], {"val": "val", "test": "test"}, row.key,
                   workdir / "artifacts")
    return summary | {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}


def child_cpu_seconds() -> float:
    """CPU time (user and system) of the finished subprocesses: what a training cost, whatever else ran beside it."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run_long_row(row: Row, workdir: Path) -> dict:
    """Train on the file without the horizons of its last `long_origins` origins, then score the logged model with
    the evaluate stage from each of those origins (no retraining); the evaluation's forecasts are kept as the
    row's test block."""
    protocol, cfg = PROTOCOLS[row.protocol], composed(row.protocol)
    origins, horizon = protocol.long_origins, cfg.window.horizon
    raw = read_table(ROOT / cfg.data.path)  # one series, in time order
    cut = workdir / "without_the_long_backtest.parquet"
    raw.iloc[:len(raw) - origins * horizon].to_parquet(cut, index=False)
    private = [f"tracking.uri=sqlite:///{workdir}/mlflow.db"]
    started = time.perf_counter()
    summary = train(row, [sys.executable, "-m", "pipeline.train", *protocol.overrides, *row.overrides,
                          f"data.path={cut}", *private, f"hydra.run.dir={workdir}/run"])
    wall = time.perf_counter() - started
    evaluation = train(row, [sys.executable, "-m", "pipeline.evaluate", f"run_id={summary['run_id']}",
                             f"data.path={ROOT / cfg.data.path}", f"evaluate.origins={origins}",
                             f"evaluate.step={horizon}", *private, f"hydra.run.dir={workdir}/evaluate"])
    folder = Path(MlflowClient(f"sqlite:///{workdir}/mlflow.db").download_artifacts(
        evaluation["run_id"], "evaluation", str(workdir / "artifacts")))
    forecasts_path(row.key, "test").parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / "forecasts.parquet", forecasts_path(row.key, "test"))
    return {"fit_steps": summary["fit_steps"], "fit_seconds": summary["fit_seconds"], "wall_seconds": round(wall, 1),
            "val": summary["val"], "trained_test": summary["test"],
            "test": evaluation["model"], "seasonal_naive": evaluation["seasonal_naive"]}


def keep_forecasts(store: Path, run_id: str, blocks: dict[str, str], key: str, scratch: Path) -> None:
    """Copy the run's backtest/BLOCK.parquet artifacts to outputs/bench/forecasts/ under the given names."""
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(MlflowClient(f"sqlite:///{store}").download_artifacts(run_id, "backtest", str(scratch)))
    for block, name in blocks.items():
        forecasts_path(key, name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f"{block}.parquet", forecasts_path(key, name))


def train(row: Row, argv: list[str]) -> dict:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{row.key}: the training stage failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def without_last_blocks(protocol: str, workdir: Path, blocks: int) -> Path:
    """The protocol's file without the last `blocks` x split.test_steps rows of each series, as Parquet."""
    cfg = composed(protocol)
    ids = cfg.data.id_column
    raw = read_table(ROOT / cfg.data.path, text_columns=ids)
    times, _ = parse_times(raw[cfg.data.time_column], cfg.data.time_format, cfg.data.time_zone, cfg.data.path,
                           cfg.data.time_column)
    ordered = raw.assign(_time=times.to_numpy()).sort_values([*ids, "_time"], kind="stable")
    from_end = (ordered.groupby(ids, sort=False).cumcount(ascending=False) if ids
                else pd.Series(np.arange(len(ordered))[::-1], index=ordered.index))
    path = workdir / f"without_last_{blocks}_blocks.parquet"
    ordered[from_end.to_numpy() >= blocks * cfg.split.test_steps].drop(columns="_time").to_parquet(path, index=False)
    return path


def composed(protocol: str):
    """The protocol's config, its unset window and split lengths derived from its data as training derives them."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = to_config(compose("config", overrides=PROTOCOLS[protocol].overrides))
    cfg.window, cfg.split = resolve_windowing(cfg.window, cfg.split, load_series(cfg.data))
    return cfg


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
    blocks = ["val", "test"] + (["val_gap"] if PROTOCOLS[row.protocol].gap_validation else [])
    for block in blocks:
        frames = [pd.read_parquet(forecasts_path(k, block)) for k in keys]
        first = frames[0]
        mean = np.mean([f["forecast"].to_numpy() for f in frames], axis=0)
        horizon = int(first["step"].max())
        actual = first["actual"].to_numpy().reshape(-1, horizon)
        scale = first["mase_scale"].to_numpy().reshape(-1, horizon)[:, 0]
        out[block] = point_metrics(actual, mean.reshape(-1, horizon), scale)
        first.assign(forecast=mean).to_parquet(forecasts_path(row.key, block), index=False)
        baseline = point_metrics(actual, first["seasonal_naive"].to_numpy().reshape(-1, horizon), scale)
        out[{"val": "val_seasonal_naive", "test": "seasonal_naive"}.get(block, "gap_seasonal_naive")] = baseline
    return out


def classical(protocol: str) -> dict:
    """Seasonal naive's companions from statsforecast, on the pipeline's own origins of both blocks (of a long
    backtest: its test block, the origins of the protocol's default row).

    Each is fitted per origin on a trailing history; where a protocol offers several history lengths, the one
    with the best validation MASE is scored on the test block (a long backtest takes vic_elec's choice).
    Every forecast is kept for the paired bootstrap.
    """
    cfg = composed(protocol)
    series = load_series(cfg.data)
    windows = make_windows(series, cfg.window.lookback, cfg.window.horizon, cfg.window.stride,
                           cfg.split.val_steps, cfg.split.test_steps, cfg.data.calendar)
    long = PROTOCOLS[protocol].long_origins
    result: dict = {"val": {}, "test": {}, "history": {}}
    for name in PROTOCOLS[protocol].classical:
        key = f"{protocol}/classical {name}"
        if long:
            best = stored().get("vic_elec/classical", {}).get("history", {}).get(name, 8 * 336)
            result["history"][name] = best
            result["test"][name] = keep(*fit_classical(name, long_backtest_origins(protocol, windows), series, best),
                                        key, "test")
            continue
        histories = HISTORIES.get((protocol, name), [None])
        val = {h: fit_classical(name, block_origins(windows, series, "val"), series, h) for h in histories}
        best = min(histories, key=lambda h: val[h][0]["mase"])
        result["val"][name], result["history"][name] = keep(*val[best], key, "val"), best
        result["test"][name] = keep(*fit_classical(name, block_origins(windows, series, "test"), series, best),
                                    key, "test")
        result["val_by_history"] = {name: {str(h): v[0]["mase"] for h, v in val.items()}}
    return result


# MSTL on vic_elec: trailing histories of 4, 8 and 16 weeks (the whole series takes ~10 min per block of 28
# origins, and older years add little to a daily and weekly pattern); chosen on the validation block.
HISTORIES = {("vic_elec", "mstl"): [4 * 336, 8 * 336, 16 * 336]}


@dataclass
class Origins:
    """Where a block's forecasts start: for each, the series' first row, the origin row, and the MASE scale."""

    firsts: np.ndarray
    origins: np.ndarray
    scales: np.ndarray
    horizon: int
    target: np.ndarray
    times: np.ndarray


def block_origins(windows, series, block: str) -> Origins:
    """The origins of the training stage's backtest of `block`, in its order."""
    dataset = windows.test if block == "test" else windows.val_origins
    starts, rows = dataset.windows.locate(torch.arange(len(dataset)))
    scales = {s: mase_scale(windows.target[rows], series.season)
              for s, rows in history_rows(windows.splits, block).items()}
    return Origins(np.array([windows.splits[i].first for i in rows.tolist()]), (starts + windows.lookback).numpy(),
                   np.array([scales[windows.splits[i].series_id] for i in rows.tolist()]), windows.horizon,
                   windows.target, windows.times)


def long_backtest_origins(protocol: str, windows) -> Origins:
    """The origins of the protocol's first row's evaluation (one series), its MASE scale included."""
    first = first_row(protocol, stored())
    path = first and forecasts_path(first, "test")
    if not path or not path.exists():
        raise SystemExit(f"{protocol}/classical: run one of its rows first (their origins)")
    frame = pd.read_parquet(path)
    horizon = int(frame["step"].max())
    firsts = frame.iloc[::horizon]
    position = utc_index(windows.times).get_indexer(utc_index(firsts["origin"]))
    if (position < 0).any():
        raise SystemExit(f"{protocol}/classical: the evaluation's origins are not times of the file")
    return Origins(np.zeros(len(position), int), position, firsts["mase_scale"].to_numpy(), horizon,
                   windows.target, windows.times)


def utc_index(times) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(times)
    return index.tz_convert(None) if index.tz is not None else index


def fit_classical(name: str, at: Origins, series, history: int | None,
                  levels: list[float] | None = None) -> tuple[dict, pd.DataFrame]:
    """Fit `name` at every origin on the history before it (its last `history` steps): its scores, and its
    forecasts (one row per origin and step, in the origins' order) for the paired bootstrap. With `levels`
    (central pairs around 0.5, as the pipeline's default quantiles), also the proper scores of its prediction
    intervals at those levels (statsforecast's, from the fitted model's error variance; the median is the mean)."""
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    horizon, origins = at.horizon, at.origins
    actual = at.target[origins[:, None] + np.arange(horizon)]
    firsts = at.firsts if history is None else np.maximum(at.firsts, origins - history)
    # One statsforecast "series" per (series, origin): its history before the origin.
    frames = [pd.DataFrame({"unique_id": n, "ds": at.times[first:origin], "y": at.target[first:origin]})
              for n, (first, origin) in enumerate(zip(firsts, origins))]
    # MSTL: every seasonal period of the data (a day and a week of half-hours), the trend by ETS without
    # seasonality (statsforecast's default).
    model = (MSTL(season_length=list(series.seasons), alias=name) if name == "mstl"
             else AutoETS(season_length=series.season, alias=name))
    started = time.perf_counter()
    coverages = sorted({round(100 * abs(1 - 2 * q)) for q in levels or [] if q != 0.5})
    fitted = StatsForecast(models=[model], freq=series.freq, n_jobs=1).forecast(
        df=pd.concat(frames, ignore_index=True), h=horizon, **({"level": coverages} if coverages else {}))
    fitted = fitted.sort_values(["unique_id", "ds"])
    forecast = fitted[name].to_numpy().reshape(len(origins), horizon)
    metrics = point_metrics(actual, forecast, at.scales) | {"fit_seconds": round(time.perf_counter() - started, 1)}
    if levels:
        columns = [name if q == 0.5 else f"{name}-{'lo' if q < 0.5 else 'hi'}-{round(100 * abs(1 - 2 * q))}"
                   for q in levels]
        quantiles = fitted[columns].to_numpy().reshape(len(origins), horizon, len(levels))
        metrics |= quantile_metrics(actual, quantiles, levels)
    return metrics, pd.DataFrame({"unit": np.repeat(np.arange(len(origins)), horizon),
                                  "step": np.tile(np.arange(1, horizon + 1), len(origins)), "actual": actual.ravel(),
                                  "forecast": forecast.ravel(), "mase_scale": np.repeat(at.scales, horizon)})


def keep(metrics: dict, forecasts: pd.DataFrame, key: str, block: str) -> dict:
    """Store a classical model's forecasts of a block (for the paired bootstrap); returns its scores."""
    path = forecasts_path(key, block)
    path.parent.mkdir(parents=True, exist_ok=True)
    forecasts.to_parquet(path, index=False)
    return metrics


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
    about = record.machine()
    return f"{about['cpu']}, {os.cpu_count()} cores, no GPU used; Python {about['python']}, torch {about['torch']}"


def unit_errors(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per forecast (a series at an origin; rows in (unit, step) order): the sum of its scaled absolute errors
    over the scored steps, and how many there were. Their ratio of sums is the block's MASE."""
    horizon = int(frame["step"].max())
    scaled = (frame["forecast"] - frame["actual"]).abs().to_numpy() / frame["mase_scale"].to_numpy()
    scored = np.isfinite(scaled) & (frame["observed"].to_numpy() if "observed" in frame else True)
    scaled = np.where(scored, scaled, 0.0).reshape(-1, horizon)
    return scaled.sum(1), scored.reshape(-1, horizon).sum(1)


def mase_of(frame: pd.DataFrame) -> float:
    errors, counts = unit_errors(frame)
    return float(errors.sum() / counts.sum())


def paired_bootstrap(model: pd.DataFrame, other: pd.DataFrame, draws: int = 2000, seed: int = 0) -> dict:
    """Model MASE minus the other's on the same forecasts, and its 90% interval: forecasts (series x origin)
    are drawn with replacement, the same draw for both, `draws` times (percentile interval)."""
    if len(model) != len(other) or not np.allclose(model["actual"], other["actual"], equal_nan=True):
        raise SystemExit("paired bootstrap: the two backtests do not hold the same forecasts in the same order")
    (model_sum, count), (other_sum, _) = unit_errors(model), unit_errors(other)
    return bootstrap_sums(model_sum, other_sum, count, draws, seed)


def bootstrap_sums(model_sum: np.ndarray, other_sum: np.ndarray, count: np.ndarray, draws: int = 2000,
                   seed: int = 0) -> dict:
    """paired_bootstrap over each forecast's summed scaled errors (unit_errors) of two models, and their counts."""
    picks = np.random.default_rng(seed).integers(0, len(count), size=(draws, len(count)))
    counts = count[picks].sum(1)
    differences = model_sum[picks].sum(1) / counts - other_sum[picks].sum(1) / counts
    low, high = np.percentile(differences, [5, 95])
    return {"difference": float(model_sum.sum() / count.sum() - other_sum.sum() / count.sum()),
            "low": float(low), "high": float(high), "forecasts": len(count)}


def best_classical(protocol: str, results: dict[str, dict]) -> tuple[str, pd.DataFrame] | None:
    """The classical model with the lowest test MASE (seasonal naive from the default row's backtest, and the
    statsforecast rows), and its test forecasts: the hardest comparison on that block."""
    first = first_row(protocol, results)
    default = forecasts_path(first, "test") if first else None
    candidates = {}
    if default is not None and default.exists():
        frame = pd.read_parquet(default)
        candidates["seasonal naive"] = frame.assign(forecast=frame["seasonal_naive"])
    for name in PROTOCOLS[protocol].classical:
        path = forecasts_path(f"{protocol}/classical {name}", "test")
        if path.exists():
            candidates[CLASSICAL_NAMES[name]] = pd.read_parquet(path)
    if not candidates:
        return None
    mase = {name: mase_of(frame) for name, frame in candidates.items()}
    name = min(mase, key=mase.get)
    return name, candidates[name]


def first_row(protocol: str, results: dict[str, dict]) -> str | None:
    """The key of the protocol's first row (in ROWS) with a result: its backtest holds seasonal naive's."""
    return next((r.key for r in ROWS if r.protocol == protocol and r.key in results and not r.members), None)


def bootstrap_cell(row: Row, against: tuple[str, pd.DataFrame] | None) -> str:
    path = forecasts_path(row.key, "test")
    if against is None or not path.exists():
        return "-"
    result = paired_bootstrap(pd.read_parquet(path), against[1])
    return f"{result['difference']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}]"


def render_protocol(protocol: str, results: dict[str, dict]) -> str:
    """One protocol's section: its rows that have results, beside seasonal naive and the classical models,
    each with a paired bootstrap against the best classical model on the test block."""
    spec = PROTOCOLS[protocol]
    gap, long = spec.gap_validation, bool(spec.long_origins)
    against = best_classical(protocol, results)
    about = (f"Machine: {machine()}. MASE scales each block by the series' in-sample seasonal-naive error over "
             "its history before the block; sMAPE in percent (0-200). `val MASE` is what choices are made on; the "
             "test block is read once per row.")
    if long:
        about += " `val MASE` here is the trained model's own validation block (December 2013)."
    lines = [f"## {protocol} (bench/accuracy.py, {datetime.date.today().isoformat()})", "",
             spec.description + ".", "", about, ""]
    if gap:
        lines += [("`val MASE, gap`: the validation block forecast as the test block is, by the row's model "
                   "trained on the file without its test block. Choices here are made on it."), ""]
    if against is not None:
        lines += [(f"`vs {against[0]}`: the row's test MASE minus that of {against[0]}, the best classical model "
                   "on this test block, and the 90% interval of a paired bootstrap over its forecasts (each a "
                   "series at an origin; 2000 draws): an interval that holds 0 is no win. Forecasts from "
                   "consecutive origins are not independent, so the interval is, if anything, too narrow."), ""]
    versus = f"vs {against[0]}" if against else "vs best classical"
    lines += ["| model | val MASE | " + ("val MASE, gap | " if gap else "") + f"test MASE | test sMAPE | {versus} "
              "| budget | command |", "|---|---|" + ("---|" if gap else "") + "---|---|---|---|---|"]
    dash = "- | " if gap else ""
    baselines = results.get(f"{protocol}/classical")
    first = first_row(protocol, results)
    default = first and results[first]
    if default:
        val = default.get("val_seasonal_naive", {}).get("mase") if not long else None
        lines.append(f"| seasonal naive | {'-' if val is None else f'{val:.3f}'} | {dash}"
                     f"{default['seasonal_naive']['mase']:.3f} | {default['seasonal_naive']['smape']:.2f} | - | - "
                     f"| (every row's backtest) |")
    if baselines:
        for name in spec.classical:
            val, test = baselines["val"].get(name), baselines["test"][name]
            history = baselines["history"][name]
            fitted_on = "whole history" if history is None else f"last {history} steps (chosen on val)"
            val_cell = "-" if val is None else f"{val['mase']:.3f}"
            lines.append(f"| {CLASSICAL_NAMES[name]} (statsforecast) | {val_cell} "
                         f"| {dash}{test['mase']:.3f} | {test['smape']:.2f} | - | "
                         f"{fitted_on}; {test['fit_seconds']:.0f} s for all test origins | "
                         f"`.venv-bench/bin/python bench/accuracy.py --rows {protocol}/classical` |")
    for row in (r for r in ROWS if r.protocol == protocol):
        result = results.get(row.key)
        if result is None:
            continue
        gap_cell = f"{result['val_gap']['mase']:.3f} | " if gap and "val_gap" in result else dash
        lines.append(f"| {row.name} | {result['val']['mase']:.3f} | {gap_cell}{result['test']['mase']:.3f} | "
                     f"{result['test']['smape']:.2f} | {bootstrap_cell(row, against)} | {result['fit_steps']} "
                     f"steps, {result['fit_seconds']:.0f} s fit ({result['wall_seconds']:.0f} s wall"
                     + (f", {result['cpu_seconds'] / 60:.1f} CPU min" if "cpu_seconds" in result else "") + ") | "
                     f"`{row.command}` |")
    return "\n".join(lines)


def write_table(results: dict[str, dict]) -> None:
    """Each protocol with results replaces its own marked section of ACCURACY.md (appended the first time); the
    rest of the file (older sections, notes written by hand) is left as it is."""
    text = TABLE.read_text() if TABLE.exists() else "# Accuracy benchmark\n"
    for protocol in PROTOCOLS:
        if not any(key.startswith(f"{protocol}/") for key in results):
            continue
        begin, end = f"<!-- bench/accuracy.py: {protocol} -->", f"<!-- end bench/accuracy.py: {protocol} -->"
        block = f"{begin}\n{render_protocol(protocol, results)}\n{end}"
        if begin in text:
            text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    TABLE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=[""],
                        help="run these rows (a whole key, protocol/name) or the rows whose key starts with any of "
                             "these; default all")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite ACCURACY.md's generated sections from stored results")
    args = parser.parse_args()
    if not args.render:
        # Classical rows first, except a long backtest's: it reads its default row's origins.
        keys = ([f"{p}/classical" for p, spec in PROTOCOLS.items() if spec.classical and not spec.long_origins]
                + [r.key for r in ROWS] + [f"{p}/classical" for p, spec in PROTOCOLS.items() if spec.long_origins])
        # A whole key runs that row only; anything else is a prefix.
        chosen = [k for k in keys if k in args.rows
                  or any(k.startswith(prefix) and prefix not in keys for prefix in args.rows)]
        if not chosen:
            raise SystemExit(f"no row matches {args.rows}; rows: {keys}")
        for key in chosen:
            protocol, name = key.split("/", 1)
            row = next((r for r in ROWS if r.key == key), None)
            if name == "classical":
                result = classical(protocol)
            elif row.members:
                result = ensemble(row, stored())
            elif PROTOCOLS[protocol].long_origins:
                with tempfile.TemporaryDirectory() as workdir:
                    result = run_long_row(row, Path(workdir))
            else:
                with tempfile.TemporaryDirectory() as workdir:
                    result = run_row(row, Path(workdir))
            store(key, result)
            print(key, json.dumps(result), flush=True)
    write_table(stored())
    print(f"wrote {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
