"""FROSTER (Huang et al., ICLR 2024, "FROSTER: Frozen CLIP Is A Strong Teacher for Open-Vocabulary
Action Recognition"), made exact from Visual-AI/FROSTER @ 230ae88
(`slowfast/models/temporalclip_video_model.py`, `customize_visiontransformer.py`,
`torch_utils/functional.py`, `tools/train_net.py`, `weight_average_tool.py`, the B/16 scripts).

Full fine-tuning of CLIP (both towers, token embedding and logit scale included) with a frozen
copy of the pre-trained CLIP as a teacher:

* Video: every visual block attends, for the queries of frame t, to the keys/values of frames
  t-s..t+s (`expand_temporal_view`, s=1; `_step2`/`_step3`: s=2/3). Beyond the ends of the clip
  the extra keys and values are zero vectors, not masked: each still enters the softmax with
  score 0. The neighbourhood is symmetric, so the model is blind to playing the clip backwards
  (`models_frame_order = False`) although it mixes neighbouring frames.
* Scoring: per-frame features (CLS -> ln_post -> proj), each L2-normalised, scored against the
  class features, per-frame logits averaged over frames (= the mean normalised frame feature,
  not re-normalised, times the class features).
* Class features: each class text is "<template(head)> <rephrased>" for 28 templates and the bare
  rephrased name for the 29th, where "<rephrased>" is the LLM-rephrased class ("Abseiling: This
  video shows ...") and "head" its part before ':'; features of each template are normalised,
  averaged over templates, normalised again. Evaluation uses all 29 templates; each training step
  (optimiser update) one random template of the first 28 plus the bare name.
* Training loss (train_net.py L457-489): cross-entropy of the logits +
  ratio * [(1 - cos(f + a*P_v(f), f_T)) + (1 - cos(w + a*P_t(w), w_T))] with per-frame
  normalised features f (teacher f_T), class features w (teacher w_T, same templates), a = 0.1
  and P = Linear-GELU-Linear projectors (no bias, first Kaiming-normal, last zero).
* Evaluation: the official numbers are those of the weights averaged over epochs 2..last
  (`weight_average_tool.py`): `average_epochs` declares it (`averaged_epochs`); the engine keeps
  and averages the epochs' weights (harness.engine.hooks.EpochAverageHook).

On a joint space-time backbone (ViCLIP) the temporal view expansion is not added (the joint
attention already spans every frame) and the clip's CLS feature stands for the frames' features,
in the student and the teacher (docs/methods/froster.md, "On a joint space-time backbone").

Trainable at ViT-B/16: all 149,620,737 CLIP parameters + two 512x512x2 projectors = 150,669,313;
the frozen teacher adds 149,620,737 frozen parameters (`parameter_counts()['teacher']`).
"""
from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import EpochRange, MethodConfig, VideoTextModel, option
from methods.blocks import AdaptedBlock, BlockContext
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method
from methods.sample_random import stream_key, update_generator

#: FROSTER's prompt ensemble: four openings x seven action phrasings, then the bare class text,
#: in the official order (prefix-major; the bare text last).
_OPENINGS = ("a photo of", "a video of", "a example of", "a demonstration of")
_PHRASINGS = ("{}", "a person {}", "a person using {}", "a person doing {}", "a person during {}",
              "a person performing {}", "a person practicing {}")
TEMPLATES: tuple[str, ...] = tuple(f"{o} {p}." for o in _OPENINGS for p in _PHRASINGS) + ("{}",)
ALL_TEMPLATES: tuple[int, ...] = tuple(range(len(TEMPLATES)))
#: The random stream of the training template draw (one draw per optimiser update in the engine).
_TEMPLATE_STREAM = stream_key("froster.training_template")
#: Texts per text-encoder call when no gradient is needed (29 templates x 400 classes at once
#: would hold the activations of 11,600 prompts).
_TEXT_CHUNK = 1024


