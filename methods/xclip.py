"""X-CLIP (Ni et al., ECCV 2022; microsoft/VideoX @ 1744b21, folder `X-CLIP`: `models/xclip.py`,
`models/cct.py`, `models/mit.py`, `models/prompt.py`, `utils/optimizer.py`).

Three additions to CLIP, in the official order:

1. cross-frame communication (`cct.CrossFramelAttentionBlock`), in every visual block: each frame's
   CLS token (un-normalised stream) -> `message_fc` -> a message token per frame; the T messages of
   a clip attend to each other (``m = m + message_attn(message_ln(m))``, own multi-head attention);
   each frame's tokens then attend, with the block's attention, over themselves plus their own
   frame's message token (the message is a key/value only: the official block drops its output
   before the MLP);
2. multi-frame integration (`mit.MultiframeIntegrationTransformer`): the T frame features
   (CLS -> ln_post -> proj) plus a learned (1, T, E) positional embedding through `mit_layers`
   pre-norm transformer blocks, plus a residual to the frame features, mean over frames;
3. video-specific prompts (`prompt.VideoSpecificPrompt`): the patch tokens of the last block ->
   `prompts_visual_ln` -> `prompts_visual_proj`, mean over frames, are the keys/values of
   `prompt_layers` cross-attention decoder layers queried by the class text features; the text
   feature of class c for video b is ``t_c + alpha * decoder(t_c, video_b)``, so logits are
   per-video text features (`forward` / `logits` below).

Text: the class name alone (`generate_text`: template "{}"), through the frozen text tower once
per class set (`use_cache` with `MODEL.FIX_TEXT`). Trainable, the official rule (`fix_text`:
names containing `visual.`, `mit` or `prompts`): the whole image tower with its message modules,
the MIT and the prompt generator: 131,501,056 at ViT-B/16, 8 frames. The optimiser gives the new
modules (names with `message_`, `mit`, `prompts`) 10x the lr (`build_optimizer`); 1-D parameters,
biases and positional embeddings have no weight decay (`set_weight_decay`).

State-dict names: this model's `clip.<name>` is the official `<name>`; `mit.*`,
`prompts_generator.*`, `prompts_visual_ln.*`, `prompts_visual_proj` are the official names.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from torch import nn

from harness.errors import HarnessError
from methods.base import MethodConfig, VideoTextModel, option
from methods.blocks import AdaptedBlock, BlockContext, multihead_attention
from methods.layers import FRAMES_MISMATCH_CHOICES, drop_path, drop_path_rates, per_frame_embedding
from methods.layout import JOINT, PER_FRAME
from methods.registry import register_method
from methods.sample_random import SampleRandomLayer, update_generator

#: Substrings of official parameter names that `fix_text` keeps trainable (utils/optimizer.py L36-41).
TRAINED_KEYS = ("visual.", "mit", "prompts")
#: Substrings of official parameter names that `build_optimizer` gives `TRAIN.LR * 10` (L57-72).
NEW_MODULE_KEYS = ("message_", "mit", "prompts")
#: `no_weight_decay_keywords` of the official model (models/xclip.py L84-86).
NO_DECAY_KEYWORDS = ("positional_embedding",)
DROP_PATH_OVER = ("token", "clip")


def official_key(name: str) -> str:
    """This model's parameter name -> the official X-CLIP state-dict key (`clip.` dropped; the
    modules X-CLIP adds keep their official names)."""
    return name[len("clip."):] if name.startswith("clip.") else name


@dataclass
class XCLIPConfig(MethodConfig):
    prompt: str = option("{}", "text template; official: the class name alone (utils/tools.py generate_text)")
    lr: float = option(8e-6, "AdamW lr of the CLIP weights (utils/config.py TRAIN.LR; K400 configs); the new "
                       "modules get lr x new_lr_scale")
    weight_decay: float = option(0.001, "AdamW weight decay (utils/config.py); none on 1-D parameters, biases and "
                                 "positional embeddings (utils/optimizer.py set_weight_decay)")
    new_lr_scale: float = option(10.0, "lr multiplier of the modules X-CLIP adds (message_*, mit, prompts*): "
                                 "utils/optimizer.py build_optimizer gives them TRAIN.LR * 10")
    mit_layers: int = option(1, "blocks of the multi-frame integration transformer (xclip.load as main.py calls "
                             "it: mit_layers=1)")
    prompt_layers: int = option(2, "cross-attention layers of the video-specific prompt generator (xclip.load: 2)")
    prompt_alpha: float = option(0.1, "initial value of the prompt generator's learned per-channel scale alpha "
                                 "(xclip.load: prompts_alpha=1e-1)")
    train_text: bool = option(False, "also train the text tower, token embedding and logit_scale (official "
                              "MODEL.FIX_TEXT=False; every shipped config keeps the default True: text frozen)")
    drop_path_rate: float = option(0.0, "stochastic depth of the message, attention and MLP branches, rising "
                                   "linearly to this in the last block (MODEL.DROP_PATH_RATE; 0 in every config)")
    drop_path_over: str = option(
        "token", "what drop path drops: 'token' = one token position (message: one frame index) for the whole "
        "batch, as the official code does by applying timm's per-sample drop path to sequence-first tensors; "
        "'clip' = the whole branch of a clip (the usual stochastic depth)", choices=DROP_PATH_OVER)
    frames_mismatch: str = option(
        "error", "a video with T frames other than the T the model was built for: 'error', or 'interpolate' the "
        "MIT positional embedding linearly to T (the official model only runs its built T)",
        choices=FRAMES_MISMATCH_CHOICES)

    def validate(self) -> None:
        if self.mit_layers < 1 or self.prompt_layers < 1:
            raise HarnessError(f"xclip.mit_layers and xclip.prompt_layers must be >= 1, got {self.mit_layers} and "
                               f"{self.prompt_layers}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise HarnessError(f"--set xclip.drop_path_rate={self.drop_path_rate}: must be in [0, 1)")
        if self.new_lr_scale <= 0:
            raise HarnessError(f"--set xclip.new_lr_scale={self.new_lr_scale}: must be > 0")


def _init_linear_and_norm(module: nn.Module) -> None:
    """The official `_init_weights` of the MIT and the prompt generator: trunc_normal(0.02)
    Linear weights (the attention output projections included), zero biases, LayerNorm 1 / 0.
    `nn.MultiheadAttention.in_proj_weight` is no Linear and keeps its xavier-uniform init."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _quickgelu_mlp(width: int, *, dropout: bool = False) -> nn.Sequential:
    """Linear(w, 4w) -> QuickGELU -> Linear(4w, w), QuickGELU whatever the backbone's activation
    (the official modules hard-code it). The prompt generator's has a (p=0) Dropout before the
    second Linear, which keeps its official keys `mlp.0` / `mlp.3`."""
    if dropout:
        return nn.Sequential(nn.Linear(width, width * 4), QuickGELU(), nn.Dropout(0.0), nn.Linear(width * 4, width))
    return nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                      ("c_proj", nn.Linear(width * 4, width))]))


