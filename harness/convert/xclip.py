"""X-CLIP releases (microsoft/VideoX `X-CLIP/utils/tools.py epoch_saving`): `{"model":
XCLIP.state_dict(), "optimizer", "lr_scheduler", "max_accuracy", "epoch", "config"}`, the model's
keys without prefix (`epoch_saving` is given `model.module`).

The release holds every weight (both CLIP towers, the message modules, the MIT, the prompt
generator), under the official names that `methods.xclip.official_key` maps to: this model's
`clip.<name>` is the official `<name>`, X-CLIP's own modules keep their names. Build options come
from the release: `mit_layers` and `prompt_layers` from the blocks present, T from the MIT
positional embedding (1, T, E), which loads exactly when `--frames` equals the release's T, else
is an error naming both, or is interpolated with `--set xclip.frames_mismatch=interpolate`.
"""
from __future__ import annotations

import re

import torch

from harness.convert.base import BuildPlan, Converter, require_rows
from harness.convert.mapping import Source
from harness.errors import HarnessError
from methods.layers import interpolate_frames
from methods.xclip import XCLIPConfig, official_key

MIT_POS = "mit.positional_embedding"


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of distinct `<prefix><i>.` blocks among the release's keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


class XCLIPConverter(Converter):
    name = method = "xclip"
    anchor = "prompts_visual_proj"
    upstream = "microsoft/VideoX X-CLIP models/xclip.py (saved by utils/tools.py epoch_saving)"

    def prepare(self, release) -> BuildPlan:
        state = release.state
        options = dict(self.request.options)
        release_frames = int(require_rows(state, MIT_POS, "--from xclip").shape[1])
        options.setdefault("mit_layers", _layers(state, "mit.resblocks."))
        options.setdefault("prompt_layers", _layers(state, "prompts_generator.decoder."))
        self.frames_mismatch = options.get("frames_mismatch", XCLIPConfig.frames_mismatch)
        frames = self.request.frames or release_frames
        notes = [f"{MIT_POS} of T={release_frames} interpolated linearly to T={frames}"] \
            if frames != release_frames and self.frames_mismatch == "interpolate" else []
        return BuildPlan(options, frames, None, notes)

    def source(self, name: str) -> Source | None:
        return Source.key(official_key(name))

    def adapt(self, name: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        if name != MIT_POS or value.shape[::2] != shape[::2]:
            return None
        if self.frames_mismatch != "interpolate":
            raise HarnessError(
                f"{MIT_POS} was trained for T={value.shape[1]} frames, the model is built for T={shape[1]} "
                f"(--frames {shape[1]}); convert with --frames {value.shape[1]}, or interpolate it with "
                "--set xclip.frames_mismatch=interpolate")
        return interpolate_frames(value.float(), shape[1]).to(value.dtype)
