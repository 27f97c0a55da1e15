"""Mutation testing by hand: do the fast tests notice when the library is broken on purpose?

Each :class:`Mutant` is one deliberate bug, written as an exact text replacement in one
source file (the anchor must occur exactly once, so the list breaks loudly when the code
moves on). For each mutant the script copies the checkout's ``xconv/``, ``tasks/``,
``conf/``, ``tests/`` and ``pyproject.toml`` into a temporary folder, applies the
replacement there (the checkout is never touched), runs the mutant's tests in that copy
(``python -m pytest -x``; the copy's ``pyproject.toml`` puts the copy first on the path,
which the run checks) and reports the mutant *killed* when a test fails, *survived* when
all pass. A survivor is a property no fast test guards.

    python scripts/mutants.py                      # every mutant against the fast library tests
    python scripts/mutants.py --only scale-1.1 leak-input --out results/mutants
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import report

COPIED = ("xconv", "tasks", "conf", "tests", "pyproject.toml")
LIBRARY_TESTS = ("tests/xconv",)


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str           # path in the checkout
    anchor: str         # exact text, found exactly once
    replacement: str
    what: str           # the bug, in words
    tests: tuple[str, ...] = LIBRARY_TESTS

    def apply(self, root: Path) -> None:
        path = root / self.file
        text = path.read_text()
        found = text.count(self.anchor)
        if found != 1:
            raise ValueError(f"mutant {self.name}: anchor found {found} times in {self.file} (expected once); "
                             "update the mutant to the current code")
        path.write_text(text.replace(self.anchor, self.replacement))


_WEIGHT_GRAD = "return grad_w.div_(ctx.probes)"
MUTANTS = (
    Mutant("scale-1.1", "xconv/estimator.py", _WEIGHT_GRAD, "return grad_w.div_(ctx.probes).mul_(1.1)",
           "weight-gradient estimate 10% too large in every layer"),
    Mutant("scale-0.9", "xconv/estimator.py", _WEIGHT_GRAD, "return grad_w.div_(ctx.probes).mul_(0.9)",
           "weight-gradient estimate 10% too small in every layer"),
    Mutant("scale-conv3d-1.3", "xconv/estimator.py", _WEIGHT_GRAD,
           "return grad_w.div_(ctx.probes).mul_(1.3 if len(ctx.x_shape) == 5 and not ctx.geometry.transposed "
           "else 1.0)", "estimate 30% too large on non-transposed 3d convolutions only"),
    Mutant("probe-padding-zeros", "xconv/layouts.py",
           "            probes_as_channels = geometry.pad(probes_as_channels)",
           "            probes_as_channels = (torch.nn.functional.pad(probes_as_channels, geometry.pre_pad)\n"
           "                                  if geometry.pre_pad is not None else probes_as_channels)",
           "channel probes padded with zeros whatever the layer's padding mode (reflect/replicate/circular)"),
    Mutant("full-probe-padding-zeros", "xconv/layouts.py", "            e = geometry.pad(e)",
           "            e = torch.nn.functional.pad(e, geometry.pre_pad) if geometry.pre_pad is not None else e",
           "full-layout probes padded with zeros whatever the layer's padding mode"),
    Mutant("reuse-probes-across-calls", "xconv/rng.py",
           "    return _stream.next()",
           "    return 12345", "every layer call draws the same probes"),
    Mutant("reuse-probes-across-chunks", "xconv/probes.py",
           "    return (call_seed + 0x9E3779B97F4A7C15 * chunk_index) % 2**63", "    return call_seed",
           "every probe chunk of a call repeats the first chunk's probes"),
    Mutant("global-rng", "xconv/rng.py", "    generator.manual_seed(seed)\n    return generator",
           "    return torch.default_generator if device.type == 'cpu' else generator",
           "probes drawn from torch's global generator (changes dropout and data order)"),
    Mutant("orthogonal-scale", "xconv/probes.py", "blocks.append(q.T * math.sqrt(numel))",
           "blocks.append(q.T * math.sqrt(numel - 1))", "orthogonal probes scaled by sqrt(D-1) instead of sqrt(D)"),
    Mutant("group-order", "xconv/layouts.py",
           'grad_w = torch.einsum("pbgc,bgopk->gock", sketch, correlations)',
           'grad_w = torch.einsum("pbgc,bgopk->gock", sketch.flip(2), correlations)',
           "channel-probe sketches of grouped convolutions paired with the wrong group"),
    Mutant("skip-bn-restore", "xconv/segments.py", "                buffer.copy_(kept)",
           "                pass", "checkpoint recomputation updates BatchNorm statistics a second time"),
    Mutant("no-rng-rewind", "xconv/segments.py", "        rng.set_rng_state(self.forward_xconv_state)\n",
           "", "recomputed XConv layers draw new probes instead of the forward's"),
    Mutant("leak-input", "xconv/estimator.py", "        ctx.has_bias = bias is not None",
           "        ctx.has_bias = bias is not None\n        ctx.leak = x", "the layer keeps its input as a ctx attribute"),
    Mutant("bit-relu-at-zero", "xconv/activations.py", "packed = pack_bits(x > 0)", "packed = pack_bits(x >= 0)",
           "1-bit ReLU passes the gradient at x = 0 (torch's ReLU does not)"),
    Mutant("no-fallback", "xconv/layers.py", "        return not self.fallback or sketching_forced(), why",
           "        return True, why", "calls whose sketch is no smaller than their input sketch anyway (more than exact)"),
    Mutant("bits-order", "xconv/bits.py", "shifted = flat.view(-1, per_byte) << _shifts(bits, flat.device)",
           "shifted = flat.view(-1, per_byte) << _shifts(bits, flat.device).flip(0)",
           "codes packed in one order and unpacked in the other"),
    Mutant("maxpool-ignores-dilation", "xconv/lossless.py", "coord.mul_(dilation[j]).add_(start).mul_(plane)",
           "coord.add_(start).mul_(plane)", "max-pool backward rebuilds indices as if windows were not dilated"),
    Mutant("dropout-unscaled", "xconv/lossless.py", "        return bernoulli.div_(1 - p)  # aten: noise.div_(1 - p)",
           "        return bernoulli", "bit-mask dropout forgets the 1/(1-p) scale"),
    Mutant("compact-round-to-nearest", "xconv/compact.py",
           "        t = buffer[:block.numel()].view(block.shape).copy_(_noise_levels(block.shape, block.device, noise))",
           "        t = buffer[:block.numel()].view(block.shape).zero_()",
           "compact norms round x-hat to nearest (biased) instead of stochastically"),
)


def copy_checkout(root: Path, into: Path) -> Path:
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(source, into / name)
    return into


def run_mutant(mutant: Mutant, root: Path, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as folder:
        copy = copy_checkout(root, Path(folder))
        mutant.apply(copy)
        check = subprocess.run([sys.executable, "-c", "import xconv; print(xconv.__file__)"], cwd=copy,
                               capture_output=True, text=True)
        if not Path(check.stdout.strip()).is_relative_to(copy):
            raise RuntimeError(f"the copy does not import its own xconv ({check.stdout.strip()})")
        started = time.perf_counter()
        try:
            result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                     *mutant.tests], cwd=copy, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"mutant": mutant.name, "status": "timeout", "first_failure": "", "seconds": timeout}
        seconds = time.perf_counter() - started
    failed = [line.split(" ")[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    status = "killed" if result.returncode == 1 else "survived" if result.returncode == 0 else f"error {result.returncode}"
    return {"mutant": mutant.name, "status": status, "first_failure": failed[0] if failed else "",
            "seconds": seconds}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutant names (default: all)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout (default: this folder)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per mutant")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.csv")
    args = parser.parse_args(argv)
    names = {mutant.name for mutant in MUTANTS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"--only: unknown mutant {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    chosen = [mutant for mutant in MUTANTS if args.only is None or mutant.name in args.only]
    rows = []
    for mutant in chosen:
        row = run_mutant(mutant, args.root.resolve(), args.timeout)
        rows.append(row)
        print(f"{row['mutant']:28s} {row['status']:9s} {row['seconds']:6.0f} s  {row['first_failure']}", flush=True)
    columns = ["mutant", "what", "tests", "status", "first failing test", "seconds"]
    by_name = {mutant.name: mutant for mutant in chosen}
    cells = [[row["mutant"], by_name[row["mutant"]].what, " ".join(by_name[row["mutant"]].tests), row["status"],
              f"`{row['first_failure']}`" if row["first_failure"] else "", f"{row['seconds']:.0f}"] for row in rows]
    survived = [row["mutant"] for row in rows if row["status"] != "killed"]
    lines = report.provenance("Mutants: deliberate bugs and the fast tests that catch them",
                              report.command_line("mutants.py", argv), "each mutant against its fast tests, "
                              "pytest -x in a copy of the checkout")
    lines += report.markdown_table(columns, cells)
    lines += ["", f"{len(rows) - len(survived)} of {len(rows)} killed"
              + (f"; survived: {', '.join(survived)}" if survived else ".")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        report.write_text(args.out.with_suffix(".md"), text)
        report.write_text(args.out.with_suffix(".csv"), report.csv_text(columns, cells))
    return rows
