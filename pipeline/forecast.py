"""Forecast from recent history with a saved model: the files it is saved as, its MLflow pyfunc, and the
forecast stage that scheduled jobs run.

    python -m pipeline.forecast model_uri=models:/NAME@champion data.path=new.parquet output=forecast.csv
"""

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from pipeline import tracking
from pipeline.cli import finish
from pipeline.config import ConfigError, DataConfig, ForecastConfig, ShortSeries, first_line, to_config
from pipeline.features import build_values, future_columns
from pipeline.load import SERIES_ID, TIME, DataError, data_columns, id_columns_of, read_table, validate_frame
from pipeline.network import RecurrentNetwork, TrainedNetwork, predict
from pipeline.scaling import Scaler
from pipeline.window import WindowBatches, WindowRanges, scatter_rows

if TYPE_CHECKING:  # a trained Forecaster works too; importing it would import Lightning
    from pipeline.models import Forecaster

log = logging.getLogger(__name__)

SPEC_FILE, WEIGHTS_FILE = "model_spec.json", "weights.pt"


@dataclass
class ModelSpec:
    """All a forecast needs besides the weights, as plain JSON: never the current conf/."""

    data: dict        # DataConfig fields, with freq and season resolved
    lookback: int
    horizon: int
    hparams: dict     # Forecaster keyword arguments
    scaler: dict      # Scaler fields
    series_ids: list  # training series, in the order of the series embedding

    def save(self, directory: Path, module: "Forecaster") -> dict[str, str]:
        """Write the spec and the weights into `directory`; returns them as MLflow artifact paths."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SPEC_FILE).write_text(json.dumps(asdict(self), indent=1))
        torch.save({k: v.cpu() for k, v in module.state_dict().items()}, directory / WEIGHTS_FILE)
        return {"spec": str(directory / SPEC_FILE), "weights": str(directory / WEIGHTS_FILE)}

    @classmethod
    def read(cls, path: Path) -> "ModelSpec":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{path}: not a model spec this pipeline wrote ({first_line(error)}); the model "
                              f"artifact is damaged or was altered: log the model again") from error


def load_module(spec: ModelSpec, weights: Path) -> TrainedNetwork:
    """Build the network from the spec and load tensors only (weights_only: no pickled code runs); a damaged or
    altered file is a one-line ConfigError naming it."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated archive, a pickle holding more than tensors, ...
        raise ConfigError(f"{weights}: cannot be read as model weights ({first_line(error)}); the model "
                          f"artifact is damaged or was altered: log the model again") from error
    try:
        module = TrainedNetwork(spec.hparams)
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"{weights}: the weights do not fit the network its {SPEC_FILE} describes "
                          f"({first_line(error)}); log the model again") from error
    return module.eval()



def forecast_frame(module: "TrainedNetwork | Forecaster", spec: ModelSpec, history: pd.DataFrame,
                   source: str = "input frame") -> pd.DataFrame:
    """The next `horizon` steps after the last row of every series in `history` (original units)."""
    data = DataConfig(**spec.data)
    return forecast_validated(module, spec, validate_frame(history, data, source=source).frame, source)


def forecast_validated(module: "TrainedNetwork | Forecaster", spec: ModelSpec, frame: pd.DataFrame,
                       source: str) -> pd.DataFrame:
    """forecast_frame after validation: `frame` is the long frame validate_frame made of the history."""
    data = DataConfig(**spec.data)
    if data.future_covariates:
        raise ConfigError(f"this model reads future values of data.future_covariates {data.future_covariates}, "
                          f"which forecasting from history alone cannot supply; forecast with a model trained "
                          f"without them")
    lookback, horizon = spec.lookback, spec.horizon
    recent = frame.groupby(SERIES_ID, sort=False, observed=True).tail(lookback)
    lengths = recent.groupby(SERIES_ID, sort=False, observed=True).size()
    if data.short_series != ShortSeries.pad and (lengths < lookback).any():
        short = lengths[lengths < lookback]
        raise DataError(f"{source}: series {short.index[0]!r} has {short.iloc[0]} rows; the model needs the "
                        f"last {lookback} of each series")
    future = _future_rows(recent, data.freq, horizon)
    # Each series: its recent rows, then its horizon rows (future targets and covariates are never read).
    extended = pd.concat([recent, future]).sort_values([SERIES_ID, TIME], kind="stable").reset_index(drop=True)
    scaler = Scaler(**spec.scaler)
    dense = build_values(extended, scaler, data.freq, data.calendar)
    # One block of lookback + horizon rows per series; a short history is left-padded with zero rows.
    block = lookback + horizon
    first_real = torch.arange(len(lengths)) * block + lookback - torch.tensor(lengths.to_numpy())
    rows = np.concatenate([np.arange(f, f + n + horizon) for f, n in zip(first_real.tolist(), lengths)])
    values = torch.from_numpy(scatter_rows(dense.numpy(), rows, len(lengths) * block, 0.0))
    series_ids = [str(s) for s in lengths.index]
    one_each = WindowRanges(first=torch.arange(len(lengths)) * block, count=torch.ones(len(lengths), dtype=torch.long),
                            step=1)
    dataset = WindowBatches(values, one_each, lookback, horizon, future_columns(len(data.covariates), values.shape[1]),
                            first_real if data.short_series == ShortSeries.pad else None,
                            embedding_rows(spec, series_ids, source))
    forecast = scaler.inverse_target(predict(module.network, dataset, batch_size=1024), series_ids)
    columns = forecast_columns(module.network, forecast)
    out = pd.DataFrame({TIME: future[TIME].to_numpy()} | {k: v.reshape(-1) for k, v in columns.items()})
    out.insert(0, SERIES_ID, future[SERIES_ID].to_numpy())
    return _user_columns(out, data)


