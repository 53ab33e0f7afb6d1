#!/usr/bin/env bash
# Creates ./.venv with the pinned stack (see requirements.txt for why each pin exists) and
# installs harness into it in editable mode. Idempotent: a second run only re-checks.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.harness-install-stamp
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install.sh: .venv is up to date"
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, alone: an unpinned torch elsewhere would pull a second multi-GB build.
.venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install --quiet -r requirements.txt
# mm* stack without its declared deps (they would drag two OpenCV builds into one cv2 folder).
.venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "$want" > "$stamp"
echo "install.sh: done"
