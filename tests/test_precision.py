"""trainer.precision: `auto` resolves per machine and cell; bf16-mixed trains every LSTM path on a CPU with native
bfloat16 and is refused, before any data is read, on a CPU without. The CPU probe is forced each way
(PIPELINE_NATIVE_BF16), so both branches run on any machine."""

import os
import platform
import subprocess
import sys

import lightning as L
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import DataConfig, ShortSeries, to_config
from pipeline.data.load import validate_frame
from pipeline.data.sampler import batches
from pipeline.data.windows import make_windows
from pipeline.errors import ConfigError
from pipeline.host import NATIVE_BF16, native_bf16_cpu
from pipeline.train import build_module
from pipeline.training.precision import auto_precision, resolve_precision
from tests.helpers import SMALL, compose_config, run_stage


@pytest.fixture(params=["native bf16", "no bf16"])
def cpu_bf16(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """This CPU as one with native bfloat16, then as one without (the probe's override)."""
    native = request.param == "native bf16"
    monkeypatch.setenv(NATIVE_BF16, "1" if native else "0")
    return native


def test_auto_precision_is_bf16_for_an_lstm_on_a_cpu_with_native_bf16_only():
    assert auto_precision("lstm", on_cpu=True, native_bf16=True)[0] == "bf16-mixed"
    # The vanilla RNN and the GRU step slower in bf16 on CPU; emulated bf16 is slow; GPUs were not measured.
    assert auto_precision("rnn", on_cpu=True, native_bf16=True)[0] == "32-true"
    assert auto_precision("gru", on_cpu=True, native_bf16=True)[0] == "32-true"
    assert auto_precision("lstm", on_cpu=True, native_bf16=False) == (
        "32-true", "this CPU has no native bfloat16 (AVX-512 BF16 or AMX)")
    assert auto_precision("lstm", on_cpu=False, native_bf16=True)[0] == "32-true"


def test_auto_follows_the_cpu_probe_and_says_why_in_the_log(cpu_bf16, caplog):
    with caplog.at_level("INFO", logger="pipeline.training.precision"):
        chosen = resolve_precision({"precision": "auto", "accelerator": "cpu"}, "lstm")
    assert chosen == ("bf16-mixed" if cpu_bf16 else "32-true")
    assert f"trainer.precision=auto: {chosen} (" in caplog.text
    assert ("with native bfloat16" if cpu_bf16 else "has no native bfloat16") in caplog.text
    assert resolve_precision({"precision": "auto", "accelerator": "cpu"}, "gru") == "32-true"


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "bf16"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bf16_on_a_cpu_without_native_bf16_is_refused_in_one_line_for_every_cell(cpu_bf16, precision, cell):
    args = {"precision": precision, "accelerator": "cpu"}
    if cpu_bf16:
        assert resolve_precision(args, cell) == precision
        return
    with pytest.raises(ConfigError) as refused:
        resolve_precision(args, cell)
    message = str(refused.value)
    assert message.startswith(f"trainer.precision={precision}: this CPU has no native bfloat16 (AVX-512 BF16 or AMX)")
    assert "set trainer.precision=32-true" in message and "\n" not in message


def test_an_explicit_precision_is_passed_to_lightning_unchanged(cpu_bf16):
    assert resolve_precision({"precision": "16-mixed", "accelerator": "cpu"}, "lstm") == "16-mixed"
    assert resolve_precision({"precision": "32-true", "accelerator": "cpu"}, "lstm") == "32-true"
    assert resolve_precision({"precision": 32, "accelerator": "cpu"}, "lstm") == 32
    assert compose_config().trainer.precision == "auto"


def test_the_probe_override_takes_only_one_or_zero(monkeypatch):
    monkeypatch.setenv(NATIVE_BF16, "yes")
    with pytest.raises(ConfigError, match="PIPELINE_NATIVE_BF16='yes': set 1 .*, 0 .*, or unset it"):
        native_bf16_cpu()


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ONEDNN_MAX_CPU_ISA=AVX2 is x86's")
def test_the_probe_reads_the_cpu_and_an_avx2_cpu_has_no_native_bf16():
    # oneDNN held to AVX2 is what a CPU without AVX-512 BF16 or AMX offers; the probe must see it.
    code = "from pipeline.host import native_bf16_cpu; print(native_bf16_cpu())"
    env = {k: v for k, v in os.environ.items() if k != NATIVE_BF16} | {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


@pytest.mark.slow
def test_the_command_refuses_bf16_on_a_cpu_without_it_before_reading_data_or_opening_a_run(tmp_path, vic_elec):
    vic_elec.iloc[:1008].to_parquet(tmp_path / "slice.parquet", index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_stage("pipeline.train", *SMALL, f"data.path={tmp_path / 'slice.parquet'}", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'run'}", "trainer.precision=bf16-mixed", env={NATIVE_BF16: "0"})
    assert done.returncode == 2 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "trainer.precision=bf16-mixed: this CPU has no native bfloat16" in errors[0]
    assert "loaded" not in done.stderr  # the data was never read
    runs = [r for e in MlflowClient(uri).search_experiments() for r in MlflowClient(uri).search_runs([e.experiment_id])]
    assert runs == []


@pytest.fixture(scope="module")
def padded_windows(vic_elec):
    """A long and a short series: the short one is left-padded, so every batch is packed by real length."""
    frame = pd.concat([vic_elec.iloc[:600].assign(site="long"), vic_elec.iloc[600:830].assign(site="short")])
    series = validate_frame(frame, DataConfig(id_column="site"), source="two sites")
    return make_windows(series, 48, 12, 8, 96, 96, calendar=True, short_series=ShortSeries.pad)


@pytest.mark.parametrize("strategy", ["direct", "recursive", "seq2seq"])
def test_an_lstm_trains_in_bf16_mixed_on_a_cpu_with_native_bf16_bidirectional_and_padded_or_is_refused(
        padded_windows, strategy):
    # The capability is this machine's (or PIPELINE_NATIVE_BF16's): a CPU without it gets the refusal instead.
    if not native_bf16_cpu():
        with pytest.raises(ConfigError, match="this CPU has no native bfloat16"):
            resolve_precision({"precision": "bf16-mixed", "accelerator": "cpu"}, "lstm")
        return
    assert padded_windows.first_real is not None
    torch.manual_seed(0)
    cfg = to_config(compose_config("window.lookback=48", "window.horizon=12", "model.hidden_size=8",
                                   f"model.strategy={strategy}", "model.bidirectional=true"))
    module = build_module(cfg, padded_windows, 48)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, batches(padded_windows.train, 16, shuffle=True))
    assert all(torch.isfinite(p).all() for p in module.parameters())
    moved = [not torch.equal(a, p) for a, p in zip(before, module.parameters())]
    assert sum(moved) > len(moved) // 2
    module.eval()
    with torch.no_grad():
        out = module(padded_windows.train[:16])
    # Weights stay float32: inference (backtests, the logged model) runs in full precision.
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
