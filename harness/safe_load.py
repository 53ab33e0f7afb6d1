"""Reading torch files (`.pt`, `.pth`) without running what their pickles name.

Why a module of its own: a checkpoint is a pickle, and a pickle may name any Python callable
(`os.system`, `builtins.exec`, ...) that `torch.load(weights_only=False)` would call while
reading the file, before anything could check it. Every file this project reads that someone
else may have written (official releases, converted `.harness.pt` files, run checkpoints shared
between machines, the checkpoint a resumed job reads) goes through one of two readers here:

* `load_weights_only(path, what)`: torch's own restricted unpickler (tensors, containers,
  numbers, text). This project writes its checkpoints so that this reader suffices.
* `load_restricted(path, allowed, what)`: the same idea for files written by other code bases,
  whose pickles also hold configuration objects (a yacs `CfgNode`, an `argparse.Namespace`,
  numpy scalars ...): a `pickle.Unpickler` whose `find_class` returns only the objects of
  `allowed` (the documented way to restrict globals; `harness.convert.release_io` supplies
  inert stand-in classes for the configuration types) and refuses every other name.

Either way a name outside the allowed set stops the read with one line naming it (`ForeignCode`)
and nothing from the file has run. Stdlib + torch only: usable from every layer.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError


class ForeignCode(HarnessError):
    """The file's pickle names a Python object outside the allowed set (it would run code)."""


def refusal(path: str | Path, name: str, what: str) -> ForeignCode:
    return ForeignCode(
        f"{path}: refused: its pickle names {name}, which loading would call ({what} may hold only tensors, "
        "containers, numbers and text); nothing from the file was executed. Do not load it with "
        "torch.load(weights_only=False) unless you trust its author")


#: `torch.load(weights_only=True)` says which global it refused in one of these forms.
_TORCH_REFUSED = (re.compile(r"GLOBAL ([\w.]+) was not an allowed global"),
                  re.compile(r"unsupported GLOBAL ([\w.]+) whose module"),
                  re.compile(r"unrecognized function (<[^>]*>|\S+)"),
                  re.compile(r"new object for .* but got (<[^>]*>|\S+)"),
                  re.compile(r"Can only build .* but got (<[^>]*>|\S+)"))


def _read_error(path: Path, err: Exception, what: str) -> HarnessError:
    text = str(err)
    for pattern in _TORCH_REFUSED:
        match = pattern.search(text)
        if match:
            return refusal(path, match.group(1), what)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return HarnessError(f"{path}: cannot be read as a torch file ({type(err).__name__}: {first[:300]})")


def load_weights_only(path: str | Path, what: str = "a checkpoint of this project") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a refused global is one `ForeignCode` line,
    any other failure one `HarnessError` line."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip / torch errors of every kind
        raise _read_error(path, err, what) from None


def torch_globals() -> dict[str, Any]:
    """The tensor-rebuilding globals torch itself allows in a weights-only load (dtypes, storage
    and tensor classes, `_rebuild_tensor_v2`, `OrderedDict`, `set` ...): what a checkpoint of
    tensors needs."""
    from torch import _weights_only_unpickler as wo

    return dict(wo._get_allowed_globals())


class _RestrictedUnpickler(pickle.Unpickler):
    """`find_class` answers only from `allowed`; `refused` names the first other global."""

    allowed: Mapping[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 (torch.save's default) writes Python 2 names (`__builtin__.set`), which the
        # default find_class maps back; keys of the mappings never name a Python 3 module
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        raise pickle.UnpicklingError(f"GLOBAL {full} was not an allowed global")


def _restricted_module(allowed: Mapping[str, Any]) -> types.ModuleType:
    """A module with the `Unpickler` / `load` pair that `torch.load(pickle_module=...)` uses."""
    unpickler = type("RestrictedUnpickler", (_RestrictedUnpickler,), {"allowed": dict(allowed)})
    module = types.ModuleType("harness_restricted_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kw: unpickler(file, **kw).load()  # type: ignore[attr-defined]
    module.__name__ = "harness_restricted_pickle"
    return module


def load_restricted(path: str | Path, allowed: Mapping[str, Any], what: str = "a released checkpoint") -> Any:
    """Load `path` on the CPU with a pickle that may name only the globals of `allowed`
    ("module.name" -> the object to use instead; tensors' own are always allowed).

    Stand-in classes in `allowed` must be inert: the unpickler creates them with `__new__`,
    fills them with `__setitem__` / `__dict__.update` (or their own `__setstate__`), and calls
    nothing else."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    module = _restricted_module({**torch_globals(), **allowed})
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    except RuntimeError as err:
        if "explicit pickle_module" not in str(err):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD is set: torch's reader
            raise _read_error(path, err, what) from None
        return load_weights_only(path, what)
    except Exception as err:  # pickle / zip / torch errors of every kind
        raise _read_error(path, err, what) from None
