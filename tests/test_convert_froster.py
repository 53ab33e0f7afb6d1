"""`harness convert --from froster`: files written exactly as FROSTER writes them
(`slowfast/utils/checkpoint.py` save_checkpoint: {epoch, model_state, optimizer_state, cfg as YAML
text, scaler_state} with `model.` / `raw_model.` / `projector_v.` / `projector_t.` keys;
`weight_average_tool.py`: {model_state} with `model.` and projector keys only) convert, fill every
parameter, take their options from `cfg`, and refuse a teacher that is not the base CLIP. The
backbone is `harness-tiny` (the layout does not depend on the widths; the official B/16 key list is
compared in docs/methods/froster.md)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from harness.backbone import create_clip, get_tokenizer
from harness.convert import ConvertRequest, convert
from harness.convert.checkpoint import load_checkpoint
from harness.errors import HarnessError
from methods.registry import build_method

CLASSES = ["archery", "bowling", "juggling"]
BACKBONE = "harness-tiny"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random harness-tiny saved as a local file: the --base of every conversion."""
    clip, spec = create_clip(BACKBONE, None, seed=3)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save(clip.state_dict(), path)
    return path, clip, get_tokenizer(spec)


def official_model_state(base, seed: int = 0) -> dict[str, torch.Tensor]:
    """TemporalClipVideo.state_dict() names: `model.<OpenAI CLIP name>` (fine-tuned: random changes),
    `raw_model.<name>` (the pre-trained CLIP), `projector_{v,t}.{0,2}.weight` (E x E, no bias)."""
    _, clip, _ = base
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in clip.state_dict().items():
        if key == "attn_mask":
            continue
        state["model." + key] = value + 0.01 * torch.randn(value.shape, generator=gen)
        state["raw_model." + key] = value.clone()
    for proj in ("projector_v", "projector_t"):
        for layer in (0, 2):
            width = clip.visual.output_dim
            state[f"{proj}.{layer}.weight"] = 0.02 * torch.randn(width, width, generator=gen)
    return state


