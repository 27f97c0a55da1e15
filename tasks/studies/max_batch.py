"""Largest batch within a memory budget, exact vs XConv: the paper's max-batch tables (PAPER.md §2.1).

The paper finds, per network, image size, precision and probe count r, the largest batch
whose peak memory (``torch.cuda.max_memory_allocated`` over one training step) stays below
0.92 x 16 GiB, by doubling the batch and then bisecting. This script runs the same search
with real forward passes on this machine:

* **Memory measure** (``--measure``). ``saved`` (default): the memory a training step holds
  when backward starts, predicted exactly and deterministically as parameters + gradients
  (SGD without momentum, as the paper's lr=0 SGD, keeps no optimizer state) + the input
  batch + every tensor autograd saves for backward during one real training-mode forward
  and loss (``xconv.memory.SavedTensorMeter``). It leaves out backward-time temporaries
  (activation gradients, the probes XConv redraws), so it is a lower bound of the peak.
  ``peak``: the paper's protocol, two steps of forward + loss + zero_grad + backward with
  ``xconv.memory.PeakMemory`` around each, the second reported, plus parameters,
  gradients and input; on CUDA that is ``max_memory_allocated``, on CPU the growth of the
  peak resident set size (this script then runs the 'peak' searches first, in a fresh
  process, with glibc serving every allocation above 64 KiB by mmap, so freed tensors leave
  the resident set at once). The default run adds such a peak check for squeezenet1_0 at
  128 px (exact and r=16, fp32) beside the 'saved' rows.
  ``fake``: the paper's protocol on fake tensors (:func:`xconv.fake_peak.fake_peak`): one
  step of forward, loss, ``zero_grad()`` (gradients released), backward and an lr=0 SGD step,
  under ``FakeTensorMode`` and PyTorch's ``MemTracker``; the peak of live tensor bytes,
  parameters, the previous step's gradients (alive during forward, as in the paper's
  second tracked step), the input and every temporary included. Nothing is allocated, so
  it runs at the paper's real budget and batches (``scale`` 1, the default rows for this
  measure) in seconds per step. Measured as device ``cpu`` unless ``--device cuda`` on a
  machine with a GPU (backward on fake CUDA tensors needs a CUDA context); what that
  changes against ``max_memory_allocated`` (dropout masks, cuDNN workspaces) is in
  :mod:`xconv.fake_peak`. With ``--merge`` the rows are merged into an existing
  ``<out>.csv``/``<out>.md`` (rows of the same network, image, dtype, measure and r replaced).
* **Budget**: the paper's card leaves ``0.92 x 16 GiB - (parameters + gradients)`` for
  activations; here a row's budget is ``parameters + gradients + scale x`` that, with the
  scale given per row (``network@size:scale``), so batches stay small enough to run on one
  CPU thread in minutes. Activation memory is linear in the batch, so the batch gain
  (XConv batch / exact batch) does not depend on the scale, and ``scale x paper batch``
  is what the paper's batch would be here if a sample cost the same memory.
* **Search** (``--start``): from a start batch, upward while the batch fits or downward
  (steps 1, 2, 4, ...) while it does not, then bisection between the last batch that fits
  and the first that does not. ``--start N`` doubles from N (N, 2N, 4N, ...): ``--start 1``
  is the paper's search (VanillaNet starts at 2: BatchNorm over its 1x1 head needs two
  samples). The default ``predict`` starts at the batch where the line through two real
  forwards at the smallest batches meets the budget and steps by 1, 2, 4, ...; it reaches
  the same answer (memory grows with the batch) with a few forwards near the answer
  instead of about log2(batch) (for ``--measure saved`` only: ``peak`` always doubles, its
  readings at tiny batches are too coarse to extrapolate from). Every answer b is checked by
  real forwards: b fits, b + 1 does not.
* **Conversion** as the paper's: squeezenet1_0 converts every conv and every ReLU (1-bit
  masks, the paper's mode "all"); VanillaNet-10 converts the convs whose input has more
  than r pixels (the paper's ``adaptive_convert_net``; ours: ``convert(...,
  example_input=...)``), and its activations stay exact (they are not plain ReLUs). The
  paper's MNIST DDPM U-Net (``ddpm_unet_mnist``, blocks 64/128/192, attention at the two lower
  levels) converts every conv (SiLU activations stay exact) and steps on one-channel images
  and integer timesteps with an MSE to Gaussian noise; its attention is whatever kernel the
  device runs (on a CPU, fake or real, the attention matrix is materialised).
  Channel probes (the paper's "independent"). bf16 = ``model.to(bfloat16)`` and bf16
  inputs (the paper's half-precision runs used fp16; its numbers are listed beside ours).

Writes ``<out>.md``, ``<out>.csv`` and ``<out>.png`` (batch gain against r, one panel per
network and image size, ours beside the paper's).

    python scripts/max_batch.py --out results/max_batch        # default rows, ~8 CPU-minutes on 1 thread
    python scripts/max_batch.py --rows squeezenet1_0@512:1/2 --dtypes fp32 --start 1 --measure peak
    python scripts/max_batch.py --measure fake --start 1 --threads 1 --out results/max_batch --merge  # ~45 min
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import functools
import math
import sys
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import xconv
from xconv.fake_peak import cross_entropy, fake_peak
from xconv.memory import PeakMemory, SavedTensorMeter

from . import report
from .bench_layers import int_list, str_list

PAPER_BUDGET_BYTES = 0.92 * 16 * 2**30
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PAPER_PRECISION = {"fp32": "fp32", "bf16": "fp16"}  # the paper's half-precision runs were fp16
MEASURES = ("saved", "peak", "fake")
EXACT = 0  # r = 0: exact backprop


@dataclass(frozen=True)
class Network:
    build: Callable[[], nn.Module]
    relu: bool  # 1-bit ReLUs (the paper's mode "all")
    adaptive: bool  # convert only convs whose input has more than r pixels
    probes: tuple[int, ...]  # the paper's r values for this network
    smallest_batch: int = 1
    channels: int = 3  # of the input images
    denoiser: bool = False  # False: 1000-class cross-entropy of model(x); True: DDPM, MSE of model(x_t, t) to noise

    def inputs(self, batch: int, size: int, dtype, device, generator: torch.Generator | None = None) -> tuple:
        """One step's positional inputs: the images, and for a denoiser its diffusion timesteps."""
        x = torch.randn(batch, self.channels, size, size, generator=generator).to(device, dtype)
        if not self.denoiser:
            return (x,)
        return x, torch.randint(0, DDPM_STEPS, (batch,), generator=generator).to(device)

    def loss(self, output: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The training loss of ``output`` against synthetic targets (labels, or the added noise)."""
        if self.denoiser:
            noise = torch.randn(output.shape, generator=generator).to(output.device, output.dtype)
            return F.mse_loss(output, noise)
        labels = torch.randint(0, 1000, output.shape[:1], generator=generator).to(output.device)
        return F.cross_entropy(output, labels)


DDPM_STEPS = 1000  # the paper's DDPM noise schedule length (timesteps drawn from it)


def _vanillanet_10() -> nn.Module:
    from xconv_harness.models.vanillanet import vanillanet_10

    return vanillanet_10(num_classes=1000)


def _ddpm_unet_mnist() -> nn.Module:
    """The paper's MNIST DDPM U-Net ("SIPS UNet", Fig. 15, 16, 36; conf/experiment/fig16_mnist_ddpm.yaml)."""
    from xconv_harness.models.unet import DiffusionUNet

    return DiffusionUNet(in_channels=1, block_channels=[64, 128, 192], layers_per_block=2,
                         attention_levels=[1, 2], attention_head_dim=8, norm_groups=32)


NETWORKS = {
    "squeezenet1_0": Network(lambda: torchvision.models.squeezenet1_0(num_classes=1000), relu=True,
                             adaptive=False, probes=(4, 16, 32, 64, 128)),
    # Its head normalises (B, 1000, 1, 1) maps: BatchNorm in training needs at least 2 samples.
    "vanillanet_10": Network(_vanillanet_10, relu=False, adaptive=True, probes=(16, 32, 64, 128, 256),
                             smallest_batch=2),
    # SiLU activations (no 1-bit ReLUs); layers whose sketch is not smaller fall back call by call.
    "ddpm_unet_mnist": Network(_ddpm_unet_mnist, relu=False, adaptive=False, probes=(16, 32, 64, 128, 256),
                               channels=1, denoiser=True),
}

# The paper's largest batches in 0.92 x 16 GiB (PAPER.md §2.1): {(network, image, precision): {r: batch}}.
_SQUEEZENET_R = (EXACT, 4, 16, 32, 64, 128)
_VANILLANET_R = (EXACT, 16, 32, 64, 128, 256)
PAPER = {
    ("squeezenet1_0", 128, "fp32"): dict(zip(_SQUEEZENET_R, (1392, 1991, 1988, 1985, 1978, 1806))),
    ("squeezenet1_0", 256, "fp32"): dict(zip(_SQUEEZENET_R, (324, 493, 493, 493, 492, 490))),
    ("squeezenet1_0", 512, "fp32"): dict(zip(_SQUEEZENET_R, (78, 122, 122, 122, 121, 120))),
    ("squeezenet1_0", 128, "fp16"): dict(zip(_SQUEEZENET_R, (2484, 3469, 3410, 3334, 3173, 2779))),
    ("squeezenet1_0", 256, "fp16"): dict(zip(_SQUEEZENET_R, (578, 832, 818, 814, 805, 788))),
    ("squeezenet1_0", 512, "fp16"): dict(zip(_SQUEEZENET_R, (139, 198, 198, 198, 198, 198))),
    ("vanillanet_10", 64, "fp32"): dict(zip(_VANILLANET_R, (1027, 1543, 1498, 1432, 1348, 1239))),
    ("vanillanet_10", 128, "fp32"): dict(zip(_VANILLANET_R, (223, 357, 334, 333, 325, 311))),
    ("vanillanet_10", 256, "fp32"): dict(zip(_VANILLANET_R, (52, 81, 74, 76, 61, 77))),
    ("vanillanet_10", 512, "fp32"): dict(zip(_VANILLANET_R, (12, 20, 18, 15, 9, 9))),
    ("vanillanet_10", 64, "fp16"): dict(zip(_VANILLANET_R, (2017, 2816, 2743, 2635, 2497, 2313))),
    ("vanillanet_10", 128, "fp16"): dict(zip(_VANILLANET_R, (437, 657, 639, 617, 603, 579))),
    ("vanillanet_10", 256, "fp16"): dict(zip(_VANILLANET_R, (102, 154, 147, 152, 135, 143))),
    ("vanillanet_10", 512, "fp16"): dict(zip(_VANILLANET_R, (24, 37, 36, 33, 27, 28))),
    # MNIST DDPM U-Net [configs/err_plots/sips_unet_xconv.yaml]; at 28 px the config gives 660 for every r,
    # a batch used rather than a largest one, so it is left out.
    ("ddpm_unet_mnist", 64, "fp32"): dict(zip(_VANILLANET_R, (200, 275, 273, 270, 263, 250))),
    ("ddpm_unet_mnist", 128, "fp32"): dict(zip(_VANILLANET_R, (50, 68, 68, 66, 67, 66))),
    ("ddpm_unet_mnist", 256, "fp32"): dict(zip(_VANILLANET_R, (12, 16, 16, 16, 16, 16))),
}

# Default rows: the paper's smallest and largest squeezenet images, VanillaNet's two smallest
# (its 256 and 512 px rows take minutes per forward pass on one CPU thread); scales chosen
# so that the exact batch is about 10-30 here.
DEFAULT_ROWS = "squeezenet1_0@128:1/48,squeezenet1_0@512:1/8,vanillanet_10@64:1/24,vanillanet_10@128:1/16"
DEFAULT_PEAK_CHECK = "squeezenet1_0@128:1/48"
# --measure fake allocates nothing: the paper's rows at the paper's budget (scale 1).
DEFAULT_FAKE_ROWS = ("squeezenet1_0@128:1,squeezenet1_0@256:1,squeezenet1_0@512:1,vanillanet_10@64:1,"
                     "vanillanet_10@128:1,vanillanet_10@256:1,vanillanet_10@512:1")
PEAK_CHECK_PROBES = (EXACT, 16)


@dataclass(frozen=True)
class RowSpec:
    network: str
    size: int
    scale: Fraction


@dataclass
class Result:
    network: str
    size: int
    dtype: str
    measure: str
    scale: Fraction
    probes: int
    budget_bytes: int
    batch: int
    memory_bytes: int | None  # measured memory at the found batch (None if no batch fits)
    measurements: int  # memory measurements the search ran (forward passes, or steps for 'peak' and 'fake')
    gain: float = math.nan  # batch / exact batch of the same row, dtype and measure
    seconds: float = 0.0  # time in measurements
    fake: object = None  # measure 'fake': the xconv.fake_peak.FakePeak at the found batch

    @property
    def paper_batch(self) -> int | None:
        return PAPER.get((self.network, self.size, PAPER_PRECISION[self.dtype]), {}).get(self.probes)

    @property
    def paper_gain(self) -> float | None:
        table = PAPER.get((self.network, self.size, PAPER_PRECISION[self.dtype]), {})
        if self.probes not in table or EXACT not in table:
            return None
        return table[self.probes] / table[EXACT]


# Command line ------------------------------------------------------------------
def row_list(text: str) -> list[RowSpec]:
    """``"squeezenet1_0@128:1/48,..."`` -> row specs (network @ image size : budget scale)."""
    rows = []
    for item in str_list(text):
        try:
            network, rest = item.split("@")
            size, scale = rest.split(":")
            spec = RowSpec(network, int(size), Fraction(scale))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"row {item!r}: expected network@size:scale, e.g. squeezenet1_0@128:1/48") from None
        if network not in NETWORKS:
            raise argparse.ArgumentTypeError(f"row {item!r}: network must be one of {', '.join(NETWORKS)}")
        if spec.size < 32 or not 0 < spec.scale <= 1:
            raise argparse.ArgumentTypeError(f"row {item!r}: need size >= 32 and 0 < scale <= 1")
        rows.append(spec)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=row_list, default=None,
                        help=f"network@image_size:budget_scale,... (default {DEFAULT_ROWS}; with --measure "
                             f"fake {DEFAULT_FAKE_ROWS}); networks: {', '.join(NETWORKS)}")
    parser.add_argument("--probes", type=int_list, default=None,
                        help="r values for every row (default: the paper's per network)")
    parser.add_argument("--dtypes", type=str_list, default=list(DTYPES), help="fp32,bf16")
    parser.add_argument("--measure", choices=MEASURES, default="saved")
    parser.add_argument("--peak-check", type=row_list, default=None,
                        help=f"rows also searched with --measure peak in fp32 for exact and r=16 "
                             f"('' to skip; default {DEFAULT_PEAK_CHECK}, none with --measure fake)")
    parser.add_argument("--start", default="predict",
                        help="'predict' (measures saved and fake) or a start batch to double from (1 = the paper's)")
    parser.add_argument("--limit", type=int, default=1 << 16, help="largest batch searched")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md, <out>.csv and <out>.png")
    parser.add_argument("--merge", action="store_true",
                        help="merge into an existing <out>.csv and <out>.md (same network, image, dtype, measure "
                             "and r replaced, other rows kept); the figure goes to <out>-<measure>.png")
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = row_list(DEFAULT_FAKE_ROWS if args.measure == "fake" else DEFAULT_ROWS)
    if args.peak_check is None:
        args.peak_check = [] if args.measure == "fake" else row_list(DEFAULT_PEAK_CHECK)
    if args.merge and args.out is None:
        parser.error("--merge needs --out")
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad:
        parser.error(f"--dtypes: {bad} not allowed; choose from {', '.join(DTYPES)}")
    if args.start != "predict" and not (args.start.isdigit() and int(args.start) >= 1):
        parser.error(f"--start={args.start!r}: must be 'predict' or an integer >= 1")
    if not args.rows and not args.peak_check:
        parser.error("nothing to search: give --rows and/or --peak-check")
    if args.probes is not None and any(r < 0 for r in args.probes):
        parser.error(f"--probes={args.probes}: must be integers >= 0 (0 = exact)")
    return args


