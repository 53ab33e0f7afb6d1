"""The pretraining recipe: every setting that determines the weights, and the hash that names
the cached file (with PRETRAIN_VERSION and the embedded GENERATOR_VERSION, since the drawing
helpers come from there). Bump PRETRAIN_VERSION whenever a change in this package changes the
trained weights."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from harness.backbone import SMALL_CONFIGS, small_config
from harness.data import embedded
from harness.errors import HarnessError

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
