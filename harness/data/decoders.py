"""Exact decode paths behind `data.decoder`, as MMAction2 transforms that replace the loading
steps of a pipeline (`DecordInit` / `DecordDecode`) and leave every other step unchanged.

Why: decoding, not the model, limits training speed on real video, but a faster path is only
acceptable if it returns the frames the reference pipeline samples. Every path here receives the
frame indices from the same `SampleFrames` (+ `HarnessSegmentsToViews`) and returns exactly those
frames; `harness bench --data --synthetic` checks that on barcoded videos. Paths:

* `decord`   the reference: `DecordInit` + `DecordDecode` (accurate mode: it seeks to the
             keyframe before each requested frame and decodes forward);
* `pyav`     PyAV (FFmpeg) decoding forward from the keyframe before each needed frame, telling
             the decoder to skip non-reference frames that are not requested (skipping a frame no
             other frame refers to changes no other frame, so this is exact; it saves the B-frames
             of x264's default GOP);
* `frames`   prepared per-video JPEG folders (`harness data prepare`, `harness.data.prepared`);
* `gpu`      torchcodec's CUDA (NVDEC) decoder, frames copied back for the CPU transforms (an
             optional extra; see `docs/performance.md`).

`auto` (the default) is `frames` where `harness data prepare` has been run for the dataset and
`decord` elsewhere. The path used is recorded in each result's `videos.decoder`.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError

DECODERS = ("auto", "decord", "pyav", "frames", "gpu")
#: Loading transforms of `harness.data.pipeline._loading` that a decoder replaces.
_INIT, _DECODE = "DecordInit", "DecordDecode"


def swap_decoder(pipeline: Sequence[dict], decoder: str, threads: int = 1,
                 prepared: dict[str, Any] | None = None) -> list[dict]:
    """`pipeline` with its video loading steps replaced by those of `decoder` (a copy).

    `prepared` (for `frames`) holds the keyword arguments of `HarnessPreparedInit`."""
    if decoder not in DECODERS or decoder == "auto":
        raise HarnessError(f"data.decoder={decoder!r}: use one of {', '.join(DECODERS)}")
    init: dict[str, Any]
    decode: dict[str, Any]
    if decoder == "decord":
        init, decode = {"type": _INIT, "num_threads": threads}, {"type": _DECODE}
    elif decoder == "pyav":
        init, decode = {"type": "HarnessPyAVInit"}, {"type": "HarnessPyAVDecode", "threads": threads}
    elif decoder == "gpu":
        init, decode = {"type": "HarnessGpuInit"}, {"type": "HarnessGpuDecode"}
    else:
        init, decode = {"type": "HarnessPreparedInit", **(prepared or {})}, {"type": "HarnessPreparedDecode"}
    out = []
    for step in pipeline:
        kind = step.get("type")
        out.append(dict(init) if kind == _INIT else dict(decode) if kind == _DECODE else dict(step))
    if not any(s.get("type") == init["type"] for s in out):
        raise HarnessError(f"data.decoder={decoder}: the pipeline has no video loading step to replace "
                           f"(rawframe datasets are read as frames already)")
    return out


# --------------------------------------------------------------------------------------------
# PyAV: forward decoding from keyframes, unrequested non-reference frames skipped
# --------------------------------------------------------------------------------------------

class _PyAVVideo:
    """One opened video: frame count, keyframe positions, and exact frame access by index."""

    def __init__(self, path: str) -> None:
        import av

        self.container = av.open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "NONE"
        tb, rate = self.stream.time_base, self.stream.average_rate or self.stream.guessed_rate
        if not tb or not rate:
            raise HarnessError(f"{path}: no time base / frame rate in the video stream")
        self._scale = float(tb * rate)
        self._start = self.stream.start_time or 0
        keys, count = [], 0
        for packet in self.container.demux(self.stream):  # index only: no decoding
            if packet.pts is None:
                continue
            count += 1
            if packet.is_keyframe:
                keys.append(self.index(packet.pts))
        self.total_frames = count
        self.keyframes = sorted(keys) or [0]
        from av.video.reformatter import VideoReformatter

        # one colour converter for all frames: a frame's own `to_ndarray` sets up a new swscale
        # context each call (~2x the conversion here); same pixels
        self._rgb = VideoReformatter()

    def index(self, pts: int) -> int:
        return int(round((pts - self._start) * self._scale))

    def _key_before(self, index: int) -> int:
        return self.keyframes[max(0, bisect.bisect_right(self.keyframes, index) - 1)]

    def frames_at(self, indices: Sequence[int], threads: int = 1, skip_nonref: bool = True) -> list[np.ndarray]:
        """RGB frames for `indices` (any order, repeats allowed), each decoded once.

        For each wanted frame in order: if its keyframe is ahead of what has been read, seek
        there (the frames in between are not needed); else keep decoding forward. Packets of
        frames nobody asked for are sent with `skip_frame=NONREF`: the decoder drops them if no
        other frame refers to them, and decodes them (as it must) if one does."""
        import av

        wanted = sorted(set(int(i) for i in indices))
        wanted_set = set(wanted)
        got: dict[int, np.ndarray] = {}
        ctx = self.stream.codec_context
        skip_ok = skip_nonref and threads <= 1  # frame threading reorders work: no skipping there
        if threads > 1:
            self.stream.thread_type, ctx.thread_count = "AUTO", threads
        packets = None
        read_up_to = -1  # highest display index among the packets read since the last seek
        for target in wanted:
            key = self._key_before(target)
            if packets is None or key > read_up_to:
                self.container.seek(int(round(key / self._scale)) + self._start, stream=self.stream,
                                    backward=True, any_frame=False)
                ctx.flush_buffers()
                packets, read_up_to = self.container.demux(self.stream), key - 1
            while target not in got:
                packet = next(packets, None)
                if packet is None:
                    raise av.error.EOFError(0, f"frame {target} not found (the video has {self.total_frames})")
                if packet.pts is not None:
                    shown = self.index(packet.pts)
                    read_up_to = max(read_up_to, shown)
                    if skip_ok:
                        ctx.skip_frame = "DEFAULT" if shown in wanted_set else "NONREF"
                for frame in packet.decode():
                    i = self.index(frame.pts)
                    if i in wanted_set and i not in got:
                        got[i] = self._rgb.reformat(frame, format="rgb24").to_ndarray()
        ctx.skip_frame = "DEFAULT"
        return [got[int(i)] for i in indices]

    def close(self) -> None:
        self.container.close()


class HarnessPyAVInit:
    """Open the video with PyAV and set `total_frames` (counted packets: the same count decord
    reports for the stream, checked by the tests)."""

    def __call__(self, results: dict) -> dict:
        video = _PyAVVideo(results["filename"])
        results["pyav_video"] = video
        results["total_frames"] = video.total_frames
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HarnessPyAVDecode:
    """Decode `frame_inds` exactly (see `_PyAVVideo.frames_at`)."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def __call__(self, results: dict) -> dict:
        video = results.pop("pyav_video")
        try:
            imgs = video.frames_at(np.asarray(results["frame_inds"]).reshape(-1).tolist(), self.threads)
        finally:
            video.close()
        return _set_images(results, imgs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


def _set_images(results: dict, imgs: list[np.ndarray]) -> dict:
    """What `DecordDecode` leaves behind, so the rest of the pipeline cannot tell the difference."""
    results["imgs"] = imgs
    results["original_shape"] = imgs[0].shape[:2]
    results["img_shape"] = imgs[0].shape[:2]
    return results


# --------------------------------------------------------------------------------------------
# GPU (torchcodec CUDA decoder): optional extra, measured only on a CUDA host
# --------------------------------------------------------------------------------------------

def gpu_frames(decoder: Any, indices: Sequence[int]) -> list[np.ndarray]:
    """HWC uint8 RGB frames for `indices` from a torchcodec-like decoder (`get_frames_at` takes a
    list of indices and returns NCHW data), repeats allowed. Kept free of CUDA so the index
    logic is tested on CPU with a stand-in decoder."""
    wanted = sorted(set(int(i) for i in indices))
    batch = decoder.get_frames_at(indices=wanted).data
    frames = {i: batch[k].permute(1, 2, 0).contiguous().cpu().numpy() for k, i in enumerate(wanted)}
    return [frames[int(i)] for i in indices]


class HarnessGpuInit:
    """Open the video with torchcodec's CUDA decoder (exact seek mode: a full index scan)."""

    def __init__(self, device: str = "cuda") -> None:
        self.device = device

    def __call__(self, results: dict) -> dict:
        try:
            from torchcodec.decoders import VideoDecoder
        except ImportError as exc:
            raise HarnessError("data.decoder=gpu needs torchcodec with CUDA (the optional extra: "
                               "`pip install --no-index --find-links <wheels> torchcodec`, see docs/performance.md)") from exc
        decoder = VideoDecoder(results["filename"], device=self.device, seek_mode="exact")
        results["gpu_decoder"] = decoder
        results["total_frames"] = decoder.metadata.num_frames
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"


class HarnessGpuDecode:
    def __call__(self, results: dict) -> dict:
        decoder = results.pop("gpu_decoder")
        return _set_images(results, gpu_frames(decoder, np.asarray(results["frame_inds"]).reshape(-1).tolist()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


TRANSFORMS = (HarnessPyAVInit, HarnessPyAVDecode, HarnessGpuInit, HarnessGpuDecode)
