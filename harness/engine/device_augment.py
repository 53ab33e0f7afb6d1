"""Training augmentation on the batch, on the model's device (`data.augment_on=device`).

Why: with prepared frames the CPU spends a large share of each training clip on the resize,
random resized crop and flip after decoding (`harness bench --data` prints how much). With
`data.augment_on=device` the CPU pipeline stops at a deterministic resize + centre square
(`harness.data.pipeline.train_pipeline`), and this module does the random part per sample on the
stacked uint8 batch where the model runs, with torch ops only:

* crop boxes follow MMAction2's `RandomResizedCrop.get_crop_bbox`: 10 candidates per sample with
  area uniform in `area_range` x frame area and aspect ratio log-uniform in `aspect_range`,
  rounded to pixels; the first that fits is placed at uniform integer offsets; if none fits, the
  centre square. The frame here is the centre square the CPU pipeline made, not the whole
  resized frame, so crops (and their area fractions) are relative to that square: this changes
  pixels, which is why `augment_on` is part of the job identity;
* every frame of a sample gets the same box and the same flip (temporal order is untouched);
* the crop is resized bilinearly (`align_corners=False`, as OpenCV's resize that MMAction2 uses)
  and rounded back to uint8, so normalisation downstream sees the same kind of input as from the
  CPU path;
* in an engine training step each sample draws its box and flip from its own generator, seeded
  from the sample's seed (`methods.sample_random`, `harness.engine.batches`), so a clip's crop
  does not depend on the micro-batch or the process it lands in, and a resumed run draws the same;
  outside one, the numbers come from torch's default CPU generator (or one passed in).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from methods.sample_random import sample_generators, stream_key

#: MMAction2 RandomResizedCrop's defaults.
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
MAX_ATTEMPTS = 10
#: The per-sample random stream of the device augmentation (methods.sample_random).
DEVICE_AUGMENT_STREAM = stream_key("device_augment")


def sample_crop_boxes(n: int, height: int, width: int, area_range: Sequence[float] = AREA_RANGE,
                      aspect_range: Sequence[float] = ASPECT_RANGE, generator: torch.Generator | None = None,
                      max_attempts: int = MAX_ATTEMPTS) -> torch.Tensor:
    """(n, 4) int64 boxes `(x0, y0, x1, y1)` (x1/y1 exclusive) inside a `height` x `width` frame,
    drawn as MMAction2's `RandomResizedCrop.get_crop_bbox` draws them (see the module doc)."""
    lo, hi = float(area_range[0]), float(area_range[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"area_range {tuple(area_range)} must satisfy 0 < min <= max <= 1")
    if not 0 < aspect_range[0] <= aspect_range[1]:
        raise ValueError(f"aspect_range {tuple(aspect_range)} must satisfy 0 < min <= max")
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    u = torch.rand(n, 2, max_attempts, generator=generator, dtype=torch.float64)
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 0])
    area = (lo + (hi - lo) * u[:, 1]) * (height * width)
    crop_w = torch.round(torch.sqrt(area * aspect)).long()
    crop_h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (crop_w <= width) & (crop_h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # first fitting attempt (0 when none fits)
    w = crop_w.gather(1, first).squeeze(1)
    h = crop_h.gather(1, first).squeeze(1)
    side = min(height, width)
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w, torch.full_like(w, side))
    h = torch.where(any_fit, h, torch.full_like(h, side))
    offsets = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    x0 = torch.floor(offsets[:, 0] * (width - w + 1)).long()
    y0 = torch.floor(offsets[:, 1] * (height - h + 1)).long()
    x0 = torch.where(any_fit, x0, torch.full_like(x0, (width - side) // 2))
    y0 = torch.where(any_fit, y0, torch.full_like(y0, (height - side) // 2))
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def sample_flips(n: int, flip: bool, generator: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """(n,) bool: which samples are mirrored (MMAction2's `Flip(flip_ratio=0.5)`; never when
    `flip` is false, i.e. the dataset's labels change under a mirror image). A draw is made
    either way, so the random sequence does not depend on `flip`."""
    draws = torch.rand(n, generator=generator) < ratio
    return draws & flip


class DeviceAugment:
    """Random resized crop + flip + resize to `image_size`, per sample, on a uint8 batch
    (B, V, 3, T, H, W) on any device; returns uint8 (B, V, 3, T, image_size, image_size)."""

    def __init__(self, image_size: int, flip: bool = True, area_range: Sequence[float] = AREA_RANGE,
                 aspect_range: Sequence[float] = ASPECT_RANGE) -> None:
        self.image_size = int(image_size)
        self.flip = bool(flip)
        self.area_range = tuple(float(a) for a in area_range)
        self.aspect_range = tuple(float(a) for a in aspect_range)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, v, c, t, h, w = batch.shape
        per_sample = sample_generators(b, DEVICE_AUGMENT_STREAM) if generator is None else None
        if per_sample is None:
            boxes = sample_crop_boxes(b * v, h, w, self.area_range, self.aspect_range, generator).tolist()
            flips = sample_flips(b * v, self.flip, generator).tolist()
        else:  # sample i's v views from sample i's own generator
            boxes, flips = [], []
            for gen in per_sample:
                boxes += sample_crop_boxes(v, h, w, self.area_range, self.aspect_range, gen).tolist()
                flips += sample_flips(v, self.flip, gen).tolist()
        clips = batch.reshape(b * v, c, t, h, w)
        size = (self.image_size, self.image_size)
        out = []
        for clip, (x0, y0, x1, y1), mirror in zip(clips, boxes, flips):
            frames = clip[:, :, y0:y1, x0:x1].permute(1, 0, 2, 3).float()  # (T, 3, h, w): one box for all T
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
            if mirror:
                frames = frames.flip(-1)
            out.append(frames.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3))
        return torch.stack(out).reshape(b, v, c, t, *size)

    def describe(self) -> dict:
        return {"image_size": self.image_size, "flip": self.flip, "area_range": list(self.area_range),
                "aspect_range": list(self.aspect_range)}
