"""Activation memory and step time vs depth: exact, sqrt checkpointing, XConv, and both.

Two blocks, each measured side by side in one run (every mode of a row stepped in
the same loop, the order rotating from repeat to repeat):

1. Depth sweep. A plain conv-residual stack at small resolution: a stem conv,
   ``n`` blocks ``x + conv3x3(relu(x))`` (C channels, no normalisation, the
   branch initialised at 1/sqrt(n) so 1000 blocks stay finite), global pooling
   and a linear head. For each depth ``n`` and mode: activation memory and the
   median step time (forward + backward). A least-squares line through
   ``log(peak activation bytes)`` vs ``log(n)`` gives each mode's growth
   exponent: about 1 for exact backprop and XConv (a smaller constant), about
   0.5 for sqrt checkpointing (Chen et al. 2016).
2. Models. torchvision ResNet-18 and ResNet-50 and the harness's segmentation
   U-Net (smp, resnet18 encoder): memory factor (exact / mode) and time ratio
   (mode / exact) of each mode.

Modes: ``exact``; ``checkpoint`` (``xconv.checkpoint_sequential(model, "sqrt")``);
``xconv`` (``xconv.convert(model, probes=r, relu=True, example_input=...)``: XConv
convolutions with 1-bit ReLUs, the paper's "all" mode; ``--relu exact`` keeps the
ReLUs); ``xconv+checkpoint`` (both). The models block adds ``xconv (convs only)``
(exact ReLUs), which shows how little XConv saves while ReLUs keep their outputs.

Activation memory: ``saved`` = bytes autograd keeps after the forward
(``xconv.memory.SavedTensorMeter``, each storage once, parameters excluded);
``recompute`` = bytes the largest checkpointed segment's recomputation saves in
backward beyond that (profiled, ``xconv.planner.recompute_bytes``); ``peak`` =
saved + recompute, the figure fitted and compared. Device-independent.

    python scripts/depth_scaling.py --out results/depth_scaling.md      # the default grid, a few minutes on 1 thread
    python scripts/depth_scaling.py --depths 4,8,16,32 --models none --repeats 1 --warmup 0
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

import xconv
from xconv.planner import activation_bytes

from . import report
from .timing import ModeComparison, median_times_ms

MODES = ("exact", "checkpoint", "xconv", "xconv+checkpoint")
CONVS_ONLY = "xconv (convs only)"
MODEL_NAMES = ("resnet18", "resnet50", "smp_unet")
COLUMNS = ["block", "model", "depth", "input", "mode", "saved_bytes", "recompute_bytes", "peak_bytes",
           "memory_factor", "step_ms", "time_ratio"]


# Models ----------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """``x + conv3x3(relu(x))``: one conv layer, one residual connection."""

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        nn.init.kaiming_normal_(self.body[1].weight, nonlinearity="relu")
        with torch.no_grad():
            self.body[1].weight.mul_(depth ** -0.5)  # the variance grows by (1 + 1/n) per block: e in total

    def forward(self, x):
        return x + self.body(x)


class ResidualStack(nn.Module):
    """Stem conv (3 -> C), ``depth`` residual blocks (the chain that checkpointing segments), pool, linear."""

    def __init__(self, depth: int, channels: int, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(*[ResidualBlock(channels, depth) for _ in range(depth)])
        self.pool = nn.AdaptiveAvgPool2d(1)  # outside the chain: a checkpoint there would keep its input
        self.head = nn.Linear(channels, classes)

    def forward(self, x):  # (B, 3, H, W) -> (B, classes)
        features = self.pool(self.blocks(self.stem(x)))  # (B, C, 1, 1)
        return self.head(features.flatten(1))  # (B, classes)


def named_model(name: str) -> nn.Module:
    if name == "smp_unet":
        from xconv_harness.models.segmentation import smp_unet

        return smp_unet()  # resnet18 encoder, 2 classes: the harness's segmentation model
    import torchvision

    return getattr(torchvision.models, name)(num_classes=10)


def with_mode(model: nn.Module, mode: str, probes: int, relu: bool, x: torch.Tensor) -> nn.Module:
    """A copy of ``model`` set up for ``mode`` (same weights)."""
    model = copy.deepcopy(model)
    if mode.startswith("xconv"):
        xconv.convert(model, probes=probes, relu=relu and mode != CONVS_ONLY, example_input=x[:1])
    if mode.endswith("checkpoint"):
        xconv.checkpoint_sequential(model, "sqrt")
    return model


# Measurement -----------------------------------------------------------------
def training_step(model: nn.Module, x: torch.Tensor):
    def step():
        model.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()
    return step


@dataclass
class Row(ModeComparison):
    block: str  # "depth" or "model"
    model: str
    depth: int | None
    input: str
    mode: str
    saved: int
    recompute: int
    step_ms: float
    exact_peak: int = 0
    exact_ms: float = 0.0

    def values(self) -> list:
        return [self.block, self.model, self.depth if self.depth is not None else "", self.input, self.mode,
                self.saved, self.recompute, self.peak, round(self.memory_factor, 3), round(self.step_ms, 2),
                round(self.time_ratio, 3)]


def measure_modes(name: str, block: str, depth, model: nn.Module, x: torch.Tensor, modes, args) -> list[Row]:
    """Memory and median step time of every mode of ``model`` on ``x``, side by side."""
    variants = {mode: with_mode(model, mode, args.probes, args.relu == "bit", x) for mode in modes}
    memory = {mode: activation_bytes(variant, x) for mode, variant in variants.items()}
    times = median_times_ms({mode: training_step(variant, x) for mode, variant in variants.items()},
                            args.repeats, args.warmup, x.device)
    shape = "x".join(map(str, x.shape))
    rows = [Row(block, name, depth, shape, mode, memory[mode]["saved"], memory[mode]["recompute"], times[mode])
            for mode in modes]
    for row in rows:
        row.exact_peak, row.exact_ms = memory["exact"]["peak"], times["exact"]
    return rows


def depth_rows(args) -> list[Row]:
    rows = []
    for depth in args.depths:
        torch.manual_seed(0)
        model = ResidualStack(depth, args.channels)
        x = torch.randn(args.batch, 3, args.size, args.size)
        rows += measure_modes("residual stack", "depth", depth, model, x, MODES, args)
        print(f"  depth {depth} done", file=sys.stderr, flush=True)
    return rows


def model_rows(args) -> list[Row]:
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = named_model(name)
        batch, size = (args.unet_batch, args.unet_size) if name == "smp_unet" else (args.model_batch,
                                                                                     args.model_size)
        x = torch.randn(batch, 3, size, size)
        modes = ("exact", "checkpoint", CONVS_ONLY, "xconv", "xconv+checkpoint")
        rows += measure_modes(name, "model", None, model, x, modes, args)
        print(f"  {name} done", file=sys.stderr, flush=True)
    return rows


def fit_exponent(depths: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares slope of log(value) on log(depth), and its R^2."""
    xs, ys = [math.log(d) for d in depths], [math.log(v) for v in values]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((a - mean_x) ** 2 for a in xs)
    slope = sum((a - mean_x) * (b - mean_y) for a, b in zip(xs, ys)) / sxx
    residual = sum((b - mean_y - slope * (a - mean_x)) ** 2 for a, b in zip(xs, ys))
    total = sum((b - mean_y) ** 2 for b in ys)
    return slope, 1 - residual / total if total else 1.0


