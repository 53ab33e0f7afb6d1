"""Generated videos shaped like the real datasets, for data-path benchmarks anyone can run.

Why: decode cost depends on resolution, frame rate, duration, codec and keyframe interval, so a
benchmark on the tiny `embedded` clips says nothing about Kinetics. These videos copy those
properties (`PROFILES`) with textured motion (so the codec has real work: a scrolling noise
texture, not flat colour), and every frame carries its own index as a barcode of black/white
blocks along the top edge. `read_frame_index` reads it back from a decoded frame, so a benchmark
can check that a decode path returned the frames it was asked for (mmaction's
`DecordDecode(mode='efficient')`, for example, returns the nearest keyframe instead).

A few videos per profile are written once into `<cache>/synthetic-video/<profile>-v<N>/` with a
one-line-per-video list (`list.txt`, label = video number) and reused.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.atomic import atomic_write, atomic_write_json, atomic_write_text
from harness.errors import HarnessError

#: Bump when the generated content changes (old caches are then ignored, not reused).
GENERATOR_VERSION = 2
#: Barcode: BITS blocks along the top edge, each `height // BLOCK_DIV` pixels square.
BITS = 12
BLOCK_DIV = 16


@dataclass(frozen=True)
class VideoProfile:
    """What a dataset's videos look like to a decoder."""

    width: int
    height: int
    fps: int
    seconds: float
    codec: str
    ext: str
    gop: int | None  # keyframe interval; None = the encoder's default (x264: 250)
    note: str

    @property
    def frames(self) -> int:
        return int(round(self.fps * self.seconds))


PROFILES: dict[str, VideoProfile] = {
    # Kinetics clips are 10 s; the common short-side-256 copies are ~456x256 at 30 fps, H.264
    # with the encoder's default keyframe interval.
    "kinetics-like": VideoProfile(456, 256, 30, 10.0, "libx264", ".mp4", None,
                                  "Kinetics-400/600: 10 s, 30 fps, 456x256, H.264, x264 default GOP (250)"),
    # SSv2 ships as VP9 WebM, 240 px high, 12 fps, a few seconds long.
    "ssv2-like": VideoProfile(426, 240, 12, 4.0, "libvpx-vp9", ".webm", None,
                              "Something-Something v2: ~4 s, 12 fps, 426x240, VP9 WebM"),
    # For tests only: small and quick to encode, B-frames and a keyframe every 16 frames, so
    # seeking across GOPs and skipping non-reference frames are both exercised.
    "tiny": VideoProfile(160, 96, 25, 4.0, "libx264", ".mp4", 16, "test clip: 4 s, 25 fps, 160x96, H.264, GOP 16"),
}


