"""Reading an official release file as its training code wrote it, without running its pickle.

Released checkpoints hold more than tensors: ViFi-CLIP, X-CLIP and OST pickle their yacs
`CfgNode` beside the weights, trainers pickle `argparse.Namespace` or `EasyDict` configs and
numpy scalars, mmcv / mmengine trainers store the config as Python text in `meta.config`,
SlowFast-style trainers as YAML text in `cfg`. `torch.load(weights_only=True)` refuses the
objects, `weights_only=False` would run whatever the file names. This module reads them with a
restricted unpickler (`harness.safe_load.load_restricted`) in which each configuration type is an
inert stand-in class (so neither yacs nor easydict nor mmcv need be installed, and nothing of
theirs runs), then turns every stand-in into plain data (dicts, lists, numbers, text).

API (for every converter):

    release = load_release(path)          # ReleaseFile; raises ForeignCode / HarnessError
    release.content                       # top-level mapping, plain data; tensors kept as tensors
    release.config                        # the training configuration as nested dicts, or None
    release.config_key, .config_kind      # where it was ('config', 'meta.config', 'cfg', ...) and
                                          # what ('yacs CfgNode', 'mmcv Config text', 'YAML text', ...)
    release.setting("MODEL.ARCH")         # one value of the configuration by dotted path (or default)
    release.read                          # one line per configuration object read, for the report

A file whose pickle names anything else (a function, a class not listed in `STAND_INS` or
`PLAIN_GLOBALS`) is refused with one line naming it, before anything of it runs
(`harness.safe_load.ForeignCode`).
"""
from __future__ import annotations

import ast
import collections
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from harness.errors import HarnessError
from harness.safe_load import load_restricted

#: Top-level (or `meta.`) entries where training code stores its configuration, in the order tried.
CONFIG_KEYS = ("config", "cfg", "args", "hyper_parameters", "meta.config", "meta.cfg")


# -- inert stand-ins for the configuration classes ---------------------------------------------
class MappingStandIn(dict):
    """A dict-based configuration object (yacs CfgNode, EasyDict, addict / mmcv ConfigDict).

    Only `dict` behaviour: the unpickler fills the items with `__setitem__` and the pickled
    instance attributes (yacs' `__immutable__` ...) land in `__dict__`; nothing else runs."""

    official: str = ""

    def __setstate__(self, state: Any) -> None:  # addict / ConfigDict pickle their items as state
        if isinstance(state, dict):
            if state and all(isinstance(k, str) and k.startswith("__") for k in state):
                self.__dict__.update(state)  # instance attributes (yacs: __immutable__, ...)
            else:
                dict.update(self, state)


class AttributeStandIn:
    """An attribute-based configuration object (argparse.Namespace, types.SimpleNamespace)."""

    official: str = ""

    def __init__(self, **kwargs: Any) -> None:  # SimpleNamespace pickles as a call with no args
        self.__dict__.update(kwargs)


class MMConfigStandIn:
    """mmcv / mmengine `Config`: pickled as the state (cfg dict, filename, text)."""

    official: str = ""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


def _stand_in(official: str, base: type) -> type:
    return type(official.rsplit(".", 1)[-1], (base,), {"official": official, "__module__": __name__})


#: Configuration classes read as inert stand-ins: pickled name -> stand-in class.
STAND_INS: dict[str, type] = {
    **{name: _stand_in(name, MappingStandIn) for name in (
        "yacs.config.CfgNode", "fvcore.common.config.CfgNode", "easydict.EasyDict", "addict.addict.Dict",
        "mmcv.utils.config.ConfigDict", "mmengine.config.config.ConfigDict")},
    **{name: _stand_in(name, AttributeStandIn) for name in ("argparse.Namespace", "types.SimpleNamespace")},
    **{name: _stand_in(name, MMConfigStandIn) for name in (
        "mmcv.utils.config.Config", "mmcv.Config", "mmengine.config.config.Config")},
}


def _path_text(*parts: Any) -> str:
    return str(pathlib.PurePath(*parts))


def _numpy_globals() -> dict[str, Any]:
    core = getattr(np, "_core", None) or np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    out: dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 and 2 names
        out[f"{module}._reconstruct"], out[f"{module}.scalar"] = reconstruct, scalar
    return out


#: Other globals such files hold, each harmless to call with any arguments (containers, numpy
#: arrays and scalars, paths as text, the factories of a defaultdict).
PLAIN_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict, "collections.defaultdict": collections.defaultdict,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.complex": complex,
    "builtins.list": list, "builtins.dict": dict, "builtins.tuple": tuple, "builtins.int": int,
    "builtins.float": float, "builtins.str": str, "builtins.bool": bool,
    **{f"pathlib.{kind}": _path_text for kind in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                                   "PurePosixPath", "PureWindowsPath")},
    **{f"pathlib._local.{kind}": _path_text for kind in ("Path", "PosixPath", "WindowsPath")},
    **_numpy_globals(),
}


