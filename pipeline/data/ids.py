"""Series ids: one key per series made from the user's id column(s), and the columns back from the keys, exactly
as the file wrote them."""

import json

import numpy as np
import pandas as pd

from pipeline.data.series import SERIES_ID
from pipeline.errors import DataError


def series_keys(raw: pd.DataFrame, id_columns: list[str], target: str, source: str) -> pd.Categorical:
    """One series key per row, as a categorical: a small code per row, the keys once per series.

    A key is the id's text exactly as the file holds it, or for several id columns the JSON list of their texts
    (`["North", "East / x"]`), which id_columns_of decodes back into the columns: no separator can split an id
    in the wrong place or make two ids one. A file without an id column holds one series, named after its
    target column. Keys are built from per-column codes, never from per-row strings, which would cost more than
    the data itself on long files; categories are sorted, so sorting rows by key sorts them by series.
    """
    if not id_columns:
        return pd.Categorical.from_codes(np.zeros(len(raw), dtype=np.int8), categories=[target])
    codes, labels = [], []
    for column in id_columns:
        try:
            column_codes, uniques = pd.factorize(raw[column])
        except TypeError as error:  # unhashable cells: a Parquet struct or list column
            raise DataError(f"{source}: id column {column!r} holds nested values ({type(raw[column].iloc[0]).__name__})"
                            f"; ids must be text or numbers: flatten it into columns and name them in "
                            f"data.id_column") from error
        empty = [i for i, u in enumerate(uniques) if isinstance(u, str) and not u.strip()]
        if (column_codes < 0).any() or empty:
            row = int(np.flatnonzero((column_codes < 0) | np.isin(column_codes, empty))[0])
            raise DataError(f"{source}: column {column!r} row {row} has no series id; give every row its id")
        codes.append(column_codes)
        labels.append([u if isinstance(u, str) else str(u) for u in uniques])
    shape = [len(label) for label in labels]
    combined, combos = pd.factorize(np.ravel_multi_index(codes, shape) if len(codes) > 1 else codes[0])
    parts = list(zip(*np.unravel_index(combos, shape)))
    names = ([labels[0][j] for (j,) in parts] if len(id_columns) == 1 else
             [json.dumps([labels[i][j] for i, j in enumerate(p)], ensure_ascii=False) for p in parts])
    if len(set(names)) < len(names):  # e.g. the number 7 and the text "7" in one column of mixed types
        twin = pd.Series(names)[pd.Series(names).duplicated()].iloc[0]
        raise DataError(f"{source}: two different values of {id_columns} read as the same series id {twin!r}; "
                        f"give the id column one type")
    return pd.Categorical.from_codes(combined, categories=names).reorder_categories(sorted(names))


def id_columns_of(keys: pd.Series, columns: list[str]) -> pd.DataFrame:
    """The user's id column(s) (data.id_column) of each row, from series keys (see series_keys): the id texts
    exactly as read. No columns for a file without an id column."""
    if len(columns) <= 1:
        return pd.DataFrame({c: keys.astype(str).to_numpy() for c in columns}, index=keys.index)
    codes, uniques = pd.factorize(keys)
    table = np.array([json.loads(key) for key in uniques], dtype=object).reshape(len(uniques), len(columns))
    return pd.DataFrame(table[codes], columns=columns, index=keys.index)


def series_columns(keys: pd.Series, id_columns: list[str]) -> pd.DataFrame:
    """What names each row's series in a table: the user's id column(s), or for a file without one a
    `series_id` column holding the series' name (its target column's)."""
    return id_columns_of(keys, id_columns) if id_columns else pd.DataFrame(
        {SERIES_ID: keys.astype(str).to_numpy()}, index=keys.index)
