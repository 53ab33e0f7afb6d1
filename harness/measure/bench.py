"""Training and inference throughput, peak memory and MFU of every method, on synthetic clips.

Why synthetic clips: this measures the model, not the data pipeline (that is `data_bench`), so
that a method's number depends only on its code, the card and the settings recorded in the row.

Per method and mode:

* ``train``: one step = forward over the class set, the method's losses, backward, AdamW step on
  the trainable parameters. Class text features are computed once per class set when the method's
  text path is frozen (the model caches them), every step otherwise (ViFi-CLIP), as in training.
* ``infer``: eval mode, ``torch.no_grad``, forward to logits (text features cached).

Timing: `warmup` untimed steps (the first one includes `torch.compile`, reported as
``first_step_s``), then the median of `iters` timed steps (CUDA events on GPU, `perf_counter` on
CPU). MFU = FLOPs of the step as executed (`count_step_flops` for train, forward FLOPs for infer)
/ median step time / dense matmul peak of the step's dtype *measured in the same run*
(`measure_matmul_peak`). A row "open_clip (plain)" times open_clip's own `model.visual`, so that
ratios to it are same-card, same-run.

Command line: `harness bench` and the thin entry ``python -m harness.measure.bench --methods all
--json out.json --md out.md`` (no harness CLI, no mmengine: the GPU script's) share
`harness/commands/bench.py`.
The machine side (environment stamp, timing, peak memory) is `hardware`; tables `bench_format`.
"""
from __future__ import annotations

import contextlib
import gc
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from harness.backbone import get_tokenizer
from harness.errors import ConfigurationError
from harness.measure.bench_format import format_bench, stamp
from harness.measure.flops import (
    GIGA,
    count_flops,
    count_step_flops,
    fake_count,
    give_placeholder_descriptions,
)
from harness.measure.hardware import _PeakMemory, datasheet_peak, environment, measure_matmul_peak, time_steps
from harness.weights import create_backbone
from methods.layout import layout_of
from methods.registry import build_method

__all__ = ["BASELINE", "MODES", "BenchSettings", "PlainVisual", "datasheet_peak", "format_bench",
           "measure_matmul_peak", "run_bench", "stamp"]

BASELINE = "open_clip (plain)"
MODES = ("train", "infer")


@dataclass(frozen=True)
class BenchSettings:
    """Everything a bench row depends on besides the method (recorded in every row)."""

    backbone: str = "ViT-B-16"
    pretrained: str | None = None
    batch: int = 32
    frames: int = 8
    image_size: int | None = None
    amp: str = "bf16"
    compile: bool = False
    iters: int = 20
    warmup: int = 5
    device: str = "cuda"
    num_classes: int = 400
    frozen_bf16: bool = False

    def validate(self) -> None:
        if self.amp not in ("bf16", "none"):
            raise ValueError(f"amp must be 'bf16' or 'none', got {self.amp!r}")
        if self.frozen_bf16 and self.amp != "bf16":
            raise ValueError("frozen_bf16 needs amp='bf16' (bf16 weights meet fp32 activations otherwise)")
        if self.batch < 1 or self.frames < 1 or self.iters < 1 or self.warmup < 0 or self.num_classes < 1:
            raise ValueError(f"batch, frames, iters, num_classes must be >= 1 and warmup >= 0: {self}")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- models under test -------------------------------------------------------------------------

