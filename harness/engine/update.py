"""One optimiser update from this process's share of a global batch (`harness.engine.batches`).

Why not mmengine's gradient accumulation (`OptimWrapper(accumulative_counts=k)`): it counts
micro-iterations, so with a training list that is not a multiple of the batch its groups of k
micro-batches run across epoch boundaries, the last short batch is whatever is left, and the lr
schedule advances per micro-batch: the number of updates and the lr of each depended on the
micro-batch. Here one loader item is one update (mmengine's iteration = an update: the lr
schedule, the progress bar and `train.iters` count updates), and `optimiser_update`:

1. splits the share into micro-batches of `micro_batch` clips;
2. runs each under its clips' per-sample seeds (`methods.sample_random`), with `batch_labels` =
   the labels of the whole global batch, and backpropagates the sum of the method's losses (each
   a mean over the micro-batch's clips) times the micro-batch's share of the global batch
   (clips in it / clips in the update), so the summed gradient is that of the mean loss over the
   global batch;
3. sums the gradients over processes (one all-reduce per dtype and bucket; a parameter with a
   gradient on any process gets the sum everywhere, one with none anywhere keeps none, as in one
   process: AdamW then skips it, weight decay included);
4. takes one optimiser step (gradient clipping and AMP's unscale as the optim wrapper does them)
   and clears the gradients.

Distributed jobs run the model in `SummedGradients` (registered as an mmengine model wrapper in
place of DistributedDataParallel): it only delegates, because step 3 does the gradient
reduction; DDP reduces during backward, once per micro-batch or not at all (`no_sync`), and
needs every process to run a backward, which a process without clips in the last short batch
cannot.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from methods.sample_random import sample_seeds

#: Gradient elements per all-reduce (64 MiB of float32): bounds the extra memory of the flat copy.
BUCKET_ELEMENTS = 1 << 24


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def optimiser_update(model: Any, data: dict[str, Any], optim_wrapper: Any, micro_batch: int) -> dict[str, float]:
    """Steps 1-4 of the module doc on `model` (a `VideoClassifier`); returns the global batch's
    mean of each logged loss (the same number in every process)."""
    share = data["update"]
    clips = len(share.indices)
    micro = micro_batch if micro_batch > 0 else max(1, clips)
    device = next(model.parameters()).device
    batch_labels = torch.tensor(share.batch_labels, dtype=torch.long, device=device)
    optim_wrapper.zero_grad()
    logged: dict[str, float] = {}
    for start in range(0, clips, micro):
        part = slice(start, start + micro)
        chunk = {"inputs": data["inputs"][part], "data_samples": data["data_samples"][part]}
        weight = len(share.indices[part]) / share.global_size
        with sample_seeds(share.seeds[part], share.update_seed):  # also for checkpointing's recompute
            with optim_wrapper.optim_context(model):
                chunk = model.data_preprocessor(chunk, True)
                losses = model(**chunk, mode="loss", batch_labels=batch_labels)
            loss, log_vars = model.parse_losses(losses)
            optim_wrapper.backward(loss * weight)
        for key, value in log_vars.items():
            logged[key] = logged.get(key, 0.0) + weight * float(value.detach())
    if distributed():
        sum_gradients(p for p in model.parameters() if p.requires_grad)
        logged = _sum_logged(logged)
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    return logged


def sum_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each parameter's gradient by its sum over the processes (see the module doc)."""
    params = list(params)
    if not params:
        return
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(present)
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for param, anywhere in zip(params, present.tolist()):
        if anywhere:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            by_dtype.setdefault(param.grad.dtype, []).append(param)
    for group in by_dtype.values():
        for bucket in _buckets(group):
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            dist.all_reduce(flat)
            offset = 0
            for param in bucket:
                size = param.grad.numel()
                param.grad.copy_(flat[offset:offset + size].view_as(param.grad))
                offset += size


def _buckets(params: list[nn.Parameter]) -> Iterable[list[nn.Parameter]]:
    bucket: list[nn.Parameter] = []
    size = 0
    for param in params:
        if bucket and size + param.numel() > BUCKET_ELEMENTS:
            yield bucket
            bucket, size = [], 0
        bucket.append(param)
        size += param.numel()
    if bucket:
        yield bucket


def _sum_logged(logged: dict[str, float]) -> dict[str, float]:
    """Each logged value summed over processes (a process without clips has no keys)."""
    gathered: list[dict[str, float] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, logged)
    total: dict[str, float] = {}
    for part in gathered:
        for key, value in (part or {}).items():
            total[key] = total.get(key, 0.0) + value
    return total


@MODEL_WRAPPERS.register_module()
class SummedGradients(nn.Module):
    """The distributed model wrapper of training jobs (instead of DDP, see the module doc):
    every process starts from rank 0's trainable weights; `train_step` is the model's own,
    whose `optimiser_update` sums the gradients over the processes."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        if distributed():
            for param in module.parameters():
                if param.requires_grad:
                    dist.broadcast(param.data, src=0)

    def train_step(self, data: dict[str, Any], optim_wrapper: Any) -> dict[str, float]:
        return self.module.train_step(data, optim_wrapper)

    def val_step(self, data: Any) -> list:
        return self.module.val_step(data)

    def test_step(self, data: Any) -> list:
        return self.module.test_step(data)
