"""CLIP backbones: open_clip models by name + pretrained tag or local checkpoint, and small
configurations of this project's own for the embedded default and tests.

Why a module of its own: the identity of the backbone (resolved open_clip name, tag, weights
hash, token layout, input normalisation) is part of every result and every checkpoint, and the
OpenAI-weights/QuickGELU trap must be handled in exactly one place.

Two families: open_clip CLIPs (per-frame token layout, CLIP's normalisation) and the joint
space-time ViCLIP-style backbones of `harness.viclip` (`JOINT_BACKBONES`: `ViCLIP-B-16` from a
local copy of the released file, `harness-tiny-joint` for the embedded default), each with its
own layout, normalisation and text context, recorded in `BackboneSpec`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.errors import HarnessError, unknown_name_error
from harness.state_dicts import load_strict
from harness.viclip import JOINT_BACKBONES

#: Small CLIPs of this project's own (random init), as open_clip model configs (JSON files in
#: `harness/model_configs/`, registered with `open_clip.add_model_config`, so open_clip builds
#: them like any of its own): `harness-tiny` is the embedded default, 4 layers of width 128 at
#: 64 px (about 8 M parameters, most of them the token embedding); `harness-small`, 6 layers of
#: 192 at 96 px; `harness-b16-2l`, the shapes of ViT-B/16 with 2 layers (real widths, cheaply).
SMALL_CONFIG_DIR = Path(__file__).with_name("model_configs")
SMALL_CONFIGS: tuple[str, ...] = tuple(sorted(p.stem for p in SMALL_CONFIG_DIR.glob("*.json")))

#: Input normalisations, per RGB channel in 0-1 pixel units: name -> (mean, std). "openai": what
#: CLIP was trained with (every open_clip backbone here, and this project's own); "imagenet":
#: ViCLIP's (InternVideo1/Pretrain/ViCLIP `dataset/__init__.py` for `vit_*` encoders).
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "openai": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: Top-level entries of an OpenAI CLIP checkpoint (the TorchScript module's buffers, kept by a
#: `state_dict()` of it) that open_clip's own checkpoints never have.
OPENAI_STATE_KEYS = ("input_resolution", "context_length", "vocab_size")


@functools.cache
def small_config(name: str) -> dict[str, Any]:
    """The open_clip model config of one of this project's small CLIPs (read from its JSON
    without importing open_clip, so that recipes can use its sizes at import time)."""
    if name not in SMALL_CONFIGS:
        raise unknown_name_error("small backbone config", name, SMALL_CONFIGS)
    return json.loads((SMALL_CONFIG_DIR / f"{name}.json").read_text())


def _open_clip():
    """open_clip, with this project's small configs registered (once)."""
    import open_clip

    if not set(SMALL_CONFIGS) <= set(open_clip.list_models()):
        open_clip.add_model_config(SMALL_CONFIG_DIR)
    return open_clip


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
    #: Visual token layout (methods/layout.py): "per_frame" (CLIP) or "joint" (ViCLIP).
    token_layout: str = "per_frame"
    #: Input normalisation (a key of NORMALIZATIONS) and its per-channel mean / std (0-1 units).
    normalization: str = "openai"
    mean: tuple[float, ...] = NORMALIZATIONS["openai"][0]
    std: tuple[float, ...] = NORMALIZATIONS["openai"][1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backbone_token_layout(name: str) -> str:
    """The visual token layout of a backbone name, known before it is built (validation)."""
    return "joint" if name in JOINT_BACKBONES else "per_frame"


def backbone_normalization(name: str) -> str:
    """The input normalisation (a key of NORMALIZATIONS) of a backbone name."""
    return JOINT_BACKBONES[name].normalization if name in JOINT_BACKBONES else "openai"


def backbone_rows() -> list[dict[str, Any]]:
    """What `harness ls backbones` lists: the papers' CLIP (any other open_clip name works the same
    way), this project's small CLIPs and the joint space-time backbones, each with its token
    layout, input normalisation, text context, input size and where its weights come from."""
    from harness.defaults import REAL_BACKBONE, SYNTHETIC_BACKBONES

    rows = []
    for name in (REAL_BACKBONE, *SMALL_CONFIGS):
        cfg = small_config(name) if name in SMALL_CONFIGS else (_open_clip().get_model_config(name) or {})
        weights = ("'synthetic' (pretrained by the project) or a local file" if name in SYNTHETIC_BACKBONES else
                   "random or a local file" if name in SMALL_CONFIGS else "open_clip tags (openai, ...) or a local file")
        rows.append({"name": name, "token_layout": "per_frame", "normalization": "openai",
                     "context_length": cfg.get("text_cfg", {}).get("context_length", 77),
                     "image_size": cfg.get("vision_cfg", {}).get("image_size", 224), "weights": weights})
    for name, joint in JOINT_BACKBONES.items():
        weights = ("'synthetic' (harness-tiny's, made joint) or a local file" if joint.synthetic_from else
                   "a local copy of the released file (official layout), or random")
        rows.append({"name": name, "token_layout": "joint", "normalization": joint.normalization,
                     "context_length": joint.clip_config["text_cfg"]["context_length"],
                     "image_size": joint.clip_config["vision_cfg"]["image_size"], "weights": weights,
                     "frames": joint.frames})
    return rows


def resolve_model_name(name: str, pretrained: str | None) -> tuple[str, list[str]]:
    """Map a user-facing name to the open_clip config to build.

    Weights trained with QuickGELU (open_clip's pretrained config of the tag says so: the OpenAI
    releases) need the `-quickgelu` config: `ViT-B-16` + `openai` resolves to `ViT-B-16-quickgelu`
    (running them with exact GELU silently costs accuracy), and the substitution is recorded.
    """
    notes: list[str] = []
    if name in SMALL_CONFIGS or name in JOINT_BACKBONES or pretrained is None or name.endswith("-quickgelu"):
        return name, notes
    open_clip = _open_clip()
    if open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False):
        notes.append(f"{name} + pretrained={pretrained!r} resolved to {name}-quickgelu "
                     "(open_clip: these weights were trained with QuickGELU)")
        return f"{name}-quickgelu", notes
    return name, notes


