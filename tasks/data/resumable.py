"""A training DataLoader whose order can be resumed mid-epoch, also across DDP processes.

The order of epoch ``e`` is a function of ``(seed, e)`` only (a permutation drawn from
a generator seeded with ``seed + e``, as ``DistributedSampler`` does), so a resumed run
sees the same epochs as an uninterrupted one. The loader counts the batches it has
handed out in the current epoch; Lightning stores that count in the checkpoint
(``state_dict``) and gives it back on resume (``load_state_dict``), and the next
iteration skips the batches already trained on without loading them.

With several processes (DDP) each rank takes every ``world_size``-th index of the
epoch's permutation; the sampler is a ``DistributedSampler``, so Lightning keeps it
instead of wrapping it in its own.

Random augmentation in worker processes (``num_workers > 0``). In the main process
(``num_workers=0``) a sample's augmentation draws from torch's global stream, which the
checkpoint holds (tasks/rng_state.py). A worker's streams are not in the checkpoint and
cannot be put there: they are seeded once, when the (persistent) workers start, and then
depend on every sample that worker has augmented since, and on which worker gets which
batch (the first batch after a mid-epoch resume goes to worker 0, not to the worker that
had it in the uninterrupted run). So with workers each sample's streams are set before
it is loaded, from ``(seed, epoch, position in the epoch)`` only
(:class:`SeededSamples`): the augmentation no longer depends on worker history, on the
number of workers, or on where a run was interrupted, and a resumed run sees the same
augmented samples as an uninterrupted one.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _world() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def seed_streams(seed: int, epoch: int, position: int) -> None:
    """Set this process's torch (CPU), NumPy and Python streams from ``(seed, epoch, position)`` alone
    (about 45 us; ``torch.manual_seed``, which also seeds every accelerator, takes 350)."""
    torch_seed, numpy_seed, python_seed = np.random.SeedSequence([seed, epoch, position]).generate_state(3)
    torch.default_generator.manual_seed(int(torch_seed))
    np.random.seed(int(numpy_seed))
    random.seed(int(python_seed))


class SeededSamples(Dataset):
    """``dataset`` read with keys ``(index, (seed, epoch, position))``: the random streams are set by
    :func:`seed_streams` before item ``index`` is loaded (for worker processes only: it resets them)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, sample_seed = key
        seed_streams(*sample_seed)
        return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """This rank's share of epoch ``epoch`` (shuffled or in order), optionally from an offset.

    ``seeded``: yield keys for :class:`SeededSamples`, ``(index, (seed, epoch, position))``, where
    ``position`` is the index's place in the epoch's whole order (the same for any number of ranks).
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool, seed: int, num_replicas: int | None = None,
                 rank: int | None = None, seeded: bool = False):
        world_size, this_rank = _world()
        super().__init__(dataset, num_replicas=world_size if num_replicas is None else num_replicas,
                         rank=this_rank if rank is None else rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.seeded = seeded
        self._resume: tuple[int, int] | None = None  # (epoch, indices to skip)

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next iteration, if it is of ``epoch``, starts after its first ``skip`` indices."""
        self._resume = (epoch, skip)

    def __iter__(self):
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None
        indices = list(super().__iter__())
        if self.seeded:  # this rank's j-th index is at place rank + j * num_replicas of the epoch's order
            indices = [(index, (self.seed, self.epoch, self.rank + place * self.num_replicas))
                       for place, index in enumerate(indices)]
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` with Lightning's ``state_dict`` protocol.

    The loader's own ``generator`` (DataLoader draws the workers' base seed from it) is reseeded
    per epoch, so torch's global stream is never drawn; what a worker draws for a sample is set
    per sample (:class:`SeededSamples`), not by that seed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._skip_batches = 0  # batches of the resumed epoch already trained on
        self._epoch = self._batches = 0  # the epoch being handed out and its batches so far

    def __iter__(self):
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(sampler).__name__}")
        skipped = self._skip_batches if sampler._resume and sampler._resume[0] == sampler.epoch else 0
        self._skip_batches = 0
        if self.generator is not None:
            self.generator.manual_seed(sampler.seed + sampler.epoch)
        self._epoch, self._batches = sampler.epoch, skipped
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict:
        """Position in the training data: the epoch and the batches handed out in it."""
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["batches"]`` batches."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self.sampler.set_epoch(epoch)
        self.sampler.resume_at(epoch, batches * self.batch_size)
        self._skip_batches = batches


def resumable_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                     **kwargs) -> ResumableLoader:
    """A :class:`ResumableLoader` over ``dataset`` (this rank's share when running DDP); with worker
    processes each sample's random streams are set from ``(seed, epoch, position)`` (see the module)."""
    workers = num_workers > 0
    return ResumableLoader(SeededSamples(dataset) if workers else dataset, batch_size=batch_size,
                           sampler=ResumableSampler(dataset, shuffle=shuffle, seed=seed, seeded=workers),
                           generator=torch.Generator().manual_seed(seed), num_workers=num_workers,
                           persistent_workers=workers, **kwargs)
