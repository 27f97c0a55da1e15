"""How a harness job ends: bad settings, training failures and multirun sweeps.

Exit codes of ``python -m xconv.run``:

* 2: a setting is wrong (unknown key, bad type or range, missing data). One line on
  stderr, ``error: <key>=<value>: <what is allowed>``, no traceback, and no run folder
  left behind: the config is validated in :meth:`HarnessCallback.on_run_start`, before
  Hydra creates the folder; a problem found later, while building data and model,
  removes the folder Hydra made (if it holds only Hydra's files).
* 3: training met a NaN/inf loss or gradient with ``nonfinite=stop`` (tasks/guard.py);
  the run folder and its last checkpoint stay.
* 1: anything else (Hydra prints the traceback), or a multirun in which a job failed or
  was killed.

In a multirun (``-m``) a failing job does not end the sweep: its error is printed,
recorded in its folder's ``job_status.json``, and the next job runs. At the end
``multirun_report.json`` in the sweep folder lists every job (completed or failed and
why), one line per failed job is printed, and the exit code is 1.

Killed jobs (SIGKILL, out of memory). A job writes ``job_status.json`` as ``running``
when it starts and rewrites it when it ends (tasks/run_files.py), and
``multirun_report.json`` is rewritten after every start and end, so it exists, up to
date, whatever happens to the sweep. A job whose process dies leaves ``running``
behind, and whoever gathers next reports it ``killed`` with its overrides:

* with Hydra's basic launcher the jobs run in the sweep's own process, so a killed job
  ends the sweep: ``python -m xconv_harness.job_reporting report <sweep dir>`` then
  rewrites the report (exit code 1: failed or killed jobs), and running the sweep again
  into the same folder (``-m <same overrides> hydra.sweep.dir=<that folder>
  ckpt_path=auto``: each job resumes its ``checkpoints/last.ckpt``) first keeps the dead
  sweep's report, completed, as ``multirun_report.<its id>.json`` and says what it held;
* with launchers that run jobs in other processes (joblib, submitit), the sweep lives
  on: ``on_multirun_end`` marks every job still ``running`` killed (the launcher has
  returned them all) and exits 1; if the launcher raises instead (a worker died), the
  report is completed at the sweep's exit (``atexit``).

Part of the harness entry point (imported by :mod:`xconv.run` and Hydra's callback
config); ``import xconv`` never loads it.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import traceback
import uuid
from pathlib import Path

from omegaconf import OmegaConf

from . import run_files
from .summary import SUMMARY_FILE

EXIT_SETTINGS = 2
EXIT_NONFINITE = 3
EXIT_SWEEP_FAILED = 1
SWEEP_ID_ENV = "XCONV_SWEEP_ID"

# Set by the callback and the job guard in the job's own process, read by the other.
_existed_before_run: Path | None = None  # nearest folder at or above the run folder that existed
_job_failure: dict | None = None  # the current multirun job's failure, for job_status.json
_job_started: str | None = None  # when the current multirun job started
_sweeps_ended: set[Path] = set()  # sweep folders whose on_multirun_end ran in this process


class SettingsError(ValueError):
    """A setting that cannot work, found before training; the message is one line naming it."""


def _expected(error: BaseException) -> bool:
    """Errors whose one-line message says everything (no traceback needed)."""
    from xconv_harness.guard import NonFiniteError

    return isinstance(error, (SettingsError, NonFiniteError))


@contextlib.contextmanager
def reporting_errors():
    """Around one job's work (inside ``@hydra.main``): turn its errors into exit codes, or,
    in a multirun, into a recorded failure so the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    global _job_failure
    hydra_config = HydraConfig.get()
    try:
        yield
    except Exception as error:
        expected = _expected(error)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if hydra_config.mode == RunMode.MULTIRUN:
            if not expected:
                traceback.print_exc()
            _job_failure = {"type": type(error).__name__, "message": message,
                            "traceback": None if expected else traceback.format_exc()}
            print(f"error: multirun job {hydra_config.job.num} failed: {message}", file=sys.stderr)
            return  # the sweep goes on; HarnessCallback.on_job_end records the failure
        if not expected:
            raise
        print(f"error: {message}", file=sys.stderr)
        if isinstance(error, SettingsError):
            run_files.remove_unused_run_folder(
                Path(hydra_config.runtime.output_dir), hydra_subdir=hydra_config.output_subdir,
                log_name=f"{hydra_config.job.name}.log", existed=_existed_before_run)
            sys.exit(EXIT_SETTINGS)
        sys.exit(EXIT_NONFINITE)


