"""Defaults of a run that the CLI and library code share (stdlib only: importing it is free)."""
from __future__ import annotations

#: MSTA's logged seed.
DEFAULT_SEED = 2048
#: The backbone of the embedded default: a small CLIP pretrained by the project (`synthetic`).
EMBEDDED_BACKBONE = "harness-tiny"
#: Backbones whose default weights are the project's own `synthetic` ones (harness.weights):
#: the embedded default and its joint space-time twin (`--backbone harness-tiny-joint`).
SYNTHETIC_BACKBONES = (EMBEDDED_BACKBONE, "harness-tiny-joint")
#: The backbone of real datasets (the papers' CLIP ViT-B/16).
REAL_BACKBONE = "ViT-B-16"
