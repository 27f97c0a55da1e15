"""The paper's application tables and figures, from the summaries of harness runs.

Reads every ``summary.json`` under the given folders (run folders, multirun
folders, or results/runs), groups the runs into tables (one per experiment,
see run_summaries.py) and writes, per table ``<name>``:

* ``<out>/<name>.md`` and ``<out>/<name>.csv``: one row per gradient mode and
  settings (exact, XConv at each probe count and kind, 1-bit ReLU and
  checkpointing variants) with the task's metrics as mean +- std over seeds (n),
  the change of the headline metric against exact, the paper's numbers where
  known, activation memory (bytes saved for backward per training step), peak
  memory and median step time, each with its ratio to exact;
* ``<out>/<name>_metric.png`` (metric and its gap to exact vs probes),
  ``_memory.png`` (activation and peak memory vs probes, relative to exact),
  ``_tradeoff.png`` (metric vs activation and peak memory), ``_curves.png``
  (training loss and validation metric per mode) and, for tasks that save
  pictures, ``_images.png`` (the last test or validation picture of each mode).

Every line comes from the summaries (commands, dates, machine, versions and
scale as the runs recorded them), so rerunning on the same summaries rewrites
the same bytes. ``--copy-runs`` first copies each run's summary.json,
csv/metrics.csv and its last picture to ``results/runs/<table>/<run>/`` (the
files the committed tables are regenerated from) and builds the tables from the
copies. ``--headline`` also writes ``<out>/headline.md``/``.csv``: per table,
the gap to exact and the memory factors at 16 channel probes.

Run from the repository root::

    python scripts/make_tables.py multirun/cpu_table1_fashion --copy-runs   # new runs -> results/
    python scripts/make_tables.py results/runs --headline                   # regenerate every table
"""
from __future__ import annotations

import argparse
import csv as csv_files
import dataclasses
import math
import shutil
import sys
from pathlib import Path

from scipy import stats

from . import paper_numbers
from . import report
from . import table_figures
from .run_summaries import (METRICS_CSV, PEAK_SOURCES, SUMMARY, Row, SummaryError, Table, baseline_for, load_tables,
                            mean_std, metrics_for, peak_memory, peak_source, run_folder_name)

RESULTS = Path("results")  # relative to the folder the command runs in (the checkout)
REGENERATE = "python scripts/make_tables.py results/runs --headline"
ALLOW_UNTRACED = "--allow-untraced"
HEADLINE_PROBES = 16
MIB = 2 ** 20


# Numbers ---------------------------------------------------------------------------------------
#: ``(table, settings text, gradient label) -> step time / exact's at those settings``, both timed side by
#: side in one loop (scripts/table_timing.py).
Timing = dict[tuple[str, str, str], float]
TIMING = RESULTS / "table_timing.csv"


def side_by_side_ratios(path: Path) -> Timing:
    """The ratios in ``path`` (table_timing.csv); empty when that file is absent. Rows written before the
    settings column have the table's default settings (empty text)."""
    if not Path(path).is_file():
        return {}
    with Path(path).open(newline="") as handle:
        return {(row["table"], row.get("settings", ""), row["mode"]): float(row["ratio_vs_exact"])
                for row in csv_files.DictReader(handle)}


def side_by_side(timing: Timing, table: Table, row: Row) -> float | None:
    """The row's step time over exact's, timed in one loop; None when not timed."""
    return timing.get((table.name, table.settings_text(row), row.gradient.label))


def mean(values: list[float]) -> float | None:
    return mean_std(values)[0]


def activation_bytes(summary: dict) -> int:
    """What a run's backward holds of activations: the bytes autograd keeps after the forward, plus, for
    a checkpointed run, its largest segment recomputation (kept during that segment's backward)."""
    plan = summary["gradient"].get("checkpoint_plan") or {}
    return summary["activation_memory"]["saved_bytes"] + (plan.get("recompute_bytes") or 0)


def saved_bytes(row: Row) -> float | None:
    return mean(row.values(activation_bytes))


