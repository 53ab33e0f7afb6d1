"""Released checkpoints written as the official training code writes them, cut to the depth of a
small test backbone (`harness-b16-2l`: ViT-B/16 widths, 2 blocks per tower).

Tensors: the official names, shapes and dtypes of ../shared/upstream/official-state-dicts/*.tsv
(blocks < 2, class rows cut); parameters the official code keeps frozen hold the base CLIP's
weights in the code base's own naming (as training from that CLIP leaves them; the mapping is
written here, independently of the converters), trained ones random.

Files: each `save_*` writes the top-level layout of the code base's save function at its pinned
commit, optimizer state and all:

* ST-Adapter `utils.save_model`: `{'model': <adapters + fc only, frozen keys deleted>,
  'optimizer', 'lr_sched', 'loss_scaler', 'next_epoch'}`, no prefix;
* AIM (mmcv `save_checkpoint` + `tools/train.py`): `{'meta': {..., 'config': <Config.pretty_text>},
  'state_dict': OrderedDict (with `_metadata`), 'optimizer'}`;
* Vita-CLIP `training/checkpoint.save_checkpoint`: `{'model': <DDP 'module.' keys>, 'optimizer',
  'lr_sched', 'loss_scaler', 'next_step'}`;
* ViFi-CLIP `utils/tools.epoch_saving`: `{'model': <DDP 'module.' keys>, 'optimizer', 'lr_scheduler',
  'max_accuracy', 'epoch', 'config': <yacs CfgNode>}`; the CfgNode is pickled from a class named
  and built like yacs' (`yacs.config.CfgNode`, a dict with the four `__...__` attributes), so the
  reader under test meets the same pickle without yacs installed.
"""
from __future__ import annotations

import contextlib
import copy
import re
import sys
import types
from collections import OrderedDict
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
CLASSES = ["archery", "bowling", "juggling", "surfing", "yoga"]
METHODS = ("st_adapter", "aim", "vitaclip", "vificlip", "vificlip_prompt")
DEPTH = 2


def dtypes(path: Path) -> dict[str, str]:
    return {line.split("\t")[0]: line.split("\t")[2] for line in path.read_text().splitlines()
            if not line.startswith("#")}


# -- the base CLIP in each code base's names ----------------------------------------------------
_VITA_BLOCK = {"norm1.": "ln_1.", "norm2.": "ln_2.", "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj.",
               "attn.out_proj.": "attn.out_proj."}
_VITA_VISUAL = {"cls_token": "class_embedding", "pos_embed": "positional_embedding", "proj": "proj",
                "patch_embed.proj.weight": "conv1.weight"}


def _vita_from_clip(key: str, clip: dict[str, torch.Tensor]) -> torch.Tensor | None:
    if key.startswith("textual."):
        return clip.get(key[len("textual."):])
    local = key[len("visual."):]
    if local in _VITA_VISUAL:
        return clip.get("visual." + _VITA_VISUAL[local])
    if local.startswith(("ln_pre.", "ln_post.")):
        return clip.get("visual." + local)
    match = re.match(r"blocks\.(\d+)\.(.*)", local)
    if not match:
        return None
    i, rest = match.groups()
    ours = f"visual.transformer.resblocks.{i}."
    qkv = re.match(r"attn\.([qkv])_proj\.(weight|bias)", rest)
    if qkv:
        return clip[f"{ours}attn.in_proj_{qkv.group(2)}"].chunk(3)["qkv".index(qkv.group(1))]
    for theirs, mine in _VITA_BLOCK.items():
        if rest.startswith(theirs):
            return clip.get(ours + mine + rest[len(theirs):])
    return None