def exponents(rows: list[Row]) -> dict[str, dict]:
    """Per mode: growth exponent of peak and of saved bytes, and of step time, vs depth."""
    fits = {}
    for mode in MODES:
        mine = sorted((r for r in rows if r.block == "depth" and r.mode == mode), key=lambda r: r.depth)
        if len(mine) < 2:
            continue
        depths = [r.depth for r in mine]
        peak, r2 = fit_exponent(depths, [r.peak for r in mine])
        fits[mode] = {"peak": peak, "r2": r2, "saved": fit_exponent(depths, [r.saved for r in mine])[0],
                      "time": fit_exponent(depths, [r.step_ms for r in mine])[0]}
    return fits


# Report ----------------------------------------------------------------------
def mib(n: float) -> str:
    return f"{n / 2**20:.2f}"


def markdown(rows: list[Row], fits: dict, args, command: str) -> str:
    scale = (f"depth sweep: residual stack, n = {', '.join(map(str, args.depths))} blocks, C={args.channels}, "
             f"batch {args.batch} at {args.size}x{args.size}; models: ResNet batch {args.model_batch} at "
             f"{args.model_size}x{args.model_size}, U-Net batch {args.unet_batch} at {args.unet_size}x"
             f"{args.unet_size}; XConv r={args.probes} channel probes"
             f"{', 1-bit ReLUs' if args.relu == 'bit' else ''}; time: median of {args.repeats} steps after "
             f"{args.warmup} warm-up")
    lines = report.provenance("Activation memory and step time vs depth: exact, sqrt checkpointing, XConv, both",
                              command, scale)
    lines += ["Activation memory = bytes kept after the forward (`SavedTensorMeter`) + the largest checkpointed "
              "segment's recomputation in backward (profiled). Memory factor = exact / mode; time ratio = "
              "mode / exact, measured side by side in one loop.", ""]
    if fits:
        lines += ["## Growth exponent vs depth (least squares in log-log)", ""]
        lines += report.markdown_table(
            ["mode", "exponent of peak activation", "R^2", "exponent of saved bytes", "exponent of step time"],
            [[mode, f"{f['peak']:.3f}", f"{f['r2']:.4f}", f"{f['saved']:.3f}", f"{f['time']:.3f}"]
             for mode, f in fits.items()])
        lines += ["", "## Depth sweep (peak activation MiB, step ms)", ""]
        by_depth = {}
        for row in rows:
            if row.block == "depth":
                by_depth.setdefault(row.depth, {})[row.mode] = row
        lines += report.markdown_table(
            ["n"] + [f"{m} MiB" for m in MODES] + [f"{m} ms" for m in MODES],
            [[depth] + [mib(cells[m].peak) for m in MODES] + [f"{cells[m].step_ms:.1f}" for m in MODES]
             for depth, cells in sorted(by_depth.items())])
    model_table = [r for r in rows if r.block == "model"]
    if model_table:
        lines += ["", "## Models: each mode vs exact", ""]
        lines += report.markdown_table(
            ["model", "input", "mode", "saved MiB", "recompute MiB", "peak MiB", "memory factor exact/mode",
             "step ms", "time ratio mode/exact"],
            [[r.model, r.input, r.mode, mib(r.saved), mib(r.recompute), mib(r.peak), f"{r.memory_factor:.2f}",
              f"{r.step_ms:.1f}", f"{r.time_ratio:.2f}"] for r in model_table])
    return "\n".join(lines) + "\n"


