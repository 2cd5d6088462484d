"""`ost eval`: zero-shot / closed-set top-1 and top-5 accuracy against all classes.

Descriptor embeddings are computed once per split (the model's evaluation cache); several
splits (e.g. the three zero-shot splits of HMDB, UCF or K600) are averaged as mean +- std, as
in the paper's Table 1. Optional weight-space ensembling with a zero-shot model first.

Test views (the official TEST.NUM_CLIP x TEST.NUM_CROP, main_nce.py validate): with
views=(clips, crops) != (1, 1) each video is scored as softmax(logits) averaged over its
clips * crops views, then ranked; with (1, 1) (the default) it is ranked by its logits.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
# Not tqdm.auto: its asyncio tqdm calls iter() on the iterable in __init__ and again to loop,
# and a second DataLoader iterator decodes the first batches twice with a second worker set.
from tqdm import tqdm

from ..data.annotations import read_annotations
from ..data.augment import finish_batch
from .distributed import loader_workers
from ..data.data import VideoDataset, collate_skipping, loader_worker_init
from ..data.augment import check_normalization
from ..data.transforms import check_views
from ..descriptors.descriptors import DescriptorSet
from ..files import atomic_write
from ..model.large_classes import chunk_for_budget, chunked_topk
from ..model.logits import DescriptorEmbeddings
from ..model.model import OSTModel


@dataclass
class EvalConfig:
    """`ost eval`'s settings: the `eval` group of a run config (ost.run.config), in YAML
    `eval: {ensemble_alpha: 0.2}`, on the command line `--set eval.batch_size=16`."""

    val_list: str = ""  # the videos scored when no --list / --split / splits is given
    splits: list = field(default_factory=list)  # [{labels, list, spatio, temporal[, root]}]: mean +- std
    views: tuple = (1, 1)  # temporal clips x spatial crops, softmax averaged
    ensemble_alpha: float | None = None  # WiSE-FT weight of the zero-shot model (also `ost plot-plan`)
    batch_size: int = 8  # videos per batch
    class_chunk: int | None = None  # classes scored at a time (running top-5): bounded memory ...
    memory_budget_mb: float | None = None  # ... or derived from this budget


@dataclass
class Split:
    labels: str
    video_list: str
    spatio: str
    temporal: str
    root: str | None = None


def view_average(logits: torch.Tensor, num_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and probabilities (B, A) of logits (B * num_views, A) whose rows are the views of
    each video in turn, each averaged over a video's views: the logits as they are, the
    probabilities as softmax over classes per view (the official test sums them: same ranking).
    Averaging probabilities, not logits, lets a confident view outvote unsure ones; `ost eval`
    ranks by them, `ost predict` (ost.Recognizer) reports both."""
    if logits.shape[0] % num_views:
        raise ValueError(f"{logits.shape[0]} rows of logits are not a whole number of {num_views} views")
    logits = logits.float()
    A = logits.shape[-1]
    return logits.view(-1, num_views, A).mean(1), logits.softmax(dim=-1).view(-1, num_views, A).mean(1)


def view_scores(logits: torch.Tensor, num_views: int) -> torch.Tensor:
    """Scores (B, A) of logits (B * num_views, A) whose rows are the views of each video in turn:
    the probabilities of view_average, what `ost eval` ranks a video by."""
    return view_average(logits, num_views)[1]


