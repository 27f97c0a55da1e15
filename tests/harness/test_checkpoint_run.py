"""`checkpoint=` through the harness CLI: sqrt and budget modes, alone and with XConv, and bad values."""
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from cli_runs import read_summary, run_cli, write_mnist_like
from xconv_harness.validate import ConfigError, validate
from xconv_harness.config_files import CONFIG_DIR

STEPS = ["task=classification", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.train_subset=64",
         "data.test_subset=64", "data.eval_batch_size=32", "data.batch_size=16", "threads=1", "logger=none",
         "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def fashion_source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fashion-mnist")
    write_mnist_like(folder, compress=True)
    return folder


def test_checkpoint_modes_alone_and_with_xconv(tmp_path, fashion_source):
    sweep = tmp_path / "sweep"
    # MnistNet, batch 16: exact backprop keeps about 2.2 MiB; checkpointing alone fits 2 MiB.
    result = run_cli(sweep, *STEPS, f"data.source={fashion_source}", f"data.root={tmp_path / 'cache'}",
                     "probes=0,16", "checkpoint=sqrt,budget:2MiB", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [read_summary(path.parent) for path in sorted(sweep.glob("*/summary.json"))]
    by_job = {(s["gradient"]["probes"], s["gradient"]["checkpoint"]): s for s in summaries}
    assert set(by_job) == {(0, "sqrt"), (16, "sqrt"), (0, "budget:2MiB"), (16, "budget:2MiB")}

    for probes in (0, 16):
        sqrt = by_job[probes, "sqrt"]["gradient"]
        assert sqrt["mode"] == ("checkpoint" if probes == 0 else "xconv+checkpoint")
        plan = sqrt["checkpoint_plan"]
        assert plan["mode"] == "sqrt" and plan["segment_names"] == [
            "features[0:3]", "features[3:6]", "features[6:9]", "classifier[0:2]"]
        assert plan["recompute_bytes"] > 0
        assert by_job[probes, "sqrt"]["activation_memory"]["saved_bytes_by_kind"]["CheckpointSegment"] > 0
        assert by_job[probes, "sqrt"]["train_steps"] == 2

        budget = by_job[probes, "budget:2MiB"]
        report = budget["gradient"]["checkpoint_plan"]["budget"]
        assert report["budget_bytes"] == 2 * 2**20 and report["fits"]
        assert report["measured_bytes"] <= 2 * 2**20 < report["exact_bytes"]
        # Checkpointing alone meets this budget, so the planner keeps every layer exact.
        assert report["xconv_layers"] == 0 and budget["gradient"]["mode"] == "checkpoint"
        assert budget["gradient"]["xconv_layers"] == []
        # The training steps measured what the plan measured (the first step planned, the second is reported).
        assert budget["activation_memory"]["saved_bytes"] >= report["measured_saved_bytes"]


def compose(overrides, tmp_path):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"out_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("value,fragments", [
    ("every:0", ["checkpoint='every:0'", "none, sqrt, every:K", "budget:<bytes>"]),
    ("budget:lots", ["checkpoint='budget:lots'", "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"]),
    ("sometimes", ["checkpoint='sometimes'", "none, sqrt, every:K", "budget:<bytes>"]),
])
def test_bad_checkpoint_values_are_refused_before_building(tmp_path, value, fragments):
    cfg = compose(["task=classification", f"checkpoint={value}"], tmp_path)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert all(fragment in str(error.value) for fragment in fragments), str(error.value)
    for good in ("none", "sqrt", "every:3", "budget:200MiB"):
        validate(compose(["task=classification", f"checkpoint={good}"], tmp_path))


@pytest.mark.slow
def test_unreachable_budget_exits_with_one_clear_line(tmp_path, fashion_source):
    result = run_cli(tmp_path / "run", *STEPS, f"data.source={fashion_source}", f"data.root={tmp_path / 'cache'}",
                     "probes=0", "checkpoint=budget:1KiB")
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint=budget:1024 (1.00 KiB) cannot be met"), last
    assert "Allowed: a budget of at least" in last
    assert not (tmp_path / "run" / "summary.json").exists()
