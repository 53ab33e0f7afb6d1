"""Decode paths (`data.decoder`) and prepared data: same frame indices as the reference pipeline,
pixels within tolerance, manifest hashes, changed/missing/corrupt prepared data.

Videos are generated (`harness.data.synthetic_video`): every frame carries its index as a
barcode, so a returned frame's index is read from its pixels, not trusted from the code."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """{profile: folder with videos/ and list.txt}: x264 with B-frames and GOP 16 (several
    keyframes), and VP9 WebM shaped like SSv2."""
    from harness.data.synthetic_video import ensure_synthetic_videos

    cache = tmp_path_factory.mktemp("synthetic")
    return {"tiny": ensure_synthetic_videos("tiny", cache, count=2),
            "ssv2-like": ensure_synthetic_videos("ssv2-like", cache, count=1)}


def _rels(root: Path) -> list[str]:
    return [line.split()[0] for line in (root / "list.txt").read_text().splitlines()]


@pytest.fixture()
def prepared(videos, tmp_path) -> Path:
    """A private copy of the tiny videos, prepared (tests below modify it)."""
    from harness.data.prepared import prepare_videos

    root = tmp_path / "data"
    shutil.copytree(videos["tiny"], root)
    prepare_videos(root / "videos", _rels(root))
    return root


def test_barcode_reads_back_every_index():
    from harness.data.synthetic_video import PROFILES, _texture, read_frame_index, synthetic_frame

    p = PROFILES["tiny"]
    tex = _texture(1)
    assert [read_frame_index(synthetic_frame(i, p.width, p.height, tex)) for i in (0, 1, 77, 4095)] == [0, 1, 77, 4095]


@pytest.mark.parametrize("kind", ["tiny", "ssv2-like"])
def test_every_path_returns_the_reference_frames(videos, kind, tmp_path):
    """decord (reference), pyav (with and without threads), prepared JPEG frames: the indices
    SampleFrames asks for in train (4 seeds) and test mode equal the reference's, and the
    barcode of every returned frame equals its index."""
    from harness.data.prepared import PIXEL_TOLERANCE, prepare_videos
    from harness.measure.decode_bench import check_exact

    root = tmp_path / kind
    shutil.copytree(videos[kind], root)
    rels = _rels(root)
    prepare_videos(root / "videos", rels)
    reference: dict = {}
    rows = {p: check_exact(p, root / "videos", rels, frames=8, reference=reference)
            for p in ("decord", "pyav", "pyav-2threads", "decord-2threads", "frames")}
    for path, row in rows.items():
        assert row["frames_checked"] == len(rels) * 8 * 5, path
        assert row["frames_wrong"] == 0, (path, row)
    assert rows["pyav"]["pixel_mean_abs_diff"] == 0.0  # same FFmpeg decoding: identical pixels
    assert rows["decord-2threads"]["pixel_mean_abs_diff"] == 0.0
    assert 0.0 < rows["frames"]["pixel_mean_abs_diff"] <= PIXEL_TOLERANCE["420"]


def test_efficient_mode_is_reported_inexact(videos):
    """mmaction's DecordDecode(mode='efficient') returns keyframes: the checker must catch it."""
    from harness.measure.decode_bench import check_exact

    row = check_exact("decord-efficient", videos["tiny"] / "videos", _rels(videos["tiny"]), frames=8,
                      reference={})
    assert not row["exact"] and row["frames_wrong"] > 0


def test_pyav_frame_count_and_keyframes_match_decord(videos):
    import decord

    from harness.data.decoders import _PyAVVideo

    path = videos["tiny"] / "videos" / _rels(videos["tiny"])[0]
    ref = decord.VideoReader(str(path), num_threads=1)
    video = _PyAVVideo(str(path))
    assert video.total_frames == len(ref) == 100
    assert video.keyframes == list(ref.get_key_indices()) == list(range(0, 100, 16))
    # repeats, reverse order, the last frame, and frames on both sides of a keyframe
    from harness.data.synthetic_video import read_frame_index

    asked = [99, 15, 16, 15, 0, 47, 48]
    assert [read_frame_index(f) for f in video.frames_at(asked)] == asked


