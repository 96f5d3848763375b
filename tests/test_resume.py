"""resume=: a training killed outright continues in the same MLflow run to the very result it would have had."""

import json
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.errors import ConfigError
from pipeline.tracking import store as tracking
from pipeline.training import resume
from tests.helpers import SMALL, compose_config, run_stage, start_stage

# 22 batches an epoch (stride 1), validation (and last.ckpt) every 5 steps, so every checkpoint is mid-epoch;
# dropout, so the random state matters too.
EXACT = [*SMALL, "window.stride=1", "trainer.val_check_interval=5", "trainer.max_steps=45", "model.num_layers=2",
         "model.dropout=0.2", "trainer.log_every_n_steps=1"]
CURVES = ["train_loss", "val_loss", "val_loss_raw", "lr-AdamW", "grad_norm"]


def history(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, name)]


def runs_of(client: MlflowClient, experiment: str):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.slow
def test_a_training_killed_mid_epoch_resumes_in_the_same_run_to_the_same_weights_and_metrics(store, tmp_path):
    data = f"data.path={store.folder / 'train.parquet'}"
    reference = store.train(*EXACT, "tracking.experiment=uninterrupted", f"hydra.run.dir={tmp_path / 'reference'}")

    killed_dir = tmp_path / "killed"
    process = start_stage("pipeline.train", data, f"tracking.uri={store.uri}", "tracking.experiment=killed",
                          f"hydra.run.dir={killed_dir}", *EXACT, stdout=subprocess.DEVNULL)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)
    assert 0 < saved["exact_resume"]["batches_done"] < 22 and saved["global_step"] < 45  # mid-epoch, mid-run

    # The interrupted command again, with resume=last added (its overrides equal the run's own).
    done = run_stage("pipeline.train", data, f"tracking.uri={store.uri}", "tracking.experiment=killed",
                     f"hydra.run.dir={tmp_path / 'resume'}", *EXACT, "resume=last")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads(done.stdout)

    client = MlflowClient(store.uri)
    (run,) = runs_of(client, "killed")  # one run, not two
    assert resumed["run_id"] == run.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumed"] == "1" and "failure.reason" not in run.data.tags
    weights = torch.load(last, weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert weights.keys() == expected.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], expected[name], rtol=0, atol=1e-6)
    for block in ("val", "test"):
        assert resumed[block] == pytest.approx(reference[block], rel=1e-6)
    for name in CURVES:
        curve = history(client, run.info.run_id, name)
        assert len({step for step, _ in curve}) == len(curve), f"{name} has a step logged twice"
        expected_curve = history(client, reference["run_id"], name)
        assert [step for step, _ in curve] == [step for step, _ in expected_curve], name
        assert [value for _, value in curve] == pytest.approx([value for _, value in expected_curve], rel=1e-6)


@pytest.fixture
def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


def training_run(client: MlflowClient, output_dir: Path, status: str = "KILLED") -> str:
    experiment = client.get_experiment_by_name("pipeline") or client.get_experiment(
        client.create_experiment("pipeline", artifact_location=(output_dir.parent / "artifacts").as_uri()))
    run = client.create_run(experiment.experiment_id, tags={resume.STAGE: "train",
                                                            resume.OUTPUT_DIR: str(output_dir)})
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.mark.slow
def test_resuming_a_run_that_never_saved_a_checkpoint_is_refused_in_one_line(client, tmp_path):
    # Lightning's ckpt_path="last" would silently start from scratch instead.
    run_id = training_run(client, tmp_path / "run")
    done = run_stage("pipeline.train", f"resume={run_id}", f"tracking.uri={client.tracking_uri}")
    assert done.returncode == 2 and done.stdout == ""
    assert "no checkpoint at" in done.stderr.splitlines()[-1] and run_id in done.stderr.splitlines()[-1]
    assert len(runs_of(client, "pipeline")) == 1


def test_resume_refuses_a_finished_run_a_live_one_and_any_config_change(client, tmp_path):
    cfg = TrackingConfig(uri=client.tracking_uri)
    with pytest.raises(ConfigError, match="finished; there is nothing to resume"):
        resume.find_run(cfg, training_run(client, tmp_path, status="FINISHED"))
    with tracking.start_run(cfg):
        mlflow.set_tag(resume.STAGE, "train")
        # This process holds it.
        with pytest.raises(ConfigError, match="still being trained by process"):
            resume.find_run(cfg, "last")


def test_resume_refuses_when_the_data_file_changed_since_the_run_started(client, tmp_path, vic_elec_slice):
    run_id = training_run(client, tmp_path / "run")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    client.log_text(run_id, f"data:\n  path: {vic_elec_slice}\n", "config.yaml")
    client.set_tag(run_id, "data.sha256", "0" * 64)
    with pytest.raises(ConfigError, match=f"{vic_elec_slice} changed since run {run_id} started"):
        resume.plan(compose_config(f"tracking.uri={client.tracking_uri}"), run_id)


def test_a_damaged_checkpoint_is_refused_before_the_run_is_reopened(client, tmp_path, vic_elec_slice):
    import torch

    run_id = training_run(client, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, checkpoint)
    client.log_text(run_id, f"data:\n  path: {vic_elec_slice}\n", "config.yaml")
    damaged = bytearray(checkpoint.read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 16] = b"\xff" * 16
    checkpoint.write_bytes(bytes(damaged))
    with pytest.raises(ConfigError, match=f"checkpoint {checkpoint} is damaged"):
        resume.plan(compose_config(f"tracking.uri={client.tracking_uri}"), run_id)
    checkpoint.write_bytes(bytes(damaged[:100]))  # truncated
    with pytest.raises(ConfigError, match="is damaged \\(File is not a zip file\\)"):
        resume.plan(compose_config(f"tracking.uri={client.tracking_uri}"), run_id)
    assert client.get_run(run_id).info.status == "KILLED"


def test_resume_takes_the_interrupted_command_again_and_refuses_only_a_changed_value(client, tmp_path):
    import torch
    from omegaconf import OmegaConf

    run_id = training_run(client, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, checkpoint)
    # Started without the default experiment (one GRU, step by step): `resume=` alone still continues it as it was.
    command = ["model=gru", "window.lookback=96", "seed=3", "~experiment"]
    started = compose_config(*command, f"tracking.uri={client.tracking_uri}")
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.to_container(started, resolve=True, enum_to_str=True)),
                    "config.yaml")

    def plan(*overrides):
        overrides = [*overrides, f"resume={run_id}", f"tracking.uri={client.tracking_uri}"]
        return resume.plan(compose_config(*overrides), run_id, overrides)

    for repeated in ([], command, command[:1], ["tracking.experiment=pipeline"]):  # resume alone, or the same
        config, _ = plan(*repeated)
        assert (config.model.cell.value, config.window.lookback, config.seed) == ("gru", 96, 3)
        assert (config.model.segment_len, config.model.ensemble) == (None, 1)
    for changed, key in (["model=rnn"], "model.cell"), (["window.lookback=48"], "window.lookback"), (
            ["seed=0"], "seed"), (["experiment=quick"], "model.segment_len"):
        with pytest.raises(ConfigError, match=f"{key}=.* differs from the run's {key}="):
            plan(*changed)
