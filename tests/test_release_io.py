"""The release reader (`harness.convert.release_io`) on the configuration objects trainers pickle
beside their weights: each is written here by a class named and pickled as the real one is
(argparse's own Namespace; stand-in modules for easydict and mmcv, which need not be installed),
read back as plain data without importing them, and found as the training configuration."""
from __future__ import annotations

import argparse
import contextlib
import sys
import types
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.convert.release_io import load_release, python_config, text_config


@contextlib.contextmanager
def fake_module(name: str, **classes):
    """Install module `name` holding `classes` (their __module__ set to it) while a file is written."""
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__ = name, cls_name
        setattr(module, cls_name, cls)
    parents = name.split(".")
    added = [".".join(parents[:i]) for i in range(1, len(parents))]
    for parent in added:
        sys.modules.setdefault(parent, types.ModuleType(parent))
    sys.modules[name] = module
    try:
        yield module
    finally:
        for mod in [name, *added]:
            sys.modules.pop(mod, None)


def test_namespace_easydict_and_numpy(tmp_path):
    class EasyDict(dict):  # easydict: items mirrored as attributes
        def __init__(self, d=None):
            super().__init__(d or {})
            for k, v in self.items():
                object.__setattr__(self, k, v)

    path = Path(tmp_path) / "ckpt.pth"
    args = argparse.Namespace(lr=np.float64(1e-3), num_frames=8, layers=[1, 2], path=Path("/data/x"))
    with fake_module("easydict", EasyDict=EasyDict):
        torch.save({"model": {"w": torch.ones(2)}, "args": args, "meta": {"cfg": EasyDict({"model": {"frames": 8}})},
                    "stats": OrderedDict(acc=np.array([0.5, 0.75])), "counts": defaultdict(int, {"a": 1}),
                    "best": np.float32(71.5)}, path)
    assert "easydict" not in sys.modules
    release = load_release(path)
    assert release.config_key == "args" and release.config_kind == "argparse Namespace"
    assert release.config == {"lr": 1e-3, "num_frames": 8, "layers": [1, 2], "path": "/data/x"}
    assert type(release.config["lr"]) is float
    assert release.content["meta"]["cfg"] == {"model": {"frames": 8}} and type(release.content["meta"]["cfg"]) is dict
    assert release.content["stats"] == {"acc": [0.5, 0.75]} and release.content["counts"] == {"a": 1}
    assert release.content["best"] == 71.5 and torch.equal(release.content["model"]["w"], torch.ones(2))
    assert any("meta.cfg: EasyDict read as plain data" in line for line in release.read)


def test_mmcv_config_object_and_text(tmp_path):
    class ConfigDict(dict):  # addict-style: pickled as its items
        def __getstate__(self):
            return dict(self)

        def __setstate__(self, state):
            self.update(state)

    class Config:  # mmcv.utils.config.Config pickles (cfg_dict, filename, text)
        def __init__(self, cfg):
            self._state = (ConfigDict(cfg), "cfg.py", "model = dict(...)")

        def __getstate__(self):
            return self._state

    path = Path(tmp_path) / "mm.pth"
    with fake_module("mmcv.utils.config", Config=Config, ConfigDict=ConfigDict):
        torch.save({"state_dict": {"w": torch.zeros(1)},
                    "meta": {"config": Config({"model": {"backbone": {"adapter_scale": 1.0}}})}}, path)
    release = load_release(path)
    assert release.config_key == "meta.config" and release.config_kind == "mmcv Config"
    assert release.setting("model.backbone.adapter_scale") == 1.0


def test_config_text():
    text = "model = dict(\n    type='Recognizer3D',\n    backbone=dict(adapter_scale=1, num_tadapter=2, pretrained=None),\n" \
           "    lr=-3e-4, sizes=(224, 224), evil=__import__('os').system('x'))\ntotal_epochs = 50\n"
    parsed = python_config(text)
    assert parsed["model"]["backbone"] == {"adapter_scale": 1, "num_tadapter": 2, "pretrained": None}
    assert parsed["model"]["lr"] == -3e-4 and parsed["model"]["sizes"] == (224, 224)
    assert parsed["model"]["evil"] == "__import__('os').system('x')"  # kept as text, never run
    assert parsed["total_epochs"] == 50
    assert text_config("DATA:\n  NUM_FRAMES: 8\n") == ({"DATA": {"NUM_FRAMES": 8}}, "YAML text")
    assert text_config("just words") == (None, "text")


@pytest.mark.parametrize("payload", ["builtins.eval", "subprocess.call"])
def test_other_globals_are_refused_before_they_run(tmp_path, payload):
    import pickle

    from harness.safe_load import ForeignCode

    module, name = payload.rsplit(".", 1)

    class Payload:
        def __reduce__(self):
            return getattr(__import__(module), name), ("1",)

    path = Path(tmp_path) / "x.pth"
    torch.save({"model": {"w": torch.ones(1)}, "extra": Payload()}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ForeignCode, match=f"its pickle names {payload}"):
        load_release(path)
