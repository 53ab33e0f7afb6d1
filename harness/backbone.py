"""CLIP backbones: open_clip models by name + pretrained tag or local checkpoint, and small
configurations of this project's own for the embedded default and tests.

Why a module of its own: the identity of the backbone (resolved open_clip name, tag, weights
hash) is part of every result and every checkpoint, and the OpenAI-weights/QuickGELU trap must
be handled in exactly one place.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import HarnessError

#: Small CLIPs of this project's own (random init). `harness-tiny` is the embedded default:
#: 4 layers of width 128 at 64 px (about 8 M parameters, most of them the token embedding).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "harness-tiny": dict(
        embed_dim=64,
        vision_cfg=dict(image_size=64, layers=4, width=128, head_width=32, patch_size=16),
        text_cfg=dict(context_length=32, vocab_size=49408, width=128, heads=4, layers=4),
    ),
    "harness-small": dict(
        embed_dim=128,
        vision_cfg=dict(image_size=96, layers=6, width=192, head_width=32, patch_size=16),
        text_cfg=dict(context_length=48, vocab_size=49408, width=192, heads=6, layers=6),
    ),
    # Same shapes as ViT-B/16 with fewer layers: exercises the real widths cheaply in tests.
    "harness-b16-2l": dict(
        embed_dim=512,
        vision_cfg=dict(image_size=224, layers=2, width=768, head_width=64, patch_size=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=2),
    ),
}

#: Tag of the project's own weights for `harness-tiny`: contrastively pretrained on synthetic
#: captioned frames (`harness.pretrain`), generated once and cached, so that frozen-backbone
#: methods have meaningful features on the embedded dataset.
SYNTHETIC_TAG = "synthetic"

#: open_clip tags whose weights were trained with QuickGELU (the OpenAI releases).
QUICKGELU_TAGS = {"openai"}


@dataclass
class BackboneSpec:
    """What a result or checkpoint records about the backbone it was made with."""

    name: str
    pretrained: str | None
    resolved_name: str
    weights_sha256: str | None = None
    quick_gelu: bool = True
    image_size: int = 224
    context_length: int = 77
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model_name(name: str, pretrained: str | None) -> tuple[str, list[str]]:
    """Map a user-facing name to the open_clip config to build.

    OpenAI weights need QuickGELU: `ViT-B-16` + `openai` resolves to `ViT-B-16-quickgelu` (running
    them with exact GELU silently costs accuracy), and the substitution is recorded.
    """
    notes: list[str] = []
    if name in TINY_CONFIGS:
        return name, notes
    if pretrained in QUICKGELU_TAGS and not name.endswith("-quickgelu"):
        notes.append(f"{name} + pretrained={pretrained!r} resolved to {name}-quickgelu (OpenAI weights use QuickGELU)")
        return f"{name}-quickgelu", notes
    return name, notes


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _known_names() -> list[str]:
    import open_clip

    return sorted(set(open_clip.list_models()) | set(TINY_CONFIGS))


def create_clip(name: str = "harness-tiny", pretrained: str | None = None, seed: int | None = 0,
                cache_dir: str | os.PathLike | None = None) -> tuple[nn.Module, BackboneSpec]:
    """Build an open_clip CLIP and describe it.

    `pretrained` is an open_clip tag (e.g. ``openai``), a path to a local checkpoint, or None
    (random init, seeded with `seed` so that two jobs of one run share the same random backbone).
    """
    import open_clip

    resolved, notes = resolve_model_name(name, pretrained)
    if seed is not None:
        torch.manual_seed(seed)
    if resolved in TINY_CONFIGS:
        local_file = pretrained
        if pretrained == SYNTHETIC_TAG:
            if resolved != "harness-tiny":
                raise HarnessError(f"--pretrained {SYNTHETIC_TAG}: only harness-tiny has synthetic weights")
            from harness.pretrain import ensure_pretrained_tiny

            local_file = str(ensure_pretrained_tiny(Path(cache_dir) / "backbones" if cache_dir else None))
        elif pretrained is not None and not Path(pretrained).is_file():
            raise HarnessError(
                f"--pretrained {pretrained!r}: the small config {name!r} has no published weights; "
                f"pass a local checkpoint file, {SYNTHETIC_TAG!r} (harness-tiny) or leave --pretrained unset"
            )
        cfg = TINY_CONFIGS[resolved]
        model = open_clip.CLIP(**cfg, quick_gelu=True)
        spec = BackboneSpec(
            name=name, pretrained=pretrained, resolved_name=resolved, quick_gelu=True,
            image_size=cfg["vision_cfg"]["image_size"], context_length=cfg["text_cfg"]["context_length"],
            notes=notes,
        )
        if local_file is not None:
            _load_local_state(model, Path(local_file))
            spec.weights_sha256 = _sha256_file(Path(local_file))
        return model, spec

    if resolved not in open_clip.list_models():
        from harness.errors import unknown_name_error

        raise unknown_name_error("backbone", name, _known_names())
    local = pretrained is not None and Path(pretrained).expanduser().is_file()
    if pretrained is not None and not local and pretrained not in open_clip.list_pretrained_tags_by_model(resolved):
        if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
            raise HarnessError(f"--pretrained {pretrained!r}: no such file")
        tags = open_clip.list_pretrained_tags_by_model(resolved)
        raise HarnessError(
            f"--pretrained {pretrained!r} is not a tag of {resolved} (tags: {', '.join(tags) or 'none'}) "
            "and not an existing checkpoint file"
        )
    import contextlib

    quiet = contextlib.nullcontext() if pretrained else _silence_root_warnings()  # "no pretrained weights" is intended
    try:
        with quiet:
            model = open_clip.create_model(
                resolved, pretrained=str(Path(pretrained).expanduser()) if local else pretrained,
                force_quick_gelu=bool(resolved.endswith("-quickgelu")),
            )
    except Exception as err:  # open_clip / huggingface_hub / urllib raise many kinds when offline
        if local:  # the file is there: the advice is about its content, not about downloading
            raise checkpoint_error(Path(pretrained).expanduser(), resolved, err) from None
        raise HarnessError(
            f"could not load weights {pretrained!r} for {resolved}: {type(err).__name__}: {err}. "
            "If this machine is offline (or HF_HUB_OFFLINE=1), download the checkpoint elsewhere "
            f"(open_clip: {resolved} / {pretrained}) and pass its path: --pretrained /path/to/file.pt"
        ) from None
    vcfg = open_clip.get_model_config(resolved) or {}
    spec = BackboneSpec(
        name=name, pretrained=pretrained, resolved_name=resolved,
        quick_gelu=bool(vcfg.get("quick_gelu", False) or resolved.endswith("-quickgelu")),
        image_size=int(model.visual.image_size[0]), context_length=int(model.context_length), notes=notes,
    )
    if local:
        spec.weights_sha256 = _sha256_file(Path(pretrained).expanduser())
    return model, spec


class _silence_root_warnings:
    """Context manager: open_clip logs a root-logger warning for every random-init model."""

    def __enter__(self) -> None:
        import logging

        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        import logging

        logging.getLogger().setLevel(self.level)


def checkpoint_error(path: Path, resolved: str, err: BaseException) -> HarnessError:
    """One line for a local checkpoint that cannot be loaded into `resolved`: the first
    mismatched key when torch names one. A ConfigurationError: every job shares the backbone."""
    from harness.errors import ConfigurationError

    text = str(err).replace("\n", " ").replace("\t", " ")
    mismatch = text.find("size mismatch for ")
    reason = text[mismatch:].split(". ")[0][:300] if mismatch >= 0 else f"{type(err).__name__}: {text[:300]}"
    return ConfigurationError(f"--pretrained {path}: cannot be loaded into {resolved} ({reason}); pass a "
                              f"checkpoint of {resolved}, or the --backbone it was trained with")


def _load_local_state(model: nn.Module, path: Path) -> None:
    """Load a plain state dict (optionally under 'state_dict') into a small CLIP."""
    from harness.errors import ConfigurationError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch.save file, or one holding more than tensors
        raise checkpoint_error(path, "the backbone", err) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigurationError(f"--pretrained {path}: holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    for key, value in state.items():
        if key in own and getattr(value, "shape", None) is not None and value.shape != own[key].shape:
            raise ConfigurationError(f"--pretrained {path}: checkpoint key {key!r} has shape {tuple(value.shape)}, "
                                     f"the backbone expects {tuple(own[key].shape)}; pass a checkpoint of this "
                                     "backbone, or the --backbone it was trained with")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigurationError(
            f"--pretrained {path}: checkpoint does not match the backbone (missing {len(missing)} keys, e.g. "
            f"{missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
        )


def get_tokenizer(spec: BackboneSpec):
    """A tokenizer whose context length matches the backbone's text tower (the BPE vocab ships with open_clip)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=spec.context_length)
