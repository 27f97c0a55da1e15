"""Figures of a results table (scripts/make_tables.py): metric, memory and trade-off vs probes,
training curves per mode, and the runs' last pictures.

XConv rows form *series*: one per settings value (e.g. batch size) and probe
kind / 1-bit ReLU / checkpointing variant, plotted against the probe count.
Exact rows are horizontal dashed lines (or stars) in the colour of their settings.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from . import paper_numbers
from . import report
from .run_summaries import Row, Table, mean_std, metrics_for, peak_memory, val_curve_for

MIB = 2 ** 20
PICTURE_STEP = re.compile(r"_step(\d+)\.png$")
MARKERS = "osD^vP*X"
LINESTYLES = ("-", "--", "-.", ":")
SMOOTHING = 5  # logged points in the moving average of the training loss
DPI = 120  # report.save_figure's resolution
SHARED_PANEL_ROWS = 8  # tables with at most this many rows draw their training curves in one panel


def last_picture(folder: Path) -> Path | None:
    """The run's last test picture (``images/test_*_step<N>.png``, highest N), else its last validation one."""
    for prefix in ("test_", "val_"):
        pictures = [(int(match.group(1)), path.name, path) for path in (folder / "images").glob(f"{prefix}*.png")
                    if (match := PICTURE_STEP.search(path.name))]
        if pictures:
            return max(pictures)[2]
    return None


# Series ----------------------------------------------------------------------------------------
def _mean(row: Row, get) -> float | None:
    return mean_std(row.values(get))[0]


def _saved(row: Row) -> float | None:
    return _mean(row, lambda summary: summary["activation_memory"]["saved_bytes"])


def _peak(row: Row) -> float | None:
    return _mean(row, peak_memory)


def _variant(row: Row) -> tuple:
    gradient = row.gradient
    return (gradient.probe, gradient.relu, gradient.activations, gradient.checkpoint)


def _variant_label(row: Row) -> str:
    label = row.gradient.label
    return re.sub(r"^XConv r=\d+ ", "XConv ", label)


class Styles:
    """Colour per settings value (or per variant when the table has one setting value), marker per variant."""

    def __init__(self, table: Table):
        self.settings = list(dict.fromkeys(row.settings for row in table.rows))
        self.variants = list(dict.fromkeys(_variant(row) for row in table.rows if not row.gradient.is_reference))
        self.by_settings = len(self.settings) > 1
        self.colors = report.pyplot().get_cmap("tab10").colors
        self.table = table

    def color(self, row: Row):
        if row.gradient.is_reference and not self.by_settings:
            return "black"
        index = (self.settings.index(row.settings) if self.by_settings
                 else self.variants.index(_variant(row)) if _variant(row) in self.variants else 0)
        return self.colors[index % len(self.colors)]

    def marker(self, row: Row) -> str:
        return MARKERS[self.variants.index(_variant(row)) % len(MARKERS)] if _variant(row) in self.variants else "*"

    def linestyle(self, row: Row) -> str:
        if not self.by_settings or _variant(row) not in self.variants:
            return "-"
        return LINESTYLES[self.variants.index(_variant(row)) % len(LINESTYLES)]

    def label(self, row: Row) -> str:
        settings = self.table.settings_text(row)
        name = _variant_label(row) if row.gradient.is_xconv else row.gradient.label
        return f"{name}, {settings}" if settings else name


def series(table: Table) -> list[list[Row]]:
    """XConv rows grouped by settings and variant, each ordered by probes."""
    groups: dict[tuple, list[Row]] = {}
    for row in table.rows:
        if row.gradient.is_xconv:
            groups.setdefault((row.settings, _variant(row)), []).append(row)
    return [sorted(rows, key=lambda row: row.gradient.probes) for rows in groups.values()]


def exact_rows(table: Table) -> list[Row]:
    return [row for row in table.rows if not row.gradient.is_xconv]


def _probe_axis(axis) -> None:
    lowest = axis.dataLim.x0  # +inf when nothing finite was drawn (e.g. no exact row to compare with)
    if math.isfinite(lowest) and lowest > 0:
        axis.set_xscale("log", base=2)
    axis.set_xlabel("probes r (log2)")
    axis.grid(True, alpha=0.3)


def _legend(axis) -> None:
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=7, loc="best")


