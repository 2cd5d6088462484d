"""Annotation lists (the format OST / ViFi-CLIP users have) and few-shot subsets.

One `relative/path.mp4 label_id` per line, split on the last whitespace (paths may contain
spaces); blank lines are skipped. There are no comments: real file names start with `#`
(HMDB's `#122_Cleaning_Up_...avi`).
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..files import read_text

@dataclass(frozen=True)
class VideoRecord:
    path: Path
    label: int


def read_annotations(list_path, root=None, num_classes: int | None = None) -> list[VideoRecord]:
    """Records of an annotation list; paths are relative to `root` (default: the list's folder).

    Every non-blank line is a video: `<path> <label>`, split on the last whitespace. A line
    starting with `#` is a video too (HMDB file names do), not a comment."""
    list_path = Path(list_path)
    root = Path(root) if root is not None else list_path.parent
    records = []
    # read_text translates \r\n and \r (the K400 lists are CRLF); splitting on "\n" only, not
    # str.splitlines, so that no other character (\x0c, \x85, \u2028 ...) can cut a name in two.
    for line_no, line in enumerate(read_text(list_path).split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        # ASCII digits only: str.isdigit and int() take other scripts' digits ("٣" is 3).
        if len(parts) != 2 or not re.fullmatch(r"-?[0-9]+", parts[1]):
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
