"""Training speed: the pipeline's optimizer step against a minimal PyTorch loop, per cell, on the default data.

    python bench/train_speed.py                               # rnn, lstm, gru at the default size
    python bench/train_speed.py --precision 32-true bf16-mixed   # each cell in both (default: the config's)
    python bench/train_speed.py --cells lstm --steps 20 --override trainer.val_check_interval=31

Each cell runs in a fresh process (so peak RSS is its own): the training stage itself (`pipeline.train.train`,
the default config plus model=CELL: Lightning loop, our data path, MLflow logging into a private sqlite store)
with one extra callback. After each of the stage's optimizer steps that callback runs one step of a minimal
loop - a copy of the same network with its own AdamW, cosine schedule, gradient clipping and loss, fed windows
gathered from the same values tensor in one indexing step - so the two alternate step by step and machine
drift cancels. A pipeline step is timed from the end of one raw step to the end of the next pipeline step: it
holds the data fetch, forward, backward, clipping, optimizer, logging and every callback. The data wait is
Lightning's own profile of the training loader's `next()`. Medians are over the measured steps (after warm-up),
so the steps that also validate (every trainer.val_check_interval) do not count.

Results: printed, written to outputs/bench/train_speed.json, and logged as a run of the `benchmarks` experiment
(bench/record.py; --tracking-uri, default the local store).
"""

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from record import ROOT, machine, record

from pipeline.config import TrackingConfig, to_config, trainer_kwargs
from pipeline.data.windows import WindowDataset
from pipeline.model.training_module import LOSSES, TrainingModule
from pipeline.train import train
from pipeline.training.precision import resolve_precision

FETCH = "[_TrainingEpochLoop].train_dataloader_next"


class RawLoop:
    """The minimal loop: the same network, optimizer, schedule, clipping and loss; each batch is gathered from
    the values tensor in one indexing step. Nothing else: no logging, no callbacks, no checks."""

    def __init__(self, module: TrainingModule, dataset: WindowDataset, batch_size: int, max_steps: int,
                 clip: float, bf16: bool, seed: int):
        self.network = copy.deepcopy(module.network).train()
        device = module.device
        self.values = dataset.values.to(device)
        self.starts = dataset.starts.to(device)
        self.offsets = torch.arange(len(dataset.steps), device=device)
        self.future_columns = dataset.future_columns.to(device)
        self.lookback, self.batch_size, self.clip, self.bf16 = dataset.lookback, batch_size, clip, bf16
        optim = module.hparams.optim
        self.loss = LOSSES[optim["loss"]]
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=optim["lr"],
                                           weight_decay=optim["weight_decay"])
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max_steps)
        self.order = torch.randperm(len(self.starts), generator=torch.Generator().manual_seed(seed)).to(device)
        self.position = 0

    def step(self) -> None:
        if self.position + self.batch_size > len(self.order):
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        # (B,) start rows -> (B, L + H, F)
        window = self.values[self.starts[index].unsqueeze(1) + self.offsets]
        x, y = window[:, :self.lookback], window[:, self.lookback:, 0]
        future = window[:, self.lookback:].index_select(2, self.future_columns)
        with torch.autocast(self.values.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss(self.network(x, future, target=y), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.clip)
        self.optimizer.step()
        self.schedule.step()


class Interleave(L.Callback):
    """After every pipeline step, one raw step; times both (milliseconds)."""

    def __init__(self, max_steps: int, batch_size: int, clip: float, bf16: bool, seed: int):
        self.settings = dict(batch_size=batch_size, max_steps=max_steps, clip=clip, bf16=bf16, seed=seed)
        self.pipeline_ms: list[float] = []
        self.raw_ms: list[float] = []
        self.resumed: float | None = None
        self.raw: RawLoop | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: TrainingModule) -> None:
        self.raw = RawLoop(pl_module, trainer.train_dataloader.dataset, **self.settings)
        self.profiler = trainer.profiler  # ++trainer.profiler=simple: its data-fetch timings

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        cuda = pl_module.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.resumed is not None:
            self.pipeline_ms.append(1000 * (now - self.resumed))
        self.raw.step()
        if cuda:
            torch.cuda.synchronize()
        self.resumed = time.perf_counter()
        self.raw_ms.append(1000 * (self.resumed - now))


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def measure_cell(cell: str, steps: int, warmup: int, precision: str | None, extra: list[str]) -> dict:
    """One cell in this process: the training stage with the interleaving callback."""
    with tempfile.TemporaryDirectory() as scratch:
        # One network reading step by step (no default experiment): the raw loop copies one network, and these
        # tables measure the step of one.
        overrides = ["~experiment", f"model={cell}", f"trainer.max_steps={warmup + steps + 1}",
                     *([f"trainer.precision={precision}"] if precision else []),
                     f"tracking.uri=sqlite:///{scratch}/mlflow.db", "tracking.experiment=train_speed",
                     "tracking.log_model=false", "++trainer.profiler=simple", *extra]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            composed = compose("config", overrides=overrides)
        cfg = to_config(composed)
        args = trainer_kwargs(composed)
        # What the stage will train in (trainer.precision=auto resolved), so the raw loop matches it.
        precision = resolve_precision(args, cfg.model.cell.value)
        clock = Interleave(args["max_steps"], cfg.window.batch_size, args["gradient_clip_val"],
                           precision == "bf16-mixed", cfg.seed)
        summary = train(composed, Path(scratch) / "run", extra_callbacks=[clock])
    profiler = clock.profiler
    # The first `warmup` steps of each kind are skipped; pipeline step k is timed after raw step k - 1.
    pipeline, raw = clock.pipeline_ms[warmup:], clock.raw_ms[warmup + 1:]
    fetches = [1000 * d for d in profiler.recorded_durations[FETCH][warmup + 1:]]
    step_ms, raw_ms, fetch_ms = (statistics.median(v) for v in (pipeline, raw, fetches))
    return {"cell": cell, "precision": precision, "steps": len(pipeline), "pipeline_ms": round(step_ms, 2),
            "raw_ms": round(raw_ms, 2), "ratio": round(step_ms / raw_ms, 3), "data_wait_ms": round(fetch_ms, 3),
            "data_wait_share": round(fetch_ms / step_ms, 4), "peak_rss_mb": round(peak_rss_mb()),
            "val_loss": summary["val_loss"], "test_mase": summary["test"]["mase"]}


