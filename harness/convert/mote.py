"""MoTE releases (ZMHH-H/MoTE @ 1d3fa01, `utils/utils.py` `epoch_saving` / `best_saving`, and the
released MoTE_B16.pt read by `test.py` / `test_zeroshot.py`): a dict of `epoch`,
`model_state_dict` (`VideoCLIP`: the image tower `visual.*` and `logit_scale`),
`fusion_model_state_dict` (`video_header`: `spe_cls_feature`, `frame_position_embeddings.weight`,
`transformer.resblocks.{i}.{attn,ln_1,mlp,ln_2}.*`) and `optimizer_state_dict`.

The text tower is not in the file (MoTE keeps it frozen and encodes the class prompts once), so
it comes from `--base`. `spe_cls_feature`, the training classes' text features, is not loaded:
the model re-derives it from the training classes through the base text tower (28-template
ensemble, as train.py builds it); the converter does so now and compares, which checks the class
list, its order and `--base` (a 400-row buffer is Kinetics-400 in the official order).
"""
from __future__ import annotations

from typing import Any

import torch

from harness.convert.base import BuildPlan, Converter, closed_set_classes, require_rows
from harness.convert.mapping import Source
from harness.convert.text import compare_class_rows
from harness.errors import HarnessError

MODEL, FUSION = "model_state_dict", "fusion_model_state_dict"
SPE = f"{FUSION}.spe_cls_feature"
BLOCKS = f"{FUSION}.transformer.resblocks."


class MoTEConverter(Converter):
    name = method = "mote"
    parts = (MODEL, FUSION)
    anchor = f"{MODEL}.visual.class_embedding"
    needs_base = True
    upstream = "ZMHH-H/MoTE utils/utils.py epoch_saving (modules/video_clip.py VideoCLIP + video_header)"

    def prepare(self, release) -> BuildPlan:
        state = release.state
        spe = require_rows(state, SPE, "--from mote")
        layers = sorted({int(k[len(BLOCKS):].split(".")[0]) for k in state if k.startswith(BLOCKS)})
        experts = sorted({int(k.split(".mlp.fc_up.")[1].split(".")[0]) for k in state
                          if k.startswith(f"{BLOCKS}0.mlp.fc_up.")})
        if not layers or not experts:
            raise HarnessError(f"{release.path}: no temporal transformer blocks with experts under {BLOCKS}*; "
                               "is it a MoTE checkpoint (sim_header Transf, num_experts >= 1)?")
        options = {"temporal_layers": len(layers), "num_experts": len(experts), **self.request.options}
        classnames, how = closed_set_classes(int(spe.shape[0]), self.request, f"{SPE} (one row per training class)")
        self.classnames = classnames
        notes = [f"training classes: {how}", "text tower and token embedding from --base (not in MoTE checkpoints)",
                 f"built from the release: temporal_layers={len(layers)}, num_experts={len(experts)}"]
        return BuildPlan(options, self.request.frames or 8, classnames, notes)

    def source(self, name: str) -> Source | None:
        if name == "clip.logit_scale":
            return Source.key(f"{MODEL}.logit_scale")
        if name.startswith("clip.visual."):
            return Source.key(f"{MODEL}.{name[len('clip.'):]}")
        if name.startswith("video_head."):
            return Source.key(f"{FUSION}.{name[len('video_head.'):]}")
        return None  # the text tower: from --base

    def ignore(self, key: str, value: torch.Tensor) -> str | None:
        if key == SPE:
            return "the training classes' text features: re-derived from the class names (checked, see derived)"
        return None

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        with torch.no_grad():
            derived = model.text_features(plan.classnames)
        how = (f"from {len(plan.classnames)} class names through the --base text tower "
               f"({model.config.templates} templates)")
        return {SPE: compare_class_rows(derived, self.state()[SPE], plan.classnames, SPE, how)}
