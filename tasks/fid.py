"""FID with a feature extractor trained on the task's own dataset (as the paper does for MNIST).

Inception features mean little on 28x28 greyscale images, so the paper computes FID
with an MNIST-trained ResNet-18 (32-d features). Here :class:`FeatureNet`, a small CNN
classifier with a 32-d penultimate layer, is trained for ``epochs`` epochs on the
training split the first time it is needed and cached on disk under
``<cache_dir>/<dataset>-<ARCHITECTURE>-n<images>-seed<seed>-<fingerprint>.pt`` (the
fingerprint hashes the first training images, so other files of the same name and size
get their own extractor); the file is written atomically. FID itself is torchmetrics'
``FrechetInceptionDistance`` with that network as ``feature`` and ``normalize=True``
(images as floats in [0, 1]). Note: this is the usual centred-covariance FID, and its
values depend on the extractor, so compare them only between runs that share one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rules import require_int

ARCHITECTURE = "cnn32"  # names FeatureNet in cache files; change it when FeatureNet changes


class FeatureNet(nn.Module):
    """conv3x3(32)-pool-conv3x3(64)-pool-conv3x3(64)-pool-dense(32) features, dense(10) head.

    ``forward`` maps images in [0, 1] (N, C, H, W) to 32-d features (N, 32), the
    pre-activation of the penultimate layer.
    """

    num_features = 32

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 8) ** 2, self.num_features),  # 576 -> 32 at 28x28
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(self.num_features, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images * 2 - 1)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self(images))


def fingerprint(images: torch.Tensor) -> str:
    """8 hex digits identifying images in [0, 1] (quantised to 8 bits first)."""
    quantised = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return hashlib.sha1(quantised.numpy().tobytes()).hexdigest()[:8]


def cache_path(cache_dir: str | Path, *, dataset: str, num_images: int, seed: int, fingerprint: str) -> Path:
    name = f"{dataset}-{ARCHITECTURE}-n{num_images}-seed{seed}-{fingerprint}.pt"
    return Path(cache_dir).expanduser() / name


def train_feature_net(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int = 10, epochs: int = 1,
                      batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                      device: torch.device | str = "cpu") -> FeatureNet:
    """Train :class:`FeatureNet` as a classifier on ``images`` in [0, 1] (N, C, H, W) and ``labels`` (N,).

    Seeded by ``seed`` without touching the caller's random state.
    """
    require_int("task.fid_epochs", epochs, 1)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(seed)
        net = FeatureNet(images.shape[1], num_classes, images.shape[-1]).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(labels), batch_size):
                index = order[start:start + batch_size]
                batch, target = images[index].to(device).float(), labels[index].to(device)
                loss = F.cross_entropy(net.logits(batch), target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return net.eval().requires_grad_(False)


def load_or_train(path: Path, load_data: Callable[[], tuple[torch.Tensor, torch.Tensor]], *,
                  in_channels: int, image_size: int, num_classes: int = 10, epochs: int = 1,
                  seed: int = 0, device: torch.device | str = "cpu", save: bool = True) -> FeatureNet:
    """The cached extractor at ``path``; if absent, train one on ``load_data()`` and cache it
    (unless ``save`` is false).

    ``load_data`` returns ``(images in [0, 1] (N, C, H, W), labels (N,))`` and is only
    called when the cache file does not exist.
    """
    path = Path(path)
    if path.exists():
        net = FeatureNet(in_channels, num_classes, image_size)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.to(device).eval().requires_grad_(False)
    with torch.inference_mode(False):
        images, labels = load_data()
        net = train_feature_net(images, labels, num_classes=num_classes, epochs=epochs, seed=seed,
                                device=device)
    if not save:
        return net
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, partial)
    partial.replace(path)  # atomic: a reader never sees half a file
    return net


def extractor_for(datamodule, *, cache_dir: str | Path, dataset: str, seed: int, epochs: int,
                  in_channels: int, image_size: int, device: torch.device | str = "cpu",
                  save: bool = True) -> FeatureNet:
    """The extractor trained with ``seed`` on ``datamodule``'s whole training set
    (``datamodule.extractor_data()``, the same for every run seed), from the cache when there."""
    images, labels = datamodule.extractor_data()  # (N, C, H, W) in [0, 1], (N,)
    path = cache_path(cache_dir, dataset=dataset, num_images=len(labels), seed=seed,
                      fingerprint=fingerprint(images[:16]))
    return load_or_train(path, lambda: (images.to(device), labels.to(device)), in_channels=in_channels,
                         image_size=image_size, epochs=epochs, seed=seed, device=device, save=save)


@torch.no_grad()
def extractor_accuracy(feature_net: FeatureNet, images: torch.Tensor, labels: torch.Tensor,
                       chunk: int = 2000) -> float:
    """The extractor's classification accuracy on ``images`` in [0, 1] (how much its features know
    about the data), ``chunk`` images at a time."""
    correct = sum(int((feature_net.logits(images[i:i + chunk].float()).argmax(-1) == labels[i:i + chunk]).sum())
                  for i in range(0, len(labels), chunk))
    return correct / len(labels)


class FrechetDistance:
    """FID between real and generated images in [0, 1], through ``feature_net``.

    A plain object (not an ``nn.Module``), so a LightningModule holding it does not
    register the extractor's parameters as its own.
    """

    def __init__(self, feature_net: FeatureNet):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.feature_net = feature_net
        self.metric = FrechetInceptionDistance(feature=feature_net, normalize=True).to(
            next(feature_net.parameters()).device)

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        self.metric.update(images.float(), real=real)

    def compute(self) -> float:
        return float(self.metric.compute())

