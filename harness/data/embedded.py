"""The embedded default dataset: small synthetic videos generated from a seed on first use.

Why: `harness run` must work (and finish in minutes on a laptop CPU) for a user with no video
data, and it must still measure what the benchmark is about: whether a method uses temporal
ORDER. So the classes include pairs that differ only in order ("a shape moving left" vs "... right",
growing vs shrinking, clockwise vs counter-clockwise, appearing vs disappearing): the second member
of each pair is rendered as the exact time reversal of a random clip of the first kind, so a
frame-order-blind model (mean-pooled frames) cannot tell the two apart. Appearance classes
(e.g. "a red circle bouncing") give order-blind methods something to learn as well.

The videos are real encoded files (H.264 .mp4, decodable by decord) in the same layout as the
upstream ViFi-CLIP splits, so the same protocol code (dataset keys `embedded`, `embedded_zs`,
see `harness.data.datasets`) selects the files. The generated folder is both the splits root
and the data root::

    <root>/recipe.json                          # recipe, its hash, generator version (written last)
    <root>/videos/<pool>_<class key>_<nnn>.mp4
    <root>/labels/embedded_labels.csv           # 12 classes; ids 0-5 base, 6-11 novel
    <root>/labels/embedded_{base,novel}_labels.csv, embedded_zs_labels.csv
    <root>/datasets_splits/base2novel_splits/embedded_splits/fs_base_s{1,2,3}_train.txt, base_val.txt, novel_val.txt
    <root>/datasets_splits/embedded_splits/train.txt, val.txt, val1.txt, train1_few_shot_{2,4,8,16}.txt
    <root>/datasets_splits/embedded_zs_splits/val{1,2,3}.txt
    <root>/description/2_{s,t}_description_embedded[_base|_novel|_zs].json   # ETL4Video format
    <root>/descriptors/embedded[_zs]/{spatio,temporal}_descriptors/4_descriptors.json  # OST format

Reuse is keyed by `recipe_hash` (the recipe and GENERATOR_VERSION; the encoded bytes repeat for a
given libx264 build, see `X264_OPTIONS`, but another build of the encoder may write others): `<cache>/<hash[:12]>/` is generated only if its
`recipe.json` is absent or names another hash. Generation writes into a temp folder and renames
it into place, so a killed or concurrent run never leaves a half dataset that looks finished.
Bump GENERATOR_VERSION whenever a change here changes what is drawn.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.annotations import AnnotationEntry, write_annotation_list, write_class_csv
from harness.data.embedded_descriptors import ensure_descriptor_files
from harness.errors import HarnessError
from harness.paths import CACHE_ENV, cache_root

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"  # 2: deterministic H.264 (X264_OPTIONS, numpy RGB -> YUV)
_STALE_TMP_SECONDS = 3600.0


@dataclass(frozen=True)
class EmbeddedRecipe:
    """Everything that determines the generated dataset (its hash names the cache folder)."""

    seed: int = 2048
    num_frames: int = 16
    frame_size: int = 64
    fps: int = 8
    train_per_class: int = 20   # training pool per main class (full-supervision train list)
    val_per_class: int = 8      # validation videos per main class
    zs_pool_per_class: int = 12  # zero-shot target videos per class; each val{k} draws from it
    zs_val_per_class: int = 8
    shots: int = 16             # base-to-novel shots per base class
    few_shot_ks: tuple[int, ...] = (2, 4, 8, 16)
    crf: int = 18
    noise: float = 3.0          # std of per-frame pixel noise (0-255 scale)
    # True: clip i of a reversed class is the time reversal of clip i of its forward partner (same
    # seed), so within a pair the two classes share every appearance and only the order differs:
    # a model cannot fit the pairs by memorising per-clip looks (docs/embedded-benchmark.md).
    reversal_twins: bool = False

    def validate(self) -> None:
        """Raise HarnessError naming the first option that cannot produce a valid dataset."""
        checks = [
            (self.num_frames >= 2, "num_frames must be >= 2"),
            (self.frame_size >= 32 and self.frame_size % 2 == 0, "frame_size must be even and >= 32"),
            (self.fps >= 1, "fps must be >= 1"),
            (min(self.train_per_class, self.val_per_class, self.zs_pool_per_class) >= 1,
             "per-class counts must be >= 1"),
            (self.shots <= self.train_per_class, f"shots={self.shots} exceeds train_per_class"),
            (max(self.few_shot_ks, default=0) <= self.train_per_class,
             f"few_shot_ks={self.few_shot_ks} exceed train_per_class"),
            (1 <= self.zs_val_per_class <= self.zs_pool_per_class,
             "zs_val_per_class must be in [1, zs_pool_per_class]"),
            (0 <= self.crf <= 51, "crf must be in [0, 51]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise HarnessError(f"embedded dataset recipe: {msg} (got {self}).")


_LATER_OPTIONS = {"reversal_twins": False}

#: Named recipes a profile can select (`dataset_recipe:` in protocols/profiles.yaml).
#: `small` is the original default: 48-video evaluation sets, fast enough for the test suite.
#: `benchmark` is the embedded benchmark's setting (docs/embedded-benchmark.md): 600-video
#: base / novel / zero-shot evaluation sets and 1,200 fully supervised validation videos (binomial
#: standard error <= 2.04 points at any accuracy), and reversal twins, so that the order-only
#: pairs cannot be fitted by memorising each clip's look (an order-blind model stays near 50%).
NAMED_RECIPES: dict[str, EmbeddedRecipe] = {
    "small": EmbeddedRecipe(),
    "benchmark": EmbeddedRecipe(val_per_class=100, zs_pool_per_class=120, zs_val_per_class=100,
                                reversal_twins=True),
}


def named_recipe(name: str) -> EmbeddedRecipe:
    """The recipe called `name`; a clear error listing the names otherwise."""
    if name not in NAMED_RECIPES:
        raise HarnessError(f"unknown embedded dataset recipe {name!r}; known: {', '.join(NAMED_RECIPES)} "
                           f"(protocols/profiles.yaml `dataset_recipe:`)")
    return NAMED_RECIPES[name]


def recipe_hash(recipe: EmbeddedRecipe) -> str:
    """sha256 of the canonical JSON of the recipe plus GENERATOR_VERSION."""
    fields = dataclasses.asdict(recipe)
    # Options added after the first release enter the hash only when they differ from their
    # default, so that adding one does not invalidate every existing cache.
    for name, default in _LATER_OPTIONS.items():
        if fields[name] == default:
            del fields[name]
    payload = {"generator_version": GENERATOR_VERSION, "recipe": fields}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Classes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassDef:
    """A class: its prompt name, file key, how it is drawn, and its ETL4Video-style descriptions.

    `reverse=True` means: draw a clip with `motion` and play it backwards.
    """

    name: str
    key: str
    motion: str
    spatial: tuple[str, str]
    temporal: tuple[str, str]
    reverse: bool = False


_PLAIN = ("A video about a single small shape on a plain, slightly noisy background.",
          "A video about a white, cyan or pink square, circle or triangle on a tinted backdrop.")
_POINTED = ("A video about a pointed triangle on a plain, slightly noisy background.",
            "A video about a white, cyan or pink arrow-like shape on a tinted backdrop.")


def _appearance(color: str, shape: str, alt: str) -> tuple[str, str]:
    return (f"A video about a small {color} {shape} on a grey background.",
            f"A video about {alt} in front of a plain backdrop.")


BASE_CLASSES: tuple[ClassDef, ...] = (
    ClassDef("a shape moving left", "move_left", "move_left", _PLAIN,
             ("A video about a shape that starts on the right and ends on the left.",
              "A video about a shape sliding steadily from right to left.")),
    ClassDef("a shape moving right", "move_right", "move_left", _PLAIN,
             ("A video about a shape that starts on the left and ends on the right.",
              "A video about a shape sliding steadily from left to right."), reverse=True),
    ClassDef("a shape growing", "grow", "grow", _PLAIN,
             ("A video about a shape that starts tiny and ends large.",
              "A video about a shape expanding steadily in place.")),
    ClassDef("a shape shrinking", "shrink", "grow", _PLAIN,
             ("A video about a shape that starts large and ends tiny.",
              "A video about a shape contracting steadily in place."), reverse=True),
    ClassDef("a red circle bouncing", "red_circle_bounce", "bounce",
             _appearance("red", "circle", "a red ball"),
             ("A video about a red circle that falls, hits the bottom and rises again.",
              "A video about a ball moving up and down in repeated bounces.")),
    ClassDef("a blue square shaking", "blue_square_shake", "shake",
             _appearance("blue", "square", "a blue box"),
             ("A video about a square that trembles around one spot.",
              "A video about a square making small random jumps back and forth.")),
)

NOVEL_CLASSES: tuple[ClassDef, ...] = (
    ClassDef("a shape rotating clockwise", "rotate_cw", "rotate_cw", _POINTED,
             ("A video about a pointed shape turning in the direction of clock hands.",
              "A video about a triangle whose tip sweeps from the top to the right to the bottom.")),
    ClassDef("a shape rotating counter-clockwise", "rotate_ccw", "rotate_cw", _POINTED,
             ("A video about a pointed shape turning against the direction of clock hands.",
              "A video about a triangle whose tip sweeps from the top to the left to the bottom."),
             reverse=True),
    ClassDef("a shape appearing", "appear", "appear", _PLAIN,
             ("A video about an empty background where a shape slowly fades into view.",
              "A video about a shape that is invisible at first and clearly visible at the end.")),
    ClassDef("a shape disappearing", "disappear", "appear", _PLAIN,
             ("A video about a shape that fades away until only the background is left.",
              "A video about a shape that is clearly visible at first and invisible at the end."),
             reverse=True),
    ClassDef("a yellow star pulsing", "yellow_star_pulse", "pulse",
             _appearance("yellow", "star", "a five-pointed yellow star"),
             ("A video about a star that swells and shrinks again and again.",
              "A video about a star beating like a heart in one place.")),
    ClassDef("a purple diamond drifting", "purple_diamond_drift", "drift",
             _appearance("purple", "diamond", "a violet rhombus"),
             ("A video about a diamond gliding slowly for a short distance.",
              "A video about a diamond that floats gently without turning.")),
)

ZS_CLASSES: tuple[ClassDef, ...] = (
    ClassDef("a shape moving up", "move_up", "move_up", _PLAIN,
             ("A video about a shape that starts at the bottom and ends at the top.",
              "A video about a shape rising steadily from bottom to top.")),
    ClassDef("a shape moving down", "move_down", "move_up", _PLAIN,
             ("A video about a shape that starts at the top and ends at the bottom.",
              "A video about a shape sinking steadily from top to bottom."), reverse=True),
    ClassDef("a shape getting brighter", "brighten", "brighten", _PLAIN,
             ("A video about a shape that starts dark and ends bright.",
              "A video about a shape whose colour glows stronger over time.")),
    ClassDef("a shape getting darker", "darken", "brighten", _PLAIN,
             ("A video about a shape that starts bright and ends dark.",
              "A video about a shape whose colour fades towards black over time."), reverse=True),
    ClassDef("a green triangle spinning", "green_triangle_spin", "spin",
             _appearance("green", "triangle", "a green three-cornered shape"),
             ("A video about a triangle turning round and round in place.",
              "A video about a triangle spinning about its centre.")),
    ClassDef("an orange circle blinking", "orange_circle_blink", "blink",
             _appearance("orange", "circle", "an orange disc"),
             ("A video about a circle that switches on and off repeatedly.",
              "A video about a circle flashing in and out of view.")),
)

MAIN_CLASSES: tuple[ClassDef, ...] = BASE_CLASSES + NOVEL_CLASSES

#: FROSTER-style rephrased class names ("<Name>: <what the video shows>", the format of FROSTER's
#: LLM-rephrased label files), written for the embedded classes as their ETL4Video-style
#: descriptions are: by hand, from how each class is drawn. Short enough for harness-tiny's
#: 32-token context with FROSTER's longest template in front. Not part of the generated files:
#: `harness.data.rephrased` reads them from here and records their sha256 in each job.
REPHRASED: dict[str, str] = {
    "a shape moving left": "A shape moving left: one shape slides from the right edge to the left",
    "a shape moving right": "A shape moving right: one shape slides from the left edge to the right",
    "a shape growing": "A shape growing: a small shape swells steadily until it is large",
    "a shape shrinking": "A shape shrinking: a large shape contracts steadily until it is tiny",
    "a red circle bouncing": "A red circle bouncing: a red ball drops, hits the floor and springs up",
    "a blue square shaking": "A blue square shaking: a blue box trembles and jitters around one spot",
    "a shape rotating clockwise": "A shape rotating clockwise: a pointed shape turns the way clock hands go",
    "a shape rotating counter-clockwise":
        "A shape rotating counter-clockwise: a pointed shape turns against the way clock hands go",
    "a shape appearing": "A shape appearing: an empty backdrop where a shape slowly fades into view",
    "a shape disappearing": "A shape disappearing: a visible shape fades until only the backdrop is left",
    "a yellow star pulsing": "A yellow star pulsing: a yellow star swells and shrinks again like a heartbeat",
    "a purple diamond drifting": "A purple diamond drifting: a purple diamond glides slowly and gently",
    "a shape moving up": "A shape moving up: one shape rises from the bottom edge to the top",
    "a shape moving down": "A shape moving down: one shape sinks from the top edge to the bottom",
    "a shape getting brighter": "A shape getting brighter: a dim shape glows more strongly over time",
    "a shape getting darker": "A shape getting darker: a bright shape fades towards black over time",
    "a green triangle spinning": "A green triangle spinning: a green triangle turns round about its centre",
    "an orange circle blinking": "An orange circle blinking: an orange disc flashes on and off repeatedly",
}

#: Class-name pairs that differ only in temporal order (second = time reversal of the first).
ORDER_PAIRS: list[tuple[str, str]] = [
    (a.name, b.name)
    for group in (MAIN_CLASSES, ZS_CLASSES)
    for a in group for b in group
    if b.reverse and not a.reverse and a.motion == b.motion
]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_PAIR_COLORS = np.array([[235, 235, 235], [40, 210, 220], [240, 110, 180]], np.float32)  # white cyan pink
_PAIR_SHAPES = ("square", "circle", "triangle")
_COLORS = {
    "red": (215, 35, 35), "blue": (40, 70, 225), "yellow": (240, 215, 40),
    "purple": (145, 50, 195), "green": (40, 185, 60), "orange": (245, 140, 30),
}


def _outline(kind: str) -> np.ndarray:
    """Unit-size polygon (K, 2) of a shape, centred on the origin, y pointing down."""
    if kind == "circle":
        a = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        return np.stack([np.cos(a), np.sin(a)], 1)
    if kind == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.85
    if kind == "diamond":
        return np.array([[0, -1.2], [0.8, 0], [0, 1.2], [-0.8, 0]], float)
    if kind == "triangle":
        a = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(a), np.sin(a)], 1) * 1.1
    if kind == "arrow":  # isosceles, no rotational symmetry: its direction of turn is visible
        return np.array([[0, -1.5], [0.65, 0.9], [-0.65, 0.9]], float)
    if kind == "star":
        a = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.2, 0.5)
        return np.stack([np.cos(a) * r, np.sin(a) * r], 1)
    raise ValueError(kind)


@dataclass
class _Track:
    """Per-frame state of the single shape in a clip (arrays of length T)."""

    kind: str
    color: np.ndarray      # (T, 3)
    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    angle: np.ndarray      # radians; increasing = clockwise on screen (y points down)
    opacity: np.ndarray


def _track(rng: np.random.Generator, motion: str, T: int, S: int) -> _Track:
    """Random parameters for one clip of `motion` (forward time)."""
    u = np.linspace(0.0, 1.0, T)
    ones = np.ones(T)

    def pair_look() -> tuple[str, np.ndarray]:
        kind = _PAIR_SHAPES[rng.integers(len(_PAIR_SHAPES))]
        return kind, _PAIR_COLORS[rng.integers(len(_PAIR_COLORS))]

    def fixed_look(name: str) -> np.ndarray:
        return np.array(_COLORS[name], np.float32)

    def lerp(a: float, b: float) -> np.ndarray:
        return a + (b - a) * u

    angle0 = rng.uniform(0, 2 * np.pi) * ones
    if motion in ("move_left", "move_up"):
        kind, color = pair_look()
        start, end = rng.uniform(0.72, 0.86) * S, rng.uniform(0.14, 0.28) * S
        across = rng.uniform(0.3, 0.7) * S + lerp(0, rng.uniform(-0.04, 0.04) * S)
        along = lerp(start, end)
        x, y = (along, across) if motion == "move_left" else (across, along)
        size, opacity, angle = rng.uniform(0.09, 0.13) * S * ones, ones, angle0
    elif motion == "grow":
        kind, color = pair_look()
        x, y = rng.uniform(0.38, 0.62, 2) * S
        size = lerp(rng.uniform(0.03, 0.05) * S, rng.uniform(0.2, 0.26) * S)
        opacity, angle = ones, angle0
    elif motion == "rotate_cw":
        kind, color = "arrow", _PAIR_COLORS[rng.integers(len(_PAIR_COLORS))]
        x, y = rng.uniform(0.4, 0.6, 2) * S
        speed = np.deg2rad(rng.uniform(10, 16))
        angle = angle0 + speed * np.arange(T)
        size, opacity = rng.uniform(0.17, 0.22) * S * ones, ones
    elif motion == "appear":
        kind, color = pair_look()
        x, y = rng.uniform(0.3, 0.7, 2) * S
        lo = rng.uniform(0.0, 0.15)
        opacity = np.clip((u - lo) / rng.uniform(0.5, 0.7), 0, 1)
        size, angle = rng.uniform(0.11, 0.16) * S * ones, angle0
    elif motion == "brighten":
        kind, color = pair_look()
        x, y = rng.uniform(0.3, 0.7, 2) * S
        gain = lerp(rng.uniform(0.1, 0.25), 1.0)
        color = color[None, :] * gain[:, None]
        size, opacity, angle = rng.uniform(0.12, 0.17) * S * ones, ones, angle0
    elif motion == "bounce":
        kind, color = "circle", fixed_look("red")
        x = rng.uniform(0.3, 0.7) * S + lerp(0, rng.uniform(-0.12, 0.12) * S)
        ground, height = rng.uniform(0.72, 0.8) * S, rng.uniform(0.3, 0.45) * S
        y = ground - height * np.abs(np.sin(np.pi * rng.uniform(1.0, 2.0) * u + rng.uniform(0, np.pi)))
        size, opacity, angle = rng.uniform(0.08, 0.11) * S * ones, ones, 0 * ones
    elif motion == "shake":
        kind, color = "square", fixed_look("blue")
        cx, cy = rng.uniform(0.35, 0.65, 2) * S
        x, y = cx + rng.normal(0, 0.04 * S, T), cy + rng.normal(0, 0.04 * S, T)
        angle = rng.uniform(-0.2, 0.2) + rng.normal(0, 0.08, T)
        size, opacity = rng.uniform(0.1, 0.14) * S * ones, ones
    elif motion == "pulse":
        kind, color = "star", fixed_look("yellow")
        x, y = rng.uniform(0.35, 0.65, 2) * S
        size = rng.uniform(0.12, 0.16) * S * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * u
                                                               + rng.uniform(0, 2 * np.pi)))
        opacity, angle = ones, rng.uniform(-0.3, 0.3) * ones
    elif motion == "drift":
        kind, color = "diamond", fixed_look("purple")
        direction = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.05, 0.12) * S
        x = rng.uniform(0.35, 0.65) * S + np.cos(direction) * dist * u
        y = rng.uniform(0.35, 0.65) * S + np.sin(direction) * dist * u
        size, opacity, angle = rng.uniform(0.1, 0.14) * S * ones, ones, 0 * ones
    elif motion == "spin":
        kind, color = "triangle", fixed_look("green")
        x, y = rng.uniform(0.38, 0.62, 2) * S
        angle = angle0 + rng.choice([-1, 1]) * np.deg2rad(rng.uniform(8, 14)) * np.arange(T)
        size, opacity = rng.uniform(0.13, 0.18) * S * ones, ones
    elif motion == "blink":
        kind, color = "circle", fixed_look("orange")
        x, y = rng.uniform(0.3, 0.7, 2) * S
        period = rng.uniform(4, 6)
        opacity = ((np.arange(T) / period + rng.uniform(0, 1)) % 1.0 < 0.5).astype(float)
        size, angle = rng.uniform(0.1, 0.14) * S * ones, angle0
    else:
        raise ValueError(f"unknown motion {motion!r}")
    color = np.asarray(color, np.float32)
    color = np.clip(color + rng.uniform(-12, 12, 3).astype(np.float32), 0, 255)
    color = np.broadcast_to(color, (T, 3)) if color.ndim == 1 else color
    return _Track(kind, color, x * ones, y * ones, size * ones, angle * ones, opacity * ones)


def _background(rng: np.random.Generator, S: int) -> np.ndarray:
    """A randomly tinted, softly textured, static background (S, S, 3) float32."""
    import cv2

    base = rng.uniform(70, 150) + rng.uniform(-25, 25, 3)
    coarse = rng.normal(0, 12, (8, 8, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (S, S), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 4, (S, S, 3)).astype(np.float32)
    return (base.astype(np.float32) + texture + fine).astype(np.float32)


def render_clip(cls: ClassDef, rng: np.random.Generator, num_frames: int, size: int,
                noise: float) -> np.ndarray:
    """Render one clip of `cls` as uint8 (T, S, S, 3) RGB; reversed classes are played backwards."""
    import cv2

    tr = _track(rng, cls.motion, num_frames, size)
    bg = _background(rng, size)
    outline = _outline(tr.kind)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    for t in range(num_frames):
        c, s = np.cos(tr.angle[t]), np.sin(tr.angle[t])
        pts = outline @ np.array([[c, s], [-s, c]]) * tr.size[t] + (tr.x[t], tr.y[t])
        mask[:] = 0
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
        alpha = (mask.astype(np.float32) * (tr.opacity[t] / 255.0))[..., None]
        frame = bg * (1 - alpha) + tr.color[t] * alpha
        frame += rng.normal(0, noise, frame.shape).astype(np.float32) if noise > 0 else 0
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames[::-1].copy() if cls.reverse else frames


def _has_libx264() -> bool:
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the (H*3/2, W) uint8 planes of yuv420p (BT.601, limited range, 2x2
    chroma means), in numpy: libswscale's SIMD paths are free to round differently per CPU, this is
    the same everywhere. H must be a multiple of 4 and W even (PyAV's packed yuv420p layout)."""
    f = frame.astype(np.float64)
    y = 16.0 + (65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]) / 255.0
    cb = 128.0 + (-37.797 * f[..., 0] - 74.203 * f[..., 1] + 112.0 * f[..., 2]) / 255.0
    cr = 128.0 + (112.0 * f[..., 0] - 93.786 * f[..., 1] - 18.214 * f[..., 2]) / 255.0
    h, w = y.shape

    def quantise(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)

    def chroma(c: np.ndarray) -> np.ndarray:
        return quantise(c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))).reshape(h // 4, w)

    return np.concatenate([quantise(y), chroma(cb), chroma(cr)])


#: libx264 settings of the embedded videos. No B-frames, so every decoder agrees on the frame count.
#: The macroblock tree and the rate-control lookahead are off: with them on, encoding the same frames
#: twice in one process gave different bytes (and decoded pixels up to 22 levels apart) for about 40 %
#: of the clips, even single-threaded; without them the bytes repeat (tests/test_embedded.py), and x264
#: is bit-exact across its SIMD paths, so one recipe hash means one dataset on every machine.
X264_OPTIONS = {"preset": "veryfast", "bframes": "0", "threads": "1", "x264-params": "mbtree=0:rc-lookahead=0"}


def _encode_mp4(path: Path, frames: np.ndarray, fps: int, crf: int) -> str:
    """Write frames as H.264 .mp4 (PyAV/libx264, `X264_OPTIONS`, RGB -> yuv420p in numpy); fall back
    to OpenCV's mp4v where PyAV lacks libx264. Returns the encoder used."""
    if _has_libx264():
        import av

        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), **X264_OPTIONS}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return "libx264"
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
        raise HarnessError(f"cannot encode {path}: neither PyAV with libx264 nor OpenCV mp4v is available; "
                           f"install av>=12 (its wheels include libx264).")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return "mp4v"


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------

