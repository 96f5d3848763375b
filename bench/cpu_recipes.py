"""Recipes on a CPU without native bfloat16: the default recipe's float32 fit time and validation MASE against
cheaper float32 recipes, on the five validation blocks the default was chosen on.

    .venv/bin/python bench/cpu_recipes.py                          # every recipe below, every block
    .venv/bin/python bench/cpu_recipes.py --recipes default hidden-32 --blocks vic_elec

A CPU without AVX-512 BF16/AMX trains in float32 (trainer.precision=auto resolves to 32-true there). Each row is
`python -m pipeline.train trainer.precision=32-true <recipe> [seed=S] [data.path=<fold>]`, run alone, one after
another; its figures are the stage's own summary: `fit_seconds` (the Trainer's fit: steps, validations,
checkpoints) and the validation block's MASE. The blocks are those that chose the default (bench/ACCURACY.md,
"Choosing the default"): vic_elec's own validation block at seeds 0, 1 and 2, and the validation blocks of the two
earlier folds (the file without its last 28 or 56 days) at seed 0. Nothing reads a test block to choose.

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

FLOAT32 = ["trainer.precision=32-true"]
# The default experiment's recipe (three LSTMs reading segments of 4) and cheaper ones, each a diff of it.
RECIPES = {
    "default": [],
    "hidden-32": ["model.hidden_size=32"],
    "batch-128": ["window.batch_size=128"],
    "segments-8": ["model.segment_len=8"],
    "one-layer": ["model.num_layers=1"],
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
    argv = [sys.executable, "-m", "pipeline.train", *FLOAT32, *recipe, f"seed={seed}",
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
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every row")
    args = parser.parse_args()
    out = ROOT / "outputs" / "bench" / "cpu_recipes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text())["rows"] if out.exists() else {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name in args.recipes:
            for block in args.blocks:
                seed, cut = BLOCKS[block]
                row = run(RECIPES[name], seed, fold_file(folder, cut) if cut else None, folder, args.extra)
                results[f"{name} | {block}"] = row | {"command": " ".join(
                    ["python -m pipeline.train", *FLOAT32, *RECIPES[name], f"seed={seed}", *args.extra]
                    + ([f"data.path=<vic_elec without its last {cut} x 1344 rows>"] if cut else []))}
                print(f"{name:12} {block:16} fit {row['fit_seconds']:7.1f} s  val MASE {row['val_mase']:.4f}",
                      flush=True)
                out.write_text(json.dumps({"machine": machine(), "rows": results}, indent=1))
    print("\n| recipe | " + " | ".join(BLOCKS) + " | mean val MASE | mean fit |")
    print("|---" * (len(BLOCKS) + 3) + "|")
    for name in RECIPES:
        rows = [results.get(f"{name} | {block}") for block in BLOCKS]
        if not any(rows):
            continue
        cells = [f"{r['val_mase']:.4f} ({r['fit_seconds']:.0f} s)" if r else "" for r in rows]
        done = [r for r in rows if r]
        print(f"| {name} | " + " | ".join(cells) + f" | {statistics.mean(r['val_mase'] for r in done):.4f} | "
              f"{statistics.mean(r['fit_seconds'] for r in done):.0f} s |")


if __name__ == "__main__":
    main()
