"""Whole-network activation memory and step time under every memory mode, side by side.

A network keeps much more for backward than its convolutions' inputs: norms keep
their input, max pooling its input plus int64 indices, smooth activations their
input. This study measures, for each network and each mode, what one training step
keeps and how long it takes, every mode of a network in the same run:

========================  ====================================================================
mode                      ``xconv.convert`` / checkpointing
========================  ====================================================================
exact                     plain torch
xconv                     ``convert(probes=r)``: convolutions keep sketches
xconv + lossless          ``convert(probes=r, activations="lossless")``: + 1-bit ReLUs, uint8 pool
                          offsets, shape-only average pools, bit-packed dropout (torch's gradients)
xconv + compact           ``activations="compact"``: + norms' x-hat in 8 bits, derivative codes
lossless                  ``convert(probes=0, activations="lossless")``: exact gradients, less memory
checkpoint sqrt           ``xconv.checkpoint_sequential(model, "sqrt", example_input=x)`` (Chen et
                          al. 2016); declined (no segments) where it would not keep less
xconv + compact + ckpt    both
========================  ====================================================================

Columns:

* ``saved``: bytes autograd keeps after the forward (``xconv.memory.SavedTensorMeter``,
  each storage once, parameters excluded); ``recompute``: the largest checkpointed
  segment's recomputation in backward (``xconv.planner.activation_bytes``); ``peak`` =
  saved + recompute, the activation memory compared (``factor`` = exact / mode);
* ``kept``: the same bytes counted a second, independent way, by walking the autograd
  graph of the output (``xconv.memory.kept_bytes``: saved tensors and tensor attributes of
  every node's context); it must equal ``saved`` (checkpointed modes: not walked, n/a);
* ``step``: median wall-clock ms of a forward + backward, every mode stepped in one loop,
  the order rotating every repeat (``timing.median_times_ms``); ``time`` = mode / exact.

Models are converted with the step's input as ``example_input``: convolutions whose sketch
would not be smaller than their input stay plain, and so does every converted layer whose kept
tensor another layer keeps anyway (``xconv.keep_once``: an XConv layer after a plain ReLU, a
1-bit ReLU before a plain convolution), as ``xconv.left_plain(model)`` lists.

    python scripts/network_memory.py --out results/network_memory         # every network, ~20 min on 1 thread
    python scripts/network_memory.py --networks resnet18 --batch 2 --size 64 --repeats 1 --warmup 0
"""
from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import xconv
from xconv.memory import kept_bytes
from xconv.memory import no_side_effects
from xconv.planner import activation_bytes

from . import report
from .speed import MODEL_SPECS, build_model, model_inputs, task_config
from .timing import ModeComparison, backward_step, median_times_ms


@dataclass(frozen=True)
class Mode:
    name: str
    probes: bool          # XConv convolutions (at the study's r) or plain ones
    activations: str      # xconv.ACTIVATION_MODES
    checkpoint: str       # "none" or "sqrt"


MODES = (
    Mode("exact", False, "exact", "none"),
    Mode("xconv", True, "exact", "none"),
    Mode("xconv + lossless", True, "lossless", "none"),
    Mode("xconv + compact", True, "compact", "none"),
    Mode("lossless", False, "lossless", "none"),
    Mode("checkpoint sqrt", False, "exact", "sqrt"),
    Mode("xconv + compact + checkpoint sqrt", True, "compact", "sqrt"),
)


@dataclass(frozen=True)
class Network:
    """A network and its input: ``build()`` the model, ``inputs(batch, size)`` its inputs."""

    build: Callable[[], nn.Module]
    batch: int
    size: int
    inputs: Callable[[int, int], tuple] | None = None
    exact_layers: tuple[str, ...] = ()


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(num_classes=10)
    return build


def _smp_unet() -> nn.Module:
    from ..models.segmentation import smp_unet

    return smp_unet()  # resnet18 encoder, random init: the harness's segmentation model


def _images(batch: int, size: int) -> tuple:
    return (torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)),)


def _task_model(name: str) -> Network:
    """A harness task model at its task's default input (``speed.MODEL_SPECS``)."""
    config = task_config(*MODEL_SPECS[name])
    inputs = model_inputs(name, config, "cpu")
    return Network(lambda: build_model(config["model"]), inputs[0].shape[0], inputs[0].shape[-1],
                   lambda batch, size: inputs, tuple(config["model"].get("exact_layers") or ()))


