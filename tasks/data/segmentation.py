"""Semantic segmentation data: texture mosaics from scikit-image's images, Oxford-IIIT Pet trimaps.

* :class:`TextureMosaicData` (always present offline): each sample is a Voronoi
  layout of random cells, every cell filled from one of the real textures and
  photographs scikit-image ships (``skimage.data``: brick, grass, gravel, ...);
  the label of a pixel is the index of its source. Training and validation crops
  come from the left part of every source image, test crops from the disjoint
  right part (``test_fraction`` of its width), so the test measures texture
  recognition on pixels never seen in training. Samples are a pure function of
  ``(seed, split, index)``.
* :class:`OxfordPetData`: the Oxford-IIIT Pet trimaps (pet / background /
  border) read by torchvision's ``OxfordIIITPet`` from ``root/oxford-iiit-pet``,
  or fetched with ``download=true``.

Every sample is ``(image float (3, H, W) in [0, 1], labels int64 (H, W))``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..rules import POSITIVE, Choice, Flag, Integer, ListOf, Number, require_int
from .base import FILE_RULES, SIDE, SPLIT_RULES, DatasetNotFound, SplitDataModule, split_indices, take

# skimage.data images that ship with scikit-image (no download needed).
SKIMAGE_SOURCES = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins",
                   "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon",
                   "page", "retina", "rocket", "text")
SPLITS = ("train", "val", "test")


def load_source(name: str, scale: float = 1.0) -> torch.Tensor:
    """One ``skimage.data`` image as RGB float32 (3, H, W) in [0, 1], rescaled by ``scale``."""
    import skimage.data
    from skimage.color import gray2rgb
    from skimage.transform import rescale
    from skimage.util import img_as_float32

    if name not in SKIMAGE_SOURCES:
        raise ValueError(f"data.textures: {name!r} is not one of {', '.join(SKIMAGE_SOURCES)}")
    image = img_as_float32(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = gray2rgb(image)  # (H, W) -> (H, W, 3)
    image = image[..., :3]
    if scale != 1.0:
        image = rescale(image, scale, channel_axis=-1, anti_aliasing=True, preserve_range=True)
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).clamp(0, 1)


def split_sources(sources: list[torch.Tensor], test_fraction: float
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Cut every (3, H, W) source into disjoint column ranges: (left for train/val, right for test)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"data.test_fraction={test_fraction!r}: must be between 0 and 1")
    left, right = [], []
    for source in sources:
        cut = int(round(source.shape[-1] * (1 - test_fraction)))
        left.append(source[..., :cut])
        right.append(source[..., cut:])
    return left, right


class TextureMosaic(Dataset):
    """``count`` mosaics of ``size`` x ``size`` pixels over ``regions`` (one (3, H, W) image per class).

    Sample ``index`` has 2..``max_cells`` Voronoi cells from random seed points;
    each cell takes a random class and shows that class's region through one
    random crop (randomly rotated by a multiple of 90 degrees and flipped). All
    randomness comes from ``numpy.random.default_rng([seed, stream, index])``.
    """

    def __init__(self, regions: list[torch.Tensor], count: int, size: int, seed: int, stream: int,
                 max_cells: int = 5):
        too_small = [tuple(region.shape[-2:]) for region in regions if min(region.shape[-2:]) < size]
        if too_small:
            raise ValueError(f"data.image_size={size}: larger than source regions {too_small}; lower "
                             f"data.image_size or data.test_fraction, or raise data.scale")
        if max_cells < 2:
            raise ValueError(f"data.max_cells={max_cells!r}: must be >= 2")
        self.regions, self.count, self.size = regions, count, size
        self.seed, self.stream, self.max_cells = seed, stream, max_cells

    def __len__(self) -> int:
        return self.count

    def _crop(self, rng: np.random.Generator, region: torch.Tensor) -> torch.Tensor:
        height, width = region.shape[-2:]
        top = int(rng.integers(0, height - self.size + 1))
        left = int(rng.integers(0, width - self.size + 1))
        crop = region[:, top:top + self.size, left:left + self.size]
        crop = torch.rot90(crop, int(rng.integers(0, 4)), dims=(1, 2))
        return crop.flip(-1) if rng.random() < 0.5 else crop

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} mosaics")
        rng = np.random.default_rng([self.seed, self.stream, index])
        cells = int(rng.integers(2, self.max_cells + 1))
        points = rng.uniform(0, self.size, size=(cells, 2))  # (cells, [row, col])
        rows, cols = np.mgrid[0:self.size, 0:self.size]  # each (H, W)
        distance = (rows[None] - points[:, 0, None, None]) ** 2 + (cols[None] - points[:, 1, None, None]) ** 2
        cell_class = rng.integers(0, len(self.regions), size=cells)
        labels = torch.from_numpy(cell_class[distance.argmin(0)]).long()  # (H, W)
        image = torch.zeros(3, self.size, self.size)
        for label in np.unique(cell_class).tolist():
            inside = labels == label
            image[:, inside] = self._crop(rng, self.regions[label])[:, inside]
        return image, labels


class RotateFlip(Dataset):
    """The paper's GlaS augmentation: random 90-degree rotation and flips of image and mask together."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, labels = self.dataset[index]
        turns = int(torch.randint(0, 4, ()))
        image, labels = torch.rot90(image, turns, dims=(-2, -1)), torch.rot90(labels, turns, dims=(-2, -1))
        if torch.rand(()) < 0.5:
            image, labels = image.flip(-1), labels.flip(-1)
        if torch.rand(()) < 0.5:
            image, labels = image.flip(-2), labels.flip(-2)
        return image, labels


