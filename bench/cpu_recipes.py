"""Recipes on a CPU without native bfloat16: the default recipe's float32 fit time and validation MASE against
cheaper float32 recipes, on the five validation blocks the default was chosen on.

    .venv/bin/python bench/cpu_recipes.py                          # every recipe below, every block
    .venv/bin/python bench/cpu_recipes.py --recipes batch-256 batch-96 --blocks vic_elec --precision bf16-mixed
    .venv/bin/python bench/cpu_recipes.py --timing 2 --recipes batch-256 batch-96    # fit times, alternating

A CPU without AVX-512 BF16/AMX trains in float32 (trainer.precision=auto resolves to 32-true there). Each row is
`python -m pipeline.train <recipe> [seed=S] [data.path=<fold>] trainer.precision=32-true` (or --precision),
run alone, one after another; its figures are the stage's own summary: `fit_seconds` (the Trainer's fit: steps,
validations, checkpoints) and the validation block's MASE. The blocks are those that chose the default
(bench/ACCURACY.md, "Choosing the default"): vic_elec's own validation block at seeds 0, 1 and 2, and the validation
blocks of the two earlier folds (the file without its last 28 or 56 days) at seed 0. Nothing reads a test block to
choose.

With --timing N the recipes instead alternate N times on vic_elec's block at seed 0 (A B A B ...), so that drift
of the machine's speed falls on both alike; their fit times are kept apart from the accuracy rows.

Results: a Markdown table printed, and outputs/bench/cpu_recipes.json with the machine (CPU model and flags).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from record import ROOT, machine

# The default experiment's recipe (three LSTMs reading segments of 4) with batches of 256 per member, the default
# until 2026-12-03, and cheaper recipes, each stated in full as a diff of the default experiment; batch-96 is the
# default since.
RECIPES = {
    "batch-256": ["window.batch_size=256"],
    "hidden-32": ["window.batch_size=256", "model.hidden_size=32"],
    "batch-128": ["window.batch_size=128"],
    "batch-96": ["window.batch_size=96"],
    "segments-8": ["window.batch_size=256", "model.segment_len=8"],
    "one-layer": ["window.batch_size=256", "model.num_layers=1"],
}
# Block name -> (seed, how many 28-day blocks are cut off the end of the file).
BLOCKS = {"vic_elec": (0, 0), "vic_elec seed 1": (1, 0), "vic_elec seed 2": (2, 0),
          "fold 1": (0, 1), "fold 2": (0, 2)}
BLOCK_ROWS = 1344  # split.val_steps = split.test_steps: 28 days of half-hours


def fold_file(folder: Path, cut: int) -> Path:
    """The shipped file without its last `cut` blocks (one series: the last rows)."""
    path = folder / f"vic_elec_without_{cut}_blocks.parquet"
    if not path.exists():
        frame = pd.read_parquet(ROOT / "data" / "vic_elec.parquet")
        frame.iloc[: len(frame) - cut * BLOCK_ROWS].to_parquet(path, index=False)
    return path


def run(recipe: list[str], seed: int, data: Path | None, folder: Path, extra: list[str]) -> dict:
    store = tempfile.mkdtemp(dir=folder)
    argv = [sys.executable, "-m", "pipeline.train", *recipe, f"seed={seed}",
            f"tracking.uri=sqlite:///{store}/mlflow.db", f"hydra.run.dir={store}/run", "tracking.log_model=false",
            *([f"data.path={data}"] if data else []), *extra]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"fit_seconds": summary["fit_seconds"], "val_mase": summary["val"]["mase"],
            "test_mase": summary["test"]["mase"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=list(BLOCKS))
    parser.add_argument("--precision", default="32-true", help="trainer.precision of every row")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every row")
    parser.add_argument("--timing", type=int, default=0, help="alternate the recipes this many times, timing only")
    parser.add_argument("--label", default="", help="added to the timing rows' names (e.g. the environment)")
    args = parser.parse_args()
    args.extra = [f"trainer.precision={args.precision}", *args.extra]
    tag = "" if args.precision == "32-true" else f" ({args.precision})"
    out = ROOT / "outputs" / "bench" / "cpu_recipes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text())["rows"] if out.exists() else {}
    if args.timing:
        return time_alternately(args, out, tag)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name in args.recipes:
            for block in args.blocks:
                seed, cut = BLOCKS[block]
                row = run(RECIPES[name], seed, fold_file(folder, cut) if cut else None, folder, args.extra)
                results[f"{name}{tag} | {block}"] = row | {"command": " ".join(
                    ["python -m pipeline.train", *RECIPES[name], f"seed={seed}", *args.extra]
                    + ([f"data.path=<vic_elec without its last {cut} x 1344 rows>"] if cut else []))}
                print(f"{name:12} {block:16} fit {row['fit_seconds']:7.1f} s  val MASE {row['val_mase']:.4f}",
                      flush=True)
                out.write_text(json.dumps({"machine": machine(), "rows": results}, indent=1))
    print("\n| recipe | " + " | ".join(BLOCKS) + " | mean val MASE | mean fit |")
    print("|---" * (len(BLOCKS) + 3) + "|")
    for name in sorted({key.split(" | ")[0] for key in results}):
        rows = [results.get(f"{name} | {block}") for block in BLOCKS]
        if not any(rows):
            continue
        cells = [f"{r['val_mase']:.4f} ({r['fit_seconds']:.0f} s)" if r else "" for r in rows]
        done = [r for r in rows if r]
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.mean(r['val_mase'] for r in done):.4f} | "
              f"{statistics.mean(r['fit_seconds'] for r in done):.0f} s |")


def time_alternately(args: argparse.Namespace, out: Path, tag: str) -> None:
    """Each recipe's fit seconds, the recipes taking turns --timing times, on vic_elec's block at seed 0."""
    stored = json.loads(out.read_text()) if out.exists() else {"rows": {}}
    timing = stored.setdefault("timing", {})
    with tempfile.TemporaryDirectory() as scratch:
        for turn in range(args.timing):
            for name in args.recipes:
                row = run(RECIPES[name], 0, None, Path(scratch), args.extra)
                key = " ".join(filter(None, [f"{name}{tag}", *args.extra[1:], args.label]))
                timing.setdefault(key, []).append(row["fit_seconds"])
                print(f"turn {turn}: {key:30} fit {row['fit_seconds']:6.1f} s", flush=True)
                out.write_text(json.dumps(stored | {"machine": machine()}, indent=1))


if __name__ == "__main__":
    main()
