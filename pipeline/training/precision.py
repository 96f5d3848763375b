"""trainer.precision on this machine: `auto` resolved for the device and the CPU's capabilities, and bfloat16
refused, before any data is read, where the CPU cannot compute it. No Lightning here: a refused command never
pays for importing it."""

import logging
from typing import Any

import torch

from pipeline.errors import ConfigError
from pipeline.host import native_bf16_cpu

log = logging.getLogger(__name__)

# Lightning's names for bfloat16 precision ("bf16" is its older alias of "bf16-mixed").
BF16 = ("bf16", "bf16-mixed", "bf16-true")


def resolve_precision(trainer_args: dict[str, Any], cell: str, native_bf16: bool | None = None) -> Any:
    """trainer.precision for Lightning: `auto` resolved (auto_precision), any other value as given. bf16 on a CPU
    without native bfloat16 is a ConfigError. `native_bf16` stands in for the CPU probe (pipeline.host)."""
    precision = trainer_args.get("precision", "32-true")
    cpu = on_cpu(trainer_args.get("accelerator", "auto"))
    native = native_bf16_cpu() if native_bf16 is None and cpu else bool(native_bf16)
    if precision == "auto":
        chosen, why = auto_precision(cell, cpu, native)
        log.info("trainer.precision=auto: %s (%s)", chosen, why)
        return chosen
    if cpu and str(precision) in BF16 and not native:
        raise ConfigError(f"trainer.precision={precision}: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), "
                          f"so oneDNN cannot run an LSTM in bf16 and other cells would run it emulated, slower than "
                          f"float32; set trainer.precision=32-true, or auto (which picks 32-true on this CPU)")
    return precision


def auto_precision(cell: str, on_cpu: bool, native_bf16: bool) -> tuple[str, str]:
    """The precision `auto` picks, and why. bf16-mixed for an LSTM on a CPU with native bfloat16 (oneDNN's fused
    LSTM: 1.6x faster steps at equal validation MASE on the default data, bench/RESULTS.md); 32-true otherwise:
    the vanilla RNN and the GRU step slower in bf16 on CPU, a CPU without native bf16 cannot run the LSTM in it,
    and no GPU was measured."""
    if not on_cpu:
        return "32-true", "on a GPU: bf16 was not measured there; trainer=gpu asks for bf16-mixed"
    if not native_bf16:
        return "32-true", "this CPU has no native bfloat16 (AVX-512 BF16 or AMX)"
    if cell != "lstm":
        return "32-true", f"the {cell.upper()} steps slower in bf16 on CPU"
    return "bf16-mixed", "an LSTM on a CPU with native bfloat16 (AVX-512 BF16 or AMX)"


def on_cpu(accelerator: str) -> bool:
    """Whether trainer.accelerator trains on the CPU: `cpu`, or `auto` on a machine without a GPU."""
    return accelerator == "cpu" or (accelerator == "auto" and not (torch.cuda.is_available()
                                                                  or torch.backends.mps.is_available()))
