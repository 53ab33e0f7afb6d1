"""Shared block-wrapping machinery: the one place that knows how an open_clip transformer block
is laid out, how many frames a visual batch holds, and the positional call signature that
open_clip's gradient checkpointing uses.

Every method that changes what happens inside a block subclasses `AdaptedBlock` and overrides
`adapted_forward(x, attn_mask)`; `AdaptedBlock.forward` keeps open_clip's call signature and
runs the plain CLIP block instead whenever the shared context has adapters switched off.
`wrap_blocks` swaps the wrappers in. Wrappers adopt the original block's submodules
under their original attribute names, so state-dict keys of the frozen weights stay exactly the
open_clip / OpenAI names (`visual.transformer.resblocks.3.attn.in_proj_weight`, ...) and
checkpoint converters need no renaming for them.

Layout: open_clip 3.x runs transformers batch-first. A text block sees (C, L, D); a visual block
sees what the backbone's token layout (methods/layout.py) makes of a clip: (B*T, 1 + N, D) with
the frames of one clip contiguous on a per-frame CLIP, (B, 1 + N*T, D) on a joint space-time
backbone (ViCLIP). `BlockContext` carries the layout and the frame count, and its helpers
(`patch_grid`, `time_series`, `per_clip`, ...) are how a block regroups tokens by frame or over
time without assuming either. Attention is computed with
`F.scaled_dot_product_attention` on the frozen `nn.MultiheadAttention` weights: fused
(flash / memory-efficient) kernels on GPU, and visible to `torch.utils.flop_counter` in every
mode (the eval fast path of `nn.MultiheadAttention` is not).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.layout import LAYOUTS, PER_FRAME, TokenLayout


class BlockContext:
    """State shared by all wrapped blocks of one model for the forward pass under way.

    open_clip has no notion of frames: the video encoder sets `num_frames` (T) before running
    the visual tower, and every wrapped block reads it, with the backbone's token `layout`, to
    regroup its tokens (the helpers below). `tokens_masked` is set while a joint sequence lacks
    randomly masked patch tokens (ViCLIP-style masking in training), so a module that needs the
    full space-time grid says so instead of mis-reshaping. `adapters_enabled` lets a method run
    its frozen backbone through the same modules with its inserted branches bypassed (MSTA's
    frozen text branch) without a second copy of the weights.
    """

    def __init__(self, num_frames: int = 1, layout: TokenLayout = LAYOUTS[PER_FRAME]) -> None:
        self.num_frames = num_frames
        self.layout = layout
        self.adapters_enabled = True
        self.tokens_masked = False

    def _grid_ok(self) -> None:
        if self.tokens_masked:
            raise HarnessError("this module regroups the patch tokens by frame and position, but the joint sequence "
                               "is masked (schedule.token_mask > 0); run it with schedule.token_mask=0")

    # -- regrouping tokens through the layout (methods/layout.py) ----------------------------
    def patch_grid(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch tokens (no CLS) of the visual batch -> (B, T, N, C)."""
        self._grid_ok()
        return self.layout.patch_grid(patches, self.num_frames)

    def from_patch_grid(self, grid: torch.Tensor) -> torch.Tensor:
        return self.layout.from_patch_grid(grid)

    def time_series(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every token position's sequence over time (see `TokenLayout.time_series`)."""
        self._grid_ok()
        return self.layout.time_series(x, self.num_frames)

    def from_time_series(self, series: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return self.layout.from_time_series(series, x, self.num_frames)

    def per_clip(self, x: torch.Tensor) -> torch.Tensor:
        """The visual tokens with the clip as dim 0."""
        return self.layout.per_clip(x, self.num_frames)

    def from_per_clip(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout.from_per_clip(x)


def multihead_attention(
    attn: nn.MultiheadAttention,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    kv: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-attention (or attention of `x` over `kv`) with `attn`'s weights via fused SDPA.

    x: (N, L, D), kv: (N, S, D) or None. Returns (N, L, D). Numerically the same as
    `attn(x, kv, kv, need_weights=False)[0]`.
    """
    n, length, dim = x.shape
    heads = attn.num_heads
    head_dim = dim // heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    if kv is None:
        q, k, v = F.linear(x, weight, bias).view(n, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    else:
        w_q, w_kv = weight.split([dim, 2 * dim])
        b_q, b_kv = (None, None) if bias is None else bias.split([dim, 2 * dim])
        q = F.linear(x, w_q, b_q).view(n, length, heads, head_dim).transpose(1, 2)
        k, v = F.linear(kv, w_kv, b_kv).view(n, kv.shape[1], 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    if attn_mask is not None:
        attn_mask = attn_mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, dim))


class AdaptedBlock(nn.Module):
    """A CLIP residual attention block that methods specialise.

    `plain_forward` is the plain pre-norm CLIP block:
    ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`` (with open_clip's layer scales).
    `forward` runs `adapted_forward` while `ctx.adapters_enabled`, else `plain_forward`;
    subclasses override `adapted_forward` only (the default is the plain block).
    """

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, tower: str) -> None:
        super().__init__()
        for name in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"):
            setattr(self, name, getattr(block, name))
        self.ctx = ctx
        self.layer_index = layer_index
        self.tower = tower
        self.width = block.ln_1.normalized_shape[0]

    @property
    def num_frames(self) -> int:
        return self.ctx.num_frames

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frozen attention on already-normalised tokens, with the layer scale."""
        return self.ls_1(multihead_attention(self.attn, x, attn_mask))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        """`ls_2(mlp(ln_2(x)))`: the MLP residual branch on un-normalised tokens."""
        return self.ls_2(self.mlp(self.ln_2(x)))

    def forward(
        self,
        q_x: torch.Tensor,
        k_x: torch.Tensor | None = None,
        v_x: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Positional signature kept: open_clip's grad checkpointing calls blk(x, None, None, mask).
        # k_x / v_x are always None for CLIP's self-attention blocks and are ignored.
        if self.ctx.adapters_enabled:
            return self.adapted_forward(q_x, attn_mask)
        return self.plain_forward(q_x, attn_mask)

    def plain_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The frozen CLIP block, no method additions (also what runs with adapters disabled)."""
        x = x + self.attention(self.ln_1(x), attn_mask)
        return x + self.mlp_branch(x)

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The block with the method's additions; the plain block unless a subclass overrides it."""
        return self.plain_forward(x, attn_mask)

    # -- layout helpers shared by temporal methods -------------------------------------------
    def split_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, L, D) -> (B, T, L, D): per-frame tokens only. A joint space-time sequence has no
        frames to split (use `ctx.patch_grid` / `ctx.time_series`, which work in both layouts)."""
        if self.ctx.layout.joint:
            raise HarnessError(f"{type(self).__name__}.split_frames: the visual tokens are one joint space-time "
                               "sequence per clip, not one sequence per frame")
        t = self.num_frames
        return x.view(x.shape[0] // t, t, *x.shape[1:])

    @staticmethod
    def merge_frames(x: torch.Tensor) -> torch.Tensor:
        """(B, T, L, D) -> (B*T, L, D)."""
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


BlockFactory = Callable[[nn.Module, int], AdaptedBlock]


def wrap_blocks(
    transformer: nn.Module,
    factory: BlockFactory,
    layers: Iterable[int] | None = None,
) -> list[int]:
    """Replace `transformer.resblocks[i]` by `factory(original_block, i)` for i in `layers`
    (0-based; all when None). Returns the wrapped indices; fails loudly if none matched, so a
    method can never silently train nothing.
    """
    blocks = transformer.resblocks
    indices = list(range(len(blocks))) if layers is None else sorted(set(layers))
    bad = [i for i in indices if not 0 <= i < len(blocks)]
    if bad or not indices:
        raise ValueError(f"layers {bad or indices} not in 0..{len(blocks) - 1} of a {len(blocks)}-block transformer")
    for i in indices:
        original = blocks[i]
        if isinstance(original, AdaptedBlock):  # re-wrapping: start from the adopted submodules
            original = _Adopted(original)
        blocks[i] = factory(original, i)
    return indices


class _Adopted:
    """Minimal view of an AdaptedBlock's frozen submodules, so it can be wrapped again."""

    def __init__(self, block: AdaptedBlock) -> None:
        for name in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"):
            setattr(self, name, getattr(block, name))


def layer_range(start: int, end: int, depth: int, option: str = "start/end") -> list[int]:
    """1-based inclusive [start, end] (as papers number layers) -> 0-based indices, validated."""
    if not 1 <= start <= end <= depth:
        raise HarnessError(f"{option}: need 1 <= start <= end <= {depth}, got start={start}, end={end}")
    return list(range(start - 1, end))
