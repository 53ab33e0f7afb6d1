"""A miniature CLIP pretraining of this project's own: `harness-tiny` trained on synthetic still
frames with captions, deterministically from a seed, once, on first use (about half a minute).

Why: the embedded default runs on `harness-tiny`, and with random weights its frozen per-frame
features encode next to nothing, so frozen-backbone methods (adapters) barely learn and zero-shot
CLIP is at chance. Pretraining it on frames drawn with the SAME vocabulary as the embedded videos
(`harness.data.embedded`: its shape outlines, colours, backgrounds, compositing and noise) gives
image features that encode appearance (colour, position, size; shape only weakly: it is not learnt
in this budget) and a text tower that maps the matching words, so that prompts such as
"a photo of a {}." and "a video of {}" with the embedded class names land in-distribution.

Data. A frame holds one shape (circle, square, triangle, diamond, star, arrow) of one of the
embedded colours (red, blue, yellow, purple, green, orange and the pair colours white, cyan, pink),
tiny/small/medium/large, at left/centre/right x top/middle/bottom, sometimes dark or faint, on an
embedded background (`embedded._background`, from a pool, turned and re-tinted) with pixel noise;
4% of frames are empty (the first frames of "appearing", half of "blinking"). Its caption states a
random subset of the attributes in a random template ("a small red circle on the left", "a photo
of a ...", "a video of ...", "A video about ... on a plain background.") and, 40% of the time, a
motion phrase of the embedded class names ("moving left", "bouncing", "rotating counter-clockwise",
...: `VERBS`), which a still frame cannot show.

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

Reuse: `ensure_pretrained_tiny` caches the state dict at
`$HARNESS_CACHE/backbones/<model>-synthetic-<hash12>.pt` (`~/.cache/harness/backbones/` by default),
keyed by `recipe_hash` (the recipe, PRETRAIN_VERSION and the embedded GENERATOR_VERSION, since the
drawing helpers come from there), with a `.json` sidecar (recipe, timing, losses). It is written to
a temp file and renamed into place, under a file lock: concurrent first runs train once, and a
killed run leaves nothing that looks finished. Bump PRETRAIN_VERSION whenever a change here
changes the trained weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.atomic import atomic_write
from harness.backbone import SMALL_CONFIGS, create_clip, get_tokenizer, small_config
from harness.data import embedded
from harness.data.embedded import _COLORS, _PAIR_COLORS, _background, _outline
from harness.errors import HarnessError

log = logging.getLogger(__name__)

PRETRAIN_VERSION = "1"


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines the pretrained weights (its hash names the cached file)."""

    model: str = "harness-tiny"
    seed: int = 0
    steps: int = 300
    image_steps: int = 200      # first steps: the vision tower alone on the image heads (half the cost)
    batch: int = 32
    text_batch: int = 32        # captions per joint step (those of the first images of the batch)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 20
    lr_min_ratio: float = 0.02
    scale_lr_gain: float = 10.0    # the logit scale's learning rate, relative to lr
    image_aux_weight: float = 1.0  # weight of the image attribute heads' loss (`_Heads`; 0: none)
    color_weight: float = 1.0      # the colour head's weight among the image heads
    patch_aux_weight: float = 1.0  # weight of the patch coverage loss (within the image heads' loss)
    text_aux_weight: float = 1.0   # weight of the text heads' loss (0: none; both 0: plain CLIP)
    text_head_scale: float = 10.0  # scale of the text side's cosine classifiers
    verb_weight: float = 4.0       # the motion phrase head's weight among the text heads (class names apart)
    init_logit_scale: float = 5.0  # a low start (open_clip's is 14.3) keeps the features from collapsing
    pos_init_gain: float = 10.0    # image positional embedding init x10: position is learnt in the budget
    image_size: int = small_config("harness-tiny")["vision_cfg"]["image_size"]
    noise: float = 3.0          # std of pixel noise (0-255), as the embedded videos
    backgrounds: int = 1024     # size of the pool of embedded backgrounds

    def validate(self) -> None:
        if self.model not in SMALL_CONFIGS:
            raise HarnessError(f"pretrain recipe: model {self.model!r} is not one of this project's small "
                               f"configs ({', '.join(SMALL_CONFIGS)}).")
        size = small_config(self.model)["vision_cfg"]["image_size"]
        checks = [
            (self.image_size == size, f"image_size must be {size}, the image size of {self.model}"),
            (self.steps >= 1 and self.batch >= 2, "steps must be >= 1 and batch >= 2"),
            (2 <= self.text_batch <= self.batch, "text_batch must be in [2, batch]"),
            (0 <= self.image_steps < self.steps, "image_steps must be in [0, steps)"),
            (self.lr > 0 and self.weight_decay >= 0, "lr must be > 0 and weight_decay >= 0"),
            (0 <= self.warmup, "warmup must be >= 0"),
            (self.backgrounds >= 1, "backgrounds must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise HarnessError(f"pretrain recipe: {msg} (got {self}).")


def recipe_hash(recipe: PretrainRecipe) -> str:
    """sha256 of the canonical JSON of the recipe, PRETRAIN_VERSION and the embedded GENERATOR_VERSION."""
    payload = {"pretrain_version": PRETRAIN_VERSION, "generator_version": embedded.GENERATOR_VERSION,
               "recipe": dataclasses.asdict(recipe)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Synthetic image-caption pairs
# --------------------------------------------------------------------------------------------

#: Colour name -> RGB, the embedded dataset's: the named appearance colours and the pair colours.
COLORS: dict[str, tuple[float, ...]] = {
    **{name: tuple(map(float, rgb)) for name, rgb in _COLORS.items()},
    **{name: tuple(map(float, rgb)) for name, rgb in zip(("white", "cyan", "pink"), _PAIR_COLORS)},
}
#: Shape (an `embedded._outline` kind) -> the words a caption may use for it.
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circle", "ball", "disc"),
    "square": ("square", "square", "box"),
    "triangle": ("triangle", "triangle", "three-cornered shape"),
    "diamond": ("diamond", "diamond", "rhombus"),
    "star": ("star", "star", "five-pointed star"),
    "arrow": ("arrow", "pointed triangle", "arrow-like shape"),
}
#: Size word -> shape radius range (fraction of the image side; the outline has unit radius).
SIZES: dict[str, tuple[float, float]] = {"tiny": (0.035, 0.06), "small": (0.075, 0.13), "large": (0.17, 0.28)}
_MEDIUM = (0.13, 0.17)  # drawn without a size word
#: Position bins (fraction of the image side) and their words.
_BINS = {"left": (0.14, 0.33), "centre": (0.42, 0.58), "right": (0.67, 0.86)}
_VBINS = {"top": (0.14, 0.33), "middle": (0.42, 0.58), "bottom": (0.67, 0.86)}


def _class_verbs() -> tuple[str, ...]:
    """What the embedded class names say a shape does ("moving left", "bouncing", ...), in order."""
    verbs = []
    for c in embedded.MAIN_CLASSES + embedded.ZS_CLASSES:
        words = c.name.split()
        verbs.append(" ".join(words[2:] if words[1] == "shape" else words[3:]))
    return tuple(dict.fromkeys(verbs + ["moving", "rotating"]))


#: Motion phrases of the embedded class names: no still-frame correlate, so they don't enter the
#: truth test, but a text head must tell them apart (`_Heads`), so that class names that differ
#: only in them ("a shape growing" / "a shape shrinking") keep distinct text features.
VERBS: tuple[str, ...] = _class_verbs()
#: What a caption of a frame with nothing drawn says.
EMPTY: tuple[str, ...] = ("an empty background", "a plain background", "an empty frame",
                          "nothing but the background")
TEMPLATES: tuple[str, ...] = (
    "{}", "{}.", "a photo of {}.", "a photo of a {}.", "a video of {}", "a video of {}.",
    "an image of {}.", "a picture of {}.", "there is {}.", "A video about {} on a plain background.",
    "A video about {}.", "a frame of a video of {}.",
)


@dataclass(frozen=True)
class Scene:
    """The attributes of one drawn frame."""

    shape: str
    color: str
    size: str | None      # None: medium (no size word)
    h: str                # left / centre / right
    v: str                # top / middle / bottom
    dark: bool
    faint: bool
    empty: bool = False   # nothing drawn (the other fields are then meaningless): appearing/blinking frames


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene (every attribute uniform, except dark 15%, faint 12%, empty 4%)."""
    return Scene(
        shape=list(SHAPES)[rng.integers(len(SHAPES))],
        color=list(COLORS)[rng.integers(len(COLORS))],
        size=(list(SIZES) + [None])[rng.integers(len(SIZES) + 1)],
        h=list(_BINS)[rng.integers(3)],
        v=list(_VBINS)[rng.integers(3)],
        dark=bool(rng.random() < 0.15),
        faint=bool(rng.random() < 0.12),
        empty=bool(rng.random() < 0.04),
    )


def render_scene(scene: Scene, rng: np.random.Generator, background: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Draw `scene` over `background` (float32 (S, S, 3)) as `embedded.render_clip` composites a
    frame; returns it (float32 (S, S, 3), without pixel noise) and the shape's coverage (S, S) in [0, 1]."""
    import cv2

    S = background.shape[0]
    radius = rng.uniform(*(SIZES[scene.size] if scene.size else _MEDIUM)) * S
    x, y = rng.uniform(*_BINS[scene.h]) * S, rng.uniform(*_VBINS[scene.v]) * S
    angle = rng.uniform(-0.3, 0.3) if rng.random() < 0.5 else rng.uniform(0, 2 * np.pi)
    color = np.asarray(COLORS[scene.color], np.float32) * (rng.uniform(0.15, 0.45) if scene.dark else 1.0)
    color = np.clip(color + rng.uniform(-12, 12, 3).astype(np.float32), 0, 255)
    opacity = 0.0 if scene.empty else rng.uniform(0.12, 0.5) if scene.faint else 1.0
    c, s = np.cos(angle), np.sin(angle)
    pts = _outline(scene.shape) @ np.array([[c, s], [-s, c]]) * radius
    mask = np.zeros((S, S), np.uint8)
    cv2.fillPoly(mask, [np.round((pts + (x, y)) * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = (mask.astype(np.float32) * (opacity / 255.0))[..., None]
    return background * (1 - alpha) + color * alpha, mask.astype(np.float32) * (opacity > 0) / 255.0


def background_pool(seed: int, n: int, size: int) -> np.ndarray:
    """n embedded backgrounds (`embedded._background`), float32 (n, S, S, 3)."""
    rng = np.random.default_rng([seed, 19])
    return np.stack([_background(rng, size) for _ in range(n)])


def _pick_background(pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pool background, turned/flipped and re-tinted (drawing a fresh one per image costs more
    than the training step's share; this keeps their look at a 64th of the cost)."""
    bg = np.rot90(pool[rng.integers(len(pool))], rng.integers(4))
    bg = bg[:, ::-1] if rng.random() < 0.5 else bg
    return bg + rng.uniform(-10, 10, 3).astype(np.float32)


def _position_phrase(h: str | None, v: str | None, rng: np.random.Generator | None) -> str:
    """Words for a position; `rng` picks between synonyms (needed only when both h and v are given)."""
    if h and v:
        if h == "centre" and v == "middle":
            return ["in the centre", "in the middle"][rng.integers(2)]
        if h == "centre":
            return f"at the {v}"
        if v == "middle":
            return f"on the {h}"
        return [f"at the {v} {h}", f"in the {v} {h}"][rng.integers(2)]
    if h:
        return "in the centre" if h == "centre" else f"on the {h}"
    return "in the middle" if v == "middle" else f"at the {v}"


@dataclass(frozen=True)
class Caption:
    """A caption, the drawn attributes it states (its truth test, `_truth`) and its verb (an index
    into VERBS, len(VERBS) for none; no truth value: a still frame shows no motion)."""

    text: str
    said: dict
    verb: int


def caption_scene(scene: Scene, rng: np.random.Generator) -> Caption:
    """A caption stating a random subset of the attributes of `scene`, in a random template."""
    keep = lambda p: bool(rng.random() < p)  # noqa: E731
    verb = int(rng.integers(len(VERBS))) if keep(0.4) else len(VERBS)
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    if scene.empty:
        return Caption(template.format(EMPTY[rng.integers(len(EMPTY))]), {"empty": True}, len(VERBS))
    said: dict[str, object] = {}
    if keep(0.8):
        said["color"] = scene.color
    if keep(0.75):
        said["shape"] = scene.shape
    if scene.size and keep(0.6):
        said["size"] = scene.size
    if keep(0.7):
        said["h"] = scene.h
    if keep(0.5):
        said["v"] = scene.v
    if scene.dark and keep(0.7):
        said["dark"] = True
    if scene.faint and keep(0.7):
        said["faint"] = True
    if not said:
        said["color"] = scene.color
    words = [w for w, on in (("tiny", said.get("size") == "tiny"), ("small", said.get("size") == "small"),
                             ("large", said.get("size") == "large"), ("faint", "faint" in said),
                             ("dark", "dark" in said)) if on]
    if "color" in said:
        words.append(scene.color)
    nouns = SHAPES[scene.shape]
    words.append(nouns[rng.integers(len(nouns))] if "shape" in said else "shape")
    phrase = " ".join(words)
    phrase = ("an " if phrase[0] in "aeiou" else "a ") + phrase
    has_pos = "h" in said or "v" in said
    pos = _position_phrase(said.get("h"), said.get("v"), rng) if has_pos else ""  # type: ignore[arg-type]
    parts = [phrase] + ([pos, VERBS[verb]] if verb < len(VERBS) and keep(0.7) else
                        [VERBS[verb], pos] if verb < len(VERBS) else [pos])
    text = " ".join(p for p in parts if p)
    return Caption(template.format(text), said, verb)


def _truth(scenes: Sequence[Scene], captions: Sequence[Caption]) -> torch.Tensor:
    """(images, captions) bool: caption j is true of image i (every attribute it states holds)."""
    def holds(sc: Scene, said: dict) -> bool:
        if sc.empty:
            return said == {"empty": True}
        return all(getattr(sc, k) == v for k, v in said.items())
    return torch.tensor([[holds(sc, c.said) for c in captions] for sc in scenes])


def vocabulary() -> set[str]:
    """Every word a caption can contain (for checking that prompts are in-distribution)."""
    words = set()
    for text in (list(TEMPLATES) + list(COLORS) + [w for n in SHAPES.values() for w in n] + list(SIZES)
                 + ["faint", "dark", "shape", "a", "an", "in the centre middle", "at on the"] + list(EMPTY)
                 + list(_BINS) + list(_VBINS) + list(VERBS)):
        words.update(text.replace("{}", " ").replace(".", " ").replace("-", " ").lower().split())
    return words


def sample_captions(seed: int, step: int, batch: int) -> tuple[list[Scene], list[Caption]]:
    """The scenes of batch `step` of the stream of `seed` and their captions."""
    rng = np.random.default_rng([seed, 17, step])
    scenes = [sample_scene(rng) for _ in range(batch)]
    return scenes, [caption_scene(sc, rng) for sc in scenes]


def render_batch(scenes: Sequence[Scene], seed: int, step: int, pool: np.ndarray, noise: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (B, S, S, 3) images of batch `step` (its own random stream: the captions don't shift
    it) and the shapes' coverage (B, S, S)."""
    rng = np.random.default_rng([seed, 18, step])
    drawn = [render_scene(sc, rng, _pick_background(pool, rng)) for sc in scenes]
    frames = np.stack([f for f, _ in drawn])
    if noise > 0:
        frames += noise * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8), np.stack([c for _, c in drawn])


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, H, W), CLIP's mean/std."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

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

        model.train()
        losses: list[float] = []
        accuracies: list[dict[str, float]] = []
        for step, ((scenes, captions), tok) in enumerate(zip(batches, tokens)):
            for group in opt.param_groups:
                group["lr"] = _learning_rate(recipe, step, group["side"])
            images, coverage = render_batch(scenes, recipe.seed, step, pool, recipe.noise)
            image_features, patch_tokens = model.visual(to_model_input(images))
            loss, accuracy = image_heads.loss(image_features, {
                k: [IGNORE if sc.empty and k != "empty" else getattr(sc, k) for sc in scenes]
                for k in ATTRIBUTES})
            if recipe.patch_aux_weight > 0:  # which patches the shape covers, from each patch token
                loss = loss + recipe.patch_aux_weight * F.binary_cross_entropy_with_logits(
                    patch_head(patch_tokens).squeeze(-1), _patch_coverage(coverage, patch))
            loss = recipe.image_aux_weight * loss
            if tok is not None:
                text_features = _encode_captions(model, tok)
                loss = loss + contrastive_loss(image_features, text_features, model.logit_scale.exp(),
                                               _truth(scenes, captions))
                if recipe.text_aux_weight > 0:
                    text_loss, text_accuracy = text_heads.loss(text_features, {
                        **{k: [c.said.get(k) for c in captions] for k in ATTRIBUTES},
                        "verb": [c.verb for c in captions]})
                    loss = loss + recipe.text_aux_weight * text_loss
                    accuracy.update({f"text {k}": v for k, v in text_accuracy.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            accuracies.append(accuracy)
            if progress is not None:
                progress(step + 1, recipe.steps, losses[-1])

        with torch.no_grad():
            full_embedding.weight[ids] = model.token_embedding.weight
        model.token_embedding = full_embedding
        model.visual.output_tokens = False
        model.eval()
    # How well the embeddings encode each attribute: the heads' accuracy on the last 10 (training) batches.
    heads = {k: round(float(np.mean([a[k] for a in accuracies[-10:] if k in a])), 3) for k in accuracies[-1]}
    summary = {"seconds": round(time.perf_counter() - start, 2), "threads": threads,
               "first_loss": round(losses[0], 4), "final_loss": round(float(np.mean(losses[-10:])), 4),
               "logit_scale": round(model.logit_scale.exp().item(), 3),
               "trained_token_rows": int(ids.numel()), "head_accuracy": heads}
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


# --------------------------------------------------------------------------------------------
# Zero-shot probe
# --------------------------------------------------------------------------------------------

#: Probe tasks: attribute, the values told apart, the prompt of each value.
PROBES: dict[str, tuple[str, tuple, Callable[[object], str]]] = {
    "color4": ("color", ("red", "blue", "green", "yellow"), lambda c: f"a photo of a {c} shape."),
    "color9": ("color", tuple(COLORS), lambda c: f"a photo of a {c} shape."),
    "position3": ("h", tuple(_BINS), lambda h: f"a photo of a shape {_position_phrase(h, None, None)}."),
    "vertical3": ("v", tuple(_VBINS), lambda v: f"a photo of a shape {_position_phrase(None, v, None)}."),
    "size3": ("size", tuple(SIZES), lambda z: f"a photo of a {z} shape."),
    "shape6": ("shape", tuple(SHAPES), lambda k: f"a photo of a {k}."),
}


@torch.no_grad()
def probe_zero_shot(model: nn.Module, tokenizer, n: int = 240, seed: int = 4242) -> dict[str, float]:
    """Zero-shot accuracy of `model` on held-out synthetic frames, per task of PROBES: frame i of a
    task shows value i % k (other attributes random; not dark, faint or empty), scored against the
    k prompts. Chance is 1/k."""
    rng = np.random.default_rng([seed, 23])
    pool = background_pool(seed + 1, 64, int(model.visual.image_size[0]))
    was_training = model.training
    model.eval()
    out = {}
    for task, (attr, values, prompt) in PROBES.items():
        scenes = [dataclasses.replace(sample_scene(rng), dark=False, faint=False, empty=False,
                                      **{attr: values[i % len(values)]}) for i in range(n)]
        frames = np.stack([render_scene(sc, rng, _pick_background(pool, rng))[0] for sc in scenes])
        frames += 3.0 * rng.standard_normal(frames.shape, dtype=np.float32)
        frames = np.clip(frames, 0, 255).astype(np.uint8)
        image = F.normalize(model.encode_image(to_model_input(frames)), dim=-1)
        text = F.normalize(model.encode_text(tokenizer([prompt(v) for v in values])), dim=-1)
        hits = (image @ text.t()).argmax(1).numpy() == np.arange(n) % len(values)
        out[task] = round(float(hits.mean()), 3)
    model.train(was_training)
    return out


def default_cache_dir() -> Path:
    """`$HARNESS_CACHE/backbones`, else `~/.cache/harness/backbones`."""
    env = os.environ.get(embedded.CACHE_ENV)
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "harness") / "backbones"


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock on `path` (POSIX flock; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename alone keeps it safe
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrained_path(recipe: PretrainRecipe | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `ensure_pretrained_tiny` keeps the weights of `recipe` (whether or not they exist yet)."""
    recipe = recipe or PretrainRecipe()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / f"{recipe.model}-synthetic-{recipe_hash(recipe)[:12]}.pt"


def ensure_pretrained_tiny(cache_dir: str | os.PathLike | None = None, recipe: PretrainRecipe | None = None,
                           progress: Callable[[int, int, float], None] | None = None) -> Path:
    """The path of the pretrained weights of `recipe` (default: harness-tiny) in `cache_dir`
    (default: `default_cache_dir()`), training and saving them first if they are not there."""
    recipe = recipe or PretrainRecipe()
    recipe.validate()
    path = pretrained_path(recipe, cache_dir)
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_name(path.name + ".lock")):
            for stale in path.parent.glob(f".{path.name}*.tmp"):  # a killed run's (we hold the lock)
                stale.unlink(missing_ok=True)
            if not path.is_file():  # another process may have finished it while we waited
                log.info("pretraining %s on synthetic frames (once, about half a minute) -> %s",
                         recipe.model, path)
                pretrain_clip(recipe, path, progress)
    except OSError as exc:
        raise HarnessError(f"cannot write the pretrained backbone cache {path.parent}: {exc}. Set "
                           f"{embedded.CACHE_ENV} to a writable folder.") from exc
    return path