def peak_bytes(row: Row) -> float | None:
    return mean(row.values(peak_memory))


def step_seconds(row: Row) -> float | None:
    return mean(row.values(lambda summary: summary["time"]["median_step_s"]))


def ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def mean_std_text(metric, values: list[float]) -> str:
    average, spread = mean_std(values)
    if average is None:
        return "n/a"
    return metric.text(average) if spread is None else f"{metric.text(average)} ± {metric.text(spread)}"


def seed_differences(metric, row: Row, reference: Row) -> list[float] | None:
    """Per-seed differences row - reference over the seeds both rows ran (a row that ran fewer seeds, e.g.
    a one-seed memory-mode row, is paired on those), when there is one; else None."""
    ours, exact = row.metric_by_seed(metric.key), reference.metric_by_seed(metric.key)
    common = sorted(set(ours) & set(exact))
    if not common:
        return None
    return [ours[seed] - exact[seed] for seed in common]


def delta(metric, row: Row, reference: Row | None) -> float | None:
    """The mean of the paired per-seed differences (see :func:`seed_differences`), else the row's mean
    minus the reference's."""
    if reference is None or reference is row:
        return None
    differences = seed_differences(metric, row, reference)
    if differences:
        return mean(differences)
    ours, exact = mean(row.metric(metric.key)), mean(reference.metric(metric.key))
    return None if ours is None or exact is None else ours - exact


def delta_spread(metric, row: Row, reference: Row | None) -> float | None:
    """Sample std of the paired per-seed differences (None below two common seeds)."""
    if reference is None or reference is row:
        return None
    differences = seed_differences(metric, row, reference)
    return mean_std(differences)[1] if differences else None


def delta_interval(metric, row: Row, reference: Row | None) -> tuple[float, float] | None:
    """95% interval of the mean per-seed difference row - reference (Student t, n-1 degrees of freedom;
    at least two common seeds), else None."""
    if reference is None or reference is row:
        return None
    differences = seed_differences(metric, row, reference)
    if not differences or len(differences) < 2:
        return None
    centre, spread = mean_std(differences)
    half = stats.t.ppf(0.975, len(differences) - 1) * spread / math.sqrt(len(differences))
    return centre - half, centre + half


def interval_text(metric, interval: tuple[float, float] | None) -> str:
    """``[-0.29, +0.15] (includes 0)`` in the metric's units, or ``n/a``."""
    if interval is None:
        return "n/a"
    low, high = (f"{value * metric.scale:+.{metric.digits}f}" for value in interval)
    return f"[{low}, {high}]" + (" (includes 0)" if interval[0] <= 0 <= interval[1] else "")


def signed_text(metric, value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value * metric.scale:+.{metric.digits}f}"
    return text if spread is None else f"{text} ± {metric.text(spread)}"


def delta_text(metric, table: Table, row: Row) -> str:
    """The change of the metric against the row's exact reference, ± the std of the per-seed
    differences when both rows ran the same seeds ("ref" on the reference itself)."""
    reference = table.reference(row)
    if reference is row:
        return "ref"
    return signed_text(metric, delta(metric, row, reference), delta_spread(metric, row, reference))


def paper_delta(numbers, table: Table, row: Row) -> float | None:
    reference = table.reference(row)
    if reference is None or reference is row:
        return None
    ours, exact = paper_numbers.paper_values(numbers, row), paper_numbers.paper_values(numbers, reference)
    return None if not ours or not exact else mean(ours) - mean(exact)


