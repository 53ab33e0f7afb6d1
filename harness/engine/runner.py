"""Run one job: build backbone + method, train with an mmengine Runner, evaluate each eval set.

Everything mmengine-specific is here: optimiser wrapper (AdamW, bf16 AMP on CUDA), parameter
schedulers (linear warm-up + cosine, stepped per optimiser update), checkpoint/resume,
`select=best` on the protocol's selection set, and the torch.distributed launcher (torchrun sets
WORLD_SIZE; mmengine's 'pytorch' launcher does the rest). One mmengine iteration is one optimiser
update over the global batch `schedule.batch_size` (`harness.engine.batches`: which clips, the
short last batch, per-sample seeds; `harness.engine.update`: micro-batches and the gradient sum
over processes), so micro-batch and process count change how a job runs, never what it computes.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.dist import collect_results, get_dist_info
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, set_random_seed

from harness import preemption
from harness.backbone import count_truncated, get_tokenizer
from harness.data.datasets import get_dataset
from harness.data.descriptions import load_job_descriptions
from harness.data.pipeline import build_video_dataset, test_pipeline, train_pipeline
from harness.data.rephrased import load_rephrased
from harness.distributed import broadcast_from_rank0, init_distributed, rank, rank0, world_size
from harness.engine.accounting import EvalTimer, JobAccounting
from harness.engine.batches import dataset_labels, train_loader
from harness.engine.checkpoints import SafeCheckpointHook, choose_resume_checkpoint, load_best, safe_uri
from harness.engine.device_augment import DeviceAugment
from harness.engine.forgetting import job_vocabulary, vocabulary_record
from harness.engine.hooks import (
    EpochAverageHook,
    GlobalBatchEpochHook,
    NonFiniteLossHook,
    ProgressBarHook,
    StepTimerHook,
    TrainableCheckpointHook,
)
from harness.engine.metric import SelectionMetric
from harness.engine.model import VideoClassifier, pixel_normalization
from harness.errors import ConfigurationError, HarnessError
from harness.jobs.spec import JobSpec, ListSpec
from harness.measure.flops import count_flops
from harness.metrics import topk_accuracy
from harness.settings import Schedule
from harness.weights import create_backbone
from methods.base import DESCRIPTION_NEEDS
from methods.registry import build_method


def _init_mm() -> None:
    """Default scope for MMAction2's registries, and mmengine's console chatter (deprecation
    notices from its file backends, resume notes) down to errors: the job's own progress bar
    and metrics.json are the interface; the full log stays in the job's work dir."""
    init_default_scope("mmaction")
    MMLogger.get_instance("mmengine").setLevel(logging.ERROR)


#: Numbers the Runners of this process: mmengine names its message hub, logger and visualizer by
#: experiment name + timestamp (seconds), so two jobs started in the same second would share them
#: (one job's scalars written into the other's log folder).
_RUNNERS = itertools.count()


