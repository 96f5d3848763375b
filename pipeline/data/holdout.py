"""The user's file without its test block: what a choice made on the data trains on (experiment=auto), so that
nothing chosen ever saw a value of the test block."""

from pathlib import Path

import pandas as pd

from pipeline.config import DataConfig
from pipeline.data.ids import series_keys
from pipeline.data.load import read_table
from pipeline.data.series import SERIES_ID, TIME, Series
from pipeline.data.times import parse_times


def without_test_block(data: DataConfig, series: Series, test_steps: int, folder: Path) -> Path:
    """`data.path`'s rows before each series' test block (its last `test_steps` steps of `series`, the file as
    loaded), columns as the file has them, written as Parquet under `folder`; its path."""
    raw = read_table(Path(data.path), text_columns=list(data.id_column))
    times, _ = parse_times(raw[data.time_column], data.time_format, data.time_zone, data.path, data.time_column)
    keys = pd.Series(series_keys(raw, list(data.id_column), data.target_column, data.path)).astype(str)
    test_starts = series.frame.groupby(SERIES_ID, sort=False, observed=True)[TIME].nth(-test_steps)
    first_test = pd.Series(test_starts.to_numpy(), index=series.frame.loc[test_starts.index, SERIES_ID].astype(str))
    keep = (times.reset_index(drop=True) < first_test.reindex(keys).reset_index(drop=True)).to_numpy()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "without_test_block.parquet"
    raw[keep].to_parquet(path, index=False)
    return path
