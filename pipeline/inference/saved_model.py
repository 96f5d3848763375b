"""A trained model as the user holds it (spec and network, with where it came from), logged to MLflow with the
digests of its files, and loaded back from any store only after every file matches them.

When a model is logged, the SHA-256 of every file MLflow stored is recorded in the tracking database (the run's
tag `model.sha256`, copied to the registry version by pipeline.register), where the artifact store cannot change
it. The pipeline's stages download the folder, check every file against those digests and read it as data
(pipeline/inference/model_format.py). MLflow's tools (`mlflow models serve`, `mlflow models predict`, `spark_udf`)
instead run the pyfunc code stored with the model (pipeline/inference/pyfunc.py), so a model store must be writable
only by people the forecasts trust.
"""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema

from pipeline.config import DataConfig, TrackingConfig
from pipeline.data.ids import id_columns_of
from pipeline.data.series import OBSERVED, SERIES_ID, TARGET, TIME, Series
from pipeline.data.static import side_file_columns
from pipeline.data.windows import Split
from pipeline.errors import ConfigError, first_line, redact
from pipeline.inference import batch
from pipeline.inference.model_format import SPEC_FILE, WEIGHTS_FILE, ModelSpec, check_digests, file_digests, read_model
from pipeline.inference.streaming import SeriesStream
from pipeline.model.network import Forecaster
from pipeline.tracking.store import library_version, reachable

DIGESTS_TAG = "model.sha256"
# MLflow's models-from-code file, and the code logged with it: the whole package, so that MLflow's tools load the
# model where the pipeline is not installed.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_entry.py")
PACKAGE = Path(__file__).resolve().parents[1]
# What the pyfunc imports: pinned as MLflow would pin them.
REQUIREMENTS = ["torch", "numpy", "pandas", "pyarrow", "scikit-learn", "hydra-core", "mlflow"]
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass
class SavedModel:
    """A model read back: its spec and its network, and where it came from."""

    spec: ModelSpec
    network: Forecaster
    run_id: str | None = None
    version: str | None = None  # the registry version, for models:/ URIs

    @property
    def data(self) -> DataConfig:
        return self.spec.data_config()

    @property
    def features(self) -> dict[str, list[str]]:
        """The network's input columns in order (ModelSpec.features)."""
        return self.spec.features

    def forecast(self, frame: pd.DataFrame, source: str = "input frame", time_zone: str | None = None,
                 samples: int = 0, seed: int = 0) -> pd.DataFrame:
        """The next `horizon` steps after each series' last observation (or `samples` sample paths of them, from
        `seed`): see pipeline.inference.batch.forecast."""
        return batch.forecast(self.spec, self.network, frame, source, time_zone, samples, seed)

    def future_frame(self, history: pd.DataFrame, source: str = "input frame", time_zone: str | None = None
                     ) -> pd.DataFrame:
        """The future rows to fill in and append to `history`: see pipeline.inference.batch.future_frame."""
        return batch.future_frame(self.spec, history, source, time_zone)

    def stream(self, series_id: str | list[str]) -> SeriesStream:
        """One series, updated with each new observation and forecast in O(1) (pipeline/inference/streaming.py)."""
        return SeriesStream(self.spec, self.network, series_id)


def input_example(series: Series, split: Split, data: DataConfig, lookback: int, horizon: int) -> pd.DataFrame:
    """Up to `lookback` rows of one series before its test block, in the file's own columns, and for a model
    that reads known-future covariates the `horizon` future rows after them (the target empty): a request as
    MLflow's tools send one, times as ISO 8601 text in the zone the file used, ids as text."""
    rows = series.frame[series.frame[SERIES_ID] == split.series_id].drop(columns=OBSERVED, errors="ignore")
    test_start = split.test_start - split.first
    ahead = horizon if data.future_covariates else 0
    rows = rows.iloc[max(0, test_start - lookback):test_start + ahead].copy()
    if ahead:
        rows.iloc[-ahead:, rows.columns.get_indexer([TARGET, *data.covariates])] = np.nan
    if series.time_zone is not None:
        rows = rows.assign(**{TIME: rows[TIME].dt.tz_convert(series.time_zone)})
    names = {TIME: data.time_column, TARGET: data.target_column}
    example = pd.concat([id_columns_of(rows[SERIES_ID], data.id_column),
                         rows.drop(columns=[SERIES_ID]).rename(columns=names)], axis=1)
    return as_text_times(example, data.time_column)


