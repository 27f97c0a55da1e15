"""Layer-by-layer activation memory of torchvision networks: exact vs XConv vs XConv + 1-bit ReLU.

The paper's Fig 7 (squeezenet1_0, squeezenet1_1, resnet18, resnet50; input 4x3x224x224;
r=16, "independent" = our channel probes; exact vs XConv + BitReLU). The paper traced
NVML memory in per-module hooks on a GPU; here every layer is charged the bytes autograd
saves for backward while it runs (``xconv.memory.SavedTensorMeter(model)``: each storage
once, parameters excluded, innermost module), which is exact and device-independent.
The three modes and the conversion are those of ``scripts/memory_by_kind.py`` (imported):
``exact``, ``xconv`` (convs only) and ``xconv + 1-bit ReLU`` (``relu=True``, the paper's
mode "all"), each on a fresh model with the same seed.

Writes ``<out>.md`` (totals by layer kind per network, per-layer tables folded),
``<out>.csv`` (one row per layer and network) and ``<out>.png`` (cumulative saved bytes
against the layer index in forward order, one panel per network, one line per mode).

    python scripts/layer_memory.py --out results/layer_memory   # the paper's setting, ~10 s
    python scripts/layer_memory.py --networks resnet18 --batch 1 --size 64 --probes 4
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torchvision

import xconv
from xconv.memory import SavedTensorMeter

from . import report
from .bench_layers import str_list
from .memory_by_kind import MODES, kind_name, meters_by_mode

NETWORKS = ["squeezenet1_0", "squeezenet1_1", "resnet18", "resnet50"]
CSV_COLUMNS = ["network", "index", "module", "kind"] + \
              [f"{mode} bytes" for mode in MODES] + [f"{mode} cumulative bytes" for mode in MODES]


@dataclass
class Layer:
    """One module of a network in forward order and what each mode saved while it ran."""

    index: int
    name: str
    kind: str
    saved: dict[str, int]  # mode -> bytes


def layers_in_forward_order(meters: dict[str, SavedTensorMeter], leaf_names: set[str]) -> list[Layer]:
    """Leaf modules in the order they first ran (the same in every mode), plus any container
    module that saved something itself (functional ops inside its ``forward``)."""
    reference = meters["exact"]
    names = [name for name in reference.call_order
             if name in leaf_names or any(meter.bytes_by_module.get(name, 0) for meter in meters.values())]
    for mode, meter in meters.items():  # every byte is charged to a listed layer
        unlisted = set(meter.bytes_by_module) - set(names)
        if unlisted:
            raise RuntimeError(f"mode {mode!r}: bytes saved outside the listed layers: {sorted(unlisted)}")
    return [Layer(index, name, "", {mode: meter.bytes_by_module.get(name, 0) for mode, meter in meters.items()})
            for index, name in enumerate(names)]


def network_layers(network: str, batch: int, size: int, probes: int, probe: str) -> list[Layer]:
    meters = meters_by_mode(network, batch, size, probes, probe)
    model = getattr(torchvision.models, network)(num_classes=10)  # only for names and kinds
    modules = dict(model.named_modules())
    leaf_names = {name for name, module in modules.items() if not list(module.children())}
    layers = layers_in_forward_order(meters, leaf_names)
    for layer in layers:
        layer.kind = kind_name(type(modules[layer.name]).__name__) if layer.name in modules else layer.name
    return layers


def cumulative(layers: list[Layer], mode: str) -> list[int]:
    total, out = 0, []
    for layer in layers:
        total += layer.saved[mode]
        out.append(total)
    return out


def totals_by_kind(layers: list[Layer]) -> dict[str, dict[str, int]]:
    """{kind: {mode: bytes}}, kinds ordered by exact bytes (largest first)."""
    kinds: dict[str, dict[str, int]] = {}
    for layer in layers:
        row = kinds.setdefault(layer.kind, {mode: 0 for mode in MODES})
        for mode in MODES:
            row[mode] += layer.saved[mode]
    return dict(sorted(kinds.items(), key=lambda item: -item[1]["exact"]))


# Report ------------------------------------------------------------------------
def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def network_section(network: str, layers: list[Layer]) -> list[str]:
    kinds = totals_by_kind(layers)
    totals = {mode: sum(layer.saved[mode] for layer in layers) for mode in MODES}
    rows = [[kind] + [mib(row[mode]) for mode in MODES] for kind, row in kinds.items()]
    rows.append(["**total**"] + [f"**{mib(totals[mode])}**" for mode in MODES])
    rows.append(["factor vs exact"] + [f"{totals['exact'] / totals[mode]:.2f}x" for mode in MODES])
    lines = ["", f"## {network}", ""] + report.markdown_table(
        ["layer kind"] + [f"{mode} (MiB)" for mode in MODES], rows)
    per_layer = [[layer.index, f"`{layer.name}`", layer.kind] + [mib(layer.saved[mode]) for mode in MODES]
                 for layer in layers]
    lines += ["", f"<details><summary>{network}: saved MiB per layer in forward order "
                  f"({len(layers)} layers)</summary>", ""]
    lines += report.markdown_table(["index", "module", "kind"] + [f"{mode} (MiB)" for mode in MODES], per_layer)
    return lines + ["", "</details>"]


def csv_rows(results: dict[str, list[Layer]]) -> list[list]:
    rows = []
    for network, layers in results.items():
        sums = {mode: cumulative(layers, mode) for mode in MODES}
        for position, layer in enumerate(layers):
            rows.append([network, layer.index, layer.name, layer.kind] + [layer.saved[mode] for mode in MODES]
                        + [sums[mode][position] for mode in MODES])
    return rows


def figure(results: dict[str, list[Layer]], title: str):
    plt = report.pyplot()
    columns = min(2, len(results))
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for axis, (network, layers) in zip(axes.flat, results.items()):
        for mode, style in zip(MODES, ["-", "--", ":"]):
            axis.plot([layer.index for layer in layers], [b / 2**20 for b in cumulative(layers, mode)],
                      style, label=mode)
        axis.set_title(network)
        axis.set_xlabel("layer index (forward order)")
        axis.set_ylabel("cumulative saved for backward (MiB)")
        axis.grid(alpha=0.3)
        axis.legend()
    for axis in list(axes.flat)[len(results):]:
        axis.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, list[Layer]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=str_list, default=NETWORKS,
                        help=f"comma-separated torchvision models (default: {','.join(NETWORKS)})")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--probe", default="channel", choices=xconv.PROBE_KINDS)
    parser.add_argument("--out", type=Path, default=None,
                        help="write <out>.md, <out>.csv and <out>.png (e.g. results/layer_memory)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.networks if not hasattr(torchvision.models, name)]
    if unknown:
        parser.error(f"--networks: unknown torchvision model(s) {unknown}; e.g. {','.join(NETWORKS)}")
    command = report.command_line("layer_memory.py", argv)
    results = {network: network_layers(network, args.batch, args.size, args.probes, args.probe)
               for network in args.networks}

    title = (f"Saved-for-backward bytes per layer, batch {args.batch} at {args.size}x{args.size}, "
             f"r={args.probes} ({args.probe} probes)")
    scale = ("one training-mode forward per network and mode, random init, num_classes=10; bytes saved "
             "for backward are device-independent; layers whose sketch would not be smaller than their "
             "input stay exact (`convert(..., example_input=...)`)")
    lines = report.provenance(title, command, scale)
    lines += ["Totals per network (MiB):", ""]
    lines += report.markdown_table(
        ["network"] + [f"{mode} (MiB)" for mode in MODES] + [f"{mode} factor" for mode in list(MODES)[1:]],
        [[network] + [mib(sum(layer.saved[mode] for layer in layers)) for mode in MODES]
         + [f"{sum(layer.saved['exact'] for layer in layers) / sum(layer.saved[mode] for layer in layers):.2f}x"
            for mode in list(MODES)[1:]]
         for network, layers in results.items()])
    for network, layers in results.items():
        lines += network_section(network, layers)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        report.write_text(args.out.with_suffix(".md"), text)
        report.write_text(args.out.with_suffix(".csv"), report.csv_text(CSV_COLUMNS, csv_rows(results)))
        report.save_figure(figure(results, title), args.out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
