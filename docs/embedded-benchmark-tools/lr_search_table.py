"""Every setting of the fixed-budget lr search (scripts/embedded_lr_search.sh) as a Markdown table,
and the lr each method gets (the best val top-1 on the tuning seed; ties go to the smaller lr).

Usage: python docs/embedded-benchmark-tools/lr_search_table.py results/embedded-lr-search
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from harness.data.embedded import ORDER_PAIRS
from harness.measure.order_pairs import pair_accuracy
from harness.metrics import accuracy_standard_error


def rows(run_dir: Path) -> list[dict]:
    out = []
    for metrics_file in sorted(run_dir.glob("jobs/*/metrics.json")):
        record = json.loads(metrics_file.read_text())
        job, metrics = record["job"], record["metrics"]
        pred = np.load(metrics_file.parent / "predictions" / "val.npz")
        pairs = pair_accuracy(pred["scores"], pred["labels"], [str(c) for c in pred["classnames"]], ORDER_PAIRS)
        vocab = metrics.get("vocabulary") or {}
        out.append({"method": job["method"], "lr": job["method_options"]["lr"], "seed": job["seed"],
                    "top1": metrics["evals"]["val"]["top1"], "videos": len(pred["labels"]),
                    "pairs": pairs["pair_accuracy"], "pair_videos": pairs["videos"],
                    "vocab": (vocab.get("before", {}).get("mean"), vocab.get("after", {}).get("mean")),
                    "loss": metrics["train"].get("final_loss"), "status": "ok"})
    for error_file in sorted(run_dir.glob("jobs/*/error.json")):
        config = json.loads((error_file.parent / "config.json").read_text())
        err = json.loads(error_file.read_text())
        out.append({"method": config["method"], "lr": config["method_options"]["lr"], "seed": config["seed"],
                    "status": f"failed: {err.get('message', '')[:60]}"})
    return out


def best_lr(table: list[dict]) -> dict[str, float]:
    best: dict[str, tuple[float, float]] = {}
    for r in table:
        if r["status"] != "ok":
            continue
        key = (r["top1"], -r["lr"])
        if r["method"] not in best or key > best[r["method"]][0]:
            best[r["method"]] = (key, r["lr"])
    return {m: lr for m, (_, lr) in sorted(best.items())}


def main(run_dir: str) -> None:
    table = sorted(rows(Path(run_dir)), key=lambda r: (r["method"], r["lr"]))
    chosen = best_lr(table)
    print("| method | lr | val top-1 (12 classes) ± SE | order-pair acc ± SE | vocab before -> after | final loss | chosen |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        if r["status"] != "ok":
            print(f"| {r['method']} | {r['lr']:g} | {r['status']} | | | | |")
            continue
        se, pse = accuracy_standard_error(r["top1"], r["videos"]), accuracy_standard_error(r["pairs"], r["pair_videos"])
        before, after = r["vocab"]
        vocab = f"{before:.1f} -> {after:.1f}" if before is not None else "-"
        loss = f"{r['loss']:.3f}" if isinstance(r["loss"], (int, float)) else "-"
        mark = "**yes**" if chosen.get(r["method"]) == r["lr"] else ""
        print(f"| {r['method']} | {r['lr']:g} | {r['top1']:.1f} ± {se:.1f} | {r['pairs']:.1f} ± {pse:.1f} | {vocab} | {loss} | {mark} |")
    print()
    print("chosen:", ", ".join(f"{m} {lr:g}" for m, lr in chosen.items()))


if __name__ == "__main__":
    main(sys.argv[1])
