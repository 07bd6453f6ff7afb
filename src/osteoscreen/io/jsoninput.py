"""JSON from outside (model.json, annotation files, request bodies) read defensively: bounded, finite, and every
value checked where it is used, with errors that name the source and the JSON path (`$.shapes[3].points[0]`).

`parse_json` refuses what Python's json module would accept but no caller can use: NaN and Infinity, numbers
that overflow a float, integers of more than 18 digits, nesting deeper than `max_depth`, and documents larger
than `max_bytes`. `JsonValue` wraps a parsed value with its path; its accessors check type and range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path

from osteoscreen.core.errors import InputError

MAX_DEPTH = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class _Refused(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 18:
        raise _Refused(f"integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:20]}{'...' if len(text) > 20 else ''} overflows")
    return value


def _constant(text: str) -> float:
    raise _Refused(f"{text} is not a finite number")


def _depth(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKETS.finditer(_STRINGS.sub("", text)):
        depth += 1 if bracket.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str | bytes, source: str, max_bytes: int | None = None, max_depth: int = MAX_DEPTH
               ) -> JsonValue:
    """Parse a JSON document; InputError `source: ...` for anything malformed, unbounded or non-finite."""
    if max_bytes is not None and len(text) > max_bytes:
        raise InputError(f"{source}: JSON of {len(text)} bytes exceeds the limit of {max_bytes}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InputError(f"{source}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if _depth(text) > max_depth:
        raise InputError(f"{source}: JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_real, parse_constant=_constant)
    except _Refused as error:
        raise InputError(f"{source}: {error}") from None
    except (ValueError, RecursionError) as error:
        raise InputError(f"{source}: not valid JSON ({error})") from None
    return JsonValue(value, source)


def read_json(path: str | Path, max_bytes: int | None = None) -> JsonValue:
    """parse_json of a file's contents; a missing or unreadable file is an InputError too."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    return parse_json(data, str(path), max_bytes)


def _shown(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, dict | list) else type(value).__name__.replace(
        "dict", "an object").replace("list", "an array")
    return text if len(text) <= 40 else text[:37] + "..."


class JsonValue:
    """A parsed JSON value, where it came from (`source`) and its path in the document (`path`)."""

    def __init__(self, value: object, source: str, path: str = "$"):
        self.value, self.source, self.path = value, source, path

    def error(self, message: str) -> InputError:
        return InputError(f"{self.source}: {self.path}: {message}")

    def _expected(self, what: str) -> InputError:
        return self.error(f"expected {what}, got {_shown(self.value)}")

    # containers
    def object(self) -> dict:
        if not isinstance(self.value, dict):
            raise self._expected("an object")
        return self.value

    def has(self, key: str) -> bool:
        return key in self.object()

    def __getitem__(self, key: str) -> JsonValue:
        members = self.object()
        if key not in members:
            raise self.error(f"missing member {key!r}")
        return JsonValue(members[key], self.source, f"{self.path}.{key}")

    def get(self, key: str) -> JsonValue | None:
        """The member, or None when absent or null."""
        return self[key] if self.object().get(key) is not None else None

    def items(self) -> Iterable[tuple[str, JsonValue]]:
        return [(key, JsonValue(value, self.source, f"{self.path}.{key}")) for key, value in self.object().items()]

    def elements(self, length: int | None = None) -> list[JsonValue]:
        if not isinstance(self.value, list) or (length is not None and len(self.value) != length):
            raise self._expected("an array" if length is None else f"an array of {length}")
        return [JsonValue(value, self.source, f"{self.path}[{index}]") for index, value in enumerate(self.value)]

    # scalars
    def string(self, choices: Iterable[str] | None = None) -> str:
        if not isinstance(self.value, str):
            raise self._expected("a string")
        if choices is not None and self.value not in (options := list(choices)):
            raise self._expected(f"one of {', '.join(options)}")
        return self.value

    def number(self, low: float | None = None, high: float | None = None, open_interval: bool = False) -> float:
        """A finite number within [low, high] ((low, high) when open_interval)."""
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._expected("a number")
        below = low is not None and (value <= low if open_interval else value < low)
        above = high is not None and (value >= high if open_interval else value > high)
        if below or above:
            left, right = ("(", ")") if open_interval else ("[", "]")
            bounds = f"{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}"
            raise self._expected(f"a number in {left}{bounds}{right}")
        return float(value)

    def integer(self, low: int | None = None, high: int | None = None) -> int:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._expected("an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = [f">= {low}"] * (low is not None) + [f"<= {high}"] * (high is not None)
            raise self._expected(f"an integer {' and '.join(bounds)}")
        return value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self._expected("true or false")
        return self.value


def _typed(value: JsonValue, kind: object) -> object:
    """value as the Python type `kind` (a dataclass field's type): bool, int, float, str, X | None, tuple[X, ...]
    or a dataclass."""
    if kind is bool:
        return value.boolean()
    if kind is int:
        return value.integer()
    if kind is float:
        return value.number()
    if kind is str:
        return value.string()
    arguments = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        inner = [argument for argument in arguments if argument is not type(None)]
        return None if value.value is None else _typed(value, inner[0])
    if typing.get_origin(kind) is tuple:
        return tuple(_typed(element, arguments[0]) for element in value.elements())
    if dataclasses.is_dataclass(kind):
        return read_dataclass(value, kind)
    raise TypeError(f"no JSON reading for {kind!r}")


def read_dataclass(value: JsonValue, cls: type, missing: dict | None = None, **overrides: object) -> object:
    """An instance of dataclass `cls` from a JSON object holding exactly its fields (each type-checked), each of
    `overrides` replacing its field; `missing`: fields added after such files were written, with the value a file
    without them meant. The class's own checks (ranges, choices) are reported at the object's path."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    members, later = value.object(), missing or {}
    unknown = sorted(set(members) - set(names))
    if unknown:
        raise value.error(f"unknown member(s) {', '.join(unknown)}")
    arguments = {name: later[name] if name in later and name not in members else _typed(value[name], hints[name])
                 for name in names}
    try:
        return cls(**{**arguments, **overrides})
    except InputError as error:
        raise value.error(str(error)) from None
