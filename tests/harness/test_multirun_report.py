"""A multirun with failing jobs: the others still run, and the sweep reports which failed and why."""
import json

from cli_runs import read_summary, run_cli

STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "data.batch_size=16", "data.eval_batch_size=64",
         "trainer.enable_progress_bar=false"]


def test_failed_jobs_are_recorded_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    # job 0 trains; job 1 passes validation but diverges to NaN in training (lr 1e30); job 2 is refused
    result = run_cli(sweep, "task=classification", "data=digits", "logger=none", "probes=4", *STEPS,
                     "task.optimizer.lr=1e-3,1e30,-1", multirun=True)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    report = json.loads((sweep / "multirun_report.json").read_text())
    assert (report["jobs"], report["completed"], report["failed"], report["failed_jobs"]) == (3, 1, 2, [1, 2])
    completed, diverged, refused = report["job_statuses"]
    assert completed["status"] == "completed" and completed["error"] is None
    summary = read_summary(sweep / completed["dir"])
    assert summary["config"]["task"]["optimizer"]["lr"] == 1e-3 and summary["train_steps"] == 3
    assert summary["nonfinite"] == {"mode": "stop", "skipped_steps": 0, "skipped": []}
    assert diverged["error"]["type"] == "NonFiniteError"
    assert "at step " in diverged["error"]["message"] and "model." in diverged["error"]["message"]
    assert not (sweep / diverged["dir"] / "summary.json").exists()
    assert refused["error"]["type"] == "SettingsError"
    assert refused["error"]["message"] == "task.optimizer.lr=-1: must be a number > 0"

    lines = result.stderr.splitlines()
    assert "[xconv.run] multirun: 3 jobs, 1 completed, 2 failed; report: " + str(sweep / "multirun_report.json") in lines
    assert any(line.startswith("[xconv.run] failed: job 1 (task.optimizer.lr=1e+30): NonFiniteError: ")
               for line in lines)
    assert any(line.startswith("[xconv.run] failed: job 2 (task.optimizer.lr=-1): SettingsError: task.optimizer.lr=-1")
               for line in lines)
    assert not list(sweep.rglob("*.partial"))  # every JSON file was written whole
