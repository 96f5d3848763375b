"""Static covariates: attributes of each series that do not change over time (tourism's State and Purpose, a store's
size), from its id columns (data.static_from_ids) and from a side file with one row per series (data.static).

Text (and true/false) columns are categorical: each value seen in training gets a code from 1 (0 is kept for a
value training never saw, see pipeline/model/static.py); numeric columns are standardised over the training series.
The vocabularies and the numbers' mean and spread go into the network's arguments (the saved model's spec), the
table of codes and numbers into its weights.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import DataConfig
from pipeline.data.ids import id_columns_of, series_keys
from pipeline.data.load import read_table
from pipeline.errors import ConfigError, DataError


@dataclass
class StaticTable:
    categories: dict[str, list[str]]    # column -> the values seen in training (code k + 1 for values[k])
    numeric: dict[str, list[float]]     # column -> [mean, standard deviation] over the training series
    codes: np.ndarray                   # (series, categories) int64
    values: np.ndarray                  # (series, numeric) float32, standardised

    @property
    def spec(self) -> dict:
        """What the network is built from (pipeline.model.static.StaticInputs)."""
        return {"categories": self.categories, "numeric": self.numeric}


def static_columns(data: DataConfig) -> list[str]:
    """The id columns data.static_from_ids names: all of them for true, none for false."""
    chosen = data.static_from_ids
    if chosen is True:
        chosen = list(data.id_column)
    chosen = [str(c) for c in (chosen or [])]
    odd = [c for c in chosen if c not in data.id_column]
    if odd:
        raise ConfigError(f"data.static_from_ids names {odd[0]!r}, which is not an id column "
                          f"(data.id_column={list(data.id_column)}); name id columns, or true for all of them")
    return chosen


def static_attributes(data: DataConfig, series_ids: list[str]) -> pd.DataFrame | None:
    """One row per series of `series_ids` (in their order): its attributes from its ids and the side file; None
    when data.static_from_ids and data.static give none."""
    parts = []
    if static_columns(data):
        ids = id_columns_of(pd.Series(series_ids), list(data.id_column))
        parts.append(ids[static_columns(data)].reset_index(drop=True))
    if data.static:
        parts.append(side_file(data, series_ids))
    return pd.concat(parts, axis=1) if parts else None


def side_file(data: DataConfig, series_ids: list[str]) -> pd.DataFrame:
    """data.static's attribute columns, one row per series of `series_ids`, in their order."""
    path = Path(data.static)
    if not data.id_column:
        raise ConfigError("data.static gives attributes per series, but the file holds one series (no "
                          "data.id_column); drop data.static")
    table = read_table(path, text_columns=list(data.id_column), key="data.static")
    missing = [c for c in data.id_column if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no id column {missing[0]!r}; data.static needs the id columns "
                        f"{list(data.id_column)} and one row per series")
    keys = pd.Series(series_keys(table, list(data.id_column), data.target_column, str(path)))
    twice = keys[keys.duplicated()]
    if len(twice):
        raise DataError(f"{path}: series {twice.iloc[0]!r} has more than one row; give each series one row")
    attributes = table.drop(columns=list(data.id_column)).set_axis(keys.astype(str))
    absent = [s for s in series_ids if s not in attributes.index]
    if absent:
        raise DataError(f"{path}: series {absent[0]!r} has no row ({len(absent)} series lack one); give every "
                        f"series one row of attributes")
    return attributes.loc[series_ids].reset_index(drop=True)


def fit_static(attributes: pd.DataFrame, source: str) -> StaticTable:
    """Codes and standardised numbers of the training series' attributes."""
    categories, numeric, codes, values = {}, {}, [], []
    for column in attributes.columns:
        cells = attributes[column]
        if pd.api.types.is_numeric_dtype(cells) and not pd.api.types.is_bool_dtype(cells):
            if cells.isna().any():
                raise DataError(f"{source}: attribute {column!r} is empty for series row {int(cells.isna().argmax())}"
                                f"; give every series a value")
            mean, std = float(cells.mean()), float(cells.std(ddof=0)) or 1.0
            numeric[str(column)] = [mean, std]
            values.append(((cells - mean) / std).to_numpy(np.float32))
        else:
            text = cells.astype(str)
            categories[str(column)] = sorted(text.unique())
            codes.append(text.map({v: k + 1 for k, v in enumerate(categories[str(column)])}).to_numpy(np.int64))
    n = len(attributes)
    return StaticTable(categories, numeric,
                       np.stack(codes, axis=1) if codes else np.zeros((n, 0), np.int64),
                       np.stack(values, axis=1) if values else np.zeros((n, 0), np.float32))


def static_table(data: DataConfig, series_ids: list[str]) -> StaticTable | None:
    """The training series' static table, or None when the config gives no attributes."""
    attributes = static_attributes(data, series_ids)
    return None if attributes is None else fit_static(attributes, data.static or "data.static_from_ids")
