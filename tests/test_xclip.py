"""X-CLIP: exact trainable counts and official names at ViT-B/16, the whole forward against an
independent transcription of the official (sequence-first) code, the temporal mechanisms
(message tokens, MIT positional embedding) and the video-conditioned text features, the
official optimiser groups (10x lr for the new modules, weight-decay exemptions) as the engine
applies them through the schedule, and the options' edge cases.

The same comparison against the official code itself (microsoft/VideoX @ 1744b21, run outside the
repository on identical random weights) is reported in docs/methods/xclip.md."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from method_helpers import TINY_CLASSES, bind, changed_after_adamw_steps
from torch import nn

from harness.engine.runner import _optim_wrapper, _schedulers
from harness.errors import HarnessError
from harness.settings import Schedule
from methods.base import MethodConfig, ParamGroup
from methods.registry import get_method, make_config
from methods.xclip import CrossFrameBlock, official_key

FRAMES = 4
# Fixtures `tiny` (harness-tiny) and `b16_meta` (ViT-B/16 on the meta device): conftest.py.
build, build_b16, video, _ = bind("xclip", FRAMES, perturb_scale=0.1)


def perturb_all(model: nn.Module, scale: float = 0.05, seed: int = 3) -> None:
    """Move EVERY parameter off its init (zero biases, unit LayerNorms, alpha = 0.1, the MIT
    positional embedding), so no term of the forward can hide behind an init value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=gen))


# -- parameter counts and names (ViT-B/16) --------------------------------------------------------
# Hand count at ViT-B/16 (width 768, embed 512), 8 frames:
#   image tower 86,192,640 (conv1 589,824 + class 768 + positional 151,296 + ln_pre 1,536 + 12 blocks
#   x 7,087,872 + ln_post 1,536 + proj 393,216);
#   messages 12 x 2,954,496 (message_fc 590,592, message_ln 1,536, message_attn 2,362,368) = 35,453,952;
#   MIT 4,096 + one 512-wide block 3,152,384 = 3,156,480; prompt generator: norm 1,024 + alpha 512 +
#   2 layers x 3,150,848 = 6,303,232; prompts_visual_ln 1,536 + prompts_visual_proj 393,216.
#   Sum 131,501,056 = the official model at the pinned commit after `fix_text` (METHODS.md).
@pytest.mark.parametrize("options, frames, expected", [
    ({}, 8, 131_501_056),
    ({}, 32, 131_501_056 + 24 * 512),                   # the MIT positional embedding grows with T
    ({"mit_layers": 4}, 8, 131_501_056 + 3 * 3_152_384),  # build_model's own default (load passes 1)
    ({"train_text": True}, 8, 194_929_153),             # FIX_TEXT=False: everything (official total)
])
def test_trainable_counts_vit_b16(b16_meta, options, frames, expected):
    model = build_b16(b16_meta, options, frames)
    assert model.parameter_counts()["trainable"] == expected
    assert model.parameter_counts()["total"] == 194_929_153 + (frames - 8) * 512 + \
        (options.get("mit_layers", 1) - 1) * 3_152_384
    assert set(model.targeted) == {n for n, p in model.named_parameters() if p.requires_grad}


def expected_new_keys(depth: int, width: int, embed: int, frames: int) -> dict[str, list[int]]:
    """The official keys and shapes of what X-CLIP adds to CLIP, written from models/cct.py, mit.py,
    prompt.py and xclip.py (mit_layers 1, prompts_layers 2)."""
    keys: dict[str, list[int]] = {}
    for i in range(depth):
        b = f"visual.transformer.resblocks.{i}."
        keys.update({b + "message_fc.weight": [width, width], b + "message_fc.bias": [width],
                     b + "message_ln.weight": [width], b + "message_ln.bias": [width],
                     b + "message_attn.in_proj_weight": [3 * width, width], b + "message_attn.in_proj_bias": [3 * width],
                     b + "message_attn.out_proj.weight": [width, width], b + "message_attn.out_proj.bias": [width]})
    m = "mit.resblocks.0."
    keys.update({"mit.positional_embedding": [1, frames, embed],
                 m + "attn.in_proj_weight": [3 * embed, embed], m + "attn.in_proj_bias": [3 * embed],
                 m + "attn.out_proj.weight": [embed, embed], m + "attn.out_proj.bias": [embed],
                 m + "ln_1.weight": [embed], m + "ln_1.bias": [embed], m + "ln_2.weight": [embed], m + "ln_2.bias": [embed],
                 m + "mlp.c_fc.weight": [4 * embed, embed], m + "mlp.c_fc.bias": [4 * embed],
                 m + "mlp.c_proj.weight": [embed, 4 * embed], m + "mlp.c_proj.bias": [embed]})
    keys.update({"prompts_generator.alpha": [embed], "prompts_generator.norm.weight": [embed],
                 "prompts_generator.norm.bias": [embed], "prompts_visual_ln.weight": [width],
                 "prompts_visual_ln.bias": [width], "prompts_visual_proj": [width, embed]})
    for j in range(2):
        d = f"prompts_generator.decoder.{j}."
        keys.update({d + f"cross_attn.{q}_proj.weight": [embed, embed] for q in "qkv"})
        keys.update({d + "cross_attn.proj.weight": [embed, embed], d + "cross_attn.proj.bias": [embed],
                     d + "norm1.weight": [embed], d + "norm1.bias": [embed], d + "norm3.weight": [embed],
                     d + "norm3.bias": [embed], d + "mlp.0.weight": [4 * embed, embed], d + "mlp.0.bias": [4 * embed],
                     d + "mlp.3.weight": [embed, 4 * embed], d + "mlp.3.bias": [embed]})
    return keys


