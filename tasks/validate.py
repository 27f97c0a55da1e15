"""Check a composed run config before anything is built or trained.

Each problem is a :class:`ConfigError` whose message names the key, the value
and what is allowed, in one line. :func:`validate` runs the schema
(:mod:`xconv_harness.schema`: every key known, every value of the right type and
range), the checkpoint-mode parser and the checks between sections (a task's
``accepts_data`` / ``accepts_models``).
"""
from __future__ import annotations

from .config_nodes import builds, group_targets
from .errors import ConfigError
from .schema import check


def validate(cfg) -> None:
    """Raise ConfigError for the first bad value of ``cfg`` (an OmegaConf DictConfig or dict)."""
    check(cfg)  # every key known, every value of the right type and range (tasks/schema.py)
    from xconv.checkpoint import parse_checkpoint_mode

    try:  # none | sqrt | every:K | budget:<bytes>; the parser's message names the key, value and forms
        parse_checkpoint_mode(cfg.get("checkpoint", "none"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for section, key in (("data", "accepts_data"), ("model", "accepts_models")):
        _check_accepted(cfg.task, section, cfg[section], cfg.task.get(key))


def _check_accepted(task, section: str, node, accepted) -> None:
    """The task's ``accepts_data`` / ``accepts_models`` lists config names (``photo``) or the class or
    function of a data module or model (``xconv_harness.data.segmentation.TextureMosaicData``: every
    config whose ``_target_`` is it or a subclass, so a new config of it needs no other file)."""
    if accepted is None or node.get("name") in accepted or any(builds(node, entry) for entry in accepted):
        return
    options = group_targets(section)
    names = [name for entry in accepted
             for name in ([entry] if entry in options or "." not in entry else
                          [option for option, target in options.items()
                           if target and builds({"_target_": target}, entry)])]
    raise ConfigError(f"{section}={node.get('name')!r}: task {task.name!r} takes {section} "
                      f"{', '.join(dict.fromkeys(names))}")
