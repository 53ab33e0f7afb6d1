"""OST releases (tomchen-ctj/OST `trainers/OST.py`): `utils/tools.epoch_saving` on the DDP model writes
`{'model': {'module.' + key}, 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config': <yacs
CfgNode>}` where the keys are those of `OST`: `image_encoder.*` (the CLIP image tower),
`text_encoder.*` (the text tower with its token embedding: OST trains everything), and
`logit_scale`. Every parameter of the target model is in the release; the descriptor token ids
OST keeps are plain tensors, not state.

From the CfgNode (read as plain data, `release_io`): `DATA.NUM_FRAMES` (frames, unless `--frames`),
`TRAINER.OST.N` (`ost.n_descriptors`), `MODEL.ARCH` (checked against `--backbone`), recorded with
`DATA.DES_SPATIAL` / `DES_TEMPORAL`, `TRAINER.OST.USE` and `MODEL.FUSE_WEIGHT_FOR_ORIGIN`.

`--base` is needed only for `ost.eval_origin_weight > 0`: the official zero-shot evaluation blends the
release with the original CLIP weights, which the release does not hold.
"""
from __future__ import annotations

from harness.convert.base import BuildPlan, Converter
from harness.convert.mapping import Source
from harness.convert.vificlip import clip_towers_source
from harness.errors import HarnessError

#: CfgNode settings recorded in the report (those used are also applied, see `configured`).
SETTINGS = ("DATA.NUM_FRAMES", "TRAINER.OST.N", "MODEL.ARCH", "DATA.DES_SPATIAL", "DATA.DES_TEMPORAL",
            "TRAINER.OST.USE", "MODEL.FUSE_WEIGHT_FOR_ORIGIN")


class OSTConverter(Converter):
    name = method = "ost"
    anchor = "image_encoder.class_embedding"
    upstream = "tomchen-ctj/OST trainers/OST.py (saved by utils/tools.py epoch_saving)"

    def prepare(self, release) -> BuildPlan:
        plan = BuildPlan(dict(self.request.options), self.request.frames or 8, None,
                         ["every parameter from the release (token_embedding included)"])
        self.configured(release, plan)
        weight = float(plan.options.get("eval_origin_weight", 0.0))
        if weight > 0:
            plan.notes.append(f"evaluation blends {weight} x the --base weights with the release (official zero-shot "
                              "evaluation: MODEL.FUSE_WEIGHT_FOR_ORIGIN 0.2 in configs/zero_shot/eval)")
        return plan

    def configured(self, release, plan: BuildPlan) -> None:
        """What the release's CfgNode says, used and recorded; a disagreement with the request is an error."""
        for key in SETTINGS:
            value = release.setting(key)
            if value is not None:
                plan.from_config[key] = value
        frames = plan.from_config.get("DATA.NUM_FRAMES")
        if frames is not None and not self.request.frames:
            plan.frames = int(frames)
        n = plan.from_config.get("TRAINER.OST.N")
        if n is not None:
            given = plan.options.get("n_descriptors")
            if given is not None and int(given) != int(n):
                raise HarnessError(f"{self.request.checkpoint}: trained with TRAINER.OST.N={n} descriptors, but "
                                   f"--set ost.n_descriptors={given}")
            plan.options["n_descriptors"] = int(n)
        arch = plan.from_config.get("MODEL.ARCH")
        backbone = self.request.backbone.removesuffix("-quickgelu")
        if isinstance(arch, str) and "/" in arch and backbone.startswith("ViT-") and arch.replace("/", "-") != backbone:
            raise HarnessError(f"{self.request.checkpoint} (its config MODEL.ARCH={arch}) was trained on another CLIP "
                               f"than --backbone {self.request.backbone}; pass --backbone {arch.replace('/', '-')}")

    def base_needed(self, plan: BuildPlan) -> bool:
        return float(plan.options.get("eval_origin_weight", 0.0)) > 0

    def base_reason(self, plan: BuildPlan) -> str:
        return ("ost.eval_origin_weight > 0 blends the release with the original CLIP weights at evaluation, "
                "which the release does not hold")

    def source(self, name: str) -> Source | None:
        return clip_towers_source(name)  # ViFi-CLIP's layout, token_embedding included
