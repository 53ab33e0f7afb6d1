"""Vita-CLIP releases (TalalWasim/Vita-CLIP `VitaCLIP`): a ViT written with timm-style names and
separate q/k/v projections, prompt parameters stacked over layers, and the CoOp text buffers.

Renames: `visual.blocks.<i>.attn.{q,k,v}_proj` -> fused `attn.in_proj_*` (q, k, v stacked in
that order, as `nn.MultiheadAttention` expects), `norm1/norm2` -> `ln_1/ln_2`, `mlp.fc1/fc2` ->
`mlp.c_fc/c_proj`, `visual.global_prompts[i]` -> block i's `global_prompts`,
`visual.patch_embed.proj.bias` -> `patch_bias` (only with `vitaclip.patch_bias=true`; a zero
bias is dropped, a non-zero one without the option is an error), `textual.*` -> the CLIP text tower.
"""
from __future__ import annotations

from typing import Any

import torch

from harness.convert.base import BuildPlan, Converter, closed_set_classes, require_rows, stacked_index
from harness.convert.mapping import Source, concat, row
from harness.convert.text import check_context_buffers, unchecked
from harness.errors import HarnessError

BLOCKS = "clip.visual.transformer.resblocks."
PATCH_BIAS = "visual.patch_embed.proj.bias"
#: Our visual names (after `clip.visual.`) -> Vita-CLIP's (after `visual.`).
VISUAL = {"class_embedding": "cls_token", "positional_embedding": "pos_embed", "proj": "proj",
          "conv1.weight": "patch_embed.proj.weight"}
#: Our block-local names -> Vita-CLIP's block-local names.
BLOCK = {"ln_1.": "norm1.", "ln_2.": "norm2.", "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2.",
         "attn.out_proj.": "attn.out_proj."}
#: Block parameters that keep their official name.
SAME_IN_BLOCK = ("local_prompts", "cls_proj.", "summary_ln.", "summary_attn_layer.")


class VitaCLIPConverter(Converter):
    name = method = "vitaclip"
    anchor = "visual.cls_token"
    upstream = "TalalWasim/Vita-CLIP training/VitaCLIP_*.py"

    def prepare(self, release) -> BuildPlan:
        state = release.state
        options = dict(self.request.options)
        ctx = require_rows(state, "prompt_learner.ctx", "--from vitaclip")
        time_embed = require_rows(state, "visual.time_embed", "--from vitaclip")
        options.setdefault("text_ctx", int(ctx.shape[-2]))
        options.setdefault("csc", ctx.dim() == 3)
        options.setdefault("global_prompts", int(state["visual.global_prompts"].shape[1])
                           if "visual.global_prompts" in state else 0)
        options.setdefault("local_prompts", any(k.endswith(".local_prompts") for k in state))
        options.setdefault("summary_token", any(".summary_attn_layer." in k for k in state))
        self.patch_bias = bool(options.get("patch_bias", False))
        frames = int(time_embed.shape[0])
        if self.request.frames and self.request.frames != frames:
            raise HarnessError(f"visual.time_embed was trained for T={frames} frames, --frames asks for "
                               f"{self.request.frames}; convert with --frames {frames} (the model resizes "
                               "time_embed for other clip lengths at run time)")
        notes: list[str] = []
        classnames = self.request.classes
        if options["csc"]:
            classnames, note = closed_set_classes(int(ctx.shape[0]), self.request,
                                                  "the release's class-specific prompt_learner.ctx")
            notes.append(f"csc=true ({ctx.shape[0]} class contexts): {note}")
        self.classnames = classnames
        return BuildPlan(options, frames, classnames, notes)

    def source(self, name: str) -> Source | None:
        if name == "clip.logit_scale":
            return Source.key("logit_scale")
        if name in ("time_embed", "prompt_learner.ctx"):
            return Source.key("visual.time_embed" if name == "time_embed" else name)
        if name == "patch_bias":
            return Source.key(PATCH_BIAS)
        i = stacked_index(name, BLOCKS)
        if i is not None:
            return self._block(i, name[len(f"{BLOCKS}{i}."):])
        if name.startswith("clip.visual."):
            local = name[len("clip.visual."):]
            return Source.key("visual." + VISUAL.get(local, local))
        if name.startswith("clip."):
            return Source.key("textual." + name[len("clip."):])
        return None

    @staticmethod
    def _block(i: int, local: str) -> Source:
        ours = f"visual.blocks.{i}."
        if local.startswith("attn.in_proj_"):
            kind = "weight" if local.endswith("weight") else "bias"
            return concat(*(f"{ours}attn.{p}_proj.{kind}" for p in "qkv"), note="split q/k/v fused")
        if local == "global_prompts":
            return row("visual.global_prompts", i)
        for mine, theirs in BLOCK.items():
            if local.startswith(mine):
                return Source.key(ours + theirs + local[len(mine):])
        if local.startswith(SAME_IN_BLOCK):
            return Source.key(ours + local)
        raise HarnessError(f"vitaclip converter: no official name known for {BLOCKS}{i}.{local}")

    def ignore(self, key: str, value: torch.Tensor) -> str | None:
        if key == PATCH_BIAS:
            if not value.any():
                return "all zero: the same as CLIP's bias-free conv1"
            raise HarnessError(
                f"{PATCH_BIAS} is non-zero (max |b| = {float(value.float().abs().max()):.3g}): the official patch "
                "embedding is a Conv2d with a bias that CLIP's conv1 lacks; convert with "
                "--set vitaclip.patch_bias=true to keep it as a frozen patch bias")
        if key in ("prompt_learner.token_prefix", "prompt_learner.token_suffix"):
            return unchecked(key) if not self.classnames else "re-derived from class names (checked, see derived)"
        return None

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        if not self.classnames:
            return {}
        how = f"for {len(self.classnames)} classes with the 'X ... X {{}}.' prompt"
        return check_context_buffers(model, self.classnames, self.state(),
                                     ("prompt_learner.token_prefix", "prompt_learner.token_suffix"), how)
