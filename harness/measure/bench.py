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

Runs without the harness CLI and without mmengine:
``python -m harness.measure.bench --methods all --amp bf16 --json out.json --md out.md``.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from harness.atomic import atomic_write_json
from harness.measure.flops import GIGA, count_flops, count_step_flops, fake_count

BASELINE = "open_clip (plain)"
MODES = ("train", "infer")

#: Datasheet dense (no sparsity) bf16 tensor-core peaks, FLOP/s, matched on the CUDA device name.
#: Reported next to the measured-peak MFU because papers quote MFU against these.
DATASHEET_BF16_PEAK = (
    ("H100 PCIe", 756e12),
    ("H100 80GB HBM3", 989.4e12),  # H100 SXM5
    ("H200", 989.4e12),  # H200 SXM
    ("A100", 312e12),
)


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


# -- environment -----------------------------------------------------------------------------

def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def environment(device: str) -> dict[str, Any]:
    """Card, driver and library versions, stamped on every row."""
    import open_clip

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    return {
        "device": str(dev),
        "card": torch.cuda.get_device_name(dev) if cuda else _cpu_name(),
        "driver": _driver_version() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "open_clip": getattr(open_clip, "__version__", "?"),
        "python": platform.python_version(),
    }


def datasheet_peak(card: str) -> float | None:
    """Dense bf16 datasheet peak of a known card (FLOP/s), else None."""
    if "NVL" in card:  # NVL variants have their own (lower) clocks: not in the table
        return None
    for fragment, peak in DATASHEET_BF16_PEAK:
        if fragment in card:
            return peak
    return None


# -- timing primitives -----------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """Run `warmup` untimed steps then `iters` timed ones; per-step seconds and the first step's
    time (which includes compilation)."""
    t0 = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    _sync(device)
    times: list[float] = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) / 1e3 for start, end in events]
    else:
        for _ in range(iters):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_step_s": first}


def measure_matmul_peak(device: str | torch.device, dtype: torch.dtype = torch.bfloat16,
                        size: int | None = None, iters: int | None = None) -> float:
    """Dense matmul throughput (FLOP/s) of `dtype` on `device`, measured now: the MFU denominator.

    The fastest of a few rounds of timed n x n x n matmuls (n = 8192 on GPU, 1024 on CPU).
    Measured rather than looked up so MFU is honest about the clocks, power cap and library of
    the very run (the datasheet MFU is reported beside it).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = size or (8192 if cuda else 1024)
    iters = iters or (20 if cuda else 3)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    # The fastest single matmul: a peak, robust to other jobs sharing the machine.
    best = min(time_steps(lambda: torch.mm(a, b), iters=iters, warmup=2, device=device)["min_s"]
               for _ in range(3))
    return 2.0 * n ** 3 / best


# -- memory ----------------------------------------------------------------------------------

