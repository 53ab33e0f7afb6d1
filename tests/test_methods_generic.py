"""Behaviour every registered method must have (timm-style tests over the registry)."""
from __future__ import annotations

import copy

import pytest
import torch

from harness.backbone import create_clip, get_tokenizer
from methods.base import DESCRIPTION_NEEDS
from methods.registry import build_method, get_method, list_methods
from methods.sample_random import name_random_layers, sample_seeds

#: Exact trainable counts at ViT-B/16, 8 frames, default options, as ../shared/docs/METHODS.md states
#: them (its bold numbers, one section per method). The ONE place they live: a method must not
#: certify its own count, so a discovered method without an entry here fails
#: `test_exact_trainable_counts_vit_b16` until its count is copied from the reference.
EXPECTED_DEFAULT_COUNTS = {
    "zeroshot": 0,                    # METHODS.md "Zero-shot CLIP (reference row)"
    "vificlip": 124_323_841,          # "ViFi-CLIP": everything but token_embedding
    "vificlip_prompt": 184_320,       # "ViFi-CLIP": base-to-novel prompts, 16 tokens depth 9
    "st_adapter": 7_110_144,          # "ST-Adapter": 12x384 adapters
    "aim": 10_659_072,                # "AIM": text-matching
    "vitaclip": 28_524_545,           # "Vita-CLIP": this project's default
    "msta": 8_712_192,                # "MSTA": d=256, layers 1-12
    "froster": 150_669_313,           # "Being added": FROSTER @ 230ae88, the official model built at its default
    "xclip": 131_501_056,             # "Being added": X-CLIP, VideoX @ 1744b21 (the official model built at the
                                      # pinned commit, default config, trainable after its fix_text)
    "mote": 124_038_145,              # "Being added": MoTE @ 1d3fa01 built at its default (4 layers x 4 experts)
    "ost": 149_620_737,               # "Being added": OST @ 1810ae6, everything (USE: both; token_embedding too),
                                      # also counted on the official model built by trainers/OST.py returnCLIP
}
#: Exact trainable counts on ViCLIP-B/16 (joint space-time backbone), 8 frames, default options, for
#: every method that lists the joint layout. Inserted modules have their ViT-B/16 sizes (ViCLIP has
#: CLIP ViT-B/16's widths and depths: METHODS.md's counts, docs/methods/<m>.md for the joint forms);
#: ViFi-CLIP trains ViCLIP's own parameters but the token embedding: 149,603,841 - 49,408 x 512, from
#: the official state-dict listing (tests/data/viclip_b16_official_state_dict.tsv). A method that
#: lists "joint" fails `test_viclip_counts_or_refusal` until its count is added here; one that does
#: not must refuse ViCLIP in one line.
EXPECTED_VICLIP_COUNTS = {
    "zeroshot": 0,
    "vificlip": 124_306_945,
    "vificlip_prompt": 184_320,
    "st_adapter": 7_110_144,
    "aim": 10_659_072,
    "msta": 8_712_192,                # the MSTA paper's "8.7M" on its own backbone (ViCLIP-B/16)
    "froster": 150_652_417,           # every ViCLIP parameter (149,603,841) + two 512x512x2 projectors
                                      # (1,048,576); the frozen teacher adds 149,603,841 frozen
}
#: Why each method that does not list the joint layout refuses ViCLIP: a phrase its one-line refusal
#: must contain (its `layout_notes`), so that no method refuses with the generic default reason.
EXPECTED_VICLIP_REFUSALS = {
    "vitaclip": "each frame's CLS token",
    "xclip": "message token from each frame's CLS token",
    "mote": "one CLS feature per frame",
    "ost": "per-frame features",
}
#: Every registered method (discovered from the files in methods/): the tests below cover a new
#: method without being edited.
METHODS = list_methods()
#: The methods that run on a joint space-time backbone (ViCLIP), by their own declaration.
JOINT_METHODS = [m for m in METHODS if "joint" in get_method(m).model_cls.token_layouts]
CLASSES = [f"class {i}" for i in range(5)]
#: harness-tiny has 4 layers: prompt depth must fit (the `embedded`/`tiny` profiles do the same).
TINY_OPTIONS = {"vificlip_prompt": {"depth": 4}}


def test_registry_is_complete():
    """The methods of METHODS.md (reference and being added) are all discovered (a file that fails
    to register shows here)."""
    assert set(EXPECTED_DEFAULT_COUNTS) <= set(METHODS)


