"""Find, read, override and write scenario files.

A scenario is a TOML file: the shipped ones live next to this module, and any path
works too. ``--set key.path=value`` overrides parse ``value`` as a TOML value, so
``--set training.iterations=3`` is an integer and ``--set world.name=foraging_v0`` a
string.
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from distill.config import RunConfig
from scenarios.schema import ScenarioError, build_config

SCENARIO_DIR = Path(__file__).resolve().parent
SUFFIX = ".toml"


def scenario_names() -> list[str]:
    """Return the names of the shipped scenarios, sorted."""
    return sorted(path.stem for path in SCENARIO_DIR.glob(f"*{SUFFIX}"))


def find_scenario(name_or_path: str) -> Path:
    """Return the file of a shipped scenario name, or ``name_or_path`` itself when it is a file."""
    path = Path(name_or_path)
    if path.is_dir():
        raise ScenarioError(name_or_path, [f"{name_or_path} is a directory; give a scenario .toml file or a shipped name"])
    if path.suffix == SUFFIX or path.exists():
        if not path.is_file():
            raise ScenarioError(name_or_path, [f"scenario file {name_or_path} not found"])
        return path
    shipped = SCENARIO_DIR / f"{name_or_path}{SUFFIX}"
    if shipped.is_file():
        return shipped
    raise ScenarioError(
        name_or_path,
        [f"no scenario named {name_or_path!r}; shipped scenarios: {', '.join(scenario_names())}, or give a path to a .toml file"],
    )


def read_scenario_data(path: Path) -> dict[str, Any]:
    """Parse a scenario file into plain data."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(str(path), [f"invalid TOML: {error}"]) from error
    except UnicodeDecodeError as error:
        raise ScenarioError(str(path), [f"the file is not UTF-8 text, as TOML requires: {error}"]) from error


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], value)``, the value parsed as TOML where it can be."""
    key, separator, raw = text.partition("=")
    parts = key.strip().split(".")
    if not separator or not all(parts):
        raise ValueError(f"--set expects key.path=value, got {text!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as foraging_v0 is a string
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``key.path=value`` override applied."""
    result = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        table = result
        for depth, part in enumerate(parts[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--set {text}: {'.'.join(parts[: depth + 1])} is a value, not a table")
            table = child
        table[parts[-1]] = value
    return result


def load_scenario(
    name_or_path: str,
    overrides: Sequence[str] = (),
    *,
    check: Callable[[RunConfig], list[str]] | None = None,
) -> RunConfig:
    """Read a scenario, apply overrides and return the validated ``RunConfig``.

    Args:
        name_or_path: a shipped scenario name or a path to a TOML file.
        overrides: ``key.path=value`` strings, applied in order.
        check: extra validation returning error lines (dotted path first), such as
            whether world and teacher options fit their classes.

    Raises:
        ScenarioError: listing every error of the file and the overrides at once.
    """
    path = find_scenario(name_or_path)
    data = read_scenario_data(path)
    data.setdefault("name", path.stem)
    try:
        data = apply_overrides(data, overrides)
    except ValueError as error:
        raise ScenarioError(str(path), [str(error)]) from error

    config = build_config(data, source=str(path))
    if check is not None:
        errors = check(config)
        if errors:
            raise ScenarioError(str(path), errors)
    return config


def scenario_descriptions() -> list[tuple[str, str]]:
    """Return ``(name, description)`` of every shipped scenario."""
    rows = []
    for name in scenario_names():
        data = read_scenario_data(SCENARIO_DIR / f"{name}{SUFFIX}")
        rows.append((name, str(data.get("description", ""))))
    return rows


# Writing the resolved configuration back as TOML.


def dump_toml(data: Mapping[str, Any]) -> str:
    """Render nested plain data (tables, arrays, scalars) as a TOML document."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {key: value for key, value in table.items() if not isinstance(value, Mapping)}
    tables = {key: value for key, value in table.items() if isinstance(value, Mapping)}
    if path and (scalars or not tables):
        lines.append(f"\n[{'.'.join(_key(part) for part in path)}]")
    for key, value in scalars.items():
        if value is None:
            lines.append(f"# {_key(key)} is unset")
            continue
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables.items():
        _dump_table(value, [*path, key], lines)


def _key(key: str) -> str:
    if key and all(char.isalnum() or char in "_-" for char in key):
        return key
    return _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Iterable):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'