@dataclass
class FROSTERConfig(MethodConfig):
    prompt: str = option("a photo of a {}.", "unused: FROSTER ensembles its 29 templates over rephrased class names")
    lr: float = option(3.33e-6, "AdamW lr (SOLVER.BASE_LR of every FROSTER B/16 script)")
    weight_decay: float = option(0.01, "AdamW weight decay (SOLVER.WEIGHT_DECAY; 0 on 1-D tensors and biases)")
    temporal_view: int = option(1, "frames on each side whose keys/values the attention of every visual block also "
                                   "sees, zeros beyond the clip (expand_temporal_view: 1, _step2: 2, _step3: 3; "
                                   "0 = plain per-frame CLIP)")
    distillation: bool = option(True, "distil from a frozen copy of the pre-trained CLIP (KEEP_RAW_MODEL + "
                                      "RAW_MODEL_DISTILLATION); false = no teacher, cross-entropy only")
    distill_ratio: float = option(2.0, "weight of the video + text distillation losses (MODEL.DISTILLATION_RATIO)")
    residual_scale: float = option(0.1, "a in f + a * projector(f), the residual projection before distillation "
                                        "(hard-coded alpha in the official forward)")
    rephrased: bool = option(True, "use the LLM-rephrased class names ('Name: description'); the engine loads "
                                   "FROSTER's files per class list (false: the plain class names)")
    average_epochs: str = option("2-", "epochs whose weights are averaged into the evaluated model, 1-based "
                                       "inclusive ('2-' = 2 to the last, as weight_average_tool.py wa_start=2; "
                                       "'A-B'; 0 adds the initial weights; 'none' = the last epoch's weights)")

    def validate(self) -> None:
        if self.temporal_view < 0:
            raise HarnessError(f"froster.temporal_view={self.temporal_view}: must be >= 0 (0 = plain per-frame CLIP)")
        if self.distill_ratio < 0:
            raise HarnessError(f"froster.distill_ratio={self.distill_ratio}: must be >= 0")
        EpochRange.parse(self.average_epochs, "froster.average_epochs")


# -- temporal view expansion -------------------------------------------------------------------
def neighbour_keys(t: torch.Tensor, frames: int, shifts: int) -> torch.Tensor:
    """(B*T, H, L, d) keys (or values) -> (B*T, H, (2s+1)L, d): for each frame, those of frames
    t+1..t+s, then t-1..t-s, then its own (the official order); zeros where a neighbour falls
    outside the clip."""
    n, heads, length, dim = t.shape
    clip = t.view(n // frames, frames, heads, length, dim)
    parts = []
    for sign in (1, -1):
        for step in range(1, shifts + 1):
            shifted = torch.zeros_like(clip)
            if step < frames:
                if sign > 0:  # frame t sees frame t + step
                    shifted[:, :frames - step] = clip[:, step:]
                else:  # frame t sees frame t - step
                    shifted[:, step:] = clip[:, :frames - step]
            parts.append(shifted)
    parts.append(clip)
    return torch.cat(parts, dim=3).view(n, heads, (2 * shifts + 1) * length, dim)


def temporal_view_attention(attn: nn.MultiheadAttention, x: torch.Tensor, frames: int, shifts: int) -> torch.Tensor:
    """Self-attention of each frame's tokens over its own and its neighbours' keys/values, with
    `attn`'s (frozen or trainable) weights; x (B*T, L, D) -> (B*T, L, D)."""
    n, length, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(
        n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, neighbour_keys(k, frames, shifts), neighbour_keys(v, frames, shifts))
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


class TemporalViewBlock(AdaptedBlock):
    """A visual block whose attention also sees the neighbouring frames' keys and values
    (FROSTER's TimesAttentionBlock with `expand_temporal_view`); the MLP is per token as in CLIP."""

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, shifts: int) -> None:
        super().__init__(block, ctx, layer_index, "visual")
        self.shifts = shifts

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls_1(temporal_view_attention(self.attn, self.ln_1(x), self.num_frames, self.shifts))
        return x + self.mlp_branch(x)


# -- projectors and features -------------------------------------------------------------------
def residual_projector(width: int) -> nn.Sequential:
    """Linear - GELU - Linear, no biases; first layer Kaiming-normal, last zero (so distillation
    starts from the un-projected features)."""
    projector = nn.Sequential(nn.Linear(width, width, bias=False), nn.GELU(), nn.Linear(width, width, bias=False))
    nn.init.zeros_(projector[2].weight)
    nn.init.kaiming_normal_(projector[0].weight)
    return projector


