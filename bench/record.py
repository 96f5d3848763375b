"""What the benchmarks share: the machine they ran on, how a result is kept (a JSON file, and a run of the
`benchmarks` MLflow experiment, so figures from several machines and dates sit side by side in the UI), and the
recipes they name."""

import datetime
import json
import platform
from pathlib import Path

import lightning as L
import mlflow
import torch

from pipeline.config import TrackingConfig
from pipeline.tracking import store as tracking

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "benchmarks"
# One LSTM reading the lookback a step at a time for 600 steps: the default until 2026-11-28, stated in full so a
# row means the same whatever the default experiment sets.
PER_STEP = ["model.segment_len=null", "model.ensemble=1", "trainer.max_steps=600"]


# The CPU flags that decide how fast training runs: float32 kernels (avx2, avx512f) and native bfloat16
# (avx512_bf16, amx_bf16), which trainer.precision=auto trains an LSTM in.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
               platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith(("flags", "Features"))), []))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cpu_flags": " ".join(f for f in CPU_FLAGS if f in flags) or "none",
            "threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "lightning": L.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def record(name: str, results: dict, metrics: dict[str, float], tracking_uri: str) -> tuple[Path, str]:
    """outputs/bench/NAME.json, and a run named NAME in the `benchmarks` experiment with `metrics`, the machine as
    tags and the JSON as an artifact; returns the file and the run id."""
    about = machine()
    path = ROOT / "outputs" / "bench" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": about} | results, indent=1))
    with tracking.start_run(TrackingConfig(uri=tracking_uri, experiment=EXPERIMENT, log_model=False)) as run:
        mlflow.set_tags({"mlflow.runName": name, "bench": name} | {f"machine.{k}": v for k, v in about.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(path))
    return path, run.info.run_id
