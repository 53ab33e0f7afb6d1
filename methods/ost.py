"""OST (Chen et al., CVPR 2024, "OST: Refining Text Knowledge with Optimal Spatio-Temporal Descriptor
for General Video Recognition"), made exact from tomchen-ctj/OST @ 1810ae6 (`trainers/OST.py`,
`main_nce.py`, `utils/NCELoss.py`, `utils/textprompt.py`, `utils/tools.py`, `configs/`).

ViFi-CLIP-style full fine-tuning of both CLIP towers (every parameter, `token_embedding` included:
149,620,737 at ViT-B/16), where a class is not one prompt but N LLM "spatio" descriptors (static
cues) and N "temporal" descriptors (steps), each encoded by the trainable text tower:

    spatio   s_{a,n} = text("This is a video about {descriptor}")
    temporal t_{a,n} = text("A video of {class name} usually includes {descriptor}")

A video's T normalised frame features v_t are matched to a class's descriptors by optimal
transport (the "Optimal Descriptor Solver"): with sim_{tn} = v_t . d_n, Sinkhorn iterations on
K = exp(-(1 - sim) / eps) with uniform marginals (1/T, 1/N) give a plan P (no gradient), and

    OT(v, D)   = sum_{t,n} P_{tn} sim_{tn}
    pool(v, D) = mean_t(v_t) . mean_n(d_n)
    logit(v, a) = scale * [0.5 (OT(v, T_a) + pool(v, T_a)) + 0.5 (OT(v, S_a) + pool(v, S_a))]

Training (`main_nce.py`) contrasts the videos of a batch with the descriptors of the batch's own
labels: a (videos x samples) logit matrix, target softmax(10 * [y_i == y_j]), and the KL
divergence of the log-softmax of each row (video -> descriptors) and of each column
(descriptors -> videos), averaged over rows / columns (`NCELoss`). See docs/methods/ost.md for
what is defined on the global batch and what cannot be.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method

SINKHORN_STOPS = ("each", "batch")
DESCRIPTOR_SOURCES = ("ost", "etl4video")

#: Descriptor prompts encoded per text-tower pass when scoring many classes (bounds memory for
#: 400 classes x 2N prompts at evaluation).
_TEXT_CHUNK = 512


@dataclass
class OSTConfig(MethodConfig):
    prompt: str = option("a video of a person {}.", "unused: OST scores a class by its descriptors only (its code "
                         "builds 'a video of a person {}.' class prompts and never reads them)")
    lr: float = option(5e-6, "AdamW lr (OST few-shot configs: 5e-6; K400 zero-shot training 8e-6)")
    weight_decay: float = option(0.001, "AdamW weight decay (OST utils/config.py TRAIN.WEIGHT_DECAY)")
    n_descriptors: int = option(4, "N: spatio and N temporal descriptors per class (TRAINER.OST.N = 4; the "
                                "descriptor files exist for N = 2, 4, 8)")
    descriptors: str = option("ost", "descriptor files: ost (OST's LLM descriptors, as published) or etl4video "
                              "(ETL4Video's spatial / temporal descriptions)", choices=DESCRIPTOR_SOURCES)
    spatial_template: str = option("This is a video about {}", "prompt of a spatio descriptor "
                                   "(utils/textprompt.py spatial_prompt)")
    temporal_template: str = option("A video of {} usually includes {}", "prompt of a temporal descriptor: class "
                                    "name, then descriptor (utils/textprompt.py temporal_prompt)")
    sinkhorn_eps: float = option(0.1, "entropic regularisation of the transport: K = exp(-(1 - sim) / eps)")
    sinkhorn_iters: int = option(100, "most Sinkhorn iterations")
    sinkhorn_tol: float = option(1e-2, "Sinkhorn stops once the mean absolute change of its row scaling is below this")
    sinkhorn_stop: str = option("each", "each: every (video, class) transport problem stops on its own change "
                                "(scores do not depend on batch-mates); batch: all problems of a call stop together "
                                "on the mean change over the whole batch (the official code)", choices=SINKHORN_STOPS)
    target_sharpness: float = option(10.0, "NCELoss target: softmax(target_sharpness * same-label matrix)")
    eval_origin_weight: float = option(0.0, "before the final evaluation, weights <- w * pretrained + (1 - w) * "
                                       "trained (OST's released zero-shot evaluation: 0.2, MODEL.FUSE_WEIGHT_FOR_ORIGIN; "
                                       "0 = the trained weights)")

    def validate(self) -> None:
        if self.n_descriptors < 1:
            raise HarnessError(f"ost.n_descriptors={self.n_descriptors}: must be >= 1")
        if not self.sinkhorn_eps > 0:
            raise HarnessError(f"ost.sinkhorn_eps={self.sinkhorn_eps}: must be > 0")
        if self.sinkhorn_iters < 1:
            raise HarnessError(f"ost.sinkhorn_iters={self.sinkhorn_iters}: must be >= 1")
        if not 0.0 <= self.eval_origin_weight <= 1.0:
            raise HarnessError(f"ost.eval_origin_weight={self.eval_origin_weight}: must be in [0, 1]")
        for name, template, fields in (("spatial_template", self.spatial_template, 1),
                                       ("temporal_template", self.temporal_template, 2)):
            if template.count("{}") != fields:
                raise HarnessError(f"ost.{name}={template!r}: needs exactly {fields} '{{}}' field(s)")


# -- optimal transport -------------------------------------------------------------------------
def _all_true(flags: torch.Tensor) -> bool:
    """bool(flags.all()) where values exist; False under fake tensors (FLOP counting), where the
    loop then runs every iteration: stopping early only saves iterations that change nothing."""
    try:
        return bool(flags.all())
    except Exception:  # noqa: BLE001 - data-dependent value of a fake tensor: no early exit
        return False


@torch.no_grad()
def sinkhorn_plan(kernel: torch.Tensor, iters: int, tol: float, stop: str) -> torch.Tensor:
    """Transport plans (M, T, N) of M problems with uniform marginals 1/T and 1/N (OST.Sinkhorn):
    r <- u / (K c), c <- v / (K^T r), P = diag(r) K diag(c), starting from r = c = 1.

    Stopping (official: after the update that makes the mean |r - r_prev| < tol, at most `iters`
    updates): `stop='batch'` takes the mean over every problem of the call, as the official code
    does, so all stop together; `stop='each'` takes it per problem, so a problem's plan is what
    the official code gives for that problem alone, whatever shares its batch. A stopped problem
    keeps its scalings (masked updates), so results never depend on how many iterations run."""
    kernel = kernel.float()
    count, frames, descriptors = kernel.shape
    u = kernel.new_full((count, frames), 1.0 / frames)
    v = kernel.new_full((count, descriptors), 1.0 / descriptors)
    r, c = torch.ones_like(u), torch.ones_like(v)
    active = torch.ones(count, dtype=torch.bool, device=kernel.device)
    for _ in range(iters):
        r_new = u / torch.bmm(kernel, c.unsqueeze(-1)).squeeze(-1)
        c_new = v / torch.bmm(kernel.transpose(1, 2), r_new.unsqueeze(-1)).squeeze(-1)
        change = (r_new - r).abs()
        r = torch.where(active[:, None], r_new, r)
        c = torch.where(active[:, None], c_new, c)
        converged = change.mean() < tol if stop == "batch" else change.mean(dim=1) < tol
        active = active & ~converged
        if _all_true(~active):
            break
    return torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * kernel


def transport_scores(frames: torch.Tensor, descriptors: torch.Tensor, eps: float, iters: int, tol: float,
                     stop: str) -> torch.Tensor:
    """OT(v_b, D_a) = sum_{t,n} P_{tn} sim_{tn} for every video b and class a -> (B, A).

    `frames` (B, T, E) and `descriptors` (A, N, E) are normalised; the plan is computed without
    gradient (OST.OptimalDescriptorSolver), the score keeps the gradient of `sim`."""
    batch, frames_n = frames.shape[:2]
    classes, count = descriptors.shape[:2]
    sim = torch.einsum("bte,ane->batn", frames, descriptors).reshape(batch * classes, frames_n, count)
    plan = sinkhorn_plan(torch.exp(-(1.0 - sim.detach().float()) / eps), iters, tol, stop)
    return (plan * sim).sum(dim=(1, 2)).view(batch, classes)


def descriptor_logits(frames: torch.Tensor, spatial: torch.Tensor, temporal: torch.Tensor, scale: torch.Tensor,
                      config: OSTConfig) -> torch.Tensor:
    """OST's class logits (B, A) from normalised frame features (B, T, E) and normalised spatio /
    temporal descriptor features (A, N, E) each (OST.get_logit / OST.inference)."""
    frames, spatial, temporal = frames.float(), spatial.float(), temporal.float()
    args = (config.sinkhorn_eps, config.sinkhorn_iters, config.sinkhorn_tol, config.sinkhorn_stop)
    mean_video = frames.mean(dim=1)
    ot_t, ot_s = transport_scores(frames, temporal, *args), transport_scores(frames, spatial, *args)
    pool_s = mean_video @ spatial.mean(dim=1).t()
    pool_t = mean_video @ temporal.mean(dim=1).t()
    return scale.float() * (0.5 * (ot_t + pool_t) + 0.5 * (ot_s + pool_s))


# -- loss ----------------------------------------------------------------------------------------
def nce_rows(logits: torch.Tensor, row_labels: torch.Tensor, column_labels: torch.Tensor,
             sharpness: float) -> torch.Tensor:
    """Per-row KL(softmax(sharpness * [y_row == y_col]) || softmax(logits row)) -> (rows,): one
    row of OST's NCELoss (KLDivLoss over log_softmax(prediction) and softmax(10 * target))."""
    target = F.softmax(sharpness * (row_labels[:, None] == column_labels[None, :]).float(), dim=1)
    return F.kl_div(F.log_softmax(logits.float(), dim=1), target, reduction="none").sum(dim=1)


