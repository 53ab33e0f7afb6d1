"""FLOPs of the video models, counted with `torch.utils.flop_counter.FlopCounterMode`.

Conventions (the same as docs/METHODS.md): a multiply-add is 2 FLOPs; `gflops` is one *view*
(one clip of T frames through the video encoder); papers' "GFLOPs" are GMACs, half of that.
Only matmul-like ops are counted (linear, conv, bmm, attention), as torch's counter does; norms,
activations and softmax are not.

Why this module exists rather than a bare `FlopCounterMode()`:

* torch's counter knows the CUDA fused attention kernels but not the CPU one that
  `F.scaled_dot_product_attention` dispatches to here
  (`aten._scaled_dot_product_flash_attention_for_cpu`), so a plain count on CPU silently drops
  attention (ViT-B/16 at 8 frames: 269.57 G instead of 281.02 G). `register_cpu_sdpa_flops`
  teaches it that op with torch's own SDPA formulas.
* Counting needs no arithmetic: by default the model runs under fake tensors (shapes, devices
  and autograd, no data; `where='fake'`) on a copy that shares its weights, so the FLOPs of a
  batch-32 ViT-B/16 training step are known in about a second, with no memory, on a CPU or
  next to a model already on a GPU. Should a method do something fake tensors cannot (a
  data-dependent `.item()`), counting falls back to real arithmetic and says so in `counted_on`.
* FLOPs are those of the math, not of a kernel choice: a depthwise temporal conv written as
  shifted multiply-adds is counted as the convolution it is (`_use_reference_formulations`).
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

GIGA = 1e9

#: (forward op, backward op) names of fused SDPA kernels torch's counter may not know.
_FUSED_SDPA_OPS = (
    ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward"),
    ("_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_fused_attention_overrideable_backward"),
)


def _sdpa_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                         **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def register_cpu_sdpa_flops() -> list[str]:
    """Register torch's SDPA flop formulas for fused attention ops the counter lacks (idempotent).

    Registration is process-wide on purpose: every `FlopCounterMode` in the process (the
    engine's, a notebook's) then counts attention on CPU too. Returns the ops registered now.
    """
    added = []
    for fwd_name, bwd_name in _FUSED_SDPA_OPS:
        for name, formula in ((fwd_name, _sdpa_forward_flops), (bwd_name, _sdpa_backward_flops)):
            op = getattr(torch.ops.aten, name, None)
            if op is None or op in flop_registry:  # absent in this torch, or torch knows it already
                continue
            register_flop_formula(op)(formula)
            added.append(name)
    return added


def flop_counter() -> Any:
    """A silent `FlopCounterMode` that also counts CPU fused attention."""
    register_cpu_sdpa_flops()
    return FlopCounterMode(display=False)


def count_callable_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of whatever `fn()` executes (forward, backward, anything), as executed."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())


# -- counting without arithmetic ------------------------------------------------------------

def counting_copy(model: nn.Module) -> nn.Module:
    """A structural copy of `model` that *shares* its parameters and buffers (no weight is
    copied) but has its own caches, so whatever the count stores (fake tensors in a text-feature
    or token cache) never reaches the real model. Layers with several equivalent implementations
    are switched to their reference formulation (see `_use_reference_formulations`)."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        memo[id(tokenizer)] = _RealTensorTokenizer(tokenizer)
    clone = copy.deepcopy(model, memo)
    _use_reference_formulations(clone)
    return clone


