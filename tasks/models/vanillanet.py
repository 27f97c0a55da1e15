"""VanillaNet (Chen et al. 2023, arXiv 2305.12972) in its training form, for the gradient studies.

The paper's VanillaNet figures (Fig. 6, 10, 28, 33) use ``vanillanet_10`` with
``act_num=3`` from the VanillaNet authors' code, registered with timm there; the
timm release installed here (1.0.x) does not ship it, so this module rebuilds the
same network (training mode, ``deploy=False``; no deploy-time fusion):

* stem: conv4x4 stride 4 (in -> d0) + BN, leaky-ReLU(slope ``act_learn``), conv1x1 (d0 -> d0) + BN,
  series activation;
* one block per stride: conv1x1 (d_i -> d_i) + BN, leaky-ReLU(``act_learn``), conv1x1 (d_i -> d_{i+1}) + BN,
  max-pool ``stride`` (identity for 1), series activation;
* head: global average pool, dropout, conv1x1 (d_last -> classes) + BN, leaky-ReLU, conv1x1.

The series activation is ReLU followed by a depthwise ``(2*act_num+1)``-square
convolution (a Parameter used through ``F.conv2d``, as in the original) and BN.
Because it is not an ``nn.Conv2d`` module, ``xconv.convert`` leaves it exact, as
the paper's ``convert_net`` did. ``act_learn`` = 1 (the start of training) makes
the leaky-ReLUs the identity. Weights: truncated normal (std 0.02), zero biases.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# Block widths and strides of the named variants (x4 of the authors' base widths).
VARIANTS = {
    "vanillanet_5": ([512, 1024, 2048, 4096], [2, 2, 2]),
    "vanillanet_6": ([512, 1024, 2048, 4096, 4096], [2, 2, 2, 1]),
    "vanillanet_10": ([512, 512, 1024, 2048, 2048, 2048, 2048, 4096, 4096], [1, 2, 2, 1, 1, 1, 2, 1]),
}


class SeriesActivation(nn.Module):
    """ReLU, then a depthwise k x k convolution (k = 2*act_num+1) and BatchNorm."""

    def __init__(self, channels: int, act_num: int = 3):
        super().__init__()
        self.act_num = act_num
        self.weight = nn.Parameter(torch.empty(channels, 1, 2 * act_num + 1, 2 * act_num + 1))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.bn = nn.BatchNorm2d(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.conv2d(F.relu(x), self.weight, padding=self.act_num, groups=x.shape[1]))


def _conv_bn(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride),
                         nn.BatchNorm2d(out_channels, eps=1e-6))


class VanillaBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, act_num: int):
        super().__init__()
        self.act_learn = 1.0
        self.conv1 = _conv_bn(in_channels, in_channels)
        self.conv2 = _conv_bn(in_channels, out_channels)
        self.pool = nn.Identity() if stride == 1 else nn.MaxPool2d(stride)
        self.act = SeriesActivation(out_channels, act_num)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.leaky_relu(self.conv1(x), self.act_learn))
        return self.act(self.pool(x))


class VanillaNet(nn.Module):
    """``model(x (B, in, H, W)) -> logits (B, num_classes)``; H, W at least 32 for vanillanet_10."""

    def __init__(self, *, dims=VARIANTS["vanillanet_10"][0], strides=VARIANTS["vanillanet_10"][1],
                 in_channels: int = 3, num_classes: int = 1000, act_num: int = 3, drop_rate: float = 0.0):
        super().__init__()
        dims, strides = [int(d) for d in dims], [int(s) for s in strides]
        if len(dims) != len(strides) + 1:
            raise ValueError(f"dims has {len(dims)} entries and strides {len(strides)}: "
                             f"need len(dims) == len(strides) + 1")
        self.act_learn = 1.0
        self.stem1 = _conv_bn(in_channels, dims[0], kernel=4, stride=4)
        self.stem2 = nn.Sequential(*_conv_bn(dims[0], dims[0]), SeriesActivation(dims[0], act_num))
        self.stages = nn.ModuleList(VanillaBlock(dims[i], dims[i + 1], strides[i], act_num)
                                    for i in range(len(strides)))
        self.cls1 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Dropout(drop_rate),
                                  *_conv_bn(dims[-1], num_classes))
        self.cls2 = nn.Conv2d(num_classes, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem2(F.leaky_relu(self.stem1(x), self.act_learn))
        for stage in self.stages:
            x = stage(x)
        x = self.cls2(F.leaky_relu(self.cls1(x), self.act_learn))
        return x.flatten(1)  # (B, classes, 1, 1) -> (B, classes)


def vanillanet(name: str = "vanillanet_10", **kwargs) -> VanillaNet:
    """A named variant: ``vanillanet_5``, ``vanillanet_6`` or ``vanillanet_10``."""
    if name not in VARIANTS:
        raise ValueError(f"name={name!r}: must be one of {', '.join(sorted(VARIANTS))}")
    dims, strides = VARIANTS[name]
    return VanillaNet(dims=dims, strides=strides, **kwargs)


def vanillanet_10(**kwargs) -> VanillaNet:
    """The paper's VanillaNet-10 (``act_num=3`` by default), randomly initialised."""
    return vanillanet("vanillanet_10", **kwargs)
