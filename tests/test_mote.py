"""MoTE (ZMHH-H/MoTE @ 1d3fa01): the temporal module against a transcription of the official
`video_header` (names, shapes, expert / merged / evaluation paths, the temporal feature
modulation), the training objective and the 0.99 / 0.01 evaluation against the official formulas,
the routing and merging against hand-computed values, the trainable set and optimiser groups at
ViT-B/16, and the option edge cases. The official code itself was run against this module outside
the repository (docs/methods/mote.md, "Parity")."""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch
import torch.nn.functional as F
from method_helpers import CLASSES_400, build_b16, builder, video
from torch import nn

from harness.errors import HarnessError
from methods.mote import (
    ENSEMBLE_TEMPLATES,
    MERGE_TEMPERATURES,
    MoTEHead,
    TemporalExperts,
    gate_probabilities,
    merge_weights,
    modulation_scale,
)
from methods.registry import make_config

CLASSES = ["archery", "bowling", "juggling", "surfing", "diving", "rowing"]
EVAL = ["clapping", "climbing", "catching", "chewing", "brushing hair", "cartwheeling", "diving"]
build = builder("mote", frames=4, classnames=CLASSES)


# -- a transcription of the official temporal module (modules/video_clip.py) -------------------
class RefLayerNorm(nn.Module):
    """video_clip.py L10-23: TF-style LayerNorm, eps inside the square root (1e-12)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * (x - u) / torch.sqrt(s + 1e-12) + self.bias


class RefMoTE(nn.Module):
    """video_clip.py L29-110, with the random draws made arguments: mode ('expert', i),
    ('merge', tau) or ('eval', None)."""

    def __init__(self, width: int, experts: int) -> None:
        super().__init__()
        self.num_experts = experts
        self.fc_up = nn.ModuleList(nn.Linear(width, width * 4) for _ in range(experts))
        self.fc_dn = nn.ModuleList(nn.Linear(width * 4, width) for _ in range(experts))
        self.mote_fusion_weight = nn.Parameter(torch.zeros(experts), requires_grad=False)

    def fusion(self, tau):
        weight = torch.arange(start=1, end=self.num_experts + 1, dtype=torch.float)
        weight = F.softmax(self.mote_fusion_weight, dim=-1) if tau is None else F.softmax(weight / tau, dim=-1)
        up, dn = {"weight": 0, "bias": 0}, {"weight": 0, "bias": 0}
        for idx in range(self.num_experts):
            for s_name, s_param in self.fc_up[idx].named_parameters():
                up[s_name] = up[s_name] + weight[idx] * s_param
            for s_name, s_param in self.fc_dn[idx].named_parameters():
                dn[s_name] = dn[s_name] + weight[idx] * s_param
        return up, dn

    def forward(self, x, mode):
        kind, arg = mode
        if kind == "expert":
            return self.fc_dn[arg](quick(self.fc_up[arg](x)))
        up, dn = self.fusion(arg if kind == "merge" else None)
        return F.linear(quick(F.linear(x, up["weight"], up["bias"])), dn["weight"], dn["bias"])


def quick(x):
    return x * torch.sigmoid(1.702 * x)


class RefBlock(nn.Module):
    def __init__(self, width, heads, experts):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = RefLayerNorm(width)
        self.mlp = RefMoTE(width, experts)
        self.ln_2 = RefLayerNorm(width)

    def forward(self, x, mode):  # x: (L, N, D), as upstream
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x), mode)


class RefTransformer(nn.Module):
    def __init__(self, width, layers, heads, experts):
        super().__init__()
        self.resblocks = nn.Sequential(*[RefBlock(width, heads, experts) for _ in range(layers)])


class RefHeader(nn.Module):
    """video_header (sim_header Transf, interaction DP): agg_video_feat and get_logits."""

    def __init__(self, width, heads, layers, experts, positions, spe_rows):
        super().__init__()
        self.spe_cls_feature = nn.Parameter(torch.zeros(spe_rows, width), requires_grad=False)
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.transformer = RefTransformer(width, layers, heads, experts)

    def agg_video_feat(self, x, modes, gen_cls_feat=None):
        b, t, c = x.size()
        if gen_cls_feat is not None:  # L219-242, num_esti 5, scale_param 0.05
            x_clip = x.mean(dim=1, keepdim=False)
            x_clip = x_clip / x_clip.norm(dim=-1, keepdim=True)
            bs, c_ = x_clip.size()
            gen_values, gen_indices = (x_clip @ gen_cls_feat.t()).topk(5, -1, True, True)
            gen_feat_esti = torch.gather(input=gen_cls_feat.unsqueeze(0).expand(bs, -1, -1), dim=1,
                                         index=gen_indices.unsqueeze(-1).expand(-1, -1, c_))
            spe_values, spe_indices = (x_clip @ self.spe_cls_feature.t()).topk(5, -1, True, True)
            spe_feat_esti = torch.gather(input=self.spe_cls_feature.unsqueeze(0).expand(bs, -1, -1), dim=1,
                                         index=spe_indices.unsqueeze(-1).expand(-1, -1, c_))
            gen_spe_sim = torch.bmm(gen_feat_esti, spe_feat_esti.permute(0, 2, 1))
            gen_spe_sim, _ = torch.max(gen_spe_sim, dim=-1)
            gen_spe_sim = 1 / torch.exp((1 - gen_spe_sim.mean(dim=-1)) / 0.05)
            gen_spe_sim = gen_spe_sim.unsqueeze(-1).unsqueeze(-1)
        else:
            gen_spe_sim = torch.ones(1)
        x_original = x
        position_ids = torch.arange(t, dtype=torch.long).unsqueeze(0).expand(b, -1)
        x = x + self.frame_position_embeddings(position_ids)
        x = x.permute(1, 0, 2)
        for block, mode in zip(self.transformer.resblocks, modes):
            x = block(x, mode)
        x = x.permute(1, 0, 2)
        return gen_spe_sim * x.type(x_original.dtype) + x_original

    @staticmethod
    def get_logits(vid_emb, cls_emb):
        vid_emb = vid_emb.mean(dim=1, keepdim=False)
        vid_emb = vid_emb / vid_emb.norm(dim=-1, keepdim=True)
        cls_emb = cls_emb / cls_emb.norm(dim=-1, keepdim=True)
        return vid_emb @ cls_emb.t()


def _randomised_head(width=64, heads=2, layers=4, experts=4, positions=32, spe_rows=6, seed=0):
    """Our head with every tensor random (mote_fusion_weight too: a non-uniform evaluation merge)."""
    torch.manual_seed(seed)
    head = MoTEHead(width, heads, layers, experts, positions, spe_rows)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        head.set_trained_class_features(F.normalize(torch.randn(spe_rows, width), dim=-1))
    ref = RefHeader(width, heads, layers, experts, positions, spe_rows)
    ref.load_state_dict(head.state_dict())  # strict: the official names and shapes
    return head, ref


def test_head_state_dict_is_the_official_one():
    head, ref = _randomised_head()
    ours = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert "transformer.resblocks.3.mlp.fc_dn.3.bias" in ours and "transformer.resblocks.0.mlp.mote_fusion_weight" in ours


def test_head_paths_match_the_official_transcription():
    head, ref = _randomised_head()
    x = torch.randn(3, 4, 64)
    taus = [MERGE_TEMPERATURES[i] for i in (0, 4, 7, 10)]
    with torch.no_grad():
        expert = head(x, [2, 0, 3, 1])
        merged = head(x, [merge_weights(4, tau) for tau in taus])
        evaluated = head(x)
        gen = F.normalize(torch.randn(7, 64), dim=-1)
        modulated = head(x, None, modulation_scale(x, gen, head.spe_cls_feature, 5, 0.05))
        torch.testing.assert_close(expert, ref.agg_video_feat(x, [("expert", i) for i in (2, 0, 3, 1)]))
        torch.testing.assert_close(merged, ref.agg_video_feat(x, [("merge", tau) for tau in taus]))
        torch.testing.assert_close(evaluated, ref.agg_video_feat(x, [("eval", None)] * 4))
        torch.testing.assert_close(modulated, ref.agg_video_feat(x, [("eval", None)] * 4, gen))
    assert not torch.allclose(modulated, evaluated, atol=1e-3)  # the modulation acted


# -- routing and merging, by hand ----------------------------------------------------------
def test_gate_probabilities_by_hand():
    # softmax(1, 2, 3, 4) = e^k / (e + e^2 + e^3 + e^4) = 2.71828 / 84.79102, ...
    assert gate_probabilities(4, 1.0) == pytest.approx([0.0320586, 0.0871443, 0.2368828, 0.6439143], abs=1e-7)
    assert gate_probabilities(3, math.inf) == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("u, expert", [(0.01, 0), (0.05, 1), (0.2, 2), (0.5, 3), (0.999, 3)])
def test_expert_draw_follows_the_gate(monkeypatch, u, expert):
    # CDF of the gate: 0.0320586, 0.1192029, 0.3560857, 1.0: a uniform draw u picks the first
    # expert whose cumulative probability exceeds it.
    head = MoTEHead(8, 1, 2, 4, 8, 0)
    monkeypatch.setattr(random, "random", lambda: u)
    assert head.sample_experts(1.0) == [expert, expert]


def test_merge_weights_by_hand():
    assert merge_weights(4, math.inf).tolist() == [0.25] * 4  # [1..4] / inf = 0: the plain average
    # tau = -0.6: softmax(-1.667, -3.333, -5, -6.667): e^0, e^-1.667, e^-3.333, e^-5 over their sum 1.231288
    assert merge_weights(4, -0.6).tolist() == pytest.approx([0.812158, 0.1533968, 0.0289729, 0.0054723], abs=1e-6)
    # tau = 2.4: softmax(0.4167, 0.8333, 1.25, 1.6667)
    assert merge_weights(4, 2.4).tolist() == pytest.approx([0.1203628, 0.1825779, 0.2769519, 0.4201074], abs=1e-6)


def test_merge_draws_are_uniform_over_the_temperatures(monkeypatch):
    # u in [k/11, (k+1)/11) picks temperature k of the 11: 0.42 -> 4 (-0.6), 0.72 -> 7 (2.4), 0.999 -> 10 (inf)
    head = MoTEHead(8, 1, 3, 4, 8, 0)
    draws = iter([0.42, 0.72, 0.999])
    monkeypatch.setattr(random, "random", lambda: next(draws))
    merges = head.sample_merges()
    assert [m.tolist() for m in merges] == [merge_weights(4, t).tolist() for t in (-0.6, 2.4, math.inf)]


def test_draws_in_a_training_step_are_per_update():
    """Inside an engine step every micro-batch of an update draws the same experts and
    temperatures (the update's seed), whatever torch's or Python's global state; another update
    draws anew."""
    from methods.sample_random import sample_seeds

    head = MoTEHead(8, 1, 4, 4, 8, 0)

    def draws(update_seed, global_seed):
        random.seed(global_seed)
        torch.manual_seed(global_seed)
        with sample_seeds([1, 2], update_seed=update_seed):
            return head.sample_experts(1.0), [m.tolist() for m in head.sample_merges()]

    assert draws(9, 1) == draws(9, 2)
    assert len({str(draws(seed, 0)) for seed in range(8)}) > 1  # another update, other draws


def test_experts_are_merged_in_weight_space_by_hand():
    # Width 1: expert 0 has every weight 1, expert 1 every weight 3, biases 0. Merged with
    # (0.25, 0.75): every weight 2.5, so x = 1 -> up = 2.5 (x4) -> QuickGELU(2.5) = 2.5 sigmoid(4.255)
    # = 2.465014 -> down: 4 x 2.5 x 2.465014 = 24.65014. (Averaging the experts' outputs instead would
    # give 0.25 x 4 QuickGELU(1) + 0.75 x 12 QuickGELU(3) = 27.68315.)
    experts = TemporalExperts(1, 2)
    with torch.no_grad():
        for i, value in enumerate((1.0, 3.0)):
            for layer in (experts.fc_up[i], experts.fc_dn[i]):
                layer.weight.fill_(value)
                layer.bias.zero_()
    x = torch.ones(1, 1, 1)
    assert experts(x, torch.tensor([0.25, 0.75])).item() == pytest.approx(24.65014, abs=1e-4)
    assert experts(x, 1).item() == pytest.approx(12 * 3 / (1 + math.exp(-1.702 * 3)), abs=1e-4)
    # evaluation: softmax(mote_fusion_weight) = softmax(0, 0) = (0.5, 0.5): weights 2 -> 4 x 2 x QuickGELU(2)
    assert experts(x).item() == pytest.approx(8 * 2 / (1 + math.exp(-1.702 * 2)), abs=1e-4)


def test_modulation_by_hand():
    # The clip's mean frame feature is e1. Scored classes e1, e2 (top-5 -> both); trained e1:
    # best cosines (1, 0), mean m = 0.5, s = 1 / exp((1 - 0.5) / 0.05) = e^-10 = 4.54e-5.
    frames = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    scored = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    trained = torch.tensor([[1.0, 0.0]])
    assert modulation_scale(frames, scored, trained, 5, 0.05).item() == pytest.approx(math.exp(-10), rel=1e-5)
    # scored == trained: every best cosine is 1, s = 1 (the training classes keep the full module)
    assert modulation_scale(frames, trained, trained, 5, 0.05).item() == pytest.approx(1.0)
    # topk 1: only e1 is kept of the scored classes, s = 1
    assert modulation_scale(frames, scored, trained, 1, 0.05).item() == pytest.approx(1.0)


# -- the training objective --------------------------------------------------------------------
def _fixed_frames(model, frames):
    model.clip_frames = lambda _video: frames


def test_training_losses_by_hand(tiny):
    # Temporal module all zeros: every block adds 0, so its output is 2x (x + 0 + x, the official
    # double residual). Frames x = 1 everywhere (E = 64): MSE(2x, x) = 1 -> loss_mse = 0.1.
    # Classes: c0 = e1, c1 = ones / 8; the pooled clip feature is ones / 8, so cosines (0.125, 1);
    # logit_scale 0 (scale 1): CE(label 0) = ln(e^0.125 + e^1) - 0.125 = 1.2234446, the same on
    # both paths -> loss_merged = 0.5 x 1.2234446.
    model = build(tiny, {}, classnames=["c0", "c1"]).train()
    with torch.no_grad():
        for p in model.video_head.parameters():
            p.zero_()
        model.clip.logit_scale.zero_()
    _fixed_frames(model, torch.ones(1, 4, 64))
    text = torch.stack([F.one_hot(torch.tensor(0), 64).float(), torch.full((64,), 1 / 8)])
    model.text_features = lambda names: text
    losses = model.training_losses(video(1, 4), torch.tensor([0]), ["c0", "c1"])
    assert losses["loss_mse"].item() == pytest.approx(0.1, abs=1e-6)
    assert losses["loss_cls"].item() == pytest.approx(1.2234446, abs=1e-5)
    assert losses["loss_merged"].item() == pytest.approx(0.5 * 1.2234446, abs=1e-5)


def test_training_losses_match_the_official_formula(tiny, monkeypatch):
    """train.py L332-336 on the transcription: CE(scale x expert logits) + 0.5 CE(scale x merged
    logits) + 0.1 MSE(merged output, frame features), with the same draws."""
    model = build(tiny).train()
    with torch.no_grad():
        for p in model.video_head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ref = RefHeader(64, 2, 4, 4, 32, len(CLASSES))
    ref.load_state_dict({k: v for k, v in model.video_head.state_dict().items()})
    experts, taus = [3, 1, 0, 2], [-4.8, 0.6, math.inf, 9.6]
    monkeypatch.setattr(model.video_head, "sample_experts", lambda _t: list(experts))
    monkeypatch.setattr(model.video_head, "sample_merges", lambda: [merge_weights(4, t) for t in taus])
    clip_video, labels = video(3, 4), torch.tensor([0, 2, 5])
    losses = model.training_losses(clip_video, labels, CLASSES)
    with torch.no_grad():
        frames = model.clip_frames(clip_video)
        text = model.text_features(CLASSES)
        scale = model.clip.logit_scale.exp()
        reg = ref.agg_video_feat(frames, [("merge", t) for t in taus])
        loss_exp = F.cross_entropy(scale * ref.get_logits(ref.agg_video_feat(frames, [("expert", i) for i in experts]), text), labels)
        loss_wmr = F.cross_entropy(scale * ref.get_logits(reg, text), labels)
        mse = nn.MSELoss()(reg, frames)
    torch.testing.assert_close(losses["loss_cls"], loss_exp)
    torch.testing.assert_close(losses["loss_merged"], 0.5 * loss_wmr)
    torch.testing.assert_close(losses["loss_mse"], 0.1 * mse)


def test_expert_path_trains_only_the_drawn_experts(tiny, monkeypatch):
    model = build(tiny).train()
    monkeypatch.setattr(model.video_head, "sample_experts", lambda _t: [1, 1, 2, 0])
    losses = model.losses(model(video(2, 4), CLASSES), torch.tensor([0, 1]), CLASSES)
    sum(losses.values()).backward()
    for i, block in enumerate(model.video_head.blocks):
        has_grad = [layer.weight.grad is not None for layer in block.mlp.fc_up]
        assert has_grad == [e == [1, 1, 2, 0][i] for e in range(4)]
    assert model.clip.visual.conv1.weight.grad is not None and model.clip.logit_scale.grad is not None
    assert all(p.grad is None for p in model.clip.transformer.parameters())  # the text tower is frozen


# -- evaluation: the official weight mixing and modulation ---------------------------------------
def _trained(tiny, options=None):
    """A model whose trainable tensors moved away from the pretrained ones (as after training)."""
    model = build(tiny, options or {})
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def test_evaluation_mixes_trained_and_original_weights(tiny):
    """test_zeroshot.py L171-184: load 0.99 x trained + 0.01 x original into the image tower and
    logit_scale; the temporal module as trained. Reference: a model without mixing holding those
    weights."""
    model = _trained(tiny).eval()
    original = {k: v for k, v in tiny[0].state_dict().items()}
    reference = copy.deepcopy(model)
    reference.config = make_config("mote", {"eval_visual_mix": 1.0})
    reference.visual_origin = None
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.startswith("clip.visual.") or name == "clip.logit_scale":
                p.copy_(0.99 * p + 0.01 * original[name[len("clip."):]])
    before = {k: v.clone() for k, v in model.named_parameters()}
    clip_video = video(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(clip_video, EVAL), reference(clip_video, EVAL))
        torch.testing.assert_close(model.encode_video(clip_video), reference.encode_video(clip_video))
        assert not torch.allclose(model(clip_video, EVAL), model.train()(clip_video, EVAL).detach(), atol=1e-4)
    assert all(torch.equal(v, model.get_parameter(k)) for k, v in before.items())  # nothing was overwritten


def test_mixed_logit_scale_by_hand(tiny):
    # trained logit_scale ln 100, original 0: evaluation scale exp(0.99 ln 100) = 100^0.99 = 95.49926
    model = build(tiny).eval()
    with torch.no_grad():
        model.visual_origin._buffers[f"w{model.visual_origin.names.index('clip.logit_scale')}"].zero_()
        model.clip.logit_scale.fill_(math.log(100))
    clip_video = video(2, 4)
    with torch.no_grad():
        scaled = model(clip_video, EVAL)
        model.config.eval_logits = "cosine"
        cosine = model(clip_video, EVAL)
    torch.testing.assert_close(scaled, 95.49926 * cosine, rtol=1e-5, atol=1e-6)
    assert cosine.abs().max() <= 1.0 + 1e-6


def test_training_mode_uses_the_trained_weights(tiny):
    model = _trained(tiny).train()
    plain = copy.deepcopy(model)
    plain.visual_origin = None
    clip_video = video(2, 4)
    torch.testing.assert_close(model.clip_frames(clip_video), plain.clip_frames(clip_video))


def test_evaluation_matches_the_official_header(tiny):
    """Evaluation on unseen classes: frame features -> merged experts with the temporal feature
    modulation against the training classes' features (the official `video_header` in eval)."""
    model = _trained(tiny, {"eval_visual_mix": 1.0}).eval()
    ref = RefHeader(64, 2, 4, 4, 32, len(CLASSES))
    with torch.no_grad():
        spe = model.trained_class_features()
        torch.testing.assert_close(spe, model.text_features(CLASSES))  # built from the training classes
        ref.load_state_dict(model.video_head.state_dict())
        clip_video = video(3, 4)
        frames = model.clip_frames(clip_video)
        text = model.text_features(EVAL)
        expected = ref.get_logits(ref.agg_video_feat(frames, [("eval", None)] * 4, text), text)
        torch.testing.assert_close(model(clip_video, EVAL), model.clip.logit_scale.exp() * expected)


def test_modulation_off_and_fewer_classes_than_topk(tiny):
    model = _trained(tiny, {"eval_visual_mix": 1.0}).eval()
    off = copy.deepcopy(model)
    off.config = make_config("mote", {"modulation": "off", "eval_visual_mix": 1.0})
    clip_video = video(2, 4)
    with torch.no_grad():
        frames = model.clip_frames(clip_video)
        unmodulated = F.normalize(model.video_head(frames).mean(1), dim=-1)
        torch.testing.assert_close(off.encode_video(clip_video, class_features=model.text_features(EVAL)),
                                   unmodulated)
        two = model(clip_video, EVAL[:2])  # 2 classes < top-5 (upstream's topk would fail)
    assert two.shape == (2, 2) and torch.isfinite(two).all()


def test_trained_class_features_need_training_classes(tiny):
    model = build(tiny, {}, classnames=None).eval()
    with pytest.raises(HarnessError, match="neither training class names nor a loaded spe_cls_feature"):
        model(video(1, 4), EVAL)
    off = build(tiny, {"modulation": "off"}, classnames=None).eval()
    assert off(video(1, 4), EVAL).shape == (1, len(EVAL))


def test_loaded_class_buffer_is_used_and_zeros_are_rebuilt(tiny):
    # An official checkpoint holds 400 rows (Kinetics); the buffer takes the loaded shape and is used.
    model = build(tiny).eval()
    kinetics = F.normalize(torch.randn(400, 64), dim=-1)
    state = {k: v for k, v in model.video_head.state_dict().items()}
    model.video_head.load_state_dict({**state, "spe_cls_feature": kinetics})
    assert torch.equal(model.trained_class_features(), kinetics)
    # A trainable-only checkpoint completed with zeros: rebuilt from the training classes.
    model.video_head.load_state_dict({**state, "spe_cls_feature": torch.zeros(6, 64)})
    torch.testing.assert_close(model.trained_class_features(), model.text_features(CLASSES))


def test_too_many_frames_is_a_clear_error(tiny):
    model = build(tiny, {}, frames=33).eval()  # harness-tiny's text context: 32 positions
    with pytest.raises(HarnessError, match="33 frames, but the temporal module has 32 frame position"):
        model.encode_video(video(1, 33, size=64))


# -- text -------------------------------------------------------------------------------------
def test_class_features_are_the_28_template_ensemble(tiny):
    model = build(tiny).eval()
    assert len(ENSEMBLE_TEMPLATES) == 28
    assert ENSEMBLE_TEMPLATES[:2] == ("a photo of {}.", "a photo of a person {}.")
    assert ENSEMBLE_TEMPLATES[-1] == "a demonstration of a person practicing {}."
    per_template = torch.stack([model.encode_text([t.format(c) for c in CLASSES]) for t in ENSEMBLE_TEMPLATES])
    expected = per_template.mean(0)
    torch.testing.assert_close(model.text_features(CLASSES), expected / expected.norm(dim=-1, keepdim=True))
    single = build(tiny, {"templates": "single", "prompt": "a clip of {}"}).eval()
    torch.testing.assert_close(single.text_features(CLASSES), single.encode_text([f"a clip of {c}" for c in CLASSES]))


# -- trainable set and optimiser at ViT-B/16 -----------------------------------------------------
def test_trainable_set_and_groups_vit_b16(b16_meta):
    # Image tower 86,192,640 + logit_scale 1 = 86,192,641 at lr x 0.07. Temporal module:
    # positions 77 x 512 = 39,424; per block attention 512 x 1536 + 1536 + 512 x 512 + 512 = 1,050,624,
    # LayerNorms 2,048, 4 experts x (512 x 2048 + 2048 + 2048 x 512 + 512) = 8,398,848 -> 9,451,520;
    # 4 blocks 37,806,080 + 39,424 = 37,845,504 at lr. Total 124,038,145.
    model = build_b16(b16_meta, {}, method="mote")
    groups = {g.lr_scale: g for g in model.param_groups()}
    assert sorted(groups) == [0.07, 1.0]
    assert sum(p.numel() for p in groups[0.07].params) == 86_192_641
    assert all(n.startswith("clip.") for n in groups[0.07].names)
    assert sum(p.numel() for p in groups[1.0].params) == 37_845_504
    assert all(g.weight_decay for g in groups.values())
    assert not any(n.startswith("clip.transformer.") or n.endswith("mote_fusion_weight")
                   for g in groups.values() for n in g.names)
    frozen_tower = build_b16(b16_meta, {"train_visual": False}, method="mote")
    assert frozen_tower.parameter_counts()["trainable"] == 37_845_504 + 1


def test_engine_builds_the_two_learning_rates(b16_meta):
    from types import SimpleNamespace

    from harness.engine.runner import _optim_wrapper
    from harness.settings import Schedule

    model = build_b16(b16_meta, {}, method="mote")
    job = SimpleNamespace(method="mote", method_options=make_config("mote", {"lr": 5e-5, "weight_decay": 0.2}),
                          schedule=Schedule(betas=[0.9, 0.999], eps=1e-8, grad_clip=0.0))
    groups = {g["group"]: g for g in _optim_wrapper(model, job, amp=False).optimizer.param_groups}
    assert sorted(groups) == ["decay", "decay_lr_x0.07"]
    assert groups["decay_lr_x0.07"]["lr"] == pytest.approx(3.5e-6) and groups["decay"]["lr"] == 5e-5
    assert groups["decay_lr_x0.07"]["weight_decay"] == groups["decay"]["weight_decay"] == 0.2


@pytest.mark.parametrize("options, match", [
    ({"num_experts": 0}, "num_experts=0: must be >= 1"),
    ({"eval_visual_mix": 1.5}, r"eval_visual_mix=1.5: must be in \[0, 1\]"),
    ({"modulation_temperature": 0.0}, "modulation_temperature=0.0: must be > 0"),
    ({"templates": "many"}, "templates"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(HarnessError, match=match):
        make_config("mote", options)


def test_original_weights_kept_only_for_mixing(tiny):
    assert build(tiny, {"eval_visual_mix": 1.0}).visual_origin is None
    model = build(tiny)
    mixed = [n for n, _ in model.named_parameters() if n.startswith("clip.visual.") or n == "clip.logit_scale"]
    assert model.visual_origin.names == mixed and "clip.logit_scale" in mixed
    assert not any("visual_origin" in k for k in model.state_dict())  # never in a checkpoint


def test_class_buffer_has_a_row_per_training_class(b16_meta):
    model = build_b16(b16_meta, {}, method="mote")
    assert model.video_head.spe_cls_feature.shape == (len(CLASSES_400), 512)
    assert not model.video_head.spe_cls_feature.requires_grad


# -- converting official checkpoints (utils/utils.py epoch_saving) --------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tiny):
    """harness-tiny's weights as a local file: the --base of the conversions."""
    path = tmp_path_factory.mktemp("base") / "tiny.pt"
    torch.save(tiny[0].state_dict(), path)
    return str(path)


def _official_file(model, path, classes=CLASSES, prefix=""):
    """What `epoch_saving(epoch, model.module, video_head, optimizer, filename)` writes: VideoCLIP's
    state dict (logit_scale, visual.*), video_header's (spe_cls_feature = the training classes'
    features, frame_position_embeddings, transformer.*), and AdamW's two groups (CLIP at lr x
    0.07, the head at lr) after a step."""
    from collections import OrderedDict

    clip_params = [model.clip.logit_scale, *model.clip.visual.parameters()]
    optimizer = torch.optim.AdamW([{"params": clip_params, "lr": 5e-5 * 0.07},
                                   {"params": list(model.video_head.parameters()), "lr": 5e-5}], weight_decay=0.2)
    for p in clip_params + list(model.video_head.parameters()):
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()  # the saved optimiser has state; the weights are saved after the step, as upstream
    clip_part = OrderedDict([("logit_scale", model.clip.logit_scale.detach().clone())])
    clip_part.update((f"visual.{k}", v.detach().clone()) for k, v in model.clip.visual.state_dict().items())
    head_part = OrderedDict((prefix + k, v.detach().clone()) for k, v in model.video_head.state_dict().items())
    with torch.no_grad():
        head_part[prefix + "spe_cls_feature"] = model.eval().text_features(classes).clone()
    torch.save({"epoch": 7, "model_state_dict": clip_part, "fusion_model_state_dict": head_part,
                "optimizer_state_dict": optimizer.state_dict()}, path)
    return path


def _convert(path, base, classes=CLASSES, **kwargs):
    from harness.convert import ConvertRequest, convert

    return convert("mote", ConvertRequest(str(path), backbone="harness-tiny", base=base, classes=classes, **kwargs))


def test_official_checkpoint_converts_and_evaluates_the_same(tiny, tiny_base, tmp_path):
    from harness.convert.checkpoint import load_checkpoint, save_converted

    source = _trained(tiny)
    with torch.no_grad():
        for block in source.video_head.blocks:
            block.mlp.mote_fusion_weight.normal_()
    path = _official_file(source, tmp_path / "last_model.pt", prefix="module.")  # DDP-wrapped head: unwrapped
    conversion = _convert(path, tiny_base)
    report = conversion.report
    assert report["filled_from_release"] + report["filled_from_base"] == len(dict(conversion.model.named_parameters()))
    assert list(report["ignored"]) == ["fusion_model_state_dict.spe_cls_feature"]
    assert report["derived"]["fusion_model_state_dict.spe_cls_feature"]["max_abs_diff"] < 1e-6
    assert all(name.startswith("clip.") and not name.startswith("clip.visual.") for name in conversion.meta["from_base"])
    loaded = load_checkpoint(save_converted(conversion, tmp_path / "mote.harness.pt"), method="mote")
    clip_video = video(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(clip_video, EVAL), source.eval()(clip_video, EVAL))
    assert loaded.net.video_head.blocks[0].mlp.mote_fusion_weight.abs().sum() > 0


def test_conversion_checks_the_training_classes(tiny, tiny_base, tmp_path):
    path = _official_file(_trained(tiny), tmp_path / "model_best.pt")
    swapped = [CLASSES[1], CLASSES[0], *CLASSES[2:]]
    with pytest.raises(HarnessError, match=r"spe_cls_feature does not match.*first class 0 \('bowling'"):
        _convert(path, tiny_base, classes=swapped)
    with pytest.raises(HarnessError, match="has 6 rows .* name its classes in training order with --classes"):
        _convert(path, tiny_base, classes=None)


def test_conversion_needs_both_state_dicts_and_the_base(tiny, tiny_base, tmp_path):
    path = _official_file(_trained(tiny), tmp_path / "m.pt")
    with pytest.raises(HarnessError, match="needs the base CLIP"):
        _convert(path, None)
    saved = torch.load(path, weights_only=True)
    del saved["fusion_model_state_dict"]
    torch.save(saved, tmp_path / "half.pt")
    with pytest.raises(HarnessError, match="no fusion_model_state_dict entry"):
        _convert(tmp_path / "half.pt", tiny_base)
