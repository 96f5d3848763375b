"""The table of bench/ACCURACY.md's "Data nobody tuned for" section, from bench/accuracy.py's stored rows: on each
shipped data set, the default recipe given only the data, `experiment=auto`, the hand-made experiment file and the
best classical model. Means of three seeds; the paired bootstrap of `experiment=auto` against the best classical
model, for each seed and for the seeds' mean error on each forecast; CPU minutes (user and system time of the
training command, its choice included).

    .venv-bench/bin/python bench/accuracy.py --rows "pbs/experiment=auto" ...   # the rows, as ACCURACY.md lists
    .venv-bench/bin/python bench/data_only.py                                   # then the table, as Markdown
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import (best_classical, bootstrap_sums, forecasts_path, mase_of, paired_bootstrap,  # noqa: E402
                      stored, unit_errors)

SEEDS = ["", ", seed 1", ", seed 2"]
# A series that dominates a data set's test MASE: PBS's General Co-payments C05 scripts are 0 in all but a few
# months (in-sample seasonal error 0.46 scripts) and 7281 in one month of the test block, a scaled error of ~15,800
# that every model and seasonal naive alike make (MASE 1316 on it). Rows are also scored without it.
DOMINANT = {"pbs": {"Concession": "General", "Type": "Co-payments", "ATC2": "C05"}}
# Each data set's rows: the default given only the data, experiment=auto, and the hand-made file's rows.
SETS = {
    "vic_elec": ("segments of 4, ensemble of 3", "experiment=auto", None),
    "tourism": ("default recipe, data only", "experiment=auto", "default"),
    "us_gasoline": ("default recipe, data only", "experiment=auto", "default"),
    "pbs": ("default recipe, data only", "experiment=auto", "experiment=pbs (tourism's recipe for a monthly panel)"),
}


def seeds_of(results: dict, protocol: str, name: str | None) -> list[dict]:
    if name is None:
        return []
    return [results[key] | {"key": key} for s in SEEDS if (key := f"{protocol}/{name}{s}") in results]


def mean_of(rows: list[dict], keep: np.ndarray | None = None) -> str:
    if not rows:
        return "-"
    values = [r["test"]["mase"] for r in rows] if keep is None else [mase_of(f) for f in test_frames(rows, keep)]
    return f"{np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def test_frames(rows: list[dict], keep: np.ndarray | None = None) -> list[pd.DataFrame]:
    frames = [pd.read_parquet(forecasts_path(r["key"], "test")) for r in rows]
    return [f[keep].reset_index(drop=True) for f in frames] if keep is not None else frames


def dominant_rows(protocol: str, rows: list[dict]) -> np.ndarray | None:
    """Forecast rows (of every frame of the protocol: same order) outside the series that dominates its MASE."""
    if protocol not in DOMINANT:
        return None
    frame = test_frames(rows[:1])[0]
    inside = np.logical_and.reduce([frame[column] == value for column, value in DOMINANT[protocol].items()])
    return ~np.asarray(inside)


def seeds_mean_bootstrap(rows: list[dict], classical: pd.DataFrame, keep: np.ndarray | None = None) -> str:
    """The paired bootstrap of the seeds' mean scaled error on each forecast against the classical model's."""
    frames = test_frames(rows, keep)
    classical = classical[keep].reset_index(drop=True) if keep is not None else classical
    for frame in frames:
        paired_bootstrap(frame, classical, draws=1)  # the same forecasts in the same order, or it stops
    count = unit_errors(frames[0])[1]
    result = bootstrap_sums(np.mean([unit_errors(f)[0] for f in frames], axis=0), unit_errors(classical)[0], count)
    return f"{result['difference']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}]"


def main() -> None:
    results = stored()
    lines = ["| data | default, data only | experiment=auto (winners) | hand-made file | best classical | auto vs "
             "best classical, seeds' mean [90%] | per seed | CPU minutes: default / auto |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for protocol, (default, auto, handmade) in SETS.items():
        defaults, autos = seeds_of(results, protocol, default), seeds_of(results, protocol, auto)
        handmades = seeds_of(results, protocol, handmade)
        against = best_classical(protocol, results)
        if not autos or against is None:
            continue
        name, classical = against
        per_seed = []
        for row in autos:
            result = paired_bootstrap(pd.read_parquet(forecasts_path(row["key"], "test")), classical)
            per_seed.append(f"{result['difference']:+.3f} [{result['low']:+.3f}, {result['high']:+.3f}]")
        winners = ", ".join(r["auto"]["winner"] for r in autos)
        minutes = [np.mean([r["cpu_seconds"] / 60 for r in rows if "cpu_seconds" in r] or [np.nan])
                   for rows in (defaults, autos)]
        lines.append(f"| {protocol} | {mean_of(defaults)} | {mean_of(autos)} ({winners}) | {mean_of(handmades)} "
                     f"| {name} {mase_of(classical):.3f} | {seeds_mean_bootstrap(autos, classical)} "
                     f"| {'; '.join(per_seed)} | {minutes[0]:.1f} / {minutes[1]:.1f} |")
        keep = dominant_rows(protocol, autos)
        if keep is not None:
            lines.append(f"| {protocol} without {'/'.join(DOMINANT[protocol].values())} | {mean_of(defaults, keep)} "
                         f"| {mean_of(autos, keep)} | {mean_of(handmades, keep)} | {name} "
                         f"{mase_of(classical[keep].reset_index(drop=True)):.3f} "
                         f"| {seeds_mean_bootstrap(autos, classical, keep)} | - | - |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
