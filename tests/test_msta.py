"""MSTA: exact parameter counts, the shared cross-modal projection, MMA's gradient rescaling,
the temporal conv, and the description consistency loss with its frozen text branch."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F
from method_helpers import build_b16

from harness.backbone import create_clip, get_tokenizer
from harness.errors import HarnessError
from methods.msta import MSTA, MSTABlock, consistency_loss, scale_grad
from methods.registry import build_method, make_config

CLASSES = ["archery", "juggling balls", "surfing water"]
SPATIAL = [[f"{c} spatial one", f"{c} spatial two", f"{c} spatial three"] for c in CLASSES]
TEMPORAL = [[f"{c} first then", f"{c} then later"] for c in CLASSES]


def tiny(options: dict | None = None, frames: int = 4, seed: int = 0) -> MSTA:
    """MSTA on the 4-layer harness-tiny backbone (rank 16 keeps it fast)."""
    clip, spec = create_clip("harness-tiny", seed=seed)
    opts = {"rank": 16, **(options or {})}
    return build_method("msta", clip, get_tokenizer(spec), frames, opts, CLASSES)


def video(batch: int = 2, frames: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def perturb_temporal(model: MSTA, std: float = 0.5) -> None:
    """Zero-initialised temporal convs are order-blind at init: give them random weights."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in model.adapters.values():
            for p in layer.temporal.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


# -- counts and configuration ------------------------------------------------------------------
def test_counts_at_vit_b16(b16_meta) -> None:
    model = build_b16(b16_meta, {}, method="msta")
    assert model.parameter_counts()["trainable"] == 8_712_192
    assert all(n.startswith("adapters.") for n, p in model.named_parameters() if p.requires_grad)
    assert not model.clip.logit_scale.requires_grad
    layer = model.adapters["12"]
    assert sum(p.numel() for p in layer.temporal.parameters()) == 3_072

    model = build_b16(b16_meta, {"rank": 128, "start": 8}, method="msta")
    assert model.parameter_counts()["trainable"] == 1_744_000
    assert sorted(model.adapters, key=int) == ["8", "9", "10", "11", "12"]


def test_class_flags() -> None:
    assert MSTA.allows_grad_clip is False
    assert MSTA.text_is_frozen is False
    assert make_config("msta").prompt.format("archery") == "a video of archery"


@pytest.mark.parametrize("options", [{"end": 5}, {"start": 3, "end": 2}])
def test_layer_range_errors_name_the_depth(options: dict) -> None:
    with pytest.raises(HarnessError, match=r"msta\.start.*<= 4"):
        tiny(options)


@pytest.mark.parametrize("options", [{"rank": 0}, {"scale": 0.0}, {"n_descriptions": 0},
                                     {"temporal_tokens": "frames"}, {"temporal_init": "ones"}, {"end": "x"}])
def test_bad_options_raise(options: dict) -> None:
    with pytest.raises(HarnessError):
        make_config("msta", options)


# -- shared projection -------------------------------------------------------------------------
def test_shared_projection_gets_gradients_from_both_towers() -> None:
    model = tiny()
    for i, layer in model.adapters.items():
        idx = int(i) - 1
        assert model.visual_blocks[idx].adapter.shared_adapter is layer.shared_adapter
        assert model.text_blocks[idx].adapter.shared_adapter is layer.shared_adapter
    shared = model.adapters["4"].shared_adapter[0].weight

    model.encode_video(video()).sum().backward()
    assert shared.grad is not None and shared.grad.abs().sum() > 0
    assert model.adapters["4"].text_adapter.up.weight.grad is None
    model.zero_grad(set_to_none=True)

    model.encode_text(CLASSES).sum().backward()
    assert shared.grad is not None and shared.grad.abs().sum() > 0
    assert model.adapters["4"].visual_adapter.up.weight.grad is None


# -- gradient rescaling ------------------------------------------------------------------------
def test_scale_grad_is_identity_forward() -> None:
    x = torch.randn(5, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), 0.25))


