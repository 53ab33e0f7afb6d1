"""ViFi-CLIP's "bridge and prompt" variant (Rasheed et al., CVPR 2023; muzairkhattak/ViFi-CLIP
`trainers/vificlip.py` + `clip/model.py` with `PROMPT_MODEL: True`): CLIP stays frozen and
deep, independent vision and text prompts are learned (IVLP design: no coupling between the
two towers, unlike MaPLe).

- Vision: n tokens appended after the patch tokens, after the positional embedding and before
  `ln_pre`; in blocks 2..depth the previous layer's n prompt outputs are replaced by that layer's
  own n tokens. Frames are encoded independently and their features averaged (ViFi-CLIP).
- Text: the n tokens after start-of-text are a learned context before the class name
  (``"X ... X {classname}."``, or initialised from `ctx_init` words when n does not exceed their
  count); in blocks 2..depth they are replaced by that layer's own n tokens.
All prompts N(0, 0.02); `logit_scale` stays frozen. Trainable: depth * n * (768 + 512):
184,320 with the base-to-novel config (16 tokens, depth 9), 153,600 with the few-shot config
(10 tokens, depth 12).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.layout import JOINT, PER_FRAME
from methods.prompting import DeepPromptBlock, LearnedContext, normal_prompts, splice, word_context
from methods.registry import register_method


@dataclass
class ViFiCLIPPromptConfig(MethodConfig):
    prompt: str = option("a photo of a {}.", "unused: the text context is learned (see ctx_init)")
    lr: float = option(4e-2, "AdamW lr (ViFi-CLIP prompting configs: 4e-2 base-to-novel, 8e-3 few-shot)")
    weight_decay: float = option(0.001, "AdamW weight decay (ViFi-CLIP)")
    n_tokens: int = option(16, "prompt tokens per layer in each tower (16 base-to-novel, 10 few-shot)")
    depth: int = option(9, "layers with prompts in each tower, input layer included (9 base-to-novel, 12 few-shot)")
    ctx_init: str = option(
        "a photo of a",
        "words initialising the text context when n_tokens <= their token count, else N(0, 0.02) "
        "(ViFi-CLIP's rule: with its 16 / 10 tokens the context starts random); '' for always random",
    )

    def validate(self) -> None:
        if self.n_tokens < 1:
            raise HarnessError(f"vificlip_prompt.n_tokens must be >= 1, got {self.n_tokens}")
        if self.depth < 1:
            raise HarnessError(f"vificlip_prompt.depth must be >= 1 (1 = input layer only), got {self.depth}")


@register_method("vificlip_prompt", ViFiCLIPPromptConfig, "ViFi-CLIP bridge-and-prompt: deep vision + text prompts")
class ViFiCLIPPrompt(VideoTextModel):
    text_is_frozen = False
    #: Joint (ViCLIP): one set of n vision prompts per clip, after the clip's patch tokens.
    token_layouts = frozenset({PER_FRAME, JOINT})
    allows_token_mask = True  # prompts follow whatever patch tokens remain

    def build(self) -> None:
        config: ViFiCLIPPromptConfig = self.config
        n, depth = config.n_tokens, config.depth
        if depth > min(self.visual_depth, self.text_depth):
            raise HarnessError(
                f"vificlip_prompt.depth={depth} exceeds the backbone's {self.visual_depth} visual / "
                f"{self.text_depth} text layers"
            )
        self.visual_prompts = normal_prompts(n, self.visual_width)
        init = word_context(self, config.ctx_init, n)
        self.prompt_learner = LearnedContext(n, self.text_width, init=init, init_words=config.ctx_init)
        deep = range(1, depth)
        if deep:
            self.wrap_visual(lambda block, i: DeepPromptBlock(block, self.ctx, i, "visual", n, at_end=True), deep)
            self.wrap_text(lambda block, i: DeepPromptBlock(block, self.ctx, i, "text", n, at_end=False), deep)

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        params = [("visual_prompts", self.visual_prompts), ("prompt_learner.ctx", self.prompt_learner.ctx)]
        params += [(f"{name}.prompts", module.prompts) for name, module in self.named_modules()
                   if isinstance(module, DeepPromptBlock)]
        return params

    def visual_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Append the first layer's vision prompts after the patch tokens (before `ln_pre`)."""
        return splice(x, self.visual_prompts, x.shape[1])

    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        return self.prompt_learner.text_features(self, classnames)

    def prompt_texts(self, classnames: Sequence[str]) -> list[str]:
        return self.prompt_learner.texts(classnames)
