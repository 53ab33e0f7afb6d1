"""ViFi-CLIP prompting variant: exact trainable counts and the official trainable set, forward
shapes, deep prompt replacement checked against a hand-written loop over the untouched open_clip
blocks, the context-init rule, and that training touches only the prompts."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from method_helpers import (
    OFFICIAL_STATE_DICTS,
    assert_forward_and_gradients,
    builder,
    changed_after_adamw_steps,
    official_rows,
    plain_clip_text,
    protocol_classnames,
    video,
)

from harness.errors import HarnessError
from methods.prompting import DeepPromptBlock
from methods.registry import get_method, make_config

OFFICIAL_TSV = OFFICIAL_STATE_DICTS / "vificlip_prompt_b2n.tsv"

# Fixtures `tiny` and `b16_meta` (ViT-B/16 on the meta device: counts and shapes): conftest.py.
build = builder("vificlip_prompt", classnames=None)


def build_meta(backbone, options=None):
    """Counts and shapes only: the prompts too on the meta device (the word-init rule counts
    token ids on the CPU)."""
    with torch.device("meta"):
        return build(backbone, options)


@pytest.fixture(scope="module")
def b16_b2n(b16_meta):
    """The base-to-novel configuration (the defaults: 16 tokens, depth 9) at ViT-B/16."""
    return build_meta(b16_meta)


def test_trainable_count_base_to_novel(b16_b2n):
    assert b16_b2n.parameter_counts()["trainable"] == 184_320


def test_trainable_count_few_shot(b16_meta):
    assert build_meta(b16_meta, {"n_tokens": 10, "depth": 12}).parameter_counts()["trainable"] == 153_600


def official_to_ours(key: str) -> str | None:
    """This project's name for an official ViFi-CLIP prompting state-dict entry (prompts only)."""
    fixed = {"image_encoder.VPT": "visual_prompts", "prompt_learner.ctx": "prompt_learner.ctx",
             "logit_scale": "clip.logit_scale"}
    if key in fixed:
        return fixed[key]
    for theirs, ours in (("image_encoder.transformer.", "clip.visual.transformer."),
                         ("text_encoder.transformer.", "clip.transformer.")):
        if key.startswith(theirs) and key.endswith(".VPT_shallow"):
            return ours + key[len(theirs):-len("VPT_shallow")] + "prompts"
    return None


@pytest.mark.upstream
@pytest.mark.skipif(not OFFICIAL_TSV.is_file(), reason="needs shared/upstream/official-state-dicts")
def test_trainable_set_matches_official_state_dict(b16_b2n):
    params = dict(b16_b2n.named_parameters())
    official, count = set(), 0
    for key, dims, trainable in official_rows(OFFICIAL_TSV):
        ours = official_to_ours(key)
        if trainable:
            assert ours is not None, key
            official.add(ours)
            count += torch.Size(dims).numel()
        if ours is not None:
            assert list(params[ours].shape) == dims, key
            assert params[ours].requires_grad == trainable, key
    assert count == 184_320
    assert official == {n for n, p in params.items() if p.requires_grad}


def test_forward_shapes_and_depth_check_on_tiny(tiny):
    classnames = protocol_classnames()
    with pytest.raises(HarnessError, match="depth"):
        build(tiny)  # depth 9 > the tiny backbone's 4 layers
    model = build(tiny, {"n_tokens": 8, "depth": 4})
    assert model.text_is_frozen is False
    assert_forward_and_gradients(model, classnames)


