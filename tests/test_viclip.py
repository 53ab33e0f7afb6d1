"""ViCLIP, the joint space-time backbone (harness/viclip.py, harness/viclip_weights.py,
methods/layout.py): the official state-dict layout and counts, loading the official training
checkpoint without running code from it, the forward against a transcription of the official
code (tests/viclip_helpers.py) at 4, 8 and 16 frames, the token order, the temporal embedding
rule, masking, normalisation and text context, and the one-line refusals."""
from __future__ import annotations

import copy
import sys

import pytest
import torch
from viclip_helpers import (
    official_logits,
    official_rows,
    official_text_features,
    official_tokens_before_ln_pre,
    official_video_features,
    random_official_state,
    write_training_checkpoint,
)

from harness.backbone import NORMALIZATIONS, backbone_rows, count_truncated, create_clip, get_tokenizer
from harness.errors import ConfigurationError, HarnessError
from harness.viclip_weights import official_key, to_official
from methods.layout import LAYOUTS, JointLayout, mask_tokens, temporal_embedding_for
from methods.registry import build_method

TINY_HEADS = (4, 4)  # harness-tiny-joint: vision 128 / head width 32, text 4 heads
TEXTS = ["a red circle moving left", "juggling", "someone slowly pours water from a glass bottle into a tall "
         "transparent cup while a cat watches from the kitchen table and the radio plays"]  # > 32 tokens


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """Random tiny ViCLIP weights (temporal embedding for 8 frames) in the official training-checkpoint layout."""
    state = random_official_state(frames=8)
    return write_training_checkpoint(tmp_path_factory.mktemp("viclip") / "viclip_tiny.pth", state), state


@pytest.fixture(scope="module")
def loaded(official_file):
    path, _ = official_file
    return create_clip("harness-tiny-joint", str(path))