def test_prepared_round_trip_and_manifest(prepared):
    import decord

    from harness.data.prepared import PIXEL_TOLERANCE, file_sha256, load_manifest
    from harness.data.synthetic_video import read_frame_index

    manifest = load_manifest(prepared / "videos")
    rels = _rels(prepared)
    assert sorted(manifest["videos"]) == sorted(rels)
    for rel in rels:
        entry = manifest["videos"][rel]
        assert entry["sha256"] == file_sha256(prepared / "videos" / rel)
        folder = prepared / "prepared" / "frames" / rel
        files = sorted(folder.glob("img_*.jpg"))
        assert len(files) == entry["total_frames"] == 100
        import cv2

        ref = decord.VideoReader(str(prepared / "videos" / rel)).get_batch([0, 50, 99]).asnumpy()
        for k, i in enumerate((0, 50, 99)):
            img = cv2.cvtColor(cv2.imread(str(folder / f"img_{i + 1:05}.jpg")), cv2.COLOR_BGR2RGB)
            assert read_frame_index(img) == i
            assert np.abs(img.astype(int) - ref[k]).mean() <= PIXEL_TOLERANCE["420"]


def _dataset(root: Path, on_missing: str, decoder: str = "auto"):
    from harness.data.pipeline import build_video_dataset, train_pipeline

    (root / "list.txt").write_text("".join(f"{r} {i}\n" for i, r in enumerate(_rels(root))))
    return build_video_dataset(root / "list.txt", root / "videos", train_pipeline(8, 64), num_classes=2,
                               on_missing=on_missing, decoder=decoder)


def test_auto_uses_prepared_frames_and_records_it(prepared, videos):
    _, info = _dataset(prepared, "error")
    assert info["decoder"]["used"] == "frames" and info["decoder"]["prepared"] == 2
    assert "q95 420" in info["decoder"]["representation"]
    _, plain = _dataset(videos["tiny"], "error")  # never prepared
    assert plain["decoder"]["used"] == "decord"
    with pytest.raises(HarnessError, match="no prepared data"):
        _dataset(videos["tiny"], "error", decoder="frames")


def test_changed_source_video_is_detected(prepared, caplog):
    rel = _rels(prepared)[0]
    video = prepared / "videos" / rel
    shutil.copyfile(prepared / "videos" / _rels(prepared)[1], video)  # other content, same name
    with pytest.raises(HarnessError, match=rel):
        _dataset(prepared, "error")
    with caplog.at_level(logging.WARNING):
        dataset, info = _dataset(prepared, "skip")
    assert info["decoder"]["from_video"] == 1 and info["decoder"]["prepared"] == 1
    assert "1 of 2 videos have no current prepared frames" in caplog.text
    # a touched but unchanged file (same bytes, new mtime) is still current: hashes decide
    from harness.data.prepared import usable_entries

    other = prepared / "videos" / _rels(prepared)[1]
    other.write_bytes(other.read_bytes())
    usable, stale, _ = usable_entries(prepared / "videos", _rels(prepared))
    assert stale == [rel] and list(usable) == [_rels(prepared)[1]]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_prepared_frame(prepared, damage, caplog):
    """on_missing=error names the file; skip decodes that clip from the video (right frames)."""
    from harness.data.synthetic_video import read_frame_index

    folder = prepared / "prepared" / "frames" / _rels(prepared)[0]
    for jpg in folder.glob("img_*.jpg"):
        if damage == "missing":
            jpg.unlink()
        else:
            jpg.write_bytes(b"not a jpeg")
    dataset, _ = _dataset(prepared, "error")
    with pytest.raises(HarnessError, match=r"prepared frame .*img_\d{5}\.jpg"):
        dataset[0]
    from harness.data.pipeline import _loading
    from harness.measure.decode_bench import _compose, _load, _pipeline

    compose = _compose(_pipeline("frames", _loading(8, 1, False, "video"), prepared / "videos", _rels(prepared)))
    assert compose.transforms[0].on_missing == "error"
    compose.transforms[0].on_missing = "skip"
    with caplog.at_level(logging.WARNING):
        out = _load(compose, str(prepared / "videos" / _rels(prepared)[0]), 3)
    assert str(folder) in caplog.text and "decoding" in caplog.text
    assert [read_frame_index(i) for i in out["imgs"]] == list(out["frame_inds"])


