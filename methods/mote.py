"""MoTE: mixture of temporal experts (Zhu et al., NeurIPS 2024; ZMHH-H/MoTE @ 1d3fa01:
`modules/video_clip.py`, `modules/text_prompt.py`, `train.py`, `test.py`, `test_zeroshot.py`).

CLIP's image tower (fine-tuned) gives one feature per frame, x (B, T, E). A temporal transformer
of L pre-norm blocks (width E, text-width / 64 heads, LayerNorm eps 1e-12) whose MLPs are N
experts runs on x plus learned frame position embeddings P; its output is added to x once more,
averaged over the frames and matched (cosine x logit_scale) with frozen class text features:

    v = mean_t( s * Transformer(x + P) + x )

Training, every step (train.py L329-336, video_clip.py L86-110 and L272-281), on the same x:

* expert path: each block draws one expert from softmax([1, ..., N] / 1) (a multinomial gate
  skewed towards the last expert), which processes the whole batch -> cross-entropy;
* merged path (the weight-merging regulariser): each block averages its experts' *weights*
  with softmax([1, ..., N] / tau), tau drawn uniformly from MERGE_TEMPERATURES
  -> 0.5 x cross-entropy + 0.1 x MSE(merged-path output, x).

At evaluation each block merges its experts with softmax(`mote_fusion_weight`) (zeros, never
trained: the plain average), and s is the temporal feature modulation (video_clip.py L219-244):
s = exp(-(1 - m) / 0.05), with m the mean, over the 5 scored classes closest to the clip's mean
frame feature, of each one's best cosine with the 5 closest training classes (`spe_cls_feature`)
-- the temporal module fades out for classes unlike those it was trained on. s = 1 in training.

Text: frozen CLIP text tower; a class feature is the renormalised mean of the normalised
features of 28 prompt templates (`text_prompt_ensemble`). Trainable: the whole image tower,
`logit_scale` and the temporal module: 124,038,145 at ViT-B/16 (4 layers, 4 experts), with the
image tower at 0.07 x the temporal module's learning rate (utils/solver.py `_optimizer`).
The released test scripts evaluate 0.99 x trained + 0.01 x original image-tower weights
(`eval_visual_mix`). See docs/methods/mote.md for every choice.
"""
from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.blocks import multihead_attention
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method
from methods.sample_random import stream_key, update_generator

#: `text_prompt_ensemble` (modules/text_prompt.py L14-43): 4 openings x 7 subjects, in its order.
_OPENINGS = ("a photo", "a video", "a example", "a demonstration")
_SUBJECTS = ("", "a person ", "a person using ", "a person doing ", "a person during ",
             "a person performing ", "a person practicing ")
ENSEMBLE_TEMPLATES: tuple[str, ...] = tuple(f"{o} of {s}{{}}." for o in _OPENINGS for s in _SUBJECTS)
#: Temperatures of the merged path's expert weights (video_clip.py L50); inf = the plain average.
MERGE_TEMPERATURES: tuple[float, ...] = (-9.6, -4.8, -2.4, -1.2, -0.6, 0.6, 1.2, 2.4, 4.8, 9.6, math.inf)
TEMPLATE_CHOICES = ("ensemble", "single")
MODULATION_CHOICES = ("train_classes", "off")
EVAL_LOGITS_CHOICES = ("scaled", "cosine")


