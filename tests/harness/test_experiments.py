"""Every conf/experiment/*.yaml composes and runs one fast_dev_run step.

Experiments whose data cannot be had offline (MNIST, CIFAR-10) run on tiny
files in torchvision's own layouts that the test writes, through the real
loaders (CIFAR-10's md5 check is the one thing bypassed: the files are fakes).
"""
from pathlib import Path

import pytest
import torchvision.datasets.cifar
from hydra import compose, initialize_config_dir

from xconv_harness.config_files import CONFIG_DIR
from cli_runs import write_cifar10, write_fake_pets, write_mnist_like
from xconv_harness.run import run
from xconv_harness.validate import validate

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
# one step of these takes 15-30 s on a CPU (paper-scale images and networks): `slow`; every experiment,
# these included, still composes and passes validation in test_every_experiment_composes_and_validates
LONG_STEPS = {"dip_inpainting_paper", "dip_superres_paper", "fig16_mnist_ddpm"}


def data_overrides(data_name: str, tmp_path: Path, monkeypatch) -> list[str]:
    if data_name == "mnist":
        write_mnist_like(tmp_path / "datasets" / "MNIST" / "raw")
        return [f"data.root={tmp_path / 'datasets'}"]
    if data_name == "fashion_mnist":
        write_mnist_like(tmp_path / "fashion", compress=True)
        return [f"data.root={tmp_path / 'datasets'}", f"data.source={tmp_path / 'fashion'}"]
    if data_name == "cifar10":
        write_cifar10(tmp_path / "datasets")
        monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
        return [f"data.root={tmp_path / 'datasets'}", "data.num_workers=0"]
    if data_name == "oxford_pet":
        write_fake_pets(tmp_path / "datasets", {"trainval": [f"Bengal_{i}" for i in range(1, 11)],
                                                "test": ["Bengal_30", "Bengal_31"]})
        return [f"data.root={tmp_path / 'datasets'}", "data.image_size=64", "data.val_fraction=0.2"]
    return []


def compose_experiment(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={name}", *overrides])


def test_there_are_experiments():
    assert {"table1_mnist", "fig13_cifar10_exact", "fig13_cifar10_xconv"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name, tmp_path):
    cfg = compose_experiment(name, [f"out_dir={tmp_path / 'run'}"])
    validate(cfg)
    assert cfg.data.name and cfg.model


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name in LONG_STEPS else name
                                  for name in EXPERIMENTS])
def test_experiment_composes_and_runs_a_fast_dev_run(name, tmp_path, monkeypatch):
    common = [f"out_dir={tmp_path / 'run'}", "logger=none", "trainer.fast_dev_run=true",
              "trainer.enable_progress_bar=false"]
    data_name = compose_experiment(name, common).data.name
    cfg = compose_experiment(name, common + data_overrides(data_name, tmp_path, monkeypatch))
    validate(cfg)
    summary = run(cfg)
    assert summary["train_steps"] >= 1
    assert summary["metrics"] and all(key.startswith(("val/", "test/")) for key in summary["metrics"])
    assert (tmp_path / "run" / "summary.json").exists()
