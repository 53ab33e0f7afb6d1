"""`harness predict`: the top-k classes of video files, with a converted or run checkpoint, or
with a method built fresh (frozen zero-shot CLIP by default).

Videos go through the same MMAction2 test pipeline as evaluation (decode, sample T frames,
resize, centre crop) and the same normalisation and scoring (softmax over the given classes), so
a prediction here is what an evaluation of the same checkpoint would have scored.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError


def load_for_predict(args: argparse.Namespace) -> Any:
    """The model to predict with: from --checkpoint, or built from --method/--backbone."""
    from harness.convert.checkpoint import LoadedModel, build_model, load_checkpoint
    from harness.convert.cli import method_sets
    from harness.defaults import EMBEDDED_BACKBONE, SYNTHETIC_BACKBONES

    if args.checkpoint:
        if args.sets:
            raise HarnessError("--set does not apply with --checkpoint: the checkpoint records its options")
        return load_checkpoint(args.checkpoint, method=args.method, base=args.base, cache_dir=args.cache)
    method = args.method or "zeroshot"
    backbone = args.backbone or EMBEDDED_BACKBONE
    pretrained = args.pretrained or ("synthetic" if backbone in SYNTHETIC_BACKBONES else None)
    pretrained = None if pretrained == "random" else pretrained  # as `harness run --pretrained random`
    net, spec = build_model(method, backbone, pretrained, args.frames or 8, method_sets(args.sets, method),
                            None, cache_dir=args.cache)
    return LoadedModel(net=net, backbone=spec, classnames=None, kind="none",
                       recipe={"method": method, "backbone": backbone, "pretrained": pretrained})


def model_line(loaded: Any, checkpoint: str | None) -> str:
    """Which model scores the videos (printed to stderr before the predictions)."""
    spec, recipe = loaded.backbone, loaded.recipe
    weights = spec.get("pretrained") or "random init"
    if checkpoint:
        return (f"harness: scoring with {checkpoint} ({loaded.kind} checkpoint of {recipe.get('method')}, "
                f"{recipe.get('frames')} frames) on {spec['resolved_name']} / {weights}")
    trained = "not trained (frozen zero-shot CLIP)" if recipe["method"] == "zeroshot" else "untrained (fresh init)"
    return (f"harness: no --checkpoint: scoring with method {recipe['method']} on {spec['resolved_name']} / "
            f"{weights}, {trained}; pass --checkpoint for a trained or converted model")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything the libraries print while the model loads and the videos are scored goes to
    stderr (mmengine logs deprecation notices to stdout), so stdout holds only the predictions
    (`--format json` parses). Logging handlers that already write to stdout are pointed at
    stderr for the duration."""
    stdout = sys.stdout
    moved = [h for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
             if isinstance(logger, logging.Logger) for h in logger.handlers
             if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is stdout]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler in moved:
            handler.setStream(stdout)


def predict_videos(net: Any, videos: Sequence[str], classnames: Sequence[str], image_size: int,
                   frames: int, top: int = 5, backbone: Any = None) -> list[dict[str, Any]]:
    """[{video, top: [(class, score), ...]}] for each video, scores = softmax over `classnames`;
    frames normalised as `backbone` (its spec or the spec's dict; None: CLIP's) says."""
    from harness.data.pipeline import build_video_dataset, test_pipeline
    from harness.engine.model import VideoClassifier, pixel_normalization

    paths = [Path(v).expanduser().resolve() for v in videos]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise HarnessError(f"no such video file(s): {', '.join(missing)}")
    model = VideoClassifier(net, classnames, *pixel_normalization(backbone or {})).eval()
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "videos.txt"
        listing.write_text("".join(f"{p} 0\n" for p in paths))
        dataset, _ = build_video_dataset(listing, "/", test_pipeline(frames, image_size), num_classes=1,
                                         on_missing="error", test_mode=True)
        out = []
        with torch.no_grad():
            for path, i in zip(paths, range(len(dataset))):
                item = dataset[i]
                batch = model.data_preprocessor({"inputs": [item["inputs"]], "data_samples": [item["data_samples"]]})
                scores = model.view_averaged_scores(batch["inputs"])[0]
                values, index = scores.topk(min(top, len(classnames)))
                out.append({"video": str(path),
                            "top": [(classnames[j], round(float(v), 4)) for v, j in zip(values, index.tolist())]})
    return out


def predict_command(args: argparse.Namespace) -> int:
    from harness.convert.base import parse_classes

    if args.top < 1:
        raise HarnessError(f"--top {args.top}: must be at least 1 (the number of classes shown per video)")
    given = parse_classes(args.classes) if args.classes else None
    with stdout_to_stderr():
        loaded = load_for_predict(args)
        classnames = given or loaded.classnames
        if not classnames:
            raise HarnessError("--classes: name the classes to score ('a,b,c', an id,name CSV or a .txt with one "
                               "name per line); this model records no training classes")
        print(model_line(loaded, args.checkpoint), file=sys.stderr)
        net = loaded.net
        rows = predict_videos(net, args.videos, classnames, int(loaded.backbone["image_size"]),
                              args.frames or net.num_frames, args.top, backbone=loaded.backbone)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['video']}: " + ", ".join(f"{name} {score:.3f}" for name, score in row["top"]))
    return 0
