"""`data.augment_on=device`: crop / flip / resize on the batch (harness.engine.device_augment),
the CPU pipeline it leaves, and its place in the job identity. All on CPU."""
from __future__ import annotations

import shutil

import pytest
import torch

from harness.data.pipeline import COLOR_JITTER, train_pipeline
from harness.engine.device_augment import DeviceAugment, sample_crop_boxes, sample_flips
from harness.errors import HarnessError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- the crop-parameter sampler -------------------------------------------------------------------

def test_crop_boxes_stay_inside_and_within_area_and_aspect_ranges():
    h, w = 200, 300
    boxes = sample_crop_boxes(3000, h, w, (0.2, 0.5), (3 / 4, 4 / 3), generator=_gen())
    x0, y0, x1, y1 = boxes.T
    assert boxes.dtype == torch.int64
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    cw, ch = (x1 - x0).double(), (y1 - y0).double()
    # Hand-checked: the largest candidate, area 0.5*60000 at aspect 4/3, is 200 x 150; at 3/4 it is
    # 150 x 200: every candidate fits, so no box is the fallback. Rounding each side to a pixel
    # moves the area by at most (w + h) / 2 + 1/4 and the aspect by a pixel on either side.
    slack = (cw + ch) / 2 + 0.25
    area = cw * ch
    assert (area >= 0.2 * h * w - slack).all() and (area <= 0.5 * h * w + slack).all()
    assert ((cw + 1) / (ch - 1) >= 3 / 4).all() and ((cw - 1) / (ch + 1) <= 4 / 3).all()
    # the draws cover the ranges, not one corner of them
    frac = area / (h * w)
    assert frac.min() < 0.22 and frac.max() > 0.48
    ratio = cw / ch
    assert ratio.min() < 0.77 and ratio.max() > 1.30


def test_crop_boxes_skip_candidates_that_do_not_fit():
    # A wide 100 x 300 frame with the default ranges: a candidate fits only if its height
    # sqrt(A / r) <= 100, i.e. area fraction <= r / 3 <= 0.444 (+ rounding: w <= 134, h <= 100, so
    # < 0.447); a candidate fits with p ~ 0.28, so all 10 fail (centre-square fallback) for
    # ~0.72^10 = 3.7 % of the samples. Others are skipped, never clipped or placed outside.
    boxes = sample_crop_boxes(2000, 100, 300, generator=_gen(2))
    x0, y0, x1, y1 = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 300).all() and (y1 <= 100).all()
    area = ((x1 - x0) * (y1 - y0)).double() / 30000
    fallback = (boxes == torch.tensor([100, 0, 200, 100])).all(1)
    assert 0.02 < fallback.float().mean() < 0.06 and area[~fallback].max() < 0.447


def test_crop_offsets_are_uniform_over_every_valid_position():
    # area 0.25 of an 8x8 frame at aspect 1: always 4x4, so x0, y0 take the 5 values 0..4 (inclusive,
    # as MMAction2's random.randint(0, W - w))
    boxes = sample_crop_boxes(2000, 8, 8, (0.25, 0.25), (1.0, 1.0), generator=_gen(1))
    assert ((boxes[:, 2] - boxes[:, 0]) == 4).all() and ((boxes[:, 3] - boxes[:, 1]) == 4).all()
    for col in (0, 1):
        counts = torch.bincount(boxes[:, col], minlength=5)
        assert counts.numel() == 5 and (counts > 300).all()


def test_crop_falls_back_to_the_centre_square_when_nothing_fits():
    # area ~ 5000 px of a 100 x 50 frame at aspect 3/4..4/3 needs a height >= 61 > 50: never fits,
    # so MMAction2 takes the centre square 50 x 50 at x = 25
    boxes = sample_crop_boxes(50, 50, 100, (0.99, 1.0), generator=_gen())
    assert (boxes == torch.tensor([25, 0, 75, 50])).all()


def test_crop_ranges_are_validated():
    with pytest.raises(ValueError, match="area_range"):
        sample_crop_boxes(1, 10, 10, (0.5, 0.2))


