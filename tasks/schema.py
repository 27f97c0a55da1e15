"""The run config's schema: which keys each section takes and what each value may be.

Which keys a section takes:

* the top level, ``trainer`` and ``logger``: the keys of :data:`RULES` (plus any key
  ``conf/config.yaml`` itself declares, so a key added there is never refused);
* ``data``, ``model``, ``task``: the constructor parameters of the section's
  ``_target_`` (following ``**kwargs`` to the base classes), plus the harness's
  descriptive keys (:data:`xconv_harness.config_nodes.DESCRIPTIVE_KEYS`), minus what the
  harness passes itself (``data.seed``, ``task.model``);
* ``task.optimizer`` / ``task.scheduler``: ``name`` (descriptive), ``_target_``, ``_partial_`` and
  the parameters of the optimiser / scheduler ``_target_`` names (:mod:`xconv_harness.schedules`).

What a value may be (a :class:`~xconv_harness.rules.Rule`, see :func:`rule_for`): the generic keys'
rules are :data:`RULES` here; a ``data``/``model``/``task`` key's rule is declared beside the
constructor that takes it (``CONFIG_RULES`` of the ``_target_`` or its bases), a descriptive key's
in :mod:`xconv_harness.config_nodes`, an optimiser's or scheduler's in :mod:`xconv_harness.schedules`.

:func:`check` raises :class:`xconv_harness.errors.ConfigError` for the first problem, one
line naming the key, the value and what is allowed. Literal values are checked
before interpolated ones, so a bad ``data.channels`` is reported as itself and not as
the ``model.in_channels`` that points at it.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import re
import typing

from omegaconf import DictConfig, ListConfig, OmegaConf

import xconv

from . import config_nodes, schedules
from .config_files import CONFIG_FILE
from .errors import ConfigError
from .config_nodes import constructor_keys
from .rules import POSITIVE, SEED, Choice, ChoiceOf, Either, Flag, Integer, ListOf, Number, Rule, Text

RELU_MODES = ("exact", "bit")
DEVICES = ("auto", "cpu", "cuda", "gpu", "mps")
SECTIONS = ("trainer", "task", "data", "model", "logger")
BUILT = ("data", "model", "task", "task.optimizer", "task.scheduler")  # sections with a _target_
NONFINITE_MODES = ("stop", "skip")
LOGGER_KINDS = ("none", "wandb")
# The key of a section that decides which other keys it takes.
SELECTORS = {**{path: "_target_" for path in BUILT}, "logger": "kind"}
# Constructor arguments the harness passes itself: not config keys.
INJECTED = {"data": {"seed"}, "task": {"model"}, "task.optimizer": {"params"},
            "task.scheduler": {"optimizer", "last_epoch", "verbose", *schedules.RUN_SUPPLIED}}
# Config groups whose options fill a section (conf/<group>/<name>.yaml; the option's name is the section's ``name``).
GROUPS = {"task.optimizer": "optimizer", "task.scheduler": "scheduler"}
# Hydra's own keys of a section that builds an object.
HYDRA_RULES = {"_target_": Text(),
               "_partial_": Either(rules=(Choice(options=(True,)),), text="true (the task completes the call)")}
# The rules of optimiser and scheduler arguments, whatever their target.
ARGUMENT_RULES = {"task.optimizer": schedules.OPTIMIZER_RULES, "task.scheduler": schedules.SCHEDULER_RULES}


def _precisions() -> tuple:
    """Lightning's own ``precision`` values (64, "32-true", "bf16-mixed", ...)."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    def flatten(kind):
        args = typing.get_args(kind)
        return [value for arg in args for value in flatten(arg)] if args else [kind]

    return tuple(flatten(_PRECISION_INPUT))


BATCHES = Either(rules=(Integer(least=0), Number(least=0, most=1)), null="all",
                 text="an integer >= 0 (batches) or a fraction in [0, 1]")
LIGHTNING = "Lightning's default"

