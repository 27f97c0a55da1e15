"""What the gradient-error scripts share: the study networks on synthetic data, and Eq. (9).

The paper's average gradient error (its Eq. 9) at fixed weights theta::

    AGE = (1/M) sum_b || g - g^(b) ||_2^2      over the conv weights,

where ``g`` is the exact gradient of the mean loss over a fixed data subset and
``g^(b)`` the (exact or XConv) gradient of minibatch ``b`` of a fixed partition
of that subset. As in the paper's code, ``g`` is accumulated over the same
minibatches (each loss weighted by its share of the subset), so with equal
batch sizes ``g`` is the mean of the exact minibatch gradients. Exact
minibatches give the SGD floor; XConv adds its estimator noise.

We also record the estimator error alone, ``(1/M) sum_b ||g^(b)_xconv -
g^(b)_exact||^2`` (the same minibatch, exact vs estimated): in expectation
``AGE_xconv = AGE_exact + estimator error``, and the estimator error is what
falls like 1/r.

Conventions (as in the paper's code): weights drawn once with seed 0;
``Dropout`` in eval mode (no random masks), every other layer in train mode
(BatchNorm uses batch statistics); the conv *weights* of every
``nn.ConvNd``/``nn.ConvTransposeNd`` module enter the error (the paper's code
also adds their biases, which XConv computes exactly).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import xconv

from ..config_files import config_file


WEIGHT_SEED = 0
DATA_SEED = 1
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

Batch = tuple  # tensors with the batch as their first dimension
Gradient = list  # one tensor per conv weight, in module order


# Losses and synthetic data -----------------------------------------------------
def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Upcast bf16/fp16 network outputs for the loss; fp32/fp64 stay as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def classification_data(count: int, size: int, generator: torch.Generator, classes: int = 10) -> Batch:
    """N(0, 1) images with labels uniform in 0..classes-1 (the paper's code: 10 labels for 1000 logits)."""
    images = torch.randn(count, 3, size, size, generator=generator)
    labels = torch.randint(0, classes, (count,), generator=generator)
    return images, labels


def classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(at_least_fp32(model(images)), labels)


def regression_data(count: int, size: int, generator: torch.Generator, channels: int = 3,
                    dims: int = 2) -> Batch:
    shape = (count, channels) + (size,) * dims
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def regression_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    inputs, targets = batch
    return F.mse_loss(at_least_fp32(model(inputs)), at_least_fp32(targets))


def diffusion_data(count: int, size: int, generator: torch.Generator, channels: int = 1,
                   timesteps: int = 1000) -> Batch:
    """Stored (x0, noise, t) triples, as the paper's diffusion AGE runs: x0 uniform in [-1, 1]."""
    x0 = torch.rand(count, channels, size, size, generator=generator) * 2 - 1
    noise = torch.randn(count, channels, size, size, generator=generator)
    steps = torch.randint(0, timesteps, (count,), generator=generator)
    return x0, noise, steps


class DiffusionLoss:
    """The epsilon-prediction loss ``MSE(model(x_t, t), noise)`` of the generative task's DDPM."""

    def __init__(self, timesteps: int = 1000):
        from xconv_harness.diffusion import DDPMSchedule

        self.schedule = DDPMSchedule(timesteps)

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x0, noise, steps = batch
        noisy = self.schedule.q_sample(x0, steps, noise).to(x0.dtype)
        return F.mse_loss(at_least_fp32(model(noisy, steps)), at_least_fp32(noise))


# The networks ------------------------------------------------------------------
def squeezenet1_0() -> nn.Module:
    import torchvision

    return torchvision.models.squeezenet1_0(weights=None, num_classes=1000)


def ronneberger_unet() -> nn.Module:
    from xconv_harness.models.unet_plain import PlainUNet

    return PlainUNet(in_channels=3, out_channels=3, base=32, depth=4, dims=2)


def unet3d() -> nn.Module:
    from xconv_harness.models.unet_plain import PlainUNet

    return PlainUNet(in_channels=1, out_channels=1, base=8, depth=3, dims=3)


def vanillanet_10() -> nn.Module:
    from xconv_harness.models.vanillanet import vanillanet

    return vanillanet("vanillanet_10", act_num=3)


def ddpm_unet_settings() -> dict:
    """Constructor arguments of the generative task's U-Net from conf/model/ddpm_unet.yaml.

    ``in_channels`` there is ``${data.channels}``: 1 for the task's default data (Fashion-MNIST).
    """
    import yaml

    from xconv_harness.config_nodes import arguments

    settings = arguments(yaml.safe_load((config_file("model", "ddpm_unet")).read_text()))
    settings["in_channels"] = 1
    return settings


def ddpm_unet() -> nn.Module:
    from xconv_harness.models.unet import DiffusionUNet

    return DiffusionUNet(**ddpm_unet_settings())


@dataclass(frozen=True)
class Network:
    """A network of the study with its synthetic data and loss.

    ``data(count, size, generator)`` returns tensors whose first dimension is the sample;
    ``loss(model, batch)`` the mean loss of a minibatch. ``adaptive``: convert only the
    convolutions whose sketch is smaller than their input (the paper does so for VanillaNet).
    """

    name: str
    build: Callable[[], nn.Module]
    data: Callable[[int, int, torch.Generator], Batch]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    sizes: tuple[int, ...]
    dims: int = 2
    adaptive: bool = False
    kinds: tuple[str, ...] = xconv.PROBE_KINDS
    description: str = field(default="", compare=False)


NETWORKS = {
    "squeezenet1_0": Network(
        "squeezenet1_0", squeezenet1_0, classification_data, classification_loss, (32, 64),
        description="torchvision squeezenet1_0 (1000 classes), random init, cross-entropy on N(0,1) "
                    "images with labels uniform in 0..9 (as the paper's synthetic pairs)"),
    "unet": Network(
        "unet", ronneberger_unet, regression_data, regression_loss, (16, 32),
        description="Ronneberger U-Net (tasks/models/unet_plain.py: base 32, depth 4, no norm, ReLU, "
                    "bilinear up), MSE between the output and N(0,1) targets for N(0,1) inputs"),
    "vanillanet_10": Network(
        "vanillanet_10", vanillanet_10, classification_data, classification_loss, (64,),
        adaptive=True, kinds=("channel",),
        description="VanillaNet-10, act_num 3, training form (tasks/models/vanillanet.py; the installed "
                    "timm has no vanillanet), adaptive conversion as in the paper, cross-entropy on N(0,1) "
                    "images with labels uniform in 0..9"),
    "ddpm_unet": Network(
        "ddpm_unet", ddpm_unet, diffusion_data, DiffusionLoss(), (16, 32),
        description="DDPM U-Net of the generative task (tasks/models/unet.py with "
                    "conf/model/ddpm_unet.yaml, 1 channel), epsilon-prediction MSE on stored "
                    "(x0 ~ U[-1,1], noise, t ~ U{0..999}) triples, 1000-step linear schedule"),
    "unet3d": Network(
        "unet3d", unet3d, lambda count, size, gen: regression_data(count, size, gen, channels=1, dims=3),
        regression_loss, (16,), dims=3,
        description="3D U-Net (tasks/models/unet_plain.py with dims=3: base 8, depth 3, Conv3d, "
                    "trilinear up), MSE on N(0,1) volumes"),
}


def check_study_arguments(parser, args) -> None:
    """``parser.error`` (exit 2, naming the flag and what is allowed) for bad --networks/--kinds/--probes/--runs."""
    for name in args.networks:
        if name not in NETWORKS:
            parser.error(f"--networks: {name!r} is not a network of the study; allowed {', '.join(NETWORKS)}")
    for kind in args.kinds or []:
        if kind not in xconv.PROBE_KINDS:
            parser.error(f"--kinds: {kind!r} is not a probe kind; allowed {', '.join(xconv.PROBE_KINDS)}")
    if not args.probes or min(args.probes) < 1:
        parser.error(f"--probes={args.probes}: need at least one r, every r >= 1")
    if args.runs < 2:
        parser.error(f"--runs={args.runs}: need at least 2 runs for a standard deviation")


def network_named(name: str) -> Network:
    if name not in NETWORKS:
        raise ValueError(f"network {name!r}: must be one of {', '.join(NETWORKS)}")
    return NETWORKS[name]


# Models, data, gradients -------------------------------------------------------
def build_model(network: Network, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The network with weights drawn from seed 0, in ``dtype``, train mode but Dropout off."""
    torch.manual_seed(WEIGHT_SEED)
    model = network.build().to(dtype)
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return model


def cast(batch: Batch, dtype: torch.dtype) -> Batch:
    """Floating tensors to ``dtype``; labels and timesteps stay integers."""
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in batch)


def smoothed(t: torch.Tensor, sigma: float, dims: int) -> torch.Tensor:
    """Gaussian blur (std ``sigma`` pixels, periodic boundary) over the last ``dims`` axes, same std after."""
    if sigma <= 0:
        return t
    blurred = t
    for axis in range(t.dim() - dims, t.dim()):
        length = t.shape[axis]
        radius = min(math.ceil(3 * sigma), length - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=t.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1)
        lines = blurred.movedim(axis, -1)
        shape = lines.shape
        lines = F.pad(lines.reshape(-1, 1, length), (radius, radius), mode="circular")  # (lines, 1, L + 2r)
        blurred = F.conv1d(lines, kernel).reshape(shape).movedim(-1, axis)
    return blurred * (t.std() / blurred.std())


def minibatches(network: Network, size: int, subset: int, batch_size: int,
                dtype: torch.dtype = torch.float32, smooth: float = 0.0) -> list[Batch]:
    """A fixed subset (seed 1) split into ``subset / batch_size`` fixed minibatches.

    ``smooth`` > 0 blurs the network inputs (the first tensor) with a Gaussian of that std in pixels,
    keeping their std: spatially correlated inputs instead of white noise.
    """
    if subset < 2 * batch_size or subset % batch_size:
        raise ValueError(f"--subset={subset}: must be a multiple of --batch={batch_size} with at least "
                         f"two minibatches")
    generator = torch.Generator().manual_seed(DATA_SEED)
    inputs, *rest = network.data(subset, size, generator)
    data = cast((smoothed(inputs, smooth, network.dims), *rest), dtype)
    return [tuple(t[start:start + batch_size] for t in data) for start in range(0, subset, batch_size)]


def conv_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight of every convolution module (XConv layers are subclasses), in module order."""
    return [module.weight for module in model.modules() if isinstance(module, CONV_TYPES)]


def minibatch_gradient(model: nn.Module, network: Network, batch: Batch) -> Gradient:
    """Gradients of the minibatch's mean loss with respect to the conv weights (detached copies)."""
    weights = conv_weights(model)
    model.zero_grad(set_to_none=True)
    network.loss(model, batch).backward()
    return [weight.grad.detach().clone() for weight in weights]


def squared_distance(a: Gradient, b: Gradient) -> float:
    """``||a - b||^2`` over all conv weights, accumulated in float64."""
    return sum((x.double() - y.double()).pow(2).sum().item() for x, y in zip(a, b))


def mean_gradient(gradients: Sequence[Gradient]) -> Gradient:
    return [torch.stack(layer).double().mean(0) for layer in zip(*gradients)]


def xconv_copy(model: nn.Module, network: Network, probes: int, kind: str,
               example: Batch) -> tuple[nn.Module, int]:
    """A converted deep copy (same weights) and the number of convolutions XConv estimates.

    Its XConv layers always sketch (``fallback=False``): the study measures the estimator's error,
    also in layers whose sketch is no smaller than their input, where a layer would otherwise fall
    back to the exact gradient. ``adaptive`` networks leave those layers plain instead, as the
    paper does (``xconv.convert(..., example_input=...)``).
    """
    copied = copy.deepcopy(model)
    example_input = example[0] if network.adaptive else None
    xconv.convert(copied, probes=probes, probe=kind, example_input=example_input, keep_once=False)
    layers = list(xconv.xconv_layers(copied))
    for _, layer in layers:
        layer.fallback = False
    return copied, len(layers)


@dataclass
class Reference:
    """Exact minibatch gradients of a fixed partition, their mean and the SGD floor."""

    gradients: list[Gradient]
    full: Gradient
    floor: float

    @classmethod
    def of(cls, model: nn.Module, network: Network, batches: list[Batch]) -> "Reference":
        gradients = [minibatch_gradient(model, network, batch) for batch in batches]
        full = mean_gradient(gradients)
        floor = sum(squared_distance(full, g) for g in gradients) / len(gradients)
        return cls(gradients, full, floor)

    def errors(self, model: nn.Module, network: Network, batches: list[Batch]) -> tuple[float, float]:
        """``(AGE, estimator error)`` of ``model``'s minibatch gradients on the same partition."""
        age = estimator = 0.0
        for batch, exact in zip(batches, self.gradients):
            estimate = minibatch_gradient(model, network, batch)
            age += squared_distance(self.full, estimate)
            estimator += squared_distance(exact, estimate)
        return age / len(batches), estimator / len(batches)


# Statistics --------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    t = torch.tensor(values, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(values) > 1 else 0.0)


def loglog_slope(r: Sequence[float], means: Sequence[float], stds: Sequence[float],
                 runs: int) -> tuple[float, float]:
    """Weighted least-squares slope of log(mean) on log(r) and its standard error.

    The variance of log(mean over ``runs``) is about ``(std / mean)^2 / runs``; points whose
    mean is not positive are left out. Returns ``(nan, nan)`` with fewer than two points.
    """
    points = [(x, m, s) for x, m, s in zip(r, means, stds) if m > 0]
    if len(points) < 2:
        return float("nan"), float("nan")
    x = torch.tensor([p[0] for p in points], dtype=torch.float64).log()
    y = torch.tensor([p[1] for p in points], dtype=torch.float64).log()
    rel = torch.tensor([max(p[2] / p[1], 1e-3) for p in points], dtype=torch.float64)
    w = runs / rel ** 2
    x_bar, y_bar = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    sxx = (w * (x - x_bar) ** 2).sum()
    slope = (w * (x - x_bar) * (y - y_bar)).sum() / sxx
    return slope.item(), (1 / sxx).sqrt().item()


def int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item]
    except ValueError:
        raise ValueError(f"{text!r}: expected comma-separated integers, e.g. 2,8,32") from None


def str_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]
