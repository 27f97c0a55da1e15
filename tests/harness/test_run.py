"""The harness through its real CLI: runs, summaries, multirun, bad input."""
import math

import pytest

from cli_runs import read_summary, run_cli, write_mnist_like

TWO_STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
             "data.train_subset=64", "data.test_subset=64", "data.eval_batch_size=32", "data.batch_size=16"]


@pytest.fixture(scope="module")
def fashion_source(tmp_path_factory):
    """Fashion-MNIST-format .gz idx files, as Debian's package ships them."""
    folder = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_like(folder, compress=True)
    return folder


def classification_overrides(fashion_source, cache):
    return ["task=classification", f"data.source={fashion_source}", f"data.root={cache}", *TWO_STEPS]


@pytest.mark.parametrize("probes", [0, 16])
def test_classification_runs_and_writes_a_full_summary(tmp_path, fashion_source, probes):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, *classification_overrides(fashion_source, tmp_path / "cache"), f"probes={probes}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["task"] == "classification" and summary["gradient"]["probes"] == probes
    assert summary["gradient"]["mode"] == ("exact" if probes == 0 else "xconv")
    for key in ("val/acc", "val/loss", "test/acc", "test/loss"):
        assert math.isfinite(summary["metrics"][key]), key
    assert summary["train_steps"] == 2
    assert summary["activation_memory"]["saved_bytes"] > 0
    assert summary["activation_memory"]["saved_bytes_by_kind"]
    assert summary["peak_memory"]["source"] in ("cpu_peak_rss_growth", "cuda_max_memory_allocated")
    assert summary["time"]["median_step_s"] > 0 and summary["time"]["samples_per_s"] > 0
    assert summary["config"]["probes"] == probes and summary["versions"]["torch"]
    assert (run_dir / "wandb").is_dir()  # an offline wandb run per job
    # The first conv stays exact (paper); the other two are XConv when probes > 0.
    assert summary["gradient"]["xconv_layers"] == ([] if probes == 0 else ["features.3", "features.6"])


def test_xconv_saves_less_activation_memory_than_exact(tmp_path, fashion_source):
    saved = {}
    for probes in (0, 4):
        run_dir = tmp_path / f"run{probes}"
        result = run_cli(run_dir, *classification_overrides(fashion_source, tmp_path / "cache"),
                         f"probes={probes}", "relu=bit")
        assert result.returncode == 0, result.stderr[-3000:]
        saved[probes] = read_summary(run_dir)["activation_memory"]["saved_bytes"]
    assert saved[4] < saved[0]


def test_digits_data_runs(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "task=classification", "data=digits", "probes=4", *TWO_STEPS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_summary(run_dir)["data"] == "digits"


def test_multirun_writes_one_summary_per_job(tmp_path, fashion_source):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(sweep_dir, *classification_overrides(fashion_source, tmp_path / "cache"), "probes=0,4",
                     multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(sweep_dir.glob("*/summary.json"))
    assert len(summaries) == 2
    assert {read_summary(path.parent)["gradient"]["probes"] for path in summaries} == {0, 4}


@pytest.mark.parametrize("override,fragments", [
    ("probes=-1", ["probes=-1", "integer >= 0"]),
    ("probes=2.5", ["probes=2.5", "integer >= 0"]),
    ("probe=foo", ["probe='foo'", "channel, gaussian, rademacher, orthogonal"]),
    ("relu=maybe", ["relu='maybe'", "exact, bit"]),
    ("data.batch_size=0", ["data.batch_size=0", "integer >= 1"]),
    ("data.source=/nonexistent/fashion", ["data.source='/nonexistent/fashion'", "apt-get install dataset-fashion-mnist"]),
])
def test_bad_input_is_a_clear_error_before_training(tmp_path, override, fragments):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "task=classification", f"data.root={tmp_path / 'cache'}", override)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not (run_dir / "summary.json").exists()


def test_unknown_task_names_the_key_and_the_choices(tmp_path):
    result = run_cli(tmp_path / "run", "task=foo")
    assert result.returncode != 0
    assert "task/foo" in result.stderr and "classification" in result.stderr
