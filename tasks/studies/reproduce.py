"""Rerun the application tables from the checkout: every table's sweeps, then its table.

Each table of ``results/`` (``results/README.md``) is one experiment config
(``conf/experiment/<table>.yaml``) swept over a few gradient modes and seeds. This module
holds those sweeps, once: :data:`TABLES` maps a table to its :class:`Sweep` list, and
:func:`commands` turns them into the exact command lines, ``python -m xconv.run -m
experiment=<table> <overrides> hydra.sweep.dir=<root>/<table>/<sweep>`` for each sweep and
``python scripts/make_tables.py <root>/<table> --copy-runs`` at the end.

    python scripts/reproduce.py --list                      # every command, nothing run
    python scripts/reproduce.py cpu_segmentation            # run one table's sweeps and its table
    python scripts/reproduce.py --root /tmp/reruns --dry-run table1_mnist

The runs must come from a clean tree (``make_tables.py`` refuses summaries whose
``code.clean`` is false), so the script refuses to start on a dirty checkout unless
``--allow-dirty`` (then the table needs ``--allow-untraced`` later, and says so). A sweep
whose folder already holds a complete ``multirun_report.json`` is skipped, so a command
interrupted part-way is run again with the same arguments to finish it (each job resumes
its last checkpoint: ``ckpt_path=auto``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..provenance import code_state

ROOT = Path("multirun")
# Settings every rerun shares: one torch thread per run (two runs may share the 2-core CPU),
# no wandb (the summaries and curves are the record), no progress bars in the logs, and
# resume of a job's own checkpoint when a sweep is run again into its folder.
SHARED = ("threads=1", "logger=none", "trainer.enable_progress_bar=false", "ckpt_path=auto")


@dataclass(frozen=True)
class Sweep:
    """One ``-m`` command of a table: a folder name and the swept overrides."""

    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    what: str
    sweeps: tuple[Sweep, ...]


SEEDS3 = "seed=0,1,2"


def memory_modes(seeds: str) -> tuple[Sweep, ...]:
    """The memory modes beside exact and r=16: checkpointing, and the lossless and compact activation savers."""
    return (Sweep("checkpoint", ("probes=0,16", "checkpoint=sqrt", seeds)),
            Sweep("activations", ("probes=0,16", "activations=lossless,compact", seeds)))


TABLES: dict[str, Table] = {
    "table1_mnist": Table("paper Table 1 on real MNIST (python -m xconv_harness.data fetch mnist first)", (
        Sweep("b128", ("probes=0,2,4,8,16,32,64", SEEDS3)),
        # the paper's epochs = 10 + 2 log2(B): 20 at batch 32, 30 at batch 1024 (the config's 24 is batch 128's)
        Sweep("b32", ("probes=0,16,64", "data.batch_size=32", "trainer.max_epochs=20", "seed=0")),
        Sweep("b1024", ("probes=0,16,64", "data.batch_size=1024", "trainer.max_epochs=30", "seed=0")),
        *memory_modes("seed=0"),
    )),
    "cpu_table1_fashion": Table("Table 1 analogue on Fashion-MNIST", (
        Sweep("grid", ("probes=0,2,4,8,16,32,64", "data.batch_size=32,128,512,1024", "seed=0")),
        Sweep("seeds", ("probes=0,2,4,8,16,32,64", "data.batch_size=128", "seed=1,2")),
        Sweep("bitrelu", ("probes=0,16", "relu=bit", "data.batch_size=128", SEEDS3)),
        Sweep("activations", ("probes=0,16", "activations=lossless,compact", "data.batch_size=128", SEEDS3)),
        Sweep("checkpoint", ("probes=0,16", "checkpoint=sqrt", "data.batch_size=128", SEEDS3)),
    )),
    "cpu_equal_memory_fashion": Table("Fig. 13 analogue: exact at batch 128 vs XConv at batch 256", (
        Sweep("exact128", ("probes=0", "relu=exact", "activations=exact", "data.batch_size=128",
                             "task.optimizer.lr=1.0e-3", SEEDS3)),
        Sweep("channel", ("probes=32", "probe=channel", SEEDS3)),
        Sweep("dense", ("probes=256", "probe=gaussian,orthogonal", SEEDS3)),
        # exact gradients at the XConv arms' batch 256, with memory kept low by the other means:
        # checkpointing, and the lossless savers alone (the net has no norms: compact would equal lossless)
        Sweep("checkpoint", ("probes=0", "relu=exact", "activations=exact", "checkpoint=sqrt", SEEDS3)),
        Sweep("activations", ("probes=0", "relu=exact", "activations=lossless", SEEDS3)),
    )),
    "cpu_ddpm_mnist": Table("Fig. 16 analogue on real MNIST: DDPM FID vs probes (python -m xconv_harness.data fetch mnist first)", (
        Sweep("probes", ("probes=0,16", SEEDS3)),
        Sweep("wide", ("probes=32,64,128,256", "seed=0")),  # up to 4x exact's step time: one seed
        *memory_modes("seed=0"),
    )),
    "cpu_dip_superres": Table("Table 3 / Fig. 31a analogue: DIP x4 super-resolution", (
        Sweep("probes", ("probes=0,16,32,64,128,256", SEEDS3)),
        Sweep("wide", ("probes=512,1024", "seed=0")),  # wide r: one seed
        *memory_modes("seed=0"),
    )),
    "cpu_dip_inpainting": Table("Table 3 analogue: DIP inpainting", (
        Sweep("probes", ("probes=0,16,64,256", SEEDS3)),
        *memory_modes("seed=0"),
    )),
    "cpu_segmentation": Table("Table 4 analogue: smp U-Net on texture mosaics", (
        Sweep("probes", ("probes=0,4,16,64", SEEDS3)),
        Sweep("bitrelu", ("probes=16", "relu=bit", SEEDS3)),
        *memory_modes(SEEDS3),
    )),
}


def sweep_dir(root: Path, table: str, sweep: Sweep) -> Path:
    return Path(root) / table / sweep.name


def seeds_first(overrides: tuple[str, ...]) -> list[str]:
    """``overrides`` with the seed sweep first: Hydra varies the first override slowest, so the jobs run
    seed by seed and a sweep stopped part-way leaves every mode of its finished seeds (paired rows)."""
    return sorted(overrides, key=lambda override: not override.startswith("seed="))


def sweep_command(root: Path, table: str, sweep: Sweep) -> list[str]:
    return [sys.executable, "-m", "xconv.run", "-m", f"experiment={table}", *SHARED, *seeds_first(sweep.overrides),
            f"hydra.sweep.dir={sweep_dir(root, table, sweep)}"]


def table_command(root: Path, table: str, allow_untraced: bool = False) -> list[str]:
    return [sys.executable, "scripts/make_tables.py", str(Path(root) / table), "--copy-runs",
            *(["--allow-untraced"] if allow_untraced else [])]


def commands(tables: list[str], root: Path = ROOT, allow_untraced: bool = False) -> list[list[str]]:
    """Every command, in order: each table's sweeps, then its table."""
    return [command for table in tables
            for command in (*(sweep_command(root, table, sweep) for sweep in TABLES[table].sweeps),
                            table_command(root, table, allow_untraced))]