@dataclass
class MoTEConfig(MethodConfig):
    prompt: str = option("This is a video about {}", "text template used with templates=single (official "
                         "text_prompt(), which its scripts do not call)")
    lr: float = option(5e-5, "AdamW lr of the temporal module; the image tower and logit_scale train at "
                       "lr x clip_lr_ratio (official K400 config: 5e-5)")
    weight_decay: float = option(0.2, "AdamW weight decay, every trainable tensor (official K400 config)")
    clip_lr_ratio: float = option(0.07, "lr multiple of the CLIP parameters (official ViT-B/16 config 0.07; ViT-L/14 0.06)")
    train_visual: bool = option(True, "fine-tune the whole image tower (official network.fix_video=false)")
    templates: str = option("ensemble", "class text features: 'ensemble' = mean of the 28 official templates, "
                            "'single' = the `prompt` template", choices=TEMPLATE_CHOICES)
    temporal_layers: int = option(4, "blocks of the temporal transformer (official ViT-B/16: 4; ViT-L/14: 6)")
    num_experts: int = option(4, "experts per temporal block's MLP (official: 4)")
    gate_temperature: float = option(1.0, "expert path: expert i (1-based) drawn with probability "
                                     "softmax([1..N] / this)_i (official: 1.0)")
    merged_loss_weight: float = option(0.5, "weight of the merged path's cross-entropy (official: 0.5)")
    mse_weight: float = option(0.1, "weight of MSE(merged-path output, frame features) (official: 0.1)")
    modulation: str = option(
        "train_classes", "evaluation-time temporal feature modulation: 'train_classes' compares the scored "
        "classes with the job's training classes (their class features through the frozen text encoder, "
        "the official spe_cls_feature), 'off' keeps the temporal module at full weight", choices=MODULATION_CHOICES)
    modulation_topk: int = option(5, "classes of each set compared by the modulation (official: 5; fewer "
                                  "classes: all of them)")
    modulation_temperature: float = option(0.05, "modulation s = exp(-(1 - m) / this) (official: 0.05)")
    eval_visual_mix: float = option(0.99, "evaluation uses this x trained + (1 - this) x original image-tower "
                                    "and logit_scale weights (official test.py / test_zeroshot.py: 0.99); 1.0 = "
                                    "the trained weights (train.py's validation)")
    eval_logits: str = option("scaled", "evaluation logits: 'scaled' = logit_scale x cosine (the harness's view "
                              "averaging: softmax per view, mean), 'cosine' = unscaled, which makes the "
                              "harness's view averaging the official test.py one", choices=EVAL_LOGITS_CHOICES)

    def validate(self) -> None:
        positive = {"temporal_layers": self.temporal_layers, "num_experts": self.num_experts,
                    "modulation_topk": self.modulation_topk}
        for name, value in positive.items():
            if value < 1:
                raise HarnessError(f"mote.{name}={value}: must be >= 1")
        for name in ("gate_temperature", "modulation_temperature"):
            if not getattr(self, name) > 0:
                raise HarnessError(f"mote.{name}={getattr(self, name)}: must be > 0")
        for name in ("clip_lr_ratio", "merged_loss_weight", "mse_weight"):
            if getattr(self, name) < 0:
                raise HarnessError(f"mote.{name}={getattr(self, name)}: must be >= 0")
        if not 0.0 <= self.eval_visual_mix <= 1.0:
            raise HarnessError(f"mote.eval_visual_mix={self.eval_visual_mix}: must be in [0, 1]")


# -- routing and merging ---------------------------------------------------------------------
def gate_probabilities(num_experts: int, temperature: float) -> list[float]:
    """softmax([1, ..., N] / temperature): the expert path's draw probabilities (Python floats,
    so that drawing needs no tensor: it also runs under FLOP-counting fake tensors)."""
    logits = [(i + 1) / temperature for i in range(num_experts)]
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    return [w / sum(weights) for w in weights]


def merge_weights(num_experts: int, temperature: float, device: torch.device | None = None) -> torch.Tensor:
    """(N,) float32 softmax([1, ..., N] / temperature), as the official code computes it; an
    infinite temperature gives the plain average."""
    return F.softmax(torch.arange(1, num_experts + 1, dtype=torch.float, device=device) / temperature, dim=-1)


def merge_linear(layers: Sequence[nn.Linear], weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_i w_i W_i, sum_i w_i b_i): one layer whose weights are the weighted sum of the
    experts' (accumulated in expert order, as the official loop does)."""
    weight = bias = None
    for w, layer in zip(weights, layers):
        w = w.to(layer.weight.dtype)
        weight = w * layer.weight if weight is None else weight + w * layer.weight
        bias = w * layer.bias if bias is None else bias + w * layer.bias
    return weight, bias


