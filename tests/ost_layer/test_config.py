"""Settings: the YAML and `--set` reach the model's OD logits and solver for train, eval and
plot-plan; checkpoints load with weights_only=True only."""

import re

import pytest
import torch

from ost.model.checkpoint import load_checkpoint, load_state_dict_file, rng_state, save_checkpoint, set_rng_state
from ost.cli import main
from ost.run.build import load_model as _load_model
from ost.run.config import load_config
from ost.data.synthetic import make_synthetic
from tests.helpers.ost_runs import write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=3, videos_per_class=2, frames=8, size=32)


def write(tmp_path, data, **extra):
    return write_config(tmp_path, data, frames=2, batch_size=2, max_steps=1, **extra)


def test_od_settings_from_yaml_and_overrides(data, tmp_path):
    path = write(tmp_path, data, od=dict(eps=0.05, spatio_weight=0.25, temporal_weight=0.25))
    cfg = load_config(str(path), ["od.backend=torch", "od.tol=0", "od.max_iter=7", "od.use_pooled=false"])
    assert (cfg.od.eps, cfg.od.tol, cfg.od.max_iter, cfg.od.backend) == (0.05, 0.0, 7, "torch")
    assert (cfg.od.spatio_weight, cfg.od.temporal_weight, cfg.od.use_pooled, cfg.od.use_ot) == (0.25, 0.25, False, True)
    model = _load_model(cfg, None)
    assert model.config == cfg.od
    # The solver runs with exactly these settings: 7 iterations on backend torch.
    frames = torch.randn(2, 2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        emb = model.encode_video(frames)
        desc = model.descriptor_embeddings()
    from ost_kernels import od_solve

    _, info = od_solve(emb, desc.spatio, desc_mask=desc.spatio_mask, return_info=True, **cfg.od.solve_kwargs())
    assert info.backend == "torch" and (info.iterations == 7).all()


@pytest.mark.parametrize("override, match", [
    ("od.eps=0", r"`eps` must be a finite number > 0"),
    ("od.backend=numpy", r"backend must be one of auto, triton, triton-fused, cuda, cpu, torch.*, got 'numpy'"),
    ("od.colour=red", r"unknown settings \['colour'\] under 'od'"),
    ("od.use_ot=false", None),
    # infinite weights made -Infinity logits (not JSON) and NaN probabilities
    ("od.spatio_weight=.inf", r"od.spatio_weight must be a finite number >= 0, got inf"),
    ("od.temporal_weight=-.inf", r"od.temporal_weight must be a finite number >= 0, got -inf"),
])
def test_bad_od_settings_are_refused_by_every_command(data, tmp_path, override, match, capsys):
    path = write(tmp_path, data)
    video = str(data["train"].parent / data["train"].read_text().split()[0])
    for args in (["train", "--config", str(path), "--quiet"],
                 ["eval", "--config", str(path), "--quiet"],
                 ["plot-plan", "--config", str(path), "--video", video, "--out", str(tmp_path / "p.png")]):
        extra = ["--set", override] + (["--set", "od.use_pooled=false"] if match is None else [])
        code = main(args + extra)
        if match is None:  # both terms off: refused too, with its own message
            assert code == 2 and "use_pooled and use_ot are both off" in capsys.readouterr().err
        else:
            assert code == 2 and re.search(match, capsys.readouterr().err), args


def test_eval_reads_the_od_settings(data, tmp_path, monkeypatch):
    path = write(tmp_path, data)
    seen = []
    import ost.model.logits

    real = ost.model.logits.od_solve
    monkeypatch.setattr(ost.model.logits, "od_solve", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    assert main(["eval", "--config", str(path), "--list", str(data["val"]), "--untrained", "--quiet", "--set",
                 "od.backend=torch",
                 "--set", "od.eps=0.2"]) == 0
    assert seen and all(kw["backend"] == "torch" and kw["eps"] == 0.2 for kw in seen)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_checkpoints_with_pickled_code_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "extra": _Evil()}, path)
    with pytest.raises(ValueError, match=r"cannot be loaded safely: weights_only=True refuses what it holds "
                                         r"\(Unsupported global: GLOBAL print was not an allowed global by "
                                         r"default\)$") as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    assert "pickled code ran" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a checkpoint or state dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_checkpoint_round_trip_with_rng_state(tmp_path):
    import random

    import numpy as np

    state = {"model": {"w": torch.arange(3.0)}, "rng": rng_state(), "config": {"betas": [0.9, 0.98]}}
    save_checkpoint(state, tmp_path / "c.pt")
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = load_checkpoint(tmp_path / "c.pt")  # weights_only=True
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want
    assert torch.equal(load_state_dict_file(tmp_path / "c.pt")["w"], torch.arange(3.0))
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from ost.files import atomic_write_json

    path = atomic_write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_numbers_as_written_in_yaml(data, tmp_path):
    # PyYAML reads `1e-3` (no dot) as a string (YAML 1.1); it is the number a user means.
    path = write(tmp_path, data)
    path.write_text(path.read_text() + "lr: 1e-3\nweight_decay: 5e-2\nod:\n  tol: 1e-4\n")
    cfg = load_config(str(path))
    assert (cfg.lr, cfg.weight_decay, cfg.od.tol) == (1e-3, 5e-2, 1e-4)
    assert load_config(str(path), ["lr=8e-6"]).lr == 8e-6


