"""A trained model as data: what it is on disk, how it is written, checked and read back, and the MLflow pyfunc
that MLflow's own tools serve it with.

On disk a model is an MLflow model folder holding model_spec.json (format version, data settings, window,
network hyperparameters, scaler, series, time zone) and weights.pt (tensors only). When it is logged, the SHA-256
of every file in that folder is recorded in the tracking database (the run's tag `model.sha256`, copied to the
registry version by pipeline.register), where the artifact store cannot change it. The pipeline's stages
download the folder, check every file against those digests, and build the network from the spec with
`torch.load(weights_only=True)`: nothing in the folder runs as code. MLflow's tools (`mlflow models serve`,
`mlflow models predict`, `spark_udf`) instead run the pyfunc code stored with the model, so a model store must be
writable only by people the forecasts trust.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from mlflow.tracking import MlflowClient

from pipeline import forecasting
from pipeline.config import DataConfig, TrackingConfig, WindowConfig, plain
from pipeline.errors import ConfigError, DataError, first_line
from pipeline.features import calendar_names
from pipeline.ids import SERIES_ID, id_columns_of
from pipeline.load import OBSERVED, TARGET, TIME, Series
from pipeline.network import RecurrentNetwork, build_network
from pipeline.scaling import Scaler
from pipeline.tracking import library_version, reachable
from pipeline.window import Split, Windows

FORMAT = 2  # 1: the spec without `format` (before digests, text ids and time zones); refused with a hint
SPEC_FILE, WEIGHTS_FILE = "model_spec.json", "weights.pt"
DIGESTS_TAG = "model.sha256"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE = Path(__file__).parent
# What the pyfunc imports (it carries the pipeline package itself as code): pinned as MLflow would pin them.
REQUIREMENTS = ["torch", "numpy", "pandas", "pyarrow", "scikit-learn", "hydra-core", "mlflow"]
# Written into a downloaded models:/ folder by MLflow's own downloader, after the digests were taken.
DOWNLOADER_FILES = {"registered_model_meta"}
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass
class ModelSpec:
    """All a forecast needs besides the weights, as plain JSON: never the current conf/."""

    format: int
    data: dict          # DataConfig fields, with freq and season resolved
    lookback: int
    horizon: int
    network: dict       # RecurrentNetwork's keyword arguments, exactly, and `members` for an ensemble
    scaler: dict        # Scaler fields, keyed by series
    series_ids: list    # training series keys, in the order of the series embedding
    time_zone: str | None  # the zone the training times were given in; None: wall-clock times without a zone

    @classmethod
    def read(cls, path: Path) -> "ModelSpec":
        try:
            raw = json.loads(Path(path).read_text())
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: not a model spec this pipeline wrote ({first_line(error)}); the model "
                              f"artifact is damaged or was altered: log the model again") from error
        if raw.get("format") != FORMAT:
            raise ConfigError(f"{path}: model format {raw.get('format', 1)}, but this pipeline reads format "
                              f"{FORMAT}; train the model again with this version (python -m pipeline.train)")
        keys = {f.name for f in fields(cls)}
        odd = sorted(set(raw) ^ keys)
        for part, kind in (("data", DataConfig), ("scaler", Scaler)):  # their keys become keyword arguments
            if not odd and isinstance(raw[part], dict):
                odd = [f"{part}.{key}" for key in sorted(set(raw[part]) - {f.name for f in fields(kind)})]
            elif not odd:
                odd = [part]
        if odd:
            raise ConfigError(f"{path}: key {odd[0]!r} is not what format {FORMAT} holds; the model artifact was "
                              f"altered: log the model again")
        return cls(**raw)


@dataclass
class SavedModel:
    """A model read back: its spec and its network, and where it came from."""

    spec: ModelSpec
    network: RecurrentNetwork
    run_id: str | None = None
    version: str | None = None  # the registry version, for models:/ URIs

    @property
    def data(self) -> DataConfig:
        return DataConfig(**self.spec.data)

    def forecast(self, frame: pd.DataFrame, source: str = "input frame", time_zone: str | None = None
                 ) -> pd.DataFrame:
        """The next `horizon` steps after each series' last observation: see pipeline.forecasting.forecast."""
        return forecasting.forecast(self, frame, source, time_zone)

    def future_frame(self, history: pd.DataFrame, source: str = "input frame", time_zone: str | None = None
                     ) -> pd.DataFrame:
        """The future rows to fill in and append to `history`: see pipeline.forecasting.future_frame."""
        return forecasting.future_frame(self, history, source, time_zone)

    def stream(self, series_id: str | list[str]):
        """A SeriesStream of one series: update it with each new observation, forecast in O(1) (streaming.py)."""
        from pipeline.streaming import SeriesStream  # it builds on this module

        return SeriesStream(self, series_id)

    @property
    def features(self) -> dict[str, list[str]]:
        """The network's input columns in order: `x` over the lookback (the scaled target, then the scaled
        covariates, then the calendar features) and `future` over the horizon (known-future covariates, calendar).
        Scaled columns are (value - center) / scale with the series' numbers in the spec's scaler."""
        data = self.data
        calendar = calendar_names(data.freq) if data.calendar else []
        return {"x": [data.target_column, *data.covariates, *data.future_covariates, *calendar],
                "future": [*data.future_covariates, *calendar]}


