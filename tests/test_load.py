"""What each data.* policy does to a file, and what it counts."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import DataConfig, Gaps, Missing, ShortSeries
from pipeline.data.ids import id_columns_of
from pipeline.data.load import load_series, read_table, validate_frame
from pipeline.data.windows import make_windows
from pipeline.errors import DataError
from tests.helpers import hourly, hourly_config


def test_unsorted_rows_are_sorted_and_counted():
    frame = pd.concat([hourly(series="b"), hourly(series="a")]).sample(frac=1, random_state=0)
    series = validate_frame(frame, hourly_config(), source="test")
    assert series.frame["series_id"].is_monotonic_increasing
    assert series.frame.groupby("series_id")["time"].apply(lambda t: t.is_monotonic_increasing).all()
    assert series.report["rows_out_of_order"] > 0


@pytest.mark.parametrize("policy, expected", [(Missing.interpolate, 105.0), (Missing.ffill, 104.0),
                                              (Missing.zero, 0.0)])
def test_missing_values_are_filled_by_the_configured_policy(policy, expected):
    frame = hourly()
    frame.loc[5, "load"] = np.nan
    series = validate_frame(frame, hourly_config(missing=policy), source="test")
    assert series.frame["target"].iloc[5] == expected
    assert series.report["values_filled"] == 1


def test_gaps_are_filled_on_the_grid_then_by_the_missing_policy():
    frame = hourly().drop(index=[10, 11, 12])
    series = validate_frame(frame, hourly_config(gaps=Gaps.fill, missing=Missing.interpolate, freq="h"), source="t")
    assert len(series.frame) == 30
    assert series.frame["target"].tolist() == [float(100 + i) for i in range(30)]
    assert series.report == {"gap_rows_filled": 3, "values_filled": 3}


def test_frequency_is_inferred_despite_gaps():
    frame = hourly().drop(index=[10, 11, 12])
    series = validate_frame(frame, hourly_config(gaps=Gaps.fill, missing=Missing.ffill), source="test")
    assert series.freq == "h" and series.season == 24


def test_utc_offsets_across_a_daylight_saving_change_become_one_regular_utc_grid():
    local = pd.date_range("2024-03-30 20:00", periods=12, freq="h", tz="Europe/Berlin")
    frame = pd.DataFrame({"id": "a", "when": local.strftime("%Y-%m-%dT%H:%M:%S%z"), "load": np.arange(12.0)})
    series = validate_frame(frame, hourly_config(), source="test")
    assert str(series.frame["time"].dt.tz) == "UTC" and series.freq == "h"


def test_year_quarter_strings_and_several_id_columns(tmp_path):
    path = tmp_path / "quarters.csv.gz"
    pd.DataFrame({"Quarter": [f"{y} Q{q}" for y in (2000, 2001) for q in (1, 2, 3, 4)] * 2,
                  "Region": ["North"] * 8 + ["South"] * 8, "Purpose": "Visiting",
                  "Trips": np.arange(16.0)}).to_csv(path, index=False)
    series = load_series(DataConfig(path=str(path), time_column="Quarter", target_column="Trips",
                                    id_column=["Region", "Purpose"]))
    assert series.series_ids == ['["North", "Visiting"]', '["South", "Visiting"]']
    assert series.freq == "QS-JAN" and series.season == 4
    assert series.frame["time"].iloc[1] == pd.Timestamp("2000-04-01")
    ids = id_columns_of(series.frame["series_id"], ["Region", "Purpose"])
    assert ids.iloc[-1].tolist() == ["South", "Visiting"]


def test_series_keys_are_made_per_series_and_sorted_as_text_whatever_the_file_order():
    frame = pd.concat([hourly(series=s).assign(kind=k) for s, k in [(10, "x"), (9, "y"), (9, "x"), (10, "y")]])
    series = validate_frame(frame.iloc[::-1], hourly_config(id_column=["id", "kind"]), source="test")
    assert series.series_ids == ['["10", "x"]', '["10", "y"]', '["9", "x"]', '["9", "y"]']
    assert series.frame.groupby("series_id", observed=True).size().tolist() == [30] * 4
    assert series.frame["target"].iloc[:3].tolist() == [100.0, 101.0, 102.0]


def test_ids_are_read_as_the_text_the_file_holds(tmp_path):
    # "007" and "7" are two series, "NA" is an id (while an empty or "NA" value is still missing), and an id
    # holding the separator a join would use cannot be split in the wrong place or merge two series.
    rows = [("007", "North", "East / x"), ("7", "North / East", "x"), ("NA", "ä / b", "c"), ("x", "North", "y")]
    frame = pd.concat([hourly(12, key).assign(region=a, zone=b) for key, a, b in rows])
    frame.loc[frame.index == 3, "load"] = np.nan
    path = tmp_path / "ids.csv"
    frame.to_csv(path, index=False)
    for id_column in ["id", ["region", "zone"]]:
        data = hourly_config(path=str(path), id_column=id_column, missing=Missing.interpolate)
        series = load_series(data)
        ids = id_columns_of(series.frame["series_id"], data.id_column).drop_duplicates()
        expected = frame[data.id_column].drop_duplicates()
        assert sorted(map(tuple, ids.to_numpy().tolist())) == sorted(map(tuple, expected.to_numpy().tolist()))
        assert series.report["values_filled"] == 4
    assert load_series(hourly_config(path=str(path), missing=Missing.interpolate)).series_ids == ["007", "7", "NA", "x"]


def test_a_parquet_id_column_of_any_type_is_text_and_a_file_without_one_is_named_by_its_target(tmp_path):
    frame = pd.concat([hourly(12, 7), hourly(12, 8)])
    frame.to_parquet(tmp_path / "ints.parquet")
    assert load_series(hourly_config(path=str(tmp_path / "ints.parquet"))).series_ids == ["7", "8"]
    assert validate_frame(hourly(12), hourly_config(id_column=None), source="test").series_ids == ["load"]
    mixed = pd.concat([hourly(12, 7), hourly(12, "7")])
    with pytest.raises(DataError, match=r"read as the same series id '7'; give the id column one type"):
        validate_frame(mixed, hourly_config(), source="test")


def test_times_without_offsets_are_read_in_data_time_zone_and_an_ambiguous_hour_is_refused():
    # Melbourne's clocks go back at 03:00 on 2024-04-07: 02:00-02:59 happens twice.
    local = hourly(6, start="2024-04-06 20:00")
    series = validate_frame(local, hourly_config(time_zone="Australia/Melbourne"), source="test")
    assert series.time_zone == "Australia/Melbourne" and str(series.frame["time"].dt.tz) == "UTC"
    assert series.frame["time"].iloc[0] == pd.Timestamp("2024-04-06 09:00", tz="UTC")
    assert validate_frame(local, hourly_config(), source="test").time_zone is None
    with pytest.raises(DataError, match=r"column 'when': .*data.time_zone=Australia/Melbourne \(an hour repeated"):
        validate_frame(hourly(6, start="2024-04-07 00:00"), hourly_config(time_zone="Australia/Melbourne"), source="t")
    with pytest.raises(DataError, match="data.time_zone='Mars/Olympus' is not a time zone name"):
        validate_frame(local, hourly_config(time_zone="Mars/Olympus"), source="test")


def test_a_sorted_file_reports_no_reordering():
    series = validate_frame(pd.concat([hourly(series="a"), hourly(series="b")]), hourly_config(), source="test")
    assert "rows_out_of_order" not in series.report


@pytest.mark.parametrize("name", ["wide.csv", "wide.parquet"])
def test_only_the_configured_columns_are_read_and_a_missing_one_is_named_beside_all(tmp_path, name):
    path = tmp_path / name
    frame = hourly().assign(notes="free text", extra=1)
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path)
    assert list(read_table(path, ["when", "load"]).columns) == ["when", "load"]
    with pytest.raises(DataError, match=r"column 'temp' not found \(columns: \['id', 'when', 'load', 'notes', "):
        load_series(hourly_config(path=str(path), covariates=["temp"]))


def test_csv_and_parquet_load_the_same(tmp_path):
    frame = hourly()
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_parquet(tmp_path / "f.parquet")
    a, b = (load_series(hourly_config(path=str(tmp_path / name))).frame for name in ("f.csv", "f.parquet"))
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_short_series_are_dropped_when_asked():
    frame = pd.concat([hourly(40, "a"), hourly(12, "short")])
    series = validate_frame(frame, hourly_config(), source="test")
    windows = make_windows(series, 8, 4, 1, 4, 4, calendar=False, short_series=ShortSeries.drop)
    assert [s.series_id for s in windows.splits] == ["a"]
    assert np.isfinite(windows.target).all() and len(windows.target) == 40


def test_short_series_are_left_padded_and_windows_know_their_real_length():
    frame = pd.concat([hourly(40, "a"), hourly(14, "short")])
    series = validate_frame(frame, hourly_config(), source="test")
    windows = make_windows(series, 8, 4, 1, 4, 4, calendar=False, short_series=ShortSeries.pad)
    short = windows.splits[1]
    assert short.pad == 7
    padded = windows.train.starts >= short.first - short.pad
    batch = windows.train[padded.nonzero().flatten().tolist()]
    # 6 training rows: the first window has 1 real input step, the last (4 + 1 + 1) ... up to 2
    assert batch.lengths.tolist() == [1, 2]
    assert (batch.x[0, :7] == 0).all()
    # Padding rows never mix with the neighbouring series: they are zero and NaN, not series a's tail.
    assert np.isnan(windows.target[short.first - short.pad:short.first]).all()


def test_a_series_too_short_even_to_pad_is_an_error():
    frame = pd.concat([hourly(40, "a"), hourly(9, "tiny")])
    series = validate_frame(frame, hourly_config(), source="file.csv")
    with pytest.raises(DataError, match="file.csv: series 'tiny' has 9 steps"):
        make_windows(series, 8, 4, 1, 4, 4, calendar=False, short_series=ShortSeries.pad)
