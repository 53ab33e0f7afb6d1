"""`harness convert`: random releases built from the official state-dict listings (wrapped and
prefixed the way each code base saves them, fp16 where it stores fp16) convert, load, fill every
parameter and leave no key unexplained; corrupted ones fail naming the key; converted blocks
compute what an independent re-implementation of the official block computes on the release's
own tensors. The backbone is `harness-b16-2l` (ViT-B/16 widths, 2 blocks per tower): the
listings are cut to 2 blocks, everything else keeps the official shapes."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from convert_helpers import (
    CLASSES,
    METHODS,
    consistent_release,
    make_base,
    release_state,
    run_convert,
    save_release,
)
from method_helpers import OFFICIAL_STATE_DICTS, UPSTREAM

from harness.convert import ConvertRequest, convert
from harness.convert.checkpoint import load_checkpoint, save_converted
from harness.errors import HarnessError

base = pytest.fixture(scope="module")(make_base)
pytestmark = pytest.mark.skipif(not OFFICIAL_STATE_DICTS.is_dir(), reason="needs ../shared/upstream/official-state-dicts")

@pytest.mark.parametrize("method", METHODS)
def test_release_converts_loads_and_accounts_for_every_key(method, base, tmp_path):
    state = consistent_release(method, base)
    conversion = run_convert(method, state, base, tmp_path)
    report = conversion.report
    # every release key is consumed by some parameter or ignored with a reason
    ignored = report["ignored"]
    assert all(reason for reason in ignored.values())
    assert report["filled_from_release"] + report["filled_from_base"] == len(dict(conversion.model.named_parameters()))
    out = save_converted(conversion, tmp_path / "converted.pt")
    loaded = load_checkpoint(out, method=method)
    params = dict(loaded.net.named_parameters())
    base_params = dict(base[1].named_parameters())
    # Parameters the release does not hold come from the base, bit for bit (at the precision the
    # official model holds them: ST-Adapter's frozen CLIP in fp16).
    halved = set(loaded.meta["from_base_precision"].get("float16", []))
    assert bool(halved) == (method == "st_adapter")
    for name in loaded.meta["from_base"]:
        assert name.startswith("clip."), name
        expected = base_params[name[len("clip."):]]
        expected = expected.half().float() if name in halved else expected
        torch.testing.assert_close(params[name], expected, rtol=0, atol=0)
    # Hand-picked official tensors land where they belong (fp16 values kept exactly).
    for ours, theirs in EXPECTED[method](state):
        torch.testing.assert_close(params[ours], theirs.to(params[ours].dtype), rtol=0, atol=0, msg=ours)


EXPECTED = {
    "st_adapter": lambda s: [("clip.visual.class_embedding", s["class_embedding"]),
                             ("clip.visual.transformer.resblocks.1.adapter_pre_mlp.conv.weight",
                              s["transformer.resblocks.1.adapter_pre_mlp.conv.weight"]),
                             ("cls_head.fc.weight", s["fc.weight"])],
    "aim": lambda s: [("temporal_embedding", s["backbone.temporal_embedding"]),
                      ("clip.visual.transformer.resblocks.1.T_Adapter.D_fc1.weight",
                       s["backbone.transformer.resblocks.1.T_Adapter.D_fc1.weight"]),
                      ("cls_head.fc.bias", s["cls_head.fc_cls.bias"])],
    "vitaclip": lambda s: [("clip.visual.transformer.resblocks.1.attn.in_proj_weight",
                            torch.cat([s[f"visual.blocks.1.attn.{p}_proj.weight"] for p in "qkv"])),
                           ("clip.visual.transformer.resblocks.1.global_prompts", s["visual.global_prompts"][1]),
                           ("clip.visual.transformer.resblocks.0.ln_2.weight", s["visual.blocks.0.norm2.weight"]),
                           ("clip.token_embedding.weight", s["textual.token_embedding.weight"]),
                           ("prompt_learner.ctx", s["prompt_learner.ctx"])],
    "vificlip": lambda s: [("clip.transformer.resblocks.1.mlp.c_fc.weight",
                            s["text_encoder.transformer.resblocks.1.mlp.c_fc.weight"]),
                           ("clip.visual.proj", s["image_encoder.proj"]), ("clip.logit_scale", s["logit_scale"])],
    # deep prompts as the official forward uses them: .half()
    "vificlip_prompt": lambda s: [("visual_prompts", s["image_encoder.VPT"].half()),
                                  ("clip.visual.transformer.resblocks.1.prompts",
                                   s["image_encoder.transformer.resblocks.1.VPT_shallow"].half()),
                                  ("clip.transformer.resblocks.1.prompts",
                                   s["text_encoder.transformer.resblocks.1.VPT_shallow"].half()),
                                  ("prompt_learner.ctx", s["prompt_learner.ctx"])],
}

# -- corrupted releases -----------------------------------------------------------------------
#: Per code base: a key to delete and a key to give a wrong shape.
CORRUPT = {"st_adapter": ("transformer.resblocks.1.adapter_pre_mlp.fc2.bias", "ln_post.weight"),
           "aim": ("backbone.transformer.resblocks.0.S_Adapter.D_fc2.weight", "backbone.temporal_embedding"),
           "vitaclip": ("visual.blocks.1.summary_ln.bias", "visual.blocks.1.attn.k_proj.weight"),
           "vificlip": ("text_encoder.ln_final.weight", "image_encoder.proj"),
           "vificlip_prompt": ("text_encoder.transformer.resblocks.1.VPT_shallow", "image_encoder.VPT")}


@pytest.mark.parametrize("method", METHODS)
def test_corrupted_release_names_every_bad_key(method, base, tmp_path):
    """One error lists the missing key, the key of the wrong shape and the unknown key (ST-Adapter:
    a full model.state_dict(), whose frozen keys are checked too)."""
    missing, reshaped = CORRUPT[method]
    state = consistent_release(method, base)
    del state[missing]
    state[reshaped] = state[reshaped][..., :-1].clone()
    state["extra.unknown_weight"] = torch.zeros(3)
    with pytest.raises(HarnessError) as err:
        run_convert(method, state, base, tmp_path, save={"trainable_only": False} if method == "st_adapter" else None)
    message = str(err.value)
    assert f"not in the checkpoint: {missing} (for " in message
    assert re.search(re.escape(reshaped) + r" (\(\d+, \d+\) )?.*(has shape|shapes differ)", message), message
    assert "match nothing in the model: extra.unknown_weight (3,)" in message


def test_vitaclip_patch_bias(base, tmp_path):
    state = consistent_release("vitaclip", base)
    state["visual.patch_embed.proj.bias"] = torch.full((768,), 0.25)
    with pytest.raises(HarnessError, match=r"visual\.patch_embed\.proj\.bias is non-zero.*patch_bias=true"):
        run_convert("vitaclip", state, base, tmp_path)
    model = run_convert("vitaclip", state, base, tmp_path, options={"patch_bias": True}).model
    assert not model.patch_bias.requires_grad and torch.equal(model.patch_bias, state["visual.patch_embed.proj.bias"])
    # The bias shifts every patch token by exactly b before ln_pre (as the official Conv2d bias does).
    video = torch.randn(1, 8, 3, 224, 224)
    with torch.no_grad():
        tokens = model.visual_tokens(model.patch_embed(video.flatten(0, 1)))
        model.patch_bias.zero_()
        plain = model.visual_tokens(model.patch_embed(video.flatten(0, 1)))
    torch.testing.assert_close(tokens[:, 1:] - plain[:, 1:], torch.full_like(plain[:, 1:], 0.25))
    torch.testing.assert_close(tokens[:, 0], plain[:, 0])


def test_aim_other_frame_count(base, tmp_path):
    state = consistent_release("aim", base)
    state["backbone.temporal_embedding"] = torch.randn(1, 16, 768)
    with pytest.raises(HarnessError, match=r"temporal_embedding was trained for T=16.*T=8"):
        run_convert("aim", state, base, tmp_path, frames=8)
    assert run_convert("aim", state, base, tmp_path).model.num_frames == 16  # default: the release's T
    model = run_convert("aim", state, base, tmp_path, frames=8, options={"frames_mismatch": "interpolate"}).model
    expected = F.interpolate(state["backbone.temporal_embedding"].transpose(1, 2), size=8, mode="linear").transpose(1, 2)
    torch.testing.assert_close(model.temporal_embedding.detach(), expected)


@pytest.mark.parametrize("method", ["vificlip", "vificlip_prompt"])
def test_class_token_embeddings_checked(method, base, tmp_path):
    state = consistent_release(method, base)
    with pytest.raises(HarnessError, match=r"first class 0 \('bowling'"):
        run_convert(method, state, base, tmp_path, classes=[CLASSES[1], CLASSES[0], *CLASSES[2:]])
    unchecked = run_convert(method, state, base, tmp_path, classes=None)  # no class names: reported
    assert "not checked" in " ".join(unchecked.report["ignored"].values())


def test_vificlip_needs_base(base, tmp_path):
    ckpt = save_release(consistent_release("vificlip", base), "vificlip", tmp_path / "r.pth")
    with pytest.raises(HarnessError, match="--base"):
        convert("vificlip", ConvertRequest(ckpt, backbone="harness-b16-2l"))


@pytest.mark.skipif(not (UPSTREAM / "vifi-clip" / "labels").is_dir(), reason="needs the K400 class file")
def test_400_way_head_class_order_checked_against_k400(base, tmp_path):
    from harness.data.annotations import read_class_csv

    k400 = read_class_csv(UPSTREAM / "vifi-clip" / "labels" / "kinetics_400_labels.csv")
    state = release_state("st_adapter", classes=400)
    conv = run_convert("st_adapter", state, base, tmp_path, classes=None, splits_root=str(UPSTREAM))
    assert conv.meta["classnames"] == k400
    swapped = [k400[1], k400[0], *k400[2:]]
    with pytest.raises(HarnessError, match="another order"):
        run_convert("st_adapter", state, base, tmp_path, classes=swapped, splits_root=str(UPSTREAM))


def test_cli_convert_writes_checkpoint_and_report(base, tmp_path, capsys):
    from harness.cli import main

    ckpt = save_release(consistent_release("aim", base), "aim", tmp_path / "aim_release.pth")
    out = tmp_path / "aim.harness.pt"
    args = ["convert", ckpt, "--from", "aim", "--backbone", "harness-b16-2l", "--base", str(base[0]),
            "--classes", ",".join(CLASSES), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "aim -> method aim (8 frames)" in printed and "frozen weights vs --base: largest |diff|" in printed
    report = __import__("json").loads((tmp_path / "aim.harness.pt.json").read_text())
    assert report["release"]["unwrapped"] == ["state_dict"] and report["filled_from_release"] > 0
    assert load_checkpoint(out).net.num_frames == 8
    assert main(["convert", ckpt, "--from", "aimm"]) == 2
    assert "Did you mean 'aim'" in capsys.readouterr().err
