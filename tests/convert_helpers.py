"""Random "released" checkpoints built from the official state-dict listings
(../shared/upstream/official-state-dicts/*.tsv), cut to the depth of a small test backbone."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from method_helpers import OFFICIAL_STATE_DICTS, official_rows

from harness.backbone import create_clip, get_tokenizer
from harness.convert import ConvertRequest, convert

TSV = {"st_adapter": "st_adapter_12x384_k400.tsv", "aim": "aim_vitb16_8f_k400.tsv",
       "vitaclip": "vitaclip_k400_csc.tsv", "vificlip": "vificlip_full.tsv",
       "vificlip_prompt": "vificlip_prompt_b2n.tsv"}
NORM_WEIGHT = re.compile(r"(ln_\w+|norm\d|summary_ln)\.weight$")
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
        value = 0.02 * torch.randn(shape, generator=gen)
        if NORM_WEIGHT.search(key):  # ~1 as trained norms are: attention then depends on q and k
            value = value * 5 + 1
        state[key] = value.to(getattr(torch, kinds[key]))
    return state


CLASSES = ["archery", "bowling", "juggling", "surfing", "yoga"]
METHODS = ("st_adapter", "aim", "vitaclip", "vificlip", "vificlip_prompt")
#: How each code base saves: (containers, key prefix).
WRAPPING = {"st_adapter": (("model",), "module."), "aim": (("state_dict",), ""), "vitaclip": (("model",), "module."),
            "vificlip": (("model",), ""), "vificlip_prompt": (("model",), "module.")}


def make_base(tmp_path_factory):
    """A random harness-b16-2l saved as a local file: the --base of every conversion (a module
    fixture of the test files: `base = pytest.fixture(scope="module")(make_base)`)."""
    clip, spec = create_clip("harness-b16-2l", None, seed=3)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save(clip.state_dict(), path)
    return path, clip, get_tokenizer(spec)


def consistent_release(method: str, base, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random release whose fixed class-token buffers are what the official code would have
    stored for CLASSES: computed here from the base token embedding and the official prompts."""
    _, clip, tokenizer = base
    state = release_state(method, classes=len(CLASSES), seed=seed)
    # Vita-CLIP releases hold their own token embedding; ViFi-CLIP's use the base one.
    embed = state["textual.token_embedding.weight"] if method == "vitaclip" else clip.token_embedding.weight.detach()
    if method == "vificlip":
        state["prompt_learner.complete_text_embeddings"] = embed[tokenizer([f"a photo of a {c}." for c in CLASSES])]
    elif method in ("vitaclip", "vificlip_prompt"):
        n = state["prompt_learner.ctx"].shape[-2]
        emb = embed[tokenizer([" ".join(["X"] * n) + f" {c}." for c in CLASSES])]
        state["prompt_learner.token_prefix"], state["prompt_learner.token_suffix"] = emb[:, :1], emb[:, 1 + n:]
    if method == "vitaclip":
        state["visual.patch_embed.proj.bias"].zero_()
    return state


def save_release(state: dict, method: str, path) -> str:
    containers, prefix = WRAPPING[method]
    obj = {prefix + k: v for k, v in state.items()}
    for name in reversed(containers):
        obj = {name: obj, "epoch": 30}
    torch.save(obj, path)
    return str(path)


def run_convert(method, state, base, tmp_path, **request):
    ckpt = save_release(state, method, tmp_path / f"{method}.pth")
    req = ConvertRequest(ckpt, backbone="harness-b16-2l", base=str(base[0]), classes=request.pop("classes", CLASSES),
                         **request)
    return convert(method, req)


