"""Random "released" checkpoints built from the official state-dict listings
(../shared/upstream/official-state-dicts/*.tsv), cut to the depth of a small test backbone."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from method_helpers import OFFICIAL_STATE_DICTS, official_rows

TSV = {"st_adapter": "st_adapter_12x384_k400.tsv", "aim": "aim_vitb16_8f_k400.tsv",
       "vitaclip": "vitaclip_k400_csc.tsv", "vificlip": "vificlip_full.tsv",
       "vificlip_prompt": "vificlip_prompt_b2n.tsv"}
BLOCK = re.compile(r"(?:resblocks|blocks)\.(\d+)\.")


def dtypes(path: Path) -> dict[str, str]:
    return {line.split("\t")[0]: line.split("\t")[2] for line in path.read_text().splitlines()
            if not line.startswith("#")}


def release_state(method: str, depth: int = 2, seed: int = 0, classes: int | None = None) -> dict[str, torch.Tensor]:
    """Random tensors with the official names, shapes and dtypes of blocks < `depth` (stacked
    per-layer tensors cut to `depth` rows; class rows cut to `classes`)."""
    path = OFFICIAL_STATE_DICTS / TSV[method]
    kinds = dtypes(path)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, _ in official_rows(path):
        match = BLOCK.search(key)
        if match and int(match.group(1)) >= depth:
            continue
        if key == "visual.global_prompts":
            shape = [depth, *shape[1:]]
        if classes is not None and key.startswith(("prompt_learner.token_", "prompt_learner.complete",
                                                   "fc.", "cls_head.")) or (classes and key == "prompt_learner.ctx"
                                                                             and len(shape) == 3):
            shape = [classes, *shape[1:]]
        state[key] = (0.02 * torch.randn(shape, generator=gen)).to(getattr(torch, kinds[key]))
    return state