def _all_class_logits(model: OSTModel, emb: torch.Tensor, desc: DescriptorEmbeddings, class_chunk: int | None,
                      memory_budget: int | None) -> torch.Tensor:
    """Logits (N, A) of frame embeddings (N, T, d) against every class; with class_chunk or
    memory_budget the OD solver runs a chunk of classes at a time (as chunked_topk does), so
    its memory is bounded by the chunk, and only the (N, A) logits themselves are kept."""
    if class_chunk is None and memory_budget is None:
        return model.logits(emb, desc)
    A = desc.num_classes
    chunk = class_chunk if class_chunk is not None else chunk_for_budget(emb.shape[0], emb.shape[1],
                                                                         desc.spatio.shape[1], memory_budget)
    if chunk < 1:
        raise ValueError(f"class_chunk must be >= 1, got {chunk}")
    parts = [model.logits(emb, desc.select(torch.arange(a0, min(A, a0 + chunk), device=emb.device)))
             for a0 in range(0, A, chunk)]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def evaluate_split(model: OSTModel, split: Split, frames: int, size: int, batch_size: int = 8,
                   num_workers: int | None = None, progress: bool = True, class_chunk: int | None = None,
                   memory_budget: int | None = None, *, views=(1, 1), normalization: str = "imagenet",
                   descriptors: DescriptorSet | Callable[[Split], DescriptorSet] | None = None,
                   predictions: list | None = None) -> dict:
    """{"top1", "top5", "videos", "skipped"} of the model on one split (its own classes).

    predictions: a list to append one record per video to: list, index (the video's line in
    it), video, label, and the
    top-5 classes with their scores (logits; with several views the averaged probabilities),
    or for an unreadable video its error.

    With class_chunk (classes at a time) or memory_budget (bytes), logits are computed a chunk
    of classes at a time with a running top-5 (ost.model.large_classes.chunked_topk): same results,
    memory bounded whatever the number of classes.

    views=(clips, crops): test views per video (ost.data.data.VideoDataset); with more than one, a
    video's score is softmax(logits over all classes) averaged over its views, the official
    multi-view test. The softmax needs every class's logit, so chunking then bounds the
    solver's memory chunk by chunk but keeps the (batch_size * views, A) logits. A batch
    encodes batch_size * clips * crops clips. normalization: the pixel normalization the model
    was trained with ("imagenet", the official pipeline's, or "clip").

    descriptors: the split's DescriptorSet, or a function split -> DescriptorSet (e.g. a
    config's class-name baseline); default DescriptorSet.from_files(labels, spatio, temporal)."""
    clips, crops = check_views(views)
    check_normalization(normalization)
    multi_view = (clips, crops) != (1, 1)
    if descriptors is None:
        descriptors = DescriptorSet.from_files(split.labels, split.spatio, split.temporal)
    elif callable(descriptors):
        descriptors = descriptors(split)
    model.set_descriptors(descriptors)  # encoded once for this split
    model.eval()
    device = next(model.parameters()).device
    records = read_annotations(split.video_list, split.root, model.descriptors.num_classes)
    # Loader workers crop uint8 clips; the normalization runs on the model's device.
    dataset = VideoDataset(records, frames, size, train=False, views=(clips, crops), normalization=normalization,
                           deferred=True)
    workers = loader_workers(num_workers, 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_skipping, pin_memory=device.type == "cuda",
                                         worker_init_fn=loader_worker_init)
    desc = model.descriptor_embeddings(progress=progress)
    k5 = min(5, model.descriptors.num_classes)
    hit1 = hit5 = seen = skipped = 0
    names = model.descriptors.class_names
    for batch in tqdm(loader, desc=f"eval {Path(split.video_list).name}", disable=not progress, leave=False):
        skipped += batch["skipped"]
        if predictions is not None:
            predictions += [dict(list=str(split.video_list), index=i, video=str(records[i].path),
                                 label=names[records[i].label], error="unreadable, skipped")
                            for i in batch["skipped_indices"]]
        if batch["frames"] is None:
            continue
        labels = batch["labels"].to(device)
        x = finish_batch(batch, device, normalization)  # (B, T, 3, S, S), or (B, V, T, 3, S, S)
        if multi_view:
            V = x.shape[1]
            emb = model.encode_video(x.flatten(0, 1))  # (B * V, T, d)
            logits = _all_class_logits(model, emb, desc, class_chunk, memory_budget)
            scores, top = view_scores(logits, V).topk(k5, dim=1)
        else:
            emb = model.encode_video(x)
            if class_chunk is None and memory_budget is None:
                scores, top = model.logits(emb, desc).topk(k5, dim=1)
            else:
                scores, top = chunked_topk(emb, desc, model.clip.logit_scale.exp(), k5, model.config, class_chunk,
                                           memory_budget)
        if predictions is not None:
            kind = "probability" if multi_view else "logit"
            for row, i in enumerate(batch["indices"].tolist()):
                predictions.append(dict(list=str(split.video_list), index=i, video=str(records[i].path),
                                        label=names[records[i].label], top=[names[a] for a in top[row].tolist()],
                                        scores=[float(v) for v in scores[row].tolist()], score=kind,
                                        correct=bool(top[row, 0].item() == records[i].label)))
        hit1 += (top[:, 0] == labels).sum().item()
        hit5 += (top == labels[:, None]).any(1).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError(f"{split.video_list}: no video could be decoded")
    return {"top1": hit1 / seen, "top5": hit5 / seen, "videos": seen, "skipped": skipped}


def evaluate(model: OSTModel, splits: list[Split], frames: int, size: int, batch_size: int = 8,
             progress: bool = True, out_path=None, class_chunk: int | None = None,
             memory_budget: int | None = None, *, views=(1, 1), normalization: str = "imagenet",
             descriptors: Callable[[Split], DescriptorSet] | None = None,
             num_workers: int | None = None, predictions_path=None) -> dict:
    """Per-split results and their mean +- std; written as JSON to out_path when given. views,
    normalization, descriptors (a function split -> DescriptorSet) and num_workers: as in
    evaluate_split. predictions_path: every video's record (evaluate_split's predictions) as
    JSON lines, written once all splits are scored."""
    check_views(views)  # fail before the first split, not after it
    check_normalization(normalization)
    records = [] if predictions_path else None
    per_split = [evaluate_split(model, s, frames, size, batch_size, num_workers=num_workers, progress=progress,
                                class_chunk=class_chunk, memory_budget=memory_budget, views=views,
                                normalization=normalization, descriptors=descriptors, predictions=records)
                 for s in splits]
    summary = {}
    for key in ("top1", "top5"):
        vals = [r[key] for r in per_split]
        summary[key] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}
    result = {"splits": [{"list": s.video_list, **r} for s, r in zip(splits, per_split)], "summary": summary}
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_path, lambda fh: fh.write(json.dumps(result, indent=1) + "\n"))
    if predictions_path:
        Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(predictions_path,
                     lambda fh: fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return result
