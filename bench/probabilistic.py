"""Probabilistic forecasts: each way to forecast intervals, trained by the real command at several seeds on the
default data (or an experiment's), scored on the training run's validation and test blocks with CRPS, weighted
quantile loss and the coverage of the 80% and 95% intervals, beside seasonal naive's interval from its in-sample
errors on the same origins.

    .venv/bin/python bench/probabilistic.py --store sqlite:////tmp/prob.db --seeds 0 1 2
    .venv/bin/python bench/probabilistic.py --store sqlite:////tmp/prob-tourism.db --experiment tourism
    .venv/bin/python bench/probabilistic.py --store sqlite:////tmp/prob-pbs.db --experiment pbs \
        --recipes normal student_t negative_binomial pinball
    .venv-bench/bin/python bench/probabilistic.py --experiment pbs --classical   # statsforecast's intervals

Runs already in the store (same recipe and seed, FINISHED) are read, not trained again. Prints a Markdown table
(means over the seeds, each seed's validation CRPS in brackets) and the machine. With --classical (the `bench`
environment: statsforecast) it trains nothing and prints the rows of the classical models of bench/accuracy.py's
protocol for the data set instead, their intervals scored on the training stage's own validation and test origins.
"""

import argparse
import json
import subprocess
import sys

from mlflow.tracking import MlflowClient
from record import machine

LEVELS = "[0.025,0.1,0.5,0.9,0.975]"
RECIPES = {  # the experiment's recipe with each way to forecast intervals
    "normal": ["model.likelihood=normal"],
    "student_t": ["model.likelihood=student_t"],
    "negative_binomial": ["model.likelihood=negative_binomial", "data.scaler=none"],  # counts, on their own scale
    "pinball": [f"model.quantiles={LEVELS}"],
}
# bench/accuracy.py's classical models for each data set, and the trailing history each is fitted on (None: all),
# as that benchmark chose them on the validation block.
CLASSICAL = {None: [("mstl", 16 * 336)], "tourism": [("autoets", None)],
             "us_gasoline": [("autoets", None), ("mstl", None)], "pbs": [("autoets", None), ("mstl", None)]}
SCORES = ["crps", "wql", "coverage_80", "coverage_95", "width_95", "mase"]


def run_of(client: MlflowClient, overrides: list[str], seed: int):
    """A FINISHED run of this recipe and seed, or None."""
    experiment = client.get_experiment_by_name("pipeline")
    if experiment is None:
        return None
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'"):
        params = run.data.params
        if params.get("seed") == str(seed) and all(
                params.get(o.split("=")[0]) == o.split("=", 1)[1].replace(",", ", ") for o in overrides):
            return run
    return None


def train(store: str, overrides: list[str], seed: int) -> str:
    done = subprocess.run([sys.executable, "-m", "pipeline.train", *overrides, f"seed={seed}",
                           f"tracking.uri={store}", "hydra.run.dir=/tmp/bench-probabilistic/${now:%H-%M-%S-%f}"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["run_id"]


def classical_rows(experiment: str | None) -> list[str]:
    """The classical models' intervals at LEVELS on the training stage's validation and test origins."""
    import accuracy
    from hydra import compose, initialize_config_dir

    from pipeline.config import to_config
    from pipeline.data.defaults import resolve_windowing
    from pipeline.data.load import load_series
    from pipeline.data.windows import make_windows

    with initialize_config_dir(str(accuracy.ROOT / "conf"), version_base="1.3"):
        cfg = to_config(compose("config", overrides=[f"experiment={experiment}"] if experiment else []))
    series = load_series(cfg.data)
    cfg.window, cfg.split = resolve_windowing(cfg.window, cfg.split, series)
    windows = make_windows(series, cfg.window.lookback, cfg.window.horizon, cfg.window.stride,
                           cfg.split.val_steps, cfg.split.test_steps, cfg.data.calendar)
    levels = json.loads(LEVELS)
    rows = []
    for name, history in CLASSICAL[experiment]:
        val, test = (accuracy.fit_classical(name, accuracy.block_origins(windows, series, block), series, history,
                                            levels)[0] for block in ("val", "test"))
        rows.append(f"| {accuracy.CLASSICAL_NAMES[name]} (statsforecast), its intervals | {val['crps']:.4g} "
                    f"| {test['crps']:.4g} | {test['wql']:.4f} | {test['coverage_80']:.3f} | {test['coverage_95']:.3f} "
                    f"| {test['width_95']:.4g} | {val['mase']:.4f} | {'all' if history is None else history} steps "
                    f"of history; {test['fit_seconds']:.0f} s for the test origins |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="sqlite:////tmp/prob.db")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiment", help="a conf/experiment recipe in place of the default (one store each)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=["normal", "student_t", "pinball"])
    parser.add_argument("--classical", action="store_true", help="only the classical models' rows")
    args = parser.parse_args()
    if args.classical:
        print("\n".join(classical_rows(args.experiment)))
        print(json.dumps(machine()))
        return
    experiment = [f"experiment={args.experiment}"] if args.experiment else []
    client = MlflowClient(args.store)
    rows, baseline = [], {}
    for name in args.recipes:
        overrides = RECIPES[name]
        metrics = []
        for seed in args.seeds:
            run = run_of(client, overrides, seed) or client.get_run(train(args.store, experiment + overrides, seed))
            metrics.append(run.data.metrics)
        mean = {f"{block}_{s}": sum(m[f"{block}_{s}"] for m in metrics) / len(metrics)
                for block in ("val", "test") for s in SCORES}
        each = ", ".join(f"{m['val_crps']:.4g}" for m in metrics)
        label = "pinball quantiles" if name == "pinball" else f"{name} likelihood"
        rows.append(f"| {label} | {mean['val_crps']:.4g} ({each}) | {mean['test_crps']:.4g} | {mean['test_wql']:.4f} "
                    f"| {mean['test_coverage_80']:.3f} | {mean['test_coverage_95']:.3f} | {mean['test_width_95']:.4g} "
                    f"| {mean['val_mase']:.4f} | `{' '.join(overrides)}` |")
        baseline = {f"{block}_{s}": metrics[0].get(f"{block}_{s}_seasonal_naive", float("nan"))
                    for block in ("val", "test") for s in SCORES}
    print("| forecaster | val CRPS (each seed) | test CRPS | test wQL | test coverage 80% | test coverage 95% "
          "| test width 95% | val MASE | command (`python -m pipeline.train ...`) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"| seasonal naive, its in-sample errors' quantiles | {baseline['val_crps']:.4g} "
          f"| {baseline['test_crps']:.4g} "
          f"| {baseline['test_wql']:.4f} | {baseline['test_coverage_80']:.3f} | {baseline['test_coverage_95']:.3f} "
          f"| {baseline['test_width_95']:.4g} | {baseline['val_mase']:.4f} | (beside every run, the same origins) |")
    print(json.dumps(machine()))


if __name__ == "__main__":
    main()
