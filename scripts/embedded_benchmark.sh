#!/usr/bin/env bash
# Every number of the embedded benchmark in the README and docs/embedded-benchmark.md (issue 17),
# on the `embedded` profile (benchmark dataset recipe, 4 frames, per-method lrs from
# scripts/embedded_lr_search.sh). CPU, about 75 minutes on 2 cores; reruns skip finished jobs.
#   1. base-to-novel, every method, splits 1-3 (seed 2048): base / novel / HM, vocabulary before/after
#   2. order pairs, every method, seeds 1-3 (the lr search used seed 0), 30 and 10 epochs
#   3. MSTA ablations on base-to-novel: adapter rank and consistency-loss weight
# Usage: bash scripts/embedded_benchmark.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
ALL=zeroshot,st_adapter,aim,msta,vitaclip,vificlip,vificlip_prompt,xclip,ost
R=results/embedded
"$PY" -m harness.cli run --methods "$ALL" --protocol base2novel --out "$R/base2novel" --no-progress || true
for epochs in 30 10; do   # 30: the reported budget; 10: the lr-search budget (AIM is at chance there)
  sfx=$([ "$epochs" = 30 ] && echo "-30" || echo "")
  "$PY" -m harness.cli bench --order-pairs --methods "$ALL" --seeds 1,2,3 --epochs "$epochs" --out "$R/order-pairs$sfx" \
      --md "$R/order-pairs$sfx.md" --json "$R/order-pairs$sfx.json" || true
done
"$PY" -m harness.cli run --methods msta --protocol base2novel --sweep msta.rank=16,64,256 --out "$R/msta-rank" --no-progress || true
"$PY" -m harness.cli run --methods msta --protocol base2novel --sweep msta.alpha=0,1,4 --out "$R/msta-alpha" --no-progress || true
for d in base2novel msta-rank msta-alpha; do
  "$PY" -m harness.cli report "$R/$d" --format md,csv --out "$R/$d/report" >/dev/null || true
done
