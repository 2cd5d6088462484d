"""Video data for OST: annotation lists, PyAV decoding, TSN frame sampling, the paper's
augmentations, few-shot subsets.

Annotation lists use the format OST / ViFi-CLIP users have: one `relative/path.mp4 label_id`
per line (blank lines and `#` comments allowed). A video that cannot be decoded is logged,
counted and skipped (never a crash): the dataset returns a placeholder the collate function
drops, and every batch reports how many it dropped.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torchvision.transforms import v2

log = logging.getLogger("ost.data")

# CLIP's normalization (open_clip.constants.OPENAI_DATASET_MEAN / STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VideoRecord:
    path: Path
    label: int


def read_annotations(list_path, root=None, num_classes: int | None = None) -> list[VideoRecord]:
    """Records of an annotation list; paths are relative to `root` (default: the list's folder)."""
    list_path = Path(list_path)
    root = Path(root) if root is not None else list_path.parent
    records = []
    for line_no, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_path}:{line_no}: expected 'relative/path.mp4 label_id', got {line!r}")
        label = int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise ValueError(f"{list_path}:{line_no}: label {label} outside 0..{(num_classes or 1) - 1}")
        records.append(VideoRecord(root / parts[0], label))
    if not records:
        raise ValueError(f"{list_path}: no videos listed")
    return records


def few_shot(records: list[VideoRecord], k: int, seed: int = 0) -> list[VideoRecord]:
    """K videos per class, drawn with a fixed seed (all of a class's videos if it has fewer)."""
    by_class = defaultdict(list)
    for r in records:
        by_class[r.label].append(r)
    rng = random.Random(seed)
    out = []
    for label in sorted(by_class):
        items = by_class[label]
        out += rng.sample(items, min(k, len(items)))
    return out


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
    wanted = sorted(set(indices))
    got = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    if not got:
        raise ValueError(f"{path}: no frames decoded")
    last = max(got)
    return np.stack([got.get(i, got[last]) for i in indices])


def count_frames(path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def train_transform(size: int):
    """The paper's recipe (Table 7): multi-scale crop, flip 0.5, colour jitter 0.8, grayscale
    0.2, then CLIP's normalization; one random draw per clip, applied to all its frames."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def eval_transform(size: int):
    return v2.Compose([
        v2.Resize(size, antialias=True),
        v2.CenterCrop(size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(CLIP_MEAN, CLIP_STD),
    ])


class VideoDataset(torch.utils.data.Dataset):
    """Clips of T frames: items are (frames (T, 3, size, size), label, index), or
    (None, label, index) for a video that failed to decode (see collate_skipping)."""

    def __init__(self, records: list[VideoRecord], num_frames: int, size: int, train: bool, seed: int = 0):
        self.records = records
        self.num_frames = num_frames
        self.train = train
        self.transform = train_transform(size) if train else eval_transform(size)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int):
        rec = self.records[index]
        # Seeded per (epoch, video): the same run samples the same frames, resumed or not.
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
        try:
            n = count_frames(rec.path)
            frames = decode_frames(rec.path, segment_indices(n, self.num_frames, self.train, rng))
        except Exception as exc:  # unreadable, truncated, not a video: skip it, never crash
            log.warning("skipping unreadable video %s: %s", rec.path, exc)
            return None, rec.label, index
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
        if self.train:
            torch.manual_seed(rng.randrange(2**31))
        return self.transform(clip), rec.label, index


def collate_skipping(items):
    """Stack the decodable clips of a batch; returns dict(frames (B, T, 3, H, W), labels (B,),
    indices (B,), skipped: int, skipped_indices: list)."""
    ok = [it for it in items if it[0] is not None]
    bad = [it[2] for it in items if it[0] is None]
    if not ok:
        return {"frames": None, "labels": None, "indices": None, "skipped": len(bad), "skipped_indices": bad}
    return {
        "frames": torch.stack([it[0] for it in ok]),
        "labels": torch.tensor([it[1] for it in ok]),
        "indices": torch.tensor([it[2] for it in ok]),
        "skipped": len(bad),
        "skipped_indices": bad,
    }