# The schema ---------------------------------------------------------------------------------------
RULES: dict[str, Rule] = {
    # Gradient mode and run settings
    "probes": Integer(least=0, note=" (0 = exact backprop)"),
    "probe": ChoiceOf(current=lambda: xconv.PROBE_KINDS),  # probe kinds registered now
    "relu": Choice(options=RELU_MODES),
    "activations": Choice(options=xconv.ACTIVATION_MODES),
    "seed": SEED,
    "device": Choice(options=DEVICES),
    "threads": Integer(least=1, null="torch's default"),
    "flush_denormal": Flag(),
    "out_dir": Text(),
    "memory_steps": Integer(least=0),
    "nonfinite": Choice(options=NONFINITE_MODES),
    "probe_cap": Flag(),
    "ckpt_path": Text(null="start fresh"),
    "ckpt_every_n_steps": Integer(least=0, note=" (0 = only at epoch ends and when training ends)"),
    # Lightning's Trainer: the keys conf/config.yaml sets and the common others
    "trainer.max_epochs": Integer(least=1, also=(-1,), null=LIGHTNING),
    "trainer.min_epochs": Integer(least=0, null=LIGHTNING),
    "trainer.max_steps": Integer(least=-1, note=" (-1 = no limit)"),
    "trainer.min_steps": Integer(least=0, null=LIGHTNING),
    "trainer.max_time": Text(null="no limit"),
    "trainer.accelerator": Choice(options=DEVICES),
    "trainer.strategy": Text(),
    "trainer.devices": Either(rules=(Choice(options=("auto",)), Integer(least=1, also=(-1,)),
                                     ListOf(item=Integer(least=0), least_items=1)),
                              text="auto, -1 (all), an integer >= 1 or a list of device indices"),
    "trainer.num_nodes": POSITIVE,
    "trainer.precision": Choice(options=_precisions()),
    "trainer.log_every_n_steps": Integer(least=1, null=LIGHTNING),
    "trainer.enable_progress_bar": Flag(null=LIGHTNING),
    "trainer.enable_model_summary": Flag(null=LIGHTNING),
    "trainer.enable_checkpointing": Flag(null=LIGHTNING),
    "trainer.num_sanity_val_steps": Integer(least=-1, null=LIGHTNING, note=" (-1 = all)"),
    "trainer.fast_dev_run": Either(rules=(Flag(), Integer(least=0)),
                                   text="true, false or an integer >= 0 (batches)"),
    "trainer.limit_train_batches": BATCHES,
    "trainer.limit_val_batches": BATCHES,
    "trainer.limit_test_batches": BATCHES,
    "trainer.overfit_batches": Either(rules=(Integer(least=0), Number(least=0, most=1)),
                                      text="an integer >= 0 (batches) or a fraction in [0, 1]"),
    "trainer.val_check_interval": Either(rules=(Integer(least=1), Number(above=0, most=1)), null="every epoch",
                                         text="an integer >= 1 (batches) or a fraction in (0, 1]"),
    "trainer.check_val_every_n_epoch": Integer(least=1, null="by val_check_interval only"),
    "trainer.deterministic": Either(rules=(Flag(), Choice(options=("warn",))), null=LIGHTNING,
                                    text="true, false or warn"),
    "trainer.benchmark": Flag(null=LIGHTNING),
    "trainer.accumulate_grad_batches": POSITIVE,
    "trainer.gradient_clip_val": Number(least=0, null="no clipping"),
    "trainer.gradient_clip_algorithm": Choice(options=("norm", "value"), null="norm"),
    "trainer.detect_anomaly": Flag(),
    "trainer.inference_mode": Flag(),
    "trainer.use_distributed_sampler": Flag(),
    "trainer.sync_batchnorm": Flag(),
    "trainer.reload_dataloaders_every_n_epochs": Integer(least=0),
    # Logger (tasks/run.py build_loggers)
    "logger.kind": Choice(options=LOGGER_KINDS),
    "logger.project": Text(),
    "logger.group": Text(),
    "logger.tags": ListOf(item=Text()),
}
# Keys whose values another module parses, with its own error naming the key (a hook: a module that
# parses a key may instead put ``RULES[key] = Check(parse=..., text=...)``).
CHECKED_ELSEWHERE = {"checkpoint": "the checkpoint-mode parser (checkpoint=none|sqrt|every:K|budget:<bytes>)"}


# Which keys each section takes ----------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _declared_keys(section: str | None) -> frozenset[str]:
    """Keys conf/config.yaml itself declares at the top level (``section`` None) or in ``section``."""
    declared = OmegaConf.load(CONFIG_FILE)
    node = declared if section is None else declared.get(section)
    return frozenset(str(key) for key in node.keys() if key not in ("defaults", "hydra")) if node else frozenset()


def _ruled_keys(prefix: str) -> set[str]:
    """The keys directly under ``prefix`` ('' = top level) that have a rule."""
    keys = {key[len(prefix):] for key in RULES if key.startswith(prefix)} if prefix else set(RULES)
    return {key for key in keys if "." not in key}


def _target(path: str, node) -> object:
    """The section's ``_target_``, imported (None for a scheduler section without one)."""
    if path == "task.scheduler" and node.get("_target_") is None:
        return None
    try:
        return config_nodes.target(node)
    except Exception as error:  # ImportError, AttributeError, hydra's own
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}._target_={node.get('_target_')!r}: cannot be imported ({reason})") from error


def _scheduler_keys(target) -> set[str]:
    keys = set(constructor_keys(target)) | ({"monitor"} if schedules.stepping(target).monitored else set())
    return keys - INJECTED["task.scheduler"]


