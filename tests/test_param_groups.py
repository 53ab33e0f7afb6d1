"""Each method's optimiser groups follow its official code's weight-decay rule (names in each
group; sizes computed by hand at ViT-B/16), and the engine builds AdamW from them."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from method_helpers import build_b16

from harness.engine.runner import _optim_wrapper
from harness.settings import Schedule
from methods.base import MethodConfig


def _groups(b16_meta, method, options=None):
    net = build_b16(b16_meta, options or {}, method=method)
    groups = {g.name: g for g in net.param_groups()}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert set().union(*(set(g.names) for g in groups.values())) == trainable  # every trainable, once
    assert sum(len(g.names) for g in groups.values()) == len(trainable)
    return net, groups


def _numel(group):
    return sum(p.numel() for p in group.params)


@pytest.mark.parametrize("method, options, trainable", [
    ("vificlip", {}, 124_323_841),
    ("vificlip_prompt", {"ctx_init": ""}, 184_320),  # no word init: tokenising needs real tensors
    ("vitaclip", {}, 28_524_545)])
def test_single_decayed_group_as_official(b16_meta, method, options, trainable):
    # ViFi-CLIP utils/optimizer.py build_optimizer and Vita-CLIP train.py: AdamW(model.parameters()).
    _, groups = _groups(b16_meta, method, options)
    assert list(groups) == ["decay"] and _numel(groups["decay"]) == trainable


def test_msta_single_group(b16_meta):
    _, groups = _groups(b16_meta, "msta")
    assert list(groups) == ["decay"]


@pytest.mark.parametrize("head, head_bias", [("text", 0), ("linear", 400)])
def test_st_adapter_biases_not_decayed(b16_meta, head, head_bias):
    # 12 adapters: fc1.bias 384 + conv.bias 384 + fc2.bias 768 = 1,536 each -> 18,432 without decay;
    # fc1.weight 768x384 + conv.weight 384x3 + fc2.weight 384x768 = 590,976 each -> 7,091,712 decayed.
    _, groups = _groups(b16_meta, "st_adapter", {"head": head})
    no_decay, decay = groups["no_decay"], groups["decay"]
    assert all(n.endswith(".bias") for n in no_decay.names)
    assert not any(".bias" in n for n in decay.names)
    assert len(no_decay.names) == 36 + (1 if head_bias else 0)
    assert _numel(no_decay) == 18_432 + head_bias
    assert _numel(decay) == 7_091_712 + (400 * 768 if head_bias else 0)
    assert "clip.visual.transformer.resblocks.0.adapter_pre_mlp.conv.bias" in no_decay.names


def test_aim_embeddings_and_layernorms_not_decayed(b16_meta):
    # Official custom_keys (decay_mult 0): class/positional embedding, ln_1/2/pre/post; of these only
    # ln_post is trainable. The temporal embedding and the adapters' biases are decayed.
    _, groups = _groups(b16_meta, "aim")
    assert sorted(groups["no_decay"].names) == ["clip.visual.ln_post.bias", "clip.visual.ln_post.weight"]
    assert "temporal_embedding" in groups["decay"].names
    assert "clip.visual.transformer.resblocks.0.T_Adapter.D_fc1.bias" in groups["decay"].names
    assert _numel(groups["decay"]) == 10_659_072 - 1_536


def test_engine_builds_adamw_from_the_groups(b16_meta):
    net, groups = _groups(b16_meta, "st_adapter")
    job = SimpleNamespace(method="st_adapter", method_options=MethodConfig(lr=7.5e-4, weight_decay=0.01),
                          schedule=Schedule(betas=[0.9, 0.999], eps=1e-8, grad_clip=0.0))
    optimizer = _optim_wrapper(net, job, amp=False).optimizer
    by_name = {g["group"]: g for g in optimizer.param_groups}
    assert by_name["decay"]["weight_decay"] == 0.01 and by_name["no_decay"]["weight_decay"] == 0.0
    assert {id(p) for p in by_name["no_decay"]["params"]} == {id(p) for p in groups["no_decay"].params}
    assert all(g["lr"] == 7.5e-4 and g["betas"] == (0.9, 0.999) for g in optimizer.param_groups)
