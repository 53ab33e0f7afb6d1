"""FROSTER releases (Visual-AI/FROSTER @ 230ae88): what `slowfast/utils/checkpoint.py`
`save_checkpoint` writes, `{epoch, model_state, optimizer_state, cfg (the yacs config as YAML
text), scaler_state}`, and what `weight_average_tool.py` writes, `{model_state}` (the averaged
weights the official evaluation loads, `swa_<start>_<end>.pth`).

`model_state` keys: `model.*` the fine-tuned CLIP (OpenAI names, which open_clip shares),
`projector_v.*` / `projector_t.*` the distillation projectors, and, in training checkpoints only,
`raw_model.*` the frozen teacher. The teacher is the pre-trained CLIP: it is built from `--base`
and never loaded; where the release holds it, every `raw_model.*` tensor is compared with the base
(a release trained from other weights is refused). Options come from the release's `cfg` when it
has one (temporal view, frames, distillation); the averaged file has none: FROSTER's B/16 defaults
then, overridable with `--set froster.<option>=...`.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.convert.base import BuildPlan, Converter
from harness.convert.mapping import Source
from harness.convert.text import TOLERANCE
from harness.errors import HarnessError

TEACHER = "raw_model."
#: MODEL.TEMPORAL_MODELING_TYPE -> froster.temporal_view (frames on each side).
TEMPORAL_VIEW = {None: 0, "None": 0, "expand_temporal_view": 1, "expand_temporal_view_step2": 2,
                 "expand_temporal_view_step3": 3}


class FROSTERConverter(Converter):
    name = method = "froster"
    anchor = "model.visual.class_embedding"
    needs_base = True  # the teacher is the base CLIP, and raw_model.* is checked against it
    upstream = "Visual-AI/FROSTER slowfast/utils/checkpoint.py save_checkpoint, weight_average_tool.py"

    def prepare(self, release) -> BuildPlan:
        options: dict[str, Any] = {}
        from_config: dict[str, Any] = {}
        notes = ["teacher (raw_model) = the --base CLIP"]
        if release.config is None:
            notes.append("no cfg in the release (the averaged-weights file): FROSTER's B/16 options")
        else:
            kind = release.setting("MODEL.TEMPORAL_MODELING_TYPE")
            if kind not in TEMPORAL_VIEW:
                raise HarnessError(f"{release.path}: cfg MODEL.TEMPORAL_MODELING_TYPE={kind!r} is not in FROSTER's "
                                   f"expand_temporal_view family ({', '.join(k for k in TEMPORAL_VIEW if k)})")
            options["temporal_view"] = TEMPORAL_VIEW[kind]
            options["distillation"] = (bool(release.setting("MODEL.KEEP_RAW_MODEL"))
                                       and bool(release.setting("MODEL.RAW_MODEL_DISTILLATION")))
            ratio = release.setting("MODEL.DISTILLATION_RATIO")
            if ratio is not None:
                options["distill_ratio"] = float(ratio)
            from_config = {"MODEL.TEMPORAL_MODELING_TYPE": kind, **{
                key: release.setting(key) for key in ("MODEL.KEEP_RAW_MODEL", "MODEL.RAW_MODEL_DISTILLATION",
                                                      "MODEL.DISTILLATION_RATIO", "DATA.NUM_FRAMES")
                if release.setting(key) is not None}}
            notes.append(f"options from the release's cfg: {options}")
        options.update(self.request.options)
        frames = self.request.frames or int(release.setting("DATA.NUM_FRAMES", 8) or 8)
        if not any(k.startswith(TEACHER) for k in release.state):
            notes.append("the release holds no raw_model.* (nothing to check against --base)")
        return BuildPlan(options, frames, None, notes, from_config=from_config)

    def source(self, name: str) -> Source | None:
        if name.startswith("clip."):
            return Source.key("model." + name[len("clip."):])
        if name.startswith(("projector_v.", "projector_t.")):
            return Source.key(name)
        return None  # teacher.*: the base CLIP

    def ignore(self, key: str, value: torch.Tensor) -> str | None:
        if key.startswith(TEACHER):
            return "the frozen teacher: the pre-trained CLIP, built from --base (compared with it, see derived)"
        return None

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        raw = {k[len(TEACHER):]: v for k, v in self.state().items() if k.startswith(TEACHER)}
        if not raw:
            return {}
        teacher = model.frozen_teacher()
        base = (teacher.clip if teacher is not None else self._base_clip()).state_dict()
        unknown, absent = sorted(set(raw) - set(base)), sorted(set(base) - set(raw) - {"attn_mask"})
        if unknown or absent:
            raise HarnessError(f"{self.request.checkpoint}: raw_model.* is not a CLIP of this backbone: "
                               f"{len(unknown)} unknown key(s) {unknown[:3]}, {len(absent)} missing {absent[:3]}")
        worst, where = 0.0, ""
        for key, value in raw.items():
            if value.shape != base[key].shape:
                raise HarnessError(f"raw_model.{key} has shape {tuple(value.shape)}, the base {tuple(base[key].shape)}")
            diff = float((value.float() - base[key].to(value.dtype).float()).abs().max()) if value.numel() else 0.0
            if diff > worst:
                worst, where = diff, key
        if worst > TOLERANCE:
            raise HarnessError(f"{self.request.checkpoint}: its frozen teacher raw_model.{where} differs from --base "
                               f"{self.request.base} by up to {worst:.3g}: the release was trained from other CLIP "
                               "weights; pass those as --base")
        return {"raw_model.*": {"key": "raw_model.*", "max_abs_diff": worst,
                                "how": f"{len(raw)} teacher tensors against --base {self.request.base}"}}

    def _base_clip(self) -> torch.nn.Module:
        from harness.weights import create_backbone

        clip, _ = create_backbone(self.request.backbone, self.request.base, seed=0, cache_dir=self.request.cache_dir)
        return clip
