"""Every refusal of the command line in one line, before Hydra makes a run folder.

``python -m xconv.run`` (:func:`xconv_harness.run.main`) hands its arguments to
:func:`refuse_bad_command_line` before ``@hydra.main`` sees them. It parses the overrides with
Hydra's own parser, composes the config with Hydra's compose API (in a multirun once per swept
value: every other sweep at its first value) and validates it (:func:`xconv_harness.validate.validate`).
The first problem ends the command: one line on stderr, ``error: <key>=<value>: <what is allowed>``,
exit code 2, no traceback and no run folder. Hydra's own refusals are translated here, from
what the override is and what the config holds (not from Hydra's wording):

* a group option that does not exist (``task=foo``): the group's options;
* a key the config does not hold, set without ``+`` (``prbes=3``, ``optimizer.lr=1``): the keys its
  section takes and the nearest match; a key the harness takes but the config does not set yet
  (``trainer.gradient_clip_val=1``): add it with ``+``; ``+`` on a key that is set: drop the ``+``;
* syntax Hydra's override grammar cannot parse; several values without ``-m``;
* a value of the wrong type for Hydra (a mapping into a list, ``hydra.job.chdir=abc``).

Command lines that do not run jobs (``--help``, ``--cfg``, ``--info``, ...) or that add config
folders (``--config-dir``/``--config-path``) go to Hydra as they are.
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig, ListConfig, OmegaConf

from .config_files import CONFIG_DIR
from .errors import ConfigError

# The schema (and validation) import torch and Lightning: only functions that need them do, so a
# refusal of the syntax, a group option or a sweep comes at once.

# Flags after which Hydra runs no job, or reads configs from elsewhere: no check here.
NOT_CHECKED = ("help", "hydra_help", "cfg", "info", "shell_completion", "config_path", "config_dir",
               "experimental_rerun")
# What a value of Hydra's typed (structured) config nodes may be.
NODE_KINDS = {"BooleanNode": "true or false", "IntegerNode": "an integer", "FloatNode": "a number",
              "StringNode": "a string", "PathNode": "a path", "ListConfig": "a list", "DictConfig": "a mapping"}


def refuse_bad_command_line(argv: list[str]) -> None:
    """Exit with code 2 and one ``error:`` line if the command line cannot run; else return."""
    from hydra._internal.utils import get_args_parser

    from .job_reporting import EXIT_SETTINGS

    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in NOT_CHECKED):
        return
    problem = first_problem(args.overrides, multirun=args.multirun, config_name=args.config_name or "config")
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(EXIT_SETTINGS)


def first_problem(overrides: list[str], multirun: bool = False, config_name: str = "config") -> str | None:
    """The one-line refusal of the first problem of ``overrides`` (None: every job can start)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        composer = Composer(config_name, GlobalHydra.instance().config_loader())
        parsed = composer.parse(overrides)
        if isinstance(parsed, str):
            return parsed
        multirun = multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN" for o in parsed)
        jobs = composer.jobs(parsed, multirun)
        if isinstance(jobs, str):
            return jobs
        for job in jobs:
            problem = composer.problem(job)
            if problem is not None:
                return problem
    return None


def _first_line(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _grammar_error(error) -> str:
    """What Hydra's override grammar says is wrong (its message without the header and the link)."""
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.startswith(("Error parsing override", "See https://"))]
    return lines[0] if lines else _first_line(error)


def _key(override) -> str:
    """The key as typed, without ``+``/``~`` (``task``, ``optimizer@task.optimizer``, ``data.size``)."""
    return override.get_key_element().lstrip("+~")


def _shown(override) -> str:
    """``<key>=<value>`` of an override, the value as the harness shows values (``task='foo'``)."""
    return f"{_key(override)}={override.value()!r}"


