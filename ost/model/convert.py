"""Converting the official OST checkpoints (tomchen-ctj/OST, released on its HuggingFace Space)
into a state dict for ost.model.model.OSTModel on open_clip.

The official model (trainers/OST.py, class OST) holds parts of an OpenAI CLIP (clip/model.py):
  image_encoder = clip.visual                         -> visual.*
  text_encoder  = TextEncoder(clip), which keeps
      transformer, positional_embedding, ln_final,
      text_projection, token_embedding                -> the same names at the top level
  logit_scale   = clip.logit_scale                    -> logit_scale
Training wraps it in DistributedDataParallel, so every key starts with `module.`, and
utils/tools.py:epoch_saving stores {'model': state_dict, 'optimizer', 'lr_scheduler',
'max_accuracy', 'epoch', 'config'}, where 'config' is a yacs CfgNode. The OpenAI and open_clip
module names below those prefixes are the same, so a key maps by its prefix alone.

The architecture must match too: the official runs use OpenAI's ViT-B/16, whose MLPs use
QuickGELU, i.e. open_clip's "ViT-B-16-quickgelu" (plain "ViT-B-16" has the same keys and
shapes but GELU, which no key check can see).
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from .checkpoint import not_a_torch_file, save_checkpoint

DEFAULT_MODEL = "ViT-B-16-quickgelu"
OST_PREFIX = "clip."  # OSTModel keeps the open_clip CLIP as `.clip`
MAX_LISTED = 10

# (official prefix or key, open_clip prefix or key): a key maps if it starts with the left side.
KEY_MAP = (
    ("image_encoder.", "visual."),
    ("text_encoder.transformer.", "transformer."),
    ("text_encoder.token_embedding.", "token_embedding."),
    ("text_encoder.ln_final.", "ln_final."),
    ("text_encoder.positional_embedding", "positional_embedding"),
    ("text_encoder.text_projection", "text_projection"),
    ("logit_scale", "logit_scale"),
)

# Keys dropped on purpose: ViFi-CLIP's prompt learner buffers, which the official loader
# (utils/tools.py:load_checkpoint) deletes too. They hold token embeddings of one data set's
# class names, derived from the weights, not weights of their own.
IGNORED_KEYS = frozenset({
    "prompt_learner.token_prefix",
    "prompt_learner.token_suffix",
    "prompt_learner.complete_text_embeddings",
})

# Pickled globals the official checkpoints may hold besides tensors, with a stand-in that
# torch's weights_only unpickler may build instead (see _ConfigAsDict).
STAND_INS: dict[str, type] = {}


class _ConfigAsDict:
    """Stand-in for yacs.config.CfgNode (the official checkpoints' 'config') during a
    weights_only load: creates a plain OrderedDict, which the unpickler fills with the config's
    items. No yacs code and nothing from the file runs; the config is not needed to convert."""

    def __new__(cls, *args, **kwargs):
        return OrderedDict()


STAND_INS["yacs.config.CfgNode"] = _ConfigAsDict


def _listed(keys, limit: int = MAX_LISTED) -> str:
    keys = list(keys)
    more = f" ... ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# -- loading ----------------------------------------------------------------------------------
def load_official_checkpoint(path: str | os.PathLike) -> dict:
    """An official OST checkpoint file, loaded with torch.load(weights_only=True).

    Their training checkpoints also pickle the yacs config; that one global is allowed through a
    stand-in that builds a plain dict (see _ConfigAsDict). Any other pickled object is refused
    with a ValueError that names it and says how to extract the weights instead: no pickled code
    runs here.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    why = not_a_torch_file(path)
    if why:
        raise ValueError(f"{path}: {why}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        obj = _load_with_stand_ins(path, first)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a checkpoint or state dict (a mapping), got {type(obj).__name__}")
    return dict(obj)


def _load_with_stand_ins(path: Path, first: Exception):
    """Retry a refused weights_only load with the known harmless globals replaced by stand-ins."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError):  # e.g. the legacy (non-zip) format, which it cannot scan
        unsafe = []
    unknown = [g for g in unsafe if g not in STAND_INS]
    if not unsafe or unknown:
        what = f"pickled objects other than weights ({', '.join(unknown)})" if unknown else "objects it refuses"
        raise ValueError(
            f"{path}: holds {what}; torch.load(weights_only=True) does not load them and this converter "
            f"never runs pickled code. If you trust the file, extract its weights once in a separate Python "
            f"session: `import torch; ckpt = torch.load('{path}', map_location='cpu', weights_only=False); "
            f"torch.save(ckpt.get('model', ckpt), 'weights.pth')`, then convert weights.pth. "
            f"(torch said: {str(first).splitlines()[0]})") from None
    with torch.serialization.safe_globals([(STAND_INS[g], g) for g in unsafe]):
        return torch.load(path, map_location="cpu", weights_only=True)


def official_state_dict(obj: Mapping, source: str = "checkpoint") -> dict:
    """The official model's state dict from a loaded checkpoint: under 'model' (their
    epoch_saving), under 'state_dict', or the mapping itself; DDP's `module.` prefix removed."""
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not obj:
        raise ValueError(f"{source}: empty state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{source}: not a state dict: {_listed(bad)} are not tensors "
                         f"(expected the weights at the top level or under 'model' / 'state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# -- mapping ----------------------------------------------------------------------------------
def map_official_key(key: str) -> str | None:
    """The open_clip CLIP key of an official key (without `module.`), or None if none."""
    for theirs, ours in KEY_MAP:
        if key == theirs or (theirs.endswith(".") and key.startswith(theirs)):
            return ours + key[len(theirs):]
    return None


def _target_shapes(clip_state_keys) -> dict[str, tuple | None]:
    """Target key -> shape (None when only names are given), without OSTModel's `clip.`."""
    if isinstance(clip_state_keys, Mapping):
        shapes = {k: (tuple(v.shape) if hasattr(v, "shape") else tuple(v) if v is not None else None)
                  for k, v in clip_state_keys.items()}
    elif isinstance(clip_state_keys, Iterable) and not isinstance(clip_state_keys, str):
        shapes = {k: None for k in clip_state_keys}
    else:
        raise TypeError("clip_state_keys must be the target CLIP's state dict (or its key -> shape mapping, "
                        f"or its key names), got {type(clip_state_keys).__name__}")
    if not shapes:
        raise ValueError("clip_state_keys is empty")
    if all(k.startswith(OST_PREFIX) for k in shapes):  # an OSTModel's state dict was given
        shapes = {k[len(OST_PREFIX):]: s for k, s in shapes.items()}
    return shapes


def convert_official_state_dict(state: Mapping, clip_state_keys) -> dict:
    """Map an official OST state dict (or checkpoint) onto OSTModel's keys (`clip.` + open_clip).

    state: the loaded checkpoint or its state dict (keys `module.image_encoder.*`,
    `module.text_encoder.*`, `module.logit_scale`; see the module docstring).
    clip_state_keys: the target open_clip CLIP's state dict (or an OSTModel's, or key -> shape);
    shapes are checked when it has them. Given only key names, just the names are checked.

    Refuses (ValueError) source keys that map to nothing in the target (e.g. ViFi-CLIP's VPT
    prompt vectors), target keys left without a value, and shape mismatches, each listing up to
    10 keys. Returns the new state dict, in the target's key order.
    """
    source = official_state_dict(state, "official state dict")
    targets = _target_shapes(clip_state_keys)

    mapped: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in source.items():
        if key in IGNORED_KEYS:
            continue
        ours = map_official_key(key)
        if ours is None or ours not in targets:
            unmapped.append(key if ours is None else f"{key} (-> {ours})")
        else:
            mapped[ours] = value
    if unmapped:
        raise ValueError(f"{len(unmapped)} official keys have no place in the target model: {_listed(unmapped)}. "
                         f"Is the model name right (the official runs use {DEFAULT_MODEL}), and is this an "
                         f"OST checkpoint without prompt vectors?")

    missing = [k for k in targets if k not in mapped]
    if missing:
        raise ValueError(f"{len(missing)} target keys get no value from the official state dict: {_listed(missing)}")

    wrong = [f"{k}: official {tuple(mapped[k].shape)}, target {s}" for k, s in targets.items()
             if s is not None and tuple(mapped[k].shape) != s]
    if wrong:
        raise ValueError(f"{len(wrong)} shapes differ (is the model name right?): {_listed(wrong)}")
    return {OST_PREFIX + k: mapped[k] for k in targets}


def convert_official_checkpoint(path: str | os.PathLike, out_path: str | os.PathLike,
                                model_name: str = DEFAULT_MODEL, *, clip_model: torch.nn.Module | None = None) -> dict:
    """Convert an official OST checkpoint file into an OSTModel state dict file.

    The target layout comes from `open_clip.create_model(model_name)` (randomly initialized;
    no weights are downloaded), or from `clip_model` if given (an open_clip CLIP). The output
    is written atomically and loads with ost.model.checkpoint.load_state_dict_file and
    OSTModel.load_state_dict(strict=True).

    Returns {"out": str, "tensors": n, "ignored": [official keys dropped on purpose]}.
    """
    obj = load_official_checkpoint(path)
    if clip_model is None:
        import open_clip

        clip_model = open_clip.create_model(model_name, pretrained=None)
    try:
        state = convert_official_state_dict(obj, clip_model.state_dict())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    save_checkpoint(state, out_path)
    ignored = sorted(k for k in official_state_dict(obj, str(path)) if k in IGNORED_KEYS)
    return {"out": str(out_path), "tensors": len(state), "ignored": ignored}
