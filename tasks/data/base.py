"""A LightningDataModule over train/val/test datasets built once in ``setup``."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..rules import POSITIVE, Flag, Integer, Number, Text
from .resumable import resumable_loader

# Rules of keys several data modules take (each module's CONFIG_RULES names those it takes).
FILE_RULES = {"root": Text(), "download": Flag()}  # files under root, or fetched
SPLIT_RULES = {"val_fraction": Number(least=0, below=1), "train_subset": Integer(least=1, null="all"),
               "test_subset": Integer(least=1, null="all")}
# ``size``, the side of an image (null: PhotoData's full photograph; the other modules refuse null when built).
SIDE = Integer(least=1, null="the photograph's own size")


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are missing; the message says how to get them."""


class SplitDataModule(L.LightningDataModule):
    """Subclasses implement :meth:`load_splits` returning ``(train, val, test)`` datasets.

    ``check`` runs before training so a missing dataset fails early.
    """

    CONFIG_RULES = {"batch_size": POSITIVE, "eval_batch_size": Integer(least=1, null="batch_size"),
                    "num_workers": Integer(least=0)}

    def __init__(self, batch_size: int = 64, eval_batch_size: int | None = None, num_workers: int = 0,
                 seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits: tuple[Dataset, Dataset, Dataset] | None = None

    def load_splits(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`DatasetNotFound` (or ValueError) if the data cannot be loaded."""
        self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.load_splits()

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        if shuffle:  # training: an order that depends on (seed, epoch) only and resumes mid-epoch
            return resumable_loader(dataset, batch_size=batch_size, shuffle=True, seed=self.seed,
                                    num_workers=self.num_workers)
        workers = self.num_workers > 0
        # Persistent workers start once per run (a resumed run starts them again): the loader's own
        # generator, not torch's global stream, seeds them, so a resumed run's global stream matches.
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
                          drop_last=False, persistent_workers=workers,
                          generator=torch.Generator().manual_seed(self.seed) if workers else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits[0], True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits[1], False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits[2], False, self.eval_batch_size)


def take(dataset: Dataset, count: int | None, seed: int) -> Dataset:
    """A fixed random subset of ``count`` items (all of them if ``count`` is None)."""
    if count is None or count >= len(dataset):
        return dataset
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.utils.data.Subset(dataset, indices.tolist())


def split_indices(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(rest, held_out)`` of a fixed random split with ``fraction`` held out."""
    held = int(round(count * fraction))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[held:], order[:held]
