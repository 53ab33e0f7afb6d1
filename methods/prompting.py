"""Prompt machinery shared by the prompting methods (Vita-CLIP, ViFi-CLIP's prompting variant).

Three pieces, each used by both methods, so that they live in one place:

- `splice`: put learned tokens into a token sequence, inserting them or replacing tokens there.
  Every prompt method is this one operation at a different place (after CLS, at the end, after
  the start-of-text token), so its layout is written and tested once.
- `LearnedContext`: CoOp-style learned words before the class name. Both official repositories
  tokenise ``"X X ... X {classname}."``, embed it with the frozen token embedding and swap the
  embeddings of the n placeholder words for n learned vectors (shared, or one set per class:
  "class-specific context", CSC). The text then runs through the (frozen) text tower and is
  pooled at the end-of-text token as usual.
- `DeepPromptBlock`: MaPLe / IVLP "deep" prompting: before a block runs, the n prompt tokens
  that the previous layer produced are discarded and replaced by this layer's own learned
  tokens (independent per layer, N(0, 0.02)).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness.errors import HarnessError
from methods.blocks import AdaptedBlock, BlockContext

if TYPE_CHECKING:  # only for hints: base.py must not depend on this module
    from methods.base import VideoTextModel

#: Official ViFi-CLIP / Vita-CLIP / CoOp initialisation of learned prompt vectors.
PROMPT_INIT_STD = 0.02


def splice(x: torch.Tensor, tokens: torch.Tensor, start: int, replace: int = 0) -> torch.Tensor:
    """Put `tokens` into the sequences `x` at position `start`, replacing `replace` tokens there.

    x: (N, L, D); tokens: (K, D) shared by all N sequences, or (N, K, D).
    Returns (N, L - replace + K, D). With ``replace=0`` this is an insertion; with
    ``replace=K`` the previous layer's prompt outputs are swapped for new prompts.
    """
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
    return torch.cat([x[:, :start], tokens.to(x.dtype), x[:, start + replace:]], dim=1)


def normal_prompts(*shape: int) -> nn.Parameter:
    """Learned prompt vectors drawn from N(0, 0.02), as MaPLe / ViFi-CLIP / CoOp initialise them."""
    return nn.Parameter(torch.empty(*shape).normal_(std=PROMPT_INIT_STD))


def word_context(model: VideoTextModel, words: str, n_ctx: int) -> torch.Tensor | None:
    """Token embeddings (n_ctx, D) of the first n_ctx tokens of `words`, to initialise a learned
    context from real words; None when `words` is empty or has fewer than n_ctx tokens.

    This is ViFi-CLIP's rule (`ctx_init and n_ctx <= 4` with its 4-token "a photo of a"), stated
    for any init phrase: with more learned tokens than words the context starts random.
    """
    words = words.replace("_", " ").strip()
    if not words:
        return None
    with torch.device("cpu"):  # token ids are counted on the CPU, also while a model is built on the meta device
        ids = model.tokenizer([words])[0]
    n_words = int(ids.argmax()) - 1  # tokens between <start_of_text> and <end_of_text>
    if n_ctx > n_words:
        return None
    tokens = model.tokenize([words])[0]
    with torch.no_grad():
        return model.clip.token_embedding(tokens[1:1 + n_ctx]).detach().clone()


class LearnedContext(nn.Module):
    """CoOp-style learned context: ``<sot> c_1 ... c_n {classname}. <eot>``.

    The class-name tokens come from the frozen token embedding; `ctx` replaces the embeddings of
    the n prompt words. Generic context (default): `ctx` is (n, D), shared by all classes, so any
    class name can be scored. Class-specific context (`classnames` given): `ctx` is (C, n, D),
    one per training class; such a model cannot score a class it was not trained on and says so.
    """

    def __init__(self, n_ctx: int, width: int, classnames: Sequence[str] | None = None,
                 init: torch.Tensor | None = None, init_words: str = "") -> None:
        super().__init__()
        if n_ctx < 1:
            raise HarnessError(f"learned text context needs at least 1 token, got {n_ctx}")
        self.n_ctx = n_ctx
        self.classnames = tuple(classnames) if classnames is not None else None
        self._index = {name: i for i, name in enumerate(self.classnames or ())}
        shape = (n_ctx, width) if self.classnames is None else (len(self.classnames), n_ctx, width)
        if init is None:
            self.ctx = normal_prompts(*shape)
            self.prefix = " ".join(["X"] * n_ctx)
        else:
            self.ctx = nn.Parameter(init.detach().expand(shape).clone())
            self.prefix = init_words.replace("_", " ").strip()
        self._tokens: dict[tuple[str, ...], torch.Tensor] = {}

    @property
    def class_specific(self) -> bool:
        return self.classnames is not None

    def texts(self, classnames: Sequence[str]) -> list[str]:
        """The tokenised texts: prompt words, class name, full stop (both official repos' form)."""
        return [f"{self.prefix} {name.replace('_', ' ')}." for name in classnames]

    def class_index(self, classnames: Sequence[str]) -> torch.Tensor:
        """Rows of a class-specific `ctx` for `classnames`; unseen names are a user error."""
        unknown = [name for name in classnames if name not in self._index]
        if unknown:
            raise HarnessError(
                f"class-specific text context (csc=true) was learned for {len(self._index)} training classes "
                f"and cannot score unseen classes {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
                "use a generic context (csc=false) for open-set evaluation"
            )
        return torch.tensor([self._index[name] for name in classnames], device=self.ctx.device)

    def context(self, classnames: Sequence[str]) -> torch.Tensor:
        """(C, n, D) context vectors for `classnames`, or (n, D) when shared."""
        if not self.class_specific:
            return self.ctx
        return self.ctx[self.class_index(classnames)]

    def tokens(self, model: VideoTextModel, classnames: Sequence[str]) -> torch.Tensor:
        """Token ids (C, L) of the prompt texts, cached per class set (tokenising is Python code
        and class sets repeat every step)."""
        key = tuple(classnames)
        if key not in self._tokens:
            self._tokens[key] = model.tokenize(self.texts(classnames)).cpu()
        return self._tokens[key].to(self.ctx.device)

    def embeddings(self, model: VideoTextModel, classnames: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-tower input (C, L, D) with the learned context spliced in and the positional
        embedding added, and the end-of-text index of each row."""
        context = self.context(classnames)  # first: raises for unseen classes under CSC
        tokens = self.tokens(model, classnames)
        x = splice(model.clip.token_embedding(tokens), context, 1, self.n_ctx)
        return x + model.clip.positional_embedding.to(x.dtype), tokens.argmax(dim=-1)

    def text_features(self, model: VideoTextModel, classnames: Sequence[str],
                      normalize: bool = True) -> torch.Tensor:
        """(C, E) class text features through `model`'s text tower."""
        x, eot = self.embeddings(model, classnames)
        return model.encode_text_embeddings(x, eot, normalize)


class DeepPromptBlock(AdaptedBlock):
    """A block with its own learned prompt tokens that replace the previous layer's prompt outputs
    before attention (MaPLe's / IVLP's deep prompting, ViFi-CLIP `ResidualAttentionBlock_ViFi_CLIP`).

    `at_end`: where the prompts sit. Vision prompts are appended after the patch tokens
    (positions L-n..L-1); text prompts follow the start-of-text token (positions 1..n), so the
    causal mask and the end-of-text pooling index stay valid. With the context's adapters off the
    block is plain CLIP: nothing is replaced.
    """

    def __init__(self, block: nn.Module, ctx: BlockContext, layer_index: int, tower: str,
                 n_tokens: int, at_end: bool) -> None:
        super().__init__(block, ctx, layer_index, tower)
        self.prompts = normal_prompts(n_tokens, self.width)
        self.at_end = at_end

    def adapted_forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        n = self.prompts.shape[0]
        x = splice(x, self.prompts, x.shape[1] - n if self.at_end else 1, n)
        return self.plain_forward(x, attn_mask)
