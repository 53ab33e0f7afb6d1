"""Independent re-implementations of the official forwards, written here from the official code
at the pinned commits and run on a release's own tensors by their official names (the converters
under test are not used): ST-Adapter `models_adapter.VisionTransformer`, AIM `ViT_CLIP` + mmaction
`I3DHead`, Vita-CLIP `VitaCLIP`, ViFi-CLIP `ViFiCLIP` (full and vision-language prompting).

Videos are (B, T, 3, H, W), already normalised. Every function returns (features, logits):
the features before the head (visual-only releases) or the unnormalised video features
(text-matching releases), in float32."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

HEAD_WIDTH = 64  # ViT-B/16: 12 heads of the 768-wide image tower, 8 of the 512-wide text tower


def lin(x, s, key):
    """x @ W.T + b with the release's `key`.weight / `key`.bias (fp16 releases upcast)."""
    return x @ s[f"{key}.weight"].float().T + s[f"{key}.bias"].float()


def norm(x, s, key):
    return F.layer_norm(x, (x.shape[-1],), s[f"{key}.weight"].float(), s[f"{key}.bias"].float())


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def attention(q, k, v, mask=None):
    """Softmax attention written out: (N, L, D) queries over (N, S, D) keys/values."""
    n, length, d = q.shape
    heads = d // HEAD_WIDTH
    split = lambda t: t.reshape(n, t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(n, length, d)


def fused_attention(x, s, key, mask=None):
    """CLIP's nn.MultiheadAttention (`key`.in_proj_weight, q/k/v stacked) from its weights."""
    w, b = s[f"{key}.in_proj_weight"].float(), s[f"{key}.in_proj_bias"].float()
    q, k, v = (x @ wi.T + bi for wi, bi in zip(w.chunk(3), b.chunk(3)))
    return lin(attention(q, k, v, mask), s, f"{key}.out_proj")


def clip_block(x, s, p, mask=None):
    """The plain pre-norm CLIP block (`p` = official prefix of the block)."""
    x = x + fused_attention(norm(x, s, f"{p}.ln_1"), s, f"{p}.attn", mask)
    return x + lin(quick_gelu(lin(norm(x, s, f"{p}.ln_2"), s, f"{p}.mlp.c_fc")), s, f"{p}.mlp.c_proj")


def patch_tokens(frames, s, conv, cls, pos, conv_bias=None):
    """conv1 patchify (B*T, 3, H, W) -> (B*T, 1 + N, D): class token first, + positional embedding."""
    w = s[conv].float()
    x = F.conv2d(frames, w, None if conv_bias is None else s[conv_bias].float(), stride=w.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[cls].float().expand(x.shape[0], 1, -1), x], dim=1)
    return x + s[pos].float()


def blocks_of(s, prefix):
    return sorted({int(k[len(prefix):].split(".")[0]) for k in s if k.startswith(prefix)})


def causal_mask(length):
    return torch.full((length, length), float("-inf")).triu(1)


def text_tower(prompts, tokens, s, p=""):
    """CLIP's text transformer on token embeddings (C, L, D): + positional, causal blocks, ln_final,
    the EOT token's feature @ text_projection. `s`: the tower's tensors under prefix `p`."""
    x = prompts + s[f"{p}positional_embedding"].float()
    mask = causal_mask(x.shape[1])
    for i in blocks_of(s, f"{p}transformer.resblocks."):
        x = clip_block(x, s, f"{p}transformer.resblocks.{i}", mask)
    x = norm(x, s, f"{p}ln_final")
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ s[f"{p}text_projection"].float()


def cosine_logits(video, text, logit_scale):
    video, text = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    return logit_scale.float().exp() * video @ text.T


