"""How far a reader travels following `train()` call by call, down to the logged model: files entered, moves
between files, and climbs back to a file already left. A measure of layout, not of speed.

    .venv/bin/python bench/reading_path.py

A small training (three weeks of the shipped data, a few steps) runs under a profiler hook that notes the first
call of every pipeline function, in the order the calls happen: a reader reads each function once. Consecutive
functions of one file are one stop; a move is a step from one stop to the next; a climb back is a move into a
file the path has already left once.
"""

import sys
import tempfile
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"


def trace_train() -> list[str]:
    """The package's files in the order their functions are first called during one small training."""
    from pipeline.config import CONF_DIR
    from pipeline.train import train

    folder = Path(tempfile.mkdtemp())
    pd.read_parquet(ROOT / "data" / "vic_elec.parquet").iloc[:1008].to_parquet(folder / "slice.parquet")
    overrides = [f"data.path={folder / 'slice.parquet'}", f"tracking.uri=sqlite:///{folder}/mlflow.db",
                 "window.lookback=96", "window.horizon=48", "window.stride=4", "window.batch_size=32",
                 "split.val_steps=96", "split.test_steps=96", "model.hidden_size=8", "trainer.max_steps=4",
                 "trainer.val_check_interval=2", "trainer=cpu"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    seen, files = set(), []

    def note(frame, event, arg) -> None:
        code = frame.f_code
        # A module body run by a deferred import is not a call a reader follows.
        if event == "call" and code.co_filename.startswith(str(PACKAGE)) and code.co_name != "<module>" \
                and code not in seen:
            seen.add(code)
            files.append(str(Path(code.co_filename).relative_to(ROOT)))

    sys.setprofile(note)
    try:
        train(cfg, folder / "run")
    finally:
        sys.setprofile(None)
    return files


def measure(files: list[str]) -> dict[str, int]:
    stops = [f for i, f in enumerate(files) if i == 0 or f != files[i - 1]]
    left: set[str] = set()
    climbs = 0
    for previous, current in zip(stops, stops[1:]):
        left.add(previous)
        climbs += current in left
    return {"files": len(set(stops)), "moves": len(stops) - 1, "climbs back": climbs}


if __name__ == "__main__":
    path = trace_train()
    print(measure(path))
    stops = [f for i, f in enumerate(path) if i == 0 or f != path[i - 1]]
    print(" -> ".join(Path(f).stem for f in stops))
