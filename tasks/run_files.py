"""What a run leaves on disk, and what it must not leave.

* :func:`write_json_atomically`: a JSON file appears whole or not at all (written to
  ``<name>.partial``, flushed to disk, then renamed over the target).
* :func:`remove_unused_run_folder`: the run folder Hydra made for a run that failed
  before training (it holds only Hydra's own files) is removed again, with the parent
  folders Hydra made for it; nothing that existed before the run is touched.
* :func:`write_job_status` / :func:`sweep_report`: every multirun job writes
  ``job_status.json`` into its folder twice: ``running`` when it starts (with the pid, host and
  start time of the process that runs it), ``completed`` or ``failed`` (and why) when it ends.
  They are gathered into ``multirun_report.json`` in the sweep folder. Files, not memory, so it
  works for launchers that run jobs in other processes or machines, and it survives the sweep.
* A job killed outright (SIGKILL, the out-of-memory killer, a lost machine) never writes its
  end: its file still says ``running``. :func:`sweep_report` reports such a job as ``killed``
  (with its overrides) once that is certain: its process is gone (:func:`process_gone`: no
  process with that pid on this host, or a zombie, or another process that got the pid
  later), or the launcher has returned every job (``all_returned``), or the process that ran it
  is the one gathering and runs no job any more (``ours_ended``). A job on another host whose
  launcher has not returned stays ``running``: it may be.

Part of the harness entry point (``xconv.run``); ``import xconv`` never loads it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import socket
from pathlib import Path

JOB_STATUS = "job_status.json"
SWEEP_REPORT = "multirun_report.json"
RUNNING, COMPLETED, FAILED, KILLED = "running", "completed", "failed", "killed"
STATES = (COMPLETED, FAILED, KILLED, RUNNING)


def write_json_atomically(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` whole or not at all, also with several writers at once."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
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


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None if it is missing or not whole."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 (state) onwards of ``/proc/<pid>/stat``; None if there is no such entry."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, field 22 of its stat); None without /proc."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def this_process() -> dict:
    """The process that runs a job: pid, host and start time (which tells a later process with the same pid apart)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid)}


def process_gone(record: dict) -> bool | None:
    """Whether the process of ``record`` (:func:`this_process`) has ended; None if it ran on another host."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, and belongs to someone else
    fields = _proc_stat(pid)
    if fields is None:  # no entry although the signal found it: it ended just now, or there is no /proc
        return Path("/proc/self/stat").is_file()
    started = record.get("process_start")
    return fields[0] in ("Z", "X") or (started is not None and int(fields[19]) != started)


def write_job_status(job_dir: Path, *, sweep_id: str | None, num: int, overrides: list[str], status: str,
                     started: str, failure: dict | None = None, summary_name: str | None = None) -> None:
    """``<job_dir>/job_status.json``: ``running``, ``completed``, or ``failed`` with ``failure`` (type,
    message, traceback); ``summary_name``: the run summary's file name, listed if the job wrote one."""
    summary = Path(job_dir) / summary_name if summary_name else None
    write_json_atomically(Path(job_dir) / JOB_STATUS, {
        "sweep_id": sweep_id, "num": num, "overrides": overrides, "dir": str(job_dir), "status": status,
        "error": failure, "summary": str(summary) if summary is not None and summary.is_file() else None,
        **this_process(), "started": started, "finished": None if status == RUNNING else now()})


def _all_job_statuses(sweep_dir: Path) -> list[dict]:
    return [status for path in Path(sweep_dir).rglob(JOB_STATUS) if (status := read_json(path)) is not None]


def job_statuses(sweep_dir: Path, sweep_id: str | None) -> list[dict]:
    """The ``job_status.json`` records of sweep ``sweep_id`` under ``sweep_dir``, by job number."""
    jobs = [status for status in _all_job_statuses(sweep_dir) if status.get("sweep_id") == sweep_id]
    return sorted(jobs, key=lambda job: job["num"])


def _killed(record: dict, why: str) -> dict:
    return {**record, "status": KILLED, "error": {
        "type": "Killed", "traceback": None, "message": f"{why} (killed: SIGKILL, out of memory, or a lost machine)"}}


def settled(record: dict, *, all_returned: bool = False, ours_ended: bool = False) -> dict:
    """``record`` as it stands now: a ``running`` job whose process is gone is ``killed`` (see the module)."""
    if record["status"] != RUNNING:
        return record
    process = f"process {record.get('pid')} on {record.get('host')}"
    if all_returned:
        return _killed(record, f"the launcher returned every job, this one unfinished ({process})")
    if ours_ended and record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
        return _killed(record, f"{process}, the sweep's own, stopped before the job ended")
    return _killed(record, f"{process} ended before the job did") if process_gone(record) else record


def sweep_report(sweep_dir: Path, sweep_id: str | None, *, all_returned: bool = False,
                 ours_ended: bool = False) -> dict:
    """The ``job_status.json`` files of sweep ``sweep_id`` under ``sweep_dir`` in one report, each job
    :func:`settled` (``all_returned``, ``ours_ended``: see there)."""
    jobs = [settled(job, all_returned=all_returned, ours_ended=ours_ended) for job in job_statuses(sweep_dir, sweep_id)]
    nums = {state: [job["num"] for job in jobs if job["status"] == state] for state in STATES}
    return {"sweep_dir": str(sweep_dir), "sweep_id": sweep_id, "date": now(), "jobs": len(jobs),
            **{state: len(nums[state]) for state in STATES},
            **{f"{state}_jobs": nums[state] for state in (FAILED, KILLED, RUNNING)}, "job_statuses": jobs}


def latest_sweep_id(sweep_dir: Path) -> str | None:
    """The sweep whose report is in ``sweep_dir``, else the one whose job started last there."""
    report = read_json(Path(sweep_dir) / SWEEP_REPORT)
    if report is not None and report.get("sweep_id"):
        return report["sweep_id"]
    return max(_all_job_statuses(sweep_dir), key=lambda status: str(status.get("started")), default={}).get("sweep_id")


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
