"""Inpainting masks (which pixels are missing), deterministic for a seed.

* ``boxes``: random axis-aligned rectangles, added until ``fraction`` of the
  pixels are missing.
* ``text``: lines of random lower-case words (every other line) over the whole
  image in PIL's default font (DIP's "kate" setting is a text overlay); the
  covered fraction follows from ``font_size`` (about 15-25% at 8-24 px).

A mask tensor is ``(1, H, W)`` float with 1 = known pixel, 0 = missing.
"""
from __future__ import annotations

import numpy as np
import torch

MASKS = ("boxes", "text")


def boxes_mask(height: int, width: int, fraction: float, seed: int, min_side: int = 4,
               max_side: int = 16) -> np.ndarray:
    """``(H, W)`` bool, True where missing: rectangles of side ``min_side..max_side`` until ``fraction``."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.mask_fraction={fraction!r}: must be in (0, 1)")
    if not 1 <= min_side <= max_side:
        raise ValueError(f"data.hole_sides=[{min_side}, {max_side}]: need 1 <= min <= max")
    rng = np.random.default_rng(seed)
    missing = np.zeros((height, width), dtype=bool)
    while missing.mean() < fraction:
        box_h, box_w = rng.integers(min_side, max_side + 1, size=2)
        top, left = rng.integers(0, max(1, height - box_h + 1)), rng.integers(0, max(1, width - box_w + 1))
        missing[top:top + box_h, left:left + box_w] = True
    return missing


def text_mask(height: int, width: int, seed: int, font_size: int = 14) -> np.ndarray:
    """``(H, W)`` bool, True where missing: rows of random words in PIL's default font."""
    from PIL import Image, ImageDraw, ImageFont

    if font_size < 4:
        raise ValueError(f"data.font_size={font_size!r}: must be >= 4")
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=font_size)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for top in range(0, height, 2 * font_size):  # a blank line between text lines
        words = [''.join(rng.choice(letters, size=rng.integers(2, 8))) for _ in range(width // font_size + 2)]
        draw.text((int(rng.integers(-font_size, 1)), top), " ".join(words), fill=255, font=font)
    return np.asarray(canvas) > 0


def make_mask(kind: str, height: int, width: int, seed: int, fraction: float = 0.25,
              hole_sides: tuple[int, int] = (4, 16), font_size: int = 14) -> torch.Tensor:
    """``(1, H, W)`` float mask, 1 = known, 0 = missing."""
    if kind == "boxes":
        missing = boxes_mask(height, width, fraction, seed, *hole_sides)
    elif kind == "text":
        missing = text_mask(height, width, seed, font_size)
    else:
        raise ValueError(f"data.mask={kind!r}: must be one of {', '.join(MASKS)}")
    return torch.from_numpy(~missing).float()[None]  # (1, H, W)