def reference_video(clip, model, clip_video: torch.Tensor, depth: int) -> torch.Tensor:
    """ViFi-CLIP's vision forward written out on the untouched open_clip blocks: prompts appended
    before ln_pre, replaced at the end of the sequence before blocks 2..depth; mean over frames."""
    visual = clip.visual
    batch, frames = clip_video.shape[:2]
    x = visual.conv1(clip_video.flatten(0, 1)).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    n = model.visual_prompts.shape[0]
    x = visual.ln_pre(torch.cat([x, model.visual_prompts.expand(x.shape[0], -1, -1)], dim=1))
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i < depth:
            x = torch.cat([x[:, :-n], model.visual_blocks[i].prompts.expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    feats = visual.ln_post(x[:, 0]) @ visual.proj
    return F.normalize(feats.view(batch, frames, -1).mean(dim=1), dim=-1)


def reference_text(clip, model, tokenizer, classnames: list[str], depth: int) -> torch.Tensor:
    """ViFi-CLIP's text forward on the untouched blocks: context at positions 1..n, replaced there
    before blocks 2..depth, causal mask, pooled at end-of-text."""
    learner = model.prompt_learner
    n = learner.n_ctx
    tokens = tokenizer(learner.texts(classnames))
    x = clip.token_embedding(tokens)
    x[:, 1:1 + n] = learner.ctx
    x = x + clip.positional_embedding
    for i, block in enumerate(clip.transformer.resblocks):
        if 1 <= i < depth:
            x = torch.cat([x[:, :1], model.text_blocks[i].prompts.expand(x.shape[0], -1, -1), x[:, 1 + n:]], 1)
        x = block(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ clip.text_projection
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("depth", [1, 3])
def test_deep_prompts_match_a_hand_written_reference(tiny, depth):
    clip, tokenizer = tiny
    pristine = copy.deepcopy(clip)
    classnames = protocol_classnames()[:7]
    model = build(tiny, {"n_tokens": 5, "depth": depth}).eval()
    assert sum(isinstance(b, DeepPromptBlock) for b in model.visual_blocks) == depth - 1
    assert sum(isinstance(b, DeepPromptBlock) for b in model.text_blocks) == depth - 1
    clip_video = video()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_video(clip_video),
                                   reference_video(pristine, model, clip_video, depth), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model.class_text_features(classnames),
                                   reference_text(pristine, model, tokenizer, classnames, depth),
                                   atol=1e-5, rtol=1e-4)


def test_word_initialised_context_equals_plain_clip(tiny):
    """4 tokens from "a photo of a", shallow (depth 1): before training, the text path is exactly
    CLIP on "a photo of a {name}."."""
    clip, tokenizer = tiny
    pristine = copy.deepcopy(clip)
    classnames = protocol_classnames()[:6]
    model = build(tiny, {"n_tokens": 4, "depth": 1}).eval()
    assert model.prompt_learner.prefix == "a photo of a"
    with torch.no_grad():
        ours = model.class_text_features(classnames)
    reference = plain_clip_text(pristine, tokenizer, [f"a photo of a {c}." for c in classnames])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_context_init_rule(tiny):
    """ViFi-CLIP initialises from the words only when there are enough of them: with its 16 / 10
    tokens the context is random and the placeholders are "X"; fewer tokens than words keep the
    remaining words as fixed text."""
    clip, tokenizer = tiny
    random_ctx = build(tiny, {"n_tokens": 16, "depth": 2}).prompt_learner
    assert random_ctx.prefix == " ".join(["X"] * 16)
    assert random_ctx.ctx.shape == (16, 128) and 0.01 < random_ctx.ctx.std().item() < 0.03
    two = build(tiny, {"n_tokens": 2, "depth": 1}).prompt_learner
    words = tokenizer(["a photo"])[0, 1:3]
    torch.testing.assert_close(two.ctx.detach(), clip.token_embedding.weight[words])
    assert two.texts(["jump"]) == ["a photo of a jump."]
    assert build(tiny, {"n_tokens": 2, "depth": 1, "ctx_init": ""}).prompt_learner.prefix == "X X"


def test_options_are_validated():
    with pytest.raises(HarnessError):
        make_config("vificlip_prompt", {"n_tokens": 0})
    with pytest.raises(HarnessError):
        make_config("vificlip_prompt", {"depth": 0})
    config = make_config("vificlip_prompt")
    assert (config.n_tokens, config.depth, config.ctx_init) == (16, 9, "a photo of a")
    assert get_method("vificlip_prompt").model_cls.text_is_frozen is False


def test_only_prompts_change_after_adamw_steps(tiny):
    classnames = protocol_classnames()[:8]
    torch.manual_seed(0)
    model = build(tiny, {"n_tokens": 6, "depth": 3}).train()
    declared = set(model.targeted)
    assert declared == {n for n, p in model.named_parameters() if p.requires_grad}
    assert "clip.logit_scale" not in declared and len(declared) == 2 + 2 * 2
    assert changed_after_adamw_steps(model, classnames, weight_decay=0.001) == declared
