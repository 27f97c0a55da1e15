"""Image classification data: Fashion-MNIST, MNIST, CIFAR-10 (torchvision) and digits (scikit-learn).

Fashion-MNIST is read by torchvision's own ``FashionMNIST`` loader from the idx
files that Debian's ``dataset-fashion-mnist`` package installs under
``/usr/share/datasets/fashion-mnist`` (decompressed once into ``cache_dir`` in
the folder layout torchvision expects), or downloaded by torchvision when
``download=true``. MNIST and CIFAR-10 come through torchvision from ``root``
when their files are there, or with ``download=true``.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ..rules import Choice, DeliveredSide, Flag, Text
from .base import FILE_RULES, SPLIT_RULES, DatasetNotFound, SplitDataModule, split_indices, take

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DATASETS = ("fashion_mnist", "mnist", "cifar10", "digits")
# Per-dataset image shape (channels, side, side); digits are resized to 28x28.
IMAGE_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "digits": (1, 28, 28)}
# Per-dataset (mean, std) per channel, for normalisation.
NORMALISATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # the paper's CIFAR constants
    "digits": ((0.3,), (0.4,)),
}


def prepare_fashion_mnist(source: str | Path, cache_dir: str | Path) -> Path:
    """Lay Debian's Fashion-MNIST idx files out as torchvision expects; return the root.

    ``source`` holds ``*-idx?-ubyte[.gz]`` files. Nothing in ``source`` is changed.
    """
    source, root = Path(source), Path(cache_dir)
    raw = root / "FashionMNIST" / "raw"
    missing = [name for name in FASHION_MNIST_FILES
               if not (source / name).exists() and not (source / f"{name}.gz").exists()]
    if missing:
        raise DatasetNotFound(
            f"data.source={str(source)!r}: Fashion-MNIST files {missing} not found. Install them with "
            f"`apt-get install dataset-fashion-mnist` (files under {DEBIAN_FASHION_MNIST}), point "
            f"data.source at a folder with the idx files, or set data.download=true to fetch them.")
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        target = raw / name
        if target.exists():
            continue
        partial = raw / f"{name}.partial"
        if (source / name).exists():
            shutil.copyfile(source / name, partial)
        else:
            with gzip.open(source / f"{name}.gz", "rb") as packed, open(partial, "wb") as out:
                shutil.copyfileobj(packed, out)
        partial.rename(target)  # atomic: an interrupted copy never looks complete
    return root


def load_torchvision(dataset: str, root: str | Path, download: bool, source: str | Path | None):
    """(train, test) as (images uint8 (N, C, H, W), labels int64) via torchvision's loaders."""
    import torchvision

    if dataset == "fashion_mnist":
        if not download:
            root = prepare_fashion_mnist(source or DEBIAN_FASHION_MNIST, root)
        cls = torchvision.datasets.FashionMNIST
    elif dataset == "mnist":
        cls = torchvision.datasets.MNIST
    elif dataset == "cifar10":
        cls = torchvision.datasets.CIFAR10
    else:
        raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
    try:
        splits = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as error:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DatasetNotFound(
            f"data.root={str(root)!r}: {cls.__name__} not found there ({error}). Put the files there "
            f"or set data.download=true (needs internet).") from error
    return tuple(_as_tensors(split) for split in splits)


def _as_tensors(split) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(split.data)
    if images.dim() == 3:  # (N, H, W) greyscale
        images = images.unsqueeze(1)
    else:  # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(split.targets, dtype=torch.long)


def load_digits(size: int = 28) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's 1797 real handwritten 8x8 digits, resized to ``size``, split 80/20."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(labels))
    return (images[order[:cut]], labels[order[:cut]]), (images[order[cut:]], labels[order[cut:]])


class AugmentedImages(Dataset):
    """Normalised float images; optional random crop (padding 4) and horizontal flip (CIFAR)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, augment: bool = False):
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        image = (self.images[index].float() / 255 - self.mean) / self.std
        if self.augment:
            image = _random_crop_flip(image)
        return image, self.labels[index]


def _random_crop_flip(image: torch.Tensor, pad: int = 4) -> torch.Tensor:
    _, height, width = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    top, left = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    image = padded[:, top:top + height, left:left + width]
    return image.flip(-1) if torch.rand(()) < 0.5 else image


class ClassificationData(SplitDataModule):
    """Train/val/test splits of one dataset; val is ``val_fraction`` of the training set.

    ``train_subset``/``test_subset`` (None = all) keep runs short on a CPU.
    """

    CONFIG_RULES = {"dataset": Choice(options=DATASETS), **FILE_RULES, **SPLIT_RULES,
                    "source": Text(null="Debian's Fashion-MNIST folder"), "augment": Flag()}

    def __init__(self, dataset: str = "fashion_mnist", root: str = "~/.cache/xconv/datasets",
                 source: str | None = None, download: bool = False, val_fraction: float = 0.1,
                 train_subset: int | None = None, test_subset: int | None = None,
                 augment: bool = False, **loader):
        super().__init__(**loader)
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {dataset!r}")
        self.dataset, self.root, self.source = dataset, Path(root).expanduser(), source
        self.download, self.val_fraction, self.augment = download, val_fraction, augment
        self.train_subset, self.test_subset = train_subset, test_subset

    @staticmethod
    def delivered_side(section: dict) -> DeliveredSide:
        """The dataset's own side: ``data.image_size`` only describes it (models are built for it)."""
        shape = IMAGE_SHAPES.get(section.get("dataset"))
        return DeliveredSide("dataset", shape[-1] if shape else None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return IMAGE_SHAPES[self.dataset]

    @property
    def num_classes(self) -> int:
        return 10

    def extractor_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dataset's whole training set (train and val splits), in its stored order, as floats in [0, 1]
        (N, C, H, W) and labels (N,): the same whatever the seed and subset, so a model trained on it (the FID
        extractor) is the same for every run."""
        self.setup()
        images, labels = self.training_pool
        return images.float() / 255, labels

    def extractor_test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dataset's whole test set, as :meth:`extractor_data` gives the training set (what the FID
        extractor's accuracy is measured on: ``python scripts/fid_extractor.py``)."""
        self.setup()
        images, labels = self.test_pool
        return images.float() / 255, labels

    def load_splits(self):
        if self.dataset == "digits":
            (train_x, train_y), (test_x, test_y) = load_digits()
        else:
            (train_x, train_y), (test_x, test_y) = load_torchvision(self.dataset, self.root, self.download,
                                                                    self.source)
        self.training_pool, self.test_pool = (train_x, train_y), (test_x, test_y)
        mean, std = NORMALISATION[self.dataset]
        train_indices, val_indices = split_indices(len(train_y), self.val_fraction, self.seed)
        train = Subset(AugmentedImages(train_x, train_y, mean, std, augment=self.augment), train_indices)
        val = Subset(AugmentedImages(train_x, train_y, mean, std), val_indices)
        test = AugmentedImages(test_x, test_y, mean, std)
        return (take(train, self.train_subset, self.seed), val,
                take(test, self.test_subset, self.seed))
