"""What an optimiser update trains on, whatever runs it: the global batches of an epoch for any
process count, the rule for the short last batch, and per-sample randomness (CPU augmentation,
device augmentation, drop path, dropout) that does not follow the micro-batch.
The end-to-end check (weights at micro-batch 32 / 16 / 8 and on 2 processes) is in
tests/test_training_arithmetic.py."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from global_batch_probe import SyntheticClips
from torch.utils.checkpoint import checkpoint

from harness.engine.batches import GlobalBatchSampler, SeededItems, process_block, updates_per_epoch
from harness.engine.device_augment import DeviceAugment
from methods.layers import DropPath, SampleDropout
from methods.sample_random import name_random_layers, sample_seeds, update_generator

LABELS = [(7 * i) % 12 for i in range(102)]


def _shares(world: int, epoch: int, batch: int = 32) -> list[list]:
    """Per update, the shares of processes 0..world-1."""
    samplers = [GlobalBatchSampler(LABELS, batch, seed=5, rank=r, world=world) for r in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [list(shares) for shares in zip(*samplers)]


def test_102_clips_in_batches_of_32_are_four_updates_the_last_of_6():
    assert updates_per_epoch(102, 32) == 4 and updates_per_epoch(96, 32) == 3 and updates_per_epoch(5, 32) == 1
    (shares,) = zip(*_shares(1, epoch=0))
    assert [s.global_size for s in shares] == [32, 32, 32, 6]
    assert sorted(i for s in shares for i in s.indices) == list(range(102))  # each clip once per epoch
    assert all(s.batch_labels == tuple(LABELS[i] for i in s.indices) for s in shares)
    later = [s.indices for s in next(zip(*_shares(1, epoch=1)))]
    assert later != [s.indices for s in shares]  # reshuffled every epoch


@pytest.mark.parametrize("world", [2, 3, 8])
def test_the_global_batches_do_not_depend_on_the_process_count(world):
    one = [shares[0] for shares in _shares(1, epoch=2)]
    for alone, shares in zip(one, _shares(world, epoch=2), strict=True):
        assert sum((s.indices for s in shares), ()) == alone.indices  # contiguous blocks, in order
        assert sum((s.seeds for s in shares), ()) == alone.seeds
        assert all(s.batch_labels == alone.batch_labels and s.update_seed == alone.update_seed for s in shares)
        sizes = [len(s.indices) for s in shares]
        assert max(sizes) - min(sizes) <= 1
    # the 6-clip last batch on 8 processes: 6 processes get one clip, 2 get none
    assert [len(s.indices) for s in _shares(8, epoch=2)[-1]] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert [process_block(6, r, 4) for r in range(4)] == [slice(0, 2), slice(2, 4), slice(4, 5), slice(5, 6)]


def _load(dataset: SeededItems, share) -> list[torch.Tensor]:
    items, _ = dataset.__getitems__(share)
    return [item["inputs"] for item in items]


def test_cpu_augmentation_follows_the_clip_not_the_process_or_the_loader():
    """The synthetic dataset crops, flips and shifts brightness with the global numpy / random /
    torch generators, as MMAction2's transforms do: under `SeededItems` a clip's augmentation is
    the same whether one process or two load the update, and the global generators are left as
    they were."""
    data = SeededItems(SyntheticClips())
    alone = _shares(1, epoch=0)[0][0]
    halves = _shares(2, epoch=0)[0]
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    states = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
    whole = _load(data, alone)
    second = _load(data, halves[1])  # process 1 first: the generators' state is not what decides
    first = _load(data, halves[0])
    assert len(whole) == 32 and all(torch.equal(a, b) for a, b in zip(whole, first + second, strict=True))
    assert np.array_equal(np.random.get_state()[1], states[0]) and random.getstate() == states[1]
    assert torch.equal(torch.get_rng_state(), states[2])
    # the augmentation is random: the same clip in another epoch is cropped differently
    clip = alone.indices[0]
    again = next(s for s in _shares(1, epoch=1)[0:4] if clip in s[0].indices)[0]
    other = _load(data, again)[again.indices.index(clip)]
    assert not torch.equal(whole[0], other)


def _layer_output(layer: torch.nn.Module, x: torch.Tensor, seeds: list[int], parts: list[slice]) -> torch.Tensor:
    """`layer` on `x` in the given micro-batches, each under its samples' seeds, with torch's
    global generator in a different state for every part."""
    out = []
    for k, part in enumerate(parts):
        torch.manual_seed(100 + k)
        with sample_seeds(seeds[part]):
            out.append(layer(x[part]))
    return torch.cat(out)


@pytest.mark.parametrize("layer", [DropPath(0.5), SampleDropout(0.5)], ids=["drop_path", "dropout"])
def test_random_layers_draw_per_sample(layer):
    holder = torch.nn.Sequential(layer).train()
    name_random_layers(holder)
    x = torch.randn(6, 3, 4)
    seeds = [11, 12, 13, 14, 15, 16]
    whole = _layer_output(layer, x, seeds, [slice(0, 6)])
    assert torch.equal(whole, _layer_output(layer, x, seeds, [slice(0, 2), slice(2, 5), slice(5, 6)]))
    assert not torch.equal(whole, _layer_output(layer, x, [s + 100 for s in seeds], [slice(0, 6)]))
    assert torch.equal(whole[whole != 0], (2 * x)[whole != 0])  # survivors rescaled by 1 / (1 - 0.5)
    kept_per_row = (whole != 0).flatten(1).float().mean(dim=1)
    if isinstance(layer, DropPath):  # a whole sample keeps or drops the branch
        assert set(kept_per_row.tolist()) <= {0.0, 1.0}
    else:  # dropout draws per element
        assert ((kept_per_row > 0) & (kept_per_row < 1)).any()
    with sample_seeds(range(4000)):
        fraction = float((layer(torch.ones(4000, 1)) == 0).float().mean())
    assert fraction == pytest.approx(0.5, abs=0.03)
    with pytest.raises(RuntimeError, match="per-sample random draw over 6 rows"):
        with sample_seeds(seeds[:3]):
            layer(x)


def test_drop_path_sites_draw_independently_and_eval_is_identity():
    layer = DropPath(0.5)
    name_random_layers(torch.nn.Sequential(layer))
    ones = torch.ones(2000, 1)
    with sample_seeds(range(2000)):
        first, second = layer(ones, site=0), layer(ones, site=1)
    both = ((first == 0) & (second == 0)).float().mean()
    assert float(both) == pytest.approx(0.25, abs=0.03)  # independent: 0.5 x 0.5
    layer.eval()
    with sample_seeds(range(2000)):
        assert torch.equal(layer(ones), ones)


def test_random_layers_without_seeds_use_torch_s_generator():
    """Outside an engine training step (unit tests, FLOPs, bench): reproducible from torch's seed."""
    layer = SampleDropout(0.5)
    x = torch.randn(5, 8)
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(a, layer(x)) and (a == 0).any()
    assert update_generator(0) is None


