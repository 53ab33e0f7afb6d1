"""The pretrained weights file: made once, found again.

Reuse: `ensure_pretrained_tiny` caches the state dict at
`$HARNESS_CACHE/backbones/<model>-synthetic-<hash12>.pt` (`~/.cache/harness/backbones/` by default),
keyed by `recipe_hash` (the recipe, PRETRAIN_VERSION and the embedded GENERATOR_VERSION, since the
drawing helpers come from there), with a `.json` sidecar (recipe, timing, losses). It is written to
a temp file and renamed into place, under a file lock: concurrent first runs train once, and a
killed run leaves nothing that looks finished. Bump PRETRAIN_VERSION whenever a change here
changes the trained weights.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.paths import CACHE_ENV, cache_root
from harness.pretrain.recipe import PretrainRecipe, recipe_hash
from harness.pretrain.train import pretrain_clip

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$HARNESS_CACHE/backbones`, else `~/.cache/harness/backbones`."""
    return cache_root() / "backbones"


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock on `path` (POSIX flock; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename alone keeps it safe
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrained_path(recipe: PretrainRecipe | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `ensure_pretrained_tiny` keeps the weights of `recipe` (whether or not they exist yet)."""
    recipe = recipe or PretrainRecipe()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / f"{recipe.model}-synthetic-{recipe_hash(recipe)[:12]}.pt"


def ensure_pretrained_tiny(cache_dir: str | os.PathLike | None = None, recipe: PretrainRecipe | None = None,
                           progress: Callable[[int, int, float], None] | None = None) -> Path:
    """The path of the pretrained weights of `recipe` (default: harness-tiny) in `cache_dir`
    (default: `default_cache_dir()`), training and saving them first if they are not there."""
    recipe = recipe or PretrainRecipe()
    recipe.validate()
    path = pretrained_path(recipe, cache_dir)
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_name(path.name + ".lock")):
            for stale in path.parent.glob(f".{path.name}*.tmp"):  # a killed run's (we hold the lock)
                stale.unlink(missing_ok=True)
            if not path.is_file():  # another process may have finished it while we waited
                log.info("pretraining %s on synthetic frames (once, about half a minute) -> %s",
                         recipe.model, path)
                pretrain_clip(recipe, path, progress)
    except OSError as exc:
        raise HarnessError(f"cannot write the pretrained backbone cache {path.parent}: {exc}. Set "
                           f"{CACHE_ENV} to a writable folder.") from exc
    return path
