"""What a user's malformed files get: one `ost: error: ...` line naming the file (and line),
exit code 2, no traceback."""
import json
from pathlib import Path

import pytest

from ost.data.annotations import read_annotations
from ost.cli import main
from ost.descriptors.descriptors import DescriptorError, load_class_names, load_descriptors
from ost.data.synthetic import make_synthetic
from tests.helpers.ost_runs import write_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=2, videos_per_class=1, frames=4, size=32)


def one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ost: error: "), err
    return err[0]


@pytest.mark.parametrize("content, said", [
    (b"this is not a checkpoint\n", "not a checkpoint: not a file torch.save writes"),
    (b"", "an empty file"),
    # torch.load's error for these advised re-running with weights_only=False, over 6 lines
    (b'{"0": ["a ball"]}\n', "not a checkpoint: not a file torch.save writes (it looks like JSON)"),
    (b"garbage", "not a checkpoint: not a file torch.save writes"),
    (b"PK\x03\x04 a damaged zip", "not a checkpoint: not a file torch.save writes"),
], ids=["text", "empty", "json", "garbage", "damaged-zip"])
def test_a_file_that_is_no_checkpoint(data, tmp_path, capsys, content, said):
    config = write_config(tmp_path, data)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(content)
    line = one_error_line(capsys, ["eval", "--config", str(config), "--list", str(data["val"]), "--checkpoint",
                                   str(ckpt), "--quiet"])
    assert str(ckpt) in line and said in line


def test_yaml_syntax_error_names_file_and_line(data, tmp_path, capsys):
    config = write_config(tmp_path, data)
    config.write_text(config.read_text() + "frames: [1, 2\n")
    line = one_error_line(capsys, ["eval", "--config", str(config), "--list", str(data["val"]), "--untrained",
                                   "--quiet"])
    assert f"{config}:" in line and "not valid YAML" in line


def test_non_utf8_yaml_names_the_file(data, tmp_path, capsys):
    config = write_config(tmp_path, data)
    config.write_bytes(config.read_bytes() + b"# caf\xe9\n")
    line = one_error_line(capsys, ["eval", "--config", str(config), "--list", str(data["val"]), "--untrained",
                                   "--quiet"])
    assert f"{config}: not UTF-8 text" in line


