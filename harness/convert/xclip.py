"""X-CLIP releases (microsoft/VideoX `X-CLIP/utils/tools.py epoch_saving`): `{"model":
XCLIP.state_dict(), "optimizer", "lr_scheduler", "max_accuracy", "epoch", "config"}`, the model's
keys without prefix (`epoch_saving` is given `model.module`), `config` the yacs CfgNode of
`utils/config.py` (read as plain data by `release_io`).

The release holds every weight (both CLIP towers, the message modules, the MIT, the prompt
generator), under the official names that `methods.xclip.official_key` maps to: this model's
`clip.<name>` is the official `<name>`, X-CLIP's own modules keep their names. Build options come
from the tensors: `mit_layers` and `prompt_layers` from the blocks present, T from the MIT
positional embedding (1, T, E), which loads exactly when `--frames` equals the release's T, else
is an error naming both, or is interpolated with `--set xclip.frames_mismatch=interpolate`;
`prompt_alpha` is only the init of the learned `prompts_generator.alpha`, which the release holds.

From the CfgNode (`cfgnode`): `DATA.NUM_FRAMES` (checked against T), `MODEL.ARCH` (checked against
--backbone), `DATA.LABEL_LIST` (the training classes, from the upstream labels, when --classes
is not given; recorded in the converted file) and `DATA.NUM_CLASSES` (checked against them), and
the settings `main.py` builds and trains the model with (`CONFIGURED`). A `--set` of one of those
overrides the config, with a note naming both values. Without a config, `TRAIN.LR` is "assumed"
(official configs use 8e-6 and 2e-6), and the text tower is taken as frozen (`MODEL.FIX_TEXT`
True in every official config), with a note; `MODEL.DROP_PATH_RATE` is 0 in all of them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from harness.convert.base import BuildPlan, Converter, require_rows
from harness.convert.cfgnode import SHARED_SETTINGS, check_arch, label_list_classes, record_settings
from harness.convert.mapping import Source
from harness.errors import HarnessError
from methods.layers import interpolate_frames
from methods.xclip import XCLIPConfig, official_key

MIT_POS = "mit.positional_embedding"
#: Settings of the CfgNode that are options of the method: setting -> (option, value of the option).
CONFIGURED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "MODEL.FIX_TEXT": ("train_text", lambda fixed: not bool(fixed)),  # utils/optimizer.py fix_text
    "MODEL.DROP_PATH_RATE": ("drop_path_rate", float),
    "TRAIN.LR": ("lr", float),
    "TRAIN.WEIGHT_DECAY": ("weight_decay", float),
}
#: TRAIN.LR of the official configs (the one configured option they disagree on).
LRS = {8e-6: "utils/config.py default, the K400 / K600 configs",
       2e-6: "configs/hmdb51/16_32.yaml, configs/ucf101/16_32.yaml (few-shot)"}


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of distinct `<prefix><i>.` blocks among the release's keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


class XCLIPConverter(Converter):
    name = method = "xclip"
    anchor = "prompts_visual_proj"
    upstream = "microsoft/VideoX X-CLIP models/xclip.py (saved by utils/tools.py epoch_saving)"

    def prepare(self, release) -> BuildPlan:
        state, request = release.state, self.request
        plan = BuildPlan(dict(request.options), 0)
        release_frames = int(require_rows(state, MIT_POS, "--from xclip").shape[1])
        plan.options.setdefault("mit_layers", _layers(state, "mit.resblocks."))
        plan.options.setdefault("prompt_layers", _layers(state, "prompts_generator.decoder."))
        self.configured(release, plan, release_frames)
        self.frames_mismatch = plan.options.get("frames_mismatch", XCLIPConfig.frames_mismatch)
        plan.frames = request.frames or release_frames
        if plan.frames != release_frames and self.frames_mismatch == "interpolate":
            plan.notes.append(f"{MIT_POS} of T={release_frames} interpolated linearly to T={plan.frames}")
        plan.classnames = self.training_classes(plan)
        return plan

    def configured(self, release, plan: BuildPlan, release_frames: int) -> None:
        """What the release's CfgNode says, used and recorded; a config that contradicts the
        tensors or --backbone is an error, a `--set` that overrides it a note."""
        where = f"{self.request.checkpoint} (its config"
        record_settings(release, plan, (*SHARED_SETTINGS, *CONFIGURED))
        frames = plan.from_config.get("DATA.NUM_FRAMES")
        if frames is not None and int(frames) != release_frames:
            raise HarnessError(f"{where} DATA.NUM_FRAMES={frames}) disagrees with its {MIT_POS} of T={release_frames}; "
                               "the file is inconsistent")
        check_arch(self.request, plan.from_config.get("MODEL.ARCH"), where)
        for key, (option, value_of) in CONFIGURED.items():
            if key not in plan.from_config:
                continue
            value = value_of(plan.from_config[key])
            if option in plan.options and plan.options[option] != value:
                plan.notes.append(f"--set xclip.{option}={plan.options[option]} overrides the release's config "
                                  f"{key}={plan.from_config[key]} (xclip.{option}={value})")
            plan.options.setdefault(option, value)
        if "TRAIN.LR" not in plan.from_config and "lr" not in plan.options:
            value = XCLIPConfig.lr
            plan.assumed["lr"] = {
                "value": value, "why": "not in the release, which carries no TRAIN.LR; used only by further training",
                "alternatives": {str(v): used_by for v, used_by in LRS.items() if v != value},
                "how": "--set xclip.lr=<TRAIN.LR of the config the release was trained with>"}
        if "MODEL.FIX_TEXT" not in plan.from_config and "train_text" not in plan.options:
            plan.notes.append("no MODEL.FIX_TEXT in the release: the text tower is taken as frozen (every official "
                              "config); a release trained with FIX_TEXT=False needs --set xclip.train_text=true")

    def training_classes(self, plan: BuildPlan) -> list[str] | None:
        """--classes, else the release's DATA.LABEL_LIST from the upstream labels; checked
        against DATA.NUM_CLASSES. None: not known (the model scores any class names)."""
        label_list = plan.from_config.get("DATA.LABEL_LIST")
        if self.request.classes is not None:
            names, source = self.request.classes, "--classes"
        elif isinstance(label_list, str) and label_list:
            names, source = label_list_classes(label_list, self.request, plan), f"DATA.LABEL_LIST={label_list}"
        else:
            return None
        count = plan.from_config.get("DATA.NUM_CLASSES")
        if names is not None and count is not None and len(names) != int(count):
            raise HarnessError(f"{self.request.checkpoint}: {source} names {len(names)} classes, but the release was "
                               f"trained on DATA.NUM_CLASSES={count} (its config); give its training classes in order "
                               "with --classes")
        return names

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
