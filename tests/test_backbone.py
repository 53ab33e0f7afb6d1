"""Backbones go through open_clip's own mechanisms: the small configs are open_clip model
configs, QuickGELU comes from open_clip's pretrained config of a tag, OpenAI-format local
weights are never built with exact GELU, and the project's own tag is resolved before
`create_clip` (which knows nothing of pretraining)."""
from __future__ import annotations

import pytest
import torch

from harness.backbone import SMALL_CONFIGS, create_clip, is_openai_checkpoint, resolve_model_name
from harness.errors import HarnessError
from harness.weights import SYNTHETIC_TAG, resolve_weights


def test_small_configs_are_registered_with_open_clip():
    import open_clip

    create_clip("harness-tiny")
    assert {"harness-tiny", "harness-small", "harness-b16-2l"} <= set(SMALL_CONFIGS) <= set(open_clip.list_models())
    model = open_clip.create_model("harness-tiny")  # open_clip alone builds it now
    assert model.visual.image_size == (64, 64) and model.context_length == 32
    assert type(model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_quick_gelu_follows_the_tags_pretrained_config():
    assert resolve_model_name("ViT-B-16", "openai")[0] == "ViT-B-16-quickgelu"  # open_clip: quick_gelu=True
    assert resolve_model_name("ViT-B-16", "laion2b_s34b_b88k") == ("ViT-B-16", [])  # trained with GELU
    assert resolve_model_name("ViT-B-16-quickgelu", "openai") == ("ViT-B-16-quickgelu", [])


def test_openai_format_local_weights_with_a_gelu_name_stop(tmp_path):
    """A state dict taken from OpenAI's TorchScript release keeps its three int buffers: with
    --backbone ViT-B-16 (exact GELU) that is an error naming the -quickgelu config."""
    state = tmp_path / "openai_state.pt"
    torch.save({"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
                "vocab_size": torch.tensor(49408), "logit_scale": torch.tensor(4.6)}, state)
    with pytest.raises(HarnessError, match="ViT-B-16-quickgelu"):
        create_clip("ViT-B-16", str(state))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit: the format OpenAI released
def test_openai_format_detection(tmp_path):
    scripted = tmp_path / "jit.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))  # OpenAI ships TorchScript
    plain = tmp_path / "plain.pt"
    torch.save(create_clip("harness-tiny")[0].state_dict(), plain)  # open_clip's own format
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"input_resolution": torch.tensor(224)}}, wrapped)
    assert is_openai_checkpoint(scripted) and is_openai_checkpoint(wrapped)
    assert not is_openai_checkpoint(plain)
    model, spec = create_clip("harness-tiny", str(plain))  # a QuickGELU config takes any format
    assert spec.weights_sha256 and spec.quick_gelu


def test_project_tags_are_resolved_before_create_clip():
    assert resolve_weights("ViT-B-16", "openai") is None and resolve_weights("harness-tiny", None) is None
    with pytest.raises(HarnessError, match="only harness-tiny"):
        resolve_weights("harness-small", SYNTHETIC_TAG)
    with pytest.raises(HarnessError, match="harness.weights.create_backbone"):
        create_clip("harness-tiny", SYNTHETIC_TAG)  # create_clip alone never trains anything


def test_local_weights_say_which_activation_they_run(tmp_path, capsys):
    """A ViT name with a local open_clip-format file (which does not record the activation its
    weights were trained with): the first line of `harness run` says which one the name runs and
    how to choose the other; the same note is what the backbone records in every result."""
    import torch

    from harness.backbone import activation_note
    from harness.cli import main

    weights = tmp_path / "my_clip.pt"
    torch.save({"visual.proj": torch.zeros(1)}, weights)
    assert main(["run", "--methods", "zeroshot", "--protocol", "base2novel", "--backbone", "ViT-B-16",
                 "--pretrained", str(weights), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == ("harness: note: ViT-B-16 runs exact GELU (its name says so; my_clip.pt does not record the "
                     "activation its weights were trained with); if they were trained with QuickGELU (OpenAI CLIP "
                     "and the video-CLIP releases built on it), pass --backbone ViT-B-16-quickgelu")
    assert "pass --backbone ViT-B-16)" not in first
    assert activation_note("ViT-B-16-quickgelu", weights).endswith("if they were trained with exact GELU, pass "
                                                                  "--backbone ViT-B-16")
    assert activation_note("harness-tiny", weights) is None  # this project's configs have one activation