def _exit_on_bad_settings(config) -> None:
    from xconv_harness.validate import ConfigError, validate

    try:
        validate(config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_SETTINGS)  # SystemExit passes through Hydra: no run folder is made


def _multirun(config) -> bool:
    return config.hydra.mode.name == "MULTIRUN"


def _swept(job: dict, shared: set[str]) -> str:
    return " ".join(override for override in job["overrides"] if override not in shared)


def _job_detail(job: dict) -> str | None:
    """What the report line of a failed, killed or still running job says; None for a completed one."""
    error = job.get("error") or {}
    return {run_files.FAILED: f"{error.get('type')}: {error.get('message')}",
            run_files.KILLED: error.get("message"),
            run_files.RUNNING: f"process {job.get('pid')} on {job.get('host')} has not ended it"}.get(job["status"])


def print_report(report: dict, path: Path, title: str = "multirun") -> None:
    """The report's totals, then one line per failed, killed or still running job (what tells it apart)."""
    counts = ", ".join(f"{report[state]} {state}" for state in run_files.STATES
                       if report[state] or state in (run_files.COMPLETED, run_files.FAILED))
    print(f"[xconv.run] {title}: {report['jobs']} jobs, {counts}; report: {path}", file=sys.stderr)
    jobs = report["job_statuses"]
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if len(jobs) > 1 else set()
    for job in jobs:
        detail = _job_detail(job)
        if detail is not None:
            print(f"[xconv.run] {job['status']}: job {job['num']} ({_swept(job, shared)}): {detail} "
                  f"(folder {job['dir']})", file=sys.stderr)
    if report[run_files.KILLED]:
        print(f"[xconv.run] to finish the sweep, run it again with hydra.sweep.dir={report['sweep_dir']} "
              f"ckpt_path=auto (each job resumes its checkpoints/last.ckpt)", file=sys.stderr)


def update_report(sweep_dir: Path, sweep_id: str | None, **settle) -> dict:
    """Gather and (re)write ``multirun_report.json`` of sweep ``sweep_id``; ``settle``: see run_files.settled."""
    report = run_files.sweep_report(sweep_dir, sweep_id, **settle)
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    run_files.write_json_atomically(Path(sweep_dir) / run_files.SWEEP_REPORT, report)
    return report


def keep_earlier_report(sweep_dir: Path, sweep_id: str) -> None:
    """A sweep run again into its folder: the earlier sweep's report, completed (its dead jobs
    killed), is kept as ``multirun_report.<its id>.json`` before this sweep's jobs rewrite their files."""
    earlier = run_files.read_json(Path(sweep_dir) / run_files.SWEEP_REPORT)
    if earlier is None or earlier.get("sweep_id") == sweep_id:
        return
    earlier_id = earlier.get("sweep_id")
    if earlier_id:
        earlier = run_files.sweep_report(sweep_dir, earlier_id, ours_ended=True)
    kept = Path(sweep_dir) / f"multirun_report.{(earlier_id or 'earlier')[:8]}.json"
    run_files.write_json_atomically(kept, earlier)
    print_report(earlier, kept, title="the earlier sweep in this folder")


