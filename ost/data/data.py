"""Video data for OST: PyAV decoding, TSN frame sampling, and the dataset of clips with the
paper's augmentations (ost.data.transforms) and test-time views. Annotation lists and few-shot
subsets live in ost.data.annotations.

A video that cannot be decoded is logged, counted and skipped (never a crash): the dataset
returns a placeholder the collate function drops, and every batch reports how many it dropped.
Randomness comes from one `random.Random` per (seed, epoch, video), never from the global
torch RNG, so a resumed run draws the same frames, crops and jitter as an uninterrupted one.
"""
from __future__ import annotations

import logging
import random
import signal
import sys

import numpy as np
import torch

from .annotations import VideoRecord
from .augment import apply_photometric, photometric_params
from .decode import read_frames
from .transforms import check_views, eval_transform, train_transform

log = logging.getLogger("ost.data")


def segment_indices(num_frames: int, T: int, train: bool, rng: random.Random | None = None) -> list[int]:
    """TSN sampling: T segments of equal length; a random frame of each in training, its centre
    in evaluation. Videos shorter than T repeat frames."""
    if num_frames < 1:
        raise ValueError("the video has no frames")
    seg = num_frames / T
    if train:
        rng = rng or random
        return [min(num_frames - 1, int(seg * k + rng.random() * seg)) for k in range(T)]
    return [min(num_frames - 1, int(seg * k + seg / 2)) for k in range(T)]


def decode_frames(path, indices: list[int]) -> np.ndarray:
    """Frames at `indices` (any order, repeats allowed) as (len, H, W, 3) uint8 RGB."""
    return read_frames(path, lambda n: indices)


class VideoDataset(torch.utils.data.Dataset):
    """Clips of T frames: items are (frames, label, index), or (None, label, index) for a video
    that failed to decode (see collate_skipping). frames is float32 (T, 3, size, size), or with
    views=(clips, crops) != (1, 1) in evaluation (clips * crops, T, 3, size, size).

    Views (evaluation only, as the official TEST.NUM_CLIP x TEST.NUM_CROP): `clips` temporal
    clips, each a TSN sampling with a random frame per segment (the official multi-clip test
    draws training-mode SampleFrames `clips` times; here from the per-video seeded RNG, so
    evaluation is reproducible), or the segment centres when clips == 1; `crops` 1 (centre) or
    3 (three crops along the long side). Views are ordered crop-major (view = crop * clips +
    clip), as the official pipeline concatenates them.

    normalization: "imagenet" (the official pipeline's) or "clip" (ost.data.augment.NORMALIZATIONS).

    deferred=True (what training and evaluation use): items are (uint8 frames, label, index,
    photometric parameters or None) with the geometric transforms done; the colour jitter,
    grayscale and normalization run on the whole batch on the training device
    (ost.data.augment.finish_batch). deferred=False gives finished float32 clips, as above."""

    def __init__(self, records: list[VideoRecord], num_frames: int, size: int, train: bool, seed: int = 0, *,
                 normalization: str = "imagenet", views=(1, 1), deferred: bool = False):
        self.records = records
        self.num_frames = num_frames
        self.train = train
        self.views = check_views(views)
        if train and self.views != (1, 1):
            raise ValueError(f"views={views!r}: several views are a test-time option; training takes (1, 1)")
        self.normalization = normalization
        self.transform = (train_transform(size, normalization) if train
                          else eval_transform(size, normalization, self.views[1]))
        self.deferred = deferred
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, n: int, rng: random.Random) -> list[int]:
        clips, T = self.views[0], self.num_frames
        if clips == 1:
            return segment_indices(n, T, self.train, rng)
        return [i for _ in range(clips) for i in segment_indices(n, T, True, rng)]

    def __getitem__(self, key):
        """key: a video index, or (epoch, index) (what EpochSampler yields, so that persistent
        loader workers see the epoch)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rec = self.records[index]
        # Seeded per (epoch, video): the same run samples the same frames, resumed or not,
        # whichever worker loads it.
        rng = random.Random((self.seed * 1_000_003 + epoch) * 1_000_003 + index)
        try:
            frames = read_frames(rec.path, lambda n: self._indices(n, rng))
        except Exception as exc:  # unreadable, truncated, missing, not a video: skip it, never crash
            log.warning("skipping unreadable video %s: %s", rec.path, exc)
            return (None, rec.label, index) + ((None,) if self.deferred else ())
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (clips * T, 3, H, W) uint8
        params = None
        if self.train:
            aug = self.transform.draw(clip.shape[0], clip.shape[-2], clip.shape[-1], rng)
            clip = self.transform.geometric(clip, aug)
            params = photometric_params(aug, clip.shape[0])
        else:
            clip = self.transform.geometric(clip)  # (clips * T, 3, S, S), or (3, clips * T, ...)
            if self.views != (1, 1):
                clips, crops = self.views
                clip = clip.reshape(crops * clips, self.num_frames, *clip.shape[-3:])
        if self.deferred:
            return clip, rec.label, index, params
        batched = None if params is None else {k: v[None] for k, v in params.items()}
        return apply_photometric(clip[None], batched, self.normalization)[0], rec.label, index


def loader_worker_init(worker_id: int) -> None:
    """A loader's worker_init_fn, so that a Ctrl-C prints one line, `ost: interrupted`:

    - Workers ignore SIGINT. A Ctrl-C goes to the whole process group; the main process stops
      its workers itself, while a worker that takes the signal dies mid-batch.
    - A worker hands batches over through multiprocessing's resource sharer, a thread that
      prints any error it meets through sys.excepthook. When the main process is interrupted
      while it fetches a batch, that thread's connection is reset, and it would print a
      traceback after the line. A worker's only peer is the main process, so a connection it
      loses means the run is ending: such errors are not printed. Every other error still is
      (the dataset's own errors travel to the main process, not through this hook)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    printed = sys.excepthook

    def hook(kind, value, traceback):
        if not issubclass(kind, (ConnectionError, EOFError)):
            printed(kind, value, traceback)

    sys.excepthook = hook


def collate_skipping(items):
    """Stack the decodable clips of a batch; returns dict(frames (B, T, 3, H, W), or
    (B, V, T, 3, H, W) for multi-view items, labels (B,), indices (B,), skipped: int,
    skipped_indices: list, and for deferred training items photometric: dict of (B, ...)
    parameters for ost.data.augment.finish_batch)."""
    ok = [it for it in items if it[0] is not None]
    bad = [it[2] for it in items if it[0] is None]
    if not ok:
        return {"frames": None, "labels": None, "indices": None, "skipped": len(bad), "skipped_indices": bad,
                "photometric": None}
    shapes = {tuple(it[0].shape) for it in ok}
    if len(shapes) > 1:
        raise ValueError(f"clips of one batch differ in shape: {sorted(shapes)} (mixed views or sizes?)")
    params = [it[3] for it in ok] if len(ok[0]) > 3 else [None]
    return {
        "frames": torch.stack([it[0] for it in ok]),
        "labels": torch.tensor([it[1] for it in ok]),
        "indices": torch.tensor([it[2] for it in ok]),
        "skipped": len(bad),
        "skipped_indices": bad,
        "photometric": None if params[0] is None else {k: torch.stack([p[k] for p in params]) for k in params[0]},
    }
