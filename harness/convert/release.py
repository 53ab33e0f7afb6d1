"""Reading an official released checkpoint: unwrap the containers and key prefixes that training
frameworks add, and describe what was found.

Why a module of its own: every released checkpoint of the methods here is some nesting of
`{"state_dict": ...}` (mmaction / mmengine), `{"model": ...}` (ViFi-CLIP, Vita-CLIP, DeiT-style
trainers) and DDP's `module.` / `torch.compile`'s `_orig_mod.` prefixes, around tensors stored
in fp16 or fp32. Converters should see one flat `{official key: tensor}` mapping and nothing of
this, and the report should say what was unwrapped. The file itself is read by
`release_io.load_release` (no pickled code runs; configuration objects become plain data), and
the training configuration it carries is kept beside the state (`Release.file`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.convert.release_io import ReleaseFile, load_release
from harness.errors import HarnessError

#: Container keys under which trainers store the model's state dict, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model", "module", "model_state", "net")
#: Prefixes that wrappers (DDP, torch.compile, a `model.` attribute) add to every key.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class Release:
    """A released checkpoint as a flat mapping of official key -> tensor."""

    path: str
    state: dict[str, torch.Tensor]
    unwrapped: list[str] = field(default_factory=list)  # container keys descended into
    stripped: list[str] = field(default_factory=list)  # prefixes removed from every key
    extras: dict[str, str] = field(default_factory=dict)  # non-state entries beside it (epoch, optimizer ...)
    file: ReleaseFile | None = None  # the file as read: its training configuration, what was read

    @property
    def config(self) -> dict[str, Any] | None:
        return self.file.config if self.file is not None else None

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A value of the release's training configuration (`DATA.NUM_FRAMES`), or `default`."""
        return self.file.setting(dotted, default) if self.file is not None else default

    def dtypes(self) -> dict[str, int]:
        return dict(Counter(str(t.dtype).removeprefix("torch.") for t in self.state.values()))

    def describe(self) -> dict[str, Any]:
        out = {"path": self.path, "keys": len(self.state), "dtypes": self.dtypes(),
               "unwrapped": self.unwrapped, "stripped_prefixes": self.stripped,
               "other_entries": self.extras}
        if self.file is not None:
            out.update(config_from=self.file.config_key, config_kind=self.file.config_kind, read=self.file.read)
        return out


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str], dict[str, str]]:
    """Descend through `WRAPPER_KEYS` containers until a mapping of tensors is reached."""
    path: list[str] = []
    extras: dict[str, str] = {}
    while not _is_state(obj):
        where = "".join(f"[{k!r}]" for k in path)
        if not isinstance(obj, Mapping):
            raise HarnessError(f"{source}: expected a state dict (a mapping of tensors) at {where or 'the top level'}, "
                               f"found {type(obj).__name__}")
        if not obj:
            raise HarnessError(f"{source}: {where or 'the file'} is empty: no tensors to convert")
        key = next((k for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if key is None:
            kinds = ", ".join(f"{k} ({type(v).__name__})" for k, v in list(obj.items())[:10])
            raise HarnessError(f"{source}: no state dict found {'in ' + where if where else 'at the top level'}; "
                               f"its entries are {kinds} (looked for a mapping of tensors under "
                               f"{', '.join(WRAPPER_KEYS)})")
        extras.update({str(k): type(v).__name__ for k, v in obj.items() if k != key})
        path.append(key)
        obj = obj[key]
    # Non-tensor entries (e.g. a `_metadata` attribute) are not parameters.
    return {str(k): v for k, v in obj.items()}, path, extras


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES
                   ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove a prefix shared by every key (repeatedly: `module._orig_mod.`)."""
    stripped: list[str] = []
    changed = True
    while changed and state:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
    return state, stripped


def read_release(path: str | Path, parts: Sequence[str] = ()) -> Release:
    """Read a release file on the CPU without executing pickled code, and flatten it.

    `parts`: top-level entries that each hold one state dict of a release saved in several
    (MoTE: `model_state_dict` and `fusion_model_state_dict`); each is unwrapped on its own and
    its keys become `<part>.<key>`. Empty: the file holds one state dict, found by `unwrap`."""
    file = load_release(path)
    if not parts:
        state, unwrapped, extras = unwrap(file.content, str(path))
        state, stripped = strip_prefixes(state)
        return Release(path=str(path), state=state, unwrapped=unwrapped, stripped=stripped, extras=extras, file=file)
    content = file.content
    absent = [p for p in parts if not isinstance(content, Mapping) or not isinstance(content.get(p), Mapping)]
    if absent:
        found = sorted(map(str, content))[:10] if isinstance(content, Mapping) else type(content).__name__
        raise HarnessError(f"{path}: no {', '.join(absent)} entry (this code base saves its state dicts under "
                           f"{', '.join(parts)}); found {found}")
    release = Release(path=str(path), state={}, unwrapped=list(parts), file=file,
                      extras={str(k): type(v).__name__ for k, v in content.items() if k not in parts})
    for part in parts:
        state, _, _ = unwrap(content[part], f"{path} [{part}]")
        state, stripped = strip_prefixes(state)
        release.stripped.extend(f"{part}: {prefix}" for prefix in stripped)
        release.state.update({f"{part}.{k}": v for k, v in state.items()})
    return release
