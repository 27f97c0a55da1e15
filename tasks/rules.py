"""What a config value may be: the rules every key is checked against, and where they are declared.

A rule lives with the code that takes the key:

* generic keys (the top level, ``trainer.*``, ``logger.*``): :data:`xconv_harness.schema.RULES`;
* the keys of a ``data``/``model``/``task`` section: the ``CONFIG_RULES`` mapping (parameter ->
  rule) of the class its ``_target_`` names, or of one of that class's bases (a model function
  declares them with :func:`config_rules`);
* the image side a model takes (a :class:`Side` from its section): ``input_side_rule`` of its class
  or function (:func:`input_side`); the side a data module delivers (a :class:`DeliveredSide`):
  its ``delivered_side`` (``tasks/data/base.py``). :mod:`xconv_harness.validate` checks one against
  the other;
* descriptive keys (``name``, ``channels``, ...): :data:`xconv_harness.config_nodes.DESCRIPTIVE_KEYS`;
* optimiser and scheduler arguments: :mod:`xconv_harness.schedules`.

A rule's :attr:`Rule.allowed` is the text after "must be " in the one-line error
``<key>=<value>: must be <allowed>``. Nothing here imports the rest of the harness.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass


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
    most: int | None = None
    also: tuple = ()  # further allowed values below ``least`` (e.g. -1 = no limit)
    note: str = ""

    def _accepts(self, value) -> bool:
        return _is_int(value) and (((self.least is None or value >= self.least)
                                    and (self.most is None or value <= self.most)) or value in self.also)

    def _allowed(self) -> str:
        if self.least is not None and self.most is not None:
            text = f"an integer in [{self.least}, {self.most}]"
        elif self.least is not None or self.most is not None:
            text = f"an integer >= {self.least}" if self.most is None else f"an integer <= {self.most}"
        else:
            text = "an integer"
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
class ChoiceOf(Choice):
    """A choice among what ``current()`` returns when a value is checked (a registry that may grow)."""

    options: tuple = ()
    current: typing.Callable[[], tuple]

    def _accepts(self, value) -> bool:
        return Choice(options=self.current())._accepts(value)

    def _allowed(self) -> str:
        return Choice(options=self.current())._allowed()


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


@dataclass(frozen=True, kw_only=True)
class Side(Rule):
    """The side of the square images a network takes: a multiple of ``multiple``, at least ``least``;
    ``why`` names the network and what it does to the side (``smp_unet with encoder_depth 5 halves it
    5 times``). A model declares it with :func:`input_side`."""

    multiple: int = 1
    least: int = 1
    why: str

    def _accepts(self, value) -> bool:
        return _is_int(value) and value >= self.least and value % self.multiple == 0

    def _allowed(self) -> str:
        if self.multiple == 1:
            return f"an integer >= {self.least} ({self.why})"
        at_least = f" and at least {self.least}" if self.least > self.multiple else ""
        return f"a multiple of {self.multiple}{at_least} ({self.why})"


@dataclass(frozen=True)
class DeliveredSide:
    """The side of the images a data module delivers (None: known only once loaded), the key of its
    section that sets it, and how the side follows from that key when it is not the key's own value."""

    key: str
    side: int | None
    note: str = ""


POSITIVE = Integer(least=1)
SEED = Integer(least=0, most=2**32 - 1)  # what numpy's and Lightning's seeding accept


def config_rules(**rules: Rule):
    """Declare the config rules of a model function's parameters (a class sets ``CONFIG_RULES`` itself)."""
    def declare(function):
        function.CONFIG_RULES = rules
        return function
    return declare


def input_side(rule: typing.Callable[[dict], Side]):
    """Declare the image side a model takes, as a function of its config section (a plain dict); a class
    defines ``input_side_rule`` itself. The harness checks the side the data delivers against it."""
    def declare(model):
        model.input_side_rule = rule
        return model
    return declare


def require_int(key: str, value, least: int, note: str = "") -> int:
    """Return ``value`` if it is an integer >= ``least``, else raise ValueError naming ``key``
    (for constructors called without the schema, e.g. from tests and studies)."""
    if not _is_int(value) or value < least:
        raise ValueError(f"{key}={value!r}: must be an integer >= {least}{note}")
    return value
