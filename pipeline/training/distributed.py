"""Distributed data parallel training (trainer=ddp): which process tracks, and how the windows are shared.

Lightning's DDP strategy starts the other processes by running the same command again (or torchrun starts
them all). Every process loads the data and trains on its share of each batch; rank zero alone opens the
MLflow run, logs, evaluates and writes the outputs. `window.batch_size` is the global batch: each of N
processes takes batch_size / N windows a step, so a run's optimisation does not depend on how many processes
share it, and `optim.lr` needs no scaling.
"""

import os
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L

# Where launchers put a process's rank, in the order Lightning reads them (lightning.fabric's rank_zero._get_rank).
RANK_KEYS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero() -> bool:
    """Whether this process is the distributed training's first (or the only one): read, as Lightning reads
    it, from the launcher's environment (RANK from torchrun, SLURM_PROCID, LOCAL_RANK from Lightning's own
    launcher, with NODE_RANK on the other nodes). Read here rather than from Lightning's rank_zero_only, so a
    command that stops before training never imports Lightning."""
    rank = next((int(os.environ[key]) for key in RANK_KEYS if key in os.environ), 0)
    return rank == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def check_distributed(trainer: "L.Trainer", batch_size: int, in_sweep: bool = False,
                      in_search: bool = False) -> dict[str, Any]:
    """The batch split across the trainer's processes, as params to log; a one-line error where it cannot be."""
    world = trainer.world_size
    environment = getattr(trainer.strategy, "cluster_environment", None)
    # Lightning's launcher starts the other processes by re-running the command line: a sweep (-m) would run
    # again in each. Processes that torchrun or SLURM start each run the same sweep, in step.
    relaunches = world > 1 and not (environment and environment.creates_processes_externally)
    if (relaunches and in_sweep) or (world > 1 and in_search):
        raise ConfigError(f"{world} training processes (trainer.devices/num_nodes) cannot run inside "
                          f"{'hparams_search' if in_search else 'a sweep (-m)'}: Lightning starts them by re-running "
                          f"the command. Run each configuration as its own command (e.g. a shell loop of "
                          f"`torchrun --nproc-per-node {world} -m pipeline.train ...`), or search with one process")
    if batch_size % world:
        raise ConfigError(f"window.batch_size={batch_size} is the global batch and must divide evenly among "
                          f"{world} processes; use a multiple of {world}")
    return {"world_size": world, "global_batch_size": batch_size, "batch_size_per_process": batch_size // world}
