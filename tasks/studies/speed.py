"""Forward + backward time, XConv vs exact: one conv layer over a grid, and every task model.

The paper's runtime figures (Figs 11/12, 29/30): fwd+bwd of one 3x3 conv (padding 1, no
bias, C_in = C_out = C) for ``nn.Conv2d`` against XConv at batch {32..256}, r {4..256},
C {3, 64, 128, 256}, image side {16..128} (its GPU sweep: N up to 1024). Here, on a CPU:

* layers: the exact layer and one XConv2d per r (same weights; ``bench_layers.make_layers``)
  step in turn in the same loop (``timing.median_times_ms``: the order rotates every
  repeat), median of ``--repeats`` steps after ``--warmup``. A step is ``layer(x)`` then
  ``.backward(grad)`` with a fixed random ``grad``; by default ``x`` requires a gradient
  (as every layer but the first inside a network; ``--no-input-grad`` times the weight
  gradient alone, like the paper's ``c(X).mean()`` on a plain tensor).
* models: each task model at its default task input (read from ``conf/``: the task's
  data and model configs, no Hydra): MnistNet and CifarNet (classification), DiffusionUNet
  (generative, ``conf/model/ddpm_unet.yaml``, random timesteps), SkipNet (superres: one
  noise image), smp_unet (segmentation). Every conv is converted (``exact_layers`` of the
  model config stay exact), ReLUs stay exact; the exact model and one XConv copy per r
  with the same weights step in turn as above.

The full layer grid is far too slow on one CPU thread, so by default cases whose exact
fwd+bwd needs more than ``--max-gflop`` (3 x 2 B C^2 9 N^2 FLOP) are left out and listed.
Full grid: ``--sizes 16,32,64,128 --batches 32,64,128,256 --probes 4,8,16,32,64,128,256
--max-gflop 0``.

Writes ``<out>.md`` (time ratio xconv/exact per r for every case), ``<out>.csv`` (long
form: every time) and ``<out>.png`` (time ratio against r: one panel per channel count,
one line per image size and batch, and a panel of the task models).

    python scripts/speed.py --out results/speed             # default subset, < 10 min on 1 thread
    python scripts/speed.py --channels 8 --sizes 8 --batches 4 --probes 2 --models MnistNet --repeats 1
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from omegaconf import OmegaConf

import xconv

from ..config_files import config_file

from . import report
from .bench_layers import int_list, make_layers, str_list
from .timing import backward_step, median_times_ms

# Task models: (task config, model config or None = the task's, data config or None = the task's).
MODEL_SPECS = {
    "MnistNet": ("classification", None, None),
    "CifarNet": ("classification", "cifar_net", "cifar10"),
    "DiffusionUNet": ("generative", None, None),
    "SkipNet": ("superres", None, None),
    "smp_unet": ("segmentation", None, None),
}


@dataclass
class Case:
    """One layer shape or one model, timed exact and at every r."""

    name: str  # "layer" or the model's name
    input: str  # input shape, e.g. "32x64x16x16"
    channels: int | None
    size: int
    batch: int
    exact_ms: float
    xconv_ms: dict[int, float] = field(default_factory=dict)  # r -> ms

    def ratio(self, r: int) -> float:
        return self.xconv_ms[r] / self.exact_ms


# Command line ------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int_list, default=[3, 64, 128, 256])
    parser.add_argument("--sizes", type=int_list, default=[16, 32, 64], help="image sides N (N x N)")
    parser.add_argument("--batches", type=int_list, default=[32, 128])
    parser.add_argument("--probes", type=int_list, default=[4, 16, 64, 256])
    parser.add_argument("--probe", default="channel", choices=xconv.PROBE_KINDS)
    parser.add_argument("--max-gflop", type=float, default=120.0,
                        help="leave out layer cases whose exact fwd+bwd exceeds this (0 = no limit)")
    parser.add_argument("--no-input-grad", dest="input_grad", action="store_false",
                        help="layer input does not require grad (weight gradient only, as the paper)")
    parser.add_argument("--models", type=str_list, default=list(MODEL_SPECS),
                        help=f"task models to time ('' for none): {','.join(MODEL_SPECS)}")
    parser.add_argument("--model-probes", type=int_list, default=None, help="r for the models (default --probes)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="more timed steps (up to 100) until every variant has run this long")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md, <out>.csv and <out>.png")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODEL_SPECS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; allowed: {','.join(MODEL_SPECS)}")
    for key in ("channels", "sizes", "batches", "probes"):
        values = getattr(args, key)
        if not values or min(values) < 1:
            parser.error(f"--{key}={values}: need a non-empty list of integers >= 1")
    if args.model_probes is None:
        args.model_probes = args.probes
    return args


# Layers --------------------------------------------------------------------------------
def exact_gflop(channels: int, size: int, batch: int) -> float:
    """Forward + input gradient + weight gradient of a 3x3 C->C conv: 3 x 2 B C^2 9 N^2 FLOP."""
    return 3 * 2 * batch * channels**2 * 9 * size**2 / 1e9


def layer_case(channels: int, size: int, batch: int, args, device) -> Case:
    torch.manual_seed(0)
    layers = make_layers(channels, [args.probe], args.probes, device)  # exact + one XConv2d per r
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=args.input_grad)
    grad = torch.randn(batch, channels, size, size, device=device)
    leaf = x if args.input_grad else None
    steps = {("exact" if key == "exact" else key[1]): backward_step(layer, (x,), grad, leaf)
             for key, layer in layers.items()}
    times = median_times_ms(steps, args.repeats, args.warmup, device, args.min_seconds)
    return Case("layer", f"{batch}x{channels}x{size}x{size}", channels, size, batch, times.pop("exact"), times)


# Models --------------------------------------------------------------------------------
def task_config(task: str, model: str | None = None, data: str | None = None) -> dict:
    """The task's data and model configs from ``conf/`` (the task file's ``defaults`` unless
    overridden, then the task file's own ``data``/``model`` keys), interpolations resolved."""
    task_conf = OmegaConf.load(config_file("task", task))
    defaults = {}
    for entry in task_conf.get("defaults", []):
        if isinstance(entry, str):
            continue
        (group, name), = dict(entry).items()
        defaults[group.lstrip("/").split("@")[0]] = name
    data, model = data or defaults["data"], model or defaults["model"]
    composed = OmegaConf.merge(
        {"seed": 0, "data": OmegaConf.load(config_file("data", data)),
         "model": OmegaConf.load(config_file("model", model))},
        {key: task_conf[key] for key in ("data", "model", "task") if key in task_conf})
    return OmegaConf.to_container(composed, resolve=True)


