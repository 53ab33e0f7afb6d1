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
from collections.abc import Callable, Sequence
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
    #: The MLP activation of the release's CLIP: all five official code bases run OpenAI CLIP,
    #: trained with QuickGELU; "gelu" builds exact GELU (named in the report).
    activation: str = "quickgelu"
    #: Convert although frozen weights of the release differ from --base beyond fp16 rounding.
    allow_base_mismatch: bool = False


@dataclass
class BuildPlan:
    """How to build the target model for one release."""

    options: dict[str, Any]
    frames: int
    classnames: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    #: Options the release does not record and official configs disagree on:
    #: option -> {"value": used, "alternatives": {value: where upstream uses it}, "how": to choose}.
    assumed: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What was taken from the release's training configuration: setting -> value.
    from_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversion:
    """What a conversion produced: the checkpoint to save and the report to show."""

    model: Any
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def report(self) -> dict[str, Any]:
        return self.meta["conversion"]


def _is_file(text: str) -> bool:
    """Whether `text` names an existing file (False for text no path can be: too long, NUL ...)."""
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):
        return False


def parse_classes(text: str) -> list[str]:
    """`--classes`: a value naming an existing file is a class file (`id,name` CSV); one ending in
    `.csv` / `.txt` that names no file is an error; anything else is comma-separated class
    names, however long."""
    from harness.data.annotations import read_class_csv

    if _is_file(text):
        path = Path(text).expanduser()
        if path.suffix.lower() != ".txt":
            return read_class_csv(str(path))
        names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
        where = f"--classes {text}"  # one name per line (e.g. Vita-CLIP's classes/k400_classes.txt)
    elif text.strip().lower().endswith((".csv", ".txt")):
        raise HarnessError(f"--classes {text}: no such class file")
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        where = "--classes"
    if not names:
        raise HarnessError(f"{where}: no class names; give comma-separated names, an id,name CSV file or a "
                           ".txt file with one name per line")
    if len(set(names)) != len(names):
        raise HarnessError(f"{where}: class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
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
    #: wrapper prefix (`backbone.`, `model.` ...) to strip. `other_anchors`: keys tried next (a
    #: release holding only its trained tensors lacks the frozen `anchor`).
    anchor: ClassVar[str]
    other_anchors: ClassVar[tuple[str, ...]] = ()
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

    def base_reason(self, plan: BuildPlan) -> str:
        """Why this release needs `--base` (the start of the error when it is missing)."""
        return "this conversion needs the base CLIP the release was trained from (weights the checkpoint does not hold)"

    def base_precision(self, name: str) -> torch.dtype | None:
        """The precision at which the official model holds parameter `name` when it comes from the
        base (ST-Adapter halves its frozen CLIP), or None: as the base has it."""
        return None

    # -- pipeline --------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        assert self.release is not None
        return self.release.state

    def convert(self) -> Conversion:
        from harness.backbone import get_tokenizer, with_activation
        from harness.weights import create_backbone
        from methods.registry import build_method

        req = self.request
        self.release = release = read_release(req.checkpoint, self.parts)
        self._strip_to_anchor(release)
        plan = self.prepare(release)
        if self.base_needed(plan) and not req.base:
            raise HarnessError(f"--from {self.name}: {self.base_reason(plan)}: pass --base TAG|PATH, e.g. --base openai")
        backbone = with_activation(req.backbone, req.activation)
        clip, spec = create_backbone(backbone, req.base, seed=0, cache_dir=req.cache_dir)
        if spec.quick_gelu != (req.activation == "quickgelu"):
            raise HarnessError(f"--activation {req.activation}: --base {req.base} resolves the backbone to "
                               f"{spec.resolved_name}, which runs {'QuickGELU' if spec.quick_gelu else 'exact GELU'}")
        base_state = {f"clip.{k}": v.detach().clone() for k, v in clip.state_dict().items()} if req.base else {}
        model = build_method(self.method, clip, get_tokenizer(spec), plan.frames, plan.options, plan.classnames)
        model.eval()
        params = dict(model.named_parameters())
        mapped = map_release(params, release.state, self.source, self.ignore,
                             f"{req.checkpoint} (--from {self.name})", self.adapt)
        self._load(model, params, mapped)
        rounded = round_from_base(params, mapped.from_base, self.base_precision)
        derived = self.check_derived(model, plan)
        frozen = {n for n, p in params.items() if not p.requires_grad}
        vs_base = largest_difference(mapped, base_state, frozen) if req.base else None
        if vs_base and vs_base["beyond_fp16"] and not req.allow_base_mismatch:
            worst = vs_base["mismatch"]
            raise HarnessError(
                f"{req.checkpoint}: its frozen weights differ from --base {req.base} beyond fp16 rounding: largest "
                f"|diff| {worst['max_abs_diff']:.3g} at {worst['official_key']} ({worst['elements']} element(s) of it "
                f"differ; {vs_base['mismatched_parameters']} of {vs_base['compared_parameters']} frozen parameters): "
                "the release was trained from other CLIP weights; pass those as --base, or --allow-base-mismatch "
                "to convert anyway (the release's own frozen weights are used, --base fills the rest)")
        frozen_in_release = sorted(frozen & set(mapped.values))
        report = {
            "from": self.name, "upstream": self.upstream, "method": self.method,
            "release": release.describe(),
            "filled_from_release": len(mapped.values), "filled_from_base": len(mapped.from_base),
            "ignored": mapped.ignored, "derived": derived, "notes": plan.notes + mapped.notes,
            "activation": activation_record(spec.resolved_name, req.activation),
            "assumed": plan.assumed, "from_config": plan.from_config,
            "frozen_in_release": len(frozen_in_release), "frozen_vs_base": vs_base,
            "base_mismatch_allowed": bool(vs_base and vs_base["beyond_fp16"]),
            "from_base_rounded": {str(dtype).removeprefix("torch."): len(names) for dtype, names in rounded.items()},
        }
        meta = {"format": CONVERTED_FORMAT, "method": self.method, "method_options": model.config.to_dict(),
                "frames": plan.frames, "classnames": plan.classnames, "backbone": spec.to_dict(),
                "from_base": mapped.from_base, "conversion": report,
                "from_base_precision": {str(dtype).removeprefix("torch."): names for dtype, names in rounded.items()}}
        return Conversion(model=model, state=dict(mapped.values), meta=meta)

    def _strip_to_anchor(self, release: Release) -> None:
        """Remove a prefix that a wrapper module added in front of the official names."""
        state = release.state
        anchors = (self.anchor, *self.other_anchors)
        if any(a in state for a in anchors):
            return
        found = next(([k for k in state if k.endswith("." + a)] for a in anchors
                      if any(k.endswith("." + a) for k in state)), [])
        if not found:
            wanted = " or ".join(repr(a) for a in anchors)
            raise HarnessError(f"{release.path}: none of its {len(state)} keys is {wanted} (or '<prefix>.' + it), "
                               f"so it is not a checkpoint of --from {self.name}; is --from right? "
                               f"(first keys: {names_between(sorted(state))})")
        anchor = next(a for a in anchors if found[0].endswith("." + a))
        prefix = found[0][: -len(anchor)]
        release.state = {k.removeprefix(prefix): v for k, v in state.items()}
        release.stripped.append(prefix)

    @staticmethod
    def _load(model: Any, params: dict[str, torch.nn.Parameter], mapped: Mapped) -> None:
        with torch.no_grad():
            for name, value in mapped.values.items():
                params[name].copy_(value.to(params[name].dtype))


def round_from_base(params: dict[str, torch.nn.Parameter], from_base: Sequence[str],
                    precision: Callable[[str], torch.dtype | None]) -> dict[torch.dtype, list[str]]:
    """Round the parameters the base filled to the precision the official model holds them at
    (`precision(name)`, e.g. fp16 for ST-Adapter's frozen CLIP); {dtype: names rounded}."""
    rounded: dict[torch.dtype, list[str]] = {}
    with torch.no_grad():
        for name in from_base:
            dtype = precision(name)
            if dtype is not None and dtype != params[name].dtype:
                params[name].copy_(params[name].to(dtype).to(params[name].dtype))
                rounded.setdefault(dtype, []).append(name)
    return rounded


def activation_record(resolved: str, activation: str) -> dict[str, str]:
    """What the report says about the MLP activation the converted model runs."""
    if activation == "quickgelu":
        why = ("QuickGELU, as the official code base runs OpenAI CLIP (trained with it); --activation gelu builds "
               "exact GELU instead")
    else:
        why = ("exact GELU (--activation gelu), NOT the official code base's QuickGELU: outputs differ from the "
               "official model's")
    return {"activation": activation, "backbone": resolved, "why": why}


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
