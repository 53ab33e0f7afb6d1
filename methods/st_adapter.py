"""ST-Adapter (Pan et al., NeurIPS 2022; linziyi96/st-adapter `models_adapter.py`).

A bottleneck adapter with a depthwise temporal convolution in the middle,
`fc1 (D->384) -> depthwise conv over T, kernel (3, 1, 1) -> fc2 (384->D)`, no activation, added
residually to the patch tokens (CLS untouched) before the MLP of every visual block (`12x384`,
the K400 model) or also before attention (`24x384`, the SSv2 model). The conv's weight and bias
and both fc biases start at zero, so the model starts as frozen CLIP.

Trainable at ViT-B/16: 7,110,144 (12x384) / 14,220,288 (24x384); with the official closed-set
head (`head=linear`, 400 classes) 7,417,744 / 14,527,888. The same on ViCLIP-B/16.

Joint space-time backbones (ViCLIP), joint form "patch grid": the official adapter reshapes the
patch tokens of a clip into a (T, H, W) volume and convolves over T; a joint sequence's patch
tokens are viewed as the same (B, T, N, C) grid (`BlockContext.patch_grid`) and get the same
conv; the clip's one CLS token is untouched, as every frame's CLS is per frame
(docs/methods/st_adapter.md).

State-dict names follow the official ones under the open_clip prefix:
`transformer.resblocks.{i}.adapter_pre_{mlp,attn}.{fc1,conv,fc2}.*` ->
`clip.visual.transformer.resblocks.{i}.adapter_pre_{mlp,attn}.{fc1,conv,fc2}.*` (same shapes,
conv weight (384, 1, 3, 1, 1)); the official head `fc.*` -> `cls_head.fc.*`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.blocks import AdaptedBlock, BlockContext
from methods.heads import LinearHeadMixin, head_dropout_option, head_option
from methods.layers import TEMPORAL_CONV_IMPLS, TemporalDepthwiseConv
from methods.layout import JOINT, LAYOUTS, PER_FRAME, TokenLayout
from methods.registry import register_method

#: Official K400 recipe: `--blr 1e-3` is the lr per 256 samples, scaled linearly to the global
#: batch; the released K400 run used 3 GPUs x 64 = 192 clips, i.e. an effective lr of 7.5e-4.
OFFICIAL_BLR = 1e-3
OFFICIAL_BATCH = 192
LR_REFERENCE_BATCH = 256

#: variant -> adapter placement (pre-attention, pre-MLP).
VARIANTS = {"12x384": (False, True), "24x384": (True, True)}


def lr_for_batch(batch_size: int, blr: float = OFFICIAL_BLR) -> float:
    """The official linear scaling rule: lr = blr * batch / 256."""
    return blr * batch_size / LR_REFERENCE_BATCH


def official_key(name: str) -> str | None:
    """This model's parameter name -> the official checkpoint's key (None: no counterpart, e.g.
    the text tower or `proj`, which the official closed-set model does not have)."""
    if name.startswith("cls_head.fc."):
        return "fc." + name[len("cls_head.fc."):]
    if name.startswith("clip.visual.") and name != "clip.visual.proj":
        return name[len("clip.visual."):]
    return None


@dataclass
class STAdapterConfig(MethodConfig):
    variant: str = option("12x384", "'12x384': one adapter before the MLP of each block (K400); "
                          "'24x384': also one before attention (SSv2)", choices=tuple(VARIANTS))
    bottleneck: int = option(384, "adapter width (the 384 of the variant names)")
    kernel_t: int = option(3, "temporal kernel size of the depthwise conv (official 3; odd)")
    conv_impl: str = option("conv1d", "how the depthwise temporal conv runs (same math): 'conv1d' "
                            "(grouped Conv1d over T), 'shift' (shifted multiply-adds; FLOP counters do "
                            "not see them), 'conv3d' (official; slow depthwise cuDNN kernels on GPU)",
                            choices=TEMPORAL_CONV_IMPLS)
    head: str = head_option()
    head_dropout: float = head_dropout_option()
    lr: float = option(lr_for_batch(OFFICIAL_BATCH),
                       "AdamW lr, absolute: the official 1e-3 per 256 samples at its K400 batch of 192 "
                       "(= 7.5e-4); for batch B use 1e-3 * B / 256 (methods.st_adapter.lr_for_batch)")
    weight_decay: float = option(0.01, "AdamW weight decay (official; biases are exempt, see no_weight_decay)")

    def validate(self) -> None:
        if self.bottleneck < 1:
            raise HarnessError(f"--set st_adapter.bottleneck={self.bottleneck}: must be >= 1")
        if self.kernel_t < 1 or self.kernel_t % 2 == 0:
            raise HarnessError(f"--set st_adapter.kernel_t={self.kernel_t}: must be odd and >= 1 "
                               "(the conv pads kernel_t // 2 frames on each side to keep T)")


class STAdapterModule(nn.Module):
    """fc1 -> temporal depthwise conv -> fc2 on patch tokens, added back residually.

    Zero conv and zero fc biases make the branch output exactly 0 at init (fc weights keep
    nn.Linear's default init, as in the official code), so gradients first reach the conv and
    the biases, then the fc weights.
    """

    def __init__(self, width: int, bottleneck: int, kernel_t: int = 3, conv_impl: str = "conv1d") -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, bottleneck)
        self.conv = TemporalDepthwiseConv(bottleneck, kernel_t, conv_impl)
        self.fc2 = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, frames: int, layout: TokenLayout = LAYOUTS[PER_FRAME]) -> torch.Tensor:
        """x: visual tokens, CLS first ((B*T, 1 + N, D) per frame, (B, 1 + N*T, D) joint) -> the
        same with the patch tokens adapted (conv over T on their (B, T, N, C) grid)."""
        hidden = self.fc1(x[:, 1:])
        hidden = self.conv(layout.patch_grid(hidden, frames))
        delta = self.fc2(layout.from_patch_grid(hidden))
        return torch.cat([x[:, :1], x[:, 1:] + delta], dim=1)


class STAdapterBlock(AdaptedBlock):
    """CLIP block with ST-Adapters before the MLP (and optionally before attention)."""

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int,
                 make_adapter: Callable[[int], STAdapterModule], pre_attn: bool, pre_mlp: bool) -> None:
        super().__init__(block, ctx, layer_index, "visual")
        self.adapter_pre_attn: STAdapterModule | None = make_adapter(self.width) if pre_attn else None
        self.adapter_pre_mlp: STAdapterModule | None = make_adapter(self.width) if pre_mlp else None

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.adapter_pre_attn is not None:
            x = self.adapter_pre_attn(x, self.num_frames, self.ctx.layout)
        x = x + self.attention(self.ln_1(x), attn_mask)
        if self.adapter_pre_mlp is not None:
            x = self.adapter_pre_mlp(x, self.num_frames, self.ctx.layout)
        return x + self.mlp_branch(x)


@register_method("st_adapter", STAdapterConfig, "temporal depthwise-conv adapters in the frozen image tower")
class STAdapter(LinearHeadMixin, VideoTextModel):
    """Frozen CLIP with ST-Adapters in every visual block; text matching or the linear head."""

    head_init_std = 0.02  # official: nn.init.normal_(fc.weight, std=0.02)
    models_frame_order = True  # depthwise conv over time in every block
    token_layouts = frozenset({PER_FRAME, JOINT})  # joint: the conv on the patch grid

    def build(self) -> None:
        cfg = self.config
        pre_attn, pre_mlp = VARIANTS[cfg.variant]

        def make_adapter(width: int) -> STAdapterModule:
            return STAdapterModule(width, cfg.bottleneck, cfg.kernel_t, cfg.conv_impl)

        self.wrap_visual(lambda block, i: STAdapterBlock(block, self.ctx, i, make_adapter, pre_attn, pre_mlp))
        self.build_head()

    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        # Official rule: every parameter with 'adapter' in its name, plus the head.
        return self.named_parameters_matching(".adapter_pre_attn.", ".adapter_pre_mlp.") + self.head_parameters()

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        # Official rule (linziyi96/st-adapter main.py L157-164): '.bias' in the name -> no decay.
        return ".bias" in name

    def head_features(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Official order: mean of the frames' CLS tokens (joint: the clip's CLS), then the frozen
        `ln_post` (no proj)."""
        return self.clip.visual.ln_post(self.layout.pool_frames(x[:, 0], batch, frames))
