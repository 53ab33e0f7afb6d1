"""Loading a checkpoint's state dict into a backbone strictly, with one-line errors.

Why a module of its own: open_clip's small configs (`harness.backbone`) and the joint ViCLIP
backbones (`harness.viclip_weights`) load local files the same way: a key of the wrong shape or a
missing / unexpected key must be one line naming the file and the first offending key (in the
file's own naming), never a torch traceback.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from harness.errors import ConfigurationError


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, hint: str,
                file_key: Callable[[str], str] = str) -> None:
    """Load `state` into `model`: every key present, of the model's shape, none extra. `file_key`
    turns a model name into the file's name for the messages; `hint` ends them (what to pass)."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and getattr(value, "shape", None) is not None and value.shape != own[key].shape:
            raise ConfigurationError(f"--pretrained {path}: checkpoint key {file_key(key)!r} has shape "
                                     f"{tuple(value.shape)}, the backbone expects {tuple(own[key].shape)}; {hint}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigurationError(
            f"--pretrained {path}: checkpoint does not match the backbone (missing {len(missing)} keys, e.g. "
            f"{[file_key(k) for k in missing[:3]]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )
