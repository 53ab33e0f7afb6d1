#!/usr/bin/env bash
# Download, on a machine with a package index, the wheels that scripts/gpu_bench.sh installs on an
# offline GPU host whose Python has torch (+ torchvision, numpy) but not open_clip.
# Why these: open_clip 3.3 imports regex, ftfy (which needs wcwidth) and tqdm at import time;
# huggingface_hub, safetensors and timm are optional there and not needed for random-init models.
#   bash scripts/fetch_gpu_wheels.sh            # -> .gpu_wheels/ (about 3.3 MB)
# Env: GPU_WHEELS (target folder), GPU_PYTHON_VERSION (default 3.12), PIP (default: .venv's pip).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${GPU_WHEELS:-$ROOT/.gpu_wheels}
PYVER=${GPU_PYTHON_VERSION:-3.12}
PIP=${PIP:-$ROOT/.venv/bin/pip}
ABI="cp${PYVER/./}"
mkdir -p "$DEST"
"$PIP" download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any \
  open_clip_torch==3.3.0 ftfy wcwidth regex tqdm
if [ "${GPU_DECODE:-0}" = 1 ]; then  # the optional data.decoder=gpu extra (match the host's torch)
  "$PIP" download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    "torchcodec${TORCHCODEC_VERSION:+==$TORCHCODEC_VERSION}"
fi
ls -l "$DEST"
