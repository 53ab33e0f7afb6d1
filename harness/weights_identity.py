"""Identity of a job's backbone weights, known before any weights are loaded (for job ids and
`--dry-run`).

Why not the tag or path alone: new weights at the same path, or a re-released tag, must make a
new job, not be "finished earlier, skipped". So a local file is identified by its content sha256
(cached by path, size and mtime, so a 600 MB checkpoint is hashed once), `synthetic` by its
pretraining recipe hash (its weights are bit-identical by design: no pretraining needed), an
open_clip tag by the cached download's sha256 when present, else the checksum in its pretrained
URL, else by name + tag.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write_json

_SHA_CACHE_NAME = "sha256-cache.json"
_memory: dict[str, str] = {}


def _cache_file(cache_dir: str | os.PathLike | None) -> Path:
    from harness.paths import cache_root

    return cache_root(cache_dir) / _SHA_CACHE_NAME


def cached_file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """sha256 of `path`, remembered (in memory and in `<cache>/sha256-cache.json`) under its
    absolute path, size and mtime: a file replaced in place gets a new key, so is re-hashed."""
    from harness.data.upstream import file_sha256

    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    key = f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _memory:
        return _memory[key]
    store = _cache_file(cache_dir)
    try:
        known = json.loads(store.read_text()) if store.is_file() else {}
    except (OSError, ValueError):  # a damaged cache is only a cache
        known = {}
    if key not in known:
        known[key] = file_sha256(resolved)
        try:
            atomic_write_json(store, known)
        except OSError:
            pass
    _memory[key] = known[key]
    return known[key]


def weights_identity(backbone: str, pretrained: str | None, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What identifies the weights a job starts from (hashed into its job id)."""
    from harness.weights import SYNTHETIC_TAG, synthetic_source

    if pretrained is None:
        return {"kind": "random"}
    if pretrained == SYNTHETIC_TAG:
        from harness.pretrain.recipe import PretrainRecipe, recipe_hash

        return {"kind": "synthetic", "recipe_hash": recipe_hash(PretrainRecipe(model=synthetic_source(backbone)))}
    local = Path(pretrained).expanduser()
    if local.is_file():
        return {"kind": "file", "sha256": cached_file_sha256(local, cache_dir)}
    return {"kind": "open_clip", **_open_clip_tag_identity(backbone, pretrained, cache_dir)}


def _open_clip_tag_identity(backbone: str, tag: str, cache_dir: str | os.PathLike | None) -> dict[str, Any]:
    from harness.backbone import resolve_model_name

    resolved, _ = resolve_model_name(backbone, tag)
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(resolved, tag) or {}
    except Exception:  # an unknown name/tag is reported when the backbone is built
        cfg = {}
    cached = _cached_download(cfg)
    if cached is not None:
        return {"sha256": cached_file_sha256(cached, cache_dir)}
    match = re.search(r"/([0-9a-f]{64})/", cfg.get("url") or "")
    if match:
        return {"sha256": match.group(1), "from": "url"}
    return {"name": resolved, "tag": tag}


def _cached_download(cfg: dict[str, Any]) -> Path | None:
    """The local file open_clip would load for this pretrained config, if already downloaded."""
    hub = (cfg.get("hf_hub") or "").rstrip("/")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                found = try_to_load_from_cache(hub, filename)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
        except Exception:
            pass
    url = cfg.get("url") or ""
    if url:
        candidate = Path.home() / ".cache" / "clip" / os.path.basename(url)
        if candidate.is_file():
            return candidate
    return None