def forecast_columns(network: RecurrentNetwork, forecast: np.ndarray) -> dict[str, np.ndarray]:
    """(..., H) point forecasts or (..., H, Q) quantiles -> output columns: "forecast" (the median, or the
    level nearest it), then one per level, named "q10" for 0.1 and "q2.5" for 0.025."""
    if not network.quantiles:
        return {"forecast": forecast}
    return {"forecast": forecast[..., network.median]} | {
        f"q{100 * level:g}": forecast[..., i] for i, level in enumerate(network.quantiles)}


def embedding_rows(spec: ModelSpec, series_ids: list[str], source: str) -> torch.Tensor:
    """(S,) row of each series in the model's series embedding; all 0 for a model without one."""
    if not spec.hparams.get("series_embedding"):
        return torch.zeros(len(series_ids), dtype=torch.long)
    row = {series_id: i for i, series_id in enumerate(spec.series_ids)}
    unknown = [s for s in series_ids if s not in row]
    if unknown:
        raise DataError(f"{source}: series {unknown[0]!r} was not in training, and this model has a "
                        f"series embedding; forecast it with a model trained without one")
    return torch.tensor([row[s] for s in series_ids])


def _user_columns(out: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    """Name the output's columns as the input's: the id column(s), the time column, then forecast."""
    ids = id_columns_of(out[SERIES_ID], data.id_column)
    return pd.concat([ids, out.drop(columns=[SERIES_ID])], axis=1).rename(columns={TIME: data.time_column})


def _future_rows(recent: pd.DataFrame, freq: str, horizon: int) -> pd.DataFrame:
    """`horizon` rows after each series' last timestamp; only their times (calendar features) are used."""
    last = recent.groupby(SERIES_ID, sort=False, observed=True)[TIME].last()
    offset = pd.tseries.frequencies.to_offset(freq)
    # One date range per distinct last timestamp (series usually end together), not one per series.
    ends, distinct = pd.factorize(last)
    ranges = [pd.date_range(t + offset, periods=horizon, freq=freq) for t in distinct]
    positions = (ends[:, None] * horizon + np.arange(horizon)).reshape(-1)
    future = pd.DataFrame({SERIES_ID: last.index.repeat(horizon),
                           TIME: ranges[0].append(ranges[1:])[positions]})
    for column in recent.columns.difference([SERIES_ID, TIME]):
        future[column] = 0.0
    return future[recent.columns]


class PyfuncForecaster(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: recent history in (the training file's columns), the next `horizon` steps out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.spec = ModelSpec.read(context.artifacts["spec"])
        self.module = load_module(self.spec, Path(context.artifacts["weights"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return forecast_frame(self.module, self.spec, model_input)



# -- the forecast stage ----------------------------------------------------------------------------------------


def write_atomically(frame: pd.DataFrame, path: Path) -> None:
    """CSV (compression by extension) or Parquet, written beside `path` and renamed onto it: readers and a
    killed job see the old file or the new one, never half of one."""
    suffixes = "".join(path.suffixes).lower()
    if not (suffixes.endswith(".parquet") or ".csv" in suffixes):
        raise ConfigError(f"output={path}: use a .csv, .csv.gz or .parquet file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the extensions, so pandas picks the same format and compression.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffixes)
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


def model_version(uri: str) -> str | None:
    """The registry version a models:/NAME@ALIAS or models:/NAME/VERSION URI points at (None for others)."""
    if not uri.startswith("models:/"):
        return None
    name, _, rest = uri.removeprefix("models:/").partition("@")
    if rest:
        return MlflowClient().get_model_version_by_alias(name, rest).version
    name, slash, version = name.rpartition("/")
    return version if slash else None


def run_forecast(cfg: ForecastConfig) -> dict:
    """Load the model, validate the new data against what it was trained on, forecast, write, record."""
    if not cfg.model_uri or not cfg.data.path or not cfg.output:
        raise ConfigError("give model_uri=<MLflow model URI>, data.path=<new data> and output=<file>")
    output, source = Path(cfg.output), Path(cfg.data.path)
    forecaster, metadata = tracking.load_model(cfg.tracking, cfg.model_uri)
    spec = forecaster.spec
    data = DataConfig(**spec.data)
    frame = validate_frame(read_table(source, data_columns(data)), data, source=str(source)).frame
    out = forecast_validated(forecaster.module, spec, frame, source=str(source))
    times = frame[TIME]
    summary = {"model_uri": cfg.model_uri, "model_version": model_version(cfg.model_uri),
               "model_run_id": metadata.run_id, "input": str(source), "input_start": str(times.min()),
               "input_end": str(times.max()), "series": int(len(out) // spec.horizon), "rows": len(out),
               "output": str(output)}
    with tracking.start_run(cfg.tracking) as run:
        mlflow.set_tags({"stage": "forecast", "model_uri": cfg.model_uri, "model_run_id": metadata.run_id,
                         "model_version": summary["model_version"] or ""})
        mlflow.log_params({k: v for k, v in summary.items() if k not in ("model_uri", "model_run_id")})
        write_atomically(out, output)
        mlflow.log_artifact(str(output), "forecast")
    return summary | {"run_id": run.info.run_id}


@hydra.main(config_path="../conf", config_name="forecast", version_base="1.3")
def main(cfg: DictConfig) -> None:
    finish(lambda: run_forecast(to_config(cfg)))


if __name__ == "__main__":
    main()
