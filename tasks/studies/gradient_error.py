"""Average gradient error (the paper's Eq. 9) of exact minibatches and XConv, vs the probe count r.

For each network and image size: weights drawn with seed 0, a fixed synthetic
subset of ``--subset`` samples split into fixed minibatches of ``--batch``, the
exact gradient of the whole subset as the reference. The exact minibatch
gradients give the SGD floor; every probe kind at every r in ``--probes`` gives
XConv's error, over ``--runs`` runs (different probe draws, same minibatches),
mean +- sample std. XConv copies are made with ``xconv.convert`` on a deep copy
of the same model (VanillaNet adaptively, as in the paper), with every XConv
layer sketching (``fallback=False``), also where its sketch is no smaller than
its input and a layer would by default compute the exact gradient. See
``scripts/gradient_study.py`` for the networks, data and the exact definitions.

Besides the AGE, the table gives the estimator error alone (XConv vs exact
gradient of the same minibatch); ``AGE_xconv ~= floor + estimator error``, and a
weighted log-log fit of the estimator error against r gives its slope per probe
kind (-1 means "falls like 1/r").

Run from the repository root::

    python scripts/gradient_error.py                       # default scale, ~8 min on one thread
    python scripts/gradient_error.py --networks unet --sizes 16 --subset 16 --batch 4 --probes 2,64
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import xconv

from . import gradient_study as gs
from . import report

TITLE = "Average gradient error (Eq. 9): exact minibatches (SGD floor) vs XConv"
COLUMNS = ["network", "size", "mode", "probe", "r", "runs", "xconv convs", "AGE mean", "AGE std",
           "AGE / floor", "estimator error mean", "estimator error std"]
SLOPE_COLUMNS = ["network", "size", "probe", "slope of estimator error vs r", "s.e. (estimator)",
                 "slope of (AGE - floor) vs r", "s.e. (AGE - floor)", "AGE/floor at smallest r",
                 "AGE/floor at largest r", "r where estimator error = SGD floor (1/r)"]


@dataclass
class Row:
    network: str
    size: int
    probe: str  # "-" for the exact minibatches
    probes: int  # 0 for exact
    convs: int  # convolutions XConv estimates
    total_convs: int
    floor: float
    ages: list[float] = field(default_factory=list)
    estimator: list[float] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "exact" if self.probes == 0 else "xconv"

    @property
    def age(self) -> tuple[float, float]:
        return gs.mean_std(self.ages)

    @property
    def estimator_error(self) -> tuple[float, float]:
        return gs.mean_std(self.estimator)

    @property
    def excess(self) -> tuple[float, float]:
        """AGE minus the SGD floor, mean and std over runs."""
        return gs.mean_std([age - self.floor for age in self.ages])

    def values(self) -> list:
        (age, age_std), (est, est_std) = self.age, self.estimator_error
        return [self.network, self.size, self.mode, self.probe, self.probes, len(self.ages),
                f"{self.convs}/{self.total_convs}", age, age_std, age / self.floor, est, est_std]

    def cells(self) -> list[str]:
        values = self.values()
        return [str(v) for v in values[:7]] + [f"{v:.4g}" for v in values[7:9]] + \
               [f"{values[9]:.3f}"] + [f"{v:.4g}" for v in values[10:]]


# Command line ----------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=gs.str_list, default=list(gs.NETWORKS),
                        help=f"comma-separated, from {', '.join(gs.NETWORKS)}")
    parser.add_argument("--sizes", type=gs.int_list, default=None,
                        help="image sizes of the 2D networks (default: each network's own, see the table)")
    parser.add_argument("--sizes-3d", type=gs.int_list, default=None, help="volume sizes of the 3D network")
    parser.add_argument("--kinds", type=gs.str_list, default=None,
                        help="probe kinds (default: all four; VanillaNet: channel only)")
    parser.add_argument("--probes", type=gs.int_list, default=[2, 8, 32, 128], help="probe counts r")
    parser.add_argument("--runs", type=int, default=3, help="XConv runs (probe draws) per r")
    parser.add_argument("--subset", type=int, default=64, help="samples in the fixed subset")
    parser.add_argument("--batch", type=int, default=16, help="minibatch size")
    parser.add_argument("--smooth", type=float, default=0.0,
                        help="blur the synthetic inputs with a Gaussian of this std in pixels (0 = white noise, "
                             "as the paper's synthetic data)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("results/gradient_error"),
                        help="output stem: writes STEM.md, STEM.csv and STEM.png")
    args = parser.parse_args(argv)
    gs.check_study_arguments(parser, args)
    return args


def sizes_of(network: gs.Network, args: argparse.Namespace) -> list[int]:
    chosen = args.sizes_3d if network.dims == 3 else args.sizes
    return list(chosen) if chosen else list(network.sizes)


def kinds_of(network: gs.Network, args: argparse.Namespace) -> list[str]:
    return list(args.kinds) if args.kinds else list(network.kinds)


# Measurement -----------------------------------------------------------------
def study(network: gs.Network, size: int, args: argparse.Namespace) -> list[Row]:
    """The floor and every (kind, r) of one network at one size."""
    model = gs.build_model(network)
    batches = gs.minibatches(network, size, args.subset, args.batch, smooth=args.smooth)
    total_convs = len(gs.conv_weights(model))
    reference = gs.Reference.of(model, network, batches)
    rows = [Row(network.name, size, "-", 0, 0, total_convs, reference.floor, [reference.floor], [0.0])]
    for kind in kinds_of(network, args):
        for probes in args.probes:
            converted, convs = gs.xconv_copy(model, network, probes, kind, batches[0])
            row = Row(network.name, size, kind, probes, convs, total_convs, reference.floor)
            for run in range(args.runs):
                xconv.manual_seed(1000 + run)
                age, estimator = reference.errors(converted, network, batches)
                row.ages.append(age)
                row.estimator.append(estimator)
            rows.append(row)
            print(f"  {network.name}@{size} {kind} r={probes}: AGE/floor {row.age[0] / row.floor:.3f}",
                  file=sys.stderr, flush=True)
    return rows


def slopes(rows: list[Row], runs: int) -> list[list]:
    """Per (network, size, kind): log-log slopes of the estimator error and of AGE - floor vs r."""
    table = []
    groups = dict.fromkeys((row.network, row.size, row.probe) for row in rows if row.probes)
    for network, size, kind in groups:
        group = sorted((row for row in rows if (row.network, row.size, row.probe) == (network, size, kind)),
                       key=lambda row: row.probes)
        r = [row.probes for row in group]
        est = gs.loglog_slope(r, *zip(*(row.estimator_error for row in group)), runs=runs)
        excess = gs.loglog_slope(r, *zip(*(row.excess for row in group)), runs=runs)
        last = group[-1]
        table.append([network, size, kind, est[0], est[1], excess[0], excess[1],
                      group[0].age[0] / group[0].floor, last.age[0] / last.floor,
                      last.probes * last.estimator_error[0] / last.floor])
    return table


# Report ----------------------------------------------------------------------
def scale_text(args: argparse.Namespace, networks: list[gs.Network]) -> str:
    parts = [f"{n.name} at {', '.join(map(str, sizes_of(n, args)))} ({', '.join(kinds_of(n, args))})"
             for n in networks]
    inputs = f"inputs blurred with a Gaussian of std {args.smooth:g} px; " if args.smooth > 0 else ""
    return (f"{inputs}subset {args.subset} samples in minibatches of {args.batch} "
            f"({args.subset // args.batch} minibatches), r in {args.probes}, {args.runs} XConv runs per r; "
            + "; ".join(parts))


def slope_cells(row: list) -> list[str]:
    return [str(row[0]), str(row[1]), row[2]] + [f"{v:.2f}" for v in row[3:7]] + \
        [f"{v:.3f}" for v in row[7:9]] + [f"{row[9]:.3g}"]


def markdown(head: list[str], networks: list[gs.Network], rows: list[Row], slope_rows: list[list],
             seconds: float, cpu_seconds: float) -> str:
    lines = head + ["Networks and data:", ""] + [f"- `{n.name}`: {n.description}" for n in networks] + [
        "",
        "Fixed weights (seed 0), fixed synthetic subset (seed 1) and fixed minibatches, the same for every "
        "mode; Dropout off, BatchNorm on batch statistics. AGE = mean over minibatches of the squared L2 "
        "distance of all conv weight gradients to the exact full-subset gradient. The exact row is the SGD "
        "floor (deterministic: one run). Estimator error = mean over minibatches of the squared distance "
        "between XConv's and the exact gradient of the same minibatch (AGE ~= floor + estimator error). "
        "'xconv convs' = convolutions estimated by XConv / all convolutions.",
        ""] + report.markdown_table(COLUMNS, [row.cells() for row in rows]) + [
        "", "Slopes: weighted least squares of log(error) on log(r) (-1 = falls like 1/r; "
        "points with a non-positive mean are left out). The last column extrapolates the estimator error "
        "at the largest r with 1/r to the r at which it would equal the SGD floor (AGE = 2 x floor).", ""] + \
        report.markdown_table(SLOPE_COLUMNS, [slope_cells(row) for row in slope_rows]) + [
        "", f"Wall time: {seconds:.0f} s (CPU time of this process: {cpu_seconds:.0f} s).", ""]
    return "\n".join(lines)


def figure(rows: list[Row], path: Path) -> None:
    plt = report.pyplot()
    panels = list(dict.fromkeys((row.network, row.size) for row in rows))
    columns = min(4, len(panels))
    lines = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.6 * lines), squeeze=False)
    for ax, (network, size) in zip(axes.flat, panels):
        panel = [row for row in rows if (row.network, row.size) == (network, size)]
        floor = panel[0].floor
        for kind in dict.fromkeys(row.probe for row in panel if row.probes):
            group = sorted((row for row in panel if row.probe == kind), key=lambda row: row.probes)
            means, stds = zip(*(row.age for row in group))
            ax.errorbar([row.probes for row in group], means, yerr=stds, marker="o", capsize=3, label=kind)
        ax.axhline(floor, color="k", linestyle="--", label="exact (SGD floor)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{network}, {size}px" + ("^3" if network == "unet3d" else ""))
        ax.set_xlabel("probes r")
        ax.set_ylabel("AGE")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Average gradient error vs r (mean +- std over runs)")
    fig.tight_layout()
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    networks = [gs.network_named(name) for name in args.networks]
    command = report.command_line("gradient_error.py", argv)
    head = report.provenance(TITLE, command, scale_text(args, networks))
    print("\n".join(head), flush=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = []
    for network in networks:
        for size in sizes_of(network, args):
            rows += study(network, size, args)
    slope_rows = slopes(rows, args.runs)
    text = markdown(head, networks, rows, slope_rows, time.perf_counter() - start,
                    time.process_time() - cpu_start)
    print(text[len("\n".join(head)):], flush=True)
    report.write_text(args.out.with_suffix(".md"), text)
    report.write_text(args.out.with_suffix(".csv"),
                      report.csv_text([c.replace(" ", "_") for c in COLUMNS], [row.values() for row in rows]))
    report.write_text(args.out.parent / (args.out.name + "_slopes.csv"),
                      report.csv_text([c.replace(" ", "_") for c in SLOPE_COLUMNS], slope_rows))
    figure(rows, args.out.with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