NETWORKS: dict[str, Callable[[], Network]] = {
    "resnet18": lambda: Network(_torchvision("resnet18"), 8, 224),
    "resnet18_cifar": lambda: Network(_torchvision("resnet18"), 128, 32),
    "resnet50": lambda: Network(_torchvision("resnet50"), 4, 224),
    "squeezenet1_0": lambda: Network(_torchvision("squeezenet1_0"), 4, 224),
    "mobilenet_v3_small": lambda: Network(_torchvision("mobilenet_v3_small"), 8, 224),
    "efficientnet_b0": lambda: Network(_torchvision("efficientnet_b0"), 4, 224),
    "convnext_tiny": lambda: Network(_torchvision("convnext_tiny"), 2, 224),
    "unet_resnet18": lambda: Network(_smp_unet, 8, 128),  # the segmentation U-Net at 128 px
    **{name: (lambda name=name: _task_model(name)) for name in MODEL_SPECS},
}


def with_mode(model: nn.Module, mode: Mode, probes: int, skip: tuple[str, ...], inputs: tuple) -> nn.Module:
    """A copy of ``model`` set up for ``mode`` (same weights); checkpointing is planned on ``inputs`` and
    declined where its peak would not be below the model's without it (``checkpoint_plan(model).declined``)."""
    model = copy.deepcopy(model)
    if mode.probes or mode.activations != "exact":
        xconv.convert(model, probes=probes if mode.probes else 0, activations=mode.activations, skip=list(skip),
                      example_input=inputs)
    if mode.checkpoint != "none":
        xconv.checkpoint_sequential(model, mode.checkpoint, example_input=inputs)
    return model


@dataclass
class Row(ModeComparison):
    network: str
    input: str
    mode: str
    saved: int
    recompute: int
    kept: int | None
    step_ms: float
    declined: str | None = None  # checkpointing not installed, and why
    exact_peak: int = 0
    exact_ms: float = 0.0

    def values(self) -> list:
        return [self.network, self.input, self.mode, self.saved, self.recompute, self.peak,
                "" if self.kept is None else self.kept,
                round(self.memory_factor, 3), round(self.step_ms, 2), round(self.time_ratio, 3)]


COLUMNS = ["network", "input", "mode", "saved_bytes", "recompute_bytes", "peak_bytes", "kept_bytes",
           "factor_vs_exact", "step_ms", "time_vs_exact"]


def kept_by_walk(model: nn.Module, inputs: tuple) -> int:
    """Bytes the autograd graph of one forward keeps (parameters excluded), by walking it."""
    with no_side_effects(model), torch.enable_grad():  # BatchNorm statistics and generators restored
        output = model(*inputs)
        kept = kept_bytes(output, parameters=list(model.parameters()))
        del output
    return kept


def measure(name: str, network: Network, args) -> list[Row]:
    """Every mode of one network: memory, then step times interleaved in one loop."""
    torch.manual_seed(0)
    base = network.build().train()
    batch, size = args.batch or network.batch, args.size or network.size
    inputs = network.inputs(batch, size) if network.inputs else _images(batch, size)
    modes = [mode for mode in MODES if mode.name in args.modes]
    variants = {mode.name: with_mode(base, mode, args.probes, network.exact_layers, inputs) for mode in modes}
    memory = {mode: activation_bytes(model, *inputs) for mode, model in variants.items()}
    # the graph walk is a cross-check of what stays after the forward; checkpointed segments keep
    # their inputs through saved-tensor hooks the walk does not see as such, so it is left out there
    kept = {mode.name: kept_by_walk(variants[mode.name], inputs) if mode.checkpoint == "none" else None
            for mode in modes}
    grad = torch.randn_like(base(*inputs))
    times = median_times_ms({mode: backward_step(model, inputs, grad) for mode, model in variants.items()},
                            args.repeats, args.warmup, "cpu")
    shape = "x".join(map(str, inputs[0].shape))
    rows = [Row(name, shape, mode, memory[mode]["saved"], memory[mode]["recompute"], kept[mode], times[mode],
                getattr(xconv.checkpoint_plan(model), "declined", None)) for mode, model in variants.items()]
    for row in rows:
        row.exact_peak, row.exact_ms = memory["exact"]["peak"], times["exact"]
    return rows