#: `--activation` values: the MLP non-linearity a CLIP's weights were trained with.
ACTIVATIONS = ("quickgelu", "gelu")


def with_activation(name: str, activation: str) -> str:
    """The open_clip config of `name` that runs `activation`: `ViT-B-16` <-> `ViT-B-16-quickgelu`.
    A config of this project's own (fixed activation) must already run it."""
    if activation not in ACTIVATIONS:
        raise unknown_name_error("activation", activation, ACTIVATIONS)
    quick = activation == "quickgelu"
    if name in SMALL_CONFIGS:
        if bool(small_config(name).get("quick_gelu", False)) != quick:
            raise HarnessError(f"--activation {activation}: backbone {name} is built with "
                               f"{'exact GELU' if quick else 'QuickGELU'} (its config harness/model_configs/{name}.json)")
        return name
    plain = name.removesuffix("-quickgelu")
    target = f"{plain}-quickgelu" if quick else plain
    if target not in _open_clip().list_models():
        raise HarnessError(f"--activation {activation}: open_clip has no config {target} (for backbone {name})")
    return target


def activation_note(resolved: str, local: Path) -> str | None:
    """Which activation a ViT name runs when its weights come from a local file that does not
    record it (open_clip-format state dicts do not; OpenAI's format, which does, is checked by
    `_check_local_weights`), and how to choose the other: None where there is no choice."""
    if resolved in SMALL_CONFIGS:
        return None
    plain = resolved.removesuffix("-quickgelu")
    quick = resolved.endswith("-quickgelu")
    models = _open_clip().list_models()
    if plain not in models or f"{plain}-quickgelu" not in models or is_openai_checkpoint(local):
        return None
    other = plain if quick else f"{plain}-quickgelu"
    used, alternative = ("QuickGELU", "exact GELU") if quick else ("exact GELU", "QuickGELU (OpenAI CLIP and the "
                                                                   "video-CLIP releases built on it)")
    return (f"{resolved} runs {used} (its name says so; {local.name} does not record the activation its weights "
            f"were trained with); if they were trained with {alternative}, pass --backbone {other}")


