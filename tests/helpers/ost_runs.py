"""Writing `ost train` configs for the tiny test model and reading a run's metrics."""
import json
from pathlib import Path

import yaml

from .tiny_clip import TEXT, VISION


def write_config(tmp_path, data, **overrides):
    cfg = dict(labels=str(data["labels"]), train_list=str(data["train"]), spatio=str(data["spatio"]),
               temporal=str(data["temporal"]), model="ViT-B-32",
               model_overrides=dict(embed_dim=32, vision_cfg=VISION, text_cfg=TEXT), frames=4, size=32,
               batch_size=8, lr=1e-3, weight_decay=0.0, warmup_steps=3, max_steps=30, save_every=10,
               out_dir=str(tmp_path / "run"))
    cfg.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def steps(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
