"""The official closed-set linear classification head of ST-Adapter and AIM (`head=linear`).

Why a module of its own: both methods ship a head that replaces text matching by
dropout -> Linear(width, C) on the pre-projection CLS feature (no `proj`), trained on a fixed
class list. Such a head cannot score class names it was not trained on, so it must refuse
open-set protocols (base-to-novel, zero-shot) and foreign class lists loudly instead of
returning meaningless logits. The two methods differ only in how frame CLS tokens are pooled
before the head, which each supplies through `head_features`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from harness.errors import HarnessError
from methods.base import option
from methods.layers import SampleDropout

HEAD_CHOICES = ("text", "linear")


def head_option() -> Any:
    """The `head` config field shared by methods that offer the closed-set head."""
    return option(
        "text",
        "'text': open-vocabulary text matching (all protocols); 'linear': the official closed-set "
        "head, dropout -> Linear(width, C) without proj (fully supervised protocol only)",
        choices=HEAD_CHOICES,
    )


def head_dropout_option() -> Any:
    return option(0.5, "dropout before the linear head (official: 0.5); unused with head=text")


class ClosedSetHead(nn.Module):
    """dropout -> Linear(width, num_classes), weight N(0, init_std), bias 0 (official inits:
    ST-Adapter std 0.02, AIM's mmaction I3DHead std 0.01)."""

    def __init__(self, width: int, num_classes: int, dropout: float, init_std: float) -> None:
        super().__init__()
        self.dropout = SampleDropout(dropout)  # nn.Dropout, drawn per sample (methods.sample_random)
        self.fc = nn.Linear(width, num_classes)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(feats))


class LinearHeadMixin:
    """Adds `head=linear` to a `VideoTextModel` subclass (list it before the base class).

    The subclass calls `build_head()` in `build()`, implements `head_features` and includes
    `head_parameters()` in `declare_trainable()`. With `head=text` every hook falls through to
    the text-matching defaults.
    """

    #: std of the normal init of the head's weight (per the method's official code).
    head_init_std: ClassVar[float] = 0.02
    cls_head: ClosedSetHead | None

    # -- construction ------------------------------------------------------------------------
    def build_head(self) -> None:
        self.cls_head = None
        if self.config.head != "linear":
            return
        if not self.train_classnames:
            raise HarnessError(
                f"{self.method_name}: head=linear needs the training class names at build time "
                "(build_method(..., classnames=[...])) to size its Linear(width, C) layer"
            )
        self.cls_head = ClosedSetHead(self.visual_width, len(self.train_classnames),
                                      self.config.head_dropout, self.head_init_std)

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        if self.cls_head is None:
            return []
        return [(f"cls_head.{n}", p) for n, p in self.cls_head.named_parameters()]

    # -- forward -----------------------------------------------------------------------------
    def head_features(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Tokens after the last block (B*T, L, D) -> (B, D) input of the linear head. Each method
        defines its official pooling order (ST-Adapter: mean CLS then ln_post; AIM: the reverse)."""
        raise NotImplementedError(f"{type(self).__name__} must define its head's frame pooling")

    def visual_pool(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        if self.cls_head is None:
            return super().visual_pool(x, batch, frames)
        return self.head_features(x, batch, frames)

    def forward(self, video: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        if self.cls_head is None:
            return super().forward(video, classnames)
        self.check_classnames(classnames)
        return self.cls_head(self.encode_video(video, normalize=False))

    # -- closed-set guards -------------------------------------------------------------------
    def check_classnames(self, classnames: Sequence[str]) -> None:
        """Logit i of a linear head means training class i: any other list is an error."""
        if tuple(classnames) != self.train_classnames:
            given, known = tuple(classnames), set(self.train_classnames or ())
            unseen = [c for c in given if c not in known]
            detail = (f"{len(unseen)} never trained on, e.g. {unseen[:3]}" if unseen
                      else "same names in a different order or count")
            raise HarnessError(
                f"{self.method_name} head=linear was trained on {len(self.train_classnames)} classes and "
                f"can only score exactly those, in that order; got {len(given)} class names ({detail}). "
                "Use head=text to score other class names."
            )

    def check_protocol(self, protocol_name: str, closed_set: bool) -> None:
        if self.cls_head is not None and not closed_set:
            raise HarnessError(
                f"{self.method_name}: head=linear is a closed-set head (one output per training class) "
                f"and cannot score the unseen classes of protocol {protocol_name!r}; "
                "use head=text or the fully_supervised protocol"
            )
        super().check_protocol(protocol_name, closed_set)
