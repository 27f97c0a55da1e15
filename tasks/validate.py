"""Check a composed run config before anything is built or trained.

Each problem is a :class:`ConfigError` whose message names the key, the value
and what is allowed, in one line.
"""
from __future__ import annotations

from xconv._checks import PROBE_KINDS

RELU_MODES = ("exact", "bit")
DEVICES = ("auto", "cpu", "cuda", "gpu", "mps")
# Keys in data/model/task configs that describe them for the harness; not constructor arguments.
META_KEYS = ("name", "channels", "image_size", "num_classes", "exact_layers", "accepts_data", "accepts_models")


class ConfigError(ValueError):
    """A config value that is not allowed."""


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require_int(key: str, value, least: int, note: str = "") -> int:
    """Return ``value`` if it is an integer >= ``least``, else raise ValueError naming ``key``."""
    if not _integer(value) or value < least:
        raise ValueError(f"{key}={value!r}: must be an integer >= {least}{note}")
    return value


def validate(cfg) -> None:
    """Raise ConfigError for the first bad value of ``cfg`` (an OmegaConf DictConfig or dict)."""
    probes = cfg.get("probes")
    if not _integer(probes) or probes < 0:
        raise ConfigError(f"probes={probes!r}: must be an integer >= 0 (0 = exact backprop)")
    if cfg.get("probe") not in PROBE_KINDS:
        raise ConfigError(f"probe={cfg.get('probe')!r}: must be one of {', '.join(PROBE_KINDS)}")
    if cfg.get("relu") not in RELU_MODES:
        raise ConfigError(f"relu={cfg.get('relu')!r}: must be one of {', '.join(RELU_MODES)}")
    if not _integer(cfg.get("seed")):
        raise ConfigError(f"seed={cfg.get('seed')!r}: must be an integer")
    if cfg.get("device") not in DEVICES:
        raise ConfigError(f"device={cfg.get('device')!r}: must be one of {', '.join(DEVICES)}")
    threads = cfg.get("threads")
    if threads is not None and (not _integer(threads) or threads < 1):
        raise ConfigError(f"threads={threads!r}: must be null (torch's default) or an integer >= 1")
    memory_steps = cfg.get("memory_steps")
    if not _integer(memory_steps) or memory_steps < 0:
        raise ConfigError(f"memory_steps={memory_steps!r}: must be an integer >= 0")
    task, data, model = cfg.task, cfg.data, cfg.model
    accepts_data = task.get("accepts_data")
    if accepts_data is not None and data.get("name") not in accepts_data:
        raise ConfigError(f"data={data.get('name')!r}: task {task.name!r} takes data "
                          f"{', '.join(accepts_data)}")
    accepts_models = task.get("accepts_models")
    if accepts_models is not None and model.get("name") not in accepts_models:
        raise ConfigError(f"model={model.get('name')!r}: task {task.name!r} takes model "
                          f"{', '.join(accepts_models)}")
    for key in ("batch_size", "eval_batch_size"):
        value = data.get(key)
        if value is not None and (not _integer(value) or value < 1):
            raise ConfigError(f"data.{key}={value!r}: must be an integer >= 1")
    for key in ("train_subset", "test_subset"):
        value = data.get(key)
        if value is not None and (not _integer(value) or value < 1):
            raise ConfigError(f"data.{key}={value!r}: must be null (all) or an integer >= 1")
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and (not _integer(max_epochs) or max_epochs < -1 or max_epochs == 0):
        raise ConfigError(f"trainer.max_epochs={max_epochs!r}: must be an integer >= 1 (or -1)")
