"""Method registry: names -> (config class, model class), with loud errors.

Mirrors PEFT's `register_peft_method` and timm's `register_model`: a method file registers
itself on import; unknown or duplicate names raise, and option overrides are checked against
the config dataclass so that a typo is an error listing the valid options, not a silent default.

Discovery: on first access every module of the `methods` package is imported (`pkgutil`), so
adding a method is adding one file here that calls `register_method`; no central list to edit.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, unknown_name_error
from methods.base import MethodConfig, VideoTextModel


@dataclass(frozen=True)
class MethodInfo:
    name: str
    config_cls: type[MethodConfig]
    model_cls: type[VideoTextModel]
    summary: str


_REGISTRY: dict[str, MethodInfo] = {}
_loaded = False


def register_method(name: str, config_cls: type[MethodConfig], summary: str):
    """Class decorator registering a `VideoTextModel` subclass under `name`."""

    def decorator(model_cls: type[VideoTextModel]) -> type[VideoTextModel]:
        if name in _REGISTRY and _REGISTRY[name].model_cls is not model_cls:
            raise ValueError(f"method {name!r} registered twice")
        model_cls.method_name = name
        _REGISTRY[name] = MethodInfo(name, config_cls, model_cls, summary)
        return model_cls

    return decorator


def _load_all() -> None:
    """Import every public module of the `methods` package once (each method file registers
    itself on import). Walks `methods.__path__`, so a new file is found without being listed."""
    global _loaded
    if _loaded:
        return
    import methods

    for module in pkgutil.iter_modules(methods.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"methods.{module.name}")
    _loaded = True


def list_methods(models_frame_order: bool | None = None) -> list[str]:
    """Registered method names, sorted; only those whose contract says they model frame order
    (True) or do not (False) when `models_frame_order` is given."""
    _load_all()
    return sorted(name for name, info in _REGISTRY.items()
                  if models_frame_order is None or info.model_cls.models_frame_order == models_frame_order)


def get_method(name: str) -> MethodInfo:
    _load_all()
    if name not in _REGISTRY:
        raise unknown_name_error("method", name, _REGISTRY)
    return _REGISTRY[name]


def parse_method_list(text: str) -> list[str]:
    """'msta,aim' or 'all' -> validated names (order kept, duplicates dropped)."""
    names = list_methods() if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise HarnessError("--methods: give at least one method, e.g. --methods zeroshot,vificlip (or 'all')")
    for n in names:
        get_method(n)
    return list(dict.fromkeys(names))


def _coerce(method: str, field: dataclasses.Field, value: Any) -> Any:
    """Check an override's type against the field's default (YAML already parsed it)."""
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int) and not isinstance(value, bool):
        if isinstance(value, int):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        return str(value)
    elif default is None or isinstance(default, (list, tuple)):
        return value
    choices = field.metadata.get("choices")
    raise HarnessError(
        f"--set {method}.{field.name}={value!r}: expected {type(default).__name__} (default {default!r})"
        + (f", one of {choices}" if choices else "")
    )


def make_config(name: str, options: Mapping[str, Any] | None = None) -> MethodConfig:
    """The method's config with `options` applied; unknown options or bad values raise."""
    info = get_method(name)
    fields = {f.name: f for f in dataclasses.fields(info.config_cls)}
    values: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in fields:
            raise unknown_name_error(f"option of method {name!r}", key, fields)
        value = _coerce(name, fields[key], value)
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise HarnessError(f"--set {name}.{key}={value!r}: must be one of {', '.join(map(str, choices))}")
        values[key] = value
    config = info.config_cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def build_method(
    name: str,
    clip: Any,
    tokenizer: Any,
    num_frames: int = 8,
    options: Mapping[str, Any] | None = None,
    classnames: Sequence[str] | None = None,
) -> VideoTextModel:
    """Apply method `name` to an open_clip CLIP (modified in place) and return the video model.

    `classnames` are the training classes, needed only by methods with per-class parameters
    (class-specific prompt contexts, linear heads)."""
    info = get_method(name)
    config = make_config(name, options)
    return info.model_cls(clip, config, num_frames=num_frames, tokenizer=tokenizer, classnames=classnames)
