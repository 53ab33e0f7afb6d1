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
        plan = BuildPlan(dict(self.request.options), frames=self.request.frames or 8)
        self.release_options(release.state, plan)
        plan.classnames, head_notes = self.head_options(plan.options)
        plan.notes.extend(head_notes)
        return plan

    @abstractmethod
    def release_options(self, state: dict[str, torch.Tensor], plan: BuildPlan) -> None:
        """Set what the release determines (sizes, variant, frames, configured options) in `plan`."""

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
    """linziyi96/st-adapter releases. `utils.save_model` deletes every frozen parameter before
    saving (`{'model': <adapter and fc tensors, fp32>, 'optimizer', 'lr_sched', 'loss_scaler',
    'next_epoch'}`), so its files hold the trained tensors only; the frozen CLIP then comes from
    `--base`, rounded to fp16 as `models_adapter.VisionTransformer` holds it (`p.data.half()`; a
    no-op for OpenAI's fp16 weights). A full `model.state_dict()` (frozen CLIP in fp16) is read too."""

    name = method = "st_adapter"
    upstream = "linziyi96/st-adapter models_adapter.py, utils.save_model"
    anchor, head_key = "class_embedding", "fc.weight"
    other_anchors = ("fc.weight",)
    official_key = staticmethod(st_adapter.official_key)

    @staticmethod
    def officially_frozen(key: str) -> bool:
        """Official rule (models_adapter.VisionTransformer): every parameter but the adapters and
        `fc` is frozen and halved."""
        return "adapter" not in key and not key.startswith("fc.")

    @property
    def trainable_only(self) -> bool:
        return self.anchor not in self.state()

    def release_options(self, state: dict[str, torch.Tensor], plan: BuildPlan) -> None:
        fc1, conv = (require_rows(state, f"transformer.resblocks.0.adapter_pre_mlp.{k}.weight", "--from st_adapter")
                     for k in ("fc1", "conv"))
        options = plan.options
        options.setdefault("variant", "24x384" if any(".adapter_pre_attn." in k for k in state) else "12x384")
        options.setdefault("bottleneck", int(fc1.shape[0]))
        options.setdefault("kernel_t", int(conv.shape[2]))
        if self.trainable_only:
            plan.notes.append(f"the release holds the trained tensors only ({len(state)}: adapters and fc, as "
                              "utils.save_model writes it); the frozen CLIP comes from --base")

    def base_needed(self, plan: BuildPlan) -> bool:
        return super().base_needed(plan) or self.trainable_only

    def base_reason(self, plan: BuildPlan) -> str:
        if not self.trainable_only:
            return super().base_reason(plan)
        return (f"{self.request.checkpoint} holds only its {len(self.state())} trained tensors (adapters and fc: "
                "linziyi96/st-adapter's utils.save_model deletes every frozen parameter before saving), so the "
                "frozen CLIP weights must come from the CLIP it was trained from")

    def source(self, name: str) -> Source | None:
        key = self.official_key(name)
        if key is None or (self.trainable_only and self.officially_frozen(key)):
            return None
        return Source.key(key)

    def base_precision(self, name: str) -> torch.dtype | None:
        key = self.official_key(name)
        return torch.float16 if self.trainable_only and key is not None and self.officially_frozen(key) else None


class AIMConverter(VisualReleaseConverter):
    """AIM's mmaction checkpoints (mmcv `save_checkpoint`: `meta`, `state_dict`, `optimizer`); the
    one T-dependent parameter is `temporal_embedding`. `tools/train.py` stores the training config
    as text in `meta.config`: `adapter_scale` (not in the state dict; official configs use 0.5 and,
    for SSv2, 1.0) and `num_tadapter` are read from it, the scale is "assumed" without it."""

    name = method = "aim"
    official_key = staticmethod(aim.official_key)
    anchor, head_key = "backbone.class_embedding", "cls_head.fc_cls.weight"
    upstream = "taoyang1122/adapt-image-models mmaction ViT_CLIP + I3DHead (mmcv save_checkpoint)"
    #: Official configs' adapter scales (configs/recognition/vit/*.py L6).
    SCALES = {0.5: "K400 / K700 / Diving48 configs (vitclip_base_k400.py ...)",
              1.0: "SSv2 configs (vitclip_base_sthv2.py, vitclip_large_sthv2.py)"}

    def release_options(self, state: dict[str, torch.Tensor], plan: BuildPlan) -> None:
        temporal = require_rows(state, "backbone.temporal_embedding", "--from aim")
        fc1 = require_rows(state, "backbone.transformer.resblocks.0.T_Adapter.D_fc1.weight", "--from aim")
        release_frames = int(temporal.shape[1])
        ratio = fc1.shape[0] / temporal.shape[2]
        if ratio != aim.AIMConfig.mlp_ratio:
            plan.options.setdefault("mlp_ratio", ratio)
        self.configured_options(state, plan, release_frames)
        self.frames_mismatch = plan.options.get("frames_mismatch", aim.AIMConfig.frames_mismatch)
        plan.frames = self.request.frames or release_frames
        if plan.frames != release_frames and self.frames_mismatch == "interpolate":
            plan.notes.append(f"temporal_embedding of T={release_frames} interpolated linearly to T={plan.frames}")

    def configured_options(self, state: dict[str, torch.Tensor], plan: BuildPlan, release_frames: int) -> None:
        """`num_tadapter` from the state dict (checked against `meta.config`), `adapter_scale` from
        `meta.config`, or assumed (with the official alternatives) when the release has none."""
        release, options, backbone = self.release, plan.options, "model.backbone"
        has_in = any(".T_Adapter_in." in k for k in state)
        configured = release.setting(f"{backbone}.num_tadapter")
        if configured is not None and int(configured) != (2 if has_in else 1):
            raise HarnessError(f"{self.request.checkpoint}: meta.config says num_tadapter={configured}, but the state "
                               f"dict {'has' if has_in else 'has no'} T_Adapter_in tensors; the file is inconsistent")
        if has_in:
            options.setdefault("num_tadapter", 2)
        for key in ("num_tadapter", "adapter_scale", "num_frames", "drop_path_rate"):
            value = release.setting(f"{backbone}.{key}")
            if value is not None:
                plan.from_config[key] = value
        scale = plan.from_config.get("adapter_scale")
        if scale is not None:
            if "adapter_scale" in options and float(options["adapter_scale"]) != float(scale):
                plan.notes.append(f"--set aim.adapter_scale={options['adapter_scale']} overrides the release's "
                                  f"meta.config adapter_scale={scale}")
            options.setdefault("adapter_scale", float(scale))
        elif "adapter_scale" not in options:
            value = aim.AIMConfig.adapter_scale
            plan.assumed["adapter_scale"] = {
                "value": value, "why": "not in the state dict, and the release carries no meta.config naming it",
                "alternatives": {str(v): where for v, where in self.SCALES.items() if v != value},
                "how": "--set aim.adapter_scale=<the value of the config the release was trained with>"}
        if plan.from_config.get("num_frames") not in (None, release_frames):
            plan.notes.append(f"meta.config num_frames={plan.from_config['num_frames']} differs from the "
                              f"temporal_embedding's T={release_frames}")

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