class _RealTensorTokenizer:
    """Delegates to a tokenizer but builds its token tensor outside fake mode: open_clip fills
    the tensor row by row, which under fake tensors costs ~1 s per 400 prompts and counts 0."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        unset = getattr(fake_tensor, "unset_fake_temporarily", None)
        with unset() if unset is not None else contextlib.nullcontext():
            return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def _use_reference_formulations(model: nn.Module) -> dict[nn.Module, str]:
    """Count a depthwise temporal conv as the convolution it is, whatever kernel runs it.

    The counter sees only matmul/conv ops: the same k multiply-adds per element written as
    shifted elementwise ops (ST-Adapter's fast `shift` implementation) would count 0, so the
    FLOPs of a method would depend on an implementation detail. Returns the previous settings.
    """
    try:
        from methods.layers import TemporalDepthwiseConv
    except ImportError:  # an older tree without the shared layer: nothing to switch
        return {}
    previous = {}
    for module in model.modules():
        if isinstance(module, TemporalDepthwiseConv) and module.impl != "conv3d":
            previous[module] = module.impl
            module.impl = "conv3d"
    return previous


def _fake_mode() -> Any:
    """Tensors with shapes, devices and autograd but no data: ops run their meta kernels, so a
    batch-32 ViT-B/16 training step is counted in about a second with no memory, on any device."""
    return FakeTensorMode(allow_non_fake_inputs=True)


def _device_of(model: nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _with_fallback(model: nn.Module, where: str, fn: Callable[[nn.Module], dict[str, Any]]) -> dict[str, Any]:
    """Run `fn` on a counting copy under fake tensors (where='fake') or on the model itself with
    real arithmetic (where='model'); 'fake' falls back to 'model' when the method does something
    fake tensors cannot (a data-dependent `.item()` or Python branch on values)."""
    if where not in ("fake", "model"):
        raise ValueError(f"where must be 'fake' or 'model', got {where!r}")
    if where == "fake":
        try:
            clone = counting_copy(model)
            with _fake_mode():
                out = fn(clone)
            out["counted_on"] = "fake"
            return out
        except Exception as err:  # noqa: BLE001 - a genuine bug re-raises from the real run below
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            out = _on_model(model, fn)
            out["counted_on"] = f"model (fake tensors failed: {reason})"
            return out
    out = _on_model(model, fn)
    out["counted_on"] = "model"
    return out


def _on_model(model: nn.Module, fn: Callable[[nn.Module], dict[str, Any]]) -> dict[str, Any]:
    previous = _use_reference_formulations(model)
    try:
        return fn(model)
    finally:
        for module, impl in previous.items():
            module.impl = impl


# -- public API -------------------------------------------------------------------------------

def give_placeholder_descriptions(model: nn.Module, classnames: Sequence[str]) -> None:
    """Methods that need per-class sentences (MSTA's L_CC, OST's descriptors: the description needs
    of the method contract) get placeholder ones: what they cost (the text tower over N sentences
    per class) does not depend on the wording."""
    from methods.base import DESCRIPTION_NEEDS

    if not model.run_needs(model.config) & DESCRIPTION_NEEDS:
        return
    n = model.descriptions_per_class(model.config)
    spatial = [[f"a photo showing {c}, view {j}." for j in range(n)] for c in classnames]
    temporal = [[f"a video in which {c} happens, step {j}." for j in range(n)] for c in classnames]
    model.set_descriptions(classnames, spatial, temporal)


def _text_probe_classname(model: nn.Module) -> str:
    """A class name every method can encode (class-specific contexts only know training classes)."""
    names = getattr(model, "train_classnames", None)
    return names[0] if names else "class 0"


def count_flops(model: nn.Module, frames: int = 8, image_size: int = 224, batch: int = 1,
                *, where: str = "fake") -> dict[str, Any]:
    """Inference FLOPs of a `VideoTextModel` per view (one clip of `frames` frames), counted in
    eval mode (a method may encode classes differently in training: FROSTER's 29-template ensemble
    is 2 templates per training step); the model's mode is restored.

    Returns ``gflops`` (multiply-add = 2), ``gmacs`` (= gflops / 2, the papers' "GFLOPs"),
    ``text_gflops_per_class`` (one class through the text path, all its prompts; None if the
    method cannot encode a lone class), ``flops`` (integer, whole batch), ``batch`` and ``counted_on``.
    """

    def in_eval(run: Callable[[nn.Module], dict[str, Any]]) -> Callable[[nn.Module], dict[str, Any]]:
        def wrapped(m: nn.Module) -> dict[str, Any]:
            was_training = m.training
            m.eval()
            try:
                return run(m)
            finally:
                m.train(was_training)
        return wrapped

    @in_eval
    def video_run(m: nn.Module) -> dict[str, Any]:
        video = torch.zeros(batch, frames, 3, image_size, image_size, device=_device_of(m))
        with torch.no_grad():
            return {"flops": count_callable_flops(lambda: m.encode_video(video))}

    @in_eval
    def text_run(m: nn.Module) -> dict[str, Any]:
        name = _text_probe_classname(m)
        with torch.no_grad():
            return {"flops": count_callable_flops(lambda: m.class_text_features([name]))}

    out = _with_fallback(model, where, video_run)
    try:
        text: int | None = _with_fallback(model, where, text_run)["flops"]
    except Exception:  # noqa: BLE001 - a method whose text path cannot encode a lone class
        text = None
    gflops = out["flops"] / batch / GIGA
    return {
        "gflops": round(gflops, 4),
        "gmacs": round(gflops / 2, 4),
        "text_gflops_per_class": None if text is None else round(text / GIGA, 4),
        "flops": out["flops"],
        "batch": batch,
        "frames": frames,
        "image_size": image_size,
        "counted_on": out["counted_on"],
    }


def count_step_flops(model: nn.Module, batch: int, frames: int, image_size: int,
                     classnames: Sequence[str], *, where: str = "fake") -> dict[str, Any]:
    """FLOPs of one training step as the engine executes it: forward over `classnames`, the
    method's losses, and the backward pass to the trainable parameters (for MFU).

    An uncounted step runs first, so what a method computes once per class set (frozen class
    text features, description anchors) is not charged to every step, as in training. Autograd computes only the
    gradients it needs, so a frozen backbone's weight gradients are (rightly) not counted; the
    optimizer's elementwise update is not a matmul and counts 0.
    Returns ``flops``, ``gflops``, ``forward_flops``, ``backward_flops`` and ``counted_on``.
    """
    classnames = list(classnames)

    def run(m: nn.Module) -> dict[str, Any]:
        was_training = m.training
        m.train()
        try:
            device = _device_of(m)
            video = torch.zeros(batch, frames, 3, image_size, image_size, device=device)
            labels = torch.arange(batch, device=device) % len(classnames)
            # One uncounted pass fills the per-class-set caches (frozen text features, MSTA's
            # description anchors) as the first training step does; the counted pass is a
            # steady-state step.
            m.training_losses(video, labels, classnames, batch_labels=labels)
            params = [p for p in m.parameters() if p.requires_grad]
            with flop_counter() as counter:
                loss = sum(m.training_losses(video, labels, classnames, batch_labels=labels).values())
                forward = int(counter.get_total_flops())
                if params and isinstance(loss, torch.Tensor) and loss.requires_grad:
                    # autograd.grad, not backward(): leaves the real model's .grad untouched.
                    torch.autograd.grad(loss, params, allow_unused=True)
            total = int(counter.get_total_flops())
        finally:
            m.train(was_training)
        return {"flops": total, "forward_flops": forward, "backward_flops": total - forward}

    out = _with_fallback(model, where, run)
    out["gflops"] = round(out["flops"] / GIGA, 4)
    out.update(batch=batch, frames=frames, image_size=image_size, num_classes=len(classnames))
    return out


def fake_count(model: nn.Module, fn: Callable[[nn.Module], Any]) -> int:
    """FLOPs of `fn(copy)` run under fake tensors on a counting copy of `model` (for models that
    are not `VideoTextModel`s, such as the bench's plain open_clip baseline). Tensors `fn` makes
    are fake too; it should use `torch.autograd.grad`, not `.backward()`, for backward passes."""
    clone = counting_copy(model)
    with _fake_mode():
        return count_callable_flops(lambda: fn(clone))