def clip_value(method: str, key: str, clip: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The base CLIP's tensor that the official code base holds under `key` (None: not CLIP's)."""
    if method == "st_adapter":
        return clip.get("visual." + key)
    if method == "aim":
        return clip.get("visual." + key[len("backbone."):]) if key.startswith("backbone.") else None
    if method == "vitaclip":
        return _vita_from_clip(key, clip)
    if key == "logit_scale":
        return clip["logit_scale"]
    for theirs, mine in (("image_encoder.", "visual."), ("text_encoder.", "")):
        if key.startswith(theirs):
            return clip.get(mine + key[len(theirs):])
    return None


def release_state(method: str, depth: int = DEPTH, seed: int = 0, classes: int | None = None,
                  base: tuple | None = None) -> dict[str, torch.Tensor]:
    """Tensors with the official names, shapes and dtypes of blocks < `depth` (stacked per-layer
    tensors cut to `depth` rows; class rows cut to `classes`). Frozen ones hold `base`'s CLIP
    weights when `base` is given; the rest is random."""
    path = OFFICIAL_STATE_DICTS / TSV[method]
    kinds = dtypes(path)
    gen = torch.Generator().manual_seed(seed)
    clip = {k: v.detach() for k, v in base[1].state_dict().items()} if base is not None else {}
    state = {}
    for key, shape, trainable in official_rows(path):
        match = BLOCK.search(key)
        if match and int(match.group(1)) >= depth:
            continue
        if key == "visual.global_prompts":
            shape = [depth, *shape[1:]]
        if classes is not None and key.startswith(("prompt_learner.token_", "prompt_learner.complete",
                                                   "fc.", "cls_head.")) or (classes and key == "prompt_learner.ctx"
                                                                             and len(shape) == 3):
            shape = [classes, *shape[1:]]
        value = clip_value(method, key, clip) if not trainable and clip else None
        if value is None or list(value.shape) != shape:
            value = 0.02 * torch.randn(shape, generator=gen)
            if NORM_WEIGHT.search(key):  # ~1 as trained norms are: attention then depends on q and k
                value = value * 5 + 1
        state[key] = value.clone().to(getattr(torch, kinds[key]))
    return state


def make_base(tmp_path_factory):
    """A random harness-b16-2l saved as a local file: the --base of every conversion (a module
    fixture of the test files: `base = pytest.fixture(scope="module")(make_base)`)."""
    clip, spec = create_clip("harness-b16-2l", None, seed=3)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    torch.save(clip.state_dict(), path)
    return path, clip, get_tokenizer(spec)


def consistent_release(method: str, base, seed: int = 0) -> dict[str, torch.Tensor]:
    """A release trained from `base`: frozen tensors are the base's, trained ones random, and the
    fixed class-token buffers what the official code would have stored for CLASSES (computed here
    from the base token embedding and the official prompts)."""
    _, clip, tokenizer = base
    state = release_state(method, classes=len(CLASSES), seed=seed, base=base)
    embed = clip.token_embedding.weight.detach()
    if method == "vificlip":
        state["prompt_learner.complete_text_embeddings"] = embed[tokenizer([f"a photo of a {c}." for c in CLASSES])]
    elif method in ("vitaclip", "vificlip_prompt"):
        n = state["prompt_learner.ctx"].shape[-2]
        emb = embed[tokenizer([" ".join(["X"] * n) + f" {c}." for c in CLASSES])]
        state["prompt_learner.token_prefix"], state["prompt_learner.token_suffix"] = emb[:, :1], emb[:, 1 + n:]
    if method == "vitaclip":
        state["visual.patch_embed.proj.bias"].zero_()
    return state


# -- the official save functions --------------------------------------------------------------
def trained(method: str, key: str) -> bool:
    """The official trainable rule of each code base, on its own key names."""
    if method == "st_adapter":
        return "adapter" in key or key.startswith("fc.")
    if method == "aim":
        return any(k in key for k in ("temporal_embedding", "ln_post", "cls_head", "Adapter"))
    rows = {k: t for k, _, t in official_rows(OFFICIAL_STATE_DICTS / TSV[method])}
    return rows.get(re.sub(r"(resblocks|blocks)\.\d+\.", r"\g<1>.0.", key), False)


def optimizer_state(method: str, state: dict[str, torch.Tensor], lr: float = 1e-3) -> tuple[dict, torch.optim.Optimizer]:
    """AdamW's state_dict after one step over the trainable tensors (decay / no-decay groups)."""
    names = [k for k in state if trained(method, k) and state[k].is_floating_point()]
    params = {k: torch.nn.Parameter(state[k].detach().float().clone()) for k in names}
    groups = [{"params": [p for k, p in params.items() if ".bias" not in k], "weight_decay": 0.05},
              {"params": [p for k, p in params.items() if ".bias" in k], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    for p in params.values():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    return opt.state_dict(), opt


def _lambda_lr(opt: torch.optim.Optimizer) -> dict:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0).state_dict()


#: `torch.cuda.amp.GradScaler().state_dict()` of an enabled scaler.
GRAD_SCALER = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
               "_growth_tracker": 0}


def save_st_adapter(state: dict, path, trainable_only: bool = True) -> str:
    """linziyi96/st-adapter utils.save_model: frozen parameters deleted from `model`."""
    model = {k: v for k, v in state.items() if trained("st_adapter", k)} if trainable_only else dict(state)
    optim, opt = optimizer_state("st_adapter", state)
    torch.save({"model": model, "optimizer": optim, "lr_sched": _lambda_lr(opt), "loss_scaler": dict(GRAD_SCALER),
                "next_epoch": 12}, path)
    return str(path)