_B2N = "datasets_splits/base2novel_splits/embedded_splits"
_FULL = "datasets_splits/embedded_splits"
_ZS = "datasets_splits/embedded_zs_splits"


@dataclass(frozen=True)
class _Video:
    file: str
    cls: ClassDef
    seed: tuple[int, ...]


def _plan(recipe: EmbeddedRecipe) -> dict[str, list[_Video]]:
    """Every video to render, per pool; each gets its own seed so order and parallelism don't matter."""
    pools = {"train": (MAIN_CLASSES, recipe.train_per_class, 1),
             "val": (MAIN_CLASSES, recipe.val_per_class, 2),
             "zs": (ZS_CLASSES, recipe.zs_pool_per_class, 3)}
    plan: dict[str, list[_Video]] = {}
    for pool, (classes, n, code) in pools.items():
        plan[pool] = [_Video(f"{pool}_{c.key}_{i:03d}.mp4", c, (recipe.seed, code, _seed_class(classes, ci, recipe), i))
                      for ci, c in enumerate(classes) for i in range(n)]
    return plan


def _seed_class(classes: Sequence[ClassDef], index: int, recipe: EmbeddedRecipe) -> int:
    """Class index that seeds the clips of `classes[index]`: its own, or with `reversal_twins` the
    forward partner's for a reversed class (same motion), so twin clips are exact reversals."""
    cls = classes[index]
    if recipe.reversal_twins and cls.reverse:
        return next(i for i, c in enumerate(classes) if c.motion == cls.motion and not c.reverse)
    return index


