"""Joint space-time CLIPs in the style of ViCLIP (InternVideo: OpenGVLab/InternVideo @ 3965eef,
`Data/InternVid/viclip/` inference code, `InternVideo1/Pretrain/ViCLIP/` training code).

Why a module of its own: ViCLIP is a second backbone family. Its image tower encodes a clip as
one sequence (a CLS token and the T x N patch tokens through every block together), so it is
built here, next to `harness.backbone` (open_clip CLIPs), and every method meets it through
`methods.layout` (the tower declares `token_layout = "joint"`).

What it is, from the official code (`viclip_vision.py`, `viclip_text.py`, `viclip.py`):

* vision: CLIP ViT widths (B/16: 768 wide, 12 blocks, 12 heads, output 512) with a Conv3d patch
  embedding of temporal kernel 1 (`conv1.weight` [768, 3, 1, 16, 16], no bias), CLS + spatial
  positional embedding (197 x 768), a temporal positional embedding (1, T, 768) on patch tokens
  only, `ln_pre`, the blocks, `ln_post` on the CLS token, `proj`; QuickGELU; random masking of
  90 % of the patch tokens in its pretraining (never at evaluation; `schedule.token_mask`
  offers it for fine-tuning, off by default). The token arithmetic is `methods.layout.JointLayout`.
* text: CLIP's text transformer (B/16: 512 wide, 12 blocks, 8 heads, output 512), QuickGELU,
  a 32-token context (longer prompts are truncated, the last token made end-of-text).
* `temp` (1/100): logits are `v @ t / temp`; here `logit_scale = log(1 / temp)` as open_clip has it.
* input normalisation: ImageNet mean / std (the training code's `create_dataset` for `vit_*`
  encoders), not CLIP's.

The text tower and the blocks are open_clip's modules (state-dict names are open_clip's; the
official file's `vision_encoder.` / `text_encoder.` / `temp` keys are mapped on loading, see
`harness.viclip_weights`). `make_joint` turns an open_clip image
tower into a joint one the way ViCLIP-B/16 starts from OpenAI CLIP (the 2-D patch kernel as the
temporal-kernel-1 Conv3d, a zero temporal positional embedding): `harness-tiny-joint` is the
project's `harness-tiny` (and its `synthetic` weights) turned joint that way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from methods.layout import JOINT, LAYOUTS


@dataclass(frozen=True)
class JointBackbone:
    """A joint space-time backbone configuration."""

    #: open_clip model config (embed_dim, vision_cfg, text_cfg, quick_gelu) of the towers.
    clip_config: dict[str, Any]
    #: Frames the temporal positional embedding has rows for (other clip lengths: the official
    #: resize rule, `methods.layout.temporal_embedding_for`).
    frames: int
    #: Input normalisation its weights were trained with (`harness.backbone.NORMALIZATIONS`).
    normalization: str
    #: Where the configuration comes from.
    source: str
    #: The per-frame backbone whose `synthetic` weights this one is made from (None: none).
    synthetic_from: str | None = None


#: ViCLIP-B/16: `clip_joint_b16` + `clip_text_b16` with ViCLIP's `max_txt_l = 32`.
VICLIP_B16 = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}
#: harness-tiny's towers (harness/model_configs/harness-tiny.json; its text context is 32 already).
HARNESS_TINY = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}

JOINT_BACKBONES: dict[str, JointBackbone] = {
    "ViCLIP-B-16": JointBackbone(
        VICLIP_B16, frames=8, normalization="imagenet",
        source="OpenGVLab/InternVideo @ 3965eef Data/InternVid/viclip (clip_joint_b16, clip_text_b16, max_txt_l 32); "
               "weights: ViCLIP-B_InternVid-FLT-10M.pth / -200M.pth (local path)"),
    "harness-tiny-joint": JointBackbone(
        HARNESS_TINY, frames=8, normalization="openai",
        source="harness-tiny made joint as ViCLIP-B/16 starts from CLIP (Conv3d patch kernel, zero temporal "
               "embedding); its synthetic weights are harness-tiny's (CLIP normalisation)",
        synthetic_from="harness-tiny"),
}

#: ViCLIP's initial (and minimum) temperature, `temp = 1 / 100`.
INIT_TEMP = 1.0 / 100.0


class JointVisionTransformer(nn.Module):
    """ViCLIP's image tower (`viclip_vision.VisionTransformer`) from open_clip parts: one
    space-time sequence per clip. Parameter names are open_clip's (`conv1`, `class_embedding`,
    `positional_embedding`, `ln_pre`, `transformer.resblocks.*`, `ln_post`, `proj`) plus
    ViCLIP's `temporal_positional_embedding`; `forward` takes (B, T, 3, H, W) clips."""

    token_layout = JOINT

    def __init__(self, image_tower: nn.Module, frames: int) -> None:
        super().__init__()
        conv = image_tower.conv1
        width = conv.out_channels
        self.conv1 = nn.Conv3d(conv.in_channels, width, (1, *conv.kernel_size), (1, *conv.stride), bias=False,
                               device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():  # ViCLIP's `inflate_weight` with temporal kernel 1 (center=True): the 2-D kernel
            self.conv1.weight.copy_(conv.weight.unsqueeze(2))
        self.class_embedding = image_tower.class_embedding
        self.positional_embedding = image_tower.positional_embedding
        self.temporal_positional_embedding = nn.Parameter(
            torch.zeros(1, frames, width, device=conv.weight.device, dtype=conv.weight.dtype))
        self.ln_pre = image_tower.ln_pre
        self.transformer = image_tower.transformer
        self.ln_post = image_tower.ln_post
        self.proj = image_tower.proj
        self.image_size = image_tower.image_size
        self.patch_size = image_tower.patch_size
        self.grid_size = image_tower.grid_size
        self.output_dim = image_tower.output_dim

    @property
    def frames(self) -> int:
        """Rows of the temporal positional embedding (the frames the weights were trained with)."""
        return int(self.temporal_positional_embedding.shape[1])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) normalised clips -> (B, E) features (not normalised), the official
        forward with masking off (`test=True`)."""
        x = LAYOUTS[JOINT].embed(self, video)
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x[:, 0])
        return x @ self.proj if self.proj is not None else x


def make_joint(clip: nn.Module, frames: int) -> nn.Module:
    """Turn an open_clip CLIP (weights kept) into a joint space-time one, in place, the way
    ViCLIP-B/16 starts from OpenAI CLIP: its image tower becomes a `JointVisionTransformer`."""
    clip.visual = JointVisionTransformer(clip.visual, frames)
    return clip


def build_joint_clip(name: str) -> nn.Module:
    """The joint backbone `name` with random weights: open_clip's init of the towers, the 2-D
    patch kernel inflated, a zero temporal embedding, ViCLIP's initial temperature 1/100. Draws
    from the global RNG (seed before calling)."""
    import open_clip.model

    config = JOINT_BACKBONES[name]
    cfg = config.clip_config
    clip = open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                                quick_gelu=cfg["quick_gelu"], init_logit_scale=math.log(1.0 / INIT_TEMP))
    return make_joint(clip, config.frames)
