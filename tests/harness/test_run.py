"""The harness through its real CLI: runs, summaries, multirun, bad input, a quiet console."""
import math
import re

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
    fake = summary["fake_peak"]  # one training step of the same model on fake tensors
    assert fake["source"] == "fake_tensor_mem_tracker" and fake["by_category"]["activations"] > 0
    assert fake["bytes"] == sum(fake["by_category"].values()) > summary["activation_memory"]["saved_bytes"]
    assert summary["time"]["median_step_s"] > 0 and summary["time"]["samples_per_s"] > 0
    assert summary["config"]["probes"] == probes and summary["versions"]["torch"]
    assert (run_dir / "wandb").is_dir()  # an offline wandb run per job
    # The first conv stays exact (paper); the other two are XConv when probes > 0.
    assert summary["gradient"]["xconv_layers"] == ([] if probes == 0 else ["features.3", "features.6"])


@pytest.mark.slow
def test_xconv_saves_less_activation_memory_than_exact(tmp_path, fashion_source):
    saved = {}
    for probes in (0, 4):
        run_dir = tmp_path / f"run{probes}"
        result = run_cli(run_dir, *classification_overrides(fashion_source, tmp_path / "cache"),
                         f"probes={probes}", "relu=bit")
        assert result.returncode == 0, result.stderr[-3000:]
        saved[probes] = read_summary(run_dir)["activation_memory"]["saved_bytes"]
    assert saved[4] < saved[0]


def test_activation_modes_keep_less_and_are_recorded(tmp_path, fashion_source):
    """probes=0 activations=lossless is exact backprop with less memory; compact keeps less again."""
    saved = {}
    for activations in ("exact", "lossless", "compact"):
        run_dir = tmp_path / activations
        result = run_cli(run_dir, *classification_overrides(fashion_source, tmp_path / "cache"), "probes=0",
                         f"activations={activations}")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = read_summary(run_dir)
        assert summary["gradient"]["activations"] == activations and summary["gradient"]["fallbacks"] == {}
        saved[activations] = summary["activation_memory"]["saved_bytes"]
    assert saved["compact"] <= saved["lossless"] < saved["exact"]


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
    ("activations=bits", ["activations='bits'", "exact, lossless, compact"]),
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


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_unknown_task_is_one_line_with_the_choices(tmp_path):
    result = run_cli(tmp_path / "run", "task=foo")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: task='foo': must be one of classification, generative, inpainting, segmentation, superres"]
    assert not any(tmp_path.iterdir())


def test_a_bad_value_in_a_sweep_is_refused_before_any_job_runs(tmp_path):
    result = run_cli(tmp_path / "sweep", "task=classification", "probes=0,-1", multirun=True)
    assert result.returncode == 2
    assert error_lines(result) == ["error: probes=-1: must be an integer >= 0 (0 = exact backprop)"]
    assert not any(tmp_path.iterdir())  # no sweep folder: no job ran


def test_a_setting_a_constructor_refuses_after_the_checks_is_named_in_one_line(tmp_path):
    """norm_groups=7 is a positive integer (its rule), but DiffusionUNet needs it to divide every width:
    refused while building, before training, and the folder Hydra made goes again."""
    result = run_cli(tmp_path / "run", "task=generative", "data=digits", "model.norm_groups=7")
    assert result.returncode == 2
    assert error_lines(result) == ["error: model.norm_groups=7: must divide every width in "
                                   "model.block_channels=[16, 32, 64]"]
    assert not (tmp_path / "run").exists()


# A warning on the console: a Python warning ("<file>.py:<line>: ..."), or any line saying "warn".
WARNING_LINE = re.compile(r"warn|\.py:\d+: ", re.IGNORECASE)
# Lines that are not about the run, silenced by the harness (tasks/run.py quiet_console, build_loggers).
NOISE = ["anonymous setting", "`resume` will be ignored", "litlogger", "LeafSpec"]


def warning_lines(output: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", output) if WARNING_LINE.search(line)]


def test_the_main_job_prints_at_most_three_warning_lines(tmp_path):
    """``task=segmentation probes=16``, shortened: several layers are capped, in one warning line;
    wandb (not silenced here) and Lightning add no warnings that are not about the run."""
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "task=segmentation", "probes=16", "trainer.max_epochs=1", "data.train_count=4",
                     "data.batch_size=4", "data.val_count=4", "data.test_count=4", "data.eval_batch_size=4",
                     wandb_silent=False)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    lines = warning_lines(output)
    assert len(lines) <= 3, lines
    assert not [noise for noise in NOISE if noise in output]
    assert len([line for line in lines if "ProbeCapWarning" in line]) == 1, lines
    caps = read_summary(run_dir)["probe_caps"]
    assert len(caps) > 1 and all(cap["layer"] in output for cap in caps)  # every capped layer, in one line
    assert "Epoch 0: 100%" in output  # the progress bars stay
