"""Distribution heads (model.likelihood): the negative log-likelihood against the densities written out, the
quantiles against exact ones, masked targets ignored, and a model trained by the command forecasting the
distribution's quantiles through the forecast stage and the MLflow pyfunc, scored with proper scores."""

import json
import math
from statistics import NormalDist

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy.stats import nbinom
from scipy.stats import t as student_t

from pipeline.config import DataConfig, ExportFormat, to_config
from pipeline.data.load import validate_frame
from pipeline.data.sampler import batches
from pipeline.data.windows import make_windows
from pipeline.errors import ConfigError
from pipeline.export import export_network
from pipeline.model.likelihoods import (
    DEFAULT_LEVELS,
    NegativeBinomial,
    Normal,
    StudentT,
    likelihood,
    negative_log_likelihood,
    normal_quantiles,
    sample_paths,
)
from pipeline.model.hparams import check_likelihood
from pipeline.model.predict import predict
from tests.helpers import compose_config, forecaster_for, network_for, run_stage, saved_model_for

LOOKBACK, HORIZON = 48, 12


def test_the_negative_log_likelihood_is_the_density_written_out():
    actual = torch.tensor([[0.0, 3.0]])
    normal = torch.tensor([[[1.0, 2.0], [1.0, 2.0]]])  # location 1, scale 2
    expected = [math.log(2) + 0.5 * math.log(2 * math.pi) + 0.5 * ((y - 1) / 2) ** 2 for y in (0.0, 3.0)]
    assert negative_log_likelihood(Normal, normal, actual)[0].tolist() == pytest.approx(expected)
    df, loc, scale, y = 4.0, 1.0, 2.0, 3.0
    t = torch.tensor([[[loc, scale, df]]])
    by_hand = (-math.lgamma((df + 1) / 2) + math.lgamma(df / 2) + 0.5 * math.log(df * math.pi) + math.log(scale)
               + (df + 1) / 2 * math.log(1 + ((y - loc) / scale) ** 2 / df))
    assert negative_log_likelihood(StudentT, t, torch.tensor([[y]])).item() == pytest.approx(by_hand, rel=1e-5)


def test_quantiles_match_the_exact_ones_for_normal_and_within_1_percent_for_student_t():
    levels = DEFAULT_LEVELS
    z = normal_quantiles(levels)
    quantiles = Normal.quantiles(torch.tensor([[3.0, 2.0]]), z)[0]
    assert quantiles.tolist() == pytest.approx([3 + 2 * NormalDist().inv_cdf(q) for q in levels], rel=1e-6)
    for df in (3.0, 5.0, 30.0):
        ours = StudentT.quantiles(torch.tensor([[0.0, 1.0, df]], dtype=torch.float64), z.double())[0].numpy()
        assert ours == pytest.approx(student_t.ppf(levels, df), rel=0.01, abs=1e-9)


def test_window_units_map_back_to_the_scaled_target_as_the_quantiles_do():
    params = Normal.constrain(torch.randn(4, HORIZON, 2, generator=torch.Generator().manual_seed(0)))
    level, spread = torch.full((4, 1), 5.0), torch.full((4, 1), 3.0)
    z = normal_quantiles(DEFAULT_LEVELS)
    assert torch.allclose(Normal.quantiles(Normal.rescale(params, level, spread), z),
                          Normal.quantiles(params, z) * 3.0 + 5.0, atol=1e-5)


def test_an_unknown_likelihood_is_named_with_the_choices():
    with pytest.raises(ConfigError, match="model.likelihood=.poisson.: choose one of normal, student_t, negative_binomial or null"):
        likelihood("poisson")


@pytest.mark.parametrize("kind", ["normal", "student_t"])
@pytest.mark.parametrize("strategy", ["direct", "recursive", "seq2seq"])
def test_each_strategy_trains_on_the_likelihood_and_masked_targets_count_for_nothing(windows, kind, strategy):
    module = forecaster_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                            "model.hidden_size=8", f"model.likelihood={kind}", f"model.strategy={strategy}")
    batch = next(iter(batches(windows.train, 16, shuffle=False)))
    module.train()
    params = module(batch)
    assert params.shape == (16, HORIZON, 2 if kind == "normal" else 3)
    observed = torch.ones_like(batch.y, dtype=torch.bool)
    observed[:, -1] = False
    wild = batch.y.clone()
    wild[:, -1] = 1e6  # filled, and wildly: it must not move the loss
    loss = module.loss(params, batch.y, observed)
    assert torch.isfinite(loss) and module.loss(params, wild, observed) == loss
    loss.backward()
    assert all(p.grad is not None for p in module.network.decoder.head.parameters())
    module.eval()
    with torch.no_grad():
        quantiles = module.network(batch.x, batch.future, batch.series, batch.lengths)
    assert quantiles.shape == (16, HORIZON, len(DEFAULT_LEVELS)) and bool((quantiles.diff(dim=-1) >= 0).all())