def normalised_frame_features(model: VideoTextModel, video: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, F, E) features of `model`'s video tower (its `visual_tower` and
    `frame_features`: CLS -> ln_post -> proj), each L2-normalised: F = T per-frame features on a
    per-frame backbone, F = 1 (the clip's CLS feature) on a joint space-time one."""
    feats = F.normalize(model.frame_features(model.visual_tower(video)), dim=-1)
    return feats.view(video.shape[0], -1, feats.shape[-1])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity over rows (train_net.py's distillation terms)."""
    return 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean()


class FrozenTeacher(VideoTextModel):
    """The pre-trained backbone with CLIP's own forward, in the backbone's token layout (per frame:
    one feature per frame; joint: the clip's CLS feature): FROSTER's frozen teacher."""

    token_layouts = frozenset({PER_FRAME, JOINT})


# -- model -------------------------------------------------------------------------------------
@register_method("froster", FROSTERConfig,
                 "full fine-tune distilled from a frozen CLIP teacher, temporal view expansion, rephrased classes")
class FROSTER(VideoTextModel):
    """Fine-tuned CLIP with FROSTER's neighbouring-frame attention, template ensemble over
    rephrased class names, and residual feature distillation from a frozen CLIP."""

    text_is_frozen = False
    models_frame_order = False  # symmetric +-s neighbourhoods: a reversed clip gives the same features
    #: Joint form ("joint attention", docs/methods/froster.md): on a joint space-time backbone every
    #: block's attention already sees the keys and values of every frame, a superset of the +-s
    #: neighbourhood the temporal view expansion adds, so no block is wrapped (`temporal_view` has no
    #: effect); the per-frame features become the clip's one CLS feature, for the student and for
    #: the frozen teacher (a copy of the joint backbone) alike.
    token_layouts = frozenset({PER_FRAME, JOINT})
    requires = frozenset({"rephrased_classnames"})

    config: FROSTERConfig

    # -- construction ------------------------------------------------------------------------
    def build(self) -> None:
        config = self.config
        self._rephrased: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._teacher_text: dict[tuple[str, ...], torch.Tensor] = {}
        # The teacher is the backbone as handed over (pre-trained, not yet wrapped by this method),
        # copied before the student's blocks change; a plain VideoTextModel keeps CLIP's forward.
        self.teacher = (FrozenTeacher(copy.deepcopy(self.clip), MethodConfig(), self.num_frames, self.tokenizer)
                        if config.distillation else None)
        width = self.clip.visual.output_dim
        self.projector_v = residual_projector(width)
        self.projector_t = residual_projector(width)
        if config.temporal_view > 0 and not self.layout.joint:
            self.wrap_visual(lambda block, i: TemporalViewBlock(block, self.ctx, i, config.temporal_view))

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        """Every student CLIP parameter (token embedding and logit scale included) and both projectors."""
        return [(n, p) for n, p in self.named_parameters() if n.startswith(("clip.", "projector_v.", "projector_t."))]

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        """SOLVER.ZERO_WD_1D_PARAM: 1-D tensors and biases; the 0-d logit scale is decayed."""
        return param.dim() == 1 or name.endswith(".bias")

    def frozen_teacher(self) -> nn.Module | None:
        return self.teacher

    @classmethod
    def run_needs(cls, config: FROSTERConfig) -> frozenset[str]:
        return cls.requires if config.rephrased else frozenset()

    @classmethod
    def averaged_epochs(cls, config: FROSTERConfig) -> EpochRange | None:
        return EpochRange.parse(config.average_epochs, "froster.average_epochs")

    # -- class texts -------------------------------------------------------------------------
    def set_rephrased_classnames(self, classnames: Sequence[str], rephrased: Sequence[str]) -> None:
        """Store the rephrased texts of one class list (the engine calls this per list: the
        training classes and every evaluated list, so the same name may read differently in two
        datasets)."""
        if len(classnames) != len(rephrased) or any(not isinstance(r, str) or not r.strip() for r in rephrased):
            raise HarnessError(f"froster rephrased class names: need one non-empty text per class, got {len(rephrased)} "
                               f"for {len(classnames)} classes")
        self._rephrased[tuple(classnames)] = tuple(rephrased)
        self._text_cache.pop(tuple(classnames), None)
        self._teacher_text.pop(tuple(classnames), None)

    def class_texts(self, classnames: Sequence[str]) -> tuple[str, ...]:
        """The text that stands for each class: its rephrased form when the engine gave one for
        this class list (and `rephrased` is on), else the plain name (FROSTER's code treats a
        name without ':' the same way)."""
        if self.config.rephrased:
            return self._rephrased.get(tuple(classnames), tuple(classnames))
        return tuple(classnames)

    def prompts(self, classnames: Sequence[str], templates: Sequence[int]) -> list[str]:
        """Template-major prompts: template i of the first 28 reads "<template(head)> <text>" with
        head the text before ':'; the last template is the text alone."""
        texts = self.class_texts(classnames)
        last = len(TEMPLATES) - 1
        return [text if i == last else TEMPLATES[i].format(text.split(":")[0]) + " " + text
                for i in templates for text in texts]

    def prompt_texts(self, classnames: Sequence[str]) -> list[str]:
        """All 29 templates' prompts of the class list (what evaluation encodes), for the count of
        prompts a short text context truncates (ViCLIP's 32 tokens cut most rephrased prompts)."""
        return self.prompts(classnames, ALL_TEMPLATES)

    def template_features(self, model: VideoTextModel, classnames: Sequence[str],
                          templates: Sequence[int]) -> torch.Tensor:
        """(len(templates), C, E): `model`'s normalised text features of each template's prompts."""
        prompts = self.prompts(classnames, templates)
        if torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters()):
            feats = model.encode_text(prompts)
        else:
            feats = torch.cat([model.encode_text(prompts[i:i + _TEXT_CHUNK]) for i in range(0, len(prompts), _TEXT_CHUNK)])
        return feats.view(len(templates), len(classnames), -1)

    @staticmethod
    def ensemble(features: torch.Tensor) -> torch.Tensor:
        """Template features (K, C, E), each normalised -> (C, E): mean over templates, normalised."""
        return F.normalize(features.mean(dim=0), dim=-1)

    def training_templates(self) -> tuple[int, int]:
        """One random template of the first 28 and the bare text. In an engine training step the
        draw takes the optimiser update's seed (`methods.sample_random.update_generator`), so every
        micro-batch and process of one update uses the same template, as the official code draws
        one per iteration; elsewhere Python's RNG, as the official `random.randint`."""
        generator = update_generator(_TEMPLATE_STREAM)
        if generator is None:
            return random.randint(0, len(TEMPLATES) - 2), len(TEMPLATES) - 1
        return int(torch.randint(0, len(TEMPLATES) - 1, (1,), generator=generator)), len(TEMPLATES) - 1

    def class_text_features(self, classnames: Sequence[str], templates: Sequence[int] | None = None) -> torch.Tensor:
        """Ensembled class features: all 29 templates in eval mode, a training draw otherwise."""
        if templates is None:
            templates = self.training_templates() if self.training else ALL_TEMPLATES
        return self.ensemble(self.template_features(self, classnames, templates))

    def teacher_text_features(self, classnames: Sequence[str], templates: Sequence[int]) -> torch.Tensor:
        """The teacher's ensembled class features for `templates`. The teacher never changes, so
        all 29 templates are encoded once per class list and kept (a step's random template then
        costs nothing, and every step counts the same FLOPs)."""
        key = tuple(classnames)
        if key not in self._teacher_text:
            with torch.no_grad():
                self._teacher_text[key] = self.template_features(self.teacher, classnames, ALL_TEMPLATES).detach()
        return self.ensemble(self._teacher_text[key][list(templates)])

    # -- video and scoring -------------------------------------------------------------------
    def visual_pool(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Mean over frames of the L2-normalised per-frame features (FROSTER averages per-frame
        logits; joint: the clip's one normalised feature); `encode_video(normalize=True)`
        re-normalises it, the logits do not."""
        feats = F.normalize(self.frame_features(x), dim=-1)
        return feats.view(batch, -1, feats.shape[-1]).mean(dim=1)

    def forward(self, video: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        return self.logits(self.encode_video(video, normalize=False), self.text_features(classnames))

    def training_losses(self, video: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], *,
                        batch_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Cross-entropy of the per-frame-averaged logits, plus (with the teacher) the residual
        video and text distillation losses, both over the same random template."""
        templates = self.training_templates()
        frames = normalised_frame_features(self, video)                     # (B, T, E)
        text = self.class_text_features(classnames, templates)   # (C, E), with gradients
        out = self.losses(self.logits(frames.mean(dim=1), text), labels, classnames)
        if self.teacher is None:
            return out
        with torch.no_grad():
            teacher_frames = normalised_frame_features(self.teacher, video).flatten(0, 1)
        teacher_text = self.teacher_text_features(classnames, templates)
        a, ratio = self.config.residual_scale, self.config.distill_ratio
        student_frames = frames.flatten(0, 1)
        student_frames = student_frames + a * self.projector_v(student_frames)
        student_text = text + a * self.projector_t(text)
        out["loss_distill_video"] = ratio * distillation_loss(student_frames, teacher_frames)
        out["loss_distill_text"] = ratio * distillation_loss(student_text, teacher_text)
        return out

    # -- cache hygiene -----------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):  # teacher features follow .to()/.half(): recompute lazily
        self._teacher_text = {}
        return super()._apply(fn, *args, **kwargs)
