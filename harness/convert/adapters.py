"""Converters for the two visual-only adapter releases, ST-Adapter (linziyi96/st-adapter) and AIM
(taoyang1122/adapt-image-models): both ship the adapted image tower plus a 400-way linear head
and no text tower, and their parameter names are this project's through `official_key()`.

Both become `head=linear` models by default (row order checked against the Kinetics-400 class
file); `--set <method>.head=text` keeps only the image tower and takes the text tower and `proj`
from `--base`.
"""
from __future__ import annotations

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
    anchor = "class_embedding"
    head_key = "fc.weight"
    upstream = "linziyi96/st-adapter models_adapter.py (frozen CLIP weights stored in fp16)"
    official_key = staticmethod(st_adapter.official_key)

    def prepare(self, release) -> BuildPlan:
        state = release.state
        options = dict(self.request.options)
        fc1 = require_rows(state, "transformer.resblocks.0.adapter_pre_mlp.fc1.weight", "--from st_adapter")
        conv = require_rows(state, "transformer.resblocks.0.adapter_pre_mlp.conv.weight", "--from st_adapter")
        options.setdefault("variant", "24x384" if any(".adapter_pre_attn." in k for k in state) else "12x384")
        options.setdefault("bottleneck", int(fc1.shape[0]))
        options.setdefault("kernel_t", int(conv.shape[2]))
        classnames, notes = self.head_options(options)
        return BuildPlan(options, self.request.frames or 8, classnames, notes)


class AIMConverter(VisualReleaseConverter):
    name = method = "aim"
    anchor = "backbone.class_embedding"
    head_key = "cls_head.fc_cls.weight"
    upstream = "taoyang1122/adapt-image-models mmaction ViT_CLIP + I3DHead"
    official_key = staticmethod(aim.official_key)

    def prepare(self, release) -> BuildPlan:
        state = release.state
        options = dict(self.request.options)
        temporal = require_rows(state, "backbone.temporal_embedding", "--from aim")
        fc1 = require_rows(state, "backbone.transformer.resblocks.0.T_Adapter.D_fc1.weight", "--from aim")
        self.release_frames = int(temporal.shape[1])
        ratio = fc1.shape[0] / temporal.shape[2]
        if ratio != aim.AIMConfig.mlp_ratio:
            options.setdefault("mlp_ratio", ratio)
        self.frames_mismatch = options.get("frames_mismatch", aim.AIMConfig.frames_mismatch)
        classnames, notes = self.head_options(options)
        frames = self.request.frames or self.release_frames
        if frames != self.release_frames:
            notes.append(f"temporal_embedding interpolated linearly from T={self.release_frames} to T={frames}")
        return BuildPlan(options, frames, classnames, notes)

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
