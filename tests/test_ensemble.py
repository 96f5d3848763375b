"""model.ensemble=K: K networks from different initial weights, each trained on its own loss, forecasting their
mean as one model: saved, checked and loaded like any other, exported, and refused where it cannot go."""

import json

import pandas as pd
import pytest
import torch

from pipeline.config import ExportFormat, TrackingConfig
from pipeline.errors import ConfigError
from pipeline.export import check_export, export_network
from pipeline.inference.saved_model import load_model
from pipeline.inference.streaming import NetworkStream
from pipeline.model.ensemble import Ensemble
from pipeline.model.network import RecurrentNetwork
from tests.helpers import forecaster_for, run_stage

LOOKBACK, HORIZON = 96, 24
ROWS, STRIDE = 1500, 4
SMALL_NETWORK = [f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model.hidden_size=8",
                 "model.num_layers=1"]


def test_an_ensemble_forecasts_the_mean_of_members_that_start_apart(windows):
    module = forecaster_for(windows, *SMALL_NETWORK, "model.ensemble=3", season=48)
    network = module.network.eval()
    assert isinstance(network, Ensemble) and len(network.members) == 3
    assert all(isinstance(member, RecurrentNetwork) for member in network.members)
    first, second = (dict(member.named_parameters()) for member in network.members[:2])
    name = "encoder.stack.layers.0.weight_ih_l0"
    assert name in first and not torch.equal(first[name], second[name])  # different initial weights
    batch = windows.val_origins[torch.arange(4)]
    with torch.no_grad():
        mean = torch.stack([member(batch.x, batch.future) for member in network.members]).mean(0)
        assert torch.allclose(network(batch.x, batch.future), mean, atol=1e-6)
    # One member is the plain network: model.ensemble=1 builds no ensemble.
    assert isinstance(forecaster_for(windows, *SMALL_NETWORK, season=48).network, RecurrentNetwork)


def member_gradient(module, loss: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in module.network.members[0].parameters() if p.grad is not None]


def test_each_member_learns_from_its_own_loss_on_its_own_windows(windows):
    module = forecaster_for(windows, *SMALL_NETWORK, "model.ensemble=3", season=48)
    first = module.network.members[0]
    for member in module.network.members:  # as after some training: the seasonal skip's heads start at zero,
        torch.nn.init.normal_(member.decoder.head[-1].weight, std=0.1)  # where every member forecasts alike
    batch = windows.train[torch.arange(18)]
    together = member_gradient(module, module.training_step(batch, 0))
    # The first member's gradient is that of its own loss on its own third of the batch (a third of it: the
    # loss is the members' mean) ...
    share = windows.train[torch.arange(6)]
    alone = member_gradient(module, module.loss(first(share.x, share.future, target=share.y), share.y) / 3)
    assert len(together) == len(alone) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(together, alone))
    # ... not that of its loss on the whole batch (the members would see the same windows) ...
    whole = member_gradient(module, module.loss(first(batch.x, batch.future, target=batch.y), batch.y) / 3)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole, alone))
    # ... nor that of the ensemble's forecast, which would tie it to the others.
    joint = member_gradient(module, module.loss(module(batch), batch.y))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(joint, alone))
    # An epoch's last batch with fewer windows than members: every member reads all of it.
    tiny = windows.train[torch.arange(2)]
    shared = member_gradient(module, module.training_step(tiny, 0))
    alone = member_gradient(module, module.loss(first(tiny.x, tiny.future, target=tiny.y), tiny.y) / 3)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(shared, alone))


def test_an_ensemble_draws_one_batch_per_member_each_step(windows, tmp_path):
    from pipeline.training.fitting import prepare

    for members in (1, 3):
        fitting = prepare({"max_steps": 1, "accelerator": "cpu", "precision": "32-true"}, windows, batch_size=8, seed=0,
                          patience=None, output_dir=tmp_path, run_tags={}, members=members)
        assert len(next(iter(fitting.train_batches)).y) == 8 * members


def test_an_ensemble_exports_to_a_graph_that_forecasts_as_it_does(windows, tmp_path):
    network = forecaster_for(windows, *SMALL_NETWORK, "model.ensemble=2", season=48).network.eval()
    path = tmp_path / "model.pt"
    export_network(network, LOOKBACK, ExportFormat.torchscript, path)
    assert check_export(network, LOOKBACK, ExportFormat.torchscript, path)["max_abs_diff"] < 1e-5


def test_an_ensemble_has_no_one_state_to_carry_and_says_which_stream_it_takes(windows):
    network = forecaster_for(windows, *SMALL_NETWORK, "model.ensemble=2", "model.window_norm=false",
                             season=48).network
    with pytest.raises(ConfigError, match=r"an ensemble \(model.ensemble > 1\) has no one state to carry forward: "
                                          r"stream it with WindowStream"):
        NetworkStream(network)


@pytest.mark.slow
def test_the_default_recipe_trains_and_forecasts_as_one_logged_ensemble_of_segment_readers(store, tmp_path):
    summary = store.train(default_recipe=True)
    model = load_model(f"runs:/{summary['run_id']}/model", TrackingConfig(uri=store.uri))
    assert model.spec.network["members"] == 3 and isinstance(model.network, Ensemble)
    assert all(member.encoder.segment_len == 4 for member in model.network.members)
    history = pd.read_parquet(store.folder / "new.parquet").iloc[-200:]
    forecast = model.forecast(history)
    assert len(forecast) == 48 and forecast["forecast"].notna().all()
    output = tmp_path / "forecast.csv"
    done = run_stage("pipeline.forecast", f"model_uri=runs:/{summary['run_id']}/model",
                     f"data.path={store.folder / 'new.parquet'}", f"output={output}", f"tracking.uri={store.uri}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["series"] == 1
    written = pd.read_csv(output)
    assert len(written) == 48
