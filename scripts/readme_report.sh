#!/usr/bin/env bash
# Regenerates the README's example table and figure from the embedded benchmark (CPU): base-to-novel
# on the generated dataset (profile `embedded`), 3 splits, every method; then `harness report`.
# Shares its results folder with scripts/embedded_benchmark.sh (finished jobs are skipped).
# Usage: bash scripts/readme_report.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
OUT=results/embedded/base2novel
"$PY" -m harness.cli run --methods zeroshot,st_adapter,aim,msta,vitaclip,vificlip,vificlip_prompt,xclip,ost --protocol base2novel \
    --out "$OUT" --no-progress >/dev/null
"$PY" -m harness.cli report "$OUT" --format md,csv --out "$OUT/report" >/dev/null
mkdir -p docs/img
cp "$OUT/report/plots/params_base2novel-embedded.png" docs/img/params_base2novel-embedded.png
sed -n '/^## Base-to-novel: embedded/,/^## /p' "$OUT/report/report.md" | sed '$d'
