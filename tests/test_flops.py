"""FLOPs: attention is counted on CPU too, the pinned ViT-B/16 numbers of docs/METHODS.md, and
the counting modes (fake tensors vs real arithmetic, train vs eval) agree."""
import copy

import pytest
import torch
import torch.nn.functional as F
from method_helpers import make_backbone

from harness.backbone import create_clip, get_tokenizer
from harness.measure.flops import (
    count_callable_flops,
    count_flops,
    count_step_flops,
    register_cpu_sdpa_flops,
)
from methods.registry import build_method, list_methods

# One view = 8 frames at 224 px through the video encoder, multiply-add = 2 (docs/METHODS.md).
PINNED_GFLOPS = {
    ("zeroshot", ()): 281.02,
    ("st_adapter", (("variant", "12x384"),)): 303.25,
    ("aim", ()): 404.18,
}


def _model(name, backbone="ViT-B-16", frames=8, options=None, classnames=None):
    clip, spec = create_clip(backbone, None)
    return build_method(name, clip, get_tokenizer(spec), frames, options, classnames)


_CACHE: dict = {}


def _vit_b16(name, options=()):
    """ViT-B/16 models for fake-tensor counts: shapes only, built on the meta device (no weights,
    no initialisation), one per (method, options) for the whole module."""
    key = (name, tuple(options))
    if key not in _CACHE:
        if "backbone" not in _CACHE:
            _CACHE["backbone"] = make_backbone("ViT-B-16", meta=True)
        clip, tokenizer = _CACHE["backbone"]
        with torch.device("meta"):
            _CACHE[key] = build_method(name, copy.deepcopy(clip), tokenizer, 8, dict(options))
    return _CACHE[key]


def _need(name):
    assert name in list_methods(), f"method {name!r} is not registered (methods/{name}.py missing)"


def test_cpu_fused_attention_is_counted():
    """The op CPU SDPA dispatches to is counted with torch's own formula: 2 matmuls x 2 FLOPs."""
    register_cpu_sdpa_flops()
    assert register_cpu_sdpa_flops() == []  # idempotent
    b, h, length, d = 2, 3, 17, 8
    q, k, v = (torch.randn(b, h, length, d) for _ in range(3))
    flops = count_callable_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert flops == 2 * 2 * b * h * length * length * d


def test_cpu_fused_attention_backward_is_counted():
    q, k, v = (torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(3))
    total = count_callable_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    one_matmul = 2 * 1 * 2 * 5 * 5 * 4
    assert total == 2 * one_matmul + 5 * one_matmul  # forward 2; backward: recompute scores + 4


@pytest.mark.parametrize(("name", "options"), list(PINNED_GFLOPS))
def test_pinned_vit_b16_gflops(name, options):
    _need(name)
    model = _vit_b16(name, options)
    out = count_flops(model, frames=8, image_size=224)
    assert out["counted_on"] == "fake"
    assert out["gflops"] == pytest.approx(PINNED_GFLOPS[(name, options)], abs=0.01)
    assert out["gmacs"] == pytest.approx(out["gflops"] / 2, abs=1e-4)
    assert out["text_gflops_per_class"] == pytest.approx(5.96, abs=0.01)  # 77 tokens x 12 layers x 512


def test_real_cpu_count_matches_fake_with_vit_b16_shapes():
    """Real arithmetic on CPU, i.e. through the fused CPU attention op, counts what fake tensors
    count, at ViT-B/16 widths (2 blocks). Before the formula was registered, a real CPU count of
    the full model gave 269.57 G instead of 281.02 G: attention was missing."""
    model = _model("zeroshot", "harness-b16-2l")
    fake = count_flops(model, 8, 224)
    real = count_flops(model, 8, 224, where="model")
    assert real["counted_on"] == "model" and real["flops"] == fake["flops"]
    attention = 2 * 2 * 8 * 12 * 197 * 197 * 64 * 2  # 2 matmuls, 8 frames x 12 heads, 2 blocks
    assert fake["flops"] > attention


@pytest.mark.parametrize(("name", "backbone"), [("zeroshot", "ViT-B-16"), ("aim", "ViT-B-16"),
                                              ("st_adapter", "ViT-B-16"), ("vitaclip", "harness-b16-2l"),
                                              ("msta", "harness-b16-2l"), ("vificlip_prompt", "harness-b16-2l")])