# Provenance ------------------------------------------------------------------------------------
def provenance(table: Table) -> list[str]:
    """Header lines from the runs themselves: commands, dates, machine, software, scale."""
    runs = sorted(table.runs, key=lambda run: (run.summary.get("date", ""), str(run.seed)))
    commands = list(dict.fromkeys(run.summary.get("command", "n/a") for run in runs))
    dates = [run.summary.get("date", "n/a") for run in runs]
    machines = sorted({run.summary.get("machine") or f"device {run.summary.get('device', 'n/a')} "
                       "(machine not recorded)" for run in runs})
    software = sorted({", ".join(f"{name} {version}" for name, version in run.summary.get("versions", {}).items())
                       for run in runs})
    first = runs[0].summary
    lines = [f"# {table.name}: {table.task}, {first['model']} on {first['data']}", ""]
    lines += ["- commands (as the runs recorded them):"] + [f"  - `{command}`" for command in commands]
    lines += [f"- code: {code_text(table)}",
              f"- dates: {dates[0]} to {dates[-1]} (UTC, from the run summaries)",
              f"- machine: {'; '.join(machines)}",
              f"- software: {'; '.join(software)}",
              f"- scale: {scale(table)}",
              f"- regenerate: `{regenerate_command([table])}` (the runs' summaries are kept in "
              f"results/runs/{table.name}/)",
              "- columns: metrics are mean ± sample std over seeds (n runs); Δ = mean ± std of the per-seed "
              "differences from exact over the seeds both rows ran (std from two seeds on); activation "
              "memory = bytes autograd saves for backward in one training step (device-independent), plus "
              "the largest segment recomputation in checkpointed rows; peak memory = "
              f"{peak_source_text(table)}; step = the runs' median training-step wall time (they ran one "
              "after another on a shared CPU: not compared across rows); vs exact (one loop) = the row's step "
              "time over exact's at the same settings, both timed side by side in one loop on one batch of "
              "the table's config (table_timing.md, scripts/table_timing.py; n/a where not timed). "
              "\"vs exact\" and Δ "
              "compare with the exact row of the same settings (or the table's only exact row).", ""]
    return lines


def code_text(table: Table) -> str:
    """Which commits the runs came from, e.g. ``commit 60d8a26 (clean tree), 7 runs``."""
    commits = {}
    for run in table.runs:
        key = (run.commit[:7] if run.commit else None, run.traceable)
        commits[key] = commits.get(key, 0) + 1
    parts = []
    for (commit, clean), count in sorted(commits.items(), key=lambda item: (item[0][0] is None, item[0][0] or "",
                                                                         not item[0][1])):
        runs = f"{count} run{'s' * (count != 1)}"
        if commit is None:
            parts.append(f"not recorded ({runs} made before summaries named their commit)")
        else:
            parts.append(f"commit {commit} ({'clean tree' if clean else 'UNCOMMITTED CHANGES'}), {runs}")
    return "; ".join(parts)


def regenerate_command(tables: list[Table]) -> str:
    untraced = any(not run.traceable for table in tables for run in table.runs)
    return f"{REGENERATE} {ALLOW_UNTRACED}" if untraced else REGENERATE


def refuse_untraced(tables: list[Table]) -> None:
    """SummaryError naming the first table with runs not traceable to a clean commit."""
    for table in tables:
        untraced = [run for run in table.runs if not run.traceable]
        if untraced:
            reason = ("its tree had uncommitted changes" if untraced[0].commit else "it recorded no commit")
            raise SummaryError(f"table {table.name}: {len(untraced)} of {len(table.runs)} runs are not traceable "
                               f"to a clean commit (e.g. {untraced[0].folder}: {reason}); rerun them from a "
                               f"clean checkout, or pass {ALLOW_UNTRACED} to build the table anyway (its header "
                               "says so)")


def peak_source_text(table: Table) -> str:
    sources = sorted({str(peak_source(run.summary)) for run in table.runs})
    explained = {**PEAK_SOURCES, "None": "n/a (the run recorded only CPU peak-RSS growth, allocator noise, not "
                                         "shown; runs record a fake-tensor peak since commit d00791c)"}
    return "; ".join(f"{source}: {explained[source]}" if source != "None" else explained[source]
                     for source in sources)


SCALE_KEYS = ("data.name", "model.name", "data.train_subset", "data.test_subset", "data.train_count",
              "data.image", "data.image_size", "data.size", "data.iterations", "data.batch_size",
              "trainer.max_epochs", "trainer.max_steps", "model.block_channels", "model.channels_down",
              "model.padding", "task.fid_samples", "task.sample_steps")


