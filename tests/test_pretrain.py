"""The synthetic pretraining of harness-tiny: data, exactness of the fast paths, determinism,
caching, loading, and (slow) the quality of the default recipe."""
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import pretrain as P
from harness.atomic import atomic_write
from harness.backbone import _load_local_state, create_clip, get_tokenizer
from harness.data import embedded as E
from harness.errors import HarnessError
from harness.pretrain import cache as pretrain_cache
from harness.pretrain.scenes import _pick_background, _truth
from harness.pretrain.train import _encode_captions, _encode_text

#: A few seconds of training: enough to exercise both phases and every head.
TINY = P.PretrainRecipe(steps=4, image_steps=2, batch=8, text_batch=6, warmup=1, backgrounds=8)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_hash_and_validation():
    assert P.recipe_hash(P.PretrainRecipe()) == P.recipe_hash(P.PretrainRecipe())
    assert P.recipe_hash(P.PretrainRecipe(seed=1)) != P.recipe_hash(P.PretrainRecipe())
    assert P.PretrainRecipe().image_size == 64
    for bad in (dict(model="ViT-B-16"), dict(image_size=32), dict(text_batch=64), dict(image_steps=300)):
        with pytest.raises(HarnessError):
            replace(P.PretrainRecipe(), **bad).validate()


def test_pair_colour_names_match_the_embedded_colours():
    white, cyan, pink = (np.array(P.COLORS[c]) for c in ("white", "cyan", "pink"))
    assert white.min() > 200 and cyan[0] < 100 < cyan[2] and pink[0] > 200 and pink[2] > pink[1]
    assert set(E._COLORS) <= set(P.COLORS)


def test_captions_cover_the_embedded_class_names():
    """Every word of every class name can appear in a caption; each class's colour, shape and
    motion phrase are known to the generator, so prompts with class names are in-distribution."""
    vocab = P.vocabulary()
    for c in E.MAIN_CLASSES + E.ZS_CLASSES:
        words = c.name.replace("-", " ").split()
        assert set(words) <= vocab, (c.name, set(words) - vocab)
        if words[1] != "shape":
            assert words[1] in P.COLORS and words[2] in P.SHAPES, c.name
        assert c.name.split(maxsplit=2 if words[1] == "shape" else 3)[-1] in P.VERBS, c.name


def test_captions_are_true_of_their_frame():
    scenes, captions = P.sample_captions(0, 0, 64)
    truth = _truth(scenes, captions)
    assert truth.diagonal().all()
    assert not truth.all()  # and not of every frame
    assert any(c.verb < len(P.VERBS) for c in captions)
    assert any(sc.empty for sc in P.sample_captions(0, 1, 200)[0])
    for sc, c in zip(scenes, captions):
        if sc.empty:
            assert c.said == {"empty": True}
        elif "color" in c.said:
            assert sc.color in c.text
    # a rerun draws the same stream
    assert [c.text for c in P.sample_captions(0, 0, 64)[1]] == [c.text for c in captions]


def test_render_composites_over_the_background():
    pool = P.background_pool(0, 4, 64)
    rng = np.random.default_rng(0)
    scene = P.Scene("circle", "red", "large", "left", "top", dark=False, faint=False)
    bg = _pick_background(pool, rng)
    frame, coverage = P.render_scene(scene, rng, bg)
    assert frame.shape == (64, 64, 3) and coverage.shape == (64, 64)
    assert 0 <= coverage.min() and coverage.max() == 1.0
    assert np.array_equal(frame[coverage == 0], bg[coverage == 0])
    ys, xs = np.nonzero(coverage > 0.5)
    assert xs.mean() < 64 / 3 + 4 and ys.mean() < 64 / 3 + 4  # top left
    assert np.allclose(frame[coverage == 1].mean(0), P.COLORS["red"], atol=13)
    empty, nothing = P.render_scene(replace(scene, empty=True), rng, bg)
    assert np.array_equal(empty, bg) and not nothing.any()
    images, cov = P.render_batch(P.sample_captions(0, 0, 5)[0], 0, 0, pool, 3.0)
    assert images.dtype == np.uint8 and images.shape == (5, 64, 64, 3) and cov.shape == (5, 64, 64)


def test_fast_text_encoding_equals_open_clip():
    model, spec = create_clip("harness-tiny")
    model.eval()
    captions = [c.text for c in P.sample_captions(0, 0, 9)[1]] + ["a photo of a a red circle."]
    tokens = get_tokenizer(spec)(captions)
    reference = model.encode_text(tokens)
    assert torch.allclose(_encode_text(model, tokens), reference, atol=1e-5)
    assert torch.allclose(_encode_captions(model, tokens, buckets=3), reference, atol=1e-5)


