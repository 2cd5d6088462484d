"""Run configuration: YAML + `--set key=value` overrides, one RunConfig for every command.

Every setting is a field of RunConfig or of one of its groups: the OD logits and solver
settings under `od` (ost.model.logits.ODLogitsConfig), `ost eval`'s under `eval`
(ost.run.evaluate.EvalConfig): in YAML `od: {eps: 0.05, backend: cpu}`, on the command line
`--set od.eps=0.05`. `ost train`, `ost eval` and `ost plot-plan` read the same file; only
training needs a `train_list`.

A config may name a `base` file (or list of files, relative to itself) whose settings it
extends, and `--config` also takes the name of a bundled preset (ost/run/presets/, `ost presets`
lists them). Relative data paths (labels, lists, descriptor files, evaluation splits) are
resolved against `data_dir`, the folder `ost data download` fills. In a user's config file,
relative folders (data_dir, root, init_checkpoint, out_dir) are relative to that file, and
data_dir defaults to its folder; from --set or a bundled preset, relative to the working
directory. A value `REQUIRED` in a
preset must be set by the user (e.g. `--set root=/path/to/videos`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.augment import check_normalization
from .evaluate import EvalConfig
from ..data.transforms import check_views
from ..files import read_text
from ..model.logits import ODLogitsConfig
from ..model.model import CLASS_PROMPT, SPATIO_PROMPT, TEMPORAL_PROMPT
from .presets import preset_path

REQUIRED = "REQUIRED"


@dataclass
class RunConfig:
    data_dir: str = "."  # relative data paths below are relative to this
    labels: str = ""
    train_list: str = ""  # the videos `ost train` trains on (required there only)
    spatio: str = ""
    temporal: str = ""
    root: str | None = None  # video paths are relative to this (default: the list's folder)
    few_shot: int | None = None  # train on K videos per class (seeded by `seed`)
    model: str = "ViT-B-16"
    pretrained: str | None = None
    model_overrides: dict = field(default_factory=dict)  # extra open_clip.create_model arguments
    init_checkpoint: str | None = None  # start training from these OST weights (e.g. a K400 run)
    frames: int = 8
    size: int = 224
    normalization: str = "imagenet"  # pixel mean / std: imagenet (the official pipeline) | clip
    batch_size: int = 8  # global: split over the ranks; the in-batch logits span all of it
    grad_accum: int = 1
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 8e-6
    weight_decay: float = 0.001
    betas: tuple = (0.9, 0.98)
    warmup_steps: int = 0  # linear warm-up from 0, in optimizer steps ...
    warmup_epochs: float = 0.0  # ... or in epochs (the official runs: 5)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; GPU only for the half types)
    freeze_text: bool = False
    loss: str = "kl"  # kl (the paper's in-batch loss) | ce (cross-entropy over all classes)
    class_sharded: bool = False  # ce with each rank holding a shard of the classes (large label spaces)
    spatio_prompt: str = SPATIO_PROMPT  # {descriptor}, optionally {class_name}
    temporal_prompt: str = TEMPORAL_PROMPT
    class_name_baseline: bool = False  # match against one class-name prompt per class (no descriptors)
    class_prompt: str = CLASS_PROMPT
    seed: int = 0
    num_workers: int | None = None  # loader processes per rank; default: the cores (shared by the ranks), <= 8
    prefetch: int = 4  # batches each loader worker prepares ahead
    out_dir: str = "runs/ost"
    save_every: int = 50
    tensorboard: bool = False
    od: ODLogitsConfig = field(default_factory=ODLogitsConfig)  # logits and solver settings
    eval: EvalConfig = field(default_factory=EvalConfig)  # `ost eval`'s settings

    def data_path(self, path: str | None) -> str | None:
        """A data path as given, or under data_dir when relative."""
        if path is None or Path(path).is_absolute():
            return path
        return str(Path(self.data_dir) / path)


# The groups of settings: fields that are themselves dataclasses ("od", "eval").
GROUPS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.default_factory)}
# Settings that moved into a group, for a clear refusal of the old spelling.
_MOVED = {"val_list": "eval.val_list", "eval_splits": "eval.splits", "views": "eval.views",
          "ensemble_alpha": "eval.ensemble_alpha"}


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
        moved = [f"{k} is now {_MOVED[k]}" for k in unknown if k in _MOVED and not where]
        hint = f" ({'; '.join(moved)})" if moved else ""
        raise ValueError(f"unknown settings {unknown}{where}{hint}; known: {sorted(known)}")


def _read(path: Path, seen: tuple = (), sources: dict | None = None) -> dict:
    """A config file's settings over those of its `base` files (groups merged key by key).
    `sources` gets, for each setting ("od.eps" for a group's), the file it came from."""
    if path in seen:
        raise ValueError(f"{path}: `base` files include each other")
    values = _yaml(read_text(path), str(path)) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    bases = values.pop("base", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        _merge(merged, _read((path.parent / base).resolve(), seen + (path,), sources), sources)
    _merge(merged, values, sources, str(path))
    return merged


def _yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}{line}: not valid YAML ({problem})") from None


def _merge(into: dict, values: dict, sources: dict | None = None, origin: str | None = None) -> None:
    for key, value in values.items():
        group = key in GROUPS and isinstance(value, dict)
        into[key] = {**into[key], **value} if group and isinstance(into.get(key), dict) else value
        if sources is not None and origin is not None:
            sources.update({f"{key}.{k}": origin for k in value} if group else {key: origin})


def _coerce(name: str, value, annotation: str, origin: str | None):
    """A setting's value as its field's type: numbers as written (`1e-3`, which YAML 1.1 reads
    as a string, is the number 0.001); a value that is not one is refused, naming the setting
    and where it was set."""
    where = f" (set in {origin})" if origin else ""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return None
    if "float" in kinds:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"setting {name!r} must be a number{where}, got {value!r}")
        return float(value)
    if "int" in kinds:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"setting {name!r} must be a whole number{where}, got {value!r}")
        return value
    if "bool" in kinds and not isinstance(value, bool):
        raise ValueError(f"setting {name!r} must be true or false{where}, got {value!r}")
    if "tuple" in kinds and isinstance(value, list):
        return tuple(value)
    return value


