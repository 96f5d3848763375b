"""The training stage: data -> seed -> network -> trainer -> fit -> calibrate -> backtest -> log the model.

    python -m pipeline.train model=gru trainer.max_steps=200
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from pipeline.cli import command, finish
from pipeline.config import CONF_DIR, Config, plain, to_config, trainer_kwargs
from pipeline.data.defaults import record_lengths
from pipeline.data.series import Series
from pipeline.data.sources import load_windows
from pipeline.data.static import StaticTable, static_table
from pipeline.data.windows import Windows
from pipeline.errors import ConfigError, Terminated, TrainingDiverged, redact
from pipeline.evaluation.plots import plot_learning_curves
from pipeline.evaluation.reports import backtest_and_log
from pipeline.host import set_threads
from pipeline.inference.model_format import model_spec, write_model
from pipeline.inference.saved_model import SavedModel, input_example, log_model
from pipeline.model.hparams import check_likelihood, network_args
from pipeline.tracking.records import log_config, log_data_report, redact_values, run_name
from pipeline.tracking.store import start_run
from pipeline.training.auto import choose_recipe
from pipeline.training.calibration import calibrate_intervals
from pipeline.training.distributed import is_rank_zero
from pipeline.training.precision import resolve_precision
from pipeline.training.resume import OUTPUT_DIR, STAGE, Resume
from pipeline.training.resume import plan as plan_resume
from pipeline.training.search import search

if TYPE_CHECKING:  # Lightning is imported once the data has loaded (see train)
    import lightning as L
    from lightning.pytorch.loggers import Logger

    from pipeline.model.training_module import TrainingModule
    from pipeline.training.fitting import Fitting

log = logging.getLogger(__name__)


def train(cfg: DictConfig, output_dir: Path, *, resume: Resume | None = None, run_tags: dict[str, str] | None = None,
          extra_callbacks: Sequence["L.Callback"] = ()) -> dict:
    """Train, keep the best checkpoint by validation loss, backtest it, log the model; returns the run's summary.

    `resume` continues an interrupted run from its last checkpoint, in its MLflow run and output folder
    (pipeline/training/resume.py). `run_tags` go on a new run (a sweep's, from sweep_tags). `extra_callbacks` join
    the stage's own (the speed benchmark times steps with one)."""
    config, run_tags = to_config(cfg), run_tags or {}
    log.info("computing on %d threads", set_threads(config.threads))
    # Before the data: bf16 on a CPU that cannot compute it is refused without reading a row.
    trainer_args = trainer_kwargs(cfg) | {"precision": resolve_precision(trainer_kwargs(cfg), config.model.cell.value)}
    check_likelihood(config.model, config.data)
    series, windows, window, split = load_windows(config.data, config.window, config.split, output_dir)
    # The lengths as trained with, derived ones included: what the params, config.yaml and the spec record.
    config = replace(config, window=window, split=split)
    record_lengths(cfg, window, split)
    series = replace(series, seasons=usable_seasons(series.seasons, config.data.season, config.window.lookback))
    # Lightning only now: its import costs a stage process ~4 s, which a command refused for its data or config
    # (or --help) need not pay.
    import lightning as L

    from pipeline.training.fitting import fit, load_best, prepare
    from pipeline.training.logger import lightning_logger

    L.seed_everything(config.seed, workers=True)  # nothing above draws random numbers
    # Tiny gradients through long recurrences turn denormal and slow CPU kernels several-fold.
    torch.set_flush_denormal(True)
    static = static_table(config.data, [split.series_id for split in windows.splits])
    module = build_module(config, windows, config.model.skip_season or series.season, static)
    fitting = prepare(trainer_args, windows, batch_size=config.window.batch_size,
                      seed=config.seed, patience=config.optim.patience, output_dir=output_dir, run_tags=run_tags,
                      extra_callbacks=extra_callbacks, members=config.model.ensemble,
                      adapt_threads=config.threads is None)
    if not is_rank_zero():
        # Another process of a distributed training: it trains its share of each batch; rank zero tracks,
        # evaluates and writes everything.
        fit(fitting, module, resume)
        return {}
    with start_run(config.tracking, resume.run_id if resume else None) as run:
        record_start(cfg, run, fitting, series, windows, output_dir, resume, run_tags)
        logger = lightning_logger(config.tracking, run, resume.logged_until if resume else None)
        fit_seconds = fit_and_log(fitting, module, resume, logger)
        load_best(fitting, module)
        if module.network.interval_offsets is not None and config.model.conformal:
            offsets = calibrate_intervals(module.network, windows)
            mlflow.log_metrics({f"conformal_offset_{name}": value for name, value in offsets.items()})
        log_learning_curves(run.info.run_id)
        scores = backtest_and_log(module.network, windows, series.seasons, config.data.id_column,
                                  config.data.target_column)
        mlflow.log_artifact(fitting.best.best_model_path, "checkpoints")
        if config.tracking.log_model:
            save_and_log_model(config, series, windows, module, output_dir)
        summary = {"run_id": run.info.run_id, "tracking_uri": redact(mlflow.get_tracking_uri()),
                   "val_loss": float(fitting.best.best_model_score), "fit_seconds": round(fit_seconds, 1),
                   "fit_steps": fitting.trainer.global_step, "val": scores["val"]["model"],
                   "val_seasonal_naive": scores["val"]["seasonal_naive"], "test": scores["test"]["model"],
                   "seasonal_naive": scores["test"]["seasonal_naive"]}
        if len(series.seasons) > 1:  # each period's seasonal naive, test MASE
            summary["seasonal_naive_by_period"] = {period: scores["test"][f"seasonal_naive_{period}"]["mase"]
                                                   for period in series.seasons}
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def record_start(cfg: DictConfig, run: Run, fitting: "Fitting", series: Series, windows: Windows, output_dir: Path,
                 resume: Resume | None, run_tags: dict[str, str]) -> None:
    """What a new run records before training: the resolved config, how batches are shared, the precision
    trainer.precision=auto chose, where resume finds the checkpoints, what the data.* policies did."""
    if resume is not None:
        mlflow.set_tag("resumed", int(run.data.tags.get("resumed", 0)) + 1)
        return
    # Enums as their values ("error", not "Missing.error") in the logged params and config.yaml; URIs without the
    # credentials they may carry (MLFLOW_TRACKING_URI=http://user:PW@host resolves into tracking.uri).
    resolved = redact_values(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    log_config(resolved, OmegaConf.to_yaml(resolved))
    mlflow.log_params(fitting.shares)
    mlflow.set_tags({"precision": fitting.precision, STAGE: "train", OUTPUT_DIR: str(output_dir.resolve())}
                    | run_tags)
    log_data_report(series, windows, cfg.data.time_column, cfg.data.target_column)


def fit_and_log(fitting: "Fitting", module: "TrainingModule", resume: Resume | None, logger: "Logger") -> float:
    """fit, logging its time and steps; after a divergence the best checkpoint so far is kept on the run (which
    ends FAILED with the reason); a stop by SIGTERM or Ctrl-C says where it stopped and how to continue."""
    from pipeline.training.fitting import fit

    try:
        seconds = fit(fitting, module, resume, logger)
    except TrainingDiverged:
        if fitting.best.best_model_path:
            mlflow.log_artifact(fitting.best.best_model_path, "checkpoints")
        raise
    except (Terminated, KeyboardInterrupt) as stopped:
        raise type(stopped)(stopped_at(fitting, mlflow.active_run().info.run_id, stopped)) from stopped
    mlflow.log_metrics({"fit_seconds": seconds, "fit_steps": fitting.trainer.global_step})
    return seconds


def stopped_at(fitting: "Fitting", run_id: str, stopped: BaseException) -> str:
    """Where a stopped training stands, and what continues it: one line for the command's stderr and the run."""
    signal = "SIGTERM" if isinstance(stopped, Terminated) else "Ctrl-C"
    trainer, checkpoint = fitting.trainer, fitting.best.dirpath and Path(fitting.best.dirpath) / "last.ckpt"
    where = f"{signal} at step {trainer.global_step} of {trainer.max_steps if trainer.max_steps > 0 else '?'}"
    if checkpoint and checkpoint.exists():
        return (f"{where}; run {run_id} is KILLED, its last checkpoint kept: continue it with "
                f"python -m pipeline.train resume={run_id} (or resume=last)")
    return f"{where}, before its first checkpoint; run {run_id} is KILLED: start it again"


def log_learning_curves(run_id: str) -> None:
    """Training loss, each validation's loss and the best so far on one figure (MLflow's UI draws each metric on a
    chart of its own), and the best validation loss also as `best_val_loss`, the name earlier runs used."""
    client = mlflow.tracking.MlflowClient()
    history = {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
               for name in ("train_loss", "val_loss_raw", "val_loss")}
    if history["val_loss"]:
        mlflow.log_metric("best_val_loss", min(value for _, value in history["val_loss"]))
    mlflow.log_figure(plot_learning_curves(history), "learning_curves.png")


def save_and_log_model(config: Config, series: Series, windows: Windows, module: "TrainingModule",
                       output_dir: Path) -> None:
    """The trained network as a saved model in the run folder, logged with an input example of its data."""
    spec = model_spec(config.data, config.window, series, windows, dict(module.hparams.network))
    artifacts = write_model(output_dir / "model", spec, module.network)
    example = input_example(series, windows.splits[0], config.data, config.window.lookback, config.window.horizon)
    log_model(artifacts, example, SavedModel(spec, module.network))


def usable_seasons(seasons: list[int], given: list[int], lookback: int) -> list[int]:
    """The periods that fit the input window (seasonal naive and the seasonal skip read them from it): a derived
    one that does not is left out, in a log line; a given one (data.season) is refused."""
    longer = [period for period in seasons if period > lookback]
    if longer and given:
        raise ConfigError(f"data.season={given}: a period of {longer[0]} steps is longer than window.lookback "
                          f"({lookback}), which must hold it; lengthen window.lookback or leave the period out")
    if longer:
        log.info("seasonal periods %s are longer than window.lookback=%d: not used", longer, lookback)
    return [period for period in seasons if period <= lookback] or [min(seasons)]


def build_module(cfg: Config, windows: Windows, season: int, static: StaticTable | None = None) -> "TrainingModule":
    from pipeline.model.training_module import TrainingModule

    module = TrainingModule(network=network_args(cfg.model, cfg.window, n_features=windows.n_features,
                                                 n_future=len(windows.future_columns), n_series=len(windows.splits),
                                                 season=season, static=static and static.spec),
                            optim=plain(cfg.optim))
    for member in getattr(module.network, "members", [module.network]):
        if static is not None:  # each training series' attributes, by its row
            member.static.set_table(torch.from_numpy(static.codes), torch.from_numpy(static.values))
    return module


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    tags = sweep_tags(hydra_cfg)
    summary = finish(lambda: run_training(cfg, hydra_cfg.overrides.task, Path(hydra_cfg.runtime.output_dir), tags),
                     cfg.tracking.uri, in_sweep=bool(tags), reports=is_rank_zero(), experiment=cfg.tracking.experiment)
    # Sweepers minimise this: the validation loss, so no choice is ever made on the test block.
    return summary.get("val_loss", float("nan"))


def sweep_tags(hydra_cfg: DictConfig) -> dict[str, str]:
    """In a multirun (-m), what groups its jobs' runs in MLflow: `sweep` (the sweep's folder, one per -m
    command: filter on tags.sweep) and `sweep.job`; the run is named by the job's overrides (run_training)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    return {"sweep": str(Path(hydra_cfg.sweep.dir).resolve()), "sweep.job": str(hydra_cfg.job.num)}


def run_training(cfg: DictConfig, overrides: list[str], output_dir: Path, run_tags: dict[str, str]) -> dict:
    """The command: train with `cfg`; with resume= continue a run with the config it started with; with
    hparams_search= run a search whose trials each train (pipeline/search.py); with experiment=auto choose the
    recipe on the data (pipeline/training/auto.py)."""
    resume = None
    if cfg.resume:
        cfg, resume = plan_resume(cfg, cfg.resume, overrides)
        output_dir = resume.output_dir
    elif cfg.hparams_search is not None:
        return search(cfg, to_config(cfg).hparams_search, output_dir, run_tags,
                      lambda trial, folder, tags: train(trial, folder, run_tags=tags))
    elif cfg.get("auto") is not None:
        return choose_recipe(cfg, to_config(cfg).auto, output_dir, run_tags,
                             lambda recipe, folder, tags: train(recipe, folder, run_tags=tags))
    else:
        run_tags = run_tags | {"mlflow.runName": run_name(to_config(cfg).model.cell.value, overrides)}
    return train(cfg, output_dir, resume=resume, run_tags=run_tags)


def main() -> None:
    command("train", hydra_main)


if __name__ == "__main__":
    main()
