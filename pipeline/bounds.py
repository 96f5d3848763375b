"""Allowed values of config keys: declared beside each key in pipeline/config.py (`lookback: int = bounded(336,
low=1)`), checked as soon as a stage's config is composed, before any data is read or any MLflow run opens."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.errors import ConfigError

# data.time_format values for epoch timestamps, and their unit.
EPOCH_FORMATS = {"unix": "s", "unix_ms": "ms"}


@dataclass(frozen=True)
class Bounds:
    """A numeric range (a list is checked value by value), plus values allowed besides it (-1: no limit)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()
    # An int count, or a float share in (0, 1] (Lightning's val_check_interval, limit_train_batches).
    share: bool = False

    def __call__(self, value: Any) -> str | None:
        values = value if isinstance(value, (list, tuple)) else [value]
        if all(self._allows(v) for v in values):
            return None
        return f"must be {'each ' if isinstance(value, (list, tuple)) else ''}{self}"

    def _allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also or (self.share and isinstance(value, float) and 0 < value <= 1):
            return True
        if self.share and isinstance(value, float):
            return False
        return ((self.low is None or value > self.low or (value == self.low and not self.low_open))
                and (self.high is None or value < self.high or (value == self.high and not self.high_open)))

    def __str__(self) -> str:
        low, high = (v if isinstance(v, int) or v is None else f"{v:g}" for v in (self.low, self.high))
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {low}"
        else:
            text = f"{'<' if self.high_open else '<='} {high}"
        text = f"an int {text} or a float in (0, 1]" if self.share else text
        return text + "".join(f" or {v}" for v in self.also)


def bounded(default: Any, **bounds: Any) -> Any:
    """A dataclass field with `default` whose values must lie within Bounds(**bounds)."""
    return checked(default, Bounds(**bounds))


def checked(default: Any, check: Callable[[Any], str | None]) -> Any:
    """A dataclass field with `default` whose non-null values `check` accepts (it returns None, or what is
    wrong)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"check": check})
    return field(default=default, metadata={"check": check})


def check_values(config: Any, path: str = "") -> None:
    """Every checked key of a config dataclass (and the dataclasses inside it); the first value out of range
    stops the stage in one line naming the key, the value and what it allows."""
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), f"{path}{f.name}"
        if dataclasses.is_dataclass(value):
            check_values(value, f"{name}.")
        elif value is not None and "check" in f.metadata and (wrong := f.metadata["check"](value)):
            raise ConfigError(f"{name}={value} is not allowed: it {wrong}")


def season_check(value: Any) -> str | None:
    """data.season: a period in steps, or a list of them ([]: derived from the frequency, as null)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        return None
    return "must be a period in steps >= 1, or a list of them ([48,336])"


def frequency_check(value: str) -> str | None:
    """data.freq: a pandas offset alias (30min, h, D, W, MS, QS)."""
    try:
        pd.tseries.frequencies.to_offset(value)
    except ValueError:
        return "must be a pandas offset alias, such as 30min, h, D, W, MS or QS"
    return None


def time_format_check(value: str) -> str | None:
    """data.time_format: a strftime format pandas parses with, or unix / unix_ms (epoch seconds, milliseconds)."""
    if value in EPOCH_FORMATS:
        return None
    sample = pd.Timestamp("2001-02-03 04:05:06")
    hint = (f"must be a strftime format pandas parses with (e.g. '%d/%m/%Y %H:%M'), or "
            f"{' / '.join(EPOCH_FORMATS)} for epoch seconds / milliseconds")
    if "%" not in value:
        return hint
    try:
        pd.to_datetime(pd.Series([sample.strftime(value)]), format=value)
    except (ValueError, TypeError):
        return hint
    return None
