"""Prepared data (`harness data prepare`): every frame of every video as a JPEG, once.

Why: exact segment sampling from a long-GOP video decodes nearly every frame of it for each
8-frame clip (the sampled frames are spread over the whole video and each needs all frames from
its keyframe). Decoding every frame ONCE into per-video JPEG folders makes a clip cost 8 JPEG
decodes. Frames are stored at the training pipeline's short side (256 for 224 px crops) with
mmaction's own `Resize`, so the pipeline's first resize leaves them unchanged and the only
difference to decoding the video is JPEG's (stated tolerance: `PIXEL_TOLERANCE`).

Layout, next to the videos (`<data_root>/<dataset>/videos` -> `<data_root>/<dataset>/prepared`)::

    prepared/manifest.json                        # format, settings, one entry per video
    prepared/frames/<list path of the video>/img_00001.jpg ...

Each manifest entry holds the source's sha256, size and mtime and decord's frame count (the
index domain of `SampleFrames`). A run checks size+mtime of every source (and re-hashes where
they changed): a changed video is not read from stale frames. A missing or unreadable JPEG at
load time falls back to the video (`data.on_missing=skip`, a warning naming the file) or stops
the run (`error`, a HarnessError naming it).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import atomic_write_json
from harness.data.decoders import _set_images
from harness.data.upstream import file_sha256
from harness.errors import HarnessError

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
FILENAME_TMPL = "img_{:05}.jpg"
#: Stated tolerance per chroma subsampling (quality 95): mean absolute difference per 8-bit value
#: between a prepared frame and the decoded video frame. Set from the generated videos, whose
#: colour noise is harder on JPEG than natural video (tests/test_decoders.py checks it).
PIXEL_TOLERANCE = {"420": 8.0, "444": 3.0}


def prepared_root(video_root: str | os.PathLike) -> Path:
    return Path(video_root).parent / "prepared"


def manifest_path(video_root: str | os.PathLike) -> Path:
    return prepared_root(video_root) / "manifest.json"


def load_manifest(video_root: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest next to `video_root`, None when there is none; a HarnessError if unreadable."""
    path = manifest_path(video_root)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("videos"), dict):
            raise ValueError(f"not a version-{MANIFEST_VERSION} manifest")
    except ValueError as exc:
        raise HarnessError(f"{path}: unreadable prepared-data manifest ({exc}); delete it and rerun "
                           f"`harness data prepare`") from exc
    return manifest


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def source_is_current(entry: dict[str, Any], source: Path) -> bool:
    """Whether `source` is still the video `entry` was prepared from: same size and mtime, or,
    where those changed (a copy, a `touch`), the same sha256."""
    if not source.is_file():
        return False
    if _stat(source) == (entry.get("size"), entry.get("mtime_ns")):
        return True
    return file_sha256(source) == entry.get("sha256")


def _resize_to_short_side(frames: list[np.ndarray], short_side: int) -> list[np.ndarray]:
    """mmaction's `Resize(scale=(-1, short_side))`, the training pipeline's first step, so the
    pipeline's own resize of a prepared frame is the identity; frames are never enlarged."""
    h, w = frames[0].shape[:2]
    if min(h, w) <= short_side:
        return frames
    from mmaction.datasets.transforms import Resize

    out = Resize(scale=(-1, short_side))({"imgs": frames, "img_shape": (h, w), "modality": "RGB"})
    return out["imgs"]


#: JPEG chroma subsampling -> OpenCV's IMWRITE_JPEG_SAMPLING_FACTOR value. 4:2:0 is the usual
#: frame-folder format (smaller, faster); 4:4:4 keeps the colour detail JPEG would average away.
SUBSAMPLING = {"420": 0x221111, "444": 0x111111}


def prepare_one(video_root: str, rel: str, quality: int, short_side: int, subsampling: str = "420") -> dict[str, Any]:
    """Decode every frame of `video_root/rel` with decord (the reference decoder), write the JPEG
    folder (into a temp folder, renamed into place) and return its manifest entry."""
    import cv2
    import decord

    source = Path(video_root) / rel
    before = _stat(source)
    digest = file_sha256(source)
    reader = decord.VideoReader(str(source), num_threads=1)
    total = len(reader)
    target = prepared_root(video_root) / "frames" / rel
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written, shape = 0, (0, 0)
    for start in range(0, total, 32):  # sequential chunks: each frame decoded once
        batch = list(reader.get_batch(list(range(start, min(total, start + 32)))).asnumpy())
        for k, frame in enumerate(_resize_to_short_side(batch, short_side)):
            ok, data = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, quality,
                                     cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SUBSAMPLING[subsampling]])
            if not ok:
                raise HarnessError(f"{source}: JPEG encoding of frame {start + k} failed")
            (tmp / FILENAME_TMPL.format(start + k + 1)).write_bytes(data.tobytes())
            written += len(data)
            shape = frame.shape[:2]
    if _stat(source) != before:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HarnessError(f"{source} changed while it was being prepared; rerun `harness data prepare`")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    size, mtime = before
    return {"sha256": digest, "size": size, "mtime_ns": mtime, "total_frames": total,
            "height": int(shape[0]), "width": int(shape[1]), "bytes": written}


