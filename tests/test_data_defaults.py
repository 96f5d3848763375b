"""Window and split lengths follow the data when the user gives none (pipeline/data/defaults.py): each shipped data
set, given alone, gets the lengths its hand-made recipe chose; short series shrink the blocks instead of failing; a
length the user gives wins. (A daily file of stores training with no length given: tests/test_auto.py.)"""

import logging

import pytest

from pipeline.config import DataConfig, SplitConfig, WindowConfig, to_config
from pipeline.data.defaults import resolve_windowing
from pipeline.data.load import load_series, validate_frame
from tests.helpers import compose_config, daily_stores


def lengths(window: WindowConfig, split: SplitConfig) -> tuple:
    return window.lookback, window.horizon, split.val_steps, split.test_steps


@pytest.mark.parametrize("data, expected", [
    ("vic_elec", (336, 48, 1344, 1344)),   # the default recipe's week in, day out, 28 days per block
    ("tourism", (8, 8, 8, 8)),             # conf/experiment/tourism.yaml
    ("us_gasoline", (104, 13, 104, 104)),  # conf/experiment/us_gasoline.yaml
    ("pbs", (24, 12, 12, 12)),             # conf/experiment/pbs.yaml
])
def test_each_shipped_data_set_given_alone_gets_the_lengths_its_own_recipe_chose(data, expected):
    cfg = to_config(compose_config(f"data={data}"))
    assert lengths(*resolve_windowing(cfg.window, cfg.split, load_series(cfg.data))) == expected


def test_short_series_shrink_the_blocks_to_whole_horizons_and_given_lengths_win(vic_elec, caplog):
    data = DataConfig(time_column="date", target_column="sales", id_column="store")
    series = validate_frame(daily_stores(vic_elec, 150), data, source="stores.csv")
    with caplog.at_level(logging.INFO, logger="pipeline.data.defaults"):
        window, split = resolve_windowing(WindowConfig(), SplitConfig(), series)
    # 28 + 14 + 2 x 3 x 14 = 126 <= 150 < 28 + 14 + 2 x 4 x 14: three origins a block, not eight
    assert lengths(window, split) == (28, 14, 42, 42)
    assert "window.lookback=28, window.horizon=14, split.val_steps=42, split.test_steps=42" in caplog.text
    assert "shrunk to fit the shortest series (150 steps)" in caplog.text
    given = resolve_windowing(WindowConfig(lookback=21), SplitConfig(test_steps=7), series)
    assert lengths(*given) == (21, 14, 98, 7)  # 21 + 14 + 7 + 98 = 140: seven origins fit beside the given ones
    whole = (WindowConfig(lookback=5, horizon=2), SplitConfig(val_steps=4, test_steps=4))
    assert resolve_windowing(*whole, series) == whole