def reference_branch(block: MSTABlock, h: torch.Tensor) -> torch.Tensor:
    """A(h) written out by hand with plain autograd; the temporal conv as three shifted taps."""
    layer = block.adapter
    side = layer.visual_adapter if block.tower == "visual" else layer.text_adapter
    s = layer.shared_adapter[0]
    u = F.linear(F.relu(F.linear(F.relu(F.linear(h, side.down[0].weight, side.down[0].bias)),
                                 s.weight, s.bias)), side.up.weight, side.up.bias)
    if block.tower == "text":
        return u
    t = block.num_frames
    v = u.view(-1, t, *u.shape[1:])  # (B, T, L, D)
    w, b = layer.temporal.conv.weight[:, 0], layer.temporal.conv.bias  # (D, 3)
    prev = F.pad(v, (0, 0, 0, 0, 1, 0))[:, :t]  # u[t-1], zero at t=0
    nxt = F.pad(v, (0, 0, 0, 0, 0, 1))[:, 1:]  # u[t+1], zero at t=T-1
    return u + (w[:, 0] * prev + w[:, 1] * v + w[:, 2] * nxt + b).reshape(u.shape)


@pytest.mark.parametrize("tower", ["visual", "text"])
def test_adapter_gradients_are_unscaled_and_backbone_gradients_true(tower: str) -> None:
    model = tiny({"temporal_tokens": "all"}).double()
    perturb_temporal(model)
    block = (model.visual_blocks if tower == "visual" else model.text_blocks)[2]
    other = ("text_adapter",) if tower == "visual" else ("visual_adapter", "temporal")
    params = [p for n, p in block.adapter.named_parameters() if not n.startswith(other)]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 10, block.width, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(8, 10, block.width, generator=gen, dtype=torch.float64)
    lam = model.config.scale

    out = block(x)
    grads = torch.autograd.grad((out * g).sum(), params + [x])

    h = block.ln_1(x)
    x1 = x + block.attention(h)
    ref_out = x1 + block.mlp_branch(x1) + lam * reference_branch(block, h)
    assert torch.allclose(out, ref_out, atol=1e-10)
    ref_x = torch.autograd.grad((ref_out * g).sum(), x)[0]  # the true gradient of the scaled branch
    ref_params = torch.autograd.grad((reference_branch(block, block.ln_1(x)) * g).sum(), params)  # un-scaled
    for got, want in zip(grads[:-1], ref_params):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)
    assert torch.allclose(grads[-1], ref_x, rtol=1e-8, atol=1e-10)


# -- temporal conv -----------------------------------------------------------------------------
@pytest.mark.parametrize("tokens", ["all", "cls", "patch"])
def test_temporal_conv_makes_features_depend_on_frame_order(tokens: str) -> None:
    model = tiny({"temporal_tokens": tokens}).eval()
    clip_ = video()
    with torch.no_grad():
        assert torch.allclose(model.encode_video(clip_), model.encode_video(clip_.flip(1)), atol=1e-6)
        perturb_temporal(model)
        assert not torch.allclose(model.encode_video(clip_), model.encode_video(clip_.flip(1)), atol=1e-4)
        assert model.encode_video(video(frames=1)).shape == (2, 64)


def test_zero_init_temporal_conv_starts_as_mma() -> None:
    with_t, without_t = tiny().eval(), tiny({"temporal": False}).eval()
    assert sum(p.numel() for p in with_t.parameters() if p.requires_grad) - sum(
        p.numel() for p in without_t.parameters() if p.requires_grad) == 4 * (3 * 128 + 128)
    with torch.no_grad():
        assert torch.allclose(with_t.encode_video(video()), without_t.encode_video(video()), atol=1e-6)


# -- consistency loss and frozen branch --------------------------------------------------------
def test_consistency_loss_matches_hand_computation() -> None:
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ds = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # cos 1, cos 1/sqrt(2)
    dt = torch.tensor([[0.0, 3.0], [0.0, -1.0]])  # cos 0, cos -1
    expected = ((2 - 1 - 0) + (2 - 2 ** -0.5 + 1)) / 2
    assert consistency_loss(w, ds, dt).item() == pytest.approx(expected, abs=1e-6)


