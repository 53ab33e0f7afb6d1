"""MMAction2 pipelines and validated datasets on the embedded videos."""
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch

from harness.data.annotations import write_annotation_list
from harness.data.pipeline import (
    HarnessSegmentsToViews,
    build_video_dataset,
    short_side,
    train_pipeline,
)
from harness.data.pipeline import (
    test_pipeline as make_test_pipeline,  # not a test: renamed so pytest does not collect it
)
from harness.errors import HarnessError

VAL = "datasets_splits/embedded_splits/val.txt"


@pytest.fixture(scope="module")
def small_list(embedded_root, tmp_path_factory):
    """A 4-video list (moving left/right) and the video folder, copied so tests may delete files."""
    d = tmp_path_factory.mktemp("pipe")
    videos = d / "videos"
    videos.mkdir()
    names = ["val_move_left_000.mp4", "val_move_left_001.mp4", "val_move_right_000.mp4", "val_move_right_001.mp4"]
    for n in names:
        shutil.copy(embedded_root / "videos" / n, videos / n)
    write_annotation_list(d / "list.txt", [(n, int("right" in n)) for n in names])
    return d / "list.txt", videos


def x_centroids(clip: torch.Tensor) -> np.ndarray:
    """Per-frame x centroid of the pixels that differ from the temporal median. clip: (3, T, S, S)."""
    frames = clip.permute(1, 2, 3, 0).float().numpy()
    mask = np.abs(frames - np.median(frames, axis=0, keepdims=True)).sum(-1) > 60
    return np.array([np.argwhere(m)[:, 1].mean() for m in mask])


def test_pipeline_configs():
    assert short_side(224) == 256 and short_side(64) == 73
    train = train_pipeline(8, 224, flip=False, color_jitter=True)
    types = [t["type"] for t in train]
    assert types[:4] == ["DecordInit", "SampleFrames", "HarnessSegmentsToViews", "DecordDecode"]
    assert train[1] == {"type": "SampleFrames", "clip_len": 1, "frame_interval": 1, "num_clips": 8, "test_mode": False}
    assert "Flip" not in types and "RandomApply" in types and types[-2:] == ["FormatShape", "PackActionInputs"]
    test = make_test_pipeline(8, 224, clips=4, crops=3)
    assert test[1]["num_clips"] == 32 and test[1]["test_mode"] and test[2]["num_views"] == 4
    assert "ThreeCrop" in [t["type"] for t in test]
    raw = make_test_pipeline(8, 224, modality="rawframes")
    assert [t["type"] for t in raw][:3] == ["SampleFrames", "HarnessSegmentsToViews", "RawFrameDecode"]
    with pytest.raises(HarnessError, match="crops=2"):
        make_test_pipeline(8, 224, crops=2)


def test_views_interleave_segments_and_one_view_is_upstream():
    from mmaction.datasets.transforms import SampleFrames

    def indices(total: int, t: int, views: int) -> np.ndarray:
        res = SampleFrames(clip_len=1, frame_interval=1, num_clips=t * views, test_mode=True)(
            {"total_frames": total, "start_index": 0})
        return HarnessSegmentsToViews(views)(res)["frame_inds"].reshape(views, t)

    upstream = SampleFrames(clip_len=1, frame_interval=1, num_clips=8, test_mode=True)(
        {"total_frames": 100, "start_index": 0})["frame_inds"]
    np.testing.assert_array_equal(indices(100, 8, 1)[0], upstream)
    four = indices(16, 4, 4)
    np.testing.assert_array_equal(four, np.arange(16).reshape(4, 4).T)  # view k: frames k, 4+k, 8+k, 12+k
    assert all(np.all(np.diff(v) > 0) for v in indices(300, 8, 4))  # each view in temporal order


def test_train_and_test_items(small_list):
    ann, videos = small_list
    ds, info = build_video_dataset(ann, videos, train_pipeline(8, 64, color_jitter=True), num_classes=2)
    assert info == {"ann_file": str(ann), "listed": 4, "missing": 0, "missing_examples": [], "used": 4,
                    "decoder": {"used": "decord", "threads": 1}}
    item = ds[0]
    assert item["inputs"].dtype == torch.uint8 and tuple(item["inputs"].shape) == (1, 3, 8, 64, 64)
    assert int(item["data_samples"].gt_label) == 0
    pickle.loads(pickle.dumps(ds))  # spawned DataLoader workers can receive it (incl. colour jitter)

    ds, _ = build_video_dataset(ann, videos, make_test_pipeline(4, 64, clips=4, crops=3), 2, test_mode=True)
    inputs = ds[2]["inputs"]
    assert inputs.dtype == torch.uint8 and tuple(inputs.shape) == (12, 3, 4, 64, 64)
    views = inputs[:4]  # crop 0, clips 0..3: four distinct temporal views
    assert all(not torch.equal(views[i], views[j]) for i in range(4) for j in range(i + 1, 4))

    ds, _ = build_video_dataset(ann, videos, make_test_pipeline(8, 64), 2, test_mode=True)
    left, right = ds[0]["inputs"], ds[2]["inputs"]
    assert tuple(left.shape) == (1, 3, 8, 64, 64)
    assert np.all(np.diff(x_centroids(left[0])) < 0) and np.all(np.diff(x_centroids(right[0])) > 0)


