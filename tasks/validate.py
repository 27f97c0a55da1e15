"""Check a composed run config before anything is built or trained.

Each problem is a :class:`ConfigError` whose message names the key, the value
and what is allowed, in one line. :func:`validate` runs the schema
(:mod:`xconv_harness.schema`: every key known, every value of the right type and
range), the checkpoint-mode parser and the checks between sections (a task's
``accepts_data`` / ``accepts_models``; the image side the data delivers against the side the
model takes).
"""
from __future__ import annotations

from omegaconf import OmegaConf

from .config_nodes import builds, constructor_keys, group_targets, plain, target
from .errors import ConfigError
from .rules import DeliveredSide
from .schema import check, source_key


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
    _check_image_side(cfg)


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


def delivered_side(data) -> DeliveredSide:
    """The side of the images the ``data`` section delivers: its target's ``delivered_side``, else
    its ``size`` (or, without one, its descriptive ``image_size``)."""
    section = plain(data)
    declared = getattr(target(section), "delivered_side", None)
    if declared is not None:
        return declared(section)
    key = "size" if "size" in section else "image_size"
    return DeliveredSide(key, section.get(key))


def _check_image_side(cfg) -> None:
    """The side the data delivers must be one the model takes (its ``input_side_rule``) and, for a
    model built for one side (``image_size``), that side. Named where the user sets it."""
    delivered = delivered_side(cfg.data)
    if delivered.side is None:  # e.g. a photograph's own size: known once it is loaded
        return
    model = target(cfg.model)
    rule = getattr(model, "input_side_rule", None)
    rule = rule(plain(cfg.model)) if rule is not None else None
    if rule is not None and not rule.accepts(delivered.side):
        _refuse(cfg, f"data.{delivered.key}", f"must be {rule.allowed}{delivered.note}")
    if "image_size" in constructor_keys(model) and cfg.model.get("image_size") != delivered.side:
        _refuse(cfg, "model.image_size", f"must be {delivered.side}, the side of the images "
                                         f"data ({cfg.data.get('name')}) delivers")


def _refuse(cfg, key: str, allowed: str) -> None:
    where = source_key(cfg, key)
    raise ConfigError(f"{where}={OmegaConf.select(cfg, where)!r}: {allowed}")
