"""A miniature CLIP pretraining of this project's own: `harness-tiny` trained on synthetic still
frames with captions, deterministically from a seed, once, on first use (about half a minute).

Why: the embedded default runs on `harness-tiny`, and with random weights its frozen per-frame
features encode next to nothing, so frozen-backbone methods (adapters) barely learn and zero-shot
CLIP is at chance. Pretraining it on frames drawn with the SAME vocabulary as the embedded videos
(`harness.data.embedded`: its shape outlines, colours, backgrounds, compositing and noise) gives
image features that encode appearance (colour, position, size; shape only weakly: it is not learnt
in this budget) and a text tower that maps the matching words, so that prompts such as
"a photo of a {}." and "a video of {}" with the embedded class names land in-distribution.

The package, one job per module:
- `recipe`: `PretrainRecipe` (everything that determines the weights) and its hash;
- `scenes`: the synthetic image-caption pairs (drawing and captioning);
- `train`: the objective, the schedule and the training loop (`train`, `pretrain_clip`);
- `probe`: zero-shot accuracy of a model on held-out synthetic frames (the frames and tasks are
  shared with the forgetting measurement, `harness.engine.forgetting`);
- `cache`: `ensure_pretrained_tiny`, the cached weights file, made once under a file lock.
`harness.weights` resolves the `synthetic` tag through `cache`; `harness.backbone` knows none of it.
"""
from harness.pretrain.cache import default_cache_dir, ensure_pretrained_tiny, pretrained_path
from harness.pretrain.probe import PROBE_TEMPLATE, PROBES, ProbeTask, held_out_frames, probe_zero_shot
from harness.pretrain.recipe import PRETRAIN_VERSION, PretrainRecipe, recipe_hash
from harness.pretrain.scenes import (
    COLORS,
    EMPTY,
    SHAPES,
    SIZES,
    TEMPLATES,
    VERBS,
    Caption,
    Scene,
    background_pool,
    caption_scene,
    render_batch,
    render_scene,
    sample_captions,
    sample_scene,
    to_model_input,
    vocabulary,
)
from harness.pretrain.train import contrastive_loss, pretrain_clip, train

__all__ = [
    "COLORS", "EMPTY", "PRETRAIN_VERSION", "PROBES", "SHAPES", "SIZES", "TEMPLATES", "VERBS", "Caption",
    "PROBE_TEMPLATE", "ProbeTask", "held_out_frames",
    "PretrainRecipe", "Scene", "background_pool", "caption_scene", "contrastive_loss", "default_cache_dir",
    "ensure_pretrained_tiny", "pretrain_clip", "pretrained_path", "probe_zero_shot", "recipe_hash",
    "render_batch", "render_scene", "sample_captions", "sample_scene", "to_model_input", "train", "vocabulary",
]