def run_cells(cells: list[str], precisions: list[str | None], argv: list[str]) -> list[dict]:
    """Each cell and precision in a fresh process, one after the other."""
    results = []
    for precision in precisions:
        for cell in cells:
            chosen = ["--precision", precision] if precision else []
            worker = subprocess.run([sys.executable, __file__, "--worker", cell, *chosen, *argv], check=True,
                                    stdout=subprocess.PIPE, text=True)
            results.append(json.loads(worker.stdout.strip().splitlines()[-1]))
            print(format_row(results[-1]), file=sys.stderr, flush=True)
    return results


HEADER = ("| cell | precision | pipeline ms/step | raw ms/step | ratio | data wait | peak RSS | steps |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")


def format_row(r: dict) -> str:
    return (f"| {r['cell']} | {r['precision']} | {r['pipeline_ms']:.1f} | {r['raw_ms']:.1f} | {r['ratio']:.3f} | "
            f"{100 * r['data_wait_share']:.2f}% | {r['peak_rss_mb']} MB | {r['steps']} |")


def metrics_of(results: list[dict]) -> dict[str, float]:
    return {f"{r['cell']}_{r['precision']}_{k}".replace("-", "_"): r[k] for r in results
            for k in ("pipeline_ms", "raw_ms", "ratio", "data_wait_share", "peak_rss_mb")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--steps", type=int, default=100, help="measured steps per cell")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--precision", nargs="*", default=[None],
                        help="trainer.precision values to run (default: the config's, auto), e.g. 32-true bf16-mixed")
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides, e.g. trainer=cpu")
    parser.add_argument("--tracking-uri", default=TrackingConfig.uri)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_flush_denormal(True)
        print(json.dumps(measure_cell(args.worker, args.steps, args.warmup, args.precision[0], args.override)))
        return
    argv = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--override", *args.override]
    about = machine()
    print(f"{about['cpu']}, {about['threads']} threads, GPU {about['gpu']}, torch {about['torch']}, "
          f"lightning {about['lightning']}, {about['date']}", file=sys.stderr)
    print(HEADER, file=sys.stderr)
    results = run_cells(args.cells, args.precision, argv)
    path, run_id = record("train_speed", {"results": results}, metrics_of(results), args.tracking_uri)
    print(json.dumps({"results": str(path), "mlflow_run_id": run_id, "tracking_uri": args.tracking_uri}))


if __name__ == "__main__":
    main()