def _typed(values: dict, cls, prefix: str, sources: dict) -> dict:
    fields = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
              for f in dataclasses.fields(cls)}
    return {k: _coerce(prefix + k, v, fields[k], sources.get(prefix + k)) for k, v in values.items()}


# The settings that name a data set, which predicting for one's own videos and classes
# (ost.run.recognizer, `ost predict`) does without.
DATA_SETTINGS = ("labels", "train_list", "spatio", "temporal", "root")


def load_config(paths: str | list[str] | None, overrides: list[str] = (), *, data: bool = True) -> RunConfig:
    """YAML files (or bundled preset names) of RunConfig fields, later ones over earlier ones
    (e.g. a run's preset, then an ablation), then `key=value` overrides (values parsed as
    YAML; `od.eps=0.05` sets a field of the `od` group). Number and true/false settings are
    checked (and numbers written as `1e-3` read as numbers) at load, naming the setting and
    the file or override that set it. data=False: the data set's settings (DATA_SETTINGS)
    may be left unset, also where a preset marks them REQUIRED (predictions for one's own
    videos and classes need the model's settings only)."""
    values: dict = {}
    sources: dict = {}
    for path in [paths] if isinstance(paths, str) else (paths or []):
        _merge(values, _read(preset_path(path), sources=sources), sources)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        _set(values, key.strip(), _yaml(value, f"--set {item}"))
        sources[key.strip()] = f"--set {item}"
    _unknown(values, [f.name for f in dataclasses.fields(RunConfig)], "")
    if not data:
        for key in DATA_SETTINGS:
            if values.get(key) == REQUIRED:
                values.pop(key)
    missing = sorted([k for k, v in values.items() if v == REQUIRED] +
                     [f"{g}.{k}" for g in GROUPS if isinstance(values.get(g), dict)
                      for k, v in values[g].items() if v == REQUIRED])
    if missing:
        raise ValueError(f"settings {missing} are required by this config: set them, e.g. "
                         + " ".join(f"--set {k}=..." for k in missing))
    groups = {}
    for name, cls in GROUPS.items():
        group = values.pop(name, None) or {}
        known = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(group, dict):
            raise ValueError(f"setting {name!r} must be a mapping of {known}")
        _unknown(group, known, f" under {name!r}")
        groups[name] = cls(**_typed(group, cls, f"{name}.", sources))
    values = _typed(values, RunConfig, "", sources)
    _relative_to_files(values, sources, [preset_path(p) for p in ([paths] if isinstance(paths, str) else paths or [])])
    cfg = RunConfig(**values, **groups)
    _validate(cfg, data)
    return cfg


