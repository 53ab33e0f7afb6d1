"""FROSTER: exact counts and trainable set at ViT-B/16, the temporal view expansion against a
transcription of the official attention (zero-filled keys at the clip ends), the eval forward and
the training losses against an independent re-implementation of the official TemporalClipVideo and
train_net.py losses, hand-computed distillation targets, rephrased-name prompts, the official
weight-decay rule, option checks, and the epoch-averaging declaration."""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch
import torch.nn.functional as F
from method_helpers import builder, video

from harness.errors import HarnessError
from methods.base import EpochRange
from methods.froster import FROSTER, TEMPLATES, neighbour_keys
from methods.registry import get_method, make_config

CLASSES = ["archery", "juggling balls", "surfing water"]
REPHRASED = ["Archery: A person shoots arrows at a round target with a bow",
             "Juggling balls: Someone keeps three balls in the air by throwing and catching them",
             "Surfing water: A surfer rides a breaking wave standing on a board"]
FRAMES = 4
build = builder("froster", frames=FRAMES, classnames=CLASSES)

#: The official prompt list, transcribed from TemporalClipVideo.text_prompt (temporalclip_video_model.py).
OFFICIAL_TEMPLATES = [
    "a photo of {}.", "a photo of a person {}.", "a photo of a person using {}.", "a photo of a person doing {}.",
    "a photo of a person during {}.", "a photo of a person performing {}.", "a photo of a person practicing {}.",
    "a video of {}.", "a video of a person {}.", "a video of a person using {}.", "a video of a person doing {}.",
    "a video of a person during {}.", "a video of a person performing {}.", "a video of a person practicing {}.",
    "a example of {}.", "a example of a person {}.", "a example of a person using {}.",
    "a example of a person doing {}.", "a example of a person during {}.", "a example of a person performing {}.",
    "a example of a person practicing {}.", "a demonstration of {}.", "a demonstration of a person {}.",
    "a demonstration of a person using {}.", "a demonstration of a person doing {}.",
    "a demonstration of a person during {}.", "a demonstration of a person performing {}.",
    "a demonstration of a person practicing {}.", "{}",
]


def perturb(model, seed: int = 1, std: float = 0.05) -> None:
    """Every trainable tensor gets noise (the zero-initialised projector layers included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(std * torch.randn(p.shape, generator=gen))


# -- an independent re-implementation of the official forward (LND layout, bmm attention) -------
def official_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor, frames: int, shifts: int) -> torch.Tensor:
    """functional._scaled_dot_product_attention with temporal_shift='expand_temporal_view[_stepN]':
    x (L, N, D) with N = clips*frames; keys/values of frame t gain those of t+1..t+s (zeros past the
    end), then t-1..t-s (zeros before the start), then its own; q scaled by 1/sqrt(E)."""
    length, n, width = x.shape
    heads = attn.num_heads
    e = width // heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.contiguous().view(length, n * heads, e).transpose(0, 1) for t in (q, k, v))
    q = q / math.sqrt(e)

    def expand(t):
        t = t.reshape(n // frames, frames, heads, length, e)
        out = []
        for shift in [*range(1, shifts + 1), *range(-1, -shifts - 1, -1)]:
            z = torch.zeros_like(t)
            if shift > 0:
                z[:, :-shift] = t[:, shift:]
            else:
                z[:, -shift:] = t[:, :shift]
            out.append(z)
        return torch.cat([*out, t], dim=3).reshape(n * heads, (2 * shifts + 1) * length, e)

    weights = torch.softmax(torch.bmm(q, expand(k).transpose(1, 2)), dim=-1)
    out = torch.bmm(weights, expand(v)).transpose(0, 1).reshape(length, n, width)
    return attn.out_proj(out)


def official_frames(clip, video_: torch.Tensor, shifts: int) -> torch.Tensor:
    """TemporalVisionTransformer.forward + encode_image: (B, T, 3, H, W) -> (B*T, E) per frame, normalised."""
    visual = clip.visual
    frames = video_.shape[1]
    x = visual.conv1(video_.flatten(0, 1)).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
    x = visual.ln_pre(x + visual.positional_embedding).permute(1, 0, 2)
    for block in visual.transformer.resblocks:
        x = x + official_attention(block.attn, block.ln_1(x), frames, shifts)  # shifts=0: plain CLIP attention
        x = x + block.mlp(block.ln_2(x))
    feats = visual.ln_post(x.permute(1, 0, 2)[:, 0]) @ visual.proj
    return feats / feats.norm(dim=-1, keepdim=True)


def official_classifier(clip, tokenizer, texts: list[str], templates: list[int]) -> torch.Tensor:
    """text_prompt + achieve_csf_matrix: per template "<t(head)> <text>" (the last: the text alone),
    normalised, averaged over templates, normalised."""
    feats = []
    for i in templates:
        last = i == len(OFFICIAL_TEMPLATES) - 1
        prompts = [t if last else OFFICIAL_TEMPLATES[i].format(t.split(":")[0]) + " " + t for t in texts]
        f = clip.encode_text(tokenizer(prompts))
        feats.append(f / f.norm(dim=-1, keepdim=True))
    mean = torch.stack(feats).mean(0)
    return mean / mean.norm(dim=-1, keepdim=True)


def plain_clip(model, pristine) -> torch.nn.Module:
    """An untouched open_clip CLIP carrying `model.clip`'s weights (same state-dict names)."""
    clip = copy.deepcopy(pristine)
    clip.load_state_dict(model.clip.state_dict())
    return clip