def test_train_and_eval_count_the_same(name, backbone):
    """AIM's drop path and the prompt methods' train-time paths must not change the count."""
    _need(name)
    if backbone == "ViT-B-16":
        model = _vit_b16(name, next((o for n, o in PINNED_GFLOPS if n == name), ()))
    else:
        options = {"depth": 2} if name == "vificlip_prompt" else None
        model = _model(name, backbone, options=options)
    model.eval()
    evaluated = count_flops(model, 8, 224)
    model.train()
    trained = count_flops(model, 8, 224)
    assert trained["flops"] == evaluated["flops"]
    assert model.training  # the mode is left as it was


def test_st_adapter_counts_the_same_for_every_conv_implementation():
    _need("st_adapter")
    counts = {impl: count_flops(_model("st_adapter", "harness-b16-2l", options={"conv_impl": impl}), 8, 224)["flops"]
              for impl in ("shift", "conv1d", "conv3d")}
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("name", ["vificlip", "st_adapter"])
def test_fake_and_real_step_counts_agree(name):
    """Fake tensors (no arithmetic) and real CPU arithmetic count the same training step, and the
    count leaves no gradient behind on the real model."""
    _need(name)
    classnames = [f"class {i}" for i in range(3)]
    model = _model(name, "harness-tiny", frames=2, classnames=classnames)
    fake = count_step_flops(model, 2, 2, 64, classnames)
    real = count_step_flops(model, 2, 2, 64, classnames, where="model")
    assert fake["counted_on"] == "fake" and real["counted_on"] == "model"
    assert fake["flops"] == real["flops"] > 0
    assert fake["backward_flops"] > 0
    assert all(p.grad is None for p in model.parameters())


def test_step_flops_of_a_frozen_model_are_its_forward():
    classnames = ["a", "b"]
    model = _model("zeroshot", "harness-tiny", frames=2, classnames=classnames)
    step = count_step_flops(model, 4, 2, 64, classnames)
    assert step["backward_flops"] == 0
    logits = 2 * 4 * 2 * model.clip.text_projection.shape[1]  # (B, E) @ (E, C)
    # Text features are computed once per class set, not in the step.
    assert step["flops"] == 4 * count_flops(model, 2, 64)["flops"] + logits


def test_vificlip_step_pays_its_text_encoder_every_step():
    classnames = [f"class {i}" for i in range(5)]
    model = _model("vificlip", "harness-tiny", frames=2, classnames=classnames)
    per_view = count_flops(model, 2, 64)
    step = count_step_flops(model, 2, 2, 64, classnames)
    text_forward = 5 * per_view["text_gflops_per_class"] * 1e9
    assert step["forward_flops"] == pytest.approx(2 * per_view["flops"] + text_forward, rel=1e-3)


def test_params_rows_and_table():
    """`harness params` rows: resolved options, counts that depend on the class count (a linear
    head), and FLOPs per view."""
    from harness.measure.params import format_params_table, params_rows

    _need("st_adapter")
    keys = {"method", "options", "trainable", "total", "trainable_pct", "frames", "num_classes", "gflops",
            "gmacs", "text_gflops_per_class"}
    linear = {"st_adapter": {"head": "linear"}}
    rows = {n: params_rows(["zeroshot", "st_adapter"], "harness-tiny", None, 2, n, linear) for n in (3, 5)}
    assert keys <= set(rows[3][0])
    zeroshot, st3 = rows[3]
    st5 = rows[5][1]
    assert zeroshot["trainable"] == 0 and zeroshot["gmacs"] == pytest.approx(zeroshot["gflops"] / 2, abs=1e-4)
    assert st3["options"]["head"] == "linear"
    assert st5["trainable"] - st3["trainable"] == 2 * (128 + 1)  # two more classes of Linear(128, C)
    table = format_params_table(rows[3])
    assert "head=linear" in table and "zeroshot" in table
    assert format_params_table(params_rows(["zeroshot"], "harness-tiny", None, 2, 3, with_flops=False),
                               "markdown").count("| - |") >= 1