class _PeakMemory:
    """Peak memory of a block: CUDA max allocated, or on Linux CPU the peak RSS growth (VmHWM
    reset through /proc/self/clear_refs); None where neither is available."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind: str | None = None
        self.peak_bytes: int | None = None
        self._rss0: int | None = None

    @staticmethod
    def _status_kib(field: str) -> int | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def __enter__(self) -> _PeakMemory:  # noqa: PYI034 - private class, never subclassed
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda max_memory_allocated"
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")  # resets VmHWM to the current RSS
                self._rss0 = self._status_kib("VmRSS")
                self.kind = "cpu peak RSS growth" if self._rss0 is not None else None
            except OSError:
                self.kind = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind is not None:
            hwm = self._status_kib("VmHWM")
            self.peak_bytes = None if hwm is None else max(0, hwm - (self._rss0 or 0)) * 1024


# -- models under test -------------------------------------------------------------------------

class PlainVisual(nn.Module):
    """open_clip's own visual tower as a video classifier: frames through `clip.visual`, mean over
    time, a linear head. The baseline for "how fast can a ViT-B/16 go on this card".

    Training keeps the tower frozen; a learnable per-channel shift of the input frames (zero, so
    the function is unchanged) makes the backward pass run through every block down to the
    pixels, as an adapter in the first block would: activation gradients everywhere, no weight
    gradients for the tower.
    """

    def __init__(self, clip: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.visual = clip.visual
        self.visual.requires_grad_(False)
        self.input_shift = nn.Parameter(torch.zeros(3, 1, 1))
        self.head = nn.Linear(int(self.visual.output_dim), num_classes)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        batch, frames = video.shape[:2]
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


def _give_synthetic_descriptions(model: nn.Module, classnames: Sequence[str]) -> None:
    """Methods whose loss needs per-class sentences (MSTA's L_CC) get placeholder ones: their
    cost (encoded once per class set) does not depend on the wording."""
    setter = getattr(model, "set_descriptions", None)
    if setter is None:
        return
    n = int(getattr(model.config, "n_descriptions", 2))
    spatial = [[f"a photo showing {c}, view {j}." for j in range(n)] for c in classnames]
    temporal = [[f"a video in which {c} happens, step {j}." for j in range(n)] for c in classnames]
    setter(classnames, spatial, temporal)


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


def _bench_one(method: str, settings: BenchSettings, env: Mapping[str, Any], peak_flops: float,
               options: Mapping[str, Any] | None, modes: Sequence[str]) -> list[dict[str, Any]]:
    """Build one method (or the plain baseline), count its FLOPs, time each mode."""
    from harness.backbone import get_tokenizer
    from harness.weights import create_backbone

    device = torch.device(settings.device)
    clip, spec = create_backbone(settings.backbone, settings.pretrained)
    image_size = settings.image_size or spec.image_size
    classnames = [f"class {i}" for i in range(settings.num_classes)]
    base = _row_base(method, replace(settings, image_size=image_size), env)
    datasheet = datasheet_peak(str(env.get("card", ""))) if settings.amp == "bf16" else None

    if method == BASELINE:
        model: nn.Module = PlainVisual(clip, settings.num_classes)
        config_lr = 1e-3
        encoders = ["encode_video"]
    else:
        from methods.registry import build_method

        model = build_method(method, clip, get_tokenizer(spec), settings.frames, options, classnames)
        _give_synthetic_descriptions(model, classnames)
        config_lr = float(getattr(model.config, "lr", 1e-3))
        # The text encoder runs every step only when it trains; otherwise once per class set,
        # and compiling it would cost more than it saves.
        encoders = ["encode_video"] + ([] if getattr(model, "text_is_frozen", True) else ["encode_text_embeddings"])
        base["options"] = model.config.to_dict()
    trainable = [p for p in model.parameters() if p.requires_grad]
    base["trainable"] = sum(p.numel() for p in trainable)
    base["total"] = sum(p.numel() for p in model.parameters())

    # FLOPs under fake tensors (no arithmetic, no device memory), before anything is compiled.
    video_shape = (settings.batch, settings.frames, 3, image_size, image_size)
    if method == BASELINE:
        flops = _plain_flops(model, video_shape, trainable=bool(trainable))
    else:
        flops = {
            "train": count_step_flops(model, settings.batch, settings.frames, image_size, classnames)["flops"],
            "infer": count_flops(model, settings.frames, image_size, batch=settings.batch)["flops"],
        }

    model.to(device)
    if settings.frozen_bf16:
        _cast_frozen_bf16(model)
    if settings.compile:
        _compile_hooks(model, encoders)
    gen = torch.Generator(device="cpu").manual_seed(0)
    subject = _Subject(model, method == BASELINE, classnames, settings, device,
                       torch.randn(video_shape, generator=gen).to(device),
                       torch.randint(0, settings.num_classes, (settings.batch,), generator=gen).to(device))
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

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return nn.functional.cross_entropy(logits.float(), self.labels)
        return sum(self.model.losses(logits, self.labels, self.classnames).values())  # type: ignore[return-value]

    def train_step(self, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        """Forward, losses, backward, optimizer step (train mode)."""
        self.model.train()

        def step() -> None:
            with _autocast(self.settings, self.device):
                loss = self.loss(self.logits())
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
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    frozen_bf16: bool = False,
    deadline: float | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Benchmark `methods` (plus the plain open_clip baseline first when `baseline`).

    Returns one row per (method, mode) with throughput, memory, FLOPs, MFU, the settings and the
    environment. `overrides` maps a method to option values (as `--set method.option=value`).
    `deadline` (a `time.time()` value) skips methods not yet started by then, so a
    lent GPU's time limit is never overrun; `on_row` sees each row as soon as it exists (the CLI
    writes partial results with it). A method that fails gives an ``error: ...`` row, and with
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
    for name in names:
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
                      options: Mapping[str, Any] | None, modes: Sequence[str]) -> list[dict[str, Any]]:
    try:
        rows = _bench_one(name, settings, env, peak, options, modes)
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


# -- formatting ------------------------------------------------------------------------------

_TABLE_COLUMNS = (
    ("method", "method", "{}"),
    ("mode", "mode", "{}"),
    ("clips_per_s", "clips/s", "{:.1f}"),
    ("step_ms", "step ms", "{:.1f}"),
    ("peak_mem_gib", "peak mem GiB", "{:.2f}"),
    ("step_gflops", "step GFLOPs", "{:.4g}"),
    ("achieved_tflops", "TFLOP/s", "{:.3g}"),
    ("mfu", "MFU", "{:.1%}"),
    ("mfu_datasheet", "MFU (datasheet)", "{:.1%}"),
    ("first_step_s", "first step s", "{:.1f}"),
    ("compile", "compile", "{}"),
    ("status", "status", "{}"),
)


def _cell(row: Mapping[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or value == "":
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def stamp(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line naming the card, driver and versions the rows were measured with."""
    if not rows:
        return "no rows"
    r = rows[0]
    return (f"card: {r.get('card')} | driver: {r.get('driver') or '-'} | torch {r.get('torch')} | "
            f"CUDA {r.get('cuda') or '-'} | open_clip {r.get('open_clip')} | python {r.get('python')} | "
            f"measured {r.get('peak_dtype', '?')} matmul peak {r.get('peak_tflops_measured', '-')} TFLOP/s | "
            f"backbone {r.get('backbone')} | batch {r.get('batch')} x {r.get('frames')} frames x "
            f"{r.get('image_size')} px | amp {r.get('amp')} | {r.get('num_classes')} classes")


def format_bench(rows: Sequence[Mapping[str, Any]], fmt: str = "table") -> str:
    """Rows as an aligned text table, a Markdown table (with a stamp line) or JSON."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt not in ("table", "markdown"):
        raise ValueError(f"fmt must be 'table', 'markdown' or 'json', got {fmt!r}")
    header = [title for _, title, _ in _TABLE_COLUMNS]
    body = [[_cell(r, key, f) for key, _, f in _TABLE_COLUMNS] for r in rows]
    if fmt == "markdown":
        lines = [f"_{stamp(rows)}_", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    out = [stamp(rows), "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(out) + "\n"


# -- command line (no harness CLI, no mmengine) ------------------------------------------------

def _parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`--set method.option=value` (value as a Python literal, else a string; no YAML needed)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set {item!r}: expected method.option=value")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False}.get(raw.lower(), raw)
        out.setdefault(method, {})[name] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.measure.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="all", help="comma-separated method names, or 'all'")
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--pretrained", default=None, help="open_clip tag or local file (default: random init)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--image-size", type=int, default=None, help="default: the backbone's")
    p.add_argument("--amp", choices=("bf16", "none"), default="bf16")
    p.add_argument("--compile", action="store_true", help="torch.compile the video (and text) encoders")
    p.add_argument("--frozen-bf16", action="store_true", help="store frozen weights in bf16")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--no-baseline", action="store_true", help=f"skip the {BASELINE!r} row")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD.OPTION=VALUE")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds from now after which no further method is started")
    p.add_argument("--json", dest="json_path", default=None, help="write rows here (updated after each row)")
    p.add_argument("--append", action="store_true", help="keep rows already in --json")
    p.add_argument("--md", dest="md_path", default=None, help="write a Markdown table here")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: format the rows already in --json (to stdout and --md)")
    p.add_argument("--smoke", action="store_true",
                   help="harness-tiny, batch 2, 2 frames, 2 iters on CPU: proves the pipeline end to end")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report_only:
        if not args.json_path or not os.path.exists(args.json_path):
            raise SystemExit("--report-only needs an existing --json file")
        with open(args.json_path) as handle:
            rows_in = json.load(handle)
        print(format_bench(rows_in, "table"))
        if args.md_path:
            with open(args.md_path, "w") as handle:
                handle.write(format_bench(rows_in, "markdown"))
        return 0
    if args.smoke:
        args.backbone, args.batch, args.frames, args.iters, args.warmup = "harness-tiny", 2, 2, 2, 1
        args.num_classes = min(args.num_classes, 8)
        args.device = args.device or "cpu"
    from methods.registry import parse_method_list

    methods = parse_method_list(args.methods)
    previous: list[dict[str, Any]] = []
    if args.append and args.json_path and os.path.exists(args.json_path):
        with open(args.json_path) as handle:
            previous = json.load(handle)
    rows: list[dict[str, Any]] = []

    def save(row: dict[str, Any]) -> None:
        print(format_bench([row], "table").splitlines()[-1], flush=True)
        if args.json_path:
            atomic_write_json(args.json_path, previous + rows + [row], sort_keys=False)

    deadline = time.time() + args.time_budget if args.time_budget else None
    run_bench(methods, args.backbone, args.pretrained, args.batch, args.frames, args.image_size, args.amp,
              args.compile, args.iters, args.warmup, args.device, args.num_classes,
              tuple(m.strip() for m in args.modes.split(",") if m.strip()), not args.no_baseline,
              _parse_sets(args.sets), args.frozen_bf16, deadline, on_row=lambda r: (save(r), rows.append(r)))
    all_rows = previous + rows
    print(format_bench(rows, "table"))
    if args.md_path:
        with open(args.md_path, "w") as handle:
            handle.write(format_bench(all_rows, "markdown"))
    failed = [r for r in rows if str(r.get("status", "")).startswith("error")]
    for r in failed:
        print(f"{r['method']} {r['mode']}: {r['status']}\n{r.get('traceback', '')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
