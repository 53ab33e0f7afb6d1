"""Key accounting shared by all converters: every parameter of the target model is filled from
named keys of the release (or explicitly from the base backbone), every key of the release is
consumed or ignored with a reason, and anything else is one error listing the unmatched keys in
both directions.

Why a module of its own: the per-method converters only state *where* each parameter comes from
(a `Source`: one official key, or several combined, e.g. Vita-CLIP's split q/k/v -> `in_proj`)
and *why* a leftover key may be dropped; the bookkeeping that guarantees nothing is silently
lost or left at its random init is written once, here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.errors import HarnessError


def _first(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return tensors[0]


@dataclass(frozen=True)
class Source:
    """Where one target parameter comes from: official `keys`, combined by `combine`."""

    keys: tuple[str, ...]
    combine: Callable[[Sequence[torch.Tensor]], torch.Tensor] = _first
    note: str = ""

    @classmethod
    def key(cls, key: str, note: str = "") -> Source:
        return cls((key,), _first, note)


def concat(*keys: str, note: str = "") -> Source:
    """Parameters stored split in the release and fused here (q/k/v -> in_proj)."""
    return Source(tuple(keys), lambda ts: torch.cat(list(ts), dim=0), note)


def row(key: str, index: int, note: str = "") -> Source:
    """One slice of a stacked release tensor (Vita-CLIP's (layers, n, D) global prompts)."""
    return Source((key,), lambda ts: ts[0][index], note)


#: A source rule: target parameter name -> Source, or None when the base backbone fills it.
SourceRule = Callable[[str], "Source | None"]
#: An ignore rule: (official key, tensor) -> reason to drop it, or None (then it is unexplained).
IgnoreRule = Callable[[str, torch.Tensor], "str | None"]


@dataclass
class Mapped:
    """Result of mapping a release onto a model's parameter names."""

    values: dict[str, torch.Tensor]  # target name -> tensor (release dtype)
    sources: dict[str, tuple[str, ...]]  # target name -> official keys it came from
    from_base: list[str]  # target names the base backbone fills
    ignored: dict[str, str]  # official key -> reason
    notes: list[str] = field(default_factory=list)


def _clip_list(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def map_release(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source_of: SourceRule,
                ignore: IgnoreRule, what: str,
                adapt: Callable[[str, torch.Tensor, torch.Size], torch.Tensor | None] | None = None) -> Mapped:
    """Fill `params` (target name -> current tensor, for names and shapes) from `state`.

    `adapt(name, value, target_shape)` may reshape a value whose shape differs for a documented
    reason (AIM's temporal embedding for another T), raise a HarnessError explaining why it may
    not, or return None (an ordinary shape mismatch).
    Raises one HarnessError listing: target parameters whose official keys are absent, release
    keys neither consumed nor ignored, and shape mismatches (each with both shapes).
    """
    values: dict[str, torch.Tensor] = {}
    sources: dict[str, tuple[str, ...]] = {}
    from_base: list[str] = []
    missing: list[str] = []
    wrong_shape: list[str] = []
    consumed: set[str] = set()
    for name, current in params.items():
        src = source_of(name)
        if src is None:
            from_base.append(name)
            continue
        absent = [k for k in src.keys if k not in state]
        if absent:
            missing.extend(f"{k} (for {name})" for k in absent)
            continue
        consumed.update(src.keys)
        try:
            value = src.combine([state[k] for k in src.keys])
        except (RuntimeError, IndexError):
            parts = " + ".join(f"{k} {tuple(state[k].shape)}" for k in src.keys)
            wrong_shape.append(f"{parts} do not combine into {name} {tuple(current.shape)} (shapes differ)")
            continue
        if value.shape != current.shape:
            adapted = adapt(name, value, current.shape) if adapt is not None else None
            if adapted is None:
                wrong_shape.append(f"{'+'.join(src.keys)} has shape {tuple(value.shape)}, {name} needs {tuple(current.shape)}")
                continue
            value = adapted
        values[name] = value
        sources[name] = src.keys
    ignored: dict[str, str] = {}
    unexpected: list[str] = []
    for key in state:
        if key in consumed:
            continue
        reason = ignore(key, state[key])
        if reason is None:
            unexpected.append(f"{key} {tuple(state[key].shape)}")
        else:
            ignored[key] = reason
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) this model needs are not in the checkpoint: {_clip_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) of the checkpoint match nothing in the model: {_clip_list(unexpected)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): {_clip_list(wrong_shape)}")
    if problems:
        raise HarnessError(f"{what}: " + "; ".join(problems) + ". Check --from, the method options (--set) "
                           "and --frames against how the checkpoint was trained.")
    return Mapped(values=values, sources=sources, from_base=from_base, ignored=ignored)


#: Frozen weights equal "up to fp16 rounding" when |release - base| <= FP16_RELATIVE * |base| +
#: FP16_ABSOLUTE elementwise: one fp16 ulp relative (2^-10, twice the rounding error, so values
#: rounded on either side of a tie pass), and fp16's smallest subnormal below that.
FP16_RELATIVE, FP16_ABSOLUTE = 2.0 ** -10, 2.0 ** -24


def largest_difference(mapped: Mapped, base_state: dict[str, torch.Tensor], frozen: set[str]
                       ) -> dict[str, Any] | None:
    """Largest |release - base| over the frozen parameters both hold, comparing at the release's
    precision (a release stored in fp16 is compared with the base rounded to fp16), and whether
    any differs beyond fp16 rounding (`beyond_fp16`; `mismatch`: the parameter with the largest
    such difference, its key and how many of its elements differ)."""
    worst: dict[str, Any] | None = None
    mismatch: dict[str, Any] | None = None
    compared = mismatched = 0
    for name, value in mapped.values.items():
        base = base_state.get(name)
        if name not in frozen or base is None or base.shape != value.shape:
            continue
        compared += 1
        if not value.numel():
            continue
        release, reference = value.float(), base.to(value.dtype).float()
        diff = (release - reference).abs()
        largest = float(diff.max())
        where = {"max_abs_diff": largest, "parameter": name, "official_key": "+".join(mapped.sources[name])}
        if worst is None or largest > worst["max_abs_diff"]:
            worst = dict(where)
        beyond = diff > FP16_RELATIVE * reference.abs() + FP16_ABSOLUTE
        if beyond.any():
            mismatched += 1
            if mismatch is None or largest > mismatch["max_abs_diff"]:
                mismatch = {**where, "elements": int(beyond.sum())}
    if worst is None:
        return None
    return {**worst, "compared_parameters": compared, "beyond_fp16": mismatch is not None,
            "mismatched_parameters": mismatched, "mismatch": mismatch}