def prepare_videos(video_root: str | os.PathLike, rels: Iterable[str], quality: int = 95, short_side: int = 256,
                   workers: int = 1, progress: bool = False, subsampling: str = "420") -> dict[str, Any]:
    """Prepare every video of `rels` not already prepared from its current content; returns the
    manifest (also written, atomically, every 50 videos and at the end: a kill loses little)."""
    root = Path(video_root)
    manifest = load_manifest(root) or {"version": MANIFEST_VERSION, "format": "jpeg", "videos": {}}
    if subsampling not in SUBSAMPLING:
        raise HarnessError(f"JPEG subsampling {subsampling!r}: use one of {', '.join(SUBSAMPLING)}")
    settings = {"quality": quality, "short_side": short_side, "subsampling": subsampling}
    if {k: manifest.get(k) for k in settings} != settings:  # other settings: everything is redone
        manifest.update(settings, videos={})
    todo = sorted({r for r in rels if not (r in manifest["videos"] and source_is_current(manifest["videos"][r], root / r)
                                           and (prepared_root(root) / "frames" / r).is_dir())})
    missing = [r for r in todo if not (root / r).is_file()]
    if missing:
        raise HarnessError(f"{len(missing)} listed videos are missing under {root} (e.g. {missing[0]}); "
                           f"prepare what exists with the lists fixed, or provide them")
    path = manifest_path(root)
    with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
        for n, (rel, entry) in enumerate(zip(todo, pool.map(prepare_one, [str(root)] * len(todo), todo,
                                                             [quality] * len(todo), [short_side] * len(todo),
                                                             [subsampling] * len(todo))), 1):
            manifest["videos"][rel] = entry
            if progress:
                print(f"\r  prepared {n}/{len(todo)}: {rel}", end="", flush=True)
            if n % 50 == 0:
                atomic_write_json(path, manifest)
    if progress and todo:
        print()
    atomic_write_json(path, manifest)
    return manifest


class _Serial:
    """`map` in this process, with the executor's context-manager interface."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def map(fn: Any, *iterables: Iterable[Any]) -> Iterable[Any]:
        return map(fn, *iterables)


def usable_entries(video_root: str | os.PathLike, rels: Iterable[str]) -> tuple[dict[str, int], list[str], dict]:
    """Which of `rels` can be read from prepared frames: `({rel: total_frames}, stale, manifest)`;
    stale = prepared from a video that has changed (or not prepared at all)."""
    manifest = load_manifest(video_root) or {"videos": {}}
    root = Path(video_root)
    usable: dict[str, int] = {}
    stale: list[str] = []
    for rel in rels:
        entry = manifest["videos"].get(rel)
        if entry is not None and source_is_current(entry, root / rel):
            usable[rel] = int(entry["total_frames"])
        else:
            stale.append(rel)
    return usable, stale, manifest


# --------------------------------------------------------------------------------------------
# Transforms: DecordInit/DecordDecode replacements reading the JPEG folders
# --------------------------------------------------------------------------------------------

def _jpeg_decoder() -> Any:
    """simplejpeg (libjpeg-turbo, RGB out, ~2x cv2 here) when installed, else OpenCV."""
    try:
        import simplejpeg

        return lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ImportError:
        import cv2

        def decode(data: bytes) -> np.ndarray:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError("not a JPEG")
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

        return decode


class HarnessPreparedInit:
    """Set `total_frames` and `frame_dir` from the manifest; videos without usable prepared frames
    (`entries` lacks them) are opened with decord instead, as the reference pipeline would."""

    def __init__(self, video_root: str, entries: dict[str, int], on_missing: str = "skip",
                 decode_threads: int = 1) -> None:
        self.video_root = video_root
        self.frames_root = str(prepared_root(video_root) / "frames")
        self.entries = entries
        self.on_missing = on_missing
        self.decode_threads = decode_threads

    def __call__(self, results: dict) -> dict:
        rel = os.path.relpath(results["filename"], self.video_root)
        total = self.entries.get(rel)
        results["prepared_on_missing"] = self.on_missing
        results["decode_threads"] = self.decode_threads
        if total is None:
            return _open_video(results)
        results["frame_dir"] = os.path.join(self.frames_root, rel)
        results["total_frames"] = total
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.entries)} prepared videos)"


def _open_video(results: dict) -> dict:
    from mmaction.datasets.transforms import DecordInit

    results.pop("frame_dir", None)
    return DecordInit(num_threads=results.get("decode_threads", 1))(results)


class HarnessPreparedDecode:
    """Read `frame_inds` from the JPEG folder; a missing/corrupt file follows `data.on_missing`."""

    _decode = None

    def __call__(self, results: dict) -> dict:
        if "frame_dir" not in results:  # not prepared: the reference decoder
            from mmaction.datasets.transforms import DecordDecode

            return DecordDecode()(results)
        if HarnessPreparedDecode._decode is None:
            HarnessPreparedDecode._decode = _jpeg_decoder()
        decode = HarnessPreparedDecode._decode
        imgs = []
        for i in np.asarray(results["frame_inds"]).reshape(-1):
            path = os.path.join(results["frame_dir"], FILENAME_TMPL.format(int(i) + 1))
            try:
                with open(path, "rb") as handle:
                    imgs.append(decode(handle.read()))
            except (OSError, ValueError) as exc:
                return self._fall_back(results, path, exc)
        return _set_images(results, imgs)

    @staticmethod
    def _fall_back(results: dict, path: str, exc: Exception) -> dict:
        what = f"prepared frame {path} is missing or unreadable ({type(exc).__name__}: {exc})"
        if results.get("prepared_on_missing") == "error":
            raise HarnessError(f"{what}; rerun `harness data prepare`, or set data.on_missing=skip to decode "
                               f"{results['filename']} instead")
        log.warning("%s: decoding %s instead", what, results["filename"])
        from mmaction.datasets.transforms import DecordDecode

        return DecordDecode()(_open_video(results))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


TRANSFORMS = (HarnessPreparedInit, HarnessPreparedDecode)
