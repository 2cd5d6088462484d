"""`ost train`: fine-tune CLIP with OST on one CPU, one GPU or several (torchrun).

AdamW (paper: lr 8e-6, weight decay 0.001, betas 0.9 / 0.98), linear warm-up then cosine decay
to lr / 100, per optimizer step; gradient accumulation; bf16 / fp16 autocast on GPUs; full
fine-tuning or a frozen text encoder; the paper's in-batch symmetric KL loss (or
cross-entropy over all classes). Under torchrun each rank takes its share of every global
batch, frame and descriptor embeddings are all-gathered (with gradients) for the in-batch
loss, and gradients are all-reduced, so a step equals the single-process step on the same
global batch. Checkpoints (model, optimizer, scheduler, scaler, step, data position, RNG
state) are written to a temporary file and renamed; `--resume` continues exactly where the
last one stopped, and metrics.jsonl keeps each step once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from .data import VideoDataset, collate_skipping, few_shot, read_annotations
from .descriptors import DescriptorSet
from .large_classes import shard_range, sharded_cross_entropy
from .loss import cross_entropy_loss, symmetric_kl_loss
from .model import DescriptorEmbeddings, OSTModel


@dataclass
class TrainConfig:
    labels: str = ""
    train_list: str = ""
    spatio: str = ""
    temporal: str = ""
    root: str | None = None  # video paths are relative to this (default: the list's folder)
    few_shot: int | None = None  # train on K videos per class (seeded by `seed`)
    model: str = "ViT-B-16"
    pretrained: str | None = None
    model_overrides: dict = field(default_factory=dict)  # extra open_clip.create_model arguments
    frames: int = 8
    size: int = 224
    batch_size: int = 8  # global: split over the ranks
    grad_accum: int = 1
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 8e-6
    weight_decay: float = 0.001
    betas: tuple = (0.9, 0.98)
    warmup_steps: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; GPU only for the half types)
    freeze_text: bool = False
    loss: str = "kl"  # kl (the paper's in-batch loss) | ce (cross-entropy over all classes)
    class_sharded: bool = False  # ce with each rank holding a shard of the classes (large label spaces)
    seed: int = 0
    num_workers: int = 0
    out_dir: str = "runs/ost"
    save_every: int = 50
    tensorboard: bool = False


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """A YAML file of TrainConfig fields, then `key=value` overrides (values parsed as YAML)."""
    values = {}
    if path:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        values[key.strip()] = yaml.safe_load(value)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    cfg = TrainConfig(**values)
    for name in ("labels", "train_list", "spatio", "temporal"):
        if not getattr(cfg, name):
            raise ValueError(f"setting {name!r} is required")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {cfg.precision!r}")
    if cfg.loss not in ("kl", "ce"):
        raise ValueError(f"loss must be kl or ce, got {cfg.loss!r}")
    if cfg.class_sharded and cfg.loss != "ce":
        raise ValueError("class_sharded training uses the cross-entropy over all classes: set loss: ce")
    return cfg


def build_model(cfg: TrainConfig, descriptors: DescriptorSet) -> OSTModel:
    import open_clip

    clip = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, **cfg.model_overrides)
    return OSTModel(clip, open_clip.get_tokenizer(cfg.model), descriptors)


class Distributed:
    """Rank, world size and device; a no-op world of one outside torchrun."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate x over ranks along dim 0, with gradients flowing back to each rank."""
        if self.world == 1:
            return x
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if flag is True on any."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class EpochSampler(torch.utils.data.Sampler):
    """This rank's share of a seeded per-epoch permutation, from position `start` on (resume)."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int):
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.start = 0, 0

    def global_order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        usable = self.n // (self.batch_size * self.world) * self.batch_size * self.world  # whole global batches
        return perm[:usable]

    def __iter__(self):
        order = self.global_order()
        per_batch = self.batch_size * self.world
        for b in range(self.start, len(order) // per_batch):
            chunk = order[b * per_batch : (b + 1) * per_batch]
            yield from chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def __len__(self) -> int:
        return (len(self.global_order()) // (self.batch_size * self.world) - self.start) * self.batch_size

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Runs training; returns {"step": final step, "loss": last loss, "checkpoint": path}."""
    env = Distributed()
    try:
        return _train(cfg, env, resume, progress)
    finally:
        env.close()