def _launcher() -> str:
    return "pytorch" if world_size() > 1 else "none"


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def num_workers(schedule: Schedule) -> int:
    workers = schedule.num_workers
    if workers >= 0:
        return workers
    return min(8, max(1, (os.cpu_count() or 2) // max(1, world_size()))) if torch.cuda.is_available() else 0


def configure_cpu_threads(schedule: Schedule) -> int:
    """On CPU, leave a core for the OS and the data workers: measured on a 2-core host with light
    background load, 2 OpenMP threads made the embedded default 7x slower than 1."""
    if torch.cuda.is_available():
        return torch.get_num_threads()
    threads = schedule.cpu_threads or max(1, (os.cpu_count() or 1) - 1 - num_workers(schedule))
    threads = max(1, threads // max(1, world_size()))
    torch.set_num_threads(threads)
    return threads


def _amp_enabled(amp: str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda"
    return amp == "bf16"


class ModelSource(Protocol):
    """What builds a job's network. The engine calls `build(job)` once, inside the job (after its
    seed and thread settings are applied), and owns the result for that job only: no model
    outlives its job, so a job's numbers never depend on what ran before it in the process."""

    def build(self, job: JobSpec) -> tuple[Any, Any]:
        """(VideoTextModel, BackboneSpec) for `job`."""


class FreshModel:
    """The model of a training job: backbone + method from the job (the same seed gives every
    method the same random backbone)."""

    def build(self, job: JobSpec) -> tuple[Any, Any]:
        if job.checkpoint:
            raise HarnessError(f"job {job.job_id} evaluates checkpoint {job.checkpoint.get('path')}: run it with its "
                               "model source (harness.api runs evaluation jobs with harness.convert.evaluate."
                               "CheckpointModel)")
        clip, spec = create_backbone(job.backbone, job.pretrained, seed=job.seed, cache_dir=job.cache_dir)
        backbone_params = sum(p.numel() for p in clip.parameters())
        classnames = job.train.classnames if job.train else None
        net = build_method(job.method, clip, get_tokenizer(spec), job.schedule.frames, job.method_options, classnames)
        net.backbone_params = backbone_params
        return net, spec


def build_net(job: JobSpec, source: ModelSource | None = None):
    """The job's network from `source` (default `FreshModel`), checked against its protocol."""
    net, spec = (source or FreshModel()).build(job)
    check_protocol(net, job)
    net.label_smoothing = float(job.schedule.label_smoothing)
    set_token_mask(net, job, spec.token_layout)
    return net, spec


def set_token_mask(net, job: JobSpec, layout: str) -> None:
    """`schedule.token_mask` (ViCLIP-style patch-token masking in training) where the backbone and
    the method allow it; elsewhere a ConfigurationError (validation says so before any job)."""
    mask = float(job.schedule.token_mask)
    if mask and (layout != "joint" or not net.allows_token_mask):
        raise ConfigurationError(f"schedule.token_mask={mask}: needs a joint space-time backbone and a method that "
                                 f"allows it ({job.method} on {job.backbone} does not)")
    net.token_mask = mask


@contextlib.contextmanager
def job_process_state(schedule: Schedule) -> Iterator[int]:
    """The process-wide settings a job's numbers depend on, set for the job and restored after it:
    torch's intra-op threads (`configure_cpu_threads`; the reduction order of CPU kernels can
    follow the thread count), OpenCV's threads (0, what mmengine's Runner sets for training, so a
    job that only evaluates decodes and resizes as the evaluation after training does), and the
    global torch / numpy / python RNGs (the job seeds them). Yields the torch thread count."""
    threads, rng = torch.get_num_threads(), (torch.get_rng_state(), np.random.get_state(), random.getstate())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    cv2 = _cv2()
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    try:
        if cv2 is not None:
            cv2.setNumThreads(0)
        yield configure_cpu_threads(schedule)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        if cv2 is not None:
            cv2.setNumThreads(cv2_threads)


def _cv2():
    try:
        import cv2
    except ImportError:  # the decoders that need it are optional
        return None
    return cv2


def check_protocol(net, job: JobSpec) -> None:
    """A model the job's protocol cannot use stops the invocation (ConfigurationError), not one job."""
    try:
        net.check_protocol(job.protocol, job.closed_set)
    except HarnessError as err:
        raise ConfigurationError(str(err)) from None


def _dataset(lst: ListSpec, job: JobSpec, image_size: int, train: bool):
    frames = job.schedule.frames
    augment_on = job.data.augment_on if train else "cpu"
    if augment_on != "cpu" and not job.data.train_augment:
        raise HarnessError(f"data.augment_on={augment_on} needs data.train_augment=true (there is nothing random "
                           f"to move to the device otherwise)")
    if train and not job.data.train_augment:
        pipeline = test_pipeline(frames, image_size, clips=1, crops=1, modality=lst.modality)
    elif train:
        flip = get_dataset(lst.dataset).flip_ok
        pipeline = train_pipeline(frames, image_size, modality=lst.modality,
                                  color_jitter=job.data.color_jitter, flip=flip, augment_on=augment_on)
    else:
        clips, crops = lst.views
        pipeline = test_pipeline(frames, image_size, clips=clips, crops=crops, modality=lst.modality)
    dataset, info = build_video_dataset(lst.ann_file, lst.video_root, pipeline, num_classes=len(lst.classnames),
                                        modality=lst.modality, on_missing=job.data.on_missing,
                                        max_missing=job.data.max_missing, test_mode=not train,
                                        decoder=job.data.decoder, decode_threads=job.data.decode_threads)
    info["augment_on"] = augment_on
    return dataset, info


def _device_augment(job: JobSpec, image_size: int):
    """The batch augmentation of `data.augment_on=device` for the training list, else None."""
    if job.data.augment_on != "device":
        return None

    return DeviceAugment(image_size, flip=get_dataset(job.train.dataset).flip_ok)


def _attach_descriptions(net, job: JobSpec, context_length: int) -> dict[str, Any] | None:
    """Give a method that needs them (`run_needs(config)` has "descriptions" or "scored_descriptions":
    MSTA's consistency loss, OST's descriptors) the LLM descriptions of the training classes; the
    record counts the sentences the backbone's text context (`context_length` tokens) truncates."""

    if not net.run_needs(net.config) & DESCRIPTION_NEEDS:
        return None
    ref = job.descriptions
    if ref is None:
        raise HarnessError(f"{job.method} needs class descriptions, and dataset {job.dataset!r} has none; switch "
                           f"off what uses them (see docs/methods/{job.method}.md, e.g. msta.use_consistency=false)")
    if job.train is None:
        return None
    return _give_descriptions(net, job, ref, job.train.classnames, context_length)


def _attach_list_descriptions(net, job: JobSpec, lst: ListSpec, context_length: int) -> dict[str, Any] | None:
    """Before an evaluation list is scored, a method that scores classes through their descriptions
    ("scored_descriptions": OST) gets that list's (its own dataset's files), truncations counted."""
    if "scored_descriptions" not in net.run_needs(net.config):
        return None
    ref = (job.descriptions or {}).get("evals", {}).get(lst.name)
    if ref is None:
        raise HarnessError(f"{job.method} scores classes through their descriptions, and evaluation list "
                           f"{lst.name!r} of dataset {lst.dataset!r} has none")
    return _give_descriptions(net, job, ref, lst.classnames, context_length)


def _give_descriptions(net, job: JobSpec, ref: dict[str, Any], classnames: list[str],
                       context_length: int) -> dict[str, Any]:
    n = net.descriptions_per_class(net.config)
    descs = load_job_descriptions(ref, n, job.cache_dir, job.splits_root)
    net.set_descriptions(classnames, descs.spatial, descs.temporal)
    used = [s for per_class in (*descs.spatial, *descs.temporal) for s in per_class[:n]]
    return {"sources": descs.sources, "notes": descs.notes, "n": n,
            "truncated": count_truncated(used, context_length), "sentences": len(used), "context_length": context_length}


def text_truncation(net, job: JobSpec, context_length: int) -> dict[str, Any]:
    """How many class prompts of the job's class sets the backbone's text context truncates (ViCLIP
    reads 32 tokens): {"context_length", "prompts", "truncated_prompts"}."""
    # Per class list: a method's texts may depend on the list (FROSTER's rephrased names per dataset).
    texts = list(dict.fromkeys(text for lst in [job.train, *job.evals] if lst is not None
                               for text in net.prompt_texts(lst.classnames)))
    return {"context_length": context_length, "prompts": len(texts),
            "truncated_prompts": count_truncated(texts, context_length)}


def _warn_truncation(job: JobSpec, spec, text: dict[str, Any], descriptions: dict[str, Any] | None) -> None:
    """One stderr line when the backbone's text context cuts prompts or descriptions (recorded too)."""
    parts = []
    if text["truncated_prompts"]:
        parts.append(f"{text['truncated_prompts']} of {text['prompts']} class prompts")
    if descriptions and descriptions["truncated"]:
        parts.append(f"{descriptions['truncated']} of {descriptions['sentences']} descriptions")
    if parts and rank0():
        print(f"  note: {' and '.join(parts)} exceed {spec.name}'s {spec.context_length}-token text context and are "
              "truncated (metrics.json: text, descriptions)", file=sys.stderr)


def _attach_rephrased(net, job: JobSpec) -> list[dict[str, Any]] | None:
    """Give a method that needs them (`run_needs(config)` has "rephrased_classnames": FROSTER) the
    rephrased class names of every class list the job scores: training and each evaluated list."""
    if "rephrased_classnames" not in net.run_needs(net.config):
        return None

    records = []
    for lst in [job.train, *job.evals]:
        if lst is not None:
            texts, record = load_rephrased(lst.dataset, lst.classnames, job.cache_dir, job.splits_root)
            net.set_rephrased_classnames(lst.classnames, texts)
            records.append({"list": lst.name, **record})
    return records


def optimizer_groups(net, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """torch param groups from the method's own grouping (`param_groups()`: its official
    weight-decay exemptions and per-module learning rates, `lr_scale` x the method's lr; the
    warm-up and cosine schedulers then scale each group from its own initial lr)."""
    groups = net.param_groups()
    return [{"params": g.params, "weight_decay": weight_decay if g.weight_decay else 0.0, "lr": lr * g.lr_scale,
             "group": g.name} for g in groups]


def _optim_wrapper(net, job: JobSpec, amp: bool):
    sched = job.schedule
    lr = float(job.method_options.lr)
    optimizer = torch.optim.AdamW(optimizer_groups(net, float(job.method_options.weight_decay), lr),
                                  lr=lr, betas=tuple(sched.betas), eps=float(sched.eps))
    clip_grad = None
    if sched.grad_clip > 0:
        if not net.allows_grad_clip:
            raise HarnessError(f"schedule.grad_clip: {job.method} does not allow clipping gradients by norm (it would "
                               f"distort its training; see docs/methods/{job.method}.md); leave schedule.grad_clip=0")
        clip_grad = dict(max_norm=float(sched.grad_clip))
    # No accumulative_counts: one train step is one whole update (harness.engine.update).
    if amp:
        return AmpOptimWrapper(optimizer=optimizer, clip_grad=clip_grad, dtype="bfloat16")
    return OptimWrapper(optimizer=optimizer, clip_grad=clip_grad)


def _schedulers(job: JobSpec, floor_per_group: bool = False) -> list[dict[str, Any]]:
    """Linear warm-up then cosine, stepped per optimiser update; `floor_per_group`: the method's
    `cosine_floor_per_group` (how groups with their own lr end)."""
    sched = job.schedule
    epochs, warmup = sched.epochs, min(sched.warmup_epochs, sched.epochs)
    out: list[dict[str, Any]] = []
    if warmup > 0:
        out.append(dict(type="LinearLR", start_factor=1e-3, by_epoch=True, begin=0, end=warmup,
                        convert_to_iter_based=True))
    if epochs > warmup:
        # timm's CosineLRScheduler(lr_min=LR x ratio) (X-CLIP, ViFi-CLIP): one absolute floor for
        # every group; MoTE's scheduler: a factor, each group ends at its own lr x ratio.
        ratio = float(sched.lr_min_ratio)
        floor = dict(eta_min_ratio=ratio) if floor_per_group else dict(eta_min=float(job.method_options.lr) * ratio)
        out.append(dict(type="CosineAnnealingLR", T_max=epochs - warmup, **floor,
                        by_epoch=True, begin=warmup, end=epochs, convert_to_iter_based=True))
    return out


def micro_batch_and_accumulation(schedule: Schedule, world: int) -> tuple[int, int]:
    """(clips per forward pass per process, forward passes per update of the largest share).

    A process loads ceil(batch_size / processes) clips of each update at most;
    `schedule.micro_batch` (0: that whole share) splits it into forward passes. Any split gives
    the same updates (harness.engine.update), so neither needs to divide the other."""
    share = math.ceil(schedule.batch_size / world)
    micro = min(schedule.micro_batch or share, share)
    return micro, math.ceil(share / micro)


def check_batch_coupling(net, method: str, passes: int, world: int) -> None:
    """A method whose loss terms contrast a clip with the other clips' features
    (`batch_coupled_losses`) trains only with each optimiser update in one forward pass on one
    process: any split would change what those terms are, and the split is execution-only."""
    coupled = sorted(net.batch_coupled_losses)
    if coupled and (passes > 1 or world > 1):
        where = f"{passes} forward passes per update" if passes > 1 else f"{world} processes"
        raise ConfigurationError(
            f"{method}: its loss term(s) {', '.join(coupled)} contrast each clip with the features of every other "
            f"clip of the batch, so an optimiser update must be one forward pass on one process (here: {where}); "
            "leave schedule.micro_batch=0 (schedule.grad_checkpointing=true saves memory) and run one process "
            f"(docs/methods/{method}.md)")


def _loader(dataset, batch: int, workers: int, shuffle: bool) -> dict[str, Any]:
    """mmengine config of the selection set's loader (training uses `batches.train_loader`)."""
    return dict(dataset=dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
                sampler=dict(type="DefaultSampler", shuffle=shuffle), collate_fn=dict(type="pseudo_collate"))


def train(model, spec, job: JobSpec, work_dir: Path, progress: bool) -> dict[str, Any]:
    """Train `model` (a VideoClassifier) in place with an mmengine Runner; return statistics."""
    net = model.net
    device = _device()
    amp = _amp_enabled(job.schedule.amp, device)
    batch = job.schedule.batch_size
    if batch < world_size():
        raise HarnessError(f"schedule.batch_size={batch} is smaller than the {world_size()} processes: some would "
                           "never have a clip to train on; raise schedule.batch_size or start fewer processes")
    micro, passes = micro_batch_and_accumulation(job.schedule, world_size())
    check_batch_coupling(net, job.method, passes, world_size())
    train_set, train_info = _dataset(job.train, job, spec.image_size, train=True)
    model.data_preprocessor.augment = _device_augment(job, spec.image_size)
    model.micro_batch = micro
    loader = train_loader(train_set, dataset_labels(train_set), batch, job.seed, num_workers(job.schedule), rank(),
                          world_size())
    if job.schedule.grad_checkpointing:
        net.set_grad_checkpointing(True)
    epochs = job.schedule.epochs
    select_best = job.schedule.select == "best" and job.select_on not in (None, "none")
    sel = next((e for e in job.evals if e.name == job.select_on), None) if select_best else None
    if select_best and sel is None:
        raise HarnessError(f"schedule.select=best: protocol {job.protocol!r} has no selection set")
    interval = job.schedule.val_interval or epochs
    # The method's declaration (FROSTER evaluates the mean of its epochs' weights): one hook, no
    # method names here. Selecting a best checkpoint would contradict it.
    averaged = net.averaged_epochs(net.config)
    if averaged is not None and select_best:
        raise HarnessError(f"{job.method} evaluates weights averaged over epochs {averaged}; schedule.select=best "
                           f"would pick one checkpoint instead: use schedule.select=last")
    average = [EpochAverageHook(averaged)] if averaged is not None else []
    kwargs: dict[str, Any] = {}
    if sel is not None:
        val_set, _ = _dataset(sel, job, spec.image_size, train=False)
        kwargs.update(val_dataloader=_loader(val_set, max(1, micro // max(1, sel.views[0] * sel.views[1])), 0, False),
                      val_cfg=dict(), val_evaluator=dict(type=SelectionMetric, prefix=sel.name))
    # Every epoch, crash-safe, with the full RNG state: a killed job resumes exactly (engine/checkpoints.py).
    ckpt = SafeCheckpointHook(work_dir, best_key=f"{sel.name}/top1" if sel is not None else None)
    resume_from, notes = broadcast_from_rank0(choose_resume_checkpoint(work_dir, need_best=sel is not None)
                                              if rank0() else None)
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=f"{job.job_id}-{next(_RUNNERS)}",
        train_dataloader=loader,  # one item = this process's share of one optimiser update
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=interval),
        optim_wrapper=_optim_wrapper(net, job, amp),
        param_scheduler=_schedulers(job, type(net).cosine_floor_per_group),
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=True),
                           timer=dict(type="IterTimerHook"), param_scheduler=dict(type="ParamSchedulerHook"),
                           sampler_seed=None),
        custom_hooks=[TrainableCheckpointHook(spec.to_dict()), NonFiniteLossHook(), ckpt, GlobalBatchEpochHook(),
                      ProgressBarHook(f"{job.job_id}", enabled=progress), *average],
        launcher=_launcher(),
        env_cfg=dict(dist_cfg=dict(backend="nccl" if torch.cuda.is_available() else "gloo")),
        # Not DDP: the train step sums the gradients over processes itself (harness.engine.update).
        cfg=dict(model_wrapper_cfg=dict(type="SummedGradients")),
        randomness=dict(seed=job.seed),
        # an interrupted job continues, its checkpoint read weights-only (never mmengine's own torch.load)
        resume=resume_from is not None, load_from=safe_uri(resume_from) if resume_from else None,
        default_scope="mmengine",  # "mmaction" would import mmaction.models (broken in 1.2.0) to find the wrapper
        log_level="ERROR",
        visualizer=visualizer_config(job.schedule.log_backend),
        **kwargs,
    )
    logging.getLogger("mmengine").setLevel(logging.WARNING)
    runner.register_hook(timer := StepTimerHook())  # accounting: clips/s and data wait
    start = time.perf_counter()
    with preemption.deferred():  # a launcher's end-of-allocation signal waits for the next update
        runner.train()
    seconds = time.perf_counter() - start
    best = load_best(runner, ckpt) if sel is not None else None
    history = runner.message_hub.log_scalars
    last_loss = history["train/loss"].current() if "train/loss" in history else float("nan")
    return {"iters": runner.iter, "updates_per_epoch": loader.batch_sampler.updates_per_epoch, "epochs": epochs, "seconds": round(seconds, 2),
            "micro_batch": micro, "accumulation": passes, "world_size": world_size(), "amp_bf16": amp,
            "final_loss": float(last_loss), "videos": train_info, "selected": best or "last",
            "resumed": ckpt.resumed or False, "checkpoint_notes": notes, "timing": timer.summary(),
            **({"averaged_epochs": average[0].record()} if average else {})}


#: mmengine visualizer backend of each `log.backend` (the local JSON scalars are always written).
VIS_BACKENDS = {"tensorboard": "TensorboardVisBackend", "wandb": "WandbVisBackend", "mlflow": "MLflowVisBackend"}


def visualizer_config(backend: str) -> dict[str, Any]:
    """mmengine's visualizer with the local JSON backend (read by `harness report` for training
    curves) plus the chosen one; each writes under the job's work dir (wandb / mlflow also
    report to their own servers as configured by their environment variables)."""
    backends = [dict(type="LocalVisBackend")]
    if backend in VIS_BACKENDS:
        backends.append(dict(type=VIS_BACKENDS[backend]))
    return dict(type="Visualizer", vis_backends=backends)  # the Runner names it and sets its save_dir


def evaluate(model, lst: ListSpec, job: JobSpec, image_size: int, batch: int,
             save_to: Path | None = None) -> dict[str, Any]:
    """Multi-view evaluation on one list with its own class names; shards over processes.
    With `save_to`, the per-video scores and labels are kept (`<eval>.npz`) for later analysis."""
    device = next(model.parameters()).device
    amp = _amp_enabled(job.schedule.amp, device)
    dataset, info = _dataset(lst, job, image_size, train=False)
    sampler = DefaultSampler(dataset, shuffle=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=pseudo_collate,
                                         num_workers=num_workers(job.schedule))
    model.set_classes(lst.classnames)
    model.eval()
    results: list[dict[str, Any]] = []
    timer = EvalTimer()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for data in timer.batches(loader):
            results.extend(model.val_step(data))
    _, world = get_dist_info()
    if world > 1:
        results = collect_results(results, len(dataset), device="cpu")
    if results is None:  # non-zero rank
        return {}

    scores = np.stack([r["scores"].numpy() for r in results]) if results else np.zeros((0, len(lst.classnames)))
    labels = [r["label"] for r in results]
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        safe = lst.name.replace("/", "_")
        np.savez_compressed(save_to / f"{safe}.npz", scores=scores, labels=np.asarray(labels),
                            classnames=np.asarray(lst.classnames))
    out = topk_accuracy(scores, labels)
    out.update(n=len(results), classes=len(lst.classnames), views=list(lst.views), videos=info,
               timing=timer.summary(clips=len(results) * lst.views[0] * lst.views[1]))
    return out


def evaluate_lists(model, job: JobSpec, image_size: int, context_length: int,
                   save_to: Path | None = None) -> dict[str, dict[str, Any]]:
    """`evaluate` on every evaluation list of the job, each view batched to the training micro-batch
    (`context_length`: the backbone's text context, for the description records)."""
    micro, _ = micro_batch_and_accumulation(job.schedule, world_size())
    evals = {}
    for lst in job.evals:
        views = max(1, lst.views[0] * lst.views[1])
        described = _attach_list_descriptions(model.net, job, lst, context_length)
        evals[lst.name] = evaluate(model, lst, job, image_size, max(1, math.ceil(micro / views)), save_to=save_to)
        if described is not None and evals[lst.name]:
            evals[lst.name]["descriptions"] = described
    return evals


def _flops_per_view(net, frames: int, image_size: int) -> dict[str, Any] | None:
    """GFLOPs (multiply-add = 2) and GMACs (the papers' "GFLOPs") of one view, counted on fake
    tensors (no compute); None, with the reason logged, if the counter cannot trace the method."""
    try:
        out = count_flops(net, frames=frames, image_size=image_size)
    except Exception as err:  # measurement must never fail a training job
        return {"error": f"{type(err).__name__}: {err}"}
    return {k: out[k] for k in ("gflops", "gmacs", "text_gflops_per_class")}


def run_job(job: JobSpec, job_dir: Path, progress: bool = True, source: ModelSource | None = None) -> dict[str, Any]:
    """Train (when the method has something to train) and evaluate one job; return its metrics.
    `source` builds the network (default `FreshModel`; `harness eval` hands in its checkpoint's)."""
    _init_mm()
    init_distributed()
    with job_process_state(job.schedule) as threads:
        return _run_job(job, job_dir, progress, source, threads)


def _run_job(job: JobSpec, job_dir: Path, progress: bool, source: ModelSource | None, threads: int) -> dict[str, Any]:
    set_random_seed(job.seed)
    accounting = JobAccounting(_device(), world_size())
    net, spec = build_net(job, source)
    counts = net.parameter_counts()
    counts["backbone"] = net.backbone_params
    counts["pct_of_backbone"] = round(100.0 * counts["trainable"] / net.backbone_params, 4)
    descriptions = _attach_descriptions(net, job, spec.context_length)
    rephrased = _attach_rephrased(net, job)
    text = text_truncation(net, job, spec.context_length)
    _warn_truncation(job, spec, text, descriptions)
    flops = _flops_per_view(net, job.schedule.frames, spec.image_size)
    vocabulary_before = job_vocabulary(net, job, spec.image_size, spec)  # forgetting: None unless synthetic weights
    train_stats: dict[str, Any] = {"iters": 0, "skipped": "evaluated checkpoint" if job.checkpoint else "nothing to train"}
    model = VideoClassifier(net, job.train.classnames if job.train else [], *pixel_normalization(spec))
    if counts["trainable"] > 0 and job.schedule.epochs > 0 and job.train is not None:
        train_stats = train(model, spec, job, job_dir / "work", progress)
    model.to(_device())
    net.prepare_evaluation()
    evals = evaluate_lists(model, job, spec.image_size, spec.context_length, save_to=job_dir / "predictions")
    vocabulary = vocabulary_record(vocabulary_before, job_vocabulary(net, job, spec.image_size, spec))
    return {"params": counts, "flops_per_view": flops, "torch_threads": threads, "backbone": spec.to_dict(), "text": text,
            "train": train_stats, "evals": evals,
            "descriptions": descriptions, **({"rephrased": rephrased} if rephrased is not None else {}),
            "targeted": net.targeted[:50], "n_targeted": len(net.targeted),
            "accounting": accounting.finish(train_stats.get("timing"), [ev.get("timing") for ev in evals.values()]),
            **vocabulary}
