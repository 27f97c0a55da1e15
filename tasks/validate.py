"""Check a composed run config before anything is built or trained.

Each problem is a :class:`ConfigError` whose message names the key, the value
and what is allowed, in one line.
"""
from __future__ import annotations

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
    from .schema import check

    check(cfg)  # every key known, every value of the right type and range (tasks/schema.py)
    from xconv.checkpoint import parse_checkpoint_mode

    try:  # none | sqrt | every:K | budget:<bytes>; the parser's message names the key, value and forms
        parse_checkpoint_mode(cfg.get("checkpoint", "none"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    task, data, model = cfg.task, cfg.data, cfg.model
    accepts_data = task.get("accepts_data")
    if accepts_data is not None and data.get("name") not in accepts_data:
        raise ConfigError(f"data={data.get('name')!r}: task {task.name!r} takes data "
                          f"{', '.join(accepts_data)}")
    accepts_models = task.get("accepts_models")
    if accepts_models is not None and model.get("name") not in accepts_models:
        raise ConfigError(f"model={model.get('name')!r}: task {task.name!r} takes model "
                          f"{', '.join(accepts_models)}")
