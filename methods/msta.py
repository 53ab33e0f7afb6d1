"""MSTA, the Multi-modal Spatio-Temporal Adapter (Chen et al., "Efficient Transfer Learning for
Video-language Foundation Models"), made exact from its training logs and its ancestor MMA
(Yang et al., CVPR 2024; ZjjConan/Multi-Modal-Adapter `clip/model.py`, `trainers/mmadapter.py`).

In every block l in [start, end] of both encoders a bottleneck branch reads `ln_1(x)` of the block
input and is added, scaled by lambda, after the MLP:

    x' = x + attn(ln_1 x);   out = x' + mlp(ln_2 x') + lambda * A(ln_1 x)
    A_text(h)  = up_t(ReLU(shared(ReLU(down_t(h)))))          shared = Linear(d, d) + ReLU,
    A_video(h) = u + DWConv_T(u),  u = up_v(ReLU(shared(ReLU(down_v(h)))))   one per layer

The shared Linear is one module per layer used by both towers, so gradients of both modalities
meet in it (MMA's cross-modal alignment). As in MMA, the gradient entering the branch input is
multiplied by lambda and the one leaving its output by 1/lambda: the backbone sees the true
gradient of `lambda * A`, while the adapter weights get the gradient of the un-scaled `A`
(200x larger at lambda=0.005). AdamW is (up to eps) invariant to that constant factor; SGD and
gradient clipping by global norm are not, hence `allows_grad_clip = False`.

Loss: cross-entropy plus alpha * L_CC, where L_CC pulls each trainable class embedding ("a video of
{cls}") towards the mean *frozen* embedding (same text weights, adapters bypassed) of N spatial and
N temporal LLM descriptions of the class: L_CC = mean_c [2 - cos(w_c, D_s) - cos(w_c, D_t)].

Trainable at ViT-B/16: 8,712,192 (d=256, layers 1-12) and 1,744,000 (d=128, layers 8-12); the
same on ViCLIP-B/16, the paper's backbone (same widths and depths).

Joint space-time backbones (ViCLIP), joint form "time series": the temporal conv runs over each
spatial position's patch tokens along time (`TokenLayout.time_series`); the clip's one CLS token
is a series of length one (only the conv's centre tap and bias act on it). `temporal_tokens`
picks the same token kinds (docs/methods/msta.md).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.blocks import AdaptedBlock, BlockContext, layer_range
from methods.layout import JOINT, LAYOUTS, PER_FRAME, TokenLayout
from methods.registry import register_method

TEMPORAL_TOKENS = ("all", "cls", "patch")
TEMPORAL_INITS = ("zero", "identity-center", "kaiming", "pytorch")

#: Frozen-branch texts encoded per forward pass when building description anchors (bounds memory
#: for 400 classes x 2N sentences).
_ANCHOR_CHUNK = 256


@dataclass
class MSTAConfig(MethodConfig):
    prompt: str = option("a video of {}", "text template of the trainable branch (MSTA: 'a video of {cls}')")
    lr: float = option(1e-3, "AdamW lr (MSTA training logs)")
    weight_decay: float = option(0.001, "AdamW weight decay (MSTA training logs)")
    rank: int = option(256, "adapter bottleneck width d (paper: 256 -> 8.7M; logs: 128 with start=8)")
    start: int = option(1, "first adapted block, 1-based, in both encoders")
    end: int | None = option(None, "last adapted block, 1-based inclusive; None = the last block")
    scale: float = option(0.005, "lambda: branch output scale (gradients rescaled as in MMA)")
    temporal: bool = option(True, "depthwise temporal conv over T on the video branch (off = MMA)")
    temporal_tokens: str = option("all", "tokens the temporal conv mixes: all, cls or patch",
                                  choices=TEMPORAL_TOKENS)
    temporal_init: str = option("zero", "temporal conv init: zero (starts as MMA), identity-center, "
                                "kaiming, pytorch (nn.Conv1d default)", choices=TEMPORAL_INITS)
    use_consistency: bool = option(True, "add the spatio-temporal description consistency loss")
    alpha: float = option(1.0, "weight of the consistency loss L_CC")
    n_descriptions: int = option(2, "N: spatial and temporal descriptions per class used by L_CC")

    def validate(self) -> None:
        """Reject values that would build a broken model; depth-dependent checks happen at build."""
        if self.rank < 1:
            raise HarnessError(f"msta.rank={self.rank}: must be >= 1")
        if self.start < 1:
            raise HarnessError(f"msta.start={self.start}: layers are numbered from 1")
        if self.end is not None and (isinstance(self.end, bool) or not isinstance(self.end, int)):
            raise HarnessError(f"msta.end={self.end!r}: expected an integer layer number or null (= last layer)")
        if not self.scale > 0:
            raise HarnessError(f"msta.scale={self.scale}: lambda must be > 0 (gradients are rescaled by 1/lambda)")
        if self.alpha < 0:
            raise HarnessError(f"msta.alpha={self.alpha}: must be >= 0")
        if self.n_descriptions < 1:
            raise HarnessError(f"msta.n_descriptions={self.n_descriptions}: must be >= 1")


# -- gradient rescaling ------------------------------------------------------------------------
class _GradScale(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by a constant backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` unchanged, with its gradient multiplied by `scale` (MMA's gradient scale layer)."""
    return _GradScale.apply(x, scale)


