"""Config sections that build an object, and the one way they are built.

``data``, ``model``, ``task``, ``task.optimizer`` and ``task.scheduler`` name what they build in
``_target_`` (``_partial_: true``: the code that uses it completes the call, e.g. the task gives an
optimiser its parameters) and hold the target's keyword arguments. Besides those, a section may
hold *descriptive* keys, which the harness reads itself: :data:`DESCRIPTIVE_KEYS` is the one list
of them. They stay where users set them (``data.image_size=32``, ``model.exact_layers=[...]``);
:func:`instantiate` drops those the target does not take and passes those it does
(``model.image_size: ${data.image_size}`` reaches ``CifarNet(image_size=)``).
"""
from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from .config_files import CONFIG_DIR
from .errors import ConfigError
from .rules import POSITIVE, Integer, ListOf, Text

# Keys the harness reads itself, in any section, with what they may be (a target that takes one of
# them as a parameter may declare its own rule for it in CONFIG_RULES).
DESCRIPTIVE_KEYS = {
    "name": Text(),                          # the config's name (data=<name>): run names, tables, accepts_*
    "channels": POSITIVE,                    # data: image channels (models point at it)
    "image_size": Integer(least=1, null="the photograph's own size"),  # data: image side
    "num_classes": Integer(least=2),         # data: label classes (models and tasks point at it)
    "exact_layers": ListOf(item=Text()),     # model: layers xconv.convert leaves exact
    "accepts_data": ListOf(item=Text()),     # task: the data configs it takes (validate.py)
    "accepts_models": ListOf(item=Text()),   # task: the model configs it takes
}
HYDRA_KEYS = ("_target_", "_partial_")


@functools.lru_cache(maxsize=None)
def group_targets(group: str) -> dict[str, str | None]:
    """``{option: its _target_}`` of a config group's files (conf/<group>/<option>.yaml), by name."""
    return {path.stem: OmegaConf.load(path).get("_target_") for path in sorted((CONFIG_DIR / group).glob("*.yaml"))}


def builds(node: Mapping, names: str) -> bool:
    """Whether the section's ``_target_`` is ``names`` (a dotted class or function) or a subclass of it."""
    built = target(node)
    return names in {f"{owner.__module__}.{owner.__qualname__}" for owner in getattr(built, "__mro__", (built,))}


def plain(node) -> dict:
    """A section as a plain dict: a DictConfig resolved, a mapping's config values converted."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return {key: OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig))
            else value for key, value in node.items()}


def target(node: Mapping):
    """The class or function ``node["_target_"]`` names, imported (ImportError etc. if it cannot be)."""
    from hydra.utils import get_object

    return get_object(node["_target_"])


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


def arguments(node: Mapping) -> dict:
    """The keyword arguments the section's ``_target_`` gets from it: every key but Hydra's own and
    the descriptive keys the target does not take. A plain dict's values are taken as they are."""
    config = plain(node)
    takes = constructor_keys(target(config))
    return {key: value for key, value in config.items()
            if key not in HYDRA_KEYS and (key not in DESCRIPTIVE_KEYS or key in takes)}


def instantiate(node: Mapping, path: str | None = None, **kwargs):
    """Build a section's ``_target_`` (``hydra.utils.instantiate``, not recursive: a nested section such as
    ``task.optimizer`` reaches its owner as config). ``kwargs``: what the harness passes itself.

    ``path``: the section's key (``model``); a constructor that refuses its settings then raises
    :class:`ConfigError`, one line naming ``<path>.<argument>`` when the error can be pinned on one
    argument (an error mentioning its name or string value), else the section. Without ``path``,
    or when the error is neither a ValueError, TypeError or KeyError nor pinned on an argument,
    Hydra's InstantiationException goes on."""
    import hydra
    from hydra.errors import InstantiationException

    hydra_keys, given = {key: node[key] for key in HYDRA_KEYS if key in node}, arguments(node)
    try:
        return hydra.utils.instantiate({**hydra_keys, **given}, **kwargs, _recursive_=False)
    except InstantiationException as error:
        message = None if path is None else refusal(path, node, given, error.__cause__ or error)
        if message is None:
            raise
        raise ConfigError(message) from error


def refusal(path: str, node: Mapping, given: dict, error: BaseException) -> str | None:
    """One line for a constructor's ``error`` over the arguments ``given`` (None: not a settings error)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if first.startswith(f"{path}."):  # the constructor named the key itself
        return first
    named = [key for key, value in given.items()
             if re.search(rf"\b{re.escape(key)}\b", text)
             or (isinstance(value, str) and len(value) > 1 and value in text)]
    reason = f"{node['_target_']} refused it ({type(error).__name__}: {first})"
    if len(named) == 1:
        return f"{path}.{named[0]}={given[named[0]]!r}: {reason}"
    if isinstance(error, (ValueError, TypeError, KeyError)):
        return f"{path}={node.get('name')!r}: {reason}"
    return None
