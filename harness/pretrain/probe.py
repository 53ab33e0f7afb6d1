"""Zero-shot accuracy of a CLIP on held-out synthetic frames, per attribute (what the
pretraining taught it; chance is 1/k for k values).

The frames and the task list are shared with the per-method measurement of forgetting
(`harness.measure.forgetting`), which scores the same kind of frames through a method's video and
text paths: each value has a class name ("red shape", "shape on the left", "circle") that a
prompt template turns into the pretraining caption style (`PROBE_TEMPLATE`: "a photo of a red shape.")."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

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


class ProbeTask(NamedTuple):
    """One probe: the scene attribute varied, the values told apart, the class name of a value."""

    attribute: str
    values: tuple
    classname: Callable[[object], str]

    def classnames(self) -> list[str]:
        return [self.classname(v) for v in self.values]


#: Probe tasks: attribute, the values told apart, the class name of each value.
PROBES: dict[str, ProbeTask] = {
    "color4": ProbeTask("color", ("red", "blue", "green", "yellow"), lambda c: f"{c} shape"),
    "color9": ProbeTask("color", tuple(COLORS), lambda c: f"{c} shape"),
    "position3": ProbeTask("h", tuple(_BINS), lambda h: f"shape {_position_phrase(h, None, None)}"),
    "vertical3": ProbeTask("v", tuple(_VBINS), lambda v: f"shape {_position_phrase(None, v, None)}"),
    "size3": ProbeTask("size", tuple(SIZES), lambda z: f"{z} shape"),
    "shape6": ProbeTask("shape", tuple(SHAPES), lambda k: f"{k}"),
}
#: The prompt of a class name in `probe_zero_shot` ("a photo of a red shape.").
PROBE_TEMPLATE = "a photo of a {}."


def held_out_frames(image_size: int, n: int, seed: int = 4242, tasks: Sequence[str] = tuple(PROBES)
                    ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(task, uint8 frames (n, S, S, 3), labels (n,)) per task, in the order given: frame i of a
    task shows value i % k (other attributes random; not dark, faint or empty), with the pixel
    noise of pretraining. One random stream (seeded by `seed`, disjoint from pretraining's), so
    the same arguments give the same frames."""
    rng = np.random.default_rng([seed, 23])
    pool = background_pool(seed + 1, 64, image_size)
    for task in tasks:
        attr, values, _ = PROBES[task]
        scenes = [dataclasses.replace(sample_scene(rng), dark=False, faint=False, empty=False,
                                      **{attr: values[i % len(values)]}) for i in range(n)]
        frames = np.stack([render_scene(sc, rng, _pick_background(pool, rng))[0] for sc in scenes])
        frames += 3.0 * rng.standard_normal(frames.shape, dtype=np.float32)
        yield task, np.clip(frames, 0, 255).astype(np.uint8), np.arange(n) % len(values)


@torch.no_grad()
def probe_zero_shot(model: nn.Module, tokenizer, n: int = 240, seed: int = 4242) -> dict[str, float]:
    """Zero-shot accuracy of `model` (a raw CLIP) on `held_out_frames` of every task of PROBES,
    each frame scored against the task's k prompts. Chance is 1/k."""
    was_training = model.training
    model.eval()
    out = {}
    for task, frames, labels in held_out_frames(int(model.visual.image_size[0]), n, seed):
        image = F.normalize(model.encode_image(to_model_input(frames)), dim=-1)
        prompts = [PROBE_TEMPLATE.format(name) for name in PROBES[task].classnames()]
        text = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
        hits = (image @ text.t()).argmax(1).numpy() == labels
        out[task] = round(float(hits.mean()), 3)
    model.train(was_training)
    return out
