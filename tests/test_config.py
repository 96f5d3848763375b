import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config import Config, to_config, trainer_kwargs
from tests.helpers import CONF_DIR, ROOT, compose_config


def test_defaults_are_the_documented_protocol():
    cfg = to_config(compose_config())
    assert isinstance(cfg, Config)
    assert (cfg.window.lookback, cfg.window.horizon) == (336, 48)
    assert (cfg.split.val_steps, cfg.split.test_steps) == (28 * 48, 28 * 48)
    assert (cfg.model.cell, cfg.model.num_layers, cfg.model.hidden_size) == ("lstm", 2, 64)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (1.0, "norm")
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu"])
def test_every_model_and_trainer_preset_composes(cell, trainer):
    cfg = compose_config(f"model={cell}", f"trainer={trainer}")
    assert cfg.model.cell == cell
    assert trainer_kwargs(cfg)["accelerator"] == {"default": "auto", "cpu": "cpu", "gpu": "gpu"}[trainer]


def test_every_experiment_file_composes():
    experiments = sorted((CONF_DIR / "experiment").glob("*.yaml"))
    assert experiments
    for path in experiments:
        to_config(compose_config(f"experiment={path.stem}"))
    assert compose_config("experiment=quick").trainer.max_steps == 1200


@pytest.mark.parametrize("override", ["model.hiden_size=8", "window.lookbak=10", "trainer.max_step=3"])
def test_misspelled_key_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].split(".")[1]):
        compose_config(override)


def test_wrongly_typed_value_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="window.lookback"):
        compose_config("window.lookback=a_week")


def test_extra_trainer_arguments_pass_through_to_lightning():
    cfg = compose_config("++trainer.limit_val_batches=2", "++trainer.num_sanity_val_steps=0")
    assert trainer_kwargs(cfg)["limit_val_batches"] == 2


def test_misspelled_key_on_the_command_line_exits_with_a_clear_message():
    done = subprocess.run([sys.executable, "-m", "pipeline.train", "model.hiden_size=8"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Could not override 'model.hiden_size'" in done.stderr


@pytest.mark.parametrize("override", ["model=lsmt", "model.cell=lsmt", "model.head_activation=rleu",
                                      "model.nonlinearity=sigmoid", "optim.loss=l1",
                                      "trainer.gradient_clip_algorithm=both"])
def test_a_choice_outside_its_options_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_config(override)


def test_the_team_server_preset_is_a_diff_of_the_local_one(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    local, server = (to_config(compose_config(f"tracking={name}")).tracking for name in ("local", "server"))
    changed = {key for key in vars(local) if getattr(local, key) != getattr(server, key)}
    assert changed == {"uri", "outage_seconds"} and server.uri == "http://mlflow.internal:5000"
