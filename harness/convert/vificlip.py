"""ViFi-CLIP releases (muzairkhattak/ViFi-CLIP `trainers/vificlip.py`), full fine-tuning and the
vision-language prompting variant: `image_encoder.*` is the CLIP image tower, `text_encoder.*`
the text tower without its token embedding, `logit_scale` at the top, under `model`.

Neither release holds the token embedding (ViFi-CLIP pre-computes its prompts' token
embeddings once), so it comes from `--base`; the stored prompt embeddings
(`complete_text_embeddings`, or `token_prefix` / `token_suffix` for the prompting variant) are
re-derived from the class names and template and compared, not loaded.

`utils/tools.epoch_saving` writes `{'model': <DDP 'module.' keys>, 'optimizer', 'lr_scheduler',
'max_accuracy', 'epoch', 'config': <the yacs CfgNode>}`; the CfgNode is read as plain data
(`release_io`) and used: `DATA.NUM_FRAMES` (frames), `DATA.NUM_CLASSES` (checked against the
class rows), `DATA.LABEL_LIST` (the training classes, from the upstream ViFi-CLIP labels when
--classes is not given), `MODEL.ARCH` (checked against --backbone) and, for prompting,
`TRAINER.ViFi_CLIP.*` (tokens, depth, context init; checked against the tensors).
"""
from __future__ import annotations

from typing import Any

import torch

from harness.convert.base import BuildPlan, Converter, k400_classes, require_rows, stacked_index
from harness.convert.cfgnode import SHARED_SETTINGS, check_arch, label_list_classes, record_settings
from harness.convert.mapping import Source
from harness.convert.text import check_context_buffers, compare_class_rows, prompt_embeddings, unchecked
from harness.errors import HarnessError

COMPLETE = "prompt_learner.complete_text_embeddings"


def _as_used(tensors) -> torch.Tensor:
    """A deep prompt as ViFi-CLIP's forward uses it: `.half()` (then promoted back by torch.cat)."""
    return tensors[0].half().to(tensors[0].dtype)
PREFIX, SUFFIX = "prompt_learner.token_prefix", "prompt_learner.token_suffix"


def clip_towers_source(name: str) -> Source | None:
    """The CLIP of a ViFi-CLIP-style model (`trainers/vificlip.py`, and OST built on it):
    `image_encoder.*` = the image tower, `text_encoder.*` = the text tower's modules, `logit_scale`."""
    if name == "clip.logit_scale":
        return Source.key("logit_scale")
    if name.startswith("clip.visual."):
        return Source.key("image_encoder." + name[len("clip.visual."):])
    if name.startswith("clip."):
        return Source.key("text_encoder." + name[len("clip."):])
    return None


