"""The yacs `CfgNode` that ViFi-CLIP and X-CLIP releases carry, read the same way for both.

Both code bases save it as `config` beside the weights (`utils/tools.epoch_saving`), and
ViFi-CLIP's `utils/config.py` extends X-CLIP's, so the settings that say how the release was
trained share their names: `DATA.NUM_FRAMES`, `DATA.NUM_CLASSES`, `DATA.LABEL_LIST` (a file of
the code base's `labels/` folder; X-CLIP's four are byte-identical to ViFi-CLIP's files of the
same name, which the upstream store pins) and `MODEL.ARCH` (`ViT-B/16`). A converter records
what it read in `BuildPlan.from_config` and refuses a release whose config contradicts its
tensors or `--backbone`.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.convert.base import BuildPlan, ConvertRequest
from harness.errors import HarnessError

#: The training settings both code bases store under these names.
SHARED_SETTINGS = ("DATA.NUM_FRAMES", "DATA.NUM_CLASSES", "DATA.LABEL_LIST", "MODEL.ARCH")


def record_settings(release, plan: BuildPlan, keys: Iterable[str]) -> None:
    """Copy the settings among `keys` that the release's config holds into `plan.from_config`."""
    for key in keys:
        value = release.setting(key)
        if value is not None:
            plan.from_config[key] = value


def check_arch(request: ConvertRequest, arch, where: str) -> None:
    """`MODEL.ARCH` (`ViT-B/16`) against `--backbone` (`ViT-B-16`, `-quickgelu` or not); other
    backbones (the test ones) cannot be compared and pass."""
    backbone = request.backbone.removesuffix("-quickgelu")
    if isinstance(arch, str) and "/" in arch and backbone.startswith("ViT-") and arch.replace("/", "-") != backbone:
        raise HarnessError(f"{where} MODEL.ARCH={arch}) was trained on another CLIP than --backbone "
                           f"{request.backbone}; pass --backbone {arch.replace('/', '-')}")


def label_list_classes(label_list: str, request: ConvertRequest, plan: BuildPlan) -> list[str] | None:
    """The classes of `DATA.LABEL_LIST` (`labels/<file>.csv`) from the pinned upstream copy of
    ViFi-CLIP's `labels/` (X-CLIP's files are the same bytes), with a note saying where they came
    from; None (and a note why) when that file is not pinned or not at hand."""
    from harness.data.annotations import read_class_csv
    from harness.data.upstream import UpstreamStore

    rel = "vifi-clip/" + label_list.lstrip("./")
    store = UpstreamStore(cache_dir=None if request.cache_dir is None else Path(request.cache_dir) / "upstream",
                          splits_root=request.splits_root)
    try:
        names = read_class_csv(store.path(rel))
    except (HarnessError, KeyError) as err:
        plan.notes.append(f"DATA.LABEL_LIST={label_list}: not used ({str(err).splitlines()[0][:160]})")
        return None
    plan.notes.append(f"training classes from DATA.LABEL_LIST: upstream {rel}")
    return names