def test_training_is_deterministic_and_loads_into_harness_tiny(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    first = P.pretrain_clip(TINY, tmp_path / "a.pt")
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    second = P.pretrain_clip(TINY, tmp_path / "b.pt")
    a, b = (torch.load(p, weights_only=True) for p in (first, second))
    assert states_equal(a, b)
    assert first.read_bytes() == second.read_bytes()  # so the recorded weights sha256 is reproducible
    other = torch.load(P.pretrain_clip(replace(TINY, seed=1), tmp_path / "c.pt"), weights_only=True)
    assert not states_equal(a, other)

    random, _ = create_clip("harness-tiny", seed=TINY.seed)
    init = random.state_dict()
    assert a.keys() == init.keys()
    assert not torch.equal(a["visual.conv1.weight"], init["visual.conv1.weight"])  # it trained
    changed = (a["token_embedding.weight"] != init["token_embedding.weight"]).any(1)
    assert 10 < int(changed.sum()) < 200  # only the rows of the caption words

    model, spec = create_clip("harness-tiny", pretrained=str(first))
    assert states_equal(model.state_dict(), a) and spec.weights_sha256
    _load_local_state(create_clip("harness-tiny")[0], first)
    meta = json.loads(first.with_name("a.pt.json").read_text())
    assert meta["hash"] == P.recipe_hash(TINY) and meta["recipe"]["steps"] == 4 and meta["threads"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_ensure_caches_and_does_not_retrain(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    leftover = P.pretrained_path(TINY).with_name(f".{P.pretrained_path(TINY).name}.killed.tmp")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")  # a killed run's temp file
    path = P.ensure_pretrained_tiny(recipe=TINY)
    assert not leftover.exists()
    assert path == tmp_path / "backbones" / f"harness-tiny-synthetic-{P.recipe_hash(TINY)[:12]}.pt"
    assert path.is_file() and path.with_name(path.name + ".json").is_file()
    stamp = path.stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(pretrain_cache, "pretrain_clip", boom)
    assert P.ensure_pretrained_tiny(recipe=TINY) == path
    assert P.ensure_pretrained_tiny(tmp_path / "backbones", TINY) == path
    assert path.stat().st_mtime_ns == stamp
    default = f"harness-tiny-synthetic-{P.recipe_hash(P.PretrainRecipe())[:12]}.pt"
    assert P.pretrained_path() == tmp_path / "backbones" / default


def test_concurrent_first_uses_train_once(tmp_path, monkeypatch):
    calls = []

    def slow_pretrain(recipe, out, progress=None):
        calls.append(recipe)
        time.sleep(0.3)
        atomic_write(Path(out), lambda p: p.write_bytes(b"weights"))
        return Path(out)

    monkeypatch.setattr(pretrain_cache, "pretrain_clip", slow_pretrain)
    results = []
    workers = [threading.Thread(target=lambda: results.append(P.ensure_pretrained_tiny(tmp_path, TINY)))
               for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(calls) == 1 and len(set(results)) == 1 and results[0].read_bytes() == b"weights"


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HarnessError, match="HARNESS_CACHE"):
        P.ensure_pretrained_tiny(blocker / "backbones", TINY)


# --------------------------------------------------------------------------------------------
# Quality of the default recipe (trains it: about 35 s)
# --------------------------------------------------------------------------------------------

def _frames(path: Path, size: int = 64) -> np.ndarray:
    """All frames of a video as the test pipeline sees them (short side 256/224*S, centre crop S)."""
    import cv2
    import decord

    frames = decord.VideoReader(str(path), num_threads=1).get_batch(list(range(16))).asnumpy()
    short = round(size * 256 / 224)
    frames = np.stack([cv2.resize(f, (short, short), interpolation=cv2.INTER_LINEAR) for f in frames])
    o = (short - size) // 2
    return frames[:, o:o + size, o:o + size]


@pytest.mark.slow
def test_default_recipe_quality(tmp_path, embedded_root):
    start = time.perf_counter()
    path = P.ensure_pretrained_tiny(tmp_path, P.PretrainRecipe())
    seconds = time.perf_counter() - start
    model, spec = create_clip("harness-tiny", pretrained=str(path))
    model.eval()
    tokenizer = get_tokenizer(spec)

    # Held-out synthetic frames: chance is 1/4 (colour4), 1/3 (position3, vertical3, size3).
    probe = P.probe_zero_shot(model, tokenizer)
    print(f"pretraining {seconds:.1f} s; zero-shot on synthetic frames: {probe}")
    assert probe["color4"] >= 0.7 and probe["color9"] >= 0.5
    assert probe["position3"] >= 0.6 and probe["vertical3"] >= 0.5 and probe["size3"] >= 0.5

    # The embedded videos' appearance classes, frame-averaged, "a photo of a {}.": chance 1/6.
    classes = [c for c in E.MAIN_CLASSES + E.ZS_CLASSES if c.name.split()[1] != "shape"]
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer([f"a photo of a {c.name}." for c in classes])), dim=-1)
        hits = []
        for i, c in enumerate(classes):
            pool = "zs" if c in E.ZS_CLASSES else "val"
            for video in sorted((embedded_root / "videos").glob(f"{pool}_{c.key}_*.mp4"))[:8]:
                image = model.encode_image(P.to_model_input(_frames(video)))
                image = F.normalize(F.normalize(image, dim=-1).mean(0), dim=-1)
                hits.append(int((text @ image).argmax()) == i)
        print(f"embedded appearance classes, frame-averaged zero-shot: {np.mean(hits):.3f} "
              f"({len(hits)} videos)")
        assert np.mean(hits) >= 0.6

        # Class names that differ only in a motion phrase keep distinct text features.
        names = [c.name for c in E.MAIN_CLASSES + E.ZS_CLASSES]
        feats = F.normalize(model.encode_text(tokenizer([f"a photo of a {n}." for n in names])), dim=-1)
        cos = feats @ feats.t() - 2 * torch.eye(len(names))
        print(f"max cosine between class-name prompts: {float(cos.max()):.4f}")
        assert float(cos.max()) < 0.995