def test_the_negative_binomial_has_the_mean_and_dispersion_it_is_given_and_its_pmf_written_out():
    mu, alpha, k = 12.0, 0.25, 7.0
    params = torch.tensor([[[mu, alpha]]], dtype=torch.float64)
    r = 1 / alpha
    by_hand = -(math.lgamma(k + r) - math.lgamma(r) - math.lgamma(k + 1) + r * math.log(r / (r + mu))
                + k * math.log(mu / (r + mu)))
    assert negative_log_likelihood(NegativeBinomial, params, torch.tensor([[k]])).item() == pytest.approx(by_hand)
    distribution = NegativeBinomial.distribution(params)
    assert distribution.mean.item() == pytest.approx(mu) and distribution.variance.item() == pytest.approx(
        mu + alpha * mu**2)
    # Quantiles read from draws, against scipy's exact ones (scipy: n = r, p = r / (r + mu)).
    quantiles = NegativeBinomial.quantiles(params.float(), normal_quantiles(DEFAULT_LEVELS))[0, 0].numpy()
    exact = nbinom.ppf(DEFAULT_LEVELS, r, r / (r + mu))
    assert np.abs(quantiles - exact).max() <= 0.3 * math.sqrt(mu + alpha * mu**2)
    assert np.array_equal(quantiles, np.round(quantiles))  # counts


def test_a_count_model_trains_on_counts_in_every_strategy(vic_elec):
    counts = vic_elec.iloc[:1200].assign(demand=lambda f: (f["demand"] / 100).round())  # hundreds of MW, counted
    windows = make_windows(validate_frame(counts, DataConfig(), source="counts"), LOOKBACK, HORIZON, 8, 96, 96,
                           calendar=True, scaler="none")
    batch = next(iter(batches(windows.train, 16, shuffle=False)))
    for strategy in ("direct", "recursive", "seq2seq"):
        module = forecaster_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                                "model.hidden_size=8", "model.likelihood=negative_binomial",
                                f"model.strategy={strategy}", "data.scaler=none")
        params = module(batch)
        assert (params[..., 0] > 0).all() and (params[..., 1] > 0).all()  # a mean and a dispersion, in counts
        loss = module.loss(params, batch.y, batch.observed)
        assert torch.isfinite(loss)
        loss.backward()
        module.eval()
        with torch.no_grad():
            quantiles = module.network(batch.x, batch.future, batch.series, batch.lengths)
            paths = sample_paths(module.network, batch.x, batch.future, batch.series, batch.lengths, 50)
        assert bool((quantiles.diff(dim=-1) >= 0).all()) and paths.shape == (16, 50, HORIZON)
        assert (paths >= 0).all() and torch.equal(paths, paths.round())


def test_a_count_model_on_a_rescaled_target_is_refused_naming_both_keys():
    cfg = to_config(compose_config("model.likelihood=negative_binomial"))
    with pytest.raises(ConfigError) as refused:
        check_likelihood(cfg.model, cfg.data)  # train() calls it before reading the data
    assert str(refused.value) == ("model.likelihood=negative_binomial models the counts themselves: set "
                                  "data.scaler=none and data.transform=none (it scales each window by its level on "
                                  "its own)")
    cfg = to_config(compose_config("model.likelihood=negative_binomial", "data.scaler=none"))
    check_likelihood(cfg.model, cfg.data)


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("strategy", ["direct", "recursive", "seq2seq"])
def test_sample_paths_follow_the_distribution_and_the_seed(windows, strategy, members):
    torch.manual_seed(0)
    network = network_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.hidden_size=8",
                          "model.likelihood=normal", f"model.strategy={strategy}", f"model.ensemble={members}").eval()
    with torch.no_grad():  # a random head: the distribution is not the seasonal skip's alone
        for head in [m.decoder.head for m in getattr(network, "members", [network])]:
            torch.nn.init.normal_(head[-1].weight, std=0.3)
    dataset = windows.test
    paths = predict(network, dataset, 64, samples=2000, seed=1)
    assert paths.shape == (len(dataset), 2000, HORIZON)
    assert np.array_equal(paths, predict(network, dataset, 64, samples=2000, seed=1))
    assert not np.array_equal(paths, predict(network, dataset, 64, samples=2000, seed=2))
    # The first step's draws have the distribution whose quantiles the model forecasts (later steps of rolled
    # paths need not: each path conditions on its own drawn values, the quantiles on the median fed back); an
    # ensemble's are its members' mixture, whose every quantile lies between theirs.
    empirical = np.quantile(paths[:, :, 0], DEFAULT_LEVELS, axis=1).T
    each = [predict(member, dataset, 64)[:, 0] for member in getattr(network, "members", [network])]
    spread = (each[0][:, -1] - each[0][:, 0]).mean()
    assert (empirical > np.min(each, axis=0) - 0.1 * spread).all()
    assert (empirical < np.max(each, axis=0) + 0.1 * spread).all()
    # The model's own quantiles are those of the same distribution (an ensemble's: of the mixture).
    assert np.abs(empirical - predict(network, dataset, 64)[:, 0]).max() < 0.15 * spread  # both read from draws