# -- model ---------------------------------------------------------------------------------------
@register_method("ost", OSTConfig, "full fine-tune, classes as spatio-temporal descriptors matched to frames by OT")
class OST(VideoTextModel):
    """Every CLIP parameter trained; classes scored by optimal transport between frame features
    and LLM descriptor features; in-batch NCE loss."""

    text_is_frozen = False
    models_frame_order = False  # the transport plan and the pool are invariant to frame order
    #: Per frame only: the descriptor solver transports between the T frame features and the N
    #: descriptors; a joint tower gives one feature per clip, for which the plan is uniform
    #: (marginals 1 and 1/N) and OT(v, D) = pool(v, D): the method's solver would do nothing.
    token_layouts = frozenset({PER_FRAME})
    layout_notes = {JOINT: "its optimal transport matches each class's descriptors to the clip's per-frame features, "
                           "and a joint sequence gives one feature per clip (the plan would be uniform, the solver "
                           "inert; docs/methods/ost.md)"}
    #: Classes are scored through their descriptors: the engine gives those of every class set.
    requires = frozenset({"scored_descriptions"})
    #: The descriptor -> video term normalises over every video of the batch (docs/methods/ost.md).
    batch_coupled_losses = frozenset({"loss_text"})

    config: OSTConfig

    def build(self) -> None:
        self._descriptors: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._descriptor_cache: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._evaluation_prepared = False
        if self.config.eval_origin_weight > 0:
            self.keep_initial_weights()

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        """Everything (`TRAINER.OST.USE: both` turns on every parameter, token_embedding included)."""
        return list(self.named_parameters())

    # -- descriptors -------------------------------------------------------------------------
    @classmethod
    def descriptions_per_class(cls, config: OSTConfig) -> int:
        return int(config.n_descriptors)

    @classmethod
    def description_source(cls, config: OSTConfig) -> str:
        return config.descriptors

    def set_descriptions(self, classnames: Sequence[str], spatial: Sequence[Sequence[str]],
                         temporal: Sequence[Sequence[str]]) -> None:
        """Store N spatio and N temporal descriptors per class name (a later call for the same
        name replaces them: the engine gives each evaluation list its own dataset's)."""
        n = self.config.n_descriptors
        if not len(classnames) == len(spatial) == len(temporal):
            raise HarnessError(f"ost descriptors: got {len(classnames)} classes but {len(spatial)} spatio and "
                               f"{len(temporal)} temporal lists; give one list of each per class")
        for name, s, t in zip(classnames, spatial, temporal):
            if isinstance(s, str) or isinstance(t, str) or len(s) != n or len(t) != n:
                raise HarnessError(
                    f"ost descriptors of {name!r}: expected {n} spatio and {n} temporal descriptors "
                    f"(ost.n_descriptors={n}), got {s!r:.80} and {t!r:.80}")
            self._descriptors[name] = (tuple(s), tuple(t))
        self._descriptor_cache.clear()

    def descriptor_prompts(self, classnames: Sequence[str]) -> list[str]:
        """The C*N spatio prompts, then the C*N temporal prompts, class-major."""
        missing = [c for c in dict.fromkeys(classnames) if c not in self._descriptors]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise HarnessError(
                f"ost scores a class through its descriptors, and class(es) {shown} have none. The engine "
                f"loads them from the dataset's descriptor files (ost.descriptors={self.config.descriptors}); "
                "Python callers give them with set_descriptions(classnames, spatio, temporal)")
        spatial = [self.config.spatial_template.format(d) for c in classnames for d in self._descriptors[c][0]]
        temporal = [self.config.temporal_template.format(c, d) for c in classnames for d in self._descriptors[c][1]]
        return spatial + temporal

    def descriptor_features(self, classnames: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised spatio and temporal descriptor features, (C, N, E) each, by the (trainable)
        text tower; cached per class set while they cannot change (eval mode, no gradient)."""
        key = tuple(classnames)
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and key in self._descriptor_cache:
            return self._descriptor_cache[key]
        prompts = self.descriptor_prompts(classnames)
        feats = torch.cat([self.encode_text(prompts[i:i + _TEXT_CHUNK]) for i in range(0, len(prompts), _TEXT_CHUNK)])
        feats = feats.view(2, len(classnames), self.config.n_descriptors, -1)
        out = (feats[0], feats[1])
        if cacheable:
            self._descriptor_cache[key] = out
        return out

    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """One (C, E) vector per class for code that wants one (measurement): the normalised mean
        of its 2N descriptor features. OST's own scoring uses the descriptors themselves."""
        spatial, temporal = self.descriptor_features(classnames)
        return F.normalize(torch.cat([spatial, temporal], dim=1).mean(dim=1), dim=-1)

    # -- video -------------------------------------------------------------------------------
    def normalized_frames(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Tokens after the last block -> normalised per-frame features (B, T, E): CLS -> ln_post
        -> proj of each frame (the image encoder on every frame, as ViFi-CLIP)."""
        return F.normalize(self.frame_features(x).view(batch, frames, -1), dim=-1)

    def visual_pool(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """The video vector of OST's pool term: the mean of the normalised frame features."""
        return self.normalized_frames(x, batch, frames).mean(dim=1)

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> normalised frame features (B, T, E)."""
        return self.normalized_frames(self.visual_tower(video), *video.shape[:2])

    # -- scoring -----------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, C) logits over `classnames` (OST.inference)."""
        spatial, temporal = self.descriptor_features(classnames)
        return descriptor_logits(self.encode_frames(video), spatial, temporal, self.clip.logit_scale.exp(), self.config)

    def training_losses(self, video: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str], *,
                        batch_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """OST's NCE loss for this micro-batch (`main_nce.py`), as means over its clips:

        * `loss_video`: each video of the micro-batch against the descriptors of every sample of the
          whole batch (`batch_labels`: columns repeat as labels do), target softmax(10 * same label);
          row i is the same whatever micro-batch it is in, so the engine's average over
          micro-batches is the official video -> descriptor term of the global batch;
        * `loss_text`: each sample's descriptors of this micro-batch against this micro-batch's
          videos. The descriptor -> video term needs every video of its batch, so it is the global
          batch's only when the micro-batch is the whole batch: declared in `batch_coupled_losses`,
          and the engine runs such a method's updates in one forward pass on one process.
        """
        if self.label_smoothing > 0:
            raise HarnessError("schedule.label_smoothing: OST's in-batch NCE loss has no label smoothing "
                               "(its configs set AUG.LABEL_SMOOTH 0); leave schedule.label_smoothing=0")
        columns = labels if batch_labels is None else batch_labels.to(labels.device)
        used, index = torch.unique(torch.cat([columns, labels]), return_inverse=True)
        column_index, own_index = index[:len(columns)], index[len(columns):]
        spatial, temporal = self.descriptor_features([classnames[int(i)] for i in used.tolist()])
        scores = descriptor_logits(self.encode_frames(video), spatial, temporal, self.clip.logit_scale.exp(),
                                   self.config)  # (B_micro, unique labels)
        sharp = self.config.target_sharpness
        video_rows = nce_rows(scores[:, column_index], labels, columns, sharp)
        text_rows = nce_rows(scores[:, own_index].t(), labels, labels, sharp)
        return {"loss_video": video_rows.mean(), "loss_text": text_rows.mean()}

    # -- evaluation --------------------------------------------------------------------------
    def prepare_evaluation(self) -> None:
        """With `eval_origin_weight` w > 0: weights <- w * pretrained + (1 - w) * trained, once
        (utils/tools.py wise_state_dict: FUSE_WEIGHT_FOR_ORIGIN weighs the original CLIP)."""
        if self.config.eval_origin_weight > 0 and not self._evaluation_prepared:
            self.blend_with_initial(self.config.eval_origin_weight)
            self._descriptor_cache.clear()
            self._evaluation_prepared = True

    # -- cache hygiene -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> OST:
        self._descriptor_cache.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # cached features follow .to()/.half(): recompute lazily
        self._descriptor_cache.clear()
        return super()._apply(fn, *args, **kwargs)
