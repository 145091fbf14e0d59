"""Validate scenario data against the typed run configuration.

The schema is the ``distill.config`` dataclasses themselves: their fields, types and
defaults. ``build_config`` walks a parsed TOML document and collects every error, each
naming the dotted path of the offending key, before it raises. One run of the loader
therefore reports all problems of a file at once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from distill.config import RunConfig


class ScenarioError(ValueError):
    """A scenario file or override is invalid; ``errors`` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        listed = "\n".join(f"  - {error}" for error in errors)
        super().__init__(f"{source}: {len(errors)} error(s) in the scenario:\n{listed}")


def build_config(data: Mapping[str, Any], *, source: str) -> RunConfig:
    """Return the ``RunConfig`` that ``data`` describes, or raise ``ScenarioError`` listing every error."""
    errors: list[str] = []
    config = _build_dataclass(RunConfig, data, "", errors)
    if errors:
        raise ScenarioError(source, errors)
    return config


def _build_dataclass(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    if not isinstance(data, Mapping):
        errors.append(f"{path or 'scenario'}: expected a table, got {_describe(data)}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        errors.append(f"{_join(path, key)}: unknown key; valid keys here: {', '.join(sorted(fields))}")

    values = {}
    for name, field in fields.items():
        field_path = _join(path, name)
        if name not in data:
            no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if no_default:
                errors.append(f"{field_path}: missing required key")
            continue
        values[name] = _convert(hints[name], data[name], field_path, errors)
    if errors:
        return None
    return cls(**values)


def _convert(hint: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value, path, errors)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, path, errors)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(arg) for arg in args)
            errors.append(f"{path}: expected one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected an array, got {_describe(value)}")
            return ()
        item_hint = args[0]
        return tuple(_convert(item_hint, item, f"{path}[{index}]", errors) for index, item in enumerate(value))
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        if not isinstance(value, Mapping):
            errors.append(f"{path}: expected a table, got {_describe(value)}")
            return {}
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, got {_describe(value)}")
            return value
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {_describe(value)}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"the scenario schema has no rule for type {hint!r} at {path}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
