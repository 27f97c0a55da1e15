"""A small DDPM U-Net (the paper's MNIST diffusion network, written without diffusers).

The paper uses diffusers' ``UNet2DModel`` with ``block_out_channels=(64, 128, 192)``,
``layers_per_block=2``, down blocks ``(Down, AttnDown, AttnDown)`` and attention
head dim 8 on 28x28 images. :class:`DiffusionUNet` follows the same layout:

* sinusoidal timestep embedding -> MLP (``Linear, SiLU, Linear``, width ``4 * channels[0]``);
* ``conv_in`` 3x3, then one level per entry of ``block_channels``: ``layers_per_block``
  residual blocks (GroupNorm, SiLU, Conv3x3, + time projection, GroupNorm, SiLU, Conv3x3),
  each followed by self-attention when the level is in ``attention_levels``, and a
  stride-2 3x3 conv downsample between levels;
* a middle block (residual, attention if the deepest level has attention, residual);
* the mirrored up path with ``layers_per_block + 1`` residual blocks per level, each
  taking one skip connection (concatenated), and nearest-neighbour upsampling + 3x3 conv;
* GroupNorm, SiLU, Conv3x3 back to the image channels (the predicted noise).

Attention projections are ``nn.Linear`` as in diffusers, so ``xconv.convert``
changes only the convolutions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..rules import POSITIVE, Integer, ListOf, Number


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim): [cos | sin] of t * frequencies."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None, :]  # (B, half)
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))  # (B, dim)
    return embedding


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-Conv3x3, add the projected time embedding, GroupNorm-SiLU-(Dropout)-Conv3x3, + skip."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int, groups: int,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        # activations as modules (not F.silu), so xconv.convert(activations="compact") can swap them
        self.act1, self.time_act, self.act2 = nn.SiLU(), nn.SiLU(), nn.SiLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                     else nn.Identity())

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = h + self.time_proj(self.time_act(time))[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(self.act2(self.norm2(h))))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions (GroupNorm first, residual output)."""

    def __init__(self, channels: int, groups: int, head_dim: int):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"model.attention_head_dim={head_dim}: must divide the channel count "
                             f"{channels} of every attention level")
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)  # 3 x (B, HW, C)
        q, k, v = (part.unflatten(-1, (self.heads, -1)).transpose(1, 2) for part in (q, k, v))  # (B, heads, HW, d)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        attended = attended.transpose(1, 2).flatten(2)  # (B, HW, C)
        out = self.out(attended).transpose(1, 2).reshape(batch, channels, height, width)  # (B, C, H, W)
        return x + out


class Level(nn.Module):
    """Residual blocks at one resolution, each optionally followed by attention."""

    def __init__(self, channels_in: list[int], out_channels: int, time_channels: int, groups: int,
                 attention: bool, head_dim: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(ResidualBlock(c, out_channels, time_channels, groups, dropout)
                                    for c in channels_in)
        self.attentions = nn.ModuleList(SelfAttention(out_channels, groups, head_dim) if attention
                                        else nn.Identity() for _ in channels_in)


class DiffusionUNet(nn.Module):
    """Noise-prediction U-Net: ``model(x_t (B, C, H, W), t (B,) int) -> eps_hat (B, C, H, W)``.

    The defaults are the harness's CPU-scale network (conf/model/ddpm_unet.yaml).

    Args:
        in_channels: image channels.
        block_channels: width of each resolution level (the paper: ``[64, 128, 192]``).
        layers_per_block: residual blocks per level on the way down (``+1`` on the way up).
        attention_levels: indices of the levels with self-attention (the paper: ``[1, 2]``).
        attention_head_dim: channels per attention head (the paper: 8).
        norm_groups: GroupNorm groups; must divide every level's width.
        dropout: dropout inside residual blocks.
    """

    CONFIG_RULES = {"in_channels": POSITIVE, "block_channels": ListOf(item=POSITIVE, least_items=1),
                    "layers_per_block": POSITIVE, "attention_levels": ListOf(item=Integer(least=0)),
                    "attention_head_dim": POSITIVE, "norm_groups": POSITIVE, "dropout": Number(least=0, below=1)}

    def __init__(self, *, in_channels: int = 1, block_channels=(16, 32, 64), layers_per_block: int = 1,
                 attention_levels=(2,), attention_head_dim: int = 8, norm_groups: int = 8,
                 dropout: float = 0.0):
        super().__init__()
        widths = [int(c) for c in block_channels]
        attention_levels = sorted(int(level) for level in attention_levels)
        if not widths or any(c < 1 for c in widths):
            raise ValueError(f"model.block_channels={list(block_channels)!r}: must be a non-empty list of "
                             f"positive widths, e.g. [64, 128, 192]")
        if not isinstance(layers_per_block, int) or layers_per_block < 1:
            raise ValueError(f"model.layers_per_block={layers_per_block!r}: must be an integer >= 1")
        bad = [level for level in attention_levels if not 0 <= level < len(widths)]
        if bad:
            raise ValueError(f"model.attention_levels={attention_levels!r}: levels {bad} do not exist; "
                             f"allowed 0..{len(widths) - 1}")
        if any(c % norm_groups for c in widths):
            raise ValueError(f"model.norm_groups={norm_groups}: must divide every width in "
                             f"model.block_channels={widths}")
        time_channels = 4 * widths[0]
        self.embedding_dim = widths[0]
        self.time_mlp = nn.Sequential(nn.Linear(widths[0], time_channels), nn.SiLU(),
                                      nn.Linear(time_channels, time_channels))
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        def level(channels_in, width, index):
            return Level(channels_in, width, time_channels, norm_groups, index in attention_levels,
                         attention_head_dim, dropout)

        skips = [widths[0]]  # channels of every tensor kept for the up path, in order
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        current = widths[0]
        for index, width in enumerate(widths):
            self.down.append(level([current] + [width] * (layers_per_block - 1), width, index))
            current = width
            skips += [width] * layers_per_block
            if index < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
        deepest = len(widths) - 1
        self.mid_block1 = ResidualBlock(current, current, time_channels, norm_groups, dropout)
        self.mid_attention = (SelfAttention(current, norm_groups, attention_head_dim)
                              if deepest in attention_levels else nn.Identity())
        self.mid_block2 = ResidualBlock(current, current, time_channels, norm_groups, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for index in reversed(range(len(widths))):
            width = widths[index]
            channels_in = []
            for _ in range(layers_per_block + 1):
                channels_in.append(current + skips.pop())
                current = width
            self.up.append(level(channels_in, width, index))
            if index > 0:
                self.upsample.append(nn.Conv2d(width, width, 3, padding=1))
        self.norm_out = nn.GroupNorm(norm_groups, widths[0])
        self.act_out = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        time = self.time_mlp(timestep_embedding(timesteps, self.embedding_dim))  # (B, 4 * C0)
        h = self.conv_in(x)
        skips = [h]
        for index, level in enumerate(self.down):
            for block, attention in zip(level.blocks, level.attentions):
                h = attention(block(h, time))
                skips.append(h)
            if index < len(self.downsample):
                h = self.downsample[index](h)
                skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, time)), time)
        for index, level in enumerate(self.up):
            for block, attention in zip(level.blocks, level.attentions):
                h = attention(block(torch.cat([h, skips.pop()], dim=1), time))  # concat along channels
            if index < len(self.upsample):
                h = F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest")  # to the skip's size (odd sizes too)
                h = self.upsample[index](h)
        return self.conv_out(self.act_out(self.norm_out(h)))