def scale(table: Table) -> str:
    """Run count, seeds, data/model sizes and training length, from the runs' configs."""
    runs = table.runs
    parts = [f"{len(runs)} runs", "seeds " + ", ".join(map(str, sorted({run.seed for run in runs})))]
    for key in SCALE_KEYS:
        values = list(dict.fromkeys(str(run.config[key]) for run in runs if key in run.config))
        if values:
            parts.append(f"{key}={values[0]}" if len(values) == 1 else f"{key} in {{{', '.join(values)}}}")
    wall = sum(run.summary.get("wall_time_s", 0.0) for run in runs)
    parts.append(f"total wall time of the runs {wall / 60:.1f} min")
    return "; ".join(parts)


# Tables ----------------------------------------------------------------------------------------
def paper_sets(table: Table):
    model = table.runs[0].summary["model"]
    return paper_numbers.for_table(table.task, model)


def columns(table: Table) -> list[str]:
    metrics, papers = metrics_for(table), paper_sets(table)
    headers = [*table.setting_keys, "gradient", "n"] + [metric.label for metric in metrics]
    headers.append(f"Δ {metrics[0].label} vs exact")
    for numbers in papers:
        if numbers.quantity != "peak_mib":
            headers += [numbers.label, "paper Δ vs exact"]
    headers += ["act. memory", "vs exact", "peak memory", "vs exact"]
    headers += [numbers.label for numbers in papers if numbers.quantity == "peak_mib"]
    return headers + ["step (ms)", "vs exact (one loop)"]


def markdown_row(table: Table, row: Row, timing: Timing) -> list[str]:
    metrics, reference = metrics_for(table), table.reference(row)
    cells = [*map(str, row.settings), row.gradient.label, str(len(row.runs))]
    cells += [mean_std_text(metric, row.metric(metric.key)) for metric in metrics]
    cells.append(delta_text(metrics[0], table, row))
    for numbers in paper_sets(table):
        values = paper_numbers.paper_values(numbers, row)
        if numbers.quantity == "peak_mib":
            continue
        metric = next((metric for metric in metrics if metric.key == numbers.quantity), metrics[0])
        if numbers.digits is not None:
            metric = dataclasses.replace(metric, digits=numbers.digits)
        theirs = "ref" if table.reference(row) is row and values else signed_text(
            metric, paper_delta(numbers, table, row))
        cells += [mean_std_text(metric, values or []), theirs]
    memory = [(saved_bytes(row), saved_bytes(reference) if reference else None),
              (peak_bytes(row), peak_bytes(reference) if reference else None)]
    for value, exact in memory:
        cells += [report.format_bytes(value), ratio_text(ratio(value, exact))]
    for numbers in paper_sets(table):
        if numbers.quantity == "peak_mib":
            values = paper_numbers.paper_values(numbers, row)
            cells.append(f"{mean(values):.0f}" if values else "n/a")
    step = step_seconds(row)
    cells += ["n/a" if step is None else f"{step * 1e3:.1f}", ratio_text(side_by_side(timing, table, row))]
    return cells


CSV_FIXED = ["gradient", "mode", "probes", "probe", "relu", "activations", "checkpoint", "n", "seeds"]


def csv_columns(table: Table) -> list[str]:
    names = ["table", *table.setting_keys, *CSV_FIXED]
    for metric in metrics_for(table):
        names += [f"{metric.key}_mean", f"{metric.key}_std"]
    names += [f"{metrics_for(table)[0].key}_delta_vs_exact", f"{metrics_for(table)[0].key}_delta_seed_std"]
    names += [f"paper_{numbers.quantity}" for numbers in paper_sets(table)]
    return names + ["saved_bytes", "saved_vs_exact", "peak_bytes", "peak_vs_exact", "peak_source",
                    "median_step_s", "step_vs_exact", "train_steps", "wall_time_s_total"]