def build_mosaic_splits(sources: list[torch.Tensor], size: int, counts: tuple[int, int, int],
                        test_fraction: float, seed: int, max_cells: int = 5
                        ) -> tuple[TextureMosaic, TextureMosaic, TextureMosaic]:
    """(train, val, test) mosaics; train/val crops from the left of every source, test from the right."""
    left, right = split_sources(sources, test_fraction)
    return tuple(TextureMosaic(right if split == "test" else left, count, size, seed, stream, max_cells)
                 for stream, (split, count) in enumerate(zip(SPLITS, counts)))


def _positive(key: str, value) -> int:
    return require_int(f"data.{key}", value, 1)


class TextureMosaicData(SplitDataModule):
    """Texture-mosaic segmentation over ``textures`` (``skimage.data`` names; class i = textures[i]).

    ``scale`` rescales every source before cropping (0.5: a crop covers more of
    the texture); ``size`` is the side of a sample; ``augment`` adds random
    rotations/flips of training samples on every epoch.

    ``mosaic_seed`` draws the mosaics (train, val and test) from a seed of their own, so runs of
    different seeds train and are scored on the same images and their spread is the training's
    alone (init, order, augmentation); null draws them from the run's seed.
    """

    CONFIG_RULES = {"textures": ListOf(item=Choice(options=SKIMAGE_SOURCES), least_items=2),
                    "scale": Number(above=0), "size": SIDE, "test_fraction": Number(above=0, below=1),
                    "train_count": POSITIVE, "val_count": POSITIVE, "test_count": POSITIVE,
                    "max_cells": Integer(least=2), "augment": Flag(),
                    "mosaic_seed": Integer(least=0, most=2**32 - 1, null="the run's seed")}

    def __init__(self, textures: list[str] = ("brick", "grass", "gravel", "moon", "coffee", "chelsea"),
                 scale: float = 0.5, size: int = 64, test_fraction: float = 0.3, train_count: int = 384,
                 val_count: int = 64, test_count: int = 128, max_cells: int = 5, augment: bool = True,
                 mosaic_seed: int | None = None, **loader):
        super().__init__(**loader)
        self.textures = list(textures)
        if len(self.textures) < 2:
            raise ValueError(f"data.textures={self.textures!r}: need at least 2 sources")
        unknown = [name for name in self.textures if name not in SKIMAGE_SOURCES]
        if unknown:
            raise ValueError(f"data.textures: {unknown} not among {', '.join(SKIMAGE_SOURCES)}")
        if not scale > 0:
            raise ValueError(f"data.scale={scale!r}: must be > 0")
        self.scale, self.size, self.test_fraction = scale, _positive("image_size", size), test_fraction
        self.counts = tuple(_positive(f"{split}_count", count)
                            for split, count in zip(SPLITS, (train_count, val_count, test_count)))
        self.max_cells, self.augment, self.mosaic_seed = max_cells, augment, mosaic_seed

    @property
    def num_classes(self) -> int:
        return len(self.textures)

    def load_splits(self):
        sources = [load_source(name, self.scale) for name in self.textures]
        train, val, test = build_mosaic_splits(sources, self.size, self.counts, self.test_fraction,
                                               self.seed if self.mosaic_seed is None else self.mosaic_seed,
                                               self.max_cells)
        return (RotateFlip(train) if self.augment else train), val, test