# -- the official layout ---------------------------------------------------------------------------
def test_b16_state_dict_names_shapes_and_counts_are_the_official_ones():
    """Every parameter of ViCLIP-B-16 maps to the official key of the same shape (listing taken from
    the official code), and the official pretraining's trainable set is METHODS.md's 86,198,785."""
    with torch.device("meta"):
        clip, spec = create_clip("ViCLIP-B-16")
    official = {key: (shape, grad) for key, shape, grad in official_rows()}
    ours = {official_key(name): list(p.shape) for name, p in clip.named_parameters()}
    assert ours == {key: shape for key, (shape, _) in official.items()}
    assert sum(p.numel() for n, p in clip.named_parameters() if official[official_key(n)][1]) == 86_198_785
    assert sum(p.numel() for p in clip.parameters()) == 149_603_841
    assert (spec.token_layout, spec.normalization, spec.context_length, spec.image_size) == ("joint", "imagenet", 32, 224)
    assert clip.visual.conv1.weight.shape == (768, 3, 1, 16, 16) and clip.visual.conv1.bias is None
    assert type(clip.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert type(clip.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_loads_the_training_checkpoint_without_running_its_code(official_file, loaded):
    """The file holds optimizer/scheduler/scaler/EasyDict config besides ['model']; it loads with
    the `easydict` module absent (nothing named by the file is imported), through create_clip."""
    path, state = official_file
    assert "easydict" not in sys.modules
    clip, spec = loaded
    ours = to_official(clip.state_dict())
    assert ours.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(ours[key], value, rtol=1e-6, atol=0, msg=key)  # temp goes through log/exp
    from harness.data.upstream import file_sha256

    assert spec.weights_sha256 == file_sha256(path) and spec.pretrained == str(path)


def test_a_checkpoint_of_another_backbone_is_one_line(tmp_path, official_file):
    path, state = official_file
    with pytest.raises(ConfigurationError, match=r"checkpoint key 'text_encoder\.positional_embedding' has shape \(32, 128\)"):
        create_clip("ViCLIP-B-16", str(path))
    bad = dict(state)
    bad.pop("vision_encoder.ln_post.bias")
    with pytest.raises(ConfigurationError, match=r"missing 1 keys.*vision_encoder\.ln_post\.bias"):
        create_clip("harness-tiny-joint", str(write_training_checkpoint(tmp_path / "bad.pth", bad)))
    with pytest.raises(HarnessError, match="loads a local checkpoint"):
        create_clip("ViCLIP-B-16", "openai")


# -- the forward against the official code, transcribed --------------------------------------------
@pytest.mark.parametrize("frames", [4, 8, 16])
def test_zero_shot_forward_matches_the_official_code(official_file, loaded, frames):
    """Video features, text features and logits of zero-shot ViCLIP equal the official forward on the
    same weights; 8 frames = the file's, 4 truncates and 16 interpolates its temporal embedding."""
    _, state = official_file
    clip, spec = loaded
    net = build_method("zeroshot", copy.deepcopy(clip), get_tokenizer(spec), frames, {"prompt": "{}"}).eval()
    video = torch.randn(2, frames, 3, 64, 64, generator=torch.Generator().manual_seed(frames))
    tokens = net.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(net.encode_video(video), official_video_features(state, video, TINY_HEADS[0]),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.text_features(TEXTS), official_text_features(state, tokens, TINY_HEADS[1]),
                                   rtol=1e-5, atol=1e-6)
        expected = official_logits(state, video, tokens, TINY_HEADS)
        torch.testing.assert_close(net(video, TEXTS), expected, rtol=1e-5, atol=1e-5)
    assert abs(float(net.clip.logit_scale.exp()) - 1 / 0.0123) < 1e-3  # the scale is 1 / temp


def test_joint_tokens_are_in_the_official_order(official_file, loaded):
    """Token 1 + n*T + t is patch n of frame t, with the spatial and the temporal embedding."""
    _, state = official_file
    clip, _ = loaded
    video = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        ours = LAYOUTS["joint"].embed(clip.visual, video)
    torch.testing.assert_close(ours, official_tokens_before_ln_pre(state, video), rtol=1e-6, atol=1e-6)
    grid = JointLayout().patch_grid(ours[:, 1:], 3)  # (B, T, N, D)
    frame1 = torch.nn.functional.conv2d(video[:, 1], clip.visual.conv1.weight[:, :, 0], stride=16).flatten(2).transpose(1, 2)
    expected = frame1 + clip.visual.positional_embedding[1:] + temporal_embedding_for(
        clip.visual.temporal_positional_embedding, 3)[:, 1]
    torch.testing.assert_close(grid[:, 1], expected.detach(), rtol=1e-6, atol=1e-6)


def test_temporal_embedding_rule_by_hand():
    """Official rule for a (1, T0, D) embedding: same T as is, T=1 the mean, fewer frames the first
    rows, more frames linear interpolation (align_corners=False)."""
    two = torch.tensor([[[0.0], [10.0]]])
    assert temporal_embedding_for(two, 2) is two
    assert temporal_embedding_for(two, 1).flatten().tolist() == [5.0]
    assert temporal_embedding_for(two, 3).flatten().tolist() == pytest.approx([0.0, 5.0, 10.0])
    assert temporal_embedding_for(two, 4).flatten().tolist() == pytest.approx([0.0, 2.5, 7.5, 10.0])
    three = torch.tensor([[[0.0], [1.0], [2.0]]])
    assert temporal_embedding_for(three, 2).flatten().tolist() == [0.0, 1.0]


def test_the_joint_backbone_sees_frame_order_through_its_temporal_embedding(loaded):
    """Even frozen zero-shot ViCLIP depends on frame order (a per-frame CLIP does not); with a zero
    temporal embedding (harness-tiny-joint's synthetic start) it is order-blind."""
    clip, spec = loaded
    net = build_method("zeroshot", copy.deepcopy(clip), get_tokenizer(spec), 4).eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        assert (net.encode_video(video) - net.encode_video(video.flip(1))).abs().max() > 1e-4
        net.clip.visual.temporal_positional_embedding.zero_()
        torch.testing.assert_close(net.encode_video(video), net.encode_video(video.flip(1)), rtol=1e-5, atol=1e-6)


# -- masking ---------------------------------------------------------------------------------------
def test_token_masking_drops_patch_tokens_in_training_only(loaded):
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)
    torch.manual_seed(0)
    kept = mask_tokens(x, 0.9)
    assert kept.shape == (2, 1, 3)  # int(0.9 * 10) = 9 dropped per sequence
    kept = mask_tokens(x, 0.5)
    for b in range(2):  # survivors keep their order
        rows = [int(r[0]) // 3 - 10 * b for r in kept[b]]
        assert rows == sorted(rows) and len(set(rows)) == 5
    clip, spec = loaded
    net = build_method("vificlip", copy.deepcopy(clip), get_tokenizer(spec), 4, {}, ["a", "b"])
    net.token_mask = 0.5
    video = torch.randn(2, 4, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        assert net.embed_video(video).shape == (2, 1 + 16 * 4, 128)  # never at evaluation
    net.train()
    assert net.embed_video(video).shape == (2, 1 + 32, 128) and net.ctx.tokens_masked
    logits = net(video, ["a", "b"])  # a masked sequence trains
    logits.sum().backward()


def test_token_masks_are_drawn_per_clip():
    """In an engine training step each clip's mask comes from its own seed: the same whatever the
    micro-batch it is in (methods.sample_random), a different clip seed a different mask."""
    from methods.sample_random import sample_seeds

    x = torch.randn(3, 20, 4)
    with sample_seeds([11, 12, 13]):
        whole = mask_tokens(x, 0.5)
    with sample_seeds([12]):
        alone = mask_tokens(x[1:2], 0.5)
    with sample_seeds([14]):
        other = mask_tokens(x[1:2], 0.5)
    assert whole.shape == (3, 10, 4) and torch.equal(whole[1:2], alone) and not torch.equal(alone, other)


def test_a_method_that_needs_the_grid_cannot_train_masked(loaded):
    clip, spec = loaded
    net = build_method("st_adapter", copy.deepcopy(clip), get_tokenizer(spec), 4, {}, ["a", "b"]).train()
    net.token_mask = 0.5
    with pytest.raises(HarnessError, match="schedule.token_mask=0"):
        net(torch.randn(2, 4, 3, 64, 64), ["a", "b"])


# -- refusals, normalisation, text context ---------------------------------------------------------
def test_a_method_without_the_joint_layout_is_refused_in_one_line(loaded):
    clip, spec = loaded
    with pytest.raises(ConfigurationError) as err:
        build_method("vitaclip", copy.deepcopy(clip), get_tokenizer(spec), 4, {}, ["a"])
    message = str(err.value)
    assert message.startswith("vitaclip does not run on a joint space-time backbone: ") and "\n" not in message


def test_normalisation_and_text_context_come_from_the_backbone():
    assert NORMALIZATIONS["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    rows = {r["name"]: r for r in backbone_rows()}
    assert (rows["ViCLIP-B-16"]["token_layout"], rows["ViCLIP-B-16"]["normalization"],
            rows["ViCLIP-B-16"]["context_length"]) == ("joint", "imagenet", 32)
    assert (rows["ViT-B-16"]["token_layout"], rows["ViT-B-16"]["normalization"],
            rows["ViT-B-16"]["context_length"]) == ("per_frame", "openai", 77)
    from harness.engine.model import CLIP_MEAN, CLIP_STD, VideoPreprocessor, pixel_normalization

    _, spec = create_clip("harness-tiny")
    assert pixel_normalization(spec) == (CLIP_MEAN, CLIP_STD)  # CLIP results: the same constants
    mean, std = pixel_normalization({"mean": NORMALIZATIONS["imagenet"][0], "std": NORMALIZATIONS["imagenet"][1]})
    pixels = torch.full((1, 1, 3, 1, 2, 2), 255, dtype=torch.uint8)  # (B, V, 3, T, H, W) white
    out = VideoPreprocessor(mean, std)({"inputs": pixels})["inputs"]
    assert out[0, 0, 0, :, 0, 0].tolist() == pytest.approx([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                            (1 - 0.406) / 0.225], rel=1e-5)


def test_truncated_texts_are_counted_and_cut_like_viclip():
    """33 BPE tokens + start/end exceed a 32-token context; the tokenizer keeps the first 31 and
    ends with end-of-text (ViCLIP's tokenize(truncate=True))."""
    words = " ".join(["cat"] * 33)
    assert count_truncated([words, "cat " * 30, "juggling"], 32) == 1
    assert count_truncated(["cat " * 30], 31) == 1
    _, spec = create_clip("harness-tiny")
    tokens = get_tokenizer(spec)([words])[0]
    assert tokens.shape == (32,) and int(tokens[-1]) == 49407 and tokens[1:31].tolist() == [tokens[1].item()] * 30


# -- the run: validation before any job, what the results record ----------------------------------
def _run(harness_cache, tmp_path, *extra):
    from harness.cli import main

    return main(["run", "--protocol", "base2novel", "--profile", "tiny", "--splits", "1", "--cache", str(harness_cache),
                 "--out", str(tmp_path), "--no-progress", *extra])


@pytest.mark.parametrize("args, line", [
    (["--methods", "zeroshot,vitaclip", "--backbone", "harness-tiny-joint"],
     "harness: error: vitaclip does not run on a joint space-time backbone: its local prompts"),
    (["--methods", "st_adapter", "--backbone", "harness-tiny-joint", "--set", "schedule.token_mask=0.5"],
     "harness: error: schedule.token_mask=0.5: st_adapter regroups the patch tokens"),
    (["--methods", "vificlip", "--set", "schedule.token_mask=0.5"],
     "harness: error: schedule.token_mask=0.5: token masking needs a joint space-time backbone"),
    (["--methods", "vificlip", "--backbone", "harness-tiny-joint", "--set", "schedule.token_mask=1.0"],
     "harness: error: schedule.token_mask=1.0: must be in [0, 1)"),
])
def test_layout_and_masking_problems_stop_the_run_before_any_job(args, line, harness_cache, tmp_path, capsys):
    assert _run(harness_cache, tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert line in err
    assert not (tmp_path / "jobs").exists()


def test_a_run_records_layout_normalisation_and_text_context(harness_cache, tmp_path, monkeypatch, official_file,
                                                             skip_training):
    """Jobs on a joint backbone loaded from an official-layout file record its token layout, its
    normalisation (here made ImageNet's: the engine's preprocessor receives exactly that) and the
    text context with the prompts and descriptions it truncates; an unmasked schedule keeps the
    job id's schedule as it was (token_mask is not hashed at 0)."""
    import dataclasses
    import json

    import harness.engine.model as engine_model
    from harness.viclip import JOINT_BACKBONES

    monkeypatch.setitem(JOINT_BACKBONES, "harness-tiny-joint",
                        dataclasses.replace(JOINT_BACKBONES["harness-tiny-joint"], normalization="imagenet"))
    seen = []
    original = engine_model.VideoPreprocessor.__init__
    monkeypatch.setattr(engine_model.VideoPreprocessor, "__init__",
                        lambda self, mean=engine_model.CLIP_MEAN, std=engine_model.CLIP_STD: seen.append(tuple(mean))
                        or original(self, mean, std))
    path, _ = official_file
    long = "a video " + "that shows " * 14 + "{}"  # 30 BPE tokens + start + end before the class name: every prompt is cut
    assert _run(harness_cache, tmp_path, "--methods", "zeroshot,msta", "--backbone", "harness-tiny-joint",
                "--pretrained", str(path), "--set", f"msta.prompt={long}") == 0
    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("jobs/*/metrics.json"))]
    assert len(records) == 2
    for record in records:
        backbone, text = record["metrics"]["backbone"], record["metrics"]["text"]
        assert (backbone["token_layout"], backbone["normalization"]) == ("joint", "imagenet")
        assert backbone["mean"] == [0.485, 0.456, 0.406] and backbone["std"] == [0.229, 0.224, 0.225]
        cut = 12 if record["job"]["method"] == "msta" else 0
        assert text == {"context_length": 32, "prompts": 12, "truncated_prompts": cut}
        assert "token_mask" not in json.dumps(record["job"]["schedule"]) or record["job"]["schedule"]["token_mask"] == 0
    msta = next(r for r in records if r["job"]["method"] == "msta")["metrics"]["descriptions"]
    assert msta["context_length"] == 32 and msta["sentences"] == 2 * 2 * 6 and msta["truncated"] == 0
    assert seen and all(mean == tuple(m * 255 for m in (0.485, 0.456, 0.406)) for mean in seen)


def test_params_refuses_a_method_in_one_line():
    from harness.measure.params import format_params_table, params_rows

    rows = params_rows(["zeroshot", "vitaclip"], "harness-tiny-joint", frames=4, num_classes=3, with_flops=False)
    assert rows[0]["trainable"] == 0 and rows[1]["trainable"] is None
    table = format_params_table(rows)
    assert table.splitlines()[-1].startswith("vitaclip: refused: vitaclip does not run on a joint space-time backbone")