def shown(command: list[str]) -> str:
    """A command as one would type it (``python`` for this interpreter)."""
    return shlex.join(["python", *command[1:]] if command[0] == sys.executable else command)


def finished(folder: Path) -> bool:
    """True when ``folder`` holds a sweep whose report lists every job completed."""
    try:
        report = json.loads((folder / "multirun_report.json").read_text())
    except (OSError, ValueError):
        return False
    return report.get("jobs", 0) > 0 and report.get("completed") == report.get("jobs")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="*", metavar="table",
                        help=f"tables to rerun (default: all): {', '.join(TABLES)}")
    parser.add_argument("--list", action="store_true", help="print every command and run nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the commands that would run (skips shown)")
    parser.add_argument("--root", default=str(ROOT), help="where the sweeps' folders go (default: multirun)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a tree with uncommitted changes (its tables then need --allow-untraced)")
    args = parser.parse_args(argv)
    unknown = [table for table in args.tables if table not in TABLES]
    if unknown:
        parser.error(f"table={unknown[0]}: not a table; choose from {', '.join(TABLES)}")
    args.tables = args.tables or list(TABLES)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    root = Path(args.root)
    if args.list:
        for table in args.tables:
            print(f"# {table}: {TABLES[table].what}")
            for command in commands([table], root):
                print(shown(command))
        return
    code = code_state()
    if not code.get("clean") and not (args.allow_dirty or args.dry_run):
        raise SystemExit(f"error: the tree is not a clean commit ({code}); commit first so every run names "
                         "its code, or pass --allow-dirty (its tables then need --allow-untraced)")
    for table in args.tables:
        for sweep in TABLES[table].sweeps:
            command = sweep_command(root, table, sweep)
            if finished(sweep_dir(root, table, sweep)):
                print(f"[reproduce] done already: {shown(command)}", flush=True)
                continue
            _run(command, args.dry_run)
        _run(table_command(root, table, allow_untraced=not code.get("clean")), args.dry_run)


def _run(command: list[str], dry_run: bool) -> None:
    print(f"[reproduce] {shown(command)}", flush=True)
    if not dry_run:
        subprocess.run(command, check=True)