def as_text_times(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Times as ISO 8601 text, with their UTC offset when zoned: what CSV and JSON requests carry."""
    return frame.assign(**{column: frame[column].map(pd.Timestamp.isoformat)})


def log_model(artifacts: dict[str, str], example: pd.DataFrame, model: SavedModel) -> str:
    """Log the pyfunc with its input example (whose forecast gives the signature's outputs) and its code: the
    pipeline package, so it loads where the pipeline is not installed. Then record the digest of every file it
    stored as the run's `model.sha256` tag. Returns the model's URI."""
    output = as_text_times(model.forecast(example, "the input example"), model.data.time_column)
    # A likelihood model also draws sample paths: requests may ask with params {"samples": N, "seed": S}.
    params = {"samples": 0, "seed": 0} if model.network.likelihood else None
    signature = mlflow.models.infer_signature(example, output, params=params)
    signature.inputs = Schema(signature.inputs.inputs + attribute_columns(model))
    with no_progress_bars():  # MLflow downloads the model back to check the input example against it
        info = mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_CODE), artifacts=artifacts,
                                       code_paths=[str(PACKAGE)], input_example=example, signature=signature,
                                       pip_requirements=requirements())
    # The digests of what the store now holds, taken from the store itself.
    with tempfile.TemporaryDirectory() as folder:
        local = download(info.model_uri, folder)
        mlflow.set_tag(DIGESTS_TAG, json.dumps(file_digests(local), sort_keys=True))
    return info.model_uri


def attribute_columns(model: SavedModel) -> list[ColSpec]:
    """The side-file static attributes a request may carry as columns (pipeline/data/static.py), optional: without
    them a series keeps training's. Declared, or MLflow's schema check would drop them from every request."""
    static = model.spec.network.get("static")
    if not static:
        return []
    columns = side_file_columns(static, model.data)
    return [ColSpec(DataType.string if c in static["categories"] else DataType.double, c, required=False)
            for c in columns]


def requirements() -> list[str]:
    """What the pyfunc needs installed, at the versions that trained it (without a local build's "+cpu" label,
    which no package index has)."""
    return [f"{name}=={library_version(name).split('+')[0]}" for name in REQUIREMENTS]


def load_model(uri: str, cfg: TrackingConfig | str) -> SavedModel:
    """A model logged by pipeline.train (runs:/ID/model, models:/NAME@ALIAS, models:/NAME/N, a folder), from the
    store `cfg` names (a TrackingConfig, or a tracking URI), each file checked against the digests the tracking
    database recorded when it was logged. Read into memory; the downloaded copy is removed."""
    with tempfile.TemporaryDirectory(prefix="pipeline-model-") as folder:
        local, run_id, version = download_verified(uri, cfg, folder)
        spec, network = read_model(local / "artifacts" / SPEC_FILE, local / "artifacts" / WEIGHTS_FILE)
    return SavedModel(spec, network, run_id, version)


def download_verified(uri: str, cfg: TrackingConfig | str, folder: str) -> tuple[Path, str | None, str | None]:
    """The model at `uri` downloaded into `folder`, every file checked against the digests recorded when it was
    logged (a ConfigError naming the file otherwise); its folder, training run and registry version."""
    cfg = TrackingConfig(uri=cfg) if isinstance(cfg, str) else cfg
    mlflow.set_tracking_uri(reachable(cfg, may_fall_back=False).uri)  # the model lives there: no fallback
    try:
        local = download(uri, folder)
        expected, run_id, version, where = recorded_digests(MlflowClient(), uri, local)
    except (MlflowException, OSError) as error:
        raise ConfigError(f"cannot load model {uri} from {redact(cfg.uri)}: {first_line(error)}; check the model "
                          f"URI (or run_id) and tracking.uri") from error
    check_digests(local, expected, uri, where)
    return local, run_id, version


def download(uri: str, folder: str) -> Path:
    """The model's files into `folder`."""
    with no_progress_bars():
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Without MLflow's artifact progress bars (one per file, in every cron log), which it reads from the
    environment at each transfer."""
    previous = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PROGRESS_BAR]
        else:
            os.environ[PROGRESS_BAR] = previous


def recorded_digests(client: MlflowClient, uri: str, local: Path) -> tuple[dict, str | None, str | None, str]:
    """The digests recorded for the model at `uri`, its training run, its registry version, and a name for it."""
    version, where = None, None
    if uri.startswith("models:/") and not uri.removeprefix("models:/").startswith("m-"):
        name, _, alias = uri.removeprefix("models:/").partition("@")
        if alias:
            entry = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = name.rpartition("/")
            entry = client.get_model_version(name, number)
        version, run_id, where = entry.version, entry.run_id, f"{name} version {entry.version}"
        if DIGESTS_TAG in entry.tags:  # copied there by pipeline.register
            return json.loads(entry.tags[DIGESTS_TAG]), run_id, version, where
    elif uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/")[0]
    elif uri.startswith("models:/m-"):
        run_id = client.get_logged_model(uri.removeprefix("models:/").split("/")[0]).source_run_id
    else:
        run_id = mlflow.models.Model.load(str(local)).run_id
    where = where or f"the model of run {run_id}"
    tags = client.get_run(run_id).data.tags if run_id else {}
    if DIGESTS_TAG not in tags:
        raise ConfigError(f"model {uri}: {where} has no {DIGESTS_TAG} tag, so its files cannot be checked; load "
                          f"only models that pipeline.train logged into {redact(mlflow.get_tracking_uri())}")
    return json.loads(tags[DIGESTS_TAG]), run_id, version, where
