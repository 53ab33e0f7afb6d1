"""Where the harness keeps what it downloads or generates: one rule for every cache.

`$HARNESS_CACHE` if set, else `~/.cache/harness`; an explicit `--cache` folder wins over both.
Each kind of file has its subfolder (`embedded`, `backbones`, `upstream`, `llm`, `sampled`).
"""
from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the cache root.
CACHE_ENV = "HARNESS_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` if given (not empty), else `$HARNESS_CACHE`, else `~/.cache/harness`."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "harness"