def csv_row(table: Table, row: Row, timing: Timing) -> list:
    reference, gradient, metrics = table.reference(row), row.gradient, metrics_for(table)
    cells = [table.name, *row.settings, gradient.label, gradient.mode, gradient.probes, gradient.probe,
             gradient.relu, gradient.activations, gradient.checkpoint, len(row.runs), " ".join(map(str, row.seeds))]
    for metric in metrics:
        cells += list(mean_std(row.metric(metric.key)))
    cells += [delta(metrics[0], row, reference), delta_spread(metrics[0], row, reference)]
    for numbers in paper_sets(table):
        values = paper_numbers.paper_values(numbers, row)
        cells.append(mean(values) if values else None)
    saved, peak, step = saved_bytes(row), peak_bytes(row), step_seconds(row)
    cells += [saved, ratio(saved, saved_bytes(reference)) if reference else None,
              peak, ratio(peak, peak_bytes(reference)) if reference else None,
              " ".join(sorted({str(peak_source(run.summary)) for run in row.runs})),
              step, side_by_side(timing, table, row),
              mean(row.values(lambda summary: summary["train_steps"])),
              sum(row.values(lambda summary: summary["wall_time_s"]))]
    return ["" if cell is None else cell for cell in cells]


def pivot_lines(table: Table) -> list[str]:
    """With one setting (e.g. batch size): the headline metric and its gap to exact, one column per value."""
    if len(table.setting_keys) != 1:
        return []
    metric, key = metrics_for(table)[0], table.setting_keys[0]
    values = list(dict.fromkeys(row.settings[0] for row in table.rows))
    gradients = sorted({row.gradient for row in table.rows}, key=lambda gradient: gradient.sort_key())
    cell = {(row.gradient, row.settings[0]): row for row in table.rows}
    papers = [numbers for numbers in paper_sets(table) if numbers.quantity == metric.key]
    lines = [f"## {metric.label} by {key}", ""]
    rows = [[gradient.label] + [mean_std_text(metric, cell[gradient, value].metric(metric.key))
                                if (gradient, value) in cell else "" for value in values]
            for gradient in gradients]
    lines += report.markdown_table(["gradient", *map(str, values)], rows) + [""]
    title = f"## Δ {metric.label} vs exact by {key}"
    lines += [title + (" (paper's in parentheses)" if papers else ""), ""]
    rows = []
    for gradient in (gradient for gradient in gradients if not gradient.is_reference):
        cells = [gradient.label]
        for value in values:
            row = cell.get((gradient, value))
            if row is None:
                cells.append("")
                continue
            text = delta_text(metric, table, row)
            for numbers in papers:
                theirs = paper_delta(numbers, table, row)
                if theirs is not None:
                    text += f" ({signed_text(metric, theirs)})"
            cells.append(text)
        rows.append(cells)
    return lines + report.markdown_table(["gradient", *map(str, values)], rows) + [""]


def notes(table: Table) -> list[str]:
    lines = []
    baseline = baseline_for(table)
    if baseline is not None:
        values = [value for row in table.rows for value in row.metric(baseline.key)]
        if values:
            lines.append(f"- baseline: {baseline.label} = {mean_std_text(baseline, values)}")
    lines += convergence_note(table)
    for numbers in paper_sets(table):
        lines.append(f"- {numbers.label}: {numbers.source}")
    return lines + [""] if lines else []


BEST_STEP = "val/best_step"  # logged by tasks that keep a best iterate (DIP)


def convergence_note(table: Table) -> list[str]:
    """For a task that keeps its best iterate: the runs whose best iterate is their last training step
    (still improving when they stopped, so not converged), by row."""
    runs = [(row, run) for row in table.rows for run in row.runs if BEST_STEP in run.summary["metrics"]]
    if not runs:
        return []
    last = {}
    for row, run in runs:  # the last training step's output (step train_steps - 1) or the final validation's
        if run.summary["metrics"][BEST_STEP] >= run.summary["train_steps"] - 1:
            last[row.gradient.label] = last.get(row.gradient.label, 0) + 1
    if not last:
        return [f"- best iterate: before the last step in all {len(runs)} runs (each stopped improving "
                "before training ended)"]
    rows = "; ".join(f"{label}: {count}" for label, count in last.items())
    return [f"- best iterate = the last step in {sum(last.values())} of {len(runs)} runs ({rows}): those "
            "runs were still improving when training stopped, so their rows are not converged"]