def local_weights_note(name: str, pretrained: str | None) -> str | None:
    """`activation_note` for a `--backbone` / `--pretrained` pair (None unless a local file)."""
    local = Path(pretrained).expanduser() if pretrained else None
    if local is None or not local.is_file():
        return None
    resolved, _ = resolve_model_name(name, pretrained)
    return activation_note(resolved, local)


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_openai_checkpoint(path: Path) -> bool:
    """Whether `path` holds OpenAI-format CLIP weights (trained with QuickGELU): OpenAI releases
    TorchScript archives (a zip with a `code/` folder), and a state dict taken from one keeps
    their `input_resolution` / `context_length` / `vocab_size` entries."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.split("/", 1)[-1].startswith("code/") for n in archive.namelist()):
                return True
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception:  # noqa: BLE001 - not a plain torch file (safetensors, numpy): not OpenAI's format
        return False
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return isinstance(state, dict) and any(key in state for key in OPENAI_STATE_KEYS)


def _check_local_weights(path: Path, resolved: str, quick_gelu: bool) -> None:
    """Stop before OpenAI-format weights are built with exact GELU (a silent accuracy loss)."""
    if not quick_gelu and is_openai_checkpoint(path):
        raise HarnessError(
            f"--pretrained {path}: OpenAI-format CLIP weights (trained with QuickGELU), but --backbone "
            f"{resolved} uses exact GELU; pass --backbone {resolved}-quickgelu")


def _known_names() -> list[str]:
    return sorted([*_open_clip().list_models(), *JOINT_BACKBONES])


def _check_pretrained(name: str, resolved: str, pretrained: str | None, local: Path | None,
                      weights_file: str | os.PathLike | None) -> None:
    """A clear error for a tag the config does not have, a missing file, or an unresolved tag
    of this project's own (those are resolved to a file by `harness.weights` first)."""
    open_clip = _open_clip()
    if resolved not in open_clip.list_models():
        raise unknown_name_error("backbone", name, _known_names())
    if pretrained is None or local is not None or weights_file is not None:
        return
    tags = open_clip.list_pretrained_tags_by_model(resolved)
    if pretrained in tags:
        return
    if os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth")):
        raise HarnessError(f"--pretrained {pretrained!r}: no such file")
    raise HarnessError(
        f"--pretrained {pretrained!r} is not a tag of {resolved} (tags: {', '.join(tags) or 'none'}; "
        "this project's own: 'synthetic' for harness-tiny, via harness.weights.create_backbone) "
        "and not an existing checkpoint file"
    )


def create_clip(name: str = "harness-tiny", pretrained: str | None = None, seed: int | None = 0,
                weights_file: str | os.PathLike | None = None) -> tuple[nn.Module, BackboneSpec]:
    """Build an open_clip CLIP and describe it.

    `pretrained` is an open_clip tag (e.g. ``openai``), a path to a local checkpoint, or None
    (random init, seeded with `seed` so that two jobs of one run share the same random backbone).
    `weights_file` is the file a tag of this project's own was resolved to (`harness.weights`):
    its weights are loaded, and `pretrained` (the tag) is what the spec records. Joint space-time
    backbones (`JOINT_BACKBONES`) are built by `create_joint_clip`.
    """
    if name in JOINT_BACKBONES:
        return create_joint_clip(name, pretrained, seed, weights_file)
    open_clip = _open_clip()
    resolved, notes = resolve_model_name(name, pretrained)
    local = Path(pretrained).expanduser() if pretrained and Path(pretrained).expanduser().is_file() else None
    _check_pretrained(name, resolved, pretrained, local, weights_file)
    config = open_clip.get_model_config(resolved) or {}
    quick_gelu = bool(config.get("quick_gelu", False))
    weights = Path(weights_file) if weights_file is not None else local
    if weights is not None:
        _check_local_weights(weights, resolved, quick_gelu)
        if local is not None and weights_file is None:
            notes.extend(n for n in [activation_note(resolved, local)] if n)
    if seed is not None:
        torch.manual_seed(seed)
    # open_clip loads its tags and, for its own configs, local files (TorchScript, prefixes,
    # resized embeddings); the small configs' and resolved files are plain state dicts, loaded
    # below with a one-line error on a mismatch.
    by_open_clip = weights_file is None and (local is None or resolved not in SMALL_CONFIGS)
    source = (str(local) if local is not None else pretrained) if by_open_clip else None
    try:
        with contextlib.nullcontext() if source else _silence_root_warnings():  # "no pretrained weights" is intended
            model = open_clip.create_model(resolved, pretrained=source)
    except Exception as err:  # open_clip / huggingface_hub / urllib raise many kinds when offline
        if local:  # the file is there: the advice is about its content, not about downloading
            raise checkpoint_error(Path(pretrained).expanduser(), resolved, err) from None
        raise HarnessError(
            f"could not load weights {pretrained!r} for {resolved}: {type(err).__name__}: {err}. "
            "If this machine is offline (or HF_HUB_OFFLINE=1), download the checkpoint elsewhere "
            f"(open_clip: {resolved} / {pretrained}) and pass its path: --pretrained /path/to/file.pt"
        ) from None
    spec = BackboneSpec(
        name=name, pretrained=pretrained, resolved_name=resolved, quick_gelu=quick_gelu,
        image_size=int(model.visual.image_size[0]), context_length=int(model.context_length), notes=notes,
    )
    if weights is not None:
        if not by_open_clip:
            _load_local_state(model, weights)
        spec.weights_sha256 = _sha256_file(weights)
    return model, spec