PET_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"


class PetSegmentation(Dataset):
    """torchvision's ``OxfordIIITPet`` trimaps resized to ``size`` x ``size``.

    Labels: trimap value - 1, i.e. 0 pet, 1 background, 2 border.
    """

    def __init__(self, pets, size: int):
        self.pets, self.size = pets, size

    def __len__(self) -> int:
        return len(self.pets)

    def __getitem__(self, index):
        from PIL import Image

        image, trimap = self.pets[index]
        image = image.resize((self.size, self.size), Image.BILINEAR)
        trimap = trimap.resize((self.size, self.size), Image.NEAREST)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)  # (3, H, W)
        labels = torch.from_numpy(np.asarray(trimap, dtype=np.int64) - 1).clamp(0, 2)  # (H, W)
        return pixels.contiguous(), labels


def load_pets(root: str | Path, split: str, download: bool):
    """torchvision's OxfordIIITPet (segmentation targets) under ``root``; DatasetNotFound if absent."""
    import torchvision

    base = Path(root) / "oxford-iiit-pet"
    needed = [base / "images", base / "annotations" / "trimaps", base / "annotations" / f"{split}.txt"]
    missing = [str(path) for path in needed if not path.exists()]
    if missing and not download:
        raise DatasetNotFound(
            f"data.root={str(root)!r}: Oxford-IIIT Pet files missing ({', '.join(missing)}). Set "
            f"data.download=true (needs internet, ~800 MB), or download images.tar.gz and "
            f"annotations.tar.gz from {PET_URL} and extract both into {base}.")
    try:
        return torchvision.datasets.OxfordIIITPet(str(root), split=split, target_types="segmentation",
                                                  download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DatasetNotFound(f"data.root={str(root)!r}: Oxford-IIIT Pet not found there ({error}); "
                              f"set data.download=true or extract the archives from {PET_URL}") from error


class OxfordPetData(SplitDataModule):
    """Oxford-IIIT Pet trimap segmentation (3 classes); val is ``val_fraction`` of trainval."""

    CONFIG_RULES = {**FILE_RULES, **SPLIT_RULES, "size": SIDE, "augment": Flag()}

    def __init__(self, root: str = "~/.cache/xconv/datasets", download: bool = False, size: int = 128,
                 val_fraction: float = 0.1, train_subset: int | None = None, test_subset: int | None = None,
                 augment: bool = True, **loader):
        super().__init__(**loader)
        self.root, self.download = Path(root).expanduser(), download
        self.size, self.val_fraction = _positive("image_size", size), val_fraction
        self.train_subset, self.test_subset, self.augment = train_subset, test_subset, augment

    @property
    def num_classes(self) -> int:
        return 3

    def load_splits(self):
        trainval = PetSegmentation(load_pets(self.root, "trainval", self.download), self.size)
        test = PetSegmentation(load_pets(self.root, "test", self.download), self.size)
        train_indices, val_indices = split_indices(len(trainval), self.val_fraction, self.seed)
        train = Subset(RotateFlip(trainval) if self.augment else trainval, train_indices)
        return (take(train, self.train_subset, self.seed), Subset(trainval, val_indices),
                take(test, self.test_subset, self.seed))
