"""Saving converted checkpoints, and loading any checkpoint of this project into a ready model.

Two kinds are loaded by the same call (`load_checkpoint`), so `harness predict` and evaluation
need not care where a checkpoint came from:

* converted (`harness convert`; `meta.format == CONVERTED_FORMAT`): every parameter the release
  filled, in this project's names, plus the build recipe (method, options, frames, classes) and
  the base backbone's identity for the parameters it did not fill;
* run (`harness run`, mmengine files under `jobs/<id>/work/`): trainable parameters only, the
  backbone identity in `meta.backbone`; the build recipe is the job's `config.json`.

In both cases the backbone is rebuilt from the recorded identity and compared with it, so a
checkpoint is never silently applied to a different CLIP. Both kinds hold tensors and plain data
only and are read with `torch.load(weights_only=True)` (`harness.safe_load`): a shared checkpoint
whose pickle would run code is refused with one line, and nothing of it runs.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.atomic import atomic_write
from harness.convert.base import CONVERTED_FORMAT, Conversion
from harness.errors import HarnessError
from harness.safe_load import load_weights_only

#: Where a run checkpoint of a method that evaluates epoch-averaged weights (FROSTER) keeps the
#: running sum of the averaged epochs (harness.engine.hooks.EpochAverageHook.META_KEY).
EPOCH_AVERAGE_META = "harness_epoch_average"
#: Fields of a backbone's identity: equal fields = the same weights.
IDENTITY = ("resolved_name", "pretrained", "weights_sha256")


@dataclass
class LoadedModel:
    """A method with its checkpoint applied, and what is known about how it was trained."""

    net: Any  # methods.base.VideoTextModel
    backbone: dict[str, Any]
    classnames: list[str] | None  # training classes, when the checkpoint records them
    kind: str  # "converted" | "run" | "none"
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    #: How the model was built: method, method_options, frames, classnames, backbone (name),
    #: pretrained (as applied), seed, cache_dir (a run's: where its data and weights were);
    #: `harness eval` makes its jobs from it.
    recipe: dict[str, Any] = field(default_factory=dict)


def save_converted(conversion: Conversion, out: str | Path) -> Path:
    """Write the converted checkpoint atomically (a crash never leaves half a file)."""
    out = Path(out)
    payload = {"state_dict": conversion.state, "meta": conversion.meta}
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return out


def identity(backbone: dict[str, Any]) -> dict[str, Any]:
    return {k: backbone.get(k) for k in IDENTITY}


def check_identity(recorded: dict[str, Any], built: dict[str, Any], checkpoint: str) -> None:
    """Refuse to apply a checkpoint to a backbone other than the one it was made with. A recorded
    sha256 decides alone (the same file may sit at another path); else name and tag must match."""
    mine, theirs = identity(built), identity(recorded)
    if theirs["weights_sha256"] and mine["weights_sha256"]:
        same = theirs["weights_sha256"] == mine["weights_sha256"] and theirs["resolved_name"] == mine["resolved_name"]
    else:
        same = mine == theirs
    if not same:
        raise HarnessError(f"{checkpoint} was made with backbone {theirs}, but the backbone built now is {mine}; "
                           "pass the same --base / --pretrained (a local file must have the same sha256)")


def build_model(method: str, backbone: str, pretrained: str | None, frames: int, options: dict[str, Any],
                classnames: Sequence[str] | None, seed: int | None = 0, cache_dir: str | None = None
                ) -> tuple[Any, dict[str, Any]]:
    """Backbone + method, in eval mode, and the backbone's identity."""
    from harness.backbone import get_tokenizer
    from harness.weights import create_backbone
    from methods.registry import build_method

    clip, spec = create_backbone(backbone, pretrained, seed=seed, cache_dir=cache_dir)
    backbone_params = sum(p.numel() for p in clip.parameters())  # before the method inserts its modules
    net = build_method(method, clip, get_tokenizer(spec), frames, options, list(classnames) if classnames else None)
    net.backbone_params = backbone_params
    return net.eval(), spec.to_dict()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise HarnessError(f"--checkpoint {path}: no such file")
    obj = load_weights_only(path, "a checkpoint of this project")
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise HarnessError(f"--checkpoint {path}: not a checkpoint of this project (no state_dict); convert an "
                           "official release first with `harness convert --from ...`")
    return obj