def allowed_keys(path: str, node) -> set[str]:
    """The keys section ``path`` ('' = top level) may hold, given its own values (its target)."""
    if path == "":
        return _ruled_keys("") | _declared_keys(None) | set(SECTIONS) | set(CHECKED_ELSEWHERE) | {"hydra"}
    if path in ("trainer", "logger"):
        return _ruled_keys(path + ".") | _declared_keys(path)
    target = _target(path, node)
    if path == "task.scheduler":
        targets = ([config_nodes.target({"_target_": name}) for name in config_nodes.group_targets("scheduler").values()
                    if name]
                   if target is None else [target])  # none: a task's own settings go unused
        return {"name", *HYDRA_RULES} | set().union(*map(_scheduler_keys, targets))
    if path == "task.optimizer":
        return {"name", *HYDRA_RULES} | (constructor_keys(target) - INJECTED[path])
    return ({"_target_", *config_nodes.DESCRIPTIVE_KEYS} | constructor_keys(target)) - INJECTED.get(path, set())


def required_keys(path: str, node) -> set[str]:
    """The keys section ``path`` must hold: what the harness reads and what constructors need."""
    if path == "":
        return set(_declared_keys(None)) | set(SECTIONS)
    if path == "logger":
        return {"kind"} | ({"project", "group", "tags"} if node.get("kind") == "wandb" else set())
    if path == "trainer":
        return set()
    if path in GROUPS:  # the task completes the call (STEPPING supplies e.g. the scheduler's T_max)
        return {"name", "_target_"} | ({"_partial_"} if _target(path, node) is not None else set())
    return ({"_target_", "name"} | constructor_keys(_target(path, node), required=True)) - INJECTED.get(path, set())


# What each value may be ---------------------------------------------------------------------------
def _declared_rules(target) -> dict[str, Rule]:
    """The ``CONFIG_RULES`` of a class and its bases (the class's own win) or of a function."""
    classes = reversed(target.__mro__) if inspect.isclass(target) else [target]
    rules: dict[str, Rule] = {}
    for owner in classes:
        rules.update(vars(owner).get("CONFIG_RULES", {}) if inspect.isclass(owner)
                     else getattr(owner, "CONFIG_RULES", {}))
    return rules


def section_rules(path: str, node) -> dict[str, Rule]:
    """``{key: rule}`` of a section that builds an object, from what its ``_target_`` declares."""
    if path in ARGUMENT_RULES:
        return {**HYDRA_RULES, "name": config_nodes.DESCRIPTIVE_KEYS["name"], **ARGUMENT_RULES[path]}
    return _target_rules(_target(path, node))


@functools.lru_cache(maxsize=None)
def _target_rules(target) -> dict[str, Rule]:
    return {**HYDRA_RULES, **config_nodes.DESCRIPTIVE_KEYS, **_declared_rules(target)}


def rule_for(path: str, section) -> Rule | None:
    """The rule of the dotted key ``path`` whose section (a DictConfig) is ``section``; None: unchecked."""
    section_path, _, key = path.rpartition(".")
    if section_path not in BUILT:
        return RULES.get(path)
    if key in HYDRA_RULES:  # known without importing the target
        return ARGUMENT_RULES.get(section_path, {}).get(key, HYDRA_RULES[key])
    return section_rules(section_path, section).get(key)


def _check_group_name(path: str, node) -> None:
    """A section filled from a config group (``optimizer@task.optimizer=sgd``) keeps the name of the
    option its ``_target_`` comes from: ``task.optimizer.name=sgd`` alone would not switch optimisers."""
    name, target, group = node.get("name"), node.get("_target_"), GROUPS[path]
    targets = config_nodes.group_targets(group)
    if not isinstance(name, str) or name not in targets or targets[name] == target:
        return
    options = [option for option, its_target in targets.items() if its_target == target]
    allowed = (f"{options[0]}, the {group} {path}._target_={target!r} comes from" if options else
               f"the name of {path}._target_={target!r}, which no conf/{group}/*.yaml builds")
    raise ConfigError(f"{path}.name={name!r}: must be {allowed} (to use {name}: {group}@{path}={name})")


