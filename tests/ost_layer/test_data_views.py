"""Multi-view testing (the official TEST.NUM_CLIP x TEST.NUM_CROP): dataset items, collation and
evaluation averaging softmax over views; views=(1, 1) is the single-view evaluation."""
import random

import numpy as np
import pytest
import torch

from ost.data.annotations import read_annotations
from ost.data.data import VideoDataset, collate_skipping, decode_frames, segment_indices
from ost.data.transforms import check_views, eval_transform
from ost.descriptors.descriptors import DescriptorSet
from ost.run.evaluate import Split, evaluate, evaluate_split, view_average, view_scores
from ost.model.model import OSTModel
from ost.data.synthetic import make_synthetic, write_video
from tests.helpers.tiny_clip import tiny_clip

T, S = 4, 16


@pytest.fixture(scope="module")
def wide_video(tmp_path_factory):
    """A 32 x 48 video of 12 frames, every frame and every column different."""
    d = tmp_path_factory.mktemp("wide")
    x = np.arange(48) * 5
    frames = np.zeros((12, 32, 48, 3), np.uint8)
    for t in range(12):
        frames[t, :, :, 0] = x
        frames[t, :, :, 1] = 20 * t
        frames[t, :, :, 2] = np.arange(32)[:, None] * 6
    write_video(d / "wide.mp4", frames)
    (d / "list.txt").write_text("wide.mp4 0\n")
    return read_annotations(d / "list.txt")


def test_bad_views_are_refused():
    for bad in ((0, 1), (1, 0), (-1, 3), (1, 2), (2,), "ab", 3, (1.5, 1)):
        with pytest.raises(ValueError, match="views"):
            check_views(bad)
        with pytest.raises(ValueError, match="views"):
            VideoDataset([], T, S, False, views=bad)
        with pytest.raises(ValueError, match="views"):
            evaluate_split(None, None, T, S, views=bad)  # refused before touching model or split
        with pytest.raises(ValueError, match="views"):
            evaluate(None, [], T, S, views=bad)
    with pytest.raises(ValueError, match="views=\\(2, 1\\).*training"):
        VideoDataset([], T, S, True, views=(2, 1))
    with pytest.raises(ValueError, match="normalization"):
        evaluate_split(None, None, T, S, normalization="bgr")
    assert check_views((4, 3)) == (4, 3) and check_views([1, 1]) == (1, 1)


def test_view_shapes_and_order(wide_video):
    single = VideoDataset(wide_video, T, S, False)[0][0]
    assert single.shape == (T, 3, S, S)
    torch.testing.assert_close(VideoDataset(wide_video, T, S, False, views=(1, 1))[0][0], single)
    for views in ((2, 1), (1, 3), (2, 3), (4, 3)):
        ds = VideoDataset(wide_video, T, S, False, views=views)
        clip, label, index = ds[0]
        assert clip.shape == (views[0] * views[1], T, 3, S, S) and clip.dtype == torch.float32
        assert (label, index) == (0, 0)
        torch.testing.assert_close(ds[0][0], clip)  # seeded per video: evaluation is reproducible
    # (2, 3): crop-major, as the official pipeline stacks them; each temporal clip a TSN sampling
    # drawn from the video's own RNG, each crop the official three-crop of the same frames.
    ds = VideoDataset(wide_video, T, S, False, seed=5, views=(2, 3))
    clip = ds[0][0].view(3, 2, T, 3, S, S)
    rng = random.Random((5 * 1_000_003 + 0) * 1_000_003 + 0)
    samplings = [segment_indices(12, T, True, rng) for _ in range(2)]
    assert samplings[0] != samplings[1]
    for k, idx in enumerate(samplings):
        frames = torch.from_numpy(decode_frames(wide_video[0].path, idx)).permute(0, 3, 1, 2)
        torch.testing.assert_close(clip[:, k], eval_transform(S, crops=3)(frames))
    assert not torch.allclose(clip[0, 0], clip[1, 0])  # left and right crops differ
    # (1, 3): the segment centres, as single-view evaluation samples them.
    centre = torch.from_numpy(decode_frames(wide_video[0].path, segment_indices(12, T, False))).permute(0, 3, 1, 2)
    torch.testing.assert_close(VideoDataset(wide_video, T, S, False, views=(1, 3))[0][0],
                               eval_transform(S, crops=3)(centre))


def test_collate_keeps_the_view_dimension_and_counts_skipped(wide_video, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    records = wide_video + read_annotations_from(tmp_path, "bad.mp4 1\n") + wide_video
    ds = VideoDataset(records, T, S, False, views=(2, 3))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_skipping)))
    assert batch["frames"].shape == (2, 6, T, 3, S, S)
    assert batch["skipped"] == 1 and batch["skipped_indices"] == [1] and batch["indices"].tolist() == [0, 2]
    with pytest.raises(ValueError, match="differ in shape"):
        collate_skipping([(torch.zeros(T, 3, S, S), 0, 0), (torch.zeros(6, T, 3, S, S), 0, 1)])


def read_annotations_from(folder, text):
    (folder / "l.txt").write_text(text)
    return read_annotations(folder / "l.txt")


