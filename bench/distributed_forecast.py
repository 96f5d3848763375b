"""The forecast stage on a folder of Parquet files at 10^5 series: this process alone (engine=local), and a local
Dask cluster of 1 and 2 worker processes (engine=dask), in one run on the same files.

    python bench/distributed_forecast.py                 # 100,000 series in 20 files (about 10 minutes on 2 cores)
    python bench/distributed_forecast.py --series 10000  # quicker

The model is the default one (LSTM 2 x 64, lookback 336, horizon 48), trained for two steps on the synthetic hourly
series of bench/scaling.py (speed does not depend on the weights; the scaler is per series, so a model forecasts
the series it was trained on), from a folder of Parquet files. Each case is the whole `python -m pipeline.forecast`
command on a folder holding each series' last 336 rows: load the model, read and check every file, forecast, write
one Parquet file per input file, record the run. A Dask case includes starting its cluster and each worker loading
the model. Series per second = series / the command's wall time.

Results: printed, written to outputs/bench/distributed_forecast.json and logged as a run of the `benchmarks`
experiment.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
from record import machine, record
from scaling import run_stage, table, write_series

from pipeline.config import TrackingConfig

FILES = 20


def write_folders(scratch: Path, series: int) -> tuple[Path, Path]:
    """Training files (each series 480 hourly rows) and history files (their last 336 rows), FILES of each."""
    training, history = scratch / "training", scratch / "history"
    training.mkdir()
    history.mkdir()
    per_file = series // FILES
    for number in range(FILES):
        path = training / f"part-{number:02d}.parquet"
        write_series(path, per_file, 336 + 48 + 2 * 48, seed=number)
        frame = pd.read_parquet(path)
        frame["id"] = f"f{number:02d}-" + frame["id"]  # every series in one file only
        frame.to_parquet(path, index=False)
        frame.groupby("id", sort=False).tail(336).to_parquet(history / path.name, index=False)
    return training, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--tracking-uri", default=TrackingConfig.uri, help="where the `benchmarks` run goes")
    args = parser.parse_args()
    about = machine()
    print(f"{about['cpu']}, {about['threads']} threads, torch {about['torch']}, {about['date']}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        training, history = write_folders(scratch, args.series)
        (scratch / "train").mkdir()
        # One LSTM reading step by step (no default experiment), the model the table below was measured with.
        trained, train_wall, _ = run_stage("pipeline.train", [
            "~experiment", f"data.path={training}", "data.time_column=time", "data.target_column=y", "data.id_column=id",
            "split.val_steps=48", "split.test_steps=48", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "trainer.accelerator=cpu"], scratch / "train")
        print(f"trained on {args.series} series in {train_wall:.0f} s", file=sys.stderr)
        model_uri = f"model_uri=runs:/{trained['run_id']}/model"
        rows = []
        cases = [("one process (engine=local)", ["engine=local"]),
                 ("Dask, 1 worker", ["engine=dask", "dask.workers=1"]),
                 ("Dask, 2 workers", ["engine=dask", "dask.workers=2"])]
        for number, (name, engine) in enumerate(cases):
            case = scratch / f"case-{number}"
            case.mkdir()
            summary, wall, peak = run_stage("pipeline.forecast", [
                model_uri, f"data.path={history}", f"output={case / 'forecasts'}", *engine], case,
                store=scratch / "train" / "mlflow.db")  # where the model is: every case reads it there
            assert summary["series"] == args.series, summary
            rows.append({"case": name, "series": args.series, "files": summary["files"],
                         "command_seconds": round(wall, 1), "series_per_second": round(args.series / wall),
                         "driver_peak_rss_mb": round(peak)})
            print(table(rows[-1:], list(rows[-1])).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows, list(rows[0])), file=sys.stderr)
    results = {"rows": rows, "training_seconds": round(train_wall, 1)}
    metrics = {f"case{i}_series_per_second": r["series_per_second"] for i, r in enumerate(rows)}
    path, run_id = record("distributed_forecast", results, metrics, args.tracking_uri)
    print(json.dumps({"results": str(path), "mlflow_run_id": run_id, "tracking_uri": args.tracking_uri}))


if __name__ == "__main__":
    main()