# Search ------------------------------------------------------------------------
def largest_batch(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 16, *,
                  first_step: int = 1, smallest: int = 1) -> int:
    """Largest batch in [smallest, limit] for which ``fits`` holds (0 if none), ``fits`` monotone.

    From ``start``, go up in steps of first_step, 2 first_step, 4 first_step, ... while the
    batch fits, or down in steps of 1, 2, 4, ... while it does not, then bisect between the
    last batch that fits and the first that does not. With ``first_step = start`` the
    batches tried upward are start, 2 start, 4 start, ...: the paper's doubling search.
    """
    if not 1 <= smallest <= start <= limit or first_step < 1:
        raise ValueError(f"need 1 <= smallest <= start <= limit and first_step >= 1, got smallest={smallest}, "
                         f"start={start}, limit={limit}, first_step={first_step}")
    if fits(start):
        low, high, step = start, None, first_step
        while high is None:
            if low == limit:
                return limit
            candidate = min(low + step, limit)
            if fits(candidate):
                low, step = candidate, 2 * step
            else:
                high = candidate
    else:
        low, high, step = None, start, 1
        while low is None:
            candidate = high - step
            if candidate < smallest:
                low = smallest - 1  # a sentinel: the bisection below tests every batch down to smallest
            elif fits(candidate):
                low = candidate
            else:
                high, step = candidate, 2 * step
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low if low >= smallest else 0


