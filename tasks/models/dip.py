"""Deep Image Prior's "skip" encoder-decoder (Ulyanov et al., 2018), a plain PyTorch module.

Each scale ("level") halves the resolution with a stride-2 conv, hands the
result to the next coarser level, upsamples what comes back, concatenates it
with a 1x1-conv skip branch of the level's input and mixes both with a 3x3 and
a 1x1 conv. Every conv is followed by BatchNorm2d and the activation
(DIP's ``skip`` from ``models/skip.py``, ``need1x1_up=True``, sigmoid output).

BatchNorm always normalises with the statistics of the current batch
(``track_running_stats=False``): DIP fits one image from one fixed input with
batch size 1, and its network is only ever used in that mode, so the output
of an evaluation pass equals the output of a training pass on the same input.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..rules import POSITIVE, Choice, Flag, Integer, ListOf, Side

PADDING_MODES = ("reflect", "zeros", "replicate", "circular")
UPSAMPLE_MODES = ("bilinear", "nearest")
ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"model.{key}={value!r}: must be one of {', '.join(allowed)}")


class ConvBlock(nn.Sequential):
    """Conv2d (padding kernel//2 in ``padding_mode``) -> BatchNorm2d -> activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding_mode: str = "reflect", activation: str = "leaky_relu"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                      padding_mode=padding_mode),
            nn.BatchNorm2d(out_channels, track_running_stats=False),
            ACTIVATIONS[activation]())


class SkipLevel(nn.Module):
    """One scale: ``cat(skip(x), upsample(inner(down(x))))`` -> BN -> 3x3 block -> 1x1 block.

    ``inner`` is the next coarser level (None at the coarsest scale) and
    ``inner_channels`` the number of channels it returns.
    """

    def __init__(self, in_channels: int, down: int, up: int, skip: int, inner: nn.Module | None,
                 inner_channels: int, *, upsample: str, **block):
        super().__init__()
        self.skip = ConvBlock(in_channels, skip, 1, **block) if skip else None
        self.down = nn.Sequential(ConvBlock(in_channels, down, 3, stride=2, **block),
                                  ConvBlock(down, down, 3, **block))
        self.inner = inner
        self.upsample = nn.Upsample(scale_factor=2, mode=upsample)
        merged = skip + inner_channels
        self.merge_norm = nn.BatchNorm2d(merged, track_running_stats=False)
        self.up = nn.Sequential(ConvBlock(merged, up, 3, **block), ConvBlock(up, up, 1, **block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, in_channels, H, W)
        height, width = x.shape[-2:]
        deep = self.down(x)  # (N, down, ceil(H/2), ceil(W/2))
        if self.inner is not None:
            deep = self.inner(deep)  # (N, inner_channels, ceil(H/2), ceil(W/2))
        deep = self.upsample(deep)[..., :height, :width]  # (N, inner_channels, H, W); crop odd sizes
        if self.skip is not None:
            deep = torch.cat([self.skip(x), deep], dim=1)  # (N, skip + inner_channels, H, W)
        return self.up(self.merge_norm(deep))  # (N, up, H, W)


class SkipNet(nn.Module):
    """DIP's skip network: ``len(channels_down)`` scales, then a 1x1 conv and a sigmoid.

    Args:
        in_channels: depth of the noise input (DIP: 32).
        out_channels: image channels (3 for RGB).
        channels_down / channels_up / channels_skip: per scale, finest first; the
            three have the same length (the number of scales). A skip width of 0
            drops that scale's skip branch.
        upsample: ``bilinear`` (DIP super-resolution) or ``nearest``.
        padding: the convolutions' padding mode: ``reflect`` (DIP's own) or ``zeros`` (what the paper forces
            when XConv is on, because its XConv had no reflection padding),
            ``replicate``, ``circular``.
        activation: ``leaky_relu`` (slope 0.2, DIP) or ``relu``.

    The input sides must be at least ``2 ** (scales + 1)`` and should be
    divisible by ``2 ** scales``; other sizes work (upsampled maps are cropped)
    but the border rows are then unbalanced, so the harness refuses them (``input_side_rule``).
    """

    CONFIG_RULES = {"in_channels": POSITIVE, "out_channels": POSITIVE,
                    "channels_down": ListOf(item=POSITIVE, least_items=1),
                    "channels_up": ListOf(item=POSITIVE, least_items=1),
                    "channels_skip": ListOf(item=Integer(least=0), least_items=1),
                    "upsample": Choice(options=UPSAMPLE_MODES), "padding": Choice(options=PADDING_MODES),
                    "activation": Choice(options=tuple(ACTIVATIONS)), "sigmoid": Flag()}

    @staticmethod
    def input_side_rule(section: dict) -> Side:
        """Every scale halves the side; BatchNorm needs more than one value per channel at the coarsest."""
        scales = len(section.get("channels_down") or ())
        return Side(multiple=2 ** scales, least=2 ** (scales + 1),
                    why=f"SkipNet with {scales} scales halves it {scales} times")

    def __init__(self, in_channels: int = 32, out_channels: int = 3,
                 channels_down: Sequence[int] = (128, 128, 128, 128, 128),
                 channels_up: Sequence[int] = (128, 128, 128, 128, 128),
                 channels_skip: Sequence[int] = (4, 4, 4, 4, 4),
                 upsample: str = "bilinear", padding: str = "reflect", activation: str = "leaky_relu",
                 sigmoid: bool = True):
        super().__init__()
        _choice("upsample", upsample, UPSAMPLE_MODES)
        _choice("padding", padding, PADDING_MODES)
        _choice("activation", activation, tuple(ACTIVATIONS))
        down, up, skip = (tuple(int(c) for c in channels) for channels in (channels_down, channels_up, channels_skip))
        if not down or len(up) != len(down) or len(skip) != len(down):
            raise ValueError(f"model.channels_down/channels_up/channels_skip: need the same non-zero length "
                             f"(one entry per scale), got {len(down)}/{len(up)}/{len(skip)}")
        if min(down + up) < 1 or min(skip) < 0:
            raise ValueError(f"model.channels_*: widths must be >= 1 (skips >= 0), got down={list(down)}, "
                             f"up={list(up)}, skip={list(skip)}")
        block = {"padding_mode": padding, "activation": activation}
        level, level_out = None, down[-1]  # the coarsest level returns its own down width
        for scale in reversed(range(len(down))):
            level_in = in_channels if scale == 0 else down[scale - 1]
            level = SkipLevel(level_in, down[scale], up[scale], skip[scale], level, level_out,
                              upsample=upsample, **block)
            level_out = up[scale]
        self.body = level
        self.head = nn.Conv2d(up[0], out_channels, 1)
        self.sigmoid = nn.Sigmoid() if sigmoid else nn.Identity()
        self.scales = len(down)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:  # (N, in_channels, H, W)
        smallest = 2 ** (self.scales + 1)  # BatchNorm needs > 1 value per channel at the coarsest scale
        if min(noise.shape[-2:]) < smallest:
            raise ValueError(f"SkipNet with {self.scales} scales needs inputs of at least {smallest}x{smallest} "
                             f"pixels, got {tuple(noise.shape[-2:])}: use a larger data.size or fewer scales")
        return self.sigmoid(self.head(self.body(noise)))  # (N, out_channels, H, W)