def _draw(videos: Sequence[_Video], classes: Sequence[ClassDef], k: int | None, seed: tuple[int, ...],
          label_of: Callable[[ClassDef], int]) -> list[AnnotationEntry]:
    """k videos per class (all if k is None) from `videos`, class-grouped, in a seeded order."""
    rng = np.random.default_rng(list(seed))
    out: list[AnnotationEntry] = []
    for c in classes:
        mine = [v for v in videos if v.cls is c]
        picks = range(len(mine)) if k is None else sorted(rng.choice(len(mine), k, replace=False))
        out += [AnnotationEntry(mine[i].file, label_of(c)) for i in picks]
    return out


def _lists(recipe: EmbeddedRecipe, plan: dict[str, list[_Video]]) -> dict[str, list[AnnotationEntry]]:
    """All split files (path relative to the root -> entries)."""
    full = {c.name: i for i, c in enumerate(MAIN_CLASSES)}
    base = {c.name: i for i, c in enumerate(BASE_CLASSES)}
    novel = {c.name: i for i, c in enumerate(NOVEL_CLASSES)}
    zs = {c.name: i for i, c in enumerate(ZS_CLASSES)}
    s = recipe.seed
    lists = {
        f"{_FULL}/train.txt": _draw(plan["train"], MAIN_CLASSES, None, (s,), lambda c: full[c.name]),
        f"{_FULL}/val.txt": _draw(plan["val"], MAIN_CLASSES, None, (s,), lambda c: full[c.name]),
        f"{_FULL}/val1.txt": _draw(plan["val"], MAIN_CLASSES, None, (s,), lambda c: full[c.name]),
        f"{_B2N}/base_val.txt": _draw(plan["val"], BASE_CLASSES, None, (s,), lambda c: base[c.name]),
        f"{_B2N}/novel_val.txt": _draw(plan["val"], NOVEL_CLASSES, None, (s,), lambda c: novel[c.name]),
    }
    for k in recipe.few_shot_ks:
        lists[f"{_FULL}/train1_few_shot_{k}.txt"] = _draw(plan["train"], MAIN_CLASSES, k, (s, 7, k),
                                                          lambda c: full[c.name])
    for split in (1, 2, 3):
        lists[f"{_B2N}/fs_base_s{split}_train.txt"] = _draw(plan["train"], BASE_CLASSES, recipe.shots,
                                                            (s, 11, split), lambda c: base[c.name])
        lists[f"{_ZS}/val{split}.txt"] = _draw(plan["zs"], ZS_CLASSES, recipe.zs_val_per_class,
                                               (s, 13, split), lambda c: zs[c.name])
    return lists


