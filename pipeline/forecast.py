"""The forecast stage that scheduled jobs run: a saved model (pipeline/inference/saved_model.py), a file of recent
history in, one file of forecasts out, written atomically; or a folder of Parquet files in, a folder of forecasts
out, on this process or a Dask cluster (pipeline/inference/folder.py).

    python -m pipeline.forecast model_uri=models:/NAME@champion data.path=new.parquet output=forecast.csv
    python -m pipeline.forecast model_uri=models:/NAME@champion data.path=stores/ output=forecasts/ engine=dask
"""

import logging
from pathlib import Path

import hydra
import mlflow
from omegaconf import DictConfig

from pipeline.cli import command, finish
from pipeline.config import CONF_DIR, ForecastConfig, to_config
from pipeline.data.sources import parquet_files
from pipeline.errors import ConfigError
from pipeline.host import set_threads
from pipeline.inference.folder import forecast_folder, forecast_path
from pipeline.inference.output import check_output, check_output_folder, write_atomically
from pipeline.inference.saved_model import SavedModel, load_model
from pipeline.tracking.store import start_run

log = logging.getLogger(__name__)


def run_forecast(cfg: ForecastConfig) -> dict:
    """Load the model, validate the new data against what it was trained on, forecast, write, record."""
    if not cfg.model_uri or not cfg.data.path or not cfg.output:
        raise ConfigError("give model_uri=<MLflow model URI>, data.path=<new data> and output=<file>")
    output, source = Path(cfg.output), Path(cfg.data.path)
    set_threads(cfg.threads)
    folder = source.is_dir()
    if folder:  # before anything is loaded or a run opens
        parquet_files(source)
        check_output_folder(output)
    else:
        check_output(output)
    model = load_model(cfg.model_uri, cfg.tracking)
    if folder:
        return forecast_into_folder(cfg, model, source, output)
    out, held = forecast_path(model, str(source), cfg.data.time_zone, cfg.samples, cfg.seed)
    summary = {"model_uri": cfg.model_uri, "model_version": model.version, "model_run_id": model.run_id,
               "input": str(source), "input_start": held["input_start"], "input_end": held["input_end"],
               "series": held["series"], "rows": held["rows"], "output": str(output)}
    if cfg.samples:
        summary |= {"samples": cfg.samples, "seed": cfg.seed}
    with start_run(cfg.tracking) as run:
        tag_forecast_run(cfg, model)
        mlflow.log_params({k: v for k, v in summary.items() if k not in ("model_uri", "model_run_id")})
        write_atomically(out, output)
        mlflow.log_artifact(str(output), "forecast")
    return summary | {"run_id": run.info.run_id}


def forecast_into_folder(cfg: ForecastConfig, model: SavedModel, source: Path, output: Path) -> dict:
    """A folder of Parquet files into a folder of forecasts (pipeline/inference/folder.py), recorded as a run; the
    forecasts themselves stay in the folder (a run artifact of a million series would copy gigabytes)."""
    with start_run(cfg.tracking) as run:
        tag_forecast_run(cfg, model)
        totals = forecast_folder(cfg, model, source, output)
        summary = {"model_uri": cfg.model_uri, "model_version": model.version, "model_run_id": model.run_id,
                   "input": str(source), **totals, "output": str(output), "engine": cfg.engine.value}
        if cfg.samples:
            summary |= {"samples": cfg.samples, "seed": cfg.seed}
        mlflow.log_params({k: v for k, v in summary.items() if k not in ("model_uri", "model_run_id")})
    return summary | {"run_id": run.info.run_id}


def tag_forecast_run(cfg: ForecastConfig, model: SavedModel) -> None:
    mlflow.set_tags({"stage": "forecast", "model_uri": cfg.model_uri, "model_run_id": model.run_id or "",
                     "model_version": model.version or ""})


@hydra.main(config_path=CONF_DIR, config_name="forecast", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    finish(lambda: run_forecast(to_config(cfg)), cfg.tracking.uri, experiment=cfg.tracking.experiment)


def main() -> None:
    command("forecast", hydra_main)


if __name__ == "__main__":
    main()
