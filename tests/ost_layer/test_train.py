"""End to end on the CPU: make-synthetic, train a tiny random open_clip model, evaluate; a
SIGKILLed run resumed; two gloo processes under torchrun against one process."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ost.cli import main
from ost.data.synthetic import make_synthetic
from tests.helpers.ost_runs import steps, write_config
from tests.helpers.torchrun import needs_torchrun, torchrun_ost

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=4, videos_per_class=8, frames=16, size=32)


def accuracy(config, data, tmp_path, checkpoint=None):
    out = tmp_path / f"eval_{bool(checkpoint)}.json"
    args = ["eval", "--config", str(config), "--list", str(data["val"]), "--out", str(out), "--quiet"]
    assert main(args + (["--checkpoint", str(checkpoint)] if checkpoint else ["--untrained"])) == 0
    return json.loads(out.read_text())["summary"]["top1"]["mean"]


def test_training_really_trains(data, tmp_path):
    config = write_config(tmp_path, data)
    before = accuracy(config, data, tmp_path)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    log = steps(tmp_path / "run")
    assert [s["step"] for s in log] == list(range(1, 31))
    assert log[-1]["loss"] < log[0]["loss"]
    after = accuracy(config, data, tmp_path, tmp_path / "run" / "checkpoint.pt")
    assert after >= 0.75 and after > before + 0.25, (before, after)  # chance is 0.25
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["max_steps"] == 30 and saved["lr"] == 1e-3


def test_checkpoints_name_no_module_of_ost(data, tmp_path):
    """A checkpoint holds tensors and plain values only, no pickled class of ost: moving ost's
    modules (as issue 33 did, ost/checkpoint.py -> ost/model/checkpoint.py, ...) cannot break
    loading a checkpoint written before. Every global its pickle names is torch's or an
    OrderedDict, all of which torch.load(weights_only=True) takes."""
    import io
    import pickletools
    import zipfile

    config = write_config(tmp_path, data, max_steps=1, save_every=1)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    with zipfile.ZipFile(tmp_path / "run" / "checkpoint.pt") as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(io.BytesIO(pickled)) if op.name == "GLOBAL"}
    assert "collections OrderedDict" in names
    assert all(n.split()[0] in ("torch", "torch._utils", "collections") for n in names), names


def test_killed_run_resumes_without_lost_or_repeated_steps(data, tmp_path):
    (tmp_path / "ref").mkdir()
    # The reference loads in the main process, the killed and resumed runs with two loader
    # workers: the same clips, crops and losses whatever loads them.
    reference = write_config(tmp_path / "ref", data, out_dir=str(tmp_path / "ref" / "run"), save_every=5,
                             num_workers=0)
    assert main(["train", "--config", str(reference), "--quiet"]) == 0
    config = write_config(tmp_path, data, save_every=5, num_workers=2)
    proc = subprocess.Popen([sys.executable, "-m", "ost", "train", "--config", str(config), "--quiet"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_path = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log_path.exists() and len(log_path.read_text().splitlines()) >= 12:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = len(log_path.read_text().splitlines())
    assert 12 <= killed_at < 30
    assert main(["train", "--config", str(config), "--resume", "--quiet"]) == 0
    log = steps(tmp_path / "run")
    assert [s["step"] for s in log] == list(range(1, 31))
    ref = steps(tmp_path / "ref" / "run")
    for got, want in zip(log, ref):  # resumed exactly: the same losses as the uninterrupted run
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6), got["step"]


class _Killed(Exception):
    """The process dying right after it wrote a checkpoint."""


def test_resume_from_a_checkpoint_at_an_epoch_end(data, tmp_path, monkeypatch):
    """24 training videos in batches of 8 make 3 steps an epoch: with save_every=3 every
    checkpoint falls on an epoch's end. The resumed loader used to start past the epoch's last
    batch, yield nothing, and stop with "no video could be decoded in a whole epoch"."""
    import ost.run.train

    (tmp_path / "ref").mkdir()
    reference = write_config(tmp_path / "ref", data, out_dir=str(tmp_path / "ref" / "run"), max_steps=6,
                             save_every=3, num_workers=0)
    assert main(["train", "--config", str(reference), "--quiet"]) == 0
    config = write_config(tmp_path, data, max_steps=6, save_every=3, num_workers=0)
    real_save = ost.run.train.save_checkpoint

    def save_then_die(obj, path):
        real_save(obj, path)
        raise _Killed

    monkeypatch.setattr(ost.run.train, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        main(["train", "--config", str(config), "--quiet"])
    monkeypatch.undo()
    assert [s["step"] for s in steps(tmp_path / "run")] == [1, 2, 3]
    assert main(["train", "--config", str(config), "--resume", "--quiet"]) == 0
    log, ref = steps(tmp_path / "run"), steps(tmp_path / "ref" / "run")
    assert [s["step"] for s in log] == list(range(1, 7))
    for got, want in zip(log, ref):  # the second epoch as the uninterrupted run trained it
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6), got["step"]


@needs_torchrun
def test_two_gloo_processes_match_one(data, tmp_path):
    one = write_config(tmp_path, data, max_steps=3, out_dir=str(tmp_path / "one"))
    assert main(["train", "--config", str(one), "--quiet"]) == 0
    (tmp_path / "two").mkdir()
    two = write_config(tmp_path / "two", data, max_steps=3, out_dir=str(tmp_path / "two" / "run"))
    torchrun_ost(2, "train", "--config", str(two), "--quiet")
    a, b = steps(tmp_path / "one"), steps(tmp_path / "two" / "run")
    assert [s["step"] for s in b] == [1, 2, 3]
    for x, y in zip(a, b):  # the first loss checks the gathered forward, the next two the gradients
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4), (x, y)


def test_corrupt_training_videos_are_skipped_and_reported(data, tmp_path):
    lst = tmp_path / "train.txt"
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    lines = Path(data["train"]).read_text().splitlines()
    root = Path(data["train"]).parent
    lst.write_text("\n".join([f"{root / l.split()[0]} {l.split()[1]}" for l in lines] +
                             [f"{tmp_path / 'broken.mp4'} 1"]) + "\n")
    config = write_config(tmp_path, data, train_list=str(lst), root="/", max_steps=5, batch_size=5, tensorboard=True)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    assert steps(tmp_path / "run")[-1]["skipped"] == 1  # one epoch: 5 steps x 5 of the 25 videos
    assert any((tmp_path / "run" / "tensorboard").iterdir())


@pytest.mark.parametrize("batch_size", [2, 1], ids=["epoch", "batches-in-a-row"])
def test_training_stops_when_no_video_can_be_read(data, tmp_path, capsys, monkeypatch, batch_size):
    """A wrong root makes every video unreadable: one `ost: error:` line and exit 2, after a
    bounded number of batches (a whole epoch, or MAX_EMPTY_BATCHES in a row, whichever comes
    first), not a loop that skips forever."""
    import ost.run.train

    monkeypatch.setattr(ost.run.train, "MAX_EMPTY_BATCHES", 10 if batch_size == 1 else 1000)
    config = write_config(tmp_path, data, root=str(tmp_path / "nonexistent"), max_steps=1000,
                          batch_size=batch_size, num_workers=0)
    start = time.time()
    assert main(["train", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ost: error: no video could be decoded in ") and "nonexistent" in err[-1]
    assert ("in a row" in err[-1]) == (batch_size == 1)
    assert time.time() - start < 120


def test_plot_plan_scores_as_eval_does(data, tmp_path, monkeypatch):
    """plot-plan builds its model and clip the way eval does: the normalization and the
    ensembling change what it plots (they used to be ignored: identical PNGs)."""
    import ost.run.plots

    seen = []
    real = ost.run.plots.plot_plans
    monkeypatch.setattr(ost.run.plots, "plot_plans", lambda plans, names, texts, scores, out, **kw:
                        seen.append(scores) or real(plans, names, texts, scores, out, **kw))
    config = write_config(tmp_path, data)
    video = str(data["train"].parent / data["train"].read_text().split()[0])
    zero_shot = tmp_path / "zs.pt"
    import torch

    from ost.run.build import load_model
    from ost.run.config import load_config

    torch.manual_seed(1)
    torch.save({k: torch.randn_like(v) if v.is_floating_point() else v
                for k, v in load_model(load_config(str(config)), None).state_dict().items()}, zero_shot)
    base = ["plot-plan", "--config", str(config), "--video", video, "--top", "2"]
    for i, extra in enumerate([[], ["--set", "normalization=clip"], ["--set", "eval.ensemble_alpha=0.5", "--zero-shot",
                                                                     str(zero_shot)]]):
        assert main(base + ["--out", str(tmp_path / f"p{i}.png")] + extra) == 0
    assert seen[0] != seen[1] and seen[0] != seen[2]


def test_few_shot_training(data, tmp_path):
    config = write_config(tmp_path, data, few_shot=2, max_steps=2)  # 2 videos x 4 classes = one batch of 8
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    assert [s["step"] for s in steps(tmp_path / "run")] == [1, 2]


def test_plot_plan_writes_a_png(data, tmp_path):
    config = write_config(tmp_path, data)
    video = Path(data["val"]).parent / Path(data["val"]).read_text().split()[0]
    out = tmp_path / "plan.png"
    assert main(["plot-plan", "--config", str(config), "--video", str(video), "--top", "2", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_accumulation_frozen_text_and_evaluation_options(data, tmp_path):
    import torch

    config = write_config(tmp_path, data, max_steps=2, grad_accum=2, batch_size=4, freeze_text=True)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    assert [s["step"] for s in steps(tmp_path / "run")] == [1, 2]
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    from ost.run.build import load_model as _load_model
    from ost.run.config import load_config

    torch.manual_seed(0)  # the training run's seed: the same initial weights
    fresh = _load_model(load_config(str(config)), None).state_dict()
    assert torch.equal(trained["clip.token_embedding.weight"], fresh["clip.token_embedding.weight"])  # frozen
    assert not torch.equal(trained["clip.visual.conv1.weight"], fresh["clip.visual.conv1.weight"])  # trained
    split = ",".join(str(data[k]) for k in ("labels", "val", "spatio", "temporal"))
    out = tmp_path / "res.json"
    zero_shot = tmp_path / "zero_shot.pt"  # the config has no pretrained weights: name the zero-shot model
    torch.save(fresh, zero_shot)
    assert main(["eval", "--config", str(config), "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                 "--split", split, "--split", split, "--set", "eval.ensemble_alpha=0.2", "--zero-shot", str(zero_shot),
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert len(res["splits"]) == 2 and res["summary"]["top1"]["std"] == 0.0
    assert 0.0 <= res["summary"]["top5"]["mean"] <= 1.0


@needs_torchrun
def test_class_sharded_training_over_two_processes_matches_one(data, tmp_path):
    one = write_config(tmp_path, data, max_steps=3, loss="ce", class_sharded=True, out_dir=str(tmp_path / "one"))
    assert main(["train", "--config", str(one), "--quiet"]) == 0
    (tmp_path / "two").mkdir()
    two = write_config(tmp_path / "two", data, max_steps=3, loss="ce", class_sharded=True,
                       out_dir=str(tmp_path / "two" / "run"))
    torchrun_ost(2, "train", "--config", str(two), "--quiet")
    for x, y in zip(steps(tmp_path / "one"), steps(tmp_path / "two" / "run")):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4), (x, y)


def test_chunked_evaluation_equals_unchunked(data, tmp_path):
    config = write_config(tmp_path, data)
    results = []
    for extra in ([], ["--set", "eval.class_chunk=1"], ["--set", "eval.memory_budget_mb=0.001"]):
        out = tmp_path / f"r{len(results)}.json"
        assert main(["eval", "--config", str(config), "--list", str(data["val"]), "--out", str(out), "--quiet",
                     "--untrained", *extra]) == 0
        results.append(json.loads(out.read_text())["summary"])
    assert results[0] == results[1] == results[2]


@needs_torchrun
def test_two_processes_survive_an_unreadable_video(data, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    root = Path(data["train"]).parent
    lines = [f"{root / l.split()[0]} {l.split()[1]}" for l in Path(data["train"]).read_text().splitlines()]
    lst = tmp_path / "train.txt"
    # 23 good videos + the broken one = 6 global batches of 4: an epoch meets the broken video.
    lst.write_text("\n".join(lines[:23] + [f"{tmp_path / 'broken.mp4'} 1"]) + "\n")
    config = write_config(tmp_path, data, train_list=str(lst), root="/", max_steps=6, batch_size=4,
                          out_dir=str(tmp_path / "run"))
    torchrun_ost(2, "train", "--config", str(config), "--quiet")
    log = steps(tmp_path / "run")
    assert [s["step"] for s in log] == [1, 2, 3, 4, 5, 6] and log[-1]["skipped"] >= 1