# -- ST-Adapter ----------------------------------------------------------------------------------
def st_adapter(s, video):
    """models_adapter.VisionTransformer (eval): adapters before attention / MLP (fc1 -> depthwise
    Conv3d over T, kernel (k, 1, 1), zero padded -> fc2, patch tokens only), CLS mean over frames,
    ln_post, fc. `s` holds every tensor by its official name (frozen ones as the model holds them)."""
    b, t = video.shape[:2]
    x = norm(patch_tokens(video.flatten(0, 1), s, "conv1.weight", "class_embedding", "positional_embedding"),
             s, "ln_pre")

    def adapter(x, a):
        h = lin(x[:, 1:], s, f"{a}.fc1")  # (B*T, N, Ca)
        n, ca = h.shape[1], h.shape[2]
        w = s[f"{a}.conv.weight"].float()  # (Ca, 1, k, 1, 1)
        k = w.shape[2]
        h = h.view(b, t, n, ca).permute(0, 2, 3, 1).reshape(b * n, ca, t)  # (B*N, Ca, T)
        h = F.conv1d(h, w.view(ca, 1, k), s[f"{a}.conv.bias"].float(), padding=k // 2, groups=ca)
        h = h.view(b, n, ca, t).permute(0, 3, 1, 2).reshape(b * t, n, ca)
        return torch.cat([x[:, :1], x[:, 1:] + lin(h, s, f"{a}.fc2")], dim=1)

    for i in blocks_of(s, "transformer.resblocks."):
        p = f"transformer.resblocks.{i}"
        if f"{p}.adapter_pre_attn.fc1.weight" in s:
            x = adapter(x, f"{p}.adapter_pre_attn")
        x = x + fused_attention(norm(x, s, f"{p}.ln_1"), s, f"{p}.attn")
        if f"{p}.adapter_pre_mlp.fc1.weight" in s:
            x = adapter(x, f"{p}.adapter_pre_mlp")
        x = x + lin(quick_gelu(lin(norm(x, s, f"{p}.ln_2"), s, f"{p}.mlp.c_fc")), s, f"{p}.mlp.c_proj")
    feats = norm(x[:, 0].view(b, t, -1).mean(dim=1), s, "ln_post")
    return feats, lin(feats, s, "fc")


# -- AIM -------------------------------------------------------------------------------------------
def aim(s, video, adapter_scale, num_tadapter=1):
    """ViT_CLIP (eval: drop path off) + I3DHead: temporal embedding added before ln_pre; per block
    x += T_Adapter(attn(ln_1 x_t)) [num_tadapter=2: attn(T_Adapter_in(ln_1 x_t))], x +=
    S_Adapter(attn(ln_1 x)), x += mlp(ln_2 x) + scale * MLP_Adapter(ln_2 x); ln_post on each frame's
    CLS, average over frames, fc_cls."""
    b, t = video.shape[:2]
    bb = "backbone."
    x = patch_tokens(video.flatten(0, 1), s, bb + "conv1.weight", bb + "class_embedding",
                     bb + "positional_embedding")
    n, d = x.shape[1:]
    x = (x.view(b, t, n, d) + s[bb + "temporal_embedding"].float()[0][None, :, None]).view(b * t, n, d)
    x = norm(x, s, bb + "ln_pre")

    def adapter(v, a, skip):
        out = lin(F.gelu(lin(v, s, f"{a}.D_fc1")), s, f"{a}.D_fc2")
        return v + out if skip else out

    for i in blocks_of(s, bb + "transformer.resblocks."):
        p = f"{bb}transformer.resblocks.{i}"
        xt = x.view(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        xt = norm(xt, s, f"{p}.ln_1")
        if num_tadapter == 2:
            xt = adapter(xt, f"{p}.T_Adapter_in", True)
        xt = adapter(fused_attention(xt, s, f"{p}.attn"), f"{p}.T_Adapter", False)
        x = x + xt.view(b, n, t, d).transpose(1, 2).reshape(b * t, n, d)
        x = x + adapter(fused_attention(norm(x, s, f"{p}.ln_1"), s, f"{p}.attn"), f"{p}.S_Adapter", True)
        xn = norm(x, s, f"{p}.ln_2")
        x = x + lin(quick_gelu(lin(xn, s, f"{p}.mlp.c_fc")), s, f"{p}.mlp.c_proj") \
            + adapter_scale * adapter(xn, f"{p}.MLP_Adapter", False)
    feats = norm(x[:, 0], s, bb + "ln_post").view(b, t, d).mean(dim=1)
    return feats, lin(feats, s, "cls_head.fc_cls")


# -- ViFi-CLIP ---------------------------------------------------------------------------------
def vifi_image_encoder(frames, s, n_visual=0):
    """ViFi-CLIP's VisionTransformer: VPT tokens appended after the positional embedding (and ln_pre
    over all), block i > 0 with `VPT_shallow` replaces the last n tokens, ln_post(CLS) @ proj. The
    official forward casts every prompt `.half()`: the prompts run fp16-rounded."""
    p = "image_encoder."
    x = patch_tokens(frames, s, p + "conv1.weight", p + "class_embedding", p + "positional_embedding")
    if n_visual:
        x = torch.cat([x, s[p + "VPT"].half().float().expand(x.shape[0], -1, -1)], dim=1)
    x = norm(x, s, p + "ln_pre")
    for i in blocks_of(s, p + "transformer.resblocks."):
        key = f"{p}transformer.resblocks.{i}"
        if f"{key}.VPT_shallow" in s:
            x = torch.cat([x[:, :-n_visual], s[f"{key}.VPT_shallow"].half().float().expand(x.shape[0], -1, -1)], 1)
        x = clip_block(x, s, key)
    return norm(x[:, 0], s, p + "ln_post") @ s[p + "proj"].float()


def vifi_text_encoder(prompts, tokens, s, n_text=0):
    """ViFi-CLIP's TextEncoder; block i > 0 with `VPT_shallow` replaces tokens 1..n (fp16-rounded)."""
    p = "text_encoder."
    x = prompts + s[p + "positional_embedding"].float()
    mask = causal_mask(x.shape[1])
    for i in blocks_of(s, p + "transformer.resblocks."):
        key = f"{p}transformer.resblocks.{i}"
        if f"{key}.VPT_shallow" in s:
            ctx = s[f"{key}.VPT_shallow"].half().float().expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + n_text:]], dim=1)
        x = clip_block(x, s, key, mask)
    x = norm(x, s, p + "ln_final")
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ s[p + "text_projection"].float()


