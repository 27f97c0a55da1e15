"""Where the harness's Hydra configs are: ``conf/`` of the source tree, installed as ``xconv_harness/conf``.

A wheel carries them inside the package (``pyproject.toml`` maps ``conf/`` to the package
``xconv_harness.conf``), so ``python -m xconv.run`` finds them from any folder; an editable
install resolves the same package name to the checkout's ``conf/``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def _config_dir() -> Path:
    spec = importlib.util.find_spec("xconv_harness.conf")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the harness's configs (package xconv_harness.conf) are not installed; "
                                "reinstall xconv")
    return Path(next(iter(spec.submodule_search_locations)))


CONFIG_DIR: Path = _config_dir()
CONFIG_FILE: Path = CONFIG_DIR / "config.yaml"


def config_file(group: str, name: str) -> Path:
    """One config file of a group, e.g. ``config_file("model", "ddpm_unet")``."""
    return CONFIG_DIR / group / f"{name}.yaml"


def compose_experiment(experiment: str, overrides: tuple[str, ...] = ()):
    """The run config of ``experiment=<experiment>`` with ``overrides`` (seed 0, one thread, no logger),
    as ``python -m xconv.run experiment=<experiment> ...`` would compose it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={experiment}", "seed=0", "threads=1",
                                                        "logger=none", *overrides])
