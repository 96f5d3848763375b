"""This machine as the stages meet it: whether its CPU computes bfloat16 natively, how many threads torch computes
on, and whether one of its processes is still alive."""

import os
import time
from pathlib import Path

import torch

from pipeline.errors import ConfigError

# Overrides the bfloat16 probe: "1" (native) or "0" (not), so that tests run both branches on any machine.
NATIVE_BF16 = "PIPELINE_NATIVE_BF16"


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX). Without it oneDNN has no bf16 LSTM (the
    step fails), and the other cells run bf16 emulated, slower than float32. PIPELINE_NATIVE_BF16 overrides."""
    forced = os.environ.get(NATIVE_BF16)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ConfigError(f"{NATIVE_BF16}={forced!r}: set 1 (native bfloat16), 0 (none), or unset it to probe")
        return forced == "1"
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def start_time(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux), which a later process reusing its pid does
    not share; None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str = "") -> bool:
    """Whether process `pid` of this machine runs, and is the one that started at `started` (start_time; "": any)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    now = start_time(pid)
    return not started or now is None or now == started


def set_threads(threads: int | None) -> int:
    """Compute on `threads` threads (torch's intra-op pool), or with None on those choose_threads gives. Returns
    the number."""
    chosen = threads or choose_threads()
    if chosen != torch.get_num_threads():
        torch.set_num_threads(chosen)
    return chosen


def choose_threads() -> int:
    """OMP_NUM_THREADS when set (the environment's choice wins); else the cores this process may run on, less those
    other processes keep busy right now, at least one. Two 2-thread trainings on 2 cores each stepped 4.4x slower
    than alone, two 1-thread ones 0.9x (bench/RESULTS.md, "Threads on a shared machine")."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, round(cores - busy_elsewhere())))


def busy_elsewhere(samples: int = 4, pause: float = 0.005) -> float:
    """Threads of other processes running right now: the kernel's count of runnable threads (/proc/loadavg) less
    this process's own, the mean of a few samples `pause` seconds apart; 0 where /proc cannot tell. Instantaneous,
    unlike the load averages, which take a minute to see a job that has just started."""
    counts = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        counts.append(max(0, running - own_running_threads()))
        if i + 1 < samples:
            time.sleep(pause)
    return sum(counts) / len(counts)


def own_running_threads() -> int:
    """This process's threads that are running or runnable (a thread may end while it is read)."""
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            running += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return running
