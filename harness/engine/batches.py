"""Global batches: what each optimiser update trains on, the same whatever runs it.

`schedule.batch_size` is the global batch: the clips of one optimiser update over every process
and every micro-batch. Each epoch shuffles the training list with a generator seeded by (job
seed, epoch), the same in every process, and cuts that order into ceil(N / batch_size) global
batches: all full but the last, which keeps the remaining N mod batch_size clips as a smaller
update (the rule for the short batch: every clip is trained on once per epoch; an update's
gradient is the mean over its own clips). So the number of updates, the clips of each update and
their order depend only on the list, the batch size, the seed and the epoch; never on the
micro-batch or the number of processes, and no update spans two epochs.

Each process loads a contiguous block of each global batch (sizes differ by at most one; with a
short last batch a process may get none) as one loader item, an `UpdateShare`, and the engine's
train step (`harness.engine.update`) splits it into micro-batches. A clip's random
augmentation comes from its own seed, derived from (job seed, epoch, position in the epoch's
order): the MMAction2 transforms run under numpy / random / torch generators seeded from it
(`SeededItems`), and the model's per-sample layers and the device augmentation draw from it
(`methods.sample_random`). So a clip's crop, flip, frame offsets, drop path and dropout do not
depend on the loader worker, the process or the micro-batch it lands in, and a resumed job draws
what an uninterrupted one draws without saving generator states.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mmengine.dataset import pseudo_collate

from methods.sample_random import mix, stream_key

#: Streams of the random numbers derived from the job seed (names, so they never collide).
SHUFFLE_STREAM = stream_key("shuffle")
SAMPLE_STREAM = stream_key("sample")
UPDATE_STREAM = stream_key("update")
PIPELINE_STREAM = stream_key("pipeline")


@dataclass(frozen=True)
class UpdateShare:
    """One process's part of one optimiser update: what the loader hands the train step."""

    epoch: int
    update: int  # index of the update within its epoch
    indices: tuple[int, ...]  # this process's clips (dataset indices), in global-batch order
    seeds: tuple[int, ...]  # their per-sample seeds
    batch_labels: tuple[int, ...]  # the labels of every clip of the global batch, in order
    update_seed: int  # for a draw shared by the whole update (methods.sample_random.update_generator)

    @property
    def global_size(self) -> int:
        """Clips in the whole update (all processes, all micro-batches)."""
        return len(self.batch_labels)


def updates_per_epoch(clips: int, batch_size: int) -> int:
    """ceil(clips / batch_size): the last, short global batch is a (smaller) update of its own."""
    return math.ceil(clips / batch_size)


def process_block(size: int, rank: int, world: int) -> slice:
    """The contiguous block of a `size`-clip global batch that process `rank` of `world` loads:
    the first `size % world` processes take one clip more (as `numpy.array_split`)."""
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def epoch_order(clips: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of the training list (PCG64 seeded by job seed and epoch)."""
    return np.random.Generator(np.random.PCG64(mix(SHUFFLE_STREAM, seed, epoch))).permutation(clips)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of the clip at `position` of the epoch's order: its augmentation, drop path and
    dropout derive from it (also in a resumed job)."""
    return mix(SAMPLE_STREAM, seed, epoch, position)


class GlobalBatchSampler:
    """Batch sampler of the training loader: yields this process's `UpdateShare` of each global
    batch of the epoch (`set_epoch` before iterating, as mmengine does with its samplers)."""

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size < 1 or not 0 <= rank < world:
            raise ValueError(f"batch_size={batch_size}, rank={rank}, world={world}")
        self.labels = [int(label) for label in labels]
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank, self.world = rank, world
        self.epoch = 0
        self.resume_point: tuple[int, int] | None = None  # (epoch, updates already done in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_within(self, epoch: int, done: int) -> None:
        """A job resumed from a checkpoint taken after update `done` of `epoch` (a preemption
        stop, harness/preemption.py): that epoch yields its remaining updates only. The order and
        the per-sample seeds are those of the whole epoch, so the resumed updates are the same."""
        if not 0 <= done <= self.updates_per_epoch:
            raise ValueError(f"resume point: update {done} of an epoch of {self.updates_per_epoch}")
        self.resume_point = (int(epoch), int(done))

    @property
    def updates_per_epoch(self) -> int:
        return updates_per_epoch(len(self.labels), self.batch_size)

    def _first_update(self) -> int:
        point = self.resume_point
        return point[1] if point is not None and point[0] == self.epoch else 0

    def __len__(self) -> int:
        """Updates this epoch still yields (all of them but in a resumed epoch)."""
        return self.updates_per_epoch - self._first_update()

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """The dataset indices of every global batch of `epoch`, in update order."""
        order = epoch_order(len(self.labels), self.seed, epoch)
        return [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def __iter__(self) -> Iterator[UpdateShare]:
        epoch, skip = self.epoch, self._first_update()
        for update, batch in enumerate(self.global_batches(epoch)):
            if update < skip:
                continue
            block = process_block(len(batch), self.rank, self.world)
            first = update * self.batch_size
            positions = range(first + block.start, first + block.stop)
            yield UpdateShare(epoch=epoch, update=update, indices=tuple(int(i) for i in batch[block]),
                              seeds=tuple(sample_seed(self.seed, epoch, p) for p in positions),
                              batch_labels=tuple(self.labels[int(i)] for i in batch),
                              update_seed=mix(UPDATE_STREAM, self.seed, epoch, update))


@contextmanager
def seeded_generators(seed: int) -> Iterator[None]:
    """numpy's, Python's and torch's global CPU generators seeded from `seed` inside, restored
    after (MMAction2's transforms draw from the global numpy / random generators)."""
    np_state, py_state, torch_state = np.random.get_state(), random.getstate(), torch.get_rng_state()
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    random.seed(seed)
    torch.default_generator.manual_seed(seed)  # the CPU one only (torch.manual_seed would reseed CUDA's)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


class SeededItems(torch.utils.data.Dataset):
    """The training dataset as the loader sees it: `__getitems__(share)` loads one
    `UpdateShare`'s clips, each transformed under generators seeded from its own seed."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    @property
    def metainfo(self) -> dict:
        return getattr(self.dataset, "metainfo", {})

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, share: UpdateShare) -> tuple[list[Any], UpdateShare]:
        items = []
        for index, seed in zip(share.indices, share.seeds):
            with seeded_generators(mix(PIPELINE_STREAM, seed)):
                items.append(self.dataset[index])
        return items, share


def collate_share(loaded: tuple[list[Any], UpdateShare]) -> dict[str, Any]:
    """`pseudo_collate` of the share's clips ({'inputs': [...], 'data_samples': [...]}) plus the
    share itself under 'update' (seeds, batch labels, global size) for the train step."""
    items, share = loaded
    batch = pseudo_collate(items) if items else {"inputs": [], "data_samples": []}
    batch["update"] = share
    return batch


def dataset_labels(dataset: Any) -> list[int]:
    """The label of every clip of an MMAction2 dataset, from its annotations (no decoding)."""
    return [int(dataset.get_data_info(i)["label"]) for i in range(len(dataset))]


def train_loader(dataset: Any, labels: Sequence[int], batch_size: int, seed: int, workers: int,
                 rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    """The training loader: one item per optimiser update (this process's share of it)."""
    sampler = GlobalBatchSampler(labels, batch_size, seed, rank, world)
    return torch.utils.data.DataLoader(SeededItems(dataset), batch_sampler=sampler, num_workers=workers,
                                       collate_fn=collate_share, persistent_workers=workers > 0)