@pytest.mark.parametrize("line, match", [
    ("weight_decay: abc", r"setting 'weight_decay' must be a number \(set in .*cfg.yaml\), got 'abc'"),
    ("frames: eight", r"setting 'frames' must be a whole number \(set in .*cfg.yaml\), got 'eight'"),
    ("seed: abc", r"setting 'seed' must be a whole number"),
    ("frames: 2.5", r"setting 'frames' must be a whole number"),
    ("freeze_text: maybe", r"setting 'freeze_text' must be true or false"),
    ("frames: 0", r"setting 'frames' must be >= 1, got 0"),
    ("size: 0", r"setting 'size' must be >= 1"),
    ("grad_accum: 0", r"setting 'grad_accum' must be >= 1"),
    ("lr: -1e-3", r"setting 'lr' must be >= 0.0, got -0.001"),
    ("od:\n  max_iter: many", r"setting 'od.max_iter' must be a whole number \(set in .*cfg.yaml\)"),
], ids=lambda x: x.split(":")[0] if ":" in x else None)
def test_settings_that_cannot_work_are_refused_at_load(data, tmp_path, line, match):
    path = write(tmp_path, data)
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(ValueError, match=match):
        load_config(str(path))


def test_a_bad_override_names_the_override(data, tmp_path):
    path = write(tmp_path, data)
    with pytest.raises(ValueError, match=r"setting 'frames' must be >= 1, got 0"):
        load_config(str(path), ["frames=0"])
    with pytest.raises(ValueError, match=r"'lr' must be a number \(set in --set lr=fast\)"):
        load_config(str(path), ["lr=fast"])