def markdown(rows: list[Row], args, command: str) -> str:
    modes = [mode.name for mode in MODES if mode.name in args.modes]
    lines = report.provenance(
        f"Whole-network activation memory and step time, r={args.probes} channel probes", command,
        f"one training step per network at the input shown; times: median of {args.repeats} interleaved "
        f"steps after {args.warmup} warm-up rounds, {torch.get_num_threads()} torch thread(s)")
    lines += ["", "Activation memory factor (exact / mode; peak = saved + checkpoint recompute) and step "
              "time ratio (mode / exact):", ""]
    by_network: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_network.setdefault(row.network, {})[row.mode] = row
    columns = ["network", "input", "exact"] + [f"{mode}" for mode in modes[1:]]
    table = []
    for network, found in by_network.items():
        exact = found["exact"]
        cells = [network, exact.input, report.format_bytes(exact.peak)]
        for mode in modes[1:]:
            row = found[mode]
            cells.append(f"{row.memory_factor:.2f}x, {row.time_ratio:.2f}x time")
        table.append(cells)
    lines += report.markdown_table(columns, table)
    above = [f"{row.network} ({row.mode})" for row in rows if row.peak > row.exact_peak]
    lines += ["", "Above exact in any mode: " + (", ".join(above) if above else "none") + "."]
    declined = [f"{row.network} ({row.mode})" for row in rows if row.declined]
    if declined:
        lines += ["Checkpointing declined (its kept bytes plus recomputation would not be below the same model "
                  "without it, so no segment was installed): " + ", ".join(declined) + "."]
    mismatched = [f"{row.network} ({row.mode}: {row.saved} vs {row.kept})" for row in rows
                  if row.kept is not None and row.saved != row.kept]
    lines += ["Saved-tensor hooks and the graph walk agree in every mode without checkpointing."
              if not mismatched else "Hooks and graph walk disagree: " + ", ".join(mismatched) + "."]
    lines += ["", "Bytes per mode (saved / recompute / kept by graph walk, MiB) and median step ms:", ""]
    lines += report.markdown_table(
        ["network", "mode", "saved", "recompute", "kept", "step ms"],
        [[row.network, row.mode, f"{row.saved / 2**20:.2f}", f"{row.recompute / 2**20:.2f}",
          "n/a" if row.kept is None else f"{row.kept / 2**20:.2f}", f"{row.step_ms:.1f}"] for row in rows])
    return "\n".join(lines) + "\n"


def figure(rows: list[Row], path: Path) -> Path:
    plt = report.pyplot()
    networks = list(dict.fromkeys(row.network for row in rows))
    modes = list(dict.fromkeys(row.mode for row in rows))[1:]
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(networks)), 4.5))
    width = 0.8 / max(len(modes), 1)
    for index, mode in enumerate(modes):
        factors = [next((row.memory_factor for row in rows if row.network == n and row.mode == mode), 0) for n in networks]
        ax.bar([i + index * width for i in range(len(networks))], factors, width, label=mode)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(networks))], networks, rotation=30, ha="right")
    ax.set_ylabel("activation memory factor (exact / mode)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return report.save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"comma-separated, from: {', '.join(NETWORKS)}")
    parser.add_argument("--modes", default=",".join(mode.name for mode in MODES),
                        help="comma-separated mode names (exact is always measured)")
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--batch", type=int, default=None, help="override every network's batch")
    parser.add_argument("--size", type=int, default=None, help="override every network's image side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="writes <out>.md, .csv, .png")
    args = parser.parse_args(argv)
    args.networks = [name for name in args.networks.split(",") if name]
    unknown = [name for name in args.networks if name not in NETWORKS]
    if unknown:
        parser.error(f"--networks={unknown[0]}: not a network; choose from {', '.join(NETWORKS)}")
    names = [mode.name for mode in MODES]
    args.modes = ["exact", *[mode for mode in args.modes.split(",") if mode and mode != "exact"]]
    bad = [mode for mode in args.modes if mode not in names]
    if bad:
        parser.error(f"--modes={bad[0]}: not a mode; choose from {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = report.command_line("network_memory.py", argv)
    rows = []
    for name in args.networks:
        rows += measure(name, NETWORKS[name](), args)
        print(f"  {name} done", file=sys.stderr, flush=True)
    text = markdown(rows, args, command)
    print(text)
    if args.out:
        report.write_text(args.out.with_suffix(".md"), text)
        report.write_text(args.out.with_suffix(".csv"), report.csv_text(COLUMNS, [row.values() for row in rows]))
        figure(rows, args.out.with_suffix(".png"))
    return rows
