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

Layout: open_clip 3.x runs transformers batch-first, so a visual block sees (B*T, L, D) with the
frames of one clip contiguous, and a text block sees (C, L, D). Attention is computed with
`F.scaled_dot_product_attention` on the frozen `nn.MultiheadAttention` weights: fused
(flash / memory-efficient) kernels on GPU, and visible to `torch.utils.flop_counter` in every
mode (the eval fast path of `nn.MultiheadAttention` is not).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


class BlockContext:
    """State shared by all wrapped blocks of one model for the forward pass under way.

    open_clip has no notion of frames: the video encoder sets `num_frames` (T) before running
    the visual tower, and every wrapped block reads it to reshape (B*T, L, D) -> (B, T, L, D).
    `adapters_enabled` lets a method run its frozen backbone through the same modules with its
    inserted branches bypassed (MSTA's frozen text branch) without a second copy of the weights.
    """

    def __init__(self, num_frames: int = 1) -> None:
        self.num_frames = num_frames
        self.adapters_enabled = True


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
        """(B*T, L, D) -> (B, T, L, D)."""
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
        from harness.errors import HarnessError

        raise HarnessError(f"{option}: need 1 <= start <= end <= {depth}, got start={start}, end={end}")
    return list(range(start - 1, end))
