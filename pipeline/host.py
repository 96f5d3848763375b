"""This machine as the stages meet it: whether its CPU computes bfloat16 natively, how many threads torch computes
on, and whether one of its processes is still alive."""

import os
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
