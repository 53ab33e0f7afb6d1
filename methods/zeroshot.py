"""Frozen zero-shot CLIP: the reference row. Nothing is trained; frame features are averaged
and matched against "a photo of a {}." prompts."""
from __future__ import annotations

from dataclasses import dataclass

from methods.base import MethodConfig, VideoTextModel, option
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method


@dataclass
class ZeroShotConfig(MethodConfig):
    lr: float = option(0.0, "unused: nothing is trained")
    weight_decay: float = option(0.0, "unused: nothing is trained")


@register_method("zeroshot", ZeroShotConfig, "frozen CLIP, mean-pooled frames (0 trainable parameters)")
class ZeroShotCLIP(VideoTextModel):
    """The default hooks are exactly frozen CLIP (or ViCLIP: its CLS feature of the clip)."""

    token_layouts = frozenset({PER_FRAME, JOINT})
    allows_token_mask = True  # nothing is trained: masking never applies
