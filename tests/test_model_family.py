"""The model family of conf/model: strategies, widths, heads, initial states, quantiles."""

import lightning as L
import numpy as np
import pytest
import torch

from pipeline.config import to_config
from pipeline.data.sampler import batches
from pipeline.errors import ConfigError
from pipeline.evaluation.backtest import backtest
from pipeline.evaluation.metrics import backtest_metrics, quantile_metrics
from pipeline.model.network import RecurrentNetwork
from pipeline.model.training_module import pinball_loss
from pipeline.train import build_module
from pipeline.training.calibration import calibrate_intervals
from tests.helpers import compose_config, network_for

LOOKBACK, HORIZON, SEASON = 48, 12, 48


def module_for(windows, *overrides):
    cfg = to_config(compose_config(f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                                   "model.hidden_size=8", *overrides))
    return build_module(cfg, windows, SEASON)


def network(windows, **changes) -> RecurrentNetwork:
    """A GRU from the composed config (no seasonal skip, no window normalisation), some arguments changed."""
    torch.manual_seed(0)
    return network_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}", "model=gru",
                       "model.hidden_size=8", "model.window_norm=false", **changes)


@pytest.mark.parametrize("quantiles", ["[]", "[0.1,0.5,0.9]"], ids=["point", "quantiles"])
@pytest.mark.parametrize("init_state", ["zeros", "learned"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("strategy", ["direct", "recursive", "seq2seq"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_combination_composes_trains_and_uses_every_parameter(windows, cell, strategy, bidirectional,
                                                                    init_state, quantiles):
    torch.manual_seed(0)
    module = module_for(windows, f"model={cell}", f"model.strategy={strategy}",
                        f"model.bidirectional={bidirectional}", f"model.init_state={init_state}",
                        f"model.quantiles={quantiles}")
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, batches(windows.train, 16, shuffle=True))
    batch = windows.train[:16]
    module.zero_grad()
    module.loss(module(batch), batch.y).backward()
    unused = [name for name, p in module.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the graph: {unused}"
    module.eval()
    with torch.no_grad():
        out = module(batch)
    if quantiles == "[]":
        assert out.shape == (16, HORIZON)
    else:
        assert out.shape == (16, HORIZON, 3) and (out.diff(dim=-1) >= 0).all()
    assert torch.isfinite(out).all()


def test_a_list_of_widths_stacks_layers_of_those_widths(windows):
    net = network(windows, hidden_size=[16, 8], bidirectional=True)
    assert [layer.hidden_size for layer in net.encoder.stack.layers] == [16, 8]
    assert net.encoder.stack.layers[1].input_size == 32  # both directions of the 16-unit layer
    with pytest.raises(ConfigError, match="model.num_layers=3"):
        network(windows, hidden_size=[16, 8, 4])
    with pytest.raises(ConfigError, match="model.hidden_size"):
        network(windows, hidden_size="wide")


def test_an_mlp_head_has_the_configured_layers(windows):
    net = network(windows, head_layers=[16], head_activation="gelu", head_dropout=0.2)
    kinds = [type(m).__name__ for m in net.decoder.head]
    assert kinds == ["Linear", "GELU", "Dropout", "Linear"] and net.decoder.head[0].out_features == 16


def test_a_learned_initial_state_is_where_the_encoder_starts(windows):
    # A short input, so the initial state still shows in the final one (over 48 steps it fades below 1e-6).
    net = network(windows, init_state="learned")
    x = windows.train[:8].x[:, -3:]
    future = windows.train[:8].future
    before = net(x, future).detach()
    with torch.no_grad():
        for p in net.encoder.stack.init:
            p.add_(0.5)
    assert not torch.allclose(net(x, future), before, atol=1e-4)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("strategy", ["recursive", "seq2seq"])
def test_rolled_strategies_are_causal_and_forecast_past_the_trained_horizon(windows, strategy, bidirectional):
    net = network(windows, strategy=strategy, bidirectional=bidirectional, attention=strategy == "seq2seq").eval()
    batch = windows.train[:8]
    future = torch.cat([batch.future, batch.future], dim=1)
    with torch.no_grad():
        long = net(batch.x, future, horizon=2 * HORIZON)
        changed = future.clone()
        changed[:, 5:] += 1.0
        later_changed = net(batch.x, changed, horizon=2 * HORIZON)
    assert long.shape == (8, 2 * HORIZON)
    assert torch.allclose(long[:, :HORIZON], net(batch.x, batch.future), atol=1e-6)
    # Known-future features of step 5 onwards cannot move steps 0..4 (recursive reads step j's at step j, too).
    assert torch.equal(long[:, :5], later_changed[:, :5]) and not torch.equal(long[:, 5:], later_changed[:, 5:])


@pytest.mark.parametrize("strategy", ["recursive", "seq2seq"])
def test_teacher_forcing_feeds_true_values_in_training_only_at_the_configured_share(windows, strategy):
    batch = windows.train[:8]
    for ratio, moved in [(1.0, True), (0.0, False)]:
        net = network(windows, strategy=strategy, teacher_forcing=ratio).train()
        first = net(batch.x, batch.future, target=batch.y)
        second = net(batch.x, batch.future, target=batch.y + 1.0)
        assert torch.equal(first[:, 0], second[:, 0])
        assert torch.allclose(first[:, 1:], second[:, 1:]) != moved
    net.eval()
    assert torch.equal(net(batch.x, batch.future, target=batch.y), net(batch.x, batch.future, target=batch.y + 1))


@pytest.mark.parametrize("strategy, attention, score", [
    ("direct", False, "dot"), ("recursive", False, "dot"), ("seq2seq", False, "dot"), ("seq2seq", True, "dot"),
    ("seq2seq", True, "additive")])
def test_padding_rows_never_reach_the_forecast(windows, strategy, attention, score):
    # recursive: uni, so the encoder itself rolls on from its packed final state.
    net = network(windows, strategy=strategy, attention=attention, attention_score=score,
                  bidirectional=strategy != "recursive",
                  season=None).eval()
    batch = windows.train[:4]
    lengths = torch.tensor([LOOKBACK, 30, 10, 1])
    padded = batch.x.clone()
    padded[torch.arange(LOOKBACK).unsqueeze(0) < (LOOKBACK - lengths).unsqueeze(1)] = 0.0
    noisy = padded.clone()
    noisy[torch.arange(LOOKBACK).unsqueeze(0) < (LOOKBACK - lengths).unsqueeze(1)] = 7.0
    with torch.no_grad():
        assert torch.allclose(net(padded, batch.future, lengths=lengths), net(noisy, batch.future, lengths=lengths),
                              atol=1e-6)


def test_conformal_calibration_makes_validation_intervals_cover_their_nominal_share(windows):
    net = network(windows, quantiles=[0.1, 0.5, 0.9], season=SEASON).eval()
    with torch.no_grad():
        net.decoder.head[-1].bias[1::3] = -4.0  # squeeze the 10-90 interval far too narrow
    before = backtest_metrics(backtest(net, windows, [SEASON], block="val"))["model"]["coverage_80"]
    offsets = calibrate_intervals(net, windows)
    after = backtest_metrics(backtest(net, windows, [SEASON], block="val"))["model"]["coverage_80"]
    assert before < 0.5 and offsets["10_90"] > 0
    assert 0.8 <= after <= 0.85
    expected = torch.tensor([-offsets["10_90"], 0.0, offsets["10_90"]], dtype=torch.float32)
    assert torch.allclose(net.interval_offsets, expected)


def test_refused_model_options_name_the_key(windows):
    with pytest.raises(ConfigError, match="model.strategy=seq2seq"):
        network(windows, attention=True)
    with pytest.raises(ConfigError, match="model.quantiles"):
        network(windows, quantiles=[0.5, 1.0])


def test_pinball_loss_crps_wql_coverage_and_width_on_known_numbers():
    actual = np.array([[0.0, 10.0]])
    quantiles = np.array([[[-1.0, 0.0, 1.0], [11.0, 12.0, 13.0]]])
    metrics = quantile_metrics(actual, quantiles, [0.1, 0.5, 0.9])
    # Step 0 lies inside its band, step 1 below it; each band is 2 wide.
    assert metrics["coverage_80"] == 0.5 and metrics["width_80"] == 2.0
    # Pinball terms: step 0: 0.1, 0, 0.1; step 1: 0.9, 1.0, 0.3 -> mean 2.4 / 6
    assert metrics["quantile_loss"] == pytest.approx(2.4 / 6) and metrics["crps"] == pytest.approx(4.8 / 6)
    # Per level, 2 * summed pinball over summed |actual| (10): 0.2, 0.2, 0.08.
    assert metrics["wql"] == pytest.approx(0.16)
    torch_loss = pinball_loss(torch.tensor(quantiles), torch.tensor(actual), torch.tensor([0.1, 0.5, 0.9]))
    assert torch_loss.mean().item() == pytest.approx(2.4 / 6)
