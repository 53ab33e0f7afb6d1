"""ViCLIP written out from its official code, for the tests: an independent transcription of the
forward (OpenGVLab/InternVideo @ 3965eef `Data/InternVid/viclip/viclip_vision.py`,
`viclip_text.py`, `viclip.py`; the temporal embedding for other frame counts from
`InternVideo1/Pretrain/ViCLIP` `interpolate_pos_embed_vit` + `models/utils.py`), in plain torch on
a state dict with the official keys (sequence-first, `F.multi_head_attention_forward`: none of
this project's code), and checkpoint files written as the official training code saves them.

The parity of this project's ViCLIP with the official code itself, run outside the repository,
is in the report of the change that added it (/work/parity/viclip/parity_official.py).
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.backbone import create_clip
from harness.viclip_weights import to_official

OFFICIAL_LISTING = Path(__file__).resolve().parent / "data" / "viclip_b16_official_state_dict.tsv"


def official_rows(path: Path = OFFICIAL_LISTING):
    """(key, shape, trainable) of the official ViCLIP-B/16 state dict (listed from the official code)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            key, shape, _, trainable = line.split("\t")
            yield key, [] if shape == "scalar" else [int(d) for d in shape.split("x")], trainable == "1"


def _ln(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"])


def _block(x, sd, prefix, heads, mask=None):
    """ResidualAttentionBlock.forward (seq-first): x + attn(ln_1 x); x + mlp(ln_2 x), QuickGELU."""
    d = x.shape[-1]
    h = _ln(x, sd, prefix + ".ln_1")
    attn = F.multi_head_attention_forward(
        h, h, h, d, heads, sd[prefix + ".attn.in_proj_weight"], sd[prefix + ".attn.in_proj_bias"], None, None, False,
        0.0, sd[prefix + ".attn.out_proj.weight"], sd[prefix + ".attn.out_proj.bias"], training=False,
        need_weights=False, attn_mask=mask)[0]
    x = x + attn
    h = F.linear(_ln(x, sd, prefix + ".ln_2"), sd[prefix + ".mlp.c_fc.weight"], sd[prefix + ".mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, sd[prefix + ".mlp.c_proj.weight"], sd[prefix + ".mlp.c_proj.bias"])


def official_temporal_embedding(old: torch.Tensor, frames: int) -> torch.Tensor:
    """`load_temp_embed_with_mismatch(add_zero=False)` on a (1, T0, D) embedding, and the forward's
    `temporal_positional_embedding.mean(1)` for a single frame."""
    t0 = old.shape[1]
    if frames == 1:
        return old.mean(1)
    if frames > t0:  # interpolate_temporal_pos_embed: (1, d, T0) -> linear -> (1, d, T)
        return F.interpolate(old.permute(0, 2, 1), frames, mode="linear").permute(0, 2, 1)
    return old[:, :frames]


def official_tokens_before_ln_pre(sd, video):
    """VisionTransformer.forward up to ln_pre: (B, 1 + N*T, D), CLS then ViCLIP's (n t) order."""
    x = F.conv3d(video.permute(0, 2, 1, 3, 4), sd["vision_encoder.conv1.weight"],
                 stride=sd["vision_encoder.conv1.weight"].shape[2:])
    b, c, t, h, w = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
    cls = sd["vision_encoder.class_embedding"] + torch.zeros(x.shape[0], 1, c)
    x = torch.cat([cls, x], dim=1) + sd["vision_encoder.positional_embedding"]
    cls_tokens = x[:b, :1, :]
    x = x[:, 1:]
    x = x.reshape(b, t, h * w, c).transpose(1, 2).reshape(b * h * w, t, c)  # (b t) n m -> (b n) t m
    x = x + official_temporal_embedding(sd["vision_encoder.temporal_positional_embedding"], t)
    x = x.reshape(b, h * w * t, c)  # (b n) t m -> b (n t) m
    return torch.cat([cls_tokens, x], dim=1)


def official_video_features(sd, video, heads: int) -> torch.Tensor:
    """ViCLIP.get_vid_features: encode_vision(test=True), L2-normalised."""
    x = _ln(official_tokens_before_ln_pre(sd, video), sd, "vision_encoder.ln_pre").permute(1, 0, 2)
    layers = len({k.split(".")[3] for k in sd if k.startswith("vision_encoder.transformer.resblocks.")})
    for i in range(layers):
        x = _block(x, sd, f"vision_encoder.transformer.resblocks.{i}", heads)
    x = _ln(x, sd, "vision_encoder.ln_post")
    feats = x[0] @ sd["vision_encoder.proj"]
    return feats / feats.norm(dim=-1, keepdim=True)


def official_text_features(sd, tokens, heads: int) -> torch.Tensor:
    """ViCLIP.get_text_features: CLIP_TEXT.forward (causal mask of the 32-token context), normalised."""
    x = F.embedding(tokens, sd["text_encoder.token_embedding.weight"]) + sd["text_encoder.positional_embedding"]
    length = tokens.shape[1]
    mask = torch.empty(length, length).fill_(float("-inf")).triu_(1)
    x = x.permute(1, 0, 2)
    layers = len({k.split(".")[3] for k in sd if k.startswith("text_encoder.transformer.resblocks.")})
    for i in range(layers):
        x = _block(x, sd, f"text_encoder.transformer.resblocks.{i}", heads, mask)
    x = _ln(x.permute(1, 0, 2), sd, "text_encoder.ln_final")
    feats = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ sd["text_encoder.text_projection"]
    return feats / feats.norm(dim=-1, keepdim=True)


def official_logits(sd, video, tokens, heads: tuple[int, int]) -> torch.Tensor:
    """Cosine similarities over `temp` (ViCLIP: v @ t / temp)."""
    return official_video_features(sd, video, heads[0]) @ official_text_features(sd, tokens, heads[1]).t() / sd["temp"]


def random_official_state(name: str = "harness-tiny-joint", seed: int = 0, temp: float = 0.0123,
                          frames: int | None = None) -> dict[str, torch.Tensor]:
    """Random weights of backbone `name` under the official keys, every tensor non-trivial (the
    temporal embedding too, which a fresh model has at zero); `frames` rows of temporal embedding."""
    clip, _ = create_clip(name, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    state = {}
    for key, value in to_official(clip.state_dict()).items():
        if key == "temp":
            state[key] = torch.tensor(temp)
            continue
        if key.endswith("temporal_positional_embedding") and frames is not None:
            value = torch.zeros(1, frames, value.shape[2])
        noise = torch.randn(value.shape, generator=gen)
        state[key] = (1 + 0.1 * noise) if value.dim() == 1 and ".ln" in key and key.endswith("weight") else 0.05 * noise
    return state


class _EasyDictModule:
    """A module named `easydict` whose `EasyDict` pickles as the real one does (a dict subclass
    whose items are mirrored as attributes), installed only while a checkpoint is written."""

    def __enter__(self):
        module = types.ModuleType("easydict")

        class EasyDict(dict):
            def __init__(self, d=None, **kwargs):
                super().__init__()
                for key, value in {**(d or {}), **kwargs}.items():
                    setattr(self, key, value)

            def __setattr__(self, name, value):
                value = type(self)(value) if isinstance(value, dict) and not isinstance(value, type(self)) else value
                super().__setattr__(name, value)
                super().__setitem__(name, value)

        EasyDict.__module__, EasyDict.__qualname__ = "easydict", "EasyDict"
        module.EasyDict = EasyDict
        self.previous = sys.modules.get("easydict")
        sys.modules["easydict"] = module
        return EasyDict

    def __exit__(self, *exc):
        if self.previous is None:
            sys.modules.pop("easydict", None)
        else:
            sys.modules["easydict"] = self.previous


def write_training_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """What InternVideo1/Pretrain/ViCLIP `tasks/pretrain.py` torch.saves: model, optimizer,
    scheduler, scaler, config (an EasyDict), epoch, global_step. The EasyDict class exists only
    while saving: loading must not need (or run) it."""
    params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if k.startswith("vision_encoder.")][:3]
    optimizer = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.98), weight_decay=0.2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with _EasyDictModule() as EasyDict:
        config = EasyDict({"model": {"model_cls": "ViCLIP", "vision_encoder": {"name": "vit_b16", "masking_prob": 0.9},
                                     "temp": 0.01}, "max_txt_l": 32})
        torch.save({"model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                               "_growth_tracker": 0},
                    "config": config, "epoch": 9, "global_step": 12345}, path)
    return path
