"""AIM: Adapt Image Models (Yang et al., ICLR 2023; taoyang1122/adapt-image-models
`mmaction/models/backbones/vit_clip.py`, `ViT_CLIP` + `ResidualAttentionBlock`).

Every visual block gets three bottleneck adapters (Linear(D->D/4) -> GELU -> Linear(D/4->D),
fc2 zero-initialised) and runs, in the official order and residual forms:

1. temporal: the block's frozen attention re-used along time, tokens regrouped
   (B*T, N, D) -> (B*N, T, D), CLS included, after `ln_1`:
   ``x = x + drop_path(T_Adapter(attn(ln_1(x_t))))`` (T_Adapter without skip);
   With `num_tadapter=2` (official B/16 SSv2 config) a skip adapter runs before that attention:
   ``T_Adapter(attn(T_Adapter_in(ln_1(x_t))))``.
2. spatial: ``x = x + S_Adapter(attn(ln_1(x)))`` (S_Adapter with skip: `a + fc2(gelu(fc1 a))`);
3. joint: ``x = x + mlp(ln_2 x) + drop_path(0.5 * MLP_Adapter(ln_2 x))`` (no skip).

A learnable temporal embedding (1, T, D), zero-initialised, is added to every token of frame t
after the positional embedding and before `ln_pre`. Trainable by the official rule (names with
`temporal_embedding`, `ln_post`, `Adapter`, `cls_head`): 10,659,072 at ViT-B/16, T=8
(text matching); 10,966,672 with the linear head over 400 classes.

Joint space-time backbones (ViCLIP), joint form "time series": the temporal branch runs the
frozen attention over each spatial position's patch tokens along time (`BlockContext.time_series`;
the clip's one CLS token is a series of length one, so it attends to itself); the spatial branch is
the block's own attention, which on ViCLIP is joint over space and time; the temporal embedding
goes on the patch tokens of frame t (the clip's CLS has no frame). Same trainable count
(docs/methods/aim.md).

State-dict names: `backbone.transformer.resblocks.{i}.{T,S,MLP}_Adapter.D_fc{1,2}.*` ->
`clip.visual.transformer.resblocks.{i}.{T,S,MLP}_Adapter.D_fc{1,2}.*`;
`backbone.temporal_embedding` -> `temporal_embedding`; `backbone.ln_post.*` ->
`clip.visual.ln_post.*`; `cls_head.fc_cls.*` -> `cls_head.fc.*`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.blocks import AdaptedBlock, BlockContext
from methods.heads import LinearHeadMixin, head_dropout_option, head_option
from methods.layers import (
    FRAMES_MISMATCH_CHOICES,
    DropPath,
    drop_path_rates,
    interpolate_frames,  # noqa: F401  (re-exported: harness/convert/adapters.py)
    per_frame_embedding,
)
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method

#: Official `paramwise_cfg.custom_keys` with decay_mult 0 (configs/recognition/vit/vitclip_base_k400.py
#: L97-102): a parameter whose name contains one of these is not decayed.
NO_DECAY_KEYS = ("class_embedding", "positional_embedding", "ln_1", "ln_2", "ln_pre", "ln_post")


def official_key(name: str) -> str | None:
    """This model's parameter name -> the official mmaction checkpoint's key (None: no
    counterpart, e.g. the text tower or `proj`, which the official backbone drops)."""
    if name == "temporal_embedding":
        return "backbone.temporal_embedding"
    if name.startswith("cls_head.fc."):
        return "cls_head.fc_cls." + name[len("cls_head.fc."):]
    if name.startswith("clip.visual.") and name != "clip.visual.proj":
        return "backbone." + name[len("clip.visual."):]
    return None


@dataclass
class AIMConfig(MethodConfig):
    mlp_ratio: float = option(0.25, "adapter bottleneck = int(width * mlp_ratio): 192 at ViT-B/16 (official)")
    adapter_scale: float = option(0.5, "scale of the MLP-adapter branch (official K400 config: 0.5; SSv2: 1.0)")
    num_tadapter: int = option(1, "temporal adapters per block: 1 (official K400 configs), or 2 (official B/16 "
                               "SSv2 config): a skip adapter `T_Adapter_in` also runs before the temporal attention",
                               choices=(1, 2))
    drop_path_rate: float = option(0.2, "drop path on the temporal and MLP-adapter branches, rising "
                                   "linearly from 0 in the first block to this in the last (official: 0.2)")
    frames_mismatch: str = option(
        "error", "a video with T frames other than the T the model was built for: 'error', or "
        "'interpolate' the learned temporal embedding linearly to T", choices=FRAMES_MISMATCH_CHOICES)
    head: str = head_option()
    head_dropout: float = head_dropout_option()
    lr: float = option(3e-4, "AdamW lr (official K400 config)")
    weight_decay: float = option(0.05, "AdamW weight decay (official; embeddings and LayerNorms exempt, see NO_DECAY_KEYS)")

    def validate(self) -> None:
        if self.mlp_ratio <= 0:
            raise HarnessError(f"--set aim.mlp_ratio={self.mlp_ratio}: must be > 0")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise HarnessError(f"--set aim.drop_path_rate={self.drop_path_rate}: must be in [0, 1)")


class AIMAdapter(nn.Module):
    """D_fc1 -> GELU -> D_fc2 (+ input if `skip_connect`). Official init: trunc_normal(0.02)
    weights and zero biases, then D_fc2 zeroed, so the branch starts as 0 (or identity with skip)."""

    def __init__(self, width: int, hidden: int, skip_connect: bool = True) -> None:
        super().__init__()
        self.skip_connect = skip_connect
        self.act = nn.GELU()
        self.D_fc1 = nn.Linear(width, hidden)
        self.D_fc2 = nn.Linear(hidden, width)
        for fc in (self.D_fc1, self.D_fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)
        nn.init.zeros_(self.D_fc2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.D_fc2(self.act(self.D_fc1(x)))
        return x + out if self.skip_connect else out

    def extra_repr(self) -> str:
        return f"skip_connect={self.skip_connect}"


class AIMBlock(AdaptedBlock):
    """CLIP block with AIM's temporal, spatial and joint adaptation."""

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, hidden: int,
                 scale: float, drop_path: float, num_tadapter: int = 1) -> None:
        super().__init__(block, ctx, layer_index, "visual")
        self.MLP_Adapter = AIMAdapter(self.width, hidden, skip_connect=False)
        self.S_Adapter = AIMAdapter(self.width, hidden, skip_connect=True)
        self.T_Adapter = AIMAdapter(self.width, hidden, skip_connect=False)
        # official num_tadapter=2: T_Adapter(attn(T_Adapter_in(ln_1(x_t)))), T_Adapter_in with skip
        self.T_Adapter_in = AIMAdapter(self.width, hidden, skip_connect=True) if num_tadapter == 2 else None
        self.scale = scale
        self.drop_path = DropPath(drop_path)

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_clip_path(self.temporal_branch(x), site=0)
        x = x + self.S_Adapter(self.attention(self.ln_1(x), attn_mask))
        xn = self.ln_2(x)
        return x + self.ls_2(self.mlp(xn)) + self.drop_clip_path(self.scale * self.MLP_Adapter(xn), site=1)

    def temporal_branch(self, x: torch.Tensor) -> torch.Tensor:
        """T_Adapter(attn(ln_1(.))) with each token position attending over the T frames."""
        series = []
        for seq in self.ctx.time_series(x):  # per frame: every position; joint: the CLS, then each patch position
            seq = self.ln_1(seq)
            if self.T_Adapter_in is not None:
                seq = self.T_Adapter_in(seq)
            series.append(self.T_Adapter(self.attention(seq)))
        return self.ctx.from_time_series(series, x)

    def drop_clip_path(self, delta: torch.Tensor, site: int) -> torch.Tensor:
        """Drop path with the clip as the sample: all frames of a clip keep or drop the branch.
        One module serves both branches (official); `site` gives each its own draw per clip."""
        if self.drop_path.rate <= 0.0 or not self.training:
            return delta
        return self.ctx.from_per_clip(self.drop_path(self.ctx.per_clip(delta), site=site))