#: Call sites of the per-update draws (methods.sample_random): the expert path's and the merged
#: path's draws of one block come from different generators.
_EXPERT_SITE, _MERGE_SITE = 0, 1


def uniform_draw(block: int, site: int) -> float:
    """A uniform [0, 1) number for one routing decision of temporal block `block`.

    In an engine training step: from the optimiser update's generator (`update_generator`), so
    every micro-batch and process of an update takes the same expert / temperature, whatever the
    split (upstream draws once per forward pass of its single-process batch). Elsewhere (tests,
    FLOP counting, `harness bench`): Python's `random`, which needs no tensor, so counting under
    fake tensors can run the training step."""
    generator = update_generator(stream_key(f"mote.video_head.block{block}"), site)
    if generator is None:
        return random.random()
    return float(torch.rand((), generator=generator))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


#: How one block's experts act in a forward pass: an expert's index (that expert alone), a
#: (N,) tensor (experts merged in weight space with these weights), or None (the evaluation
#: merge, softmax of `mote_fusion_weight`).
Route = int | torch.Tensor | None


class TemporalExperts(nn.Module):
    """A temporal block's MLP as N experts (official `MoTE`): fc_up[i] Linear(E, 4E) -> QuickGELU
    -> fc_dn[i] Linear(4E, E), and the frozen evaluation merge logits `mote_fusion_weight`."""

    def __init__(self, width: int, num_experts: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.fc_up = nn.ModuleList(nn.Linear(width, 4 * width) for _ in range(num_experts))
        self.fc_dn = nn.ModuleList(nn.Linear(4 * width, width) for _ in range(num_experts))
        self.mote_fusion_weight = nn.Parameter(torch.zeros(num_experts), requires_grad=False)

    def forward(self, x: torch.Tensor, route: Route = None) -> torch.Tensor:
        if isinstance(route, int):
            return self.fc_dn[route](quick_gelu(self.fc_up[route](x)))
        weights = F.softmax(self.mote_fusion_weight.float(), dim=-1) if route is None else route
        up_w, up_b = merge_linear(self.fc_up, weights)
        dn_w, dn_b = merge_linear(self.fc_dn, weights)
        return F.linear(quick_gelu(F.linear(x, up_w, up_b)), dn_w, dn_b)


class TemporalBlock(nn.Module):
    """The official temporal `ResidualAttentionBlock`: x + attn(ln_1 x), then + experts(ln_2 x);
    its LayerNorms have eps 1e-12 (BERT style), not CLIP's 1e-5."""

    def __init__(self, width: int, heads: int, num_experts: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-12)
        self.mlp = TemporalExperts(width, num_experts)
        self.ln_2 = nn.LayerNorm(width, eps=1e-12)

    def forward(self, x: torch.Tensor, route: Route = None) -> torch.Tensor:
        """x: (B, T, E) frame features, batch first."""
        x = x + multihead_attention(self.attn, self.ln_1(x))
        return x + self.mlp(self.ln_2(x), route)


class TemporalTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, num_experts: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(TemporalBlock(width, heads, num_experts) for _ in range(layers))


def _init_weights(module: nn.Module) -> None:
    """Official `video_header.init_weights`: Linear / Embedding weights N(0, 0.02), Linear biases 0
    (the attention's packed in-projection keeps torch's init, as upstream)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()


class MoTEHead(nn.Module):
    """The official `video_header` (sim_header Transf, interaction DP), with its state-dict names:
    `spe_cls_feature` (buffer: class features of the training classes), `frame_position_embeddings`,
    `transformer.resblocks.{i}.{attn,ln_1,mlp.fc_up.{e},mlp.fc_dn.{e},mlp.mote_fusion_weight,ln_2}`."""

    def __init__(self, width: int, heads: int, layers: int, num_experts: int, positions: int,
                 trained_classes: int) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.register_buffer("spe_cls_feature", torch.zeros(trained_classes, width))
        #: Whether `spe_cls_feature` holds features (built or loaded); zeros mean "not built yet".
        self.spe_filled = False
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.transformer = TemporalTransformer(width, layers, heads, num_experts)
        self.apply(_init_weights)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    # -- routing -----------------------------------------------------------------------------
    def sample_experts(self, gate_temperature: float) -> list[Route]:
        """One expert per block for this update, drawn from the gate's probabilities (official
        `torch.multinomial`, one draw per forward pass)."""
        cumulative = list(itertools.accumulate(gate_probabilities(self.num_experts, gate_temperature)))
        return [min(bisect.bisect_right(cumulative, uniform_draw(i, _EXPERT_SITE)), self.num_experts - 1)
                for i in range(len(self.blocks))]

    def sample_merges(self) -> list[Route]:
        """Merge weights per block for this update: softmax([1..N] / tau), tau uniform over
        MERGE_TEMPERATURES (official `torch.randint`), drawn independently for each block."""
        device = self.frame_position_embeddings.weight.device
        n = len(MERGE_TEMPERATURES)
        return [merge_weights(self.num_experts, MERGE_TEMPERATURES[min(int(uniform_draw(i, _MERGE_SITE) * n), n - 1)],
                              device) for i in range(len(self.blocks))]

    # -- forward -----------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, routes: Sequence[Route] | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, E) frame features -> (B, T, E): `scale * Transformer(x + P) + x` (official
        `agg_video_feat`); `routes` one per block (None: the evaluation merge everywhere)."""
        frames_n = frames.shape[1]
        positions = self.frame_position_embeddings.num_embeddings
        if frames_n > positions:
            raise HarnessError(f"mote: a clip of {frames_n} frames, but the temporal module has {positions} frame "
                               "position embeddings (the text context length, as upstream); sample fewer frames")
        x = frames + self.frame_position_embeddings.weight[:frames_n]
        for block, route in zip(self.blocks, routes or [None] * len(self.blocks)):
            x = block(x, route)
        x = x.to(frames.dtype)
        return x + frames if scale is None else scale.to(frames.dtype) * x + frames

    # -- the training classes' features ------------------------------------------------------
    def set_trained_class_features(self, features: torch.Tensor) -> None:
        self.spe_cls_feature = features.detach().to(self.spe_cls_feature.device, torch.float32).clone()
        self.spe_filled = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A loaded `spe_cls_feature` may have another class count (400 Kinetics classes upstream):
        the buffer takes its shape. All zeros (what a trainable-only checkpoint completes it
        with) means "not built": it is then rebuilt from the training classes when needed."""
        key = prefix + "spe_cls_feature"
        incoming = state_dict.get(key)
        if incoming is not None and incoming.shape != self.spe_cls_feature.shape:
            self.spe_cls_feature = torch.zeros(incoming.shape, device=self.spe_cls_feature.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if incoming is not None:
            self.spe_filled = incoming.device.type != "meta" and bool(incoming.count_nonzero() > 0)


def modulation_scale(frames: torch.Tensor, scored: torch.Tensor, trained: torch.Tensor, topk: int,
                     temperature: float) -> torch.Tensor:
    """The temporal feature modulation s (B, 1, 1) of official `agg_video_feat` (L219-242).

    The clip's mean frame feature ranks the scored classes and the training classes; of each set
    the top k are kept (k = min(topk, classes); upstream needs >= 5 classes); every kept scored
    class takes its best cosine with the kept training classes; m is the mean of those, and
    s = 1 / exp((1 - m) / temperature)."""
    clip = F.normalize(frames.float().mean(dim=1), dim=-1)

    def closest(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.float()
        index = (clip @ rows.t()).topk(min(topk, rows.shape[0]), dim=-1).indices  # (B, k)
        return rows[index]  # (B, k, E)

    best = torch.bmm(closest(scored), closest(trained).transpose(1, 2)).amax(dim=-1)  # (B, k)
    return torch.exp((1 - best.mean(dim=-1)) / temperature).reciprocal()[:, None, None]


# -- the official evaluation's weight mixing -------------------------------------------------
class OriginalWeights(nn.Module):
    """Copies of the pretrained weights the official evaluation mixes back in, taken when the
    model is built (before any training or checkpoint loading). Non-persistent buffers: they
    follow `.to()` and are shared by FLOP-counting copies, and no checkpoint stores them."""

    def __init__(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        super().__init__()
        self.names: list[str] = []
        for i, (name, tensor) in enumerate(named):
            self.names.append(name)
            self.register_buffer(f"w{i}", tensor.detach().clone(), persistent=False)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self._buffers[f"w{i}"]) for i, name in enumerate(self.names))


@contextmanager
def substituted_parameters(root: nn.Module, values: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, the parameters of `root` named in `values` read as those tensors (the
    modules' own parameters are untouched and restored as they were)."""
    saved = []
    try:
        for name, value in values.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = root.get_submodule(owner_name)
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = value
        yield
    finally:
        for owner, leaf, param in reversed(saved):
            owner._parameters[leaf] = param


