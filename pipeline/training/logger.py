"""Lightning's MLflow logger, writing into the run the training stage opened (kept out of pipeline/tracking/store.py,
which the forecast and evaluate stages import without Lightning)."""

import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import Run

from pipeline.config import TrackingConfig


class StageLogger(MLFlowLogger):
    """Lightning's MLflow logger, writing into the run the stage opened. Lightning's own would end that run when
    fit ends (FINISHED, before the backtests and the model are logged) or fails; start_run ends it instead.

    `val_loss` is the validation loss of the checkpoint the run keeps: the best so far. MLflow's run list, its
    comparisons and sorting show a metric's last value, which must be the one the summary, the registry and the
    sweepers use; each validation's own loss is `val_loss_raw` (both in learning_curves.png).

    A resumed training replays the steps between its checkpoint and the interruption: a metric is not logged
    again at a step up to `logged_until[name]`, so no step of its history appears twice; `best_so_far` is the
    interrupted run's best."""

    def __init__(self, *args, logged_until: dict[str, int] | None = None, best_so_far: float = float("inf"),
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.logged_until = logged_until or {}
        self.best_so_far = best_so_far

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "val_loss" in metrics:
            raw = float(metrics["val_loss"])
            self.best_so_far = min(self.best_so_far, raw)  # a NaN loss stops training (TrainingDiverged)
            metrics = metrics | {"val_loss": self.best_so_far, "val_loss_raw": raw}
        if self.logged_until and step is not None:
            metrics = {name: value for name, value in metrics.items() if step > self.logged_until.get(name, -1)}
        super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        pass


def lightning_logger(cfg: TrackingConfig, run: Run, logged_until: dict[str, int] | None = None) -> MLFlowLogger:
    """Lightning's logger writing into our open run (URI passed explicitly, never read from the environment)."""
    best = run.data.metrics.get("val_loss", float("inf"))  # a resumed run's: its last value is its best so far
    # The store start_run connected to: tracking.uri, or the offline store it fell back to.
    return StageLogger(experiment_name=cfg.experiment, tracking_uri=mlflow.get_tracking_uri(),
                       run_id=run.info.run_id, logged_until=logged_until, best_so_far=best)
