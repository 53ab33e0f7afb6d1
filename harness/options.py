"""Options of the configuration dataclasses (method configs, `Schedule`, `DataOptions`): how an
option is declared (`option`), the one `--set` value grammar (`parse_value`, `split_assignment`)
and the one rule that checks a value against an option (`coerce`, `build_dataclass`).

Why here and dependency-free: `methods/` may import only torch, open_clip and the standard
library, yet method options and run settings must follow the same rules; this module imports
only the standard library and `harness.errors` (PyYAML lazily, see `parse_value`), so both
`methods/` and `harness/` use it, and so does the GPU bench on a host without the mm stack.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from typing import Any

from harness.errors import HarnessError, unknown_name_error


def option(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - mirrors argparse/PEFT wording
    """A dataclass field with help text (shown by `harness ls`) and optional `choices`."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def options_help(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, help) for every field of the dataclass `cls`, in declaration order."""
    return [(f.name, field_default(f), f.metadata.get("help", "")) for f in dataclasses.fields(cls)]


def parse_value(text: str) -> Any:
    """A `--set` value: a YAML scalar or flow list (`1e-3`, `true`, `[4, 3]`, `best`), except that
    `1e-3` is a number (YAML 1.1 would read it as a string). On a host without PyYAML (the bare
    GPU host of `scripts/gpu_bench.sh`) the JSON subset of that grammar is read (numbers,
    true/false, null, lists); anything else is the string itself, as YAML would give it."""
    try:
        import yaml
    except ModuleNotFoundError:  # pragma: no cover - the test environment has PyYAML
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    else:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def split_assignment(item: str, usage: str) -> tuple[str, str, Any]:
    """`scope.name=value` -> (scope, name, parsed value); `usage` says what was expected."""
    key, sep, raw = item.partition("=")
    scope, dot, name = key.partition(".")
    if not sep or not dot or not scope or not name:
        raise HarnessError(f"--set {item!r}: expected {usage}")
    return scope, name, parse_value(raw)


def coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    """`value` checked against the option `f` (its type is its default's): bool, int and float
    must be of that kind (an int is accepted for a float), a str option takes any scalar as its
    text, a list option a list; an option without a default (None) takes anything. Then `choices`."""
    default = field_default(f)
    ok = True
    if f.metadata.get("number"):  # int or float, kept an int when whole (AIM warms up 2.5 epochs)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = (int(value) if float(value).is_integer() else float(value)) if ok else value
    elif isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, (str, int, float))
        value = str(value) if ok else value
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    choices = f.metadata.get("choices")
    if not ok:
        raise HarnessError(f"{where}.{f.name}={value!r}: expected {type(default).__name__} (default {default!r})"
                           + (f", one of {', '.join(map(str, choices))}" if choices else ""))
    if choices and value not in choices:
        raise HarnessError(f"{where}.{f.name}={value!r}: must be one of {', '.join(map(str, choices))}")
    return value


def check_option(cls: type, name: str, value: Any, where: str, kind: str | None = None) -> Any:
    """`value` of option `name` of the options dataclass `cls`, checked by `coerce` (no instance
    built); an unknown name is an error listing the valid ones (`kind` names them, default
    "<where> key")."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise unknown_name_error(kind or f"{where} key", name, fields)
    return coerce(fields[name], value, where)


def build_dataclass(cls: type, values: dict[str, Any], where: str, kind: str | None = None) -> Any:
    """Instantiate the options dataclass `cls` from `values`, each checked by `check_option`."""
    return cls(**{key: check_option(cls, key, value, where, kind) for key, value in values.items()})
