"""The embedded synthetic dataset: layout, determinism, caching, and that order pairs really differ
only in temporal order."""
import json
from pathlib import Path

import decord
import numpy as np
import pytest

from harness.data import embedded as emb
from harness.data.annotations import read_annotation_list, read_class_csv
from harness.data.embedded import (
    ORDER_PAIRS,
    EmbeddedRecipe,
    ensure_embedded_dataset,
    recipe_hash,
)
from harness.errors import HarnessError

B2N = "datasets_splits/base2novel_splits/embedded_splits"
FULL = "datasets_splits/embedded_splits"
ZS = "datasets_splits/embedded_zs_splits"
#: A tiny recipe for the tests that generate on their own (well under a second).
TINY = EmbeddedRecipe(num_frames=6, frame_size=32, train_per_class=3, val_per_class=1, zs_pool_per_class=2,
                      zs_val_per_class=1, shots=2, few_shot_ks=(2,))


def labels(root: Path, name: str) -> list[str]:
    return read_class_csv(root / "labels" / f"{name}_labels.csv")


def decode(path: Path) -> np.ndarray:
    return decord.VideoReader(str(path)).get_batch(list(range(16))).asnumpy().astype(np.float32)


def foreground(frames: np.ndarray) -> np.ndarray:
    """Per-frame mask of pixels that differ from the clip's temporal median (the moving shape)."""
    diff = np.abs(frames - np.median(frames, axis=0, keepdims=True)).sum(-1)
    return diff > 60


def list_of(root: Path, rel: str, n: int):
    return read_annotation_list(root / rel, n)


def test_layout_and_class_sets(embedded_root):
    meta = json.loads((embedded_root / "recipe.json").read_text())
    assert meta["hash"] == recipe_hash(EmbeddedRecipe()) and meta["generator_version"] == emb.GENERATOR_VERSION
    assert embedded_root.name == meta["hash"][:12]
    full, base, novel, zs = (labels(embedded_root, k) for k in
                             ("embedded", "embedded_base", "embedded_novel", "embedded_zs"))
    assert len(full) == 12 and len(base) == len(novel) == 6 and len(zs) == 6
    assert full == base + novel and not set(base) & set(novel) and not set(zs) & set(full)
    # both halves contain order-only pairs, as does the zero-shot set
    for names in (base, novel, zs):
        assert sum(a in names and b in names for a, b in ORDER_PAIRS) == 2
    assert all(a in full + zs and b in full + zs for a, b in ORDER_PAIRS)
    videos = sorted((embedded_root / "videos").glob("*.mp4"))
    assert len(videos) == meta["num_videos"] == 12 * (20 + 8) + 6 * 12


def test_lists_index_the_right_csvs_and_files_exist(embedded_root):
    root = embedded_root
    base, novel, full, zs = (labels(root, k) for k in ("embedded_base", "embedded_novel", "embedded", "embedded_zs"))
    ann = {}
    for rel, n in [(f"{B2N}/base_val.txt", 6), (f"{B2N}/novel_val.txt", 6), (f"{FULL}/train.txt", 12),
                   (f"{FULL}/val.txt", 12), (f"{FULL}/val1.txt", 12)] + \
                  [(f"{B2N}/fs_base_s{s}_train.txt", 6) for s in (1, 2, 3)] + \
                  [(f"{FULL}/train1_few_shot_{k}.txt", 12) for k in (2, 4, 8, 16)] + \
                  [(f"{ZS}/val{s}.txt", 6) for s in (1, 2, 3)]:
        ann[rel] = list_of(root, rel, n)
        assert {e.label for e in ann[rel]} == set(range(n)), rel
        assert all((root / "videos" / e.path).is_file() for e in ann[rel]), rel
    # a file's class key is in its name: check each label names the right class in its CSV
    key_of = {c.name: c.key for c in emb.MAIN_CLASSES + emb.ZS_CLASSES}
    for rel, names in [(f"{B2N}/base_val.txt", base), (f"{B2N}/novel_val.txt", novel), (f"{FULL}/train.txt", full),
                       (f"{ZS}/val2.txt", zs), (f"{B2N}/fs_base_s3_train.txt", base)]:
        assert all(e.path.split("_", 1)[1].rsplit("_", 1)[0] == key_of[names[e.label]] for e in ann[rel]), rel
    # 16 shots per base class in each b2n training file, from the training pool, and the 3 draws differ
    draws = []
    for s in (1, 2, 3):
        entries = ann[f"{B2N}/fs_base_s{s}_train.txt"]
        assert [sum(e.label == c for e in entries) for c in range(6)] == [16] * 6
        assert all(e.path.startswith("train_") for e in entries)
        draws.append({e.path for e in entries})
    assert draws[0] != draws[1] != draws[2] != draws[0]
    for k in (2, 4, 8, 16):
        assert len(ann[f"{FULL}/train1_few_shot_{k}.txt"]) == 12 * k
    val = {e.path for e in ann[f"{FULL}/val.txt"]}
    assert not val & {e.path for e in ann[f"{FULL}/train.txt"]}
    assert len(ann[f"{ZS}/val1.txt"]) == 48 and {e.path for e in ann[f"{ZS}/val1.txt"]} != \
        {e.path for e in ann[f"{ZS}/val2.txt"]}


