"""The joint space-time forms of the temporal methods (docs/methods/<m>.md, "On a joint space-time
backbone"): on a joint sequence each temporal module does to the patch tokens exactly what it does
per frame to the same (B, T, N, D) grid, and the clip's one CLS token is a time series of length
one (MSTA's conv: centre tap and bias; AIM's temporal attention: attends to itself; ST-Adapter:
untouched, as each frame's CLS is)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from harness.backbone import create_clip, get_tokenizer
from methods.layout import JOINT, LAYOUTS, PER_FRAME
from methods.msta import TemporalConv
from methods.registry import build_method
from methods.st_adapter import STAdapterModule

B, T, N, D = 2, 3, 4, 8


def _tokens(seed: int = 0):
    """The same CLS tokens and patch grid in both layouts: (per-frame (B*T, 1+N, D), joint (B, 1+N*T, D))."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.randn(B, T, N, D, generator=gen)
    cls_frames = torch.randn(B, T, 1, D, generator=gen)
    cls_clip = torch.randn(B, 1, D, generator=gen)
    per_frame = torch.cat([cls_frames, grid], dim=2).flatten(0, 1)
    joint = torch.cat([cls_clip, LAYOUTS[JOINT].from_patch_grid(grid)], dim=1)
    return per_frame, joint, grid, cls_clip


def _grid(joint: torch.Tensor) -> torch.Tensor:
    return LAYOUTS[JOINT].patch_grid(joint[:, 1:], T)


def test_layout_helpers_round_trip_and_agree():
    per_frame, joint, grid, _ = _tokens()
    assert torch.equal(_grid(joint), grid)
    assert torch.equal(LAYOUTS[PER_FRAME].patch_grid(per_frame[:, 1:], T), grid)
    for layout, x in ((LAYOUTS[PER_FRAME], per_frame), (LAYOUTS[JOINT], joint)):
        assert torch.equal(layout.from_time_series(layout.time_series(x, T), x, T), x)
        assert torch.equal(layout.from_per_clip(layout.per_clip(x, T)), x)
    cls, patches = LAYOUTS[JOINT].time_series(joint, T)
    assert cls.shape == (B, 1, D) and torch.equal(patches.view(B, N, T, D).transpose(1, 2), grid)
    emb = torch.randn(1, T, D)
    added = LAYOUTS[JOINT].add_frame_embedding(joint, emb, T)
    assert torch.equal(added[:, 0], joint[:, 0]) and torch.allclose(_grid(added), grid + emb.unsqueeze(2))


def test_st_adapter_convolves_the_same_grid():
    adapter = STAdapterModule(D, 6)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_()
    per_frame, joint, _, cls = _tokens()
    out_frames = adapter(per_frame, T)
    out_joint = adapter(joint, T, LAYOUTS[JOINT])
    torch.testing.assert_close(_grid(out_joint), out_frames[:, 1:].view(B, T, N, D))
    assert torch.equal(out_joint[:, :1], cls)


@pytest.mark.parametrize("tokens", ["all", "patch", "cls"])
def test_msta_temporal_conv_on_the_grid_and_the_clip_token(tokens):
    conv = TemporalConv(D, tokens=tokens, init="kaiming")
    with torch.no_grad():
        conv.conv.bias.normal_()
    per_frame, joint, grid, cls = _tokens()
    out_joint = conv(joint, T, LAYOUTS[JOINT])
    if tokens == "cls":
        torch.testing.assert_close(_grid(out_joint), grid)
    else:
        torch.testing.assert_close(_grid(out_joint), conv(per_frame, T)[:, 1:].view(B, T, N, D))
    w_centre, bias = conv.conv.weight[:, 0, 1], conv.conv.bias
    expected_cls = cls + w_centre * cls + bias if tokens in ("all", "cls") else cls
    torch.testing.assert_close(out_joint[:, :1], expected_cls.detach())


