"""`ost train`: fine-tune CLIP with OST on one CPU, one GPU or several (torchrun).

AdamW (paper: lr 8e-6, weight decay 0.001, betas 0.9 / 0.98), linear warm-up then cosine decay
to lr / 100, per optimizer step; gradient accumulation; bf16 / fp16 autocast on GPUs; full
fine-tuning or a frozen text encoder; the paper's in-batch symmetric KL loss (or
cross-entropy over all classes). Under torchrun each rank takes its share of every global
batch, frame and descriptor embeddings are all-gathered (with gradients) for the in-batch
loss, and gradients are all-reduced, so a step equals the single-process step on the same
global batch (ost.run.distributed). Checkpoints (model, optimizer, scheduler, scaler, step, data
position, RNG state) are written atomically (ost.model.checkpoint); `--resume` continues exactly
where the last one stopped, and metrics.jsonl keeps each step once.

The settings are ost.run.config.RunConfig.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from .build import descriptor_set, load_model, model_with_weights
from ..model.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RunConfig, config_dict
from ..data.annotations import few_shot, read_annotations
from ..data.data import VideoDataset, collate_skipping, loader_worker_init
from ..data.augment import finish_batch
from .distributed import Distributed, EpochSampler, loader_workers
from ..files import atomic_write, check_output_folder
from ..model.large_classes import shard_range, sharded_cross_entropy
from ..model.loss import cross_entropy_loss, symmetric_kl_loss
from ..model.logits import DescriptorEmbeddings


# Consecutive batches without one decodable video (on any rank) after which training stops:
# a wrong `root` or list would otherwise skip every video forever.
MAX_EMPTY_BATCHES = 20


def lr_lambda(warmup: int, total: int):
    """The official schedule (timm's CosineLRScheduler as the paper's code sets it up): linear
    warm-up from 0 over `warmup` optimizer steps, then cosine decay to lr / 100 at `total`,
    the cosine measured from step 0 (not from the end of the warm-up), in optimizer steps."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return step / warmup
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))

    return f


def _resume_state(ckpt_path: Path, env: Distributed) -> dict | None:
    """The checkpoint to resume from (None: there is none yet, the run starts afresh); rank 0
    reads it and shares it, so the other ranks need not see out_dir."""
    state = load_checkpoint(ckpt_path) if env.main and ckpt_path.exists() else None
    if env.world > 1:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return state


def train(cfg: RunConfig, resume: bool = False, progress: bool = True) -> dict:
    """Runs training; returns {"step": final step, "loss": last loss, "checkpoint": path}."""
    if not cfg.train_list:  # evaluation configs need none; training does, before any work
        raise ValueError("setting 'train_list' is required for training: the videos to train on")
    env = Distributed()
    try:
        return _train(cfg, env, resume, progress)
    finally:
        env.close()