class ViFiCLIPConverter(Converter):
    name = method = "vificlip"
    anchor = "image_encoder.class_embedding"
    needs_base = True
    upstream = "muzairkhattak/ViFi-CLIP trainers/vificlip.py"
    #: The release's fixed class-token buffers (checked, never loaded).
    buffers: tuple[str, ...] = (COMPLETE,)

    def prepare(self, release) -> BuildPlan:
        plan = BuildPlan(dict(self.request.options), self.request.frames or 8, None, [])
        plan.options.update(self.prompt_options(release.state))
        self.configured(release, plan)
        self.classnames = self.training_classes(release.state, plan)
        plan.notes += [f"class-token embeddings checked for {len(self.classnames)} classes" if self.classnames
                       else "class-token embeddings not checked (no --classes)", "token_embedding from --base"]
        return plan

    def prompt_options(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {}

    def class_rows(self, state: dict[str, torch.Tensor]) -> int | None:
        return next((state[k].shape[0] for k in self.buffers if k in state), None)

    def configured(self, release, plan: BuildPlan) -> None:
        """What the release's CfgNode (`config`) says, used and recorded; disagreements with the
        tensors or the request are errors."""
        where = f"{self.request.checkpoint} (its config"
        record_settings(release, plan, (*SHARED_SETTINGS, "TRAINER.ViFi_CLIP.USE"))
        frames = plan.from_config.get("DATA.NUM_FRAMES")
        if frames is not None and not self.request.frames:
            plan.frames = int(frames)
        rows, classes = self.class_rows(release.state), plan.from_config.get("DATA.NUM_CLASSES")
        if rows is not None and classes is not None and int(classes) != rows:
            raise HarnessError(f"{where} DATA.NUM_CLASSES={classes}) disagrees with its {rows} class rows")
        check_arch(self.request, plan.from_config.get("MODEL.ARCH"), where)
        ctx_init = release.setting("TRAINER.ViFi_CLIP.CTX_INIT")
        if isinstance(ctx_init, str) and self.method == "vificlip":  # the fixed prompt: "<CTX_INIT> <class>."
            plan.from_config["TRAINER.ViFi_CLIP.CTX_INIT"] = ctx_init
            plan.options.setdefault("prompt", ctx_init.replace("_", " ") + " {}.")
        use = plan.from_config.get("TRAINER.ViFi_CLIP.USE")
        if use not in (None, "both"):
            plan.notes.append(f"trained with TRAINER.ViFi_CLIP.USE={use} (one tower tuned); its tensors are used as "
                              "stored")

    def training_classes(self, state: dict[str, torch.Tensor], plan: BuildPlan) -> list[str] | None:
        """--classes; else the release's DATA.LABEL_LIST from the upstream ViFi-CLIP labels; else
        Kinetics-400 for a release with 400 class rows; None: not checkable."""
        rows = self.class_rows(state)
        if self.request.classes is not None:
            return self.request.classes
        label_list = plan.from_config.get("DATA.LABEL_LIST")
        if isinstance(label_list, str) and label_list:
            found = label_list_classes(label_list, self.request, plan)
            if found is not None:
                return found
        if rows != 400:
            return None
        return k400_classes(self.request.splits_root, self.request.cache_dir)

    def source(self, name: str) -> Source | None:
        if name == "clip.token_embedding.weight":
            return None  # not in ViFi-CLIP checkpoints: from --base
        return clip_towers_source(name)

    def ignore(self, key: str, value: torch.Tensor) -> str | None:
        if key in self.buffers:
            return unchecked(key) if not self.classnames else "re-derived from class names (checked, see derived)"
        return None

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        if not self.classnames or COMPLETE not in self.state():
            return {}
        how = f"from {len(self.classnames)} class names with template {model.config.prompt!r} and the base token embedding"
        return {COMPLETE: compare_class_rows(prompt_embeddings(model, self.classnames), self.state()[COMPLETE],
                                             self.classnames, COMPLETE, how)}


class ViFiCLIPPromptConverter(ViFiCLIPConverter):
    """The prompting variant: frozen CLIP plus deep vision (`VPT`, `VPT_shallow`) and text prompts."""

    name = method = "vificlip_prompt"
    buffers = (PREFIX, SUFFIX)

    def prompt_options(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        ctx = require_rows(state, "prompt_learner.ctx", "--from vificlip_prompt")
        deep = [k for k in state if k.startswith("image_encoder.transformer.resblocks.") and k.endswith(".VPT_shallow")]
        return {"n_tokens": int(ctx.shape[0]), "depth": 1 + len(deep)}

    def configured(self, release, plan: BuildPlan) -> None:
        super().configured(release, plan)
        prefix = "TRAINER.ViFi_CLIP."
        checks = {"N_CTX_VISION": "n_tokens", "N_CTX_TEXT": "n_tokens", "PROMPT_DEPTH_VISION": "depth",
                  "PROMPT_DEPTH_TEXT": "depth"}
        for key, option in checks.items():
            value = release.setting(prefix + key)
            if value is None:
                continue
            plan.from_config[prefix + key] = value
            if int(value) != plan.options[option]:
                raise HarnessError(f"{self.request.checkpoint}: its config {prefix}{key}={value} disagrees with its "
                                   f"tensors ({option}={plan.options[option]})")
        ctx_init = release.setting(prefix + "CTX_INIT")
        if isinstance(ctx_init, str):
            plan.from_config[prefix + "CTX_INIT"] = ctx_init
            plan.options.setdefault("ctx_init", ctx_init)

    def prepare(self, release) -> BuildPlan:
        plan = super().prepare(release)
        plan.notes.append("VPT and VPT_shallow (both towers) rounded to fp16: the official forward uses them as "
                          ".half() (clip/model.py), so these are the values the official model computes with")
        return plan

    def source(self, name: str) -> Source | None:
        if name == "visual_prompts":
            return Source(("image_encoder.VPT",), _as_used)
        if name == "prompt_learner.ctx":
            return Source.key(name)
        for ours, theirs in (("clip.visual.transformer.resblocks.", "image_encoder"),
                             ("clip.transformer.resblocks.", "text_encoder")):
            i = stacked_index(name, ours)
            if i is not None and name.endswith(f"{i}.prompts"):
                return Source((f"{theirs}.transformer.resblocks.{i}.VPT_shallow",), _as_used)
        return super().source(name)

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        if not self.classnames:
            return {}
        how = f"for {len(self.classnames)} classes with the prompt {model.prompt_learner.prefix!r} + class name"
        return check_context_buffers(model, self.classnames, self.state(), (PREFIX, SUFFIX), how)
