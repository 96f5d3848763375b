"""Large data: peak memory of loading and windowing N series from one Parquet file (in memory) against the same
series as a folder of Parquet files, one group per file (pipeline/data/sources.py: file by file onto disk).

    python bench/many_files.py                   # 64 and 256 series of a year of half-hours (1.1M, 4.5M rows)
    python bench/many_files.py --series 64 512   # any sizes

Series are cut from the shipped vic_elec demand (rotated and rescaled per series), 17,520 half-hours each,
16 series per file. Each case runs in a fresh process: `load_windows` (what the training stage calls), then
50 shuffled training batches of 256 windows gathered as training would. Memory is sampled every 5 ms from
/proc/self/status: peak anonymous memory (RssAnon: what the process holds and cannot give back) and peak
resident set (VmHWM: with the pages of memory-mapped files it has read, which the kernel may evict).
Printed as MB and as folder / one-file ratios measured in the same run.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LENGTH, PER_FILE = 17_520, 16


def write_data(n_series: int, folder: Path) -> None:
    demand = pd.read_parquet(ROOT / "data" / "vic_elec.parquet")
    times, values = demand["time"].iloc[:LENGTH].to_numpy(), demand["demand"].to_numpy()
    (folder / "groups").mkdir(parents=True)
    frames = []
    for first in range(0, n_series, PER_FILE):
        group = pd.concat([pd.DataFrame({"series": f"s{k}", "time": times,
                                         "demand": np.roll(values, 37 * k)[:LENGTH] * (0.5 + (k % 10) / 10)})
                           for k in range(first, min(first + PER_FILE, n_series))])
        group.to_parquet(folder / "groups" / f"group-{first // PER_FILE:04d}.parquet", index=False)
        frames.append(group)
    pd.concat(frames).to_parquet(folder / "all.parquet", index=False)


def measure(path: str, scratch: str) -> dict:
    """In this process: load and window `path`, gather 50 batches; peak memory while doing so."""
    import torch

    from pipeline.config import DataConfig, SplitConfig, WindowConfig
    from pipeline.data.sources import load_windows

    peaks = {"RssAnon": 0, "VmRSS": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in peaks:
                    peaks[name] = max(peaks[name], int(value.split()[0]))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    data = DataConfig(path=path, time_column="time", target_column="demand", id_column="series")
    series, windows, *_ = load_windows(data, WindowConfig(), SplitConfig(), Path(scratch))
    loaded = time.perf_counter() - started
    order = torch.randperm(len(windows.train))
    for batch in order[:50 * 256].split(256):
        windows.train[batch]
    done.set()
    sampler.join()
    return {"rows": len(windows.values), "series": len(windows.splits), "load_seconds": round(loaded, 1),
            "peak_anon_mb": round(peaks["RssAnon"] / 1024), "peak_rss_mb": round(peaks["VmRSS"] / 1024)}


def run_case(path: Path, scratch: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", str(path), str(scratch)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    print(f"{'series':>7} {'rows':>10} | {'one file: anon MB':>17} {'rss MB':>7} {'s':>5} | "
          f"{'folder: anon MB':>15} {'rss MB':>7} {'s':>5} | anon ratio")
    for n_series in args.series:
        with tempfile.TemporaryDirectory() as folder:
            write_data(n_series, Path(folder))
            whole = run_case(Path(folder) / "all.parquet", Path(folder) / "scratch")
            stacked = run_case(Path(folder) / "groups", Path(folder) / "scratch")
        print(f"{n_series:>7} {whole['rows']:>10} | {whole['peak_anon_mb']:>17} {whole['peak_rss_mb']:>7} "
              f"{whole['load_seconds']:>5} | {stacked['peak_anon_mb']:>15} {stacked['peak_rss_mb']:>7} "
              f"{stacked['load_seconds']:>5} | {stacked['peak_anon_mb'] / whole['peak_anon_mb']:.2f}")


if __name__ == "__main__":
    main()
