"""The paper's runs as presets: each loads, and runs end to end on a synthetic stand-in of its
data layout; the recipe's pieces (schedule, ablations, class-name baseline, starting weights,
ensembling only against real zero-shot weights, QuickGELU)."""
import json
import os
import logging
import math
import shutil

import pytest
import torch
import yaml

from ost.cli import main
from ost.run.build import load_model
from ost.run.config import load_config
from ost.run.presets import PRESETS_DIR, list_presets
from ost.data.synthetic import make_synthetic
from ost.run.train import lr_lambda
from tests.helpers.ost_runs import steps
from tests.helpers.tiny_clip import TEXT, VISION

RUNS = [name for name in list_presets() if not name.startswith("ablation_")]
ABLATIONS = [name for name in list_presets() if name.startswith("ablation_")]
TINY = ["model=ViT-B-32", "pretrained=null", "frames=2", "size=32", "batch_size=4", "grad_accum=1",
        "num_workers=0", "precision=fp32", "save_every=1", "max_steps=1", "warmup_epochs=0",
        "model_overrides=" + json.dumps(dict(embed_dim=32, vision_cfg=VISION, text_cfg=TEXT))]


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """ost-data/ with every file the presets name, filled from a small synthetic set, and the
    synthetic videos as `root`."""
    base = tmp_path_factory.mktemp("presets")
    syn = make_synthetic(base / "videos", num_classes=3, videos_per_class=4, frames=8, size=32)
    data = base / "ost-data"
    for preset in RUNS:
        values = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())
        pairs = [(values.get("labels"), syn["labels"]), (values.get("spatio"), syn["spatio"]),
                 (values.get("temporal"), syn["temporal"]), (values.get("train_list"), syn["train"])]
        for split in values.get("eval", {}).get("splits", []):
            pairs += [(split["labels"], syn["labels"]), (split["list"], syn["val"]),
                      (split["spatio"], syn["spatio"]), (split["temporal"], syn["temporal"])]
        for rel, src in pairs:
            if rel and rel != "REQUIRED":
                (data / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, data / rel)
    return dict(data=data, root=syn["train"].parent, train=syn["train"], base=base)


def _settings(stand_in, tmp_path):
    return TINY + [f"data_dir={stand_in['data']}", f"root={stand_in['root']}", f"out_dir={tmp_path / 'run'}"]


def test_every_preset_loads_and_names_its_source():
    assert {"k400_zero_shot", "k600_zero_shot", "hmdb_zero_shot", "ucf_zero_shot"} <= set(RUNS)
    assert {f"{d}_few_shot_{k}" for d in ("hmdb", "ucf", "ssv2") for k in (2, 4, 8, 16)} <= set(RUNS)
    for name in RUNS:
        cfg = load_config(name, ["root=/videos", "train_list=/lists/train.txt"])
        assert cfg.model == "ViT-B-16-quickgelu" and cfg.pretrained == "openai" and cfg.normalization == "imagenet"
        assert cfg.frames == 32 and cfg.batch_size == 32 and cfg.warmup_epochs == 5
        assert cfg.data_dir == os.path.abspath("ost-data") and list_presets()[name]


def test_presets_follow_the_official_configs():
    k400 = load_config("k400_zero_shot", ["root=/v", "train_list=/t.txt"])
    assert (k400.grad_accum, k400.lr, k400.epochs, k400.weight_decay) == (8, 8e-6, 10, 0.001)
    lrs = {name: load_config(name, ["root=/v"]).lr for name in RUNS if "few_shot" in name}
    assert lrs.pop("hmdb_few_shot_4") == 3.5e-6 and lrs.pop("ssv2_few_shot_16") == 2.5e-6
    assert set(lrs.values()) == {5e-6}
    few = load_config("ucf_few_shot_8", ["root=/v"])
    assert (few.epochs, few.grad_accum, few.train_list) == (50, 2, "splits/ucf_splits/train1_few_shot_8.txt")
    k600 = load_config("k600_zero_shot", ["root=/v"])
    assert [s["labels"] for s in k600.eval.splits] == [f"labels/ZS_split{k}_K600.csv" for k in (1, 2, 3)]
    assert [s["list"] for s in k600.eval.splits] == [
        f"splits/k600_splits/ZS_split{k}_K600_eval_filtered.txt" for k in (1, 2, 3)]
    assert k600.eval.splits[2]["spatio"] == "descriptors/k600/split3/spatio_4_descriptors.json"
    assert k600.eval.ensemble_alpha == 0.2


def test_required_settings_are_named():
    with pytest.raises(ValueError, match=r"settings \['root', 'train_list'\] are required.*--set root="):
        load_config("k400_zero_shot")


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablations_apply_over_a_run(ablation):
    cfg = load_config(["hmdb_zero_shot", ablation], ["root=/v"])
    base = load_config("hmdb_zero_shot", ["root=/v"])
    changed = {k for k, v in vars(cfg).items() if v != vars(base)[k]}
    assert changed and changed <= {"od", "spatio_prompt", "temporal_prompt", "class_name_baseline"}
    assert cfg.labels == base.labels and cfg.eval.splits == base.eval.splits


