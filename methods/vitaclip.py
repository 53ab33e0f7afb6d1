"""Vita-CLIP (Wasim et al., CVPR 2023): video and text prompting of a frozen CLIP
(TalalWasim/Vita-CLIP `training/VitaCLIP_{vision_encoder,vision_encoder_utils,text_encoder,model}.py`).

Vision, in every block, tokens that take part in the attention only (removed before the MLP):
- global prompts: 8 learned tokens per layer (video-level, unconditioned);
- local prompts: T learned tokens per layer, each plus `cls_proj` of one frame's CLS token, all
  T of them seen by every frame of the clip (frame-level, conditioned);
- a summary token per frame: `cls_proj(CLS)` of the T frames -> `summary_ln` -> multi-head
  attention across the T frames (own q/k/v/out projections) + residual.
A learned `time_embed` (T, D) is added to every token of frame t before `ln_pre`. Output: CLS ->
`ln_post` -> `proj`, mean over frames. Text: CoOp context of 8 learned tokens before the class
name (generic by default; class-specific, as the K400 release, with `csc=true`).

Trainable, official rule (names containing summary / local / global / time_embed, plus the text
context and `logit_scale`): 28,524,545 at ViT-B/16, 8 frames, generic context; 30,158,849 with
CSC over 400 classes. `cls_proj` matches no trainable name and stays frozen at its random init
as released; `train_cls_proj=true` adds 7,087,104.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.blocks import AdaptedBlock, BlockContext, multihead_attention
from methods.layout import JOINT
from methods.prompting import LearnedContext
from methods.registry import register_method


@dataclass
class VitaCLIPConfig(MethodConfig):
    prompt: str = option("a photo of a {}.", "unused: the text prompt is learned ('X X ... X {}.')")
    lr: float = option(4e-4, "AdamW lr (Vita-CLIP train.py)")
    weight_decay: float = option(0.05, "AdamW weight decay (Vita-CLIP train.py)")
    text_ctx: int = option(8, "learned text context tokens before the class name (K400 release: 8)")
    csc: bool = option(False, "class-specific text context (K400 release); cannot score unseen classes")
    global_prompts: int = option(8, "global (video-level) prompt tokens per layer; 0 disables them")
    local_prompts: bool = option(True, "frame-level local prompts conditioned on cls_proj(CLS)")
    summary_token: bool = option(True, "summary token: attention across the frames' projected CLS tokens")
    train_cls_proj: bool = option(False, "also train cls_proj (frozen at random init as released)")
    patch_bias: bool = option(False, "frozen bias added to the patch embeddings (the official patch embedding "
                              "is a Conv2d with a bias CLIP's conv1 lacks); filled by `harness convert`, zero otherwise")

    def validate(self) -> None:
        if self.text_ctx < 1:
            raise HarnessError(f"vitaclip.text_ctx must be >= 1, got {self.text_ctx}")
        if self.global_prompts < 0:
            raise HarnessError(f"vitaclip.global_prompts must be >= 0, got {self.global_prompts}")


def xavier_prompts(shape: tuple[int, ...], patch_size: int, width: int) -> nn.Parameter:
    """Uniform(+-sqrt(6 / (3 * patch^2 + D))): Vita-CLIP's (VPT's) "xavier" prompt init, with the
    fan-in of a flattened RGB patch."""
    bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + width))
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def resize_over_frames(embed: torch.Tensor, frames: int) -> torch.Tensor:
    """(T0, D) -> (frames, D) by nearest-neighbour interpolation, Vita-CLIP's rule for `time_embed`
    when a clip has a different number of frames than the model was built for."""
    if embed.shape[0] == frames:
        return embed
    return F.interpolate(embed.t().unsqueeze(0), size=frames, mode="nearest").squeeze(0).t()


def tile_over_frames(prompts: torch.Tensor, frames: int) -> torch.Tensor:
    """(T0, D) -> (frames, D) for the local prompts: tiled when `frames` is a multiple of T0 (the
    official `repeat`), nearest-neighbour otherwise (where the official code would fail)."""
    t0 = prompts.shape[0]
    if frames == t0:
        return prompts
    if frames % t0 == 0:
        return prompts.repeat(frames // t0, 1)
    return resize_over_frames(prompts, frames)


class FrameAttention(nn.Module):
    """Multi-head self-attention across the T frame tokens of each clip, with its own q/k/v/out
    projections (Vita-CLIP's `Attention`: xavier-uniform weights, zero biases)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, D/H)."""
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


class VitaBlock(AdaptedBlock):
    """A visual block with Vita-CLIP's global prompts, local prompts and summary token.

    The extra tokens only serve as keys/values of the frozen attention: queries are the block's
    own tokens (CLS + patches), which is exactly the official block followed by the removal of
    the extra tokens (attention is per query, the MLP per token), without computing outputs that
    are thrown away. With the context's adapters off, or no extra tokens configured, the block
    is plain CLIP.
    """

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, config: VitaCLIPConfig,
                 num_frames: int, patch_size: int) -> None:
        super().__init__(block, ctx, layer_index, "visual")
        width = self.width
        if config.global_prompts:
            self.global_prompts = xavier_prompts((config.global_prompts, width), patch_size, width)
        if config.local_prompts or config.summary_token:
            self.cls_proj = nn.Linear(width, width)
        if config.summary_token:
            self.summary_ln = type(self.ln_1)(width)
            self.summary_attn_layer = FrameAttention(width, self.attn.num_heads)
        if config.local_prompts:
            self.local_prompts = xavier_prompts((1, num_frames, width), patch_size, width)

    def extra_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The prompt / summary tokens (B*T, K, D) this block attends to besides its own tokens."""
        n, width = x.shape[0], x.shape[2]
        t = self.num_frames
        b = n // t
        extra = []
        if hasattr(self, "global_prompts"):
            extra.append(self.global_prompts.to(x.dtype).expand(n, -1, -1))
        if not hasattr(self, "cls_proj"):
            return extra
        cls = self.cls_proj(x[:, 0].view(b, t, width))  # (B, T, D), from the un-normalised stream
        if hasattr(self, "local_prompts"):
            local = tile_over_frames(self.local_prompts[0], t).to(x.dtype) + cls  # (B, T, D)
            extra.append(local.unsqueeze(1).expand(b, t, t, width).reshape(n, t, width))
        if hasattr(self, "summary_ln"):
            summary = cls + self.summary_attn_layer(self.summary_ln(cls))
            extra.append(summary.reshape(n, 1, width))
        return extra

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        extra = self.extra_tokens(x)
        if not extra:
            return self.plain_forward(x, attn_mask)
        queries = self.ln_1(x)
        keys = torch.cat([queries, self.ln_1(torch.cat([e.to(x.dtype) for e in extra], dim=1))], dim=1)
        x = x + self.ls_1(multihead_attention(self.attn, queries, kv=keys))
        return x + self.mlp_branch(x)


@register_method("vitaclip", VitaCLIPConfig, "global/local/summary video prompts + learned text context")
class VitaCLIP(VideoTextModel):
    text_is_frozen = False
    models_frame_order = True  # per-frame time embedding, frame-conditioned prompts, summary attention
    layout_notes = {JOINT: "its local prompts and summary token are built from each frame's CLS token, and a "
                           "joint sequence has one CLS per clip (docs/methods/vitaclip.md)"}

    def build(self) -> None:
        config: VitaCLIPConfig = self.config
        if config.csc and not self.train_classnames:
            raise HarnessError("vitaclip.csc=true needs the training class names when the model is built")
        width = self.visual_width
        patch = self.clip.visual.conv1.kernel_size[0]
        self.time_embed = nn.Parameter(torch.empty(self.num_frames, width).normal_(std=0.02))
        if config.patch_bias:  # frozen: matches no trainable name below
            self.patch_bias = nn.Parameter(torch.zeros(width))
        self.wrap_visual(lambda block, i: VitaBlock(block, self.ctx, i, config, self.num_frames, patch))
        self.prompt_learner = LearnedContext(
            config.text_ctx, self.text_width, classnames=self.train_classnames if config.csc else None
        )

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        fragments = ["time_embed", "global_prompts", "local_prompts", "summary_", "prompt_learner.ctx",
                     "clip.logit_scale"]
        if self.config.train_cls_proj:
            fragments.append("cls_proj")
        return self.named_parameters_matching(*fragments)

    def visual_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Add `time_embed[t]` to every token of frame t (after the positional embedding), and the
        patch bias, if any, to the patch tokens (the official Conv2d's bias; addition commutes
        with the class-token concatenation and the positional embedding)."""
        if hasattr(self, "patch_bias"):
            x = torch.cat([x[:, :1], x[:, 1:] + self.patch_bias.to(x.dtype)], dim=1)
        t = self.ctx.num_frames
        embed = resize_over_frames(self.time_embed, t).to(x.dtype)
        return (x.view(-1, t, *x.shape[1:]) + embed[None, :, None, :]).flatten(0, 1)

    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        return self.prompt_learner.text_features(self, classnames)

    def prompt_texts(self, classnames: Sequence[str]) -> list[str]:
        return self.prompt_learner.texts(classnames)

    def check_protocol(self, protocol_name: str, closed_set: bool) -> None:
        if self.prompt_learner.class_specific and not closed_set:
            raise HarnessError(
                f"vitaclip with csc=true learns one text context per training class and cannot score the "
                f"unseen classes of protocol {protocol_name!r}; use csc=false (the default) there"
            )
