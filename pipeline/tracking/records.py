"""What a run records besides its metrics: its name, the resolved config as params (and whole), what it trained on
and what the data.* policies did, and tables as Parquet artifacts."""

import hashlib
import secrets
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from pipeline.data.series import OBSERVED, SERIES_ID, TARGET, TIME, Series
from pipeline.data.windows import Windows
from pipeline.errors import redact

# Overrides that say where a run is recorded or written, not what it trains: never in its name.
PLUMBING = ("tracking.", "hydra.", "resume=", "threads=")


def run_name(cell: str, overrides: list[str]) -> str:
    """What a training run is called in MLflow: its cell, the overrides that change what it trains (a data file by
    its name), and four hex digits from the OS's randomness, so runs never share a name. (MLflow's own random
    names come from the random module, which seeding has just reset: every seed-0 run was called the same.)"""
    said = []
    for override in overrides:
        override = override.lstrip("+")
        if override.startswith(PLUMBING):
            continue
        key, _, value = override.partition("=")
        said.append(f"{key}={Path(value).name}" if key == "data.path" else override)
    return " ".join([cell, *said, secrets.token_hex(2)])


# Keys that say how a run is recorded or shown, not what it trains: in config.yaml, not among the params.
PLUMBING_PARAMS = ("tracking.", "resume", "threads", "hparams_search", "trainer.enable_progress_bar",
                   "trainer.enable_model_summary", "trainer.log_every_n_steps")


def redact_values(tree: Any) -> Any:
    """A resolved config with the user info of every URI in it replaced (pipeline.errors.redact)."""
    if isinstance(tree, dict):
        return {key: redact_values(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [redact_values(value) for value in tree]
    return redact(tree) if isinstance(tree, str) else tree


def log_config(config: dict[str, Any], yaml_text: str) -> None:
    """The resolved config as flattened params ({"model": {"cell": ..}} -> "model.cell"), those that change the
    model only, and whole as config.yaml."""
    params = pd.json_normalize(config, sep=".").iloc[0].to_dict()
    mlflow.log_params({key: value for key, value in params.items() if not key.startswith(PLUMBING_PARAMS)})
    mlflow.log_text(yaml_text, "config.yaml")


def log_data_report(series: Series, windows: Windows, time_column: str, target_column: str) -> None:
    """What was trained on, and what the data.* policies did, as tags (`data.gap_rows_filled`, ...)."""
    tags = {"data.series_trained": len(windows.splits), "data.rows": series.rows or len(series.frame),
            "data.freq": series.freq, "data.season": ",".join(map(str, series.seasons)),
            "data.train_windows": len(windows.train), "data.val_windows": len(windows.val)}
    tags |= {f"data.{name}": count for name, count in series.report.items()}
    if windows.observed is not None:  # filled targets each block's loss and scores skip
        filled = ~windows.observed
        for block, (lo, hi) in {"train": ("first", "val_start"), "val": ("val_start", "test_start"),
                                "test": ("test_start", "end")}.items():
            tags[f"data.{block}_targets_filled"] = int(sum(filled[getattr(s, lo):getattr(s, hi)].sum()
                                                           for s in windows.splits))
    if Path(series.source).is_file():
        tags["data.sha256"] = file_sha256(Path(series.source))
    mlflow.set_tags(tags)
    # The training data as an MLflow dataset (name, digest, source, schema) in the run's Datasets panel.
    frame = series.frame.drop(columns=OBSERVED, errors="ignore").rename(
        columns={TIME: time_column, TARGET: target_column})
    with warnings.catch_warnings():
        # MLflow registers its local-file source under two schemes (none and file://), then warns on every path
        # that both match: the same class either way.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        dataset = mlflow.data.from_pandas(frame.assign(**{SERIES_ID: frame[SERIES_ID].astype(str)}),
                                          source=str(Path(series.source).resolve()), name=Path(series.source).name,
                                          targets=target_column)
    mlflow.log_input(dataset, context="training")


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    """A table as a Parquet artifact of the open run, e.g. "backtest/test.parquet"."""
    folder, name = Path(artifact_path).parent, Path(artifact_path).name
    with tempfile.TemporaryDirectory() as directory:
        frame.to_parquet(Path(directory) / name, index=False)
        mlflow.log_artifact(str(Path(directory) / name), str(folder) if str(folder) != "." else None)