class CrossFrameDropPath(SampleRandomLayer):
    """Stochastic depth of X-CLIP's three residual branches (message exchange, attention, MLP),
    on batch-first branch outputs (rows, S, D) whose rows are frames (`rows_per_clip` = T) or
    clips (the (B, T, D) messages: 1). Each call site passes its own `site`.

    'token' (official): the official code applies timm's per-sample drop path to sequence-first
    tensors, so it keeps or drops a token position (a frame's message) for every clip of the
    forward pass; here one draw per position of dim 1, shared by every clip of the optimiser
    update (`update_generator`: the same whatever the micro-batches). 'clip': the clip's whole
    branch, drawn per clip (`drop_path`: per-sample streams)."""

    def __init__(self, rate: float, over: str) -> None:
        super().__init__()
        self.rate, self.over = float(rate), over

    def forward(self, delta: torch.Tensor, rows_per_clip: int, site: int) -> torch.Tensor:
        if self.rate <= 0.0 or not self.training:
            return delta
        stream = self.stream_or_fail()
        if self.over == "token":
            generator = update_generator(stream, site)
            draws = torch.rand(delta.shape[1], generator=generator) if generator is not None else torch.rand(delta.shape[1])
            keep = 1.0 - self.rate
            mask = (draws < keep).to(delta.dtype).div_(keep).to(delta.device)
            return delta * mask.view(1, -1, *([1] * (delta.dim() - 2)))
        clips = delta.view(delta.shape[0] // rows_per_clip, rows_per_clip, *delta.shape[1:])
        return drop_path(clips, self.rate, True, stream, site).view_as(delta)

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}, over={self.over!r}"


