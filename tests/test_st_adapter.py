"""ST-Adapter: exact trainable counts, zero-init identity, temporal sensitivity, the fast temporal
conv against nn.Conv3d, the official adapter formulation, training touches only adapters, and
the closed-set head's guards."""
from __future__ import annotations

import pytest
import torch
from method_helpers import (
    OFFICIAL_STATE_DICTS,
    TINY_CLASSES,
    assert_frame_order_matters,
    assert_matches_official_state_dict,
    assert_reproduces,
    bind,
    changed_after_adamw_steps,
)
from torch import nn

from harness.errors import HarnessError
from methods.layers import TEMPORAL_CONV_IMPLS, TemporalDepthwiseConv
from methods.registry import make_config
from methods.st_adapter import STAdapterModule, official_key

FRAMES = 4
OFFICIAL_TSV = OFFICIAL_STATE_DICTS / "st_adapter_12x384_k400.tsv"

# Fixtures `tiny` and `b16_meta`: conftest.py. perturb_zero_init gives random values to what
# starts at zero (the conv, the fc biases), so that the adapters act.
build, build_b16, video, perturb_zero_init = bind("st_adapter", FRAMES, perturb_scale=0.2)


# -- parameter counts (METHODS.md) --------------------------------------------------------------
@pytest.mark.parametrize("options, expected", [
    ({}, 7_110_144),
    ({"variant": "24x384"}, 14_220_288),
    ({"head": "linear"}, 7_417_744),
    ({"variant": "24x384", "head": "linear"}, 14_527_888),
])
def test_trainable_counts_vit_b16(b16_meta, options, expected):
    model = build_b16(b16_meta, options)
    assert model.parameter_counts()["trainable"] == expected
    assert set(model.targeted) == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.upstream
@pytest.mark.skipif(not OFFICIAL_TSV.is_file(), reason="needs ../shared/upstream/official-state-dicts")
def test_names_and_shapes_match_official_state_dict(b16_meta):
    assert_matches_official_state_dict(build_b16(b16_meta, {"head": "linear"}), OFFICIAL_TSV, official_key)


# -- the temporal depthwise conv ----------------------------------------------------------------
@pytest.mark.parametrize("impl", TEMPORAL_CONV_IMPLS)
@pytest.mark.parametrize("kernel, frames", [(3, 8), (3, 1), (3, 2), (5, 3), (1, 4)])
def test_temporal_conv_equals_conv3d(impl, kernel, frames):
    channels, batch, grid = 6, 2, 3
    op = TemporalDepthwiseConv(channels, kernel, impl)
    ref = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0), groups=channels)
    with torch.no_grad():
        op.weight.normal_()
        op.bias.normal_()
        ref.weight.copy_(op.weight)
        ref.bias.copy_(op.bias)
    tokens = torch.randn(batch, frames, grid * grid, channels, requires_grad=True)
    volume = tokens.detach().view(batch, frames, grid, grid, channels).permute(0, 4, 1, 2, 3).requires_grad_()
    out = op(tokens)
    expected = ref(volume).permute(0, 2, 3, 4, 1).reshape(batch, frames, grid * grid, channels)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(op.weight.grad, ref.weight.grad)
    torch.testing.assert_close(tokens.grad.view(batch, frames, grid, grid, channels).permute(0, 4, 1, 2, 3),
                               volume.grad)


