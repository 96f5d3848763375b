"""Every cell and shape trains; clipping, the seasonal skip, padding, segments and per-window normalisation do
what they promise."""

import lightning as L
import numpy as np
import pytest
import torch

from pipeline.data.sampler import batches
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import seasonal_naive
from pipeline.model.ensemble import build_network
from pipeline.model.network import RecurrentNetwork
from pipeline.model.predict import predict
from pipeline.model.training_module import TrainingModule
from tests.helpers import forecaster_for, network_args

LOOKBACK, HORIZON = 96, 24
ROWS, STRIDE = 1500, 4


def small_module(windows, cell="lstm", num_layers=1, bidirectional=False, season=48, lr=1e-2, **changes):
    """The training stage's module for `windows`, as `model=CELL model.num_layers=...` would build it."""
    return forecaster_for(windows, f"window.lookback={LOOKBACK}", f"window.horizon={HORIZON}",
                          f"model={cell}", "model.hidden_size=16", f"model.num_layers={num_layers}",
                          f"model.bidirectional={str(bidirectional).lower()}",
                          f"model.dropout={0.1 if num_layers > 1 else 0.0}", f"optim.lr={lr}",
                          "optim.cosine_schedule=false", season=season, **changes)


def network(n_features=3, **changes) -> RecurrentNetwork:
    """A network from the default config, with some of its keyword arguments changed."""
    return build_network(**(network_args(n_features=n_features, n_future=0) | changes))


def fit(module, windows, callbacks=(), **trainer_args):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks),
                        **({"max_steps": 25} | trainer_args))
    trainer.fit(module, batches(windows.train, 32, shuffle=True))
    return trainer


def training_loss(module, windows) -> float:
    batch = windows.train[:]
    module.eval()
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(module(batch), batch.y).item()
    module.train()
    return loss


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_and_shape_lowers_the_training_loss(windows, cell, num_layers, bidirectional):
    torch.manual_seed(0)
    module = small_module(windows, cell, num_layers, bidirectional, season=None)
    before = training_loss(module, windows)
    fit(module, windows)
    assert training_loss(module, windows) < 0.8 * before


