"""Window and split settings that follow the data: when the user leaves window.lookback, window.horizon,
split.val_steps or split.test_steps unset (null, the schema's default), each is derived from the loaded data's
frequency and seasonal period, as the shipped data sets' own recipes chose them, and stated in the log. A value the
user gives always wins.

    sub-daily (d steps a day)   lookback a week (7 d)   horizon a day (d)   blocks of 28 days (28 origins)
    daily                       4 weeks (28)            2 weeks (14)        8 horizons (112 days)
    weekly                      2 years (104)           a quarter (13)      8 horizons (104 weeks)
    monthly                     2 years (24)            a year (12)         1 horizon (12 months)
    quarterly                   2 years (8)             2 years (8)         1 horizon
    another period p > 1        4 p                     p                   8 horizons
    no period (yearly, ...)     8                       6                   1 horizon

Every derived lookback is a multiple of 4, so the default recipe's segments of 4 divide it. When the shortest series
cannot hold the lookback, the horizon and both blocks, the blocks shrink to as many whole horizons as it can hold
(at least one), rather than refuse every series.
"""

import logging
from dataclasses import dataclass, replace

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.config import SplitConfig, WindowConfig
from pipeline.data.series import SERIES_ID, Series

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    lookback: int
    horizon: int
    origins: int  # forecasts from each series in each held-out block: the block is this many horizons


def recipe_for(freq: str, seasons: list[int]) -> Recipe:
    """The table above, for a frequency (a pandas offset alias) and its seasonal periods."""
    offset = pd.tseries.frequencies.to_offset(freq)
    try:
        step = pd.Timedelta(offset)
    except ValueError:  # calendar offsets: months, quarters, years (and business days)
        step = None
    day = pd.Timedelta("1D")
    if step is not None and step < day:
        per_day = max(1, day // step)
        return Recipe(7 * per_day, per_day, 28)
    if step == day:
        return Recipe(28, 14, 8)
    if step == 7 * day or offset.name.startswith("W"):  # W-MON and the like have no fixed length for pandas
        return Recipe(104, 13, 8)
    period = min(seasons) if seasons else 1
    if period == 12:
        return Recipe(24, 12, 1)
    if period == 4:
        return Recipe(8, 8, 1)
    if period > 1:
        return Recipe(4 * period, period, 8)
    return Recipe(8, 6, 1)


def lengths(window: WindowConfig, split: SplitConfig) -> dict[str, int | None]:
    """The four lengths this module derives, by config key."""
    return {"window.lookback": window.lookback, "window.horizon": window.horizon,
            "split.val_steps": split.val_steps, "split.test_steps": split.test_steps}


def record_lengths(cfg: DictConfig, window: WindowConfig, split: SplitConfig) -> None:
    """Write the lengths into the composed config: what a run's params and config.yaml then record."""
    for key, value in lengths(window, split).items():
        OmegaConf.update(cfg, key, value)


def resolve_windowing(window: WindowConfig, split: SplitConfig, series: Series) -> tuple[WindowConfig, SplitConfig]:
    """`window` and `split` with every unset (None) length derived from `series` (its frequency, seasons and
    shortest series); unchanged when all are given."""
    unset = [name for name, value in lengths(window, split).items() if value is None]
    if not unset:
        return window, split
    recipe = recipe_for(series.freq, series.seasons)
    lookback = window.lookback if window.lookback is not None else recipe.lookback
    horizon = window.horizon if window.horizon is not None else recipe.horizon
    origins = recipe.origins
    shortest = int(series.frame.groupby(SERIES_ID, sort=False, observed=True).size().min())
    given = sum(steps for steps in (split.val_steps, split.test_steps) if steps is not None)
    unset_blocks = (split.val_steps is None) + (split.test_steps is None)
    while origins > 1 and unset_blocks and lookback + horizon + given + unset_blocks * origins * horizon > shortest:
        origins -= 1
    block = origins * horizon
    window = replace(window, lookback=lookback, horizon=horizon)
    split = replace(split, val_steps=split.val_steps if split.val_steps is not None else block,
                    test_steps=split.test_steps if split.test_steps is not None else block)
    values = lengths(window, split)
    shrunk = f", shrunk to fit the shortest series ({shortest} steps)" if origins < recipe.origins else ""
    log.info("from the data (freq %s, seasonal periods %s): %s (blocks of %d origins each%s); give any of them to "
             "choose it", series.freq, series.seasons, ", ".join(f"{name}={values[name]}" for name in unset),
             origins, shrunk)
    return window, split
