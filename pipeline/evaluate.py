"""The evaluate stage: a rolling-origin backtest of a tracked model on any file (no refit), beside naive and
seasonal naive, recorded as a run linked to the model's training run.

    python -m pipeline.evaluate run_id=<training run> [data.path=new.parquet] [evaluate.origins=28]
"""

import logging

import hydra
import pandas as pd
from omegaconf import DictConfig

from pipeline.cli import command, finish
from pipeline.config import CONF_DIR, EvaluateConfig, to_config
from pipeline.data.load import load_series
from pipeline.data.series import TIME
from pipeline.errors import ConfigError
from pipeline.evaluation.backtest import backtest_file
from pipeline.evaluation.metrics import backtest_metrics
from pipeline.evaluation.reports import log_evaluation
from pipeline.host import set_threads
from pipeline.inference.batch import check_time_zone
from pipeline.inference.saved_model import load_model
from pipeline.tracking.store import start_run

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateConfig) -> dict:
    """Backtest a tracked model on a file (no refit) and log the result as a run linked to the model's run."""
    if not cfg.run_id and not cfg.model_uri:
        raise ConfigError("give run_id=<training run> or model_uri=<MLflow model URI> to evaluate")
    model_uri = cfg.model_uri or f"runs:/{cfg.run_id}/model"
    set_threads(cfg.threads)
    model = load_model(model_uri, cfg.tracking)
    data = model.data
    data.path, data.time_zone = cfg.data.path or data.path, cfg.data.time_zone or data.time_zone
    series = load_series(data)
    check_time_zone(model.spec, series.time_zone, data.time_column, data.path)
    step = cfg.evaluate.step or model.spec.horizon
    result = backtest_file(model, series, cfg.evaluate.origins, step)
    times = series.frame[TIME].to_numpy()
    summary = {"model_uri": model_uri, "model_run_id": model.run_id, "data": data.path,
               "origins": int(len(result.origins)), "series": len(result.rows_by_series()), "step": step,
               "first_origin": str(pd.Timestamp(times[result.origins.min()])),
               "last_origin": str(pd.Timestamp(times[result.origins.max()]))}
    scores = backtest_metrics(result)
    with start_run(cfg.tracking) as run:
        log_evaluation(cfg.tracking.experiment, model, model_uri, summary, scores, result, series)
    log.info("MASE %.4f (naive %.4f, seasonal naive %.4f) over %d origins of %d series",
             scores["model"]["mase"], scores["naive"]["mase"], scores["seasonal_naive"]["mase"],
             summary["origins"], summary["series"])
    return summary | {"run_id": run.info.run_id} | {name: scores[name] for name in scores}


@hydra.main(config_path=CONF_DIR, config_name="evaluate", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    finish(lambda: evaluate(to_config(cfg)), cfg.tracking.uri, experiment=cfg.tracking.experiment)


def main() -> None:
    command("evaluate", hydra_main)


if __name__ == "__main__":
    main()