class CrossFrameBlock(AdaptedBlock):
    """A visual block with X-CLIP's cross-frame communication (official `CrossFramelAttentionBlock`)."""

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, drop_path_rate: float,
                 drop_path_over: str) -> None:
        super().__init__(block, ctx, layer_index, "visual")
        width = self.width
        # Official init: PyTorch's defaults (the CCT's init_weights is never called).
        self.message_fc = nn.Linear(width, width)
        self.message_ln = type(self.ln_1)(width)
        self.message_attn = nn.MultiheadAttention(width, self.attn.num_heads)
        self.drop_path = CrossFrameDropPath(drop_path_rate, drop_path_over)

    def messages(self, x: torch.Tensor) -> torch.Tensor:
        """(B*T, L, D) tokens -> (B, T, D) message tokens after their exchange across the frames."""
        msg = self.message_fc(self.split_frames(x)[:, :, 0])
        normed = self.message_ln(msg)
        return msg + self.drop_path(multihead_attention(self.message_attn, normed), 1, site=0)

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        msg = self.messages(x).reshape(x.shape[0], 1, x.shape[2])  # frame n's own message
        queries = self.ln_1(x)
        keys = torch.cat([queries, self.ln_1(msg)], dim=1)
        x = x + self.drop_path(self.ls_1(multihead_attention(self.attn, queries, attn_mask, kv=keys)),
                               self.num_frames, site=1)
        return x + self.drop_path(self.mlp_branch(x), self.num_frames, site=2)


