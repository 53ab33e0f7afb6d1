"""ViCLIP weights: the official checkpoint layout, read without running code, mapped onto the
joint backbone of `harness.viclip`.

Why a module of its own: the released files (`ViCLIP-B_InternVid-FLT-10M.pth`, ...) are what
`torch.save` wrote in the training code (InternVideo1/Pretrain/ViCLIP `tasks/pretrain.py`):
``{"model": state_dict, "optimizer", "scheduler", "scaler", "config" (an EasyDict), "epoch",
"global_step"}``; the released inference code reads ``torch.load(path)["model"]``. Unpickling the
EasyDict would mean importing and running code named by the file, so the file is read with the
project's restricted unpickler (`harness.safe_load.load_restricted`, the layer every loader may
use) in which `easydict.EasyDict` is an inert dict stand-in; a file naming anything else is
refused in one line, and what was read so goes into the backbone's notes.

Key mapping (`official_key` / `from_official`): `vision_encoder.X` -> `visual.X`,
`text_encoder.X` -> `X` (open_clip keeps the text tower at the top level), `temp` ->
`logit_scale = log(1 / temp)`. A file already in this project's names (`visual.*`, a 5-D
`visual.conv1.weight`) loads as it is. The temporal positional embedding keeps the file's number
of rows; clips of another length use the official resize rule at every forward
(`methods.layout.temporal_embedding_for`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigurationError, HarnessError
from harness.state_dicts import load_strict


class _EasyDictStandIn(dict):
    """An inert stand-in for `easydict.EasyDict` (a dict whose items are mirrored as attributes):
    the unpickler fills it with `__setitem__` and its pickled attributes land in `__dict__`;
    nothing of easydict is imported or run."""


#: The only globals of a ViCLIP training checkpoint beyond tensors and containers.
STAND_INS = {"easydict.EasyDict": _EasyDictStandIn}


def read_official_checkpoint(path: Path) -> tuple[Any, list[str]]:
    """The file's top-level object read without running its pickle (`harness.safe_load`: a
    restricted unpickler in which the EasyDict config is an inert dict), and one line per kind of
    object read so (for the backbone's notes). A file naming anything else is one line."""
    from harness.safe_load import load_restricted

    try:
        content = load_restricted(path, STAND_INS, what="a ViCLIP checkpoint")
    except HarnessError as err:  # every job shares the backbone: stop the invocation
        raise ConfigurationError(f"--pretrained {path}: {err}") from None
    read = [f"{key}: EasyDict read as a plain dict (stand-in class; easydict not imported, nothing of it run)"
            for key, value in (content.items() if isinstance(content, dict) else ())
            if isinstance(value, _EasyDictStandIn)]
    return content, read


def model_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint: `["model"]` (the training code's and the
    release's layout), `["module"]` (DeepSpeed), `["state_dict"]`, or the object itself."""
    if isinstance(obj, dict):
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigurationError(f"--pretrained {path}: no state dict of tensors found (expected ViCLIP's "
                                 "{'model': {...}} layout or a plain state dict)")
    return dict(obj)


def is_official_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("vision_encoder.", "text_encoder.")) for k in state) or "temp" in state


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ViCLIP keys -> this project's (open_clip) names; `temp` -> `logit_scale`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "temp":
            out["logit_scale"] = torch.log(1.0 / value.float()).to(value.dtype)
        elif key.startswith("vision_encoder."):
            out["visual." + key[len("vision_encoder."):]] = value
        elif key.startswith("text_encoder."):
            out[key[len("text_encoder."):]] = value
        else:
            out[key] = value  # unexpected: reported by the loader
    return out


def official_key(name: str) -> str:
    """This project's backbone parameter name -> the official ViCLIP checkpoint key."""
    if name == "logit_scale":
        return "temp"
    if name.startswith("visual."):
        return "vision_encoder." + name[len("visual."):]
    return "text_encoder." + name


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's joint backbone state dict -> the official layout (`temp = exp(-logit_scale)`),
    e.g. to write a checkpoint the official code loads."""
    out = {}
    for name, value in state.items():
        out[official_key(name)] = torch.exp(-value.float()).to(value.dtype) if name == "logit_scale" else value
    return out


def load_joint_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a joint backbone's weights (official or own names), strictly, with one-line errors.
    The temporal positional embedding takes the file's row count."""
    if is_official_layout(state):
        state = from_official(state)
    key = "visual.temporal_positional_embedding"
    own = model.state_dict()
    if key in state and state[key].dim() == 3 and state[key].shape[2] == own[key].shape[2]:
        rows = state[key].shape[1]
        if rows != own[key].shape[1]:
            model.visual.temporal_positional_embedding = nn.Parameter(torch.zeros(1, rows, own[key].shape[2]))
    load_strict(model, state, path, "pass a checkpoint of this backbone (ViCLIP-B/16 for ViCLIP-B-16)", official_key)