def test_frozen_branch_equals_plain_clip_and_loss_matches() -> None:
    model = tiny({"n_descriptions": 2, "alpha": 0.5}).train()
    plain, spec = create_clip("harness-tiny", seed=0)
    tokenizer = get_tokenizer(spec)
    texts = ["a person surfing", "someone juggling balls"]
    frozen = model.frozen_text_features(texts)
    with torch.no_grad():
        expected = plain.encode_text(tokenizer(texts), normalize=True)
        adapted = model.encode_text(texts)
    assert torch.allclose(frozen, expected, atol=1e-5)
    assert not torch.allclose(adapted, expected, atol=1e-5)  # adapters do act when enabled
    assert model.ctx.adapters_enabled

    model.set_descriptions(CLASSES, SPATIAL, TEMPORAL)
    loss = model.extra_losses(CLASSES)["loss_cc"]
    with torch.no_grad():
        w = model.class_text_features(CLASSES)

        def anchor(sentences: list[list[str]]) -> torch.Tensor:
            return torch.stack([plain.encode_text(tokenizer(s[:2]), normalize=True).mean(0) for s in sentences])

        ds, dt = anchor(SPATIAL), anchor(TEMPORAL)
    hand = (2 - F.cosine_similarity(w, ds) - F.cosine_similarity(w, dt)).mean()
    assert loss.item() == pytest.approx(0.5 * hand.item(), abs=1e-5)
    loss.backward()
    assert model.adapters["1"].text_adapter.down[0].weight.grad.abs().sum() > 0


def count_calls(model: MSTA, name: str) -> list[int]:
    """Wrap `model.<name>` so calls are counted; returns the one-element counter."""
    calls = [0]
    original = getattr(model, name)

    def wrapped(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(model, name, wrapped)
    return calls


def train_step(model: MSTA, classes: list[str] = CLASSES) -> dict[str, torch.Tensor]:
    logits = model(video(), classes)
    return model.losses(logits, torch.tensor([0, 2]), classes)


def test_text_encoded_once_per_step_and_anchors_cached() -> None:
    model = tiny().train()
    model.set_descriptions(CLASSES, SPATIAL, TEMPORAL)
    frozen = count_calls(model, "frozen_text_features")
    encodes = count_calls(model, "encode_text")
    for _ in range(2):
        losses = train_step(model)
        assert set(losses) == {"loss_cls", "loss_cc"}
        sum(losses.values()).backward()
    assert frozen[0] == 1  # anchors: once per class set
    assert encodes[0] == 2 + 1  # one trainable encode per step + the one frozen pass


def test_consistency_off_never_runs_frozen_branch() -> None:
    model = tiny({"use_consistency": False}).train()
    frozen = count_calls(model, "frozen_text_features")
    bypassed = [0]

    def spy(block, args):
        bypassed[0] += not block.ctx.adapters_enabled

    for block in model.text_blocks:
        block.register_forward_pre_hook(spy)
    losses = train_step(model)  # no descriptions given: fine when the loss is off
    assert set(losses) == {"loss_cls"}
    assert frozen[0] == 0 and bypassed[0] == 0


def test_missing_descriptions_error_names_class_and_switch() -> None:
    model = tiny().train()
    model.set_descriptions(CLASSES[:2], SPATIAL[:2], TEMPORAL[:2])
    with pytest.raises(HarnessError, match=r"'surfing water'.*use_consistency=false"):
        train_step(model)
    with pytest.raises(HarnessError, match="3 classes but 2 spatial"):
        model.set_descriptions(CLASSES, SPATIAL[:2], TEMPORAL)


# -- training ----------------------------------------------------------------------------------
def test_adamw_steps_change_only_trainable_parameters() -> None:
    model = tiny().train()
    model.set_descriptions(CLASSES, SPATIAL, TEMPORAL)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.001)
    for _ in range(3):
        opt.zero_grad()
        sum(train_step(model).values()).backward()
        opt.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == p.requires_grad, name


def test_grad_checkpointing_gives_same_features() -> None:
    model = tiny().eval()
    perturb_temporal(model)
    with torch.no_grad():
        ref_v, ref_t = model.encode_video(video()), model.encode_text(CLASSES)
    model.set_grad_checkpointing(True)  # the method contract's hook (the engine calls it)
    model.train()
    v, t = model.encode_video(video()), model.encode_text(CLASSES)
    assert torch.allclose(v, ref_v, atol=1e-5) and torch.allclose(t, ref_t, atol=1e-5)
