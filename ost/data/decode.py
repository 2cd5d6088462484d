"""Decoding the frames a clip needs, and no more (PyAV).

A clip wants T of a video's frames (TSN sampling), but frames are stored as a chain of
references: decoding frame k needs the reference frames before it back to a keyframe. Opening a
video here

* reads its packets once (demuxing, no decoding): their count is the frame count, so a
  container that reports none is not decoded twice to count them;
* maps frame index k (display order) to the k-th smallest packet timestamp;
* decodes in one pass, in decode order, only what the wanted frames need: from the last
  keyframe at or before a wanted frame (jumping over whole groups of pictures in between,
  which pays off when keyframes are frequent), with the decoder told to drop non-reference
  frames that are not wanted (about half of an H.264 stream with B-frames);
* converts only the wanted frames to RGB.

The frames returned are bit-identical to decoding every frame in order (tests compare both).
Streams without timestamps fall back to decoding every frame in order and counting.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np


@dataclass
class DecodeStats:
    """What one read cost: packets in the file, and packets sent to the decoder."""

    packets: int = 0
    sent: int = 0


def read_frames(path, choose: Callable[[int], list[int]], stats: DecodeStats | None = None) -> np.ndarray:
    """The frames `choose(n)` picks from a video of n frames, as (len, H, W, 3) uint8 RGB, in the
    order (and with the repeats) it gives them. Raises for files that cannot be read."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one core per loader worker: frame threads only add latency
        packets = [p for p in container.demux(stream) if p.size]
        if not packets:
            raise ValueError(f"{path}: no video packets")
        indices = choose(len(packets))
        if any(p.pts is None for p in packets):
            frames = _decode_in_order(stream, packets, indices)
        else:
            frames = _decode_needed(stream, packets, indices, stats)
    if stats is not None:
        stats.packets = len(packets)
    return frames


def _decode_in_order(stream, packets: list, indices: list[int]) -> np.ndarray:
    """Every frame in display order up to the last wanted one, counting (the plain way)."""
    wanted, last = set(indices), max(indices)
    got = {}
    count = 0
    for packet in [*packets, None]:  # None drains the decoder at the end
        for frame in stream.codec_context.decode(packet):
            if count in wanted:
                got[count] = frame.to_ndarray(format="rgb24")
            count += 1
        if count > last:
            break
    return _assemble(got, indices)


def _decode_needed(stream, packets: list, indices: list[int], stats: DecodeStats | None) -> np.ndarray:
    pts_of = sorted(p.pts for p in packets)  # frame k (display order) has the k-th smallest pts
    wanted = {pts_of[min(i, len(pts_of) - 1)] for i in indices}
    keys = [i for i, p in enumerate(packets) if p.is_keyframe] or [0]
    key_pts = [packets[i].pts for i in keys]
    codec = stream.codec_context
    got: dict[int, np.ndarray] = {}
    pos = 0  # next packet (decode order) to send
    for target in sorted(wanted):
        if target in got:
            continue
        # The last keyframe shown at or before the target; frames before it are not needed.
        k = keys[max(0, bisect.bisect_right(key_pts, target) - 1)]
        if k > pos:
            codec.flush_buffers()
            pos = k
        while target not in got and pos < len(packets):
            packet = packets[pos]
            pos += 1
            # Unwanted non-reference frames (nothing else is decoded from them) are dropped.
            codec.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
            if stats is not None:
                stats.sent += 1
            _keep(codec.decode(packet), wanted, got)
        if target not in got:  # the end: drain the frames the decoder still holds
            codec.skip_frame = "DEFAULT"
            _keep(codec.decode(None), wanted, got)
            break
    rank = {pts: k for k, pts in enumerate(pts_of)}
    return _assemble({rank[p]: a for p, a in got.items()}, indices)


def _keep(frames, wanted: set, got: dict) -> None:
    for frame in frames:
        if frame.pts in wanted and frame.pts not in got:
            got[frame.pts] = frame.to_ndarray(format="rgb24")


def _assemble(got: dict[int, np.ndarray], indices: list[int]) -> np.ndarray:
    """The wanted frames in order; one the stream does not deliver (a truncated file) is
    replaced by the last one decoded before it, or the first decoded."""
    if not got:
        raise ValueError("no frames decoded")
    have = sorted(got)
    out = []
    for i in indices:
        j = bisect.bisect_right(have, i) - 1
        out.append(got[have[max(0, j)]])
    return np.stack(out)
