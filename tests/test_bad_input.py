"""Each bad file stops `python -m pipeline.train` before training: exit 2, one clear line, nothing left behind."""


import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import run_stage

SMALL = ["window.lookback=8", "window.horizon=4", "split.val_steps=4", "split.test_steps=4", "model.segment_len=null",
         "model.hidden_size=4", "trainer.max_steps=2", "trainer.val_check_interval=1"]


def hourly(n: int = 40, series: str = "a") -> pd.DataFrame:
    return pd.DataFrame({"id": series, "when": pd.date_range("2024-03-01", periods=n, freq="h").astype(str),
                         "load": np.linspace(10.0, 20.0, n), "temp": np.linspace(0.0, 5.0, n)})


def with_cell(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.astype({column: object})
    frame.loc[row, column] = value
    return frame


CASES = {
    "missing_column": (hourly().drop(columns=["load"]), [], "column 'load' not found"),
    "unparsable_timestamp": (with_cell(hourly(), 5, "when", "yesterday noon"), [],
                             "column 'when' row 5: cannot parse timestamp 'yesterday noon'"),
    "mixed_time_zones": (with_cell(hourly(), 3, "when", "2024-03-01 03:00:00+10:00"), [],
                         "mixed time zones"),
    "duplicate_rows": (pd.concat([hourly(), hourly().iloc[[7]]]), [],
                       "series 'a' has two rows at 2024-03-01 07:00:00"),
    "non_numeric_target": (with_cell(hourly(), 9, "load", "12,5 MW"), [],
                           "column 'load' row 9: value '12,5 MW' is not a finite number"),
    "infinite_target": (with_cell(hourly(), 11, "load", np.inf), [],
                        "column 'load' row 11: value 'inf' is not a finite number"),
    "missing_value": (with_cell(hourly(), 12, "load", np.nan), [],
                      "column 'load' of series 'a' is missing at 2024-03-01 12:00:00"),
    "missing_covariate": (with_cell(hourly(), 13, "temp", None), ["data.covariates=[temp]"],
                          "column 'temp' of series 'a' is missing at 2024-03-01 13:00:00"),
    "gap_in_grid": (hourly().drop(index=[20, 21]), ["data.freq=h"],
                    "series 'a' has a gap in its h grid at 2024-03-01 20:00:00"),
    "daylight_saving_gap": (pd.DataFrame({"id": "a", "when": pd.date_range(
        "2024-03-31 00:00", periods=40, freq="h", tz="Europe/Berlin").tz_localize(None).astype(str),
        "load": np.arange(40.0), "temp": 0.0}), ["data.freq=h"], "daylight-saving"),
    "frequency_not_inferable": (hourly().drop(index=[3, 8, 9, 15, 27]).assign(
        when=lambda f: pd.to_datetime(f["when"]).add(pd.to_timedelta(np.arange(len(f)) % 3, "min")).astype(str)),
        [], "cannot infer the time step"),
    "series_too_short": (pd.concat([hourly(40, "a"), hourly(14, "b")]), [],
                         "series 'b' has 14 steps: too short"),
    "empty_file": (hourly().iloc[:0], [], "has no rows"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_file_exits_non_zero_with_one_line_and_leaves_nothing_behind(case, tmp_path, tracking_uri):
    frame, overrides, message = CASES[case]
    path = tmp_path / f"{case}.csv"
    frame.to_csv(path, index=False)
    run_dir = tmp_path / "run"
    done = run_stage("pipeline.train", f"data.path={path}", "data.time_column=when", "data.target_column=load",
                     "data.id_column=id", f"tracking.uri={tracking_uri}", f"hydra.run.dir={run_dir}", *SMALL,
                     *overrides)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and message in errors[0] and str(path) in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not MlflowClient(tracking_uri).get_experiment_by_name("pipeline")
    assert not {"metrics.json", "checkpoints", "model"} & {p.name for p in run_dir.iterdir()}


def test_zero_byte_file_is_an_empty_file(tmp_path):
    from pipeline.config import DataConfig
    from pipeline.data.load import load_series
    from pipeline.errors import DataError

    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty.csv: the file has no rows"):
        load_series(DataConfig(path=str(path)))


def write_truncated_gzip(path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_files_are_refused_in_one_line_naming_the_file_and_what_to_do(tmp_path, vic_elec):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import DataConfig
    from pipeline.data.load import load_series
    from pipeline.errors import DataError

    truncated = tmp_path / "cut.csv.gz"
    write_truncated_gzip(truncated, vic_elec.iloc[:2000])
    semicolons = tmp_path / "excel.csv"
    vic_elec.iloc[:100].to_csv(semicolons, index=False, sep=";", decimal=",")
    structs = tmp_path / "structs.parquet"
    pq.write_table(pa.table({"time": vic_elec["time"].iloc[:100], "demand": vic_elec["demand"].iloc[:100],
                             "site": pa.array([{"state": "VIC", "n": 1}] * 100)}), structs)
    cases = [(DataConfig(path=str(truncated)), "cut.csv.gz: cannot be read (Compressed file ended"),
             (DataConfig(path=str(semicolons)), "the file seems separated by ';' (perhaps with ',' decimals)"),
             (DataConfig(path=str(structs), id_column="site"), "id column 'site' holds nested values")]
    for config, message in cases:
        with pytest.raises(DataError) as raised:
            load_series(config)
        text = str(raised.value)
        assert message in text and config.path in text and "\n" not in text


def test_epoch_timestamps_are_read_with_time_format_unix_and_hinted_without(tmp_path, vic_elec):
    from pipeline.config import DataConfig
    from pipeline.data.load import load_series
    from pipeline.errors import DataError

    frame = vic_elec.iloc[:200].assign(time=lambda f: (f["time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1s"))
    path = tmp_path / "epoch.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="epoch seconds or milliseconds\\? set data.time_format=unix"):
        load_series(DataConfig(path=str(path)))
    series = load_series(DataConfig(path=str(path), time_format="unix"))
    assert series.frame["time"].equals(vic_elec["time"].iloc[:200].dt.tz_convert("UTC").reset_index(drop=True)
                                       .astype(series.frame["time"].dtype))
    assert series.time_zone == "UTC" and series.freq == "30min"


def test_a_strftime_time_format_also_reads_iso_text_as_a_saved_models_requests_carry_it(tmp_path):
    from pipeline.data.times import parse_times
    from pipeline.errors import DataError

    months, _ = parse_times(pd.Series(["1991 Jul", "1991 Aug", "1991-09-01T00:00:00"]), "%Y %b", None, "f.csv", "Month")
    assert list(months) == list(pd.date_range("1991-07-01", periods=3, freq="MS"))
    with pytest.raises(DataError, match="f.csv: column 'Month' row 1: cannot parse timestamp 'Agu 1991'"):
        parse_times(pd.Series(["1991 Jul", "Agu 1991"]), "%Y %b", None, "f.csv", "Month")