class Composer:
    """Hydra's parser and compose API for one config, and the refusal of the first override it refuses."""

    def __init__(self, config_name: str, loader):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.config_name, self.loader = config_name, loader
        self.parser = OverridesParser.create(config_loader=loader)

    def parse(self, overrides: list[str]):
        """The parsed overrides, or the refusal of the first one Hydra's grammar cannot parse."""
        from hydra.errors import OverrideParseException

        parsed = []
        for text in overrides:
            key, _, value = text.partition("=")
            try:
                parsed += self.parser.parse_overrides([text])
            except OverrideParseException as error:
                return (f"{key.lstrip('+~')}={value!r}: not an override Hydra can parse ({_grammar_error(error)}); "
                        f"quote a value with spaces, brackets or commas: '{key}=\"{value}\"'")
            if not parsed[-1].key_or_group:
                return f"{text!r}: not an override; the forms are key=value, +key=value (a new key), ~key (delete)"
        return parsed

    def jobs(self, parsed: list, multirun: bool):
        """The override lists to check: the run's own, or in a multirun one per swept value (the
        other sweeps at their first value). A refusal (str) for a sweep without ``-m``."""
        sweeps = [override for override in parsed if override.is_sweep_override()]
        if sweeps and not multirun:
            override = sweeps[0]
            return (f"{_key(override)}={override.input_line.partition('=')[2]!r}: several values sweep only in a "
                    f"multirun (add -m); a list is written [a,b], a string with commas is quoted")
        if any(not override.is_discrete_sweep() for override in sweeps):
            return []  # e.g. interval sweeps for an optimising sweeper: its own business
        choices = {id(override): [self._single(override, value) for value in override.sweep_string_iterator()]
                   for override in sweeps}
        first = [choices[id(o)][0] if id(o) in choices else o for o in parsed]
        return [first] + [[value if o is override else first[i] for i, o in enumerate(parsed)]
                          for override in sweeps for value in choices[id(override)][1:]]

    def _single(self, override, value: str):
        return self.parser.parse_overrides([f"{override.get_key_element()}={value}"])[0]

    def compose(self, overrides: list) -> DictConfig:
        from hydra import compose

        return compose(config_name=self.config_name, overrides=[o.input_line for o in overrides],
                       return_hydra_config=True)

    def problem(self, job: list) -> str | None:
        """The refusal of one job's overrides: Hydra's (translated) or the harness's validation."""
        try:
            cfg = self.compose(job)
        except Exception:  # find the override Hydra refuses: group choices first, as Hydra applies them
            return self._culprit(job)
        from .validate import validate

        try:
            validate(cfg)
        except ConfigError as error:
            return str(error)
        return None

    def _culprit(self, job: list) -> str:
        kept, base = [], self.compose([])
        for override in sorted(job, key=lambda o: not self._is_group(o)):
            try:
                composed = self.compose([*kept, override])
            except Exception as error:
                return self.refusal(override, error, base)
            kept.append(override)
            base = composed
        raise AssertionError("the overrides compose one at a time but not together")

    def _is_group(self, override) -> bool:
        return bool(self.loader.get_group_options(override.key_or_group))

    def refusal(self, override, error: Exception, base: DictConfig) -> str:
        """One line for an override Hydra refused with ``error``; ``base``: the config before it."""
        from omegaconf.errors import ConfigTypeError, ValidationError

        if self._is_group(override):
            return self._group_refusal(override, error)
        key = override.key_or_group
        exists = _exists(base, key)
        if override.is_delete() and not exists:
            return f"{key}: not in the config, so it cannot be deleted"
        if override.is_add() and exists:
            return f"{_shown(override)}: already in the config; set it without +: {override.input_line.lstrip('+')}"
        if not exists:
            return self._unknown_key(override, base)
        if isinstance(error.__cause__, (ConfigTypeError, ValidationError)):
            return f"{_shown(override)}: must be {_allowed(base, key)}"
        return f"{_shown(override)}: {_first_line(error)}"

    def _group_refusal(self, override, error: Exception) -> str:
        options = self.loader.get_group_options(override.key_or_group)
        if override.value() not in options:
            return f"{_shown(override)}: must be one of {', '.join(options)}"
        if override.is_add():
            return f"{_shown(override)}: already chosen; choose it without +: {override.input_line.lstrip('+')}"
        return f"{_shown(override)}: {_first_line(error)}"

    def _unknown_key(self, override, base: DictConfig) -> str:
        from . import schema

        key = override.key_or_group
        path, node, rest = _deepest_section(base, key)
        if isinstance(node, ListConfig):
            return f"{_shown(override)}: {path} is a list of {len(node)} items, indexed 0 to {len(node) - 1}"
        if not isinstance(node, DictConfig):
            return f"{_shown(override)}: {path} is {_kind(node)}, not a section of settings"
        allowed = _allowed_keys(path, node)
        if len(rest) == 1 and rest[0] in allowed:  # a key the harness takes that the config does not set yet
            return f"{_shown(override)}: not in the config yet; add it with +: +{override.input_line}"
        elsewhere = [full for full in _dotted_keys(base) if full.endswith("." + key)]
        return schema.unknown_key_message(key, override.value(), path, node, allowed, near=elsewhere)


def _exists(cfg: DictConfig, key: str) -> bool:
    """Whether ``cfg`` holds ``key`` (without resolving anything on the way)."""
    _, node, rest = _deepest_section(cfg, key)
    if isinstance(node, ListConfig):
        return len(rest) == 1 and rest[0].isdigit() and int(rest[0]) < len(node)
    return isinstance(node, DictConfig) and len(rest) == 1 and rest[0] in node


def _deepest_section(cfg: DictConfig, key: str):
    """``(path, node, rest)``: the deepest node on ``key``'s path that exists and the parts below it."""
    parts, path, node = key.split("."), [], cfg
    while len(parts) > 1 and isinstance(node, DictConfig) and parts[0] in node:
        path.append(parts.pop(0))
        node = node._get_node(path[-1])
    return ".".join(path), node, parts


def _allowed_keys(path: str, node: DictConfig) -> set[str]:
    """The keys a section takes: the schema's for the harness's sections, else the ones it holds."""
    from . import schema

    try:
        if path == "" or path in schema.SECTIONS or path in schema.GROUPS:
            return set(schema.allowed_keys(path, node)) - {"hydra"}
    except ConfigError:
        pass
    return {str(key) for key in node.keys()}


def _dotted_keys(node: DictConfig, prefix: str = ""):
    for key in node.keys():
        full = f"{prefix}{key}"
        yield full
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from _dotted_keys(child, full + ".")


def _kind(node) -> str:
    return NODE_KINDS.get(type(node).__name__, f"a value ({node._value()!r})" if node is not None else "a value")


def _allowed(cfg: DictConfig, key: str) -> str:
    """What ``key`` may be: the harness's rule for it, else what Hydra's typed node holds."""
    from . import schema

    section, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, section) if section else cfg
    try:
        rule = schema.rule_for(key, parent)
    except ConfigError:
        rule = None
    if rule is not None:
        return rule.allowed
    node = parent._get_node(leaf)
    if type(node).__name__ == "EnumNode":
        return f"one of {', '.join(member.name for member in node.enum_type)}"
    return _kind(node)
