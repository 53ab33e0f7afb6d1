"""Training of `harness-tiny` on the synthetic pairs (`scenes`).

Objective. CLIP's symmetric InfoNCE with the model's `logit_scale`, except that a caption is a
positive of EVERY image of the batch it is true of ("a red shape" fits several; `_truth`), plus
auxiliary linear heads (`_Heads`, discarded afterwards) that make the tiny budget go far:
- image heads: each drawn attribute from the image embedding, and from each patch token whether
  the shape covers that patch (this is what teaches position in the budget);
- text heads: what the caption states of each attribute, and its motion phrase, as cosine
  classifiers of the normalised text feature: without them, class names that differ only in a
  phrase no still frame shows ("a shape growing" / "a shape shrinking") end up with identical text
  features (cosine 1.0000), which no frozen-text method could then tell apart.
Schedule: the first `image_steps` train the vision tower alone on its heads (half the cost of a
joint step: the text tower learns its words much faster), then everything jointly; AdamW (no
decay on gains and biases, as open_clip), warm-up + cosine per tower. Init tweaks: the image
positional embedding x10 (position is otherwise not learnt in the budget) and the logit scale at
5 (at open_clip's 14.3 the features collapse to one point within a few steps).

Cost (budget: <= 40 s on a 2-core CPU, since it runs inside the first embedded run). One thread,
on purpose: the weights are then bit-identical whatever the machine's core count or load (two
threads give different float rounding, and on a busy machine OpenMP's spinning made a 2-thread
step 20x slower). Only the token-embedding rows the captions use are trained (the other ~49k rows
keep their seeded init and cost the optimiser nothing); text is encoded up to the longest caption
of a length bucket (`_encode_text`: exact for a causal text tower pooled at end-of-text, tested
against `model.encode_text`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.atomic import atomic_write
from harness.backbone import create_clip, get_tokenizer, small_config
from harness.data import embedded
from harness.pretrain.recipe import PRETRAIN_VERSION, PretrainRecipe, recipe_hash
from harness.pretrain.scenes import (
    _BINS,
    _VBINS,
    COLORS,
    SHAPES,
    SIZES,
    VERBS,
    _truth,
    background_pool,
    render_batch,
    sample_captions,
    to_model_input,
)

log = logging.getLogger(__name__)


class _CompactEmbedding(nn.Module):
    """Stands in for the token embedding during training: only the rows of `ids` are parameters."""

    def __init__(self, full: nn.Embedding, ids: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(full.weight.detach()[ids].clone())
        remap = torch.zeros(full.num_embeddings, dtype=torch.long)
        remap[ids] = torch.arange(ids.numel())
        self.register_buffer("remap", remap, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.remap[tokens], self.weight)


#: A label a head skips (the attributes of a scene with nothing drawn).
IGNORE = object()
#: Drawn attributes and their values (the image heads' classes).
ATTRIBUTES: dict[str, tuple] = {
    "shape": tuple(SHAPES), "color": tuple(COLORS), "size": (*SIZES, None), "h": tuple(_BINS),
    "v": tuple(_VBINS), "dark": (False, True), "faint": (False, True), "empty": (False, True),
}


class _Heads(nn.Module):
    """Linear classifiers from an embedding to labels (auxiliary losses, discarded after training).

    Image side: each drawn attribute, so the vision tower learns them much faster than from the
    contrastive loss alone. Text side: what the caption states of each attribute (or nothing) and
    its verb; as cosine classifiers with a fixed scale, so that captions that differ in one word
    keep clearly different (normalised) features rather than ones a large weight can tell apart.
    """

    def __init__(self, dim: int, classes: dict[str, tuple], cosine_scale: float | None = None,
                 weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.classes = classes
        self.cosine_scale = cosine_scale
        self.weights = {k: (weights or {}).get(k, 1.0) for k in classes}
        self.heads = nn.ModuleDict({k: nn.Linear(dim, len(v), bias=cosine_scale is None)
                                    for k, v in classes.items()})

    def loss(self, features: torch.Tensor, labels: dict[str, Sequence]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted mean cross-entropy over the heads, and each head's batch accuracy."""
        total, accuracy = features.new_zeros(()), {}
        if self.cosine_scale is not None:
            features = F.normalize(features, dim=-1)
        for key, values in self.classes.items():
            target = torch.tensor([-100 if x is IGNORE else values.index(x) for x in labels[key]])
            head = self.heads[key]
            if self.cosine_scale is None:
                logits = head(features)
            else:
                logits = self.cosine_scale * features @ F.normalize(head.weight, dim=-1).t()
            if (target >= 0).any():
                total = total + self.weights[key] * F.cross_entropy(logits, target)
                accuracy[key] = float((logits.argmax(1) == target)[target >= 0].float().mean())
        return total / sum(self.weights.values()), accuracy