def _train(cfg: RunConfig, env: Distributed, resume: bool, progress: bool) -> dict:
    out = Path(cfg.out_dir)
    ckpt_path, log_path = out / "checkpoint.pt", out / "metrics.jsonl"
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # What is cheap to check is checked first: the files, the batch, the checkpoints, before the
    # model is built (seconds to minutes) and before anything is written to out_dir.
    if env.main:
        check_output_folder(out, "out_dir")
    descriptors = descriptor_set(cfg)
    if cfg.class_sharded and env.world > descriptors.num_classes:
        raise ValueError(f"class_sharded: {env.world} ranks but only {descriptors.num_classes} classes to shard")
    records = read_annotations(cfg.data_path(cfg.train_list), cfg.root, descriptors.num_classes)
    if cfg.few_shot:
        records = few_shot(records, cfg.few_shot, cfg.seed)
    if cfg.batch_size % env.world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {env.world} ranks")
    local_bs = cfg.batch_size // env.world
    dataset = VideoDataset(records, cfg.frames, cfg.size, train=True, seed=cfg.seed, normalization=cfg.normalization,
                           deferred=True)
    sampler = EpochSampler(len(dataset), local_bs, env.rank, env.world, cfg.seed)
    if sampler.batches_per_epoch() == 0:
        raise ValueError(f"batch_size {cfg.batch_size}: the {len(dataset)} training videos make no full global batch")
    state = _resume_state(ckpt_path, env) if resume else None

    # A resumed run's own weights replace every initial one: then neither init_checkpoint nor
    # pretrained weights are read. init_checkpoint: e.g. few-shot runs "from K400".
    if state is not None:
        model = model_with_weights(cfg, state["model"], str(ckpt_path), descriptors)
    else:
        model = load_model(cfg, cfg.init_checkpoint, descriptors)
    model = model.to(env.device)
    if cfg.freeze_text:
        for name, p in model.clip.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)

    workers = loader_workers(cfg.num_workers, env.world)
    # One loader for the whole run: its workers persist across epochs (the sampler carries the
    # epoch), pinned memory on GPUs, its own generator so the global RNG (resume state) is not
    # touched by it.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=local_bs, sampler=sampler, num_workers=workers, collate_fn=collate_skipping,
        worker_init_fn=loader_worker_init,
        persistent_workers=workers > 0, pin_memory=env.device.type == "cuda",
        prefetch_factor=cfg.prefetch if workers > 0 else None,
        generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = sampler.batches_per_epoch() // cfg.grad_accum
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps or round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, total))
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if env.device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=half is torch.float16)

    step, epoch, batch_in_epoch = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        set_rng_state(state["rng"])
    if env.main:  # everything is known good: now out_dir is written
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.yaml", lambda fh: fh.write(yaml.safe_dump(config_dict(cfg))))
        if state is not None and log_path.exists():  # steps after the checkpoint were lost with the process
            kept = [l for l in log_path.read_text().splitlines() if l and json.loads(l)["step"] <= step]
            log_path.write_text("".join(k + "\n" for k in kept))
        elif state is None and log_path.exists():
            log_path.unlink()

    writer = None
    if cfg.tensorboard and env.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    def save():
        if env.main:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                             "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": rng_state(),
                             "config": config_dict(cfg)}, ckpt_path)

    model.train()
    bar = tqdm(total=total, initial=step, desc="train", disable=not (progress and env.main), dynamic_ncols=True)
    last_loss, skipped_total, empty_run = float("nan"), 0, 0
    while step < total:
        if batch_in_epoch >= sampler.batches_per_epoch():
            # A checkpoint written after an epoch's last batch (a step that ends the epoch):
            # what comes next is the next epoch's first batch, not an empty rest of this one.
            epoch, batch_in_epoch = epoch + 1, 0
        sampler.epoch, sampler.start = epoch, batch_in_epoch
        t0, micro, loss_sum = time.time(), 0, 0.0
        used_in_epoch = 0
        for batch in loader:
            batch_in_epoch += 1
            skipped_total += batch["skipped"]
            # Under torchrun every rank must gather equal shapes: a batch with an unreadable video
            # is dropped on all ranks (one process keeps the batch's good clips).
            drop = env.any_rank(batch["skipped"] > 0) if env.world > 1 else batch["frames"] is None
            if drop:
                empty = not env.any_rank(batch["frames"] is not None) if env.world > 1 else True
                empty_run = empty_run + 1 if empty else 0
                if empty_run >= MAX_EMPTY_BATCHES:
                    raise RuntimeError(f"no video could be decoded in {empty_run} batches in a row ({skipped_total} "
                                       f"skipped so far): check `root` ({cfg.root}) and `train_list` "
                                       f"({cfg.data_path(cfg.train_list)})")
                continue
            empty_run, used_in_epoch = 0, used_in_epoch + 1
            frames = finish_batch(batch, env.device, cfg.normalization)  # uint8 in, jitter etc. on the device
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
            if used_in_epoch == 0:
                raise RuntimeError(f"no video could be decoded in a whole epoch ({skipped_total} skipped): check "
                                   f"`root` ({cfg.root}) and `train_list` ({cfg.data_path(cfg.train_list)})")
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