# Folder settings that a user's config file gives relative to itself (data paths such as
# `labels` are relative to data_dir, as documented above).
_FILE_RELATIVE = ("data_dir", "root", "init_checkpoint", "out_dir")


def _is_bundled(path: Path) -> bool:
    from .presets import PRESETS_DIR

    return Path(path).resolve().is_relative_to(Path(PRESETS_DIR).resolve())


def _relative_to_files(values: dict, sources: dict, files: list[Path]) -> None:
    """Relative folders set in a user's config file resolve against that file's folder, and
    data_dir defaults to the folder of the last user file given: a config means the same from
    any working directory. Values from --set and from bundled presets stay relative to the
    working directory (a preset's data_dir is where `ost data download` put the files)."""
    user = [f for f in files if not _is_bundled(f)]
    for key in _FILE_RELATIVE:
        origin = sources.get(key)
        value = values.get(key)
        if origin is None or origin.startswith("--set") or _is_bundled(Path(origin)):
            continue
        if isinstance(value, str) and value and not Path(value).is_absolute():
            values[key] = str(Path(origin).parent.resolve() / value)
    if "data_dir" not in values and user:
        values["data_dir"] = str(user[-1].parent.resolve())
    # Absolute, so that joining a data path with it twice changes nothing.
    values["data_dir"] = str(Path(values.get("data_dir", ".")).resolve())


# Settings that cannot work below these values (checked at load, not minutes into a run).
_AT_LEAST = {**dict(frames=1, size=1, batch_size=1, grad_accum=1, epochs=0, max_steps=1, lr=0.0, weight_decay=0.0,
                    warmup_steps=0, warmup_epochs=0.0, few_shot=1, num_workers=0, prefetch=1, save_every=1),
             "eval.batch_size": 1, "eval.class_chunk": 1, "eval.memory_budget_mb": 0.0}


def _validate(cfg: RunConfig, data: bool = True) -> None:
    for name in ("labels", "spatio", "temporal") if data else ():
        if not getattr(cfg, name):
            raise ValueError(f"setting {name!r} is required")
    for name, least in _AT_LEAST.items():
        value = cfg
        for part in name.split("."):
            value = getattr(value, part)
        if value is not None and not value >= least:
            raise ValueError(f"setting {name!r} must be >= {least}, got {value}")
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {cfg.precision!r}")
    if cfg.loss not in ("kl", "ce"):
        raise ValueError(f"loss must be kl or ce, got {cfg.loss!r}")
    if cfg.class_sharded and cfg.loss != "ce":
        raise ValueError("class_sharded training uses the cross-entropy over all classes: set loss: ce")
    check_normalization(cfg.normalization)
    check_views(cfg.eval.views)
    if cfg.warmup_steps and cfg.warmup_epochs:
        raise ValueError("set warmup_steps or warmup_epochs, not both")
    if cfg.class_name_baseline and cfg.od.use_ot:
        raise ValueError("class_name_baseline matches one class-name prompt per class, so the OD solver has "
                         "nothing to transport: set od.use_ot: false (as presets/ablation_class_name.yaml does)")
    alpha = cfg.eval.ensemble_alpha
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"eval.ensemble_alpha must be in [0, 1], got {alpha}")
    if not isinstance(cfg.eval.splits, list):
        raise ValueError(f"setting 'eval.splits' must be a list of splits ({{labels, list, spatio, temporal}} each), "
                         f"got {cfg.eval.splits!r}")
    for i, split in enumerate(cfg.eval.splits):
        if not isinstance(split, dict):
            raise ValueError(f"eval.splits[{i}] must be a mapping with labels, list, spatio, temporal")
        _unknown(split, ("labels", "list", "spatio", "temporal", "root"), f" in eval.splits[{i}]")
        lacking = [k for k in ("labels", "list", "spatio", "temporal") if k not in split]
        if lacking:
            raise ValueError(f"eval.splits[{i}] lacks {lacking}")


def _plain(x):
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else \
        {k: _plain(v) for k, v in x.items()} if isinstance(x, dict) else x


def config_dict(cfg: RunConfig) -> dict:
    """The config as plain YAML-able values (what config.yaml and checkpoints hold)."""
    return _plain(dataclasses.asdict(cfg))
