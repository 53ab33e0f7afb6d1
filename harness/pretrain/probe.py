"""Zero-shot accuracy of a CLIP on held-out synthetic frames, per attribute (what the
pretraining taught it; chance is 1/k for k values)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.pretrain.scenes import (
    _BINS,
    _VBINS,
    COLORS,
    SHAPES,
    SIZES,
    _pick_background,
    _position_phrase,
    background_pool,
    render_scene,
    sample_scene,
    to_model_input,
)

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