def build_model(model_config: dict) -> nn.Module:
    """Instantiate ``_target_`` with the config's constructor arguments, as a run does."""
    from xconv_harness.config_nodes import instantiate

    return instantiate(model_config)


def model_inputs(name: str, config: dict, device) -> tuple:
    """The model's inputs at its task's default size (batch = the task's training batch)."""
    data, model = config["data"], config["model"]
    batch, size = data["batch_size"], data["image_size"]
    generator = torch.Generator().manual_seed(0)
    if name == "SkipNet":  # DIP's input: one noise image of model.in_channels
        return (torch.rand(batch, model["in_channels"], size, size, generator=generator).to(device) * 0.1,)
    x = torch.randn(batch, data["channels"], size, size, generator=generator).to(device)
    if name == "DiffusionUNet":
        timesteps = config["task"]["timesteps"]
        return x, torch.randint(0, timesteps, (batch,), generator=generator).to(device)
    return (x,)


def model_case(name: str, args, device) -> Case:
    config = task_config(*MODEL_SPECS[name])
    torch.manual_seed(0)
    exact = build_model(config["model"]).to(device).train()
    inputs = model_inputs(name, config, device)
    variants = {"exact": exact}
    for r in args.model_probes:
        variants[r] = xconv.convert(copy.deepcopy(exact), probes=r, probe=args.probe,
                                    skip=list(config["model"].get("exact_layers") or []))
    grad = torch.randn_like(exact(*inputs))
    steps = {key: backward_step(model, inputs, grad) for key, model in variants.items()}
    times = median_times_ms(steps, args.repeats, args.warmup, device, args.min_seconds)
    shape = "x".join(str(n) for n in inputs[0].shape)
    return Case(name, shape, None, inputs[0].shape[-1], inputs[0].shape[0], times.pop("exact"), times)


# Report ----------------------------------------------------------------------------------
def ratio_columns(probes: list[int]) -> list[str]:
    return [f"ratio r={r}" for r in probes]


def layer_table(cases: list[Case], probes: list[int]) -> list[str]:
    columns = ["C", "HxW", "B", "exact ms"] + ratio_columns(probes)
    rows = [[c.channels, f"{c.size}x{c.size}", c.batch, f"{c.exact_ms:.2f}"] + [f"{c.ratio(r):.3g}" for r in probes]
            for c in cases]
    return report.markdown_table(columns, rows)


def model_table(cases: list[Case], probes: list[int]) -> list[str]:
    columns = ["model", "input", "exact ms"] + ratio_columns(probes)
    rows = [[c.name, c.input, f"{c.exact_ms:.1f}"] + [f"{c.ratio(r):.3g}" for r in probes] for c in cases]
    return report.markdown_table(columns, rows)


CSV_COLUMNS = ["case", "input", "C", "N", "B", "probe", "r", "exact_ms", "xconv_ms", "time_ratio"]


def csv_rows(cases: list[Case], probe: str) -> list[list]:
    return [[c.name, c.input, c.channels if c.channels is not None else "", c.size, c.batch, probe, r,
             f"{c.exact_ms:.6g}", f"{ms:.6g}", f"{c.ratio(r):.6g}"]
            for c in cases for r, ms in c.xconv_ms.items()]