def model_spec(data: DataConfig, window: WindowConfig, series: Series, windows: Windows, network: dict) -> ModelSpec:
    """What a training run saves besides the weights: `network` is RecurrentNetwork's keyword arguments."""
    return ModelSpec(format=FORMAT, data=plain(data) | {"freq": series.freq, "season": series.seasons},
                     lookback=window.lookback, horizon=window.horizon, network=network,
                     scaler=asdict(windows.scaler), series_ids=[s.series_id for s in windows.splits],
                     time_zone=series.time_zone)


def write_model(directory: Path, spec: ModelSpec, network: RecurrentNetwork) -> dict[str, str]:
    """The spec and the network's tensors in `directory`; returns them as the pyfunc's artifacts."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=1, ensure_ascii=False))
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, directory / WEIGHTS_FILE)
    return {"spec": str(directory / SPEC_FILE), "weights": str(directory / WEIGHTS_FILE)}


def read_model(spec_path: Path, weights_path: Path) -> SavedModel:
    """The network built from the spec, with tensors only (weights_only: no pickled code runs); a damaged or
    altered file is a one-line ConfigError naming it."""
    spec = ModelSpec.read(spec_path)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated archive, a pickle holding more than tensors, ...
        raise ConfigError(f"{weights_path}: cannot be read as model weights ({first_line(error)}); the model "
                          f"artifact is damaged or was altered: log the model again") from error
    try:
        network = build_network(**spec.network)
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"{weights_path}: the weights do not fit the network its {SPEC_FILE} describes "
                          f"({first_line(error)}); log the model again") from error
    return SavedModel(spec, network.eval())


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` by relative path, but those MLflow's downloader adds."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in DOWNLOADER_FILES):
        with path.open("rb") as f:
            digests[path.relative_to(folder).as_posix()] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


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
    signature = mlflow.models.infer_signature(example, output)
    with no_progress_bars():  # MLflow downloads the model back to check the input example against it
        info = mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_CODE), artifacts=artifacts,
                                       code_paths=[str(PACKAGE)], input_example=example, signature=signature,
                                       pip_requirements=requirements())
    # The digests of what the store now holds, taken from the store itself.
    with tempfile.TemporaryDirectory() as folder:
        local = download(info.model_uri, folder)
        mlflow.set_tag(DIGESTS_TAG, json.dumps(file_digests(local), sort_keys=True))
    return info.model_uri


def requirements() -> list[str]:
    """What the pyfunc needs installed, at the versions that trained it (without a local build's "+cpu" label,
    which no package index has)."""
    return [f"{name}=={library_version(name).split('+')[0]}" for name in REQUIREMENTS]


def load_model(uri: str, cfg: TrackingConfig | str) -> SavedModel:
    """A model logged by pipeline.train (runs:/ID/model, models:/NAME@ALIAS, models:/NAME/N, a folder), from the
    store `cfg` names (a TrackingConfig, or a tracking URI), each file checked against the digests the tracking
    database recorded when it was logged. Read into memory; the downloaded copy is removed."""
    cfg = TrackingConfig(uri=cfg) if isinstance(cfg, str) else cfg
    mlflow.set_tracking_uri(reachable(cfg, may_fall_back=False).uri)  # the model lives there: no fallback
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="pipeline-model-") as folder:
        try:
            local = download(uri, folder)
            expected, run_id, version, where = recorded_digests(client, uri, local)
        except (MlflowException, OSError) as error:
            raise ConfigError(f"cannot load model {uri} from {cfg.uri}: {first_line(error)}; check the model URI "
                              f"(or run_id) and tracking.uri") from error
        check_digests(local, expected, uri, where)
        model = read_model(local / "artifacts" / SPEC_FILE, local / "artifacts" / WEIGHTS_FILE)
    model.run_id, model.version = run_id, version
    return model


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
                          f"only models that pipeline.train logged into {mlflow.get_tracking_uri()}")
    return json.loads(tags[DIGESTS_TAG]), run_id, version, where


def check_digests(local: Path, expected: dict[str, str], uri: str, where: str) -> None:
    """Every recorded file present and unchanged, and no file added."""
    found = file_digests(local)
    for name in sorted(set(expected) | set(found)):
        if found.get(name) != expected.get(name):
            change = ("is missing" if name not in found else "was added" if name not in expected
                      else "differs from the SHA-256 recorded when it was logged")
            raise ConfigError(f"model {uri} ({where}): file {name} {change}; the model store was altered: log "
                              f"the model again, and let only trusted people write to the store")


class RequestRefused(MlflowException):
    """A request the model refuses, answered by `mlflow models serve` with HTTP 400 and this one line.

    MLflow's scoring server rewrites the message of an error raised in predict to start with the whole request
    ("Failed to predict data '...'"); this error keeps its own line."""

    def __init__(self, message: str):
        self._line = message
        super().__init__(message, error_code=BAD_REQUEST)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass  # the scoring server's rewrite (see the class docstring)


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """The pyfunc MLflow's tools run: history rows in (the training file's columns, times as ISO 8601 text), the
    next `horizon` steps out, times as text in the input's zone."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = read_model(Path(context.artifacts["spec"]), Path(context.artifacts["weights"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            out = self.model.forecast(model_input, source="the request")
        except (DataError, ConfigError) as error:
            raise RequestRefused(str(error)) from None
        return as_text_times(out, self.model.data.time_column)

