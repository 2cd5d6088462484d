"""Training configuration (YAML + `--set key=value` overrides) and the model it describes.

Every setting is a field of TrainConfig. The OD logits and solver settings sit under `od`
(ost.logits.ODLogitsConfig): in YAML `od: {eps: 0.05, backend: cpu}`, on the command line
`--set od.eps=0.05`. `ost train`, `ost eval` and `ost plot-plan` read the same file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .descriptors import DescriptorSet
from .logits import ODLogitsConfig
from .model import OSTModel


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
    od: ODLogitsConfig = field(default_factory=ODLogitsConfig)  # logits and solver settings


def _set(values: dict, dotted: str, value) -> None:
    *parents, key = dotted.split(".")
    for p in parents:
        sub = values.setdefault(p, {})
        if not isinstance(sub, dict):
            raise ValueError(f"override {dotted!r}: {p!r} is not a group of settings")
        values = sub
    values[key] = value


def _unknown(given, known, where: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown settings {unknown}{where}; known: {sorted(known)}")


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """A YAML file of TrainConfig fields, then `key=value` overrides (values parsed as YAML;
    `od.eps=0.05` sets a field of the `od` group)."""
    values = {}
    if path:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        _set(values, key.strip(), yaml.safe_load(value))
    _unknown(values, [f.name for f in dataclasses.fields(TrainConfig)], "")
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    od = values.pop("od", None) or {}
    if not isinstance(od, dict):
        raise ValueError(f"setting 'od' must be a mapping of {[f.name for f in dataclasses.fields(ODLogitsConfig)]}")
    _unknown(od, [f.name for f in dataclasses.fields(ODLogitsConfig)], " under 'od'")
    cfg = TrainConfig(**values, od=ODLogitsConfig(**od))
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


def config_dict(cfg: TrainConfig) -> dict:
    """The config as plain YAML-able values (what config.yaml and checkpoints hold)."""
    return {**dataclasses.asdict(cfg), "betas": list(cfg.betas)}


def build_model(cfg: TrainConfig, descriptors: DescriptorSet | None = None) -> OSTModel:
    """The OST model the config describes (descriptors default to the config's files)."""
    import open_clip

    if descriptors is None:
        descriptors = DescriptorSet.from_files(cfg.labels, cfg.spatio, cfg.temporal)
    clip = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, **cfg.model_overrides)
    return OSTModel(clip, open_clip.get_tokenizer(cfg.model), descriptors, config=cfg.od)
