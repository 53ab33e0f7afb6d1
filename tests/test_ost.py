"""OST: the official trainable set and count, forward and loss against a transcription of the
official code (trainers/OST.py, main_nce.py, utils/NCELoss.py, utils/textprompt.py @ 1810ae6),
Sinkhorn and the NCE loss against hand-computed values, the two stopping rules, the loss on the
global batch under any micro-batch split, the weight blending of the official zero-shot
evaluation, and the descriptor plumbing (embedded files, per-list references of a job)."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from method_helpers import make_backbone

from harness.data.embedded import MAIN_CLASSES, ORDER_PAIRS, ZS_CLASSES
from harness.data.embedded_descriptors import N_DESCRIPTORS, OST_DESCRIPTORS
from harness.errors import HarnessError
from methods.ost import OST, nce_rows, sinkhorn_plan
from methods.registry import build_method, make_config

CLASSES = ["brush hair", "cartwheel", "catch", "chew"]
SPATIAL = [[f"{c} look {j}" for j in range(4)] for c in CLASSES]
TEMPORAL = [[f"{c} step {j}" for j in range(4)] for c in CLASSES]


@pytest.fixture(scope="module")
def perturbed_tiny():
    """harness-tiny with EVERY tensor perturbed (LayerNorm gains and biases, attention biases,
    logit_scale too), and its tokenizer."""
    clip, tokenizer = make_backbone("harness-tiny")
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05 * (p.std() if p.numel() > 1 else 1.0))
    return clip, tokenizer


def build(backbone, options=None, frames: int = 4) -> OST:
    clip, tokenizer = backbone
    net = build_method("ost", copy.deepcopy(clip), tokenizer, frames, options or {}, CLASSES)
    net.set_descriptions(CLASSES, SPATIAL, TEMPORAL)
    return net


def clips(batch: int, frames: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# -- the official computation, transcribed ---------------------------------------------------------
def official_sinkhorn(K, u, v, max_iter=100, thresh=1e-2):
    """OST.Sinkhorn: r, c from ones; stop after the update whose batch-mean |r - r0| < thresh."""
    r, c = torch.ones_like(u), torch.ones_like(v)
    for _ in range(max_iter):
        r0 = r
        r = u / torch.matmul(K, c.unsqueeze(-1)).squeeze(-1)
        c = v / torch.matmul(K.permute(0, 2, 1).contiguous(), r.unsqueeze(-1)).squeeze(-1)
        if (r - r0).abs().mean().item() < thresh:
            break
    return torch.matmul(r.unsqueeze(-1), c.unsqueeze(-2)) * K


def official_solver(image_emb, descriptor_emb, logit_scale):
    """OST.OptimalDescriptorSolver."""
    A, N, _ = descriptor_emb.shape
    B, T, _ = image_emb.shape
    sim = torch.einsum("btd,and->tnba", image_emb, descriptor_emb).contiguous()
    sim = sim.permute(2, 3, 0, 1).reshape(B * A, T, N)  # 't n b a -> (b a) t n'
    with torch.no_grad():
        P = official_sinkhorn(torch.exp(-(1 - sim) / 0.1), torch.full((B * A, T), 1.0 / T),
                              torch.full((B * A, N), 1.0 / N))
    return torch.sum(P * sim, dim=(1, 2)).view(B, A) * logit_scale


def official_logits(image, spatial, temporal, logit_scale):
    """OST.get_logit (= the tail of OST.inference)."""
    pool_s = logit_scale * image.mean(dim=1) @ spatial.mean(dim=1).t()
    pool_t = logit_scale * image.mean(dim=1) @ temporal.mean(dim=1).t()
    return 0.5 * (pool_t + official_solver(image, temporal, logit_scale)) + \
        0.5 * (pool_s + official_solver(image, spatial, logit_scale))


def official_nce(prediction, label):
    """utils/NCELoss.NCELoss: KLDivLoss(mean)(log_softmax(prediction), softmax(10 * label)) * batch."""
    return F.kl_div(F.log_softmax(prediction, 1), F.softmax(label * 10, 1), reduction="mean") * len(prediction)


def reference(backbone, video, label_ids):
    """Frame features, descriptor features and the official logits by plain CLIP (the image encoder
    on every frame, the text encoder on textprompt.py's prompts); `label_ids` select the descriptor
    sets as OST.forward does (one per sample), None = every class as OST.inference does."""
    clip, tokenizer = backbone
    b, t = video.shape[:2]
    image = clip.encode_image(video.reshape(-1, *video.shape[2:])).view(b, t, -1)
    image = image / image.norm(dim=-1, keepdim=True)
    ids = range(len(CLASSES)) if label_ids is None else label_ids.tolist()
    s_text = [f"This is a video about {d}" for a in ids for d in SPATIAL[a]]
    t_text = [f"A video of {CLASSES[a]} usually includes {d}" for a in ids for d in TEMPORAL[a]]
    spatial = clip.encode_text(tokenizer(s_text)).view(len(ids), 4, -1)
    temporal = clip.encode_text(tokenizer(t_text)).view(len(ids), 4, -1)
    spatial = spatial / spatial.norm(dim=-1, keepdim=True)
    temporal = temporal / temporal.norm(dim=-1, keepdim=True)
    return image, spatial, temporal, clip.logit_scale.exp()


def assert_same_gradients(ours: torch.nn.Module, theirs: torch.nn.Module, tol: float = 1e-5) -> None:
    """Every parameter's gradient equal up to float32 summation order: |g - g_ref| <= tol |g_ref|
    per tensor (elementwise tolerances would fail on the near-zero entries of, e.g., positions past
    the last token of the text positional embedding)."""
    reference = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        expected = reference[name].grad
        assert param.grad is not None and expected is not None, name
        assert (param.grad - expected).norm() <= tol * expected.norm(), name


# -- trainable set and count ------------------------------------------------------------------------
def test_everything_trains_at_vit_b16(b16_meta):
    """TRAINER.OST.USE: both -> every parameter, token_embedding included (ViFi-CLIP leaves it out)."""
    with torch.device("meta"):
        net = build_method("ost", copy.deepcopy(b16_meta[0]), b16_meta[1], 8, {}, CLASSES)
    counts = net.parameter_counts()
    assert counts["trainable"] == counts["total"] == 149_620_737
    assert net.clip.token_embedding.weight.requires_grad and net.clip.logit_scale.requires_grad
    assert counts["trainable"] - 124_323_841 == 49408 * 512  # ViFi-CLIP's count + token_embedding
    assert [g.name for g in net.param_groups()] == ["decay"]  # build_optimizer: one AdamW group


def test_class_flags_and_needs():
    cls = OST
    config = make_config("ost", {"n_descriptors": 8, "descriptors": "etl4video"})
    assert cls.run_needs(config) == {"scored_descriptions"}
    assert cls.descriptions_per_class(config) == 8 and cls.description_source(config) == "etl4video"
    assert cls.models_frame_order is False and cls.text_is_frozen is False


@pytest.mark.parametrize("options, match", [
    ({"n_descriptors": 0}, "n_descriptors=0"),
    ({"sinkhorn_eps": 0.0}, "sinkhorn_eps"),
    ({"eval_origin_weight": 1.5}, r"must be in \[0, 1\]"),
    ({"temporal_template": "A video of {}"}, "exactly 2"),
    ({"sinkhorn_stop": "never"}, "sinkhorn_stop"),
])
def test_bad_options_raise(options, match):
    with pytest.raises(HarnessError, match=match):
        make_config("ost", options)


# -- forward and loss against the official code ------------------------------------------------------
def test_inference_logits_match_the_official_computation(perturbed_tiny):
    net = build(perturbed_tiny, {"sinkhorn_stop": "batch"}).eval()
    video = clips(3)
    with torch.no_grad():
        ours = net(video, CLASSES)
        image, spatial, temporal, scale = reference(perturbed_tiny, video, None)
        theirs = official_logits(image, spatial, temporal, scale)
        torch.testing.assert_close(net.encode_frames(video), image, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.descriptor_features(CLASSES)[1], temporal, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert ours.shape == (3, len(CLASSES))


def test_training_loss_and_gradients_match_main_nce(perturbed_tiny):
    """One process, no accumulation: main_nce.py's step (model forward on the labels' descriptors,
    get_logit, gen_label, NCELoss on logits and logits.T) on identical weights."""
    net = build(perturbed_tiny, {"sinkhorn_stop": "batch"}).train()
    ref_clip = copy.deepcopy(perturbed_tiny[0])
    video, labels = clips(4), torch.tensor([1, 3, 1, 0])
    losses = net.training_losses(video, labels, CLASSES, batch_labels=labels)
    sum(losses.values()).backward()
    image, spatial, temporal, scale = reference((ref_clip, perturbed_tiny[1]), video, labels)
    logits = official_logits(image, spatial, temporal, scale)
    gt = (labels[:, None] == labels[None, :]).float()
    loss_imgs, loss_texts = official_nce(logits, gt), official_nce(logits.T, gt)
    (loss_imgs + loss_texts).backward()
    torch.testing.assert_close(losses["loss_video"], loss_imgs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss_text"], loss_texts, rtol=1e-5, atol=1e-6)
    assert_same_gradients(net.clip, ref_clip)


# -- mechanisms against hand-computed values -----------------------------------------------------------
def test_sinkhorn_first_iteration_by_hand():
    """K = [[1, 2], [3, 4]], uniform marginals: r = (1/2) / (K 1) = (1/6, 1/14); c = (1/2) / (K^T r)."""
    K = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    r = torch.tensor([1 / 6, 1 / 14])
    c = 0.5 / torch.tensor([1 / 6 + 3 / 14, 2 / 6 + 4 / 14])
    expected = r[:, None] * K[0] * c[None, :]
    torch.testing.assert_close(sinkhorn_plan(K, 1, 1e-2, "each")[0], expected)


def test_sinkhorn_converges_to_the_closed_form_2x2_plan():
    """With marginals (1/2, 1/2) both ways the plan is [[p, 1/2-p], [1/2-p, p]] and
    p / (1/2 - p) = sqrt(K11 K22 / (K12 K21))."""
    K = torch.tensor([[[2.0, 1.0], [0.5, 3.0]]])
    rho = math.sqrt(2.0 * 3.0 / (1.0 * 0.5))
    p = rho / (2 * (1 + rho))
    plan = sinkhorn_plan(K.double(), 500, 1e-14, "each")[0]
    torch.testing.assert_close(plan, torch.tensor([[p, 0.5 - p], [0.5 - p, p]], dtype=plan.dtype))


def spread_problems(count: int, seed: int = 7) -> torch.Tensor:
    """Kernels of unit-vector similarities spread enough that Sinkhorn needs several iterations."""
    gen = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(count, 8, 16, generator=gen), dim=-1)
    b = F.normalize(torch.randn(count, 4, 16, generator=gen), dim=-1)
    return torch.exp(-(1 - a @ b.transpose(1, 2)) / 0.1)


def test_stop_rules():
    """'batch' is the official loop (one stop for the whole call); 'each' gives every problem the
    plan the official loop gives it alone, and so does not depend on its batch-mates."""
    K = spread_problems(12)
    u, v = torch.full((12, 8), 1 / 8), torch.full((12, 4), 1 / 4)
    torch.testing.assert_close(sinkhorn_plan(K, 100, 1e-2, "batch"), official_sinkhorn(K, u, v), rtol=0, atol=0)
    alone = torch.cat([official_sinkhorn(K[i:i + 1], u[:1], v[:1]) for i in range(12)])
    each = sinkhorn_plan(K, 100, 1e-2, "each")
    torch.testing.assert_close(each, alone, rtol=0, atol=0)
    assert (sinkhorn_plan(K, 100, 1e-2, "batch") - alone).abs().max() > 1e-6  # the rules really differ here


def test_nce_row_by_hand():
    """Labels (0, 0, 1) as columns, row label 0: target (e^10, e^10, 1) / (2 e^10 + 1)."""
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    q = torch.tensor([math.exp(10), math.exp(10), 1.0]) / (2 * math.exp(10) + 1)
    p = torch.softmax(logits[0], 0)
    expected = float((q * (q.log() - p.log())).sum())
    got = nce_rows(logits, torch.tensor([0]), torch.tensor([0, 0, 1]), 10.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_frame_order_does_not_change_the_logits(perturbed_tiny):
    net = build(perturbed_tiny).eval()
    video = clips(2)
    with torch.no_grad():
        torch.testing.assert_close(net(video, CLASSES), net(video.flip(1), CLASSES), rtol=1e-5, atol=1e-5)


# -- the loss on the global batch under any split ------------------------------------------------------
def test_video_term_is_the_global_batch_loss_whatever_the_split(perturbed_tiny):
    """The global batch (6 clips) in one micro-batch, or in 3 micro-batches of 2 each given the
    global labels as `batch_labels`: the engine averages micro-batch losses (each a mean over its
    clips), so the average of the micro-batch video->descriptor terms must equal the global one,
    value and gradient. The descriptor->video term is the micro-batch's own official term (it needs
    every video of its batch; docs/methods/ost.md)."""
    video, labels = clips(6, seed=3), torch.tensor([0, 1, 1, 2, 0, 2])
    whole = build(perturbed_tiny).train()
    global_losses = whole.training_losses(video, labels, CLASSES, batch_labels=labels)
    global_losses["loss_video"].backward()
    split, alone = build(perturbed_tiny).train(), build(perturbed_tiny).train()
    parts, texts = [], []
    for i in range(0, 6, 2):
        losses = split.training_losses(video[i:i + 2], labels[i:i + 2], CLASSES, batch_labels=labels)
        (losses["loss_video"] / 3).backward()
        parts.append(losses["loss_video"].detach())
        texts.append((losses["loss_text"].detach(), alone.training_losses(video[i:i + 2], labels[i:i + 2], CLASSES)))
    torch.testing.assert_close(torch.stack(parts).mean(), global_losses["loss_video"].detach(), rtol=1e-5, atol=1e-7)
    assert_same_gradients(split, whole)
    for text, alone in texts:  # the column term: as if the micro-batch were the official forward batch
        torch.testing.assert_close(text, alone["loss_text"].detach(), rtol=1e-5, atol=1e-7)


def test_the_engine_never_splits_an_ost_update(perturbed_tiny):
    """loss_text is declared batch-coupled: an update split into passes or over processes is refused
    before training (a method without coupled terms may be split)."""
    from harness.engine.runner import check_batch_coupling
    from harness.errors import ConfigurationError

    net = build(perturbed_tiny)
    assert OST.batch_coupled_losses == {"loss_text"}
    check_batch_coupling(net, "ost", passes=1, world=1)
    for passes, world in ((2, 1), (1, 2)):
        with pytest.raises(ConfigurationError, match="loss_text .*one forward pass on one process"):
            check_batch_coupling(net, "ost", passes=passes, world=world)
    vifi = build_method("vificlip", copy.deepcopy(perturbed_tiny[0]), perturbed_tiny[1], 4, {}, CLASSES)
    check_batch_coupling(vifi, "vificlip", passes=4, world=2)


def test_label_smoothing_is_refused(perturbed_tiny):
    net = build(perturbed_tiny).train()
    net.label_smoothing = 0.1
    with pytest.raises(HarnessError, match="label_smoothing"):
        net.training_losses(clips(2), torch.tensor([0, 1]), CLASSES)


# -- the official zero-shot evaluation: blending with the pretrained weights ---------------------------
def test_eval_origin_weight_blends_pretrained_and_trained(perturbed_tiny):
    net = build(perturbed_tiny, {"eval_origin_weight": 0.2})
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # "training"
    trained = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.prepare_evaluation()
    net.prepare_evaluation()  # once only
    for name, param in net.named_parameters():
        torch.testing.assert_close(param, 0.2 * start[name] + 0.8 * trained[name])
    assert build(perturbed_tiny)._initial_weights is None  # no copy kept at the default 0


def test_default_prepare_evaluation_leaves_weights(perturbed_tiny):
    net = build(perturbed_tiny)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.prepare_evaluation()
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())


# -- descriptors ---------------------------------------------------------------------------------------
def test_missing_or_short_descriptors_are_named(perturbed_tiny):
    net = build(perturbed_tiny)
    with pytest.raises(HarnessError, match="'surfing' have none"):
        net(clips(1), CLASSES + ["surfing"])
    with pytest.raises(HarnessError, match="expected 4 spatio and 4 temporal"):
        net.set_descriptions(["surfing"], [["a board"]], [["paddle", "stand", "ride", "fall"]])


def test_a_new_call_replaces_a_class_descriptors(perturbed_tiny):
    """Each evaluation list gets its own dataset's descriptors under the same class name."""
    net = build(perturbed_tiny).eval()
    with torch.no_grad():
        before = net(clips(1), CLASSES)
        net.set_descriptions(CLASSES[:1], [["a comb"] * 4], [["comb slowly"] * 4])
        after = net(clips(1), CLASSES)
    assert not torch.allclose(before[:, 0], after[:, 0]) and torch.allclose(before[:, 1:], after[:, 1:])


