"""Converters for the two visual-only adapter releases, ST-Adapter (linziyi96/st-adapter) and AIM
(taoyang1122/adapt-image-models): both ship the adapted image tower plus a 400-way linear head
and no text tower, and their parameter names are this project's through `official_key()`.

Both become `head=linear` models by default (row order checked against the Kinetics-400 class
file); `--set <method>.head=text` keeps only the image tower and takes the text tower and `proj`
from `--base`.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from harness.convert.base import BuildPlan, Converter, closed_set_classes, require_rows
from harness.convert.mapping import Source
from harness.errors import HarnessError
from methods import aim, st_adapter


class VisualReleaseConverter(Converter):
    """Shared rules of the visual-only releases; subclasses name their keys."""

    head_key: ClassVar[str]  # official key of the head's weight
    official_key = staticmethod(lambda name: None)

    def prepare(self, release) -> BuildPlan:
        options = dict(self.request.options)
        frames, notes = self.release_options(release.state, options)
        classnames, head_notes = self.head_options(options)
        return BuildPlan(options, frames, classnames, notes + head_notes)

    @abstractmethod
    def release_options(self, state: dict[str, torch.Tensor], options: dict) -> tuple[int, list[str]]:
        """Set the options the release determines (sizes, variant) in `options`; (frames, notes)."""

    def head_options(self, options: dict) -> tuple[list[str] | None, list[str]]:
        """Set `head` (default linear) and return (class names, notes)."""
        head = options.setdefault("head", "linear")
        if head != "linear":
            return None, [f"head={head}: the release's linear head is dropped; text tower and proj from --base"]
        rows = require_rows(self.state(), self.head_key, f"--from {self.name}").shape[0]
        classnames, note = closed_set_classes(rows, self.request, f"the release's head {self.head_key}")
        return classnames, [f"head=linear ({rows} classes): {note}"]

    def base_needed(self, plan: BuildPlan) -> bool:
        return plan.options.get("head") != "linear"

    def source(self, name: str) -> Source | None:
        key = self.official_key(name)
        return Source.key(key) if key is not None else None

    def ignore(self, key: str, value: torch.Tensor) -> str | None:
        if key.startswith(self.head_key.rsplit(".", 1)[0] + "."):
            return "linear head not used: converted with head=text"
        return None


class STAdapterConverter(VisualReleaseConverter):
    name = method = "st_adapter"
    upstream = "linziyi96/st-adapter models_adapter.py (frozen CLIP weights stored in fp16)"
    anchor, head_key = "class_embedding", "fc.weight"
    official_key = staticmethod(st_adapter.official_key)

    def release_options(self, state: dict[str, torch.Tensor], options: dict) -> tuple[int, list[str]]:
        fc1, conv = (require_rows(state, f"transformer.resblocks.0.adapter_pre_mlp.{k}.weight", "--from st_adapter")
                     for k in ("fc1", "conv"))
        options.setdefault("variant", "24x384" if any(".adapter_pre_attn." in k for k in state) else "12x384")
        options.setdefault("bottleneck", int(fc1.shape[0]))
        options.setdefault("kernel_t", int(conv.shape[2]))
        return self.request.frames or 8, []


class AIMConverter(VisualReleaseConverter):
    """AIM's mmaction checkpoints; the one T-dependent parameter is `temporal_embedding`."""

    name = method = "aim"
    official_key = staticmethod(aim.official_key)
    anchor, head_key = "backbone.class_embedding", "cls_head.fc_cls.weight"
    upstream = "taoyang1122/adapt-image-models mmaction ViT_CLIP + I3DHead"

    def release_options(self, state: dict[str, torch.Tensor], options: dict) -> tuple[int, list[str]]:
        temporal = require_rows(state, "backbone.temporal_embedding", "--from aim")
        fc1 = require_rows(state, "backbone.transformer.resblocks.0.T_Adapter.D_fc1.weight", "--from aim")
        release_frames = int(temporal.shape[1])
        ratio = fc1.shape[0] / temporal.shape[2]
        if ratio != aim.AIMConfig.mlp_ratio:
            options.setdefault("mlp_ratio", ratio)
        self.frames_mismatch = options.get("frames_mismatch", aim.AIMConfig.frames_mismatch)
        frames = self.request.frames or release_frames
        notes = [f"temporal_embedding of T={release_frames} interpolated linearly to T={frames}"] \
            if frames != release_frames and self.frames_mismatch == "interpolate" else []
        return frames, notes

    def adapt(self, name: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        same_but_t = name == "temporal_embedding" and value.shape[::2] == shape[::2]
        if not same_but_t:
            return super().adapt(name, value, shape)
        if self.frames_mismatch != "interpolate":
            raise HarnessError(
                f"backbone.temporal_embedding was trained for T={value.shape[1]} frames, the model is built for "
                f"T={shape[1]} (--frames {shape[1]}); convert with --frames {value.shape[1]}, or interpolate it "
                "with --set aim.frames_mismatch=interpolate")
        return aim.interpolate_frames(value.float(), shape[1]).to(value.dtype)