def create_joint_clip(name: str, pretrained: str | None = None, seed: int | None = 0,
                      weights_file: str | os.PathLike | None = None) -> tuple[nn.Module, BackboneSpec]:
    """A joint space-time backbone (harness.viclip): random (`pretrained` None), from a local
    checkpoint (ViCLIP's official layout or this project's names), or, for a tag of this project
    resolved to `weights_file`, from the per-frame backbone it is made from (`synthetic_from`),
    turned joint the way ViCLIP starts from CLIP."""
    from harness.viclip import build_joint_clip, make_joint
    from harness.viclip_weights import load_joint_state, model_state, read_official_checkpoint

    config = JOINT_BACKBONES[name]
    local = Path(pretrained).expanduser() if pretrained and Path(pretrained).expanduser().is_file() else None
    notes: list[str] = []
    if weights_file is not None:
        if config.synthetic_from is None:
            raise HarnessError(f"--pretrained {pretrained}: {name} has no weights of this project's own")
        model, _ = create_clip(config.synthetic_from, pretrained, seed=seed, weights_file=weights_file)
        model = make_joint(model, config.frames)
        notes.append(f"{config.synthetic_from} weights ({pretrained}) made joint: patch kernel as a temporal-kernel-1 "
                     "Conv3d, zero temporal positional embedding")
        weights: Path | None = Path(weights_file)
    else:
        if pretrained is not None and local is None:
            own = " or 'synthetic'" if config.synthetic_from else ""
            raise HarnessError(f"--pretrained {pretrained!r}: no such file; {name} loads a local checkpoint "
                               f"(e.g. ViCLIP-B_InternVid-FLT-10M.pth for ViCLIP-B-16){own}")
        if seed is not None:
            torch.manual_seed(seed)
        model = build_joint_clip(name)
        weights = local
        if local is not None:
            content, read = read_official_checkpoint(local)
            load_joint_state(model, model_state(content, local), local)
            notes.extend(read)
    mean, std = NORMALIZATIONS[config.normalization]
    spec = BackboneSpec(name=name, pretrained=pretrained, resolved_name=name, quick_gelu=True,
                        image_size=int(model.visual.image_size[0]), context_length=int(model.context_length),
                        notes=notes, token_layout="joint", normalization=config.normalization, mean=mean, std=std)
    if weights is not None:
        spec.weights_sha256 = _sha256_file(weights)
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
    load_strict(model, state, path, "pass a checkpoint of this backbone, or the --backbone it was trained with")


@functools.cache
def _bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def count_truncated(texts: list[str] | tuple[str, ...], context_length: int) -> int:
    """How many of `texts` a text tower of `context_length` tokens truncates (start- and
    end-of-text tokens included; the tokenizer keeps the first tokens and ends with end-of-text,
    as open_clip and ViCLIP's `tokenize(truncate=True)` do)."""
    bpe = _bpe()
    return sum(len(bpe.encode(text)) + 2 > context_length for text in texts)


def get_tokenizer(spec: BackboneSpec):
    """A tokenizer whose context length matches the backbone's text tower (the BPE vocab ships with open_clip)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=spec.context_length)
