"""Vita-CLIP: exact trainable counts (and the official trainable set), forward shapes, use of frame
order, exactness of the learned-context text path, CSC refusals, and that training touches only
the declared parameters."""
from __future__ import annotations

import copy

import pytest
import torch
from method_helpers import (
    OFFICIAL_STATE_DICTS,
    assert_forward_and_gradients,
    build_b16,
    builder,
    changed_after_adamw_steps,
    encode_both_orders,
    official_rows,
    plain_clip_text,
    protocol_classnames,
    video,
)

from harness.errors import HarnessError
from methods.registry import get_method, make_config

OFFICIAL_TSV = OFFICIAL_STATE_DICTS / "vitaclip_k400_csc.tsv"

# Fixtures `tiny` and `b16_meta` (ViT-B/16 on the meta device: counts and shapes): conftest.py.
build = builder("vitaclip")


@pytest.fixture(scope="module")
def b16_csc(b16_meta):
    """The K400 release's configuration (CSC over 400 classes), shared by two tests: names,
    shapes and counts only, built on the meta device."""
    return build_b16(b16_meta, {"csc": True}, method="vitaclip")


def test_trainable_count_as_released(b16_csc):
    assert b16_csc.parameter_counts()["trainable"] == 30_158_849


@pytest.mark.parametrize("options, expected", [
    ({}, 28_524_545),
    ({"train_cls_proj": True}, 35_611_649),
    ({"csc": True, "train_cls_proj": True}, 37_245_953),
])
def test_trainable_counts_vit_b16(b16_meta, options, expected):
    model = build_b16(b16_meta, options, method="vitaclip")
    assert model.parameter_counts()["trainable"] == expected
    assert sum(p.numel() for _, p in model.declare_trainable()) == expected


METHOD_KEYS = ("global_prompts", "local_prompts", "cls_proj", "summary_ln", "summary_attn_layer")


def official_to_ours(key: str) -> list[str]:
    """Names of this project's parameters holding an official Vita-CLIP state-dict entry (the
    official (L, n, D) `visual.global_prompts` is one (n, D) parameter per block here); [] for
    the frozen CLIP weights, which keep open_clip's names."""
    if key == "visual.global_prompts":
        return [f"clip.visual.transformer.resblocks.{i}.global_prompts" for i in range(12)]
    if key.startswith("visual.blocks.") and any(part in key for part in METHOD_KEYS):
        _, _, index, rest = key.split(".", 3)
        return [f"clip.visual.transformer.resblocks.{index}.{rest}"]
    return {"logit_scale": ["clip.logit_scale"], "visual.time_embed": ["time_embed"],
            "prompt_learner.ctx": ["prompt_learner.ctx"]}.get(key, [])


@pytest.mark.upstream
@pytest.mark.skipif(not OFFICIAL_TSV.is_file(), reason="needs shared/upstream/official-state-dicts")
def test_trainable_set_matches_official_state_dict(b16_csc):
    """Every method parameter of the official K400 (CSC) model exists here with its shape and its
    trainable flag (cls_proj frozen), and nothing else is trained."""
    params = dict(b16_csc.named_parameters())
    mapped, official_count = set(), 0
    for key, shape, trainable in official_rows(OFFICIAL_TSV):
        official_count += torch.Size(shape).numel() if trainable else 0
        ours = official_to_ours(key)
        assert ours or not trainable, key
        if not ours:
            continue
        got = torch.stack([params[n].detach() for n in ours]) if len(ours) > 1 else params[ours[0]]
        assert list(got.shape) == shape, key
        assert all(params[n].requires_grad == trainable for n in ours), key
        mapped.update(ours)
    assert official_count == 30_158_849
    assert {n for n, p in params.items() if p.requires_grad} == {n for n in mapped if params[n].requires_grad}
    assert sum(1 for n in mapped if "cls_proj" in n) == 24


def test_forward_shapes_and_loss_on_protocol_classes(tiny):
    classnames = protocol_classnames()
    model = build(tiny, {}, classnames)
    assert model.text_is_frozen is False
    assert_forward_and_gradients(model, classnames)
    with torch.no_grad():  # other frame counts: time_embed interpolated, local prompts tiled / interpolated
        for frames in (16, 5):
            assert model(video(batch=1, frames=frames), classnames).shape == (1, len(classnames))


