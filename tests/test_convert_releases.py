"""Releases written exactly as each official code base's save function writes them (top-level
keys, `module.` prefixes, stored dtypes, optimizer state, pickled yacs CfgNode, mmcv meta.config
text; tests/convert_helpers.py), converted with the options a user would type, give the features
and logits of an independent re-implementation of the official forward (tests/official_forward.py)
to 1e-5 relative. Plus what a user meets on the way: --base required for trainable-only
ST-Adapter files, AIM's adapter scale read from meta.config or "assumed", the SSv2 AIM release
with two temporal adapters, frozen weights that are not --base's, and a pickle that would run code.

Backbone: `harness-b16-2l` (ViT-B/16 widths, 2 blocks per tower; its config runs QuickGELU, as the
official code bases' OpenAI CLIP does)."""
from __future__ import annotations

import json
import os

import official_forward as official
import pytest
import torch
from convert_helpers import (
    CLASSES,
    TSV,
    aim_config_text,
    clip_value,
    consistent_release,
    make_base,
    run_convert,
    save_release,
    vifi_config,
)
from method_helpers import OFFICIAL_STATE_DICTS, official_rows

from harness.convert import ConvertRequest, convert
from harness.convert.checkpoint import load_checkpoint, save_converted
from harness.errors import HarnessError

base = pytest.fixture(scope="module")(make_base)
pytestmark = pytest.mark.skipif(not OFFICIAL_STATE_DICTS.is_dir(), reason="needs ../shared/upstream/official-state-dicts")
RTOL = 1e-5