def _train(cfg: TrainConfig, env: Distributed, resume: bool, progress: bool) -> dict:
    out = Path(cfg.out_dir)
    ckpt_path, log_path = out / "checkpoint.pt", out / "metrics.jsonl"
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump({**dataclasses.asdict(cfg), "betas": list(cfg.betas)}))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    descriptors = DescriptorSet.from_files(cfg.labels, cfg.spatio, cfg.temporal)
    model = build_model(cfg, descriptors).to(env.device)
    if cfg.freeze_text:
        for name, p in model.clip.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)

    if cfg.class_sharded and env.world > descriptors.num_classes:
        raise ValueError(f"class_sharded: {env.world} ranks but only {descriptors.num_classes} classes to shard")
    records = read_annotations(cfg.train_list, cfg.root, descriptors.num_classes)
    if cfg.few_shot:
        records = few_shot(records, cfg.few_shot, cfg.seed)
    if cfg.batch_size % env.world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {env.world} ranks")
    local_bs = cfg.batch_size // env.world
    dataset = VideoDataset(records, cfg.frames, cfg.size, train=True, seed=cfg.seed)
    sampler = EpochSampler(len(dataset), local_bs, env.rank, env.world, cfg.seed)
    if sampler.batches_per_epoch() == 0:
        raise ValueError(f"{len(dataset)} videos make no full global batch of {cfg.batch_size}")
    steps_per_epoch = sampler.batches_per_epoch() // cfg.grad_accum
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, total))
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if env.device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=half is torch.float16)

    step, epoch, batch_in_epoch = 0, 0, 0
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if resume and env.main and \
        ckpt_path.exists() else None
    if env.world > 1:  # rank 0 decides and shares: the other ranks need not see out_dir
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _set_rng_state(state["rng"])
        if env.main and log_path.exists():  # steps after the checkpoint were lost with the process
            kept = [l for l in log_path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
            log_path.write_text("".join(k + "\n" for k in kept))
    elif env.main and log_path.exists():
        log_path.unlink()

    writer = None
    if cfg.tensorboard and env.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    def save():
        if env.main:
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                          "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": _rng_state(),
                          "config": dataclasses.asdict(cfg)}, ckpt_path)

    model.train()
    bar = tqdm(total=total, initial=step, desc="train", disable=not (progress and env.main), dynamic_ncols=True)
    last_loss, skipped_total = float("nan"), 0
    while step < total:
        sampler.epoch, sampler.start = epoch, batch_in_epoch
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=local_bs, sampler=sampler,
                                             num_workers=cfg.num_workers, collate_fn=collate_skipping)
        t0, micro, loss_sum = time.time(), 0, 0.0
        for batch in loader:
            batch_in_epoch += 1
            skipped_total += batch["skipped"]
            # Under torchrun every rank must gather equal shapes: a batch with an unreadable video
            # is dropped on all ranks (one process keeps the batch's good clips).
            drop = env.any_rank(batch["skipped"] > 0) if env.world > 1 else batch["frames"] is None
            if drop:
                continue
            frames = batch["frames"].to(env.device)
            labels = batch["labels"].to(env.device)
            with torch.autocast(env.device.type, dtype=half, enabled=half is not None):
                frame_emb = env.gather(model.encode_video(frames))
                all_labels = env.gather(labels)
                if cfg.class_sharded:
                    start, stop = shard_range(descriptors.num_classes, env.rank, env.world)
                    shard = model.encode_descriptors(torch.arange(start, stop))
                    loss = sharded_cross_entropy(model.logits(frame_emb.float(), shard), all_labels, start)
                elif cfg.loss == "kl":
                    local = model.encode_descriptors(labels)
                    desc = DescriptorEmbeddings(*(env.gather(t) for t in (local.spatio, local.spatio_mask,
                                                                          local.temporal, local.temporal_mask)))
                    loss = symmetric_kl_loss(model.logits(frame_emb.float(), desc), all_labels)
                else:
                    loss = cross_entropy_loss(model.logits(frame_emb.float(), model.encode_descriptors()),
                                              all_labels)
            scaler.scale(loss / cfg.grad_accum).backward()
            loss_sum += loss.item()
            micro += 1
            if micro < cfg.grad_accum:
                continue
            env.average_gradients(params)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            last_loss = loss_sum / micro
            rate = micro * cfg.batch_size / max(1e-9, time.time() - t0)
            lr = scheduler.get_last_lr()[0]
            if env.main:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps({"step": step, "loss": last_loss, "lr": lr, "skipped": skipped_total}) + "\n")
                if writer:
                    writer.add_scalar("train/loss", last_loss, step)
                    writer.add_scalar("train/lr", lr, step)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", clips_per_s=f"{rate:.1f}")
            t0, micro, loss_sum = time.time(), 0, 0.0
            if step % cfg.save_every == 0 or step == total:
                save()
            if step >= total:
                break
        else:
            # Micro-batches left over at the epoch's end (fewer than grad_accum) are dropped,
            # so that every step holds exactly grad_accum of them.
            optimizer.zero_grad(set_to_none=True)
            epoch, batch_in_epoch = epoch + 1, 0
            continue
        break
    bar.close()
    if writer:
        writer.close()
    return {"step": step, "loss": last_loss, "checkpoint": str(ckpt_path), "skipped": skipped_total}
