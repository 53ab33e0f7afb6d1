"""The conversion pipeline every method's converter runs, and the class lists it needs.

A converter (one small module per official code base) says only what differs between code
bases: how to choose the build options from the release (`prepare`), where each parameter comes
from (`source`), why a leftover key may be dropped (`ignore`), and which fixed buffers of the
release it re-derives and checks (`check_derived`). `Converter.convert` does the rest in the same
order for all: read and unwrap the release, build the target model on the base backbone, account
for every key, load, verify the frozen weights against the base, and describe it all.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness.convert.mapping import Mapped, Source, largest_difference, map_release
from harness.convert.release import Release, read_release
from harness.errors import HarnessError

#: `meta.format` of the files `harness convert` writes (and `load_checkpoint` accepts).
CONVERTED_FORMAT = "harness-converted/1"
K400_CLASSES = "vifi-clip/labels/kinetics_400_labels.csv"
DEFAULT_BACKBONE = "ViT-B-16"


@dataclass
class ConvertRequest:
    """What `harness convert` was asked (CLI flags, as data)."""

    checkpoint: str
    backbone: str = DEFAULT_BACKBONE
    base: str | None = None  # open_clip tag or local file of the backbone the release was trained from
    frames: int | None = None  # None: the release's own T
    options: dict[str, Any] = field(default_factory=dict)  # method options (--set <method>.k=v)
    classes: list[str] | None = None
    splits_root: str | None = None  # where the K400 class file is found offline
    cache_dir: str | None = None


@dataclass
class BuildPlan:
    """How to build the target model for one release."""

    options: dict[str, Any]
    frames: int
    classnames: list[str] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Conversion:
    """What a conversion produced: the checkpoint to save and the report to show."""

    model: Any
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def report(self) -> dict[str, Any]:
        return self.meta["conversion"]


def parse_classes(text: str) -> list[str]:
    """`--classes`: an `id,name` CSV file, or comma-separated class names."""
    from harness.data.annotations import read_class_csv

    if text.endswith(".csv") or Path(text).is_file():
        return read_class_csv(text)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise HarnessError("--classes: give comma-separated class names or an id,name CSV file")
    if len(set(names)) != len(names):
        raise HarnessError(f"--classes: class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def k400_classes(splits_root: str | None, cache_dir: str | None) -> list[str]:
    """The Kinetics-400 class list (ViFi-CLIP's label file, alphabetical like mmaction's label
    map that the ST-Adapter and AIM releases were trained with)."""
    from harness.data.annotations import read_class_csv
    from harness.data.upstream import UpstreamStore

    store = UpstreamStore(cache_dir=Path(cache_dir) / "upstream" if cache_dir else None,
                          splits_root=splits_root)
    return read_class_csv(store.path(K400_CLASSES))


def closed_set_classes(rows: int, request: ConvertRequest, what: str) -> tuple[list[str], str]:
    """Class names for a release's `rows`-way head, checked against the K400 class file.

    The release holds no names, only rows: row i means class i of the list it was trained with.
    A 400-row head is taken to be K400 in the official (alphabetical) order; `--classes` that name
    the K400 classes in another order are refused, since every logit would get the wrong name."""
    given = request.classes
    if given is not None and len(given) != rows:
        raise HarnessError(f"{what} has {rows} rows but --classes names {len(given)} classes")
    if rows != 400:
        if given is None:
            raise HarnessError(f"{what} has {rows} rows (not the 400 of Kinetics-400): name its classes in "
                               "training order with --classes FILE.csv|'a,b,...'")
        return given, "classes from --classes (not a 400-way head: order not checkable)"
    k400 = k400_classes(request.splits_root, request.cache_dir)
    if given is None:
        return k400, f"Kinetics-400 class order from {K400_CLASSES}"
    if given == k400:
        return given, f"--classes equal the Kinetics-400 class order of {K400_CLASSES}"
    if set(given) == set(k400):
        i = next(i for i, (a, b) in enumerate(zip(given, k400)) if a != b)
        raise HarnessError(f"--classes name the Kinetics-400 classes in another order than the official one "
                           f"({K400_CLASSES}): row {i} is {given[i]!r} here, {k400[i]!r} there; the release's "
                           "row i is class i of the official order")
    return given, "classes from --classes (not the Kinetics-400 names: order not checkable)"


class Converter(ABC):
    """One official code base's checkpoint layout. Subclasses fill in the hooks."""

    #: --from name; also the target method unless `method` differs.
    name: ClassVar[str]
    method: ClassVar[str]
    #: Whether the release lacks weights only a base backbone can provide (ViFi-CLIP's token embedding).
    needs_base: ClassVar[bool] = False
    #: Official code base, for the report.
    upstream: ClassVar[str] = ""
    #: A key every release of this code base has: finding it as `<prefix><anchor>` reveals a
    #: wrapper prefix (`backbone.`, `model.` ...) to strip.
    anchor: ClassVar[str]
    #: Top-level entries holding one state dict each, for a code base that saves several (keys
    #: then read `<part>.<key>`); empty: one state dict (`read_release`).
    parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, request: ConvertRequest) -> None:
        self.request = request
        self.release: Release | None = None

    # -- hooks -----------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, release: Release) -> BuildPlan:
        """The options, frames and classes the target model is built with, read from the release."""

    @abstractmethod
    def source(self, name: str) -> Source | None:
        """Where the target parameter `name` comes from in the release (None: from the base)."""

    def ignore(self, key: str, value: torch.Tensor) -> str | None:
        return None

    def adapt(self, name: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
        """A value for `name` from a release tensor of another shape, or None (a plain mismatch)."""
        return None

    def check_derived(self, model: Any, plan: BuildPlan) -> dict[str, Any]:
        """Fixed buffers of the release that are re-derived here (class-token embeddings):
        compare, report, raise on a mismatch."""
        return {}

    def base_needed(self, plan: BuildPlan) -> bool:
        return self.needs_base

    # -- pipeline --------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        assert self.release is not None
        return self.release.state

    def convert(self) -> Conversion:
        from harness.backbone import get_tokenizer
        from harness.weights import create_backbone
        from methods.registry import build_method

        req = self.request
        self.release = release = read_release(req.checkpoint, self.parts)
        self._strip_to_anchor(release)
        plan = self.prepare(release)
        if self.base_needed(plan) and not req.base:
            raise HarnessError(f"--from {self.name}: this conversion needs the base CLIP the release was trained "
                               "from (weights the checkpoint does not hold): pass --base TAG|PATH, e.g. --base openai")
        clip, spec = create_backbone(req.backbone, req.base, seed=0, cache_dir=req.cache_dir)
        base_state = {f"clip.{k}": v.detach().clone() for k, v in clip.state_dict().items()} if req.base else {}
        model = build_method(self.method, clip, get_tokenizer(spec), plan.frames, plan.options, plan.classnames)
        model.eval()
        params = dict(model.named_parameters())
        mapped = map_release(params, release.state, self.source, self.ignore,
                             f"{req.checkpoint} (--from {self.name})", self.adapt)
        self._load(model, params, mapped)
        derived = self.check_derived(model, plan)
        frozen = {n for n, p in params.items() if not p.requires_grad}
        report = {
            "from": self.name, "upstream": self.upstream, "method": self.method,
            "release": release.describe(),
            "filled_from_release": len(mapped.values), "filled_from_base": len(mapped.from_base),
            "ignored": mapped.ignored, "derived": derived, "notes": plan.notes + mapped.notes,
            "frozen_vs_base": largest_difference(mapped, base_state, frozen) if req.base else None,
        }
        meta = {"format": CONVERTED_FORMAT, "method": self.method, "method_options": model.config.to_dict(),
                "frames": plan.frames, "classnames": plan.classnames, "backbone": spec.to_dict(),
                "from_base": mapped.from_base, "conversion": report}
        return Conversion(model=model, state=dict(mapped.values), meta=meta)

    def _strip_to_anchor(self, release: Release) -> None:
        """Remove a prefix that a wrapper module added in front of the official names."""
        state = release.state
        if self.anchor in state:
            return
        found = [k for k in state if k.endswith("." + self.anchor)]
        if not found:
            raise HarnessError(f"{release.path}: no {self.anchor!r} (or '<prefix>.{self.anchor}') among its "
                               f"{len(state)} keys, so it is not a {self.name} checkpoint; is --from right? "
                               f"(first keys: {names_between(sorted(state))})")
        prefix = found[0][: -len(self.anchor)]
        release.state = {k.removeprefix(prefix): v for k, v in state.items()}
        release.stripped.append(prefix)

    @staticmethod
    def _load(model: Any, params: dict[str, torch.nn.Parameter], mapped: Mapped) -> None:
        with torch.no_grad():
            for name, value in mapped.values.items():
                params[name].copy_(value.to(params[name].dtype))


def require_rows(state: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    """A key the converter must read before building the model (to size it)."""
    if key not in state:
        raise HarnessError(f"{what}: the checkpoint has no {key!r}; is --from right? "
                           f"(first keys: {', '.join(sorted(state)[:5])})")
    return state[key]


def stacked_index(name: str, prefix: str) -> int | None:
    """`prefix.<i>.rest` -> i (block index in a parameter name), else None."""
    if not name.startswith(prefix):
        return None
    head = name[len(prefix):].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def names_between(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")