def official_adapter(adapter: STAdapterModule, x: torch.Tensor, frames: int) -> torch.Tensor:
    """The official Adapter.forward, (B*T, L, C) batch-first, with an nn.Conv3d over (T, H, W)."""
    bt, length, _ = x.shape
    side = round((length - 1) ** 0.5)
    conv = nn.Conv3d(adapter.conv.channels, adapter.conv.channels, (3, 1, 1), padding=(1, 0, 0),
                     groups=adapter.conv.channels)
    conv.load_state_dict(adapter.conv.state_dict())
    hidden = adapter.fc1(x[:, 1:]).view(bt // frames, frames, side, side, -1).permute(0, 4, 1, 2, 3)
    hidden = conv(hidden).permute(0, 2, 3, 4, 1).reshape(bt, length - 1, -1)
    out = x.clone()
    out[:, 1:] += adapter.fc2(hidden)
    return out


@pytest.mark.parametrize("impl", TEMPORAL_CONV_IMPLS)
def test_adapter_matches_official_formulation(impl):
    adapter = STAdapterModule(width=16, bottleneck=8, conv_impl=impl)
    perturb_zero_init(adapter.requires_grad_(True))
    x = torch.randn(2 * 5, 1 + 9, 16)
    out = adapter(x, frames=5)
    torch.testing.assert_close(out, official_adapter(adapter, x, frames=5))
    torch.testing.assert_close(out[:, 0], x[:, 0])  # CLS untouched


# -- behaviour of the whole model ---------------------------------------------------------------
@pytest.mark.parametrize("variant", ["12x384", "24x384"])
def test_zero_init_reproduces_frozen_clip(tiny, variant):
    reference = build(tiny, method="zeroshot").eval()
    model = build(tiny, {"variant": variant}).eval()
    assert_reproduces(model, reference, video(), TINY_CLASSES)


def test_frame_order_matters_once_adapters_act(tiny):
    reference = build(tiny, method="zeroshot").eval()
    model = build(tiny).eval()
    perturb_zero_init(model)
    assert_frame_order_matters(model, reference, video())


def test_conv_impls_give_the_same_model(tiny):
    models = [build(tiny, {"conv_impl": impl}).eval() for impl in TEMPORAL_CONV_IMPLS]
    perturb_zero_init(models[0])
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    clip_video = video()
    with torch.no_grad():
        feats = [model.encode_video(clip_video) for model in models]
    for other in feats[1:]:
        torch.testing.assert_close(other, feats[0])


@pytest.mark.parametrize("options", [{}, {"variant": "24x384", "head": "linear"}])
def test_training_changes_only_declared_parameters(tiny, options):
    model = build(tiny, options).train()
    declared = set(model.targeted)
    assert declared and all("adapter_pre_" in n or n.startswith("cls_head.") for n in declared)
    changed = changed_after_adamw_steps(model, TINY_CLASSES, weight_decay=0.01, labels=(0, 2), steps=3,
                                        clip=lambda _: video())
    assert changed <= declared
    # The last block's pre-MLP adapter only edits patch tokens after the last attention, and only
    # the CLS token is pooled: it never gets a gradient (as in the official model); only weight
    # decay moves its non-zero fc weights.
    last = f"clip.visual.transformer.resblocks.{model.visual_depth - 1}.adapter_pre_mlp."
    assert {n for n in declared - changed} == {n for n in declared if n.startswith(last)} - {
        last + "fc1.weight", last + "fc2.weight"}


# -- the closed-set head ------------------------------------------------------------------------
def test_linear_head_scores_only_its_training_classes(tiny):
    model = build(tiny, {"head": "linear"}).eval()
    logits = model(video(), TINY_CLASSES)
    assert logits.shape == (2, len(TINY_CLASSES))
    model.check_protocol("fully_supervised", closed_set=True)
    for protocol in ("base2novel", "zero_shot", "few_shot"):
        with pytest.raises(HarnessError, match="closed-set head.*use head=text or the fully_supervised"):
            model.check_protocol(protocol, closed_set=False)
    with pytest.raises(HarnessError, match="never trained on"):
        model(video(), ["surfing", "archery"])
    with pytest.raises(HarnessError, match="different order"):
        model(video(), list(reversed(TINY_CLASSES)))


def test_linear_head_pools_like_the_official_head(tiny):
    model = build(tiny, {"head": "linear"}).eval()
    tokens = torch.randn(2 * FRAMES, 17, 128)
    expected = model.clip.visual.ln_post(tokens.view(2, FRAMES, 17, 128)[:, :, 0].mean(dim=1))
    torch.testing.assert_close(model.visual_pool(tokens, 2, FRAMES), expected)


def test_linear_head_needs_classnames_and_text_head_is_open(tiny):
    with pytest.raises(HarnessError, match="needs the training class names"):
        build(tiny, {"head": "linear"}, classnames=None)
    model = build(tiny, classnames=None)
    model.check_protocol("base2novel", closed_set=False)
    assert model(video(), ["surfing", "archery"]).shape == (2, 2)


def test_config_validation():
    with pytest.raises(HarnessError, match="must be one of"):
        make_config("st_adapter", {"variant": "8x384"})
    with pytest.raises(HarnessError, match="odd"):
        make_config("st_adapter", {"kernel_t": 2})
    assert make_config("st_adapter").lr == pytest.approx(1e-3 * 192 / 256)
