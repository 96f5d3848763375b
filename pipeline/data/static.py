"""Static covariates: attributes of each series that do not change over time (tourism's State and Purpose, a store's
size), from its id columns (data.static_from_ids) and from a side file with one row per series (data.static).

Text (and true/false) columns are categorical: each value seen in training gets a code from 1 (0 is kept for a
value training never saw, see pipeline/model/static.py); numeric columns are standardised over the training series.
The vocabularies and the numbers' mean and spread go into the network's arguments (the saved model's spec), the
table of codes and numbers into its weights.

At forecast time a series keeps the attributes training saw, unless the forecast's input carries a side-file
attribute as a column (the same value on every row of a series: a store that moved region): then that value is
encoded with training's vocabulary and spread. A value training never saw gets code 0, which the network reads as
"no attribute" (a zero embedding), with a warning naming the series, column and value; never an error.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import DataConfig
from pipeline.data.ids import id_columns_of, series_keys
from pipeline.data.load import read_table
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)

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
            codes.append(category_codes(text, categories[str(column)]))
    n = len(attributes)
    return StaticTable(categories, numeric,
                       np.stack(codes, axis=1) if codes else np.zeros((n, 0), np.int64),
                       np.stack(values, axis=1) if values else np.zeros((n, 0), np.float32))


def category_codes(text: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Each value's code: k + 1 for vocabulary[k], 0 for a value the vocabulary lacks."""
    return text.map({v: k + 1 for k, v in enumerate(vocabulary)}).fillna(0).to_numpy(np.int64)


def static_table(data: DataConfig, series_ids: list[str]) -> StaticTable | None:
    """The training series' static table, or None when the config gives no attributes."""
    attributes = static_attributes(data, series_ids)
    return None if attributes is None else fit_static(attributes, data.static or "data.static_from_ids")


def side_file_columns(spec: dict, data: DataConfig) -> list[str]:
    """The attributes of a model's spec (its network's `static`) that came from a side file, not from the ids: the
    ones a forecast's input may give anew."""
    from_ids = set(static_columns(data))
    return [c for c in [*spec["categories"], *spec["numeric"]] if c not in from_ids]


def given_attributes(raw: pd.DataFrame, keys: pd.Series, columns: list[str], source: str) -> pd.DataFrame:
    """The side-file attributes a forecast's input carries as `columns`, one row per series (indexed by its key):
    each series must give one value on all its rows."""
    table = raw[columns].set_axis(keys.to_numpy())
    for column in columns:
        values = table[column].groupby(level=0, sort=False)
        varying = values.nunique() > 1  # future rows may leave it empty
        if varying.any():
            raise DataError(f"{source}: column {column!r} changes within series {varying.idxmax()!r}; a static "
                            f"attribute takes one value per series: give the same value on every row")
    return table.groupby(level=0, sort=False).first()


def encode_attributes(spec: dict, attributes: pd.DataFrame, source: str
                      ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """The columns of `attributes` (one row per series) that the spec has, encoded with training's vocabularies
    and spread: {attribute index: (S,) codes}, an unseen category 0 (the network's fallback), and {numeric index:
    (S,) standardised values}."""
    codes, values = {}, {}
    for i, (column, vocabulary) in enumerate(spec["categories"].items()):
        if column not in attributes:
            continue
        text = attributes[column].astype(str)
        codes[i] = category_codes(text, vocabulary)
        unseen = text[codes[i] == 0]
        if len(unseen):
            log.warning("%s: attribute %r of series %r is %r, a value training never saw (%d series); the model "
                        "reads it as no attribute (the fallback: a zero embedding)", source, column,
                        str(unseen.index[0]), unseen.iloc[0], len(unseen))
    for i, (column, (mean, std)) in enumerate(spec["numeric"].items()):
        if column not in attributes:
            continue
        cells = pd.to_numeric(attributes[column], errors="coerce")
        bad = (cells.isna() | ~np.isfinite(cells)).to_numpy()
        if bad.any():
            raise DataError(f"{source}: attribute {column!r} of series {str(cells.index[bad.argmax()])!r} is "
                            f"{attributes[column].iloc[bad.argmax()]!r}, not a number; give a number (training's "
                            f"mean was {mean:g})")
        values[i] = ((cells.to_numpy(np.float64) - mean) / std).astype(np.float32)
    return codes, values
