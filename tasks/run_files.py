"""What a run leaves on disk, and what it must not leave.

* :func:`write_json_atomically`: a JSON file appears whole or not at all (written to
  ``<name>.partial``, flushed to disk, then renamed over the target).
* :func:`remove_unused_run_folder`: the run folder Hydra made for a run that failed
  before training (it holds only Hydra's own files) is removed again, with the parent
  folders Hydra made for it; nothing that existed before the run is touched.
* :func:`write_job_status` / :func:`sweep_report`: every multirun job writes
  ``job_status.json`` into its folder (completed or failed, and why); at the end of the
  sweep they are gathered into ``multirun_report.json`` in the sweep folder. Files, not
  memory, so it works for launchers that run jobs in other processes or machines.

Part of the harness entry point (``xconv.run``); ``import xconv`` never loads it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

JOB_STATUS = "job_status.json"
SWEEP_REPORT = "multirun_report.json"


def write_json_atomically(path: Path, payload: dict) -> None:
    path = Path(path)
    partial = path.with_suffix(path.suffix + ".partial")
    with open(partial, "w") as handle:
        handle.write(json.dumps(payload, indent=2, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def first_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def remove_unused_run_folder(run_dir: Path, *, hydra_subdir: str | None, log_name: str,
                             existed: Path | None = None) -> bool:
    """Remove ``run_dir`` if it holds nothing but Hydra's files (``hydra_subdir``/*.yaml, the job log).

    ``existed``: the nearest folder at or above ``run_dir`` that existed before the run
    (None: unknown). Folders from ``run_dir`` up to, not including, it are removed when
    empty; with None only ``run_dir`` itself. Returns whether anything was removed.
    """
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir() or (existed is not None and not run_dir.is_relative_to(existed)):
        return False
    hydra_dir = run_dir / hydra_subdir if hydra_subdir else None
    ours = [run_dir / log_name] + (sorted(hydra_dir.rglob("*.yaml")) if hydra_dir and hydra_dir.is_dir() else [])
    folders = set()  # hydra_subdir and the folders between it and run_dir
    folder = hydra_dir
    while folder is not None and folder != run_dir and folder.is_relative_to(run_dir):
        folders.add(folder)
        folder = folder.parent
    if set(run_dir.rglob("*")) - set(ours) - folders:
        return False  # something else is in there: not ours to delete
    for file in ours:
        file.unlink(missing_ok=True)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        folder.rmdir()
    stop = existed if existed is not None else run_dir.parent
    folder = run_dir
    while folder != stop and folder.is_relative_to(stop) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
    return True


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_job_status(job_dir: Path, *, sweep_id: str | None, num: int, overrides: list[str],
                     failure: dict | None, summary_name: str) -> None:
    """``<job_dir>/job_status.json``: completed, or failed with ``failure`` (type, message, traceback);
    ``summary_name``: the file name of the run's summary, listed when the job wrote one."""
    summary = Path(job_dir) / summary_name
    write_json_atomically(Path(job_dir) / JOB_STATUS, {
        "sweep_id": sweep_id, "num": num, "overrides": overrides, "dir": str(job_dir),
        "status": "failed" if failure else "completed", "error": failure,
        "summary": str(summary) if summary.is_file() else None, "finished": now()})


def sweep_report(sweep_dir: Path, sweep_id: str | None) -> dict:
    """Gather the ``job_status.json`` files of sweep ``sweep_id`` under ``sweep_dir`` into one report."""
    jobs = []
    for path in Path(sweep_dir).rglob(JOB_STATUS):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if status.get("sweep_id") == sweep_id:
            jobs.append(status)
    jobs.sort(key=lambda job: job["num"])
    failed = [job for job in jobs if job["status"] == "failed"]
    return {"sweep_dir": str(sweep_dir), "date": now(), "jobs": len(jobs), "completed": len(jobs) - len(failed),
            "failed": len(failed), "failed_jobs": [job["num"] for job in failed], "job_statuses": jobs}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows, for provenance lines."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
