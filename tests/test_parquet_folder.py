"""data.path=<folder>: many Parquet files, one group of series each, windowed file by file onto disk."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import to_config
from pipeline.data.sources import load_windows
from pipeline.errors import DataError
from tests.helpers import SMALL, compose_config, run_stage


def groups(vic_elec: pd.DataFrame, n_series: int = 6) -> list[pd.DataFrame]:
    """Six series cut from the shipped data (1008 half-hours each, starting 500 steps apart), two per group."""
    series = [vic_elec.iloc[500 * k:500 * k + 1008].assign(series=f"s{k}") for k in range(n_series)]
    return [pd.concat(series[k:k + 2]) for k in range(0, n_series, 2)]


def config(path: Path):
    cfg = to_config(compose_config(f"data.path={path}", "data.id_column=series", *SMALL))
    return cfg.data, cfg.window, cfg.split


def test_a_folder_gives_the_windows_of_one_file_holding_every_series(vic_elec, tmp_path):
    folder = tmp_path / "groups"
    folder.mkdir()
    for number, group in enumerate(groups(vic_elec)):
        group.to_parquet(folder / f"group-{number}.parquet", index=False)
    pd.concat(groups(vic_elec)).to_parquet(tmp_path / "all.parquet", index=False)

    stacked_series, stacked, *_ = load_windows(*config(folder), scratch=tmp_path / "run")
    whole_series, whole, *_ = load_windows(*config(tmp_path / "all.parquet"), scratch=tmp_path / "run")
    assert stacked_series.rows == len(whole_series.frame) == 6 * 1008 and stacked_series.report["files"] == 3
    assert stacked.splits == whole.splits and stacked.scaler == whole.scaler
    assert torch.equal(stacked.values, whole.values) and np.array_equal(stacked.target, whole.target)
    assert np.array_equal(stacked.times, pd.DatetimeIndex(whole.times).tz_convert(None).to_numpy("datetime64[ns]"))
    assert torch.equal(stacked.train.starts, whole.train.starts)
    assert torch.equal(stacked.train[torch.arange(5)].x, whole.train[torch.arange(5)].x)
    # The arrays live in memory maps of files already removed from the run folder.
    assert list((tmp_path / "run").iterdir()) == []


def test_a_series_in_two_files_is_refused_naming_both(vic_elec, tmp_path):
    first, second, _ = groups(vic_elec)
    first.to_parquet(tmp_path / "a.parquet", index=False)
    pd.concat([second, first.iloc[:1008]]).to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(DataError, match=r"b.parquet: series 's0' is also in .*a.parquet"):
        load_windows(*config(tmp_path), scratch=tmp_path / "run")


def test_a_file_on_another_grid_is_refused_naming_it(vic_elec, tmp_path):
    first, second, _ = groups(vic_elec)
    first.to_parquet(tmp_path / "a.parquet", index=False)
    second.iloc[::2].to_parquet(tmp_path / "b.parquet", index=False)  # hourly
    with pytest.raises(DataError, match=r"b.parquet"):
        load_windows(*config(tmp_path), scratch=tmp_path / "run")


@pytest.mark.slow
def test_training_on_a_folder_of_parquet_files(vic_elec, tmp_path, tracking_uri):
    folder = tmp_path / "groups"
    folder.mkdir()
    for number, group in enumerate(groups(vic_elec, 4)):
        group.to_parquet(folder / f"group-{number}.parquet", index=False)
    done = run_stage("pipeline.train", f"data.path={folder}", "data.id_column=series", *SMALL,
                     f"tracking.uri={tracking_uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    run = MlflowClient(tracking_uri).get_run(json.loads(done.stdout)["run_id"])
    assert run.info.status == "FINISHED"
    assert (run.data.tags["data.series_trained"], run.data.tags["data.rows"], run.data.tags["data.files"]) == (
        "4", str(4 * 1008), "2")
    assert not list((tmp_path / "run").glob(".windows-*"))
