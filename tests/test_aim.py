"""AIM: exact trainable counts, zero-init identity, temporal sensitivity, the block against the
official (sequence-first) formulation, training touches only the declared parameters, frame-count
handling, and the closed-set head's guards."""
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
from methods.aim import AIMBlock, official_key
from methods.registry import make_config

FRAMES = 4
OFFICIAL_TSV = OFFICIAL_STATE_DICTS / "aim_vitb16_8f_k400.tsv"

# Fixtures `tiny` and `b16_meta`: conftest.py. perturb_zero_init gives random values to what
# starts at zero (fc2 of the adapters, the temporal embedding).
build, build_b16, video, perturb_zero_init = bind("aim", FRAMES, perturb_scale=0.1)


# -- parameter counts (METHODS.md) --------------------------------------------------------------
@pytest.mark.parametrize("options, frames, expected", [
    ({}, 8, 10_659_072),
    ({"head": "linear"}, 8, 10_966_672),
    ({"head": "linear"}, 32, 10_985_104),
    # official B/16 SSv2 config: one more skip adapter per block (T_Adapter_in: 2 x 768 x 192 + 192 + 768)
    ({"num_tadapter": 2}, 8, 10_659_072 + 12 * 295_872),
])
def test_trainable_counts_vit_b16(b16_meta, options, frames, expected):
    model = build_b16(b16_meta, options, frames)
    assert model.parameter_counts()["trainable"] == expected
    assert set(model.targeted) == {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.upstream
@pytest.mark.skipif(not OFFICIAL_TSV.is_file(), reason="needs ../shared/upstream/official-state-dicts")
def test_names_and_shapes_match_official_state_dict(b16_meta):
    assert_matches_official_state_dict(build_b16(b16_meta, {"head": "linear"}), OFFICIAL_TSV, official_key)


# -- the block against the official formulation -------------------------------------------------
def official_block(block: AIMBlock, x: torch.Tensor, frames: int) -> torch.Tensor:
    """The official ResidualAttentionBlock.forward on (L, B*T, D) tokens, eval mode."""
    def attention(tokens):
        return block.attn(tokens, tokens, tokens, need_weights=False)[0]

    seq = x.transpose(0, 1)  # (L, BT, D), the official layout
    n, bt, d = seq.shape
    xt = seq.reshape(n, bt // frames, frames, d).permute(2, 1, 0, 3).reshape(frames, -1, d)  # t (b n) d
    xt = block.T_Adapter(attention(block.ln_1(xt)))
    xt = xt.reshape(frames, bt // frames, n, d).permute(2, 1, 0, 3).reshape(n, bt, d)  # n (b t) d
    seq = seq + xt
    seq = seq + block.S_Adapter(attention(block.ln_1(seq)))
    xn = block.ln_2(seq)
    seq = seq + block.mlp(xn) + block.scale * block.MLP_Adapter(xn)
    return seq.transpose(0, 1)


def test_block_matches_official_formulation(tiny):
    model = build(tiny).eval()
    perturb_zero_init(model)
    block = model.visual_blocks[1]
    seq_first_attn = nn.MultiheadAttention(block.width, block.attn.num_heads)  # official: not batch-first
    seq_first_attn.load_state_dict(block.attn.state_dict())
    x = torch.randn(2 * FRAMES, 17, block.width)
    model.ctx.num_frames = FRAMES
    with torch.no_grad():
        ours = block(x)
        block.attn, batch_first_attn = seq_first_attn, block.attn
        expected = official_block(block, x, FRAMES)
        block.attn = batch_first_attn
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


# -- behaviour of the whole model ---------------------------------------------------------------
def test_zero_init_reproduces_frozen_clip(tiny):
    reference = build(tiny, method="zeroshot").eval()
    model = build(tiny).eval()
    assert_reproduces(model, reference, video(), TINY_CLASSES)


def test_frame_order_matters_once_adapters_act(tiny):
    reference = build(tiny, method="zeroshot").eval()
    model = build(tiny).eval()
    perturb_zero_init(model)
    assert_frame_order_matters(model, reference, video())


def test_adapter_init_is_official(tiny):
    for name, module in build(tiny).visual_blocks[0].named_children():
        if name.endswith("Adapter"):
            assert not module.D_fc2.weight.any() and not module.D_fc2.bias.any()
            assert not module.D_fc1.bias.any()
            assert 0.01 < module.D_fc1.weight.std() < 0.03 and module.D_fc1.weight.abs().max() <= 2.0


def test_drop_path_rises_linearly(tiny):
    rates = [block.drop_path.rate for block in build(tiny).visual_blocks]
    assert rates == pytest.approx([0.0, 0.2 / 3, 0.4 / 3, 0.2])


@pytest.mark.parametrize("options", [{}, {"head": "linear"}])
def test_training_changes_only_declared_parameters(tiny, options):
    model = build(tiny, options).train()
    declared = set(model.targeted)
    assert declared and all(any(k in n for k in ("temporal_embedding", "ln_post", "Adapter", "cls_head"))
                            for n in declared)
    changed = changed_after_adamw_steps(model, TINY_CLASSES, weight_decay=0.05, labels=(0, 2), steps=3,
                                        clip=lambda _: video())
    assert changed == declared


def test_other_frame_counts_error_or_interpolate(tiny):
    model = build(tiny).eval()
    with pytest.raises(HarnessError, match="built for 4 frames.*frames_mismatch=interpolate"):
        model.encode_video(video(frames=6))
    model = build(tiny, {"frames_mismatch": "interpolate"}).eval()
    with torch.no_grad():
        model.temporal_embedding.copy_(torch.arange(4.0).view(1, 4, 1).expand_as(model.temporal_embedding))
        assert model.encode_video(video(frames=6)).shape == (2, 64)
        emb = model.temporal_embedding_for(8)
    assert emb.shape == (1, 8, 128)
    assert emb[0, :, 0].tolist() == pytest.approx([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])


# -- the closed-set head ------------------------------------------------------------------------
def test_linear_head_scores_only_its_training_classes(tiny):
    model = build(tiny, {"head": "linear"}).eval()
    assert model(video(), TINY_CLASSES).shape == (2, len(TINY_CLASSES))
    model.check_protocol("fully_supervised", closed_set=True)
    for protocol in ("base2novel", "zero_shot"):
        with pytest.raises(HarnessError, match="closed-set head.*use head=text or the fully_supervised"):
            model.check_protocol(protocol, closed_set=False)
    with pytest.raises(HarnessError, match="never trained on"):
        model(video(), ["surfing"])
    with pytest.raises(HarnessError, match="needs the training class names"):
        build(tiny, {"head": "linear"}, classnames=None)


def test_linear_head_pools_like_the_official_head(tiny):
    model = build(tiny, {"head": "linear"}).eval()
    tokens = torch.randn(2 * FRAMES, 17, 128)
    expected = model.clip.visual.ln_post(tokens).view(2, FRAMES, 17, 128)[:, :, 0].mean(dim=1)
    torch.testing.assert_close(model.visual_pool(tokens, 2, FRAMES), expected)


def test_config_defaults_and_validation():
    config = make_config("aim")
    assert (config.lr, config.weight_decay, config.head) == (3e-4, 0.05, "text")
    with pytest.raises(HarnessError, match="must be one of"):
        make_config("aim", {"head": "mlp"})
    with pytest.raises(HarnessError, match="drop_path_rate"):
        make_config("aim", {"drop_path_rate": 1.5})