def _apply(net: Any, state: dict[str, torch.Tensor], required: set[str], checkpoint: str) -> None:
    """Copy `state` into `net`; every key must be a parameter of the right shape and every
    `required` parameter must be present."""
    params = dict(net.named_parameters())
    unknown = [k for k in state if k not in params]
    absent = sorted(required - set(state))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(params[k].shape)}" for k, v in state.items()
             if k in params and v.shape != params[k].shape]
    if unknown or absent or wrong:
        parts = [f"{len(unknown)} key(s) not in the model: {unknown[:10]}" if unknown else "",
                 f"{len(absent)} parameter(s) missing: {absent[:10]}" if absent else "",
                 f"shape mismatches: {wrong[:10]}" if wrong else ""]
        raise HarnessError(f"{checkpoint} does not fit the model it describes: " + "; ".join(p for p in parts if p))
    with torch.no_grad():
        for key, value in state.items():
            params[key].copy_(value.to(params[key].dtype))


def _round_from_base(net: Any, precision: dict[str, list[str]]) -> None:
    """Round the base-filled parameters a converted file names to the precision the official
    model held them at (`meta.from_base_precision`, e.g. ST-Adapter's fp16 frozen CLIP)."""
    params = dict(net.named_parameters())
    with torch.no_grad():
        for dtype, names in precision.items():
            for name in names:
                params[name].copy_(params[name].to(getattr(torch, dtype)).to(params[name].dtype))


def load_checkpoint(path: str | Path, method: str | None = None, base: str | None = None,
                    cache_dir: str | None = None) -> LoadedModel:
    """Build the model a checkpoint describes and load it (converted or run checkpoints).

    `method`, when given, must be the checkpoint's. `base` replaces the recorded backbone
    location (e.g. the file moved); its identity is still checked."""
    from harness.data.upstream import file_sha256

    path = Path(path)
    obj = _read(path)
    meta = obj.get("meta") or {}
    if meta.get("format") == CONVERTED_FORMAT:
        recipe = meta
        backbone = dict(meta["backbone"])
        pretrained = base or backbone["pretrained"]
        kind, seed, state = "converted", 0, obj["state_dict"]
    else:
        recipe, backbone, pretrained, seed, state = _run_recipe(path, obj)
        kind, cache_dir, pretrained = "run", cache_dir or recipe.get("cache_dir"), base or pretrained
    if method is not None and method != recipe["method"]:
        raise HarnessError(f"--method {method}: {path} is a checkpoint of method {recipe['method']!r}")
    net, built = build_model(recipe["method"], backbone["name"], pretrained, recipe["frames"],
                             recipe["method_options"], recipe.get("classnames"), seed, cache_dir)
    check_identity(backbone, built, str(path))
    params = dict(net.named_parameters())
    # Converted: all but what the base fills; run: the trainable parameters (the rest is the backbone).
    required = (set(params) - set(meta.get("from_base", []))) if kind == "converted" else \
        {n for n, p in params.items() if p.requires_grad}
    _apply(net, state, required, str(path))
    if kind == "converted":
        _round_from_base(net, meta.get("from_base_precision") or {})
    used = {k: recipe.get(k) for k in ("method", "method_options", "frames", "classnames")}
    return LoadedModel(net=net, backbone=built, classnames=recipe.get("classnames"), kind=kind, meta=meta,
                       sha256=file_sha256(path),
                       recipe={**used, "backbone": backbone["name"], "pretrained": pretrained, "seed": seed,
                               "cache_dir": cache_dir})


def _run_recipe(path: Path, obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None, int, dict]:
    """The build recipe of a run checkpoint, from its job's config.json (jobs/<id>/work/<file>)."""
    config = path.parent.parent / "config.json"
    if not config.is_file():
        raise HarnessError(f"--checkpoint {path}: neither a converted checkpoint nor inside a run's job folder "
                           f"(no {config}); run checkpoints are loaded from results/<run>/jobs/<id>/work/")
    job = json.loads(config.read_text())["job"]
    recorded = (obj.get("meta") or {}).get("backbone")
    if recorded is None:
        raise HarnessError(f"--checkpoint {path}: no meta.backbone (written by an older version?)")
    recipe = {"method": job["method"], "method_options": job["method_options"], "frames": job["schedule"]["frames"],
              "classnames": (job.get("train") or {}).get("classnames"), "cache_dir": job.get("cache_dir")}
    state = {k.removeprefix("net."): v for k, v in obj["state_dict"].items()}
    averaged = (obj.get("meta") or {}).get(EPOCH_AVERAGE_META)
    if averaged and averaged.get("epochs"):  # the weights the job evaluates: the mean of the epochs so far
        count = len(averaged["epochs"])
        state = {k.removeprefix("net."): (v / count).to(state[k.removeprefix("net.")].dtype)
                 for k, v in averaged["sum"].items()}
    return recipe, {**recorded, "name": job["backbone"]}, job["pretrained"], job["seed"], state
