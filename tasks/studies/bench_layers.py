"""Benchmark XConv2d against the exact nn.Conv2d on ResNet-18 3x3 conv shapes.

For every conv shape (ResNet-18 stage: C -> C channels, 3x3, stride 1,
padding 1, no bias) and batch size B, this measures side by side in one run:

* time: median wall-clock of one training step of the layer alone (forward on
  an input that requires grad, then ``out.backward(grad)`` with a fixed random
  grad), over ``--repeats`` steps after ``--warmup`` excluded steps. The exact
  layer and every XConv variant (probe kind x r) of a (shape, B) are stepped in
  the same loop, one after the other in each repeat (the order rotates from
  repeat to repeat), so all of them see the same machine state.
* memory: bytes autograd saves for backward during one forward
  (``xconv.memory.SavedTensorMeter``, parameters excluded). The exact layer
  saves its input (B*C*H*W numbers); XConv saves its sketch: r*B*C numbers for
  ``channel`` probes (predicted factor H*W/r) and B*r numbers for the other
  kinds (predicted factor C*H*W/r).

Run from the repository root::

    python scripts/bench_layers.py                      # default grid, ~5-8 min on 2 CPU cores
    python scripts/bench_layers.py --resolution both --batches 32,64,128,256 \\
        --probes 4,8,16,32,64 --out results/bench_layers.md  # full grid (long on CPU)
    python scripts/bench_layers.py --shapes 16x8 --batches 16 --probes 2 --repeats 1

``--shapes CxS,...`` (C channels at SxS) replaces the ResNet-18 shapes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from xconv import XConv2d
from xconv.memory import SavedTensorMeter

from . import report
from .timing import backward_step, median_times_ms

# ResNet-18 3x3 conv stages: (channels, spatial size).
STAGES = {
    "cifar": [(64, 32), (128, 16), (256, 8), (512, 4)],
    "imagenet": [(64, 56), (128, 28), (256, 14), (512, 7)],
}
# Default grid: all CIFAR stages plus the first two (largest) ImageNet stages.
DEFAULT_SHAPES = [("cifar", c, s) for c, s in STAGES["cifar"]] + \
                 [("imagenet", c, s) for c, s in STAGES["imagenet"][:2]]

COLUMNS = ["resolution", "C", "HxW", "B", "probe", "r", "r<=B/8", "exact ms", "xconv ms",
           "time ratio xconv/exact", "saved exact", "saved xconv", "mem factor exact/xconv",
           "predicted factor"]


@dataclass
class Row:
    resolution: str
    channels: int
    size: int
    batch: int
    probe: str
    probes: int
    exact_ms: float
    xconv_ms: float
    exact_bytes: int
    xconv_bytes: int

    @property
    def small_r(self) -> bool:
        return self.probes <= self.batch / 8

    @property
    def time_ratio(self) -> float:
        return self.xconv_ms / self.exact_ms

    @property
    def memory_factor(self) -> float:
        return self.exact_bytes / self.xconv_bytes

    @property
    def predicted_factor(self) -> float:
        """Exact keeps B*C*H*W numbers; channel keeps r*B*C, the other kinds B*r."""
        spatial = self.size * self.size
        exact_per_probe = spatial if self.probe == "channel" else self.channels * spatial
        return exact_per_probe / self.probes

    def cells(self) -> list[str]:
        return [self.resolution, str(self.channels), f"{self.size}x{self.size}", str(self.batch),
                self.probe, str(self.probes), "yes" if self.small_r else "no",
                f"{self.exact_ms:.1f}", f"{self.xconv_ms:.1f}", f"{self.time_ratio:.2f}",
                report.format_bytes(self.exact_bytes), report.format_bytes(self.xconv_bytes),
                f"{self.memory_factor:.1f}", f"{self.predicted_factor:.1f}"]


# Command line ----------------------------------------------------------------
def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def str_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def shape_list(text: str) -> list[tuple[str, int, int]]:
    """``"16x8,32x4"`` -> ``[("custom", 16, 8), ("custom", 32, 4)]`` (C x spatial size)."""
    shapes = []
    for item in str_list(text):
        channels, size = item.lower().split("x")
        shapes.append(("custom", int(channels), int(size)))
    return shapes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", choices=["default", "cifar", "imagenet", "both"],
                        default="default",
                        help="ResNet-18 shapes; default = all CIFAR + ImageNet 64@56 and 128@28")
    parser.add_argument("--shapes", type=shape_list, default=None,
                        help="explicit shapes 'CxS,...' (C channels at SxS); overrides --resolution")
    parser.add_argument("--batches", type=int_list, default=[32, 128])
    parser.add_argument("--probes", type=int_list, default=[4, 16, 64])
    parser.add_argument("--kinds", type=str_list, default=["channel", "gaussian"])
    parser.add_argument("--repeats", type=int, default=13, help="timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    return parser.parse_args(argv)


def selected_shapes(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    if args.shapes:
        return args.shapes
    if args.resolution == "default":
        return DEFAULT_SHAPES
    names = ["cifar", "imagenet"] if args.resolution == "both" else [args.resolution]
    return [(name, c, s) for name in names for c, s in STAGES[name]]


# Measurement -----------------------------------------------------------------
def make_layers(channels: int, kinds: list[str], probes: list[int], device) -> dict:
    """The exact conv and one XConv2d per (kind, r), all with the same weights."""
    exact = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False).to(device)
    layers = {"exact": exact}
    for kind in kinds:
        for r in probes:
            layer = XConv2d(channels, channels, 3, stride=1, padding=1, bias=False,
                            probes=r, probe=kind).to(device)
            layer.load_state_dict(exact.state_dict())
            layers[(kind, r)] = layer
    return layers


def saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward during one forward of ``layer``."""
    with SavedTensorMeter() as meter:
        layer(x)
    return meter.total_bytes


