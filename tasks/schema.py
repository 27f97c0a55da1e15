"""The run config's schema: which keys each section takes and what each value may be.

:data:`RULES` maps every dotted key (``probes``, ``data.batch_size``,
``task.optimizer.lr``, ...) to a :class:`Rule`. Which keys a section takes:

* the top level, ``trainer`` and ``logger``: the keys of :data:`RULES` (plus any key
  ``conf/config.yaml`` itself declares, so a key added there is never refused);
* ``data``, ``model``, ``task``: the constructor parameters of the section's
  ``_target_`` (following ``**kwargs`` to the base classes), plus the harness's
  descriptive keys (:data:`tasks.validate.META_KEYS`), minus what the harness passes
  itself (``data.seed``, ``task.model``);
* ``task.optimizer`` / ``task.scheduler``: ``name`` plus the parameters of the
  optimiser / scheduler that ``name`` picks.

:func:`check` raises :class:`tasks.validate.ConfigError` for the first problem, one
line naming the key, the value and what is allowed. Literal values are checked
before interpolated ones, so a bad ``data.channels`` is reported as itself and not as
the ``model.in_channels`` that points at it.
"""
from __future__ import annotations

import functools
import inspect
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from xconv._checks import PROBE_KINDS

from .base import OPTIMIZERS, SCHEDULERS, XConvTask
from .data.classification import DATASETS
from .data.masks import MASKS
from .data.segmentation import SKIMAGE_SOURCES
from .models.dip import ACTIVATIONS, PADDING_MODES, UPSAMPLE_MODES
from .validate import DEVICES, META_KEYS, RELU_MODES, ConfigError

CONFIG_FILE = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"
SECTIONS = ("trainer", "task", "data", "model", "logger")
NONFINITE_MODES = ("stop", "skip")
LOGGER_KINDS = ("none", "wandb")
# The key of a section that decides which other keys it takes.
SELECTORS = {"data": "_target_", "model": "_target_", "task": "_target_", "task.optimizer": "name",
             "task.scheduler": "name", "logger": "kind"}
# Constructor arguments the harness passes itself: not config keys.
INJECTED = {"data": {"seed"}, "task": {"model"}, "task.optimizer": {"params"},
            "task.scheduler": {"optimizer", "last_epoch", "verbose"}}


# Rules ------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Rule:
    """What a value may be. ``null``: if set, None is allowed and means this."""

    null: str | None = None

    def accepts(self, value) -> bool:
        return self.null is not None if value is None else self._accepts(value)

    @property
    def allowed(self) -> str:
        """The text after "must be " in an error message."""
        text = self._allowed()
        return text if self.null is None else f"null ({self.null}) or {text}"

    def _accepts(self, value) -> bool:
        raise NotImplementedError

    def _allowed(self) -> str:
        raise NotImplementedError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class Integer(Rule):
    least: int | None = None
    also: tuple = ()  # further allowed values below ``least`` (e.g. -1 = no limit)
    note: str = ""

    def _accepts(self, value) -> bool:
        return _is_int(value) and (self.least is None or value >= self.least or value in self.also)

    def _allowed(self) -> str:
        text = "an integer" if self.least is None else f"an integer >= {self.least}"
        if self.also:
            text += f" (or {', '.join(map(str, self.also))})"
        return text + self.note


@dataclass(frozen=True, kw_only=True)
class Number(Rule):
    """A finite int or float within the bounds: ``above``/``below`` exclusive, ``least``/``most`` inclusive."""

    above: float | None = None
    least: float | None = None
    below: float | None = None
    most: float | None = None

    def _accepts(self, value) -> bool:
        return (_is_number(value) and (self.above is None or value > self.above)
                and (self.least is None or value >= self.least) and (self.below is None or value < self.below)
                and (self.most is None or value <= self.most))

    def _allowed(self) -> str:
        low = ("(", self.above) if self.above is not None else ("[", self.least) if self.least is not None else None
        high = (")", self.below) if self.below is not None else ("]", self.most) if self.most is not None else None
        if low and high:
            return f"a number in {low[0]}{low[1]}, {high[1]}{high[0]}"
        if low:
            return f"a number {'>' if low[0] == '(' else '>='} {low[1]}"
        if high:
            return f"a number {'<' if high[0] == ')' else '<='} {high[1]}"
        return "a finite number"


