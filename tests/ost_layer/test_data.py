"""Video data: the synthetic set, annotation lists, TSN sampling, decoding, corrupt videos."""
import random

import pytest
import torch

from ost.data.annotations import few_shot, read_annotations
from ost.data.data import VideoDataset, collate_skipping, decode_frames, segment_indices
from ost.descriptors.descriptors import DescriptorSet
from ost.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), num_classes=3, videos_per_class=4, frames=12, size=32)


def test_synthetic_set_is_complete(synthetic):
    ds = DescriptorSet.from_files(synthetic["labels"], synthetic["spatio"], synthetic["temporal"])
    assert ds.num_classes == 3 and ds.class_names[0] == "red square moving right"
    assert [len(t) for t in ds.temporal] == [2, 3, 2]
    train = read_annotations(synthetic["train"], num_classes=3)
    val = read_annotations(synthetic["val"], num_classes=3)
    assert len(train) == 9 and len(val) == 3 and all(r.path.exists() for r in train + val)


def test_synthetic_videos_are_encoded_reproducibly(synthetic, tmp_path):
    """The encoder settings that make the bytes the same under CPU load (ost/data/synthetic.py:
    one thread, no macroblock tree; with mbtree a few of 40 concurrent runs differed), read
    back from the options libx264 writes into each file, and a second run's identical bytes."""
    video = synthetic["train"].parent / "videos" / "class00_02.mp4"
    data = video.read_bytes()
    start = data.index(b"x264 - core")
    options = data[start:data.index(b"\0", start)].decode().split(" options: ")[1].split()
    assert "threads=1" in options and "mbtree=0" in options, options
    again = make_synthetic(tmp_path, num_classes=3, videos_per_class=4, frames=12, size=32)
    assert (again["train"].parent / "videos" / "class00_02.mp4").read_bytes() == data


def test_tsn_sampling():
    assert segment_indices(16, 4, train=False) == [2, 6, 10, 14]
    rng = random.Random(0)
    idx = segment_indices(16, 4, train=True, rng=rng)
    assert all(4 * k <= i < 4 * (k + 1) for k, i in enumerate(idx))
    assert segment_indices(3, 6, train=False) == [0, 0, 1, 1, 2, 2]


def test_decoding_and_dataset(synthetic):
    rec = read_annotations(synthetic["val"])[0]
    frames = decode_frames(rec.path, [0, 5, 5, 11])
    assert frames.shape == (4, 32, 32, 3) and frames.dtype.name == "uint8"
    assert frames[0, 0, 0, 0] > 120 and frames[0, 0, 0, 2] < 120  # class 0: red background
    ds = VideoDataset(read_annotations(synthetic["train"]), num_frames=4, size=24, train=True, seed=1)
    clip, label, index = ds[0]
    assert clip.shape == (4, 3, 24, 24) and clip.dtype == torch.float32 and index == 0
    torch.testing.assert_close(ds[0][0], clip)  # seeded per (epoch, video)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], clip)


def test_corrupt_videos_are_skipped_and_counted(synthetic, tmp_path, caplog):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    lst = tmp_path / "list.txt"
    good = read_annotations(synthetic["val"])
    lst.write_text(f"{good[0].path} 0\n{bad} 1\n{tmp_path / 'missing.mp4'} 2\n{good[1].path} 0\n")
    ds = VideoDataset(read_annotations(lst, root="/"), num_frames=4, size=24, train=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_skipping)
    with caplog.at_level("WARNING", logger="ost.data"):
        batch = next(iter(loader))
    assert batch["frames"].shape == (2, 4, 3, 24, 24)
    assert batch["skipped"] == 2 and batch["skipped_indices"] == [1, 2]
    assert "broken.mp4" in caplog.text and "missing.mp4" in caplog.text


def test_annotation_errors_and_few_shot(tmp_path, synthetic):
    p = tmp_path / "l.txt"
    p.write_text("a.mp4 0\nb.mp4\n")
    with pytest.raises(ValueError, match=r"l.txt:2: expected 'relative/path.mp4 label_id'"):
        read_annotations(p)
    p.write_text("a.mp4 5\n")
    with pytest.raises(ValueError, match="label 5 outside 0..2"):
        read_annotations(p, num_classes=3)
    recs = read_annotations(synthetic["train"])
    shots = few_shot(recs, 2, seed=3)
    assert sorted(r.label for r in shots) == [0, 0, 1, 1, 2, 2]
    assert shots == few_shot(recs, 2, seed=3)


def test_bad_videos_in_loader_workers_are_skipped_and_counted(synthetic, tmp_path):
    """In worker processes too: a garbage file, a missing one and a truncated one never stop
    the loader; the batch says how many it dropped (deferred items: uint8, with parameters)."""
    good = read_annotations(synthetic["train"])
    data = good[0].path.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{good[0].path} 0\n{tmp_path / 'broken.mp4'} 1\n{tmp_path / 'missing.mp4'} 2\n"
                   f"{tmp_path / 'truncated.mp4'} 0\n{good[1].path} 0\n")
    ds = VideoDataset(read_annotations(lst, root="/"), num_frames=4, size=24, train=True, deferred=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=collate_skipping, num_workers=2)
    batch = next(iter(loader))
    assert batch["skipped"] == 3 and batch["skipped_indices"] == [1, 2, 3]
    assert batch["frames"].shape == (2, 4, 3, 24, 24) and batch["frames"].dtype == torch.uint8
    assert batch["photometric"]["factors"].shape == (2, 4, 4)


def test_deferred_items_finish_to_the_same_clips(synthetic):
    """Deferring the photometric half to the batch gives the clips the dataset makes itself."""
    from ost.data.augment import finish_batch

    recs = read_annotations(synthetic["train"])
    for train in (True, False):
        eager = VideoDataset(recs, num_frames=4, size=24, train=train, seed=3)
        deferred = VideoDataset(recs, num_frames=4, size=24, train=train, seed=3, deferred=True)
        batch = collate_skipping([deferred[i] for i in range(3)])
        torch.testing.assert_close(finish_batch(batch, torch.device("cpu")), torch.stack([eager[i][0] for i in range(3)]))