# -- stand-ins -> plain data -------------------------------------------------------------------
def plain(obj: Any) -> Any:
    """`obj` with every stand-in, OrderedDict, set and numpy value turned into plain data (dict,
    list, tuple, int, float, str, bool, None); tensors stay tensors."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, MMConfigStandIn):
        state = obj.__dict__.get("state")
        cfg = state[0] if isinstance(state, tuple) and state else state
        return plain(cfg)
    if isinstance(obj, AttributeStandIn):
        return {str(k): plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if type(obj) in (list, tuple) else [plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((plain(v) for v in obj), key=repr)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _stand_ins_in(obj: Any, where: str, found: dict[str, str], depth: int = 0) -> None:
    """Record `where` -> official class name of each stand-in met (outermost only)."""
    if depth > 6 or isinstance(obj, torch.Tensor):
        return
    official = getattr(type(obj), "official", "")
    if official:
        found.setdefault(where, official)
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _stand_ins_in(value, f"{where}.{key}" if where else str(key), found, depth + 1)


# -- configuration text ----------------------------------------------------------------------
class _Unevaluated(str):
    """An expression of a Python config that is not a literal (kept as its source text)."""


def _literal(node: ast.AST) -> Any:
    """A value of mmcv / mmengine config text: literals, `dict(k=v, ...)`, lists, tuples, sets,
    signed numbers. Anything else (names, arithmetic, calls) stays source text; nothing runs."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if all(k.arg is not None for k in node.keywords):
            return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    return _Unevaluated(ast.unparse(node))


def python_config(text: str) -> dict[str, Any] | None:
    """`name = value` lines of mmcv / mmengine `Config.pretty_text` (what AIM's `tools/train.py`
    stores in `meta.config`) as a dict, read with `ast` (never executed); None if the text is not
    a sequence of assignments."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            return None
        out[stmt.targets[0].id] = _literal(stmt.value)
    return out or None


def text_config(text: str) -> tuple[dict[str, Any] | None, str]:
    """Configuration text -> (dict, kind): Python config text, else a YAML mapping, else (None, 'text')."""
    parsed = python_config(text)
    if parsed is not None:
        return parsed, "Python config text (mmcv / mmengine Config)"
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        loaded = None
    if isinstance(loaded, dict):
        return loaded, "YAML text"
    return None, "text"


_KINDS = {"yacs.config.CfgNode": "yacs CfgNode", "fvcore.common.config.CfgNode": "fvcore CfgNode",
          "easydict.EasyDict": "EasyDict", "argparse.Namespace": "argparse Namespace",
          "types.SimpleNamespace": "SimpleNamespace", "addict.addict.Dict": "addict Dict",
          "mmcv.utils.config.ConfigDict": "mmcv ConfigDict", "mmengine.config.config.ConfigDict": "mmengine ConfigDict",
          "mmcv.utils.config.Config": "mmcv Config", "mmcv.Config": "mmcv Config",
          "mmengine.config.config.Config": "mmengine Config"}


# -- the file ---------------------------------------------------------------------------------
@dataclass
class ReleaseFile:
    """A release file read without running its pickle (see the module docstring)."""

    path: str
    content: Any  # the top-level object, plain data (tensors kept)
    config: dict[str, Any] | None = None
    config_key: str | None = None
    config_kind: str | None = None
    read: list[str] = field(default_factory=list)

    def setting(self, dotted: str, default: Any = None) -> Any:
        """`release.setting("model.backbone.adapter_scale")`: a configuration value, or `default`."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return default if isinstance(node, _Unevaluated) else node


def _lookup(content: Any, dotted: str) -> Any:
    node = content
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _find_config(content: Any, stand_ins: dict[str, str]) -> tuple[dict | None, str | None, str | None]:
    for key in CONFIG_KEYS:
        value = _lookup(content, key)
        if value is None:
            continue
        if key in stand_ins:
            return plain(value), key, _KINDS.get(stand_ins[key], stand_ins[key])
        if isinstance(value, str):
            parsed, kind = text_config(value)
            if parsed is not None:
                return plain(parsed), key, kind
        elif isinstance(value, Mapping) and not any(isinstance(v, torch.Tensor) for v in value.values()):
            return plain(value), key, "dict"
    return None, None, None


def load_release(path: str | Path) -> ReleaseFile:
    """Read a release file on the CPU (see the module docstring); raises `ForeignCode` (one line)
    for a pickle that names code, `HarnessError` for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such checkpoint file")
    raw = load_restricted(path, {**PLAIN_GLOBALS, **STAND_INS}, what="a released checkpoint")
    stand_ins: dict[str, str] = {}
    _stand_ins_in(raw, "", stand_ins)
    content = plain(raw)
    config, key, kind = _find_config(content, stand_ins)
    read = [f"{where}: {_KINDS.get(name, name)} read as plain data (stand-in class; {name.split('.')[0]} "
            "not imported, nothing of it run)" for where, name in sorted(stand_ins.items())]
    if key is not None and key not in stand_ins:
        read.append(f"{key}: {kind} read as the training configuration")
    return ReleaseFile(path=str(path), content=content, config=config, config_key=key, config_kind=kind, read=read)
