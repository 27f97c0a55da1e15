"""Activation memory of a torchvision network by layer kind: exact, XConv, and XConv with the savers.

Counts the bytes autograd saves for backward during one training-mode forward
(``xconv.memory.SavedTensorMeter``: each storage once, parameters excluded),
grouped by the kind of layer that saved them. Device-independent and exact. Modes:
exact; XConv convolutions only; + 1-bit ReLUs (the paper's "all" mode); + every lossless
saver (``activations="lossless"``: pools, dropout, clamps); + the compact savers
(``activations="compact"``: norms' x-hat in 8 bits, derivative codes).

    python scripts/memory_by_kind.py                       # resnet18, batch 8 at 224x224, r=16
    python scripts/memory_by_kind.py --model resnet50 --batch 4 --size 224 --out results/memory_by_kind.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision

import xconv
from xconv.memory import SavedTensorMeter

from . import report

MODES = {"exact": dict(probes=0, relu=False), "xconv": dict(relu=False), "xconv + 1-bit ReLU": dict(relu=True),
         "xconv + lossless": dict(relu=False, activations="lossless"),
         "xconv + compact": dict(relu=False, activations="compact")}


def meters_by_mode(model_name: str, batch: int, size: int, probes: int, probe: str) -> dict[str, SavedTensorMeter]:
    """{mode: meter} of one training-mode forward of a fresh model per mode; each meter groups
    the saved bytes by layer kind and by module name."""
    x = torch.randn(batch, 3, size, size)
    results = {}
    for mode, options in MODES.items():
        torch.manual_seed(0)
        model = getattr(torchvision.models, model_name)(num_classes=10)
        xconv.convert(model, probes=options.get("probes", probes), probe=probe, relu=options["relu"],
                      activations=options.get("activations", "exact"), example_input=x[:1])
        with SavedTensorMeter(model) as meter:
            model(x)
        results[mode] = meter
    return results


def saved_by_kind(model_name: str, batch: int, size: int, probes: int, probe: str) -> dict[str, dict[str, int]]:
    """{mode: {layer kind: bytes}} for one forward of a fresh model per mode."""
    return {mode: meter.bytes_by_kind
            for mode, meter in meters_by_mode(model_name, batch, size, probes, probe).items()}


def kind_name(kind: str) -> str:
    """A layer and its converted form are one row: XConv2d is Conv2d, BitReLU is ReLU, LosslessMaxPool2d
    is MaxPool2d, CompactBatchNorm2d is BatchNorm2d."""
    kind = {"XConv2d": "Conv2d", "BitReLU": "ReLU", "BitLeakyReLU": "LeakyReLU"}.get(kind, kind)
    for prefix in ("Lossless", "Compact"):
        kind = kind.removeprefix(prefix)
    return kind


def markdown(results: dict[str, dict[str, int]], command: str, title: str) -> str:
    modes = list(results)
    merged = {mode: {} for mode in modes}
    for mode in modes:
        for kind, nbytes in results[mode].items():
            merged[mode][kind_name(kind)] = merged[mode].get(kind_name(kind), 0) + nbytes
    kinds = sorted({k for m in modes for k in merged[m]}, key=lambda k: -merged["exact"].get(k, 0))
    mib = lambda n: f"{n / 2**20:.2f}"
    lines = report.provenance(title, command, "one training-mode forward (bytes saved for backward are "
                              "device-independent)") + [
             "| layer kind | " + " | ".join(f"{m} (MiB)" for m in modes) + " |", "|---" * (len(modes) + 1) + "|"]
    for kind in kinds:
        lines.append(f"| {kind} | " + " | ".join(mib(merged[m].get(kind, 0)) for m in modes) + " |")
    totals = [sum(merged[m].values()) for m in modes]
    lines.append("| **total** | " + " | ".join(f"**{mib(t)}**" for t in totals) + " |")
    lines.append("| factor vs exact | " + " | ".join(f"{totals[0] / t:.2f}x" for t in totals) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--probe", default="channel", choices=xconv.PROBE_KINDS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    command = report.command_line("memory_by_kind.py", argv)
    title = (f"Saved-for-backward bytes of {args.model}, batch {args.batch} at {args.size}x{args.size}, "
             f"r={args.probes} ({args.probe} probes)")
    text = markdown(saved_by_kind(args.model, args.batch, args.size, args.probes, args.probe),
                    command, title)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