def test_embedded_descriptor_files(embedded_root):
    """N=4 spatio and temporal descriptors for every class of both embedded class lists, keyed by
    the label CSV's ids; a time-reversed class shares its partner's looks but not its steps."""
    for key, classes in (("embedded", MAIN_CLASSES), ("embedded_zs", ZS_CLASSES)):
        for kind, slot in (("spatio", 0), ("temporal", 1)):
            data = json.loads((embedded_root / f"descriptors/{key}/{kind}_descriptors/4_descriptors.json").read_text())
            assert data == {str(i): list(OST_DESCRIPTORS[c.key][slot]) for i, c in enumerate(classes)}
            assert all(len(v) == N_DESCRIPTORS for v in data.values())
    by_name = {c.name: c.key for c in MAIN_CLASSES + ZS_CLASSES}
    for forward, backward in ORDER_PAIRS:
        a, b = OST_DESCRIPTORS[by_name[forward]], OST_DESCRIPTORS[by_name[backward]]
        assert a[0] == b[0] and a[1] != b[1]


def test_an_older_embedded_cache_gets_the_descriptor_files(embedded_root, tmp_path):
    """A dataset generated before the OST files existed gets them on its next use; its recipe hash
    (and so every job id) is unchanged."""
    import shutil

    from harness.data.embedded import ensure_embedded_dataset

    cache = tmp_path / "embedded"
    shutil.copytree(embedded_root, cache / embedded_root.name)
    shutil.rmtree(cache / embedded_root.name / "descriptors")
    root = ensure_embedded_dataset(cache)
    assert root.name == embedded_root.name
    assert (root / "descriptors/embedded_zs/temporal_descriptors/4_descriptors.json").read_bytes() == \
        (embedded_root / "descriptors/embedded_zs/temporal_descriptors/4_descriptors.json").read_bytes()