def test_descriptions_are_etl4video_format(embedded_root):
    for key, n in [("embedded", 12), ("embedded_base", 6), ("embedded_novel", 6), ("embedded_zs", 6)]:
        for kind in "st":
            data = json.loads((embedded_root / "description" / f"2_{kind}_description_{key}.json").read_text())
            assert list(data) == [str(i) for i in range(n)]
            assert all(len(v) == 2 and all(s.startswith("A video about") for s in v) for v in data.values())
    t = json.loads((embedded_root / "description" / "2_t_description_embedded_base.json").read_text())
    assert "ends on the left" in t["0"][0] and "ends on the right" in t["1"][0]


def test_videos_decode_with_decord(embedded_root):
    reader = decord.VideoReader(str(embedded_root / "videos" / "val_rotate_cw_000.mp4"))
    assert len(reader) == 16
    assert reader.get_batch([0, 15]).asnumpy().shape == (2, 64, 64, 3)


@pytest.mark.parametrize("first, second", [("move_left", "move_right"), ("move_up", "move_down")])
def test_moving_pairs_are_time_reversals(embedded_root, first, second):
    axis = 1 if "left" in first else 0  # x for left/right, y for up/down

    def displacement(key: str, pool: str) -> list[float]:
        out = []
        for path in sorted((embedded_root / "videos").glob(f"{pool}_{key}_00*.mp4"))[:6]:
            mask = foreground(decode(path))
            coords = [np.argwhere(m)[:, axis].mean() for m in mask if m.any()]
            out.append(coords[-1] - coords[0])
        return out

    pool = "zs" if "up" in first else "train"
    fwd, back = displacement(first, pool), displacement(second, pool)
    assert all(d < -10 for d in fwd) and all(d > 10 for d in back)  # left/up: coordinate decreases
    assert abs(np.mean(fwd) + np.mean(back)) < 8  # same distribution, mirrored in time


def test_grow_and_appear_pairs_are_time_reversals(embedded_root):
    def trend(key: str) -> list[float]:
        out = []
        for path in sorted((embedded_root / "videos").glob(f"val_{key}_00*.mp4"))[:6]:
            frames = decode(path)
            bg = np.median(frames[:, :4, :4].reshape(-1, 3), axis=0)  # corner ~ background
            strength = np.abs(frames - bg).sum(-1).reshape(16, -1)
            out.append(strength[-3:].mean() - strength[:3].mean())
        return out

    for grows, shrinks in [("grow", "shrink"), ("appear", "disappear")]:
        assert all(d > 0 for d in trend(grows)) and all(d < 0 for d in trend(shrinks))


def test_reversed_classes_render_as_exact_reversal():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    cw, ccw = emb.NOVEL_CLASSES[0], emb.NOVEL_CLASSES[1]
    assert ccw.reverse and ccw.motion == cw.motion
    a = emb.render_clip(cw, rng_a, 8, 32, noise=3.0)
    b = emb.render_clip(ccw, rng_b, 8, 32, noise=3.0)
    np.testing.assert_array_equal(a[::-1], b)


def test_hash_determinism_and_validation():
    assert recipe_hash(EmbeddedRecipe()) == recipe_hash(EmbeddedRecipe(seed=2048))
    assert recipe_hash(EmbeddedRecipe()) != recipe_hash(EmbeddedRecipe(seed=1))
    with pytest.raises(HarnessError, match="shots=30 exceeds train_per_class"):
        ensure_embedded_dataset("/nonexistent", EmbeddedRecipe(shots=30))


def test_generation_is_deterministic_and_cached(tmp_path, monkeypatch):
    a = ensure_embedded_dataset(tmp_path / "a", TINY)
    b = ensure_embedded_dataset(tmp_path / "b", TINY)
    assert a.name == b.name == recipe_hash(TINY)[:12]
    texts = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".txt", ".csv", ".json")
                   and p.name != "recipe.json")
    assert len(texts) == 5 + 1 + 3 + 3 + 8 + 4 + 4  # lists, few-shot (k=2), b2n fs, zs, descriptions, csvs, OST descriptors
    for rel in texts:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    names = sorted(p.name for p in (a / "videos").iterdir())
    assert names == sorted(p.name for p in (b / "videos").iterdir())
    # Every video byte for byte: one recipe hash must mean one dataset (with the macroblock tree on,
    # libx264 wrote other bytes for ~40 % of the clips on a second encoding of the same frames).
    assert [n for n in names if (a / "videos" / n).read_bytes() != (b / "videos" / n).read_bytes()] == []
    one = names[0]
    ra, rb = decord.VideoReader(str(a / "videos" / one)), decord.VideoReader(str(b / "videos" / one))
    np.testing.assert_array_equal(ra.get_batch([0, 5]).asnumpy(), rb.get_batch([0, 5]).asnumpy())

    # a second call reuses the folder without generating
    def boom(*args, **kwargs):
        raise AssertionError("regenerated")

    mtime = (a / "recipe.json").stat().st_mtime_ns
    monkeypatch.setattr(emb, "generate", boom)
    assert ensure_embedded_dataset(tmp_path / "a", TINY) == a
    assert (a / "recipe.json").stat().st_mtime_ns == mtime