# Measurement ---------------------------------------------------------------------
def set_mmap_threshold(threshold: int) -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, threshold)``: blocks of at least ``threshold`` bytes are
    mmapped and unmapped on free. At 64 KiB the resident set follows the live tensors, which makes
    CPU peak-RSS growth meaningful (in a fresh process: chunks freed earlier would be reused
    unseen); 32 MiB restores about glibc's default afterwards (fewer page faults)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # -3 = M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class BatchMemory:
    """Memory of one training step of ``model`` at a given batch, by ``measure``."""

    def __init__(self, model: nn.Module, network: Network, size: int, dtype: torch.dtype, measure: str,
                 device: torch.device):
        self.model, self.size, self.dtype, self.measure, self.device = model, size, dtype, measure, device
        self.network = network
        parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.state_bytes = 2 * parameter_bytes  # parameters + their gradients
        self.calls = 0
        self.seconds = 0.0  # time in measurements
        self.fake_peaks: dict = {}  # measure 'fake': batch -> xconv.fake_peak.FakePeak

    def __call__(self, batch: int) -> int:
        self.calls += 1
        started = time.perf_counter()
        try:
            return self._measure(batch)
        finally:
            self.seconds += time.perf_counter() - started

    def _measure(self, batch: int) -> int:
        network = self.network
        if self.measure == "fake":  # the paper's loop: forward, loss, zero_grad, backward, (lr=0 SGD step)
            peak = fake_peak(self.model, lambda: network.inputs(batch, self.size, self.dtype, None),
                             loss_fn=cross_entropy(1000) if not network.denoiser else network.loss,
                             optimizer=functools.partial(torch.optim.SGD, lr=0.0), zero_grad="after_forward",
                             device=self.device, dtype=self.dtype)
            self.fake_peaks[batch] = peak
            return peak.total_bytes  # parameters, gradients and input included
        generator = torch.Generator().manual_seed(batch)
        inputs = network.inputs(batch, self.size, self.dtype, self.device, generator)
        input_bytes = sum(t.numel() * t.element_size() for t in inputs)
        if self.measure == "saved":
            with SavedTensorMeter() as meter:
                loss = network.loss(self.model(*inputs), generator)
            del loss
            uncounted = sum(t.numel() * t.element_size() for t in inputs if not meter.counted(t))
            return self.state_bytes + uncounted + meter.total_bytes
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.0)
        for _ in range(2):  # the paper's protocol: two tracked steps, the second reported
            with PeakMemory(self.device) as peak:
                loss = network.loss(self.model(*inputs), torch.Generator().manual_seed(batch))
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                del loss
            optimizer.step()
        if peak.source == "unavailable":
            raise RuntimeError("--measure peak: no peak-memory source on this machine (see PeakMemory)")
        self.model.zero_grad(set_to_none=True)
        return self.state_bytes + input_bytes + peak.peak_bytes