def test_each_rolled_path_reads_its_own_draws_as_the_next_steps_input(windows):
    torch.manual_seed(0)
    network = network_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.hidden_size=8",
                          "model.likelihood=student_t", "model.strategy=seq2seq", "model.window_norm=false").eval()
    fed = []  # what the decoder's cells read at each step: (previous value, that step's known-future features)
    network.decoder.cells.register_forward_pre_hook(lambda module, args: fed.append(args[0][:, 0, 0].clone()))
    batch = next(iter(batches(windows.test, 4, shuffle=False)))
    with torch.no_grad():
        paths = sample_paths(network, batch.x, batch.future, batch.series, batch.lengths, 5)
    # Step 1 reads the last observed value; step j + 1 the value drawn for step j, path by path.
    reads = torch.stack(fed[1:], dim=1).view(4, 5, HORIZON - 1)
    assert torch.allclose(reads, paths[:, :, :-1]) and not torch.allclose(paths[:, :1], paths[:, 1:2])


def test_the_forecast_plot_draws_each_shown_origins_own_sample_paths_in_the_targets_units(windows):
    from pipeline.evaluation.backtest import backtest, sample_paths_at
    from pipeline.evaluation.plots import forecast_picks, plot_forecasts

    torch.manual_seed(0)
    network = network_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.hidden_size=8",
                          "model.likelihood=normal", "model.strategy=recursive").eval()
    result = backtest(network, windows, [48])
    picks = forecast_picks(len(result.origins))
    paths = sample_paths_at(network, windows, picks, 400, seed=3)
    assert paths.shape == (len(picks), 400, HORIZON)
    # In megawatts, and each the distribution of its own origin: the first step's draws straddle its quantiles.
    first = np.quantile(paths[:, :, 0], [0.1, 0.9], axis=1).T
    shown = result.quantiles[picks, 0]
    width = shown[:, 3] - shown[:, 1]
    assert (np.abs(first - shown[:, [1, 3]]) < 0.25 * width[:, None]).all()
    figure = plot_forecasts(result, windows.target, windows.times, paths=paths[:, :5])
    drawn = [[line for line in axis.get_lines() if line.get_color() == "tab:purple"] for axis in figure.axes]
    assert [len(lines) for lines in drawn] == [5] * len(picks)
    assert np.allclose(drawn[-1][0].get_ydata(), paths[-1, 0])


@pytest.mark.parametrize("kind, members", [("negative_binomial", 1), ("normal", 3)])
def test_a_model_whose_quantiles_are_drawn_is_refused_by_export_in_one_line(windows, tmp_path, kind, members):
    network = network_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.hidden_size=8",
                          f"model.likelihood={kind}", f"model.ensemble={members}").eval()
    with pytest.raises(ConfigError, match="reads its quantiles from random draws"):
        export_network(network, LOOKBACK, ExportFormat.onnx, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind, strategy", [("normal", "recursive"), ("student_t", "seq2seq"),
                                            ("negative_binomial", "direct")])