def save_checkpoint(model_state: dict, path, temporal: str = "expand_temporal_view", frames: int = 8) -> str:
    """As slowfast/utils/checkpoint.py save_checkpoint writes it on one GPU."""
    params = [torch.nn.Parameter(v.clone()) for k, v in model_state.items() if "raw_model." not in k]
    optimizer = torch.optim.AdamW(params, lr=3.33e-6, weight_decay=0.01)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    cfg = yaml.safe_dump({"MODEL": {"ARCH": "vitb16", "MODEL_NAME": "TemporalClipVideo",
                                    "TEMPORAL_MODELING_TYPE": temporal, "KEEP_RAW_MODEL": True,
                                    "RAW_MODEL_DISTILLATION": True, "DISTILLATION_RATIO": 2.0, "NUM_CLASSES": 3},
                          "DATA": {"NUM_FRAMES": frames, "SAMPLING_RATE": 16}, "SOLVER": {"BASE_LR": 3.33e-6}})
    torch.save({"epoch": 11, "model_state": model_state, "optimizer_state": optimizer.state_dict(), "cfg": cfg,
                "scaler_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                 "growth_interval": 2000, "_growth_tracker": 17}}, path)
    return str(path)


def test_training_checkpoint_converts_every_key(base, tmp_path):
    state = official_model_state(base)
    ckpt = save_checkpoint(state, tmp_path / "checkpoint_epoch_00012.pyth", "expand_temporal_view_step2", frames=4)
    conversion = convert("froster", ConvertRequest(ckpt, backbone=BACKBONE, base=str(base[0])))
    model, report = conversion.model, conversion.report
    assert model.config.temporal_view == 2 and model.config.distillation and model.num_frames == 4
    assert report["from_config"]["MODEL.TEMPORAL_MODELING_TYPE"] == "expand_temporal_view_step2"
    assert report["release"]["config_from"] == "cfg" and report["frozen_in_release"] == 0
    assert report["release"]["unwrapped"] == ["model_state"] and report["release"]["stripped_prefixes"] == []
    assert set(report["release"]["other_entries"]) == {"epoch", "optimizer_state", "cfg", "scaler_state"}
    params = dict(model.named_parameters())
    for key, value in state.items():
        if key.startswith("model."):
            assert torch.equal(params["clip." + key[len("model."):]], value), key
        elif key.startswith("projector"):
            assert torch.equal(params[key], value), key
        else:
            assert torch.equal(params["teacher.clip." + key[len("raw_model."):]], value), key
    teacher_keys = [k for k in state if k.startswith("raw_model.")]
    assert set(report["ignored"]) == set(teacher_keys)
    assert report["filled_from_release"] == len(state) - len(teacher_keys)
    assert report["derived"]["raw_model.*"]["max_abs_diff"] == 0.0
    assert set(conversion.state) == {n for n in params if not n.startswith("teacher.")}


def test_averaged_weights_file_converts_with_default_options(base, tmp_path):
    """weight_average_tool.py saves {model_state} with model.* and the projectors (no raw_model.*,
    no cfg): FROSTER's B/16 options, the teacher from --base."""
    state = {k: v for k, v in official_model_state(base).items() if not k.startswith("raw_model.")}
    path = tmp_path / "swa_2_12.pth"
    torch.save({"model_state": state}, path)
    conversion = convert("froster", ConvertRequest(str(path), backbone=BACKBONE, base=str(base[0])))
    assert conversion.model.config.temporal_view == 1 and conversion.report["derived"] == {}
    assert any("no cfg" in n for n in conversion.report["notes"])
    assert any("no raw_model" in n for n in conversion.report["notes"])


def test_teacher_other_than_base_is_refused(base, tmp_path):
    state = official_model_state(base)
    state["raw_model.visual.ln_post.bias"] = state["raw_model.visual.ln_post.bias"] + 0.5
    ckpt = save_checkpoint(state, tmp_path / "c.pyth")
    with pytest.raises(HarnessError, match=r"raw_model\.visual\.ln_post\.bias differs from --base .* by up to 0\.5"):
        convert("froster", ConvertRequest(ckpt, backbone=BACKBONE, base=str(base[0])))
    with pytest.raises(HarnessError, match="--base"):
        convert("froster", ConvertRequest(ckpt, backbone=BACKBONE))


def test_missing_and_unknown_keys_are_named(base, tmp_path):
    state = official_model_state(base)
    del state["model.visual.proj"]
    state["model.visual.extra_adapter.weight"] = torch.zeros(3)
    ckpt = save_checkpoint(state, tmp_path / "c.pyth")
    with pytest.raises(HarnessError, match=r"model\.visual\.proj \(for clip\.visual\.proj\).*model\.visual\.extra_adapter"):
        convert("froster", ConvertRequest(ckpt, backbone=BACKBONE, base=str(base[0])))


def test_ddp_prefix_and_cli_round_trip(base, tmp_path, capsys):
    """A `module.`-prefixed state (a DDP model saved without unwrapping) converts too; the CLI
    writes a checkpoint whose model scores like the converted one."""
    from harness.cli import main

    state = {"module." + k: v for k, v in official_model_state(base, seed=1).items()}
    ckpt = save_checkpoint(state, tmp_path / "ddp.pyth")
    out = tmp_path / "froster.harness.pt"
    assert main(["convert", ckpt, "--from", "froster", "--backbone", BACKBONE, "--base", str(base[0]),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "froster -> method froster (8 frames)" in printed and "checked raw_model.*: max |diff| 0 " in printed
    assert "frozen weights: none in the release (it holds trained tensors only); the frozen ones come from --base" in printed
    report = json.loads((tmp_path / "froster.harness.pt.json").read_text())
    assert report["release"]["stripped_prefixes"] == ["module."]
    loaded = load_checkpoint(out).net.eval()
    reference = build_method("froster", copy.deepcopy(base[1]), base[2], 8, {}, None).eval()
    reference.load_state_dict(harness_names({k[len("module."):]: v for k, v in state.items()}))
    video = torch.randn(1, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(video, CLASSES), reference(video, CLASSES))


def harness_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys -> this project's parameter names (written out here, independently of the converter)."""
    out = {}
    for key, value in state.items():
        if key.startswith("model."):
            out["clip." + key[len("model."):]] = value
        elif key.startswith("raw_model."):
            out["teacher.clip." + key[len("raw_model."):]] = value
        else:
            out[key] = value
    return out