# -- a job's descriptor references ---------------------------------------------------------------------
def _jobs(protocol: str, cache, dataset: str = "embedded", **kwargs):
    from harness.api import request
    from harness.jobs.expand import expand_jobs

    return expand_jobs(request("ost", protocol, dataset=dataset, cache_dir=str(cache), **kwargs))


def test_base_to_novel_job_describes_every_scored_class_set(harness_cache):
    job = _jobs("base2novel", harness_cache, splits=[1])[0]
    ref = job.descriptions
    base = [c.name for c in MAIN_CLASSES[:6]]
    novel = [c.name for c in MAIN_CLASSES[6:]]
    assert ref["source"] == "ost" and ref["dataset_key"] == "embedded" and ref["class_ids"] == list(range(6))
    assert ref["evals"]["base"]["class_ids"] == list(range(6))  # by name in the full list
    assert ref["evals"]["novel"]["class_ids"] == list(range(6, 12))
    assert [lst.classnames for lst in job.evals] == [base, novel]


def test_zero_shot_job_describes_the_target_lists(harness_cache):
    job = _jobs("zero_shot", harness_cache)[0]
    evals = job.descriptions["evals"]
    assert sorted(evals) == ["embedded_zs/split1", "embedded_zs/split2", "embedded_zs/split3"]
    assert all(r["dataset_key"] == "embedded_zs" and r["class_ids"] == list(range(6)) for r in evals.values())


