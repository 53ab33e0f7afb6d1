"""OST-style spatio / temporal descriptors of the embedded dataset's classes.

OST (tomchen-ctj/OST) describes every class by N short "spatio" descriptors (objects and looks, e.g.
"hairbrush", "tangled hair") and N "temporal" descriptors (the steps of the action, in order), in
`descriptors/<dataset>/{spatio,temporal}_descriptors/{N}_descriptors.json` keyed by the class id of
the dataset's label CSV. The embedded classes get the same, hand-written like their ETL4Video-style
descriptions (harness/data/embedded.py) from what the generator draws: N = 4, as OST's configs use.
A time-reversed class has the same spatio descriptors as its forward partner and the reversed,
mirrored steps.

The files are text generated from this module; a cache generated before they existed gets them
added (atomically) on first use, so the dataset's recipe hash, and every job id, stay as they were.
Change a descriptor only together with `GENERATOR_VERSION` in harness/data/embedded.py.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.atomic import atomic_write_text
from harness.errors import HarnessError

#: Descriptors per class and kind (OST's configs: TRAINER.OST.N = 4).
N_DESCRIPTORS = 4

_PLAIN = ("a single small shape", "a plain tinted background", "a white, cyan or pink shape",
          "a square, circle or triangle")
_POINTED = ("a pointed triangle", "an arrow-like shape", "a plain tinted background", "a white, cyan or pink shape")

#: class key -> (spatio, temporal) descriptors, N_DESCRIPTORS each.
OST_DESCRIPTORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # base classes
    "move_left": (_PLAIN, ("The shape appears near the right edge", "It slides steadily towards the left",
                           "It passes the middle of the frame", "It ends near the left edge")),
    "move_right": (_PLAIN, ("The shape appears near the left edge", "It slides steadily towards the right",
                            "It passes the middle of the frame", "It ends near the right edge")),
    "grow": (_PLAIN, ("The shape starts tiny", "It expands in place", "It keeps getting larger", "It ends large")),
    "shrink": (_PLAIN, ("The shape starts large", "It contracts in place", "It keeps getting smaller",
                        "It ends tiny")),
    "red_circle_bounce": (("a red circle", "a small round ball", "a grey background", "the bottom of the frame"),
                          ("The red circle falls downwards", "It hits the bottom", "It rises again",
                           "It repeats the bounce")),
    "blue_square_shake": (("a blue square", "a small box", "a grey background", "a shape at one spot"),
                          ("The square sits at one spot", "It jumps a little to one side", "It jumps back",
                           "It keeps trembling around the same spot")),
    # novel classes
    "rotate_cw": (_POINTED, ("The tip points up", "The tip turns to the right", "The tip turns to point down",
                             "The shape keeps turning like the hands of a clock")),
    "rotate_ccw": (_POINTED, ("The tip points up", "The tip turns to the left", "The tip turns to point down",
                              "The shape keeps turning against the hands of a clock")),
    "appear": (_PLAIN, ("Only the background is visible", "A faint shape shows up", "The shape becomes clearer",
                        "The shape is fully visible")),
    "disappear": (_PLAIN, ("The shape is fully visible", "The shape becomes fainter", "Only a faint shape is left",
                           "Only the background is visible")),
    "yellow_star_pulse": (("a yellow star", "a five-pointed star", "a grey background", "a shape at one spot"),
                          ("The star swells", "It shrinks back", "It swells again", "It keeps beating in place")),
    "purple_diamond_drift": (("a purple diamond", "a violet rhombus", "a grey background", "a small shape"),
                             ("The diamond starts at one spot", "It glides slowly",
                              "It moves a short distance without turning", "It comes to rest a little further on")),
    # zero-shot target classes
    "move_up": (_PLAIN, ("The shape appears near the bottom", "It rises steadily", "It passes the middle of the frame",
                         "It ends near the top")),
    "move_down": (_PLAIN, ("The shape appears near the top", "It sinks steadily", "It passes the middle of the frame",
                           "It ends near the bottom")),
    "brighten": (_PLAIN, ("The shape starts dark", "Its colour slowly lightens", "It glows stronger",
                          "It ends bright")),
    "darken": (_PLAIN, ("The shape starts bright", "Its colour slowly dims", "It fades towards black",
                        "It ends dark")),
    "green_triangle_spin": (("a green triangle", "a three-cornered shape", "a grey background", "a shape at one spot"),
                            ("The triangle sits in place", "It turns about its centre", "It keeps spinning round",
                             "It completes turn after turn")),
    "orange_circle_blink": (("an orange circle", "an orange disc", "a grey background", "a shape at one spot"),
                            ("The circle is visible", "It switches off", "It switches on again",
                             "It keeps flashing in and out of view")),
}

_KIND_DIRS = {"spatio": 0, "temporal": 1}


def descriptor_relpath(dataset_key: str, kind: str, n: int = N_DESCRIPTORS) -> str:
    """Path of one descriptor file relative to the dataset root (OST's layout under `descriptors/`)."""
    return f"descriptors/{dataset_key}/{kind}_descriptors/{n}_descriptors.json"


def descriptor_files(class_sets: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Relative path -> JSON text of every descriptor file, for each (dataset key -> class keys in
    label-CSV order)."""
    files = {}
    for dataset_key, keys in class_sets.items():
        unknown = [k for k in keys if k not in OST_DESCRIPTORS]
        if unknown:
            raise HarnessError(f"embedded OST descriptors: no descriptors for class key(s) {unknown}")
        for kind, slot in _KIND_DIRS.items():
            table = {str(i): list(OST_DESCRIPTORS[k][slot]) for i, k in enumerate(keys)}
            files[descriptor_relpath(dataset_key, kind)] = json.dumps(table, indent=2) + "\n"
    return files


def ensure_descriptor_files(root: Path, class_sets: Mapping[str, Sequence[str]]) -> None:
    """Write every descriptor file `root` lacks (each atomically; an existing one is left as is)."""
    for rel, text in descriptor_files(class_sets).items():
        path = root / rel
        if path.is_file():
            continue
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise HarnessError(f"cannot add the OST descriptors {path} to the embedded dataset: {exc}. Make "
                               f"{root} writable or delete it to regenerate it") from exc