def test_names_and_shapes_are_the_official_ones(b16_meta):
    """What X-CLIP adds carries the official key and shape; CLIP's own weights keep open_clip's
    names, which are the official ones less `clip.` (the full 443-key list of the official model
    was compared outside the repository: docs/methods/xclip.md)."""
    model = build_b16(b16_meta, {})
    ours = {official_key(n): list(p.shape) for n, p in model.named_parameters()}
    new = expected_new_keys(12, 768, 512, 8)
    assert {k: v for k, v in ours.items() if k in new} == new
    clip_keys = {k for k in ours if k not in new}
    assert len(ours) == 443 and len(clip_keys) == 443 - len(new)
    assert {"visual.conv1.weight", "visual.proj", "token_embedding.weight", "text_projection",
            "logit_scale", "transformer.resblocks.11.mlp.c_proj.bias"} <= clip_keys
    # official fix_text: trainable = names with 'visual.', 'mit' or 'prompts'
    trainable = {official_key(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {k for k in ours if "visual." in k or "mit" in k or "prompts" in k}


# -- the forward against the official formulation -------------------------------------------------
def seq_attention(attn: nn.MultiheadAttention, q, k, v):
    """`attn` on sequence-first tensors (the official call), whichever layout the module has."""
    if attn.batch_first:
        return attn(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
    return attn(q, k, v, need_weights=False)[0]


def official_cross_frame_block(blk: CrossFrameBlock, x: torch.Tensor, frames: int) -> torch.Tensor:
    """models/cct.py CrossFramelAttentionBlock.forward on (L, B*T, D), drop path 0."""
    length, bt, dim = x.shape
    b = bt // frames
    x = x.view(length, b, frames, dim)
    msg = blk.message_fc(x[0, :, :, :]).view(b, frames, 1, dim).permute(1, 2, 0, 3).reshape(frames, b, dim)
    normed = blk.message_ln(msg)
    msg = msg + seq_attention(blk.message_attn, normed, normed, normed)
    msg = msg.view(frames, 1, b, dim).permute(1, 2, 0, 3)
    x = torch.cat([x, msg], dim=0).view(length + 1, -1, dim)
    normed = blk.ln_1(x)
    x = x + seq_attention(blk.attn, normed, normed, normed)
    x = x[:length]
    return x + blk.mlp(blk.ln_2(x))


def official_mit(mit, x: torch.Tensor) -> torch.Tensor:
    """models/mit.py MultiframeIntegrationTransformer.forward on (B, T, E)."""
    out = (x + mit.positional_embedding).permute(1, 0, 2)
    for blk in mit.resblocks:
        normed = blk.ln_1(out)
        out = out + seq_attention(blk.attn, normed, normed, normed)
        out = out + blk.mlp(blk.ln_2(out))
    return (out.permute(1, 0, 2) + x).mean(dim=1)


def official_prompts(gen, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """models/prompt.py VideoSpecificPrompt.forward: explicit softmax(q k^T / sqrt(d)) attention."""
    visual = gen.norm(visual)
    for layer in gen.decoder:
        attn, q = layer.cross_attn, layer.norm1(text)
        b, n, c = q.shape
        heads = attn.heads
        qh = attn.q_proj(q).reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
        kh = attn.k_proj(visual).reshape(b, -1, heads, c // heads).permute(0, 2, 1, 3)
        vh = attn.v_proj(visual).reshape(b, -1, heads, c // heads).permute(0, 2, 1, 3)
        weights = ((qh @ kh.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
        text = text + attn.proj((weights @ vh).transpose(1, 2).reshape(b, n, c))
        text = text + layer.mlp(layer.norm3(text))
    return gen.alpha * text


def official_logits(model, clip_video: torch.Tensor, classnames: list[str]) -> tuple[torch.Tensor, ...]:
    """models/xclip.py XCLIP.forward (with encode_video, cct's visual forward and encode_text),
    transcribed on the model's own weights: logits, MIT video features, mean prompt tokens."""
    visual, clip = model.clip.visual, model.clip
    b, t = clip_video.shape[:2]
    x = visual.conv1(clip_video.flatten(0, 1)).flatten(2).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding).permute(1, 0, 2)
    for blk in visual.transformer.resblocks:
        x = official_cross_frame_block(blk, x, t)
    x = x.permute(1, 0, 2)
    cls_features = (visual.ln_post(x[:, 0, :]) @ visual.proj).view(b, t, -1)
    img = (model.prompts_visual_ln(x[:, 1:, :]) @ model.prompts_visual_proj).view(b, t, -1, cls_features.shape[-1])
    video_features = official_mit(model.mit, cls_features)
    img = img.mean(dim=1)
    # The frozen CLIP text tower (template "{}"), un-normalised: the shared text path of every method.
    text = model.encode_text(list(classnames), normalize=False).unsqueeze(0).expand(b, -1, -1)
    text = text + official_prompts(model.prompts_generator, text, img)
    video_n = video_features / video_features.norm(dim=-1, keepdim=True)
    text_n = text / text.norm(dim=-1, keepdim=True)
    return torch.einsum("bd,bkd->bk", video_n, clip.logit_scale.exp() * text_n), video_features, img


@pytest.fixture(scope="module")
def acting(tiny):
    """A tiny X-CLIP with every parameter moved off its init (eval mode)."""
    model = build(tiny, {}).eval()
    perturb_all(model)
    return model


def test_forward_matches_official_formulation(acting):
    clip_video = video(batch=3)
    with torch.no_grad():
        ref_logits, ref_video, ref_tokens = official_logits(acting, clip_video, TINY_CLASSES)
        x = acting.visual_tower(clip_video)
        torch.testing.assert_close(acting.visual_pool(x, 3, FRAMES), ref_video, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acting.prompt_tokens(x, 3, FRAMES), ref_tokens, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acting(clip_video, TINY_CLASSES), ref_logits, rtol=1e-5, atol=1e-5)


def test_training_loss_is_label_smoothed_ce_of_the_official_logits(acting):
    """timm's LabelSmoothingCrossEntropy (the official criterion without mixup), by hand:
    (1 - s) * nll + s * mean over classes of -log p."""
    clip_video, labels = video(batch=3, seed=4), torch.tensor([2, 0, 1])
    acting.label_smoothing = 0.1
    try:
        with torch.no_grad():
            loss = sum(acting.training_losses(clip_video, labels, TINY_CLASSES).values())
            logp = official_logits(acting, clip_video, TINY_CLASSES)[0].log_softmax(dim=-1)
    finally:
        acting.label_smoothing = 0.0
    nll = -logp.gather(1, labels[:, None]).squeeze(1)
    expected = (0.9 * nll + 0.1 * (-logp.mean(dim=-1))).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


# -- the mechanisms ------------------------------------------------------------------------------
def test_frame_order_comes_from_the_mit_positional_embedding(tiny):
    """The cross-frame messages carry no temporal position (as in the official CCT): the exchange is
    permutation-equivariant, so with the MIT positional embedding at zero the MIT's attention and
    mean make the video feature blind to frame order (control); the positional embedding alone
    makes it order-sensitive."""
    def reversal_gap(zero_pos: bool) -> float:
        model = build(tiny, {}).eval()
        perturb_all(model)
        with torch.no_grad():
            if zero_pos:
                model.mit.positional_embedding.zero_()
            clip_video = video(batch=2)
            return float((model.encode_video(clip_video) - model.encode_video(clip_video.flip(1))).abs().max())

    assert reversal_gap(zero_pos=True) < 1e-5
    assert reversal_gap(zero_pos=False) > 1e-4  # float noise: ~1e-7


@pytest.mark.parametrize("exchange", [True, False])
def test_messages_carry_other_frames_into_each_frame(tiny, exchange):
    """Changing frame 0 changes the block's output for frame 2 only through the message exchange
    (silenced: message_attn's output projection zero)."""
    model = build(tiny, {}).eval()
    perturb_all(model)
    blk = model.visual_blocks[0]
    model.ctx.num_frames = FRAMES
    x = torch.randn(FRAMES, 5, blk.width, generator=torch.Generator().manual_seed(0))  # one clip
    bumped = x.clone()
    bumped[0] += 1.0
    with torch.no_grad():
        if not exchange:
            blk.message_attn.out_proj.weight.zero_()
            blk.message_attn.out_proj.bias.zero_()
        gap = float((blk(bumped)[2] - blk(x)[2]).abs().max())
    assert (gap > 1e-4) if exchange else (gap == 0.0)


def test_message_token_is_a_key_only_of_its_own_frame(tiny):
    """Changing frame 2's message changes frame 2's tokens and nothing else in that block."""
    model = build(tiny, {}).eval()
    perturb_all(model)
    blk = model.visual_blocks[0]
    model.ctx.num_frames = FRAMES
    x = torch.randn(FRAMES, 5, blk.width, generator=torch.Generator().manual_seed(0))  # one clip
    with torch.no_grad():
        base = blk(x)
        bumped = x.clone()
        bumped[2, 0] += 1.0  # frame 2's CLS -> frame 2's message (and, via the exchange, all messages)
        blk.message_attn.out_proj.weight.zero_()  # ... but here messages are not exchanged
        blk.message_attn.out_proj.bias.zero_()
        base, out = blk(x), blk(bumped)
    changed = [(out[f] - base[f]).abs().max() > 1e-6 for f in range(FRAMES)]
    assert changed == [False, False, True, False]


def test_text_features_are_conditioned_on_each_video(acting):
    """Per-video text features: a clip's logits do not depend on the other clips of the batch,
    differ from those of the plain (un-prompted) class features, and with alpha = 0 equal the
    cosine logits of the MIT video feature and the plain class text features."""
    clip_video = video(batch=2, seed=7)
    with torch.no_grad():
        together = acting(clip_video, TINY_CLASSES)
        alone = torch.cat([acting(clip_video[i:i + 1], TINY_CLASSES) for i in range(2)])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
        feats = acting.encode_video(clip_video)
        plain = acting.clip.logit_scale.exp() * feats @ F.normalize(acting.class_text_features(TINY_CLASSES), dim=-1).t()
        assert (together - plain).abs().max() > 1e-3
        alpha = acting.prompts_generator.alpha.detach().clone()
        acting.prompts_generator.alpha.zero_()
        try:
            torch.testing.assert_close(acting(clip_video, TINY_CLASSES), plain, rtol=1e-5, atol=1e-5)
        finally:
            acting.prompts_generator.alpha.copy_(alpha)


@pytest.mark.parametrize("train_text, encodings", [(False, 1), (True, 2)])
def test_frozen_text_is_encoded_once_per_class_set_unless_trained(tiny, train_text, encodings):
    """Official use_cache = FIX_TEXT: the frozen class features are computed once (two training
    steps, one encoding); with train_text every step encodes them again."""
    model = build(tiny, {"train_text": train_text}).train()
    assert model.text_is_frozen is not train_text
    calls = []
    original = model.class_text_features
    model.class_text_features = lambda names: calls.append(tuple(names)) or original(names)
    model(video(batch=1), TINY_CLASSES)
    model(video(batch=1), TINY_CLASSES)
    assert len(calls) == encodings


def test_training_moves_exactly_the_official_trainable_set(tiny):
    model = build(tiny, {}).train()
    perturb_all(model, seed=9)
    changed = changed_after_adamw_steps(model, TINY_CLASSES, weight_decay=0.0, labels=(0, 2),
                                       clip=lambda step: video(seed=step))
    declared = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == declared
    assert not any(n.startswith(("clip.transformer.", "clip.token_embedding", "clip.ln_final")) for n in changed)


# -- optimiser groups as the official build_optimizer, through the engine's schedule ---------------
def test_param_groups_are_the_official_ones(b16_meta):
    # utils/optimizer.py: lr x10 for names with message_ / mit / prompts; no weight decay for 1-D
    # tensors, biases and 'positional_embedding'. Hand sums at ViT-B/16 (8 frames):
    #   decay, lr:        conv1 589,824 + proj 393,216 + 12 x (in_proj 1,769,472 + out_proj 589,824
    #                     + c_fc 2,359,296 + c_proj 2,359,296)                                   = 85,917,696
    #   no_decay, lr:     class 768 + positional 151,296 + ln_pre/ln_post 3,072 + 12 x 9,984    = 274,944
    #   decay, lr x10:    12 x message (fc 589,824 + attn 1,769,472 + 589,824) + MIT 3,145,728
    #                     + prompt layers 2 x 3,145,728 + prompts_visual_proj 393,216           = 45,219,840
    #   no_decay, lr x10: 12 x 5,376 + MIT 10,752 (its positional embedding included)
    #                     + generator 11,776 (alpha included) + prompts_visual_ln 1,536        = 88,576
    model = build_b16(b16_meta, {})
    groups = {g.name: g for g in model.param_groups()}
    sizes = {name: sum(p.numel() for p in g.params) for name, g in groups.items()}
    assert sizes == {"decay": 85_917_696, "no_decay": 274_944, "decay_lr_x10": 45_219_840,
                     "no_decay_lr_x10": 88_576}
    assert [(g.lr_scale, g.weight_decay) for g in groups.values()] == [(1.0, True), (1.0, False), (10.0, True),
                                                                         (10.0, False)]
    assert "mit.positional_embedding" in groups["no_decay_lr_x10"].names
    assert "clip.visual.class_embedding" in groups["no_decay"].names
    assert "clip.visual.transformer.resblocks.3.message_attn.in_proj_weight" in groups["decay_lr_x10"].names


def test_engine_schedules_the_scaled_group_from_its_own_lr():
    """AdamW groups get lr x lr_scale; warm-up scales each group from its own lr, and the cosine
    ends every group at the same absolute floor lr x lr_min_ratio, as the official timm
    CosineLRScheduler(lr_min=LR/100) does. lr 1, 3 epochs of 4 iterations, 1 warm-up epoch:
    warm-up 0.001 + 0.999 t/3 (x10 for the new group), cosine over t = 4..11 (T = 8) from the
    group's lr to 0.01: t=8 -> 0.01 + (10 - 0.01) / 2 = 5.005, t=11 -> 0.01 + 9.99 * 0.0380602."""
    from mmengine.registry import PARAM_SCHEDULERS

    old, new = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    net = SimpleNamespace(allows_grad_clip=True, param_groups=lambda: [
        ParamGroup("decay", ["old"], [old]), ParamGroup("decay_lr_x10", ["new"], [new], lr_scale=10.0)])
    schedule = Schedule(epochs=3, warmup_epochs=1, lr_min_ratio=0.01, betas=[0.9, 0.98], eps=1e-8, grad_clip=0.0)
    job = SimpleNamespace(schedule=schedule, method_options=MethodConfig(lr=1.0, weight_decay=0.001), method="xclip")
    wrapper = _optim_wrapper(net, job, amp=False)
    schedulers = [PARAM_SCHEDULERS.build({**cfg, "epoch_length": 4}, default_args={"optimizer": wrapper})
                  for cfg in _schedulers(job)]
    seen = []
    for _ in range(12):
        seen.append([g["lr"] for g in wrapper.optimizer.param_groups])
        for sched in schedulers:
            sched.step()
    hand = {0: (0.001, 0.01), 3: (1.0, 10.0), 8: (0.505, 5.005),
            11: (0.01 + 0.99 * 0.0380602, 0.01 + 9.99 * 0.0380602)}
    for step, (lr_old, lr_new) in hand.items():
        assert seen[step] == pytest.approx([lr_old, lr_new], abs=1e-6), step
    assert all(g["weight_decay"] == 0.001 for g in wrapper.optimizer.param_groups)
    assert math.isclose(0.01 + 9.99 * 0.0380602, seen[11][1], abs_tol=1e-6)


# -- options ---------------------------------------------------------------------------------------
def test_other_frame_counts_error_or_interpolate(tiny):
    model = build(tiny, {}).eval()
    with pytest.raises(HarnessError, match="xclip was built for 4 frames.*xclip.frames_mismatch=interpolate"):
        model(video(frames=6), TINY_CLASSES)
    model = build(tiny, {"frames_mismatch": "interpolate"}).eval()
    with torch.no_grad():
        assert model(video(frames=6), TINY_CLASSES).shape == (2, len(TINY_CLASSES))


@pytest.mark.parametrize("over", ["token", "clip"])
def test_drop_path_units(tiny, over):
    """'token' (official): a token position is kept or dropped for every row of the batch; 'clip':
    all frames and tokens of a clip together. Survivors are scaled by 1 / (1 - rate); eval: identity."""
    model = build(tiny, {"drop_path_rate": 0.5, "drop_path_over": over})
    drop = model.visual_blocks[-1].drop_path
    assert drop.rate == 0.5 and model.visual_blocks[0].drop_path.rate == 0.0
    delta = torch.ones(3 * FRAMES, 16, 2)  # 3 clips of 4 frames, 16 tokens
    torch.manual_seed(0)
    out = drop(delta, FRAMES, site=1)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    if over == "token":
        assert (out == out[:1]).all() and 0 < out[0, :, 0].count_nonzero() < 16
    else:
        per_clip = out.view(3, -1)
        assert all(len(row.unique()) == 1 for row in per_clip)
    drop.eval()
    assert torch.equal(drop(delta, FRAMES, site=1), delta)


@pytest.mark.parametrize("over", ["token", "clip"])
def test_drop_path_does_not_depend_on_the_micro_batch(tiny, over):
    """Under the engine's per-sample seeds (methods.sample_random), a clip's masks are the same
    whether its update runs as one forward pass or as two micro-batches; 'token' masks are one
    draw per update (the same for every micro-batch of it), 'clip' masks one draw per clip."""
    from methods.sample_random import name_random_layers, sample_seeds

    model = build(tiny, {"drop_path_rate": 0.5, "drop_path_over": over}).train()
    assert name_random_layers(model) == len(model.visual_blocks)
    drop = model.visual_blocks[-1].drop_path
    delta = torch.ones(4 * FRAMES, 16, 2)
    seeds = [11, 12, 13, 14]
    with sample_seeds(seeds, update_seed=99):
        whole = drop(delta, FRAMES, site=2)
    halves = []
    for part in (slice(0, 2), slice(2, 4)):
        with sample_seeds(seeds[part], update_seed=99):
            halves.append(drop(delta[part.start * FRAMES:part.stop * FRAMES], FRAMES, site=2))
    assert torch.equal(whole, torch.cat(halves))
    with sample_seeds(seeds, update_seed=99):
        other_site = drop(delta, FRAMES, site=1)
    assert not torch.equal(whole, other_site)  # each branch its own draw


def test_config_defaults_and_validation():
    config = make_config("xclip")
    assert (config.prompt, config.lr, config.weight_decay, config.new_lr_scale) == ("{}", 8e-6, 0.001, 10.0)
    assert (config.mit_layers, config.prompt_layers, config.prompt_alpha, config.train_text) == (1, 2, 0.1, False)
    for bad in ({"mit_layers": 0}, {"prompt_layers": 0}, {"drop_path_rate": 1.0}, {"new_lr_scale": 0.0}):
        with pytest.raises(HarnessError):
            make_config("xclip", bad)
    with pytest.raises(HarnessError, match="drop_path_over"):
        make_config("xclip", {"drop_path_over": "sample"})
    cls = get_method("xclip").model_cls
    assert cls.models_frame_order and cls.token_layouts == frozenset({"per_frame"})


def test_recipes_and_quoted_numbers():
    """Few-shot HMDB51 / UCF101 take the official few-shot configs (LR 2e-6, 32 frames); datasets
    without a config (the embedded one, base-to-novel everywhere) the labelled protocol default;
    the README's numbers are quoted rows."""
    from harness.recipes import PROTOCOL_DEFAULT, PUBLISHED, resolve_recipe
    from harness.reports.published import load_published

    few = resolve_recipe("xclip", "few_shot", "hmdb51")
    assert few.scope == PUBLISHED and few.method_options == {"lr": 2e-6, "weight_decay": 0.001}
    assert few.schedule["frames"] == 32 and "configs/hmdb51/16_32.yaml" in few.source
    b2n = resolve_recipe("xclip", "base2novel", "embedded")
    assert b2n.scope == PROTOCOL_DEFAULT and b2n.method_options["lr"] == 8e-6
    assert "no published base-to-novel recipe" in b2n.source and "1744b2159c3d" in b2n.source
    quoted = {(r["protocol"], r["dataset"], r["metric"]): r["value"] for r in load_published() if r["method"] == "xclip"}
    assert quoted[("few_shot", "hmdb51", "K=2")] == 53.0 and quoted[("zero_shot", "k400", "k600")] == 65.2
    assert quoted[("fully_supervised", "k400", "Top-1")] == 83.8 and quoted[("base2novel", "k400", "HM")] == 64.0


# -- the converter: files exactly as the official epoch_saving writes them -----------------------------
class _StandInCfgNode(dict):
    """Pickles as `yacs.config.CfgNode` (a dict subclass with attributes in __dict__), as the
    official config object does; yacs itself is not a dependency of this project. A frozen tree
    built by `_cfg` pickles to the same bytes as the real yacs 0.1.8 CfgNode of the same content
    (compared outside the repository)."""


def _cfg(tree: dict) -> _StandInCfgNode:
    node = _StandInCfgNode({k: _cfg(v) if isinstance(v, dict) else v for k, v in tree.items()})
    node.__dict__.update({"__immutable__": True, "__deprecated_keys__": set(), "__renamed_keys__": {},
                          "__new_allowed__": False})
    return node


def official_config(**changes) -> dict:
    """The config `main.py` trains with, as `utils/config.py get_config` makes it: the defaults of
    `_C` in their order, merged with a config file (`configs/hmdb51/16_32.yaml`, at FRAMES frames),
    then `--output exp` and `LOCAL_RANK` (torch.distributed.launch) set; a frozen `_cfg` of it pickles
    to the same bytes as that real CfgNode (compared outside the repository). `changes`:
    `"DATA.NUM_FRAMES": 8`, ..."""
    tree = {
        "BASE": [""],
        "DATA": {"ROOT": "/PATH/TO/videos", "TRAIN_FILE": "/PATH/TO/train.txt", "VAL_FILE": "/PATH/TO/val.txt",
                 "DATASET": "hmdb51", "INPUT_SIZE": 224, "NUM_FRAMES": FRAMES, "NUM_CLASSES": 51,
                 "LABEL_LIST": "labels/hmdb_51_labels.csv"},
        "MODEL": {"ARCH": "ViT-B/16", "DROP_PATH_RATE": 0.0, "PRETRAINED": None, "RESUME": None, "FIX_TEXT": True},
        "TRAIN": {"EPOCHS": 50, "WARMUP_EPOCHS": 5, "WEIGHT_DECAY": 0.001, "LR": 2e-6, "BATCH_SIZE": 4,
                  "ACCUMULATION_STEPS": 2, "LR_SCHEDULER": "cosine", "OPTIMIZER": "adamw", "OPT_LEVEL": "O1",
                  "AUTO_RESUME": False, "USE_CHECKPOINT": False},
        "AUG": {"LABEL_SMOOTH": 0.1, "COLOR_JITTER": 0.8, "GRAY_SCALE": 0.2, "MIXUP": 0.8, "CUTMIX": 1.0,
                "MIXUP_SWITCH_PROB": 0.5},
        "TEST": {"NUM_CLIP": 1, "NUM_CROP": 1, "ONLY_TEST": False},
        "OUTPUT": "exp", "SAVE_FREQ": 1, "PRINT_FREQ": 50, "SEED": 1024, "LOCAL_RANK": 0,
    }
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        tree[section][key] = value
    return tree


def save_official_release(path, model, config: dict | str | None) -> None:
    """utils/tools.py epoch_saving: {'model': state_dict() without prefix (it is given
    model.module), 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config'}; the optimizer
    is AdamW with the official 8 groups (clip / mit / prompts / message_ x decay / no decay) after
    one step, the config a yacs CfgNode (`config` a dict tree), or text, or absent (None)."""
    import sys
    import types

    state = {official_key(n): t.detach().clone() for n, t in model.state_dict().items()}
    groups = []
    for rule in (lambda k: not any(s in k for s in ("prompts", "mit", "message_")), lambda k: "mit" in k,
                 lambda k: "prompts" in k, lambda k: "message_" in k):
        picked = [(n, p) for n, p in model.named_parameters() if p.requires_grad and rule(official_key(n))]
        for decay in (True, False):
            params = [p for n, p in picked if model.no_weight_decay(n, p) != decay]
            groups.append({"params": params, "weight_decay": 0.001 if decay else 0.0, "lr": 8e-6 if len(groups) < 2 else 8e-5})
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)
    sum(p.sum() for g in groups for p in g["params"]).backward()
    optimizer.step()
    model.zero_grad()
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    _StandInCfgNode.__module__, _StandInCfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode, package.config = _StandInCfgNode, module
    saved = {name: sys.modules.get(name) for name in ("yacs", "yacs.config")}
    sys.modules.update({"yacs": package, "yacs.config": module})
    try:
        obj = {"model": state, "optimizer": optimizer.state_dict(),
               "lr_scheduler": {"t_initial": 300, "lr_min": 8e-8, "warmup_t": 50, "base_values": [8e-6] * 2 + [8e-5] * 6},
               "max_accuracy": 12.5, "epoch": 0, "config": _cfg(config) if isinstance(config, dict) else config}
        if config is None:
            del obj["config"]
        torch.save(obj, path)  # torch's default pickle protocol, as epoch_saving
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = previous


@pytest.fixture(scope="module")
def xclip_release(tmp_path_factory):
    """A base CLIP file, and an X-CLIP trained from it (every trainable tensor perturbed, text
    frozen = the base's, 2 MIT layers so the option must be read from the release)."""
    import copy

    from harness.backbone import create_clip, get_tokenizer
    from methods.registry import build_method

    folder = tmp_path_factory.mktemp("xclip-release")
    clip, spec = create_clip("harness-tiny", None, seed=3)
    torch.save(clip.state_dict(), folder / "base.pt")
    source = build_method("xclip", copy.deepcopy(clip), get_tokenizer(spec), FRAMES, {"mit_layers": 2}).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in source.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return folder, source


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def _convert(folder, path, **request):
    from harness.convert import ConvertRequest, convert

    return convert("xclip", ConvertRequest(str(path), backbone="harness-tiny", base=str(folder / "base.pt"), **request))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def test_converter_reads_the_exact_official_file(xclip_release, tmp_path, upstream_root):
    """The file exactly as epoch_saving writes it (the whole CfgNode of a few-shot HMDB run),
    converted with the options a user types (offline: --splits-root): the model computes what the
    official forward computes on the saved weights, and the CfgNode's settings are used."""
    from harness.data.annotations import read_class_csv

    folder, source = xclip_release
    path = tmp_path / "ckpt_epoch_0.pth"
    save_official_release(path, copy_of(source), official_config())
    conversion = _convert(folder, path, splits_root=str(upstream_root))
    report, options = conversion.report, conversion.meta["method_options"]
    assert report["release"]["config_kind"] == "yacs CfgNode"
    assert report["filled_from_release"] == len(dict(source.named_parameters())) and report["ignored"] == {}
    assert report["from_config"] == {"DATA.NUM_FRAMES": FRAMES, "DATA.NUM_CLASSES": 51,
                                     "DATA.LABEL_LIST": "labels/hmdb_51_labels.csv", "MODEL.ARCH": "ViT-B/16",
                                     "MODEL.FIX_TEXT": True, "MODEL.DROP_PATH_RATE": 0.0, "TRAIN.LR": 2e-6,
                                     "TRAIN.WEIGHT_DECAY": 0.001}
    assert report["assumed"] == {} and (options["lr"], options["train_text"], options["mit_layers"]) == (2e-6, False, 2)
    hmdb = read_class_csv(upstream_root / "vifi-clip" / "labels" / "hmdb_51_labels.csv")
    assert conversion.meta["classnames"] == hmdb and len(hmdb) == 51
    clip_video, classes = video(batch=2, seed=8), hmdb[:6]
    with torch.no_grad():
        logits, features, _ = official_logits(source.eval(), clip_video, classes)
        model = conversion.model.eval()
        assert relative(model.encode_video(clip_video, normalize=False), features) <= 1e-5
        assert relative(model(clip_video, classes), logits) <= 1e-5


def test_converter_accounts_for_every_key_and_reproduces_the_model(xclip_release, tmp_path):
    from harness.convert.checkpoint import load_checkpoint, save_converted

    folder, source = xclip_release
    path = tmp_path / "ckpt_epoch_0.pth"
    save_official_release(path, copy_of(source), "DATA:\n  NUM_FRAMES: 4\n")
    conversion = _convert(folder, path)
    report = conversion.report
    assert report["filled_from_release"] == len(dict(source.named_parameters())) and report["filled_from_base"] == 0
    assert report["ignored"] == {} and report["frozen_vs_base"]["max_abs_diff"] == 0.0
    assert {"optimizer", "lr_scheduler", "max_accuracy", "epoch", "config"} <= set(report["release"]["other_entries"])
    assert conversion.meta["frames"] == FRAMES and conversion.meta["method_options"]["mit_layers"] == 2
    loaded = load_checkpoint(save_converted(conversion, tmp_path / "x.harness.pt"), base=str(folder / "base.pt")).net
    clip_video = video(batch=2, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(clip_video, TINY_CLASSES), source(clip_video, TINY_CLASSES))


def test_converter_frames_and_frozen_weight_checks(xclip_release, tmp_path):
    folder, source = xclip_release
    path = tmp_path / "ckpt_epoch_0.pth"
    save_official_release(path, copy_of(source), "DATA:\n  NUM_FRAMES: 4\n")
    with pytest.raises(HarnessError, match="mit.positional_embedding was trained for T=4.*frames_mismatch=interpolate"):
        _convert(folder, path, frames=8)
    conversion = _convert(folder, path, frames=8, options={"frames_mismatch": "interpolate"})
    assert conversion.model.mit.positional_embedding.shape[1] == 8 and "interpolated" in " ".join(conversion.report["notes"])
    drifted = copy_of(source)
    with torch.no_grad():
        drifted.clip.ln_final.weight.add_(0.25)  # a frozen (text) weight that is not the base's
    save_official_release(path, drifted, "DATA:\n  NUM_FRAMES: 4\n")
    with pytest.raises(HarnessError, match=r"beyond fp16 rounding: largest \|diff\| 0\.25 at ln_final\.weight "
                                           r".*--allow-base-mismatch"):
        _convert(folder, path)
    allowed = _convert(folder, path, allow_base_mismatch=True).report
    assert allowed["base_mismatch_allowed"] and allowed["frozen_vs_base"]["official_key"] == "ln_final.weight"
    assert allowed["frozen_vs_base"]["max_abs_diff"] == pytest.approx(0.25)
    # a release trained with MODEL.FIX_TEXT=False: its text tower is trained, not compared with --base
    save_official_release(path, drifted, official_config(**{"MODEL.FIX_TEXT": False}))
    trained_text = _convert(folder, path, classes=[f"class {i}" for i in range(51)])
    assert trained_text.meta["method_options"]["train_text"] is True and trained_text.report["frozen_in_release"] == 0
    assert trained_text.meta["classnames"] == [f"class {i}" for i in range(51)]


def test_converter_config_disagreements_and_assumptions(xclip_release, tmp_path):
    """A config that contradicts the tensors or --classes is one line; a --set over a configured
    option is a note; without a config TRAIN.LR is "assumed" with the few-shot alternative."""
    from harness.convert import ConvertRequest
    from harness.convert.cfgnode import check_arch

    folder, source = xclip_release
    path = tmp_path / "ckpt_epoch_0.pth"
    save_official_release(path, copy_of(source), official_config(**{"DATA.NUM_FRAMES": 8}))
    with pytest.raises(HarnessError, match=r"DATA.NUM_FRAMES=8\) disagrees with its mit.positional_embedding of T=4"):
        _convert(folder, path)
    save_official_release(path, copy_of(source), official_config())
    with pytest.raises(HarnessError, match=r"--classes names 3 classes, but the release was trained on "
                                           r"DATA.NUM_CLASSES=51"):
        _convert(folder, path, classes=TINY_CLASSES)
    report = _convert(folder, path, options={"lr": 1e-5}, classes=[f"c{i}" for i in range(51)]).report
    assert "--set xclip.lr=1e-05 overrides the release's config TRAIN.LR=2e-06 (xclip.lr=2e-06)" in report["notes"]
    with pytest.raises(HarnessError, match=r"MODEL.ARCH=ViT-L/14\) was trained on another CLIP than --backbone "
                                           r"ViT-B-16-quickgelu; pass --backbone ViT-L-14"):
        check_arch(ConvertRequest("x.pth", backbone="ViT-B-16-quickgelu"), "ViT-L/14", "x.pth (its config")
    save_official_release(path, copy_of(source), None)
    bare = _convert(folder, path)
    assert bare.meta["method_options"]["lr"] == 8e-6 and bare.meta["classnames"] is None
    assert bare.report["assumed"]["lr"]["value"] == 8e-6 and "configs/hmdb51/16_32.yaml" in \
        bare.report["assumed"]["lr"]["alternatives"]["2e-06"]
    assert any("no MODEL.FIX_TEXT" in note for note in bare.report["notes"])
