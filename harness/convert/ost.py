"""OST releases (tomchen-ctj/OST `trainers/OST.py`): `utils/tools.epoch_saving` on the DDP model writes
`{'model': {'module.' + key}, 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config'}` where
the keys are those of `OST`: `image_encoder.*` (the CLIP image tower), `text_encoder.*` (the text
tower with its token embedding: OST trains everything), and `logit_scale`. Every parameter of the
target model is in the release; the descriptor token ids OST keeps are plain tensors, not state.

`--base` is needed only for `ost.eval_origin_weight > 0` (the official zero-shot evaluation blends
the release with the original CLIP weights, which the release does not hold).
"""
from __future__ import annotations

from harness.convert.base import BuildPlan, Converter
from harness.convert.mapping import Source
from harness.convert.vificlip import clip_towers_source


class OSTConverter(Converter):
    name = method = "ost"
    anchor = "image_encoder.class_embedding"
    upstream = "tomchen-ctj/OST trainers/OST.py"

    def prepare(self, release) -> BuildPlan:
        options = dict(self.request.options)
        notes = ["every parameter from the release (token_embedding included)"]
        if float(options.get("eval_origin_weight", 0.0)) > 0:
            notes.append(f"evaluation blends {options['eval_origin_weight']} x the --base weights (official zero-shot "
                         "evaluation: MODEL.FUSE_WEIGHT_FOR_ORIGIN)")
        return BuildPlan(options, self.request.frames or 8, None, notes)

    def base_needed(self, plan: BuildPlan) -> bool:
        return float(plan.options.get("eval_origin_weight", 0.0)) > 0

    def source(self, name: str) -> Source | None:
        return clip_towers_source(name)  # ViFi-CLIP's layout, token_embedding included
