"""The forecast stage that scheduled jobs run: a saved model (pipeline/saved_model.py), a file of recent history
in, one file of forecasts out, written atomically; or a folder of Parquet files in, a folder of forecasts out, on
this process or a Dask cluster (pipeline/forecast_folder.py).

    python -m pipeline.forecast model_uri=models:/NAME@champion data.path=new.parquet output=forecast.csv
    python -m pipeline.forecast model_uri=models:/NAME@champion data.path=stores/ output=forecasts/ engine=dask
"""

import logging
import os
import socket
import tempfile
from pathlib import Path

import hydra
import mlflow
import pandas as pd
from omegaconf import DictConfig

from pipeline import tracking
from pipeline.cli import finish
from pipeline.config import CONF_DIR, ForecastConfig, to_config
from pipeline.errors import ConfigError
from pipeline.forecast_folder import check_output_folder, check_parents, forecast_folder, forecast_path
from pipeline.saved_model import SavedModel, load_model

log = logging.getLogger(__name__)


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """CSV (compression by extension) or Parquet, written beside `path` and renamed onto it: readers and a
    killed job see the old file or the new one, never half of one. Temporaries that killed jobs of this host
    left beside it are removed first."""
    suffixes = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    # The temporary's name says which process writes it, and keeps the extensions, so pandas picks the same
    # format and compression.
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=suffixes,
                                         prefix=f".{path.name}~{socket.gethostname()}~{os.getpid()}~")
    os.close(handle)
    try:
        if suffixes.endswith(".parquet"):
            frame.to_parquet(temporary, index=False)
        else:
            frame.to_csv(temporary, index=False)
        # mkstemp makes the file private (0600); the output gets the permissions a plain open() would give.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_output(path: Path) -> str:
    """That `path` can take the forecast: a file name with a known extension, where no folder is, under folders
    (or none yet) rather than files. Returns its extensions."""
    if path.is_dir():
        raise ConfigError(f"output={path} is a folder; give a file name inside it, e.g. output={path / 'forecast.csv'}")
    suffixes = "".join(path.suffixes).lower()
    if not (suffixes.endswith(".parquet") or ".csv" in suffixes):
        raise ConfigError(f"output={path}: use a .csv, .csv.gz or .parquet file name")
    check_parents(path)
    return suffixes


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of `path` whose writing process, on this host, is gone (killed mid-write); a job
    writing the same path at this moment keeps its own."""
    host = socket.gethostname()
    for temporary in path.parent.glob(f".{path.name}~*"):
        writer_host, _, rest = temporary.name.removeprefix(f".{path.name}~").partition("~")
        pid = rest.partition("~")[0]
        if writer_host == host and pid.isdigit() and not process_alive(int(pid)):
            temporary.unlink(missing_ok=True)
            log.info("removed %s, left by a forecast that was killed while writing", temporary)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def run_forecast(cfg: ForecastConfig) -> dict:
    """Load the model, validate the new data against what it was trained on, forecast, write, record."""
    if not cfg.model_uri or not cfg.data.path or not cfg.output:
        raise ConfigError("give model_uri=<MLflow model URI>, data.path=<new data> and output=<file>")
    output, source = Path(cfg.output), Path(cfg.data.path)
    folder = source.is_dir()
    if folder:  # before anything is loaded or a run opens
        check_output_folder(output)
    else:
        check_output(output)
    model = load_model(cfg.model_uri, cfg.tracking)
    if folder:
        return forecast_into_folder(cfg, model, source, output)
    out, held = forecast_path(model, str(source), cfg.data.time_zone)
    summary = {"model_uri": cfg.model_uri, "model_version": model.version, "model_run_id": model.run_id,
               "input": str(source), "input_start": held["input_start"], "input_end": held["input_end"],
               "series": held["series"], "rows": held["rows"], "output": str(output)}
    with tracking.start_run(cfg.tracking) as run:
        tag_forecast_run(cfg, model)
        mlflow.log_params({k: v for k, v in summary.items() if k not in ("model_uri", "model_run_id")})
        write_atomically(out, output)
        mlflow.log_artifact(str(output), "forecast")
    return summary | {"run_id": run.info.run_id}


def forecast_into_folder(cfg: ForecastConfig, model: SavedModel, source: Path, output: Path) -> dict:
    """A folder of Parquet files into a folder of forecasts (pipeline/forecast_folder.py), recorded as a run; the
    forecasts themselves stay in the folder (a run artifact of a million series would copy gigabytes)."""
    with tracking.start_run(cfg.tracking) as run:
        tag_forecast_run(cfg, model)
        totals = forecast_folder(cfg, model, source, output)
        summary = {"model_uri": cfg.model_uri, "model_version": model.version, "model_run_id": model.run_id,
                   "input": str(source), **totals, "output": str(output), "engine": cfg.engine.value}
        mlflow.log_params({k: v for k, v in summary.items() if k not in ("model_uri", "model_run_id")})
    return summary | {"run_id": run.info.run_id}


def tag_forecast_run(cfg: ForecastConfig, model: SavedModel) -> None:
    mlflow.set_tags({"stage": "forecast", "model_uri": cfg.model_uri, "model_run_id": model.run_id or "",
                     "model_version": model.version or ""})


@hydra.main(config_path=CONF_DIR, config_name="forecast", version_base="1.3")
def main(cfg: DictConfig) -> None:
    finish(lambda: run_forecast(to_config(cfg)), cfg.tracking.uri)


if __name__ == "__main__":
    main()