@pytest.fixture(scope="module")
def setup(tiny):
    """A FROSTER on harness-tiny with every trainable tensor perturbed, its rephrased names, and
    the pre-trained backbone it was built from (the teacher's weights)."""
    pristine = copy.deepcopy(tiny[0])
    model = build(tiny)
    perturb(model)
    model.set_rephrased_classnames(CLASSES, REPHRASED)
    return model, pristine, tiny[1]


# -- counts, trainable set, optimiser groups ------------------------------------------------------
def test_counts_at_vit_b16(b16_meta):
    """150,669,313 trainable: every CLIP tensor (token embedding and logit scale too) + two bias-free
    512x512 two-layer projectors (METHODS.md "Being added", the official model at 230ae88); the
    teacher is 149,620,737 frozen parameters on top."""
    with torch.device("meta"):
        model = builder("froster")(b16_meta, {}, CLASSES)
        plain = builder("froster")(b16_meta, {"distillation": False}, CLASSES)
    counts = model.parameter_counts()
    assert counts["trainable"] == 150_669_313 == 149_620_737 + 4 * 512 * 512
    assert counts["teacher"] == 149_620_737 and counts["total"] == 150_669_313 + 149_620_737
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if not n.startswith("teacher.")}
    assert {"clip.token_embedding.weight", "clip.logit_scale", "projector_v.0.weight", "projector_t.2.weight"} <= trainable
    assert plain.parameter_counts() == {"trainable": 150_669_313, "total": 150_669_313, "trainable_pct": 100.0,
                                        "teacher": 0}
    groups = {g.name: sum(p.numel() for p in g.params) for g in model.param_groups()}
    assert groups == {"decay": 150_464_769, "no_decay": 204_544}


def test_weight_decay_rule_is_zero_wd_1d_param(setup):
    """optimizer.py with ZERO_WD_1D_PARAM: no decay for 1-D tensors and names ending in '.bias';
    the 0-d logit scale and 2-D embeddings are decayed."""
    model = setup[0]
    exempt = {g.name: set(g.names) for g in model.param_groups()}["no_decay"]
    assert "clip.visual.class_embedding" in exempt and "clip.ln_final.weight" in exempt
    assert "clip.visual.transformer.resblocks.0.attn.in_proj_bias" in exempt
    assert not exempt & {"clip.logit_scale", "clip.positional_embedding", "clip.token_embedding.weight",
                         "projector_v.0.weight", "clip.visual.proj"}
    assert all(p.dim() == 1 for n, p in model.named_parameters() if n in exempt)


def test_contract_declarations():
    cls = get_method("froster").model_cls
    assert cls.text_is_frozen is False and cls.models_frame_order is False
    assert cls.token_layouts == frozenset({"per_frame", "joint"})  # joint form: docs/methods/froster.md
    assert cls.run_needs(make_config("froster")) == {"rephrased_classnames"}
    assert cls.run_needs(make_config("froster", {"rephrased": False})) == frozenset()
    assert cls.averaged_epochs(make_config("froster")) == EpochRange(2, None)
    assert cls.averaged_epochs(make_config("froster", {"average_epochs": "0-22"})) == EpochRange(0, 22)
    assert cls.averaged_epochs(make_config("froster", {"average_epochs": "none"})) is None


