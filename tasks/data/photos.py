"""One photograph for Deep Image Prior (super-resolution, inpainting).

``image`` is the name of a photograph that ships with scikit-image
(``skimage.data.<name>()``, present offline) or the path of any image file (read
with PIL). The photograph becomes RGB (greyscale is repeated, alpha dropped),
its shorter side is resized to ``size`` (Lanczos) and its centre cropped to
``size x size``; ``size=null`` keeps the full image, cropped to a multiple of
32 as DIP does.

DIP fits one network to one image, so every dataset holds that one item: the
training set repeats it ``iterations`` times (one Lightning epoch = the whole
DIP run, batch size 1), validation and test hold it once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..rules import POSITIVE, Choice, DeliveredSide, Integer, ListOf, Number, Text, require_int
from .base import SIDE, DatasetNotFound, SplitDataModule
from .masks import MASKS, make_mask

# scikit-image's bundled photographs (no download needed).
PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "rocket", "coins", "moon", "page", "text",
          "brick", "grass", "gravel", "clock", "cell", "immunohistochemistry", "hubble_deep_field", "retina")
DIP_MULTIPLE = 32  # DIP crops full-size images to a multiple of 32


def load_photo(image: str):
    """The RGB ``PIL.Image`` named by ``image`` (a scikit-image photograph or a file path)."""
    from PIL import Image, UnidentifiedImageError

    if image in PHOTOS:
        import skimage.data

        return Image.fromarray(getattr(skimage.data, image)()).convert("RGB")
    path = Path(str(image)).expanduser()
    if not path.is_file():
        raise DatasetNotFound(
            f"data.image={image!r}: no such image file and not a scikit-image photograph. Give the path "
            f"of an image file or one of: {', '.join(PHOTOS)}")
    try:
        with Image.open(path) as photo:
            return photo.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetNotFound(f"data.image={image!r}: not a readable image file ({error})") from error


def fit_size(photo, size: int | None):
    """Resize the shorter side to ``size`` and centre-crop ``size x size`` (None: crop to a multiple of 32)."""
    from PIL import Image

    width, height = photo.size
    if size is None:
        side_w, side_h = width - width % DIP_MULTIPLE, height - height % DIP_MULTIPLE
        if not side_w or not side_h:
            raise ValueError(f"data.size=null: the image ({width}x{height}) is smaller than {DIP_MULTIPLE} px")
    else:
        scale = size / min(width, height)
        width, height = max(size, round(width * scale)), max(size, round(height * scale))
        photo = photo.resize((width, height), Image.LANCZOS)
        side_w = side_h = size
    left, top = (width - side_w) // 2, (height - side_h) // 2
    return photo.crop((left, top, left + side_w, top + side_h))


def to_tensor(photo) -> torch.Tensor:
    """RGB ``PIL.Image`` -> ``(3, H, W)`` float in [0, 1]."""
    array = np.asarray(photo, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


class SameItem(Dataset):
    """``length`` copies of one item (a dict of tensors)."""

    def __init__(self, item: dict, length: int):
        self.item, self.length = item, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.item


class PhotoData(SplitDataModule):
    """One photograph as ``{"image": (3, H, W)}``; subclasses add what their task needs."""

    CONFIG_RULES = {"image": Text(), "size": SIDE, "iterations": POSITIVE}

    def __init__(self, image: str = "astronaut", size: int | None = 128, iterations: int = 300, **loader):
        super().__init__(**loader)
        if size is not None and (not isinstance(size, int) or size < DIP_MULTIPLE):
            raise ValueError(f"data.size={size!r}: must be null (full image) or an integer >= {DIP_MULTIPLE}")
        require_int("data.iterations", iterations, 1, " (DIP iterations)")
        self.image, self.size, self.iterations = str(image), size, iterations

    def photo(self):
        """The prepared RGB ``PIL.Image``."""
        return fit_size(load_photo(self.image), self.size)

    def item(self, photo) -> dict:
        return {"image": to_tensor(photo)}

    def load_splits(self):
        item = self.item(self.photo())
        return SameItem(item, self.iterations), SameItem(item, 1), SameItem(item, 1)


class SuperResolutionData(PhotoData):
    """``{"hr": (3, H, W), "lr": (3, H/f, W/f), "bicubic": (3, H, W)}``.

    ``lr`` is PIL's Lanczos downsampling of ``hr`` by ``scale_factor`` (DIP's
    ``Image.ANTIALIAS``); ``bicubic`` is PIL's bicubic upsampling of ``lr`` (the baseline).
    """

    CONFIG_RULES = {"scale_factor": Integer(least=2)}

    def __init__(self, scale_factor: int = 4, **options):
        super().__init__(**options)
        require_int("data.scale_factor", scale_factor, 2)
        self.scale_factor = scale_factor

    @staticmethod
    def delivered_side(section: dict) -> DeliveredSide:
        """``size`` cropped to a multiple of ``scale_factor`` (as :meth:`photo` crops it)."""
        size, factor = section.get("size"), section.get("scale_factor")
        if size is None or not isinstance(factor, int) or factor < 1:
            return DeliveredSide("size", None)
        side = size - size % factor
        return DeliveredSide("size", side, "" if side == size else
                             f", after the crop to a multiple of data.scale_factor={factor} (here {side})")

    def photo(self):
        photo = super().photo()
        width, height = photo.size
        return photo.crop((0, 0, width - width % self.scale_factor, height - height % self.scale_factor))

    def item(self, photo) -> dict:
        from PIL import Image

        width, height = photo.size
        low = photo.resize((width // self.scale_factor, height // self.scale_factor), Image.LANCZOS)
        return {"hr": to_tensor(photo), "lr": to_tensor(low),
                "bicubic": to_tensor(low.resize((width, height), Image.BICUBIC))}


class InpaintingData(PhotoData):
    """``{"image": (3, H, W), "mask": (1, H, W)}`` with mask 1 = known, 0 = missing (see masks.py)."""

    CONFIG_RULES = {"mask": Choice(options=MASKS), "mask_fraction": Number(above=0, below=1),
                    "hole_sides": ListOf(item=POSITIVE, items=2), "font_size": Integer(least=4)}

    def __init__(self, mask: str = "text", mask_fraction: float = 0.25, hole_sides=(4, 16),
                 font_size: int = 14, **options):
        super().__init__(**options)
        if len(hole_sides) != 2:
            raise ValueError(f"data.hole_sides={hole_sides!r}: must be [min_side, max_side]")
        self.mask_options = {"kind": mask, "fraction": mask_fraction, "hole_sides": tuple(hole_sides),
                             "font_size": font_size}
        make_mask(height=DIP_MULTIPLE, width=DIP_MULTIPLE, seed=0, **self.mask_options)  # bad options fail now

    def item(self, photo) -> dict:
        width, height = photo.size
        return {"image": to_tensor(photo), "mask": make_mask(height=height, width=width, seed=self.seed,
                                                             **self.mask_options)}