def test_frame_order_contract_of_the_reference_methods():
    """What each method's class claims (`models_frame_order`) for the methods above, as METHODS.md
    describes them (temporal modules vs mean-pooled frames; FROSTER's symmetric neighbour-frame
    attention cannot tell a clip from its reversal); the claim itself is checked against the model
    by `test_frame_order_sensitivity`."""
    temporal = {"st_adapter", "aim", "vitaclip", "msta", "xclip", "mote"}
    claims = {m: get_method(m).model_cls.models_frame_order for m in EXPECTED_DEFAULT_COUNTS}
    assert claims == {m: m in temporal for m in EXPECTED_DEFAULT_COUNTS}


def _tiny(method: str, frames: int = 4, seed: int = 0, options: dict | None = None, backbone: str = "harness-tiny"):
    clip, spec = create_clip(backbone, seed=seed)
    options = {**TINY_OPTIONS.get(method, {}), **(options or {})}
    net = build_method(method, clip, get_tokenizer(spec), frames, options, classnames=CLASSES)
    if net.run_needs(net.config) & DESCRIPTION_NEEDS:
        n = net.descriptions_per_class(net.config)
        net.set_descriptions(CLASSES, [[f"a red thing {j}" for j in range(n)]] * 5,
                             [[f"it starts, step {j}" for j in range(n)]] * 5)
    return net


