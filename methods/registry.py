"""Method registry: names -> (config class, model class), with loud errors.

Mirrors PEFT's `register_peft_method` and timm's `register_model`: a method file registers
itself on import; unknown or duplicate names raise, and option overrides are checked against
the config dataclass so that a typo is an error listing the valid options, not a silent default.

Discovery: on first access every module of the `methods` package is imported (`pkgutil`), so
adding a method is adding one file here that calls `register_method`; no central list to edit.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, unknown_name_error
from harness.options import build_dataclass, field_default
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


def make_config(name: str, options: Mapping[str, Any] | None = None) -> MethodConfig:
    """The method's config with `options` applied; unknown options or bad values raise."""
    info = get_method(name)
    config = build_dataclass(info.config_cls, dict(options or {}), name, kind=f"option of method {name!r}")
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def default_options(name: str) -> dict[str, Any]:
    """The method's option defaults, as its configuration's `to_dict()` would give them, read
    from the dataclass fields: what report labels compare a job's options with, without
    building (and validating) a configuration nobody runs."""
    return {f.name: copy.deepcopy(field_default(f)) for f in dataclasses.fields(get_method(name).config_cls)}


def build_method(
    name: str,
    clip: Any,
    tokenizer: Any,
    num_frames: int = 8,
    options: MethodConfig | Mapping[str, Any] | None = None,
    classnames: Sequence[str] | None = None,
) -> VideoTextModel:
    """Apply method `name` to an open_clip CLIP (modified in place) and return the video model.

    `options`: the method's configuration, already built (a job's `method_options`: built once
    when the job was expanded, and used as is), or option values to build it from.
    `classnames` are the training classes, needed only by methods with per-class parameters
    (class-specific prompt contexts, linear heads)."""
    info = get_method(name)
    if isinstance(options, MethodConfig):
        if type(options) is not info.config_cls:
            raise HarnessError(f"method {name!r} takes a {info.config_cls.__name__}, not a {type(options).__name__}")
        config = options
    else:
        config = make_config(name, options)
    return info.model_cls(clip, config, num_frames=num_frames, tokenizer=tokenizer, classnames=classnames)