def _encode_text(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)` computed on the first L positions, L = the longest caption.

    Exact: the text tower is causal and pools at the end-of-text token, so positions after it
    change nothing. Only the sequence length differs from open_clip's `CLIP.encode_text`.
    """
    from open_clip.transformer import text_global_pool

    length = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if isinstance(model.text_projection, nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection if model.text_projection is not None else x


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, truth: torch.Tensor
                     ) -> torch.Tensor:
    """Symmetric InfoNCE over normalised features; `truth` (images, captions) marks all positives."""
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    target = truth.float()
    rows = target.sum(1) > 0  # images some caption of the batch is true of (all, when every image has one)
    i2t = -(target[rows] / target[rows].sum(1, keepdim=True) * F.log_softmax(logits[rows], 1)).sum(1).mean()
    t2i = -(target / target.sum(0, keepdim=True).clamp_min(1) * F.log_softmax(logits, 0)).sum(0).mean()
    return (i2t + t2i) / 2


@contextlib.contextmanager
def _torch_state(threads: int):
    """Use `threads` threads and leave the caller's global RNG and thread count as they were."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(before)


def _encode_captions(model: nn.Module, tokens: torch.Tensor, buckets: int = 2) -> torch.Tensor:
    """`_encode_text` in `buckets` groups of similar length (less padding), in the input order."""
    order = (tokens != 0).sum(1).argsort(stable=True)
    parts = [_encode_text(model, tokens[idx]) for idx in order.chunk(buckets)]
    out = torch.empty(tokens.shape[0], parts[0].shape[1], dtype=parts[0].dtype)
    return out.index_put((order,), torch.cat(parts))


def _optimizer(recipe: PretrainRecipe, named: list[tuple[str, nn.Parameter]]) -> torch.optim.Optimizer:
    """AdamW with a group per (side, decayed): side is "vision" (names starting `visual.`), "scale"
    (the logit scale) or "text"; 1-d parameters (gains, biases, the class embedding) are not decayed."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in named:
        side = "vision" if name.startswith("visual.") else "scale" if name == "logit_scale" else "text"
        groups.setdefault((side, p.ndim < 2 or "ln" in name or "bias" in name), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "side": side, "weight_decay": 0.0 if flat else recipe.weight_decay}
         for (side, flat), ps in groups.items()],
        lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6, foreach=True)


def _learning_rate(recipe: PretrainRecipe, step: int, side: str) -> float:
    """Warm-up then cosine, for the vision side over all steps, for the text side (and the logit
    scale, times `scale_lr_gain`) from `image_steps` on; 0 before its start."""
    begin = 0 if side == "vision" else recipe.image_steps
    if step < begin:
        return 0.0
    if step - begin < recipe.warmup:
        lr = recipe.lr * (step - begin + 1) / recipe.warmup
    else:
        u = (step - begin - recipe.warmup) / max(1, recipe.steps - begin - recipe.warmup)
        lr = recipe.lr * (recipe.lr_min_ratio + (1 - recipe.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * u)))
    return lr * (recipe.scale_lr_gain if side == "scale" else 1.0)


def _patch_coverage(coverage: np.ndarray, patch: int) -> torch.Tensor:
    """(B, S, S) shape coverage -> (B, patches) soft targets: the covered fraction c of each patch
    as 2c - c^2, so that a half-covered patch counts as 0.75 (edges are what locate a shape)."""
    c = torch.from_numpy(coverage).unfold(1, patch, patch).unfold(2, patch, patch).mean((-1, -2)).flatten(1)
    return c * 2 - c ** 2


@dataclasses.dataclass
class _Run:
    """What one pretraining run works with: the model (compact token embedding in place), its
    caption stream and token ids, the background pool, the auxiliary heads and the optimiser."""

    model: nn.Module
    batches: list
    tokens: list
    pool: np.ndarray
    full_embedding: nn.Embedding
    ids: torch.Tensor
    patch: int
    image_heads: _Heads
    patch_head: nn.Linear
    text_heads: _Heads
    opt: torch.optim.Optimizer


def _prepare(recipe: PretrainRecipe) -> _Run:
    """A fresh seeded model with the init tweaks, its caption stream, heads and optimiser (in this
    order: the heads' random init follows the model's from the same torch RNG stream)."""
    model, spec = create_clip(recipe.model, seed=recipe.seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(recipe.init_logit_scale))
        model.visual.positional_embedding.mul_(recipe.pos_init_gain)
    tokenizer = get_tokenizer(spec)
    # The whole caption stream first (cheap): its token ids decide the trained embedding rows.
    batches = [sample_captions(recipe.seed, step, recipe.batch) for step in range(recipe.steps)]
    batches = [(scenes, caps[:recipe.text_batch]) for scenes, caps in batches]
    tokens = [tokenizer([c.text for c in caps]) if step >= recipe.image_steps else None  # vision-only
              for step, (_, caps) in enumerate(batches)]
    pool = background_pool(recipe.seed, recipe.backgrounds, recipe.image_size)
    full_embedding = model.token_embedding
    ids = torch.unique(torch.cat([t.reshape(-1) for t in tokens if t is not None]))
    model.token_embedding = _CompactEmbedding(full_embedding, ids)
    model.visual.output_tokens = True  # (pooled, patch tokens) while training

    dim = model.text_projection.shape[-1]
    patch = small_config(recipe.model)["vision_cfg"]["patch_size"]
    image_heads = _Heads(dim, ATTRIBUTES, weights={"color": recipe.color_weight})
    patch_head = nn.Linear(model.visual.transformer.width, 1)
    text_heads = _Heads(dim, {**{k: tuple(dict.fromkeys((*v, None))) for k, v in ATTRIBUTES.items()},
                              "verb": tuple(range(len(VERBS) + 1))},
                        recipe.text_head_scale, weights={"verb": recipe.verb_weight})
    opt = _optimizer(recipe, [*model.named_parameters(),
                              *(("visual.heads." + n, p) for n, p in image_heads.named_parameters()),
                              *(("visual.patch_head." + n, p) for n, p in patch_head.named_parameters()),
                              *(("text.heads." + n, p) for n, p in text_heads.named_parameters())])
    return _Run(model, batches, tokens, pool, full_embedding, ids, patch, image_heads, patch_head, text_heads, opt)


def _step_loss(recipe: PretrainRecipe, run: _Run, step: int, scenes: Sequence, captions: Sequence,
               tok: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of batch `step`: image heads (+ patch coverage), then, once the text side trains,
    the contrastive loss and the text heads; and the heads' batch accuracies."""
    model = run.model
    images, coverage = render_batch(scenes, recipe.seed, step, run.pool, recipe.noise)
    image_features, patch_tokens = model.visual(to_model_input(images))
    loss, accuracy = run.image_heads.loss(image_features, {
        k: [IGNORE if sc.empty and k != "empty" else getattr(sc, k) for sc in scenes]
        for k in ATTRIBUTES})
    if recipe.patch_aux_weight > 0:  # which patches the shape covers, from each patch token
        loss = loss + recipe.patch_aux_weight * F.binary_cross_entropy_with_logits(
            run.patch_head(patch_tokens).squeeze(-1), _patch_coverage(coverage, run.patch))
    loss = recipe.image_aux_weight * loss
    if tok is not None:
        text_features = _encode_captions(model, tok)
        loss = loss + contrastive_loss(image_features, text_features, model.logit_scale.exp(),
                                       _truth(scenes, captions))
        if recipe.text_aux_weight > 0:
            text_loss, text_accuracy = run.text_heads.loss(text_features, {
                **{k: [c.said.get(k) for c in captions] for k in ATTRIBUTES},
                "verb": [c.verb for c in captions]})
            loss = loss + recipe.text_aux_weight * text_loss
            accuracy.update({f"text {k}": v for k, v in text_accuracy.items()})
    return loss, accuracy


def _finish(run: _Run) -> nn.Module:
    """Write the trained embedding rows back into the full token embedding; eval mode."""
    model = run.model
    with torch.no_grad():
        run.full_embedding.weight[run.ids] = model.token_embedding.weight
    model.token_embedding = run.full_embedding
    model.visual.output_tokens = False
    return model.eval()


def train(recipe: PretrainRecipe, progress: Callable[[int, int, float], None] | None = None,
          threads: int = 1) -> tuple[nn.Module, dict]:
    """Pretrain a fresh `recipe.model` in memory; returns it (eval mode) and a summary.

    `progress(step, steps, loss)` is called after each step. `threads` other than 1 trades the
    bit-identity of the weights across machines for speed (see the module doc); the caller's
    thread count and global torch RNG state are left as they were.
    """
    recipe.validate()
    start = time.perf_counter()
    with _torch_state(threads):
        run = _prepare(recipe)
        run.model.train()
        losses: list[float] = []
        accuracies: list[dict[str, float]] = []
        for step, ((scenes, captions), tok) in enumerate(zip(run.batches, run.tokens)):
            for group in run.opt.param_groups:
                group["lr"] = _learning_rate(recipe, step, group["side"])
            loss, accuracy = _step_loss(recipe, run, step, scenes, captions, tok)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            run.opt.step()
            with torch.no_grad():
                run.model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            accuracies.append(accuracy)
            if progress is not None:
                progress(step + 1, recipe.steps, losses[-1])
        model = _finish(run)
    # How well the embeddings encode each attribute: the heads' accuracy on the last 10 (training) batches.
    heads = {k: round(float(np.mean([a[k] for a in accuracies[-10:] if k in a])), 3) for k in accuracies[-1]}
    summary = {"seconds": round(time.perf_counter() - start, 2), "threads": threads,
               "first_loss": round(losses[0], 4), "final_loss": round(float(np.mean(losses[-10:])), 4),
               "logit_scale": round(model.logit_scale.exp().item(), 3),
               "trained_token_rows": int(run.ids.numel()), "head_accuracy": heads}
    return model, summary


def pretrain_clip(recipe: PretrainRecipe, out_path: str | os.PathLike,
                  progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Pretrain `recipe.model` and save its `state_dict()` at `out_path` (atomically: temp + rename;
    the same weights give the same bytes). A sidecar `<out_path>.json` records the recipe, its hash
    and the training summary (seconds, losses, the heads' final training accuracies)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, summary = train(recipe, progress)
    meta = {"pretrain_version": PRETRAIN_VERSION, "generator_version": embedded.GENERATOR_VERSION,
            "hash": recipe_hash(recipe), "recipe": dataclasses.asdict(recipe), **summary}
    log.info("pretrained %s on synthetic frames in %.1f s (loss %.3f -> %.3f)", recipe.model,
             summary["seconds"], summary["first_loss"], summary["final_loss"])
    sidecar = json.dumps(meta, indent=2) + "\n"
    atomic_write(out.with_name(out.name + ".json"), lambda p: p.write_text(sidecar))
    buffer = io.BytesIO()  # saved via a buffer, the archive is named "archive", not after the temp file:
    torch.save(model.state_dict(), buffer)  # equal weights give byte-identical files (same sha256)
    atomic_write(out, lambda p: p.write_bytes(buffer.getvalue()))
    return out
