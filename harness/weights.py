"""Weights of this project's own, named by a tag (`synthetic`), resolved to a file before a CLIP
is built.

Why a module of its own: `harness.backbone` builds open_clip models from open_clip tags and
files and must stay below the code that makes weights (`harness.pretrain` trains a backbone, so
it imports `harness.backbone`, never the other way round). The callers that accept a
`--pretrained` value (engine, params, bench) call `create_backbone`, which turns a tag of this
project into its cached file (training it on first use) and then calls `create_clip`.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from harness.backbone import BackboneSpec, create_clip
from harness.errors import HarnessError
from harness.paths import cache_root

#: Tag of the project's own weights for `harness-tiny`: contrastively pretrained on synthetic
#: captioned frames (`harness.pretrain`), generated once and cached, so that frozen-backbone
#: methods have meaningful features on the embedded dataset.
SYNTHETIC_TAG = "synthetic"


def synthetic_source(name: str) -> str:
    """The backbone whose pretraining the `synthetic` weights of `name` are: harness-tiny's own, and
    harness-tiny-joint's (harness-tiny's weights, made joint when the backbone is built)."""
    from harness.defaults import SYNTHETIC_BACKBONES
    from harness.viclip import JOINT_BACKBONES

    if name not in SYNTHETIC_BACKBONES:
        raise HarnessError(f"--pretrained {SYNTHETIC_TAG}: only {', '.join(SYNTHETIC_BACKBONES)} have synthetic weights "
                           f"(got --backbone {name})")
    return JOINT_BACKBONES[name].synthetic_from or name if name in JOINT_BACKBONES else name


def resolve_weights(name: str, pretrained: str | None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The local file a tag of this project's own stands for (made if missing), else None (an
    open_clip tag, a path or no weights: `create_clip` handles those)."""
    if pretrained != SYNTHETIC_TAG:
        return None
    synthetic_source(name)  # a backbone without synthetic weights: one line
    from harness.pretrain.cache import ensure_pretrained_tiny

    return ensure_pretrained_tiny(cache_root(cache_dir) / "backbones")


def create_backbone(name: str = "harness-tiny", pretrained: str | None = None, seed: int | None = 0,
                    cache_dir: str | os.PathLike | None = None) -> tuple[nn.Module, BackboneSpec]:
    """`create_clip` for any `--pretrained` value, this project's own tags included."""
    return create_clip(name, pretrained, seed=seed, weights_file=resolve_weights(name, pretrained, cache_dir))