class IntegrationBlock(nn.Module):
    """Pre-norm transformer block of the MIT (official `mit.ResidualAttentionBlock`)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = _quickgelu_mlp(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, E)."""
        x = x + multihead_attention(self.attn, self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class MultiFrameIntegration(nn.Module):
    """Frame features (B, T, E) -> video feature (B, E): positional embedding, blocks, residual to
    the input, mean over frames."""

    def __init__(self, frames: int, width: int, layers: int) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(1, frames, width))
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        self.resblocks = nn.Sequential(*[IntegrationBlock(width, max(1, width // 64)) for _ in range(layers)])
        self.apply(_init_linear_and_norm)

    def forward(self, x: torch.Tensor, frames_mismatch: str = "error") -> torch.Tensor:
        pos = per_frame_embedding(self.positional_embedding, x.shape[1], frames_mismatch, "xclip",
                                  "MIT positional embedding")
        out = self.resblocks(x + pos.to(x.dtype))
        return (out + x).mean(dim=1)


class PromptCrossAttention(nn.Module):
    """Multi-head attention of queries over other keys/values with its own projections, q/k/v
    without bias (official `prompt.MulitHeadAttention`)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.proj = nn.Linear(width, width)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """q (B, C, E) over kv (B, N, E) -> (B, C, E)."""
        out = F.scaled_dot_product_attention(self._heads(self.q_proj(q)), self._heads(self.k_proj(kv)),
                                             self._heads(self.v_proj(kv)))
        return self.proj(out.transpose(1, 2).reshape(q.shape))


class PromptGeneratorLayer(nn.Module):
    """``t = t + cross_attn(norm1(t), visual); t = t + mlp(norm3(t))`` (official; dropout 0)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.cross_attn = PromptCrossAttention(width, heads)
        self.norm1 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = _quickgelu_mlp(width, dropout=True)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), visual)
        return text + self.mlp(self.norm3(text))


class VideoSpecificPrompt(nn.Module):
    """Class text features (B, C, E) and a video's visual tokens (B, N, E) -> the prompt added to
    the text features, ``alpha * decoder(text, norm(visual))``."""

    def __init__(self, width: int, layers: int, alpha: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.decoder = nn.ModuleList([PromptGeneratorLayer(width, max(1, width // 64)) for _ in range(layers)])
        self.alpha = nn.Parameter(torch.full((width,), float(alpha)))
        self.apply(_init_linear_and_norm)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        visual = self.norm(visual)
        for layer in self.decoder:
            text = layer(text, visual)
        return self.alpha * text


@register_method("xclip", XCLIPConfig, "cross-frame message tokens + frame-integration transformer + "
                 "video-conditioned text prompts")
class XCLIP(VideoTextModel):
    models_frame_order = True  # message attention across frames + the MIT's positional embedding
    #: Per frame only: the cross-frame communication is X-CLIP's own way of joining per-frame
    #: towers, built on one CLS token per frame, and the MIT integrates one feature per frame.
    token_layouts = frozenset({PER_FRAME})
    layout_notes = {JOINT: "its cross-frame communication makes a message token from each frame's CLS token and its "
                           "multi-frame integration transformer runs over one feature per frame, and a joint sequence "
                           "has one CLS token per clip (docs/methods/xclip.md)"}

    def build(self) -> None:
        cfg: XCLIPConfig = self.config
        # The text path trains only with train_text (official use_cache = FIX_TEXT): per configuration.
        self.text_is_frozen = not cfg.train_text
        rates = drop_path_rates(cfg.drop_path_rate, self.visual_depth)
        self.wrap_visual(lambda block, i: CrossFrameBlock(block, self.ctx, i, rates[i], cfg.drop_path_over))
        embed = self.clip.visual.output_dim
        self.mit = MultiFrameIntegration(self.num_frames, embed, cfg.mit_layers)
        self.prompts_generator = VideoSpecificPrompt(embed, cfg.prompt_layers, cfg.prompt_alpha)
        self.prompts_visual_ln = type(self.clip.visual.ln_post)(self.visual_width)
        self.prompts_visual_proj = nn.Parameter(torch.randn(self.visual_width, embed))  # official: randn, std 1

    # -- trainable set and optimiser groups (official names, official substring rules) ----------
    def declare_trainable(self) -> Iterable[tuple[str, nn.Parameter]]:
        if self.config.train_text:  # FIX_TEXT=False: fix_text is not called, everything trains
            return list(self.named_parameters())
        return [(n, p) for n, p in self.named_parameters() if any(k in official_key(n) for k in TRAINED_KEYS)]

    def no_weight_decay(self, name: str, param: nn.Parameter) -> bool:
        key = official_key(name)
        return param.dim() == 1 or key.endswith(".bias") or any(k in key for k in NO_DECAY_KEYWORDS)

    def lr_scale(self, name: str, param: nn.Parameter) -> float:
        return self.config.new_lr_scale if any(k in official_key(name) for k in NEW_MODULE_KEYS) else 1.0

    # -- video path ------------------------------------------------------------------------
    def visual_pool(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Per-frame features (CLS -> ln_post -> proj) through the MIT -> (B, E)."""
        return self.mit(self.frame_features(x).view(batch, frames, -1), self.config.frames_mismatch)

    def prompt_tokens(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        """Patch tokens after the last block -> prompts_visual_ln -> prompts_visual_proj, mean over
        the frames: (B, N, E), the prompt generator's keys and values."""
        tokens = self.prompts_visual_ln(x[:, 1:]) @ self.prompts_visual_proj.to(x.dtype)
        return tokens.view(batch, frames, *tokens.shape[1:]).mean(dim=1)

    def encode_video_and_prompt_tokens(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) -> normalised video features (B, E) and prompt tokens (B, N, E)."""
        x = self.visual_tower(video)
        batch, frames = video.shape[:2]
        feats = F.normalize(self.visual_pool(x, batch, frames), dim=-1)
        return feats, self.prompt_tokens(x, batch, frames)

    # -- text path -------------------------------------------------------------------------
    def class_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """(C, E) un-normalised class text features: the prompts are added before normalising."""
        return self.encode_text(self.class_prompts(classnames), normalize=False)

    def video_text_features(self, text: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """(C, E) class text features + the video-specific prompts -> normalised (B, C, E)."""
        text = text.to(prompt_tokens.dtype).unsqueeze(0).expand(prompt_tokens.shape[0], -1, -1)
        return F.normalize(text + self.prompts_generator(text, prompt_tokens), dim=-1)

    # -- scoring -----------------------------------------------------------------------------
    def logits(self, video_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Cosine logits against shared (C, E) or per-video (B, C, E) text features."""
        if text_features.dim() == 2:
            return super().logits(video_features, text_features)
        text = text_features.to(video_features.dtype)
        return self.clip.logit_scale.exp() * torch.einsum("bd,bcd->bc", video_features, text)

    def forward(self, video: torch.Tensor, classnames: Sequence[str]) -> torch.Tensor:
        feats, tokens = self.encode_video_and_prompt_tokens(video)
        return self.logits(feats, self.video_text_features(self.text_features(classnames), tokens))
