"""Per-sample random numbers for training forward passes: a sample's drop-path and dropout
masks (and its device-side crop and flip) depend on the sample, never on how its batch is split.

Why: a mask drawn from torch's global generator depends on how many clips share the forward
pass, which pass of an update the clip is in and which process runs it, so the micro-batch or
the number of processes would change what a job computes. The engine (`harness.engine.batches`)
gives every sample of a global batch a seed derived from (job seed, epoch, position in the
epoch's order) and sets, around each micro-batch's forward and backward, the seeds of the samples
in it (`sample_seeds`). A random layer then draws sample i's numbers from a generator seeded by
(sample i's seed, the layer's stream, the call site): a pure function of those, so the draws
are the same whatever the split and also when gradient checkpointing recomputes the forward.

A random layer (`SampleRandomLayer` subclass) gets its stream from its qualified module name
(`name_random_layers`, called by the engine on the trained model), so the streams are the same
in every process and every run. A layer called twice in one forward passes a distinct `site`
to each call (AIM's temporal and MLP-adapter drop paths share one module); a layer run twice on
the same samples with the same site draws the same mask both times (by design: the draw is a
function of sample, layer and site).

Randomness that is one draw per batch rather than per sample (e.g. one expert or temperature
for the whole forward pass) takes the update's seed (`update_generator`): the same for every
micro-batch and process of one optimiser update, so the draw is per update whatever the split.

Outside an engine training step (unit tests, the FLOP counter, `harness bench`) no seeds are set
and the layers draw from torch's global generator, as torch's own layers do.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_MASK64 = (1 << 64) - 1
_SEEDS: ContextVar[tuple[int, ...] | None] = ContextVar("harness_sample_seeds", default=None)
_UPDATE_SEED: ContextVar[int | None] = ContextVar("harness_update_seed", default=None)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*words: int) -> int:
    """A 63-bit seed from integers (SplitMix64 over the words): stable across processes, runs
    and platforms (Python's `hash` is salted per process), and well spread for nearby inputs."""
    h = 0
    for word in words:
        h = _splitmix64(h ^ (int(word) & _MASK64))
    return h >> 1


def stream_key(name: str) -> int:
    """A random stream's number from its name (a module path, or a purpose like 'pipeline')."""
    return zlib.crc32(name.encode())


@contextmanager
def sample_seeds(seeds: Sequence[int], update_seed: int | None = None) -> Iterator[None]:
    """The per-sample seeds of the clips in the forward pass run inside (dim 0, in order), and
    the seed of the optimiser update they belong to."""
    token = _SEEDS.set(tuple(int(s) for s in seeds))
    update_token = _UPDATE_SEED.set(None if update_seed is None else int(update_seed))
    try:
        yield
    finally:
        _UPDATE_SEED.reset(update_token)
        _SEEDS.reset(token)


def current_sample_seeds() -> tuple[int, ...] | None:
    """The seeds set by the innermost `sample_seeds`, or None outside an engine training step."""
    return _SEEDS.get()


def sample_generators(n: int, stream: int, site: int = 0) -> list[torch.Generator] | None:
    """One CPU generator per sample of the current forward pass, seeded by (sample seed, stream,
    site); None when no seeds are set. `n` is the sample dim of the tensor being randomised."""
    seeds = _SEEDS.get()
    if seeds is None:
        return None
    if n != len(seeds):
        raise RuntimeError(f"a per-sample random draw over {n} rows, but the forward pass holds {len(seeds)} samples: "
                           "the random layer must see the samples in dim 0 (view (B*T, ...) frame tokens as "
                           "(B, T, ...) first)")
    return [torch.Generator().manual_seed(mix(seed, stream, site)) for seed in seeds]


def update_generator(stream: int, site: int = 0) -> torch.Generator | None:
    """A CPU generator seeded by (update seed, stream, site): for one draw shared by every clip
    of an optimiser update; None outside an engine training step (use the global generator)."""
    seed = _UPDATE_SEED.get()
    return None if seed is None else torch.Generator().manual_seed(mix(seed, stream, site))


def per_sample_uniform(n: int, shape: Sequence[int], stream: int, site: int = 0,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """(n, *shape) float32 uniforms in [0, 1): row i from sample i's own generator (see the
    module doc), or from torch's global generator outside an engine training step."""
    generators = sample_generators(n, stream, site)
    if generators is None:
        return torch.rand((n, *shape), device=device)
    if not generators:
        return torch.empty((0, *shape), device=device)
    draws = torch.stack([torch.rand(tuple(shape), generator=g) for g in generators])
    if torch.device(device or "cpu").type == "cuda":  # pinned + non-blocking: no host-device sync per layer
        return draws.pin_memory().to(device, non_blocking=True)
    return draws.to(device)


class SampleRandomLayer(nn.Module):
    """A layer whose training-time randomness is drawn per sample (`per_sample_uniform`); its
    `stream` is set from its module path by `name_random_layers`."""

    stream: int | None = None

    def stream_or_fail(self) -> int:
        if self.stream is None:
            if _SEEDS.get() is None:
                return 0  # global-generator fallback: the stream is not used
            raise RuntimeError(f"{type(self).__name__} has no random stream: call "
                               "methods.sample_random.name_random_layers(model) after building the model")
        return self.stream


def name_random_layers(model: nn.Module) -> int:
    """Give every `SampleRandomLayer` in `model` the stream of its qualified name; returns how
    many there are. Idempotent; call once the model is built (the engine does)."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, SampleRandomLayer):
            module.stream = stream_key(name)
            count += 1
    return count