def scaled_branch(branch: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, scale: float) -> torch.Tensor:
    """`scale * branch(h)` in the forward pass; backward, the branch's own weights see the gradient
    of the un-scaled `branch(h)` while `h` still gets the true gradient (scale * 1/scale cancel)."""
    out = branch(scale_grad(h, scale))
    return scale_grad(scale * out, 1.0 / scale)


# -- adapter modules ---------------------------------------------------------------------------
class DownUp(nn.Module):
    """MMA's per-modality adapter halves: `down` = Linear(width, d) + ReLU, `up` = Linear(d, width)."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Linear(width, rank), nn.ReLU())
        self.up = nn.Linear(rank, width)


class TemporalConv(nn.Module):
    """Depthwise Conv1d over the T frames (kernel 3, zero padding 1, bias), channel-wise on the
    video branch output; `tokens` picks which token positions it mixes (the rest pass through).

    A real `nn.Conv1d` (weight (D, 1, 3), bias (D)) so the FLOP counter and state dicts see it;
    with T=1 only its centre tap acts.
    """

    def __init__(self, width: int, tokens: str = "all", init: str = "zero") -> None:
        super().__init__()
        if tokens not in TEMPORAL_TOKENS:
            raise HarnessError(f"msta.temporal_tokens={tokens!r}: must be one of {', '.join(TEMPORAL_TOKENS)}")
        self.tokens = tokens
        # skip_init: the default init would draw from the global RNG, so turning `temporal` on or
        # off would change every later adapter's random init; only 'pytorch'/'kaiming' draw.
        self.conv = torch.nn.utils.skip_init(nn.Conv1d, width, width, kernel_size=3, padding=1,
                                             groups=width, bias=True)
        init_temporal_conv(self.conv, init)

    def mix(self, u: torch.Tensor, frames: int) -> torch.Tensor:
        """DWConv over T of (B*T, L, D) tokens -> (B*T, L, D)."""
        bt, length, dim = u.shape
        z = u.reshape(bt // frames, frames, length, dim).permute(0, 2, 3, 1).reshape(-1, dim, frames)
        z = self.conv(z)
        return z.reshape(bt // frames, length, dim, frames).permute(0, 3, 1, 2).reshape(bt, length, dim)

    def over_time(self, series: torch.Tensor) -> torch.Tensor:
        """DWConv over time of (S, T, D) token sequences -> (S, T, D)."""
        return self.conv(series.transpose(1, 2)).transpose(1, 2)

    def forward(self, u: torch.Tensor, frames: int, layout: TokenLayout = LAYOUTS[PER_FRAME]) -> torch.Tensor:
        """`u + DWConv_T(u)` on the selected tokens, `u` elsewhere."""
        if layout.joint:  # the clip's CLS series (length 1) and each position's patch series
            cls, patches = layout.time_series(u, frames)
            if self.tokens in ("all", "cls"):
                cls = cls + self.over_time(cls)
            if self.tokens in ("all", "patch"):
                patches = patches + self.over_time(patches)
            return layout.from_time_series([cls, patches], u, frames)
        if self.tokens == "all":
            return u + self.mix(u, frames)
        cls, patches = u[:, :1], u[:, 1:]
        if self.tokens == "cls":
            return torch.cat([cls + self.mix(cls, frames), patches], dim=1)
        return torch.cat([cls, patches + self.mix(patches, frames)], dim=1)


def init_temporal_conv(conv: nn.Conv1d, init: str) -> None:
    """Initialise the temporal conv. MSTA does not publish this; see docs/methods/msta.md."""
    if init == "pytorch":
        conv.reset_parameters()
        return
    with torch.no_grad():
        conv.bias.zero_()
        if init == "zero":
            conv.weight.zero_()
        elif init == "identity-center":
            conv.weight.zero_()
            conv.weight[:, :, 1] = 1.0
        elif init == "kaiming":  # variance-preserving per channel: fan_in = kernel size 3
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
        else:
            raise HarnessError(f"msta.temporal_init={init!r}: must be one of {', '.join(TEMPORAL_INITS)}")


class MSTALayer(nn.Module):
    """Everything MSTA adds to one layer: text and video adapters, their shared projection, and
    the video side's temporal conv. Owned by the model (not by the blocks), so each parameter has
    one name even though the shared projection serves two towers."""

    def __init__(self, text_width: int, visual_width: int, config: MSTAConfig) -> None:
        super().__init__()
        rank = config.rank
        self.text_adapter = DownUp(text_width, rank)
        self.visual_adapter = DownUp(visual_width, rank)
        self.shared_adapter = nn.Sequential(nn.Linear(rank, rank), nn.ReLU())
        for m in self.modules():  # MMA: Kaiming-normal (fan_out, relu) weights, zero biases
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.temporal = (TemporalConv(visual_width, config.temporal_tokens, config.temporal_init)
                         if config.temporal else None)

    def text(self, h: torch.Tensor) -> torch.Tensor:
        """A_text(h) = up_t(shared(down_t(h))) (ReLUs inside down and shared)."""
        return self.text_adapter.up(self.shared_adapter(self.text_adapter.down(h)))

    def video(self, h: torch.Tensor, frames: int, layout: TokenLayout = LAYOUTS[PER_FRAME]) -> torch.Tensor:
        """A_video(h) = u + DWConv_T(u), u = up_v(shared(down_v(h)))."""
        u = self.visual_adapter.up(self.shared_adapter(self.visual_adapter.down(h)))
        return u if self.temporal is None else self.temporal(u, frames, layout)


# -- blocks ------------------------------------------------------------------------------------
class MSTABlock(AdaptedBlock):
    """CLIP block plus `lambda * A(ln_1 x)` added after the MLP; plain CLIP when the shared context
    says adapters are off (the frozen text branch of the consistency loss)."""

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, tower: str,
                 adapter: MSTALayer, scale: float) -> None:
        super().__init__(block, ctx, layer_index, tower)
        # A plain list keeps the adapter out of this block's submodules: the model owns it (one
        # parameter name), and the text and visual blocks of a layer both reach the same module.
        self._adapter = [adapter]
        self.scale = scale

    @property
    def adapter(self) -> MSTALayer:
        return self._adapter[0]

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """The un-scaled adapter output A(h) for this tower."""
        if self.tower == "visual":
            return self.adapter.video(h, self.num_frames, self.ctx.layout)
        return self.adapter.text(h)

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        # ln_1 is frozen, so scaling the gradient after it equals MMA's scaling before it (the
        # LayerNorm backward is linear in its incoming gradient), and ln_1 runs once, not twice.
        h = self.ln_1(x)
        x = x + self.attention(h, attn_mask)
        return x + self.mlp_branch(x) + scaled_branch(self.branch, h, self.scale)


# -- losses ------------------------------------------------------------------------------------
def consistency_loss(text: torch.Tensor, spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
    """L_CC = mean over classes of 2 - cos(w_c, D_s) - cos(w_c, D_t); all (C, E). Cosine makes the
    (un-normalised) means of normalised description embeddings usable as they are."""
    text, spatial, temporal = text.float(), spatial.float(), temporal.float()
    cos_s = F.cosine_similarity(text, spatial.to(text.device), dim=-1)
    cos_t = F.cosine_similarity(text, temporal.to(text.device), dim=-1)
    return (2.0 - cos_s - cos_t).mean()


# -- model -------------------------------------------------------------------------------------
@register_method("msta", MSTAConfig, "multi-modal spatio-temporal adapter + description consistency loss")
class MSTA(VideoTextModel):
    """MMA-style shared adapters in both towers, a temporal conv on the video side, and the
    spatio-temporal consistency loss against frozen-text description anchors."""

    text_is_frozen = False
    models_frame_order = True  # temporal conv on the video side
    token_layouts = frozenset({PER_FRAME, JOINT})  # joint: the conv over each position's patch series
    #: Adapter weights receive gradients 1/lambda (200x) larger than their true ones by design:
    #: clipping by global norm would distort them. The engine must not clip for this method.
    allows_grad_clip = False
    #: The consistency loss needs LLM descriptions of the training classes (`set_descriptions`).
    requires = frozenset({"descriptions"})

    config: MSTAConfig

    # -- construction ------------------------------------------------------------------------
    def build(self) -> None:
        self._descriptions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._anchors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._step_text: tuple[tuple[str, ...], torch.Tensor] | None = None
        layers = self.adapted_layers()
        self.adapters = nn.ModuleDict({
            str(i + 1): MSTALayer(self.text_width, self.visual_width, self.config) for i in layers
        })
        scale = self.config.scale
        self.wrap_visual(lambda b, i: MSTABlock(b, self.ctx, i, "visual", self.adapters[str(i + 1)], scale), layers)
        self.wrap_text(lambda b, i: MSTABlock(b, self.ctx, i, "text", self.adapters[str(i + 1)], scale), layers)

    def adapted_layers(self) -> list[int]:
        """0-based indices of the adapted blocks, the same in both towers (MMA indexes them so)."""
        depth = min(self.visual_depth, self.text_depth)
        start, end = self.config.start, self.config.end
        end = depth if end is None else end
        if not 1 <= start <= end <= depth:
            raise HarnessError(
                f"msta.start={start}, msta.end={self.config.end}: need 1 <= start <= end <= {depth} "
                f"(this backbone has {self.visual_depth} visual and {self.text_depth} text blocks; "
                "end=null means the last block)"
            )
        return layer_range(start, end, depth, option="msta.start/msta.end")

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith("adapters.")]

    # -- text features -----------------------------------------------------------------------
    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Trainable-branch class features; during a training step they are also kept for
        `extra_losses`, so the consistency loss reuses them instead of encoding twice."""
        feats = super().class_text_features(classnames)
        if self.training and torch.is_grad_enabled() and self.config.use_consistency:
            self._step_text = (tuple(classnames), feats)
        return feats

    def _take_step_text(self, classnames: Sequence[str]) -> torch.Tensor:
        """This step's class features (consumed once, so they can never go stale), or fresh ones."""
        cached, self._step_text = self._step_text, None
        if cached is not None and cached[0] == tuple(classnames):
            return cached[1]
        return super().class_text_features(classnames)

    def frozen_text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised features of `texts` by the frozen text encoder: the same modules with every
        adapter bypassed, no gradient."""
        previous = self.ctx.adapters_enabled
        self.ctx.adapters_enabled = False
        try:
            with torch.no_grad():
                chunks = [self.encode_text(texts[i:i + _ANCHOR_CHUNK]) for i in range(0, len(texts), _ANCHOR_CHUNK)]
        finally:
            self.ctx.adapters_enabled = previous
        return torch.cat(chunks)

    # -- descriptions and anchors ------------------------------------------------------------
    @classmethod
    def run_needs(cls, config: MSTAConfig) -> frozenset[str]:
        """Descriptions only feed the consistency loss: without it, nothing is needed."""
        return cls.requires if config.use_consistency else frozenset()

    @classmethod
    def descriptions_per_class(cls, config: MSTAConfig) -> int:
        return int(config.n_descriptions)

    def set_descriptions(self, classnames: Sequence[str], spatial: Sequence[Sequence[str]],
                         temporal: Sequence[Sequence[str]]) -> None:
        """Store the LLM descriptions per class name (the engine loads them). The first
        `n_descriptions` sentences of each list are used; a shorter non-empty list is used as it
        is (the loader decides whether that is acceptable and records it)."""
        if not len(classnames) == len(spatial) == len(temporal):
            raise HarnessError(
                f"msta descriptions: got {len(classnames)} classes but {len(spatial)} spatial and "
                f"{len(temporal)} temporal lists; give one list of each per class"
            )
        for name, s, t in zip(classnames, spatial, temporal):
            if isinstance(s, str) or isinstance(t, str):
                raise HarnessError(f"msta descriptions of {name!r}: expected lists of sentences, got a string")
            self._descriptions[name] = (tuple(s), tuple(t))
            self._anchors.pop(name, None)

    def check_descriptions(self, classnames: Sequence[str]) -> None:
        """Fail before training, naming the classes, when the consistency loss lacks sentences."""
        missing = [c for c in classnames if c not in self._descriptions]
        empty = [c for c in classnames if c in self._descriptions and not all(self._descriptions[c])]
        if not missing and not empty:
            return
        bad = missing or empty
        shown = ", ".join(repr(c) for c in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        what = "no descriptions" if missing else "an empty spatial or temporal description list"
        raise HarnessError(
            f"msta consistency loss: {what} for training class(es) {shown}. Provide "
            f"{self.config.n_descriptions} spatial and {self.config.n_descriptions} temporal descriptions "
            "per class (data.descriptions=etl4video|ost, or your own files), or turn the loss off "
            "with --set msta.use_consistency=false"
        )

    def description_anchors(self, classnames: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_s, D_t), each (C, E): mean of the normalised frozen embeddings of each class's
        spatial / temporal sentences. Computed once per class (no grad) and cached."""
        self.check_descriptions(classnames)
        todo = [c for c in dict.fromkeys(classnames) if c not in self._anchors]
        if todo:
            self._encode_anchors(todo)
        spatial = torch.stack([self._anchors[c][0] for c in classnames])
        temporal = torch.stack([self._anchors[c][1] for c in classnames])
        return spatial, temporal

    def _encode_anchors(self, names: Sequence[str]) -> None:
        """Encode every sentence of `names` in one frozen pass, then average per class and kind."""
        n = self.config.n_descriptions
        lists = [self._descriptions[c][k][:n] for k in (0, 1) for c in names]
        feats = self.frozen_text_features([s for sentences in lists for s in sentences])
        means = [chunk.mean(dim=0) for chunk in feats.split([len(s) for s in lists])]
        for i, name in enumerate(names):
            self._anchors[name] = (means[i], means[len(names) + i])

    # -- losses ------------------------------------------------------------------------------
    def extra_losses(self, classnames: Sequence[str]) -> dict[str, torch.Tensor]:
        """{'loss_cc': alpha * L_CC} over the training classes of this step."""
        if not self.config.use_consistency:
            return {}
        spatial, temporal = self.description_anchors(classnames)
        text = self._take_step_text(classnames)
        return {"loss_cc": self.config.alpha * consistency_loss(text, spatial, temporal)}

    # -- cache hygiene -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> MSTA:
        self._step_text = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # anchors follow .to()/.half(): recompute them lazily
        self._anchors = {}
        self._step_text = None
        return super()._apply(fn, *args, **kwargs)
