"""Lightning's MLflow logger, writing into the run the training stage opened (kept out of pipeline/tracking.py,
which the forecast and evaluate stages import without Lightning)."""

import mlflow
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import Run

from pipeline.config import TrackingConfig


class StageLogger(MLFlowLogger):
    """Lightning's MLflow logger, writing into the run the stage opened. Lightning's own would end that run when
    fit ends (FINISHED, before the backtests and the model are logged) or fails; start_run ends it instead.

    A resumed training replays the steps between its checkpoint and the interruption: a metric is not logged
    again at a step up to `logged_until[name]`, so no step of its history appears twice."""

    def __init__(self, *args, logged_until: dict[str, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged_until = logged_until or {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.logged_until and step is not None:
            metrics = {name: value for name, value in metrics.items() if step > self.logged_until.get(name, -1)}
        super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        pass


def lightning_logger(cfg: TrackingConfig, run: Run, logged_until: dict[str, int] | None = None) -> MLFlowLogger:
    """Lightning's logger writing into our open run (URI passed explicitly, never read from the environment)."""
    # The store start_run connected to: tracking.uri, or the offline store it fell back to.
    return StageLogger(experiment_name=cfg.experiment, tracking_uri=mlflow.get_tracking_uri(),
                       run_id=run.info.run_id, logged_until=logged_until)
