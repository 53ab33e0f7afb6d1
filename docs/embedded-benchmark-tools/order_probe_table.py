"""Markdown table of order_probe.py JSON lines: python scripts/order_probe_table.py runs.jsonl ..."""
import json
import sys

print("| method | recipe | T | lr | options | seed | val top-1 | val pair acc | per pair (L/R, grow, rot, appear) | order_sens | pair text cos | train top-1 / pair acc | train loss ep1 -> ep15 | curve: val pair acc @ ep 5 / 10 | s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for f in sys.argv[1:]:
    for l in open(f):
        r=json.loads(l)
        pp=" / ".join(str(round(v)) for v in r['per_pair'].values())
        tp = "%.1f / %.1f" % (r["train_top1"], r["train_pair_acc"]) if "train_top1" in r else "-"
        cv = " / ".join("%.1f" % c["pair_acc"] for c in r["curve"] if c["epoch"] in (5, 10))
        opts = ", ".join(f"{k}={v}" for k, v in r['sets'].items()) or "defaults"
        rec = 'twins' if r.get('recipe', {}).get('reversal_twins') else 'default'
        print(f"| {r['method']} | {rec} | {r['frames']} | {r['lr']:g} | {opts} | {r['seed']} | {r['top1']:.1f} | **{r['pair_acc']:.1f}** | {pp} | {r['order_sens']:.1e} | {r['pair_text_cos']:.2f} | {tp} | {(('%.2f -> %.2f' % (r['epoch_loss'][0], r['epoch_loss'][-1])) if r['epoch_loss'] else '-')} | {cv} | {r['seconds']:.0f} |")