def test_eval_needs_a_list_to_score(data, tmp_path, capsys):
    """Never the training list by default; eval.val_list in the config serves."""
    path = write(tmp_path, data)
    assert main(["eval", "--config", str(path), "--untrained", "--quiet"]) == 2
    assert "ost eval needs the videos to score: pass --list FILE" in capsys.readouterr().err
    assert main(["eval", "--config", str(path), "--untrained", "--quiet", "--set", f"eval.val_list={data['val']}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\(1 split\(s\), \d+ videos scored, 0 unreadable and skipped\)", out), out


def test_eval_scores_a_model_nobody_trained_only_when_asked(data, tmp_path, capsys):
    """Without --checkpoint eval scored the model as created (here: random weights) and exited
    0; now that takes --untrained, and the error says what it would score."""
    path = write(tmp_path, data)
    argv = ["eval", "--config", str(path), "--list", str(data["val"]), "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "ost: error: no --checkpoint: give the weights to score (--checkpoint FILE), or --untrained to score the "
        "config's model as created (random weights: the config sets no `pretrained`)")
    assert main(argv + ["--set", "pretrained=openai"]) == 2
    assert "(its pretrained openai weights, not fine-tuned)" in capsys.readouterr().err
    assert main(argv + ["--untrained"]) == 0
    ckpt = tmp_path / "w.pt"
    torch.save(_load_model(load_config(str(path)), None).state_dict(), ckpt)
    assert main(argv + ["--untrained", "--checkpoint", str(ckpt)]) == 2
    assert "give it or --checkpoint, not both" in capsys.readouterr().err
    assert main(argv + ["--checkpoint", str(ckpt)]) == 0


def test_eval_says_how_many_videos_it_skipped(data, tmp_path, capsys):
    lines = data["val"].read_text().splitlines()
    lst = tmp_path / "val.txt"
    root = data["val"].parent
    good = [f"{root / l.split()[0]} {l.split()[1]}" for l in lines[:1]]
    lst.write_text("\n".join(good + [f"{tmp_path}/missing{i}.mp4 0" for i in range(3)]) + "\n")
    path = write(tmp_path, data, root="/")
    assert main(["eval", "--config", str(path), "--list", str(lst), "--untrained", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 videos scored, 3 unreadable and skipped" in captured.out
    assert "ost: warning: 3 of 4 videos could not be read" in captured.err
    lst.write_text(f"{tmp_path}/missing.mp4 0\n")
    assert main(["eval", "--config", str(path), "--list", str(lst), "--untrained", "--quiet"]) == 2
    assert "no video could be decoded" in capsys.readouterr().err


def test_relative_paths_are_relative_to_the_config_file(data, tmp_path, monkeypatch):
    """A user's config means the same from any working directory: its relative paths resolve
    against its own folder (data paths through data_dir, which defaults to it)."""
    import shutil

    folder = tmp_path / "project"
    shutil.copytree(data["labels"].parent, folder)
    path = write(tmp_path, data, labels="labels.csv", train_list="train.txt", spatio="spatio.json",
                 temporal="temporal.json", out_dir="run")
    path = path.rename(folder / "cfg.yaml")
    base = folder / "sub" / "base.yaml"
    base.parent.mkdir()
    base.write_text("root: videos_root\n")
    path.write_text(path.read_text() + "base: sub/base.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(str(path), ["init_checkpoint=w.pt"])
    assert cfg.data_path(cfg.labels) == str(folder.resolve() / "labels.csv")
    assert cfg.out_dir == str(folder.resolve() / "run") and cfg.root == str(folder.resolve() / "sub" / "videos_root")
    assert cfg.init_checkpoint == "w.pt"  # from --set: the working directory's
    assert main(["eval", "--config", str(path), "--list", str(data["val"]), "--untrained", "--quiet", "--set",
                 f"root={data['val'].parent}"]) == 0
    preset = load_config("hmdb_zero_shot", ["root=/v"])
    assert preset.data_dir == str(elsewhere / "ost-data")  # a bundled preset's: the working directory's


def test_eval_settings_are_a_group_of_the_run_config(data, tmp_path, capsys):
    """`ost eval`'s knobs live in the `eval` group, reached one way (YAML or --set eval.X),
    merged key by key over base files like `od`; the old top-level spellings are refused
    with their new names; only training needs a train_list."""
    base = write(tmp_path, data, eval=dict(ensemble_alpha=0.5, views=[2, 1]))
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {base.name}\neval: {{batch_size: 3}}\n")
    cfg = load_config(str(child), ["eval.class_chunk=2"])
    assert (cfg.eval.ensemble_alpha, cfg.eval.views, cfg.eval.batch_size, cfg.eval.class_chunk) == (0.5, (2, 1), 3, 2)
    for old, new in (("views=[2, 1]", "eval.views"), ("ensemble_alpha=0.2", "eval.ensemble_alpha"),
                     ("eval_splits=[]", "eval.splits"), ("val_list=v.txt", "eval.val_list")):
        with pytest.raises(ValueError, match=rf"is now {re.escape(new)}"):
            load_config(str(base), [old])
    with pytest.raises(ValueError, match=r"setting 'eval.splits' must be a list of splits"):
        load_config(str(base), ["eval.splits=5"])
    with pytest.raises(ValueError, match=r"setting 'eval.batch_size' must be >= 1"):
        load_config(str(base), ["eval.batch_size=0"])
    with pytest.raises(ValueError, match=r"'eval.memory_budget_mb' must be a number"):
        load_config(str(base), ["eval.memory_budget_mb=lots"])
    with pytest.raises(SystemExit) as stop:  # a setting, not a flag: argparse refuses it
        main(["eval", "--config", str(base), "--batch-size", "4"])
    assert stop.value.code == 2 and "unrecognized arguments: --batch-size" in capsys.readouterr().err
    # An evaluation config names no training list; `ost train` refuses it before any work.
    no_train = write(tmp_path, data, train_list="", eval=dict(val_list=str(data["val"])))
    assert load_config(str(no_train)).train_list == ""
    assert main(["train", "--config", str(no_train), "--quiet"]) == 2
    assert "'train_list' is required for training" in capsys.readouterr().err


def test_relaxed_marginals_reach_the_solver(data, tmp_path):
    """`od.reg_m` from YAML (`.inf` or "inf") or --set reaches od_solve; the bundled ablation
    preset sets the descriptor side relaxed; a bad value is one clear error."""
    inf = float("inf")
    path = write(tmp_path, data, od=dict(reg_m=[".inf", 0.5]))
    assert load_config(str(path)).od.reg_m == (inf, 0.5)
    cfg = load_config(str(path), ["od.reg_m=[inf,0.25]", "od.backend=cpu"])
    assert cfg.od.solve_kwargs()["reg_m"] == (inf, 0.25)
    assert load_config([str(path), "ablation_unbalanced_descriptors"]).od.reg_m == (inf, 0.5)
    assert load_config(str(path), ["od.reg_m=null"]).od.reg_m is None
    for bad in ("od.reg_m=0", "od.reg_m=[1,x]", "od.reg_m=[1,2,3]"):
        with pytest.raises(ValueError, match="reg_m"):
            load_config(str(path), [bad])
    model = _load_model(cfg, None).eval()
    with torch.no_grad():
        emb = model.encode_video(torch.randn(2, 2, 3, 32, 32))
        relaxed = model.logits(emb, model.descriptor_embeddings())
        model.config = load_config(str(path), ["od.reg_m=null", "od.backend=cpu"]).od
        balanced = model.logits(emb, model.descriptor_embeddings())
    assert not torch.allclose(relaxed, balanced)


def test_implicit_gradient_reaches_the_solver(data, tmp_path, capsys):
    """`od.grad` from YAML, --set or the ablation preset reaches od_solve: the text and video
    gradients of a training loss change; an unknown value is one clear error naming the choices."""
    path = write(tmp_path, data)
    assert load_config(str(path)).od.grad == "plan"
    assert load_config([str(path), "ablation_implicit_gradient"]).od.grad == "implicit"
    with pytest.raises(ValueError, match="od.grad must be one of plan, implicit, got 'exact'"):
        load_config(str(path), ["od.grad=exact"])
    assert main(["eval", "--config", str(path), "--set", "od.grad=exact", "--list", str(data["val"])]) == 2
    assert "od.grad must be one of plan, implicit" in capsys.readouterr().err
    frames = torch.randn(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    grads = {}
    for grad in ("plan", "implicit"):
        cfg = load_config(str(path), [f"od.grad={grad}", "od.backend=cpu", "od.tol=0", "od.max_iter=50"])
        model = _load_model(cfg, None).train()
        model.zero_grad()
        model(frames).logsumexp(-1).sum().backward()
        grads[grad] = model.clip.visual.proj.grad.clone()
    assert not torch.allclose(grads["plan"], grads["implicit"])