# -- the model -------------------------------------------------------------------------------
@register_method("mote", MoTEConfig, "fine-tuned image tower + mixture-of-temporal-experts transformer, "
                 "weight-merging regulariser")
class MoTE(VideoTextModel):
    """CLIP with MoTE's temporal module on the frame features; see the module docstring."""

    models_frame_order = True  # temporal transformer with frame position embeddings
    cosine_floor_per_group = True  # official WarmupCosineAnnealingLR: a factor on each group's lr
    #: One feature per frame is what the temporal experts work on: a joint space-time backbone
    #: (one sequence, one CLS per clip) has none, so the layout is per-frame only.
    token_layouts = frozenset({PER_FRAME})
    layout_notes = {JOINT: "its temporal experts run over one CLS feature per frame (x + frame position embeddings), "
                           "and a joint sequence has one CLS token per clip (docs/methods/mote.md)"}

    config: MoTEConfig

    # -- construction ------------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.config
        width = self.clip.visual.output_dim
        heads = max(1, self.text_width // 64)  # official: text transformer width // 64
        if width % heads:
            raise HarnessError(f"mote: temporal width {width} is not divisible by {heads} heads (text width "
                               f"{self.text_width} // 64); this backbone's sizes do not fit the official rule")
        self.video_head = MoTEHead(width, heads, cfg.temporal_layers, cfg.num_experts,
                                   positions=self.clip.positional_embedding.shape[0],
                                   trained_classes=len(self.train_classnames or ()))
        self._mixing = False
        self.visual_origin = (OriginalWeights(self._mixed_parameters()) if cfg.eval_visual_mix < 1.0 else None)

    def _mixed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """What the official evaluation mixes: the image tower and logit_scale (its `model_state_dict`)."""
        return [(n, p) for n, p in self.named_parameters() if n.startswith("clip.visual.") or n == "clip.logit_scale"]

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        """Official: the image tower (unless fix_video), logit_scale, and every temporal-module
        parameter that has requires_grad (all but `mote_fusion_weight`)."""
        out = [(n, p) for n, p in self.named_parameters()
               if (n.startswith("clip.visual.") and self.config.train_visual) or n == "clip.logit_scale"]
        out += [(n, p) for n, p in self.named_parameters()
                if n.startswith("video_head.") and not n.endswith("mote_fusion_weight")]
        return out

    def lr_scale(self, name: str, param: nn.Parameter) -> float:
        """utils/solver.py `_optimizer` (adamw): CLIP's parameters (image tower, logit_scale) at
        lr x clip_ratio, the temporal module at lr; weight decay on every tensor of both."""
        return self.config.clip_lr_ratio if name.startswith("clip.") else 1.0

    # -- text --------------------------------------------------------------------------------
    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Renormalised mean of the normalised features of every template (official
        `text_prompt_ensemble` + train.py L209-215), one template at a time as upstream."""
        templates = ENSEMBLE_TEMPLATES if self.config.templates == "ensemble" else (self.config.prompt,)
        feats = torch.stack([self.encode_text([t.format(c) for c in classnames]) for t in templates])
        return F.normalize(feats.mean(dim=0), dim=-1)

    def trained_class_features(self) -> torch.Tensor:
        """`spe_cls_feature`: as loaded from a checkpoint, else the class features of the training
        classes (what train.py builds it from), computed once."""
        head = self.video_head
        if not head.spe_filled:
            if not self.train_classnames:
                raise HarnessError(
                    "mote: the temporal feature modulation compares the scored classes with the training "
                    "classes, and this model has neither training class names nor a loaded spe_cls_feature; "
                    "build it with the training classes, load a checkpoint that has them, or --set mote.modulation=off")
            head.set_trained_class_features(self.text_features(self.train_classnames))
        return head.spe_cls_feature

    # -- video -------------------------------------------------------------------------------
    def clip_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, E) per-frame CLIP features (the official `VideoCLIP.encode_image`),
        with the evaluation's weight mixing in eval mode."""
        with self.evaluation_weights():
            return self.frame_features(self.visual_tower(video)).view(video.shape[0], video.shape[1], -1)

    def encode_video(self, video: torch.Tensor, normalize: bool = True,
                     class_features: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, E). Training: a sampled expert per block; evaluation: the
        merged experts and, given the scored classes' features, the temporal feature modulation."""
        frames = self.clip_frames(video)
        routes = self.video_head.sample_experts(self.config.gate_temperature) if self.training else None
        feats = self.video_head(frames, routes, self.modulation(frames, class_features)).mean(dim=1)
        return F.normalize(feats, dim=-1) if normalize else feats

    def modulation(self, frames: torch.Tensor, class_features: torch.Tensor | None) -> torch.Tensor | None:
        if self.training or class_features is None or self.config.modulation == "off":
            return None
        cfg = self.config
        return modulation_scale(frames, class_features, self.trained_class_features(), cfg.modulation_topk,
                                cfg.modulation_temperature)

    # -- scoring -----------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        text = self.text_features(classnames)
        with self.evaluation_weights():
            feats = self.encode_video(video, class_features=text)
            cosine = feats @ text.t().to(feats.dtype)
            if not self.training and self.config.eval_logits == "cosine":
                return cosine
            return self.clip.logit_scale.exp() * cosine

    def training_losses(self, video: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], *,
                        batch_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """train.py L332-336 on one batch: the expert path's cross-entropy, the merged path's
        (x merged_loss_weight) and MSE(merged-path output, frame features) (x mse_weight), both
        paths on the same frame features."""
        cfg, head = self.config, self.video_head
        text = self.text_features(classnames).float()
        frames = self.clip_frames(video)
        expert_out = head(frames, head.sample_experts(cfg.gate_temperature))
        merged_out = head(frames, head.sample_merges())
        scale = self.clip.logit_scale.exp()

        def cross_entropy(out: torch.Tensor) -> torch.Tensor:
            logits = scale * F.normalize(out.float().mean(dim=1), dim=-1) @ text.t()
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

        return {"loss_cls": cross_entropy(expert_out),
                "loss_merged": cfg.merged_loss_weight * cross_entropy(merged_out),
                "loss_mse": cfg.mse_weight * F.mse_loss(merged_out.float(), frames.float())}

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """In eval mode with eval_visual_mix < 1, the image tower and logit_scale read as
        mix x trained + (1 - mix) x original (test.py / test_zeroshot.py L171-184), computed from
        the current parameters (differentiable) and undone on exit; a no-op otherwise."""
        if self.training or self.visual_origin is None or self._mixing:
            yield
            return
        mix = self.config.eval_visual_mix
        mixed = {name: mix * self.get_parameter(name) + (1 - mix) * original.to(self.get_parameter(name).dtype)
                 for name, original in self.visual_origin.items()}
        self._mixing = True
        try:
            with substituted_parameters(self, mixed):
                yield
        finally:
            self._mixing = False
