"""`--dataset folder:/path` (one sub-folder of videos per class), `harness predict`, and loading
a run checkpoint for inference."""
from __future__ import annotations

import json
import shutil

import pytest

from harness.cli import main
from harness.data.folder import VAL_FRACTION, scan_folder
from harness.errors import HarnessError

#: Embedded-dataset classes that a frozen CLIP tells apart by colour and shape alone.
EASY = {"red_circle": "red_circle_bounce", "yellow_star": "yellow_star_pulse", "blue_square": "blue_square_shake"}


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory, embedded_root):
    """Three class folders of five embedded training videos each."""
    root = tmp_path_factory.mktemp("myvideos")
    for folder, stem in EASY.items():
        (root / folder).mkdir()
        for i in range(5):
            shutil.copy(embedded_root / "videos" / f"train_{stem}_{i:03d}.mp4", root / folder / f"clip {i}.mp4")
    return root


def test_scan_names_classes_and_splits_deterministically(video_folder, tmp_path):
    split = scan_folder(video_folder)
    assert split.classnames == ["blue square", "red circle", "yellow star"]  # sorted folders, _ -> space
    assert len(split.val) == 3 * 1 and len(split.train) == 3 * 4  # ceil(0.2 * 5) = 1 per class
    assert VAL_FRACTION == 0.2
    assert {label for _, label in split.val} == {0, 1, 2}
    assert not {p for p, _ in split.val} & {p for p, _ in split.train}
    copy = tmp_path / "copy"
    shutil.copytree(video_folder, copy)
    assert scan_folder(copy) == split  # depends only on the relative paths, not on where or when


def test_bad_folders_are_clear_errors(tmp_path):
    (tmp_path / "only_class").mkdir()
    with pytest.raises(HarnessError, match="at least two"):
        scan_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(HarnessError, match="empty_class: no videos"):
        scan_folder(tmp_path)


@pytest.mark.parametrize("protocol, extra", [("fully_supervised", []), ("few_shot", ["--shots", "2"])])
def test_folder_dataset_runs_end_to_end(protocol, extra, video_folder, harness_cache, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["run", "--methods", "st_adapter", "--protocol", protocol, "--dataset", f"folder:{video_folder}",
                 "--backbone", "harness-tiny", "--pretrained", "random", "--profile", "tiny", "--cache",
                 str(harness_cache), "--out", str(out), "--no-progress", *extra])
    assert code == 0, capsys.readouterr().err
    (record,) = [json.loads(p.read_text()) for p in out.glob("jobs/*/metrics.json")]
    split = record["job"]["file_provenance"]["splits/val.txt"]
    assert split["val_videos"] == 3 and split["train_videos"] == 12 and "sha256" in split["split_rule"]
    assert record["metrics"]["evals"]["val"]["n"] == 3
    assert record["job"]["train"]["classnames"] == ["blue square", "red circle", "yellow star"]
    if protocol == "few_shot":  # 2 of the 4 training videos per class, sampled with the seed
        assert record["metrics"]["train"]["videos"]["used"] == 6


def test_run_checkpoint_loads_for_inference(video_folder, harness_cache, tmp_path, capsys):
    """A run's checkpoint (trainable parameters + backbone identity) rebuilds the job's model."""
    import torch

    from harness.convert.checkpoint import load_checkpoint

    out = tmp_path / "results"
    assert main(["run", "--methods", "st_adapter", "--protocol", "fully_supervised", "--dataset",
                 f"folder:{video_folder}", "--backbone", "harness-tiny", "--pretrained", "random", "--profile",
                 "tiny", "--cache", str(harness_cache), "--out", str(out), "--no-progress",
                 "--set", "st_adapter.head=linear"]) == 0
    (ckpt,) = out.glob("jobs/*/work/epoch_*.pth")
    loaded = load_checkpoint(ckpt, method="st_adapter")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    params = dict(loaded.net.named_parameters())
    assert loaded.kind == "run" and loaded.classnames == ["blue square", "red circle", "yellow star"]
    assert {k.removeprefix("net.") for k in saved} == {n for n, p in params.items() if p.requires_grad}
    for key, value in saved.items():
        assert torch.equal(params[key.removeprefix("net.")], value)
    with pytest.raises(HarnessError, match="checkpoint of method 'st_adapter'"):
        load_checkpoint(ckpt, method="aim")
    # The linear head scores exactly its training classes; predict defaults to them.
    video = next(video_folder.glob("red_circle/*.mp4"))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), "--top", "3", "--format", "json", str(video)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert sorted(name for name, _ in row["top"]) == ["blue square", "red circle", "yellow star"]


