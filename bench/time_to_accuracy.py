"""Time to accuracy: wall time until the validation MASE first reaches a target, for a minimal PyTorch loop and
for the training stage, on the default data, in one run on the same machine.

    python bench/time_to_accuracy.py                       # raw float32, raw bf16, the default, each lever
    python bench/time_to_accuracy.py --cases raw-fp32 default

The target is the raw float32 loop's best validation MASE over its run (600 steps of one LSTM reading the lookback a
step at a time: the default until 2026-11-28, the `per-step` case below). Every case is probed every 50 optimizer steps: the
validation block's MASE (the training stage's definition, every origin of the block) and the test block's, of the
network as it is at that step; the probes' own time is not counted. A case's time is the wall time of its training
loop from its first step: for the stage, everything its Trainer does (data fetch, steps, its own validations,
checkpoints, logging), not the data loading and model logging around it.

- raw-fp32, raw-bf16: bench/train_speed.py's RawLoop (the same network, AdamW, cosine schedule, clipping, loss;
  batches gathered from the values tensor in one indexing step), float32 or bf16 autocast.
- default: `pipeline.train.train` with the default config (private MLflow store): since 2026-11-28 the default
  experiment's three members reading segments of 4 for 600 steps (conf/experiment/default.yaml; the
  `segments-4-ensemble-3` lever states the same recipe). The third run of this script ran it at 300 steps.
- each lever: its overrides (LEVERS below, each stating its whole recipe), e.g. `per-step`, the previous default.

Each case runs in a fresh process, one after another. Results: printed (a Markdown table), written to
outputs/bench/time_to_accuracy.json and logged as a run of the `benchmarks` experiment.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from record import PER_STEP, ROOT, machine, record
from train_speed import RawLoop

from pipeline.config import TrackingConfig, to_config, trainer_kwargs
from pipeline.data.sources import load_windows
from pipeline.evaluation.backtest import backtest
from pipeline.evaluation.metrics import backtest_metrics
from pipeline.train import build_module, train, usable_seasons

PROBE_EVERY = 50
# The raw loops and the levers below state their whole recipe against the schema (record.PER_STEP: the default
# until 2026-11-28), so each means the same whatever the default experiment sets.
RAW = {"raw-fp32": PER_STEP, "raw-bf16": PER_STEP}
LEVERS = {
    "per-step": PER_STEP,
    "segments-12": [*PER_STEP, "model.segment_len=12"],  # 28 recurrent steps over the lookback instead of 336
    "segments-24": [*PER_STEP, "model.segment_len=24"],  # 14
    "segments-12-steps-1200": [*PER_STEP, "model.segment_len=12", "trainer.max_steps=1200"],
    "validate-every-300": [*PER_STEP, "trainer.val_check_interval=300"],
    # Three members, each on its own batches (model.ensemble): steadier across seeds than one segment model.
    "segments-4-ensemble-3": [*PER_STEP, "model.segment_len=4", "model.ensemble=3"],
    "segments-12-ensemble-3": [*PER_STEP, "model.segment_len=12", "model.ensemble=3"],
    # The same members on a shorter schedule (the cosine decay ends at max_steps).
    "segments-4-ensemble-3-steps-300": [*PER_STEP, "model.segment_len=4", "model.ensemble=3",
                                        "trainer.max_steps=300"],
    "segments-4-ensemble-3-steps-200": [*PER_STEP, "model.segment_len=4", "model.ensemble=3",
                                        "trainer.max_steps=200"],
    "segments-6-ensemble-3-steps-300": [*PER_STEP, "model.segment_len=6", "model.ensemble=3",
                                        "trainer.max_steps=300"],
}


class Timeline:
    """Probes of a training as it runs: (step, seconds of training so far, val MASE, test MASE)."""

    def __init__(self, windows, seasons: list[int]):
        self.windows, self.seasons, self.points = windows, seasons, []
        self.started = self.excluded = 0.0

    def start(self) -> None:
        self.started, self.excluded = time.perf_counter(), 0.0

    def probe(self, step: int, network: torch.nn.Module) -> None:
        now = time.perf_counter()
        seconds = now - self.started - self.excluded
        mase = {block: backtest_metrics(backtest(network, self.windows, self.seasons, block))["model"]["mase"]
                for block in ("val", "test")}
        self.points.append({"step": step, "seconds": round(seconds, 2), "val_mase": mase["val"],
                            "test_mase": mase["test"]})
        print(f"  step {step}: {seconds:.1f} s, val MASE {mase['val']:.4f}", file=sys.stderr, flush=True)
        self.excluded += time.perf_counter() - now


class Probe(L.Callback):
    def __init__(self, timeline: Timeline):
        self.timeline = timeline

    def on_train_start(self, trainer, pl_module) -> None:
        self.timeline.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % PROBE_EVERY == 0:
            self.timeline.probe(trainer.global_step, pl_module.network)


def composed_config(overrides: list[str], scratch: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"tracking.uri=sqlite:///{scratch}/mlflow.db",
                                            "tracking.experiment=time_to_accuracy", "tracking.log_model=false"])


def run_case(case: str, extra: list[str]) -> dict:
    """One case in this process: its probes."""
    torch.set_flush_denormal(True)
    overrides = [*(RAW | LEVERS).get(case, []), *extra]
    with tempfile.TemporaryDirectory() as scratch:
        composed = composed_config(overrides, scratch)
        cfg = to_config(composed)
        series, windows, cfg.window, cfg.split = load_windows(cfg.data, cfg.window, cfg.split, Path(scratch))
        seasons = usable_seasons(series.seasons, cfg.data.season, cfg.window.lookback)
        timeline = Timeline(windows, seasons)
        if case.startswith("raw-"):
            args = trainer_kwargs(composed)
            L.seed_everything(cfg.seed)
            module = build_module(cfg, windows, cfg.model.skip_season or min(seasons))
            raw = RawLoop(module, windows.train, cfg.window.batch_size, args["max_steps"],
                          args["gradient_clip_val"], bf16=case == "raw-bf16", seed=cfg.seed)
            timeline.start()
            for step in range(1, args["max_steps"] + 1):
                raw.step()
                if step % PROBE_EVERY == 0:
                    timeline.probe(step, raw.network)
        else:
            summary = train(composed, Path(scratch) / "run", extra_callbacks=[Probe(timeline)])
            print(f"  the stage's own result: val MASE {summary['val']['mase']:.4f}, test MASE "
                  f"{summary['test']['mase']:.4f}, fit {summary['fit_seconds']} s", file=sys.stderr)
    return {"case": case, "overrides": overrides, "points": timeline.points}


def reached(points: list[dict], target: float) -> dict | None:
    return next((p for p in points if p["val_mase"] <= target), None)


def summarise(results: list[dict]) -> tuple[float, list[dict]]:
    """The target (raw float32's best validation MASE) and each case's time to it."""
    raw = next(r for r in results if r["case"] == "raw-fp32")
    target = min(p["val_mase"] for p in raw["points"])
    baseline = reached(raw["points"], target)["seconds"]
    rows = []
    for r in results:
        best = min(r["points"], key=lambda p: p["val_mase"])
        hit = reached(r["points"], target)
        rows.append({"case": r["case"], "overrides": " ".join(r["overrides"]) or "-",
                     "best_val_mase": round(best["val_mase"], 4), "best_at_step": best["step"],
                     "test_mase_at_best": round(best["test_mase"], 4),
                     "seconds_to_target": hit and hit["seconds"], "step_at_target": hit and hit["step"],
                     "test_mase_at_target": hit and round(hit["test_mase"], 4),
                     "speedup": hit and round(baseline / hit["seconds"], 2),
                     "seconds_run": r["points"][-1]["seconds"], "steps_run": r["points"][-1]["step"]})
    return target, rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join("not reached" if r[k] is None else str(r[k]) for k in keys) + " |"
                              for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["raw-fp32", "raw-bf16", "default", *LEVERS])
    parser.add_argument("--override", nargs="*", default=[], help="more overrides for every case (a quick check)")
    parser.add_argument("--tracking-uri", default=TrackingConfig.uri, help="where the `benchmarks` run goes")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_case(args.worker, args.override)))
        return
    if "raw-fp32" not in args.cases:
        parser.error("the target is raw-fp32's best validation MASE: include it in --cases")
    about = machine()
    print(f"{about['cpu']}, {about['threads']} threads, torch {about['torch']}, {about['date']}", file=sys.stderr)
    results = []
    for case in args.cases:
        print(f"{case}:", file=sys.stderr, flush=True)
        worker = subprocess.run([sys.executable, __file__, "--worker", case, "--override", *args.override],
                                check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        results.append(json.loads(worker.stdout.strip().splitlines()[-1]))
    target, rows = summarise(results)
    print(f"\ntarget: validation MASE {target:.4f} (raw float32's best)\n{table(rows)}", file=sys.stderr)
    metrics = {f"{r['case']}_seconds_to_target".replace("-", "_"): r["seconds_to_target"] for r in rows
               if r["seconds_to_target"] is not None} | {"target_val_mase": target}
    path, run_id = record("time_to_accuracy", {"target": target, "rows": rows, "results": results}, metrics,
                          args.tracking_uri)
    print(json.dumps({"results": str(path), "mlflow_run_id": run_id, "tracking_uri": args.tracking_uri}))


if __name__ == "__main__":
    main()
