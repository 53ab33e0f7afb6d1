"""The method contract (methods/base.py): what a method declares on its class is all the engine
reads. Every discovered method is covered: its declared needs have their hooks, its gradient
checkpointing hook really recomputes both towers without changing outputs or gradients, and the
engine's source never probes a model."""
from __future__ import annotations

import re
from pathlib import Path

import open_clip.transformer
import pytest
import torch

from harness.backbone import create_clip, get_tokenizer
from harness.errors import HarnessError
from methods.base import DESCRIPTION_NEEDS, VideoTextModel
from methods.registry import build_method, get_method, list_methods, make_config

ROOT = Path(__file__).resolve().parents[1]
METHODS = list_methods()
CLASSES = ["a", "b", "c"]
#: Needs the engine knows how to provide, and the hook that receives each.
KNOWN_NEEDS = {"descriptions": "set_descriptions", "scored_descriptions": "set_descriptions",
               "rephrased_classnames": "set_rephrased_classnames"}
TINY_OPTIONS = {"vificlip_prompt": {"depth": 4}}


@pytest.mark.parametrize("method", METHODS)
def test_declared_needs_are_known_and_hooked(method):
    cls = get_method(method).model_cls
    assert isinstance(cls.requires, frozenset) and isinstance(cls.allows_grad_clip, bool)
    assert cls.requires <= set(KNOWN_NEEDS), f"{method} requires {set(cls.requires) - set(KNOWN_NEEDS)}: unknown to the engine"
    for need in cls.requires:
        hook = KNOWN_NEEDS[need]
        assert getattr(cls, hook) is not getattr(VideoTextModel, hook), f"{method} requires {need} but keeps the base {hook}"


def test_a_method_without_the_need_refuses_descriptions():
    clip, spec = create_clip("harness-tiny", seed=0)
    net = build_method("zeroshot", clip, get_tokenizer(spec), 2, {}, classnames=CLASSES)
    assert net.run_needs(net.config) == frozenset()
    with pytest.raises(HarnessError, match="does not use class descriptions"):
        net.set_descriptions(CLASSES, [["x"]] * 3, [["y"]] * 3)


def test_a_method_without_the_need_refuses_rephrased_names_and_declares_no_averaging():
    clip, spec = create_clip("harness-tiny", seed=0)
    net = build_method("vificlip", clip, get_tokenizer(spec), 2, {}, classnames=CLASSES)
    with pytest.raises(HarnessError, match="does not use rephrased class names"):
        net.set_rephrased_classnames(CLASSES, ["A: x", "B: y", "C: z"])
    assert net.averaged_epochs(net.config) is None and net.frozen_teacher() is None
    assert net.parameter_counts()["teacher"] == 0


@pytest.mark.parametrize("method", METHODS)
def test_averaged_epochs_and_teacher_declarations_are_well_formed(method):
    """`averaged_epochs` is a class method of the configuration (checked before any model exists)
    returning an EpochRange or None; a declared teacher is frozen and counted in `total`."""
    from methods.base import EpochRange

    cls = get_method(method).model_cls
    averaged = cls.averaged_epochs(make_config(method, TINY_OPTIONS.get(method, {})))
    assert averaged is None or isinstance(averaged, EpochRange)
    clip, spec = create_clip("harness-tiny", seed=0)
    net = build_method(method, clip, get_tokenizer(spec), 2, TINY_OPTIONS.get(method, {}), classnames=CLASSES)
    teacher = net.frozen_teacher()
    if teacher is not None:
        assert not any(p.requires_grad for p in teacher.parameters())
        assert net.parameter_counts()["teacher"] == sum(p.numel() for p in teacher.parameters()) > 0


def test_msta_needs_descriptions_only_for_its_consistency_loss():
    """Read from the class and a configuration, before any model is built (as a job check can)."""
    msta = get_method("msta").model_cls
    on = make_config("msta", {"n_descriptions": 3})
    assert msta.run_needs(on) == {"descriptions"} and msta.descriptions_per_class(on) == 3
    assert msta.run_needs(make_config("msta", {"use_consistency": False})) == frozenset()


@pytest.mark.parametrize("method", METHODS)
def test_grad_checkpointing_hook_recomputes_both_towers_and_keeps_results(method, monkeypatch):
    clip, spec = create_clip("harness-tiny", seed=0)
    net = build_method(method, clip, get_tokenizer(spec), 2, TINY_OPTIONS.get(method, {}), classnames=CLASSES).eval()
    if net.run_needs(net.config) & DESCRIPTION_NEEDS:
        n = net.descriptions_per_class(net.config)
        net.set_descriptions(CLASSES, [["s"] * n] * 3, [["t"] * n] * 3)
    video = torch.randn(2, 2, 3, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(0))
    video.requires_grad_(True)  # a gradient to compare even for a method with nothing to train

    def step():
        net.zero_grad()
        video.grad = None
        net._text_cache.clear()
        logits = net(video, CLASSES)
        logits.sum().backward()
        return logits.detach(), [video.grad.clone()] + [p.grad.clone() for p in net.parameters() if p.grad is not None]

    ref_logits, ref_grads = step()
    calls = []
    real = open_clip.transformer.checkpoint
    monkeypatch.setattr(open_clip.transformer, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    net.set_grad_checkpointing(True)
    logits, grads = step()
    depth = len(net.visual_blocks) + (len(net.text_blocks) if not net.text_is_frozen else 0)
    assert len(calls) >= depth, f"{method}: {len(calls)} checkpointed blocks, expected at least {depth}"
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert len(grads) == len(ref_grads) and all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, ref_grads))


def test_the_engine_reads_only_the_contract():
    """No duck-typing of models in harness/engine: no hasattr/getattr on the method, no reaching
    into its CLIP (`.clip.`)."""
    probes = re.compile(r"(hasattr|getattr)\((net|model\.net|self\.net)\b|\bnet\.clip\b|\.clip\.")
    found = [f"{path.name}:{i}: {line.strip()}" for path in sorted((ROOT / "harness" / "engine").glob("*.py"))
             for i, line in enumerate(path.read_text().splitlines(), 1) if probes.search(line)]
    assert not found, "the engine probes methods:\n" + "\n".join(found)
