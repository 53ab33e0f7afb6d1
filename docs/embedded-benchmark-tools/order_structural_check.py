"""Structural order-sensitivity checks for docs/embedded-benchmark.md (investigation tooling):
which trainable tensor breaks frame-order symmetry in aim / msta / st_adapter, how large MSTA's
lambda-scaled branch is against the residual stream, and the order sensitivity a given MSTA
temporal-conv weight size buys. Run: nice -n 19 python scripts/order_structural_check.py"""
import copy

import torch

from harness.backbone import create_clip, get_tokenizer
from methods.registry import build_method

torch.set_num_threads(1); torch.manual_seed(0)
clip, spec = create_clip("harness-tiny", pretrained="synthetic"); tok = get_tokenizer(spec)
v = torch.randn(4, 8, 3, 64, 64)
def sens(m):
    m.eval()
    with torch.no_grad():
        a, b = m.encode_video(v), m.encode_video(v.flip(1))
    return float((1 - (a*b).sum(-1)).mean())
def perturb(m, skip=(), std=0.05):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad and not any(s in n for s in skip):
                p.add_(torch.randn(p.shape, generator=g) * std)
for method, tkey in  [("aim", "temporal_embedding"), ("msta", "temporal.conv"), ("st_adapter", "conv")]:
    m = build_method(method, copy.deepcopy(clip), tok, 8, {}, None)
    s0 = sens(m)
    perturb(m, skip=(tkey,)); s1 = sens(m)
    perturb(m); s2 = sens(m)
    print(f"{method}: init {s0:.2e} | all trainables perturbed except {tkey!r} {s1:.2e} | {tkey!r} perturbed too {s2:.2e}")
# MSTA: size of the scaled branch vs the residual stream at init (msta default scale 0.005)
m = build_method("msta", copy.deepcopy(clip), tok, 8, {}, None); m.eval()
from methods.msta import MSTABlock

ratios = []
def hook(mod, inp, out):
    x = inp[0]; h = mod.ln_1(x)
    br = mod.scale * mod.branch(h)
    ratios.append((float(br.norm() / x.norm()), float(mod.branch(h).norm() / x.norm())))
hs = [b.register_forward_hook(hook) for b in m.clip.visual.transformer.resblocks if isinstance(b, MSTABlock)]
with torch.no_grad(): m.encode_video(v)
print("msta visual |lambda*A|/|x| per layer:", [f"{r[0]:.4f}" for r in ratios], " |A|/|x|:", [f"{r[1]:.2f}" for r in ratios])
print("logit_scale.exp():", float(clip.logit_scale.exp()))
for std in (0.3, 1.0, 3.0):
    m = build_method("msta", copy.deepcopy(clip), tok, 8, {}, None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "temporal.conv.weight" in n: p.copy_(torch.randn(p.shape, generator=g) * std)
    print(f"msta temporal conv weight std {std}: order sensitivity {sens(m):.2e}")
