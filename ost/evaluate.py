"""`ost eval`: zero-shot / closed-set top-1 and top-5 accuracy against all classes.

Descriptor embeddings are computed once per split (the model's evaluation cache); several
splits (e.g. the three zero-shot splits of HMDB, UCF or K600) are averaged as mean +- std, as
in the paper's Table 1. Optional weight-space ensembling with a zero-shot model first.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import VideoDataset, collate_skipping, read_annotations
from .descriptors import DescriptorSet
from .large_classes import chunked_topk
from .model import OSTModel


@dataclass
class Split:
    labels: str
    video_list: str
    spatio: str
    temporal: str
    root: str | None = None


@torch.no_grad()
def evaluate_split(model: OSTModel, split: Split, frames: int, size: int, batch_size: int = 8,
                   num_workers: int = 0, progress: bool = True, class_chunk: int | None = None,
                   memory_budget: int | None = None) -> dict:
    """{"top1", "top5", "videos", "skipped"} of the model on one split (its own classes).

    With class_chunk (classes at a time) or memory_budget (bytes), logits are computed a chunk
    of classes at a time with a running top-5 (ost.large_classes.chunked_topk): same results,
    memory bounded whatever the number of classes."""
    model.descriptors = DescriptorSet.from_files(split.labels, split.spatio, split.temporal)
    model.eval()
    model._cache = None  # descriptors changed: encode them once for this split
    device = next(model.parameters()).device
    records = read_annotations(split.video_list, split.root, model.descriptors.num_classes)
    loader = torch.utils.data.DataLoader(VideoDataset(records, frames, size, train=False), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=collate_skipping)
    desc = model.descriptor_embeddings(progress=progress)
    k5 = min(5, model.descriptors.num_classes)
    hit1 = hit5 = seen = skipped = 0
    for batch in tqdm(loader, desc=f"eval {Path(split.video_list).name}", disable=not progress, leave=False):
        skipped += batch["skipped"]
        if batch["frames"] is None:
            continue
        emb = model.encode_video(batch["frames"].to(device))
        labels = batch["labels"].to(device)
        if class_chunk is None and memory_budget is None:
            top = model.logits(emb, desc).topk(k5, dim=1).indices
        else:
            _, top = chunked_topk(emb, desc, model.clip.logit_scale.exp(), k5, model.config, class_chunk, memory_budget)
        hit1 += (top[:, 0] == labels).sum().item()
        hit5 += (top == labels[:, None]).any(1).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError(f"{split.video_list}: no video could be decoded")
    return {"top1": hit1 / seen, "top5": hit5 / seen, "videos": seen, "skipped": skipped}


def evaluate(model: OSTModel, splits: list[Split], frames: int, size: int, batch_size: int = 8,
             progress: bool = True, out_path=None, class_chunk: int | None = None,
             memory_budget: int | None = None) -> dict:
    """Per-split results and their mean +- std; written as JSON to out_path when given."""
    per_split = [evaluate_split(model, s, frames, size, batch_size, progress=progress, class_chunk=class_chunk,
                                memory_budget=memory_budget) for s in splits]
    summary = {}
    for key in ("top1", "top5"):
        vals = [r[key] for r in per_split]
        summary[key] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}
    result = {"splits": [{"list": s.video_list, **r} for s, r in zip(splits, per_split)], "summary": summary}
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(result, indent=1) + "\n")
    return result
