"""The model format: what a trained model is on disk, and how it is written, checked and read back.

A model is an MLflow model folder holding model_spec.json (format version, data settings, window, network
hyperparameters, scaler, series, time zone) and weights.pt (tensors only). When it is logged, the SHA-256 of every
file in that folder is recorded in the tracking database (pipeline/inference/saved_model.py), where the artifact
store cannot change it; every load checks the files against those digests (check_digests) and builds the network
from the spec with `torch.load(weights_only=True)`: nothing in the folder runs as code.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from pipeline.config import DataConfig, WindowConfig, plain
from pipeline.data.features import calendar_names
from pipeline.data.scaling import Scaler
from pipeline.data.series import Series
from pipeline.data.windows import Windows
from pipeline.errors import ConfigError, first_line
from pipeline.model.ensemble import build_network
from pipeline.model.network import Forecaster

FORMAT = 2  # 1: the spec without `format` (before digests, text ids and time zones); refused with a hint
SPEC_FILE, WEIGHTS_FILE = "model_spec.json", "weights.pt"
# Written into a downloaded models:/ folder's root by MLflow's own downloader, after the digests were taken (a file
# of that name anywhere else is the model's, and checked).
DOWNLOADER_FILES = {"registered_model_meta"}


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

    def data_config(self) -> DataConfig:
        """The data settings the model was trained with (a fresh copy: a caller may change its path or zone)."""
        return DataConfig(**self.data)

    @property
    def features(self) -> dict[str, list[str]]:
        """The network's input columns in order: `x` over the lookback (the scaled target, then the scaled
        covariates, then the calendar features) and `future` over the horizon (known-future covariates, calendar).
        Scaled columns are (value - center) / scale with the series' numbers in the spec's scaler."""
        data = self.data_config()
        calendar = calendar_names(data.freq) if data.calendar else []
        return {"x": [data.target_column, *data.covariates, *data.future_covariates, *calendar],
                "future": [*data.future_covariates, *calendar]}


def model_spec(data: DataConfig, window: WindowConfig, series: Series, windows: Windows, network: dict) -> ModelSpec:
    """What a training run saves besides the weights: `network` is RecurrentNetwork's keyword arguments."""
    return ModelSpec(format=FORMAT, data=plain(data) | {"freq": series.freq, "season": series.seasons},
                     lookback=window.lookback, horizon=window.horizon, network=network,
                     scaler=asdict(windows.scaler), series_ids=[s.series_id for s in windows.splits],
                     time_zone=series.time_zone)


def write_model(directory: Path, spec: ModelSpec, network: Forecaster) -> dict[str, str]:
    """The spec and the network's tensors in `directory`; returns them as the pyfunc's artifacts."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=1, ensure_ascii=False))
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, directory / WEIGHTS_FILE)
    return {"spec": str(directory / SPEC_FILE), "weights": str(directory / WEIGHTS_FILE)}


def read_model(spec_path: Path, weights_path: Path) -> tuple[ModelSpec, Forecaster]:
    """The spec, and the network built from it with tensors only (weights_only: no pickled code runs); a damaged
    or altered file is a one-line ConfigError naming it."""
    spec = ModelSpec.read(spec_path)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated archive, a pickle holding more than tensors, ...
        raise ConfigError(f"{weights_path}: cannot be read as model weights ({first_line(error)}); the model "
                          f"artifact is damaged or was altered: log the model again") from error
    try:
        check_sizes(spec, state, weights_path)
        network = build_network(**spec.network)
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"{weights_path}: the weights do not fit the network its {SPEC_FILE} describes "
                          f"({first_line(error)}); log the model again") from error
    return spec, network.eval()


def check_sizes(spec: ModelSpec, state: dict[str, torch.Tensor], weights_path: Path) -> None:
    """The network the spec describes, built on the meta device (no memory), against the weights' shapes: a spec
    whose sizes were changed is refused before anything of its size is allocated."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build_network(**spec.network).state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    wrong = next((name for name in sorted(expected.keys() | found.keys()) if expected.get(name) != found.get(name)),
                 None)
    if wrong is not None:
        raise ConfigError(f"{weights_path}: the weights do not fit the network its {SPEC_FILE} describes ({wrong}: "
                          f"{found.get(wrong)} in the weights, {expected.get(wrong)} in the spec); the model artifact "
                          f"was altered: log the model again")


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` by relative path, but those MLflow's downloader adds."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and p.relative_to(folder).as_posix() not in DOWNLOADER_FILES):
        with path.open("rb") as f:
            digests[path.relative_to(folder).as_posix()] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def check_digests(local: Path, expected: dict[str, str], uri: str, where: str) -> None:
    """Every recorded file present and unchanged, and no file added."""
    found = file_digests(local)
    for name in sorted(set(expected) | set(found)):
        if found.get(name) != expected.get(name):
            change = ("is missing" if name not in found else "was added" if name not in expected
                      else "differs from the SHA-256 recorded when it was logged")
            raise ConfigError(f"model {uri} ({where}): file {name} {change}; the model store was altered: log "
                              f"the model again, and let only trusted people write to the store")
