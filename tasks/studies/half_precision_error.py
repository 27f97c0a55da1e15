"""XConv's gradient error in bfloat16 against the rounding error of exact bfloat16 gradients.

For each network and size (same networks, data and minibatches as
``scripts/gradient_error.py``): the weights (seed 0) and the synthetic data are
first rounded to bfloat16, so every precision below works on the same numbers
and differs only in its arithmetic. References are the exact float64 gradients
of the same minibatches. Measured, as mean over minibatches of squared L2
distances over all conv weights:

* rounding floor: exact bfloat16 minibatch gradients vs exact float64 ones
  (and the same for float32, for scale);
* XConv error: XConv bfloat16 (and float32) minibatch gradients vs exact float64
  ones, for each probe kind and r, over ``--runs`` probe draws;
* the SGD floor (float64 exact minibatches vs the float64 gradient of the whole
  subset) and each mode's AGE (Eq. 9) against that float64 full-subset gradient.

The question (the paper's later version says XConv's error falls to the
rounding floor in half precision): how far above the bfloat16 rounding floor is
XConv's error, and at which r would it reach it if it keeps falling like 1/r?

Run from the repository root::

    python scripts/half_precision_error.py                 # default scale, ~4 min on one thread
    python scripts/half_precision_error.py --networks unet --sizes 16 --subset 16 --batch 4 --probes 2,32
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import xconv

from . import gradient_study as gs
from . import report

TITLE = "bfloat16: XConv gradient error vs the rounding error of exact bfloat16 gradients"
PRECISIONS = {"bf16": torch.bfloat16, "fp32": torch.float32}
COLUMNS = ["network", "size", "precision", "mode", "probe", "r", "runs", "error vs fp64 mean", "error std",
           "error / bf16 rounding floor", "AGE vs fp64 full", "AGE / SGD floor"]
SUMMARY_COLUMNS = ["network", "size", "probe", "precision", "slope of error vs r", "s.e.",
                   "error / rounding floor at largest r", "r where the error would reach the floor (1/r)"]


@dataclass
class Row:
    network: str
    size: int
    precision: str
    probe: str  # "-" for exact
    probes: int  # 0 for exact
    rounding_floor: float
    sgd_floor: float
    errors: list[float] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)

    @property
    def error(self) -> tuple[float, float]:
        return gs.mean_std(self.errors)

    def values(self) -> list:
        (error, error_std), (age, _) = self.error, gs.mean_std(self.ages)
        return [self.network, self.size, self.precision, "exact" if self.probes == 0 else "xconv", self.probe,
                self.probes, len(self.errors), error, error_std, error / self.rounding_floor, age,
                age / self.sgd_floor]

    def cells(self) -> list[str]:
        v = self.values()
        return [str(x) for x in v[:7]] + [f"{v[7]:.4g}", f"{v[8]:.2g}", f"{v[9]:.3g}", f"{v[10]:.4g}",
                                           f"{v[11]:.3f}"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=gs.str_list, default=["squeezenet1_0", "unet"],
                        help=f"comma-separated, from {', '.join(gs.NETWORKS)} (ddpm_unet keeps float32 "
                             f"timestep embeddings, so it cannot run in bfloat16)")
    parser.add_argument("--sizes", type=gs.int_list, default=None,
                        help="image sizes of the 2D networks (default: the smallest of each network's)")
    parser.add_argument("--sizes-3d", type=gs.int_list, default=None, help="volume sizes of the 3D network")
    parser.add_argument("--kinds", type=gs.str_list, default=["channel", "gaussian"])
    parser.add_argument("--probes", type=gs.int_list, default=[2, 8, 32, 128])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subset", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/half_precision_error"),
                        help="output stem: writes STEM.md, STEM.csv and STEM.png")
    args = parser.parse_args(argv)
    gs.check_study_arguments(parser, args)
    if "ddpm_unet" in args.networks:
        parser.error("--networks: ddpm_unet cannot run in bfloat16 (its timestep embedding is float32)")
    return args


def sizes_of(network: gs.Network, args: argparse.Namespace) -> list[int]:
    chosen = args.sizes_3d if network.dims == 3 else args.sizes
    return list(chosen) if chosen else [min(network.sizes)]


def study(network: gs.Network, size: int, args: argparse.Namespace) -> list[Row]:
    base = gs.build_model(network, torch.bfloat16)  # weights rounded to bf16 once, shared by every precision
    rounded = gs.minibatches(network, size, args.subset, args.batch, torch.bfloat16)
    models = {"fp64": copy.deepcopy(base).double(),
              **{p: copy.deepcopy(base).to(d) for p, d in PRECISIONS.items()}}
    data = {"fp64": [gs.cast(b, torch.float64) for b in rounded],
            **{p: [gs.cast(b, d) for b in rounded] for p, d in PRECISIONS.items()}}
    reference = gs.Reference.of(models["fp64"], network, data["fp64"])
    exact = {p: reference.errors(models[p], network, data[p]) for p in PRECISIONS}  # (AGE, error)
    floor = exact["bf16"][1]
    rows = [Row(network.name, size, p, "-", 0, floor, reference.floor, [exact[p][1]], [exact[p][0]])
            for p in PRECISIONS]
    for kind in args.kinds:
        for probes in args.probes:
            for precision in PRECISIONS:
                converted, _ = gs.xconv_copy(models[precision], network, probes, kind, data[precision][0])
                row = Row(network.name, size, precision, kind, probes, floor, reference.floor)
                for run in range(args.runs):
                    xconv.manual_seed(1000 + run)
                    age, error = reference.errors(converted, network, data[precision])
                    row.ages.append(age)
                    row.errors.append(error)
                rows.append(row)
                print(f"  {network.name}@{size} {precision} {kind} r={probes}: error / floor "
                      f"{row.error[0] / floor:.3g}", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[Row], runs: int) -> list[list]:
    """Per (network, size, kind, precision): slope vs r and the r at which 1/r reaches the floor."""
    table = []
    for key in dict.fromkeys((r.network, r.size, r.probe, r.precision) for r in rows if r.probes):
        group = sorted((r for r in rows if (r.network, r.size, r.probe, r.precision) == key),
                       key=lambda r: r.probes)
        slope, se = gs.loglog_slope([r.probes for r in group], *zip(*(r.error for r in group)), runs=runs)
        last = group[-1]
        ratio = last.error[0] / last.rounding_floor
        table.append([*key, slope, se, ratio, last.probes * ratio])
    return table


def summary_cells(row: list) -> list[str]:
    return [str(row[0]), str(row[1]), row[2], row[3], f"{row[4]:.2f}", f"{row[5]:.2f}", f"{row[6]:.3g}",
            f"{row[7]:.3g}"]


def figure(rows: list[Row], path: Path) -> None:
    plt = report.pyplot()
    panels = list(dict.fromkeys((r.network, r.size) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        members = [r for r in rows if (r.network, r.size) == panel]
        colours = {}
        for key in dict.fromkeys((r.probe, r.precision) for r in members if r.probes):
            group = sorted((r for r in members if (r.probe, r.precision) == key), key=lambda r: r.probes)
            means, stds = zip(*(r.error for r in group))
            bf16 = key[1] == "bf16"
            line = ax.errorbar([r.probes for r in group], means, yerr=stds, marker="o" if bf16 else "x",
                               markersize=6 if bf16 else 9, capsize=3, linestyle="-" if bf16 else ":",
                               color=colours.get(key[0]), label=f"xconv {key[0]} {key[1]}")
            colours.setdefault(key[0], line[0].get_color())
        exact = {r.precision: r for r in members if not r.probes}
        ax.axhline(exact["bf16"].error[0], color="k", linestyle="--", label="exact bf16 (rounding floor)")
        ax.axhline(exact["fp32"].error[0], color="0.5", linestyle="--", label="exact fp32")
        ax.axhline(members[0].sgd_floor, color="tab:red", linestyle="-.", label="SGD floor (fp64, Eq. 9)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("probes r")
        ax.set_ylabel("squared error vs exact fp64 minibatch gradient")
        ax.set_title(f"{panel[0]}, {panel[1]}px")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    networks = [gs.network_named(name) for name in args.networks]
    command = report.command_line("half_precision_error.py", argv)
    scale = (f"subset {args.subset} in minibatches of {args.batch}, r in {args.probes}, kinds {args.kinds}, "
             f"{args.runs} runs; " + "; ".join(f"{n.name} at {', '.join(map(str, sizes_of(n, args)))}"
                                               for n in networks))
    head = report.provenance(TITLE, command, scale)
    print("\n".join(head), flush=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = []
    for network in networks:
        for size in sizes_of(network, args):
            rows += study(network, size, args)
    summary_rows = summary(rows, args.runs)
    lines = head + [
        "Weights (seed 0) and data are rounded to bfloat16 first; every precision then computes with the "
        "same numbers. 'error vs fp64' = mean over minibatches of ||g_b - g_b^fp64||^2 over all conv "
        "weights, where g_b^fp64 is the exact float64 gradient of the same minibatch; the exact bf16 row is "
        "the rounding floor. 'AGE vs fp64 full' = Eq. (9) against the float64 gradient of the whole subset; "
        "its SGD floor (exact fp64 minibatches) divides the last column.", ""] + \
        report.markdown_table(COLUMNS, [r.cells() for r in rows]) + [
        "", "Per kind and precision: weighted log-log slope of the error vs r, the error over the bf16 "
        "rounding floor at the largest r, and the r at which a 1/r decay would bring it to the floor.", ""] + \
        report.markdown_table(SUMMARY_COLUMNS, [summary_cells(row) for row in summary_rows]) + [
        "", f"Wall time: {time.perf_counter() - start:.0f} s "
            f"(CPU time of this process: {time.process_time() - cpu_start:.0f} s).",
        ""]
    text = "\n".join(lines)
    print(text[len("\n".join(head)):], flush=True)
    report.write_text(args.out.with_suffix(".md"), text)
    report.write_text(args.out.with_suffix(".csv"),
                      report.csv_text([c.replace(" ", "_") for c in COLUMNS], [r.values() for r in rows]))
    figure(rows, args.out.with_suffix(".png"))
    return rows


if __name__ == "__main__":
    main()