def synthetic_frame(index: int, width: int, height: int, texture: np.ndarray) -> np.ndarray:
    """Frame `index` (uint8 RGB, height x width): the texture scrolled by `index` pixels, a moving
    square, and the index barcode along the top (white block = bit set, least significant first)."""
    th, tw = texture.shape[:2]
    ys = (np.arange(height) + index) % th
    xs = (np.arange(width) + 2 * index) % tw
    frame = texture[ys[:, None], xs[None, :]].copy()
    side = height // 4
    x0 = (index * 3) % max(1, width - side)
    frame[height // 2 - side // 2:height // 2 + side // 2, x0:x0 + side] = (220, 40, 40)
    block = height // BLOCK_DIV
    frame[:block, :block * BITS] = 0
    for bit in range(BITS):
        if (index >> bit) & 1:
            frame[:block, bit * block:(bit + 1) * block] = 255
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """The index barcoded into a decoded frame (any size with the generated aspect ratio)."""
    block = frame.shape[0] / BLOCK_DIV
    strip = frame[:int(np.ceil(block)), :int(np.ceil(block * BITS))]  # only the barcode: cheap
    grey = np.asarray(strip, dtype=np.float32).mean(axis=-1)
    value = 0
    for bit in range(BITS):  # the inner half of each block: robust to codec ringing at the edges
        y0, y1 = int(block * 0.25), max(int(block * 0.25) + 1, int(block * 0.75))
        x0, x1 = int(block * (bit + 0.25)), max(int(block * (bit + 0.25)) + 1, int(block * (bit + 0.75)))
        if grey[y0:y1, x0:x1].mean() > 128:
            value |= 1 << bit
    return value


def _texture(seed: int) -> np.ndarray:
    """Smooth-ish colour noise (natural video is neither flat nor white noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    return cv2.resize(small, (640, 384), interpolation=cv2.INTER_CUBIC)


def write_video(path: Path, profile: VideoProfile, seed: int, gop: int | None = None) -> None:
    """Encode one video of `profile` with PyAV (single-threaded: the same bytes every time)."""
    import av

    gop = gop if gop is not None else profile.gop
    texture = _texture(seed)

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4" if profile.ext == ".mp4" else "webm") as out:
            stream = out.add_stream(profile.codec, rate=profile.fps)
            stream.width, stream.height, stream.pix_fmt = profile.width, profile.height, "yuv420p"
            options = {"threads": "1"}
            if profile.codec == "libx264":
                options["preset"] = "medium"
            else:  # libvpx-vp9: a fast setting; the decoder's work does not depend on it much
                options.update({"deadline": "realtime", "cpu-used": "8"})
                stream.bit_rate = 400_000  # about SSv2's
            if gop is not None:
                options["g"] = str(gop)
            stream.options = options
            for i in range(profile.frames):
                frame = av.VideoFrame.from_ndarray(synthetic_frame(i, profile.width, profile.height, texture),
                                                   format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)

    atomic_write(path, write)


def _encode_in_subprocess(folder: Path, kind: str, indices: list[int], gop: int | None) -> None:
    """Encode in a fresh interpreter: once decord is imported its bundled FFmpeg shadows PyAV's
    and libvpx-vp9 refuses to open ("Invalid argument"), so encoding must not share a process
    with the decoders being measured."""
    cmd = [sys.executable, "-m", "harness.data.synthetic_video", kind, str(folder), str(gop or 0),
           *map(str, indices)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessError(f"generating {kind} videos in {folder} failed: {tail}")


def default_cache() -> Path:
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")


def ensure_synthetic_videos(kind: str, cache_dir: str | os.PathLike | None = None, count: int = 3,
                            gop: int | None = None) -> Path:
    """The folder holding `count` generated videos of profile `kind` (written on first use).

    Layout: `videos/<kind>_<i><ext>`, `list.txt` (`<file> <i>` per line, so `count` classes),
    `profile.json`. `gop` overrides the profile's keyframe interval (a separate cache folder)."""
    if kind not in PROFILES:
        raise HarnessError(f"--synthetic {kind!r}: unknown profile; use one of {', '.join(PROFILES)}")
    profile = PROFILES[kind]
    name = f"{kind}-v{GENERATOR_VERSION}-n{count}" + (f"-g{gop}" if gop else "")
    root = Path(cache_dir or default_cache()) / "synthetic-video" / name
    listing = root / "list.txt"
    if listing.is_file():
        return root
    names = [f"{kind}_{i}{profile.ext}" for i in range(count)]
    todo = [i for i, n in enumerate(names) if not (root / "videos" / n).is_file()]
    if todo:
        _encode_in_subprocess(root / "videos", kind, todo, gop)
    atomic_write_json(root / "profile.json", {**asdict(profile), "gop_override": gop, "count": count,
                                              "generator_version": GENERATOR_VERSION})
    atomic_write_text(listing, "".join(f"{n} {i}\n" for i, n in enumerate(names)))  # written last: the marker
    return root


if __name__ == "__main__":  # the encoder subprocess of `_encode_in_subprocess`
    import sys

    _kind, _folder, _gop = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    for _i in map(int, sys.argv[4:]):
        _profile = PROFILES[_kind]
        write_video(_folder / f"{_kind}_{_i}{_profile.ext}", _profile, seed=1000 + _i, gop=_gop or None)