@pytest.mark.upstream
def test_real_targets_use_the_published_files(upstream_root, tmp_path):
    """K400 -> K600: OST's per-split files keyed by the split's CSV; HMDB51 / UCF101: full lists
    (the K400 training list is not in the local copy: the targets are checked alone); HMDB51
    base-to-novel: novel classes by name in the full list."""
    from harness.api import request
    from harness.data.descriptions import load_job_descriptions
    from harness.jobs.expand import _zero_shot_targets
    from protocols import load_protocol

    roots = {"splits_root": str(upstream_root), "data_root": str(tmp_path), "cache_dir": str(tmp_path)}
    refs: dict = {}
    _zero_shot_targets(load_protocol("zero_shot"), request("ost", "zero_shot", dataset="k400", pretrained="random",
                                                           **roots), [1, 1],
                       describe="ost", refs=refs)
    assert refs["k600/split2"]["split"] == 2 and refs["k600/split2"]["class_ids"] == list(range(160))
    assert refs["hmdb51/split1"]["dataset_key"] == "hmdb" and "split" not in refs["hmdb51/split1"]
    k600 = load_job_descriptions(refs["k600/split2"], 4, str(tmp_path), str(upstream_root))
    assert k600.sources["spatial"].endswith("ost/descriptors/k600/split2/spatio_4_descriptors.json")
    job = _jobs("base2novel", tmp_path, dataset="hmdb51", splits=[1], splits_root=roots["splits_root"],
                data_root=roots["data_root"], pretrained="random")[0]
    novel = job.descriptions["evals"]["novel"]
    names = [lst.classnames for lst in job.evals if lst.name == "novel"][0]
    full = (upstream_root / "vifi-clip/labels/hmdb_51_labels.csv").read_text().splitlines()[1:]
    assert [full[i].split(",", 1)[1] for i in novel["class_ids"]] == names
    assert any(k.startswith("ost/descriptors/hmdb/") for k in job.file_provenance)