def aim_config_text(adapter_scale: float | None = 0.5, num_tadapter: int = 1, num_frames: int = 8,
                    num_classes: int = len(CLASSES)) -> str:
    """`Config.pretty_text` of an AIM training config (what tools/train.py stores in meta.config),
    formatted by mmengine's Config (mmcv 1.x's is the same yapf-formatted dict text)."""
    from mmengine.config import Config

    backbone = dict(type="ViT_CLIP", input_resolution=224, patch_size=16, num_frames=num_frames, width=768,
                    layers=12, heads=12, drop_path_rate=0.2, num_tadapter=num_tadapter)
    if adapter_scale is not None:
        backbone["adapter_scale"] = adapter_scale
    cfg = dict(model=dict(type="Recognizer3D", backbone=backbone,
                          cls_head=dict(type="I3DHead", in_channels=768, num_classes=num_classes,
                                        spatial_type="avg", dropout_ratio=0.5),
                          test_cfg=dict(average_clips="prob", max_testing_views=2)),
               optimizer=dict(type="AdamW", lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
               lr_config=dict(policy="CosineAnnealing", min_lr=0, warmup="linear", warmup_by_epoch=True,
                              warmup_iters=2.5),
               total_epochs=50, checkpoint_config=dict(interval=10), work_dir="./work_dirs/aim")
    return Config(cfg).pretty_text


def save_aim(state: dict, path, config: str | None = None) -> str:
    """taoyang1122/adapt-image-models: mmcv save_checkpoint(model, file, optimizer, meta) with
    tools/train.py's meta (env_info, seed, config_name, work_dir, mmaction_version, config)."""
    state_dict = OrderedDict(state)
    state_dict._metadata = OrderedDict([("", {"version": 1}), ("backbone", {"version": 1})])  # nn.Module.state_dict
    meta = {"env_info": "sys.platform: linux\nPython: 3.8.13\nPyTorch: 1.10.0", "seed": 0,
            "config_name": "vitclip_base_k400.py", "work_dir": "vitclip_base_k400",
            "mmaction_version": "0.24.1+b3580d2", "epoch": 30, "iter": 28140, "mmcv_version": "1.4.0",
            "time": "Mon Sep 12 10:00:00 2022", "hook_msgs": {"last_ckpt": "work_dirs/epoch_30.pth"}}
    if config is not None:
        meta["config"] = config
    optim, _ = optimizer_state("aim", state)
    torch.save({"meta": meta, "state_dict": state_dict, "optimizer": optim}, path)
    return str(path)


def save_vitaclip(state: dict, path) -> str:
    """TalalWasim/Vita-CLIP training/checkpoint.save_checkpoint on the DDP-wrapped model."""
    optim, opt = optimizer_state("vitaclip", state)
    torch.save({"model": OrderedDict(("module." + k, v) for k, v in state.items()), "optimizer": optim,
                "lr_sched": _lambda_lr(opt), "loss_scaler": dict(GRAD_SCALER), "next_step": 40000}, path)
    return str(path)


@contextlib.contextmanager
def yacs_modules():
    """A module `yacs.config` whose `CfgNode` is built and pickled as yacs' is (a dict subclass
    with the `__immutable__`, `__deprecated_keys__`, `__renamed_keys__`, `__new_allowed__`
    attributes), installed for writing a file, then removed: readers never import it."""
    class CfgNode(dict):
        IMMUTABLE, DEPRECATED_KEYS, RENAMED_KEYS, NEW_ALLOWED = ("__immutable__", "__deprecated_keys__",
                                                                 "__renamed_keys__", "__new_allowed__")

        def __init__(self, init_dict=None, key_list=None, new_allowed=False):
            init_dict = copy.deepcopy(init_dict or {})
            for k, v in init_dict.items():
                if isinstance(v, dict):
                    init_dict[k] = CfgNode(v)
            super().__init__(init_dict)
            self.__dict__[CfgNode.IMMUTABLE] = False
            self.__dict__[CfgNode.DEPRECATED_KEYS] = set()
            self.__dict__[CfgNode.RENAMED_KEYS] = {}
            self.__dict__[CfgNode.NEW_ALLOWED] = new_allowed

        def freeze(self):
            self.__dict__[CfgNode.IMMUTABLE] = True
            for v in self.values():
                if isinstance(v, CfgNode):
                    v.freeze()

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    module.CfgNode, package.config = CfgNode, module
    saved = {name: sys.modules.get(name) for name in ("yacs", "yacs.config")}
    sys.modules.update({"yacs": package, "yacs.config": module})
    try:
        yield CfgNode
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def vifi_config(prompting: bool, frames: int = 2, classes: int = len(CLASSES), n_ctx: int = 16,
                depth: int = DEPTH, label_list: str = "labels/custom_labels.csv") -> dict:
    """ViFi-CLIP's config (utils/config.py defaults + a configs/*.yaml), as nested dicts."""
    return {
        "BASE": [""],
        "DATA": {"ROOT": "/PATH/TO/videos/folder", "TRAIN_FILE": "train.txt", "VAL_FILE": "val.txt",
                 "DATASET": "hmdb51", "INPUT_SIZE": 224, "NUM_FRAMES": frames, "NUM_CLASSES": classes,
                 "LABEL_LIST": label_list},
        "MODEL": {"ARCH": "ViT-B/16", "DROP_PATH_RATE": 0.0, "PRETRAINED": None, "RESUME": None, "FIX_TEXT": True},
        "TRAINER": {"ViFi_CLIP": {"PROMPT_MODEL": prompting, "N_CTX_VISION": n_ctx if prompting else 0,
                                  "N_CTX_TEXT": n_ctx if prompting else 0, "CTX_INIT": "a photo of a",
                                  "PROMPT_DEPTH_VISION": depth if prompting else 0,
                                  "PROMPT_DEPTH_TEXT": depth if prompting else 1,
                                  "USE": "both", "ZS_EVAL": False}},
        "TRAIN": {"EPOCHS": 11, "WARMUP_EPOCHS": 5, "WEIGHT_DECAY": 0.001, "LR": 4e-2, "BATCH_SIZE": 4,
                  "ACCUMULATION_STEPS": 2, "LR_SCHEDULER": "cosine", "OPTIMIZER": "adamw", "OPT_LEVEL": "O1",
                  "AUTO_RESUME": False, "USE_CHECKPOINT": False},
        "AUG": {"LABEL_SMOOTH": 0.1, "COLOR_JITTER": 0.8, "GRAY_SCALE": 0.2, "MIXUP": 0.8, "CUTMIX": 1.0,
                "MIXUP_SWITCH_PROB": 0.5},
        "TEST": {"NUM_CLIP": 1, "NUM_CROP": 1, "ONLY_TEST": False, "MULTI_VIEW_INFERENCE": False},
        "OUTPUT": "output/b2n", "SAVE_FREQ": 10, "PRINT_FREQ": 50, "SEED": 1024, "LOCAL_RANK": 0,
    }


def timm_cosine_state(lr: float = 4e-2) -> dict:
    """timm CosineLRScheduler.state_dict() (everything but the optimizer), as ViFi-CLIP saves it."""
    return {"param_group_field": "lr", "_initial_param_group_field": "initial_lr", "base_values": [lr],
            "metric": None, "t_in_epochs": False, "noise_range_t": None, "noise_pct": 0.67, "noise_type": "normal",
            "noise_std": 1.0, "noise_seed": 42, "t_initial": 1000, "lr_min": lr / 100, "cycle_mul": 1.0,
            "cycle_decay": 0.1, "cycle_limit": 1, "warmup_t": 100, "warmup_lr_init": 0.0, "warmup_prefix": False,
            "k_decay": 1.0, "warmup_steps": [lr / 100]}


def save_vificlip(state: dict, path, method: str = "vificlip", config: dict | None = None) -> str:
    """muzairkhattak/ViFi-CLIP utils/tools.epoch_saving (DDP model, frozen yacs config)."""
    optim, _ = optimizer_state(method, state)
    with yacs_modules() as CfgNode:
        cfg = CfgNode(config if config is not None else vifi_config(method == "vificlip_prompt"))
        cfg.freeze()
        torch.save({"model": OrderedDict(("module." + k, v) for k, v in state.items()), "optimizer": optim,
                    "lr_scheduler": timm_cosine_state(), "max_accuracy": 71.25, "epoch": 10, "config": cfg}, path)
    return str(path)


def save_release(state: dict, method: str, path, **how) -> str:
    """`state` written by `method`'s official save function (see the module docstring)."""
    if method == "st_adapter":
        return save_st_adapter(state, path, **how)
    if method == "aim":
        return save_aim(state, path, **how)
    if method == "vitaclip":
        return save_vitaclip(state, path)
    return save_vificlip(state, path, method, **how)


def run_convert(method, state, base, tmp_path, save: dict | None = None, **request):
    ckpt = save_release(state, method, tmp_path / f"{method}.pth", **(save or {}))
    req = ConvertRequest(ckpt, backbone="harness-b16-2l", base=str(base[0]), classes=request.pop("classes", CLASSES),
                         **request)
    return convert(method, req)