def summary(layer_cases: list[Case], model_cases: list[Case], probes: list[int], model_probes: list[int]) -> list[str]:
    lines = ["", "Median time ratio xconv/exact per r (< 1: XConv faster):"]
    if layer_cases:
        lines.append("- layers: " + ", ".join(
            f"r={r}: {statistics.median(c.ratio(r) for c in layer_cases):.2f}" for r in probes))
        for r in probes:
            small = [c.ratio(r) for c in layer_cases if r <= c.batch / 8]
            if small:
                lines.append(f"  - r={r}, rows with r <= B/8: XConv not slower in "
                             f"{sum(x <= 1.0 for x in small)}/{len(small)}")
    for case in model_cases:
        lines.append(f"- {case.name}: " + ", ".join(f"r={r}: {case.ratio(r):.2f}" for r in model_probes))
    return lines


def figure(layer_cases: list[Case], model_cases: list[Case], title: str):
    plt = report.pyplot()
    from matplotlib import ticker

    channel_counts = list(dict.fromkeys(c.channels for c in layer_cases))
    panels = len(channel_counts) + (1 if model_cases else 0)
    columns = min(3, max(panels, 1))
    rows = math.ceil(max(panels, 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    flat = list(axes.flat)
    for axis, channels in zip(flat, channel_counts):
        for case in (c for c in layer_cases if c.channels == channels):
            probes = sorted(case.xconv_ms)
            axis.plot(probes, [case.ratio(r) for r in probes], "o-", label=f"{case.size}x{case.size}, B={case.batch}")
        axis.set_title(f"3x3 conv, C={channels}")
    if model_cases:
        axis = flat[len(channel_counts)]
        for case in model_cases:
            probes = sorted(case.xconv_ms)
            axis.plot(probes, [case.ratio(r) for r in probes], "s-", label=f"{case.name} ({case.input})")
        axis.set_title("task models")
    for axis in flat[:panels]:
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=(2.0, 5.0)))  # ..., 0.5, 2, 5, 20, ...
        for formatter in (axis.yaxis.set_major_formatter, axis.yaxis.set_minor_formatter):
            formatter(ticker.FormatStrFormatter("%g"))
        axis.set_xlabel("probes r")
        axis.set_ylabel("time ratio xconv / exact")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    for axis in flat[panels:]:
        axis.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> tuple[list[Case], list[Case]]:
    args = parse_args(argv)
    command = report.command_line("speed.py", argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    grid = [(c, n, b) for c in args.channels for n in args.sizes for b in args.batches]
    kept = [case for case in grid if not args.max_gflop or exact_gflop(*case) <= args.max_gflop]
    left_out = [case for case in grid if case not in kept]
    layer_cases = []
    for channels, size, batch in kept:
        layer_cases.append(layer_case(channels, size, batch, args, device))
        print(f"  layer C={channels} {size}x{size} B={batch}", file=sys.stderr, flush=True)
    model_cases = []
    for name in args.models:
        model_cases.append(model_case(name, args, device))
        print(f"  model {name}", file=sys.stderr, flush=True)

    title = f"Forward+backward time, XConv ({args.probe} probes) / exact"
    scale = (f"median of >= {args.repeats} steps (more, up to 100, until a variant has run {args.min_seconds:g} s) "
             f"after {args.warmup} warm-up per variant, variants interleaved; "
             f"layer input requires grad: {args.input_grad}; layer grid C={args.channels}, N={args.sizes}, "
             f"B={args.batches}, r={args.probes}, cases above {args.max_gflop:g} GFLOP left out "
             f"({len(left_out)}: {', '.join(f'C={c} N={n} B={b}' for c, n, b in left_out) or 'none'}); "
             f"models at their task's default input, r={args.model_probes}")
    lines = report.provenance(title, command, scale, device)
    lines += ["Time ratio = XConv ms / exact ms, measured side by side in one run (< 1: XConv faster). "
              "Timings on a shared CPU vary by +-10-20 % between runs.", "", "## One 3x3 conv layer", ""]
    lines += layer_table(layer_cases, args.probes) if layer_cases else ["(no layer cases)"]
    lines += ["", "## Task models (every conv converted, default task input)", ""]
    lines += model_table(model_cases, args.model_probes) if model_cases else ["(no models)"]
    lines += summary(layer_cases, model_cases, args.probes, args.model_probes)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        report.write_text(args.out.with_suffix(".md"), text)
        report.write_text(args.out.with_suffix(".csv"),
                          report.csv_text(CSV_COLUMNS, csv_rows(layer_cases + model_cases, args.probe)))
        report.save_figure(figure(layer_cases, model_cases, title), args.out.with_suffix(".png"))
    return layer_cases, model_cases


if __name__ == "__main__":
    main()