@pytest.mark.parametrize("preset", RUNS)
def test_preset_runs_end_to_end_on_a_stand_in(preset, stand_in, tmp_path):
    settings = _settings(stand_in, tmp_path)
    if "k400" in preset:
        settings.append(f"train_list={stand_in['train']}")
    if "zero_shot" in preset and preset != "k400_zero_shot":
        # Evaluation with the preset's ensembling against "zero-shot" weights given as a file.
        zero_shot = tmp_path / "zs.pt"
        torch.save(load_model(load_config(preset, settings), None).state_dict(), zero_shot)
        out = tmp_path / "eval.json"
        args = ["eval", "--config", preset, "--untrained", "--zero-shot", str(zero_shot), "--out", str(out),
                "--quiet"]
        assert main(args + [f"--set={s}" for s in settings]) == 0
        result = json.loads(out.read_text())
        assert len(result["splits"]) == len(load_config(preset, settings).eval.splits)
        return
    assert main(["train", "--config", preset, "--quiet"] + [f"--set={s}" for s in settings]) == 0
    assert [s["step"] for s in steps(tmp_path / "run")] == [1]
    out = tmp_path / "eval.json"
    # A preset without evaluation splits (K400's own lists are not published) names its list.
    scored = [] if load_config(preset, settings).eval.splits else ["--list", str(stand_in["train"])]
    assert main(["eval", "--config", preset, "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out",
                 str(out), "--quiet"] + scored + [f"--set={s}" for s in settings]) == 0
    assert 0.0 <= json.loads(out.read_text())["summary"]["top1"]["mean"] <= 1.0


def test_schedule_is_the_official_one():
    f = lr_lambda(warmup=5, total=100)
    assert [f(s) for s in range(5)] == [0.0, 0.2, 0.4, 0.6, 0.8]  # linear from 0
    # After the warm-up the cosine continues from where step 5 sits on it (not restarted).
    assert f(5) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 5 / 100)))
    assert f(100) == pytest.approx(0.01) and f(500) == pytest.approx(0.01)  # lr / 100


def test_warmup_in_epochs(stand_in, tmp_path):
    settings = _settings(stand_in, tmp_path) + ["max_steps=null", "epochs=2", "warmup_epochs=1", "lr=0.001"]
    assert main(["train", "--config", "hmdb_few_shot_2", "--quiet"] + [f"--set={s}" for s in settings]) == 0
    lrs = [s["lr"] for s in steps(tmp_path / "run")]
    # 3 classes x 4 videos, train list of 9 -> 2 batches of 4 a epoch: warm-up over 2 steps.
    assert len(lrs) == 4 and lrs[0] == pytest.approx(0.0005) and lrs[1] < 0.001


def test_training_starts_from_init_checkpoint(stand_in, tmp_path):
    settings = _settings(stand_in, tmp_path) + ["lr=0.0"]
    start = load_model(load_config("ucf_few_shot_2", settings), None)
    with torch.no_grad():
        start.clip.visual.conv1.weight.mul_(3.0)
    init = tmp_path / "k400.pt"
    torch.save({"model": start.state_dict()}, init)
    assert main(["train", "--config", "ucf_few_shot_2", "--quiet", f"--set=init_checkpoint={init}"]
                + [f"--set={s}" for s in settings]) == 0
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(trained["clip.visual.conv1.weight"], start.state_dict()["clip.visual.conv1.weight"])


def test_ensembling_against_random_weights_is_refused(stand_in, tmp_path, capsys):
    settings = _settings(stand_in, tmp_path)
    assert main(["eval", "--config", "hmdb_zero_shot", "--untrained", "--quiet"]
                + [f"--set={s}" for s in settings]) == 2
    assert "randomly initialized model" in capsys.readouterr().err
    assert main(["eval", "--config", "hmdb_zero_shot", "--untrained", "--quiet", "--set=eval.ensemble_alpha=null"]
                + [f"--set={s}" for s in settings]) == 0


def test_class_name_baseline_matches_class_name_prompts(stand_in, tmp_path):
    cfg = load_config(["hmdb_zero_shot", "ablation_class_name"], _settings(stand_in, tmp_path))
    model = load_model(cfg, None)
    names = model.descriptors.class_names
    assert model.prompts("spatio") == [[f"a video of a person {n}."] for n in names]
    assert model.prompts("temporal") == model.prompts("spatio")
    model.eval()
    frames = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        emb = model.encode_video(frames)
        text = model.encode_text([f"a video of a person {n}." for n in names])
        want = model.clip.logit_scale.exp() * torch.nn.functional.normalize(emb, dim=-1).mean(1) @ \
            torch.nn.functional.normalize(text, dim=-1).T
        torch.testing.assert_close(model(frames), want, rtol=1e-5, atol=1e-5)


def test_class_name_baseline_needs_the_solver_off():
    with pytest.raises(ValueError, match="set od.use_ot: false"):
        load_config("hmdb_zero_shot", ["root=/v", "class_name_baseline=true"])


def test_openai_weights_without_quickgelu_warn(caplog, stand_in, tmp_path, monkeypatch):
    import open_clip

    from ost.run.build import build_model

    built = []
    real = open_clip.create_model
    monkeypatch.setattr(open_clip, "create_model", lambda name, pretrained=None, **kw: built.append(
        (name, pretrained)) or real("ViT-B-32", pretrained=None, embed_dim=32, vision_cfg=VISION, text_cfg=TEXT))
    cfg = load_config("hmdb_zero_shot", _settings(stand_in, tmp_path))
    cfg.pretrained, cfg.model = "openai", "ViT-B-16"  # no weights can be downloaded here: stubbed
    with caplog.at_level(logging.WARNING, logger="ost.build"):
        build_model(cfg)
    assert "QuickGELU" in caplog.text and "ViT-B-16-quickgelu" in caplog.text
    caplog.clear()
    cfg.model = "ViT-B-16-quickgelu"
    with caplog.at_level(logging.WARNING, logger="ost.build"):
        build_model(cfg)
    assert "QuickGELU" not in caplog.text and built == [("ViT-B-16", "openai"), ("ViT-B-16-quickgelu", "openai")]