@dataclass(frozen=True, kw_only=True)
class Choice(Rule):
    options: tuple

    def _accepts(self, value) -> bool:
        return any(type(value) is type(option) and value == option for option in self.options)

    def _allowed(self) -> str:
        return f"one of {', '.join(dict.fromkeys(map(str, self.options)))}"


@dataclass(frozen=True, kw_only=True)
class Text(Rule):
    def _accepts(self, value) -> bool:
        return isinstance(value, str) and value.strip() != ""

    def _allowed(self) -> str:
        return "a non-empty string"


@dataclass(frozen=True, kw_only=True)
class Flag(Rule):
    def _accepts(self, value) -> bool:
        return isinstance(value, bool)

    def _allowed(self) -> str:
        return "true or false"


@dataclass(frozen=True, kw_only=True)
class ListOf(Rule):
    item: Rule
    least_items: int = 0
    items: int | None = None  # exact length

    def _accepts(self, value) -> bool:
        return (isinstance(value, list) and len(value) >= self.least_items
                and (self.items is None or len(value) == self.items) and all(map(self.item.accepts, value)))

    def _allowed(self) -> str:
        size = (f" of {self.items} items" if self.items is not None
                else f" of at least {self.least_items} item{'s' if self.least_items > 1 else ''}"
                if self.least_items else "")
        return f"a list{size}, each {self.item.allowed}"


@dataclass(frozen=True, kw_only=True)
class Either(Rule):
    rules: tuple
    text: str

    def _accepts(self, value) -> bool:
        return any(rule.accepts(value) for rule in self.rules)

    def _allowed(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True)
class Check(Rule):
    """A value some module parses itself: ``parse(value)`` raises ValueError/TypeError if it is bad."""

    parse: typing.Callable
    text: str

    def _accepts(self, value) -> bool:
        try:
            self.parse(value)
        except (ValueError, TypeError):
            return False
        return True

    def _allowed(self) -> str:
        return self.text


