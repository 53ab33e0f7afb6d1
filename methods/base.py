"""The video-text model every method builds on, and the method configuration base class.

`VideoTextModel` turns an open_clip CLIP into a video classifier by text matching: the clip goes
through the image tower in the backbone's token layout (methods/layout.py: per frame for CLIP,
each frame's CLS -> ln_post -> proj and the frame features averaged; one joint space-time
sequence for ViCLIP, its CLS -> ln_post -> proj), and classes are scored by cosine similarity
with the text features of a prompt per class times `logit_scale.exp()`. Methods subclass it and
override the narrow hooks below instead of copying the encoder: `visual_tokens` (after the
positional embedding), `visual_pool`, `text_embeddings`, `class_text_features`, `extra_losses`,
and `declare_trainable`.

The method contract: everything the engine (harness/engine) knows about a method is declared on
this class, so the engine never probes a model (no hasattr/getattr, no reaching into `.clip`):

* what it needs from the run: `requires` (class-level, e.g. {"descriptions"}), narrowed per
  configuration by `run_needs(config)`; the engine then calls the matching hook
  (`set_descriptions`, with `descriptions_per_class(config)` sentences of each kind, from the
  files `description_source(config)` names): "descriptions" for the training classes,
  "scored_descriptions" for every class set the model scores (training classes, each evaluation
  list's classes, before that list is scored); `set_rephrased_classnames` once per class list the
  job scores;
* what it does before the final evaluation: `prepare_evaluation()` (e.g. OST's weight-space
  ensembling with the pretrained weights);
* which epochs' weights the evaluated model averages: `averaged_epochs(config)` (FROSTER's
  evaluation of epoch-averaged weights);
* a frozen teacher it keeps for training only: `frozen_teacher()` (counted in `parameter_counts`);
* its optimiser parameter groups: `param_groups()` / `no_weight_decay()` (official exemptions,
  per-group learning-rate multiples);
* gradient checkpointing: `set_grad_checkpointing(enable)`;
* gradient-clipping compatibility: `allows_grad_clip`; loss terms that need the whole batch in one
  forward pass: `batch_coupled_losses`;
* whether it models frame order: `models_frame_order`; whether its text path is frozen:
  `text_is_frozen`; whether it can run under a protocol: `check_protocol()`; the longest clip
  it runs on: `max_frames`;
* the backbones it runs on: `token_layouts` (refused otherwise, with `layout_notes`'s reason,
  by `check_token_layout`), and whether it trains with ViCLIP-style token masking:
  `allows_token_mask`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigurationError, HarnessError
from harness.options import option, options_help
from methods.blocks import AdaptedBlock, BlockContext, wrap_blocks
from methods.layout import LAYOUT_TITLES, PerFrameLayout, layout_of, layout_refusal

__all__ = ["DESCRIPTION_NEEDS", "EpochRange", "MethodConfig", "VideoTextModel", "option"]  # `option`: method files declare their options with it

#: Needs served by `set_descriptions`: "descriptions" = the training classes' (before training);
#: "scored_descriptions" = those of every class set the model scores (the training classes before
#: training, each evaluation list's before it is scored), for methods that score classes through
#: their descriptions (OST) rather than only regularise with them (MSTA).
DESCRIPTION_NEEDS = frozenset({"descriptions", "scored_descriptions"})


@dataclass
class MethodConfig:
    """Options every method has. Subclasses add their own; optimiser defaults come from each
    method's official recipe and are recorded in every result."""

    prompt: str = option("a photo of a {}.", "text template, {} is replaced by the class name")
    lr: float = option(1e-3, "AdamW learning rate (per the method's official recipe)")
    weight_decay: float = option(0.001, "AdamW weight decay (per the method's official recipe)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def options_help(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) for every option, in declaration order."""
        return options_help(cls)


@dataclass
class ParamGroup:
    """Trainable parameters the optimiser treats alike, with their qualified names (so tests and
    logs can check a group against the official rule without knowing a method's internals)."""

    name: str
    names: list[str]
    params: list[nn.Parameter]
    weight_decay: bool = True
    #: Multiplier of the method's `lr` for this group (official per-module learning rates, e.g.
    #: X-CLIP's 10x for its new modules, MoTE's 0.07x for CLIP); the schedule scales every group's lr alike.
    lr_scale: float = 1.0


@dataclass(frozen=True)
class EpochRange:
    """Training epochs `first`..`last`, 1-based and inclusive, as checkpoints are numbered after
    each epoch; `first=0` also takes the weights training starts from (FROSTER's averaging tool
    can include the pre-trained CLIP as "epoch 0"); `last=None` means the last trained epoch."""

    first: int
    last: int | None = None

    @classmethod
    def parse(cls, text: str, option_name: str) -> EpochRange | None:
        """'2-' (epoch 2 to the end), '2-22', '7' (epoch 7 alone) or 'none' (no averaging)."""
        spec = str(text).strip().lower()
        if spec in ("none", "off", ""):
            return None
        first, sep, last = spec.partition("-")
        try:
            start = int(first)
            end = (int(last) if last.strip() else None) if sep else start
        except ValueError:
            start, end = -1, None
        if start < 0 or (end is not None and end < max(start, 1)):
            raise HarnessError(f"{option_name}={text!r}: expected 'A-B' (epochs A to B, 1-based, inclusive; A=0 adds "
                               "the initial weights), 'A-' (A to the last epoch), 'A', or 'none'")
        return cls(start, end)

    def epochs(self, trained: int) -> list[int]:
        """The epoch numbers this range takes from a training of `trained` epochs."""
        last = trained if self.last is None else min(self.last, trained)
        return list(range(self.first, last + 1))

    def __str__(self) -> str:
        return f"{self.first}-{'' if self.last is None else self.last}"


class VideoTextModel(nn.Module):
    """CLIP as an open-vocabulary video classifier; methods specialise the hooks.

    Construction wraps every block of both towers in `AdaptedBlock` (fused attention, frame
    awareness), lets the subclass insert its modules (`build`), then freezes everything except
    what `declare_trainable` returns.
    """

    method_name: ClassVar[str] = "base"
    #: True when no parameter of the text path is trained, so class text features can be
    #: computed once per class set (also while training) instead of once per step.
    text_is_frozen: ClassVar[bool] = True
    #: Label smoothing of the training cross-entropy (the engine sets it from
    #: `schedule.label_smoothing`; 0 = plain cross-entropy). Forward outputs do not depend on it.
    label_smoothing: float = 0.0
    #: True when the video feature depends on the order of the frames (a temporal module); False
    #: for mean-pooled per-frame features, whose output is the same for the time-reversed clip.
    #: The generic tests check this claim (reversed clips after perturbing every trainable
    #: tensor) and the order-pair benchmark reads it.
    models_frame_order: ClassVar[bool] = False
    #: Visual token layouts this method runs on: "per_frame" (CLIP: every frame through the image
    #: tower on its own, blocks see (B*T, L, D)) and/or "joint" (ViCLIP: one space-time sequence per
    #: clip, blocks see (B, 1 + T*N, D)). A backbone whose layout is not listed is refused with one
    #: line before any job starts (`check_token_layout`, called by validation and at build).
    #: List "joint" only when every token regrouping goes through the layout (`self.ctx` helpers)
    #: and the joint form is documented in docs/methods/<method>.md.
    token_layouts: ClassVar[frozenset[str]] = frozenset({"per_frame"})
    #: Why the method refuses a layout it does not list (layout -> one clause), shown in the refusal.
    layout_notes: ClassVar[dict[str, str]] = {}
    #: Whether the method can train with ViCLIP's random patch-token masking (`schedule.token_mask`,
    #: joint backbones only): False when one of its modules needs the full space-time grid.
    allows_token_mask: ClassVar[bool] = False
    #: The most frames per clip this method runs on: `--frames` / `schedule.frames` above it are
    #: refused before any job starts (harness/validate.py), instead of exhausting memory inside
    #: the first job. 64 covers every published recipe (8-32 frames); a method whose temporal
    #: modules are meant for longer clips declares more.
    max_frames: ClassVar[int] = 64
    #: What the method needs from the run besides videos and class names. Known needs and the
    #: hook the engine calls for each: "descriptions" -> `set_descriptions` (training classes,
    #: before training); "scored_descriptions" -> `set_descriptions` (every class set scored: the
    #: training classes before training, each evaluation list's classes before it is scored);
    #: "rephrased_classnames" -> `set_rephrased_classnames` (one call per class list of the job:
    #: the training classes and every evaluated list).
    #: `run_needs(config)` narrows it for one configuration (an option may switch a need off).
    requires: ClassVar[frozenset[str]] = frozenset()
    #: False when clipping gradients by global norm would distort training (e.g. MSTA rescales
    #: its adapter gradients by design): the engine then refuses `schedule.grad_clip > 0`.
    allows_grad_clip: ClassVar[bool] = True
    #: Keys of `training_losses` that contrast each clip with the *features* of the other clips of
    #: its forward pass, not only with their labels (`batch_labels`): such a term is the global
    #: batch's only when an optimiser update is one forward pass on one process, so the engine
    #: refuses `schedule.micro_batch` below the batch and several processes for a method declaring
    #: any (OST's descriptor -> video term normalises over every video of its batch).
    batch_coupled_losses: ClassVar[frozenset[str]] = frozenset()
    #: How the cosine ends parameter groups with their own lr (ParamGroup.lr_scale): False (timm's
    #: CosineLRScheduler(lr_min=LR x ratio), X-CLIP / ViFi-CLIP / FROSTER) ends every group at one
    #: absolute floor, the method's lr x `schedule.lr_min_ratio`; True (MoTE's
    #: WarmupCosineAnnealingLR, a factor on each group's lr) ends each group at its own lr x ratio.
    cosine_floor_per_group: ClassVar[bool] = False

    def __init__(self, clip: nn.Module, config: MethodConfig, num_frames: int, tokenizer: Any,
                 classnames: Sequence[str] | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.config = config
        self.num_frames = num_frames
        self.tokenizer = tokenizer
        self.train_classnames = tuple(classnames) if classnames is not None else None
        self.layout = layout_of(clip)
        self.check_token_layout(self.layout.name)
        #: Fraction of patch tokens dropped at random in training (the engine sets it from
        #: `schedule.token_mask`; joint layouts only, never in eval mode).
        self.token_mask = 0.0
        self.ctx = BlockContext(num_frames, self.layout)
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._token_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._initial_weights: dict[str, torch.Tensor] | None = None
        self.wrap_visual(lambda block, i: AdaptedBlock(block, self.ctx, i, "visual"))
        self.wrap_text(lambda block, i: AdaptedBlock(block, self.ctx, i, "text"))
        self.build()
        self.targeted: list[str] = []
        self._apply_trainable()

    # -- construction ------------------------------------------------------------------------
    def build(self) -> None:
        """Insert the method's modules. Default: nothing (frozen CLIP)."""

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        """(name, parameter) pairs to train. Default: none."""
        return []

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        """Whether the method's official optimiser exempts this trainable parameter from weight
        decay. Default: no exemption (one AdamW group, as ViFi-CLIP's and Vita-CLIP's code)."""
        return False

    def lr_scale(self, name: str, param: nn.Parameter) -> float:
        """Multiplier of the method's lr for this trainable parameter, where the official optimiser
        gives some modules their own lr. Default: 1 (one lr for everything)."""
        return 1.0

    def param_groups(self) -> list[ParamGroup]:
        """The trainable parameters split as the official optimiser splits them: `decay` and
        `no_decay` (weight decay 0), and, for parameters with an `lr_scale` other than 1, the
        same two per scale (`decay_lr_x10`, `no_decay_lr_x10`); empty groups left out. The engine
        builds AdamW from this."""
        groups: dict[tuple[float, bool], ParamGroup] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            scale, decay = float(self.lr_scale(name, param)), not self.no_weight_decay(name, param)
            key = (scale, decay)
            if key not in groups:
                label = ("decay" if decay else "no_decay") + ("" if scale == 1.0 else f"_lr_x{scale:g}")
                groups[key] = ParamGroup(label, [], [], weight_decay=decay, lr_scale=scale)
            groups[key].names.append(name)
            groups[key].params.append(param)
        return sorted(groups.values(), key=lambda g: (g.lr_scale != 1.0, g.lr_scale, not g.weight_decay))

    # -- what the method needs from the run, and training switches ---------------------------
    # Class methods of the configuration, so that a job can be checked before any model is built.
    @classmethod
    def run_needs(cls, config: MethodConfig) -> frozenset[str]:
        """The subset of `requires` a configuration needs. Default: all of it."""
        return cls.requires

    @classmethod
    def check_token_layout(cls, layout: str) -> None:
        """Refuse, in one line, a backbone whose token layout this method does not list (a
        ConfigurationError: every job on that backbone would fail the same way)."""
        if layout in cls.token_layouts:
            return
        runs_on = " or ".join(LAYOUT_TITLES.get(name, name) for name in sorted(cls.token_layouts))
        why = cls.layout_notes.get(layout) or f"its modules are written for {runs_on} tokens only"
        raise ConfigurationError(layout_refusal(cls.method_name, layout, why))

    @classmethod
    def descriptions_per_class(cls, config: MethodConfig) -> int:
        """How many spatial and how many temporal sentences per class `set_descriptions` wants."""
        return 0

    @classmethod
    def description_source(cls, config: MethodConfig) -> str | None:
        """The description files this configuration reads ("etl4video" or "ost"), or None for the
        run's `data.descriptions` setting (MSTA). A method whose scoring is defined on one
        source's files (OST's descriptors) names it here."""
        return None

    def set_descriptions(self, classnames: Sequence[str], spatial: Sequence[Sequence[str]],
                         temporal: Sequence[Sequence[str]]) -> None:
        """Hook for methods that declare "descriptions" in `requires`: one list of spatial and one
        of temporal sentences per class name. A method without that need has nothing to store."""
        raise HarnessError(f"method {self.method_name!r} does not use class descriptions "
                           "(it does not declare 'descriptions' in its `requires`)")

    def prepare_evaluation(self) -> None:
        """Called by the engine once, after training (or after a checkpoint is loaded) and before
        the job's evaluation lists are scored. Default: nothing (OST: its official zero-shot
        evaluation blends the trained weights with the pretrained ones)."""

    def keep_initial_weights(self) -> None:
        """Keep a copy of every parameter as it is now (at construction: the pretrained values),
        for `blend_with_initial`. The copies are plain tensors outside the module (not moved by
        `.to()`, not in the state dict) on the device the model was built on."""
        self._initial_weights = {n: p.detach().clone() for n, p in self.named_parameters()}

    def blend_with_initial(self, weight: float) -> None:
        """Weight-space ensembling with the kept initial weights (WiSE-FT): every kept parameter
        p <- weight * initial + (1 - weight) * p."""
        initial = self._initial_weights
        if initial is None:
            raise HarnessError(f"{self.method_name}: no initial weights were kept (keep_initial_weights)")
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name in initial:
                    start = initial[name].to(device=param.device, dtype=param.dtype)
                    param.copy_(weight * start + (1.0 - weight) * param)

    def set_rephrased_classnames(self, classnames: Sequence[str], rephrased: Sequence[str]) -> None:
        """Hook for methods that declare "rephrased_classnames" in `requires`: the LLM-rephrased
        form of each class name of one class list (FROSTER's "Name: what the action looks like"
        strings), aligned with `classnames`. A method without that need has nothing to store."""
        raise HarnessError(f"method {self.method_name!r} does not use rephrased class names "
                           "(it does not declare 'rephrased_classnames' in its `requires`)")

    @classmethod
    def averaged_epochs(cls, config: MethodConfig) -> EpochRange | None:
        """The epochs whose trainable weights the engine averages into the model it evaluates
        (FROSTER reports the mean of its epoch checkpoints), or None to evaluate the weights as
        training leaves them. Default: None. A class method of the configuration, so a job can be
        checked before any model is built."""
        return None

    def frozen_teacher(self) -> nn.Module | None:
        """The frozen copy of the pre-trained backbone the method distils from during training,
        or None. It is a submodule, so `parameter_counts()['total']` includes it (and reports it
        as 'teacher'); it runs inside `training_losses`, so training-step FLOPs and memory
        (`count_step_flops`, `harness bench`) include it, while inference FLOPs do not."""
        return None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass of both towers (saves memory, same
        outputs). Methods whose blocks live outside the towers' `resblocks` override this."""
        self.clip.set_grad_checkpointing(enable)

    def _apply_trainable(self) -> None:
        self.requires_grad_(False)
        names = []
        for name, param in self.declare_trainable():
            param.requires_grad_(True)
            names.append(name)
        self.targeted = names

    def wrap_visual(self, factory, layers: Iterable[int] | None = None) -> list[int]:
        return wrap_blocks(self.clip.visual.transformer, factory, layers)

    def wrap_text(self, factory, layers: Iterable[int] | None = None) -> list[int]:
        return wrap_blocks(self.clip.transformer, factory, layers)

    def named_parameters_matching(self, *fragments: str) -> list[tuple[str, nn.Parameter]]:
        """Parameters whose qualified name contains any of `fragments` (official freezing rules
        are written this way, e.g. AIM's 'Adapter' / 'temporal_embedding')."""
        return [(n, p) for n, p in self.named_parameters() if any(f in n for f in fragments)]

    # -- sizes -------------------------------------------------------------------------------
    @property
    def visual_width(self) -> int:
        return self.clip.visual.transformer.width

    @property
    def text_width(self) -> int:
        return self.clip.transformer.width

    @property
    def visual_depth(self) -> int:
        return len(self.clip.visual.transformer.resblocks)

    @property
    def text_depth(self) -> int:
        return len(self.clip.transformer.resblocks)

    @property
    def visual_blocks(self) -> nn.ModuleList:
        return self.clip.visual.transformer.resblocks

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.clip.transformer.resblocks

    def parameter_counts(self) -> dict[str, Any]:
        """Trainable and total parameters; `total` includes a frozen teacher, also given alone as
        `teacher` (0 for methods without one)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        teacher = self.frozen_teacher()
        return {"trainable": trainable, "total": total,
                "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0,
                "teacher": sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0}

    # -- video tower -------------------------------------------------------------------------
    def patch_embed(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 1 + HW, D): conv1, class token, positional embedding (per-frame
        towers; a joint tower embeds whole clips, `embed_video`)."""
        if self.layout.joint:
            raise HarnessError("patch_embed embeds frames one by one; this backbone embeds whole clips "
                               "(joint space-time layout): use embed_video")
        return PerFrameLayout.embed_frames(self.clip.visual, frames)

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> the visual tokens in the backbone's layout, positional embeddings
        included: (B*T, 1 + N, D) per frame, (B, 1 + N*T, D) joint (patch tokens randomly
        masked in training when `token_mask` > 0)."""
        mask = self.token_mask if self.training else 0.0
        if mask > 0 and not self.allows_token_mask:
            raise HarnessError(f"{self.method_name} regroups the patch tokens by frame and position and cannot train on "
                               f"a masked sequence (token_mask={mask}); run it with schedule.token_mask=0")
        self.ctx.tokens_masked = mask > 0
        return self.layout.embed(self.clip.visual, video, mask)

    def visual_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Hook between the positional embedding and `ln_pre`; tokens in the backbone's layout
        ((B*T, L, D) per frame, (B, L, D) joint) -> the same with the method's additions."""
        return x

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block -> one image feature per sequence: CLS -> ln_post -> proj,
        as CLIP's image tower ((B*T, E) per frame; joint: (B, E), the clip's CLS)."""
        visual = self.clip.visual
        feats = visual.ln_post(x[:, 0])
        return feats @ visual.proj if visual.proj is not None else feats

    def visual_pool(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Tokens after the last block -> clip feature (B, E): `frame_features`, then the layout's
        pooling (per frame: the mean over the frames; joint: the clip's CLS feature)."""
        return self.layout.pool_frames(self.frame_features(x), batch, frames)

    def visual_tower(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) normalised frames -> tokens after the last visual block in the backbone's
        layout: (B*T, L, D) per frame, the frames of a clip contiguous; (B, 1 + N*T, D) joint.
        Methods that read more than the pooled feature (e.g. the patch tokens) call this and pool
        themselves (through the layout)."""
        if video.dim() != 5:
            raise ValueError(f"expected a (B, T, 3, H, W) video batch, got shape {tuple(video.shape)}")
        self.ctx.num_frames = video.shape[1]
        visual = self.clip.visual
        x = self.embed_video(video)
        x = self.visual_tokens(x)
        x = visual.ln_pre(x)
        return visual.transformer(x)

    def encode_video(self, video: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, T, 3, H, W) normalised frames -> (B, E) clip features."""
        x = self.visual_tower(video)
        feats = self.visual_pool(x, video.shape[0], video.shape[1])
        return F.normalize(feats, dim=-1) if normalize else feats

    # -- text tower --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids, cached per text list: text-trainable methods encode the same class prompts
        every step, and BPE tokenisation of hundreds of prompts costs tens of milliseconds."""
        key = tuple(texts)
        tokens = self._token_cache.get(key)
        if tokens is None:
            tokens = self.tokenizer(list(texts))
            if len(self._token_cache) > 64:
                self._token_cache.clear()
            self._token_cache[key] = tokens
        return tokens.to(self.clip.token_embedding.weight.device)

    def text_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hook: tokens (N, L) -> input embeddings (N, L, D), positional embedding included."""
        x = self.clip.token_embedding(tokens)
        return x + self.clip.positional_embedding.to(x.dtype)

    def encode_text_embeddings(self, x: torch.Tensor, eot_index: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Run embedded text (N, L, D) through the text transformer and pool at `eot_index`."""
        clip = self.clip
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        if clip.text_projection is not None:
            x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        tokens = self.tokenize(texts)
        return self.encode_text_embeddings(self.text_embeddings(tokens), tokens.argmax(dim=-1), normalize)

    def class_prompts(self, classnames: Sequence[str]) -> list[str]:
        return [self.config.prompt.format(name) for name in classnames]

    def prompt_texts(self, classnames: Sequence[str]) -> list[str]:
        """The texts the text tower tokenises for a class set (learned-context methods: their
        placeholder words and the class name), so that a run can count those its backbone's text
        context truncates."""
        return self.class_prompts(classnames)

    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """(C, E) normalised text features of the class set. Methods with learned text context
        override this."""
        return self.encode_text(self.class_prompts(classnames))

    def text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Class text features, cached per class set whenever they cannot change: in eval mode,
        and during training when the text path has nothing to train."""
        key = tuple(classnames)
        cacheable = (not self.training) or self.text_is_frozen
        if cacheable and key in self._text_cache:
            return self._text_cache[key]
        if cacheable:
            with torch.no_grad():
                feats = self.class_text_features(classnames).detach()
            self._text_cache[key] = feats
            return feats
        return self.class_text_features(classnames)

    def train(self, mode: bool = True) -> VideoTextModel:
        # Parameters may change between a train() and the next eval(): drop cached text features.
        self._text_cache.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda()/.half(): cached tensors would be stale
        self._text_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    # -- scoring and losses ------------------------------------------------------------------
    def logits(self, video_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale.exp() * video_features @ text_features.t().to(video_features.dtype)

    def forward(self, video: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, C) logits over `classnames`."""
        return self.logits(self.encode_video(video), self.text_features(classnames))

    def training_losses(self, video: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], *,
                        batch_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training losses of one (micro-)batch, each a mean over its clips (the engine sums
        them): what the engine, the FLOP counter and the benchmark call in training.

        `video` (B, T, 3, H, W), `labels` (B,) index `classnames`. `batch_labels` are the labels of
        the whole batch of the optimiser update this (micro-)batch belongs to (every micro-batch
        and every process; `labels` when it is the whole batch), for methods whose loss depends on
        which labels share a batch. Default: the logits of `forward` into `losses`. Methods whose
        training objective needs more than the logits (features, a teacher, the label set of the
        batch) override this hook."""
        return self.losses(self(video, classnames), labels, classnames)

    def losses(self, logits: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str]) -> dict[str, torch.Tensor]:
        """Training losses (summed by the engine). Cross-entropy plus the method's extras."""
        out = {"loss_cls": F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)}
        out.update(self.extra_losses(classnames))
        return out

    def extra_losses(self, classnames: Sequence[str]) -> dict[str, torch.Tensor]:
        return {}

    def check_protocol(self, protocol_name: str, closed_set: bool) -> None:
        """Raise a HarnessError when this configuration cannot run under the protocol
        (e.g. a closed-set linear head where test classes differ from training classes)."""
