"""Small torch-only models for the library tests (no torchvision, no harness).

* :func:`tiny_resnet18`: torchvision's ResNet-18 layout, module names included
  (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample``, ``fc``, ...): 20
  convolutions, 9 ReLU modules, four ``nn.Sequential`` stages of two residual
  blocks, BatchNorm everywhere; only the widths are smaller.
* :class:`ConditionedNet`: two inputs (an image and integer time steps), residual
  blocks called with two arguments (GroupNorm, SiLU, Dropout) and a block called
  with a keyword argument, like a diffusion U-Net.
* :class:`Double`: ``2 x``, a dense output gradient for the module before it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convolutions and a residual connection."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(4, 8, 16, 32), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = widths[0]
        for index, (planes, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(inplanes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet18(num_classes: int = 10) -> TinyResNet:
    return TinyResNet(num_classes)


class ConditionedBlock(nn.Module):
    """Residual block taking a conditioning vector: ``x + conv(drop(silu(norm(conv(silu(norm(x))) + proj(c)))))``."""

    def __init__(self, channels: int, embedding: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(2, channels), nn.GroupNorm(2, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.project = nn.Linear(embedding, channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, condition):
        h = self.conv1(F.silu(self.norm1(x))) + self.project(condition)[:, :, None, None]
        return x + self.conv2(self.dropout(F.silu(self.norm2(h))))


class Merge(nn.Module):
    """``relu(bn(conv([x, skip])))``, called as ``merge(x, skip=...)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x, skip=None):
        return F.relu(self.norm(self.conv(torch.cat([x, skip], dim=1))))


class ConditionedNet(nn.Module):
    """``net(x, timesteps)``: segmentable parts are the three blocks and the merge (one unit each)."""

    def __init__(self, channels: int = 8, embedding: int = 16, dropout: float = 0.3, steps: int = 1000):
        super().__init__()
        self.time = nn.Embedding(steps, embedding)
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList([ConditionedBlock(channels, embedding, dropout) for _ in range(3)])
        self.merge = Merge(channels)
        self.head = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x, timesteps):
        condition = self.time(timesteps)
        h = skip = self.stem(x)
        for block in self.blocks:
            h = block(h, condition)
        return self.head(self.merge(h, skip=skip))


class Double(nn.Module):
    """``2 x``: its backward turns the loss's expanded (zero-byte) gradient into a dense one, so the
    module before it gets a full output gradient, as inside a network."""

    def forward(self, x):
        return 2 * x
