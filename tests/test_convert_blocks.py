"""Converted blocks against independent re-implementations of the official blocks, written here
from the official formulations and run on the release's own tensors (by their official names):
Vita-CLIP's split q/k/v attention over own + prompt + summary tokens, ST-Adapter's fp16-stored
block with its temporal-conv adapter, AIM's temporal / spatial / joint adapters, and ViFi-CLIP's
plain and deep-prompted CLIP blocks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from convert_helpers import consistent_release, make_base, run_convert
from method_helpers import OFFICIAL_STATE_DICTS
from official_forward import attention, clip_block, fused_attention, lin, norm, quick_gelu

base = pytest.fixture(scope="module")(make_base)
pytestmark = pytest.mark.skipif(not OFFICIAL_STATE_DICTS.is_dir(), reason="needs ../shared/upstream/official-state-dicts")
def run_block(model, index, x, frames, tower="visual", mask=None):
    blocks = model.visual_blocks if tower == "visual" else model.text_blocks
    model.ctx.num_frames = frames
    with torch.no_grad():
        return blocks[index](x, attn_mask=mask)


def tokens(n, length=5, width=768, seed=1):
    return torch.randn(n, length, width, generator=torch.Generator().manual_seed(seed))


def test_vitaclip_block(base, tmp_path):
    """Official Vita-CLIP block: own tokens + global prompts + local prompts (+ projected CLS of
    every frame) + summary token, split q/k/v attention over all of them, timm-named norms and
    MLP; the extra tokens are dropped afterwards."""
    s = consistent_release("vitaclip", base, seed=4)
    model = run_convert("vitaclip", s, base, tmp_path).model
    b, t, i = 1, 8, 1
    x = tokens(b * t)
    p = f"visual.blocks.{i}"
    cls = lin(x[:, 0].view(b, t, 768), s, f"{p}.cls_proj")  # (B, T, D)
    summary = cls + lin(attention(*(lin(norm(cls, s, f"{p}.summary_ln"), s, f"{p}.summary_attn_layer.{w}_proj")
                                    for w in "qkv")), s, f"{p}.summary_attn_layer.out_proj")
    local = (s[f"{p}.local_prompts"][0] + cls).unsqueeze(1).expand(b, t, t, 768).reshape(b * t, t, 768)
    glob = s["visual.global_prompts"][i].expand(b * t, -1, -1)
    full = torch.cat([x, glob, local, summary.reshape(b * t, 1, 768)], dim=1)
    h = norm(full, s, f"{p}.norm1")
    full = full + lin(attention(*(lin(h, s, f"{p}.attn.{w}_proj") for w in "qkv")), s, f"{p}.attn.out_proj")
    full = full + lin(quick_gelu(lin(norm(full, s, f"{p}.norm2"), s, f"{p}.mlp.fc1")), s, f"{p}.mlp.fc2")
    torch.testing.assert_close(run_block(model, i, x, t), full[:, :x.shape[1]], rtol=1e-4, atol=1e-5)


def test_st_adapter_block(base, tmp_path):
    """Official ST-Adapter block on its fp16-stored weights: attention, then the adapter
    (fc1 -> depthwise conv over T, zero padded -> fc2, patch tokens only), then the MLP."""
    s = consistent_release("st_adapter", base, seed=5)
    model = run_convert("st_adapter", s, base, tmp_path).model
    b, t, i = 2, 4, 1
    x = tokens(b * t)
    p = f"transformer.resblocks.{i}"
    a = f"{p}.adapter_pre_mlp"
    y = x + fused_attention(norm(x, s, f"{p}.ln_1"), s, f"{p}.attn")
    h = lin(y[:, 1:], s, f"{a}.fc1").view(b, t, 4, -1)
    w = s[f"{a}.conv.weight"].float().view(-1, 3)
    padded = F.pad(h, (0, 0, 0, 0, 1, 1))
    conv = s[f"{a}.conv.bias"].float() + sum(padded[:, j:j + t] * w[:, j] for j in range(3))
    y = torch.cat([y[:, :1], y[:, 1:] + lin(conv.flatten(0, 1), s, f"{a}.fc2")], dim=1)
    y = y + lin(quick_gelu(lin(norm(y, s, f"{p}.ln_2"), s, f"{p}.mlp.c_fc")), s, f"{p}.mlp.c_proj")
    torch.testing.assert_close(run_block(model, i, x, t), y, rtol=1e-4, atol=1e-5)


def test_aim_block(base, tmp_path):
    """Official AIM block (eval): x += T_Adapter(attn over time); x += S_Adapter(attn) with skip;
    x += mlp(ln_2 x) + 0.5 * MLP_Adapter(ln_2 x)."""
    s = consistent_release("aim", base, seed=6)
    model = run_convert("aim", s, base, tmp_path).model
    b, t, n, i = 1, 8, 5, 0
    x = tokens(b * t, n)
    p = f"backbone.transformer.resblocks.{i}"

    def adapter(v, name, skip):
        out = lin(F.gelu(lin(v, s, f"{p}.{name}.D_fc1")), s, f"{p}.{name}.D_fc2")
        return v + out if skip else out

    xt = x.view(b, t, n, 768).transpose(1, 2).reshape(b * n, t, 768)
    temporal = adapter(fused_attention(norm(xt, s, f"{p}.ln_1"), s, f"{p}.attn"), "T_Adapter", False)
    y = x + temporal.view(b, n, t, 768).transpose(1, 2).reshape(b * t, n, 768)
    y = y + adapter(fused_attention(norm(y, s, f"{p}.ln_1"), s, f"{p}.attn"), "S_Adapter", True)
    yn = norm(y, s, f"{p}.ln_2")
    y = y + lin(quick_gelu(lin(yn, s, f"{p}.mlp.c_fc")), s, f"{p}.mlp.c_proj") + 0.5 * adapter(yn, "MLP_Adapter", False)
    torch.testing.assert_close(run_block(model, i, x, t), y, rtol=1e-4, atol=1e-5)


def test_vificlip_text_block(base, tmp_path):
    """ViFi-CLIP's fine-tuned text block (causal mask) from `text_encoder.*`."""
    s = consistent_release("vificlip", base, seed=7)
    model = run_convert("vificlip", s, base, tmp_path).model
    x = tokens(3, 6, width=512)
    mask = torch.full((6, 6), float("-inf")).triu(1)
    expected = clip_block(x, s, "text_encoder.transformer.resblocks.1", mask)
    torch.testing.assert_close(run_block(model, 1, x, 1, "text", mask), expected, rtol=1e-4, atol=1e-5)


def test_vificlip_prompt_visual_block(base, tmp_path):
    """ViFi-CLIP prompting: block i replaces the last n tokens by its own `VPT_shallow`."""
    s = consistent_release("vificlip_prompt", base, seed=8)
    model = run_convert("vificlip_prompt", s, base, tmp_path).model
    p = "image_encoder.transformer.resblocks.1"
    n = s[f"{p}.VPT_shallow"].shape[0]
    x = tokens(2, 4 + n)
    # the official forward uses the prompt as `.half()` (clip/model.py)
    prompted = torch.cat([x[:, :-n], s[f"{p}.VPT_shallow"].half().float().expand(2, -1, -1)], dim=1)
    torch.testing.assert_close(run_block(model, 1, x, 1), clip_block(prompted, s, p), rtol=1e-4, atol=1e-5)
