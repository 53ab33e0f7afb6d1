"""Small layers shared by the adapter methods: stochastic depth, dropout drawn per sample, a
temporal depthwise convolution over frames, and learned per-frame embeddings for clips of
another length.

Why a module of its own: ST-Adapter and AIM (and possibly later methods) need the same two
operations, and both have a subtle choice (what a "sample" is for drop path; how to run a
kernel-(k, 1, 1) depthwise 3D convolution quickly) that should be made in exactly one place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.sample_random import SampleRandomLayer, per_sample_uniform

#: Implementations of the temporal depthwise convolution; all compute the same function.
TEMPORAL_CONV_IMPLS = ("conv1d", "shift", "conv3d")
#: What a method with a learned (1, T, D) per-frame embedding does with a clip of other than T
#: frames (its `frames_mismatch` option).
FRAMES_MISMATCH_CHOICES = ("error", "interpolate")


def drop_path(x: torch.Tensor, rate: float, training: bool, stream: int = 0, site: int = 0) -> torch.Tensor:
    """Stochastic depth: zero the whole branch output of a random subset of samples (dim 0) and
    rescale the survivors by 1 / (1 - rate), so the expected output is unchanged. Which samples
    drop is drawn per sample (`methods.sample_random`: the same whatever the micro-batch)."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    draws = per_sample_uniform(x.shape[0], (), stream, site, device=x.device)
    mask = (draws < keep).to(x.dtype).div_(keep)
    return x * mask.view((x.shape[0],) + (1,) * (x.dim() - 1))


class DropPath(SampleRandomLayer):
    """`drop_path` as a module. Dim 0 is the sample: callers that hold (B*T, L, D) frame tokens
    view them as (B, T, L, D) first, so that a whole clip keeps or drops the branch. A module
    used at two places of one forward passes a different `site` to each (independent masks)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor, site: int = 0) -> torch.Tensor:
        if self.rate <= 0.0 or not self.training:
            return x
        return drop_path(x, self.rate, self.training, self.stream_or_fail(), site)

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


def interpolate_frames(embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """(1, T0, D) per-frame embedding -> (1, frames, D) by linear interpolation over time
    (`frames_mismatch=interpolate`; also used to convert a release trained with another T)."""
    emb = F.interpolate(embedding.transpose(1, 2), size=frames, mode="linear", align_corners=False)
    return emb.transpose(1, 2)


def per_frame_embedding(embedding: torch.Tensor, frames: int, policy: str, method: str, what: str) -> torch.Tensor:
    """A learned (1, T0, D) per-frame embedding for a clip of `frames` frames: itself when
    T0 == frames, its linear interpolation under policy "interpolate", else a HarnessError that
    says what to do (`method`'s `frames_mismatch` option)."""
    built = embedding.shape[1]
    if frames == built:
        return embedding
    if policy != "interpolate":
        raise HarnessError(
            f"{method} was built for {built} frames (its {what} has one row per frame) but got a video of "
            f"{frames} frames; sample {built} frames, rebuild with the new count, or "
            f"--set {method}.frames_mismatch=interpolate"
        )
    return interpolate_frames(embedding, frames)


class SampleDropout(SampleRandomLayer):
    """`nn.Dropout` with each sample's mask (dim 0) drawn from its own stream, so a sample's mask
    does not depend on the micro-batch it is in (`methods.sample_random`)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        draws = per_sample_uniform(x.shape[0], x.shape[1:], self.stream_or_fail(), device=x.device)
        return x * (draws < keep).to(x.dtype).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Per-block rates rising linearly from 0 to `max_rate` (timm / AIM convention)."""
    return [max_rate * i / max(depth - 1, 1) for i in range(depth)]  # = torch.linspace, in Python


class TemporalDepthwiseConv(nn.Module):
    """Depthwise convolution over time with a (k, 1, 1) kernel, on channel-last frame tokens.

    Parameters have the shapes of `nn.Conv3d(C, C, (k, 1, 1), padding=(k // 2, 0, 0), groups=C)`
    (weight (C, 1, k, 1, 1), bias (C,)), so official ST-Adapter checkpoints load unchanged, but
    the input is (B, T, N, C) tokens rather than a (B, C, T, H, W) volume: with spatial kernel 1
    the H x W grid plays no role, and cuDNN's depthwise 3D kernels are slow (the official code
    switches cuDNN off around them). `impl` picks the computation, all mathematically equal:

    - ``conv1d``: one grouped `F.conv1d` over T on a (B*N, C, T) view (default; counted by
      `FlopCounterMode` exactly like the official Conv3d);
    - ``shift``: k shifted multiply-adds on the zero-padded channel-last tensor (no transposes,
      but elementwise, so FLOP counters do not see the ~0.04 GFLOPs of the conv);
    - ``conv3d``: `F.conv3d` on a (B, C, T, N, 1) view (the official formulation, as a reference).
    """

    def __init__(self, channels: int, kernel_size: int = 3, impl: str = "conv1d") -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"temporal kernel size must be odd and positive, got {kernel_size}")
        if impl not in TEMPORAL_CONV_IMPLS:
            raise ValueError(f"impl must be one of {TEMPORAL_CONV_IMPLS}, got {impl!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.impl = impl
        self.weight = nn.Parameter(torch.zeros(channels, 1, kernel_size, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, N, C) -> (B, T, N, C), zero padding at both ends of the clip."""
        if self.impl == "conv1d":
            return self._conv1d(x)
        if self.impl == "shift":
            return self._shift(x)
        return self._conv3d(x)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.view(self.channels, self.kernel_size).to(x.dtype)
        pad = self.kernel_size // 2
        frames = x.shape[1]
        padded = F.pad(x, (0, 0, 0, 0, pad, pad)) if pad else x  # zeros before/after the clip
        out = self.bias.to(x.dtype) + padded[:, 0:frames] * weight[:, 0]
        for j in range(1, self.kernel_size):  # out[t] = b + sum_j w[j] * x[t + j - pad]
            out = out + padded[:, j:j + frames] * weight[:, j]
        return out

    def _conv1d(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(b * n, c, t)
        weight = self.weight.view(c, 1, self.kernel_size).to(x.dtype)
        out = F.conv1d(seq, weight, self.bias.to(x.dtype), padding=self.kernel_size // 2, groups=c)
        return out.view(b, n, c, t).permute(0, 3, 1, 2)

    def _conv3d(self, x: torch.Tensor) -> torch.Tensor:
        vol = x.permute(0, 3, 1, 2).unsqueeze(-1)  # (B, C, T, N, 1)
        out = F.conv3d(vol, self.weight.to(x.dtype), self.bias.to(x.dtype),
                       padding=(self.kernel_size // 2, 0, 0), groups=self.channels)
        return out.squeeze(-1).permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size=({self.kernel_size}, 1, 1), impl={self.impl!r}"
