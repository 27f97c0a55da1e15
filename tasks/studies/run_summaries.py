"""Harness runs (``summary.json`` files) loaded and grouped into table rows.

A *run* is one folder written by ``python -m xconv.run``: ``summary.json``,
``csv/metrics.csv`` and ``images/``. Runs belong to a *table*: the experiment
named in their command (``experiment=cpu_table1_fashion``), else their task.
Within a table, a *row* gathers the runs (seeds) that share

* the gradient: exact, XConv (probes, probe kind), 1-bit ReLUs, checkpointing;
* the *settings*: every config value that differs between runs of the table
  (batch size, learning rate, ...), except seeds and bookkeeping keys.

Everything here is read from the summaries, so the same summaries always give
the same rows in the same order. What a table shows of a task (its metrics, headline
first, its validation curve and its baseline) is what the task class the runs name
(``config.task._target_``) declares (:class:`xconv_harness.base.XConvTask`).
"""
from __future__ import annotations

import json
import math
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .. import summary as summary_file
from ..table_metric import Metric

SUMMARY = summary_file.SUMMARY_FILE
METRICS_CSV = Path("csv") / "metrics.csv"
PROBE_ORDER = ("channel", "gaussian", "rademacher", "orthogonal")
# Config keys that never define a row: seeds, paths, logging and machine bookkeeping.
IGNORED_KEYS = {"seed", "out_dir", "threads", "device", "probes", "probe", "relu", "activations", "checkpoint",
                "ckpt_path", "ckpt_every_n_steps", "memory_steps", "trainer.accelerator",
                "trainer.enable_progress_bar", "trainer.enable_model_summary",
                "trainer.log_every_n_steps", "data.root", "data.source", "data.num_workers",
                "task.fid_cache_dir"}
IGNORED_PREFIXES = ("logger.", "hydra.")


class SummaryError(ValueError):
    """A summary file that cannot be used, with its path in the message."""


@dataclass(frozen=True)
class Gradient:
    """How a run computed gradients: the part of a row's identity that is not a setting."""

    mode: str          # exact | xconv | checkpoint | xconv+checkpoint
    probes: int
    probe: str
    relu: str          # exact | bit
    checkpoint: str    # none | sqrt | every:K | budget:...
    activations: str = "exact"  # exact | lossless | compact (what the other layers keep)

    @classmethod
    def of(cls, summary: dict) -> "Gradient":
        gradient = summary["gradient"]
        mode = gradient["mode"]
        probes = int(gradient["probes"])
        return cls(mode=mode, probes=probes if "xconv" in mode else 0,
                   probe=gradient["probe"] if "xconv" in mode else "",
                   relu=gradient.get("relu", "exact"), checkpoint=gradient.get("checkpoint") or "none",
                   activations=gradient.get("activations", "exact"))

    @property
    def is_xconv(self) -> bool:
        return "xconv" in self.mode

    @property
    def is_checkpointed(self) -> bool:
        return "checkpoint" in self.mode

    @property
    def is_reference(self) -> bool:
        """Plain exact backprop: what every ratio in a table is taken against."""
        return (not self.is_xconv and not self.is_checkpointed and self.relu == "exact"
                and self.activations == "exact")

    @property
    def label(self) -> str:
        """``exact``, ``exact + 1-bit ReLU``, ``XConv r=16 channel``, ``XConv r=16 channel + 1-bit ReLU``,
        ``checkpoint sqrt``, ``XConv r=16 channel + checkpoint sqrt``..."""
        parts = [f"XConv r={self.probes} {self.probe}" if self.is_xconv else ""]
        if self.relu == "bit":
            parts += ["1-bit ReLU"] if parts[0] else ["exact", "1-bit ReLU"]
        if self.activations != "exact":
            parts += [f"{self.activations} activations"] if any(parts) else ["exact", f"{self.activations} activations"]
        if self.is_checkpointed:
            parts.append(f"checkpoint {self.checkpoint}")
        text = " + ".join(part for part in parts if part)
        return text or "exact"

    @property
    def slug(self) -> str:
        """A folder-name form of the label: ``exact``, ``xconv-r16-channel-bitrelu``, ``checkpoint-sqrt``."""
        parts = [f"xconv-r{self.probes}-{self.probe}" if self.is_xconv else ""]
        if self.relu == "bit":
            parts += ["bitrelu"] if parts[0] else ["exact", "bitrelu"]
        if self.activations != "exact":
            parts += [self.activations] if any(parts) else ["exact", self.activations]
        if self.is_checkpointed:
            parts.append("checkpoint-" + self.checkpoint.replace(":", "").replace("/", ""))
        return "-".join(part for part in parts if part) or "exact"

    def sort_key(self) -> tuple:
        family = (self.is_xconv, self.is_checkpointed)
        kind = PROBE_ORDER.index(self.probe) if self.probe in PROBE_ORDER else len(PROBE_ORDER)
        activations = ("exact", "lossless", "compact").index(self.activations) if self.activations in (
            "exact", "lossless", "compact") else 3
        return (family, self.relu != "exact", activations, kind, self.probe, self.probes, self.checkpoint)