class RecordGradients(L.Callback):
    """Reads p.grad after each optimizer step: the gradients the optimizer actually used."""

    def __init__(self):
        self.norms, self.largest = [], []

    def on_train_start(self, trainer, pl_module):
        def record(optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.norms.append(torch.nn.utils.get_total_norm(grads).item())
            self.largest.append(max(g.abs().max().item() for g in grads))

        trainer.optimizers[0].register_step_post_hook(record)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_bounds_the_gradients_the_optimizer_sees(windows, algorithm):
    limit = 1e-3
    unclipped, clipped = RecordGradients(), RecordGradients()
    torch.manual_seed(0)
    fit(small_module(windows), windows, [unclipped], max_steps=5)
    torch.manual_seed(0)
    fit(small_module(windows), windows, [clipped], max_steps=5, gradient_clip_val=limit,
        gradient_clip_algorithm=algorithm)
    measured = unclipped.norms if algorithm == "norm" else unclipped.largest
    bounded = clipped.norms if algorithm == "norm" else clipped.largest
    assert min(measured) > 10 * limit, "without clipping the gradients must exceed the limit"
    assert len(bounded) == 5 and max(bounded) <= limit * (1 + 1e-5)


def test_logged_gradient_norm_is_taken_before_clipping(windows):
    trainer = fit(small_module(windows), windows, max_steps=3, gradient_clip_val=1e-3)
    assert trainer.callback_metrics["grad_norm"] > 1e-2


def test_seasonal_skip_starts_exactly_at_seasonal_naive(windows):
    network = small_module(windows, season=48).network
    target = windows.values[:, 0].double().numpy()
    expected = seasonal_naive(target, windows.val.starts.numpy() + LOOKBACK, HORIZON, 48)
    assert np.allclose(predict(network, windows.val, 64), expected, atol=1e-6)


def test_nonlinearity_applies_to_the_vanilla_rnn_only():
    network(cell="rnn", nonlinearity="relu")
    with pytest.raises(ConfigError, match="vanilla RNN only"):
        network(cell="gru", nonlinearity="relu")


def test_checkpoint_hyperparameters_are_plain_and_load_with_weights_only(windows, tmp_path):
    trainer = fit(small_module(windows), windows, max_steps=2)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    module = TrainingModule(**checkpoint["hyper_parameters"])
    assert set(checkpoint["hyper_parameters"]) == {"network", "optim"}
    module.load_state_dict(checkpoint["state_dict"])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_never_reaches_the_hidden_state(cell, bidirectional):
    torch.manual_seed(0)
    net = network(cell=cell, lookback=10, horizon=2, hidden_size=8, num_layers=2, bidirectional=bidirectional,
                  window_norm=False).eval()
    real = torch.randn(2, 4, 3)
    # Two left-padded windows of 4 real steps, whose padding holds different garbage.
    padded = torch.cat([torch.randn(2, 6, 3) * 100, real], dim=1)
    lengths = torch.tensor([4, 4])
    empty = torch.zeros(2, 2, 0)
    with torch.no_grad():
        from_padded = net(padded, empty, lengths=lengths)
        from_real_steps_only = net(real, empty)
    assert torch.allclose(from_padded, from_real_steps_only, atol=1e-5)


def test_series_embedding_tells_series_apart(windows):
    torch.manual_seed(0)
    module = small_module(windows, "gru", season=None, n_series=3, series_embedding=4)
    batch = windows.train[[0, 0, 0]]
    batch = batch._replace(series=torch.tensor([0, 1, 2]))
    with torch.no_grad():
        out = module(batch)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert module.network.embedding.weight.shape == (3, 4)


def test_segment_inputs_read_the_lookback_in_fewer_recurrent_steps_and_train(windows):
    torch.manual_seed(0)
    module = small_module(windows, "gru", season=None, segment_len=12)
    seen = []
    module.network.encoder.stack.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    before = training_loss(module, windows)
    fit(module, windows)
    assert seen[0][1] == LOOKBACK // 12 and seen[0][2] == 16
    assert training_loss(module, windows) < 0.8 * before


def test_segment_length_must_divide_the_lookback():
    with pytest.raises(ConfigError, match="must divide window.lookback .*or null to read step by step"):
        network(lookback=10, segment_len=4)


@pytest.mark.parametrize("strategy", ["direct", "recursive", "seq2seq"])
def test_window_norm_forecast_moves_and_stretches_with_its_window(strategy):
    # Per-window normalisation: a window shifted by b and scaled by a > 0 gets the forecast a * f + b.
    torch.manual_seed(0)
    shape = dict(n_features=1, cell="gru", lookback=12, horizon=3, hidden_size=8, num_layers=1, season=4,
                 strategy=strategy)
    net = network(**shape, window_norm=True).eval()
    for parameter in net.decoder.head.parameters():
        torch.nn.init.normal_(parameter)  # away from the zero init of the seasonal skip
    x = torch.randn(5, 12, 1)
    empty = torch.zeros(5, 3, 0)
    with torch.no_grad():
        base = net(x, empty)
        moved = net(3.0 * x + 7.0, empty)
    assert torch.allclose(moved, 3.0 * base + 7.0, atol=1e-4)
    assert not torch.allclose(base, network(**shape, window_norm=False).eval()(x, empty), atol=1e-3)


def test_window_norm_ignores_padding_rows():
    torch.manual_seed(0)
    net = network(n_features=1, lookback=10, horizon=2, hidden_size=8, num_layers=1, window_norm=True).eval()
    real = torch.randn(2, 4, 1) + 5.0
    padded = torch.cat([torch.randn(2, 6, 1) * 100, real], dim=1)
    empty = torch.zeros(2, 2, 0)
    with torch.no_grad():
        assert torch.allclose(net(padded, empty, lengths=torch.tensor([4, 4])), net(real, empty), atol=1e-5)