@pytest.mark.slow
def test_zero_shot_job_end_to_end(harness_cache, tmp_path, monkeypatch):
    """One tiny zero-shot job through the engine: the weights are blended once (the recipe's 0.2),
    before the first evaluation list; each target list is scored with its own descriptors
    (recorded with its metrics)."""
    from harness import api
    from harness.engine import runner

    calls: list[str] = []
    prepare, evaluate = OST.prepare_evaluation, runner.evaluate
    monkeypatch.setattr(OST, "prepare_evaluation", lambda self: calls.append("prepare") or prepare(self))
    monkeypatch.setattr(runner, "evaluate",
                        lambda model, lst, *a, **k: calls.append(lst.name) or evaluate(model, lst, *a, **k))
    req = api.request("ost", "zero_shot", profile="tiny", pretrained="random", cache_dir=str(harness_cache))
    store = api.run(req, tmp_path / "out", progress=False)
    (job_dir,) = (tmp_path / "out" / "jobs").iterdir()
    record = json.loads((job_dir / "metrics.json").read_text())
    assert record["job"]["method_options"]["eval_origin_weight"] == 0.2
    assert calls == ["prepare", "embedded_zs/split1", "embedded_zs/split2", "embedded_zs/split3"], calls
    for name, ev in record["metrics"]["evals"].items():
        assert ev["descriptions"]["sources"]["temporal"].endswith(
            "descriptors/embedded_zs/temporal_descriptors/4_descriptors.json"), name
    assert store is not None


