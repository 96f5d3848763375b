"""Batches of window numbers for training and validation: one shuffled order per epoch from a generator of the
sampler's own (so a resumed training replays it), sharded among the processes of a distributed training."""

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from pipeline.data.windows import WindowDataset


class WindowSampler(Sampler):
    """Batches of window numbers as tensors: one permutation per epoch (int32), no Python list per window.

    The permutation is drawn from a generator of the sampler's own, seeded with `seed`: the order then depends
    on nothing else the training draws (dropout, a validation pass, Lightning re-seeding the global generator
    when distributed processes start). `epoch_rng` keeps the generator state each epoch was drawn from, so a
    training resumed mid-epoch replays the same order and skips the batches already done (`replay`,
    pipeline/training/resume.py).

    Under distributed training `shard` is (this process's rank, number of processes), set by
    pipeline.training.callbacks.ShardWindows; `batch_size` stays the global batch. Every process draws the same
    permutation (its own generator, seeded alike) and takes its own slice of each batch, so no window is seen
    twice in an epoch; the last batch loses the few windows (fewer than the number of processes) that would
    make the slices unequal, so that averaging the processes' gradients weighs every window alike.
    Unshuffled (validation), each process takes a contiguous share of the windows."""

    def __init__(self, n_windows: int, batch_size: int, shuffle: bool, seed: int = 0):
        self.n_windows, self.batch_size, self.shuffle = n_windows, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.shard = (0, 1)
        self.epoch_rng: torch.Tensor | None = None
        self._replay: tuple[torch.Tensor, int] | None = None

    def __len__(self) -> int:
        rank, world = self.shard
        if not self.shuffle:
            share = self.n_windows * (rank + 1) // world - self.n_windows * rank // world
            return -(-share // (self.batch_size // world))
        return self.batches_per_epoch(world)

    def batches_per_epoch(self, world: int = 1) -> int:
        """Training batches an epoch has when `world` processes share it (see the class's note on the last)."""
        last = self.n_windows % self.batch_size
        return -(-self.n_windows // self.batch_size) - (0 < last < world)

    def replay(self, epoch_rng: torch.Tensor, batches_done: int) -> None:
        """The next epoch is the one drawn from `epoch_rng`, less its first `batches_done` batches."""
        self._replay = (epoch_rng, batches_done)

    def __iter__(self) -> Iterator[torch.Tensor]:
        rank, world = self.shard
        if not self.shuffle:
            share = torch.arange(self.n_windows * rank // world, self.n_windows * (rank + 1) // world,
                                 dtype=torch.int32)
            yield from share.split(self.batch_size // world)
            return
        done = 0
        if self._replay is not None:
            (self.epoch_rng, done), self._replay = self._replay, None
            self.generator.set_state(self.epoch_rng)
        else:
            self.epoch_rng = self.generator.get_state()
        order = torch.randperm(self.n_windows, dtype=torch.int32, generator=self.generator)
        for batch in order.split(self.batch_size)[done:len(self)]:
            # (batch_size,) -> (batch_size / world,): this process's slice
            yield batch[: len(batch) - len(batch) % world].chunk(world)[rank]


def batches(dataset: WindowDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader that hands the dataset whole batches of window numbers (no per-window __getitem__),
    shuffled (with `seed`) or in order.

    It draws its (unused, no workers) base seed from a generator of its own: from the global one, every
    validation pass would shift the training's random stream, and a resumed training could not replay it."""
    return DataLoader(dataset, sampler=WindowSampler(len(dataset), batch_size, shuffle, seed), batch_size=None,
                      generator=torch.Generator())