@pytest.mark.parametrize("options, match", [({"temporal_view": -1}, "temporal_view"),
                                            ({"distill_ratio": -1.0}, "distill_ratio"),
                                            ({"average_epochs": "5-2"}, "average_epochs"),
                                            ({"average_epochs": "two"}, "average_epochs")])
def test_bad_options_raise(options, match):
    with pytest.raises(HarnessError, match=match):
        make_config("froster", options)


def test_epoch_range_parsing_and_selection():
    assert EpochRange.parse("2-", "x").epochs(12) == list(range(2, 13))
    assert EpochRange.parse("2-22", "x").epochs(12) == list(range(2, 13))  # the test scripts' swa_2_22 on 12 epochs
    assert EpochRange.parse("0-3", "x").epochs(10) == [0, 1, 2, 3]
    assert EpochRange.parse("7", "x").epochs(10) == [7]
    assert EpochRange.parse("2-", "x").epochs(1) == []
    assert EpochRange.parse(" None ", "x") is None and str(EpochRange(2, None)) == "2-"


# -- the temporal view expansion ----------------------------------------------------------------
def test_neighbour_keys_hand_computed():
    """Frames 0, 1, 2 of one clip, one token each with value t+1: frame t's keys read
    [t+1 (or 0), t-1 (or 0), t] for s=1; s=2 adds t+2 and t-2 after t+1 and t-1."""
    keys = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    assert neighbour_keys(keys, 3, 1).flatten(1).tolist() == [[2, 0, 1], [3, 1, 2], [0, 2, 3]]
    assert neighbour_keys(keys, 3, 2).flatten(1).tolist() == [[2, 3, 0, 0, 1], [3, 0, 1, 0, 2], [0, 0, 2, 1, 3]]
    assert neighbour_keys(keys, 1 * 3, 3).shape == (3, 1, 7, 1)