# Figures ---------------------------------------------------------------------------------------
def metric_figure(table: Table, path: Path) -> Path:
    """Headline metric vs probes (mean ± std over seeds) and its change against exact, with the paper's."""
    plt, styles, metric = report.pyplot(), Styles(table), metrics_for(table)[0]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for rows in series(table):
        probes = [row.gradient.probes for row in rows]
        stats = [mean_std(row.metric(metric.key)) for row in rows]
        means = [m * metric.scale if m is not None else math.nan for m, _ in stats]
        errors = [(s or 0.0) * metric.scale for _, s in stats]
        style = dict(color=styles.color(rows[0]), marker=styles.marker(rows[0]), linestyle=styles.linestyle(rows[0]))
        left.errorbar(probes, means, yerr=errors, capsize=3, label=styles.label(rows[0]), **style)
        changes = []
        for row, average in zip(rows, means):
            reference = table.reference(row)
            exact = mean_std(reference.metric(metric.key))[0] if reference else None
            changes.append(average - exact * metric.scale if exact is not None else math.nan)
        right.plot(probes, changes, label=styles.label(rows[0]), **style)
    for row in exact_rows(table):
        average = mean_std(row.metric(metric.key))[0]
        if average is not None:
            left.axhline(average * metric.scale, color=styles.color(row), linestyle="--", linewidth=1,
                         label=styles.label(row) + (f" ({average * metric.scale:.{metric.digits}f})"))
    right.axhline(0.0, color="black", linewidth=0.8)
    _paper_changes(table, metric, styles, right)
    left.set_ylabel(metric.label)
    right.set_ylabel(f"Δ {metric.label} vs exact")
    left.set_title(f"{table.name}: {metric.label} vs probes")
    right.set_title("change against exact (paper dotted, where known)")
    for axis in (left, right):
        _probe_axis(axis)
        _legend(axis)
    return report.save_figure(figure, path)


def _paper_changes(table: Table, metric, styles: Styles, axis) -> None:
    """The paper's change against exact per series, dotted; on a right-hand axis of its own when its
    scale differs from ours by more than 10x (e.g. FID through a different feature extractor)."""
    curves = []
    for numbers in paper_numbers.for_table(table.task, table.runs[0].summary["model"]):
        if numbers.quantity != metric.key:
            continue
        for rows in series(table):
            points = []
            for row in rows:
                theirs, reference = paper_numbers.paper_values(numbers, row), table.reference(row)
                exact = paper_numbers.paper_values(numbers, reference) if reference else None
                if theirs and exact:
                    points.append((row.gradient.probes, (mean_std(theirs)[0] - mean_std(exact)[0]) * metric.scale))
            if points:
                curves.append((rows[0], points))
    if not curves:
        return
    ours = max((abs(y) for line in axis.get_lines() for y in line.get_ydata() if math.isfinite(y)), default=0.0)
    theirs = max(abs(y) for _, points in curves for _, y in points)
    target = axis
    if ours and theirs and not 0.1 <= theirs / ours <= 10:
        target = axis.twinx()
        target.set_ylabel(f"paper Δ {metric.label} vs exact (dotted)")
    for row, points in curves:
        target.plot(*zip(*points), color=styles.color(row), linestyle=":", marker="x",
                    label="paper: " + styles.label(row))
    if target is not axis:  # the same zero on both axes, ours and the paper's largest change level
        low, high = axis.get_ylim()
        target.set_ylim(low * theirs / ours, high * theirs / ours)
        _legend(target)


def memory_figure(table: Table, path: Path) -> Path:
    """Activation memory and peak memory relative to exact vs probes (the paper's peak where known)."""
    plt, styles = report.pyplot(), Styles(table)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for axis, get, title in ((axes[0], _saved, "activation memory (saved for backward) / exact"),
                             (axes[1], _peak, "peak memory / exact")):
        for rows in series(table):
            points = []
            for row in rows:
                reference = table.reference(row)
                value, exact = get(row), get(reference) if reference else None
                if value is not None and exact:
                    points.append((row.gradient.probes, value / exact))
            if points:
                axis.plot(*zip(*points), color=styles.color(rows[0]), marker=styles.marker(rows[0]),
                          linestyle=styles.linestyle(rows[0]), label=styles.label(rows[0]))
        for row in exact_rows(table):
            reference = table.reference(row)
            if reference is not None and reference is not row and get(row) is not None and get(reference):
                axis.axhline(get(row) / get(reference), color=styles.color(row), linestyle="-.", linewidth=1,
                             label=styles.label(row))
        axis.axhline(1.0, color="black", linestyle="--", linewidth=1, label="exact")
        axis.set_yscale("log")
        axis.set_title(title, fontsize=10)
        _probe_axis(axis)
    for numbers in paper_numbers.for_table(table.task, table.runs[0].summary["model"]):
        if numbers.quantity != "peak_mib":
            continue
        exact = numbers.values.get((0,))
        if exact:
            points = sorted((key[0], values[0] / exact[0]) for key, values in numbers.values.items() if key[0] > 0)
            axes[1].plot(*zip(*points), color="grey", linestyle=":", marker="x", label="paper (GPU)")
    for axis in axes:
        _legend(axis)
    return report.save_figure(figure, path)