def markdown(table: Table, figures: list[str], timing: Timing) -> str:
    lines = provenance(table)
    lines += report.markdown_table(columns(table), [markdown_row(table, row, timing) for row in table.rows]) + [""]
    lines += notes(table)
    lines += pivot_lines(table)
    if figures:
        lines += ["Figures: " + ", ".join(f"[{name}]({name})" for name in figures), ""]
    return "\n".join(lines)


# Headline --------------------------------------------------------------------------------------
HEADLINE_COLUMNS = ["table", "task", "metric", "exact", "gradient", "XConv", "Δ vs exact",
                    "Δ 95% CI (paired by seed)", "act. memory factor (exact / XConv)",
                    "step time ratio (side by side)", "settings"]


def headline_rows(table: Table, timing: Timing) -> list[tuple[list[str], list]]:
    """Against the table's exact row: its r=16 channel row, then its r=16 channel + 1-bit ReLU row (each
    the one with most seeds, when the table has several settings); as (markdown cells, csv values)."""
    found = []
    for relu in ("exact", "bit"):
        candidates = [row for row in table.rows
                      if row.gradient.is_xconv and row.gradient.probes == HEADLINE_PROBES
                      and row.gradient.probe == "channel" and row.gradient.relu == relu
                      and not row.gradient.is_checkpointed and table.reference(row) is not None]
        if not candidates:
            continue
        row = max(candidates, key=lambda row: len(row.runs))  # max keeps the first of equals
        reference, metric = table.reference(row), metrics_for(table)[0]
        change = delta(metric, row, reference)
        spread = delta_spread(metric, row, reference)
        interval = delta_interval(metric, row, reference)
        memory = ratio(saved_bytes(reference), saved_bytes(row))
        step = side_by_side(timing, table, row)  # never across the runs
        settings = table.settings_text(row) or "-"
        text = [table.name, table.task, metric.label, mean_std_text(metric, reference.metric(metric.key)),
                row.gradient.label, mean_std_text(metric, row.metric(metric.key)),
                signed_text(metric, change, spread), interval_text(metric, interval), ratio_text(memory),
                ratio_text(step), settings]
        values = [table.name, table.task, metric.key, mean(reference.metric(metric.key)), row.gradient.label,
                  mean(row.metric(metric.key)), change, spread, *(interval or (None, None)), memory, step, settings]
        found.append((text, values))
    return found


def headline(tables: list[Table], timing: Timing) -> tuple[str, str]:
    found = [(table, headline_rows(table, timing)) for table in tables]
    rows = [result for _, results in found for result in results]
    missing = [table.name for table, results in found if not results]
    lines = [f"# Headline: XConv with {HEADLINE_PROBES} channel probes against exact backprop, per table", "",
             f"- regenerate: `{regenerate_command(tables)}`",
             "- from the tables in this folder (each states its runs' commands, dates, machine and scale); "
             "metric: mean ± std over the row's seeds; Δ: mean ± std of the per-seed differences, and its 95% "
             "interval (Student t over the paired seeds; a gap whose interval includes 0 is not shown by "
             "these runs); the "
             "activation memory factor is exact / XConv (bytes saved for backward per step; > 1 = XConv "
             "keeps less; peak memory stays in the tables), the step time ratio is XConv / exact measured "
             "side by side in one loop on the table's config and one batch (table_timing.md; n/a where not "
             "measured); where a table has several "
             f"settings, the r={HEADLINE_PROBES} row with the most seeds is used.", ""]
    lines += report.markdown_table(HEADLINE_COLUMNS, [text for text, _ in rows]) + [""]
    if missing:
        lines += [f"- no r={HEADLINE_PROBES} channel row (or no exact row) in: {', '.join(missing)}", ""]
    csv = report.csv_text(["table", "task", "metric", "exact_mean", "gradient", "xconv_mean", "delta",
                           "delta_seed_std", "delta_ci95_low", "delta_ci95_high", "saved_factor", "step_ratio",
                           "settings"],
                          [["" if cell is None else cell for cell in values] for _, values in rows])
    return "\n".join(lines), csv


