"""Visual token layouts: how a backbone's image tower lays out the tokens of a clip, and the
reshapes methods do through the layout instead of assuming one.

Why a module of its own: CLIP (open_clip) encodes each frame as an image, ViCLIP encodes one
space-time sequence per clip. Every place that turns a video into tokens, pools tokens into a
clip feature, or regroups tokens by frame, time step or spatial position must know which; with
the layout in one place, a method's temporal module is written once and runs on both, and a
method that cannot is refused before any job starts (`VideoTextModel.token_layouts`).

``per_frame`` (CLIP): every frame through the image tower on its own. Blocks see (B*T, 1 + N, D):
    the T frames of a clip contiguous, each with its own CLS token; the clip feature is the mean
    over frames of the projected CLS tokens.
``joint`` (ViCLIP, InternVideo `viclip_vision.py`): one sequence per clip through every block,
    (B, 1 + N*T, D): one CLS token, then the patch tokens in ViCLIP's order, spatial position
    major and frame minor (token ``1 + n*T + t`` is patch n of frame t; the official
    ``rearrange('(b n) t m -> b (n t) m')``). The spatial positional embedding goes on every
    token, a temporal positional embedding (1, T, D) on patch tokens only; the clip feature is
    the projected CLS token. During pretraining ViCLIP drops a random 90 % of the patch tokens;
    here that is `mask_ratio` (0 unless a run asks for it, never at evaluation).

Shapes every layout gives, so that methods regroup tokens without knowing the layout:

* `patch_grid(p, T)`: the patch tokens of a sequence batch (no CLS) as (B, T, N, C);
  `from_patch_grid` puts a grid back.
* `time_series(x, T)`: every token position's sequence over time, as a list of (S, T', D)
  tensors; `from_time_series` puts them back. Per frame: one tensor, each token position (CLS
  included) over the T frames. Joint: the clip's CLS token as sequences of length one, and
  each spatial position's patch tokens over the T frames. A temporal module applied to every
  series therefore treats a joint sequence's CLS as a clip-level token with a time axis of
  length one (a temporal conv sees only its centre tap, a temporal attention attends to itself).
* `pool_frames(f, B, T)`: one feature per sequence -> one per clip (mean over frames per frame).
* `per_clip(x, T)`: the clip as dim 0 (stochastic depth drops a whole clip's branch).
* `add_frame_embedding(x, emb, T)`: add row t of a (1, T, D) embedding to the tokens of frame t
  (per frame: every token of the frame; joint: the patch tokens of frame t, the CLS has no frame).

Per-frame results are bit-for-bit those of the code before layouts existed: each per-frame
helper is the exact tensor expression the methods used.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.sample_random import per_sample_uniform, stream_key

PER_FRAME = "per_frame"
JOINT = "joint"
#: How refusals and listings name each layout.
LAYOUT_TITLES = {PER_FRAME: "per-frame", JOINT: "joint space-time"}
#: The per-sample random stream of token masking (methods.sample_random).
MASK_STREAM = stream_key("methods.layout.mask_tokens")


def temporal_embedding_for(embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """ViCLIP's temporal positional embedding (1, T0, D) for a clip of `frames` frames.

    The official rule (InternVideo1/Pretrain/ViCLIP: `interpolate_pos_embed_vit` and
    `models/utils.py` `load_temp_embed_with_mismatch(add_zero=False)` when a checkpoint of T0
    frames is loaded into a T-frame model; `VisionTransformer.forward` for single frames):
    T == T0 as is; T == 1 the mean over the T0 rows (what the pretraining gave images);
    T < T0 the first T rows; T > T0 linear interpolation over time (align_corners=False).
    Applied at every forward, so a model built once runs clips of any length.
    """
    t0 = embedding.shape[1]
    if frames == t0:
        return embedding
    if frames == 1:
        return embedding.mean(dim=1, keepdim=True)
    if frames < t0:
        return embedding[:, :frames]
    return F.interpolate(embedding.transpose(1, 2), size=frames, mode="linear", align_corners=False).transpose(1, 2)


def mask_tokens(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """ViCLIP's random token masking (`VisionTransformer.mask_tokens`): drop int(ratio * L) of
    the L tokens of each sequence, chosen uniformly at random, keep the others in order. Each
    clip's draw is its own (`methods.sample_random`: the same whatever the micro-batch)."""
    batch, length, dim = x.shape
    dropped = int(ratio * length)
    if dropped <= 0:
        return x
    noise = per_sample_uniform(batch, (length,), MASK_STREAM, device=x.device)
    order = torch.argsort(noise, dim=-1)[:, :dropped]
    masked = torch.zeros(batch, length, dtype=torch.bool, device=x.device)
    masked.scatter_(1, order, True)
    return x[~masked].reshape(batch, length - dropped, dim)


