"""trainer=ddp: Lightning's DDP strategy on two CPU processes (gloo) trains like one process with the same global
batch, shards the windows, and leaves one MLflow run written by rank zero."""

import json

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.data.sampler import WindowSampler
from pipeline.errors import ConfigError
from pipeline.training.distributed import check_distributed
from tests.helpers import SMALL, run_stage


def epoch_of(sampler: WindowSampler, rank: int, world: int) -> list[torch.Tensor]:
    sampler.shard = (rank, world)
    sampler.generator.manual_seed(0)
    return list(sampler)


@pytest.mark.parametrize("n_windows", [169, 170])
def test_each_process_takes_its_own_slice_of_every_batch_and_no_window_twice(n_windows):
    sampler = WindowSampler(n_windows, batch_size=32, shuffle=True)
    one = epoch_of(sampler, 0, 1)
    first, second = epoch_of(sampler, 0, 2), epoch_of(sampler, 1, 2)
    assert len(first) == len(second) == len(sampler) == sampler.batches_per_epoch(2)
    for whole, mine, theirs in zip(one, first, second):
        # The same global batch as one process draws, split in two equal halves.
        assert len(mine) == len(theirs) and set(mine.tolist()).isdisjoint(theirs.tolist())
        assert set(mine.tolist()) | set(theirs.tolist()) <= set(whole.tolist())
    seen = torch.cat(first + second)
    assert len(seen) == len(set(seen.tolist())) >= n_windows - 1  # at most world-1 windows left out


def test_validation_windows_are_split_between_processes_exactly_once():
    shares = [torch.cat(list(epoch_of(WindowSampler(53, 32, shuffle=False), rank, 2))) for rank in (0, 1)]
    assert torch.cat(shares).tolist() == list(range(53))


def test_ddp_is_refused_inside_a_sweep_and_the_global_batch_must_split_evenly():
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    with pytest.raises(ConfigError, match=r"cannot run inside a sweep \(-m\)"):
        check_distributed(trainer, 32, in_sweep=True)
    with pytest.raises(ConfigError, match="cannot run inside hparams_search"):
        check_distributed(trainer, 32, in_search=True)
    with pytest.raises(ConfigError, match="window.batch_size=33 is the global batch"):
        check_distributed(trainer, 33)
    assert check_distributed(trainer, 32) == {"world_size": 2, "global_batch_size": 32,
                                                              "batch_size_per_process": 16}


def history(client: MlflowClient, run_id: str, metric: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))


@pytest.mark.slow
def test_two_ddp_processes_train_like_one_with_the_same_global_batch_and_log_one_run(store, tmp_path):
    # 168 training windows: 32 a batch splits evenly, so no window is left out and the runs can match.
    common = [f"data.path={store.folder / 'train.parquet'}", *(o for o in SMALL if o != "trainer=cpu"),
              "split.val_steps=100", "trainer.precision=32-true"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ddp = run_stage("pipeline.train", *common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                    f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    summary = json.loads(ddp.stdout)  # rank zero's line alone
    assert [r.info.run_id for r in runs] == [summary["run_id"]] and runs[0].info.status == "FINISHED"
    params = runs[0].data.params
    assert (params["world_size"], params["global_batch_size"], params["batch_size_per_process"]) == ("2", "32", "16")
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["run_id"] == summary["run_id"]

    one = json.loads(run_stage("pipeline.train", *common, "trainer=cpu", f"tracking.uri={uri}",
                               f"hydra.run.dir={tmp_path / 'one'}").stdout)
    for metric in ("val_loss", "train_loss"):
        ours, reference = history(client, summary["run_id"], metric), history(client, one["run_id"], metric)
        assert [step for step, _ in ours] == [step for step, _ in reference] and len(ours) >= 2
        assert [value for _, value in ours] == pytest.approx([value for _, value in reference], rel=1e-4)


@pytest.mark.slow
def test_a_divergence_on_every_process_is_recorded_by_rank_zero_in_one_line(store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = run_stage("pipeline.train", f"data.path={store.folder / 'train.parquet'}",
                     *(o for o in SMALL if o != "trainer=cpu"), "trainer=ddp", "trainer.accelerator=cpu",
                     "trainer.devices=2", "optim.lr=1e20", "trainer.gradient_clip_val=null", f"tracking.uri={uri}",
                     f"hydra.run.dir={tmp_path / 'ddp'}")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("ERROR] - training step 1: the loss or gradient is not finite") == 1
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("pipeline").experiment_id])
    assert run.info.status == "FAILED" and "not finite" in run.data.tags["failure.reason"]