# -- converter -----------------------------------------------------------------------------------------
def ost_config(frames: int = 32, n: int = 4) -> dict:
    """OST's config as `epoch_saving` stores it: utils/config.py defaults merged with a few-shot
    configs/*.yaml (nested dicts; the yacs CfgNode is built from them)."""
    return {
        "BASE": [""],
        "DATA": {"TYPE": "frame", "ROOT": "/PATH/TO/videos/folder", "TRAIN_FILE": "datasets_splits/hmdb_splits/"
                 "train1_few_shot_2.txt", "VAL_FILE": "datasets_splits/hmdb_splits/val1.txt", "DATASET": "hmdb51",
                 "INPUT_SIZE": 224, "NUM_FRAMES": frames, "NUM_CLASSES": 51, "LABEL_LIST": "labels/hmdb_51_labels.csv",
                 "DES_SPATIAL": f"descriptors/hmdb/spatio_descriptors/{n}_descriptors.json",
                 "DES_TEMPORAL": f"descriptors/hmdb/temporal_descriptors/{n}_descriptors.json"},
        "MODEL": {"ARCH": "ViT-B/16", "DROP_PATH_RATE": 0.0, "PRETRAINED": None, "RESUME": None, "FIX_TEXT": True,
                  "FUSE_WEIGHT_FOR_ORIGIN": 0.0},
        "TRAINER": {"OST": {"PROMPT_MODEL": False, "N_CTX_VISION": 0, "N_CTX_TEXT": 0, "CTX_INIT": "a photo of a",
                            "PROMPT_DEPTH_VISION": 0, "PROMPT_DEPTH_TEXT": 1, "USE": "both", "N": n, "ZS_EVAL": False}},
        "TRAIN": {"EPOCHS": 50, "WARMUP_EPOCHS": 5, "WEIGHT_DECAY": 0.001, "LR": 5e-6, "BATCH_SIZE": 4,
                  "ACCUMULATION_STEPS": 2, "LR_SCHEDULER": "cosine", "OPTIMIZER": "adamw", "OPT_LEVEL": "O1",
                  "AUTO_RESUME": False, "USE_CHECKPOINT": False, "LOAD_OPTIMIZER_STATE": False},
        "AUG": {"LABEL_SMOOTH": 0.0, "COLOR_JITTER": 0.8, "GRAY_SCALE": 0.2, "MIXUP": 0.0, "CUTMIX": 0.0,
                "MIXUP_SWITCH_PROB": 0.0},
        "TEST": {"NUM_CLIP": 1, "NUM_CROP": 1, "ONLY_TEST": False, "MULTI_VIEW_INFERENCE": False},
        "OUTPUT": "output/ost", "SAVE_FREQ": 10, "PRINT_FREQ": 50, "SEED": 1024, "LOCAL_RANK": 0,
    }