def test_non_utf8_labels_descriptors_and_lists(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("id,name\n0,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DescriptorError, match=rf"{bad}: not UTF-8 text"):
        load_class_names(bad)
    with pytest.raises(DescriptorError, match=rf"{bad}: not UTF-8 text"):
        load_descriptors(bad)
    with pytest.raises(ValueError, match=rf"{bad}: not UTF-8 text"):
        read_annotations(bad)


def test_descriptor_json_duplicate_keys_and_deep_nesting(tmp_path):
    dup = tmp_path / "dup.json"
    dup.write_text('{"0": ["a"], "1": ["b"], "0": ["c"]}')
    with pytest.raises(DescriptorError, match=r"key '0' appears twice"):
        load_descriptors(dup, 2)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DescriptorError, match=r"nested too deeply"):
        load_descriptors(deep)
    broken = tmp_path / "broken.json"
    broken.write_text('{"0": ["a"],\n "1": [}')
    with pytest.raises(DescriptorError, match=rf"{broken}:2: not valid JSON"):
        load_descriptors(broken)
    assert json.loads(dup.read_text())["0"] == ["c"]  # what plain json would have done silently


@pytest.mark.parametrize("label", ["\u0663", "\uff13", "3.0", "+3"])
def test_labels_are_ascii_digits(tmp_path, label):
    lst = tmp_path / "list.txt"
    lst.write_text(f"a.mp4 {label}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{lst}:1: expected 'relative/path.mp4 label_id'"):
        read_annotations(lst)
    csv = tmp_path / "labels.csv"
    csv.write_text(f"id,name\n{label},walk\n", encoding="utf-8")
    with pytest.raises(DescriptorError, match=rf"{csv}:2: class id .* is not an integer"):
        load_class_names(csv)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("ost 0.")



def test_no_random_init_warning_when_a_checkpoint_is_loaded(data, tmp_path, caplog):
    import torch

    from ost.run.build import load_model
    from ost.run.config import load_config

    cfg = load_config(str(write_config(tmp_path, data)))
    with caplog.at_level("WARNING"):
        model = load_model(cfg, None)
    assert "No pretrained weights loaded" in caplog.text  # true: nothing is loaded
    ckpt = tmp_path / "w.pt"
    torch.save(model.state_dict(), ckpt)
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_model(cfg, str(ckpt))
    assert "No pretrained weights loaded" not in caplog.text


def test_evaluation_iterates_its_loader_once():
    """tqdm.auto's bar starts an iterator of its own: a DataLoader would decode twice."""
    import ost.run.evaluate
    import ost.model.model

    class Counted:
        iterators = 0

        def __iter__(self):
            Counted.iterators += 1
            return iter(range(3))

        def __len__(self):
            return 3

    for module in (ost.run.evaluate, ost.model.model):
        Counted.iterators = 0
        assert list(module.tqdm(Counted(), disable=True)) == [0, 1, 2] and Counted.iterators == 1


@pytest.mark.parametrize("flag, value, said", [
    ("--frames", "0", "--frames must be a whole number >= 1, got 0"),  # was a ZeroDivisionError
    ("--frames", "-3", "--frames must be a whole number >= 1, got -3"),
    ("--size", "0", "--size must be an even number >= 6"),  # a ZeroDivisionError
    ("--size", "1", "--size must be an even number >= 6"),  # libx264's error
    ("--size", "33", "--size must be an even number >= 6"),
    ("--videos-per-class", "0", "--videos-per-class must be a whole number >= 1, got 0"),  # exit 0, empty lists
    ("--videos-per-class", "-1", "--videos-per-class must be a whole number >= 1, got -1"),
    ("--classes", "33", "--classes must be a whole number from 1 to 32, got 33"),
])
def test_make_synthetic_refuses_what_cannot_make_a_data_set(tmp_path, capsys, flag, value, said):
    out = tmp_path / "syn"
    line = one_error_line(capsys, ["make-synthetic", "--out", str(out), flag, value])
    assert said in line
    assert not out.exists()  # refused before anything is written


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is built: what is cheap to check comes first (a ViT-B/16 takes
    seconds to build, and offline a preset's pretrained weights a minute of download retries)."""
    import open_clip

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the cheap checks")

    monkeypatch.setattr(open_clip, "create_model", refuse)


def _file(tmp_path, name, content="x"):
    path = tmp_path / name
    path.write_text(content)
    return path


def test_cheap_mistakes_are_reported_before_any_model_is_built(data, tmp_path, capsys, no_model):
    config = write_config(tmp_path, data)
    video = str(Path(data["labels"]).parent / "videos" / "class00_00.mp4")
    missing = str(tmp_path / "missing.pt")
    a_file = _file(tmp_path, "a_file")
    bad_json = _file(tmp_path, "bad.json", "{")
    base = ["--config", str(config), "--quiet"]
    evaluate = ["eval", *base, "--list", str(data["val"])]
    predict = ["predict", video, *base, "--classes", "a,b"]
    plot = ["plot-plan", "--config", str(config), "--video", video, "--out", str(tmp_path / "p.png")]
    cases = [
        (evaluate + ["--checkpoint", missing], f"checkpoint {missing} does not exist"),
        (evaluate + ["--checkpoint", str(tmp_path)], "is a folder"),
        (evaluate + ["--untrained", "--list", str(tmp_path / "none.txt")], "none.txt"),
        (evaluate + ["--untrained", "--split", "a,b"], "--split 'a,b': expected LABELS,LIST,SPATIO,TEMPORAL[,ROOT]"),
        (evaluate + ["--untrained", "--set", f"spatio={bad_json}"], f"{bad_json}:1: not valid JSON"),
        (evaluate + ["--untrained", "--predictions", str(a_file / "preds.jsonl")],
         f"--predictions {a_file / 'preds.jsonl'}: {a_file} is a file, not a folder"),
        (evaluate + ["--untrained", "--out", str(tmp_path)], f"--out {tmp_path}: is a folder"),
        (evaluate, "no --checkpoint: give the weights to score"),
        (predict + ["--checkpoint", missing], f"checkpoint {missing} does not exist"),
        (predict + ["--spatio", str(bad_json), "--temporal", str(bad_json)], f"{bad_json}:1: not valid JSON"),
        (["predict", str(tmp_path / "no.mp4"), *base, "--classes", "a,b"], "none of the 1 videos is a file"),
        (predict + ["--json", str(tmp_path)], f"--json {tmp_path}: is a folder"),
        (predict + ["--plot-dir", str(a_file)], f"--plot-dir {a_file}: is a file, not a folder"),
        (predict + ["--generate", "--cache", str(bad_json), "--api-key", "k"], f"{bad_json}:1: not valid JSON"),
        (["predict", video, "--config", str(config), "--set", "labels=nothing.csv"],
         "the config's class file"),
        (plot + ["--checkpoint", missing], f"checkpoint {missing} does not exist"),
        (plot + ["--top", "0"], "--top must be >= 1, got 0"),
        (["plot-plan", "--config", str(config), "--video", str(tmp_path / "no.mp4"), "--out", "p.png"],
         "no.mp4: no such file"),
        (["plot-plan", "--config", str(config), "--video", str(a_file), "--out", str(tmp_path / "p.png")],
         "cannot decode this video"),
        (["plot-plan", "--config", str(config), "--video", video, "--out", str(a_file / "p.png")],
         "is a file, not a folder"),
    ]
    for argv, said in cases:
        line = one_error_line(capsys, argv)
        assert said in line, (argv, line)
    assert not (tmp_path / "p.png").exists()


def test_train_refuses_before_writing_or_building(tmp_path, capsys, no_model):
    """`--set batch_size=64` used to write out_dir/config.yaml, then refuse the batch size."""
    data = make_synthetic(tmp_path / "syn", num_classes=2, videos_per_class=4, frames=4, size=32)  # 6 to train on
    config = write_config(tmp_path, data, batch_size=2)
    out_dir = tmp_path / "run"
    for extra, said in [
        (["--set", "batch_size=64"], "batch_size 64: the 6 training videos make no full global batch"),
        (["--set", f"init_checkpoint={tmp_path / 'none.pt'}"], "none.pt does not exist"),
        (["--set", f"train_list={tmp_path / 'none.txt'}"], "none.txt"),
        (["--set", f"out_dir={_file(tmp_path, 'a_file')}"], "out_dir"),
    ]:
        line = one_error_line(capsys, ["train", "--config", str(config), "--quiet", *extra])
        assert said in line, line
        assert not out_dir.exists()
    (out_dir).mkdir()
    (out_dir / "checkpoint.pt").write_bytes(b"")
    line = one_error_line(capsys, ["train", "--config", str(config), "--quiet", "--resume"])
    assert "checkpoint.pt" in line and sorted(p.name for p in out_dir.iterdir()) == ["checkpoint.pt"]


def test_a_checkpoint_replaces_the_pretrained_weights_so_none_are_fetched(data, tmp_path, monkeypatch):
    """A config with `pretrained: openai` and a checkpoint: the checkpoint gives every weight,
    so open_clip is not asked for the pretrained ones (offline: a minute of retries, then a
    download error that never mentioned the checkpoint)."""
    import open_clip
    import torch

    from ost.run.build import load_model
    from ost.run.config import load_config

    config = write_config(tmp_path, data, pretrained="openai")
    ckpt = tmp_path / "w.pt"
    torch.save(load_model(load_config(str(config), ["pretrained=null"]), None).state_dict(), ckpt)
    real = open_clip.create_model

    def offline(name, pretrained=None, **kwargs):
        assert not pretrained and not kwargs.get("pretrained_text", True), \
            f"pretrained weights {pretrained!r} asked for although the checkpoint replaces them"
        return real(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", offline)
    video = str(Path(data["labels"]).parent / "videos" / "class00_00.mp4")
    assert main(["eval", "--config", str(config), "--list", str(data["val"]), "--checkpoint", str(ckpt),
                 "--quiet"]) == 0
    assert main(["predict", video, "--config", str(config), "--checkpoint", str(ckpt), "--classes", "a,b",
                 "--quiet"]) == 0
    assert main(["plot-plan", "--config", str(config), "--checkpoint", str(ckpt), "--video", video, "--out",
                 str(tmp_path / "p.png")]) == 0


def test_an_error_line_needs_neither_torchvision_nor_open_clip(tmp_path):
    """Before its first check a command imported torchvision (through ost.run.config), a second
    on the 2-core machine: half the time to a mistake's error line."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom ost.cli import main\n"
            "assert main(['predict', 'missing.mp4', '--config', 'k400_zero_shot', '--classes', 'a,b']) == 2\n"
            "print(sorted(m for m in ('torchvision', 'open_clip') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "ost: error: none of the 1 videos is a file: missing.mp4"
    assert done.stdout.strip() == "[]"


def test_every_output_path_is_checked_before_the_work(tmp_path, capsys):
    """A file where a folder should be (or a folder where a file goes) is refused before any
    input is read: ensemble used to read both checkpoints, make-synthetic to start writing."""
    a_file = _file(tmp_path, "a_file")
    labels = _file(tmp_path, "labels.csv", "id,name\n0,archery\n")
    under = str(a_file / "out")
    for argv, said in [
        (["ensemble", "--zero-shot", "z.pt", "--finetuned", "f.pt", "--out", under], f"--out {under}"),
        (["convert-official", "--checkpoint", "c.pth", "--out", under], f"--out {under}"),
        (["descriptors", "reindex", "--full-labels", str(labels), "--subset-labels", str(labels), "--descriptors",
          "d.json", "--out", under], f"--out {under}"),
        (["descriptors", "generate", "--labels", str(labels), "--kind", "spatio", "--out", str(tmp_path),
          "--api-key", "k"], f"--out {tmp_path}: is a folder"),
        (["make-synthetic", "--out", str(a_file)], f"--out {a_file}: is a file, not a folder"),
        (["data", "download", "--dest", under], f"--dest {under}"),
    ]:
        line = one_error_line(capsys, argv)
        assert said in line, (argv, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "labels.csv"]


def test_python_dash_m_ost_is_the_command_line(monkeypatch, capsys):
    """`python -m ost` (ost/__main__.py) runs the same main: no command is one error line, exit 2."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["ost"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("ost", run_name="__main__")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "ost: error: the following arguments are required: command"