def convert(model: nn.Module, network: Network, probes: int, size: int, dtype, device) -> nn.Module:
    xconv.unconvert(model)
    if probes > 0:
        example = network.inputs(1, size, dtype, device) if network.adaptive else None
        # the paper's adaptive XConv: every layer whose sketch is smaller sketches (no keep once)
        xconv.convert(model, probes=probes, probe="channel", relu=network.relu, example_input=example,
                      keep_once=False)
    return model


def search_row(row: RowSpec, dtype_name: str, probes: list[int], measure: str, start: str, limit: int,
               device: torch.device) -> list[Result]:
    """Every r of one row and dtype (exact first), on one model converted in turn."""
    network, dtype = NETWORKS[row.network], DTYPES[dtype_name]
    torch.manual_seed(0)
    model = network.build().to(device, dtype).train()
    results = []
    for r in [EXACT] + [r for r in probes if r != EXACT]:
        convert(model, network, r, row.size, dtype, device)
        memory = BatchMemory(model, network, row.size, dtype, measure, device)
        budget = int(memory.state_bytes + float(row.scale) * (PAPER_BUDGET_BYTES - memory.state_bytes))
        measured: dict[int, int] = {}

        def fits(batch: int) -> bool:
            if batch not in measured:
                measured[batch] = memory(batch)
            return measured[batch] <= budget

        smallest = network.smallest_batch
        if start == "predict" and measure in ("saved", "fake"):
            first, step = predicted_start(fits, measured, budget, limit, smallest), 1
        else:  # 'peak' readings at tiny batches are too coarse to extrapolate from: double
            first = step = min(max(int(start) if start != "predict" else 1, smallest), limit)
        batch = largest_batch(fits, first, limit, first_step=step, smallest=smallest)
        results.append(Result(row.network, row.size, dtype_name, measure, row.scale, r, budget, batch,
                              measured.get(batch), memory.calls, seconds=memory.seconds,
                              fake=memory.fake_peaks.get(batch)))
        print(f"  {row.network}@{row.size} {dtype_name} {measure} r={r}: batch {batch} "
              f"({memory.calls} measurements, {memory.seconds:.0f} s)", file=sys.stderr, flush=True)
    exact = results[0].batch
    for result in results:
        result.gain = result.batch / exact if exact else math.nan
    return results


