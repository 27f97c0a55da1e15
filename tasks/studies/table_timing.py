"""Step time of each results table's rows, measured side by side in one loop.

A table's rows come from runs made one after another on a shared CPU, so the ratio of their
median step times mixes the method with whatever else the machine did meanwhile. This study
reads a table's committed runs (``results/runs/<table>/``), and for each group of rows with the
same settings (e.g. a batch size) builds the task of every row's gradient mode, plus exact, on
the table's experiment config (``conf/experiment/<table>.yaml``, seed 0) with those settings,
exactly as a run does (:func:`xconv_harness.run.build`); takes one training batch, and times a
full training step of each (``task.training_step``, backward, optimiser step) in the same loop,
the order rotating every repeat (:func:`timing.median_times_ms`). The ratios it writes
(``results/table_timing.{md,csv}``, keyed by table, settings and row label) are what
``make_tables.py`` shows as the rows' and the headline's step time ratios.

    python scripts/table_timing.py --out results/table_timing
    python scripts/table_timing.py --tables table1_mnist --repeats 5
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from ..config_files import compose_experiment
from . import report, timing
from .reproduce import TABLES
from .run_summaries import Gradient, Table, load_tables

RUNS = Path("results") / "runs"  # relative to the folder the command runs in (the checkout)
EXACT = ("probes=0", "relu=exact", "activations=exact", "checkpoint=none")
CSV_COLUMNS = ["table", "settings", "mode", "median_step_ms", "ratio_vs_exact", "repeats", "batch_shape"]


def gradient_overrides(gradient: Gradient) -> tuple[str, ...]:
    """The overrides that give a row's gradient mode on top of the table's experiment config (the probe
    kind only for XConv rows: others record none)."""
    probe = (f"probe={gradient.probe}",) if gradient.is_xconv else ()
    return (f"probes={gradient.probes}", *probe, f"relu={gradient.relu}", f"activations={gradient.activations}",
            f"checkpoint={gradient.checkpoint}")


def row_groups(table: Table) -> list[tuple[str, tuple[str, ...], dict[str, tuple[str, ...]]]]:
    """Per settings of the table's rows: ``(settings text, their overrides, {row label: overrides})``,
    exact first (timed at every settings, also where the table has no exact row there)."""
    groups: dict[tuple, tuple] = {}
    for row in table.rows:
        overrides = tuple(f"{key}={value}" for key, value in zip(table.setting_keys, row.settings))
        text, _, modes = groups.setdefault(row.settings, (table.settings_text(row), overrides, {"exact": EXACT}))
        modes.setdefault(row.gradient.label, gradient_overrides(row.gradient))
    return list(groups.values())


def first_batch(datamodule):
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def training_step(task, batch) -> timing.Step:
    """One optimiser step of ``task`` on ``batch``, as Lightning's loop runs it (no logging)."""
    optimizer = task.build_optimizer()
    task.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # self.log without a Trainer: nothing to log to, on purpose
            warnings.filterwarnings("ignore", message=".*self.log.*")
            loss = task.training_step(batch, 0)
        loss.backward()
        optimizer.step()
    return step


def time_table(table: str, modes: dict[str, tuple[str, ...]], repeats: int, warmup: int,
               overrides: tuple[str, ...] = (), settings: str = "") -> list[dict]:
    """Median step milliseconds of every mode of ``table`` on one shared batch, interleaved (the first
    mode is the reference); ``settings`` names the overrides' settings in the rows written."""
    from ..run import build

    steps, batch, shape = {}, None, None
    for name, mode_overrides in modes.items():
        datamodule, _, task = build(compose_experiment(table, (*overrides, *mode_overrides)))
        if batch is None:  # every mode steps on the same data
            batch = first_batch(datamodule)
            tensors = batch.values() if isinstance(batch, dict) else batch
            shape = "x".join(map(str, next(t for t in tensors if torch.is_tensor(t)).shape))
        steps[name] = training_step(task, batch)
    times = timing.median_times_ms(steps, repeats=repeats, warmup=warmup, device="cpu")
    exact = times[next(iter(modes))]
    return [{"table": table, "settings": settings, "mode": name, "median_step_ms": ms, "ratio_vs_exact": ms / exact,
             "repeats": repeats, "batch_shape": shape} for name, ms in times.items()]


def write(rows: list[dict], out: Path, command: str, repeats: int) -> list[Path]:
    lines = report.provenance("Step time ratios, every mode of a table measured side by side", command,
                              f"each table's experiment config at seed 0, one training batch; median of {repeats} "
                              "steps per mode after warm-up, the modes interleaved (order rotating every repeat)")
    lines += ["Ratio = mode / exact step time, same batch, same loop (> 1: slower). Timings on a shared CPU vary "
              "by 10-20 % between runs; the ratios within a loop are what compare.", ""]
    lines += report.markdown_table(["table", "settings", "batch", "mode", "step (ms)", "vs exact"],
                                   [[row["table"], row["settings"] or "-", row["batch_shape"], row["mode"],
                                     f"{row['median_step_ms']:.1f}", f"{row['ratio_vs_exact']:.3g}"] for row in rows])
    return [report.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n"),
            report.write_text(out.with_suffix(".csv"), report.csv_text(
                CSV_COLUMNS, [[row[column] for column in CSV_COLUMNS] for row in rows]))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated tables (default: all)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per mode (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--override", action="append", default=[], help="an extra override for every mode")
    parser.add_argument("--runs", default=str(RUNS), help=f"the committed runs whose rows are timed (default {RUNS})")
    parser.add_argument("--out", default="results/table_timing", help="output path without suffix")
    args = parser.parse_args(argv)
    tables = [table for table in args.tables.split(",") if table]
    unknown = [table for table in tables if table not in TABLES]
    if unknown:
        parser.error(f"--tables={unknown[0]}: not a table; choose from {', '.join(TABLES)}")
    found = {table.name: table for table in load_tables([args.runs])}
    rows = []
    for table in tables:
        if table not in found:
            print(f"[table_timing] {table}: no runs under {args.runs}, skipped", flush=True)
            continue
        for settings, setting_overrides, modes in row_groups(found[table]):
            timed = time_table(table, modes, args.repeats, args.warmup, (*setting_overrides, *args.override),
                               settings)
            rows += timed
            print(f"[table_timing] {table} {settings or '-'}: " + ", ".join(
                f"{row['mode']} {row['ratio_vs_exact']:.2f}" for row in timed), flush=True)
    for path in write(rows, Path(args.out), report.command_line("table_timing.py", argv), args.repeats):
        print(path)