def test_flips_half_the_time_and_never_when_not_flip_ok():
    flips = sample_flips(4000, True, generator=_gen())
    assert 0.46 < flips.float().mean().item() < 0.54
    assert not sample_flips(4000, False, generator=_gen()).any()


# ---- the batch transform --------------------------------------------------------------------------

def _coordinate_batch(b: int, t: int, side: int) -> torch.Tensor:
    """uint8 (b, 1, 3, t, side, side): channel 0 = x, channel 1 = y, channel 2 = 10 * frame index."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    frames = torch.stack([torch.stack([x, y, torch.full_like(x, 10 * k)]) for k in range(t)], dim=1)
    return frames.to(torch.uint8).expand(b, 1, 3, t, side, side).clone()


def test_output_shape_dtype_and_crops_where_the_boxes_say():
    batch = _coordinate_batch(6, 4, 73)
    out = DeviceAugment(32, flip=False)(batch, generator=_gen(3))
    assert out.dtype == torch.uint8 and tuple(out.shape) == (6, 1, 3, 4, 32, 32)
    boxes = sample_crop_boxes(6, 73, 73, generator=_gen(3))  # the same draws
    for clip, (x0, y0, x1, y1) in zip(out[:, 0], boxes.tolist()):
        # the resized crop's x / y coordinates lie within the box (bilinear: within half a pixel)
        assert x0 - 0.5 <= clip[0].min() and clip[0].max() <= x1 - 0.5
        assert y0 - 0.5 <= clip[1].min() and clip[1].max() <= y1 - 0.5
        assert clip[0, 0, 0, -1] > clip[0, 0, 0, 0]  # not mirrored: x grows to the right


def test_all_frames_of_a_sample_share_crop_and_flip_and_keep_their_order():
    batch = _coordinate_batch(8, 5, 64)
    out = DeviceAugment(48, flip=True)(batch, generator=_gen(4))
    for clip in out[:, 0].int():
        for k in range(5):
            assert torch.equal(clip[:2, k], clip[:2, 0])  # same box, same flip on every frame
            assert (clip[2, k] == 10 * k).all()  # frame k is still frame k


def test_flip_mirrors_about_half_the_clips_and_none_when_flip_is_off():
    # full-frame crops resized to their own size: the output is the frame or its mirror image
    batch = _coordinate_batch(400, 1, 16)
    aug = DeviceAugment(16, flip=True, area_range=(1.0, 1.0), aspect_range=(1.0, 1.0))
    out = aug(batch, generator=_gen(5))
    same = (out == batch).flatten(1).all(1)
    mirrored = (out == batch.flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all() and 0.4 < mirrored.float().mean().item() < 0.6
    aug.flip = False
    assert torch.equal(aug(batch, generator=_gen(5)), batch)


def test_same_seed_same_batch_and_the_default_generator_is_torch_s():
    batch = torch.randint(0, 256, (4, 1, 3, 3, 40, 40), dtype=torch.uint8)
    aug = DeviceAugment(24)
    assert torch.equal(aug(batch, generator=_gen(7)), aug(batch, generator=_gen(7)))
    assert not torch.equal(aug(batch, generator=_gen(7)), aug(batch, generator=_gen(8)))
    torch.manual_seed(11)
    first = aug(batch)
    torch.manual_seed(11)
    assert torch.equal(aug(batch), first)  # mmengine seeds (and checkpoints restore) this generator


def test_preprocessor_augments_training_batches_only():
    from harness.engine.model import VideoPreprocessor

    pre = VideoPreprocessor()
    pre.augment = DeviceAugment(32)
    items = list(torch.randint(0, 256, (2, 1, 3, 4, 37, 37), dtype=torch.uint8))
    train = pre({"inputs": items, "data_samples": None}, training=True)["inputs"]
    assert train.dtype == torch.float32 and tuple(train.shape) == (2, 1, 4, 3, 32, 32)
    evaluation = pre({"inputs": items, "data_samples": None}, training=False)["inputs"]
    assert tuple(evaluation.shape) == (2, 1, 4, 3, 37, 37)


# ---- the CPU pipeline and the identity ------------------------------------------------------------

def test_default_cpu_pipeline_is_unchanged():
    today = [
        {"type": "DecordInit"},
        {"type": "SampleFrames", "clip_len": 1, "frame_interval": 1, "num_clips": 8, "test_mode": False},
        {"type": "HarnessSegmentsToViews", "num_views": 1},
        {"type": "DecordDecode"},
        {"type": "Resize", "scale": (-1, 256)},
        {"type": "RandomResizedCrop", "area_range": (0.08, 1.0)},
        {"type": "Resize", "scale": (224, 224), "keep_ratio": False},
        {"type": "Flip", "flip_ratio": 0.5},
        {"type": "RandomApply", "transforms": [{"type": "HarnessColorJitter", **COLOR_JITTER}], "prob": 0.8},
        {"type": "HarnessRandomGrayscale", "prob": 0.2},
        {"type": "FormatShape", "input_format": "NCTHW"},
        {"type": "PackActionInputs"},
    ]
    assert train_pipeline(8, 224, color_jitter=True) == today
    assert train_pipeline(8, 224, color_jitter=True, augment_on="cpu") == today
    assert train_pipeline(8, 224) == [s for s in today if s["type"] not in ("RandomApply", "HarnessRandomGrayscale")]


def test_device_pipeline_stops_at_a_fixed_square_and_rejects_colour_jitter():
    device = train_pipeline(8, 224, augment_on="device")
    assert [s["type"] for s in device][4:] == ["Resize", "CenterCrop", "FormatShape", "PackActionInputs"]
    assert device[4]["scale"] == (-1, 256) and device[5]["crop_size"] == 256
    with pytest.raises(HarnessError, match="color_jitter"):
        train_pipeline(8, 224, color_jitter=True, augment_on="device")
    with pytest.raises(HarnessError, match="augment_on='gpu'"):
        train_pipeline(8, 224, augment_on="gpu")


def test_device_pipeline_items_stack_and_augment(embedded_root, tmp_path):
    from harness.data.annotations import write_annotation_list
    from harness.data.pipeline import build_video_dataset
    from harness.engine.model import VideoPreprocessor

    names = ["val_move_left_000.mp4", "val_move_right_000.mp4"]
    (tmp_path / "videos").mkdir()
    for n in names:
        shutil.copy(embedded_root / "videos" / n, tmp_path / "videos" / n)
    write_annotation_list(tmp_path / "list.txt", [(n, i) for i, n in enumerate(names)])
    ds, _ = build_video_dataset(tmp_path / "list.txt", tmp_path / "videos", train_pipeline(8, 64, augment_on="device"),
                                num_classes=2, probe=0)
    items = [ds[i]["inputs"] for i in range(2)]
    assert all(x.dtype == torch.uint8 and tuple(x.shape) == (1, 3, 8, 73, 73) for x in items)
    pre = VideoPreprocessor()
    pre.augment = DeviceAugment(64)
    out = pre({"inputs": items, "data_samples": None}, training=True)["inputs"]
    assert tuple(out.shape) == (2, 1, 8, 3, 64, 64)


def test_augment_on_is_part_of_the_job_id(harness_cache):
    from harness.jobs.expand import RunRequest, expand_jobs
    from harness.jobs.identity import EXECUTION_ONLY_DATA_KEYS

    def job(**data):
        return expand_jobs(RunRequest(
            methods=["aim"], protocol="base2novel", dataset="embedded", backbone="harness-tiny",
            pretrained="synthetic", splits=[1], seed=2048, method_options={}, schedule_overrides={},
            data_overrides=data, profile="embedded", cache_dir=str(harness_cache)))[0]

    default, cpu, device = job(), job(augment_on="cpu"), job(augment_on="device")
    assert "augment_on" not in EXECUTION_ONLY_DATA_KEYS
    assert default.data.augment_on == "cpu" and default.job_id == cpu.job_id
    assert device.job_id != cpu.job_id and device.data.augment_on == "device"


def test_bench_line_states_the_saving():
    from harness.measure.data_bench import format_augment_line

    line = format_augment_line({"cpu": 10.0, "device": 7.5})
    assert "augment_on=cpu 10.0 ms, device 7.5 ms" in line and "saves 2.5 ms = 25 %" in line