@dataclass
class Run:
    folder: Path
    summary: dict
    table: str
    gradient: Gradient
    config: dict  # flattened: {"data.batch_size": 128, ...}

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def metrics_csv(self) -> Path:
        return self.folder / METRICS_CSV

    @property
    def commit(self) -> str | None:
        """The git commit the run's harness came from (None: not recorded, or not a checkout)."""
        return (self.summary.get("code") or {}).get("commit")

    @property
    def traceable(self) -> bool:
        """Whether the run came from a clean checkout at a recorded commit."""
        code = self.summary.get("code") or {}
        return bool(code.get("commit")) and code.get("clean") is True


@dataclass
class Row:
    """The runs of one table that differ only in their seed."""

    settings: tuple  # values of the table's setting keys, in key order
    gradient: Gradient
    runs: list[Run] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def values_by_seed(self, get) -> dict[int, float]:
        """``{seed: get(summary)}`` over the runs, skipping runs where it is missing or not finite."""
        found = {}
        for run in self.runs:
            try:
                value = get(run.summary)
            except (KeyError, TypeError):
                continue
            if value is not None and math.isfinite(float(value)):
                found[run.seed] = float(value)
        return found

    def values(self, get) -> list[float]:
        """``get(summary)`` for each run (in seed order), skipping runs where it is missing or not finite."""
        return list(self.values_by_seed(get).values())

    def metric_by_seed(self, key: str) -> dict[int, float]:
        return self.values_by_seed(lambda summary: summary["metrics"][key])

    def metric(self, key: str) -> list[float]:
        return list(self.metric_by_seed(key).values())


@dataclass
class Table:
    name: str
    task: str
    setting_keys: list[str]
    rows: list[Row]
    task_class: type | None = None  # the class the runs name (config.task._target_); None: unknown

    @property
    def runs(self) -> list[Run]:
        return [run for row in self.rows for run in row.runs]

    def reference(self, row: Row) -> Row | None:
        """The exact row a row's ratios are taken against: same settings, else the table's only exact row."""
        exact = [other for other in self.rows if other.gradient.is_reference]
        same = [other for other in exact if other.settings == row.settings]
        if same:
            return same[0]
        return exact[0] if len(exact) == 1 else None

    def settings_text(self, row: Row) -> str:
        return ", ".join(f"{key.split('.')[-1]}={value}" for key, value in zip(self.setting_keys, row.settings))


#: Peak-memory figures a table shows, and what each is. CPU peak-RSS growth (older runs' only figure)
#: measures the allocator, not the method, and is not shown.
PEAK_SOURCES = {
    "fake_tensor_mem_tracker": "one training step of the run's model at its first batch's inputs on fake "
                               "tensors (xconv.memory.fake_peak: PyTorch's MemTracker; parameters, gradients, "
                               "optimiser state, activations and temporaries; nothing allocated)",
    "cuda_max_memory_allocated": "torch.cuda.max_memory_allocated over one training step after a warm-up step",
}


def peak_source(summary: dict) -> str | None:
    """Which of :data:`PEAK_SOURCES` the run's peak figure comes from (None: none it has is shown)."""
    if (summary.get("fake_peak") or {}).get("bytes") is not None:
        return "fake_tensor_mem_tracker"
    source = (summary.get("peak_memory") or {}).get("source")
    return source if source in PEAK_SOURCES else None


def peak_memory(summary: dict) -> float | None:
    """The run's peak memory in bytes from :func:`peak_source` (its fake peak first), or None."""
    source = peak_source(summary)
    if source == "fake_tensor_mem_tracker":
        return summary["fake_peak"]["bytes"]
    return summary["peak_memory"]["bytes"] if source is not None else None


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for the std of a single value)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value, sort_keys=True) if isinstance(value, list) else value
    return flat