def tradeoff_figure(table: Table, path: Path) -> Path:
    """Headline metric vs activation memory and vs peak memory; the paper's curve where it has both."""
    plt, styles, metric = report.pyplot(), Styles(table), metrics_for(table)[0]
    papers = paper_numbers.for_table(table.task, table.runs[0].summary["model"])
    paper_metric = next((numbers for numbers in papers if numbers.quantity == metric.key), None)
    paper_peak = next((numbers for numbers in papers if numbers.quantity == "peak_mib"), None)
    both = paper_metric is not None and paper_peak is not None
    figure, axes = plt.subplots(1, 3 if both else 2, figsize=(16 if both else 11, 4.2),
                                layout="constrained")

    def value(row):
        average = mean_std(row.metric(metric.key))[0]
        return None if average is None else average * metric.scale

    for axis, get, name in ((axes[0], _saved, "activation memory (MiB)"), (axes[1], _peak, "peak memory (MiB)")):
        for rows in series(table):
            points = [(get(row) / MIB, value(row), row.gradient.probes) for row in rows
                      if get(row) is not None and value(row) is not None]
            if not points:
                continue
            axis.plot([p[0] for p in points], [p[1] for p in points], color=styles.color(rows[0]),
                      marker=styles.marker(rows[0]), linestyle=styles.linestyle(rows[0]), label=styles.label(rows[0]))
            for x, y, probes in points:
                axis.annotate(f"{probes}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        for row in exact_rows(table):
            if get(row) is not None and value(row) is not None:
                axis.plot([get(row) / MIB], [value(row)], color=styles.color(row), marker="*", markersize=12,
                          linestyle="none", label=styles.label(row))
        axis.set_xlabel(name)
        axis.set_ylabel(metric.label)
        axis.grid(True, alpha=0.3)
        _legend(axis)
    axes[0].set_title(f"{table.name}: {metric.label} vs memory (labels: r)", fontsize=10)
    if both:
        keys = sorted(set(paper_metric.values) & set(paper_peak.values))
        points = [(mean_std(paper_peak.values[key])[0], mean_std(paper_metric.values[key])[0], key) for key in keys]
        axes[2].plot([p[0] for p in points if p[2] != (0,)], [p[1] for p in points if p[2] != (0,)],
                     color="grey", marker="x", linestyle=":", label="paper XConv")
        for x, y, key in points:
            if key == (0,):
                axes[2].plot([x], [y], color="black", marker="*", markersize=12, linestyle="none",
                             label="paper exact")
            else:
                axes[2].annotate(str(key[0]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
        axes[2].set_xlabel("paper peak memory (MiB, GPU)")
        axes[2].set_ylabel(paper_metric.label)
        axes[2].set_title(paper_metric.source, fontsize=8)
        axes[2].grid(True, alpha=0.3)
        _legend(axes[2])
    return report.save_figure(figure, path)


def read_curve(path: Path, key: str) -> dict[int, float]:
    """``step -> value`` of one column of a Lightning CSVLogger metrics.csv (rows without it skipped)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {int(record["step"]): float(record[key]) for record in csv.DictReader(handle)
                if record.get(key) not in (None, "")}


def mean_curve(row: Row, key: str) -> tuple[list[int], list[float]]:
    """The curve averaged over the row's seeds, on the steps every seed logged."""
    curves = [read_curve(run.metrics_csv, key) for run in row.runs]
    curves = [curve for curve in curves if curve]
    if not curves:
        return [], []
    steps = sorted(set.intersection(*(set(curve) for curve in curves)))
    return steps, [sum(curve[step] for curve in curves) / len(curves) for step in steps]


def moving_average(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def batch_size(row: Row) -> int:
    """The training batch size the row's runs recorded (1 when not recorded)."""
    sizes = row.values(lambda summary: summary["time"]["batch_size"])
    return int(sizes[0]) if sizes else 1


def curves_figure(table: Table, path: Path) -> Path:
    """Training loss and the validation metric vs training samples seen (step x batch), one line per row:
    in one panel when the table has at most SHARED_PANEL_ROWS rows, else one panel per settings value."""
    val_key = val_curve_for(table)
    if len(table.rows) <= SHARED_PANEL_ROWS:
        panels = [(table.name, table.rows)]
    else:
        values = list(dict.fromkeys(row.settings for row in table.rows))
        panels = [(table.settings_text(rows[0]) or table.name, rows)
                  for rows in ([row for row in table.rows if row.settings == value] for value in values)]
    plt = report.pyplot()
    figure, axes = plt.subplots(2, len(panels), figsize=(5.6 * len(panels), 7.5), squeeze=False,
                                layout="constrained")
    colors = plt.get_cmap("viridis")
    for column, (title, rows) in enumerate(panels):
        for index, row in enumerate(rows):
            color = "black" if row.gradient.is_reference else colors(index / max(1, len(rows) - 1) * 0.9)
            label = styles_label(table, row, shared=len(panels) == 1)
            steps, losses = mean_curve(row, "train/loss")
            seen = [step * batch_size(row) for step in steps]
            axes[0][column].plot(seen, moving_average(losses, SMOOTHING), color=color, linewidth=1, label=label)
            steps, scores = mean_curve(row, val_key)
            seen = [step * batch_size(row) for step in steps]
            axes[1][column].plot(seen, scores, color=color, marker=".", linewidth=1, label=label)
        axes[0][column].set_title(f"{title}: training loss (moving average of {SMOOTHING} logs)", fontsize=9)
        axes[0][column].set_yscale("log")
        axes[1][column].set_title(f"{title}: {val_key} (mean over seeds)", fontsize=9)
        for axis in axes[:, column]:
            axis.set_xlabel("training samples seen (optimiser step x batch size)")
            axis.grid(True, alpha=0.3)
            _legend(axis)
    return report.save_figure(figure, path)


def styles_label(table: Table, row: Row, shared: bool) -> str:
    """The row's gradient, with its settings when rows of several settings share a panel."""
    settings = table.settings_text(row) if shared else ""
    return f"{row.gradient.label}, {settings}" if settings else row.gradient.label


def images_figure(table: Table, path: Path) -> Path:
    """The last picture of each row's first seed, titled with its mode and settings."""
    pictures = [(row, last_picture(row.runs[0].folder)) for row in table.rows]
    pictures = [(row, picture) for row, picture in pictures if picture is not None]
    plt = report.pyplot()
    import matplotlib.image as mpimg

    images = [mpimg.imread(str(picture)) for _, picture in pictures]
    aspect = images[0].shape[1] / images[0].shape[0]  # width / height
    columns = 1 if aspect >= 2 else min(3, len(pictures))  # wide strips one below the other
    width = min(12.0, max(3.5, images[0].shape[1] * 1.5 / DPI))  # inches: ~1.5 figure pixels per pixel
    lines = math.ceil(len(pictures) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(width * columns, (width / aspect + 0.5) * lines),
                                squeeze=False, layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for axis, (row, picture), image in zip(axes.flat, pictures, images):
        axis.imshow(image, interpolation="nearest")
        settings = table.settings_text(row)
        axis.set_title(f"{row.gradient.label}{', ' + settings if settings else ''}, seed {row.runs[0].seed}\n"
                       f"{picture.name}", fontsize=8)
    return report.save_figure(figure, path)


def has_curves(table: Table) -> bool:
    return any(read_curve(run.metrics_csv, "train/loss") for run in table.runs)


def has_pictures(table: Table) -> bool:
    return any(last_picture(row.runs[0].folder) is not None for row in table.rows)


FIGURES = {"metric": (metric_figure, lambda table: True), "memory": (memory_figure, lambda table: True),
           "tradeoff": (tradeoff_figure, lambda table: True), "curves": (curves_figure, has_curves),
           "images": (images_figure, has_pictures)}


def figure_names(table: Table) -> list[str]:
    """The file names of the table's figures: ``<table>_<kind>.png`` for every kind it has data for."""
    return [f"{table.name}_{kind}.png" for kind, (_, has_data) in FIGURES.items() if has_data(table)]


def write_figures(table: Table, out: Path) -> list[Path]:
    """Draw the figures :func:`figure_names` lists, into ``out``."""
    return [FIGURES[kind][0](table, out / f"{table.name}_{kind}.png") for kind, (_, has_data) in FIGURES.items()
            if has_data(table)]