@pytest.mark.parametrize("shifts", [1, 2, 3])
def test_block_attention_matches_official_transcription(setup, shifts):
    model, pristine, _ = setup
    block = model.visual_blocks[1]
    x = torch.randn(2 * FRAMES, 17, model.visual_width, generator=torch.Generator().manual_seed(shifts))
    from methods.froster import temporal_view_attention

    ours = temporal_view_attention(block.attn, x, FRAMES, shifts)
    ref = official_attention(block.attn, x.transpose(0, 1), FRAMES, shifts).transpose(0, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_zero_keys_take_softmax_mass_unlike_a_mask(setup):
    """At the clip's first frame the missing previous frame is a block of zero keys (score 0), which
    changes the output compared with simply leaving it out (masking)."""
    model = setup[0]
    attn = model.visual_blocks[0].attn
    x = torch.randn(FRAMES, 5, model.visual_width, generator=torch.Generator().manual_seed(9))
    from methods.froster import temporal_view_attention

    out = temporal_view_attention(attn, x, FRAMES, 1)[0]
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(FRAMES, 5, 3, attn.num_heads, -1).permute(
        2, 0, 3, 1, 4)
    masked = F.scaled_dot_product_attention(q[:1], torch.cat([k[1:2], k[:1]], 2), torch.cat([v[1:2], v[:1]], 2))
    masked = attn.out_proj(masked.transpose(1, 2).reshape(1, 5, -1))[0]
    assert (out - masked).abs().max() > 1e-4


def test_reversal_invariant_but_order_aware(setup):
    """Symmetric neighbourhoods: reversing a clip gives the same video feature (hence
    models_frame_order=False), but another frame order (a rotation) changes it: the frames do
    interact. Plain per-frame CLIP (temporal_view=0) ignores any order."""
    model = setup[0].eval()
    clip_video = video(frames=FRAMES, size=64, seed=4)
    with torch.no_grad():
        base = model.encode_video(clip_video)
        torch.testing.assert_close(model.encode_video(clip_video.flip(1)), base, rtol=1e-5, atol=1e-5)
        assert (model.encode_video(clip_video.roll(1, dims=1)) - base).abs().max() > 1e-4


# -- forward and losses against the official re-implementation --------------------------------
def test_eval_logits_match_official(setup):
    """Per-frame normalised features scored against the 29-template ensemble over the rephrased
    names, per-frame logits averaged (TemporalClipVideo.forward, eval branch)."""
    model, pristine, tokenizer = setup
    model.eval()
    clip_video = video(frames=FRAMES, size=64, seed=5)
    with torch.no_grad():
        ours = model(clip_video, CLASSES)
        student = plain_clip(model, pristine)
        frames = official_frames(student, clip_video, 1)
        classifier = official_classifier(student, tokenizer, REPHRASED, list(range(29)))
        ref = (student.logit_scale.exp() * frames @ classifier.T).view(2, FRAMES, -1).mean(1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_training_losses_match_official(setup):
    """train_net.py: soft cross-entropy of the training logits (one random template + the bare
    text) + 2.0 * [(1 - cos(f + 0.1 P_v f, f_teacher)) + (1 - cos(w + 0.1 P_t w, w_teacher))], per
    frame for video; the teacher is the pre-trained CLIP with the same templates. Gradients too."""
    model, pristine, tokenizer = setup
    model.train()
    clip_video, labels = video(frames=FRAMES, size=64, seed=6), torch.tensor([2, 0])
    random.seed(11)
    ours = model.training_losses(clip_video, labels, CLASSES)
    model.zero_grad()
    sum(ours.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    random.seed(11)
    templates = [random.randint(0, len(OFFICIAL_TEMPLATES) - 2), len(OFFICIAL_TEMPLATES) - 1]
    student = plain_clip(model, pristine)
    frames = official_frames(student, clip_video, 1)
    classifier = official_classifier(student, tokenizer, REPHRASED, templates)
    logits = (student.logit_scale.exp() * frames @ classifier.T).view(2, FRAMES, -1).mean(1)
    with torch.no_grad():
        teacher_frames = official_frames(pristine, clip_video, 0)
        teacher_text = official_classifier(pristine, tokenizer, REPHRASED, templates)
    img = frames + 0.1 * model.projector_v(frames)
    txt = classifier + 0.1 * model.projector_t(classifier)
    ref = {"loss_cls": -(F.one_hot(labels, 3) * F.log_softmax(logits, -1)).sum(-1).mean(),
           "loss_distill_video": 2.0 * (1 - F.cosine_similarity(img, teacher_frames, dim=-1).mean()),
           "loss_distill_text": 2.0 * (1 - F.cosine_similarity(txt, teacher_text, dim=-1).mean())}
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-5, atol=1e-6, msg=key)
    model.zero_grad()
    sum(ref.values()).backward()
    reference = {f"clip.{n}": p.grad for n, p in student.named_parameters()}
    reference.update({n: p.grad for n, p in model.named_parameters() if n.startswith("projector")})
    assert set(grads) == {n for n, g in reference.items() if g is not None}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-6)


def test_distillation_targets_hand_computed(tiny):
    """A fresh model with temporal_view=0 equals its teacher and its projectors' last layers are zero:
    both distillation terms are exactly 0. With P_v(f) = R gelu(f) (first layer the identity, last a
    90-degree rotation R of two axes) the video term is 2 * mean(1 - cos(f + 0.1 R gelu(f), f)),
    computed here by hand from the frame features."""
    model = build(tiny, {"temporal_view": 0})
    model.set_rephrased_classnames(CLASSES, REPHRASED)
    model.train()
    clip_video, labels = video(frames=FRAMES, size=64, seed=7), torch.tensor([0, 1])
    out = model.training_losses(clip_video, labels, CLASSES)
    assert out["loss_distill_video"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["loss_distill_text"].item() == pytest.approx(0.0, abs=1e-6)
    width = model.clip.visual.output_dim
    with torch.no_grad():  # P_v(f) = R f for a fixed rotation R of the first two axes by 90 degrees
        model.projector_v[0].weight.copy_(torch.eye(width))
        rotation = torch.eye(width)
        rotation[:2, :2] = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        model.projector_v[2].weight.copy_(rotation)
        f = F.normalize(model.clip.encode_image(clip_video.flatten(0, 1)), dim=-1)
        projected = f + 0.1 * (F.gelu(f) @ rotation.T)
        expected = 2.0 * (1 - (projected * f).sum(-1) / projected.norm(dim=-1)).mean()
    out = model.training_losses(clip_video, labels, CLASSES)
    assert out["loss_distill_video"].item() == pytest.approx(float(expected), rel=1e-4)
    assert float(expected) > 1e-4


def test_without_distillation_no_teacher_and_cross_entropy_only(tiny):
    model = build(tiny, {"distillation": False})
    assert model.frozen_teacher() is None
    out = model.train().training_losses(video(frames=FRAMES, size=64), torch.tensor([0, 1]), CLASSES)
    assert set(out) == {"loss_cls"}


def test_teacher_is_frozen_pre_trained_clip(setup, tiny):
    """The teacher keeps the weights the model was built from, is frozen, and training moves none
    of it."""
    model, pristine, _ = setup
    teacher = model.frozen_teacher()
    assert not any(p.requires_grad for p in teacher.parameters())
    for name, value in pristine.state_dict().items():
        assert torch.equal(teacher.clip.state_dict()[name], value), name


# -- class texts --------------------------------------------------------------------------------
def test_templates_are_the_official_list():
    assert list(TEMPLATES) == OFFICIAL_TEMPLATES


def test_prompts_use_rephrased_names_per_class_list(setup):
    model = setup[0]
    assert model.prompts(CLASSES, [0, 28])[:4] == [
        "a photo of Archery. Archery: A person shoots arrows at a round target with a bow",
        "a photo of Juggling balls. Juggling balls: Someone keeps three balls in the air by throwing and catching them",
        "a photo of Surfing water. Surfing water: A surfer rides a breaking wave standing on a board",
        REPHRASED[0]]
    # a class list without rephrased texts reads as the official code reads a plain name
    assert model.prompts(["bowling"], [21, 28]) == ["a demonstration of bowling. bowling", "bowling"]
    plain = copy.copy(model)
    plain.config = make_config("froster", {"rephrased": False})
    assert plain.prompts(CLASSES, [28]) == CLASSES


def test_rephrased_names_are_kept_per_list_and_validated(tiny):
    model = build(tiny)
    model.set_rephrased_classnames(["archery"], ["Archery: in HMDB"])
    model.set_rephrased_classnames(["archery", "bowling"], ["Archery: in UCF", "Bowling: in UCF"])
    assert model.class_texts(["archery"]) == ("Archery: in HMDB",)
    assert model.class_texts(["archery", "bowling"])[0] == "Archery: in UCF"
    with pytest.raises(HarnessError, match="one non-empty text per class"):
        model.set_rephrased_classnames(CLASSES, REPHRASED[:2])


def test_eval_text_features_cached_and_refreshed_by_new_rephrasings(tiny):
    model = build(tiny).eval()
    before = model.text_features(CLASSES)
    assert model.text_features(CLASSES) is before
    model.set_rephrased_classnames(CLASSES, REPHRASED)
    assert not torch.allclose(model.text_features(CLASSES), before)


def test_single_frame_clips_run(setup):
    """T=1 (the forgetting probes' static frames may be scored as 1-frame clips): both neighbour
    blocks are zeros; the model still runs."""
    with torch.no_grad():
        logits = setup[0].eval()(video(frames=1, size=64), CLASSES)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_teacher_text_is_encoded_once_per_class_list(setup, monkeypatch):
    """The teacher's 29 template features are encoded at the first step of a class list and reused
    (each step's random template costs nothing); the student's two templates are encoded every step."""
    model = setup[0].train()
    model._teacher_text.clear()
    calls = []
    real = FROSTER.template_features
    monkeypatch.setattr(FROSTER, "template_features",
                        lambda self, m, names, templates: calls.append((m is self.teacher, len(templates)))
                        or real(self, m, names, templates))
    for seed in range(3):
        random.seed(seed)
        model.training_losses(video(frames=FRAMES, size=64), torch.tensor([0, 1]), CLASSES)
    assert calls == [(False, 2), (True, 29), (False, 2), (False, 2)]
