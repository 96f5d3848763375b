
import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config import Config, to_config, trainer_kwargs
from tests.helpers import CONF_DIR, compose_config, run_stage


def test_defaults_are_the_documented_protocol():
    cfg = to_config(compose_config())
    assert isinstance(cfg, Config)
    # Unset: derived from the data when it is loaded (tests/test_data_defaults.py), 336, 48 and 1344 on the default.
    assert (cfg.window.lookback, cfg.window.horizon, cfg.split.val_steps, cfg.split.test_steps) == (None,) * 4
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


def test_the_plain_command_composes_the_default_recipe_and_tilde_experiment_the_schemas_own():
    recipe = to_config(compose_config())
    assert (recipe.model.segment_len, recipe.model.ensemble, recipe.trainer.max_steps) == (4, 3, 600)
    plain = to_config(compose_config("~experiment"))
    assert (plain.model.segment_len, plain.model.ensemble, plain.trainer.max_steps) == (None, 1, 600)
    # Another experiment replaces the default one: tourism keeps the recipe it was measured with.
    tourism = to_config(compose_config("experiment=tourism"))
    assert (tourism.model.segment_len, tourism.model.ensemble) == (None, 1)


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


@pytest.mark.slow
def test_misspelled_key_on_the_command_line_exits_with_a_clear_message():
    done = run_stage("pipeline.train", "model.hiden_size=8")
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


def checked_keys():
    """(stage config, dotted key, its check) for every checked key of every stage's schema."""
    import dataclasses

    from pipeline.config import EvaluateConfig

    def walk(kind, path=""):
        for f in dataclasses.fields(kind):
            inner = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(inner):
                yield from walk(inner, f"{path}{f.name}.")
            elif f.name == "hparams_search":
                yield from walk(SearchConfig, f"{path}{f.name}.")
            else:
                yield path + f.name, f
    from pipeline.config import SearchConfig

    for stage, kind in (("config", Config), ("evaluate", EvaluateConfig)):
        for key, f in walk(kind):
            yield stage, key, f


def numeric(f) -> bool:
    """Whether a schema field holds numbers (int, float, optional or lists of them; or numbers under Any)."""
    import dataclasses

    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    text = str(f.type)
    return (f.type in (int, float) or any(name in text for name in ("Optional[int]", "Optional[float]",
                                                                      "list[int]", "list[float]"))
            or (not isinstance(default, bool) and isinstance(default, (int, float))))


def bad_value(f) -> str:
    import dataclasses

    from pipeline.bounds import Bounds

    check = f.metadata["check"]
    if not isinstance(check, Bounds):
        return "banana"
    value = str(check.low - 1 if not check.low_open else check.low) if check.low is not None else str(check.high + 1)
    return f"[{value}]" if f.default_factory is not dataclasses.MISSING else value


def test_every_numeric_key_declares_its_allowed_values():
    unchecked = [key for _, key, f in checked_keys() if numeric(f) and "check" not in f.metadata]
    assert not unchecked


BAD_VALUES = [(stage, f"{key}={bad_value(f)}") for stage, key, f in checked_keys()
              if "check" in f.metadata]


@pytest.mark.parametrize("stage,override", BAD_VALUES, ids=[o for _, o in BAD_VALUES])
def test_a_value_out_of_range_fails_in_one_line_naming_key_value_and_range(stage, override):
    from hydra import compose, initialize_config_dir

    from pipeline.errors import ConfigError

    key, value = override.split("=", 1)
    overrides = [override] if not key.startswith("hparams_search.") else ["hparams_search=optuna", override]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(stage, overrides=overrides)
    with pytest.raises(ConfigError) as raised:
        to_config(cfg)
    message = str(raised.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    assert value.strip("[]") in message and ("must be" in message)


@pytest.mark.slow
@pytest.mark.parametrize("override", ["data.time_format=%s", "window.lookback=0"])
def test_a_bad_value_on_the_command_line_exits_2_before_any_run(override, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_stage("pipeline.train", override, f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and override.split("=")[0] in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists()