# Copying runs ----------------------------------------------------------------------------------
def copy_runs(tables: list[Table], destination: Path) -> list[Path]:
    """Copy every run's summary.json and csv/metrics.csv, and the last picture of each row's first seed,
    to ``destination/<table>/<run>/``; return the new run folders."""
    folders = []
    for table in tables:
        for row in table.rows:
            for run in row.runs:
                target = destination / table.name / run_folder_name(table, row, run)
                if target.resolve() == run.folder.resolve():
                    folders.append(target)
                    continue
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run.folder / SUMMARY, target / SUMMARY)
                if run.metrics_csv.is_file():
                    (target / METRICS_CSV).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(run.metrics_csv, target / METRICS_CSV)
                picture = table_figures.last_picture(run.folder) if run is row.runs[0] else None
                if picture is not None:  # the picture the images figure shows: the row's first seed
                    (target / "images").mkdir(exist_ok=True)
                    shutil.copyfile(picture, target / "images" / picture.name)
                folders.append(target)
        stale = sorted(set((destination / table.name).iterdir()) - set(folders))
        for folder in stale:
            print(f"warning: {folder} is not one of this table's runs (left in place)", file=sys.stderr)
    return folders


# Main ------------------------------------------------------------------------------------------
def write_table(table: Table, out: Path, figures: bool, timing: Timing) -> list[Path]:
    """The table's .md and .csv (which list its figures either way) and, with ``figures``, its PNGs."""
    drawn = table_figures.write_figures(table, out) if figures else []
    rows = [csv_row(table, row, timing) for row in table.rows]
    written = [report.write_text(out / f"{table.name}.md", markdown(table, table_figures.figure_names(table), timing)),
               report.write_text(out / f"{table.name}.csv", report.csv_text(csv_columns(table), rows))]
    return written + drawn


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", default=[str(RESULTS / "runs")],
                        help="run or multirun folders, searched for summary.json (default: results/runs)")
    parser.add_argument("--out", default=str(RESULTS), help="where the tables and figures go")
    parser.add_argument("--copy-runs", nargs="?", const=str(RESULTS / "runs"), default=None,
                        metavar="DIR", help="copy the runs' summaries, curves and last pictures to "
                                            "DIR/<table>/<run>/ first (default DIR: results/runs) and "
                                            "build the tables from the copies")
    parser.add_argument("--headline", action="store_true", help="also write headline.md/.csv")
    parser.add_argument("--timing", default=str(TIMING), help="the side-by-side step time ratios of the rows and "
                                                              f"the headline (default {TIMING}, from "
                                                              "scripts/table_timing.py)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument(ALLOW_UNTRACED, action="store_true",
                        help="build tables from runs of a dirty tree or with no recorded commit (refused otherwise)")
    return parser.parse_args(argv)


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    try:
        tables = load_tables(args.folders)
        if not args.allow_untraced:
            refuse_untraced(tables)
        if args.copy_runs:
            tables = load_tables(copy_runs(tables, Path(args.copy_runs)))
    except SummaryError as error:
        raise SystemExit(f"error: {error}")
    out, timing = Path(args.out), side_by_side_ratios(Path(args.timing))
    written = [path for table in tables for path in write_table(table, out, not args.no_figures, timing)]
    if args.headline:
        text, csv = headline(tables, timing)
        written += [report.write_text(out / "headline.md", text), report.write_text(out / "headline.csv", csv)]
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