class PlainVisual(nn.Module):
    """open_clip's own visual tower as a video classifier: frames through `clip.visual`, mean over
    time, a linear head. The baseline for "how fast can a ViT-B/16 go on this card".

    Training keeps the tower frozen; a learnable per-channel shift of the input frames (zero, so
    the function is unchanged) makes the backward pass run through every block down to the
    pixels, as an adapter in the first block would: activation gradients everywhere, no weight
    gradients for the tower. A joint space-time tower (ViCLIP) takes the whole clip at once.
    """

    def __init__(self, clip: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.joint = layout_of(clip).joint
        self.visual = clip.visual
        self.visual.requires_grad_(False)
        self.input_shift = nn.Parameter(torch.zeros(3, 1, 1))
        self.head = nn.Linear(int(self.visual.output_dim), num_classes)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        batch, frames = video.shape[:2]
        if self.joint:
            return self.visual(video + self.input_shift)
        return self.visual(video.flatten(0, 1) + self.input_shift).view(batch, frames, -1).mean(dim=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode_video(video))


def _autocast(settings: BenchSettings, device: torch.device):
    if settings.amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _cast_frozen_bf16(model: nn.Module) -> None:
    """Store frozen parameters in bf16 (as the official adapter codes keep a half backbone):
    halves weight traffic and memory; trainable parameters stay fp32 for AdamW."""
    for param in model.parameters():
        if not param.requires_grad:
            param.data = param.data.to(torch.bfloat16)


def _make_optimizer(params: list[nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(params, lr=lr or 1e-4, **kwargs)


def _compile_hooks(model: nn.Module, names: Sequence[str]) -> None:
    """Replace bound methods by compiled ones on the instance: the model's own `forward` (which
    a method may override) then calls the compiled encoders."""
    for name in names:
        fn = getattr(model, name, None)
        if fn is not None:
            setattr(model, name, torch.compile(fn))


def _row_base(method: str, settings: BenchSettings, env: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method}
    row.update({k: v for k, v in asdict(settings).items() if k != "device"})
    row.update(env)
    return row


def _measure_mode(mode: str, step: Callable[[], Any], step_flops: int, settings: BenchSettings,
                  device: torch.device, peak_flops: float, datasheet: float | None) -> dict[str, Any]:
    with _PeakMemory(device) as mem:
        timing = time_steps(step, settings.iters, settings.warmup, device)
    median = timing["median_s"]
    achieved = step_flops / median
    return {
        "mode": mode,
        "status": "ok",
        "clips_per_s": round(settings.batch / median, 3),
        "step_ms": round(median * 1e3, 3),
        "step_ms_min": round(timing["min_s"] * 1e3, 3),
        "first_step_s": round(timing["first_step_s"], 3),
        "peak_mem_gib": None if mem.peak_bytes is None else round(mem.peak_bytes / 2 ** 30, 3),
        "peak_mem_bytes": mem.peak_bytes,
        "mem_kind": mem.kind,
        "step_gflops": round(step_flops / GIGA, 3),
        "achieved_tflops": round(achieved / 1e12, 4),
        "mfu": round(achieved / peak_flops, 4),
        "mfu_datasheet": None if datasheet is None else round(achieved / datasheet, 4),
    }


def _build_model(method: str, settings: BenchSettings, options: Any, clip: nn.Module,
                 spec: Any, classnames: Sequence[str]) -> tuple[nn.Module, float, list[str]]:
    """The model under test, its learning rate, and the encoders `--compile` compiles."""
    if method == BASELINE:
        return PlainVisual(clip, settings.num_classes), 1e-3, ["encode_video"]

    model = build_method(method, clip, get_tokenizer(spec), settings.frames, options, classnames)
    give_placeholder_descriptions(model, classnames)
    # The text encoder runs every step only when it trains; otherwise once per class set,
    # and compiling it would cost more than it saves.
    encoders = ["encode_video"] + ([] if model.text_is_frozen else ["encode_text_embeddings"])
    return model, float(getattr(model.config, "lr", 1e-3)), encoders


def _step_flops(method: str, model: nn.Module, settings: BenchSettings, image_size: int,
                classnames: Sequence[str], trainable: bool) -> dict[str, int]:
    """FLOPs of a train step and of inference, under fake tensors (no arithmetic, no device
    memory), counted before anything is compiled."""
    video_shape = (settings.batch, settings.frames, 3, image_size, image_size)
    if method == BASELINE:
        return _plain_flops(model, video_shape, trainable=trainable)  # type: ignore[arg-type]
    return {
        "train": count_step_flops(model, settings.batch, settings.frames, image_size, classnames)["flops"],
        "infer": count_flops(model, settings.frames, image_size, batch=settings.batch)["flops"],
    }


def _bench_one(method: str, settings: BenchSettings, env: Mapping[str, Any], peak_flops: float,
               options: Any, modes: Sequence[str]) -> list[dict[str, Any]]:
    """Build one method (or the plain baseline), count its FLOPs, time each mode."""
    device = torch.device(settings.device)
    clip, spec = create_backbone(settings.backbone, settings.pretrained)
    image_size = settings.image_size or spec.image_size
    classnames = [f"class {i}" for i in range(settings.num_classes)]
    base = _row_base(method, replace(settings, image_size=image_size), env)
    model, config_lr, encoders = _build_model(method, settings, options, clip, spec, classnames)
    if method != BASELINE:
        base["options"] = model.config.to_dict()
    trainable = [p for p in model.parameters() if p.requires_grad]
    base["trainable"] = sum(p.numel() for p in trainable)
    base["total"] = sum(p.numel() for p in model.parameters())
    flops = _step_flops(method, model, settings, image_size, classnames, bool(trainable))

    model.to(device)
    if settings.frozen_bf16:
        _cast_frozen_bf16(model)
    if settings.compile:
        _compile_hooks(model, encoders)
    gen = torch.Generator(device="cpu").manual_seed(0)
    video_shape = (settings.batch, settings.frames, 3, image_size, image_size)
    subject = _Subject(model, method == BASELINE, classnames, settings, device,
                       torch.randn(video_shape, generator=gen).to(device),
                       torch.randint(0, settings.num_classes, (settings.batch,), generator=gen).to(device))
    datasheet = datasheet_peak(str(env.get("card", ""))) if settings.amp == "bf16" else None
    rows = []
    for mode in modes:
        row = dict(base, mode=mode)
        try:
            if mode == "train" and not trainable:
                row["status"] = "skipped: no trainable parameters"
            elif mode == "train":
                # The step (and its optimizer state) is a temporary: freed before inference is measured.
                row.update(_measure_mode("train", subject.train_step(_make_optimizer(trainable, config_lr, device)),
                                         flops["train"], settings, device, peak_flops, datasheet))
            elif mode == "infer":
                row.update(_measure_mode("infer", subject.infer_step(), flops["infer"], settings, device,
                                         peak_flops, datasheet))
            else:
                raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")
        except Exception as err:  # noqa: BLE001 - one failing method must not lose the others' rows
            row["status"] = _error_status(err)
            row["traceback"] = traceback.format_exc(limit=6)
            for param in trainable:
                param.grad = None
        rows.append(row)
    return rows


class _Subject:
    """A model under test with its synthetic batch: builds the train and inference steps."""

    def __init__(self, model: nn.Module, plain: bool, classnames: Sequence[str], settings: BenchSettings,
                 device: torch.device, video: torch.Tensor, labels: torch.Tensor) -> None:
        self.model, self.plain, self.classnames = model, plain, list(classnames)
        self.settings, self.device, self.video, self.labels = settings, device, video, labels

    def logits(self) -> torch.Tensor:
        return self.model(self.video) if self.plain else self.model(self.video, self.classnames)

    def loss(self) -> torch.Tensor:
        """The training loss of one step: the method's own training losses (plain CLIP: CE)."""
        if self.plain:
            return nn.functional.cross_entropy(self.logits().float(), self.labels)
        losses = self.model.training_losses(self.video, self.labels, self.classnames, batch_labels=self.labels)
        return sum(losses.values())  # type: ignore[return-value]

    def train_step(self, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        """Forward, losses, backward, optimizer step (train mode)."""
        self.model.train()

        def step() -> None:
            with _autocast(self.settings, self.device):
                loss = self.loss()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    def infer_step(self) -> Callable[[], None]:
        """Forward to logits in eval mode without autograd."""
        self.model.eval()

        def step() -> None:
            with torch.no_grad(), _autocast(self.settings, self.device):
                self.logits()

        return step


def _error_status(err: BaseException) -> str:
    first = str(err).splitlines()[0][:300] if str(err) else ""
    return f"error: {type(err).__name__}: {first}"


def _plain_flops(model: PlainVisual, video_shape: tuple[int, ...], trainable: bool) -> dict[str, int]:
    """FLOPs of the baseline's train step (forward + backward to the input) and inference.

    Inference is counted in train mode: in eval mode open_clip's `nn.MultiheadAttention` takes
    its fused fast path, an op the counter does not know (same arithmetic, counted as 0)."""

    def infer(m: nn.Module) -> None:
        m.train()
        with torch.no_grad():
            m.encode_video(torch.zeros(video_shape))

    def step(m: nn.Module) -> None:
        m.train()
        loss = nn.functional.cross_entropy(m(torch.zeros(video_shape)), torch.zeros(video_shape[0], dtype=torch.long))
        if trainable:
            torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])

    return {"train": fake_count(model, step), "infer": fake_count(model, infer)}


def _cleanup(device: torch.device, compiled: bool) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if compiled:
        torch._dynamo.reset()  # each model is compiled afresh; keeps the recompile cache clean


def run_bench(
    methods: Sequence[str],
    backbone: str = "ViT-B-16",
    pretrained: str | None = None,
    batch: int = 32,
    frames: int = 8,
    image_size: int | None = None,
    amp: str = "bf16",
    compile: bool = False,
    iters: int = 20,
    warmup: int = 5,
    device: str | None = None,
    num_classes: int = 400,
    modes: Sequence[str] = MODES,
    baseline: bool = True,
    overrides: Mapping[str, Any] | None = None,
    frozen_bf16: bool = False,
    deadline: float | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Benchmark `methods` (plus the plain open_clip baseline first when `baseline`).

    Returns one row per (method, mode) with throughput, memory, FLOPs, MFU, the settings and the
    environment. `overrides` maps a method to its configuration (built once: `harness.api.bench`) or to
    option values (as `--set method.option=value`).
    `deadline` (a `time.time()` value) skips methods not yet started by then, so a
    lent GPU's time limit is never overrun; `on_row` sees each row as soon as it exists (the CLI
    writes partial results with it); `progress` gets a line as each model starts. A method that fails gives an ``error: ...`` row, and with
    `frozen_bf16` it is retried once with fp32 frozen weights.
    """
    settings = BenchSettings(backbone, pretrained, batch, frames, image_size, amp, compile, iters, warmup,
                             device or _default_device(), num_classes, frozen_bf16)
    settings.validate()
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {MODES}")
    dev = torch.device(settings.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the patch-embedding conv: fixed shapes
    env = environment(settings.device)
    dtype = torch.bfloat16 if amp == "bf16" else torch.float32
    peak = measure_matmul_peak(dev, dtype)
    env = dict(env, peak_dtype=str(dtype).replace("torch.", ""), peak_tflops_measured=round(peak / 1e12, 3))

    rows: list[dict[str, Any]] = []
    names = ([BASELINE] if baseline else []) + [m for m in methods if m != BASELINE]
    for index, name in enumerate(names, 1):
        if progress is not None:
            progress(f"[{index}/{len(names)}] {name}: build, count FLOPs, time {', '.join(modes)}")
        if deadline is not None and time.time() > deadline:
            new = [dict(_row_base(name, settings, env), mode=mode, status="skipped: time budget") for mode in modes]
        else:
            new = _bench_with_retry(name, settings, env, peak, (overrides or {}).get(name), modes)
        for row in new:
            rows.append(row)
            if on_row is not None:
                on_row(row)
        _cleanup(dev, settings.compile)
    return rows


def _bench_with_retry(name: str, settings: BenchSettings, env: Mapping[str, Any], peak: float,
                      options: Any, modes: Sequence[str]) -> list[dict[str, Any]]:
    try:
        rows = _bench_one(name, settings, env, peak, options, modes)
    except ConfigurationError as err:  # the method refuses the backbone (e.g. its token layout): one line
        rows = [dict(_row_base(name, settings, env), mode=mode, status=f"refused: {err}") for mode in modes]
    except Exception as err:  # noqa: BLE001 - building or counting failed: report, go on
        rows = [dict(_row_base(name, settings, env), mode=mode, status=_error_status(err),
                     traceback=traceback.format_exc(limit=6)) for mode in modes]
    errors = [str(r["status"]) for r in rows if str(r.get("status", "")).startswith("error")]
    if settings.frozen_bf16 and errors:
        _cleanup(torch.device(settings.device), settings.compile)
        retry = _bench_with_retry(name, replace(settings, frozen_bf16=False), env, peak, options, modes)
        for row in retry:
            row["note"] = f"retried with fp32 frozen weights; with frozen_bf16: {errors[0]}"
        return retry
    return rows


if __name__ == "__main__":  # the thin entry `python -m harness.measure.bench` (same options as `harness bench`)
    import sys

    from harness.commands.bench import main  # the entry only: this module never imports the front end

    sys.exit(main())
