"""How one option value is checked, parsed from text and described: the rule machinery.

A :class:`Rule` says what an option accepts (an integer, a finite float32 number,
a choice, paths, comma-separated lists...) with its bounds and help text;
:meth:`Rule.check` normalises a value or raises a one-line :class:`ConfigError`,
and :meth:`Rule.parse` reads command-line text with the same messages, so
``--steps two`` and a manifest's ``steps = "two"`` read alike. Which options exist
is :mod:`jaxcombine.options.config`. Standard library only (no JAX).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from typing import Any, Callable

from jaxcombine.errors import JaxcombineError

FLOAT32_MAX = 3.4028234663852886e38  # numbers are traced as float32: larger ones overflow


class ConfigError(JaxcombineError):
    """A bad option value; ``field`` names the option (manifests add where it came from)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- value rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one option is checked and parsed from text.

    ``kind``: ``int`` | ``float`` | ``bool`` | ``choice`` | ``text`` | ``paths`` | ``floats``
    | ``ints`` (the last two: comma-separated on a command line).
    ``low``/``high`` bound numbers (``low_open``: strictly above ``low``);
    ``optional``: ``None`` is allowed (it means "the default of something else").
    """

    kind: str
    help: str = ""
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    optional: bool = False

    def check(self, name: str, value: Any) -> Any:
        """``value`` normalised (ints, floats, tuples), or a :class:`ConfigError`."""
        if value is None and self.optional:
            return None
        check = _CHECKS[self.kind]
        return check(self, name, value)

    def parse(self, name: str, text: str) -> Any:
        """Text from a command line → a checked value (same messages as :meth:`check`)."""
        convert = {"int": int, "float": float, "floats": float, "ints": int}.get(self.kind)
        if convert is None:
            return self.check(name, text)
        several = self.kind in ("floats", "ints")
        words = text.split(",") if several else [text]
        try:
            values = tuple(convert(w.strip()) for w in words)
        except (
            ValueError
        ):  # "two" for a number: the same message as the value "two" from a manifest
            bad = next(w.strip() for w in words if not _converts(convert, w))
            raise _fail(self, name, bad, "a finite number" if convert is float else "an integer")
        return self.check(name, values if several else values[0])

    @property
    def requirement(self) -> str:
        """Human words for the accepted range: ``> 0``, ``>= 1``, ``between 0 and 1``."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_plain(self.low)}")
        if self.high is not None and self.high < FLOAT32_MAX:
            parts.append(f"<= {_plain(self.high)}")
        return " and ".join(parts)


def _converts(convert: Callable[[str], Any], text: str) -> bool:
    try:
        convert(text.strip())
        return True
    except ValueError:
        return False


def _plain(x: float) -> str:
    """``2147483647`` rather than ``2.14748e+09``; ``0.5`` as is."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _fail(rule: Rule, name: str, value: Any, what: str) -> ConfigError:
    req = (
        f" {rule.requirement}"
        if rule.requirement and what in ("an integer", "a finite number")
        else ""
    )
    return ConfigError(name, f"{name} must be {what}{req}, got {value!r}")


def _check_int(rule: Rule, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(rule, name, value, "an integer")
    value = int(value)
    if (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high):
        raise _fail(rule, name, value, "an integer")
    return value


def finite_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float = FLOAT32_MAX,
) -> float:
    """A real, finite number within float32's range and the bounds, as ``float``.

    The one number rule: option values, recipe weights and sweep values all use it.
    """
    rule = Rule("float", low=low, low_open=low_open, high=high)
    return _check_float(rule, name, value)


def _check_float(rule: Rule, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(rule, name, value, "a finite number")
    value = float(value)
    high = FLOAT32_MAX if rule.high is None else rule.high
    too_low = rule.low is not None and (value <= rule.low if rule.low_open else value < rule.low)
    if not math.isfinite(value) or too_low or abs(value) > high:
        raise _fail(rule, name, value, "a finite number")
    return value


def _check_bool(rule: Rule, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(rule, name, value, "true or false")
    return value


def _check_choice(rule: Rule, name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in rule.choices:
        raise ConfigError(name, f"unknown {name} {value!r}; choose {', '.join(rule.choices)}")
    return value


def _check_text(rule: Rule, name: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(rule, name, value, "a non-empty string")
    return value


def _check_paths(rule: Rule, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, os.PathLike)):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise _fail(rule, name, value, "a path or a list of paths")
    return tuple(_check_text(rule, name, v) for v in value)


def _check_floats(rule: Rule, name: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(rule, name, value, "a non-empty list of numbers")
    return tuple(_check_float(rule, name, v) for v in value)


def _check_ints(rule: Rule, name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(rule, name, value, "a non-empty list of integers")
    return tuple(_check_int(rule, name, v) for v in value)


_CHECKS: dict[str, Callable[[Rule, str, Any], Any]] = {
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "choice": _check_choice,
    "text": _check_text,
    "paths": _check_paths,
    "floats": _check_floats,
    "ints": _check_ints,
}


def option(default: Any, rule: Rule) -> Any:
    """A dataclass field with a default and the :class:`Rule` that checks it."""
    return dataclasses.field(default=default, metadata={"rule": rule})


def positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (``max_batch``, bench repeats, ...)."""
    return _check_int(Rule("int", low=1), name, value)
