"""The evaluate stage: a rolling-origin backtest of a tracked model on a file, logged as a run of its own."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.load import load_series
from pipeline.data.windows import rolling_origins
from pipeline.errors import DataError
from pipeline.evaluation.backtest import backtest_file
from pipeline.evaluation.metrics import backtest_metrics
from pipeline.inference.saved_model import load_model
from tests.helpers import run_stage


def test_origins_count_back_from_each_series_end_step_apart_and_fewer_where_a_series_is_short():
    sizes = pd.Series([100, 60], index=["a", "b"])
    windows = rolling_origins(sizes, lookback=20, horizon=10, origins=4, step=15, source="f.csv")
    starts, series = windows.locate(torch.arange(len(windows)))
    origins = (starts + 20).tolist()
    # a: rows 0-99, last origin 90 (its horizon ends at row 99); b: rows 100-159, room for 3 origins only.
    assert origins == [45, 60, 75, 90, 120, 135, 150]
    assert series.tolist() == [0, 0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="f.csv: series 'b' has 25 rows"):
        rolling_origins(pd.Series([100, 25], index=["a", "b"]), 20, 10, 4, 15, "f.csv")


def evaluate(store, tmp_path, *overrides):
    return run_stage("pipeline.evaluate", f"tracking.uri={store.uri}", f"hydra.run.dir={tmp_path / 'hydra'}",
                     *overrides)


@pytest.mark.slow
def test_evaluate_scores_the_model_beside_both_baselines_per_step_and_per_series_linked_to_its_run(
        store, tmp_path, vic_elec):
    trained = store.train("model.quantiles=[0.1,0.5,0.9]", "data.season=[48,96]")
    done = evaluate(store, tmp_path, f"run_id={trained['run_id']}", f"data.path={store.folder / 'new.parquet'}",
                    "evaluate.origins=5", "evaluate.step=24")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["origins"] == 5 and summary["series"] == 1

    # Seasonal naive recomputed from the file: origins 24 steps apart, the last one's day ending the file.
    demand = vic_elec["demand"].iloc[:1200].to_numpy()
    origins = 1200 - 48 - 24 * np.arange(5)[::-1]
    steps = np.arange(48)
    actual = demand[origins[:, None] + steps]
    # MASE scale: the in-sample seasonal-naive error of the history before the first origin, by the shortest period.
    scale = np.mean(np.abs(demand[48:origins[0]] - demand[:origins[0] - 48]))
    expected = {period: np.mean(np.abs(demand[origins[:, None] + steps - period * (steps // period + 1)] - actual))
                / scale for period in (48, 96)}
    for period in (48, 96):  # every period of data.season, and the stronger beside the model
        assert summary[f"seasonal_naive_{period}"]["mase"] == pytest.approx(expected[period], rel=1e-9)
    assert summary["seasonal_naive"]["mase"] == pytest.approx(min(expected.values()), rel=1e-9)
    assert summary["naive"]["mase"] == pytest.approx(
        np.mean(np.abs(demand[origins - 1][:, None] - actual)) / scale, rel=1e-9)

    client = MlflowClient(store.uri)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "evaluate"
    assert run.data.tags["model_run_id"] == trained["run_id"]
    assert run.data.tags["mlflow.parentRunId"] == trained["run_id"]  # nested under it in the UI
    metrics = run.data.metrics
    # Named as in the training run: the baseline a suffix.
    assert {"mase", "smape", "rmse", "mae", "mase_naive", "mase_seasonal_naive", "quantile_loss", "crps", "wql",
            "coverage_80", "width_80", "crps_seasonal_naive", "wql_seasonal_naive", "coverage_80_seasonal_naive",
            "mase_seasonal_naive_48", "mase_seasonal_naive_96"} <= set(metrics)
    assert metrics["mase"] == pytest.approx(summary["model"]["mase"])
    history = client.get_metric_history(summary["run_id"], "mase_by_step")
    assert sorted(m.step for m in history) == list(range(1, 49))

    folder = client.download_artifacts(summary["run_id"], "evaluation", str(tmp_path))
    per_step = pd.read_csv(f"{folder}/per_step.csv")
    per_series = pd.read_csv(f"{folder}/per_series.csv")
    assert per_step["step"].tolist() == list(range(1, 49))
    # Every step has the same number of forecasts, so the overall MASE is the mean of the per-step ones.
    assert per_step["mase"].mean() == pytest.approx(summary["model"]["mase"])
    assert per_series[["series_id", "origins"]].values.tolist() == [["demand", 5]]  # named after its target
    names = {a.path for a in client.list_artifacts(summary["run_id"], "evaluation")}
    assert {"evaluation/error_by_step.png", "evaluation/best_and_worst.png"} <= names

    # One MASE definition: on the training file, the evaluate stage's origins are the test block's, and the
    # same forecasts score the training run's test MASE (both scale by the history before the first origin).
    model = load_model(f"runs:/{trained['run_id']}/model", store.uri)
    on_training_file = backtest_metrics(backtest_file(model, load_series(model.data), origins=2, step=48))
    assert on_training_file["model"]["mase"] == pytest.approx(trained["test"]["mase"], rel=1e-9)
    assert on_training_file["seasonal_naive"]["mase"] == pytest.approx(trained["seasonal_naive"]["mase"], rel=1e-9)
    # The training run reports each period on both blocks and which was stronger where; the skip reads the shortest.
    training = client.get_run(trained["run_id"])
    for block in ("val", "test"):
        each = {p: training.data.metrics[f"{block}_mase_seasonal_naive_{p}"] for p in (48, 96)}
        stronger = int(training.data.tags[f"{block}.seasonal_naive_season"])
        assert training.data.metrics[f"{block}_mase_seasonal_naive"] == each[stronger] == min(each.values())
    assert trained["seasonal_naive_by_period"] == {str(p): on_training_file[f"seasonal_naive_{p}"]["mase"]
                                                   for p in (48, 96)}
    assert model.spec.network["season"] == 48 and model.spec.data["season"] == [48, 96]


@pytest.mark.slow
def test_evaluate_refuses_a_file_too_short_for_one_origin_in_one_line(store, tmp_path, vic_elec):
    trained = store.train()
    short = tmp_path / "short.parquet"
    vic_elec.iloc[:100].to_parquet(short, index=False)
    done = evaluate(store, tmp_path, f"run_id={trained['run_id']}", f"data.path={short}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        f"{short}: series 'demand' has 100 rows; a backtest origin needs the model's lookback + horizon (144) rows")
