"""The forecast stage on a folder of Parquet files: each file (a group of whole series, as training's folder input
has them) is forecast on its own and written as one Parquet file of the output folder, in this process one file
after another, or as one task per file on a Dask cluster.

    python -m pipeline.forecast model_uri=models:/demand@champion data.path=stores/ output=forecasts/ engine=dask

With samples=N (a likelihood model) each file's sample paths are drawn from a seed of its own (file_seed).

On Dask every worker loads the model itself, once, from the tracking store (checked against its digests as any
load is; `models:/NAME@ALIAS` is pinned to the version the driver loaded first, so a registry change mid-job
cannot mix two models), reads its files and writes its outputs: only file names and summaries travel through the
scheduler. The output folder appears whole: the files are written into a staging folder beside it, which then
replaces it.
"""

import contextlib
import logging
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd

from pipeline.config import DaskConfig, Engine, ForecastConfig, TrackingConfig
from pipeline.data.load import data_columns, read_table, validate_frame
from pipeline.data.series import TIME
from pipeline.data.static import side_file_columns
from pipeline.data.sources import parquet_files
from pipeline.errors import ConfigError
from pipeline.inference.batch import forecast_series, with_given_attributes
from pipeline.inference.output import replace_folder, writing
from pipeline.inference.saved_model import SavedModel, load_model

log = logging.getLogger(__name__)


def forecast_folder(cfg: ForecastConfig, model: SavedModel, source: Path, output: Path) -> dict:
    """Every file of `source` forecast into `output` (replaced whole); totals over the files."""
    files = parquet_files(source)
    with writing(output):
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}~", dir=output.parent))
    try:
        if cfg.engine == Engine.dask:
            parts = on_dask(cfg, model, files, staging)
        else:
            parts = [forecast_file(model, str(path), str(staging), cfg.data.time_zone, cfg.samples, cfg.seed)
                     for path in files]
        replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"files": len(files), "series": sum(p["series"] for p in parts), "rows": sum(p["rows"] for p in parts),
            "input_start": min(p["input_start"] for p in parts), "input_end": max(p["input_end"] for p in parts)}


def forecast_path(model: SavedModel, path: str, time_zone: str | None, samples: int = 0,
                  seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A file of recent history, read and checked as training read its own, -> its forecasts (or `samples` sample
    paths from `seed`), and what it held (series, rows, time range). `time_zone`: that of its times without an
    offset (None: the model's)."""
    data = replace(model.data, path=path, time_zone=time_zone or model.data.time_zone)
    # The side-file attributes the file may give anew (pipeline/data/static.py), read beside the model's columns.
    static = model.spec.network.get("static")
    raw = read_table(Path(path), data_columns(data), data.id_column,
                     optional=side_file_columns(static, data) if static else [])
    series = validate_frame(raw, data, source=path, future_steps=model.spec.horizon)
    network = with_given_attributes(model.spec, model.network, raw, data, path)
    out = forecast_series(model.spec, network, series, path, samples, seed)
    times = series.frame[TIME]
    return out, {"series": len(out) // (model.spec.horizon * max(1, samples)), "rows": len(out),
                 "input_start": str(times.min()), "input_end": str(times.max())}


def forecast_file(model: SavedModel, path: str, folder: str, time_zone: str | None, samples: int = 0,
                  seed: int = 0) -> dict:
    """One input file's forecasts (or sample paths) as folder/<its name>; what it held."""
    out, held = forecast_path(model, path, time_zone, samples, file_seed(seed, path) if samples else seed)
    with writing(Path(folder) / Path(path).name):
        out.to_parquet(Path(folder) / Path(path).name, index=False)
    return held


def pinned(uri: str, model: SavedModel) -> str:
    """`models:/NAME@ALIAS` as `models:/NAME/VERSION` of the version loaded, so every worker loads that one."""
    if uri.startswith("models:/") and "@" in uri and model.version:
        return f"models:/{uri.removeprefix('models:/').split('@')[0]}/{model.version}"
    return uri


def on_dask(cfg: ForecastConfig, model: SavedModel, files: list[Path], staging: Path) -> list[dict]:
    uri = pinned(cfg.model_uri, model)
    with dask_client(cfg.dask) as client:
        log.info("forecasting %d files on Dask (%s)", len(files), client.scheduler.address)
        futures = client.map(forecast_file_on_worker, [str(f) for f in files], model_uri=uri, tracking=cfg.tracking,
                             folder=str(staging), time_zone=cfg.data.time_zone, samples=cfg.samples, seed=cfg.seed,
                             pure=False)
        return client.gather(futures)


@contextlib.contextmanager
def dask_client(cfg: DaskConfig) -> Iterator:
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ConfigError("engine=dask needs Dask's distributed scheduler: pip install 'pipeline[dask]'") from error
    if cfg.address:
        try:
            client = Client(cfg.address, timeout=30)
        except OSError as error:
            raise ConfigError(f"dask.address={cfg.address} does not answer ({error}); start the scheduler or fix "
                              f"the address") from error
        with client:
            yield client
        return
    # Worker processes, not threads: the network's forward pass holds the GIL for part of each call.
    with LocalCluster(n_workers=cfg.workers, threads_per_worker=cfg.threads_per_worker, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


# Each worker process loads a model once and keeps it for its next tasks.
_models: dict[tuple[str, str], SavedModel] = {}


def forecast_file_on_worker(path: str, model_uri: str, tracking: TrackingConfig, folder: str,
                            time_zone: str | None, samples: int = 0, seed: int = 0) -> dict:
    key = (model_uri, tracking.uri)
    if key not in _models:
        _models[key] = load_model(model_uri, tracking)
    return forecast_file(_models[key], path, folder, time_zone, samples, seed)


def file_seed(seed: int, path: str) -> int:
    """Each file's paths from a seed of its own, from `seed` and the file's name: the files' draws independent
    of each other (one seed for all would give the first series of every file the same draws) and the same
    whichever worker, in whichever order, forecasts the file."""
    return zlib.crc32(f"{seed}/{Path(path).name}".encode())
