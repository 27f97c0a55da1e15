"""``summary.json``, the one file a run leaves for the results scripts: its one definition.

:func:`build` lays out what a finished run writes (tasks/run.py writes it with :func:`write`):
the task, data and model names, the gradient mode, the seed, the val/test metrics, the memory
and time measurements, the callbacks' fields, the run's length, machine, date, software, command
and the resolved config. The results scripts (:mod:`xconv_harness.studies.run_summaries`) find
the files by :data:`SUMMARY_FILE`, read them with :func:`read` and ask :func:`task_class` for the
task that ran, to show the metrics that task declares.
"""
from __future__ import annotations

import datetime
import importlib
import json
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from .provenance import code_state
from .run_files import write_json_atomically  # temp file + fsync + rename

SUMMARY_FILE = "summary.json"
# Summaries written before the harness was installed as ``xconv_harness`` name its classes ``tasks.<module>...``.
OLD_PACKAGE, PACKAGE = "tasks.", "xconv_harness."


def build(cfg, *, model, trainer, device, metrics: dict, measured: dict, gradient_mode: str,
          checkpoint_plan: dict | None, resumed_from: str | None, started: float, machine: str,
          versions: dict) -> dict:
    """The summary of a finished run. ``measured``: the step monitor's and the callbacks' fields;
    ``started``: ``time.perf_counter()`` when training started."""
    import xconv

    return {
        "task": cfg.task.name, "data": cfg.data.name, "model": cfg.model.name,
        "gradient": {"mode": gradient_mode, "probes": cfg.probes,
                     "probe": cfg.probe, "relu": cfg.relu, "activations": cfg.activations, "checkpoint": cfg.get("checkpoint", "none"),
                     "checkpoint_plan": checkpoint_plan,
                     "xconv_layers": [name for name, layer in xconv.xconv_layers(model) if layer.probes > 0],
                     # per layer: calls that fell back to exact (sketch no smaller than the input)
                     "fallbacks": xconv.memory.fallback_report(model)},
        "seed": cfg.seed,
        "metrics": metrics,
        **measured,
        "train_steps": trainer.global_step,
        "resumed_from": resumed_from,
        "processes": trainer.world_size,
        "wall_time_s": time.perf_counter() - started,
        "device": str(device),
        "machine": machine,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "code": code_state(),  # the git commit the harness ran from and whether the tree was clean
        "command": " ".join(["python -m xconv.run", *sys.argv[1:]]),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def write(run_dir: Path, summary: dict) -> Path:
    """Write ``<run_dir>/summary.json`` (whole or not at all); return its path."""
    path = Path(run_dir) / SUMMARY_FILE
    write_json_atomically(path, summary)
    return path


def read(path: Path) -> dict:
    """A summary file's contents (json.JSONDecodeError if it is not JSON)."""
    return json.loads(Path(path).read_text())


def task_class(summary: dict) -> type | None:
    """The task class the run's config names (``config.task._target_``), imported; None when the
    summary names none or it cannot be imported (a task this harness does not have)."""
    task = summary.get("config", {}).get("task", {})
    name = task.get("_target_") if isinstance(task, dict) else None
    if not isinstance(name, str):
        return None
    if name.startswith(OLD_PACKAGE):
        name = PACKAGE + name[len(OLD_PACKAGE):]
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        return None