def test_gpu_frame_selection_on_cpu():
    """The GPU path asks torchcodec for sorted unique indices and maps them back (repeats, order)."""
    import torch

    from harness.data.decoders import gpu_frames

    class FakeDecoder:
        def __init__(self):
            self.calls = []

        def get_frames_at(self, indices):
            self.calls.append(list(indices))
            data = torch.stack([torch.full((3, 2, 2), i, dtype=torch.uint8) for i in indices])
            return type("Batch", (), {"data": data})()

    fake = FakeDecoder()
    frames = gpu_frames(fake, [7, 3, 7, 0])
    assert fake.calls == [[0, 3, 7]]
    assert [int(f[0, 0, 0]) for f in frames] == [7, 3, 7, 0] and frames[0].shape == (2, 2, 3)


def test_bad_decoder_options():
    from harness.data.decoders import swap_decoder
    from harness.data.pipeline import _loading
    from harness.settings import DataOptions, build_dataclass

    with pytest.raises(HarnessError, match="data.decoder"):
        build_dataclass(DataOptions, {"decoder": "ffmpeg"}, "data")
    with pytest.raises(HarnessError, match="no video loading step"):
        swap_decoder(_loading(8, 1, False, "rawframes"), "pyav")


@pytest.mark.slow
def test_cli_prepare_and_check_embedded(tmp_path, monkeypatch, capsys):
    """`harness data prepare` on a private embedded dataset, then `data check --gpu-rate`."""
    from harness.cli import main
    from harness.data.pipeline import build_video_dataset, train_pipeline
    from harness.data.prepared import load_manifest

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    assert main(["data", "prepare", "--dataset", "embedded", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    root = next((tmp_path / "embedded").glob("*/videos"))
    manifest = load_manifest(root)
    assert f"{len(manifest['videos'])} videos prepared" in out and len(manifest["videos"]) > 100
    ann = root.parent / "datasets_splits" / "embedded_splits" / "val.txt"
    _, info = build_video_dataset(ann, root, train_pipeline(8, 32), num_classes=12)  # default: decord
    assert info["decoder"]["used"] == "decord"
    _, info = build_video_dataset(ann, root, train_pipeline(8, 32), num_classes=12, decoder="auto")
    assert info["decoder"]["used"] == "frames" and info["decoder"]["from_video"] == 0
    assert main(["data", "check", "--dataset", "embedded", "--role", "b2n_base_val", "--sample", "2",
                 "--gpu-rate", "300"]) == 0
    out = capsys.readouterr().out
    assert "300 clips/s on the GPU needs" in out and "DataLoader workers" in out


def test_workers_report_arithmetic():
    from harness.commands.data import workers_report

    # 80 ms per clip = 12.5 clips/s per worker; 300 clips/s needs ceil(24.0) = 24, 301 needs 25
    assert "needs 24 DataLoader workers" in workers_report(300, 0.08)
    assert "needs 25 DataLoader workers" in workers_report(301, 0.08)


def test_warns_when_prepared_frames_are_smaller_than_the_resize_target(prepared, caplog):
    from harness.data.pipeline import build_video_dataset, train_pipeline

    (prepared / "list.txt").write_text("".join(f"{r} {i}\n" for i, r in enumerate(_rels(prepared))))
    with caplog.at_level(logging.WARNING):
        build_video_dataset(prepared / "list.txt", prepared / "videos", train_pipeline(8, 224), num_classes=2,
                            decoder="auto")
    assert "upscaled" not in caplog.text  # 224 px: resize target 256 = prepared short side
    with caplog.at_level(logging.WARNING):
        build_video_dataset(prepared / "list.txt", prepared / "videos", train_pipeline(8, 336), num_classes=2,
                            decoder="auto")
    assert "resizes to 384" in caplog.text and "--short-side 384" in caplog.text


def test_unreadable_video_names_the_file_on_every_path(tmp_path):
    from harness.data.pipeline import build_video_dataset, train_pipeline

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "bad.mp4").write_bytes(b"\x00" * 4096)
    (tmp_path / "list.txt").write_text("bad.mp4 0\n")
    for decoder in ("decord", "pyav"):
        dataset, _ = build_video_dataset(tmp_path / "list.txt", tmp_path / "videos", train_pipeline(8, 32),
                                         num_classes=1, probe=0, decoder=decoder)
        with pytest.raises(HarnessError, match=r"cannot decode .*bad\.mp4 \(listed in .*list\.txt:1\)"):
            dataset[0]
