"""ViFi-CLIP (Rasheed et al., CVPR 2023): full fine-tuning of both CLIP encoders with mean-pooled
frame features (muzairkhattak/ViFi-CLIP `trainers/vificlip.py`).

Trainable: everything but `token_embedding`, which ViFi-CLIP never holds (it pre-computes
prompt embeddings once): 124,323,841 parameters at ViT-B/16, `logit_scale` included.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from methods.base import MethodConfig, VideoTextModel, option
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method


@dataclass
class ViFiCLIPConfig(MethodConfig):
    prompt: str = option("a photo of a {}.", "text template (ViFi-CLIP's)")
    lr: float = option(2e-6, "AdamW lr (ViFi-CLIP base-to-novel / few-shot; 2.2e-5 fully supervised)")
    weight_decay: float = option(0.001, "AdamW weight decay (ViFi-CLIP)")


@register_method("vificlip", ViFiCLIPConfig, "full fine-tune of both encoders, mean-pooled frames")
class ViFiCLIP(VideoTextModel):
    text_is_frozen = False
    #: Joint (ViCLIP): the whole space-time encoder is fine-tuned, its CLS is the clip feature.
    token_layouts = frozenset({PER_FRAME, JOINT})
    allows_token_mask = True  # no module regroups tokens: ViCLIP's pretraining masking applies as is

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("clip.token_embedding.")]
