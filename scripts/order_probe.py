"""Why do (or don't) temporal methods learn frame order on the embedded data? A fast probe.

Investigation tooling for docs/embedded-benchmark.md, not part of the benchmark: it trains a
method on the embedded dataset's fully supervised lists with a minimal loop on pre-decoded frames
(no mmengine, no augmentation besides the random frame offset within each segment, centre crop),
so that many settings fit on a shared 2-core CPU, and reports

* top-1 over the 12 classes and order-pair accuracy (`harness.measure.order_pairs.pair_accuracy`)
  on the val list;
* order sensitivity of the trained features: mean cosine distance between a val video's feature
  and the feature of the same video played backwards (0 = order-blind);
* gradient norms reaching the temporal modules at step 0 and after a few steps, and the size of
  the temporal branch's contribution.

Usage (one thread, niced):
    nice -n 19 python scripts/order_probe.py --method aim --lr 3e-3 --epochs 15 [--set k=v ...]
Headline numbers must be confirmed with `harness bench --order-pairs` (the real engine).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.backbone import create_clip, get_tokenizer
from harness.data.descriptions import load_descriptions
from harness.data.embedded import MAIN_CLASSES, ORDER_PAIRS, EmbeddedRecipe, ensure_embedded_dataset
from harness.engine import model as model_io
from harness.measure.order_pairs import pair_accuracy
from methods.base import DESCRIPTION_NEEDS
from methods.registry import build_method

CLIP_MEAN = torch.tensor(model_io.CLIP_MEAN).view(1, 1, 3, 1, 1)  # the engine's normalisation
CLIP_STD = torch.tensor(model_io.CLIP_STD).view(1, 1, 3, 1, 1)
CLASSNAMES = [c.name for c in MAIN_CLASSES]


def decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def load_split(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """All frames (N, F, S, S, 3) uint8 and labels of a fully supervised list, cached as .npz."""
    cache = Path(os.environ.get("PROBE_CACHE", "/tmp/emb-probe")) / root.name
    f = cache / f"{name}.npz"
    if f.exists():
        d = np.load(f)
        return d["x"], d["y"]
    lines = (root / "datasets_splits/embedded_splits" / f"{name}.txt").read_text().split("\n")
    entries = [ln.split() for ln in lines if ln.strip()]
    x = np.stack([decode(root / "videos" / e[0]) for e in entries])
    y = np.array([int(e[1]) for e in entries])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, x=x, y=y)
    return x, y


def frames_of(x: np.ndarray, t: int, rng: np.random.Generator | None, crop: int) -> torch.Tensor:
    """T segment frames (random offset if rng, else segment centre), centre crop to `crop` after
    resizing the short side to crop*256/224 (the test pipeline), normalised (B, T, 3, S, S)."""
    n, total = x.shape[:2]
    seg = total / t
    if rng is None:
        idx = np.tile((np.arange(t) * seg + seg / 2).astype(int), (n, 1))
    else:
        idx = (np.arange(t) * seg + rng.uniform(0, seg, (n, t))).astype(int)
    v = torch.from_numpy(np.take_along_axis(x, idx[:, :, None, None, None], 1)).float()
    v = v.permute(0, 1, 4, 2, 3).flatten(0, 1)
    side = round(crop * 256 / 224)
    v = F.interpolate(v, size=(side, side), mode="bilinear", align_corners=False)
    o = (side - crop) // 2
    v = v[:, :, o:o + crop, o:o + crop].reshape(n, t, 3, crop, crop)
    return (v - CLIP_MEAN) / CLIP_STD


def temporal_param_names(method: str, names: list[str]) -> list[str]:
    keys = {"aim": ("T_Adapter", "temporal_embedding"), "msta": ("temporal.conv",),
            "st_adapter": ("conv",), "vitaclip": ("summary", "message", "temporal"),
            "xclip": ("message_", "mit.positional_embedding")}.get(method, ())
    return [n for n in names if any(k in n for k in keys)]


def grad_norms(model: torch.nn.Module, method: str) -> dict[str, float]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    temporal = set(temporal_param_names(method, [n for n, _ in named]))

    def norm(sel):
        gs = [p.grad.norm() ** 2 for n, p in named if sel(n) and p.grad is not None]
        return float(torch.stack(gs).sum().sqrt()) if gs else 0.0
    return {"grad_temporal": norm(lambda n: n in temporal), "grad_other": norm(lambda n: n not in temporal),
            "w_temporal": float(torch.stack([p.detach().norm() ** 2 for n, p in named if n in temporal]).sum().sqrt())
            if temporal else 0.0}


@torch.no_grad()
def evaluate(model, x, y, t, crop, batch=32) -> dict[str, float]:
    model.eval()
    feats, rfeats, scores = [], [], []
    text = model.text_features(CLASSNAMES)
    for i in range(0, len(x), batch):
        v = frames_of(x[i:i + batch], t, None, crop)
        f = model.encode_video(v)
        fr = model.encode_video(v.flip(1))
        feats.append(f)
        rfeats.append(fr)
        scores.append(model.logits(f, text))
    s = torch.cat(scores).numpy()
    f, fr = torch.cat(feats), torch.cat(rfeats)
    pa = pair_accuracy(s, y, CLASSNAMES, ORDER_PAIRS)
    return {"top1": float(100 * (s.argmax(1) == y).mean()), "pair_acc": pa["pair_accuracy"],
            "per_pair": pa["per_pair"],
            "order_sens": float((1 - (f * fr).sum(-1)).mean()),
            "pair_text_cos": float(np.mean([float(text[CLASSNAMES.index(a)] @ text[CLASSNAMES.index(b)])
                                            for a, b in ORDER_PAIRS if a in CLASSNAMES]))}


def parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--lr", type=float, default=None, help="default: the method's own")
    ap.add_argument("--wd", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--diag-steps", type=int, default=0, help="print grad norms for the first N steps")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N epochs (curve)")
    ap.add_argument("--recipe", action="append", default=[], help="embedded recipe field=value (e.g. reversal_twins=true)")
    ap.add_argument("--data-cache", default=None, help="embedded dataset cache (default: the user's)")
    ap.add_argument("--out", default=None, help="append the result as a JSON line here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    recipe = EmbeddedRecipe(**parse_sets(args.recipe))
    root = ensure_embedded_dataset(args.data_cache, recipe)
    xtr, ytr = load_split(root, "train")
    xva, yva = load_split(root, "val")
    clip, spec = create_clip("harness-tiny", pretrained="synthetic")
    crop = spec.image_size
    opts = parse_sets(args.sets)
    model = build_method(args.method, clip, get_tokenizer(spec), args.frames, opts, CLASSNAMES)
    if model.run_needs(model.config) & DESCRIPTION_NEEDS:  # the method contract (methods/base.py)
        source = model.description_source(model.config) or "etl4video"
        descs = load_descriptions(source, root, "embedded", model.descriptions_per_class(model.config), list(range(12)))
        model.set_descriptions(CLASSNAMES, descs.spatial, descs.temporal)
    lr = args.lr if args.lr is not None else model.config.lr
    wd = args.wd if args.wd is not None else getattr(model.config, "weight_decay", 0.0)
    groups = [{"params": g.params, "weight_decay": wd if g.weight_decay else 0.0, "lr_scale": g.lr_scale}
              for g in model.param_groups()]
    opt = torch.optim.AdamW(groups, lr=lr) if groups else None
    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    total, warm = args.epochs * steps_per_epoch, steps_per_epoch

    def lr_at(step):
        if step < warm:
            return lr * (step + 1) / warm
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    start = time.time()
    curve, losses, step = [], [], 0
    res0 = evaluate(model, xva, yva, args.frames, crop)
    curve.append({"epoch": 0, **{k: v for k, v in res0.items() if k != "per_pair"}})
    for epoch in range(args.epochs if opt else 0):
        model.train()
        perm = rng.permutation(len(xtr))
        ep_loss = []
        for i in range(0, len(perm), args.batch):
            b = perm[i:i + args.batch]
            v = frames_of(xtr[b], args.frames, rng, crop)
            labels = torch.from_numpy(ytr[b])
            logits = model(v, CLASSNAMES)
            loss = sum(model.losses(logits, labels, CLASSNAMES).values())
            opt.zero_grad()
            loss.backward()
            if step < args.diag_steps:
                print(json.dumps({"step": step, "loss": round(float(loss), 4), **grad_norms(model, args.method)}), flush=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(step) * g["lr_scale"]
            opt.step()
            step += 1
            ep_loss.append(float(loss))
        losses.append(float(np.mean(ep_loss)))
        if args.eval_every and (epoch + 1) % args.eval_every == 0 and epoch + 1 < args.epochs:
            r = evaluate(model, xva, yva, args.frames, crop)
            curve.append({"epoch": epoch + 1, "loss": losses[-1], **{k: v for k, v in r.items() if k != "per_pair"}})
            print(json.dumps(curve[-1]), flush=True)
    res = evaluate(model, xva, yva, args.frames, crop)
    tr = evaluate(model, xtr, ytr, args.frames, crop)  # memorised vs learnt: the same on training videos
    res.update(train_top1=tr["top1"], train_pair_acc=tr["pair_acc"], train_order_sens=tr["order_sens"])
    curve.append({"epoch": args.epochs, "loss": losses[-1] if losses else None,
                  **{k: v for k, v in res.items() if k != "per_pair"}})
    record = {"method": args.method, "recipe": parse_sets(args.recipe), "lr": lr, "wd": wd, "epochs": args.epochs, "frames": args.frames,
              "seed": args.seed, "sets": opts, "seconds": round(time.time() - start, 1),
              "epoch_loss": [round(x, 4) for x in losses], **res, "curve": curve}
    print(json.dumps(record), flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