def _finish_if_unfinished(sweep_dir: Path, sweep_id: str) -> None:
    """At the sweep's exit (atexit): if ``on_multirun_end`` never ran (the launcher raised, or a job
    interrupted the sweep), complete the report; this process runs no job any more."""
    if sweep_dir not in _sweeps_ended:
        print_report(update_report(sweep_dir, sweep_id, ours_ended=True), sweep_dir / run_files.SWEEP_REPORT)


class HarnessCallback:
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml; Hydra's ``Callback`` interface)."""

    def on_run_start(self, config, **kwargs) -> None:
        global _existed_before_run
        _existed_before_run = run_files.first_existing(Path(OmegaConf.select(config, "hydra.run.dir")))
        _exit_on_bad_settings(config)

    def on_run_end(self, config, **kwargs) -> None:
        pass

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_id = os.environ[SWEEP_ID_ENV] = uuid.uuid4().hex  # inherited by jobs in other processes
        sweep_dir = Path(config.hydra.sweep.dir)
        keep_earlier_report(sweep_dir, sweep_id)
        update_report(sweep_dir, sweep_id)
        atexit.register(_finish_if_unfinished, sweep_dir, sweep_id)

    def on_job_start(self, config, **kwargs) -> None:
        global _job_failure, _job_started
        _job_failure = None
        if _multirun(config):
            _job_started = run_files.now()
            self._write_status(config, run_files.RUNNING)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if not _multirun(config):
            return
        failure = _job_failure
        if failure is None and job_return.status.name == "FAILED":  # escaped reporting_errors
            error = job_return._return_value
            failure = {"type": type(error).__name__, "message": str(error), "traceback": None}
        self._write_status(config, run_files.FAILED if failure else run_files.COMPLETED, failure)

    @staticmethod
    def _write_status(config, status: str, failure: dict | None = None) -> None:
        """This job's ``job_status.json``, then the sweep's report again."""
        sweep_id = os.environ.get(SWEEP_ID_ENV)
        run_files.write_job_status(Path(config.hydra.runtime.output_dir), sweep_id=sweep_id,
                                   num=int(config.hydra.job.num), overrides=list(config.hydra.overrides.task),
                                   status=status, started=_job_started, failure=failure, summary_name=SUMMARY_FILE)
        update_report(Path(config.hydra.sweep.dir), sweep_id)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        _sweeps_ended.add(sweep_dir)
        report = update_report(sweep_dir, os.environ.get(SWEEP_ID_ENV), all_returned=True)
        print_report(report, sweep_dir / run_files.SWEEP_REPORT)
        if report[run_files.FAILED] or report[run_files.KILLED]:
            sys.exit(EXIT_SWEEP_FAILED)


def report_command(sweep_dir: Path) -> int:
    """``report <sweep dir>``: gather the sweep's report again (after its process died); exit code
    1 if a job failed or was killed, 2 if the folder holds no sweep."""
    sweep_dir = Path(sweep_dir)
    sweep_id = run_files.latest_sweep_id(sweep_dir) if sweep_dir.is_dir() else None
    if sweep_id is None:
        print(f"error: sweep folder {sweep_dir}: holds no {run_files.SWEEP_REPORT} or {run_files.JOB_STATUS} of a "
              f"sweep; give the hydra.sweep.dir of a multirun", file=sys.stderr)
        return EXIT_SETTINGS
    report = update_report(sweep_dir, sweep_id, ours_ended=True)
    print_report(report, sweep_dir / run_files.SWEEP_REPORT)
    return EXIT_SWEEP_FAILED if report[run_files.FAILED] or report[run_files.KILLED] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xconv_harness.job_reporting",
                                     description="Multirun reports (see the module's docstring).")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="gather multirun_report.json of a sweep folder again, marking "
                                                "jobs whose process is gone as killed")
    report.add_argument("sweep_dir", type=Path, help="the sweep's folder (its hydra.sweep.dir)")
    return report_command(parser.parse_args(argv).sweep_dir)


if __name__ == "__main__":
    sys.exit(main())
