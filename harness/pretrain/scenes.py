"""Synthetic image-caption pairs for the pretraining of `harness-tiny`.

Data. A frame holds one shape (circle, square, triangle, diamond, star, arrow) of one of the
embedded colours (red, blue, yellow, purple, green, orange and the pair colours white, cyan, pink),
tiny/small/medium/large, at left/centre/right x top/middle/bottom, sometimes dark or faint, on an
embedded background (`embedded._background`, from a pool, turned and re-tinted) with pixel noise;
4% of frames are empty (the first frames of "appearing", half of "blinking"). Its caption states a
random subset of the attributes in a random template ("a small red circle on the left", "a photo
of a ...", "a video of ...", "A video about ... on a plain background.") and, 40% of the time, a
motion phrase of the embedded class names ("moving left", "bouncing", "rotating counter-clockwise",
...: `VERBS`), which a still frame cannot show.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from harness.data import embedded
from harness.data.embedded import _COLORS, _PAIR_COLORS, _background, _outline

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
