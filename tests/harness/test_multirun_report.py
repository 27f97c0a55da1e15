"""A multirun with failing or killed jobs: the others still run, and the sweep reports which failed
or were killed and why, also when a killed job took the sweep down with it."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from cli_runs import read_summary, run_cli
from hooked_run import KILL, run_hooked
from xconv_harness import job_reporting, run_files

STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "data.batch_size=16", "data.eval_batch_size=64",
         "trainer.enable_progress_bar=false"]


def test_failed_jobs_are_recorded_and_the_others_finish(tmp_path):
    """Settings every job could be refused for are refused before the sweep starts (tasks/cli_errors.py);
    these jobs fail while they run: lr 1e30 diverges to NaN in training, and an activation budget of
    1 KiB is found unreachable when the planner measures the first batch."""
    sweep = tmp_path / "sweep"
    result = run_cli(sweep, "task=classification", "data=digits", "logger=none", "probes=4", *STEPS,
                     "task.optimizer.lr=1e-3,1e30", "checkpoint=none,budget:1KiB", multirun=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    report = json.loads((sweep / "multirun_report.json").read_text())
    assert (report["jobs"], report["completed"], report["failed"], report["failed_jobs"]) == (4, 1, 3, [1, 2, 3])
    completed, refused, diverged, _ = report["job_statuses"]  # lr x checkpoint, in that order
    assert completed["status"] == "completed" and completed["error"] is None
    summary = read_summary(sweep / completed["dir"])
    assert summary["config"]["task"]["optimizer"]["lr"] == 1e-3 and summary["train_steps"] == 3
    assert summary["nonfinite"] == {"mode": "stop", "skipped_steps": 0, "skipped": []}
    assert diverged["error"]["type"] == "NonFiniteError"
    assert "at step " in diverged["error"]["message"] and "model." in diverged["error"]["message"]
    assert not (sweep / diverged["dir"] / "summary.json").exists()
    assert refused["error"]["type"] == "SettingsError"
    assert refused["error"]["message"].startswith("checkpoint=budget:1024 (1.00 KiB) cannot be met")

    lines = result.stderr.splitlines()
    assert "[xconv.run] multirun: 4 jobs, 1 completed, 3 failed; report: " + str(sweep / "multirun_report.json") in lines
    assert any(line.startswith("[xconv.run] failed: job 2 (task.optimizer.lr=1e+30 checkpoint=none): NonFiniteError: ")
               for line in lines)
    assert any(line.startswith("[xconv.run] failed: job 1 (task.optimizer.lr=0.001 checkpoint=budget\\:1KiB): "
                               "SettingsError: checkpoint=budget:1024") for line in lines)  # as Hydra writes them
    assert not list(sweep.rglob("*.partial"))  # every JSON file was written whole


# A job killed outright ----------------------------------------------------------------------------
def gather_report(sweep):
    return subprocess.run([sys.executable, "-m", "xconv_harness.job_reporting", "report", str(sweep)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_killed_job_is_reported_killed_with_its_overrides_and_the_sweep_resumes(tmp_path):
    """Job 1 (seed=1) SIGKILLs its own process before step 2, as the out-of-memory killer would. With
    Hydra's basic launcher that ends the sweep; the report left on disk, gathered again, lists job 0
    completed and job 1 killed; running the sweep again into its folder finishes it."""
    sweep = tmp_path / "sweep"
    run = ["task=classification", "data=digits", "logger=none", "probes=4", *STEPS, "ckpt_every_n_steps=1",
           "seed=0,1,2"]
    died = run_hooked(sweep, *run, faults={KILL: "seed=1@2"}, multirun=True)
    assert died.returncode == -signal.SIGKILL, died.stderr[-3000:]
    left = json.loads((sweep / "multirun_report.json").read_text())  # written as job 1 started
    assert [(job["num"], job["status"]) for job in left["job_statuses"]] == [(0, "completed"), (1, "running")]

    gathered = gather_report(sweep)
    assert gathered.returncode == 1, gathered.stderr
    report = json.loads((sweep / "multirun_report.json").read_text())
    assert (report["jobs"], report["completed"], report["failed"], report["killed"], report["killed_jobs"]) == (
        2, 1, 0, 1, [1])
    completed, killed = report["job_statuses"]
    assert completed["status"] == "completed" and "seed=0" in completed["overrides"]
    assert killed["status"] == "killed" and "seed=1" in killed["overrides"]
    assert killed["error"]["message"].startswith(f"process {killed['pid']} on ") and "SIGKILL" in killed["error"]["message"]
    assert f"[xconv.run] killed: job 1 (seed=1): process {killed['pid']} on " in gathered.stderr
    assert "1 completed, 0 failed, 1 killed" in gathered.stderr and "ckpt_path=auto" in gathered.stderr

    resumed = run_cli(sweep, *run, "ckpt_path=auto", multirun=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((sweep / "multirun_report.json").read_text())
    assert (final["jobs"], final["completed"], final["killed"]) == (3, 3, 0)
    [kept] = sweep.glob("multirun_report.*.json")  # the dead sweep's report, kept
    assert json.loads(kept.read_text())["killed_jobs"] == [1]
    assert "the earlier sweep in this folder: 2 jobs, 1 completed, 0 failed, 1 killed" in resumed.stderr
    summaries = {job["num"]: read_summary(sweep / job["dir"]) for job in final["job_statuses"]}
    assert summaries[1]["resumed_from"].endswith("last.ckpt") and summaries[1]["train_steps"] == 3
    assert summaries[2]["resumed_from"] is None  # never started before


# When a job that says "running" is dead (no processes of the harness started) ----------------------
def running_record(pid: int, **changes) -> dict:
    record = {"sweep_id": "s", "num": 0, "overrides": ["seed=0"], "dir": "job0", "status": "running",
              "error": None, "pid": pid, "host": socket.gethostname(), "process_start": run_files._process_start(pid)}
    return {**record, **changes}


def status_of(record: dict, **settle) -> str:
    return run_files.settled(record, **settle)["status"]


@pytest.fixture
def sleeper():
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_a_running_job_is_killed_once_its_process_is_gone(sleeper):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert status_of(running_record(ended.pid)) == "killed"
    alive = running_record(sleeper.pid)
    assert status_of(alive) == "running" and status_of(running_record(os.getpid())) == "running"
    assert status_of({**alive, "process_start": alive["process_start"] - 1}) == "killed"  # its pid, reused
    assert status_of({**alive, "host": "elsewhere"}) == "running"  # cannot be checked from here
    assert status_of({**alive, "host": "elsewhere"}, all_returned=True) == "killed"  # the launcher says so
    assert status_of(running_record(os.getpid()), ours_ended=True) == "killed"
    sleeper.kill()  # a zombie until waited for: gone, though its pid still answers
    deadline = time.monotonic() + 10
    while run_files._proc_stat(sleeper.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status_of(alive) == "killed"


def write_statuses(sweep, *statuses: str) -> None:
    """Job ``num`` of sweep ``s`` with ``statuses[num]``, recorded as run by this process."""
    for num, status in enumerate(statuses):
        (sweep / f"job{num}").mkdir(parents=True)
        run_files.write_job_status(sweep / f"job{num}", sweep_id="s", num=num, overrides=["lr=1", f"seed={num}"],
                                   status=status, started=run_files.now())


def test_jobs_still_running_when_the_launcher_returns_are_reported_killed(tmp_path, monkeypatch, capsys):
    """Launchers that run jobs in other processes (joblib, submitit) return a killed job without its end."""
    sweep = tmp_path / "sweep"
    monkeypatch.setenv(job_reporting.SWEEP_ID_ENV, "s")
    write_statuses(sweep, "completed", "running")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as ended:
        job_reporting.HarnessCallback().on_multirun_end(config)
    assert ended.value.code == 1
    report = json.loads((sweep / "multirun_report.json").read_text())
    assert (report["completed"], report["killed_jobs"]) == (1, [1])
    assert report["job_statuses"][1]["error"]["message"].startswith("the launcher returned every job, this one unfinished")
    assert "[xconv.run] killed: job 1 (seed=1): the launcher returned every job" in capsys.readouterr().err


def test_a_sweep_that_exits_without_its_end_completes_its_report(tmp_path, capsys):
    """The launcher raised (or Ctrl-C): at exit, the jobs this process was running are over."""
    sweep = tmp_path / "sweep"
    write_statuses(sweep, "completed", "running")
    job_reporting._finish_if_unfinished(sweep, "s")
    report = json.loads((sweep / "multirun_report.json").read_text())
    assert report["killed_jobs"] == [1] and "the sweep's own" in report["job_statuses"][1]["error"]["message"]
    assert "[xconv.run] multirun: 2 jobs, 1 completed, 0 failed, 1 killed" in capsys.readouterr().err


def test_the_report_command_refuses_a_folder_without_a_sweep(tmp_path, capsys):
    assert job_reporting.main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: sweep folder {tmp_path / 'nowhere'}: holds no multirun_report.json or job_status.json of a "
        f"sweep; give the hydra.sweep.dir of a multirun"]