def predicted_start(fits, measured: dict[int, int], budget: int, limit: int, smallest: int = 1) -> int:
    """The batch where the memory line through two real forwards (the smallest batch and the
    next) meets the budget."""
    if not fits(smallest):
        return smallest
    fits(smallest + 1)
    per_sample = measured[smallest + 1] - measured[smallest]
    if per_sample <= 0:
        return smallest + 1
    return max(smallest, min(limit, (budget - measured[smallest]) // per_sample + smallest))


# Report ----------------------------------------------------------------------------
COLUMNS = ["network", "image", "dtype", "measure", "r", "batch", "gain", "paper batch", "paper gain",
           "paper batch x scale", "scale", "budget", "memory at batch", "measurements"]


def cells(result: Result) -> list:
    paper, paper_gain = result.paper_batch, result.paper_gain
    return [result.network, result.size, result.dtype, result.measure,
            "exact" if result.probes == EXACT else result.probes, result.batch,
            "n/a" if math.isnan(result.gain) else f"{result.gain:.2f}",
            "n/a" if paper is None else paper,
            "n/a" if paper_gain is None else f"{paper_gain:.2f}",
            "n/a" if paper is None else f"{paper * float(result.scale):.1f}",
            str(result.scale), report.format_bytes(result.budget_bytes),
            report.format_bytes(result.memory_bytes), result.measurements]


def csv_cells(result: Result) -> list:
    return [result.network, result.size, result.dtype, result.measure, result.probes, result.batch,
            result.gain, result.paper_batch, result.paper_gain, str(result.scale), result.budget_bytes,
            result.memory_bytes, result.measurements]


CSV_COLUMNS = ["network", "image", "dtype", "measure", "r", "batch", "gain", "paper_batch", "paper_gain",
               "scale", "budget_bytes", "memory_bytes_at_batch", "measurements"]


def fake_lines(results: list[Result]) -> list[str]:
    """Where the memory goes at each 'fake' answer: the peak by category, its phase, time per fake step."""
    rows = [r for r in results if r.fake is not None]
    if not rows:
        return []
    names = list(rows[0].fake.by_category)
    lines = ["", f"Fake peak at the found batch, by category (device {rows[0].fake.device}; peak phase; mean "
                 f"seconds per fake step of the search):", ""]
    table = [[r.network, r.size, r.dtype, "exact" if r.probes == EXACT else r.probes, r.batch,
              report.format_bytes(r.fake.total_bytes), *(report.format_bytes(r.fake.by_category[n]) for n in names),
              r.fake.phase, f"{r.seconds / max(r.measurements, 1):.1f}"] for r in rows]
    return lines + report.markdown_table(["network", "image", "dtype", "r", "batch", "peak", *names, "phase",
                                          "s/step"], table)


def merged_csv_rows(path: Path, rows: list[list]) -> list[list]:
    """``rows`` merged into the rows of the CSV at ``path``: a row of the same network, image, dtype,
    measure and r is replaced in place, the others are kept, new ones are appended."""
    if not path.exists():
        return rows
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        old = list(reader)
    if header != CSV_COLUMNS:
        raise ValueError(f"--merge: {path} has columns {header}, expected {CSV_COLUMNS}")
    key = lambda row: tuple(str(cell) for cell in row[:5])  # noqa: E731  network, image, dtype, measure, r
    new = {key(row): row for row in rows}
    merged = [new.pop(key(row), row) for row in old]
    return merged + [row for row in rows if key(row) in new]


_SECTION = "<!-- max_batch.py --merge: measure {measure}, rows {rows} -->"


def merged_markdown(path: Path, text: str, measure: str, rows: str) -> str:
    """The markdown at ``path`` with this run's ``text`` as its section for ``measure`` and ``rows``
    (replacing an earlier run of the same rows; runs of other rows keep their own sections, each
    with its own command and commit), between marker comments."""
    start = _SECTION.format(measure=measure, rows=rows)
    end = start + " end"
    section = f"{start}\n\n#{text.rstrip()}\n\n{end}\n"  # its title one level down
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        return old[:old.index(start)] + section + old[old.index(end) + len(end) + 1:]
    return (old.rstrip() + "\n\n" if old else "") + section


def summary_lines(results: list[Result]) -> list[str]:
    lines = ["", "Batch gain (XConv batch / exact batch), ours vs the paper's, per row:"]
    groups: dict[tuple, list[Result]] = {}
    for result in results:
        if result.probes != EXACT:
            groups.setdefault((result.network, result.size, result.dtype, result.measure), []).append(result)
    for (network, size, dtype, measure), group in groups.items():
        ours = ", ".join(f"r={g.probes}: {g.gain:.2f}" for g in group)
        paper = ", ".join(f"r={g.probes}: {g.paper_gain:.2f}" for g in group if g.paper_gain is not None)
        lines.append(f"- {network} {size}px {dtype} ({measure}): ours {ours}; paper "
                     f"({PAPER_PRECISION[dtype]}) {paper or 'n/a'}")
    return lines


def figure(results: list[Result], measure: str, title: str):
    """Batch gain against r for the rows searched with ``measure``, one panel per network and size."""
    plt = report.pyplot()
    results = [r for r in results if r.measure == measure]
    panels = list(dict.fromkeys((r.network, r.size) for r in results))
    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    markers = {"fp32": "o", "bf16": "s"}
    for axis, (network, size) in zip(axes.flat, panels):
        for dtype in DTYPES:
            ours = [r for r in results if (r.network, r.size, r.dtype) == (network, size, dtype)
                    and r.probes != EXACT]
            if not ours:
                continue
            axis.plot([r.probes for r in ours], [r.gain for r in ours], "-" + markers[dtype],
                      label=f"ours {dtype}")
            paper = [(r.probes, r.paper_gain) for r in ours if r.paper_gain is not None]
            if paper:
                axis.plot(*zip(*paper), "--" + markers[dtype], mfc="none",
                          label=f"paper {PAPER_PRECISION[dtype]}")
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.set_xscale("log", base=2)
        axis.set_title(f"{network}, {size}x{size}")
        axis.set_xlabel("probes r")
        axis.set_ylabel("batch gain (XConv / exact)")
        axis.grid(alpha=0.3)
        axis.legend()
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    command = report.command_line("max_batch.py", argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # The peak checks run first: CPU peak-RSS growth is only trustworthy in a fresh process.
    runs = [(row, "fp32", list(PEAK_CHECK_PROBES), "peak") for row in args.peak_check]
    runs += [(row, dtype, args.probes or list(NETWORKS[row.network].probes), args.measure)
             for row in args.rows for dtype in args.dtypes]
    runs.sort(key=lambda run: run[3] != "peak")  # every 'peak' search first (stable otherwise)
    rss_peaks = device.type == "cpu" and runs[0][3] == "peak"
    if rss_peaks and not set_mmap_threshold(64 * 1024):
        warnings.warn("could not set glibc's mmap threshold: CPU peak-RSS growth may undercount")
    results = []
    for row, dtype, probes, measure in runs:
        if rss_peaks and measure != "peak":
            rss_peaks = not set_mmap_threshold(32 * 2**20)  # peaks done: back to fewer page faults
        results += search_row(row, dtype, probes, measure, args.start, args.limit, device)
    results.sort(key=lambda result: result.measure != args.measure)  # the rows' measure first in the table

    title = "Largest batch within a memory budget: exact vs XConv (channel probes)"
    scale = (f"budget = parameters + gradients + scale x (0.92 x 16 GiB - parameters - gradients), scale per "
             f"row; measure '{args.measure}' (see the script's docstring); start {args.start}; "
             f"random init, seed 0; synthetic N(0,1) images, 1000 classes")
    lines = report.provenance(title, command, scale, device)
    lines += ["Reading it: `batch` is ours, `gain` = batch / exact batch in the same row; `paper batch` "
              "is the paper's at 0.92 x 16 GiB (fp16 beside our bf16); `paper batch x scale` is the "
              "paper's batch scaled to our budget, i.e. what ours would be if a sample cost the same "
              "memory here as on the paper's GPU.", ""]
    lines += report.markdown_table(COLUMNS, [cells(result) for result in results])
    lines += summary_lines(results)
    lines += fake_lines(results)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        csv_rows = [csv_cells(result) for result in results]
        plotted = args.measure if args.rows else "peak"  # the rows' measure; else the peak check's
        png = args.out.with_suffix(".png")
        if args.merge:
            csv_rows = merged_csv_rows(args.out.with_suffix(".csv"), csv_rows)
            rows = ",".join(f"{row.network}@{row.size}:{row.scale}" for row in args.rows)
            text = merged_markdown(args.out.with_suffix(".md"), text, args.measure, rows)
            png = args.out.with_name(f"{args.out.name}-{plotted}.png")
        report.write_text(args.out.with_suffix(".md"), text)
        report.write_text(args.out.with_suffix(".csv"), report.csv_text(CSV_COLUMNS, csv_rows))
        report.save_figure(figure(results, plotted, f"{title}; measure '{plotted}'"), png)
    return results


if __name__ == "__main__":
    main()