# Checking ----------------------------------------------------------------------------------------------
def check(cfg) -> None:
    """Raise ConfigError for the first unknown key or bad value of ``cfg`` (a DictConfig)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    leaves = list(settings(cfg, ""))
    for path, parent, key in sorted(leaves, key=lambda leaf: OmegaConf.is_interpolation(leaf[1], leaf[2])):
        rule = rule_for(path, parent)
        if rule is None:
            continue
        value = _value(path, parent, key)
        if value is _UNRESOLVABLE_HERE:
            continue
        if not rule.accepts(value):
            raise ConfigError(f"{path}={value!r}: must be {rule.allowed}")


def settings(node: DictConfig, path: str = ""):
    """``(dotted key, parent, key)`` of every setting of ``node`` (the section at ``path``), after
    refusing keys the section does not take and reporting keys it needs but lacks."""
    for section in ("task.optimizer", "task.scheduler") if path == "task" else ():
        _require_mapping(section, node, section.split(".")[1])
    selector = SELECTORS.get(path)
    if selector is not None:  # the key that decides which other keys the section takes: checked first
        if selector not in node:
            _missing(f"{path}.{selector}", node)
        value, rule = _value(f"{path}.{selector}", node, selector), rule_for(f"{path}.{selector}", node)
        if not rule.accepts(value):
            raise ConfigError(f"{path}.{selector}={value!r}: must be {rule.allowed}")
    allowed = allowed_keys(path, node)  # imports the target: an import error comes first
    if path in GROUPS:
        _check_group_name(path, node)
    for key in sorted(required_keys(path, node) - set(node.keys())):
        _missing(f"{path}.{key}" if path else key, node)
    for key in node.keys():
        full = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            raise ConfigError(unknown_key_message(full, _quiet_value(node, key), path, node, allowed))
        if full == "hydra":
            continue
        if full in SECTIONS or full in ("task.optimizer", "task.scheduler"):
            _require_mapping(full, node, key)
            yield from settings(node[key], full)
        else:
            yield full, node, key


def unknown_key_message(full: str, value, path: str, node, allowed, near=()) -> str:
    """``<full>=<value>: unknown key; <section> takes <keys> (did you mean <key>?)``: ``near`` are keys
    elsewhere in the config it may be meant for, else the section's closest key is suggested."""
    keys = sorted(set(allowed) - {"hydra"})
    leaf = full[len(path) + 1:] if path else full
    near = list(near) or [f"{path}.{key}" if path else key
                          for key in difflib.get_close_matches(leaf.split(".")[0], keys, n=1)]
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    return f"{full}={value!r}: unknown key; {_section_name(path, node)} takes {', '.join(keys)}{hint}"


def _section_name(path: str, node) -> str:
    """``the top level``, ``trainer``, ``task.scheduler (plateau)``, ``data (fashion_mnist)``, ..."""
    if not path:
        return "the top level"
    choice = node.get("name") if path not in ("trainer", "logger") else None
    return f"{path} ({choice})" if isinstance(choice, str) else path


def _missing(path: str, section) -> None:
    rule = rule_for(path, section)
    if rule is not None:
        allowed = rule.allowed
    elif path in SECTIONS or path in ("task.optimizer", "task.scheduler"):
        allowed = f"a mapping of {path} settings"
    else:
        allowed = "set"
    raise ConfigError(f"{path}: missing; must be {allowed}")


def _require_mapping(path: str, parent, key) -> None:
    if key in parent and not isinstance(parent._get_node(key), DictConfig):
        raise ConfigError(f"{path}={_quiet_value(parent, key)!r}: must be a mapping of {path} settings")


_REFERENCE = re.compile(r"^\$\{(\.*)([A-Za-z_][\w.]*)\}$")  # ${data.image_size}, ${.size}


def source_key(cfg, key: str) -> str:
    """The key a user sets to change ``key``: ``key`` itself, or, if its value is a plain reference
    (``${data.image_size}``, ``${.size}``), the key that reference leads to in the end."""
    seen = set()
    while key not in seen:
        seen.add(key)
        section, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, section) if section else cfg
        raw = parent._get_node(leaf)._value() if isinstance(parent, DictConfig) and leaf in parent else None
        match = _REFERENCE.match(raw) if isinstance(raw, str) else None
        if match is None:
            return key
        dots, target = match.groups()
        if dots:  # one dot: the same section; each further dot: one section up
            parts = section.split(".") if section else []
            target = ".".join([*parts[:len(parts) - len(dots) + 1], target])
        key = target
    return key


_UNRESOLVABLE_HERE = object()


def _value(path: str, parent, key):
    """The plain value (lists and dicts as Python containers); interpolations resolved."""
    raw = parent._get_node(key)._value()
    if isinstance(raw, str) and raw.startswith("${hydra:"):
        try:  # Hydra's runtime values exist only inside a run
            return parent[key]
        except Exception:
            return _UNRESOLVABLE_HERE
    try:
        value = parent[key]
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    except Exception as error:  # an interpolation that points at nothing
        raise ConfigError(f"{path}={raw!r}: cannot be resolved ({type(error).__name__}: "
                          f"{str(error).splitlines()[0]})") from error


def _quiet_value(parent, key):
    try:
        return _value("", parent, key)
    except ConfigError:
        return parent._get_node(key)._value()