def test_gradient_checkpointing_recomputes_the_same_drop_path():
    """Checkpointing reruns the forward during backward: the masks must be those of the forward
    (they are a function of sample seed, layer and site, not of a generator's position)."""
    layer = DropPath(0.5)
    linear = torch.nn.Linear(4, 4)
    name_random_layers(torch.nn.Sequential(layer))
    x = torch.randn(8, 4)

    def grads(use_checkpoint: bool) -> torch.Tensor:
        linear.zero_grad()
        with sample_seeds(range(8)):
            def f(inp):
                return layer(linear(inp))
            out = checkpoint(f, x, use_reentrant=False) if use_checkpoint else f(x)
            torch.manual_seed(99)  # the global generator moves on between forward and recompute
            torch.rand(10)
            out.pow(2).sum().backward()
        return linear.weight.grad.clone()

    assert torch.equal(grads(True), grads(False))


def test_device_augmentation_follows_the_clip():
    """`data.augment_on=device`: a clip's crop and flip under its seed, whatever the micro-batch."""
    aug = DeviceAugment(16, flip=True)
    batch = torch.randint(0, 256, (4, 1, 3, 2, 24, 24), dtype=torch.uint8)
    seeds = [21, 22, 23, 24]
    with sample_seeds(seeds):
        whole = aug(batch)
    parts = []
    for part in (slice(0, 1), slice(1, 4)):
        torch.manual_seed(part.start)
        with sample_seeds(seeds[part]):
            parts.append(aug(batch[part]))
    assert torch.equal(whole, torch.cat(parts))
    with sample_seeds([s + 1 for s in seeds]):
        assert not torch.equal(whole, aug(batch))