def save_official_release(clip: torch.nn.Module, path, config: dict) -> str:
    """What `utils/tools.epoch_saving` writes for OST on the DDP model: 'module.' + the keys of
    trainers/OST.py (`image_encoder` = the CLIP image tower; `text_encoder` = transformer,
    positional_embedding, ln_final, text_projection, token_embedding; `logit_scale`), fp32 (the
    model is `.float()`), AdamW (one group over every parameter, utils/optimizer.py) after a step,
    the timm cosine scheduler, and the frozen yacs CfgNode."""
    from collections import OrderedDict

    from convert_helpers import timm_cosine_state, yacs_modules

    model = OrderedDict()
    for key, value in clip.state_dict().items():
        if key == "attn_mask":
            continue
        name = ("image_encoder." + key[len("visual."):] if key.startswith("visual.") else
                key if key == "logit_scale" else "text_encoder." + key)
        model["module." + name] = value.detach().clone().float()
    params = [torch.nn.Parameter(v.clone()) for v in model.values()]
    optimizer = torch.optim.AdamW(params, lr=5e-6, weight_decay=0.001, betas=(0.9, 0.98), eps=1e-8)
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    with yacs_modules() as CfgNode:
        cfg = CfgNode(config)
        cfg.freeze()
        torch.save({"model": model, "optimizer": optimizer.state_dict(), "lr_scheduler": timm_cosine_state(5e-6),
                    "max_accuracy": 61.2, "epoch": 49, "config": cfg}, path)
    return str(path)