def test_aim_temporal_attention_per_position_and_on_the_clip_token():
    joint_clip, joint_spec = create_clip("harness-tiny-joint", seed=0)
    frame_clip, frame_spec = create_clip("harness-tiny", seed=0)
    joint_net = build_method("aim", joint_clip, get_tokenizer(joint_spec), T).eval()
    frame_net = build_method("aim", frame_clip, get_tokenizer(frame_spec), T).eval()
    joint_block, frame_block = joint_net.visual_blocks[1], frame_net.visual_blocks[1]
    with torch.no_grad():
        for p in joint_block.T_Adapter.parameters():
            p.normal_(std=0.1)
    frame_block.load_state_dict(joint_block.state_dict())
    gen = torch.Generator().manual_seed(1)
    width = joint_block.width
    grid, cls_frames, cls = (torch.randn(2, T, 5, width, generator=gen), torch.randn(2, T, 1, width, generator=gen),
                             torch.randn(2, 1, width, generator=gen))
    joint = torch.cat([cls, LAYOUTS[JOINT].from_patch_grid(grid)], dim=1)
    per_frame = torch.cat([cls_frames, grid], dim=2).flatten(0, 1)
    joint_net.ctx.num_frames = frame_net.ctx.num_frames = T
    with torch.no_grad():
        out_joint = joint_block.temporal_branch(joint)
        out_frames = frame_block.temporal_branch(per_frame)
        torch.testing.assert_close(_grid(out_joint), out_frames[:, 1:].reshape(2, T, 5, width))
        attn = joint_block.attn  # one key: softmax = 1, the output is out_proj(v)
        v = F.linear(joint_block.ln_1(cls), attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
        torch.testing.assert_close(out_joint[:, :1], joint_block.T_Adapter(attn.out_proj(v)))


def test_vificlip_prompt_appends_one_prompt_set_per_clip():
    clip, spec = create_clip("harness-tiny-joint", seed=0)
    net = build_method("vificlip_prompt", copy.deepcopy(clip), get_tokenizer(spec), T, {"depth": 2})
    video = torch.randn(2, T, 3, 64, 64)
    tokens = net.visual_tokens(net.embed_video(video))
    assert tokens.shape == (2, 1 + 16 * T + 16, net.visual_width)
    assert torch.equal(tokens[:, -16:], net.visual_prompts.expand(2, -1, -1))


def test_froster_joint_attention_and_clip_feature_teacher():
    """FROSTER's joint form: no block is wrapped (the joint attention already spans every frame), the
    video feature is the clip's normalised CLS feature (zero-shot's), and at initialisation the student
    equals its frozen teacher, so the video distillation term is exactly 0 (1 - cos(f + 0.1 P_v(f), f)
    with P_v's last layer at zero); training moves the student, never the teacher."""
    from methods.blocks import AdaptedBlock
    from methods.froster import TemporalViewBlock

    clip, spec = create_clip("harness-tiny-joint", seed=0)
    video, labels, classes = torch.randn(2, T, 3, 64, 64), torch.tensor([0, 2]), ["a", "b", "c"]
    net = build_method("froster", copy.deepcopy(clip), get_tokenizer(spec), T, {"temporal_view": 2}, classes)
    plain = build_method("zeroshot", copy.deepcopy(clip), get_tokenizer(spec), T, {}, classes)
    assert all(type(b) is AdaptedBlock for b in net.visual_blocks)
    assert not any(isinstance(b, TemporalViewBlock) for b in net.teacher.visual_blocks)
    net.eval()
    with torch.no_grad():
        expected = F.normalize(plain.encode_video(video, normalize=False), dim=-1)
        torch.testing.assert_close(net.encode_video(video, normalize=False), expected)
        torch.testing.assert_close(net.teacher.encode_video(video), expected)
    net.train()
    losses = net.training_losses(video, labels, classes)
    assert losses["loss_distill_video"].item() == pytest.approx(0.0, abs=1e-6)
    teacher = {n: p.detach().clone() for n, p in net.teacher.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    sum(losses.values()).backward()
    opt.step()
    assert all(torch.equal(p, teacher[n]) for n, p in net.teacher.named_parameters())
    with torch.no_grad():
        assert net.training_losses(video, labels, classes)["loss_distill_video"].item() > 1e-6


def test_froster_records_the_prompts_it_encodes_for_truncation():
    """FROSTER's texts are its 29 templates over the rephrased names: a run on ViCLIP's 32-token
    context counts those it cuts (a long rephrasing: all 29 of its class; a short one: none)."""
    from harness.backbone import count_truncated

    clip, spec = create_clip("harness-tiny-joint", seed=0)
    net = build_method("froster", clip, get_tokenizer(spec), T, {}, ["a", "b"])
    net.set_rephrased_classnames(["a", "b"], ["Abseiling: " + "rope " * 40, "Bowling: rolls a ball"])
    texts = net.prompt_texts(["a", "b"])
    assert len(texts) == 2 * 29 and texts[2 * 28] == "Abseiling: " + "rope " * 40  # template-major
    assert count_truncated(texts, 32) == 29
