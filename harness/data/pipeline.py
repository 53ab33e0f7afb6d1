"""MMAction2 data pipelines and validated video datasets.

Why: every method in a comparison must see exactly the same frames, crops and views, so the
pipelines are built in one place from a few numbers (frames T, image size S, views), and the
datasets are built only after the list has been validated (`file:line` errors) and the missing
videos have been counted (a silently shrunken dataset changes the numbers).

Frame sampling is the upstream segment-based one: `SampleFrames(clip_len=1, frame_interval=1,
num_clips=T)` splits the video into T segments and takes one frame from each (random offset in
training, segment centre in testing). MMAction2 would then format that as T clips of one frame;
`HarnessSegmentsToViews` regroups the indices so `FormatShape('NCTHW')` gives ONE clip of T
frames. For `clips` temporal views at test time the sampler is asked for `clips*T` segments and
view k takes segments k, k+clips, k+2*clips, ...: view k's frame in segment t lies at
(k+0.5)/clips of that segment, so the views are evenly interleaved and `clips=1` is exactly the
upstream single view.

Item format (what the engine's collate receives; `mmengine.dataset.pseudo_collate` works):
`dict(inputs=uint8 Tensor (V, 3, T, S, S), data_samples=ActionDataSample with gt_label)`,
V = clips * crops (crop-major: all clips of crop 0, then crop 1, ...); training gives V = 1.
Normalisation (CLIP mean/std) is left to the model's data preprocessor.

mmengine/mmaction are imported only when a dataset is built, so importing this module is cheap.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data import decoders, prepared
from harness.data.annotations import MODALITIES, AnnotationEntry, read_annotation_list
from harness.data.decoders import DECODERS, swap_decoder
from harness.data.prepared import load_manifest, manifest_path
from harness.data.prepared import usable_entries as usable_prepared_entries
from harness.errors import HarnessError

log = logging.getLogger(__name__)

ON_MISSING = ("skip", "error")
#: Upstream ViFi-CLIP colour augmentation: jitter with p=0.8, greyscale with p=0.2.
COLOR_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}


def short_side(image_size: int) -> int:
    """The test-time resize target: 256 for 224 px crops, scaled for other sizes."""
    return round(image_size * 256 / 224)


def _loading(num_frames: int, views: int, test_mode: bool, modality: str) -> list[dict]:
    if modality not in MODALITIES:
        raise HarnessError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}.")
    if num_frames < 1 or views < 1:
        raise HarnessError(f"num_frames ({num_frames}) and clips ({views}) must be >= 1.")
    sample = {"type": "SampleFrames", "clip_len": 1, "frame_interval": 1,
              "num_clips": num_frames * views, "test_mode": test_mode}
    regroup = {"type": "HarnessSegmentsToViews", "num_views": views}
    if modality == "video":
        return [{"type": "DecordInit"}, sample, regroup, {"type": "DecordDecode"}]
    return [sample, regroup, {"type": "RawFrameDecode"}]


AUGMENT_ON = ("cpu", "device")


def train_pipeline(num_frames: int, image_size: int, modality: str = "video", color_jitter: bool = False,
                   flip: bool = True, area_range: tuple[float, float] = (0.08, 1.0),
                   augment_on: str = "cpu") -> list[dict]:
    """Training transforms: T segment frames, random resized crop, flip, optional colour jitter.

    Pass `flip=False` for datasets whose labels a mirror image changes (`DatasetSpec.flip_ok`).
    `augment_on='device'` (`data.augment_on`) stops after decoding and a deterministic resize
    (short side `short_side(image_size)`, centre square), so items stack into a batch; the crop,
    flip and final resize then run on the batch (`harness.engine.device_augment`).
    """
    if augment_on not in AUGMENT_ON:
        raise HarnessError(f"data.augment_on={augment_on!r}: use one of {', '.join(AUGMENT_ON)}")
    if augment_on == "device":
        if color_jitter:
            raise HarnessError("data.augment_on=device does not support data.color_jitter=true (colour jitter "
                               "runs on the CPU only); use data.augment_on=cpu for colour-jitter runs")
        side = short_side(image_size)
        return _loading(num_frames, 1, False, modality) + [
            {"type": "Resize", "scale": (-1, side)},
            {"type": "CenterCrop", "crop_size": side},
            {"type": "FormatShape", "input_format": "NCTHW"},
            {"type": "PackActionInputs"},
        ]
    pipeline = _loading(num_frames, 1, False, modality) + [
        {"type": "Resize", "scale": (-1, short_side(image_size))},
        {"type": "RandomResizedCrop", "area_range": tuple(area_range)},
        {"type": "Resize", "scale": (image_size, image_size), "keep_ratio": False},
    ]
    if flip:
        pipeline.append({"type": "Flip", "flip_ratio": 0.5})
    if color_jitter:
        jitter = {"type": "HarnessColorJitter", **COLOR_JITTER}
        pipeline += [{"type": "RandomApply", "transforms": [jitter], "prob": 0.8},
                     {"type": "HarnessRandomGrayscale", "prob": 0.2}]
    return pipeline + [{"type": "FormatShape", "input_format": "NCTHW"}, {"type": "PackActionInputs"}]


def test_pipeline(num_frames: int, image_size: int, clips: int = 1, crops: int = 1,
                  modality: str = "video") -> list[dict]:
    """Test transforms: `clips` temporal views x `crops` (1 centre or 3) spatial views."""
    if crops not in (1, 3):
        raise HarnessError(f"crops={crops} is not supported; use 1 (centre crop) or 3 (three crops).")
    # Upstream ViFi-CLIP: centre crop S out of a 256/224*S short side; three crops of S x S along
    # the long side of an S short side (ThreeCrop needs the crop to span one side of the frame).
    if crops == 1:
        spatial = [{"type": "Resize", "scale": (-1, short_side(image_size))},
                   {"type": "CenterCrop", "crop_size": image_size}]
    else:
        spatial = [{"type": "Resize", "scale": (-1, image_size)},
                   {"type": "ThreeCrop", "crop_size": image_size}]
    return _loading(num_frames, clips, True, modality) + spatial + [
        {"type": "Resize", "scale": (image_size, image_size), "keep_ratio": False},
        {"type": "FormatShape", "input_format": "NCTHW"},
        {"type": "PackActionInputs"},
    ]


# --------------------------------------------------------------------------------------------
# Transforms of our own (plain callables: mmengine's Compose only needs `callable`)
# --------------------------------------------------------------------------------------------

class HarnessSegmentsToViews:
    """Regroup `num_views*T` segment indices into `num_views` clips of T frames (see module doc)."""

    def __init__(self, num_views: int = 1) -> None:
        self.num_views = num_views

    def __call__(self, results: dict) -> dict:
        inds = np.asarray(results["frame_inds"]).reshape(-1)
        views = self.num_views
        if inds.size % views:
            raise ValueError(f"{inds.size} sampled frames cannot form {views} views")
        t = inds.size // views
        results["frame_inds"] = inds.reshape(t, views).T.reshape(-1)
        results["clip_len"] = t
        results["num_clips"] = views
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_views={self.num_views})"


class HarnessRandomGrayscale:
    """With probability `prob`, turn every frame of the clip grey (3 equal channels)."""

    def __init__(self, prob: float = 0.2) -> None:
        self.prob = prob

    def __call__(self, results: dict) -> dict:
        if np.random.rand() < self.prob:
            imgs = np.asarray(results["imgs"], dtype=np.float32)
            grey = imgs @ np.array([0.299, 0.587, 0.114], np.float32)
            results["imgs"] = list(np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, -1))
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob})"


def _color_jitter_class() -> type:
    """MMAction2's ColorJitter with its hue shift fixed for NumPy 2 (it adds a negative Python int
    to a uint8 array, which NumPy 2 rejects with OverflowError)."""
    import cv2
    from mmaction.datasets.transforms import ColorJitter

    def adjust_hue(img: np.ndarray, factor: float) -> np.ndarray:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(factor * 255)) % 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)

    return type("HarnessColorJitter", (ColorJitter,), {"adjust_hue": staticmethod(adjust_hue),
                                                         "__module__": __name__})


_REGISTERED = False


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time (a handler keeps its stream object, and a
    test's or a caller's replacement of stderr may be closed by the next write)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR = _CurrentStderr()


def mm_console_to_stderr() -> None:
    """Point mmengine's console loggers at stderr. Why: MMLogger's console handler writes to
    stdout, so its notices (`"FileClient" will be deprecated`, printed when a decode transform
    is built) would come before a command's result there and break `--format json`; stdout
    carries results only. Idempotent and cheap: run before anything that may log through it."""
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance()  # the logger `print_log(logger="current")` uses, created now if none
    for logger in list(MMLogger._instance_dict.values()):
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not _STDERR:
                handler.stream = _STDERR  # not setStream: it flushes the old stream, which may be closed


def register_transforms() -> None:
    """Set mmengine's default scope to mmaction and register this project's transforms and
    datasets there (idempotent). Call before building anything from the pipeline configs."""
    global _REGISTERED
    mm_console_to_stderr()
    if _REGISTERED:
        return
    from mmengine.registry import init_default_scope

    init_default_scope("mmaction")
    import mmaction.datasets  # noqa: F401  (registers VideoDataset, RawframeDataset, transforms)
    from mmaction.registry import DATASETS, TRANSFORMS

    for cls in (HarnessSegmentsToViews, HarnessRandomGrayscale, _lazy_class("HarnessColorJitter"),
                *decoders.TRANSFORMS, *prepared.TRANSFORMS):
        TRANSFORMS.register_module(name=cls.__name__, module=cls, force=True)
    for name in ("HarnessVideoDataset", "HarnessRawframeDataset"):
        DATASETS.register_module(name=name, module=_lazy_class(name), force=True)
    _REGISTERED = True


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

def _make_dataset_class(name: str) -> type:
    """Subclass VideoDataset/RawframeDataset so the data list comes from the validated entries and
    a video that fails to load raises a HarnessError naming it (not a decord traceback)."""
    from mmaction.datasets import RawframeDataset, VideoDataset

    base = VideoDataset if name == "HarnessVideoDataset" else RawframeDataset

    def __init__(self, entries: Sequence[tuple], **kwargs: Any) -> None:
        self._entries = list(entries)
        base.__init__(self, **kwargs)

    def load_data_list(self) -> list[dict]:
        out = []
        for path, label, line, total in self._entries:
            info: dict[str, Any] = {"label": label, "ann_line": line}
            if base is VideoDataset:
                info["filename"] = os.path.join(self.data_prefix["video"], path)
            else:
                info["frame_dir"] = os.path.join(self.data_prefix["img"], path)
                info["total_frames"] = total
            out.append(info)
        return out

    def prepare_data(self, idx: int) -> Any:
        try:
            return base.prepare_data(self, idx)
        except HarnessError:
            raise
        except Exception as exc:
            info = self.get_data_info(idx)
            target = info.get("filename") or info.get("frame_dir")
            where = f"{target} (listed in {self.ann_file}:{info.get('ann_line')})"
            if not _failed_while_loading(exc):
                if hasattr(exc, "add_note"):  # a transform problem, not the file: keep the traceback
                    exc.add_note(f"while transforming {where}")
                raise
            raise HarnessError(f"cannot decode {where}: {type(exc).__name__}: {exc}. Re-encode or replace "
                               f"the file, or remove that line from the list.") from exc

    cls = type(name, (base,), {"__init__": __init__, "load_data_list": load_data_list,
                               "prepare_data": prepare_data, "__module__": __name__,
                               "__doc__": _make_dataset_class.__doc__})
    return cls


def _failed_while_loading(exc: BaseException) -> bool:
    """Whether `exc` was raised while opening/decoding the file (decord or MMAction2's loaders)."""
    files = [frame.f_code.co_filename.replace(os.sep, "/")
             for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return any("/decord/" in f or f.endswith("transforms/loading.py") or "/PIL/" in f or "/av/" in f
               or f.endswith("harness/data/decoders.py") for f in files)


_LAZY_CLASSES = ("HarnessVideoDataset", "HarnessRawframeDataset", "HarnessColorJitter")


def _lazy_class(name: str) -> type:
    cls = globals().get(name)
    if cls is None:
        cls = _color_jitter_class() if name == "HarnessColorJitter" else _make_dataset_class(name)
        globals()[name] = cls
    return cls


def __getattr__(name: str) -> type:
    """Create the MMAction2 subclasses on first use (MMAction2 is slow to import); being module
    attributes also lets pickle (spawned DataLoader workers) find them by name."""
    if name in _LAZY_CLASSES:
        return _lazy_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _exists(path: Path, modality: str) -> bool:
    return path.is_file() if modality == "video" else path.is_dir()


def _probe(path: Path, entry: AnnotationEntry, ann_file: str, modality: str) -> None:
    """Open one video with decord so an unreadable format fails at build time, naming the file."""
    if modality != "video":
        return
    try:
        import decord

        reader = decord.VideoReader(str(path), num_threads=1)
        if len(reader) == 0:
            raise RuntimeError("no frames")
    except Exception as exc:
        raise HarnessError(f"cannot decode {path} (listed in {ann_file}:{entry.line}): {exc}. Check that the "
                           f"file is a complete video that decord/FFmpeg can read.") from exc


def _choose_decoder(pipeline: list[dict], decoder: str, threads: int, root: Path, rels: list[str],
                    on_missing: str) -> tuple[list[dict], dict]:
    """The pipeline with `decoder`'s loading steps, and what to record about it.

    `auto` reads prepared frames where `harness data prepare` has written them (and says so in
    the log and the record), else decodes the videos with decord. Videos whose source changed
    since it was prepared are decoded from the video (`on_missing=skip`) or stop the run (`error`)."""
    if decoder not in DECODERS:
        raise HarnessError(f"data.decoder={decoder!r}: use one of {', '.join(DECODERS)}")
    if threads < 1:
        raise HarnessError(f"data.decode_threads={threads}: must be >= 1")
    if decoder == "auto":
        decoder = "frames" if load_manifest(root) is not None else "decord"
    record: dict[str, Any] = {"used": decoder, "threads": threads}
    if decoder != "frames":
        return swap_decoder(pipeline, decoder, threads), record
    manifest = load_manifest(root)
    if manifest is None:
        raise HarnessError(f"data.decoder=frames: no prepared data at {manifest_path(root)}; run `harness data "
                           f"prepare` for this dataset, or use data.decoder=auto")
    usable, stale, manifest = usable_prepared_entries(root, rels)
    if stale:
        what = (f"{len(stale)} of {len(rels)} videos have no current prepared frames in {manifest_path(root)} "
                f"(changed since `harness data prepare` or never prepared; e.g. {root / stale[0]})")
        if on_missing == "error":
            raise HarnessError(f"{what}. Rerun `harness data prepare`, or set data.on_missing=skip to decode those "
                               f"videos instead.")
        log.warning("%s: decoding those from the video", what)
    wanted = max((step["scale"][1] for step in pipeline if step.get("type") == "Resize"
                  and tuple(step.get("scale", ()))[:1] == (-1,)), default=0)
    if wanted > int(manifest.get("short_side") or 0):
        log.warning("prepared frames in %s have short side <= %s but the pipeline resizes to %d: frames larger than "
                    "that were downscaled and are now upscaled again; rerun `harness data prepare --short-side %d`",
                    manifest_path(root).parent, manifest.get("short_side"), wanted, wanted)
    representation = (f"{manifest.get('format')} q{manifest.get('quality')} {manifest.get('subsampling')} "
                      f"short side {manifest.get('short_side')}")
    log.warning("reading prepared frames (%s) for %d of %d videos from %s", representation, len(usable), len(rels),
             manifest_path(root).parent)
    record.update(representation=representation, manifest=str(manifest_path(root)),
                  prepared=len(usable), from_video=len(stale))
    prepared = {"video_root": str(root), "entries": usable, "on_missing": on_missing, "decode_threads": threads}
    return swap_decoder(pipeline, "frames", threads, prepared), record


def usable_entries(ann_file: str, root: Path, num_classes: int, modality: str, on_missing: str,
                   max_missing: float, classes_file: str | os.PathLike | None = None) -> tuple[list[AnnotationEntry], dict]:
    """The entries of a validated list whose videos exist, and the missing-video account; raises
    a HarnessError when the list is empty or too many are missing. Shared by the dataset build
    and the up-front check of `harness run` (harness.validate), so both apply one rule."""
    if on_missing not in ON_MISSING:
        raise HarnessError(f"data.on_missing={on_missing!r} is not valid; use one of {', '.join(ON_MISSING)}.")
    if not 0.0 <= max_missing <= 1.0:
        raise HarnessError(f"data.max_missing={max_missing} must be a fraction in [0, 1].")
    entries = read_annotation_list(ann_file, num_classes, modality=modality, classes_file=classes_file)
    if not entries:
        raise HarnessError(f"{ann_file}: the list is empty; it needs one 'path label' line per video.")
    present = [e for e in entries if _exists(root / e.path, modality)]
    missing = [e for e in entries if not _exists(root / e.path, modality)]
    info = {"ann_file": ann_file, "listed": len(entries), "missing": len(missing),
            "missing_examples": [str(root / e.path) for e in missing[:5]], "used": len(present)}
    if missing:
        examples = ", ".join(f"{e.path} (line {e.line})" for e in missing[:5])
        what = (f"{len(missing)} of {len(entries)} videos listed in {ann_file} are missing under {root} "
                f"(e.g. {examples}).")
        if not root.is_dir():
            what += f" The folder {root} does not exist: check --data-root / HARNESS_DATA_ROOT."
        if on_missing == "error":
            raise HarnessError(f"{what} Provide them, or set data.on_missing=skip to leave them out.")
        if len(missing) / len(entries) > max_missing:
            raise HarnessError(f"{what} That is more than data.max_missing={max_missing:g} of the list; fix the "
                               f"data root or raise data.max_missing to skip them.")
        log.warning("skipping %d of %d missing videos listed in %s (e.g. %s)", len(missing), len(entries),
                    ann_file, examples)
    return present, info


def build_video_dataset(
    ann_file: str | os.PathLike,
    data_root: str | os.PathLike,
    pipeline: list[dict],
    num_classes: int,
    modality: str = "video",
    on_missing: str = "skip",
    max_missing: float = 0.05,
    test_mode: bool = False,
    classes_file: str | os.PathLike | None = None,
    probe: int = 3,
    filename_tmpl: str = "img_{:05}.jpg",
    decoder: str = "decord",
    decode_threads: int = 1,
) -> tuple[Any, dict]:
    """Validate `ann_file`, account for missing videos, and build an MMAction2 dataset.

    `data_root` is the folder the list's paths are relative to (`datasets.video_root(...)`).
    Missing files: `on_missing='error'` fails on any; `'skip'` drops them but fails when more than
    `max_missing` (fraction) are gone, because then the numbers are not comparable any more.
    `probe` videos (spread over the list) are opened at build time so an unreadable format fails
    early; the others are checked as they are loaded (a HarnessError naming file and list line).
    `decoder` (`data.decoder`, see `harness.data.decoders`) picks the decode path of a video
    dataset; `info['decoder']` records the one used.
    Returns `(dataset, info)` with `info = {'listed', 'missing', 'missing_examples', 'used', 'decoder'}`.
    """
    ann_file = str(ann_file)
    root = Path(data_root)
    present, info = usable_entries(ann_file, root, num_classes, modality, on_missing, max_missing, classes_file)
    register_transforms()  # before the probes: their decoders may log through mmengine
    if probe > 0 and present:  # spread over the list: one bad folder/codec is caught early
        for i in sorted(set(np.linspace(0, len(present) - 1, probe).round().astype(int).tolist())):
            _probe(root / present[i].path, present[i], ann_file, modality)

    if modality == "video":
        pipeline, info["decoder"] = _choose_decoder(pipeline, decoder, decode_threads, root,
                                                    [e.path for e in present], on_missing)
    else:
        info["decoder"] = {"used": "rawframes"}
    register_transforms()
    from mmaction.registry import DATASETS
    from mmengine.registry import DefaultScope

    common = {"entries": [(e.path, e.label, e.line, e.total_frames) for e in present], "ann_file": ann_file,
                  "pipeline": pipeline, "num_classes": num_classes, "test_mode": test_mode}
    if modality == "video":
        cfg = dict(type="HarnessVideoDataset", data_prefix={"video": str(root)}, **common)
    else:
        cfg = dict(type="HarnessRawframeDataset", data_prefix={"img": str(root)},
                   filename_tmpl=filename_tmpl, **common)
    try:
        # An mmengine Runner switches the global default scope; build in mmaction's explicitly.
        with DefaultScope.overwrite_default_scope("mmaction"):
            dataset = DATASETS.build(cfg)
    except HarnessError:
        raise
    except Exception as exc:  # a bad transform config: name the option, not mmengine's internals
        raise HarnessError(f"cannot build the dataset for {ann_file}: {type(exc).__name__}: {exc}. Check the "
                           f"pipeline options.") from exc
    return dataset, info