def _precisions() -> tuple:
    """Lightning's own ``precision`` values (64, "32-true", "bf16-mixed", ...)."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    def flatten(kind):
        args = typing.get_args(kind)
        return [value for arg in args for value in flatten(arg)] if args else [kind]

    return tuple(flatten(_PRECISION_INPUT))


POSITIVE = Integer(least=1)
BATCHES = Either(rules=(Integer(least=0), Number(least=0, most=1)), null="all",
                 text="an integer >= 0 (batches) or a fraction in [0, 1]")
LIGHTNING = "Lightning's default"

# The schema ---------------------------------------------------------------------------------------
RULES: dict[str, Rule] = {
    # Gradient mode and run settings
    "probes": Integer(least=0, note=" (0 = exact backprop)"),
    "probe": Choice(options=PROBE_KINDS),
    "relu": Choice(options=RELU_MODES),
    "seed": Integer(),
    "device": Choice(options=DEVICES),
    "threads": Integer(least=1, null="torch's default"),
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
    # Data (tasks/data): every data module's keys
    "data.name": Text(),
    "data._target_": Text(),
    "data.dataset": Choice(options=DATASETS),
    "data.root": Text(),
    "data.source": Text(null="Debian's Fashion-MNIST folder"),
    "data.download": Flag(),
    "data.val_fraction": Number(least=0, below=1),
    "data.train_subset": Integer(least=1, null="all"),
    "data.test_subset": Integer(least=1, null="all"),
    "data.augment": Flag(),
    "data.batch_size": POSITIVE,
    "data.eval_batch_size": Integer(least=1, null="batch_size"),
    "data.num_workers": Integer(least=0),
    "data.channels": POSITIVE,
    "data.image_size": Integer(least=1, null="the photograph's own size"),
    "data.num_classes": Integer(least=2),
    "data.size": Integer(least=1, null="the photograph's own size"),
    "data.iterations": POSITIVE,
    "data.image": Text(),
    "data.scale_factor": Integer(least=2),
    "data.mask": Choice(options=MASKS),
    "data.mask_fraction": Number(above=0, below=1),
    "data.hole_sides": ListOf(item=POSITIVE, items=2),
    "data.font_size": Integer(least=4),
    "data.textures": ListOf(item=Choice(options=SKIMAGE_SOURCES), least_items=2),
    "data.scale": Number(above=0),
    "data.test_fraction": Number(above=0, below=1),
    "data.train_count": POSITIVE,
    "data.val_count": POSITIVE,
    "data.test_count": POSITIVE,
    "data.max_cells": Integer(least=2),
    # Models (tasks/models)
    "model.name": Text(),
    "model._target_": Text(),
    "model.in_channels": POSITIVE,
    "model.out_channels": POSITIVE,
    "model.image_size": POSITIVE,
    "model.num_classes": Integer(least=2),
    "model.classes": Integer(least=2),
    "model.exact_layers": ListOf(item=Text()),
    "model.encoder": Text(),
    "model.block_channels": ListOf(item=POSITIVE, least_items=1),
    "model.layers_per_block": POSITIVE,
    "model.attention_levels": ListOf(item=Integer(least=0)),
    "model.attention_head_dim": POSITIVE,
    "model.norm_groups": POSITIVE,
    "model.dropout": Number(least=0, below=1),
    "model.channels_down": ListOf(item=POSITIVE, least_items=1),
    "model.channels_up": ListOf(item=POSITIVE, least_items=1),
    "model.channels_skip": ListOf(item=Integer(least=0), least_items=1),
    "model.upsample": Choice(options=UPSAMPLE_MODES),
    "model.padding": Choice(options=PADDING_MODES),
    "model.activation": Choice(options=tuple(ACTIVATIONS)),
    "model.sigmoid": Flag(),
    # Tasks (tasks/*.py)
    "task.name": Text(),
    "task._target_": Text(),
    "task.classes": Integer(least=2),
    "task.num_images": Integer(least=0, note=" (0 = no images)"),
    "task.accepts_data": ListOf(item=Text()),
    "task.accepts_models": ListOf(item=Text()),
    "task.dataset": Choice(options=DATASETS),
    "task.timesteps": POSITIVE,
    "task.beta_start": Number(above=0, below=1),
    "task.beta_end": Number(above=0, below=1),
    "task.sample_steps": POSITIVE,
    "task.fid_samples": Integer(least=2),
    "task.sample_batch_size": POSITIVE,
    "task.fid_cache_dir": Text(),
    "task.fid_epochs": POSITIVE,
    "task.grid_images": POSITIVE,
    "task.seed": Integer(),
    "task.input_depth": POSITIVE,
    "task.input_scale": Number(above=0),
    "task.reg_noise_std": Number(least=0),
    "task.scale_factor": Integer(least=2),
    # Optimiser and scheduler (tasks/base.py)
    "task.optimizer.name": Choice(options=tuple(OPTIMIZERS)),
    "task.optimizer.lr": Number(above=0),
    "task.optimizer.weight_decay": Number(least=0),
    "task.optimizer.momentum": Number(least=0, below=1),
    "task.optimizer.dampening": Number(least=0, most=1),
    "task.optimizer.nesterov": Flag(),
    "task.optimizer.betas": ListOf(item=Number(least=0, below=1), items=2),
    "task.optimizer.eps": Number(above=0),
    "task.optimizer.amsgrad": Flag(),
    "task.scheduler.name": Choice(options=SCHEDULERS),
    "task.scheduler.eta_min": Number(least=0),
    "task.scheduler.T_max": POSITIVE,
    "task.scheduler.warmup_steps": Integer(least=0),
    "task.scheduler.factor": Number(above=0, below=1),
    "task.scheduler.patience": Integer(least=0),
    "task.scheduler.threshold": Number(least=0),
    "task.scheduler.threshold_mode": Choice(options=("rel", "abs")),
    "task.scheduler.mode": Choice(options=("min", "max")),
    "task.scheduler.cooldown": Integer(least=0),
    "task.scheduler.min_lr": Number(least=0),
    "task.scheduler.eps": Number(least=0),
    "task.scheduler.monitor": Text(),
    # Logger (xconv/run.py build_loggers)
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


@functools.lru_cache(maxsize=None)
def constructor_keys(target, required: bool = False) -> frozenset[str]:
    """Keyword parameters (``required``: only those without a default) of a class (its ``__init__``,
    following ``**kwargs`` up the bases) or a function."""
    if not inspect.isclass(target):
        return frozenset(_parameters(target, required))
    keys: set[str] = set()
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        keys |= _parameters(cls.__init__, required) - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values()):
            break
    return frozenset(keys)


def _parameters(function, required: bool = False) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not (required and p.default is not p.empty)}


def _scheduler_keys(name) -> set[str]:
    import torch

    takes = {"none": set(), "plateau": constructor_keys(torch.optim.lr_scheduler.ReduceLROnPlateau) | {"monitor"},
             "cosine": constructor_keys(torch.optim.lr_scheduler.CosineAnnealingLR),
             "warmup_cosine": _parameters(XConvTask._warmup_cosine) - {"self"}}
    return takes.get(name, set())


def _target(path: str, node) -> object:
    from hydra.utils import get_object

    target = node.get("_target_")
    try:
        return get_object(target)
    except Exception as error:  # ImportError, AttributeError, hydra's own
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}._target_={target!r}: cannot be imported ({reason})") from error


def allowed_keys(path: str, node) -> set[str]:
    """The keys section ``path`` ('' = top level) may hold, given its own values (target, name)."""
    if path == "":
        return _ruled_keys("") | _declared_keys(None) | set(SECTIONS) | set(CHECKED_ELSEWHERE) | {"hydra"}
    if path in ("trainer", "logger"):
        return _ruled_keys(path + ".") | _declared_keys(path)
    if path == "task.optimizer":
        optimizer = OPTIMIZERS.get(node.get("name"))
        return {"name"} | (constructor_keys(optimizer) - INJECTED[path] if optimizer else set())
    if path == "task.scheduler":
        names = SCHEDULERS if node.get("name") == "none" else [node.get("name")]  # none: a task's own
        return {"name"} | (set().union(*map(_scheduler_keys, names)) - INJECTED[path])  # settings go unused
    return ({"_target_", *META_KEYS} | constructor_keys(_target(path, node))) - INJECTED.get(path, set())


def required_keys(path: str, node) -> set[str]:
    """The keys section ``path`` must hold: what the harness reads and what constructors need."""
    if path == "":
        return set(_declared_keys(None)) | set(SECTIONS)
    if path == "logger":
        return {"kind"} | ({"project", "group", "tags"} if node.get("kind") == "wandb" else set())
    if path in ("task.optimizer", "task.scheduler"):
        return {"name"}
    if path == "trainer":
        return set()
    return ({"_target_", "name"} | constructor_keys(_target(path, node), required=True)) - INJECTED.get(path, set())


# Checking ----------------------------------------------------------------------------------------------
def check(cfg) -> None:
    """Raise ConfigError for the first unknown key or bad value of ``cfg`` (a DictConfig)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    leaves = list(settings(cfg, ""))
    for path, parent, key in sorted(leaves, key=lambda leaf: OmegaConf.is_interpolation(leaf[1], leaf[2])):
        rule = RULES.get(path)
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
            _missing(f"{path}.{selector}")
        value = _value(f"{path}.{selector}", node, selector)
        if not RULES[f"{path}.{selector}"].accepts(value):
            raise ConfigError(f"{path}.{selector}={value!r}: must be {RULES[f'{path}.{selector}'].allowed}")
    allowed = allowed_keys(path, node)
    for key in sorted(required_keys(path, node) - set(node.keys())):
        _missing(f"{path}.{key}" if path else key)
    for key in node.keys():
        full = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            raise ConfigError(f"{full}={_quiet_value(node, key)!r}: unknown key; {_section_name(path, node)} "
                              f"takes {', '.join(sorted(allowed - {'hydra'}))}")
        if full == "hydra":
            continue
        if full in SECTIONS or full in ("task.optimizer", "task.scheduler"):
            _require_mapping(full, node, key)
            yield from settings(node[key], full)
        else:
            yield full, node, key


def _section_name(path: str, node) -> str:
    """``the top level``, ``trainer``, ``task.scheduler (plateau)``, ``data (fashion_mnist)``, ..."""
    if not path:
        return "the top level"
    choice = node.get("name") if path not in ("trainer", "logger") else None
    return f"{path} ({choice})" if isinstance(choice, str) else path


def _missing(path: str) -> None:
    rule = RULES.get(path)
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