def table_name(summary: dict) -> str:
    """The experiment named in the run's command (``experiment=X``), else the task."""
    for token in shlex.split(summary.get("command", "")):
        key, _, value = token.partition("=")
        if key.lstrip("+") == "experiment" and value:
            if "," in value:
                raise SummaryError(f"experiment={value}: a sweep over experiments; run one experiment "
                                   "per command so each table is one experiment")
            return value
    return summary["task"]


def find_summaries(folders: list[Path | str]) -> list[Path]:
    """Every summary.json under the folders (or the files themselves), sorted, each once."""
    found = set()
    for folder in map(Path, folders):
        if folder.is_file() and folder.name == SUMMARY:
            found.add(folder.resolve())
        elif folder.is_dir():
            found.update(path.resolve() for path in folder.rglob(SUMMARY))
        else:
            raise SummaryError(f"{folder}: no such run folder (give a run or multirun folder, "
                               f"or a {SUMMARY} file)")
    return sorted(found)


def load_run(path: Path) -> Run:
    try:
        summary = summary_file.read(path)
        return Run(folder=path.parent, summary=summary, table=table_name(summary),
                   gradient=Gradient.of(summary), config=flatten(summary["config"]))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SummaryError(f"{path}: not a harness summary ({type(error).__name__}: {error})") from error


def setting_keys(runs: list[Run]) -> list[str]:
    """Config keys (present in every run) whose values differ between the runs, bookkeeping excluded."""
    common = set.intersection(*(set(run.config) for run in runs))
    varying = [key for key in common
               if key not in IGNORED_KEYS and not key.startswith(IGNORED_PREFIXES)
               and key.split(".")[-1] != "seed"
               and len({json.dumps(run.config[key]) for run in runs}) > 1]
    return sorted(varying)


def _sortable(value) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def build_table(name: str, runs: list[Run]) -> Table:
    tasks = sorted({run.summary["task"] for run in runs})
    if len(tasks) != 1:
        raise SummaryError(f"table {name}: runs of several tasks ({', '.join(tasks)}); "
                           "tables are one task each")
    keys = setting_keys(runs)
    rows: dict[tuple, Row] = {}
    for run in runs:
        settings = tuple(run.config[key] for key in keys)
        row = rows.setdefault((settings, run.gradient), Row(settings, run.gradient))
        clash = [other for other in row.runs if other.seed == run.seed]
        if clash:
            raise SummaryError(f"table {name}: two runs with the same settings and seed {run.seed}: "
                               f"{clash[0].folder} and {run.folder}")
        row.runs.append(run)
    for row in rows.values():
        row.runs.sort(key=lambda run: run.seed)
    ordered = sorted(rows.values(), key=lambda row: (tuple(map(_sortable, row.settings)),
                                                     row.gradient.sort_key()))
    return Table(name=name, task=tasks[0], setting_keys=keys, rows=ordered,
                 task_class=summary_file.task_class(ordered[0].runs[0].summary))


def load_tables(folders: list[Path | str]) -> list[Table]:
    """The tables of every run under ``folders``, sorted by name."""
    paths = find_summaries(folders)
    if not paths:
        raise SummaryError(f"no {SUMMARY} under {', '.join(map(str, folders))}")
    by_table: dict[str, list[Run]] = {}
    for path in paths:
        run = load_run(path)
        by_table.setdefault(run.table, []).append(run)
    return [build_table(name, runs) for name, runs in sorted(by_table.items())]


def run_folder_name(table: Table, row: Row, run: Run) -> str:
    """A stable, unique folder name for a run inside its table: gradient, settings, seed."""
    settings = "_".join(f"{key.split('.')[-1]}{value}" for key, value in zip(table.setting_keys, row.settings))
    name = "_".join(part for part in (row.gradient.slug, settings, f"seed{run.seed}") if part)
    return "".join(char if char.isalnum() or char in "-_.=" else "-" for char in name)


def metrics_for(table: Table) -> tuple[Metric, ...]:
    """The metrics the table's task declares (headline first), or every ``test/`` metric of the runs
    for a task that declares none."""
    declared = getattr(table.task_class, "table_metrics", ())
    if declared:
        return tuple(declared)
    keys = sorted({key for run in table.runs for key in run.summary["metrics"] if key.startswith("test/")})
    return tuple(Metric(key, key, digits=4) for key in keys)


def baseline_for(table: Table) -> Metric | None:
    """The non-learned baseline the table's task logs in every run, if it declares one."""
    return getattr(table.task_class, "baseline_metric", None)


def val_curve_for(table: Table) -> str:
    """The validation metric plotted beside the training loss: the task's monitored one (else val/loss)."""
    return getattr(table.task_class, "monitor_metric", "val/loss")
