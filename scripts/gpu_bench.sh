#!/usr/bin/env bash
# Benchmark every registered method on a lent, offline GPU host in ONE run of under ~8 minutes:
# training-step and inference throughput, peak memory and MFU at batch 32 x 8 frames x 224 px,
# bf16 autocast, first eager, then with torch.compile (as many methods as the time left allows).
#
#   bash scripts/gpu_bench.sh                      # on the GPU host (OUT=... for the results folder)
#   GPU_BENCH_SMOKE=1 bash scripts/gpu_bench.sh    # anywhere, on CPU: harness-tiny, batch 2 (~1 min)
#
# Needs only a python3 with torch: open_clip_torch, ftfy, wcwidth, regex and tqdm are installed,
# if missing, from the wheels in .gpu_wheels/ (made by scripts/fetch_gpu_wheels.sh; no network).
# No mmengine / mmaction2 needed. Writes $OUT/gpu_bench.json (rows, updated as they come),
# $OUT/gpu_bench.md (table stamped with card, driver, torch/CUDA), $OUT/gpu_bench.log, $OUT/env.txt.
# Env: OUT, PYTHON, GPU_WHEELS, GPU_SITE, GPU_BENCH_BUDGET (seconds, default 470),
#      GPU_BENCH_METHODS (eager pass, default all), GPU_BENCH_COMPILE_METHODS (empty = no compile pass).
set -uo pipefail
T0=$(date +%s)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_bench_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-$ROOT/.gpu_wheels}
SITE=${GPU_SITE:-${TMPDIR:-/tmp}/harness_gpu_site}
SMOKE=${GPU_BENCH_SMOKE:-0}
BUDGET=${GPU_BENCH_BUDGET:-470}
exec > >(tee -a "$OUT/gpu_bench.log") 2>&1

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
say() { echo "[gpu_bench +$(elapsed)s] $*"; }

# -- 1. dependencies from local wheels (only what the host lacks: nothing is shadowed) ----------
mkdir -p "$SITE"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
have() { "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }
install_wheel() {
  local whl
  whl=$(ls "$WHEELS/$1"-*.whl 2>/dev/null | head -n 1)
  if [ -z "$whl" ]; then say "no wheel for $1 in $WHEELS (run scripts/fetch_gpu_wheels.sh)"; return 1; fi
  # pip if the host has it; else unzip (a wheel is a zip laid out for site-packages).
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$whl" 2>/dev/null \
    || "$PY" -m zipfile -e "$whl" "$SITE"
}
for pair in wcwidth:wcwidth ftfy:ftfy regex:regex tqdm:tqdm open_clip:open_clip_torch; do
  mod=${pair%%:*}; dist=${pair#*:}
  if have "$mod"; then say "have $mod"; else install_wheel "$dist" && say "installed $dist into $SITE"; fi
done
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv 2>&1 \
    || echo "no nvidia-smi"
  echo "C compiler (inductor/triton): $(command -v gcc || command -v cc || echo none)"
} > "$OUT/env.txt" 2>&1
# One interpreter both proves the imports work and stamps the versions.
if ! "$PY" - >> "$OUT/env.txt" 2>&1 <<'PYEOF'
import platform, torch, open_clip, ftfy, regex, tqdm
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuda available", torch.cuda.is_available(), "| open_clip", open_clip.__version__)
if torch.cuda.is_available():
    print("card", torch.cuda.get_device_name(0), "| cudnn", torch.backends.cudnn.version())
PYEOF
then
  cat "$OUT/env.txt"; say "FATAL: torch/open_clip not importable with PYTHONPATH=$PYTHONPATH"; exit 2
fi
cat "$OUT/env.txt"
if [ "$SMOKE" != 1 ] && ! grep -q "cuda available True" "$OUT/env.txt"; then
  say "FATAL: torch sees no CUDA device (a CPU run of batch 32 x ViT-B/16 would never finish)"; exit 3
fi

# -- 2. settings --------------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  COMMON=(--smoke --amp none --set vificlip_prompt.depth=4)
  EAGER=(--iters 2 --warmup 1)
  COMPILE=(--iters 2 --warmup 1 --no-baseline --modes infer)
  COMPILE_METHODS=${GPU_BENCH_COMPILE_METHODS-zeroshot}
else
  COMMON=(--device cuda --batch 32 --frames 8 --image-size 224 --amp bf16 --num-classes 400)
  EAGER=(--iters 12 --warmup 4)
  COMPILE=(--iters 8 --warmup 3 --no-baseline)
  # Frozen-CLIP inference first (the 1,200 clips/s target), then the methods with reference numbers.
  COMPILE_METHODS=${GPU_BENCH_COMPILE_METHODS-zeroshot,st_adapter,aim,vificlip,vitaclip,msta,vificlip_prompt,xclip,mote,ost,froster}
fi
JSON="$OUT/gpu_bench.json"
rm -f "$JSON"

# -- 3. eager pass: every method (starts no new method after 38% of the budget) -----------------
say "eager pass"
timeout --kill-after=10 $(( BUDGET * 50 / 100 - $(elapsed) )) \
  "$PY" -m harness.measure.bench --methods "${GPU_BENCH_METHODS:-all}" "${COMMON[@]}" "${EAGER[@]}" \
    --time-budget $(( BUDGET * 38 / 100 - $(elapsed) )) --json "$JSON"
say "eager pass exit $?"

# -- 4. compiled pass, as far as the budget goes (each method: ~1-2 min of compilation) ----------
if [ -n "$COMPILE_METHODS" ] && [ "$(left)" -gt 120 ]; then
  say "compile pass: $COMPILE_METHODS"
  timeout --kill-after=10 $(( $(left) - 20 )) \
    "$PY" -m harness.measure.bench --compile --methods "$COMPILE_METHODS" "${COMMON[@]}" "${COMPILE[@]}" \
      --time-budget $(( $(left) - 130 )) --json "$JSON" --append
  say "compile pass exit $?"
else
  say "compile pass skipped ($(left) s left)"
fi

# -- 5. report ------------------------------------------------------------------------------------
if [ -s "$JSON" ]; then
  "$PY" -m harness.measure.bench --report-only --json "$JSON" --md "$OUT/table.md.tmp" > /dev/null
  {
    echo "# GPU bench ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo '```'
    cat "$OUT/env.txt"
    echo '```'
    echo
    cat "$OUT/table.md.tmp"
  } > "$OUT/gpu_bench.md"
  rm -f "$OUT/table.md.tmp"
  cat "$OUT/gpu_bench.md"
else
  say "no rows measured"
fi
say "done in $(elapsed) s"
