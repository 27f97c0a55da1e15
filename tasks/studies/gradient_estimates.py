"""Per-weight XConv gradient estimates and gradient std vs batch size on the paper's CIFAR conv net.

Two studies of the paper's Fig. 3 on ``xconv_harness.models.classification.CifarNet``
(four 5x5 convs, weights from seed 17):

* estimates (Fig. 3a): the exact gradients of ``--subbatches`` random
  sub-batches of ``--batch / 2.5`` samples drawn from one batch of ``--batch``
  give a 99% band (mean +- 2.576 std per weight); one XConv estimate per probe
  kind on the whole batch (the batch XConv fits in the same memory, the paper's
  factor 2.5) is compared with it. The figure shows the first ``2 * --entries``
  weights, every second one, of conv1-4; the table counts the weights inside the
  band (plotted ones and all) and the relative error against the exact gradient
  of the whole batch.
* std vs batch size (Fig. 3b): for every batch size and r (0 = exact, channel
  probes), the gradients of ``--minibatches`` fixed minibatches; per conv layer
  the standard deviation of each weight's gradient over the minibatches,
  root-mean-square over the layer's weights.

Data: CIFAR-10 is not on this machine, so ``--data photos`` (default) uses
random 32x32 crops (with random horizontal flips) of ten scikit-image
photographs resized to a shorter side of 64 px, normalised with CIFAR-10's mean
and std, labelled by the photograph they come from; ``--data gaussian`` uses
N(0, 1) images with random labels.

Run from the repository root::

    python scripts/gradient_estimates.py                     # default scale, ~7 min on one thread
    python scripts/gradient_estimates.py --batch 40 --subbatches 8 --probes 64 --channel-probes 16 \\
        --std-batches 8,16 --std-probes 0,2 --minibatches 4 --out /tmp/est
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import xconv

from . import gradient_study as gs
from . import report

from xconv_harness.models.classification import CifarNet

TITLE = "CIFAR conv net: XConv gradient estimates vs exact minibatch bands, gradient std vs batch size"
SEED = 17
BAND_Z = 2.576  # 99% two-sided normal quantile
MEMORY_FACTOR = 2.5  # the paper's sub-batch size is batch / 2.5
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "immunohistochemistry",
          "hubble_deep_field", "retina")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
ESTIMATE_COLUMNS = ["layer", "gradient", "r", "in 99% band (plotted)", "in 99% band (all weights)",
                    "relative error vs exact full batch"]
STD_COLUMNS = ["batch", "r", "conv1 std", "conv2 std", "conv3 std", "conv4 std"]


# Data ------------------------------------------------------------------------
class PhotoCrops:
    """Random crops of scikit-image photographs; the label is the photograph's index."""

    def __init__(self, shorter_side: int = 64, crop: int = 32):
        import skimage.data
        from PIL import Image

        self.crop = crop
        self.photos = []
        for name in PHOTOS:
            photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            scale = shorter_side / min(photo.size)
            photo = photo.resize((max(crop, round(photo.size[0] * scale)),
                                  max(crop, round(photo.size[1] * scale))), Image.LANCZOS)
            array = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
            mean, std = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
            self.photos.append((array - mean) / std)

    def __call__(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, len(self.photos), (count,), generator=generator)
        images = torch.empty(count, 3, self.crop, self.crop)
        for index, label in enumerate(labels.tolist()):
            photo = self.photos[label]
            top = int(torch.randint(0, photo.shape[1] - self.crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, photo.shape[2] - self.crop + 1, (1,), generator=generator))
            image = photo[:, top:top + self.crop, left:left + self.crop]
            images[index] = image.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else image
        return images, labels


