"""Published recipes (protocols/recipes/*.yaml, harness.recipes): listing, which values a job
takes under the shared and the paper schedule, precedence, and loud errors on bad recipe files."""
from __future__ import annotations

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.jobs.expand import RunRequest, expand_jobs
from harness.recipes import resolve_recipe


def _request(dataset, protocol, methods, **kw):
    base = dict(methods=methods, protocol=protocol, dataset=dataset, backbone="harness-tiny", pretrained=None,
                splits=[1], seed=1, method_options={}, schedule_overrides={}, data_overrides={}, profile=None,
                data_root="/nonexistent/data")
    base.update(kw)
    return RunRequest(**base)


def _ls(capsys, *args):
    assert main(["ls", "recipes", *args]) == 0
    return capsys.readouterr().out


def test_ls_recipes_vificlip_shows_published_lrs_with_sources(capsys):
    out = _ls(capsys, "--method", "vificlip")
    blocks = out.split("\n  vificlip / ")[1:]
    by_key = {b.split(" [")[0]: b for b in blocks}
    fs = by_key["fully_supervised / k400"]
    assert "[published]" in fs and "lr=2.2e-05" in fs
    assert "source: muzairkhattak/ViFi-CLIP@" in fs and "16_16_vifi_clip.yaml" in fs
    zs = by_key["zero_shot / k400"]
    assert "[published]" in zs and "lr=8e-06" in zs and "configs/zero_shot/train/k400/16_16_vifi_clip.yaml" in zs
    # the embedded dataset has no published recipe: its row says it uses the protocol-level default
    emb = by_key["zero_shot / embedded"]
    assert "[protocol default]" in emb and "lr=8e-06" in emb


def test_ls_recipes_filters_and_rejects_unknown_names(capsys):
    out = _ls(capsys, "--method", "st_adapter", "--protocol", "fully_supervised")
    assert "st_adapter / fully_supervised / ssv2 [published]" in out and "variant=24x384" in out
    assert "vificlip" not in out and "base2novel" not in out
    assert main(["ls", "recipes", "--method", "vificlp"]) == 2


def test_resolution_order_common_default_dataset():
    ssv2 = resolve_recipe("st_adapter", "fully_supervised", "ssv2")
    k400 = resolve_recipe("st_adapter", "fully_supervised", "k400")
    assert ssv2.method_options == {"lr": 1e-3, "weight_decay": 0.01, "variant": "24x384"}
    assert k400.method_options == {"lr": 7.5e-4, "weight_decay": 0.01, "variant": "12x384"}
    assert ssv2.schedule["epochs"] == 50 and k400.schedule["epochs"] == 12
    assert ssv2.not_applied == {"randaugment": "rand-m7-n4-mstd0.5-inc1"}  # K400's jitter does not leak
    assert resolve_recipe("zeroshot", "base2novel", "k400").scope == "method default"


def test_shared_schedule_takes_recipe_optimiser_only(harness_cache):
    # no profile: the `embedded` profile sets its own searched lrs (test_embedded_profile_lr_wins_over_recipe)
    req = _request("embedded", "zero_shot", ["vificlip", "st_adapter"], profile=None, cache_dir=str(harness_cache))
    vifi, sta = expand_jobs(req)
    assert vifi.method_options.lr == 8e-6 and vifi.method_options.weight_decay == 0.001
    assert sta.method_options.lr == 7.5e-4 and sta.method_options.weight_decay == 0.01
    # epochs, batch, frames, views, betas and label smoothing stay identical for both methods
    assert vifi.schedule == sta.schedule
    assert vifi.schedule.label_smoothing == 0.0 and vifi.schedule.betas == [0.9, 0.98]
    assert vifi.recipe["schedule_kind"] == "shared" and vifi.recipe["scope"] == "protocol default"
    assert vifi.recipe["not_applied"] == {} and "ViFi-CLIP" in vifi.recipe["source"]


def test_paper_schedule_applies_full_recipe_and_records_gaps(harness_cache):
    req = _request("embedded", "fully_supervised", ["vificlip", "aim"], cache_dir=str(harness_cache),
                   schedule_kind="paper")
    vifi, aim = expand_jobs(req)
    assert vifi.method_options.lr == 2.2e-5
    assert (vifi.schedule.epochs, vifi.schedule.batch_size, vifi.schedule.frames) == (30, 512, 16)
    assert vifi.schedule.label_smoothing == 0.1 and vifi.schedule.views == [4, 3]
    assert vifi.recipe["not_applied"] == {"mixup": 0.8, "cutmix": 1.0, "mixup_switch_prob": 0.5}
    assert aim.schedule.warmup_epochs == 2.5 and aim.schedule.betas == [0.9, 0.999]
    assert aim.schedule.lr_min_ratio == 0.0
    assert vifi.job_id != expand_jobs(RunRequest(**{**req.__dict__, "schedule_kind": "shared"}))[0].job_id


def test_profile_and_set_win_over_recipe(harness_cache):
    req = _request("embedded", "few_shot", ["vificlip_prompt"], profile="tiny", cache_dir=str(harness_cache),
                   schedule_kind="paper", shots=[2],
                   method_options={"vificlip_prompt": {"lr": 0.5}}, schedule_overrides={"epochs": 3})
    job = expand_jobs(req)[0]
    assert job.method_options.n_tokens == 10  # few-shot recipe
    assert job.method_options.depth == 4  # profile (tiny backbone has 4 layers)
    assert job.method_options.lr == 0.5  # --set
    assert job.schedule.epochs == 3 and job.schedule.batch_size == 4  # --set, profile
    assert job.schedule.label_smoothing == 0.1  # recipe, untouched by the profile


def test_embedded_profile_lr_wins_over_recipe(harness_cache):
    """The embedded profile's per-method lrs (from its fixed-budget search) replace the recipes'
    ViT-B/16 lrs, keep the recipes' weight decay, and yield to --set."""
    req = _request("embedded", "zero_shot", ["vificlip", "st_adapter"], profile="embedded", cache_dir=str(harness_cache),
                   method_options={"st_adapter": {"lr": 0.5}})
    vifi, sta = expand_jobs(req)
    assert (vifi.method_options.lr, vifi.method_options.weight_decay) == (3e-4, 0.001)  # profile, recipe
    assert (sta.method_options.lr, sta.method_options.weight_decay) == (0.5, 0.01)  # --set, recipe
    assert vifi.recipe["method_options"]["lr"] == 8e-6  # the recipe record still says what was published


@pytest.mark.upstream
def test_published_recipe_on_real_dataset(upstream_root, tmp_path):
    req = _request("hmdb51", "few_shot", ["vificlip_prompt"], shots=[2], splits_root=str(upstream_root),
                   cache_dir=str(tmp_path), backbone="ViT-B-16")
    job = expand_jobs(req)[0]
    assert job.recipe["scope"] == "published"
    assert (job.method_options.lr, job.method_options.n_tokens, job.method_options.depth) == (8e-3, 10, 12)
    assert job.schedule.epochs == 50 and job.schedule.frames == 8  # shared schedule kept


def test_bad_recipe_file_is_a_one_line_error(tmp_path, monkeypatch):
    import harness.recipes as recipes

    (tmp_path / "aim.yaml").write_text("method: aim\nprotocols:\n  base2novel:\n    default: {lrr: 1.0}\n")
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    recipes._load.cache_clear()
    try:
        with pytest.raises(HarnessError, match=r"aim.yaml: protocols.base2novel.default: unknown key\(s\) \['lrr'\]"):
            resolve_recipe("aim", "base2novel", "k400")
    finally:
        recipes._load.cache_clear()
