"""Threads on a shared machine: training steps of the default recipe in float32 with torch's default threads, one
thread, and the pipeline's choice (`threads`), on an idle machine and beside a competing training on the same cores.

    .venv/bin/python bench/threads.py
    .venv/bin/python bench/threads.py --steps 10 --cases default one

Each measurement is a fresh process (OpenMP's waiting is fixed when torch loads) that builds the default network as
the training stage does (three LSTMs reading segments of 4, float32) and times optimizer steps on batches of the
default size: the median of --steps steps after two of warm-up. The `pipeline` case is the stage's default
(`threads` null): the cores free at the start, chosen again every 25 steps as its AdaptThreads callback does. The
competing load is a second such process, started first and running steps for as long as the measurement lasts,
with torch's defaults (a neighbour that knows nothing of ours) or with the same setting (two of our jobs at once).
`passive` is torch's default threads with OpenMP told to sleep rather than spin while it waits
(OMP_WAIT_POLICY=PASSIVE). Results: a Markdown table, and outputs/bench/threads.json with the machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from record import ROOT, machine

# name -> (environment, `threads` setting passed to pipeline.host.set_threads, or None for torch's default)
CASES = {
    "default": ({}, None),
    "one": ({}, 1),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "pipeline": ({}, "auto"),
}


def worker(threads: str | None, steps: int) -> None:
    """Time `steps` training steps (after two of warm-up); print the median in ms as JSON."""
    import torch
    from hydra import compose, initialize_config_dir

    from dataclasses import replace

    from pipeline.config import CONF_DIR, plain, to_config
    from pipeline.data.defaults import recipe_for
    from pipeline.data.windows import Batch
    from pipeline.host import set_threads
    from pipeline.model.hparams import network_args
    from pipeline.model.training_module import TrainingModule

    adapt = threads == "auto"
    if threads is not None:
        set_threads(int(threads) if threads.isdigit() else None)
    torch.set_flush_denormal(True)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose("config"))
    recipe = recipe_for("30min", [48, 336])  # the default data's lengths (pipeline/data/defaults.py)
    cfg.window = replace(cfg.window, lookback=recipe.lookback, horizon=recipe.horizon)
    module = TrainingModule(network=network_args(cfg.model, cfg.window, n_features=7, n_future=6, n_series=1,
                                                 season=48), optim=plain(cfg.optim))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    size, lookback, horizon = cfg.window.batch_size * cfg.model.ensemble, cfg.window.lookback, cfg.window.horizon
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 2):
        if adapt and step and step % 25 == 0:  # as pipeline.training.callbacks.AdaptThreads does
            set_threads(None)
        batch = Batch(torch.randn(size, lookback, 7, generator=generator), torch.randn(size, horizon, 6,
                      generator=generator), torch.randn(size, horizon, generator=generator),
                      torch.zeros(size, dtype=torch.long), None, None)
        started = time.perf_counter()
        module.ensemble_loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
        print(json.dumps({"step": len(times)}), flush=True)
    print(json.dumps({"ms": 1000 * statistics.median(times[2:]), "threads": torch.get_num_threads(),
                      "seconds": sum(times[2:])}), flush=True)


def start(case: str, steps: int) -> subprocess.Popen:
    env, threads = CASES[case]
    argv = [sys.executable, __file__, "--worker", "--steps", str(steps)] + (["--threads", str(threads)]
                                                                            if threads is not None else [])
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                              "OMP_WAIT_POLICY")}
    return subprocess.Popen(argv, cwd=ROOT, env=clean | env, stdout=subprocess.PIPE, text=True)


def measure(case: str, steps: int, neighbour: str | None) -> dict:
    """One case's median step, alone or beside a running `neighbour` case."""
    other = None
    if neighbour is not None:
        other = start(neighbour, 100_000)
        for _ in range(3):  # past its imports and warm-up: it competes from the first measured step
            other.stdout.readline()
    try:
        measured = start(case, steps)
        lines = measured.stdout.read().splitlines()
        measured.wait()
    finally:
        if other is not None:
            other.kill()
            other.wait()
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    if args.worker:
        return worker(args.threads, args.steps)
    rows = {}
    for case in args.cases:
        rows[case] = {load: measure(case, args.steps, neighbour) for load, neighbour in
                      (("idle", None), ("beside a default training", "default"), ("beside the same", case))}
        print(case, {load: round(r["ms"]) for load, r in rows[case].items()}, flush=True)
    out = ROOT / "outputs" / "bench" / "threads.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "steps": args.steps, "rows": rows}, indent=1))
    loads = list(next(iter(rows.values())))
    print("\n| setting | threads | " + " | ".join(f"{load} (ms/step)" for load in loads) + " |")
    print("|---" * (len(loads) + 2) + "|")
    for case, by_load in rows.items():
        print(f"| {case} | {by_load['idle']['threads']} | " + " | ".join(
            f"{by_load[load]['ms']:.0f} ({by_load[load]['ms'] / by_load['idle']['ms']:.1f}x)" for load in loads) + " |")


if __name__ == "__main__":
    main()