def _descriptions(classes: Sequence[ClassDef], kind: str) -> dict[str, list[str]]:
    return {str(i): list(c.spatial if kind == "s" else c.temporal) for i, c in enumerate(classes)}


def _write_text_files(root: Path, recipe: EmbeddedRecipe, plan: dict[str, list[_Video]]) -> None:
    sets = {"embedded": MAIN_CLASSES, "embedded_base": BASE_CLASSES, "embedded_novel": NOVEL_CLASSES,
            "embedded_zs": ZS_CLASSES}
    for key, classes in sets.items():
        write_class_csv(root / "labels" / f"{key}_labels.csv", [c.name for c in classes])
        for kind in ("s", "t"):
            (root / "description").mkdir(parents=True, exist_ok=True)
            (root / "description" / f"2_{kind}_description_{key}.json").write_text(
                json.dumps(_descriptions(classes, kind), indent=2) + "\n")
    for rel, entries in _lists(recipe, plan).items():
        write_annotation_list(root / rel, entries)
    _write_ost_descriptors(root)


def _write_ost_descriptors(root: Path) -> None:
    """OST-format descriptors of the full and zero-shot class lists (harness.data.embedded_descriptors);
    also adds them to a dataset generated before they existed (they are text, not part of the recipe)."""
    ensure_descriptor_files(root, {"embedded": [c.key for c in MAIN_CLASSES], "embedded_zs": [c.key for c in ZS_CLASSES]})