def perturb(model) -> None:
    """Move every trainable parameter far from its init so temporal effects are well above noise."""
    with torch.no_grad():
        for _, param in model.declare_trainable():
            param.add_(torch.randn_like(param) * 0.5)


@pytest.mark.parametrize("zero_time_embed", [False, True])
def test_frame_order_changes_the_video_feature(tiny, zero_time_embed):
    torch.manual_seed(0)
    model = build(tiny).eval()
    perturb(model)
    if zero_time_embed:  # local prompts alone still tie tokens to frame positions
        model.time_embed.data.zero_()
    forward, backward = encode_both_orders(model, video(batch=1))
    assert (forward - backward).abs().max() > 1e-4  # float noise is ~1e-7 (see the control below)


def test_order_invariant_without_temporal_parts(tiny):
    """Control for the test above: with no time embedding and no local prompts, the summary token
    (attention over the set of frames) and the mean over frames are order-free."""
    model = build(tiny, {"local_prompts": False}).eval()
    perturb(model)
    model.time_embed.data.zero_()
    torch.testing.assert_close(*encode_both_orders(model, video(batch=1)), atol=1e-5, rtol=1e-4)


def test_generic_context_equals_plain_clip_when_set_to_word_embeddings(tiny):
    clip, tokenizer = tiny
    pristine = copy.deepcopy(clip)
    classnames = protocol_classnames()[:6]
    model = build(tiny, {}, classnames).eval()
    x_embedding = clip.token_embedding.weight[tokenizer(["X"])[0, 1]]
    model.prompt_learner.ctx.data.copy_(x_embedding.expand(8, -1))
    with torch.no_grad():
        ours = model.class_text_features(classnames)
    reference = plain_clip_text(pristine, tokenizer, [f"X X X X X X X X {name}." for name in classnames])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_class_specific_context_equals_plain_clip_per_class(tiny):
    clip, tokenizer = tiny
    pristine = copy.deepcopy(clip)
    classnames = protocol_classnames()[:5]
    words = ["a", "video", "of", "the", "person", "doing", "an", "action", "here"]
    phrases = [" ".join(words[c:c + 8]) if c < 2 else " ".join(words[:8][::-1]) for c in range(len(classnames))]
    model = build(tiny, {"csc": True}, classnames).eval()
    for c, phrase in enumerate(phrases):
        tokens = tokenizer([phrase])[0]
        assert int(tokens.argmax()) == 9, phrase  # 8 one-token words
        model.prompt_learner.ctx.data[c] = clip.token_embedding.weight[tokens[1:9]]
    order = [3, 0, 4]  # any subset / order of the training classes can be scored
    with torch.no_grad():
        ours = model.class_text_features([classnames[i] for i in order])
    reference = plain_clip_text(pristine, tokenizer, [f"{phrases[i]} {classnames[i]}." for i in order])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_csc_refuses_unseen_classes_and_open_set_protocols(tiny):
    classnames = protocol_classnames()
    model = build(tiny, {"csc": True}, classnames)
    with pytest.raises(HarnessError, match="unseen"):
        model(video(batch=1), classnames[:3] + ["juggling chainsaws"])
    for protocol in ("base2novel", "zero_shot"):
        with pytest.raises(HarnessError, match="csc"):
            model.check_protocol(protocol, closed_set=False)
    model.check_protocol("few_shot", closed_set=True)
    build(tiny, {}, classnames).check_protocol("base2novel", closed_set=False)  # generic: fine


def test_csc_needs_training_classes_and_options_are_validated(tiny):
    with pytest.raises(HarnessError, match="class names"):
        build(tiny, {"csc": True}, None)
    with pytest.raises(HarnessError):
        make_config("vitaclip", {"text_ctx": 0})
    config = make_config("vitaclip")
    assert (config.lr, config.weight_decay, config.csc, config.train_cls_proj) == (4e-4, 0.05, False, False)
    assert get_method("vitaclip").model_cls.text_is_frozen is False


@pytest.mark.parametrize("options", [{}, {"csc": True}])
def test_only_declared_parameters_change_after_adamw_steps(tiny, options):
    classnames = protocol_classnames()[:8]
    torch.manual_seed(0)
    model = build(tiny, options, classnames).train()
    declared = set(model.targeted)
    assert declared == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("cls_proj" in n for n in declared)
    assert changed_after_adamw_steps(model, classnames, weight_decay=0.05) == declared
