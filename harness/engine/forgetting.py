"""Forgetting: zero-shot accuracy on the pretraining vocabulary, measured through a method's model.

Why: the embedded default's backbone (`--pretrained synthetic`) was pretrained on synthetic
captioned frames (harness/pretrain/), so held-out frames of that vocabulary tell how much of what
the backbone knew a method keeps after training on the videos (full fine-tuning may overwrite it;
zero-initialised adapters start from it). Measured before and after each job's training
(`measure_vocabulary`), stored in metrics.json under "vocabulary", shown by the reports.

How: the frames and tasks of `harness.pretrain.probe` (colour, position, vertical position, size,
shape; frame i of a task shows value i % k), each frame repeated T times as a static clip, batched
like the engine's test clips (uint8 (V=1, 3, T, S, S) items through `VideoPreprocessor`, the same
normalisation), and scored by the method's own forward (`net(video, classnames)`: its video path,
its text path and prompt template) against the task's class names ("red shape", "shape on the
left", "circle"; with "a photo of a {}." exactly the prompts of `probe_zero_shot`; a method that
scores classes through per-class descriptions, "scored_descriptions" (OST), gets each class name as
every one of its descriptions: the vocabulary has no LLM descriptions). The frames are
rendered at the backbone's input size, so the test pipeline's resize + centre crop would be the
identity. Fixed seed: the same frames for every method, job and seed. In float32 with the torch
random state untouched, so measuring never shifts a job's training stream.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from harness.engine.model import VideoPreprocessor, pixel_normalization
from harness.pretrain.probe import PROBES, held_out_frames

#: The tasks measured: every attribute once (color9 subsumes probe_zero_shot's color4).
TASKS: tuple[str, ...] = ("color9", "position3", "vertical3", "size3", "shape6")
#: Frames per task: 72 is a multiple of every task's k (9, 3, 6), so classes are balanced; 360
#: frames in all give a binomial standard error of at most 2.6 points on the mean, and about
#: 1 s per measurement at T=4 on one CPU thread with harness-tiny.
PER_TASK = 72
#: The frames' seed (not the job's: every job sees the same frames).
SEED = 4242
#: Clips per forward pass.
BATCH = 24


@lru_cache(maxsize=4)
def _frames(image_size: int, per_task: int, seed: int, tasks: tuple[str, ...]
            ) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """The held-out frames of every task (rendered once per process: before and after training,
    and every job of a run, reuse them)."""
    return tuple(held_out_frames(image_size, per_task, seed, tasks))


def static_clips(frames: np.ndarray, num_frames: int) -> list[torch.Tensor]:
    """uint8 (N, S, S, 3) frames -> N packed test items, uint8 (1 view, 3, T, S, S): the frame
    repeated T times, as MMAction2's test pipeline packs a one-view clip."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (N, 3, S, S)
    return list(x[:, None, :, None].expand(-1, 1, -1, num_frames, -1, -1))


@torch.no_grad()
def task_accuracy(net: torch.nn.Module, frames: np.ndarray, labels: np.ndarray, classnames: Sequence[str],
                  num_frames: int, batch: int = BATCH, normalization: Any = None) -> float:
    """Top-1 accuracy (percent) of `net` on `frames` as static clips, scored against `classnames`;
    `normalization`: the backbone's spec (its mean / std; None: CLIP's)."""
    device = next(net.parameters()).device
    preprocess = VideoPreprocessor(*pixel_normalization(normalization or {})).to(device)
    items = static_clips(frames, num_frames)
    hits = 0
    for start in range(0, len(items), batch):
        video = preprocess({"inputs": items[start:start + batch]})["inputs"][:, 0]  # (B, T, 3, S, S)
        predicted = net(video, list(classnames)).argmax(dim=-1).cpu().numpy()
        hits += int((predicted == labels[start:start + batch]).sum())
    return 100.0 * hits / len(items)


def measure_vocabulary(net: torch.nn.Module, num_frames: int, image_size: int, per_task: int = PER_TASK,
                       seed: int = SEED, tasks: Sequence[str] = TASKS, normalization: Any = None) -> dict[str, Any]:
    """Zero-shot top-1 (percent) of a method's model on the held-out pretraining vocabulary:
    {"tasks": {task: accuracy}, "mean": mean over tasks, "n": frames in all, "per_task": frames
    per task}. The model's train/eval mode and the torch random state are left as they were."""
    was_training = net.training
    device = next(net.parameters()).device
    net.eval()
    accuracy: dict[str, float] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for task, frames, labels in _frames(image_size, per_task, seed, tuple(tasks)):
            classnames = PROBES[task].classnames()
            _name_as_descriptions(net, classnames)
            accuracy[task] = round(task_accuracy(net, frames, labels, classnames, num_frames,
                                                 normalization=normalization), 2)
    net.train(was_training)
    return {"tasks": accuracy, "mean": round(float(np.mean(list(accuracy.values()))), 2),
            "n": per_task * len(accuracy), "per_task": per_task}


def _name_as_descriptions(net: torch.nn.Module, classnames: Sequence[str]) -> None:
    """A method scoring classes through their descriptions ("scored_descriptions") gets each probe
    class's name as each of its N spatial and N temporal descriptions (no LLM wrote any for them)."""
    if "scored_descriptions" not in net.run_needs(net.config):
        return
    n = net.descriptions_per_class(net.config)
    names = [[name] * n for name in classnames]
    net.set_descriptions(classnames, names, names)


def chance(tasks: Sequence[str] = TASKS) -> float:
    """Chance level (percent) of the mean over `tasks`: the mean of 100 / k."""
    return float(np.mean([100.0 / len(PROBES[t].values) for t in tasks]))


def measures_vocabulary(job: Any) -> bool:
    """Whether a job measures forgetting: its backbone starts from the `synthetic` weights (the
    only ones whose pretraining vocabulary has held-out frames) and it trains in this run (a
    `harness eval` checkpoint has no "before")."""
    return (job.weights or {}).get("kind") == "synthetic" and not job.checkpoint


def job_vocabulary(net: torch.nn.Module, job: Any, image_size: int, normalization: Any = None) -> dict[str, Any] | None:
    """`measure_vocabulary` at the job's frame count, or None when the job does not measure it
    (`measures_vocabulary`); a failure is recorded as {"error": ...}: a measurement never fails
    a training job."""
    if not measures_vocabulary(job):
        return None
    try:
        return measure_vocabulary(net, job.schedule.frames, image_size, normalization=normalization)
    except Exception as err:  # recorded in metrics.json: a measurement never fails a training job
        return {"error": f"{type(err).__name__}: {err}"}


def vocabulary_record(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json's "vocabulary": {"before": ..., "after": ..., "n", "per_task", "chance"}
    (accuracies in percent); {} when nothing was measured (the key is then left out)."""
    if before is None:
        return {}
    sizes = next((m for m in (before, after) if m and "n" in m), {})
    return {"vocabulary": {"before": before, "after": after, "n": sizes.get("n"), "per_task": sizes.get("per_task"),
                           "chance": round(chance(), 2), "seed": SEED}}
