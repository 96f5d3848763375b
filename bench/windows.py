"""Window stage benchmark: memory and batch-gathering speed for very long and very many series.

    python bench/windows.py            # both cases (about a minute, ~3 GB peak)
    python bench/windows.py --quick    # 10x smaller, for a smoke run

Each case runs in a fresh subprocess that first writes its synthetic Parquet file, then loads it with the pipeline's
own load stage (read, validate) and windows it. Peak memory is VmHWM, reset before loading and again between the
load and window stages. "Raw data" is what the file holds per point: a timestamp (8 B) and a float64 target (8 B),
plus 4 B of series code for long files. Memory is reported two ways: the load stage's peak (pandas validation),
and the window stage's peak growth above the loaded frame (stacked tensor, scaler, index, sampler, batches).
"""

import argparse
import ctypes
import json
import resource
import subprocess
import sys
import tempfile
import time

CASES = {
    "one series, 10^7 points, lookback 512": dict(series=1, points=10_000_000, lookback=512),
    "10^4 series x 10^3 points, lookback 512": dict(series=10_000, points=1_000, lookback=512),
}
HORIZON, BATCH, BATCHES = 48, 256, 200


def peak_mb() -> float:
    """Peak resident memory since the last reset_peak() (VmHWM)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def reset_peak() -> None:
    """Hand freed heap back to the OS (glibc keeps it resident otherwise), then reset the peak resident set
    size to the current one (Linux: writing 5 to clear_refs), so the next peak is what the next stage holds."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def current_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def write_case(path: str, series: int, points: int) -> None:
    """A synthetic daily-cycle series file, like a user's."""
    import numpy as np
    import pandas as pd

    steps = np.arange(points)
    frame = pd.DataFrame({
        "id": np.repeat(np.arange(series), points).astype(str) if series > 1 else "0",
        "time": np.tile(pd.date_range("2000-01-01", periods=points, freq="min").to_numpy(), series),
        "y": np.tile(np.sin(2 * np.pi * steps / 1440), series)
        + np.random.default_rng(0).normal(0, 0.1, series * points),
    })
    frame.drop(columns=[] if series > 1 else ["id"]).to_parquet(path)


def run_case(path: str, series: int, points: int, lookback: int) -> dict:
    import torch

    from pipeline.config import DataConfig
    from pipeline.data.load import load_series
    from pipeline.data.sampler import batches
    from pipeline.data.windows import make_windows

    torch.manual_seed(0)
    raw_mb = series * points * (16 + (4 if series > 1 else 0)) / 2**20
    reset_peak()
    base = current_mb()
    cfg = DataConfig(path=path, time_column="time", target_column="y", id_column="id" if series > 1 else None,
                     freq="min", calendar=False)
    started = time.perf_counter()
    loaded = load_series(cfg)
    load_s = time.perf_counter() - started
    load_peak = peak_mb() - base
    started = time.perf_counter()
    windows = make_windows(loaded, lookback, HORIZON, 1, 2 * HORIZON, 2 * HORIZON, calendar=False)
    build_s = time.perf_counter() - started
    loader = iter(batches(windows.train, BATCH, shuffle=True))
    next(loader)
    started = time.perf_counter()
    for _ in range(BATCHES):
        batch = next(loader)
    gather_s = time.perf_counter() - started
    return {
        "points": series * points, "series": series, "lookback": lookback, "raw_mb": round(raw_mb, 1),
        "train_windows": len(windows.train),
        "load_seconds": round(load_s, 2), "load_peak_x_raw": round(load_peak / raw_mb, 2),
        "window_build_seconds": round(build_s, 2),
        # The whole pipeline up to training: reading, validating, windowing and gathering batches.
        "peak_x_raw": round((peak_mb() - base) / raw_mb, 2),
        "held_x_raw": round((current_mb() - base) / raw_mb, 2),
        "batches_per_second": round(BATCHES / gather_s, 1),
        "batch_shape": list(batch.x.shape),
        "materialised_windows_would_be_x_raw": round(len(windows.train) * lookback * 4 / 2**20 / raw_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--write", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_case(**json.loads(args.write))
        return
    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return
    rows = []
    for name, case in CASES.items():
        if args.quick:
            case = case | {"points": case["points"] // 10 if case["series"] == 1 else case["points"],
                           "series": max(1, case["series"] // 10)}
        with tempfile.TemporaryDirectory() as folder:
            files = {"path": f"{folder}/series.parquet", "series": case["series"], "points": case["points"]}
            subprocess.run([sys.executable, __file__, "--write", json.dumps(files)], check=True)
            done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case | files)],
                                  capture_output=True, text=True, check=True)
        rows.append({"case": name} | json.loads(done.stdout.strip().splitlines()[-1]))
    keys = ["case", "points", "raw_mb", "train_windows", "load_seconds", "load_peak_x_raw", "peak_x_raw",
            "held_x_raw", "window_build_seconds", "batches_per_second",
            "materialised_windows_would_be_x_raw"]
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