def test_rgb_to_yuv420p_by_hand():
    """BT.601 limited range: black (16, 128, 128), white (235, 128, 128), pure red Y = 16 + 65.481 =
    81.481 -> 81, Cr = 128 + 112 = 240; chroma is the mean of each 2x2 block."""
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[:, 2:] = 255  # right half white
    yuv = emb.rgb_to_yuv420p(frame)
    assert yuv.shape == (6, 4)  # Y (4 rows), then the 2x2 Cb and the 2x2 Cr planes, each flattened into one row
    np.testing.assert_array_equal(yuv[:4], [[16, 16, 235, 235]] * 4)
    np.testing.assert_array_equal(yuv[4:], [[128] * 4] * 2)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    y, cb, cr = emb.rgb_to_yuv420p(red).ravel()[[0, 16, 20]]
    assert (y, cb, cr) == (81, round(128 - 37.797), 240)



def test_stale_or_interrupted_generation_is_redone(tmp_path, monkeypatch):
    cache = tmp_path / "c"
    root = cache / recipe_hash(TINY)[:12]
    root.mkdir(parents=True)
    (root / "junk.txt").write_text("half a dataset without recipe.json")
    real_generate = emb.generate

    def killed(tmp_root, recipe):  # dies half way: leaves nothing that looks finished
        (tmp_root / "videos").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(emb, "generate", killed)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded_dataset(cache, TINY)
    assert not (root / "recipe.json").exists()
    assert not list(cache.glob(".tmp-*"))
    monkeypatch.setattr(emb, "generate", real_generate)
    assert ensure_embedded_dataset(cache, TINY) == root
    assert (root / "recipe.json").is_file() and not (root / "junk.txt").exists()
    assert not list(cache.glob(".tmp-*"))


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    assert emb.default_cache_dir() == tmp_path / "embedded"
    monkeypatch.delenv("HARNESS_CACHE")
    assert emb.default_cache_dir() == Path.home() / ".cache" / "harness" / "embedded"


def test_clockwise_turns_clockwise_on_screen():
    """The tip of the 'clockwise' arrow moves clockwise as seen on screen (image y points down)."""
    cw = emb.NOVEL_CLASSES[0]
    frames = emb.render_clip(cw, np.random.default_rng(9), 8, 64, noise=0.0).astype(np.float32)
    rng = np.random.default_rng(9)  # replay the draws render_clip made: track, then background
    track = emb._track(rng, cw.motion, 8, 64)
    bg = emb._background(rng, 64)
    angles = []
    for t, frame in enumerate(frames):
        ys, xs = np.nonzero(np.abs(frame - bg).sum(-1) > 60)
        far = np.argmax((xs - track.x[t]) ** 2 + (ys - track.y[t]) ** 2)
        angles.append(np.arctan2(ys[far] - track.y[t], xs[far] - track.x[t]))
    steps = np.diff(np.unwrap(angles))
    assert np.all(steps > 0)  # atan2 with y down grows clockwise


def test_reversal_twins_share_every_clip_but_its_order():
    """With `reversal_twins`, clip i of a reversed class is drawn from the same seed as clip i of
    its forward partner, so the two render as exact time reversals of each other; without it the
    seeds differ. The option enters the hash only when set (existing caches stay valid)."""
    import dataclasses

    twins = dataclasses.replace(TINY, reversal_twins=True)
    for recipe, same in ((TINY, False), (twins, True)):
        plan = emb._plan(recipe)
        by_file = {v.file: v for v in plan["train"]}
        fwd, rev = by_file["train_move_left_001.mp4"], by_file["train_move_right_001.mp4"]
        assert (fwd.seed == rev.seed) is same
        a = emb.render_clip(fwd.cls, np.random.default_rng(list(fwd.seed)), 6, 32, 3.0)
        b = emb.render_clip(rev.cls, np.random.default_rng(list(rev.seed)), 6, 32, 3.0)
        assert np.array_equal(a[::-1], b) is same
    # appearance classes keep their own seeds
    plan = emb._plan(twins)
    seeds = {v.seed for v in plan["train"] if not v.cls.reverse}
    assert len(seeds) == len([v for v in plan["train"] if not v.cls.reverse])
    assert recipe_hash(TINY) != recipe_hash(twins)
    # the default's hash is the one computed before the option existed (its cache stays valid)
    import hashlib

    fields = {k: v for k, v in dataclasses.asdict(EmbeddedRecipe()).items() if k != "reversal_twins"}
    text = json.dumps({"generator_version": emb.GENERATOR_VERSION, "recipe": fields}, sort_keys=True,
                      separators=(",", ":"))
    assert recipe_hash(EmbeddedRecipe()) == hashlib.sha256(text.encode()).hexdigest()