def _perturb_trainable(net: torch.nn.Module, seed: int = 1) -> None:
    """Zero-initialised adapters would hide order effects: give every trainable tensor noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("method", METHODS)
def test_exact_trainable_counts_vit_b16(method, b16_meta):
    """Counts only: built on the meta device (the inserted modules too, no weights)."""
    assert method in EXPECTED_DEFAULT_COUNTS, (
        f"method {method!r} has no expected trainable count: add the count its reference states "
        "(../shared/docs/METHODS.md) to EXPECTED_DEFAULT_COUNTS")
    clip, tokenizer = b16_meta
    with torch.device("meta"):
        net = build_method(method, copy.deepcopy(clip), tokenizer, 8, {}, classnames=CLASSES)
    counts = net.parameter_counts()
    assert counts["trainable"] == EXPECTED_DEFAULT_COUNTS[method]
    assert counts["total"] >= 149_620_737
    assert counts["trainable_pct"] == pytest.approx(100 * counts["trainable"] / counts["total"], abs=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_forward_shapes_and_finite(method):
    net = _tiny(method).eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        logits = net(video, CLASSES)
        feats = net.encode_video(video)
    assert logits.shape == (2, len(CLASSES))
    assert torch.isfinite(logits).all()
    assert feats.shape[0] == 2 and torch.allclose(feats.norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_only_declared_parameters_change(method):
    torch.manual_seed(0)
    net = _tiny(method).train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        assert method == "zeroshot"
        return
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    video, labels = torch.randn(3, 4, 3, 64, 64), torch.tensor([0, 1, 2])
    for _ in range(3):
        loss = sum(net.losses(net(video, CLASSES), labels, CLASSES).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    declared = {n for n, p in net.named_parameters() if p.requires_grad}
    assert changed <= declared, f"frozen parameters moved: {sorted(changed - declared)[:5]}"
    assert changed, "nothing trained"


@pytest.mark.parametrize("method", METHODS)
def test_frame_order_sensitivity(method):
    """The output changes under time reversal exactly when the class says it models frame order."""
    net = _tiny(method, frames=4)
    _perturb_trainable(net)
    net.eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        forward = net.encode_video(video)
        reversed_ = net.encode_video(video.flip(1))
    differs = not torch.allclose(forward, reversed_, atol=1e-5)
    assert differs == get_method(method).model_cls.models_frame_order


@pytest.mark.parametrize("method", METHODS)
def test_training_losses_do_not_depend_on_the_micro_batch(method):
    """The engine runs an update's clips in micro-batches, each under its clips' seeds
    (methods.sample_random), with `batch_labels` = the whole update's labels: the losses of a
    4-clip batch must equal the mean of its two halves' losses, with torch's global generator
    in another state for each call. A method drawing training randomness (dropout, drop path,
    a random expert) from the global generator, or a loss over the clips rather than the labels
    that share the batch, fails here. (A linear head where the method has one: its dropout.)"""
    config = get_method(method).config_cls
    options = {"head": "linear"} if "head" in config.__dataclass_fields__ else {}
    net = _tiny(method, options=options)
    _perturb_trainable(net)
    name_random_layers(net)
    net.train()
    video, labels, seeds = torch.randn(4, 4, 3, 64, 64), torch.tensor([0, 3, 1, 3]), [5, 6, 7, 8]

    def losses(part: slice, global_seed: int) -> dict:
        torch.manual_seed(global_seed)
        with sample_seeds(seeds[part], update_seed=9):
            return net.training_losses(video[part], labels[part], CLASSES, batch_labels=labels)

    whole = losses(slice(0, 4), 1)
    first, second = losses(slice(0, 2), 2), losses(slice(2, 4), 3)
    assert whole.keys() == first.keys() == second.keys()
    coupled = get_method(method).model_cls.batch_coupled_losses  # the engine never splits those (runner)
    assert coupled <= whole.keys(), f"{method} declares coupled terms it does not return: {coupled - whole.keys()}"
    for key, value in whole.items():
        if key not in coupled:
            assert torch.allclose(value, (first[key] + second[key]) / 2, rtol=1e-4, atol=1e-5), key


@pytest.mark.parametrize("method", ["st_adapter", "aim"])
def test_zero_init_adapters_reproduce_frozen_clip(method):
    clip, spec = create_clip("harness-tiny", seed=3)
    reference = build_method("zeroshot", copy.deepcopy(clip), get_tokenizer(spec), 4).eval()
    net = build_method(method, clip, get_tokenizer(spec), 4).eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net.encode_video(video), reference.encode_video(video), atol=1e-5)


def test_frozen_text_features_are_cached_once_per_class_set():
    net = _tiny("st_adapter").train()
    calls = []
    original = net.class_text_features
    net.class_text_features = lambda names: calls.append(tuple(names)) or original(names)
    video = torch.randn(1, 4, 3, 64, 64)
    net(video, CLASSES)
    net(video, CLASSES)
    assert calls == [tuple(CLASSES)]


# -- the joint space-time layout (ViCLIP) --------------------------------------------------------
@pytest.fixture(scope="module")
def viclip_meta():
    with torch.device("meta"):
        return create_clip("ViCLIP-B-16")


@pytest.mark.parametrize("method", METHODS)
def test_viclip_counts_or_refusal(method, viclip_meta):
    """Every method runs on ViCLIP-B/16 with its exact count, or refuses it in one line (before any
    module is built) with the reason its class gives."""
    from harness.errors import ConfigurationError

    clip, spec = viclip_meta
    if method not in JOINT_METHODS:
        with pytest.raises(ConfigurationError) as err:
            build_method(method, copy.deepcopy(clip), get_tokenizer(spec), 8, {}, classnames=CLASSES)
        assert str(err.value).startswith(f"{method} does not run on a joint space-time backbone: ")
        assert "\n" not in str(err.value)
        assert method in EXPECTED_VICLIP_REFUSALS, (
            f"method {method!r} refuses ViCLIP-B/16: state why in its layout_notes['joint'] and add the reason to "
            "EXPECTED_VICLIP_REFUSALS (and to docs/methods/<method>.md)")
        assert EXPECTED_VICLIP_REFUSALS[method] in str(err.value)
        return
    assert method not in EXPECTED_VICLIP_REFUSALS
    assert method in EXPECTED_VICLIP_COUNTS, (
        f"method {method!r} lists the joint layout but has no expected trainable count on ViCLIP-B/16: add it to "
        "EXPECTED_VICLIP_COUNTS (and to docs/methods/<method>.md)")
    # The backbone's weights are on the meta device; the method's own modules are small real tensors.
    net = build_method(method, copy.deepcopy(clip), get_tokenizer(spec), 8, {}, classnames=CLASSES)
    assert net.parameter_counts()["trainable"] == EXPECTED_VICLIP_COUNTS[method]
    assert net.parameter_counts()["total"] >= 149_603_841


@pytest.mark.parametrize("method", JOINT_METHODS)
def test_joint_forward_shapes_and_only_declared_parameters_change(method):
    """On the tiny joint backbone: finite (B, C) logits, unit features, and training moves exactly the
    declared parameters (at least one)."""
    torch.manual_seed(0)
    net = _tiny(method, backbone="harness-tiny-joint")
    video, labels = torch.randn(3, 4, 3, 64, 64), torch.tensor([0, 1, 2])
    with torch.no_grad():
        net.eval()
        assert net(video, CLASSES).shape == (3, len(CLASSES))
        assert torch.allclose(net.encode_video(video).norm(dim=-1), torch.ones(3), atol=1e-5)
    net.train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        return
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        loss = sum(net.training_losses(video, labels, CLASSES).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {n for n, p in net.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", [m for m in JOINT_METHODS if get_method(m).model_cls.models_frame_order])
def test_joint_temporal_modules_use_frame_order(method):
    """With the joint backbone's own temporal embedding at zero (order-blind, as harness-tiny-joint
    starts), a method that claims to model frame order does so through its own modules."""
    net = _tiny(method, backbone="harness-tiny-joint")
    _perturb_trainable(net)
    net.eval()
    assert not net.clip.visual.temporal_positional_embedding.any()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(net.encode_video(video), net.encode_video(video.flip(1)), atol=1e-5)
