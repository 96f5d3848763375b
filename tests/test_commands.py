"""The commands as their ecosystem has them: `python -m pipeline` lists the stages, `pipeline STAGE ...` and the
`pipeline-STAGE` console scripts run them from any folder, as `python -m pipeline.STAGE` does."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_stage

pytestmark = pytest.mark.slow  # every test here starts the commands

BIN = Path(sys.executable).parent


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_python_m_pipeline_lists_the_stages_and_refuses_an_unknown_one_in_one_line():
    done = run(sys.executable, "-m", "pipeline")
    assert done.returncode == 0
    assert [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")] == [
        "train", "evaluate", "forecast", "register", "export", "serve"]
    wrong = run(sys.executable, "-m", "pipeline", "trian")
    assert wrong.returncode == 2 and wrong.stderr.strip() == (
        "pipeline: no stage 'trian'; one of train, evaluate, forecast, register, export, serve")


def test_the_console_scripts_compose_each_stage_config_from_any_folder(tmp_path):
    train = run(str(BIN / "pipeline-train"), "--cfg", "job", "window.horizon=7", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-2000:]
    assert "  horizon: 7" in train.stdout
    forecast = run(str(BIN / "pipeline"), "forecast", "--cfg", "job", "output=f.csv", cwd=tmp_path)
    assert forecast.returncode == 0, forecast.stderr[-2000:]
    assert "output: f.csv" in forecast.stdout and "horizon" not in forecast.stdout


@pytest.mark.parametrize("stage, key", [("train", "lookback:"), ("evaluate", "origins:"), ("forecast", "output:"),
                                        ("register", "force:"), ("export", "format:")])
def test_each_stages_help_shows_its_own_keys_and_only_training_lists_the_training_groups(stage, key):
    done = run_stage(f"pipeline.{stage}", "--help")  # the console scripts' way in is the test above's
    assert done.returncode == 0, done.stderr[-2000:]
    assert key in done.stdout
    lists_groups = "model: gru, lstm, rnn" in done.stdout and "trainer: " in done.stdout
    assert lists_groups == (stage == "train")