def test_missing_videos(small_list, tmp_path):
    ann, videos = small_list
    partial = tmp_path / "videos"
    shutil.copytree(videos, partial)
    (partial / "val_move_left_001.mp4").unlink()
    pipe = make_test_pipeline(8, 64)
    ds, info = build_video_dataset(ann, partial, pipe, 2, max_missing=0.5, test_mode=True)
    assert len(ds) == 3 and info["listed"] == 4 and info["missing"] == 1 and info["used"] == 3
    assert info["missing_examples"] == [str(partial / "val_move_left_001.mp4")]
    with pytest.raises(HarnessError, match=r"1 of 4 videos .*val_move_left_001.mp4 \(line 2\).*data.max_missing"):
        build_video_dataset(ann, partial, pipe, 2)  # 25 % > default 5 %
    with pytest.raises(HarnessError, match=r"val_move_left_001.mp4.*data.on_missing=skip"):
        build_video_dataset(ann, partial, pipe, 2, on_missing="error", max_missing=1.0)
    with pytest.raises(HarnessError, match="does not exist: check --data-root"):
        build_video_dataset(ann, tmp_path / "nowhere", pipe, 2)
    with pytest.raises(HarnessError, match="data.on_missing='ignore'"):
        build_video_dataset(ann, partial, pipe, 2, on_missing="ignore")


def test_bad_lists_and_undecodable_videos(small_list, tmp_path):
    _ann, videos = small_list
    bad = tmp_path / "bad.txt"
    bad.write_text("val_move_left_000.mp4 0\nval_move_left_001.mp4\n")
    with pytest.raises(HarnessError, match=r"bad.txt:2: malformed line"):
        build_video_dataset(bad, videos, make_test_pipeline(8, 64), 2)
    bad.write_text("val_move_left_000.mp4 7\n")
    with pytest.raises(HarnessError, match=r"bad.txt:1: label 7 outside \[0, 2\)"):
        build_video_dataset(bad, videos, make_test_pipeline(8, 64), 2)

    (videos.parent / "broken").mkdir(exist_ok=True)
    shutil.copy(videos / "val_move_left_000.mp4", videos.parent / "broken" / "ok.mp4")
    (videos.parent / "broken" / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    lst = tmp_path / "broken.txt"
    lst.write_text("ok.mp4 0\ncorrupt.mp4 1\n")
    ds, _ = build_video_dataset(lst, videos.parent / "broken", make_test_pipeline(8, 64), 2, test_mode=True,
                                probe=1)  # probes only ok.mp4: corrupt.mp4 fails when loaded
    assert tuple(ds[0]["inputs"].shape) == (1, 3, 8, 64, 64)
    with pytest.raises(HarnessError, match=r"cannot decode .*corrupt.mp4 \(listed in .*broken.txt:2\)"):
        ds[1]
    lst.write_text("corrupt.mp4 1\nok.mp4 0\n")
    with pytest.raises(HarnessError, match=r"cannot decode .*corrupt.mp4 \(listed in .*broken.txt:1\)"):
        build_video_dataset(lst, videos.parent / "broken", make_test_pipeline(8, 64), 2)


def test_rawframes(tmp_path):
    frames = tmp_path / "frames" / "clip a"
    frames.mkdir(parents=True)
    for i in range(1, 13):  # MMAction2 rawframes are 1-based: img_00001.jpg ...
        img = np.full((48, 64, 3), i * 20, np.uint8)
        cv2.imwrite(str(frames / f"img_{i:05d}.jpg"), img)
    lst = tmp_path / "raw.txt"
    lst.write_text("clip a 12 1\nmissing 12 0\n")
    ds, info = build_video_dataset(lst, tmp_path / "frames", make_test_pipeline(4, 32, modality="rawframes"),
                                   2, modality="rawframes", max_missing=0.5, test_mode=True)
    assert info["missing"] == 1
    item = ds[0]
    assert tuple(item["inputs"].shape) == (1, 3, 4, 32, 32) and int(item["data_samples"].gt_label) == 1
    means = item["inputs"][0].float().mean(dim=(0, 2, 3))
    assert torch.all(means[1:] > means[:-1])  # frames in temporal order