def bench_case(resolution, channels, size, batch, args, device) -> list[Row]:
    """All XConv variants of one (shape, batch) against the exact layer."""
    torch.manual_seed(0)
    layers = make_layers(channels, args.kinds, args.probes, device)
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    grad = torch.randn(batch, channels, size, size, device=device)
    steps = {key: backward_step(layer, (x,), grad, leaf=x) for key, layer in layers.items()}
    times = median_times_ms(steps, args.repeats, args.warmup, device)
    exact_bytes = saved_bytes(layers["exact"], x)
    return [Row(resolution, channels, size, batch, kind, r, times["exact"], times[(kind, r)],
                exact_bytes, saved_bytes(layers[(kind, r)], x))
            for kind in args.kinds for r in args.probes]


# Report ----------------------------------------------------------------------
def header(command: str, device: torch.device) -> list[str]:
    lines = report.provenance("XConv2d vs exact Conv2d: forward+backward time and saved bytes",
                              command, "one conv layer per row; see the grid below", device)
    return lines


def table(rows: list[Row]) -> list[str]:
    return report.markdown_table(COLUMNS, [row.cells() for row in rows])


def summary(rows: list[Row]) -> list[str]:
    """Per probe kind, over rows with r <= B/8: how often XConv is not slower, median ratio."""
    lines = ["", "Summary over rows with r <= B/8 (time ratio = xconv ms / exact ms):"]
    for kind in dict.fromkeys(row.probe for row in rows):
        ratios = [row.time_ratio for row in rows if row.probe == kind and row.small_r]
        if not ratios:
            lines.append(f"- {kind}: no rows with r <= B/8")
            continue
        faster = sum(ratio <= 1.0 for ratio in ratios)
        lines.append(f"- {kind}: time ratio <= 1.0 in {faster}/{len(ratios)} rows "
                     f"({faster / len(ratios):.0%}), median time ratio {statistics.median(ratios):.2f}")
    return lines


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    command = report.command_line("bench_layers.py", argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    head = header(command, device)
    print("\n".join(head), flush=True)
    rows = []
    for resolution, channels, size in selected_shapes(args):
        for batch in args.batches:
            rows += bench_case(resolution, channels, size, batch, args, device)
            print(f"  done {resolution} C={channels} {size}x{size} B={batch}",
                  file=sys.stderr, flush=True)
    body = table(rows) + summary(rows)
    print("\n".join(body), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(head + body) + "\n")
    return rows


if __name__ == "__main__":
    main()