def _render_all(root: Path, recipe: EmbeddedRecipe, videos: Sequence[_Video]) -> str:
    (root / "videos").mkdir(parents=True, exist_ok=True)
    encoder = ""
    for v in videos:
        frames = render_clip(v.cls, np.random.default_rng(list(v.seed)), recipe.num_frames,
                             recipe.frame_size, recipe.noise)
        encoder = _encode_mp4(root / "videos" / v.file, frames, recipe.fps, recipe.crf)
    return encoder


def generate(root: Path, recipe: EmbeddedRecipe) -> dict:
    """Write the whole dataset into `root` (which should be a fresh folder); recipe.json last."""
    start = time.perf_counter()
    plan = _plan(recipe)
    videos = [v for pool in plan.values() for v in pool]
    encoder = _render_all(root, recipe, videos)
    _write_text_files(root, recipe, plan)
    meta = {
        "generator_version": GENERATOR_VERSION,
        "hash": recipe_hash(recipe),
        "recipe": dataclasses.asdict(recipe),
        "classes": {"embedded": [c.name for c in MAIN_CLASSES], "base": [c.name for c in BASE_CLASSES],
                    "novel": [c.name for c in NOVEL_CLASSES], "embedded_zs": [c.name for c in ZS_CLASSES]},
        "order_pairs": [list(p) for p in ORDER_PAIRS],
        "num_videos": len(videos),
        "encoder": encoder,
        "generation_seconds": round(time.perf_counter() - start, 2),
    }
    (root / "recipe.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """`$HARNESS_CACHE/embedded`, else `~/.cache/harness/embedded`."""
    return cache_root() / "embedded"


def _is_complete(root: Path, digest: str) -> bool:
    try:
        meta = json.loads((root / "recipe.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("hash") == digest and meta.get("generator_version") == GENERATOR_VERSION


def _remove_stale(cache: Path) -> None:
    """Delete temp folders of generations that were killed long ago (young ones may be running)."""
    now = time.time()
    for p in cache.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def ensure_embedded_dataset(cache_dir: str | os.PathLike | None = None,
                            recipe: EmbeddedRecipe | None = None) -> Path:
    """Return `<cache>/<hash[:12]>/`, generating it first if it is absent or stale."""
    recipe = recipe or EmbeddedRecipe()
    recipe.validate()
    digest = recipe_hash(recipe)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache / digest[:12]
    if _is_complete(root, digest):
        _write_ost_descriptors(root)
        return root
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_stale(cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest[:12]}-", dir=cache))
    except OSError as exc:
        raise HarnessError(f"cannot write the embedded dataset cache {cache}: {exc}. Set {CACHE_ENV} to a "
                           f"writable folder.") from exc
    try:
        log.info("generating the embedded dataset in %s", root)
        meta = generate(tmp, recipe)
        log.info("generated %d videos in %.1f s", meta["num_videos"], meta["generation_seconds"])
        if root.exists() and not _is_complete(root, digest):
            # A folder with the right name but a wrong/missing recipe.json: move it aside first.
            trash = Path(tempfile.mkdtemp(prefix=f".tmp-{digest[:12]}-old-", dir=cache))
            os.replace(root, trash / "old")
        try:
            os.rename(tmp, root)
        except OSError:
            if not _is_complete(root, digest):  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for old in cache.glob(f".tmp-{digest[:12]}-old-*"):
            shutil.rmtree(old, ignore_errors=True)
    return root
