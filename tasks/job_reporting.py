"""How a harness job ends: bad settings, training failures and multirun sweeps.

Exit codes of ``python -m xconv.run``:

* 2: a setting is wrong (unknown key, bad type or range, missing data). One line on
  stderr, ``error: <key>=<value>: <what is allowed>``, no traceback, and no run folder
  left behind: the config is validated in :meth:`HarnessCallback.on_run_start`, before
  Hydra creates the folder; a problem found later, while building data and model,
  removes the folder Hydra made (if it holds only Hydra's files).
* 3: training met a NaN/inf loss or gradient with ``nonfinite=stop`` (tasks/guard.py);
  the run folder and its last checkpoint stay.
* 1: anything else (Hydra prints the traceback), or a multirun in which a job failed.

In a multirun (``-m``) a failing job does not end the sweep: its error is printed,
recorded in its folder's ``job_status.json``, and the next job runs. At the end
``multirun_report.json`` in the sweep folder lists every job (completed or failed and
why), one line per failed job is printed, and the exit code is 1.

Part of the harness entry point (imported by :mod:`xconv.run` and Hydra's callback
config); ``import xconv`` never loads it.
"""
from __future__ import annotations

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


class HarnessCallback:
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml; Hydra's ``Callback`` interface)."""

    def on_run_start(self, config, **kwargs) -> None:
        global _existed_before_run
        _existed_before_run = run_files.first_existing(Path(OmegaConf.select(config, "hydra.run.dir")))
        _exit_on_bad_settings(config)

    def on_run_end(self, config, **kwargs) -> None:
        pass

    def on_multirun_start(self, config, **kwargs) -> None:
        os.environ[SWEEP_ID_ENV] = uuid.uuid4().hex  # inherited by jobs in other processes

    def on_job_start(self, config, **kwargs) -> None:
        global _job_failure
        _job_failure = None

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if config.hydra.mode.name != "MULTIRUN":
            return
        failure = _job_failure
        if failure is None and job_return.status.name == "FAILED":  # escaped reporting_errors
            error = job_return._return_value
            failure = {"type": type(error).__name__, "message": str(error), "traceback": None}
        run_files.write_job_status(Path(config.hydra.runtime.output_dir), sweep_id=os.environ.get(SWEEP_ID_ENV),
                                 num=int(config.hydra.job.num), overrides=list(config.hydra.overrides.task),
                                 failure=failure, summary_name=SUMMARY_FILE)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        report = run_files.sweep_report(sweep_dir, os.environ.get(SWEEP_ID_ENV))
        run_files.write_json_atomically(sweep_dir / run_files.SWEEP_REPORT, report)
        print(f"[xconv.run] multirun: {report['jobs']} jobs, {report['completed']} completed, "
              f"{report['failed']} failed; report: {sweep_dir / run_files.SWEEP_REPORT}", file=sys.stderr)
        jobs = report["job_statuses"]
        shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if len(jobs) > 1 else set()
        for job in jobs:
            if job["status"] == "failed":
                swept = [o for o in job["overrides"] if o not in shared]  # what tells this job apart
                print(f"[xconv.run] failed: job {job['num']} ({' '.join(swept)}): {job['error']['type']}: "
                      f"{job['error']['message']} (folder {job['dir']})", file=sys.stderr)
        if report["failed"]:
            sys.exit(EXIT_SWEEP_FAILED)