def video(frames: int, seed: int = 11) -> torch.Tensor:
    return torch.randn(1, frames, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def assert_relative(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> float:
    """max |ours - theirs| / max |theirs| <= RTOL; returns the ratio."""
    ratio = float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())
    assert ratio <= RTOL, f"{what}: relative difference {ratio:.3g} > {RTOL}"
    return ratio


def ours(model, clip: torch.Tensor, classnames=CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_video(clip, normalize=False), model(clip, classnames)


def with_base(state: dict, base, method: str, half: bool = False) -> dict:
    """`state` plus the base CLIP's visual tensors under the official names it lacks (the frozen
    weights a trainable-only ST-Adapter model loads from its CLIP, halved as it holds them)."""
    full = dict(state)
    clip = base[1].state_dict()
    for key, _, _ in official_rows(OFFICIAL_STATE_DICTS / TSV[method]):
        if key not in full:
            value = clip_value(method, key, clip)
            if value is not None:
                full[key] = value.half() if half else value
    return full


# -- per code base: official file -> converted model == official forward --------------------
def test_st_adapter_trainable_only_release(base, tmp_path, capsys):
    """utils.save_model keeps adapters + fc only: without --base the conversion asks for it in one
    line; with --base the frozen CLIP comes from it, rounded to fp16 as the official model holds
    it, and the model computes the official forward."""
    from harness.cli import main

    state = consistent_release("st_adapter", base, seed=1)
    ckpt = save_release(state, "st_adapter", tmp_path / "checkpoint-11.pth")
    saved = torch.load(ckpt, weights_only=True)
    assert set(saved) == {"model", "optimizer", "lr_sched", "loss_scaler", "next_epoch"}
    assert all("adapter" in k or k.startswith("fc.") for k in saved["model"]) and "class_embedding" not in saved["model"]
    capsys.readouterr()
    assert main(["convert", ckpt, "--from", "st_adapter", "--backbone", "harness-b16-2l",
                 "--classes", ",".join(CLASSES)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds only its" in err and "pass --base" in err
    out = tmp_path / "st.harness.pt"
    assert main(["convert", ckpt, "--from", "st_adapter", "--backbone", "harness-b16-2l", "--base", str(base[0]),
                 "--classes", ",".join(CLASSES), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frozen weights: none in the release" in printed and "rounded to float16" in printed
    loaded = load_checkpoint(out)
    clip = video(8)
    feats, logits = official.st_adapter(with_base(saved["model"], base, "st_adapter", half=True), clip)
    mine = ours(loaded.net, clip)
    assert_relative(mine[0], feats, "st_adapter features")
    assert_relative(mine[1], logits, "st_adapter logits")


@pytest.mark.parametrize("how", ["k400", "ssv2", "no-config"])
def test_aim_release(base, tmp_path, how):
    """mmcv save_checkpoint with tools/train.py's meta: adapter_scale (and num_tadapter) come from
    meta.config (SSv2: scale 1.0, two temporal adapters, built); without a config the scale is
    "assumed" 0.5 with the SSv2 alternative named, and a release trained at 1.0 then needs --set."""
    ssv2 = how == "ssv2"
    state = consistent_release("aim", base, seed=2)
    if ssv2:  # the SSv2 B/16 config's extra skip adapter before the temporal attention
        gen = torch.Generator().manual_seed(5)
        for i in range(2):
            for key, shape in (("D_fc1.weight", (192, 768)), ("D_fc1.bias", (192,)), ("D_fc2.weight", (768, 192)),
                               ("D_fc2.bias", (768,))):
                state[f"backbone.transformer.resblocks.{i}.T_Adapter_in.{key}"] = 0.02 * torch.randn(shape, generator=gen)
    scale = 1.0 if ssv2 else 0.5
    config = None if how == "no-config" else aim_config_text(scale, 2 if ssv2 else 1)
    conversion = run_convert("aim", state, base, tmp_path, save={"config": config})
    report = conversion.report
    assert report["release"]["config_from"] == (None if config is None else "meta.config")
    if config is None:
        assert report["assumed"]["adapter_scale"]["value"] == 0.5
        assert "1.0" in report["assumed"]["adapter_scale"]["alternatives"]
    else:
        assert report["assumed"] == {} and report["from_config"]["adapter_scale"] == scale
    assert conversion.meta["method_options"]["adapter_scale"] == scale
    assert conversion.meta["method_options"]["num_tadapter"] == (2 if ssv2 else 1)
    clip = video(8)
    feats, logits = official.aim(state, clip, scale, 2 if ssv2 else 1)
    mine = ours(conversion.model, clip)
    assert_relative(mine[0], feats, f"aim {how} features")
    assert_relative(mine[1], logits, f"aim {how} logits")
    if ssv2:  # the same file without its config: scale assumed 0.5, 41 %-class errors; --set fixes it
        bare = run_convert("aim", state, base, tmp_path, save={"config": None})
        wrong = ours(bare.model, clip)[1]
        assert float((wrong - logits).abs().max() / logits.abs().max()) > 1e-3
        fixed = run_convert("aim", state, base, tmp_path, save={"config": None}, options={"adapter_scale": 1.0})
        assert_relative(ours(fixed.model, clip)[1], logits, "aim ssv2 with --set aim.adapter_scale=1.0")


def test_vitaclip_release(base, tmp_path):
    """training/checkpoint.save_checkpoint on the DDP model: every tensor under `module.`."""
    state = consistent_release("vitaclip", base, seed=3)
    conversion = run_convert("vitaclip", state, base, tmp_path)
    assert conversion.report["release"]["stripped_prefixes"] == ["module."]
    tokenizer = base[2]
    n = state["prompt_learner.ctx"].shape[-2]
    tokens = tokenizer([" ".join(["X"] * n) + f" {c}." for c in CLASSES])
    prompts = official.coop_prompts(state, state["prompt_learner.token_prefix"], state["prompt_learner.token_suffix"])
    clip = video(8)
    feats, logits = official.vitaclip(state, clip, tokens, prompts)
    mine = ours(conversion.model, clip)
    assert_relative(mine[0], feats, "vitaclip features")
    assert_relative(mine[1], logits, "vitaclip logits")


@pytest.mark.parametrize("method", ["vificlip", "vificlip_prompt"])
def test_vificlip_release(base, tmp_path, method):
    """utils/tools.epoch_saving: DDP keys, optimizer, timm scheduler state, max_accuracy, epoch and
    the frozen yacs CfgNode, read without yacs: its DATA.NUM_FRAMES builds the model, its prompt
    settings are checked against the tensors, and the report says what was read."""
    import sys

    assert "yacs" not in sys.modules
    prompting = method == "vificlip_prompt"
    state = consistent_release(method, base, seed=4)
    n = state["prompt_learner.ctx"].shape[0] if prompting else 0
    conversion = run_convert(method, state, base, tmp_path, save={"config": vifi_config(prompting, frames=2,
                                                                                         n_ctx=n or 16)})
    assert "yacs" not in sys.modules
    report = conversion.report
    assert report["release"]["config_from"] == "config" and report["release"]["config_kind"] == "yacs CfgNode"
    assert any("yacs CfgNode read as plain data" in line for line in report["release"]["read"])
    assert report["from_config"]["DATA.NUM_FRAMES"] == 2 and conversion.meta["frames"] == 2
    assert conversion.report["release"]["stripped_prefixes"] == ["module."]
    tokenizer, embed = base[2], base[1].token_embedding.weight.detach()
    if prompting:
        tokens = tokenizer([" ".join(["X"] * n) + f" {c}." for c in CLASSES])
        prompts = official.coop_prompts(state, embed[tokens][:, :1], embed[tokens][:, 1 + n:])
    else:
        tokens = tokenizer([f"a photo of a {c}." for c in CLASSES])
        prompts = embed[tokens]
    clip = video(2)
    feats, logits = official.vificlip(state, clip, tokens, prompts)
    mine = ours(conversion.model, clip)
    assert_relative(mine[0], feats, f"{method} features")
    assert_relative(mine[1], logits, f"{method} logits")
    # a config that disagrees with the tensors is refused by name
    if prompting:
        with pytest.raises(HarnessError, match=r"PROMPT_DEPTH_VISION=3 disagrees with its tensors \(depth=2\)"):
            run_convert(method, state, base, tmp_path, save={"config": vifi_config(True, n_ctx=n, depth=3)})


# -- what the reader refuses and reports ------------------------------------------------------
class RunsCode:
    """Unpickling this calls os.system (what a crafted checkpoint's __reduce__ does)."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("method", ["st_adapter", "vificlip"])
def test_release_whose_pickle_runs_code_is_refused(base, tmp_path, method, capsys):
    from harness.cli import main

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "config": RunsCode(marker)}, path)
    capsys.readouterr()
    assert main(["convert", str(path), "--from", method, "--base", str(base[0]), "--backbone", "harness-b16-2l"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "refused: its pickle names posix.system" in err and "nothing from the file" in err
    assert not marker.exists()


def test_release_messages(base, tmp_path):
    empty = tmp_path / "empty.pth"
    torch.save({"model": {}, "optimizer": {}}, empty)
    with pytest.raises(HarnessError, match=r"\['model'\] is empty: no tensors"):
        convert("aim", ConvertRequest(str(empty), backbone="harness-b16-2l"))
    vita = save_release(consistent_release("vitaclip", base), "vitaclip", tmp_path / "vita.pth")
    with pytest.raises(HarnessError, match="not a checkpoint of --from aim; is --from right"):
        convert("aim", ConvertRequest(vita, backbone="harness-b16-2l"))
    nothing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], nothing)
    with pytest.raises(HarnessError, match="expected a state dict .* at the top level, found list"):
        convert("aim", ConvertRequest(str(nothing), backbone="harness-b16-2l"))


def test_frozen_weights_beyond_fp16_rounding_fail_unless_allowed(base, tmp_path):
    """A full ST-Adapter model.state_dict() (frozen CLIP stored in fp16) made from the base passes
    (differences are fp16 rounding only); one frozen tensor changed stops the conversion naming
    it, unless --allow-base-mismatch (then the report says so)."""
    state = consistent_release("st_adapter", base)
    report = run_convert("st_adapter", state, base, tmp_path, save={"trainable_only": False}).report
    assert report["frozen_vs_base"]["beyond_fp16"] is False and report["frozen_vs_base"]["max_abs_diff"] == 0.0
    state["transformer.resblocks.1.ln_1.bias"] = state["transformer.resblocks.1.ln_1.bias"] + 0.5
    with pytest.raises(HarnessError, match=r"beyond fp16 rounding: largest \|diff\| 0\.5 at "
                                           r"transformer\.resblocks\.1\.ln_1\.bias .*--allow-base-mismatch"):
        run_convert("st_adapter", state, base, tmp_path, save={"trainable_only": False})
    allowed = run_convert("st_adapter", state, base, tmp_path, save={"trainable_only": False},
                          allow_base_mismatch=True)
    assert allowed.report["base_mismatch_allowed"] and allowed.report["frozen_vs_base"]["mismatch"]["parameter"] \
        == "clip.visual.transformer.resblocks.1.ln_1.bias"
    # fp32 releases: differences of fp16 rounding size pass, anything above fails
    aim_state = consistent_release("aim", base)
    key = "backbone.transformer.resblocks.0.ln_2.weight"
    aim_state[key] = aim_state[key].half().float()
    assert not run_convert("aim", aim_state, base, tmp_path).report["frozen_vs_base"]["beyond_fp16"]
    aim_state[key] = aim_state[key] * (1 + 2 ** -8)
    with pytest.raises(HarnessError, match=f"at {key}"):
        run_convert("aim", aim_state, base, tmp_path)


def test_activation_is_quickgelu_and_recorded(base, tmp_path):
    from harness.backbone import with_activation

    conversion = run_convert("aim", consistent_release("aim", base), base, tmp_path)
    assert conversion.report["activation"]["activation"] == "quickgelu"
    assert conversion.meta["backbone"]["quick_gelu"] is True
    assert with_activation("ViT-B-16", "quickgelu") == "ViT-B-16-quickgelu"
    assert with_activation("ViT-B-16-quickgelu", "gelu") == "ViT-B-16"
    assert with_activation("ViT-L-14", "quickgelu") == "ViT-L-14-quickgelu"
    with pytest.raises(HarnessError, match="harness-b16-2l is built with QuickGELU"):
        run_convert("aim", consistent_release("aim", base), base, tmp_path, activation="gelu")


def test_converted_file_keeps_fp16_rounding_and_assumptions(base, tmp_path):
    """What the conversion decided is in the file: the fp16 rounding of base-filled weights is
    re-applied on load, and the assumed options are recorded."""
    st = run_convert("st_adapter", consistent_release("st_adapter", base), base, tmp_path)
    out = save_converted(st, tmp_path / "st.harness.pt")
    loaded = load_checkpoint(out)
    name = "clip.visual.transformer.resblocks.0.attn.in_proj_weight"
    base_value = base[1].state_dict()["visual.transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(dict(loaded.net.named_parameters())[name], base_value.half().float())
    assert name in loaded.meta["from_base_precision"]["float16"]
    aim = run_convert("aim", consistent_release("aim", base), base, tmp_path, save={"config": None})
    meta = load_checkpoint(save_converted(aim, tmp_path / "aim.harness.pt")).meta
    assert meta["conversion"]["assumed"]["adapter_scale"]["value"] == 0.5
    assert json.loads(json.dumps(meta["conversion"]))  # plain data


# -- --classes ----------------------------------------------------------------------------------
def test_classes_option(tmp_path):
    from harness.convert.base import parse_classes

    long = ",".join(f"class number {i}" for i in range(25))
    assert len(long) > 300 and parse_classes(long) == [f"class number {i}" for i in range(25)]
    with pytest.raises(HarnessError, match="no such class file"):
        parse_classes(str(tmp_path / "missing.csv"))
    with pytest.raises(HarnessError, match="no such class file"):
        parse_classes("labels.txt")
    txt = tmp_path / "classes.txt"
    txt.write_text("abseiling\nair drumming\n\n")
    assert parse_classes(str(txt)) == ["abseiling", "air drumming"]
    csv = tmp_path / "classes.csv"
    csv.write_text("id,name\n0,a\n1,b\n")
    assert parse_classes(str(csv)) == ["a", "b"]
    assert parse_classes("a, b ,c") == ["a", "b", "c"]


def test_vificlip_label_list_from_config(base, tmp_path, upstream_root):
    """DATA.LABEL_LIST names the training classes: with the upstream ViFi-CLIP labels at hand,
    the class-token embeddings are checked against them without --classes."""
    from harness.data.annotations import read_class_csv

    names = read_class_csv(upstream_root / "vifi-clip" / "labels" / "hmdb_51_base_labels.csv")
    _, clip, tokenizer = base
    state = consistent_release("vificlip", base)
    embed = clip.token_embedding.weight.detach()
    state["prompt_learner.complete_text_embeddings"] = embed[tokenizer([f"a photo of a {c}." for c in names])]
    config = vifi_config(False, classes=len(names), label_list="labels/hmdb_51_base_labels.csv")
    conversion = run_convert("vificlip", state, base, tmp_path, save={"config": config}, classes=None,
                             splits_root=str(upstream_root))
    assert conversion.report["derived"]["prompt_learner.complete_text_embeddings"]["classes"] == len(names)
    swapped = [names[1], names[0], *names[2:]]
    state["prompt_learner.complete_text_embeddings"] = embed[tokenizer([f"a photo of a {c}." for c in swapped])]
    with pytest.raises(HarnessError, match="first class 0"):
        run_convert("vificlip", state, base, tmp_path, save={"config": config}, classes=None,
                    splits_root=str(upstream_root))


def test_official_pickles_only_hold_what_the_reader_allows(base, tmp_path):
    """The test files really are pickles with foreign classes and numpy-free containers: torch's
    own weights-only reader refuses the ViFi-CLIP file (the CfgNode), the reader here takes it."""
    from harness.convert.release_io import load_release

    path = save_release(consistent_release("vificlip", base), "vificlip", tmp_path / "vifi.pth")
    with pytest.raises(Exception, match="yacs.config.CfgNode"):
        torch.load(path, weights_only=True)
    release = load_release(path)
    assert release.setting("TRAINER.ViFi_CLIP.USE") == "both" and release.setting("MODEL.PRETRAINED") is None
    assert isinstance(release.content["config"], dict) and type(release.content["config"]["DATA"]) is dict
    assert not any(key.startswith("__") for key in release.config)  # yacs' own attributes are not settings
    assert release.content["epoch"] == 10 and release.content["max_accuracy"] == 71.25