class TokenLayout(abc.ABC):
    """How one kind of image tower lays out a clip's tokens (stateless; one instance per kind)."""

    name: ClassVar[str]
    #: Whether the patch tokens of all frames share one sequence (no CLS per frame).
    joint: ClassVar[bool]

    @property
    def title(self) -> str:
        return LAYOUT_TITLES[self.name]

    @abc.abstractmethod
    def embed(self, visual: nn.Module, video: torch.Tensor, mask_ratio: float = 0.0) -> torch.Tensor:
        """(B, T, 3, H, W) normalised frames -> the tokens the first block's `ln_pre` gets
        (positional embeddings included)."""

    @abc.abstractmethod
    def pool_frames(self, feats: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """One feature per sequence -> one per clip (B, E)."""

    @abc.abstractmethod
    def per_clip(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """A view with the clip as dim 0."""

    @abc.abstractmethod
    def from_per_clip(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `per_clip`."""

    @abc.abstractmethod
    def patch_grid(self, patches: torch.Tensor, frames: int) -> torch.Tensor:
        """Patch tokens (no CLS) of a sequence batch -> (B, T, N, C)."""

    @abc.abstractmethod
    def from_patch_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """The inverse of `patch_grid`."""

    @abc.abstractmethod
    def time_series(self, x: torch.Tensor, frames: int) -> list[torch.Tensor]:
        """Every token position's sequence over time: a list of (S, T', D) tensors."""

    @abc.abstractmethod
    def from_time_series(self, series: list[torch.Tensor], x: torch.Tensor, frames: int) -> torch.Tensor:
        """The inverse of `time_series` (`x`: the tokens they came from, for the shapes)."""

    @abc.abstractmethod
    def add_frame_embedding(self, x: torch.Tensor, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        """Add row t of `embedding` (1, T, D) to the tokens of frame t."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PerFrameLayout(TokenLayout):
    """CLIP: (B*T, 1 + N, D), frames of a clip contiguous, a CLS token per frame."""

    name = PER_FRAME
    joint = False

    def embed(self, visual: nn.Module, video: torch.Tensor, mask_ratio: float = 0.0) -> torch.Tensor:
        if mask_ratio > 0:
            raise HarnessError("token masking needs a joint space-time backbone (ViCLIP); a per-frame CLIP "
                               "keeps every token")
        return self.embed_frames(visual, video.flatten(0, 1))

    @staticmethod
    def embed_frames(visual: nn.Module, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1 + HW, D): conv1, class token, positional embedding."""
        x = visual.conv1(frames.to(visual.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        return x + visual.positional_embedding.to(x.dtype)

    def pool_frames(self, feats: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        return feats.view(batch, frames, -1).mean(dim=1)

    def per_clip(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return x.view(x.shape[0] // frames, frames, *x.shape[1:])

    def from_per_clip(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    def patch_grid(self, patches: torch.Tensor, frames: int) -> torch.Tensor:
        return patches.view(patches.shape[0] // frames, frames, *patches.shape[1:])

    def from_patch_grid(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.flatten(0, 1)

    def time_series(self, x: torch.Tensor, frames: int) -> list[torch.Tensor]:
        tokens = self.per_clip(x, frames)  # (B, T, L, D)
        b, t, n, d = tokens.shape
        return [tokens.transpose(1, 2).reshape(b * n, t, d)]

    def from_time_series(self, series: list[torch.Tensor], x: torch.Tensor, frames: int) -> torch.Tensor:
        (out,) = series
        n, d = x.shape[1], out.shape[-1]
        return out.view(-1, n, frames, d).transpose(1, 2).reshape(-1, n, d)

    def add_frame_embedding(self, x: torch.Tensor, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        return (x.view(-1, frames, *x.shape[1:]) + embedding.unsqueeze(2)).flatten(0, 1)


class JointLayout(TokenLayout):
    """ViCLIP: (B, 1 + N*T, D), one CLS, patch tokens spatial-position major, frame minor."""

    name = JOINT
    joint = True

    def embed(self, visual: nn.Module, video: torch.Tensor, mask_ratio: float = 0.0) -> torch.Tensor:
        """ViCLIP's `VisionTransformer.forward` up to `ln_pre`: Conv3d patch embedding (temporal
        kernel 1) of the (B, 3, T, H, W) clip, CLS + spatial positional embedding, the temporal
        positional embedding on patch tokens, ViCLIP's token order, optional masking."""
        batch, frames = video.shape[:2]
        x = visual.conv1(video.transpose(1, 2).to(visual.conv1.weight.dtype))  # (B, D, T, h, w)
        x = x.flatten(3).permute(0, 2, 3, 1)  # (B, T, N, D)
        pos = visual.positional_embedding.to(x.dtype)
        cls = (visual.class_embedding.to(x.dtype) + pos[0]).expand(batch, 1, -1)
        x = x + pos[1:]
        x = x + temporal_embedding_for(visual.temporal_positional_embedding, frames).to(x.dtype).unsqueeze(2)
        x = x.transpose(1, 2).reshape(batch, -1, x.shape[-1])  # (B, N*T, D), ViCLIP's (n t) order
        if mask_ratio > 0:
            x = mask_tokens(x, mask_ratio)
        return torch.cat([cls, x], dim=1)

    def pool_frames(self, feats: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        if feats.shape[0] != batch:
            raise ValueError(f"a joint layout has one sequence per clip: got {feats.shape[0]} for {batch} clips")
        return feats

    def per_clip(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return x

    def from_per_clip(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def _spatial(length: int, frames: int) -> int:
        if length % frames:
            raise HarnessError(f"a joint space-time sequence of {length} patch tokens is not a grid of {frames} "
                               "frames (masked or extra tokens): this module needs every patch of every frame")
        return length // frames

    def patch_grid(self, patches: torch.Tensor, frames: int) -> torch.Tensor:
        b, length = patches.shape[:2]
        n = self._spatial(length, frames)
        return patches.view(b, n, frames, *patches.shape[2:]).transpose(1, 2)

    def from_patch_grid(self, grid: torch.Tensor) -> torch.Tensor:
        b, t, n = grid.shape[:3]
        return grid.transpose(1, 2).reshape(b, n * t, *grid.shape[3:])

    def time_series(self, x: torch.Tensor, frames: int) -> list[torch.Tensor]:
        b, length, d = x.shape
        n = self._spatial(length - 1, frames)
        return [x[:, :1], x[:, 1:].reshape(b * n, frames, d)]  # (n t) order: each position's frames are contiguous

    def from_time_series(self, series: list[torch.Tensor], x: torch.Tensor, frames: int) -> torch.Tensor:
        cls, patches = series
        return torch.cat([cls, patches.reshape(x.shape[0], -1, patches.shape[-1])], dim=1)

    def add_frame_embedding(self, x: torch.Tensor, embedding: torch.Tensor, frames: int) -> torch.Tensor:
        grid = self.patch_grid(x[:, 1:], frames) + embedding.unsqueeze(2)
        return torch.cat([x[:, :1], self.from_patch_grid(grid)], dim=1)


LAYOUTS: dict[str, TokenLayout] = {PER_FRAME: PerFrameLayout(), JOINT: JointLayout()}


def layout_of(clip: Any) -> TokenLayout:
    """The layout of a CLIP's image tower: a tower declares `token_layout` (ViCLIP's joint tower
    does); open_clip's towers, which do not, are per frame."""
    return LAYOUTS[getattr(clip.visual, "token_layout", PER_FRAME)]


def layout_refusal(method: str, layout: str, why: str) -> str:
    """The one line refusing a method on a backbone whose layout it does not list."""
    return f"{method} does not run on a {LAYOUT_TITLES.get(layout, layout)} backbone: {why}"
