"""Decoding only what a clip needs (ost.data.decode): the same frames as decoding every frame in
order, fewer frames decoded, containers without a frame count, truncated and missing files."""
import random

import av
import numpy as np
import pytest

from ost.data.data import segment_indices
from ost.data.decode import DecodeStats, read_frames


def _write(path, frames: int, gop: int | None = None, codec_options=None):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (60, 100, 3)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
            stream.options = {"keyint_min": str(gop), "sc_threshold": "0"}
        for t in range(frames):
            img = base[t % 12:t % 12 + 48, t % 36:t % 36 + 64] + rng.normal(0, 6, (48, 64, 3))
            img[10:20, (2 * t) % 50:(2 * t) % 50 + 10] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _every_frame(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    return {"default_gop": _write(d / "default.mp4", 90), "short_gop": _write(d / "short.mp4", 90, gop=8),
            "mkv": _write(d / "nocount.mkv", 90, gop=8)}


@pytest.mark.parametrize("name", ["default_gop", "short_gop", "mkv"])
@pytest.mark.parametrize("T", [1, 3, 8, 32])
def test_frames_equal_decoding_everything(videos, name, T):
    path = videos[name]
    every = _every_frame(path)
    for seed in range(4):
        rng = random.Random(seed)
        indices = segment_indices(len(every), T, seed > 0, rng)
        if seed == 3:  # several clips, repeats, any order
            indices = indices + indices[::-1]
        got = read_frames(path, lambda n: indices)
        assert np.array_equal(got, every[indices]), (name, T, seed)


def test_fewer_frames_are_decoded(videos):
    """A few frames of a short-GOP video need a few groups of pictures; non-reference frames that
    are not wanted are dropped by the decoder in any case."""
    for name, limit in (("short_gop", 0.5), ("default_gop", 1.0)):
        stats = DecodeStats()
        read_frames(videos[name], lambda n: [5, 40, 80], stats)
        assert stats.packets == 90 and stats.sent <= limit * 90, (name, stats)


def test_container_without_frame_count_is_read_once(videos):
    with av.open(str(videos["mkv"])) as container:
        assert not container.streams.video[0].frames  # Matroska stores no frame count
    seen = []
    stats = DecodeStats()
    got = read_frames(videos["mkv"], lambda n: seen.append(n) or [0, n - 1], stats)
    assert seen == [90] and stats.sent <= 90  # counted from the packets, each decoded at most once
    assert np.array_equal(got, _every_frame(videos["mkv"])[[0, 89]])


def test_truncated_and_missing_files(videos, tmp_path):
    data = videos["short_gop"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(Exception):  # the moov atom is at the end: nothing to read
        read_frames(cut, lambda n: [0])
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_frames(tmp_path / "missing.mp4", lambda n: [0])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(av.error.InvalidDataError):
        read_frames(garbage, lambda n: [0])


@pytest.mark.parametrize("gop", [None, 12])
def test_the_benchmarks_kinetics_like_clip(tmp_path, gop):
    """The pipeline benchmark's clip (ost.data.synthetic.write_kinetics_like_clip): the Kinetics
    norm's size and rate, its keyframe interval, and frames that differ (it pans and moves)."""
    from ost.data.synthetic import write_kinetics_like_clip

    path = write_kinetics_like_clip(tmp_path / "k.mp4", seconds=1.0, gop=gop)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (340, 256, 30)
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size]
    assert len(keyframes) == 30 and keyframes[0]
    assert sum(keyframes) == (3 if gop else 1)  # frames 0, 12, 24
    frames = read_frames(path, lambda n: [0, n // 2, n - 1])
    assert frames.shape == (3, 256, 340, 3) and not np.array_equal(frames[0], frames[2])
