"""Checks of the class-token embeddings that text-prompting releases store as fixed buffers.

ViFi-CLIP (`complete_text_embeddings`), its prompting variant and Vita-CLIP (`token_prefix` /
`token_suffix`) keep the token embeddings of their *training* prompts, which are tied to the
class list and template they were trained with. This project re-derives them from class names at
run time (any class list can be scored), so a converter does not load them: it re-derives them
for the classes given and compares, which catches a wrong class list, class order, template or
base token embedding before any number is computed with it.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from harness.errors import HarnessError

#: Re-derived and released embeddings are copies of the same base rows: anything above rounding
#: noise is a different class, order, template or token embedding.
TOLERANCE = 1e-4


def compare_class_rows(derived: torch.Tensor, released: torch.Tensor, classnames: Sequence[str],
                       key: str, how: str) -> dict[str, Any]:
    """Row c of both tensors belongs to class c; raise naming the first class that differs."""
    if derived.shape != released.shape:
        raise HarnessError(f"{key} has shape {tuple(released.shape)}, re-deriving it {how} gives "
                           f"{tuple(derived.shape)}: the class count or prompt length differs")
    per_class = (derived.float() - released.float()).abs().flatten(1).amax(dim=1)
    bad = (per_class > TOLERANCE).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise HarnessError(
            f"{key} does not match the embeddings re-derived {how}: {len(bad)} of {len(classnames)} classes "
            f"differ, first class {i} ({classnames[i]!r}, max |diff| {float(per_class[i]):.3g}). Check the "
            "class list and its order (--classes), the prompt template and --base")
    worst = float(per_class.max()) if per_class.numel() else 0.0
    return {"key": key, "classes": len(classnames), "max_abs_diff": worst, "how": how}


def prompt_embeddings(model: Any, classnames: Sequence[str]) -> torch.Tensor:
    """Token embeddings (C, L, D) of the model's template prompts (ViFi-CLIP's fixed text input)."""
    with torch.no_grad():
        return model.clip.token_embedding(model.tokenize(model.class_prompts(classnames)))


def context_prefix_suffix(model: Any, classnames: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings before (start-of-text) and after (class name, '.', end, padding) the learned
    context of a CoOp-style prompt learner, as the official code stores them."""
    learner = model.prompt_learner
    with torch.no_grad():
        emb = model.clip.token_embedding(learner.tokens(model, classnames))
    return emb[:, :1], emb[:, 1 + learner.n_ctx:]


def unchecked(key: str) -> str:
    return (f"fixed class-token embeddings of the training prompts, re-derived from class names at run time; "
            f"not checked ({key}: pass --classes with the training classes to check them)")


def check_context_buffers(model: Any, classnames: Sequence[str], state: dict[str, torch.Tensor],
                          keys: tuple[str, str], how: str) -> dict[str, Any]:
    """Compare the release's (prefix, suffix) buffers `keys` with the re-derived ones."""
    mine = context_prefix_suffix(model, classnames)
    return {key: compare_class_rows(derived, state[key], classnames, key, how)
            for key, derived in zip(keys, mine) if key in state}
