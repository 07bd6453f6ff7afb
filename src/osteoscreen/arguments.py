"""Argument checks for the Python API, as scikit-learn makes them: every public configuration (a frozen dataclass
such as TrainConfig or PatchConfig) checks each field against its annotation when it is made, and public functions
check the type of what they are given. Errors name the argument: `ArgumentTypeError` (a TypeError and an
InputError) for a wrong type, InputError (a ValueError) for a value out of range or not finite.

Annotations understood: bool, int (any integral number, NumPy's too), float (any real number, not bool,
finite), str, X | None, tuple[int, ...] (a list is accepted and kept as a tuple) and classes (isinstance).
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from dataclasses import fields

import numpy as np

from osteoscreen.errors import ArgumentTypeError, InputError


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


def check_fields(instance: object) -> None:
    """Check (and normalise: lists to tuples, ints to floats) every field of a frozen dataclass instance against
    its annotation; ArgumentTypeError naming the first field that does not fit."""
    hints = typing.get_type_hints(type(instance))
    for field in fields(instance):
        value = getattr(instance, field.name)
        ok, converted = _conforms(value, hints[field.name])
        if not ok:
            raise ArgumentTypeError(f"{field.name}: expected {_describe(hints[field.name])}, got {value!r}")
        if converted is not value:
            object.__setattr__(instance, field.name, converted)


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
