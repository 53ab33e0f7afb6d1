"""Helpers shared by the per-method test files (test_aim, test_st_adapter, test_vitaclip,
test_vificlip_prompt): backbones to build methods on, deterministic videos, perturbing the
zero-initialised parameters, protocol class names and the official state-dict listings under
../shared/upstream.

The backbone fixtures (`tiny`, `b16`: per module; `b16_meta`: per session) are in conftest.py and made
with `make_backbone`. A test file binds its method (and its defaults) once:
``build = builder("vitaclip")``, or
``build, build_b16, video, perturb_zero_init = bind("aim", 4, perturb_scale=0.1)``.
"""
from __future__ import annotations

import copy
import csv
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.backbone import create_clip, get_tokenizer
from methods.registry import build_method

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream"
OFFICIAL_STATE_DICTS = UPSTREAM / "official-state-dicts"
CLASSES_400 = [f"class {i}" for i in range(400)]
TINY_CLASSES = ["archery", "bowling", "juggling"]
FALLBACK_CLASSES = ["brush hair", "cartwheel", "catch", "chew", "clap", "climb"]


def make_backbone(name: str, meta: bool = False):
    """(clip, tokenizer) of a randomly initialised backbone; with `meta` its weights are on the
    meta device: counts and shapes only, cheap to copy."""
    clip, spec = create_clip(name, pretrained=None)
    return (clip.to("meta") if meta else clip), get_tokenizer(spec)


def build(backbone, options=None, classnames=None, frames: int = 8, *, method: str):
    """Method `method` on a deep copy of the (clip, tokenizer) `backbone`."""
    clip, tokenizer = backbone
    return build_method(method, copy.deepcopy(clip), tokenizer, frames, options or {}, classnames)


def build_b16(backbone, options, frames: int = 8, *, method: str):
    """Build on the meta device (inserted modules too): exact structure, no memory, no init cost."""
    with torch.device("meta"):
        return build(backbone, options, CLASSES_400, frames, method=method)


def video(batch: int = 2, frames: int = 8, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def perturb_zero_init(model: nn.Module, scale: float, seed: int = 2) -> None:
    """Give every all-zero trainable tensor (zero-initialised adapter weights, biases, embeddings)
    random values of std `scale`, so that the inserted modules act."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.requires_grad and not param.any():
                param.copy_(scale * torch.randn(param.shape, generator=gen))


def protocol_classnames(csv_name: str = "hmdb_51_base_labels.csv") -> list[str]:
    """Class names of a real protocol file (HMDB51 base classes), or a stand-in when the upstream
    folder is not on this machine."""
    path = UPSTREAM / "vifi-clip" / "labels" / csv_name
    if not path.is_file():
        return FALLBACK_CLASSES
    with open(path, newline="") as handle:
        return [row["name"] for row in csv.DictReader(handle)]


def official_rows(path: Path) -> Iterator[tuple[str, list[int], bool]]:
    """(key, shape, trainable) of each entry of an official state-dict listing (tab-separated
    key, shape as `768x3` or `scalar`, dtype, trainable 0/1; `#` lines are comments)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            key, shape, _, trainable = line.split("\t")
            yield key, [] if shape == "scalar" else [int(d) for d in shape.split("x")], trainable == "1"


def assert_matches_official_state_dict(model: nn.Module, path: Path,
                                       official_key: Callable[[str], str | None]) -> None:
    """Every parameter of `model` with an official counterpart has the official name (via
    `official_key`) and shape, the two sets of names are equal, and so are the trainable sets."""
    official, trainable = {}, set()
    for key, shape, grad in official_rows(path):
        official[key] = shape
        if grad:
            trainable.add(key)
    ours = {official_key(n): (list(p.shape), p.requires_grad)
            for n, p in model.named_parameters() if official_key(n) is not None}
    assert {k: shape for k, (shape, _) in ours.items()} == official
    assert {k for k, (_, grad) in ours.items() if grad} == trainable


def plain_clip_text(clip, tokenizer, texts: list[str]) -> torch.Tensor:
    """Normalised features of `texts` by an untouched open_clip CLIP (no grad)."""
    with torch.no_grad():
        return F.normalize(clip.encode_text(tokenizer(texts)), dim=-1)


def changed_after_adamw_steps(model: nn.Module, classnames: list[str], weight_decay: float,
                              labels: tuple[int, ...] = (0, 5), steps: int = 2,
                              clip: Callable[[int], torch.Tensor] = lambda step: video(seed=step)) -> set[str]:
    """Names of the parameters that `steps` AdamW steps (lr 1e-2) on the classification losses
    over `classnames` changed; `clip(step)` is the video batch of each step."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                                  weight_decay=weight_decay)
    targets = torch.tensor(labels)
    for step in range(steps):
        optimizer.zero_grad()
        losses = model.losses(model(clip(step), classnames), targets, classnames)
        sum(losses.values()).backward()
        optimizer.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def encode_both_orders(model, clip_video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Video features of `clip_video` and of the same clips with their frames reversed (no grad)."""
    with torch.no_grad():
        return model.encode_video(clip_video), model.encode_video(clip_video.flip(1))


def builder(method: str, **defaults) -> Callable[..., nn.Module]:
    """`build` for one method, with other defaults (frames, classnames) if given."""
    return partial(build, method=method, **defaults)


def assert_reproduces(model, reference, clip_video: torch.Tensor, classnames: list[str]) -> None:
    """`model` gives `reference`'s video features and logits (e.g. zero-initialised adapters
    against frozen CLIP)."""
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(clip_video), reference.encode_video(clip_video))
        torch.testing.assert_close(model(clip_video, classnames), reference(clip_video, classnames))


def assert_frame_order_matters(model, reference, clip_video: torch.Tensor) -> None:
    """Reversing the frames leaves `reference` (mean-pooled frozen CLIP, which ignores order)
    unchanged but changes `model`'s video features."""
    torch.testing.assert_close(*encode_both_orders(reference, clip_video))
    forward, backward = encode_both_orders(model, clip_video)
    assert (forward - backward).abs().max() > 1e-3


def assert_forward_and_gradients(model, classnames: list[str]) -> None:
    """Finite (2, C) logits for a video batch, and a backward pass that reaches every declared
    trainable parameter."""
    logits = model(video(), classnames)
    assert logits.shape == (2, len(classnames)) and torch.isfinite(logits).all()
    losses = model.losses(logits, torch.tensor([0, 1]), classnames)
    sum(losses.values()).backward()
    assert all(p.grad is not None for _, p in model.declare_trainable())


def bind(method: str, frames: int, perturb_scale: float, video_seed: int = 1):
    """`build`, `build_b16`, `video` and `perturb_zero_init` bound to one method's test defaults
    (`frames`, the three `TINY_CLASSES`, perturbations of std `perturb_scale`)."""
    return (builder(method, frames=frames, classnames=TINY_CLASSES),
            partial(build_b16, method=method),
            partial(video, frames=frames, seed=video_seed),
            partial(perturb_zero_init, scale=perturb_scale))