def gaussian_images(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(count, 3, 32, 32, generator=generator)
    return images, torch.randint(0, 10, (count,), generator=generator)


def data_source(name: str):
    if name == "photos":
        return PhotoCrops()
    if name == "gaussian":
        return gaussian_images
    raise ValueError(f"--data={name!r}: must be 'photos' or 'gaussian'")


# Gradients -------------------------------------------------------------------
def conv_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy with respect to the four conv weights."""
    weights = gs.conv_weights(model)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return [weight.grad.detach().clone() for weight in weights]


def converted(model: nn.Module, probes: int, kind: str = "channel") -> nn.Module:
    """A converted copy whose layers always sketch (``fallback=False``): the study shows the estimates
    themselves, also in layers whose sketch is no smaller than their input."""
    if not probes:
        return model
    model = xconv.convert(copy.deepcopy(model), probes=probes, probe=kind)
    for _, layer in xconv.xconv_layers(model):
        layer.fallback = False
    return model


def build_net() -> nn.Module:
    torch.manual_seed(SEED)
    return CifarNet(in_channels=3, num_classes=10, image_size=32)


# Fig. 3a: estimates against the exact band -------------------------------------
def estimates_study(model, source, args):
    """Exact sub-batch band, exact full-batch gradient and one XConv estimate per kind."""
    generator = torch.Generator().manual_seed(SEED)
    images, labels = source(args.batch, generator)
    sub = int(args.batch // MEMORY_FACTOR)
    per_layer = [[] for _ in gs.conv_weights(model)]
    for _ in range(args.subbatches):
        index = torch.randperm(args.batch, generator=generator)[:sub]
        for store, grad in zip(per_layer, conv_gradients(model, images[index], labels[index])):
            store.append(grad.flatten().double())
    stacked = [torch.stack(store) for store in per_layer]  # (subbatches, weights) per layer
    band_mean = [s.mean(0) for s in stacked]
    band_std = [s.std(0) for s in stacked]
    exact = [g.flatten().double() for g in conv_gradients(model, images, labels)]
    estimates = {}
    for kind in args.kinds:
        probes = args.channel_probes if kind == "channel" else args.probes
        xconv.manual_seed(SEED)
        grads = conv_gradients(converted(model, probes, kind), images, labels)
        estimates[kind] = (probes, [g.flatten().double() for g in grads])
    return sub, band_mean, band_std, exact, estimates


def estimate_rows(band_mean, band_std, exact, estimates, entries: int) -> list[list]:
    rows = []
    for layer in range(len(exact)):
        low, high = band_mean[layer] - BAND_Z * band_std[layer], band_mean[layer] + BAND_Z * band_std[layer]
        plotted = slice(0, 2 * entries, 2)
        for kind, (probes, grads) in estimates.items():
            g = grads[layer]
            inside = (g >= low) & (g <= high)
            rel = ((g - exact[layer]).norm() / exact[layer].norm()).item()
            rows.append([f"conv{layer + 1}", f"xconv {kind}", probes, inside[plotted].double().mean().item(),
                         inside.double().mean().item(), rel])
        inside = (exact[layer] >= low) & (exact[layer] <= high)
        rows.append([f"conv{layer + 1}", "exact full batch", 0, inside[plotted].double().mean().item(),
                     inside.double().mean().item(), 0.0])
    return rows


def estimates_figure(band_mean, band_std, estimates, entries: int, sub: int, batch: int, path: Path):
    plt = report.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    plotted = slice(0, 2 * entries, 2)
    for layer, ax in enumerate(axes.flat):
        mean, std = band_mean[layer][plotted].numpy(), band_std[layer][plotted].numpy()
        x = np.arange(len(mean))
        ax.fill_between(x, mean - BAND_Z * std, mean + BAND_Z * std, color="#6e6e6e", alpha=0.4,
                        label=f"99% band, exact b={sub}")
        ax.plot(x, mean, "k", linewidth=2, label="mean exact")
        for kind, (probes, grads) in estimates.items():
            ax.plot(x, grads[layer][plotted].numpy(), alpha=0.8, linewidth=1.5, label=f"{kind} r={probes}")
        ax.set_title(f"conv{layer + 1}")
        ax.set_xticks([])
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"XConv estimates on b={batch} vs the exact gradients of b={sub} sub-batches "
                 f"(first {entries} weights, every second)")
    fig.tight_layout()
    report.save_figure(fig, path)


# Fig. 3b: std vs batch size ----------------------------------------------------
def std_study(model, source, args) -> list[list]:
    """RMS over weights of the per-weight std over minibatches, per conv layer, per (batch, r)."""
    rows = []
    for batch in args.std_batches:
        generator = torch.Generator().manual_seed(SEED + batch)
        data = [source(batch, generator) for _ in range(args.minibatches)]
        for probes in args.std_probes:
            net = converted(model, probes)
            xconv.manual_seed(SEED)
            grads = [conv_gradients(net, images, labels) for images, labels in data]
            stds = [torch.stack([g[layer].double() for g in grads]).var(0).mean().sqrt().item()
                    for layer in range(len(grads[0]))]
            rows.append([batch, probes] + stds)
            print(f"  std: batch {batch} r={probes}: " + " ".join(f"{s:.3g}" for s in stds), flush=True)
    return rows


def std_figure(rows: list[list], batches: list[int], probes: list[int], path: Path):
    plt = report.pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    width = 0.8 / len(probes)
    for layer, ax in enumerate(axes.flat):
        for index, r in enumerate(probes):
            values = [next(row[2 + layer] for row in rows if row[0] == b and row[1] == r) for b in batches]
            ax.bar(np.arange(len(batches)) + (index - (len(probes) - 1) / 2) * width, values, width=width,
                   label="exact" if r == 0 else f"r={r}")
        ax.set_xticks(np.arange(len(batches)))
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("gradient std (RMS over weights)")
        ax.set_title(f"conv{layer + 1}")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Std of the conv weight gradients over minibatches (channel probes)")
    fig.tight_layout()
    report.save_figure(fig, path)


# Command line and report ---------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="photos", choices=["photos", "gaussian"])
    parser.add_argument("--batch", type=int, default=320, help="Fig. 3a batch (sub-batches: batch / 2.5)")
    parser.add_argument("--subbatches", type=int, default=100, help="exact sub-batches for the 99%% band")
    parser.add_argument("--probes", type=int, default=2048,
                        help="r of the gaussian/rademacher/orthogonal estimates")
    parser.add_argument("--channel-probes", type=int, default=256, help="r of the channel estimate")
    parser.add_argument("--kinds", type=gs.str_list, default=list(xconv.PROBE_KINDS))
    parser.add_argument("--entries", type=int, default=100, help="weights plotted per layer")
    parser.add_argument("--std-batches", type=gs.int_list, default=[64, 128, 256, 1024])
    parser.add_argument("--std-probes", type=gs.int_list, default=[0, 2, 8, 32], help="0 = exact")
    parser.add_argument("--minibatches", type=int, default=12, help="minibatches per (batch, r) for the std")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/gradient_estimates"),
                        help="output stem: STEM.md, STEM_estimates.csv, STEM_std.csv, STEM_estimates.png, "
                             "STEM_std.png")
    args = parser.parse_args(argv)
    for kind in args.kinds:
        if kind not in xconv.PROBE_KINDS:
            parser.error(f"--kinds: {kind!r} is not a probe kind; allowed {', '.join(xconv.PROBE_KINDS)}")
    if int(args.batch // MEMORY_FACTOR) < 2:
        parser.error(f"--batch={args.batch}: must be at least 5 (sub-batches of batch / 2.5 >= 2 samples)")
    if args.subbatches < 2 or args.minibatches < 2:
        parser.error(f"--subbatches={args.subbatches}, --minibatches={args.minibatches}: need >= 2 for a std")
    if min(args.std_probes) < 0 or min(args.std_batches) < 1:
        parser.error(f"--std-probes={args.std_probes} must be >= 0 and --std-batches={args.std_batches} >= 1")
    return args


def fmt(rows: list[list], formats: list[str]) -> list[list[str]]:
    return [[format(value, spec) for value, spec in zip(row, formats)] for row in rows]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = report.command_line("gradient_estimates.py", argv)
    data_text = ("random 32x32 crops of ten scikit-image photographs (label = photograph), CIFAR-10 "
                 "normalisation" if args.data == "photos" else "N(0,1) images with random labels")
    scale = (f"CifarNet (seed {SEED}); data: {data_text}. Estimates: batch {args.batch}, "
             f"{args.subbatches} exact sub-batches of {int(args.batch // MEMORY_FACTOR)}, r={args.probes} "
             f"(channel r={args.channel_probes}). Std: batches {args.std_batches}, r {args.std_probes} "
             f"(channel probes), {args.minibatches} minibatches each")
    head = report.provenance(TITLE, command, scale)
    print("\n".join(head), flush=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    source = data_source(args.data)
    model = build_net()
    sub, band_mean, band_std, exact, estimates = estimates_study(model, source, args)
    est_rows = estimate_rows(band_mean, band_std, exact, estimates, args.entries)
    std_rows = std_study(model, source, args)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    stem = args.out
    lines = head + [
        "## Estimates (the paper's Fig. 3a)", "",
        f"One XConv estimate per probe kind on a batch of {args.batch} against the 99% band "
        f"(mean +- {BAND_Z} std per weight) of exact gradients of {args.subbatches} random sub-batches of "
        f"{sub} drawn from it. 'in 99% band' = fraction of weights inside the band (plotted: the first "
        f"{args.entries} weights, every second, as in the figure); relative error = ||estimate - exact|| / "
        f"||exact|| with the exact gradient of the whole batch. The exact full-batch row shows where the "
        f"exact gradient of the larger batch itself falls.", "",
        f"![estimates]({stem.name}_estimates.png)", ""] + \
        report.markdown_table(ESTIMATE_COLUMNS, fmt(est_rows, ["", "", "d", ".2f", ".3f", ".3f"])) + [
        "", "## Gradient std vs batch size (the paper's Fig. 3b)", "",
        f"Per conv layer: standard deviation of each weight's gradient (mean loss) over "
        f"{args.minibatches} fixed minibatches, root-mean-square over the layer's weights; r = 0 is exact, "
        f"otherwise channel probes. (The paper's code pools all entries of all minibatches into one std; "
        f"this per-weight std measures the noise only.)", "",
        f"![std]({stem.name}_std.png)", ""] + \
        report.markdown_table(STD_COLUMNS, fmt(std_rows, ["d", "d", ".4g", ".4g", ".4g", ".4g"])) + [
        "", f"Wall time: {seconds:.0f} s (CPU time of this process: {cpu_seconds:.0f} s).", ""]
    text = "\n".join(lines)
    print(text[len("\n".join(head)):], flush=True)
    report.write_text(stem.with_suffix(".md"), text)
    report.write_text(stem.parent / (stem.name + "_estimates.csv"),
                      report.csv_text([c.replace(" ", "_") for c in ESTIMATE_COLUMNS], est_rows))
    report.write_text(stem.parent / (stem.name + "_std.csv"),
                      report.csv_text([c.replace(" ", "_") for c in STD_COLUMNS], std_rows))
    estimates_figure(band_mean, band_std, estimates, args.entries, sub, args.batch,
                     stem.parent / (stem.name + "_estimates.png"))
    std_figure(std_rows, args.std_batches, args.std_probes, stem.parent / (stem.name + "_std.png"))
    return {"estimates": est_rows, "std": std_rows}


if __name__ == "__main__":
    main()