@register_method("aim", AIMConfig, "temporal/spatial/joint adapters re-using frozen attention over time")
class AIM(LinearHeadMixin, VideoTextModel):
    """Frozen CLIP with AIM adapters and a temporal embedding; text matching or the linear head."""

    head_init_std = 0.01  # official: mmaction I3DHead, normal_init(fc_cls, std=0.01)
    models_frame_order = True  # temporal attention over frames + temporal embedding
    token_layouts = frozenset({PER_FRAME, JOINT})  # joint: temporal attention per spatial position

    def build(self) -> None:
        cfg = self.config
        self.temporal_embedding = nn.Parameter(torch.zeros(1, self.num_frames, self.visual_width))
        hidden = int(self.visual_width * cfg.mlp_ratio)
        rates = drop_path_rates(cfg.drop_path_rate, self.visual_depth)
        self.wrap_visual(lambda block, i: AIMBlock(block, self.ctx, i, hidden, cfg.adapter_scale, rates[i],
                                                   cfg.num_tadapter))
        self.build_head()

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        # Official rule (ViT_CLIP.init_weights): substring match on these names.
        return self.named_parameters_matching("temporal_embedding", "ln_post", "Adapter", "cls_head")

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        return any(key in name for key in NO_DECAY_KEYS)

    def temporal_embedding_for(self, frames: int) -> torch.Tensor:
        """(1, frames, D): the learned embedding, or its linear interpolation when allowed."""
        return per_frame_embedding(self.temporal_embedding, frames, self.config.frames_mismatch, "aim",
                                   "temporal embedding")

    def visual_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Add the temporal embedding of frame t to every token of frame t (before ln_pre; joint:
        to the patch tokens of frame t)."""
        if not self.ctx.adapters_enabled:
            return x
        frames = self.ctx.num_frames
        emb = self.temporal_embedding_for(frames).to(x.dtype)
        return self.layout.add_frame_embedding(x, emb, frames)

    def head_features(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Official order: `ln_post` (trainable) on each frame's CLS, then mean over frames (joint:
        `ln_post` on the clip's CLS)."""
        return self.layout.pool_frames(self.clip.visual.ln_post(x[:, 0]), batch, frames)
