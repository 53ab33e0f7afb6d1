"""What a job will cost, before it runs: FLOPs from the model (harness/measure/flops.py, counted on
the meta device: no weights, no memory), GPU-hours from a stated throughput.

Per method configuration (backbone, frames, options) four counts under the FLOP counter: a
training step at batch 1 and 2 with C classes and at batch 1 with 2C classes, and one inference
view. A step's FLOPs are linear in its clips and its classes (the video path per clip; a
trainable text tower's forward and backward per class, per step), so

    train FLOPs of a job = epochs x (clips x per_clip + updates x classes x per_class)
    eval FLOPs of a job  = sum over eval lists of videos x views x per_view (+ classes x text)

Counts are cached in `<cache>/flops-cost.json` (keyed by everything they depend on).
GPU-hours = FLOPs / throughput: an assumed effective rate (stated; `DEFAULT_TFLOPS`), or the
rates a user's `harness bench --format json` measured per method and mode (`achieved_tflops`).
Data loading, validation during training and start-up are not counted: the estimate is a
lower bound when decoding limits the GPU (docs/performance.md).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.atomic import atomic_write_json
from harness.backbone import create_clip, get_tokenizer
from harness.errors import HarnessError
from harness.measure.flops import count_flops, count_step_flops, give_placeholder_descriptions
from methods.registry import build_method

#: Effective training / inference rate assumed without a bench file: 100 TFLOP/s per GPU (bf16;
#: about 32% of an A100's 312 TFLOP/s dense peak, 10% of an H100's 989). An assumption, stated
#: wherever an estimate is printed.
DEFAULT_TFLOPS = 100.0
COUNT_CLASSES = 8


@dataclass
class StepCost:
    per_clip: float  # training FLOPs per clip (forward + backward of the video path)
    per_class_step: float  # training FLOPs per class per step (trainable text tower; 0 when frozen)
    per_view: float  # inference FLOPs of one view
    text_per_class: float  # inference FLOPs of one class prompt


@dataclass
class Throughput:
    """TFLOP/s per (method, mode); `default` for methods the bench did not measure."""

    default: float = DEFAULT_TFLOPS
    measured: dict[str, float] | None = None  # "method/mode" -> achieved TFLOP/s
    source: str = f"assumed {DEFAULT_TFLOPS:g} TFLOP/s per GPU (bf16; ~32% of an A100's dense peak)"

    def rate(self, method: str, mode: str) -> tuple[float, bool]:
        """(TFLOP/s, measured?)"""
        found = (self.measured or {}).get(f"{method}/{mode}")
        return (found, True) if found else (self.default, False)


def throughput_from_bench(path: str | Path) -> Throughput:
    """Rates from `harness bench --format json` output (rows with method, mode, achieved_tflops)."""
    file = Path(path)
    try:
        rows = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise HarnessError(f"--bench-json {file}: not a `harness bench --format json` output ({err})") from None
    if not isinstance(rows, list):
        raise HarnessError(f"--bench-json {file}: expected the list of rows `harness bench --format json` prints")
    measured, devices = {}, set()
    for row in rows:
        if isinstance(row, dict) and row.get("status") == "ok" and row.get("achieved_tflops"):
            measured[f"{row['method']}/{row['mode']}"] = float(row["achieved_tflops"])
            devices.add(str(row.get("device") or row.get("gpu") or "?"))
    if not measured:
        raise HarnessError(f"--bench-json {file}: no row with status ok and achieved_tflops")
    return Throughput(measured=measured, source=f"measured by harness bench ({file.name}; {', '.join(sorted(devices))}); "
                      f"methods it lacks: assumed {DEFAULT_TFLOPS:g} TFLOP/s")


def _key(method: str, options: dict[str, Any], backbone: str, frames: int, image_size: int) -> str:
    return json.dumps([method, options, backbone, frames, image_size], sort_keys=True, default=str)


class CostModel:
    """Step costs per method configuration, counted once and cached on disk."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self._memo: dict[str, StepCost] = {}
        self._backbones: dict[str, Any] = {}
        if cache_file is not None and cache_file.is_file():
            try:
                self._memo = {k: StepCost(**v) for k, v in json.loads(cache_file.read_text()).items()}
            except (ValueError, TypeError):
                self._memo = {}

    def step_cost(self, method: str, options: dict[str, Any], backbone: str, frames: int) -> StepCost:
        image_size = self._backbone(backbone)[1].image_size
        key = _key(method, options, backbone, frames, image_size)
        if key not in self._memo:
            self._memo[key] = self._count(method, options, backbone, frames, image_size)
            self._save()
        return self._memo[key]

    def _backbone(self, name: str, real: bool = False) -> tuple[Any, Any]:
        """A randomly initialised backbone: on the meta device (no memory) or, for a method
        whose construction reads values (a prompt initialised from tokenised words), real."""
        key = f"{name}/real" if real else name
        if key not in self._backbones:
            clip, spec = create_clip(name, pretrained=None)
            self._backbones[key] = (clip if real else clip.to("meta"), spec)
        return self._backbones[key]

    def _count(self, method: str, options: dict[str, Any], backbone: str, frames: int, size: int) -> StepCost:
        names = [f"class {i}" for i in range(2 * COUNT_CLASSES)]

        def build(classes: list[str], real: bool) -> Any:
            clip, spec = self._backbone(backbone, real=real)
            if real:
                model = build_method(method, copy.deepcopy(clip), get_tokenizer(spec), frames, options, classes)
            else:
                with torch.device("meta"):
                    model = build_method(method, copy.deepcopy(clip), get_tokenizer(spec), frames, options, classes)
            give_placeholder_descriptions(model, classes)  # MSTA's L_CC, OST's descriptors: the cost, not the words
            return model

        def count(real: bool) -> StepCost:
            small = build(names[:COUNT_CLASSES], real)
            one = count_step_flops(small, 1, frames, size, names[:COUNT_CLASSES])["flops"]
            two = count_step_flops(small, 2, frames, size, names[:COUNT_CLASSES])["flops"]
            wide = count_step_flops(build(names, real), 1, frames, size, names)["flops"]
            view = count_flops(small, frames, size)
            return StepCost(per_clip=float(two - one), per_class_step=max(0.0, float(wide - one) / COUNT_CLASSES),
                            per_view=float(view["flops"]),
                            text_per_class=float((view["text_gflops_per_class"] or 0.0) * 1e9))

        try:
            return count(real=False)
        except (RuntimeError, NotImplementedError):
            # The training step reads values (MSTA's description features, OST's unique labels):
            # count on a real random backbone.
            return count(real=True)

    def _save(self) -> None:
        if self.cache_file is None:
            return

        atomic_write_json(self.cache_file, {k: asdict(v) for k, v in self._memo.items()})


def job_flops(cost: StepCost, *, train_clips: int, classes: int, epochs: int, batch_size: int,
              evals: list[tuple[int, int, int]]) -> dict[str, float]:
    """{'train': FLOPs, 'eval': FLOPs}; `evals`: (videos, views, classes) per evaluation list."""
    updates = math.ceil(train_clips / batch_size) if train_clips else 0
    train = epochs * (train_clips * cost.per_clip + updates * classes * cost.per_class_step)
    evaluation = sum(videos * views * cost.per_view + n_classes * cost.text_per_class
                     for videos, views, n_classes in evals)
    return {"train": float(train), "eval": float(evaluation)}


def gpu_hours(flops: dict[str, float], method: str, throughput: Throughput) -> tuple[float, bool]:
    """(GPU-hours, every rate measured?)"""
    train_rate, measured_train = throughput.rate(method, "train")
    eval_rate, measured_eval = throughput.rate(method, "infer")
    seconds = flops["train"] / (train_rate * 1e12) + flops["eval"] / (eval_rate * 1e12)
    return seconds / 3600.0, measured_train and measured_eval
