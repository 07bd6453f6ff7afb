"""Argument checks for the Python API, as scikit-learn makes them: every public configuration (a frozen dataclass
such as TrainConfig or PatchConfig) checks each field against its annotation when it is made, and public functions
check the type of what they are given. Errors name the argument: `ArgumentTypeError` (a TypeError and an
InputError) for a wrong type, InputError (a ValueError) for a value out of range or not finite.

Annotations understood: bool, int (any integral number, NumPy's too), float (any real number, not bool,
finite), str, X | None, tuple[int, ...] (a list is accepted and kept as a tuple) and classes (isinstance).

A field made with `option(...)` is declared once: its default, its documentation, its allowed values (a set of
choices, or a rule such as `between(1, 64)`) and whether the command line offers it. check_fields checks the
allowed values too; the estimators' parameters and the CLI's flags (with their help) are derived from it.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import Field, field, fields

import numpy as np

from osteoscreen.core.errors import ArgumentTypeError, InputError


def _describe(hint: object) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a tuple of {_describe(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "None"
    return {bool: "True or False", int: "an integer", float: "a finite number", str: "a string"}.get(
        hint, f"a {getattr(hint, '__name__', hint)}")


def _conforms(value: object, hint: object) -> tuple[bool, object]:
    """(whether value fits the annotation, the value as stored: lists become tuples)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = _conforms(value, arg)
            if ok:
                return True, converted
        return False, value
    if hint is type(None):
        return value is None, value
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, tuple | list):
            return False, value
        converted = [_conforms(v, item) for v in value]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
        return ok, int(value) if ok and type(value) is not int else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) and math.isfinite(value)
        return ok, float(value) if ok and type(value) is not float else value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


#: A rule on a field's value: (the test, what it expects in words).
Rule = tuple[Callable[[object], bool], str]


def between(low: float, high: float) -> Rule:
    """The rule low <= value <= high."""
    return (lambda value: low <= value <= high), f"a value in [{low}, {high}]"


def option(default: object, doc: str, *, choices: Collection | None = None, rule: Rule | None = None,
           flag: bool = True, factory: Callable[[], object] | None = None) -> Field:
    """A dataclass field declared once. doc: what it means (an estimator's parameter documentation and the
    command-line flag's help); choices or rule: its allowed values, checked by check_fields; flag: whether the
    command line offers it (as --name-with-dashes); factory: a default_factory instead of default."""
    metadata = {"doc": doc, "choices": choices, "rule": rule, "flag": flag}  # choices: live (a registry may grow)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def value_problem(spec: Field, value: object) -> str | None:
    """What is wrong with value for an option() field's choices or rule (None when nothing is)."""
    choices, rule = spec.metadata.get("choices"), spec.metadata.get("rule")
    if choices is not None and value not in choices:
        return f"expected one of {', '.join(map(str, choices))}, got {value!r}"
    if rule is not None and not rule[0](value):
        return f"expected {rule[1]}, got {value!r}"
    return None


def check_fields(instance: object) -> None:
    """Check (and normalise: lists to tuples, ints to floats) every field of a frozen dataclass instance against
    its annotation (ArgumentTypeError), then against its option() choices or rule (InputError); the error names
    the first field that does not fit."""
    hints = typing.get_type_hints(type(instance))
    for spec in fields(instance):
        value = getattr(instance, spec.name)
        ok, converted = _conforms(value, hints[spec.name])
        if not ok:
            raise ArgumentTypeError(f"{spec.name}: expected {_describe(hints[spec.name])}, got {value!r}")
        if converted is not value:
            object.__setattr__(instance, spec.name, converted)
        problem = value_problem(spec, converted)
        if problem:
            raise InputError(f"{spec.name}: {problem}")


def check_type(value: object, expected: type | tuple[type, ...], name: str, hint: str = "") -> None:
    """ArgumentTypeError naming argument `name` unless value is an instance of `expected` (hint: how to get one)."""
    if not isinstance(value, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        raise ArgumentTypeError(f"{name}: expected {' or '.join(k.__name__ for k in kinds)}"
                                f"{' (' + hint + ')' if hint else ''}, got {type(value).__name__} {value!r:.80}")


def check_range(ok: bool, name: str, expected: str, value: object) -> None:
    """InputError (a ValueError) naming argument `name` unless ok."""
    if not ok:
        raise InputError(f"{name}: expected {expected}, got {value!r}")
