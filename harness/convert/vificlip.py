"""ViFi-CLIP releases (muzairkhattak/ViFi-CLIP `trainers/vificlip.py`), full fine-tuning and the
vision-language prompting variant: `image_encoder.*` is the CLIP image tower, `text_encoder.*`
the text tower without its token embedding, `logit_scale` at the top, under `model`.

Neither release holds the token embedding (ViFi-CLIP pre-computes its prompts' token
embeddings once), so it comes from `--base`; the stored prompt embeddings
(`complete_text_embeddings`, or `token_prefix` / `token_suffix` for the prompting variant) are
re-derived from the class names and template and compared, not loaded.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.convert.base import BuildPlan, Converter, k400_classes, require_rows, stacked_index
from harness.convert.mapping import Source
from harness.convert.text import check_context_buffers, compare_class_rows, prompt_embeddings, unchecked

COMPLETE = "prompt_learner.complete_text_embeddings"
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
        options = dict(self.request.options)
        options.update(self.prompt_options(release.state))
        self.classnames = self.training_classes(release.state)
        note = (f"class-token embeddings checked for {len(self.classnames)} classes" if self.classnames
                else "class-token embeddings not checked (no --classes)")
        return BuildPlan(options, self.request.frames or 8, None, [note, "token_embedding from --base"])

    def prompt_options(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {}

    def training_classes(self, state: dict[str, torch.Tensor]) -> list[str] | None:
        """--classes, or Kinetics-400 for a release with 400 class rows; None: not checkable."""
        rows = next((state[k].shape[0] for k in self.buffers if k in state), None)
        if self.request.classes is not None or rows != 400:
            return self.request.classes
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

    def source(self, name: str) -> Source | None:
        if name == "visual_prompts":
            return Source.key("image_encoder.VPT")
        if name == "prompt_learner.ctx":
            return Source.key(name)
        for ours, theirs in (("clip.visual.transformer.resblocks.", "image_encoder"),
                             ("clip.transformer.resblocks.", "text_encoder")):
            i = stacked_index(name, ours)
            if i is not None and name.endswith(f"{i}.prompts"):
                return Source.key(f"{theirs}.transformer.resblocks.{i}.VPT_shallow")
        return super().source(name)

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        if not self.classnames:
            return {}
        how = f"for {len(self.classnames)} classes with the prompt {model.prompt_learner.prefix!r} + class name"
        return check_context_buffers(model, self.classnames, self.state(), (PREFIX, SUFFIX), how)