def test_a_likelihood_model_trains_registers_and_forecasts_its_quantiles_everywhere(store, tmp_path, kind,
                                                                                     strategy):
    folder = store.folder
    extra = []
    if kind == "negative_binomial":  # counts in the thousands (the shipped demand, rounded), on no scaling
        folder = tmp_path
        for name in ("train.parquet", "new.parquet"):
            frame = pd.read_parquet(store.folder / name)
            frame.assign(demand=frame["demand"].round()).to_parquet(folder / name, index=False)
        extra = ["data.scaler=none", f"data.path={folder / 'train.parquet'}"]
    summary = store.train(f"model.likelihood={kind}", f"model.strategy={strategy}", *extra)
    client = MlflowClient(store.uri)
    metrics = client.get_run(summary["run_id"]).data.metrics
    for name in ("crps", "wql", "coverage_80", "coverage_95", "width_95"):
        assert np.isfinite(metrics[f"test_{name}"]) and np.isfinite(metrics[f"test_{name}_seasonal_naive"])
    name = f"demand-{kind}"
    done = run_stage("pipeline.register", f"run_id={summary['run_id']}", f"name={name}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'register'}")
    assert done.returncode == 0, done.stderr[-3000:]
    output = tmp_path / "forecast.csv"
    done = run_stage("pipeline.forecast", f"model_uri=models:/{name}@champion", f"output={output}",
                     f"data.path={folder / 'new.parquet'}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'forecast'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["model_run_id"] == summary["run_id"]
    forecast = pd.read_csv(output)
    levels = ["q2.5", "q10", "q50", "q90", "q97.5"]
    assert list(forecast.columns) == ["time", "forecast", *levels] and len(forecast) == 48
    assert (forecast[levels].diff(axis=1).iloc[:, 1:] >= 0).all().all()
    assert np.allclose(forecast["forecast"], forecast["q50"])
    # The pyfunc, which `mlflow models serve` runs, answers with the same columns and numbers.
    mlflow.set_tracking_uri(store.uri)
    history = pd.read_parquet(folder / "new.parquet")[["time", "demand"]]
    history["time"] = history["time"].astype(str)  # as a CSV or JSON request carries it
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(history)
    assert np.allclose(served[levels].to_numpy(), forecast[levels].to_numpy(), rtol=1e-6)

    if kind != "normal":
        return  # sample paths: drawn alike for every likelihood (test_sample_paths_...); through the stage once
    # Sample paths: one row per (sample, step); the pyfunc draws the same ones from the same seed, when a request
    # asks with params, as `mlflow models serve` passes them.
    done = run_stage("pipeline.forecast", f"model_uri=models:/{name}@champion", f"output={tmp_path / 'paths.csv'}",
                     f"data.path={folder / 'new.parquet'}", f"tracking.uri={store.uri}", "samples=400", "seed=1",
                     f"hydra.run.dir={tmp_path / 'samples'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) | {"samples": 400, "seed": 1, "rows": 400 * 48} == json.loads(done.stdout)
    paths = pd.read_csv(tmp_path / "paths.csv")
    assert list(paths.columns) == ["time", "sample", "forecast"] and len(paths) == 400 * 48
    assert all(times == list(forecast["time"]) for times in paths.groupby("sample")["time"].apply(list))
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(history, params={"samples": 400, "seed": 1})
    assert list(served.columns) == ["time", "sample", "forecast"]
    assert np.allclose(served["forecast"], paths["forecast"], rtol=1e-9)
    first = paths[paths["time"] == forecast["time"].iloc[0]]["forecast"]
    spread = forecast["q97.5"].iloc[0] - forecast["q2.5"].iloc[0]
    assert abs(first.median() - forecast["q50"].iloc[0]) < 0.1 * spread


def test_a_folder_is_sampled_file_by_file_each_from_a_seed_of_its_own(windows, vic_elec, tmp_path):
    from pipeline.config import ForecastConfig, ForecastDataConfig
    from pipeline.inference.folder import file_seed, forecast_folder

    torch.manual_seed(0)
    model = saved_model_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                            "model.hidden_size=8", "model.likelihood=normal", "model.strategy=recursive")
    source = tmp_path / "in"
    source.mkdir()
    history = vic_elec.iloc[:LOOKBACK]
    for name in ("a.parquet", "b.parquet"):  # the same history twice: only the seeds tell the files apart
        history.to_parquet(source / name, index=False)
    cfg = ForecastConfig(data=ForecastDataConfig(path=str(source)), samples=20, seed=4)
    totals = forecast_folder(cfg, model, source, tmp_path / "out")
    assert totals["rows"] == 2 * 20 * HORIZON
    paths = {name: pd.read_parquet(tmp_path / "out" / name) for name in ("a.parquet", "b.parquet")}
    for name, frame in paths.items():
        assert list(frame.columns) == ["time", "sample", "forecast"]
        expected = model.forecast(history, samples=20, seed=file_seed(4, name))
        assert np.allclose(frame["forecast"], expected["forecast"], rtol=1e-9)
    assert not np.allclose(paths["a.parquet"]["forecast"], paths["b.parquet"]["forecast"])