def vificlip(s, video, tokens, prompt_embeddings):
    """ViFiCLIP.forward: per-frame image features averaged over frames, text features of the
    prompt embeddings (`complete_text_embeddings`, or prefix + ctx + suffix when prompting),
    cosine logits scaled by exp(logit_scale)."""
    b, t = video.shape[:2]
    prompting = "image_encoder.VPT" in s
    n = s["prompt_learner.ctx"].shape[-2] if prompting else 0
    frames = vifi_image_encoder(video.flatten(0, 1), s, s["image_encoder.VPT"].shape[0] if prompting else 0)
    feats = frames.view(b, t, -1).mean(dim=1)
    text = vifi_text_encoder(prompt_embeddings, tokens, s, n)
    return feats, cosine_logits(feats, text, s["logit_scale"])


def coop_prompts(s, prefix, suffix):
    """[prefix, ctx, suffix] per class (class token at the end; a generic ctx is shared)."""
    ctx = s["prompt_learner.ctx"].float()
    if ctx.dim() == 2:
        ctx = ctx.expand(prefix.shape[0], -1, -1)
    return torch.cat([prefix.float(), ctx, suffix.float()], dim=1)


# -- Vita-CLIP ---------------------------------------------------------------------------------
def vita_attention(q_in, kv_in, s, key):
    """Vita-CLIP's `Attention` (separate q/k/v projections, softmax over keys)."""
    return lin(attention(lin(q_in, s, f"{key}.q_proj"), lin(kv_in, s, f"{key}.k_proj"),
                         lin(kv_in, s, f"{key}.v_proj")), s, f"{key}.out_proj")


def vitaclip(s, video, tokens, prompts):
    """VitaCLIP.forward: CLIPVisionEncoder (patch embedding with bias, + pos, + time_embed, ln_pre;
    per block: global prompts after the CLS, local prompts (+ cls_proj(CLS)) and the summary token
    attending with the frame's tokens, then dropped; ln_post(CLS) @ proj, mean over frames) and the
    CoOp text encoder; cosine logits."""
    b, t = video.shape[:2]
    v = "visual."
    x = patch_tokens(video.flatten(0, 1), s, v + "patch_embed.proj.weight", v + "cls_token", v + "pos_embed",
                     v + "patch_embed.proj.bias")
    n, d = x.shape[1:]
    x = (x.view(b, t, n, d) + s[v + "time_embed"].float()[None, :, None]).view(b * t, n, d)
    x = norm(x, s, v + "ln_pre")
    glob = s.get(v + "global_prompts")
    for i in blocks_of(s, v + "blocks."):
        p = f"{v}blocks.{i}"
        extra = []
        if glob is not None:
            extra.append(glob[i].float().expand(b * t, -1, -1))
        if f"{p}.cls_proj.weight" in s:
            cls = lin(x[:, 0].view(b, t, d), s, f"{p}.cls_proj")  # (B, T, D)
        if f"{p}.local_prompts" in s:
            local = s[f"{p}.local_prompts"].float() + cls  # (B, T, D)
            extra.append(local.repeat_interleave(t, dim=0))  # every frame sees its clip's T local prompts
        if f"{p}.summary_ln.weight" in s:
            sn = norm(cls, s, f"{p}.summary_ln")
            summary = cls + vita_attention(sn, sn, s, f"{p}.summary_attn_layer")
            extra.append(summary.reshape(b * t, 1, d))
        full = torch.cat([x, *extra], dim=1)
        h = norm(full, s, f"{p}.norm1")
        full = full + vita_attention(h, h, s, f"{p}.attn")
        x = full[:, :n]
        x = x + lin(quick_gelu(lin(norm(x, s, f"{p}.norm2"), s, f"{p}.mlp.fc1")), s, f"{p}.mlp.fc2")
    feats = (norm(x[:, 0], s, v + "ln_post") @ s[v + "proj"].float()).view(b, t, -1).mean(dim=1)
    text = text_tower(prompts, tokens, s, "textual.")
    return feats, cosine_logits(feats, text, s["logit_scale"])
