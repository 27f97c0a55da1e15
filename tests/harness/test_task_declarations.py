"""A task, data module or model declares itself in its own files: its config rules, the metrics its
tables show, how its optimiser and scheduler are completed; sections are built through one helper,
and ``summary.json`` has one definition."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from xconv_harness import config_nodes, summary
from xconv_harness.config_files import CONFIG_DIR, config_file
from xconv_harness.studies import run_summaries
from xconv_harness.validate import validate

TASKS = sorted(path.stem for path in (CONFIG_DIR / "task").glob("*.yaml"))


def compose_config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", TASKS)
def test_every_task_declares_its_table_metrics(name):
    cfg = compose_config(f"task={name}")
    task_class = summary.task_class({"config": {"task": {"_target_": cfg.task._target_}}})
    assert task_class is not None and task_class.table_metrics, name
    assert all(metric.key.startswith("test/") for metric in task_class.table_metrics)
    assert task_class.monitor_metric.startswith("val/")


def table_of(summaries: list[dict]) -> run_summaries.Table:
    runs = [run_summaries.Run(folder=None, summary=s, table="t", gradient=run_summaries.Gradient.of(s),
                              config=run_summaries.flatten(s["config"])) for s in summaries]
    return run_summaries.build_table("t", runs)


def fake_summary(task: str, target: str | None, metrics: dict) -> dict:
    return {"task": task, "seed": 0, "metrics": metrics, "config": {"task": {"name": task, "_target_": target}},
            "gradient": {"mode": "exact", "probes": 0, "probe": "channel", "relu": "exact"}}


def test_tables_read_what_the_task_class_declares():
    from xconv_harness.dip import SuperResolutionTask

    for target in ("xconv_harness.dip.SuperResolutionTask", "tasks.dip.SuperResolutionTask"):  # old summaries
        table = table_of([fake_summary("superres", target, {"test/psnr_y": 20.0})])
        assert table.task_class is SuperResolutionTask
        assert run_summaries.metrics_for(table) == SuperResolutionTask.table_metrics
        assert run_summaries.baseline_for(table) == SuperResolutionTask.baseline_metric
        assert run_summaries.val_curve_for(table) == "val/psnr_y"


@pytest.mark.parametrize("target", [None, "elsewhere.NoSuchTask", "xconv_harness.dip.NoSuchTask"])
def test_a_task_this_harness_does_not_have_gets_every_test_metric(target):
    table = table_of([fake_summary("mine", target, {"test/b": 1.0, "test/a": 2.0, "val/a": 3.0})])
    assert table.task_class is None
    assert [metric.key for metric in run_summaries.metrics_for(table)] == ["test/a", "test/b"]
    assert run_summaries.baseline_for(table) is None and run_summaries.val_curve_for(table) == "val/loss"


def test_descriptive_keys_reach_a_target_only_when_it_takes_them():
    node = {"_target_": "xconv_harness.models.classification.CifarNet", "name": "cifar_net", "in_channels": 1,
            "image_size": 28, "num_classes": 10, "exact_layers": []}
    assert config_nodes.arguments(node) == {"in_channels": 1, "image_size": 28, "num_classes": 10}
    model = config_nodes.instantiate(node)
    assert model.classifier[1].in_features == 32 * 7 * 7  # image_size=28 reached CifarNet
    assert config_nodes.instantiate({**node, "_partial_": True})(in_channels=3).features[0].in_channels == 3


@pytest.mark.parametrize("scheduler,interval,checks", [
    ("plateau", "epoch", lambda s: s.mode == "max"),  # the classification task's monitor_mode
    ("cosine", "epoch", lambda s: s.T_max == 7),  # trainer.max_epochs
    ("warmup_cosine", "step", lambda s: s.lr_lambdas[0](0) == 0.5 and s.lr_lambdas[0](40) == 0.0),  # 40 steps
])
def test_the_task_completes_its_optimiser_and_scheduler(scheduler, interval, checks):
    from xconv_harness.classification import ClassificationTask

    task = ClassificationTask(nn.Linear(2, 2), OmegaConf.load(config_file("optimizer", "sgd")),
                              {**OmegaConf.load(config_file("scheduler", scheduler)), "warmup_steps": 2}
                              if scheduler == "warmup_cosine" else OmegaConf.load(config_file("scheduler", scheduler)))
    task._trainer = SimpleNamespace(max_epochs=7, estimated_stepping_batches=40)
    configured = task.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD) and configured["optimizer"].defaults["lr"] == 1e-2
    entry = configured["lr_scheduler"]
    assert entry["interval"] == interval and checks(entry["scheduler"])
    assert entry.get("monitor") == ("val/acc" if scheduler == "plateau" else None)


def test_no_scheduler_returns_the_optimiser_alone():
    from xconv_harness.dip import InpaintingTask

    task = InpaintingTask(nn.Conv2d(4, 3, 1), OmegaConf.load(config_file("optimizer", "adamw")),
                          OmegaConf.load(config_file("scheduler", "none")), input_depth=4)
    assert isinstance(task.configure_optimizers(), torch.optim.AdamW)


def test_a_data_config_file_alone_adds_a_segmentation_dataset(tmp_path):
    """conf/data/photo_mosaic.yaml is the only file of the photo mosaics: the segmentation task takes
    every config of its data modules, the schema finds the module's rules, and a run goes through."""
    from xconv_harness.run import run

    cfg = compose_config("task=segmentation", "data=photo_mosaic", f"out_dir={tmp_path / 'run'}", "logger=none",
                         "trainer.fast_dev_run=true", "trainer.enable_progress_bar=false", "probes=2")
    validate(cfg)
    result = run(cfg)
    assert result["data"] == "photo_mosaic" and "test/iou" in result["metrics"]
    assert summary.read(tmp_path / "run" / summary.SUMMARY_FILE)["metrics"] == result["metrics"]