def figure(rows: list[Row], fits: dict, path: Path) -> None:
    plt = report.pyplot()
    fig, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in fits:
        mine = sorted((r for r in rows if r.block == "depth" and r.mode == mode), key=lambda r: r.depth)
        depths = [r.depth for r in mine]
        line, = memory_axis.loglog(depths, [r.peak / 2**20 for r in mine], "o-",
                                   label=f"{mode} (exponent {fits[mode]['peak']:.2f})")
        time_axis.loglog(depths, [r.step_ms for r in mine], "o-", color=line.get_color(), label=mode)
    memory_axis.set(xlabel="depth n (residual blocks)", ylabel="peak activation memory (MiB)",
                    title="activation memory vs depth")
    time_axis.set(xlabel="depth n (residual blocks)", ylabel="median step time (ms)", title="step time vs depth")
    for axis in (memory_axis, time_axis):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    report.save_figure(fig, path)


# Command line ----------------------------------------------------------------
def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def model_list(text: str) -> list[str]:
    names = [item for item in text.split(",") if item and item != "none"]
    bad = [name for name in names if name not in MODEL_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"--models {text!r}: unknown {bad}; allowed {', '.join(MODEL_NAMES)} "
                                         f"or none")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int_list, default=[8, 16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--size", type=int, default=16, help="input height and width of the stack")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--models", type=model_list, default=list(MODEL_NAMES),
                        help=f"comma list of {', '.join(MODEL_NAMES)}, or none")
    parser.add_argument("--model-batch", type=int, default=8)
    parser.add_argument("--model-size", type=int, default=112)
    parser.add_argument("--unet-batch", type=int, default=16, help="the harness's segmentation batch")
    parser.add_argument("--unet-size", type=int, default=64, help="the harness's segmentation size")
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--relu", choices=["bit", "exact"], default="bit",
                        help="ReLUs of the xconv modes: 1-bit masks (the paper's 'all' mode) or exact")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per mode (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the markdown here, and the .csv and .png beside it")
    args = parser.parse_args(argv)
    if min(args.depths, default=0) < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error(f"--depths must be integers >= 1 (got {args.depths}), --repeats >= 1 (got {args.repeats}), "
                     f"--warmup >= 0 (got {args.warmup})")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = report.command_line("depth_scaling.py", argv)
    torch.set_num_threads(args.threads)
    rows = (depth_rows(args) if args.depths else []) + model_rows(args)
    fits = exponents(rows)
    text = markdown(rows, fits, args, command)
    print(text, flush=True)
    if args.out:
        report.write_text(args.out, text)
        report.write_text(args.out.with_suffix(".csv"), report.csv_text(COLUMNS, [r.values() for r in rows]))
        if fits:
            figure(rows, fits, args.out.with_suffix(".png"))
    return {"rows": rows, "fits": fits, "markdown": text}


if __name__ == "__main__":
    main()