def test_view_scores_average_softmax_not_logits():
    # Video 0: view 1 sure of class 0 over 1, view 2 sure of class 2 over 1. Mean logits would
    # pick class 1; mean probabilities pick class 0.
    logits = torch.tensor([[10.0, 9.0, -10.0], [-10.0, 9.5, 10.0], [0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    scores = view_scores(logits, 2)
    torch.testing.assert_close(scores, torch.stack([logits[:2].softmax(-1).mean(0), logits[2:].softmax(-1).mean(0)]))
    assert scores[0].argmax() == 0 and logits[:2].mean(0).argmax() == 1
    torch.testing.assert_close(scores.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="3 views"):
        view_scores(logits, 3)


def test_view_average_gives_the_views_mean_logits_and_mean_probabilities():
    """What `ost predict` reports with several views (the mean logits beside the mean
    probabilities), and what `ost eval` ranks by (view_scores: the probabilities)."""
    logits = torch.tensor([[10.0, 9.0, -10.0], [-10.0, 9.5, 10.0], [0.0, 1.0, 2.0], [0.0, 3.0, 2.0]])
    mean_logits, probs = view_average(logits, 2)
    torch.testing.assert_close(mean_logits, torch.tensor([[0.0, 9.25, 0.0], [0.0, 2.0, 2.0]]))
    torch.testing.assert_close(probs, torch.stack([logits[:2].softmax(-1).mean(0), logits[2:].softmax(-1).mean(0)]))
    assert torch.equal(probs, view_scores(logits, 2))
    one_logits, one_probs = view_average(logits.double(), 1)  # one view: the logits (as float32) and their softmax
    assert one_logits.dtype == torch.float32 and torch.equal(one_logits, logits)
    torch.testing.assert_close(one_probs, logits.softmax(-1))
    with pytest.raises(ValueError, match="4 rows of logits are not a whole number of 3 views"):
        view_average(logits, 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    syn = make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=3, videos_per_class=3, frames=12, size=32)
    clip, tok = tiny_clip(seed=1)
    model = OSTModel(clip, tok, DescriptorSet.from_files(syn["labels"], syn["spatio"], syn["temporal"]))
    # All 9 videos (train + val lists) so that top-1 is not decided by 3 videos.
    lst = syn["train"].parent / "all.txt"
    lst.write_text(syn["train"].read_text() + syn["val"].read_text())
    return model, Split(str(syn["labels"]), str(lst), str(syn["spatio"]), str(syn["temporal"]))


def manual(model, split, views, normalization="imagenet", tops=None):
    """(top1, top5) computed video by video, independently of evaluate_split; each video's
    top-3 classes appended to `tops` when given."""
    records = read_annotations(split.video_list)
    ds = VideoDataset(records, T, 32, False, views=views, normalization=normalization)
    desc = model.descriptor_embeddings()
    hit1 = hit5 = 0
    with torch.no_grad():
        for i, rec in enumerate(records):
            clip = ds[i][0]
            clip = clip[None] if views == (1, 1) else clip
            logits = model.logits(model.encode_video(clip), desc)
            score = logits[0] if views == (1, 1) else logits.softmax(-1).mean(0)
            top = score.topk(3).indices.tolist()
            if tops is not None:
                tops.append(top)
            hit1 += top[0] == rec.label
            hit5 += rec.label in top
    return hit1 / len(records), hit5 / len(records)


def test_single_view_evaluation_is_unchanged(setup):
    model, split = setup
    base = evaluate_split(model, split, T, 32, batch_size=4, progress=False)
    assert base == evaluate_split(model, split, T, 32, batch_size=4, progress=False, views=(1, 1))
    assert base == evaluate_split(model, split, T, 32, batch_size=4, progress=False, class_chunk=1)
    assert (base["top1"], base["top5"]) == manual(model, split, (1, 1)) and base["videos"] == 9


def test_multi_view_evaluation_averages_softmax(setup, monkeypatch):
    model, split = setup
    seen_shapes, got_logits = [], []
    encode, logits_fn = model.encode_video, model.logits

    def spy_encode(frames):
        seen_shapes.append(tuple(frames.shape))
        return encode(frames)

    def spy_logits(emb, desc, *a):
        out = logits_fn(emb, desc, *a)
        got_logits.append(out)
        return out

    monkeypatch.setattr(model, "encode_video", spy_encode)
    monkeypatch.setattr(model, "logits", spy_logits)
    res = evaluate_split(model, split, T, 32, batch_size=4, progress=False, views=(2, 3))
    assert seen_shapes == [(24, T, 3, 32, 32), (24, T, 3, 32, 32), (6, T, 3, 32, 32)]  # 4 videos x 6 views
    labels = torch.tensor([r.label for r in read_annotations(split.video_list)])
    top = torch.cat([view_scores(l, 6) for l in got_logits]).topk(3, dim=1).indices
    assert res["top1"] == (top[:, 0] == labels).sum().item() / 9
    monkeypatch.undo()
    tops = []
    assert (res["top1"], res["top5"]) == manual(model, split, (2, 3), tops=tops) and res["videos"] == 9
    assert top.tolist() == tops  # video by video, the classes evaluate_split ranked
    # Chunked class scoring keeps every class's logit for the softmax: same results.
    for kw in (dict(class_chunk=1), dict(memory_budget=1)):
        assert evaluate_split(model, split, T, 32, batch_size=4, progress=False, views=(2, 3), **kw) == res


def test_evaluate_passes_views_and_normalization_on(setup, monkeypatch):
    import ost.run.evaluate

    model, split = setup
    made = []

    class Recording(VideoDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append((self.views, self.normalization))

    monkeypatch.setattr(ost.run.evaluate, "VideoDataset", Recording)
    asked = []

    def descriptors(s):
        asked.append(s)
        return DescriptorSet.from_files(s.labels, s.spatio, s.temporal)

    out = evaluate(model, [split], T, 32, batch_size=9, progress=False, views=(1, 3), normalization="clip",
                   descriptors=descriptors)
    assert made == [((1, 3), "clip")] and asked == [split] and out["splits"][0]["videos"] == 9