def test_converter_reads_an_official_release(tmp_path):
    """Every key of a file written as the official save function writes it lands where it belongs,
    nothing from the base; the CfgNode gives frames and N; a wrong backbone or N is refused; the
    official zero-shot evaluation (0.2 x the original CLIP) needs --base and blends with it."""
    from harness.convert import ConvertRequest, convert
    from harness.convert.checkpoint import load_checkpoint, save_converted

    trained, _ = make_backbone("harness-b16-2l")
    base_clip, _ = make_backbone("harness-b16-2l")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    ckpt = save_official_release(trained, tmp_path / "ost.pth", ost_config(frames=32, n=8))
    conversion = convert("ost", ConvertRequest(ckpt, backbone="harness-b16-2l"))
    report = conversion.report
    assert report["filled_from_release"] == len(dict(conversion.model.named_parameters())) == 62
    assert report["filled_from_base"] == 0 and report["ignored"] == {}
    assert report["release"]["stripped_prefixes"] == ["module."] and report["release"]["unwrapped"] == ["model"]
    assert conversion.meta["frames"] == 32 and conversion.meta["method_options"]["n_descriptors"] == 8
    loaded = load_checkpoint(save_converted(conversion, tmp_path / "converted.pt"), method="ost")
    ours = dict(loaded.net.clip.named_parameters())
    for name, value in trained.named_parameters():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(HarnessError, match="TRAINER.OST.N=8"):
        convert("ost", ConvertRequest(ckpt, backbone="harness-b16-2l", options={"n_descriptors": 4}))
    with pytest.raises(HarnessError, match="MODEL.ARCH=ViT-B/16"):
        convert("ost", ConvertRequest(ckpt, backbone="ViT-B-32"))

    blended = {"eval_origin_weight": 0.2}
    with pytest.raises(HarnessError, match="--base"):
        convert("ost", ConvertRequest(ckpt, backbone="harness-b16-2l", options=blended))
    torch.save(base_clip.state_dict(), tmp_path / "base.pt")
    conversion = convert("ost", ConvertRequest(ckpt, backbone="harness-b16-2l", base=str(tmp_path / "base.pt"),
                                               options=blended))
    net = load_checkpoint(save_converted(conversion, tmp_path / "blend.pt"), method="ost").net
    net.prepare_evaluation()
    original, ours = dict(base_clip.named_parameters()), dict(net.clip.named_parameters())
    for name, value in trained.named_parameters():
        torch.testing.assert_close(ours[name], 0.2 * original[name] + 0.8 * value, msg=name)