@pytest.mark.slow  # pretrains the synthetic harness-tiny once per test cache (~35 s) unless already there
def test_predict_easy_case(video_folder, harness_cache, capsys):
    videos = [str(next(video_folder.glob(f"{folder}/*.mp4"))) for folder in EASY]
    code = main(["predict", "--classes", "a red circle,a yellow star,a blue square", "--cache", str(harness_cache),
                 "--format", "json", *videos])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["top"][0][0] for row in rows] == ["a red circle", "a yellow star", "a blue square"]
    assert all(abs(sum(score for _, score in row["top"]) - 1.0) < 1e-3 for row in rows)  # softmax over 3 classes


def _two_classes(root, embedded_root, names=("left", "right")):
    for name, stem in zip(names, ("move_left", "move_right")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            shutil.copy(embedded_root / "videos" / f"train_{stem}_{i:03d}.mp4", root / name / f"clip {i}.mp4")
    return root


def test_a_class_folder_starting_with_a_space_has_all_its_videos(embedded_root, tmp_path):
    """` left/` (leading space): its videos are listed so that they are found again, none missing."""
    from harness.data.datasets import get_dataset
    from harness.data.folder import prepare_folder
    from harness.data.pipeline import usable_entries

    root = _two_classes(tmp_path / "videos", embedded_root, names=(" left", "right"))
    lists, _ = prepare_folder(get_dataset(f"folder:{root}"), str(tmp_path / "cache"))
    for name in ("train", "val"):
        present, info = usable_entries(str(lists / "splits" / f"{name}.txt"), root, 2, "video", "error", 0.0)
        assert info["missing"] == 0 and len(present) == info["listed"] > 0
    assert scan_folder(root).classnames == ["left", "right"]


def test_class_folder_symlinks_that_loop_or_alias_are_refused(embedded_root, tmp_path):
    root = _two_classes(tmp_path / "videos", embedded_root)
    (root / "loop").symlink_to(root)  # the dataset folder inside itself
    with pytest.raises(HarnessError, match="loop: a symlink to .* contains the dataset folder itself"):
        scan_folder(root)
    (root / "loop").unlink()
    (root / "self").symlink_to(root / "self")  # ELOOP
    with pytest.raises(HarnessError, match="self: a symlink that does not resolve \\(a symlink loop\\)"):
        scan_folder(root)
    (root / "self").unlink()
    (root / "again").symlink_to(root / "left")  # the same videos under two classes
    with pytest.raises(HarnessError, match="again: a symlink to .* inside the dataset folder"):
        scan_folder(root)
    (root / "again").unlink()
    elsewhere = _two_classes(tmp_path / "other", embedded_root, names=("up", "down"))
    (root / "up").symlink_to(elsewhere / "up")  # a folder of its own elsewhere: a class like any
    assert scan_folder(root).classnames == ["left", "right", "up"]


def test_generated_lists_go_to_the_cache_root(embedded_root, tmp_path, monkeypatch):
    from harness.data.datasets import get_dataset
    from harness.data.folder import prepare_folder

    root = _two_classes(tmp_path / "videos", embedded_root)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "env-cache"))
    lists, _ = prepare_folder(get_dataset(f"folder:{root}"), None)
    assert lists.parent == tmp_path / "env-cache" / "folders" and (lists / "splits" / "train.txt").is_file()
    lists, _ = prepare_folder(get_dataset(f"folder:{root}"), str(tmp_path / "given"))  # --cache wins
    assert lists.parent == tmp_path / "given" / "folders"
